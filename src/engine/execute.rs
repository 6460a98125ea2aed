//! Running a compiled plan: one image after another through ping-pong
//! buffers, with the work of each step split across threads (batch smaller
//! than the thread count) or whole images per thread (larger batches).

use std::ops::Range;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::engine::chain;
use crate::engine::plan::{CLASSIFIER_BLOCK, Op, Plan, Step};
use crate::engine::workspace::Lane;
use crate::engine::{Parallelism, Workspace};
use crate::error::{Error, Result};
use crate::kernels::{AlignedBuf, ColumnsMut, Epilogue};

impl Plan {
    /// Computes the logits `[batch, classes]` of `batch` images
    /// `[batch, H, W, 3]` (NHWC, normalised). `ws` must have been made for
    /// this plan and `par`. Allocates nothing.
    pub fn run(
        &self,
        input: &[f32],
        batch: usize,
        logits: &mut [f32],
        ws: &mut Workspace,
        par: &Parallelism,
    ) -> Result<()> {
        self.check(input, batch, logits, ws, par)?;
        let threads = par.threads();
        let (in_len, classes) = (self.input_len(), self.classes());
        if threads == 1 || batch < threads {
            // Few images: each step's work is split across the threads.
            let (lanes, bands) = (&mut ws.lanes, &mut ws.bands);
            return par.install_awake(|| {
                for (image, out) in input.chunks(in_len).zip(logits.chunks_mut(classes)) {
                    self.run_image(image, out, &mut lanes[0], &mut bands[..threads], None)?;
                }
                Ok(())
            });
        }
        // Many images: each thread runs whole images on its own buffers.
        let per_thread = batch.div_ceil(threads);
        par.install(|| {
            input
                .par_chunks(per_thread * in_len)
                .zip(logits.par_chunks_mut(per_thread * classes))
                .zip(ws.lanes.par_iter_mut().zip(ws.bands.par_iter_mut()))
                .try_for_each(|((images, outs), (lane, band))| {
                    for (image, out) in images.chunks(in_len).zip(outs.chunks_mut(classes)) {
                        self.run_image(image, out, lane, std::slice::from_mut(band), None)?;
                    }
                    Ok(())
                })
        })
    }

    /// Like [`Plan::run`], adding each step's wall time to `times` (one
    /// entry per [`Plan::steps`]). Images run one after another, each step
    /// split across the threads, so that the times are per step.
    pub fn run_profiled(
        &self,
        input: &[f32],
        batch: usize,
        logits: &mut [f32],
        ws: &mut Workspace,
        par: &Parallelism,
        times: &mut [Duration],
    ) -> Result<()> {
        self.check(input, batch, logits, ws, par)?;
        if times.len() != self.steps.len() {
            return Err(Error::Shape(format!(
                "{} step times for a plan of {} steps",
                times.len(),
                self.steps.len()
            )));
        }
        let threads = par.threads();
        let (lanes, bands) = (&mut ws.lanes, &mut ws.bands);
        let (in_len, classes) = (self.input_len(), self.classes());
        par.install_awake(|| {
            for (image, out) in input.chunks(in_len).zip(logits.chunks_mut(classes)) {
                self.run_image(
                    image,
                    out,
                    &mut lanes[0],
                    &mut bands[..threads],
                    Some(times),
                )?;
            }
            Ok(())
        })
    }

    fn check(
        &self,
        input: &[f32],
        batch: usize,
        logits: &[f32],
        ws: &Workspace,
        par: &Parallelism,
    ) -> Result<()> {
        let in_len = self.input_len();
        if batch.checked_mul(in_len) != Some(input.len()) {
            return Err(Error::Shape(format!(
                "input has {} elements, expected {batch} images of {:?}",
                input.len(),
                self.input_shape()
            )));
        }
        if batch.checked_mul(self.classes()) != Some(logits.len()) {
            return Err(Error::Shape(format!(
                "logits buffer has {} elements, expected {batch} x {}",
                logits.len(),
                self.classes()
            )));
        }
        if ws.sizes != self.scratch_sizes() || ws.lanes.len() < par.threads() {
            return Err(Error::Shape(
                "the workspace was made for another plan or fewer threads".into(),
            ));
        }
        Ok(())
    }

    /// One image through every step. `bands` has one band buffer per part
    /// the steps are split into (1: sequential).
    fn run_image(
        &self,
        image: &[f32],
        logits: &mut [f32],
        lane: &mut Lane,
        bands: &mut [AlignedBuf],
        mut times: Option<&mut [Duration]>,
    ) -> Result<()> {
        let Lane { ping, pong, pooled } = lane;
        let mut current: &mut [f32] = ping.as_mut_slice();
        let mut next: &mut [f32] = pong.as_mut_slice();
        let pooled = pooled.as_mut_slice();
        for (i, step) in self.steps.iter().enumerate() {
            let start = times.is_some().then(Instant::now);
            let source: &[f32] = if i == 0 {
                image
            } else {
                &current[..step.in_len]
            };
            if let Op::PoolClassifier {
                pixels,
                channels,
                fc,
            } = &step.op
            {
                global_average(source, *pixels, *channels, pooled);
                let features: &[f32] = &pooled[..*channels];
                let bands = if step.parallel {
                    &mut *bands
                } else {
                    &mut bands[..1]
                };
                // Every block but the last has CLASSIFIER_BLOCK classes, so
                // block b's logits start at b * CLASSIFIER_BLOCK.
                split(
                    logits,
                    fc.len(),
                    CLASSIFIER_BLOCK,
                    bands,
                    |blocks, out, _| {
                        for (b, block) in fc[blocks].iter().enumerate() {
                            let start = b * CLASSIFIER_BLOCK;
                            let out = &mut out[start..start + block.n()];
                            block.run(features, out, 1, Epilogue::IDENTITY)?;
                        }
                        Ok(())
                    },
                )?;
            } else {
                self.run_step(step, source, &mut next[..step.out_len], bands)?;
                std::mem::swap(&mut current, &mut next);
            }
            if let (Some(times), Some(start)) = (times.as_deref_mut(), start) {
                times[i] += start.elapsed();
            }
        }
        Ok(())
    }

    fn run_step(
        &self,
        step: &Step,
        src: &[f32],
        dst: &mut [f32],
        bands: &mut [AlignedBuf],
    ) -> Result<()> {
        let epilogue = self.epilogue;
        let bands = if step.parallel {
            bands
        } else {
            &mut bands[..1]
        };
        match &step.op {
            Op::Conv3x3 { kernel, geom } => {
                let row = geom.out_w * kernel.c_out();
                split(dst, geom.out_h, row, bands, |rows, out, _| {
                    kernel.run_band(src, out, geom, rows, epilogue)
                })
            }
            Op::Depthwise { kernel, geom } => {
                let row = geom.out_w * kernel.channels();
                split(dst, geom.out_h, row, bands, |rows, out, _| {
                    kernel.run_band(src, out, geom, rows, epilogue)
                })
            }
            Op::Pointwise {
                kernel,
                pixels,
                by_columns: true,
            } if bands.len() > 1 => {
                let out = ColumnsMut::new(dst, *pixels, kernel.n())?;
                split_columns(out, bands.len(), kernel.panel_columns(), &|part| {
                    kernel.run_columns(&src[..*pixels * kernel.k()], part, epilogue)
                })
            }
            Op::Pointwise { kernel, pixels, .. } => {
                let (k, n) = (kernel.k(), kernel.n());
                split(dst, *pixels, n, bands, |px, out, _| {
                    kernel.run(&src[px.start * k..px.end * k], out, px.len(), epilogue)
                })
            }
            Op::Separable {
                depthwise,
                geom,
                pointwise,
                band_rows,
            } => {
                let c = depthwise.channels();
                let row_out = geom.out_w * pointwise.n();
                split(dst, geom.out_h, row_out, bands, |rows, out, band| {
                    let mut r = rows.start;
                    while r < rows.end {
                        let end = (r + band_rows).min(rows.end);
                        let mid = &mut band[..(end - r) * geom.out_w * c];
                        depthwise.run_band(src, mid, geom, r..end, epilogue)?;
                        let out_band =
                            &mut out[(r - rows.start) * row_out..(end - rows.start) * row_out];
                        pointwise.run(mid, out_band, (end - r) * geom.out_w, epilogue)?;
                        r = end;
                    }
                    Ok(())
                })
            }
            Op::Chain { stages, band_rows } => {
                let (out_h, row) = chain::output_rows(stages);
                split(dst, out_h, row, bands, |rows, out, band| {
                    chain::run_chain(stages, *band_rows, src, rows, out, band, epilogue)
                })
            }
            Op::PoolClassifier { .. } => Err(Error::Shape("pool + classifier runs last".into())),
        }
    }
}

/// Splits `units` units of work (rows or pixels), each `unit_len` elements
/// of `dst`, into one contiguous part per band buffer, and runs `work` on
/// the parts in parallel (directly for a single part).
fn split<F>(
    dst: &mut [f32],
    units: usize,
    unit_len: usize,
    bands: &mut [AlignedBuf],
    work: F,
) -> Result<()>
where
    F: Fn(Range<usize>, &mut [f32], &mut [f32]) -> Result<()> + Sync,
{
    if bands.len() <= 1 || units <= 1 {
        return work(0..units, dst, bands[0].as_mut_slice());
    }
    let per_part = units.div_ceil(bands.len());
    dst.par_chunks_mut(per_part * unit_len)
        .zip(bands.par_iter_mut())
        .enumerate()
        .try_for_each(|(p, (out, band))| {
            let start = p * per_part;
            work(
                start..(start + per_part).min(units),
                out,
                band.as_mut_slice(),
            )
        })
}

/// Splits the columns of `out` into `parts` ranges of near-equal numbers of
/// whole `align`-column panels and runs `work` on them in parallel.
fn split_columns<F>(out: ColumnsMut<'_>, parts: usize, align: usize, work: &F) -> Result<()>
where
    F: Fn(ColumnsMut<'_>) -> Result<()> + Sync,
{
    let panels = out.cols().div_ceil(align);
    let left_parts = parts / 2;
    let at = panels * left_parts / parts.max(1) * align;
    if parts <= 1 || at == 0 || at >= out.cols() {
        return work(out);
    }
    let (left, right) = out.split_at(at);
    let (a, b) = rayon::join(
        || split_columns(left, left_parts, align, work),
        || split_columns(right, parts - left_parts, align, work),
    );
    a.and(b)
}

/// Mean over `pixels` positions of an `[pixels, channels]` activation.
fn global_average(src: &[f32], pixels: usize, channels: usize, out: &mut [f32]) {
    let out = &mut out[..channels];
    out.fill(0.0);
    for pixel in src[..pixels * channels].chunks_exact(channels) {
        for (sum, &x) in out.iter_mut().zip(pixel) {
            *sum += x;
        }
    }
    let scale = 1.0 / pixels as f32;
    for sum in out.iter_mut() {
        *sum *= scale;
    }
}
