//! Pointwise (1x1) convolution over NHWC as a packed GEMM with a fused
//! epilogue.
//!
//! With the activation as `A = [M = pixels, K = C_in]` (row-major, channels
//! innermost) and the weights as `B = [N = C_out, K = C_in]` (row-major, i.e.
//! PyTorch OIHW with 1x1 kernels), the layer is `C = A · Bᵀ` followed by
//! `clamp(C + bias, min, max)` (see [`Epilogue`]).
//!
//! [`PackedPointwise::pack`] reorders the weights once, for one [`Isa`], into
//! column panels `NR` output channels wide and `K` deep (`panel[k][c]`), so
//! that the micro-kernel reads one contiguous run of `NR` floats per step of
//! `k`. The activation is read in place: the micro-kernel broadcasts single
//! elements of `MR` rows of `A`, so no im2col and no packing of `A` is
//! needed (measured: copying tiles of `A` into k-major order cost up to
//! half the speed at small `K` and gained nothing elsewhere). Every
//! micro-kernel keeps an `MR x NR` tile of accumulators in registers over
//! all of `K`, starting from the bias; it then clamps and stores once.
//!
//! Loop order, outermost first: blocks of rows sized so that the block of
//! `A` stays in L2 (`row_block`), panels of `B`, tiles of `MR` rows. A
//! remainder of rows is spread over near-equal tiles (`for_each_tile`).
//! No K blocking: at MobileNet's `K <= 1024` a whole panel (at most 128 KiB)
//! streams from L2 fast enough. Weights too large to stay in L2 are
//! prefetched a panel ahead by the first tiles of each panel
//! (`prefetch_target`).
//!
//! Per instruction set (chosen at pack time, dispatched by `match`):
//! - [`Isa::Avx512`]: `MR = 14`, `NR = 32` (two zmm per row, 28 zmm
//!   accumulators); N tails use masked stores.
//! - [`Isa::Avx2Fma`]: `MR = 6`, `NR = 16` (two ymm per row, 12 ymm
//!   accumulators); N tails go through a stack tile.
//! - [`Isa::Portable`]: plain Rust, `MR = 4`, `NR = 8`, on fixed-size arrays
//!   that LLVM vectorizes for the baseline target.
//!
//! On a Zen 4 core (2 x 256-bit FMA pipes, so AVX-512 and AVX2 have the same
//! peak of 32 flops per cycle) both SIMD paths reach 90-100 % of peak on
//! MobileNet's shapes.
//!
//! If the last panel needs at most `NR / 2` columns it is packed half as
//! wide, and a half-width micro-kernel serves it, so that `N = 16` layers do
//! not waste half of their multiply-adds on zero padding.

mod avx2;
mod avx512;
mod portable;
mod reference;

pub use reference::pointwise_reference;

use crate::error::{Result, shape_err};
use crate::kernels::{AlignedBuf, ColumnsMut, Epilogue, Isa};

/// Weights and bias of one pointwise convolution, packed for one ISA's
/// micro-kernel.
///
/// Immutable after [`pack`](Self::pack): [`run`](Self::run) takes `&self`
/// and can be called from several threads at once on disjoint row ranges.
#[derive(Debug)]
pub struct PackedPointwise {
    isa: Isa,
    k: usize,
    n: usize,
    /// Width of a full panel (the micro-kernel's `NR`).
    nr: usize,
    /// Panel `p` starts at `p * k * nr` and holds `k` rows of
    /// `panel_width(p)` floats; columns past `n` are zero.
    panels: AlignedBuf,
    /// The bias, zero-padded to `n.div_ceil(nr) * nr`.
    bias: Vec<f32>,
}

impl PackedPointwise {
    /// Packs `weight` (`[n, k]`, row-major) and `bias` (`[n]`) for `isa`'s
    /// micro-kernel.
    ///
    /// Errors with [`crate::Error::Shape`] if a length does not match, `k` or
    /// `n` is zero, or the sizes overflow, and with
    /// [`crate::Error::InvalidConfig`] if this CPU cannot run `isa`.
    pub fn pack(isa: Isa, weight: &[f32], bias: &[f32], k: usize, n: usize) -> Result<Self> {
        if !isa.is_supported() {
            return Err(crate::Error::InvalidConfig(format!(
                "pointwise kernel: this CPU does not support ISA '{isa}'"
            )));
        }
        if k == 0 || n == 0 {
            shape_err!("pointwise kernel: k ({k}) and n ({n}) must be non-zero");
        }
        let Some(wlen) = n.checked_mul(k) else {
            shape_err!("pointwise kernel: n x k = {n} x {k} overflows");
        };
        if weight.len() != wlen {
            shape_err!(
                "pointwise kernel: weight has {} elements, expected n x k = {n} x {k} = {wlen}",
                weight.len()
            );
        }
        if bias.len() != n {
            shape_err!(
                "pointwise kernel: bias has {} elements, expected n = {n}",
                bias.len()
            );
        }
        let nr = match isa {
            Isa::Avx512 => avx512::NR,
            Isa::Avx2Fma => avx2::NR,
            Isa::Portable => portable::NR,
        };
        let npanels = n.div_ceil(nr);
        let Some(padded) = (npanels * nr).checked_mul(k) else {
            shape_err!("pointwise kernel: packed size for n x k = {n} x {k} overflows");
        };
        let mut panels = AlignedBuf::zeros(padded);
        let dst = panels.as_mut_slice();
        for p in 0..npanels {
            let width = panel_width(n, nr, p);
            let n0 = p * nr;
            let cols = (n - n0).min(width);
            let panel = &mut dst[p * k * nr..][..k * width];
            for c in 0..cols {
                let row = &weight[(n0 + c) * k..][..k];
                for (kk, &w) in row.iter().enumerate() {
                    panel[kk * width + c] = w;
                }
            }
        }
        let mut padded_bias = vec![0.0; npanels * nr];
        padded_bias[..n].copy_from_slice(bias);
        Ok(PackedPointwise {
            isa,
            k,
            n,
            nr,
            panels,
            bias: padded_bias,
        })
    }

    /// The instruction set the weights were packed for.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Input channels (the reduction length).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Output channels.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Computes `output[m*n + j] = epilogue(sum_kk input[m*k + kk] *
    /// weight[j*k + kk] + bias[j])` for `m in 0..rows`.
    ///
    /// `input.len()` must be `rows * k` and `output.len()` `rows * n`;
    /// otherwise this returns [`crate::Error::Shape`] and writes nothing.
    /// Allocates nothing.
    pub fn run(
        &self,
        input: &[f32],
        output: &mut [f32],
        rows: usize,
        epilogue: Epilogue,
    ) -> Result<()> {
        let n = self.n;
        match rows.checked_mul(n) {
            Some(len) if len == output.len() => {}
            _ => shape_err!(
                "pointwise kernel: output has {} elements, expected rows x n = {rows} x {n}",
                output.len()
            ),
        }
        self.run_columns(input, ColumnsMut::new(output, rows, n)?, epilogue)
    }

    /// Like [`run`](Self::run), for the output columns `out` covers only:
    /// `out` is a column range of the `[rows, n]` output (`rows =
    /// out.rows()`), as split off by [`ColumnsMut::split_at`] at multiples
    /// of [`panel_columns`](Self::panel_columns). Threads given disjoint
    /// ranges share one output and each streams only its share of the
    /// weights.
    ///
    /// Errors with [`crate::Error::Shape`] if `input.len() != rows * k`,
    /// the view's row stride is not `n`, or its columns do not start and
    /// end on panel boundaries (or at `n`).
    pub fn run_columns(
        &self,
        input: &[f32],
        out: ColumnsMut<'_>,
        epilogue: Epilogue,
    ) -> Result<()> {
        let (k, n, nr) = (self.k, self.n, self.nr);
        let rows = out.rows();
        match rows.checked_mul(k) {
            Some(len) if len == input.len() => {}
            _ => shape_err!(
                "pointwise kernel: input has {} elements, expected rows x k = {rows} x {k}",
                input.len()
            ),
        }
        let (first, end) = (out.first_col(), out.first_col() + out.cols());
        if out.stride() != n || !first.is_multiple_of(nr) || (end != n && !end.is_multiple_of(nr)) {
            shape_err!(
                "pointwise kernel: columns {first}..{end} of rows {} wide are not a range of \
                 whole {nr}-column panels of the {n} outputs",
                out.stride()
            );
        }
        if rows == 0 || first == end {
            return Ok(());
        }
        let panels = first / nr..end.div_ceil(nr);
        match self.isa {
            Isa::Avx512 => avx512::run(self, input, out, panels, epilogue),
            Isa::Avx2Fma => avx2::run(self, input, out, panels, epilogue),
            Isa::Portable => portable::run(self, input, out, panels, epilogue),
        }
        Ok(())
    }

    /// Output columns per packed panel: [`run_columns`](Self::run_columns)
    /// takes column ranges that start and end on multiples of this (or at
    /// `n`).
    pub fn panel_columns(&self) -> usize {
        self.nr
    }

    /// Where tile `tile_index` (counted from 0 within a block of rows) of
    /// panel `p` should prefetch into L2, one 64-byte line per step of `k`,
    /// or null for no prefetching; `end` is one past the last panel this
    /// call computes (the next ones may be another thread's).
    ///
    /// At batch 1 every layer's weights come from L3 or memory, and a layer
    /// with few rows (7x7 and 14x14 pixels) reuses each panel for only a few
    /// tiles, so the first tile waited on memory. Now the first tiles of each
    /// panel fetch the next panel, a `k x 16` slice each, while they compute
    /// (measured on Zen 5: 0.9x network time at α 1.0, batch 1; cold
    /// 49x512x1024 alone 175 -> 199 GFLOP/s). Weights under
    /// [`PREFETCH_MIN_BYTES`] stay in L2 and are not prefetched.
    fn prefetch_target(&self, p: usize, tile_index: usize, end: usize) -> *const f32 {
        let (k, nr) = (self.k, self.nr);
        let panels = self.panels();
        let slices = nr / PREFETCH_SLICE;
        if std::mem::size_of_val(panels) < PREFETCH_MIN_BYTES
            || tile_index >= slices
            || p + 1 >= end
        {
            return std::ptr::null();
        }
        // If the next panel is half-width, its second slice is the padding
        // of its slot: a wasted prefetch, not a wrong one.
        panels[(p + 1) * k * nr..]
            .as_ptr()
            .wrapping_add(tile_index * k * PREFETCH_SLICE)
    }

    /// The packed panels (see the field docs for the layout).
    fn panels(&self) -> &[f32] {
        self.panels.as_slice()
    }
}

impl Clone for PackedPointwise {
    fn clone(&self) -> Self {
        PackedPointwise {
            isa: self.isa,
            k: self.k,
            n: self.n,
            nr: self.nr,
            panels: self.panels.clone(),
            bias: self.bias.clone(),
        }
    }
}

/// Packed weights from this size on are prefetched panel by panel: they
/// cannot stay in L2 next to the activations (1 MiB L2 per core on Zen 4
/// and 5). Smaller ones stay in L2 between images, where prefetching only
/// costs load slots (measured: -5 % at 784x256x256).
const PREFETCH_MIN_BYTES: usize = 512 * 1024;

/// Floats of a panel row one prefetch per step of `k` covers: a cache line.
const PREFETCH_SLICE: usize = 16;

/// Width of panel `p` for `n` columns and full width `nr`: `nr`, except a
/// last panel that needs at most `nr / 2` columns is `nr / 2` wide.
fn panel_width(n: usize, nr: usize, p: usize) -> usize {
    let rem = n - p * nr;
    if rem <= nr / 2 { nr / 2 } else { nr }
}

/// Rows per cache block: the outer loop walks `A` in blocks of this many
/// rows, and within a block every panel of `B` sweeps all row tiles, so a
/// block of `A` should stay in L2 while the panels stream past. Each block
/// streams all of `B` from L3 once, so blocks as large as L2 allows pay:
/// 512 KiB (of 1 MiB L2) keeps the 14x14x512 layers in one block, and
/// their pointwise convs went from 100-104 to 111-112 GFLOP/s in the
/// network on the Intel host (320 KiB split them in two).
fn row_block(k: usize, mr: usize) -> usize {
    const L2_BUDGET_FLOATS: usize = 512 * 1024 / 4;
    let rows = (L2_BUDGET_FLOATS / k).max(mr);
    rows / mr * mr
}

/// Splits `rows` into `rows.div_ceil(mr)` tiles of near-equal height (each
/// at most `mr`) and calls `f(first_row, height)` for each, so that a
/// remainder becomes several almost-full tiles rather than one thin one.
#[inline(always)]
fn for_each_tile(rows: usize, mr: usize, mut f: impl FnMut(usize, usize)) {
    let tiles = rows.div_ceil(mr);
    if tiles == 0 {
        return;
    }
    let base = rows / tiles;
    let extra = rows % tiles;
    let mut r0 = 0;
    for t in 0..tiles {
        let h = base + usize::from(t < extra);
        f(r0, h);
        r0 += h;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_are_balanced() {
        let mut seen = Vec::new();
        for_each_tile(49, 14, |r0, h| seen.push((r0, h)));
        assert_eq!(seen, vec![(0, 13), (13, 12), (25, 12), (37, 12)]);
        seen.clear();
        for_each_tile(28, 14, |r0, h| seen.push((r0, h)));
        assert_eq!(seen, vec![(0, 14), (14, 14)]);
    }

    #[test]
    fn last_panel_is_half_width_when_that_suffices() {
        assert_eq!(panel_width(64, 32, 1), 32);
        assert_eq!(panel_width(48, 32, 1), 16);
        assert_eq!(panel_width(49, 32, 1), 32);
        assert_eq!(panel_width(16, 32, 0), 16);
        assert_eq!(panel_width(17, 32, 0), 32);
        assert_eq!(panel_width(100, 32, 0), 32);
    }

    #[test]
    fn panels_are_aligned_and_k_major() {
        let (k, n) = (3, 12);
        let w: Vec<f32> = (0..n * k).map(|i| i as f32).collect();
        for isa in Isa::supported() {
            let p = PackedPointwise::pack(isa, &w, &vec![0.0; n], k, n).unwrap();
            assert_eq!(p.panels().as_ptr().align_offset(64), 0);
            assert_eq!(p.clone().panels().as_ptr().align_offset(64), 0);
            let width = panel_width(n, p.nr, 0);
            for kk in 0..k {
                for c in 0..width {
                    let want = if c < n { w[c * k + kk] } else { 0.0 };
                    assert_eq!(p.panels()[kk * width + c], want, "{isa} kk={kk} c={c}");
                }
            }
        }
    }
}
