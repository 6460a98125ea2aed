//! AVX-512F implementation: 16-lane `__m512` vectors, channel tails with
//! masked loads and stores (and 8-lane AVX2 vectors for a tail of <= 8
//! channels, which halves the work of e.g. the C = 8 layers).

use std::arch::x86_64::*;

use super::avx2::Avx2;
use super::kernel::{self, DwJob, DwTarget, RowCtx};
use super::simd::Simd;

/// Marker for the AVX-512F instruction set (only used after detection;
/// the AVX-512 kernels also use AVX-512VL, AVX2 and FMA, which `pack`
/// checks too).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512;

/// The mask enabling the first `n < 16` lanes.
#[inline(always)]
fn lane_mask(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

impl Simd for Avx512 {
    const LANES: usize = 16;
    type V = __m512;

    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        // SAFETY: the trait contract guarantees AVX-512F.
        unsafe { _mm512_set1_ps(x) }
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: AVX-512F available; the caller guarantees 16 readable f32.
        unsafe { _mm512_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> __m512 {
        // SAFETY: AVX-512F available; masked-off lanes are never accessed
        // (no faults), and the first `n` are readable.
        unsafe { _mm512_maskz_loadu_ps(lane_mask(n), p) }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        // SAFETY: AVX-512F available; the caller guarantees 16 writable f32.
        unsafe { _mm512_storeu_ps(p, v) }
    }

    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, v: __m512, n: usize) {
        // SAFETY: AVX-512F available; only the first `n` (writable) lanes are
        // written.
        unsafe { _mm512_mask_storeu_ps(p, lane_mask(n), v) }
    }

    #[inline(always)]
    unsafe fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: the trait contract guarantees AVX-512F.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }

    #[inline(always)]
    unsafe fn clamp(v: __m512, lo: __m512, hi: __m512) -> __m512 {
        // SAFETY: the trait contract guarantees AVX-512F.
        unsafe { _mm512_min_ps(_mm512_max_ps(v, lo), hi) }
    }
}

/// Output rows per tile group at stride 1 and 2 (AVX-512: 32 registers: 9 weights, a 3-vector
/// window and `R * T = 16` accumulators).
const R1: usize = 2;
const R2: usize = 2;

/// Tile width for AVX-512.
const T: usize = 7;

/// The AVX-512 depthwise tiles (AVX2 vectors for a tail of <= 8 channels).
pub(crate) struct Avx512Dw;

/// A run of tiles, compiled on its own with AVX-512F/VL (+ AVX2, FMA).
///
/// # Safety
/// The CPU supports AVX-512F/VL, AVX2 and FMA, plus `kernel::tile_blocks`'
/// contract.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
#[inline(never)]
unsafe fn tiles<const T: usize, const STRIDE: usize, const EDGE: bool>(
    ctx: &RowCtx,
    x: usize,
    count: usize,
) {
    // SAFETY: forwarded contract; the features are enabled here.
    unsafe {
        if STRIDE == 1 {
            kernel::tile_blocks::<Avx512, Avx2, T, R1, 1, EDGE>(ctx, x, count)
        } else {
            kernel::tile_blocks::<Avx512, Avx2, T, R2, 2, EDGE>(ctx, x, count)
        }
    }
}

/// One bounds-checked pixel column, compiled with AVX-512F/VL (+ AVX2, FMA).
///
/// # Safety
/// The CPU supports AVX-512F/VL, AVX2 and FMA, plus `kernel::pixel_blocks`'
/// contract.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
#[inline(never)]
unsafe fn pixel(ctx: &RowCtx, x: usize) {
    // SAFETY: forwarded contract; the features are enabled here.
    unsafe { kernel::pixel_blocks::<Avx512, Avx2>(ctx, x) }
}

impl DwTarget for Avx512Dw {
    const T: usize = T;
    const R1: usize = R1;
    const R2: usize = R2;

    #[inline(always)]
    unsafe fn tiles<const T: usize, const STRIDE: usize, const EDGE: bool>(
        ctx: &RowCtx,
        x: usize,
        count: usize,
    ) {
        // SAFETY: this type is only used after AVX-512F/VL, AVX2 and FMA detection.
        unsafe { tiles::<T, STRIDE, EDGE>(ctx, x, count) }
    }

    #[inline(always)]
    unsafe fn pixel(ctx: &RowCtx, x: usize) {
        // SAFETY: as above.
        unsafe { pixel(ctx, x) }
    }
}

/// Runs the depthwise driver with AVX-512 vectors.
///
/// # Safety
/// The CPU supports AVX-512F/VL, AVX2 and FMA, and `job` passed `run_band`'s
/// checks (packed 16 lanes wide).
pub(super) unsafe fn depthwise(job: DwJob<'_>) {
    // SAFETY: forwarded contract.
    unsafe { kernel::run::<Avx512Dw>(job) }
}
