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

/// One cache line of f32, the unit of [`AlignedBuf`].
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A zero-initialised f32 buffer whose start is 64-byte aligned, so that
/// packed weight rows padded to 16 lanes never straddle cache lines.
#[derive(Clone)]
pub(crate) struct AlignedBuf {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedBuf {
    /// `len` zeros.
    pub(crate) fn zeros(len: usize) -> Self {
        AlignedBuf {
            lines: vec![Line([0.0; 16]); len.div_ceil(16)],
            len,
        }
    }

    /// The values.
    pub(crate) fn as_slice(&self) -> &[f32] {
        // SAFETY: `Line` is `repr(C)` around `[f32; 16]` with no padding, so
        // the lines are `16 * lines.len() >= len` contiguous initialised f32.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<f32>(), self.len) }
    }

    /// The values, mutable.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<f32>(), self.len) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} f32)", self.len)
    }
}
