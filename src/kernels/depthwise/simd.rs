//! The small vector abstraction the 3x3 kernel drivers are written against.
//!
//! A driver (`depthwise/kernel.rs`, `stem/kernel.rs`) is generic over
//! [`Simd`] and marked `#[inline(always)]` throughout; each ISA file provides
//! one implementation of the trait plus a `#[target_feature]` entry point
//! that instantiates the driver, so the whole loop nest is compiled with that
//! ISA's features and every vector value lives in registers.

/// One vector register's worth of f32 operations.
///
/// Every method is `unsafe`: an implementation may only be called when the
/// CPU supports its instruction set (guaranteed by the `pack` functions,
/// which refuse unsupported ISAs), and pointer arguments must be valid for
/// the stated number of lanes.
pub(crate) trait Simd {
    /// f32 lanes per vector.
    const LANES: usize;
    /// The vector type.
    type V: Copy;

    /// All lanes set to `x`.
    ///
    /// # Safety
    /// The CPU supports the implementation's ISA.
    unsafe fn splat(x: f32) -> Self::V;

    /// Loads `LANES` values.
    ///
    /// # Safety
    /// ISA supported; `p` valid for reading `LANES` f32 (any alignment).
    unsafe fn load(p: *const f32) -> Self::V;

    /// Loads the first `n` values (`n < LANES`) and zeroes the other lanes,
    /// reading no memory past `p + n`.
    ///
    /// # Safety
    /// ISA supported; `p` valid for reading `n` f32.
    unsafe fn load_partial(p: *const f32, n: usize) -> Self::V;

    /// Stores all lanes.
    ///
    /// # Safety
    /// ISA supported; `p` valid for writing `LANES` f32.
    unsafe fn store(p: *mut f32, v: Self::V);

    /// Stores the first `n` lanes (`n < LANES`), writing nothing else.
    ///
    /// # Safety
    /// ISA supported; `p` valid for writing `n` f32.
    unsafe fn store_partial(p: *mut f32, v: Self::V, n: usize);

    /// `a * b + c` (fused where the ISA has it).
    ///
    /// # Safety
    /// The CPU supports the implementation's ISA.
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;

    /// `min(max(v, lo), hi)`, the order of [`crate::kernels::Epilogue::apply`].
    ///
    /// # Safety
    /// The CPU supports the implementation's ISA.
    unsafe fn clamp(v: Self::V, lo: Self::V, hi: Self::V) -> Self::V;
}

/// Loads a full vector when `FULL`, else the first `n` lanes.
///
/// # Safety
/// As [`Simd::load`] / [`Simd::load_partial`].
#[inline(always)]
pub(crate) unsafe fn load_n<S: Simd, const FULL: bool>(p: *const f32, n: usize) -> S::V {
    // SAFETY: forwarded contract.
    unsafe {
        if FULL {
            S::load(p)
        } else {
            S::load_partial(p, n)
        }
    }
}

/// Stores a full vector when `n >= LANES`, else the first `n` lanes.
///
/// # Safety
/// As [`Simd::store`] / [`Simd::store_partial`] for `min(n, LANES)` lanes.
#[inline(always)]
pub(crate) unsafe fn store_n<S: Simd>(p: *mut f32, v: S::V, n: usize) {
    // SAFETY: forwarded contract.
    unsafe {
        if n >= S::LANES {
            S::store(p, v)
        } else {
            S::store_partial(p, v, n)
        }
    }
}
