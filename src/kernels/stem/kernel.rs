//! The stem (full 3x3 conv, few input channels) driver, generic over the
//! vector ISA.
//!
//! Vectorised over output channels: per output row, channel groups of
//! `NV <= 3` vectors -> left border pixels -> interior tiles of `T` output
//! pixels -> right border pixels.
//! In a tile, each of the `9 * C_in` taps loads its `NV` weight vectors once
//! and broadcasts one input value per pixel, feeding `T * NV` accumulators.
//! Packed weights are `[ky][kx][ci][C_out padded]`, so that for a fixed `ky`
//! the taps walk the `3 * C_in` contiguous input values of the window row.

// Tiles index fixed-size accumulator arrays with unrolled constant indices.
#![allow(clippy::needless_range_loop)]

use std::ops::Range;

use crate::kernels::Epilogue;
use crate::kernels::depthwise::Conv3x3Geometry;
use crate::kernels::depthwise::simd::{Simd, store_n};

/// One validated call: the whole input image, the output rows `rows` only.
pub(crate) struct StemJob<'a> {
    /// `[in_h, in_w, c_in]`.
    pub input: &'a [f32],
    /// `[rows.len(), out_w, c_out]`: output row `rows.start` first.
    pub band: &'a mut [f32],
    /// `[9 * c_in][padded]`, zero past `c_out`.
    pub weights: &'a [f32],
    /// `[padded]`, zero past `c_out`.
    pub bias: &'a [f32],
    pub c_in: usize,
    pub c_out: usize,
    pub padded: usize,
    pub geom: Conv3x3Geometry,
    pub rows: Range<usize>,
    pub epilogue: Epilogue,
}

/// What a channel group of one output row needs.
struct RowCtx {
    /// Start of input rows `oy * stride - pad_top + ky`; only read where
    /// `valid[ky]`.
    rows: [*const f32; 3],
    valid: [bool; 3],
    /// Start of the output row.
    out: *mut f32,
    c_in: usize,
    c_out: usize,
    in_w: usize,
    out_w: usize,
    stride: usize,
    pad_left: usize,
    interior: Range<usize>,
    weights: *const f32,
    bias: *const f32,
    padded: usize,
    lo: f32,
    hi: f32,
}

/// Runs the whole job. Output channels go in groups of up to 3 vectors
/// (at most 2 when `T3 == 0`): a group of `NV` vectors uses tiles of `T1`,
/// `T2` or `T3` pixels, so that the `NV * T` accumulators fill the register
/// file and hide the FMA latency.
///
/// # Safety
/// The CPU supports `S`; the job's lengths agree with its geometry (as
/// checked by `PackedStemConv3x3::run_band`), `padded` is a multiple of
/// `S::LANES`, and `geom.validate()` holds.
#[inline(always)]
pub(crate) unsafe fn run<S: Simd, const T1: usize, const T2: usize, const T3: usize>(
    job: StemJob<'_>,
) {
    let g = job.geom;
    let row_len = g.out_w * job.c_out;
    let input = job.input.as_ptr();
    let band = job.band.as_mut_ptr();
    let interior = g.interior_cols();
    for oy in job.rows.clone() {
        let mut rows = [input; 3];
        let mut valid = [false; 3];
        for (ky, iy) in g.tap_rows(oy).into_iter().enumerate() {
            if let Some(iy) = iy {
                // SAFETY: iy < in_h, so the row start is inside `input`.
                rows[ky] = unsafe { input.add(iy * g.in_w * job.c_in) };
                valid[ky] = true;
            }
        }
        let ctx = RowCtx {
            rows,
            valid,
            // SAFETY: oy is in `rows`, so this output row is inside the band.
            out: unsafe { band.add((oy - job.rows.start) * row_len) },
            c_in: job.c_in,
            c_out: job.c_out,
            in_w: g.in_w,
            out_w: g.out_w,
            stride: g.stride,
            pad_left: g.pad_left,
            interior: interior.clone(),
            weights: job.weights.as_ptr(),
            bias: job.bias.as_ptr(),
            padded: job.padded,
            lo: job.epilogue.min,
            hi: job.epilogue.max,
        };
        let mut c0 = 0;
        while c0 < job.c_out {
            let rem = job.c_out - c0;
            let l = S::LANES;
            // Vectors in this group: all that remain up to 3 (2 without
            // 3-vector tiles), else 2.
            let nv = match rem.div_ceil(l) {
                n @ 1..=2 => n,
                3 if T3 > 0 => 3,
                _ => 2,
            };
            // SAFETY (all groups): channels c0 .. c0 + nv * LANES are within
            // `padded`; stores are limited to the real ones.
            match nv {
                1 => unsafe { group::<S, 1, T1>(&ctx, c0, rem) },
                2 => unsafe { group::<S, 2, T2>(&ctx, c0, rem.min(2 * l)) },
                _ => unsafe { group::<S, 3, T3>(&ctx, c0, rem) },
            }
            c0 += nv * l;
        }
    }
}

/// A channel group's constants.
struct Group<S: Simd, const NV: usize> {
    b: [S::V; NV],
    lo: S::V,
    hi: S::V,
    /// First channel.
    c0: usize,
    /// Real channels in the group (the last vector may be partial).
    n: usize,
}

/// Output channels `c0 .. c0 + n` of one output row, `NV` vectors wide.
///
/// # Safety
/// As [`run`], with `(NV - 1) * LANES < n <= NV * LANES`, `c0 + n <= c_out`
/// and `c0 + NV * LANES <= padded`.
#[inline(always)]
unsafe fn group<S: Simd, const NV: usize, const T: usize>(ctx: &RowCtx, c0: usize, n: usize) {
    // SAFETY: the bias holds `padded >= c0 + NV * LANES` values; the rest is
    // forwarded to the tile and pixel functions, whose columns come from
    // `interior_cols` (all taps inside the image) or are bounds-checked.
    unsafe {
        let mut b = [S::splat(0.0); NV];
        for (v, bv) in b.iter_mut().enumerate() {
            *bv = S::load(ctx.bias.add(c0 + v * S::LANES));
        }
        let k = Group::<S, NV> {
            b,
            lo: S::splat(ctx.lo),
            hi: S::splat(ctx.hi),
            c0,
            n,
        };
        for x in 0..ctx.interior.start {
            pixel(ctx, &k, x);
        }
        let mut x = ctx.interior.start;
        while x + T <= ctx.interior.end {
            tile::<S, NV, T>(ctx, &k, x);
            x += T;
        }
        if x < ctx.interior.end && ctx.interior.len() >= T {
            // The remainder as one full tile ending at the interior's end,
            // which recomputes some pixels of the previous tile (the same
            // sums in the same order: the same bits): one-pixel tiles have
            // too few accumulators to hide the FMA latency.
            tile::<S, NV, T>(ctx, &k, ctx.interior.end - T);
            x = ctx.interior.end;
        }
        while x < ctx.interior.end {
            tile::<S, NV, 1>(ctx, &k, x);
            x += 1;
        }
        for x in ctx.interior.end..ctx.out_w {
            pixel(ctx, &k, x);
        }
    }
}

/// Clamps and stores the `NV` vectors of pixel `x`.
///
/// # Safety
/// `x < out_w`, plus [`group`]'s contract.
#[inline(always)]
unsafe fn store<S: Simd, const NV: usize>(
    ctx: &RowCtx,
    k: &Group<S, NV>,
    x: usize,
    acc: &[S::V; NV],
) {
    for v in 0..NV {
        // SAFETY: pixel x of the output row; lanes limited to the group's
        // real channels, of which vector v holds at least one.
        unsafe {
            let p = ctx.out.add(x * ctx.c_out + k.c0 + v * S::LANES);
            store_n::<S>(p, S::clamp(acc[v], k.lo, k.hi), k.n - v * S::LANES);
        }
    }
}

/// One output pixel with every tap bounds-checked (the borders).
///
/// # Safety
/// `x < out_w`, plus [`group`]'s contract.
#[inline(always)]
unsafe fn pixel<S: Simd, const NV: usize>(ctx: &RowCtx, k: &Group<S, NV>, x: usize) {
    let mut acc = k.b;
    let ix0 = (x * ctx.stride) as isize - ctx.pad_left as isize;
    for ky in 0..3 {
        if !ctx.valid[ky] {
            continue;
        }
        for kx in 0..3 {
            let ix = ix0 + kx as isize;
            if ix < 0 || ix >= ctx.in_w as isize {
                continue;
            }
            for ci in 0..ctx.c_in {
                let tap = (ky * 3 + kx) * ctx.c_in + ci;
                // SAFETY: row ky valid and 0 <= ix < in_w: an in-image pixel;
                // weight row `tap` < 9 * c_in holds `padded` values.
                unsafe {
                    let a = S::splat(*ctx.rows[ky].add(ix as usize * ctx.c_in + ci));
                    let w = ctx.weights.add(tap * ctx.padded + k.c0);
                    for v in 0..NV {
                        acc[v] = S::fmadd(a, S::load(w.add(v * S::LANES)), acc[v]);
                    }
                }
            }
        }
    }
    // SAFETY: forwarded contract.
    unsafe { store(ctx, k, x, &acc) };
}

/// `T` interior output pixels `x .. x + T`.
///
/// # Safety
/// `x .. x + T` inside `ctx.interior`, plus [`group`]'s contract.
#[inline(always)]
unsafe fn tile<S: Simd, const NV: usize, const T: usize>(ctx: &RowCtx, k: &Group<S, NV>, x: usize) {
    let mut acc = [k.b; T];
    let taps = 3 * ctx.c_in;
    let step = ctx.stride * ctx.c_in;
    for ky in 0..3 {
        if !ctx.valid[ky] {
            continue;
        }
        // SAFETY: interior pixels: the window of pixel x + t covers input
        // columns (x + t) * stride - pad_left + 0..3, all inside the row, so
        // offsets t * step + q for q < 3 * c_in are in bounds; weight rows
        // ky * taps + q < 9 * c_in hold `padded` values.
        unsafe {
            let a = ctx.rows[ky].add((x * ctx.stride - ctx.pad_left) * ctx.c_in);
            let w = ctx.weights.add(ky * taps * ctx.padded + k.c0);
            for q in 0..taps {
                let mut wv = [S::splat(0.0); NV];
                for v in 0..NV {
                    wv[v] = S::load(w.add(q * ctx.padded + v * S::LANES));
                }
                for t in 0..T {
                    let b = S::splat(*a.add(t * step + q));
                    for v in 0..NV {
                        acc[t][v] = S::fmadd(b, wv[v], acc[t][v]);
                    }
                }
            }
        }
    }
    for t in 0..T {
        // SAFETY: x + t < interior.end <= out_w.
        unsafe { store(ctx, k, x + t, &acc[t]) };
    }
}
