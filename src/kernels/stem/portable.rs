//! Portable stem entry point (8-lane arrays, see `depthwise::portable`).

use super::kernel::{self, StemJob};
use crate::kernels::depthwise::portable::Portable;

/// Runs the stem driver with portable vectors.
pub(super) fn stem(job: StemJob<'_>) {
    // SAFETY: `job` was validated by `PackedStemConv3x3::run_band`, and the
    // portable "ISA" runs on every CPU.
    unsafe { kernel::run::<Portable, 4, 2, 0>(job) }
}
