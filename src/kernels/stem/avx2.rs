//! AVX2 + FMA stem entry point (8-lane `__m256`, see `depthwise::avx2`).

use super::kernel::{self, StemJob};
use crate::kernels::depthwise::avx2::Avx2;

/// Runs the stem driver with AVX2 vectors.
///
/// # Safety
/// The CPU supports AVX2 and FMA, and `job` passed `run_band`'s checks.
#[target_feature(enable = "avx2,fma")]
#[inline(never)] // also called from the AVX-512 entry: keep this codegen
pub(super) unsafe fn stem(job: StemJob<'_>) {
    // SAFETY: forwarded contract; the features are enabled on this function.
    unsafe { kernel::run::<Avx2, 12, 6, 0>(job) }
}
