//! MobileNet v1 (Howard et al. 2017, arXiv 1704.04861) from scratch: the
//! network of the paper with its width multiplier α and resolution
//! multiplier ρ, plain reference layers, a cost analysis that reproduces the
//! paper's tables, and fast CPU kernels.
//!
//! ```
//! use mobilenet::cost::CostReport;
//! use mobilenet::model::{Architecture, MobileNetConfig};
//!
//! // 0.5 MobileNet-160 (paper Table 6 / 7 family).
//! let config = MobileNetConfig { alpha: 0.5, resolution: 160, ..Default::default() };
//! let report = CostReport::new(&Architecture::new(&config)?);
//! println!("{} M mult-adds, {} parameters", report.total.mult_adds / 1_000_000, report.total.params);
//! # Ok::<(), mobilenet::Error>(())
//! ```

pub mod cost;
pub mod data;
pub mod engine;
pub mod error;
pub mod fetch;
pub mod formats;
pub mod image;
pub mod kernels;
pub mod layers;
pub mod model;
pub mod quant;
pub mod sysinfo;
pub mod tensor;
pub mod train;

pub use error::{Error, Result};
pub use tensor::Tensor;
