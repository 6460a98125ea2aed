//! AVX-512F stem entry point (16-lane `__m512`, see `depthwise::avx512`).
//! With 1 - 8 or 17 - 24 output channels it runs the 8-lane AVX2 driver
//! instead (full `__m256` vectors rather than a half-masked `__m512`; Zen 4
//! runs two 256-bit FMAs per cycle, the same FLOP rate; measured 192 vs
//! 205 us for 224x224x3 -> 24).

use super::kernel::{self, StemJob};
use crate::kernels::depthwise::avx512::Avx512;

/// Runs the stem driver with AVX-512 vectors.
///
/// # Safety
/// The CPU supports AVX-512F/VL, AVX2 and FMA, and `job` passed `run_band`'s
/// checks (packed with 16-lane padding, which is also a multiple of 8).
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
pub(super) unsafe fn stem(job: StemJob<'_>) {
    // SAFETY: forwarded contract; the features (a superset of AVX2 + FMA)
    // are enabled on this function.
    unsafe {
        if job.c_out <= 8 || (17..=24).contains(&job.c_out) {
            // The AVX2 entry point itself: compiled without AVX-512 enabled,
            // its code runs these shapes ~7 % faster than the same driver
            // instantiated here.
            super::avx2::stem(job)
        } else {
            kernel::run::<Avx512, 12, 8, 8>(job)
        }
    }
}
