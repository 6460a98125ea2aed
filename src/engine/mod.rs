//! The fast inference engine: compile a [`MobileNet`](crate::model::MobileNet)
//! into a [`Plan`] once, then run it many times with no allocation.
//!
//! Compiling folds batch norm into the convolution weights and bias, turns
//! the activation into each kernel's fused clamp, packs the weights for the
//! instruction set chosen once from runtime CPU detection, fuses each
//! depthwise layer with the pointwise layer after it over bands of rows (so
//! the depthwise output stays in cache), chains the leading layers with
//! large outputs (the stem and the first blocks at 224 px) so that they
//! run a few rows at a time through all of them, and sizes every buffer.
//! A [`Plan`] is immutable and can be shared by threads; each caller brings
//! its own [`Workspace`] and [`Parallelism`].
//!
//! ```
//! use mobilenet::engine::{Parallelism, Plan, PlanOptions, Workspace};
//! use mobilenet::model::{MobileNet, MobileNetConfig};
//!
//! let cfg = MobileNetConfig { alpha: 0.25, resolution: 64, classes: 10, ..Default::default() };
//! let net = MobileNet::random(&cfg, 1)?;
//! let plan = Plan::compile(&net, &PlanOptions::default())?;
//! let par = Parallelism::new(1)?;
//! let mut ws = Workspace::new(&plan, &par);
//! let image = vec![0.5f32; plan.input_len()];
//! let mut logits = vec![0.0f32; plan.classes()];
//! plan.run(&image, 1, &mut logits, &mut ws, &par)?;
//! # Ok::<(), mobilenet::Error>(())
//! ```

mod chain;
mod execute;
mod fold;
pub(crate) use fold::fold_batch_norm;
mod parallel;
mod plan;
mod workspace;

pub use parallel::Parallelism;
pub use plan::{Plan, PlanOptions, StepInfo};
pub use workspace::Workspace;
