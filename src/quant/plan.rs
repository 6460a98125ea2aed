//! A compiled plan for fast uint8 inference of a [`QuantizedPipeline`]:
//! the same bytes as the reference executor, from the packed SIMD kernels
//! of [`kernels::int8`](crate::kernels::int8), with every buffer sized once
//! so that running allocates nothing.
//!
//! The plan recognises the ops of MobileNet v1 files: full convolutions
//! (1x1 convs run as a GEMM on the activations directly, others through
//! im2col), 3x3 depthwise convolutions with multiplier 1, average pooling,
//! fully connected layers, reshapes and a final softmax. Anything else is
//! refused with [`Error::Format`](crate::Error::Format); the reference
//! executor still runs it.
//!
//! ```no_run
//! use mobilenet::engine::Parallelism;
//! use mobilenet::quant::plan::{QuantizedPlan, QuantizedPlanOptions, QuantizedWorkspace};
//! use mobilenet::quant::{QuantizedPipeline, QuantizedTflite};
//! let model = QuantizedPipeline::new(vec![QuantizedTflite::read("mobilenet_v1_0.25_128_quant.tflite")?])?;
//! let plan = QuantizedPlan::compile(&model, &QuantizedPlanOptions::default())?;
//! let par = Parallelism::new(1)?;
//! let mut ws = QuantizedWorkspace::new(&plan, &par);
//! let input = vec![128u8; plan.input().numel()];
//! let mut probs = vec![0u8; plan.output().numel()];
//! plan.run(&input, 1, &mut probs, &mut ws, &par)?;
//! # Ok::<(), mobilenet::Error>(())
//! ```

use std::time::Duration;

use super::chain::{Chain, ChainSizes, SoftmaxHead, Step, StepOp, StepQuant, refuse, resolve_isa};
use super::conv::ConvKind;
use super::model::{Op, QuantizedPipeline, TensorSpec};
use super::requantize::OutputStage;
use crate::engine::Parallelism;
use crate::error::Result;
use crate::kernels::int8::im2col::PatchGeometry;
use crate::kernels::int8::pool::PoolGeometry;
use crate::kernels::int8::{DepthwiseGeometry, IntIsa, OutputQuant};

pub use super::chain::{QuantizedStepInfo, QuantizedWorkspace};

/// Choices made when compiling a [`QuantizedPlan`]; the defaults are the
/// fastest.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedPlanOptions {
    /// Integer instruction set; `None` picks the best this CPU has
    /// (lowered by `MOBILENET_ISA`).
    pub isa: Option<IntIsa>,
    /// Split a step of one image across threads only if it has at least
    /// this many mult-adds: below, waking threads costs more than it saves.
    pub min_parallel_mult_adds: u64,
}

impl Default for QuantizedPlanOptions {
    fn default() -> Self {
        QuantizedPlanOptions {
            isa: None,
            min_parallel_mult_adds: 2_000_000,
        }
    }
}

/// A uint8 pipeline compiled for one [`IntIsa`]: packed weights, buffer
/// sizes, steps. See the module docs.
#[derive(Debug)]
pub struct QuantizedPlan {
    chain: Chain<SoftmaxHead>,
    input: TensorSpec,
    output: TensorSpec,
    logits: TensorSpec,
}

impl QuantizedWorkspace {
    /// Buffers for `plan` with one lane per thread of `par`.
    pub fn new(plan: &QuantizedPlan, par: &Parallelism) -> QuantizedWorkspace {
        plan.chain.workspace(par)
    }
}

/// The epilogue of a reference output stage, repeated per channel.
fn output_quant(stage: &OutputStage, channels: usize) -> Result<OutputQuant> {
    let (m, shift) = stage.multiplier();
    let (min, max) = stage.clamp_range();
    OutputQuant::per_tensor(channels, m, shift, stage.zero_point(), min, max)
}

/// The original codes of offset weights.
fn codes(offset: &[i16], zero_point: i32) -> Vec<u8> {
    offset
        .iter()
        .map(|&w| (i32::from(w) + zero_point) as u8)
        .collect()
}

/// Numel of a per-image tensor (shape with its leading batch of 1).
fn per_image(spec: &TensorSpec) -> Result<usize> {
    match spec.shape.first() {
        Some(1) | None => Ok(spec.numel()),
        Some(b) => Err(refuse(
            &format!("tensor '{}'", spec.name),
            &format!("its batch is {b}, not 1"),
        )),
    }
}

impl QuantizedPlan {
    /// Compiles `model` for `options.isa` (or the best detected): packs
    /// every weight and sizes every buffer.
    ///
    /// Fails with [`Error::Format`](crate::Error::Format) for ops or graphs
    /// the plan does not handle (see the module docs),
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) for an
    /// unsupported ISA.
    pub fn compile(
        model: &QuantizedPipeline,
        options: &QuantizedPlanOptions,
    ) -> Result<QuantizedPlan> {
        let isa = resolve_isa(options.isa)?;
        let input = model.input().clone();
        let in_len = per_image(&input)?;
        let mut steps = Vec::new();
        let mut specs: Vec<&TensorSpec> = Vec::new();
        for stage in model.stages() {
            for (idx, node) in stage.nodes.iter().enumerate() {
                let what = format!("{} '{}'", node.kind, node.output.name);
                if node.input != idx {
                    return Err(refuse(&what, "the graph is not a chain"));
                }
                let out_len = per_image(&node.output)?;
                let (op, mult_adds) = Self::step_op(isa, &node.op, &what)?;
                steps.push(Step {
                    op,
                    info: QuantizedStepInfo {
                        name: node.output.name.clone(),
                        kind: node.kind,
                        mult_adds,
                        shape: node.output.shape.clone(),
                    },
                    out_len,
                });
                specs.push(&node.output);
            }
            if stage.output != stage.nodes.len() {
                return Err(refuse("this model", "its output is not its last op"));
            }
        }
        let n = steps.len();
        let (Some(last), true) = (steps.pop(), n >= 2) else {
            return Err(refuse("this model", "it does not end with a softmax"));
        };
        let StepOp::Softmax(softmax) = last.op else {
            return Err(refuse("this model", "it does not end with a softmax"));
        };
        let output = specs[n - 1].clone();
        let logits = specs[n - 2].clone();
        let sizes = ChainSizes {
            input: in_len,
            output: last.out_len,
            record: per_image(&logits)?,
        };
        let chain = Chain::new(
            isa,
            steps,
            SoftmaxHead(softmax),
            last.info,
            sizes,
            options.min_parallel_mult_adds,
        )?;
        if chain.head_input_len() != last.out_len {
            return Err(refuse(
                "the softmax",
                "its input size does not fit the previous op",
            ));
        }
        Ok(QuantizedPlan {
            chain,
            input,
            output,
            logits,
        })
    }

    /// The packed step of one reference op, and its mult-adds.
    fn step_op(isa: IntIsa, op: &Op, what: &str) -> Result<(StepOp, u64)> {
        Ok(match op {
            Op::Conv(conv) => {
                if conv.batches != 1 {
                    return Err(refuse(what, "its batch is not 1"));
                }
                let (cin, cout) = (conv.in_channels, conv.out_channels);
                let (r, c) = (conv.rows, conv.cols);
                let quant = StepQuant {
                    weight_zero_point: conv.filter_zero_point,
                    input_zero_point: conv.input_zero_point,
                    bias: &conv.bias,
                    output: output_quant(&conv.stage, cout)?,
                };
                let weights = codes(&conv.weights, conv.filter_zero_point);
                match conv.kind {
                    ConvKind::Full => {
                        let geom = PatchGeometry {
                            input: [r.input, c.input],
                            channels: cin,
                            kernel: [r.filter, c.filter],
                            stride: [r.stride, c.stride],
                            dilation: [r.dilation, c.dilation],
                            pad: [r.pad, c.pad],
                            output: [r.output, c.output],
                        };
                        StepOp::conv(isa, &weights, cout, geom, quant)?
                    }
                    ConvKind::Depthwise { multiplier } => {
                        if multiplier != 1
                            || r.filter != 3
                            || c.filter != 3
                            || r.dilation != 1
                            || c.dilation != 1
                        {
                            return Err(refuse(
                                what,
                                "only 3x3 depthwise convs with multiplier 1, no dilation, are \
                                 planned",
                            ));
                        }
                        let geom = DepthwiseGeometry {
                            input: [r.input, c.input],
                            output: [r.output, c.output],
                            stride: [r.stride, c.stride],
                            pad: [r.pad, c.pad],
                            channels: cout,
                        };
                        StepOp::depthwise(isa, &weights, geom, quant)?
                    }
                }
            }
            Op::FullyConnected(fc) => {
                let quant = StepQuant {
                    weight_zero_point: fc.filter_zero_point,
                    input_zero_point: fc.input_zero_point,
                    bias: &fc.bias,
                    output: output_quant(&fc.stage, fc.units)?,
                };
                let geom = PatchGeometry {
                    input: [fc.batches, 1],
                    channels: fc.depth,
                    kernel: [1, 1],
                    stride: [1, 1],
                    dilation: [1, 1],
                    pad: [0, 0],
                    output: [fc.batches, 1],
                };
                let weights = codes(&fc.weights, fc.filter_zero_point);
                StepOp::conv(isa, &weights, fc.units, geom, quant)?
            }
            Op::AveragePool(pool) => {
                if pool.batches != 1 {
                    return Err(refuse(what, "its batch is not 1"));
                }
                let (r, c) = (pool.rows, pool.cols);
                let geom = PoolGeometry {
                    input: [r.input, c.input],
                    channels: pool.channels,
                    window: [r.filter, c.filter],
                    stride: [r.stride, c.stride],
                    pad: [r.pad, c.pad],
                    output: [r.output, c.output],
                };
                let adds = r.output * c.output * pool.channels * r.filter * c.filter;
                let op = StepOp::Pool {
                    geom,
                    min: pool.min.clamp(0, 255) as u8,
                    max: pool.max.clamp(0, 255) as u8,
                };
                (op, adds as u64)
            }
            Op::Softmax(s) => (StepOp::Softmax(s.clone()), 0),
            Op::Reshape => (StepOp::Reshape, 0),
        })
    }

    /// The instruction set the weights were packed for.
    pub fn isa(&self) -> IntIsa {
        self.chain.isa()
    }

    /// The uint8 input of one image (shape with batch 1, quantization).
    pub fn input(&self) -> &TensorSpec {
        &self.input
    }

    /// The final (softmax) output of one image.
    pub fn output(&self) -> &TensorSpec {
        &self.output
    }

    /// The pre-softmax tensor of one image.
    pub fn logits(&self) -> &TensorSpec {
        &self.logits
    }

    /// The steps in execution order.
    pub fn steps(&self) -> impl ExactSizeIterator<Item = &QuantizedStepInfo> {
        self.chain.steps()
    }

    /// Runs `batch` images (`input` batch-major, each of
    /// [`QuantizedPlan::input`]'s size) into `output` (each of
    /// [`QuantizedPlan::output`]'s size); the logits are left in `ws`.
    /// With more than one thread, images are split across threads when
    /// there are enough, otherwise each step is.
    ///
    /// Fails with [`Error::Shape`](crate::Error::Shape) if a length is
    /// wrong or `ws` was made for another plan.
    pub fn run(
        &self,
        input: &[u8],
        batch: usize,
        output: &mut [u8],
        ws: &mut QuantizedWorkspace,
        par: &Parallelism,
    ) -> Result<()> {
        self.chain.run(input, batch, output, ws, par)
    }

    /// [`QuantizedPlan::run`] that adds each step's wall time to `times`
    /// (one entry per step, summed over the images, which run one after
    /// the other with each step split across threads).
    ///
    /// Fails as [`QuantizedPlan::run`], and with
    /// [`Error::Shape`](crate::Error::Shape) if `times` does not have one
    /// entry per step.
    pub fn run_profiled(
        &self,
        input: &[u8],
        batch: usize,
        output: &mut [u8],
        ws: &mut QuantizedWorkspace,
        par: &Parallelism,
        times: &mut [Duration],
    ) -> Result<()> {
        self.chain
            .run_profiled(input, batch, output, ws, par, times)
    }
}
