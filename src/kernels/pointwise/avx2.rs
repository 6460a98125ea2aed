//! AVX2+FMA pointwise micro-kernel: `MR = 6` rows x `NR = 16` columns (two
//! ymm per row, 12 ymm accumulators, two for the panel row and one
//! broadcast). N tails are stored through a small tile on the stack.

use super::PackedPointwise;
#[cfg(target_arch = "x86_64")]
use super::{for_each_tile, panel_width, row_block};
use crate::kernels::{ColumnsMut, Epilogue, Isa};
use std::ops::Range;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Columns per full panel.
pub(super) const NR: usize = 16;
/// Rows per full tile.
#[cfg(target_arch = "x86_64")]
const MR: usize = 6;

/// Computes the columns of `panels` (which `out` covers) for all of
/// `out.rows()` rows; shapes were checked by the caller.
#[cfg(target_arch = "x86_64")]
pub(super) fn run(
    pk: &PackedPointwise,
    input: &[f32],
    out: ColumnsMut<'_>,
    panels: Range<usize>,
    ep: Epilogue,
) {
    assert!(
        Isa::Avx2Fma.is_supported(),
        "AVX2 panels used on a CPU without AVX2 and FMA"
    );
    debug_assert_eq!(input.len(), out.rows() * pk.k);
    debug_assert_eq!(out.first_col(), panels.start * NR);
    debug_assert_eq!(out.stride(), pk.n);
    // SAFETY: the CPU supports AVX2 and FMA (asserted above), and the caller
    // checked input.len() == rows * k and that `out` covers exactly the
    // columns of `panels` of a [rows, n] output, which is all `run_impl`
    // needs besides the packing invariants of `pk`.
    unsafe { run_impl(pk, input, out, panels, ep) }
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn run(_: &PackedPointwise, _: &[f32], _: ColumnsMut<'_>, _: Range<usize>, _: Epilogue) {
    unreachable!(
        "AVX2 panels cannot be packed on this architecture ({:?})",
        Isa::Avx2Fma
    )
}

/// # Safety
/// AVX2 and FMA must be available; `input.len() == out.rows() * pk.k`;
/// `out` has row stride `pk.n` and covers exactly the columns of `panels`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_impl(
    pk: &PackedPointwise,
    input: &[f32],
    mut out: ColumnsMut<'_>,
    panel_range: Range<usize>,
    ep: Epilogue,
) {
    let (k, n, rows) = (pk.k, pk.n, out.rows());
    let panels = pk.panels();
    let mc = row_block(k, MR);
    let a_base = input.as_ptr();
    let (c_base, ldc, first_col) = (out.as_mut_ptr(), out.stride(), out.first_col());
    let mut m0 = 0;
    while m0 < rows {
        let mb = mc.min(rows - m0);
        for p in panel_range.clone() {
            let n0 = p * NR;
            let width = panel_width(n, NR, p);
            let cols = (n - n0).min(width);
            let panel = &panels[p * k * NR..][..k * width];
            let bias = &pk.bias[n0..][..width];
            let mut tile_index = 0;
            for_each_tile(mb, MR, |r0, h| {
                let r = m0 + r0;
                let pf = pk.prefetch_target(p, tile_index, panel_range.end);
                tile_index += 1;
                // SAFETY: rows r..r+h lie within 0..rows, so the input rows
                // r..r+h (k floats each) and the view's rows are in bounds;
                // the tile writes columns n0..n0+cols of them, which lie in
                // the view since `panel_range` is the view's panels. `panel`
                // holds k rows of `width` floats and `bias` `width` floats.
                // Only this tile's output elements are written while no
                // other reference to them is live.
                unsafe {
                    let t = Tile {
                        k,
                        a: a_base.add(r * k),
                        lda: k,
                        b: panel.as_ptr(),
                        bias: bias.as_ptr(),
                        c: c_base.add(r * ldc + n0 - first_col),
                        ldc,
                        cols,
                        ep,
                        pf,
                    };
                    match (width == NR, pf.is_null()) {
                        (true, true) => dispatch::<2, false>(h, &t),
                        (true, false) => dispatch::<2, true>(h, &t),
                        (false, true) => dispatch::<1, false>(h, &t),
                        (false, false) => dispatch::<1, true>(h, &t),
                    }
                }
            });
        }
        m0 += mb;
    }
}

/// Raw description of one output tile.
#[cfg(target_arch = "x86_64")]
struct Tile {
    k: usize,
    /// First input row of the tile; row `i` starts at `a + i * lda`.
    a: *const f32,
    lda: usize,
    /// Panel: `k` rows of `8 * NV` floats.
    b: *const f32,
    /// `8 * NV` floats.
    bias: *const f32,
    /// First output element of the tile; row `i` starts at `c + i * ldc`.
    c: *mut f32,
    ldc: usize,
    /// Columns of each row to store (`<= 8 * NV`).
    cols: usize,
    ep: Epilogue,
    /// Where to prefetch one line per step of `k` into L2, or null (see
    /// [`PackedPointwise::prefetch_target`]).
    pf: *const f32,
}

/// # Safety
/// AVX2 and FMA; `1 <= h <= MR`; the pointers of `t` valid as documented
/// there for `h` rows.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dispatch<const NV: usize, const PF: bool>(h: usize, t: &Tile) {
    // SAFETY: forwarded from the caller; each arm passes R == h.
    unsafe {
        match h {
            1 => tile::<1, NV, PF>(t),
            2 => tile::<2, NV, PF>(t),
            3 => tile::<3, NV, PF>(t),
            4 => tile::<4, NV, PF>(t),
            5 => tile::<5, NV, PF>(t),
            6 => tile::<6, NV, PF>(t),
            _ => unreachable!("tile height {h} > MR"),
        }
    }
}

/// The micro-kernel: an `R x 8*NV` tile over all of `k`, then bias, clamp
/// and one store per vector (through a stack tile when `t.cols < 8 * NV`).
///
/// # Safety
/// AVX2 and FMA; `t.a + i * t.lda + kk` readable for `i < R`, `kk < t.k`;
/// `t.b` readable for `t.k * 8 * NV` floats and `t.bias` for `8 * NV`;
/// `t.c + i * t.ldc + j` writable for `i < R`, `j < t.cols`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const R: usize, const NV: usize, const PF: bool>(t: &Tile) {
    let lda = t.lda;
    // SAFETY: bias holds 8 * NV floats. Every iteration below has kk < t.k,
    // so `a` (advanced kk times) plus i * lda for i < R and `b` (advanced
    // kk * 8 * NV) plus 8 * NV stay within the regions the caller vouched
    // for.
    let acc = unsafe {
        // The accumulators start at the bias, which saves the add at the end.
        let mut bias = [_mm256_setzero_ps(); NV];
        for (v, bv) in bias.iter_mut().enumerate() {
            *bv = _mm256_loadu_ps(t.bias.add(8 * v));
        }
        let mut acc = [bias; R];
        let mut a = t.a;
        let mut b = t.b;
        let mut pf = t.pf;
        for _ in 0..t.k {
            if PF {
                // Prefetching never faults, so `pf` needs no bounds.
                _mm_prefetch::<_MM_HINT_T1>(pf.cast());
                pf = pf.wrapping_add(16);
            }
            let mut bv = [_mm256_setzero_ps(); NV];
            for (v, bv) in bv.iter_mut().enumerate() {
                *bv = _mm256_loadu_ps(b.add(8 * v));
            }
            for (i, acc_row) in acc.iter_mut().enumerate() {
                let x = _mm256_broadcast_ss(&*a.add(i * lda));
                for v in 0..NV {
                    acc_row[v] = _mm256_fmadd_ps(x, bv[v], acc_row[v]);
                }
            }
            a = a.add(1);
            b = b.add(8 * NV);
        }
        acc
    };
    let vmin = _mm256_set1_ps(t.ep.min);
    let vmax = _mm256_set1_ps(t.ep.max);
    let full = t.cols == 8 * NV;
    let mut spill = [0.0f32; 16];
    // SAFETY: full-vector stores happen only when the tile is 8 * NV
    // columns wide, otherwise the row goes through `spill` (16 >= 8 * NV
    // floats) and only `t.cols` floats are copied out.
    unsafe {
        for (i, acc_row) in acc.iter().enumerate() {
            let row = t.c.add(i * t.ldc);
            for (v, &acc) in acc_row.iter().enumerate() {
                let y = _mm256_min_ps(_mm256_max_ps(acc, vmin), vmax);
                if full {
                    _mm256_storeu_ps(row.add(8 * v), y);
                } else {
                    _mm256_storeu_ps(spill.as_mut_ptr().add(8 * v), y);
                }
            }
            if !full {
                std::ptr::copy_nonoverlapping(spill.as_ptr(), row, t.cols);
            }
        }
    }
}
