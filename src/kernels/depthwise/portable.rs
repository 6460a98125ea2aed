//! Portable implementation: plain Rust on fixed-size arrays of 8 lanes,
//! which the compiler turns into whatever vectors the baseline target has.

use super::kernel::{self, DwJob, DwTarget, RowCtx};
use super::simd::Simd;

/// The portable "ISA": 8-lane arrays, no intrinsics.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Portable;

impl Simd for Portable {
    const LANES: usize = 8;
    type V = [f32; 8];

    #[inline(always)]
    unsafe fn splat(x: f32) -> [f32; 8] {
        [x; 8]
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> [f32; 8] {
        // SAFETY: the caller guarantees 8 readable f32 at `p`; the read is
        // unaligned so any f32 pointer works.
        unsafe { p.cast::<[f32; 8]>().read_unaligned() }
    }

    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> [f32; 8] {
        let mut v = [0.0; 8];
        for (i, lane) in v.iter_mut().enumerate().take(n) {
            // SAFETY: the caller guarantees `n` readable f32 at `p`.
            *lane = unsafe { *p.add(i) };
        }
        v
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: [f32; 8]) {
        // SAFETY: the caller guarantees 8 writable f32 at `p`.
        unsafe { p.cast::<[f32; 8]>().write_unaligned(v) }
    }

    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, v: [f32; 8], n: usize) {
        for (i, lane) in v.iter().enumerate().take(n) {
            // SAFETY: the caller guarantees `n` writable f32 at `p`.
            unsafe { *p.add(i) = *lane };
        }
    }

    #[inline(always)]
    unsafe fn fmadd(a: [f32; 8], b: [f32; 8], c: [f32; 8]) -> [f32; 8] {
        // Not `mul_add`: without hardware FMA in the baseline target that is a
        // libm call per lane.
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }

    #[inline(always)]
    unsafe fn clamp(v: [f32; 8], lo: [f32; 8], hi: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| {
            let x = if v[i] > lo[i] { v[i] } else { lo[i] };
            if x < hi[i] { x } else { hi[i] }
        })
    }
}

/// The portable depthwise tiles: 4 pixels x 1 row.
pub(crate) struct PortableDw;

impl DwTarget for PortableDw {
    const T: usize = 4;
    const R1: usize = 1;
    const R2: usize = 1;

    #[inline(always)]
    unsafe fn tiles<const T: usize, const STRIDE: usize, const EDGE: bool>(
        ctx: &RowCtx,
        x: usize,
        count: usize,
    ) {
        // SAFETY: forwarded contract.
        unsafe {
            if STRIDE == 1 {
                kernel::tile_blocks::<Portable, Portable, T, 1, 1, EDGE>(ctx, x, count)
            } else {
                kernel::tile_blocks::<Portable, Portable, T, 1, 2, EDGE>(ctx, x, count)
            }
        }
    }

    #[inline(always)]
    unsafe fn pixel(ctx: &RowCtx, x: usize) {
        // SAFETY: forwarded contract.
        unsafe { kernel::pixel_blocks::<Portable, Portable>(ctx, x) }
    }
}

/// Runs the depthwise driver with portable vectors.
pub(super) fn depthwise(job: DwJob<'_>) {
    // SAFETY: `job` was validated by `PackedDepthwise3x3::run_band` (lengths
    // and geometry) and packed 8 lanes wide; the portable "ISA" runs on
    // every CPU.
    unsafe { kernel::run::<PortableDw>(job) }
}
