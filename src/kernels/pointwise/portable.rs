//! Plain-Rust pointwise micro-kernel for any CPU.
//!
//! No intrinsics: the tile of accumulators is a fixed-size array and the
//! innermost loop runs over a fixed number of columns, which LLVM turns into
//! vector multiply-adds for whatever baseline the crate is compiled for.

use super::{PackedPointwise, for_each_tile, panel_width, row_block};
use crate::kernels::{ColumnsMut, Epilogue};
use std::ops::Range;

/// Columns per full panel.
pub(super) const NR: usize = 8;
/// Rows per full tile.
const MR: usize = 4;

/// Computes all `rows` rows; lengths were checked by the caller.
pub(super) fn run(
    pk: &PackedPointwise,
    input: &[f32],
    mut out: ColumnsMut<'_>,
    panel_range: Range<usize>,
    ep: Epilogue,
) {
    let (k, n, rows) = (pk.k, pk.n, out.rows());
    let first_col = out.first_col();
    let panels = pk.panels();
    let mc = row_block(k, MR);
    let mut m0 = 0;
    while m0 < rows {
        let mb = mc.min(rows - m0);
        for p in panel_range.clone() {
            let n0 = p * NR;
            let width = panel_width(n, NR, p);
            let cols = (n - n0).min(width);
            let panel = &panels[p * k * NR..][..k * width];
            let bias = &pk.bias[n0..][..width];
            for_each_tile(mb, MR, |r0, h| {
                let r = m0 + r0;
                let t = Tile {
                    k,
                    a: &input[r * k..(r + h) * k],
                    c: &mut out,
                    r,
                    col: n0 - first_col,
                    cols,
                    ep,
                };
                if width == NR {
                    dispatch::<NR>(h, t, panel, bias);
                } else {
                    dispatch::<{ NR / 2 }>(h, t, panel, bias);
                }
            });
        }
        m0 += mb;
    }
}

/// One output tile: `a` holds its rows of the input; it writes columns
/// `col..col + cols` of rows `r..` of the output view `c`.
struct Tile<'a, 'o> {
    k: usize,
    a: &'a [f32],
    /// The output view; the tile writes `cols` columns from `col` of its
    /// rows `r..r + R`.
    c: &'a mut ColumnsMut<'o>,
    r: usize,
    col: usize,
    cols: usize,
    ep: Epilogue,
}

fn dispatch<const W: usize>(h: usize, t: Tile<'_, '_>, panel: &[f32], bias: &[f32]) {
    match h {
        1 => tile::<1, W>(t, panel, bias),
        2 => tile::<2, W>(t, panel, bias),
        3 => tile::<3, W>(t, panel, bias),
        4 => tile::<4, W>(t, panel, bias),
        _ => unreachable!("tile height {h} > MR"),
    }
}

#[inline(always)]
fn tile<const R: usize, const W: usize>(t: Tile<'_, '_>, panel: &[f32], bias: &[f32]) {
    let k = t.k;
    let a_rows: [&[f32]; R] = std::array::from_fn(|i| &t.a[i * k..][..k]);
    let mut acc = [[0.0f32; W]; R];
    for (kk, b) in panel.chunks_exact(W).take(k).enumerate() {
        let b: &[f32; W] = b.try_into().expect("chunk of W");
        for i in 0..R {
            let x = a_rows[i][kk];
            for j in 0..W {
                acc[i][j] += x * b[j];
            }
        }
    }
    let bias = &bias[..W];
    for (i, acc_row) in acc.iter().enumerate() {
        let out = &mut t.c.row_mut(t.r + i)[t.col..][..t.cols];
        for ((o, &s), &b) in out.iter_mut().zip(acc_row).zip(bias) {
            *o = t.ep.apply(s + b);
        }
    }
}
