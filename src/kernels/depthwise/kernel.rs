//! The depthwise 3x3 driver, generic over the vector ISA.
//!
//! Output rows are computed `R` at a time (register blocking over rows: at
//! stride 1 two output rows share two of their four input rows), and each
//! group of rows is cut into tiles of up to `T` output pixels. For a tile,
//! every channel block (one vector of channels) loads its bias and 9 tap
//! weights into registers, then slides over each input row once: every input
//! vector is loaded a single time and feeds all the accumulators (up to
//! `3 * R` at stride 1) whose windows contain it.
//!
//! Tiles cover the borders too: a column outside the image reads as zero
//! (no load), and an input row outside the image is skipped through a
//! loop-invariant flag, so the interior stays branch-free apart from those
//! perfectly predicted tests.
//!
//! Loop order is pixels outside, channels inside, so memory is walked pixel
//! by pixel. (Channel blocks outside would stride through a row `C * 4`
//! bytes at a time: for C = 256 .. 1024 that maps every access of a block
//! into 1 - 4 L1 sets and thrashes them.) Power-of-two channel counts still
//! alias in cache across pixels and rows whatever the order: 14x14x512 runs
//! about 1.6x slower than 14x14x528. Buffers with a padded pixel stride
//! would avoid that, but the `[H, W, C]` layout is the caller's.
//!
//! The per-tile work ([`tile_blocks`]) is compiled as its own
//! `#[target_feature]` function in each ISA file (see [`DwTarget`]); the
//! rest is scalar bookkeeping.

// Tiles index fixed-size accumulator arrays with unrolled constant indices.
#![allow(clippy::needless_range_loop)]

use std::ops::Range;

use super::Conv3x3Geometry;
use super::simd::{Simd, load_n};
use crate::kernels::Epilogue;

/// Most output rows per group (`R`); input rows per group are at most
/// `(R - 1) * 2 + 3`.
pub(crate) const MAX_R: usize = 2;
const MAX_IN_ROWS: usize = (MAX_R - 1) * 2 + 3;

/// One validated call: the whole input image, the output rows `rows` only.
pub(crate) struct DwJob<'a> {
    /// `[in_h, in_w, channels]`.
    pub input: &'a [f32],
    /// `[rows.len(), out_w, channels]`: output row `rows.start` first.
    pub band: &'a mut [f32],
    /// Block-major: for each block of `pack_lanes` channels, the bias then
    /// the 9 taps (`ky * 3 + kx`), `pack_lanes` values each; zero past
    /// `channels`.
    pub packed: &'a [f32],
    pub pack_lanes: usize,
    pub channels: usize,
    pub geom: Conv3x3Geometry,
    pub rows: Range<usize>,
    pub epilogue: Epilogue,
}

/// What the tiles of one group of output rows need.
pub(crate) struct RowCtx {
    /// Start of input rows `oy0 * stride - pad_top + i`; only read where
    /// `valid[i]`.
    rows: [*const f32; MAX_IN_ROWS],
    valid: [bool; MAX_IN_ROWS],
    /// Start of the output rows of the group; only the first `nr` are real.
    out: [*mut f32; MAX_R],
    /// Output rows to store (`1 ..= R`).
    nr: usize,
    /// Channels (the pixel stride of input and output).
    c: usize,
    in_w: usize,
    stride: usize,
    pad_left: usize,
    /// Output columns whose taps all lie inside the image.
    interior: Range<usize>,
    packed: *const f32,
    /// `log2` of the channels per packed block.
    pack_shift: u32,
    lo: f32,
    hi: f32,
}

/// The per-ISA, separately compiled pieces of the driver.
pub(crate) trait DwTarget {
    /// Tile width for this ISA (at most 8).
    const T: usize;
    /// Rows per group at stride 1 (at most [`MAX_R`]).
    const R1: usize;
    /// Rows per group at stride 2 (at most [`MAX_R`]).
    const R2: usize;

    /// [`tile_blocks`] for this ISA: `count` tiles of `T` output pixels
    /// from `x`, every row of the group, all channels.
    ///
    /// # Safety
    /// As [`tile_blocks`].
    unsafe fn tiles<const T: usize, const STRIDE: usize, const EDGE: bool>(
        ctx: &RowCtx,
        x: usize,
        count: usize,
    );

    /// [`pixel_blocks`] for this ISA (strides above 2).
    ///
    /// # Safety
    /// As [`pixel_blocks`].
    unsafe fn pixel(ctx: &RowCtx, x: usize);
}

/// Runs the whole job.
///
/// # Safety
/// The CPU supports `K`'s ISA; the job's lengths agree with its geometry
/// (as checked by `PackedDepthwise3x3::run_band`), the packing matches `K`'s
/// vector widths, and `geom.validate()` holds.
#[inline(always)]
pub(crate) unsafe fn run<K: DwTarget>(job: DwJob<'_>) {
    let g = job.geom;
    let c = job.channels;
    let s = g.stride;
    let row_len = g.out_w * c;
    let input = job.input.as_ptr();
    let band = job.band.as_mut_ptr();
    let r = match s {
        1 => K::R1,
        2 => K::R2,
        _ => 1,
    };
    let interior = g.interior_cols();
    let mut oy = job.rows.start;
    while oy < job.rows.end {
        let nr = r.min(job.rows.end - oy);
        let mut rows = [input; MAX_IN_ROWS];
        let mut valid = [false; MAX_IN_ROWS];
        let top = (oy * s) as isize - g.pad_top as isize;
        for i in 0..(r - 1) * s + 3 {
            let iy = top + i as isize;
            if iy >= 0 && (iy as usize) < g.in_h {
                // SAFETY: iy < in_h, so the row start is inside `input`.
                rows[i] = unsafe { input.add(iy as usize * g.in_w * c) };
                valid[i] = true;
            }
        }
        let mut out = [band; MAX_R];
        for (k, o) in out.iter_mut().enumerate().take(nr) {
            // SAFETY: oy + k < rows.end, so the row is inside the band.
            *o = unsafe { band.add((oy + k - job.rows.start) * row_len) };
        }
        let ctx = RowCtx {
            rows,
            valid,
            out,
            nr,
            c,
            in_w: g.in_w,
            stride: s,
            pad_left: g.pad_left,
            interior: interior.clone(),
            packed: job.packed.as_ptr(),
            pack_shift: job.pack_lanes.trailing_zeros(),
            lo: job.epilogue.min,
            hi: job.epilogue.max,
        };
        // SAFETY: tiles and pixels lie within 0..out_w; the rest is the
        // caller's contract.
        unsafe {
            match s {
                1 => row_tiles::<K, 1>(&ctx, g.out_w),
                2 => row_tiles::<K, 2>(&ctx, g.out_w),
                _ => {
                    for x in 0..g.out_w {
                        K::pixel(&ctx, x);
                    }
                }
            }
        }
        oy += nr;
    }
}

/// Cuts a group of rows into tiles of `K::T` pixels plus one narrower
/// remainder: one call for the run of interior tiles, one per edge tile.
///
/// # Safety
/// As [`run`], with `out_w` the output width.
#[inline(always)]
unsafe fn row_tiles<K: DwTarget, const STRIDE: usize>(ctx: &RowCtx, out_w: usize) {
    let t = K::T;
    let full = out_w / t;
    let inner = &ctx.interior;
    let is_inner = |i: usize| i * t >= inner.start && i * t + t <= inner.end;
    // SAFETY: every tile lies within 0..out_w; the rest is forwarded.
    unsafe {
        let mut i = 0;
        while i < full && !is_inner(i) {
            edge_tile::<K, STRIDE>(ctx, i * t, t);
            i += 1;
        }
        let first = i;
        while i < full && is_inner(i) {
            i += 1;
        }
        if i > first {
            let (x, n) = (first * t, i - first);
            match t {
                8 => K::tiles::<8, STRIDE, false>(ctx, x, n),
                7 => K::tiles::<7, STRIDE, false>(ctx, x, n),
                6 => K::tiles::<6, STRIDE, false>(ctx, x, n),
                5 => K::tiles::<5, STRIDE, false>(ctx, x, n),
                4 => K::tiles::<4, STRIDE, false>(ctx, x, n),
                3 => K::tiles::<3, STRIDE, false>(ctx, x, n),
                2 => K::tiles::<2, STRIDE, false>(ctx, x, n),
                _ => K::tiles::<1, STRIDE, false>(ctx, x, n),
            }
        }
        while i < full {
            edge_tile::<K, STRIDE>(ctx, i * t, t);
            i += 1;
        }
        if out_w > full * t {
            edge_tile::<K, STRIDE>(ctx, full * t, out_w - full * t);
        }
    }
}

/// One tile of `w <= 8` pixels at `x` whose columns are bounds-checked.
///
/// # Safety
/// As [`run`]; `x + w <= out_w`.
#[inline(always)]
unsafe fn edge_tile<K: DwTarget, const STRIDE: usize>(ctx: &RowCtx, x: usize, w: usize) {
    // SAFETY: forwarded contract.
    unsafe {
        match w {
            8 => K::tiles::<8, STRIDE, true>(ctx, x, 1),
            7 => K::tiles::<7, STRIDE, true>(ctx, x, 1),
            6 => K::tiles::<6, STRIDE, true>(ctx, x, 1),
            5 => K::tiles::<5, STRIDE, true>(ctx, x, 1),
            4 => K::tiles::<4, STRIDE, true>(ctx, x, 1),
            3 => K::tiles::<3, STRIDE, true>(ctx, x, 1),
            2 => K::tiles::<2, STRIDE, true>(ctx, x, 1),
            _ => K::tiles::<1, STRIDE, true>(ctx, x, 1),
        }
    }
}

/// A channel block's parameters (the clamp bounds are broadcast at store
/// time, so that they do not occupy registers during the tile).
struct Block<S: Simd> {
    w: [S::V; 9],
    b: S::V,
}

/// Loads the bias and weights of the channel block starting at `c0`.
///
/// # Safety
/// ISA supported; `c0` a multiple of `S::LANES` and `c0 + S::LANES` within
/// the packed (padded) channels.
#[inline(always)]
unsafe fn load_block<S: Simd>(ctx: &RowCtx, c0: usize) -> Block<S> {
    let pl = 1 << ctx.pack_shift;
    // SAFETY: the packed block holding c0 has 10 rows of `pl` values and
    // c0 % pl + LANES <= pl (pl is a power-of-two multiple of LANES).
    unsafe {
        let base = ctx
            .packed
            .add((c0 >> ctx.pack_shift) * 10 * pl + (c0 & (pl - 1)));
        let mut w = [S::splat(0.0); 9];
        for (k, wk) in w.iter_mut().enumerate() {
            *wk = S::load(base.add((k + 1) * pl));
        }
        Block {
            w,
            b: S::load(base),
        }
    }
}

/// Runs `f::<S or Tail, FULL, g...>(ctx, c0, n, args...)` for every channel block: full `S` blocks, then the tail as one
/// `Tail` block (full or partial) or one partial `S` block.
macro_rules! for_blocks {
    ($ctx:expr, $S:ty, $Tail:ty, $f:ident [ $($g:tt),* ] ( $($arg:expr),* )) => {{
        let c = $ctx.c;
        let mut c0 = 0;
        while c0 + <$S>::LANES <= c {
            $f::<$S, true, $($g),*>($ctx, c0, <$S>::LANES, $($arg),*);
            c0 += <$S>::LANES;
        }
        let rem = c - c0;
        if rem == <$Tail>::LANES {
            $f::<$Tail, true, $($g),*>($ctx, c0, rem, $($arg),*);
        } else if rem > 0 && rem < <$Tail>::LANES {
            $f::<$Tail, false, $($g),*>($ctx, c0, rem, $($arg),*);
        } else if rem > 0 {
            $f::<$S, false, $($g),*>($ctx, c0, rem, $($arg),*);
        }
    }};
}

/// `count` tiles of output pixels `x .. x + count * T` of the group's rows,
/// every channel block. Without `EDGE`, every column of every tile must lie
/// inside the image; with it, columns outside read as zero.
///
/// # Safety
/// As [`run`]; `x + count * T <= out_w`, and without `EDGE` the tiles lie
/// within `ctx.interior`.
#[inline(always)]
pub(crate) unsafe fn tile_blocks<
    S: Simd,
    Tail: Simd,
    const T: usize,
    const R: usize,
    const STRIDE: usize,
    const EDGE: bool,
>(
    ctx: &RowCtx,
    x: usize,
    count: usize,
) {
    let ncols = (T - 1) * STRIDE + 3;
    for i in 0..count {
        let x = x + i * T;
        let cols = if EDGE {
            // The tile's input columns, relative to its first one, that lie
            // inside the image.
            let col0 = (x * STRIDE) as isize - ctx.pad_left as isize;
            let lo = (-col0).clamp(0, ncols as isize) as usize;
            let hi = (ctx.in_w as isize - col0).clamp(lo as isize, ncols as isize) as usize;
            lo..hi
        } else {
            0..ncols
        };
        // SAFETY: forwarded contract; channel blocks lie within 0..c.
        unsafe { for_blocks!(ctx, S, Tail, tile[T, R, STRIDE, EDGE](x, &cols)) }
    }
}

/// Output pixel `x` of the group's rows, every channel block, any stride.
///
/// # Safety
/// As [`run`]; `x < out_w`.
#[inline(always)]
pub(crate) unsafe fn pixel_blocks<S: Simd, Tail: Simd>(ctx: &RowCtx, x: usize) {
    // SAFETY: forwarded contract; channel blocks lie within 0..c.
    unsafe { for_blocks!(ctx, S, Tail, pixel[](x)) }
}

/// Loads column `j` of a tile row, or (with `EDGE`) zero if `j` is
/// outside `cols`, the columns inside the image.
///
/// # Safety
/// `p + j * c` is a readable pixel's channel block whenever `j` is in
/// `cols` (`p` itself need not be in bounds: it is only offset, wrapping).
#[inline(always)]
unsafe fn col<S: Simd, const FULL: bool, const EDGE: bool>(
    p: *const f32,
    j: usize,
    c: usize,
    cols: &Range<usize>,
    n: usize,
) -> S::V {
    // SAFETY: see above; out-of-image columns are not read.
    unsafe {
        if !EDGE || (j >= cols.start && j < cols.end) {
            load_n::<S, FULL>(p.wrapping_add(j * c), n)
        } else {
            S::splat(0.0)
        }
    }
}

/// The tile for channels `c0 .. c0 + n` (`n == S::LANES` when `FULL`).
///
/// # Safety
/// As [`tile_blocks`], with the channel block in range.
#[inline(always)]
unsafe fn tile<
    S: Simd,
    const FULL: bool,
    const T: usize,
    const R: usize,
    const STRIDE: usize,
    const EDGE: bool,
>(
    ctx: &RowCtx,
    c0: usize,
    n: usize,
    x: usize,
    cols: &Range<usize>,
) {
    // SAFETY: channel block in range (caller); input columns are read only
    // inside `cols` (in the image) and rows only where valid; output pixels
    // x .. x + T < out_w of the first `nr` rows are written.
    unsafe {
        let k = load_block::<S>(ctx, c0);
        // Opaque per block: otherwise LLVM hoists every column's address out
        // of the channel-block loop and spills them all, paying a stack load
        // per vector load.
        let c = std::hint::black_box(ctx.c);
        let mut acc = [[k.b; T]; R];
        // Offset (in f32) of the tile's first input column, possibly -1 or -2.
        let off = ((x * STRIDE) as isize - ctx.pad_left as isize) * c as isize + c0 as isize;
        // One input row, feeding output row r through kernel row i - r * STRIDE.
        macro_rules! in_row {
            ($i:expr) => {
                if $i < (R - 1) * STRIDE + 3 && ctx.valid[$i] {
                    let p = ctx.rows[$i].wrapping_offset(off);
                    if STRIDE == 1 {
                        let mut v0 = col::<S, FULL, EDGE>(p, 0, c, cols, n);
                        let mut v1 = col::<S, FULL, EDGE>(p, 1, c, cols, n);
                        for t in 0..T {
                            let v2 = col::<S, FULL, EDGE>(p, t + 2, c, cols, n);
                            for r in 0..R {
                                let ky = $i as isize - (r * STRIDE) as isize;
                                if (0..3).contains(&ky) {
                                    let ky = ky as usize;
                                    acc[r][t] = S::fmadd(v0, k.w[ky * 3], acc[r][t]);
                                    acc[r][t] = S::fmadd(v1, k.w[ky * 3 + 1], acc[r][t]);
                                    acc[r][t] = S::fmadd(v2, k.w[ky * 3 + 2], acc[r][t]);
                                }
                            }
                            v0 = v1;
                            v1 = v2;
                        }
                    } else {
                        let mut v0 = col::<S, FULL, EDGE>(p, 0, c, cols, n);
                        for t in 0..T {
                            let v1 = col::<S, FULL, EDGE>(p, 2 * t + 1, c, cols, n);
                            let v2 = col::<S, FULL, EDGE>(p, 2 * t + 2, c, cols, n);
                            for r in 0..R {
                                let ky = $i as isize - (r * STRIDE) as isize;
                                if (0..3).contains(&ky) {
                                    let ky = ky as usize;
                                    acc[r][t] = S::fmadd(v0, k.w[ky * 3], acc[r][t]);
                                    acc[r][t] = S::fmadd(v1, k.w[ky * 3 + 1], acc[r][t]);
                                    acc[r][t] = S::fmadd(v2, k.w[ky * 3 + 2], acc[r][t]);
                                }
                            }
                            v0 = v2;
                        }
                    }
                }
            };
        }
        in_row!(0);
        in_row!(1);
        in_row!(2);
        in_row!(3);
        in_row!(4);
        for r in 0..R {
            if r < ctx.nr {
                for t in 0..T {
                    let p = ctx.out[r].add((x + t) * c + c0);
                    let v = S::clamp(acc[r][t], S::splat(ctx.lo), S::splat(ctx.hi));
                    if FULL {
                        S::store(p, v)
                    } else {
                        S::store_partial(p, v, n)
                    }
                }
            }
        }
    }
}

/// One output pixel of each row of the group, channels `c0 .. c0 + n`,
/// every tap bounds-checked (strides above 2; groups are single rows).
///
/// # Safety
/// As [`pixel_blocks`], with the channel block in range.
#[inline(always)]
unsafe fn pixel<S: Simd, const FULL: bool>(ctx: &RowCtx, c0: usize, n: usize, x: usize) {
    // SAFETY: taps are read only inside the image; pixel x < out_w of the
    // group's single row is written.
    unsafe {
        let k = load_block::<S>(ctx, c0);
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
                let v = load_n::<S, FULL>(ctx.rows[ky].add(ix as usize * ctx.c + c0), n);
                acc = S::fmadd(v, k.w[ky * 3 + kx], acc);
            }
        }
        let p = ctx.out[0].add(x * ctx.c + c0);
        let v = S::clamp(acc, S::splat(ctx.lo), S::splat(ctx.hi));
        if FULL {
            S::store(p, v)
        } else {
            S::store_partial(p, v, n)
        }
    }
}
