//! AVX-512F pointwise micro-kernel: `MR = 14` rows x `NR = 32` columns
//! (two zmm per row, 28 zmm accumulators, two for the panel row and one
//! broadcast). N tails are written with masked stores.

use super::PackedPointwise;
#[cfg(target_arch = "x86_64")]
use super::{for_each_tile, panel_width, row_block};
use crate::kernels::{ColumnsMut, Epilogue, Isa};
use std::ops::Range;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Columns per full panel.
pub(super) const NR: usize = 32;
/// Rows per full tile.
#[cfg(target_arch = "x86_64")]
const MR: usize = 14;

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
        Isa::Avx512.is_supported(),
        "AVX-512 panels used on a CPU without AVX-512F"
    );
    debug_assert_eq!(input.len(), out.rows() * pk.k);
    debug_assert_eq!(out.first_col(), panels.start * NR);
    debug_assert_eq!(out.stride(), pk.n);
    // SAFETY: the CPU supports AVX-512F (asserted above), and the caller
    // checked input.len() == rows * k and that `out` covers exactly the
    // columns of `panels` of a [rows, n] output, which is all `run_impl`
    // needs besides the packing invariants of `pk`.
    unsafe { run_impl(pk, input, out, panels, ep) }
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn run(_: &PackedPointwise, _: &[f32], _: ColumnsMut<'_>, _: Range<usize>, _: Epilogue) {
    unreachable!(
        "AVX-512 panels cannot be packed on this architecture ({:?})",
        Isa::Avx512
    )
}

/// Rows per tile for reduction length `k`: `MR`, except 7 when a row of
/// `A` spans a multiple of 4 KiB. Then all rows of a tile map to the same
/// set of the 8-way L1 cache, and 14 of them would evict each other on
/// every step of `k` (measured: 90 % instead of 100 % of peak at k = 1024;
/// copying the tile into a k-major buffer also fixes it but costs more).
#[cfg(target_arch = "x86_64")]
fn tile_rows(k: usize) -> usize {
    if (k * size_of::<f32>()).is_multiple_of(4096) {
        MR / 2
    } else {
        MR
    }
}

/// # Safety
/// AVX-512F must be available; `input.len() == out.rows() * pk.k`; `out`
/// has row stride `pk.n` and covers exactly the columns of `panels`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn run_impl(
    pk: &PackedPointwise,
    input: &[f32],
    mut out: ColumnsMut<'_>,
    panels: Range<usize>,
    ep: Epilogue,
) {
    let (k, n, rows) = (pk.k, pk.n, out.rows());
    let a_base = input.as_ptr();
    let (c_base, ldc, first_col) = (out.as_mut_ptr(), out.stride(), out.first_col());
    // The tile of rows r.. against panel p, prefetching from `pf`.
    let tile_at = |p: usize, r: usize, pf: *const f32| {
        let n0 = p * NR;
        let width = panel_width(n, NR, p);
        let cols = (n - n0).min(width);
        // Lanes of the last vector of the tile that hold real columns.
        let tail = cols - (width - 16);
        let panel = &pk.panels()[p * k * NR..][..k * width];
        Tile {
            k,
            // SAFETY: r < rows, so the offset is within `input`.
            a: unsafe { a_base.add(r * k) },
            lda: k,
            b: panel.as_ptr(),
            bias: pk.bias[n0..][..width].as_ptr(),
            // SAFETY: r < rows and first_col <= n0 < first_col + cols of
            // the view, so the offset is within the view's row r.
            c: unsafe { c_base.add(r * ldc + n0 - first_col) },
            ldc,
            mask: if tail == 16 {
                0xFFFF
            } else {
                (1u16 << tail) - 1
            },
            ep,
            pf,
        }
    };
    let mr = tile_rows(k);
    let mc = row_block(k, MR);
    let mut m0 = 0;
    while m0 < rows {
        let mb = mc.min(rows - m0);
        for p in panels.clone() {
            let wide = panel_width(n, NR, p) == NR;
            let mut tile_index = 0;
            for_each_tile(mb, mr, |r0, h| {
                let r = m0 + r0;
                let pf = pk.prefetch_target(p, tile_index, panels.end);
                tile_index += 1;
                // SAFETY: r + h <= rows, so the input rows r..r+h are in
                // bounds, and so are the view's rows; the tile writes
                // columns n0..n0+cols of them, inside the view (lanes beyond
                // are masked off); `t.b` and `t.bias` are the panel's k rows and bias
                // of `width` floats. No other reference to the output is
                // live.
                unsafe {
                    let t = tile_at(p, r, pf);
                    match (wide, pf.is_null()) {
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
    /// Panel: `k` rows of `16 * NV` floats.
    b: *const f32,
    /// `16 * NV` floats.
    bias: *const f32,
    /// First output element of the tile; row `i` starts at `c + i * ldc`.
    c: *mut f32,
    ldc: usize,
    /// Lanes of the last vector of each row to store.
    mask: u16,
    ep: Epilogue,
    /// Where to prefetch one line per step of `k` into L2, or null (see
    /// [`PackedPointwise::prefetch_target`]).
    pf: *const f32,
}

/// # Safety
/// AVX-512F; `1 <= h <= MR`; the pointers of `t` valid as documented there
/// for `h` rows.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
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
            7 => tile::<7, NV, PF>(t),
            8 => tile::<8, NV, PF>(t),
            9 => tile::<9, NV, PF>(t),
            10 => tile::<10, NV, PF>(t),
            11 => tile::<11, NV, PF>(t),
            12 => tile::<12, NV, PF>(t),
            13 => tile::<13, NV, PF>(t),
            14 => tile::<14, NV, PF>(t),
            _ => unreachable!("tile height {h} > MR"),
        }
    }
}

/// The micro-kernel: an `R x 16*NV` tile over all of `k`, then bias, clamp
/// and one store per vector.
///
/// # Safety
/// AVX-512F; `t.a + i * t.lda + kk` readable for `i < R`, `kk < t.k`;
/// `t.b` readable for `t.k * 16 * NV` floats and `t.bias` for `16 * NV`;
/// `t.c + i * t.ldc + j` writable for `i < R` and every `j < 16 * NV` whose
/// lane is set (all lanes but the last vector's, which follow `t.mask`).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const R: usize, const NV: usize, const PF: bool>(t: &Tile) {
    let lda = t.lda;
    // SAFETY: bias holds 16 * NV floats. Every iteration below has kk < t.k,
    // so `a` (advanced kk times) plus i * lda for i < R and `b` (advanced
    // kk * 16 * NV) plus 16 * NV stay within the regions the caller vouched
    // for.
    let acc = unsafe {
        // The accumulators start at the bias, which saves the add at the end.
        let mut bias = [_mm512_setzero_ps(); NV];
        for (v, bv) in bias.iter_mut().enumerate() {
            *bv = _mm512_loadu_ps(t.bias.add(16 * v));
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
            let mut bv = [_mm512_setzero_ps(); NV];
            for (v, bv) in bv.iter_mut().enumerate() {
                *bv = _mm512_loadu_ps(b.add(16 * v));
            }
            for (i, acc_row) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*a.add(i * lda));
                for v in 0..NV {
                    acc_row[v] = _mm512_fmadd_ps(x, bv[v], acc_row[v]);
                }
            }
            a = a.add(1);
            b = b.add(16 * NV);
        }
        acc
    };
    let vmin = _mm512_set1_ps(t.ep.min);
    let vmax = _mm512_set1_ps(t.ep.max);
    // SAFETY: the stores write rows i < R and only the lanes the caller
    // vouched for (full vectors, then the last one under `mask`).
    unsafe {
        for (i, acc_row) in acc.iter().enumerate() {
            let row = t.c.add(i * t.ldc);
            for (v, &acc) in acc_row.iter().enumerate() {
                let y = _mm512_min_ps(_mm512_max_ps(acc, vmin), vmax);
                if v + 1 < NV || t.mask == 0xFFFF {
                    _mm512_storeu_ps(row.add(16 * v), y);
                } else {
                    _mm512_mask_storeu_ps(row.add(16 * v), t.mask, y);
                }
            }
        }
    }
}
