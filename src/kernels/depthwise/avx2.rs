//! AVX2 + FMA implementation: 8-lane `__m256` vectors.

use std::arch::x86_64::*;

use super::kernel::{self, DwJob, DwTarget, RowCtx};
use super::simd::Simd;

/// Marker for the AVX2 + FMA instruction set (only used after detection).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2;

/// `-1` then `0` lanes: `MASKS[8 - n..16 - n]` enables the first `n` lanes.
static MASKS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

/// A `maskload`/`maskstore` mask enabling the first `n <= 8` lanes.
///
/// # Safety
/// AVX is available and `n <= 8`.
#[inline(always)]
unsafe fn lane_mask(n: usize) -> __m256i {
    debug_assert!(n <= 8);
    // SAFETY: `8 - n .. 16 - n` lies inside the 16-entry table for n <= 8.
    unsafe { _mm256_loadu_si256(MASKS.as_ptr().add(8 - n).cast::<__m256i>()) }
}

impl Simd for Avx2 {
    const LANES: usize = 8;
    type V = __m256;

    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        // SAFETY: the trait contract guarantees AVX2 + FMA.
        unsafe { _mm256_set1_ps(x) }
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: AVX available; the caller guarantees 8 readable f32.
        unsafe { _mm256_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> __m256 {
        // SAFETY: AVX available; masked-off lanes are not accessed (vmaskmovps
        // suppresses their faults), and the first `n` are readable.
        unsafe { _mm256_maskload_ps(p, lane_mask(n)) }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        // SAFETY: AVX available; the caller guarantees 8 writable f32.
        unsafe { _mm256_storeu_ps(p, v) }
    }

    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, v: __m256, n: usize) {
        // SAFETY: AVX available; only the first `n` (writable) lanes are
        // written.
        unsafe { _mm256_maskstore_ps(p, lane_mask(n), v) }
    }

    #[inline(always)]
    unsafe fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: the trait contract guarantees FMA.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }

    #[inline(always)]
    unsafe fn clamp(v: __m256, lo: __m256, hi: __m256) -> __m256 {
        // SAFETY: the trait contract guarantees AVX.
        unsafe { _mm256_min_ps(_mm256_max_ps(v, lo), hi) }
    }
}

/// Output rows per tile group at stride 1 and 2 (AVX2: 16 registers: 9 weights, a 3-vector
/// window and `R * T` accumulators).
const R1: usize = 2;
const R2: usize = 1;

/// Tile width for AVX2.
const T: usize = 4;

/// The AVX2 depthwise tiles.
pub(crate) struct Avx2Dw;

/// A run of tiles, compiled on its own with AVX2 + FMA.
///
/// # Safety
/// The CPU supports AVX2 and FMA, plus `kernel::tile_blocks`' contract.
#[target_feature(enable = "avx2,fma")]
#[inline(never)]
unsafe fn tiles<const T: usize, const STRIDE: usize, const EDGE: bool>(
    ctx: &RowCtx,
    x: usize,
    count: usize,
) {
    // SAFETY: forwarded contract; the features are enabled here.
    unsafe {
        if STRIDE == 1 {
            kernel::tile_blocks::<Avx2, Avx2, T, R1, 1, EDGE>(ctx, x, count)
        } else {
            kernel::tile_blocks::<Avx2, Avx2, T, R2, 2, EDGE>(ctx, x, count)
        }
    }
}

/// One bounds-checked pixel column, compiled with AVX2 + FMA.
///
/// # Safety
/// The CPU supports AVX2 and FMA, plus `kernel::pixel_blocks`' contract.
#[target_feature(enable = "avx2,fma")]
#[inline(never)]
unsafe fn pixel(ctx: &RowCtx, x: usize) {
    // SAFETY: forwarded contract; the features are enabled here.
    unsafe { kernel::pixel_blocks::<Avx2, Avx2>(ctx, x) }
}

impl DwTarget for Avx2Dw {
    const T: usize = T;
    const R1: usize = R1;
    const R2: usize = R2;

    #[inline(always)]
    unsafe fn tiles<const T: usize, const STRIDE: usize, const EDGE: bool>(
        ctx: &RowCtx,
        x: usize,
        count: usize,
    ) {
        // SAFETY: this type is only used after AVX2 + FMA detection.
        unsafe { tiles::<T, STRIDE, EDGE>(ctx, x, count) }
    }

    #[inline(always)]
    unsafe fn pixel(ctx: &RowCtx, x: usize) {
        // SAFETY: as above.
        unsafe { pixel(ctx, x) }
    }
}

/// Runs the depthwise driver with AVX2 vectors.
///
/// # Safety
/// The CPU supports AVX2 and FMA, and `job` passed `run_band`'s checks
/// (packed 8 lanes wide).
pub(super) unsafe fn depthwise(job: DwJob<'_>) {
    // SAFETY: forwarded contract.
    unsafe { kernel::run::<Avx2Dw>(job) }
}
