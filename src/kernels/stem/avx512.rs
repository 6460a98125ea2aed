//! AVX-512F stem entry point (16-lane `__m512`, see `depthwise::avx512`).
//! With at most 8 output channels it runs the 8-lane AVX2 driver instead,
//! which does the same work in half-width registers.

use super::kernel::{self, StemJob};
use crate::kernels::depthwise::avx2::Avx2;
use crate::kernels::depthwise::avx512::Avx512;

/// Runs the stem driver with AVX-512 vectors.
///
/// # Safety
/// The CPU supports AVX-512F, AVX2 and FMA, and `job` passed `run_band`'s
/// checks (packed with 16-lane padding, which is also a multiple of 8).
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn stem(job: StemJob<'_>) {
    // SAFETY: forwarded contract; the features are enabled on this function.
    unsafe {
        if job.c_out <= 8 {
            kernel::run::<Avx2, 4, 8>(job)
        } else {
            kernel::run::<Avx512, 8, 12>(job)
        }
    }
}
