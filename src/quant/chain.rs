//! The graph-independent half of the fast integer plans: a chain of packed
//! kernel steps on uint8 activations, then a head that turns the last
//! activation into the plan's output (a softmax for uint8 TFLite files,
//! pool + classifier for our int8 models). Buffers are sized once, so
//! running allocates nothing; images are split across threads when a batch
//! has enough of them, otherwise each large step is.
//!
//! [`QuantizedPlan`](super::plan::QuantizedPlan) and
//! [`Int8Plan`](super::ptq::plan::Int8Plan) only translate their models
//! into [`StepOp`]s and a [`Head`].

use std::ops::Range;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::softmax::Softmax;
use crate::engine::Parallelism;
use crate::error::{Error, Result};
use crate::kernels::int8::im2col::{PatchGeometry, im2col};
use crate::kernels::int8::pool::{PoolGeometry, average_pool};
use crate::kernels::int8::{
    DepthwiseGeometry, IntIsa, OutputQuant, PackedDepthwise3x3, PackedGemm, PackedStem,
};

/// What one step is, for profiles and reports.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedStepInfo {
    /// The name of the tensor (or layer) the step writes.
    pub name: String,
    /// The operator: TFLite's name (`CONV_2D`, `DEPTHWISE_CONV_2D`, ...)
    /// for uint8 files, our layer kind (`conv`, `depthwise`, ...) for int8
    /// models.
    pub kind: &'static str,
    /// Mult-adds (or adds, for pooling) of one image.
    pub mult_adds: u64,
    /// The output shape of one image (batch dimension 1).
    pub shape: Vec<usize>,
}

/// The kernel work of one step.
#[derive(Debug)]
pub(crate) enum StepOp {
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
    /// A full conv over a few input channels read straight from the
    /// image (the stem on VNNI), split by output rows.
    Stem(PackedStem),
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

/// The zero points and epilogue of one accumulating step, in uint8 codes.
pub(crate) struct StepQuant<'a> {
    pub weight_zero_point: i32,
    pub input_zero_point: i32,
    pub bias: &'a [i32],
    pub output: OutputQuant,
}

impl StepOp {
    /// A full convolution of `geom` with `weights` `[C_out][kh][kw][C_in]`
    /// (im2col's patch order): a GEMM on the activations themselves for a
    /// plain 1x1 conv, the direct [`PackedStem`] kernel for few input
    /// channels where the ISA has one, through im2col otherwise. Returns the
    /// step and its mult-adds.
    pub(crate) fn conv(
        isa: IntIsa,
        weights: &[u8],
        out_channels: usize,
        geom: PatchGeometry,
        quant: StepQuant<'_>,
    ) -> Result<(StepOp, u64)> {
        let k = geom.depth();
        let direct = geom.kernel == [1, 1]
            && geom.stride == [1, 1]
            && geom.pad == [0, 0]
            && geom.input == geom.output;
        let [rows, row_pixels] = geom.output;
        let mult_adds = (rows * row_pixels * out_channels * k) as u64;
        if !direct && PackedStem::supports(isa, &geom) {
            let stem = PackedStem::new(
                isa,
                weights,
                out_channels,
                geom,
                quant.weight_zero_point,
                quant.input_zero_point,
                quant.bias,
                quant.output,
            )?;
            return Ok((StepOp::Stem(stem), mult_adds));
        }
        let gemm = PackedGemm::new(
            isa,
            weights,
            out_channels,
            k,
            quant.weight_zero_point,
            quant.input_zero_point,
            quant.bias,
            quant.output,
        )?;
        let op = StepOp::Gemm {
            gemm,
            rows,
            row_pixels,
            patches: (!direct).then_some(geom),
            zero_point: quant.input_zero_point as u8,
        };
        Ok((op, mult_adds))
    }

    /// A 3x3 depthwise convolution of `geom` with `weights` `[3][3][C]`.
    /// Returns the step and its mult-adds.
    pub(crate) fn depthwise(
        isa: IntIsa,
        weights: &[u8],
        geom: DepthwiseGeometry,
        quant: StepQuant<'_>,
    ) -> Result<(StepOp, u64)> {
        let kernel = PackedDepthwise3x3::new(
            isa,
            weights,
            geom.channels,
            quant.weight_zero_point,
            quant.input_zero_point,
            quant.bias,
            quant.output,
        )?;
        let mult_adds = geom.output[0] * geom.output[1] * geom.channels * 9;
        Ok((StepOp::Depthwise { kernel, geom }, mult_adds as u64))
    }

    /// Bytes of one image's input the step reads, given its output size.
    fn input_len(&self, out_len: usize) -> usize {
        match self {
            StepOp::Gemm {
                gemm,
                rows,
                row_pixels,
                patches,
                ..
            } => match patches {
                Some(p) => p.input[0] * p.input[1] * p.channels,
                None => rows * row_pixels * gemm.dims().1,
            },
            StepOp::Stem(stem) => {
                let g = stem.geometry();
                g.input[0] * g.input[1] * g.channels
            }
            StepOp::Depthwise { geom, .. } => geom.input_len(),
            StepOp::Pool { geom, .. } => geom.input[0] * geom.input[1] * geom.channels,
            StepOp::Softmax(_) | StepOp::Reshape => out_len,
        }
    }

    /// Bytes of one image's output, where the op fixes them.
    fn output_len(&self) -> Option<usize> {
        match self {
            StepOp::Gemm {
                gemm,
                rows,
                row_pixels,
                ..
            } => Some(rows * row_pixels * gemm.dims().0),
            StepOp::Stem(stem) => {
                let g = stem.geometry();
                Some(g.output[0] * g.output[1] * stem.dims().0)
            }
            StepOp::Depthwise { geom, .. } => Some(geom.output[0] * geom.output_row_len()),
            _ => None,
        }
    }

    /// Bytes of im2col patches of one image.
    fn patch_len(&self) -> usize {
        match self {
            StepOp::Gemm {
                patches: Some(_),
                gemm,
                rows,
                row_pixels,
                ..
            } => rows * row_pixels * gemm.dims().1,
            _ => 0,
        }
    }
}

/// One step with its sizes.
#[derive(Debug)]
pub(crate) struct Step {
    pub op: StepOp,
    pub info: QuantizedStepInfo,
    pub out_len: usize,
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

/// The last stage of a plan: the last activation of one image into the
/// plan's output, with a per-image record of codes the workspace keeps.
pub(crate) trait Head: Sync {
    /// One output value.
    type Out: Copy + Send + Sync;
    /// `src` is the last step's output, `out` one image's output,
    /// `record` one image's record.
    fn run(&self, src: &[u8], out: &mut [Self::Out], record: &mut [u8]) -> Result<()>;
}

/// The uint8 TFLite head: a softmax, recording its input (the logits).
#[derive(Debug)]
pub(crate) struct SoftmaxHead(pub Softmax);

impl Head for SoftmaxHead {
    type Out = u8;
    fn run(&self, src: &[u8], out: &mut [u8], record: &mut [u8]) -> Result<()> {
        record.copy_from_slice(src);
        self.0.run(src, out)
    }
}

/// `isa`, or the best this CPU has (lowered by `MOBILENET_ISA`).
///
/// Fails with [`Error::InvalidConfig`] for a set this CPU lacks.
pub(crate) fn resolve_isa(isa: Option<IntIsa>) -> Result<IntIsa> {
    let isa = isa.unwrap_or_else(IntIsa::detect);
    if !isa.is_supported() {
        return Err(Error::InvalidConfig(format!(
            "{isa} is not supported by this CPU"
        )));
    }
    Ok(isa)
}

/// The error of a model the plans cannot run.
pub(crate) fn refuse(what: &str, why: &str) -> Error {
    Error::Format(format!(
        "the quantized plan cannot run {what}: {why} (the reference executor can)"
    ))
}

/// Per-image sizes of a [`Chain`].
pub(crate) struct ChainSizes {
    /// Input bytes.
    pub input: usize,
    /// Output values.
    pub output: usize,
    /// Record bytes (at least 1).
    pub record: usize,
}

/// Packed steps and a head, compiled for one [`IntIsa`].
#[derive(Debug)]
pub(crate) struct Chain<H> {
    isa: IntIsa,
    steps: Vec<Step>,
    head: H,
    /// What each step and the head are, in order.
    infos: Vec<QuantizedStepInfo>,
    in_len: usize,
    out_len: usize,
    record_len: usize,
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

/// Caller-owned scratch memory for running a quantized plan, made once per
/// plan and [`Parallelism`].
#[derive(Debug)]
pub struct QuantizedWorkspace {
    lanes: Vec<Lane>,
    /// The heads' records of the last run (for uint8 TFLite plans the
    /// pre-softmax codes), batch-major; grows (the only allocation of a
    /// run) when a run has more images than any before.
    records: Vec<u8>,
    records_len: usize,
    sizes: [usize; 2],
}

impl QuantizedWorkspace {
    /// The heads' records of the last run, batch-major (empty before the
    /// first run): for a uint8 TFLite plan its pre-softmax codes, for an
    /// int8 plan the pooled features (int8 codes + 128).
    pub fn logits(&self) -> &[u8] {
        &self.records[..self.records_len]
    }
}

impl<H: Head> Chain<H> {
    /// Chains `steps` and `head`, checking that each step reads what the
    /// one before writes (the first: `sizes.input` bytes); that the head
    /// reads the last step's output is the caller's to ensure.
    ///
    /// Fails with [`Error::Format`] (via [`refuse`]) for sizes that do not
    /// fit.
    pub fn new(
        isa: IntIsa,
        steps: Vec<Step>,
        head: H,
        head_info: QuantizedStepInfo,
        sizes: ChainSizes,
        min_parallel_mult_adds: u64,
    ) -> Result<Chain<H>> {
        let mut in_len = sizes.input;
        for step in &steps {
            let what = format!("{} '{}'", step.info.kind, step.info.name);
            if step.op.output_len().is_some_and(|n| n != step.out_len) {
                return Err(refuse(&what, "the output size does not fit"));
            }
            if step.op.input_len(step.out_len) != in_len {
                return Err(refuse(&what, "its input size does not fit the previous op"));
            }
            in_len = step.out_len;
        }
        if sizes.record == 0 || sizes.output == 0 {
            return Err(refuse("this model", "it has an empty output"));
        }
        let activation_len = steps.iter().map(|s| s.out_len).max().unwrap_or(0);
        let patch_len = steps.iter().map(|s| s.op.patch_len()).max().unwrap_or(0);
        let infos = steps
            .iter()
            .map(|s| s.info.clone())
            .chain(std::iter::once(head_info))
            .collect();
        Ok(Chain {
            isa,
            steps,
            head,
            infos,
            in_len: sizes.input,
            out_len: sizes.output,
            record_len: sizes.record,
            activation_len,
            patch_len,
            min_parallel_mult_adds,
        })
    }

    /// The instruction set the weights were packed for.
    pub fn isa(&self) -> IntIsa {
        self.isa
    }

    /// Input bytes of one image.
    pub fn input_len(&self) -> usize {
        self.in_len
    }

    /// Bytes of one image's input the head reads (the last step's output).
    pub fn head_input_len(&self) -> usize {
        self.steps.last().map_or(self.in_len, |s| s.out_len)
    }

    /// The steps in execution order, the head last.
    pub fn steps(&self) -> impl ExactSizeIterator<Item = &QuantizedStepInfo> {
        self.infos.iter()
    }

    /// Buffers with one lane per thread of `par`.
    pub fn workspace(&self, par: &Parallelism) -> QuantizedWorkspace {
        let lanes = (0..par.threads())
            .map(|_| Lane {
                ping: vec![0; self.activation_len],
                pong: vec![0; self.activation_len],
                patches: vec![0; self.patch_len],
            })
            .collect();
        QuantizedWorkspace {
            lanes,
            records: vec![0; self.record_len],
            records_len: 0,
            sizes: [self.activation_len, self.patch_len],
        }
    }

    /// Runs `batch` images (`input` batch-major) into `output`. With more
    /// than one thread, images are split across threads when there are
    /// enough, otherwise each step is.
    ///
    /// Fails with [`Error::Shape`] if a length is wrong or `ws` was made
    /// for another plan.
    pub fn run(
        &self,
        input: &[u8],
        batch: usize,
        output: &mut [H::Out],
        ws: &mut QuantizedWorkspace,
        par: &Parallelism,
    ) -> Result<()> {
        self.check(input, batch, output, ws)?;
        let (in_len, out_len, rec_len) = (self.in_len, self.out_len, self.record_len);
        let records = &mut ws.records[..batch * rec_len];
        let lanes = ws.lanes.len().min(par.threads()).max(1);
        if lanes > 1 && batch >= lanes {
            let per_lane = batch.div_ceil(lanes);
            return par.install(|| {
                input
                    .par_chunks(per_lane * in_len)
                    .zip(output.par_chunks_mut(per_lane * out_len))
                    .zip(records.par_chunks_mut(per_lane * rec_len))
                    .zip(ws.lanes.par_iter_mut())
                    .try_for_each(|(((x, y), r), lane)| {
                        for ((x, y), r) in x
                            .chunks_exact(in_len)
                            .zip(y.chunks_exact_mut(out_len))
                            .zip(r.chunks_exact_mut(rec_len))
                        {
                            self.run_image(x, y, r, lane, None, None)?;
                        }
                        Ok(())
                    })
            });
        }
        let split = (lanes > 1).then_some(par);
        self.run_one_by_one(input, output, records, &mut ws.lanes[0], split, None, par)
    }

    /// [`Chain::run`] that adds each step's wall time to `times` (one
    /// entry per step and one for the head, summed over the images, which
    /// run one after the other with each step split across threads).
    ///
    /// Fails as [`Chain::run`], and with [`Error::Shape`] if `times` does
    /// not have one entry per step.
    pub fn run_profiled(
        &self,
        input: &[u8],
        batch: usize,
        output: &mut [H::Out],
        ws: &mut QuantizedWorkspace,
        par: &Parallelism,
        times: &mut [Duration],
    ) -> Result<()> {
        if times.len() != self.infos.len() {
            return Err(Error::Shape(format!(
                "{} step times for {} steps",
                times.len(),
                self.infos.len()
            )));
        }
        self.check(input, batch, output, ws)?;
        let split = (ws.lanes.len().min(par.threads()) > 1).then_some(par);
        let records = &mut ws.records[..batch * self.record_len];
        self.run_one_by_one(
            input,
            output,
            records,
            &mut ws.lanes[0],
            split,
            Some(times),
            par,
        )
    }

    /// Runs the images one after the other on one lane.
    #[allow(clippy::too_many_arguments)]
    fn run_one_by_one(
        &self,
        input: &[u8],
        output: &mut [H::Out],
        records: &mut [u8],
        lane: &mut Lane,
        split: Option<&Parallelism>,
        mut times: Option<&mut [Duration]>,
        par: &Parallelism,
    ) -> Result<()> {
        // Inside the pool once, so each step's split is a fork within it
        // rather than a new injection from outside; with the other threads
        // kept polling while steps are split.
        let images = || {
            for ((x, y), r) in input
                .chunks_exact(self.in_len)
                .zip(output.chunks_exact_mut(self.out_len))
                .zip(records.chunks_exact_mut(self.record_len))
            {
                self.run_image(x, y, r, lane, split, times.as_deref_mut())?;
            }
            Ok(())
        };
        if split.is_some() || par.threads() == 1 {
            // (At one thread this runs on the caller's thread: nothing splits.)
            par.install_awake(images)
        } else {
            par.install(images)
        }
    }

    /// Checks lengths and the workspace, and sizes the records.
    fn check(
        &self,
        input: &[u8],
        batch: usize,
        output: &[H::Out],
        ws: &mut QuantizedWorkspace,
    ) -> Result<()> {
        let (in_len, out_len) = (self.in_len, self.out_len);
        if batch == 0
            || batch.checked_mul(in_len) != Some(input.len())
            || batch.checked_mul(out_len) != Some(output.len())
        {
            return Err(Error::Shape(format!(
                "a run of {batch} images takes {in_len} input bytes and {out_len} outputs each, \
                 got {} and {}",
                input.len(),
                output.len()
            )));
        }
        if ws.sizes != [self.activation_len, self.patch_len]
            || ws.lanes.is_empty()
            || ws.records.len() < self.record_len
        {
            return Err(Error::Shape(
                "the quantized workspace was made for another plan".into(),
            ));
        }
        let len = batch * self.record_len;
        if ws.records.len() < len {
            ws.records.resize(len, 0);
        }
        ws.records_len = len;
        Ok(())
    }

    /// Runs every step and the head on one image.
    fn run_image(
        &self,
        input: &[u8],
        output: &mut [H::Out],
        record: &mut [u8],
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
        for (i, step) in self.steps.iter().enumerate() {
            let start = Instant::now();
            {
                let src: &[u8] = if i == 0 {
                    input
                } else {
                    &src_buf[..self.steps[i - 1].out_len]
                };
                self.run_step(step, src, &mut dst_buf[..step.out_len], patches, split)?;
            }
            std::mem::swap(&mut src_buf, &mut dst_buf);
            if let Some(t) = times.as_deref_mut() {
                t[i] += start.elapsed();
            }
        }
        let start = Instant::now();
        let last: &[u8] = match self.steps.last() {
            Some(step) => &src_buf[..step.out_len],
            None => input,
        };
        self.head.run(last, output, record)?;
        if let Some(t) = times {
            t[self.steps.len()] += start.elapsed();
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
            StepOp::Stem(stem) => {
                let g = stem.geometry();
                split_units(
                    split,
                    g.output[0],
                    g.output[1] * stem.dims().0,
                    0,
                    dst,
                    &mut [],
                    |part, out, _| stem.run(src, part, out),
                )
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
