//! A compiled plan for fast uint8 inference of a [`QuantizedPipeline`]:
//! the same bytes as the reference executor, from the packed SIMD kernels
//! of [`kernels::int8`](crate::kernels::int8), with every buffer sized once
//! so that running allocates nothing.
//!
//! The plan recognises the ops of MobileNet v1 files: full convolutions
//! (1x1 convs run as a GEMM on the activations directly, others through
//! im2col), 3x3 depthwise convolutions with multiplier 1, average pooling,
//! fully connected layers, reshapes and a final softmax. Anything else is
//! refused with [`Error::Format`]; the reference executor still runs it.
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

use std::ops::Range;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::conv::ConvKind;
use super::model::{Op, QuantizedPipeline, TensorSpec};
use super::requantize::OutputStage;
use super::softmax::Softmax;
use crate::engine::Parallelism;
use crate::error::{Error, Result};
use crate::kernels::int8::im2col::{PatchGeometry, im2col};
use crate::kernels::int8::pool::{PoolGeometry, average_pool};
use crate::kernels::int8::{
    DepthwiseGeometry, IntIsa, OutputQuant, PackedDepthwise3x3, PackedGemm,
};

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

/// What one step is, for profiles and reports.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedStepInfo {
    /// The name of the tensor the step writes.
    pub name: String,
    /// The TFLite operator (`CONV_2D`, `DEPTHWISE_CONV_2D`, ...).
    pub kind: &'static str,
    /// Mult-adds (or adds, for pooling) of one image.
    pub mult_adds: u64,
    /// The output shape of one image (batch dimension 1).
    pub shape: Vec<usize>,
}

/// The kernel work of one step.
#[derive(Debug)]
enum StepOp {
    /// A full conv or FC: `rows * row_pixels` GEMM rows per image, read
    /// directly (1x1) or gathered by im2col first.
    Gemm {
        gemm: PackedGemm,
        rows: usize,
        row_pixels: usize,
        patches: Option<PatchGeometry>,
        /// The input zero point, for the taps im2col pads with.
        zero_point: u8,
    },
    Depthwise {
        kernel: PackedDepthwise3x3,
        geom: DepthwiseGeometry,
    },
    Pool {
        geom: PoolGeometry,
        min: u8,
        max: u8,
    },
    Softmax(Softmax),
    Reshape,
}

#[derive(Debug)]
struct Step {
    op: StepOp,
    info: QuantizedStepInfo,
    in_len: usize,
    out_len: usize,
}

/// What a depthwise mult-add costs in GEMM mult-adds: nine taps per
/// output against a requantization each, where a GEMM output shares one
/// over hundreds (measured: about 10 against 170 GMAC/s on AVX-512 VNNI).
const DEPTHWISE_COST: u64 = 16;

impl Step {
    /// The work that decides whether a step is split across threads, in
    /// GEMM mult-adds.
    fn parallel_work(&self) -> u64 {
        match self.op {
            StepOp::Depthwise { .. } => self.info.mult_adds.saturating_mul(DEPTHWISE_COST),
            _ => self.info.mult_adds,
        }
    }
}

/// A uint8 pipeline compiled for one [`IntIsa`]: packed weights, buffer
/// sizes, steps. See the module docs.
#[derive(Debug)]
pub struct QuantizedPlan {
    isa: IntIsa,
    steps: Vec<Step>,
    input: TensorSpec,
    output: TensorSpec,
    logits: TensorSpec,
    /// Largest intermediate activation of one image, bytes.
    activation_len: usize,
    /// Largest im2col buffer of one image, bytes.
    patch_len: usize,
    min_parallel_mult_adds: u64,
}

/// One thread's buffers for running whole images.
#[derive(Debug)]
struct Lane {
    ping: Vec<u8>,
    pong: Vec<u8>,
    patches: Vec<u8>,
}

/// Caller-owned scratch memory for [`QuantizedPlan::run`], made once per
/// plan and [`Parallelism`].
#[derive(Debug)]
pub struct QuantizedWorkspace {
    lanes: Vec<Lane>,
    /// Pre-softmax codes of the last run, batch-major; grows (the only
    /// allocation of a run) when a run has more images than any before.
    logits: Vec<u8>,
    logits_len: usize,
    sizes: [usize; 2],
}

impl QuantizedWorkspace {
    /// Buffers for `plan` with one lane per thread of `par`.
    pub fn new(plan: &QuantizedPlan, par: &Parallelism) -> QuantizedWorkspace {
        let lanes = (0..par.threads())
            .map(|_| Lane {
                ping: vec![0; plan.activation_len],
                pong: vec![0; plan.activation_len],
                patches: vec![0; plan.patch_len],
            })
            .collect();
        QuantizedWorkspace {
            lanes,
            logits: vec![0; plan.logits.numel()],
            logits_len: 0,
            sizes: [plan.activation_len, plan.patch_len],
        }
    }

    /// The pre-softmax codes of the last run, batch-major (empty before
    /// the first run).
    pub fn logits(&self) -> &[u8] {
        &self.logits[..self.logits_len]
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

fn refuse(what: &str, why: &str) -> Error {
    Error::Format(format!(
        "the quantized plan cannot run {what}: {why} (the reference executor can)"
    ))
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
    /// Fails with [`Error::Format`] for ops or graphs the plan does not
    /// handle (see the module docs), [`Error::InvalidConfig`] for an
    /// unsupported ISA.
    pub fn compile(
        model: &QuantizedPipeline,
        options: &QuantizedPlanOptions,
    ) -> Result<QuantizedPlan> {
        let isa = options.isa.unwrap_or_else(IntIsa::detect);
        if !isa.is_supported() {
            return Err(Error::InvalidConfig(format!(
                "{isa} is not supported by this CPU"
            )));
        }
        let input = model.input().clone();
        let mut in_len = per_image(&input)?;
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
                let expect_in = match &op {
                    StepOp::Gemm {
                        gemm,
                        rows,
                        row_pixels,
                        patches,
                        ..
                    } => {
                        let (n, k) = gemm.dims();
                        if rows * row_pixels * n != out_len {
                            return Err(refuse(&what, "the output size does not fit"));
                        }
                        match patches {
                            Some(p) => p.input[0] * p.input[1] * p.channels,
                            None => rows * row_pixels * k,
                        }
                    }
                    StepOp::Depthwise { geom, .. } => geom.input_len(),
                    StepOp::Pool { geom, .. } => geom.input[0] * geom.input[1] * geom.channels,
                    StepOp::Softmax(_) | StepOp::Reshape => out_len,
                };
                if expect_in != in_len {
                    return Err(refuse(&what, "its input size does not fit the previous op"));
                }
                steps.push(Step {
                    op,
                    info: QuantizedStepInfo {
                        name: node.output.name.clone(),
                        kind: node.kind,
                        mult_adds,
                        shape: node.output.shape.clone(),
                    },
                    in_len,
                    out_len,
                });
                specs.push(&node.output);
                in_len = out_len;
            }
            if stage.output != stage.nodes.len() {
                return Err(refuse("this model", "its output is not its last op"));
            }
        }
        let n = steps.len();
        if n < 2 || !matches!(steps[n - 1].op, StepOp::Softmax(_)) {
            return Err(refuse("this model", "it does not end with a softmax"));
        }
        let output = specs[n - 1].clone();
        let logits = specs[n - 2].clone();
        let activation_len = steps[..n - 1].iter().map(|s| s.out_len).max().unwrap_or(0);
        let patch_len = steps
            .iter()
            .filter_map(|s| match &s.op {
                StepOp::Gemm {
                    patches: Some(_),
                    gemm,
                    rows,
                    row_pixels,
                    ..
                } => Some(rows * row_pixels * gemm.dims().1),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        Ok(QuantizedPlan {
            isa,
            steps,
            input,
            output,
            logits,
            activation_len,
            patch_len,
            min_parallel_mult_adds: options.min_parallel_mult_adds,
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
                let quant = output_quant(&conv.stage, cout)?;
                let weights = codes(&conv.weights, conv.filter_zero_point);
                let pixels = r.output * c.output;
                match conv.kind {
                    ConvKind::Full => {
                        let k = r.filter * c.filter * cin;
                        let gemm = PackedGemm::new(
                            isa,
                            &weights,
                            cout,
                            k,
                            conv.filter_zero_point,
                            conv.input_zero_point,
                            &conv.bias,
                            quant,
                        )?;
                        let direct = r.filter == 1
                            && c.filter == 1
                            && r.stride == 1
                            && c.stride == 1
                            && r.pad == 0
                            && c.pad == 0
                            && r.input == r.output
                            && c.input == c.output;
                        let patches = (!direct).then_some(PatchGeometry {
                            input: [r.input, c.input],
                            channels: cin,
                            kernel: [r.filter, c.filter],
                            stride: [r.stride, c.stride],
                            dilation: [r.dilation, c.dilation],
                            pad: [r.pad, c.pad],
                            output: [r.output, c.output],
                        });
                        let op = StepOp::Gemm {
                            gemm,
                            rows: r.output,
                            row_pixels: c.output,
                            patches,
                            zero_point: conv.input_zero_point as u8,
                        };
                        (op, (pixels * cout * k) as u64)
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
                        let kernel = PackedDepthwise3x3::new(
                            isa,
                            &weights,
                            cout,
                            conv.filter_zero_point,
                            conv.input_zero_point,
                            &conv.bias,
                            quant,
                        )?;
                        let geom = DepthwiseGeometry {
                            input: [r.input, c.input],
                            output: [r.output, c.output],
                            stride: [r.stride, c.stride],
                            pad: [r.pad, c.pad],
                            channels: cout,
                        };
                        (
                            StepOp::Depthwise { kernel, geom },
                            (pixels * cout * 9) as u64,
                        )
                    }
                }
            }
            Op::FullyConnected(fc) => {
                let quant = output_quant(&fc.stage, fc.units)?;
                let gemm = PackedGemm::new(
                    isa,
                    &codes(&fc.weights, fc.filter_zero_point),
                    fc.units,
                    fc.depth,
                    fc.filter_zero_point,
                    fc.input_zero_point,
                    &fc.bias,
                    quant,
                )?;
                let op = StepOp::Gemm {
                    gemm,
                    rows: fc.batches,
                    row_pixels: 1,
                    patches: None,
                    zero_point: fc.input_zero_point as u8,
                };
                (op, (fc.batches * fc.units * fc.depth) as u64)
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
        self.isa
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
        self.steps.iter().map(|s| &s.info)
    }

    /// Runs `batch` images (`input` batch-major, each of
    /// [`QuantizedPlan::input`]'s size) into `output` (each of
    /// [`QuantizedPlan::output`]'s size); the logits are left in `ws`.
    /// With more than one thread, images are split across threads when
    /// there are enough, otherwise each step is.
    ///
    /// Fails with [`Error::Shape`] if a length is wrong or `ws` was made
    /// for another plan.
    pub fn run(
        &self,
        input: &[u8],
        batch: usize,
        output: &mut [u8],
        ws: &mut QuantizedWorkspace,
        par: &Parallelism,
    ) -> Result<()> {
        self.check(input, batch, output, ws)?;
        let (in_len, out_len, lg_len) =
            (self.input.numel(), self.output.numel(), self.logits.numel());
        let logits = &mut ws.logits[..batch * lg_len];
        let lanes = ws.lanes.len().min(par.threads()).max(1);
        if lanes > 1 && batch >= lanes {
            let per_lane = batch.div_ceil(lanes);
            return par.install(|| {
                input
                    .par_chunks(per_lane * in_len)
                    .zip(output.par_chunks_mut(per_lane * out_len))
                    .zip(logits.par_chunks_mut(per_lane * lg_len))
                    .zip(ws.lanes.par_iter_mut())
                    .try_for_each(|(((x, y), l), lane)| {
                        for ((x, y), l) in x
                            .chunks_exact(in_len)
                            .zip(y.chunks_exact_mut(out_len))
                            .zip(l.chunks_exact_mut(lg_len))
                        {
                            self.run_image(x, y, l, lane, None, None)?;
                        }
                        Ok(())
                    })
            });
        }
        let split = (lanes > 1).then_some(par);
        let lane = &mut ws.lanes[0];
        // Inside the pool once, so each step's split is a fork within it
        // rather than a new injection from outside.
        par.install(|| {
            for ((x, y), l) in input
                .chunks_exact(in_len)
                .zip(output.chunks_exact_mut(out_len))
                .zip(logits.chunks_exact_mut(lg_len))
            {
                self.run_image(x, y, l, lane, split, None)?;
            }
            Ok(())
        })
    }

    /// [`QuantizedPlan::run`] that adds each step's wall time to `times`
    /// (one entry per step, summed over the images, which run one after
    /// the other with each step split across threads).
    ///
    /// Fails as [`QuantizedPlan::run`], and with [`Error::Shape`] if
    /// `times` does not have one entry per step.
    pub fn run_profiled(
        &self,
        input: &[u8],
        batch: usize,
        output: &mut [u8],
        ws: &mut QuantizedWorkspace,
        par: &Parallelism,
        times: &mut [Duration],
    ) -> Result<()> {
        if times.len() != self.steps.len() {
            return Err(Error::Shape(format!(
                "{} step times for {} steps",
                times.len(),
                self.steps.len()
            )));
        }
        self.check(input, batch, output, ws)?;
        let (in_len, out_len, lg_len) =
            (self.input.numel(), self.output.numel(), self.logits.numel());
        let split = (ws.lanes.len().min(par.threads()) > 1).then_some(par);
        let logits = &mut ws.logits[..batch * lg_len];
        let lane = &mut ws.lanes[0];
        par.install(|| {
            for ((x, y), l) in input
                .chunks_exact(in_len)
                .zip(output.chunks_exact_mut(out_len))
                .zip(logits.chunks_exact_mut(lg_len))
            {
                self.run_image(x, y, l, lane, split, Some(&mut *times))?;
            }
            Ok(())
        })
    }

    /// Checks lengths and the workspace, and sizes the logits record.
    fn check(
        &self,
        input: &[u8],
        batch: usize,
        output: &[u8],
        ws: &mut QuantizedWorkspace,
    ) -> Result<()> {
        let (in_len, out_len) = (self.input.numel(), self.output.numel());
        if batch == 0
            || batch.checked_mul(in_len) != Some(input.len())
            || batch.checked_mul(out_len) != Some(output.len())
        {
            return Err(Error::Shape(format!(
                "a run of {batch} images takes {in_len} input and {out_len} output bytes each, \
                 got {} and {}",
                input.len(),
                output.len()
            )));
        }
        if ws.sizes != [self.activation_len, self.patch_len] || ws.lanes.is_empty() {
            return Err(Error::Shape(
                "the quantized workspace was made for another plan".into(),
            ));
        }
        let lg = batch * self.logits.numel();
        if ws.logits.len() < lg {
            ws.logits.resize(lg, 0);
        }
        ws.logits_len = lg;
        Ok(())
    }

    /// Runs every step on one image.
    fn run_image(
        &self,
        input: &[u8],
        output: &mut [u8],
        logits: &mut [u8],
        lane: &mut Lane,
        split: Option<&Parallelism>,
        mut times: Option<&mut [Duration]>,
    ) -> Result<()> {
        let Lane {
            ping,
            pong,
            patches,
        } = lane;
        let (mut src_buf, mut dst_buf) = (ping, pong);
        let last = self.steps.len() - 1;
        for (i, step) in self.steps.iter().enumerate() {
            let start = Instant::now();
            {
                let src: &[u8] = if i == 0 {
                    input
                } else {
                    &src_buf[..step.in_len]
                };
                if i == last {
                    logits.copy_from_slice(src);
                    self.run_step(step, src, output, patches, split)?;
                } else {
                    self.run_step(step, src, &mut dst_buf[..step.out_len], patches, split)?;
                }
            }
            std::mem::swap(&mut src_buf, &mut dst_buf);
            if let Some(t) = times.as_deref_mut() {
                t[i] += start.elapsed();
            }
        }
        Ok(())
    }

    fn run_step(
        &self,
        step: &Step,
        src: &[u8],
        dst: &mut [u8],
        patch_buf: &mut [u8],
        split: Option<&Parallelism>,
    ) -> Result<()> {
        let split = split.filter(|_| step.parallel_work() >= self.min_parallel_mult_adds);
        match &step.op {
            StepOp::Gemm {
                gemm,
                rows,
                row_pixels,
                patches,
                zero_point,
            } => {
                let (n, k) = gemm.dims();
                match patches {
                    None => split_units(
                        split,
                        rows * row_pixels,
                        n,
                        0,
                        dst,
                        &mut [],
                        |part, out, _| {
                            gemm.run(&src[part.start * k..part.end * k], part.len(), out)
                        },
                    ),
                    Some(geom) => {
                        let per_row = row_pixels * k;
                        split_units(
                            split,
                            *rows,
                            row_pixels * n,
                            per_row,
                            dst,
                            &mut patch_buf[..rows * per_row],
                            |part, out, scratch| {
                                im2col(geom, src, *zero_point, part.clone(), scratch)?;
                                gemm.run(scratch, part.len() * row_pixels, out)
                            },
                        )
                    }
                }
            }
            StepOp::Depthwise { kernel, geom } => split_units(
                split,
                geom.output[0],
                geom.output_row_len(),
                0,
                dst,
                &mut [],
                |part, out, _| kernel.run(geom, src, part, out),
            ),
            StepOp::Pool { geom, min, max } => average_pool(geom, src, *min, *max, dst),
            StepOp::Softmax(s) => s.run(src, dst),
            StepOp::Reshape => {
                dst.copy_from_slice(src);
                Ok(())
            }
        }
    }
}

/// Splits `units` units of work (output rows or pixels), each `unit_len`
/// bytes of `dst` and `scratch_len` bytes of `scratch`, into one
/// contiguous part per thread of `split` (one part without), and runs
/// `work(units, dst_part, scratch_part)` on each.
fn split_units<F>(
    split: Option<&Parallelism>,
    units: usize,
    unit_len: usize,
    scratch_len: usize,
    dst: &mut [u8],
    scratch: &mut [u8],
    work: F,
) -> Result<()>
where
    F: Fn(Range<usize>, &mut [u8], &mut [u8]) -> Result<()> + Sync,
{
    let parts = split.map_or(1, |p| p.threads()).min(units).max(1);
    let Some(par) = split.filter(|_| parts > 1) else {
        return work(0..units, dst, scratch);
    };
    let per = units.div_ceil(parts);
    let range = |p: usize| p * per..((p + 1) * per).min(units);
    par.install(|| {
        if scratch_len == 0 {
            dst.par_chunks_mut(per * unit_len)
                .enumerate()
                .try_for_each(|(p, out)| work(range(p), out, &mut []))
        } else {
            dst.par_chunks_mut(per * unit_len)
                .zip(scratch.par_chunks_mut(per * scratch_len))
                .enumerate()
                .try_for_each(|(p, (out, sc))| {
                    let r = range(p);
                    let used = r.len() * scratch_len;
                    work(r, out, &mut sc[..used])
                })
        }
    })
}
