//! `u8 x u8` matrix product with zero points, for 1x1 convolutions, fully
//! connected layers and im2col'd convolutions: `out[m][n] = requant(Σ_k
//! (x[m][k] - x_zero) * (w[n][k] - w_zero) + bias[n])`.
//!
//! The zero points are folded out of the inner loop (as gemmlowp does):
//! `Σ (x - zx)(w - zw) = Σ x (w - zw) - zx Σ (w - zw)`, and the second sum
//! is a per-channel constant computed at pack time. The VNNI path needs
//! signed 8-bit weights, so it stores `w - 128` and adds back
//! `(128 - zw) Σ_k x` once per row. Every step wraps modulo 2^32, so the
//! result equals the reference whenever (and however) the reference's
//! own wrapping accumulation ends.

use crate::error::{Error, Result};
use crate::kernels::int8::IntIsa;
use crate::kernels::int8::requant::{CHANNEL_PAD, OutputQuant};

/// Rows per register tile.
const MR: usize = 4;
/// Blocks of 16 channels per VNNI register tile (and packed panel).
const VNNI_PANEL: usize = 4;
/// Rows per cache block: the rows of one block are reused across every
/// column tile while they stay in L1.
const MC_MAX: usize = 128;
/// Bytes of activation rows aimed at per cache block.
const BLOCK_BYTES: usize = 32 << 10;

/// Weights of one GEMM packed for one [`IntIsa`], with the folded
/// zero-point terms and the output epilogue.
#[derive(Clone, Debug)]
pub struct PackedGemm {
    isa: IntIsa,
    k: usize,
    n: usize,
    /// VNNI: `w - 128` in blocks of 16 channels x 4 depths.
    w8: Vec<i8>,
    /// AVX2: `w - zw` in blocks of 8 channels x 2 depths; portable:
    /// row-major `[n][k]`.
    w16: Vec<i16>,
    /// `bias - zx Σ_k (w - zw)` per channel, padded.
    col: Vec<i32>,
    /// VNNI: `128 - zw`, the weight of each row's sum; else 0.
    row_coef: i32,
    quant: OutputQuant,
}

impl PackedGemm {
    /// Packs `weights` (row-major `[n][k]` codes with zero point
    /// `weight_zero_point`) for `isa`, with `bias` (one per channel) and the
    /// epilogue `quant` (one multiplier per channel). Inputs will have zero
    /// point `input_zero_point`.
    ///
    /// Fails with [`Error::Shape`] if a length does not fit,
    /// [`Error::InvalidConfig`] for an empty matrix, a zero point outside
    /// `[0, 255]` or an `isa` this CPU lacks.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        isa: IntIsa,
        weights: &[u8],
        n: usize,
        k: usize,
        weight_zero_point: i32,
        input_zero_point: i32,
        bias: &[i32],
        quant: OutputQuant,
    ) -> Result<PackedGemm> {
        if n == 0 || k == 0 {
            return Err(Error::InvalidConfig(format!(
                "GEMM of {n} channels over depth {k}: both must be at least 1"
            )));
        }
        if !isa.is_supported() {
            return Err(Error::InvalidConfig(format!("{isa} is not supported here")));
        }
        let ok_zp = |z: i32| (0..=255).contains(&z);
        if !ok_zp(weight_zero_point) || !ok_zp(input_zero_point) {
            return Err(Error::InvalidConfig(format!(
                "zero points {weight_zero_point} and {input_zero_point} must be within [0, 255]"
            )));
        }
        if n.checked_mul(k) != Some(weights.len()) || bias.len() != n || quant.channels() != n {
            return Err(Error::Shape(format!(
                "GEMM {n}x{k}: {} weights, {} biases, {} requantized channels",
                weights.len(),
                bias.len(),
                quant.channels()
            )));
        }
        let zw = weight_zero_point;
        let col = channel_constants(weights, k, bias, input_zero_point, zw);
        let at = |j: usize, d: usize| -> Option<i32> {
            (j < n && d < k).then(|| i32::from(weights[j * k + d]))
        };
        let (mut w8, mut w16, mut row_coef) = (Vec::new(), Vec::new(), 0);
        match isa {
            IntIsa::Avx512Vnni => {
                // Panels of up to `VNNI_PANEL` blocks of 16 channels, the
                // columns of one register tile; within a panel the blocks
                // of each group of 4 depths are adjacent, so a tile reads
                // one sequential stream.
                let (blocks, groups) = (n.div_ceil(16), k.div_ceil(4));
                w8.reserve_exact(blocks * groups * 64);
                for p0 in (0..blocks).step_by(VNNI_PANEL) {
                    for g in 0..groups {
                        for b in p0..(p0 + VNNI_PANEL).min(blocks) {
                            for j in 0..16 {
                                for t in 0..4 {
                                    let w = at(b * 16 + j, g * 4 + t).map_or(0, |w| w - 128);
                                    w8.push(w as i8);
                                }
                            }
                        }
                    }
                }
                row_coef = 128 - zw;
            }
            IntIsa::Avx2 => {
                let (blocks, pairs) = (n.div_ceil(8), k.div_ceil(2));
                w16.reserve_exact(blocks * pairs * 16);
                for b in 0..blocks {
                    for p in 0..pairs {
                        for j in 0..8 {
                            for t in 0..2 {
                                let w = at(b * 8 + j, p * 2 + t).map_or(0, |w| w - zw);
                                w16.push(w as i16);
                            }
                        }
                    }
                }
            }
            IntIsa::Portable => {
                w16 = weights
                    .iter()
                    .map(|&w| (i32::from(w) - zw) as i16)
                    .collect();
            }
        }
        Ok(PackedGemm {
            isa,
            k,
            n,
            w8,
            w16,
            col,
            row_coef,
            quant,
        })
    }

    /// The implementation packed for.
    pub fn isa(&self) -> IntIsa {
        self.isa
    }

    /// `(n, k)`: output channels and depth.
    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// Multiplies `m` rows of `k` input codes (row-major) into `m` rows of
    /// `n` output codes.
    ///
    /// Fails with [`Error::Shape`] if a length does not fit.
    pub fn run(&self, input: &[u8], m: usize, output: &mut [u8]) -> Result<()> {
        if m.checked_mul(self.k) != Some(input.len()) || m.checked_mul(self.n) != Some(output.len())
        {
            return Err(Error::Shape(format!(
                "GEMM {}x{} on {m} rows: input of {} and output of {} bytes",
                self.n,
                self.k,
                input.len(),
                output.len()
            )));
        }
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `new` checked the CPU has AVX-512 F/BW/VL/VNNI; the
            // lengths were checked above.
            IntIsa::Avx512Vnni => unsafe { x86::run_vnni(self, input, m, output) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `new` checked the CPU has AVX2; lengths checked above.
            IntIsa::Avx2 => unsafe { x86::run_avx2(self, input, m, output) },
            _ => self.run_portable(input, output),
        }
        Ok(())
    }

    fn run_portable(&self, input: &[u8], output: &mut [u8]) {
        for (x, out) in input
            .chunks_exact(self.k)
            .zip(output.chunks_exact_mut(self.n))
        {
            for (c, ((o, w), &col)) in out
                .iter_mut()
                .zip(self.w16.chunks_exact(self.k))
                .zip(&self.col)
                .enumerate()
            {
                let dot = x.iter().zip(w).fold(0i32, |s, (&x, &w)| {
                    s.wrapping_add(i32::from(x) * i32::from(w))
                });
                *o = self.quant.apply(dot.wrapping_add(col), c);
            }
        }
    }

    /// Rows per cache block.
    fn block_rows(&self) -> usize {
        (BLOCK_BYTES / self.k).clamp(MR, MC_MAX) / MR * MR
    }
}

/// `bias - zx Σ_k (w - zw)` for each channel (row of `k` codes of
/// `weights`), padded to [`CHANNEL_PAD`]: the part of `Σ (x - zx)(w - zw) +
/// bias` that does not depend on the input, folded at pack time.
pub(super) fn channel_constants(
    weights: &[u8],
    k: usize,
    bias: &[i32],
    input_zero_point: i32,
    weight_zero_point: i32,
) -> Vec<i32> {
    let mut col = vec![0i32; bias.len().next_multiple_of(CHANNEL_PAD)];
    for ((c, row), &b) in col.iter_mut().zip(weights.chunks_exact(k)).zip(bias) {
        let sum = row.iter().fold(0i32, |s, &w| {
            s.wrapping_add(i32::from(w) - weight_zero_point)
        });
        *c = b.wrapping_sub(input_zero_point.wrapping_mul(sum));
    }
    col
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MC_MAX, MR, PackedGemm, VNNI_PANEL};
    use crate::kernels::int8::requant::x86::{
        Lanes256, Lanes512, codes_avx512, requantize_lanes_avx2, rescale_avx512,
    };
    use std::arch::x86_64::*;

    /// Calls `$tile::<mr, nb>` for runtime `mr` in `1..=4`, `nb` in `1..=$max`.
    macro_rules! dispatch {
        ($tile:ident, $mr:expr, $nb:expr, $($arg:expr),*) => {
            match ($mr, $nb) {
                (4, 4) => $tile::<4, 4>($($arg),*),
                (4, 3) => $tile::<4, 3>($($arg),*),
                (4, 2) => $tile::<4, 2>($($arg),*),
                (4, _) => $tile::<4, 1>($($arg),*),
                (3, 4) => $tile::<3, 4>($($arg),*),
                (3, 3) => $tile::<3, 3>($($arg),*),
                (3, 2) => $tile::<3, 2>($($arg),*),
                (3, _) => $tile::<3, 1>($($arg),*),
                (2, 4) => $tile::<2, 4>($($arg),*),
                (2, 3) => $tile::<2, 3>($($arg),*),
                (2, 2) => $tile::<2, 2>($($arg),*),
                (2, _) => $tile::<2, 1>($($arg),*),
                (_, 4) => $tile::<1, 4>($($arg),*),
                (_, 3) => $tile::<1, 3>($($arg),*),
                (_, 2) => $tile::<1, 2>($($arg),*),
                (_, _) => $tile::<1, 1>($($arg),*),
            }
        };
    }

    /// # Safety
    /// AVX-512 F/BW/VL/VNNI available; `input` holds `m * k` and `output`
    /// `m * n` bytes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn run_vnni(g: &PackedGemm, input: &[u8], m: usize, output: &mut [u8]) {
        let (k, n) = (g.k, g.n);
        let blocks = n.div_ceil(16);
        let mc = g.block_rows();
        let mut row_terms = [0i32; MC_MAX];
        let mut m0 = 0;
        while m0 < m {
            let rows = mc.min(m - m0);
            for (r, term) in row_terms[..rows].iter_mut().enumerate() {
                let sum = byte_sum(&input[(m0 + r) * k..(m0 + r + 1) * k]);
                *term = sum.wrapping_mul(g.row_coef);
            }
            let mut b0 = 0;
            while b0 < blocks {
                let nb = (blocks - b0).min(VNNI_PANEL);
                let mut r = 0;
                while r < rows {
                    let mr = (rows - r).min(MR);
                    let x = input[(m0 + r) * k..].as_ptr();
                    let out = output[(m0 + r) * n..].as_mut_ptr();
                    let terms = &row_terms[r..r + mr];
                    // SAFETY: rows `m0 + r .. + mr` exist in both buffers
                    // and blocks `b0 .. b0 + nb` in the packed weights.
                    unsafe { dispatch!(tile_vnni, mr, nb, g, x, out, b0, terms) };
                    r += mr;
                }
                b0 += nb;
            }
            m0 += rows;
        }
    }

    /// The sum of `bytes` (wrapping, as the reference), 64 at a time with
    /// `vpsadbw`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn byte_sum(bytes: &[u8]) -> i32 {
        let mut sums = _mm512_setzero_si512();
        let mut chunks = bytes.chunks_exact(64);
        for chunk in &mut chunks {
            // SAFETY: `chunk` holds 64 bytes.
            let v = unsafe { _mm512_loadu_si512(chunk.as_ptr().cast()) };
            sums = _mm512_add_epi64(sums, _mm512_sad_epu8(v, _mm512_setzero_si512()));
        }
        let rest = chunks.remainder();
        let mask: __mmask64 = (1 << rest.len()) - 1;
        // SAFETY: the load is masked to the `rest.len() < 64` bytes of `rest`.
        let v = unsafe { _mm512_maskz_loadu_epi8(mask, rest.as_ptr().cast()) };
        sums = _mm512_add_epi64(sums, _mm512_sad_epu8(v, _mm512_setzero_si512()));
        _mm512_reduce_add_epi64(sums) as i32
    }

    /// One `MR` rows x `NB * 16` channels tile.
    ///
    /// # Safety
    /// `x` points at `MR` rows of `k` bytes, `out` at `MR` rows of `n`
    /// bytes, blocks `b0 .. b0 + NB` exist; VNNI available.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn tile_vnni<const M: usize, const NB: usize>(
        g: &PackedGemm,
        x: *const u8,
        out: *mut u8,
        b0: usize,
        row_terms: &[i32],
    ) {
        let (k, n) = (g.k, g.n);
        let groups = k.div_ceil(4);
        let full = k / 4;
        let mut acc = [[_mm512_setzero_si512(); NB]; M];
        // SAFETY (whole body): reads stay within the `M` rows of `k` bytes
        // at `x` (whole groups below `full`, single bytes in the tail) and
        // within the packed blocks; writes are masked to the `n` columns
        // of `M` rows at `out`.
        unsafe {
            let wb = g.w8.as_ptr().add(b0 * groups * 64);
            for q in 0..full {
                let mut w = [_mm512_setzero_si512(); NB];
                for (b, wv) in w.iter_mut().enumerate() {
                    *wv = _mm512_loadu_si512(wb.add((q * NB + b) * 64).cast());
                }
                for (i, row) in acc.iter_mut().enumerate() {
                    let a = _mm512_set1_epi32(x.add(i * k + q * 4).cast::<i32>().read_unaligned());
                    for (a_ib, wv) in row.iter_mut().zip(&w) {
                        *a_ib = _mm512_dpbusd_epi32(*a_ib, a, *wv);
                    }
                }
            }
            if full < groups {
                let mut w = [_mm512_setzero_si512(); NB];
                for (b, wv) in w.iter_mut().enumerate() {
                    *wv = _mm512_loadu_si512(wb.add((full * NB + b) * 64).cast());
                }
                let tail: __mmask16 = (1 << (k - full * 4)) - 1;
                for (i, row) in acc.iter_mut().enumerate() {
                    let bytes = _mm_maskz_loadu_epi8(tail, x.add(i * k + full * 4).cast());
                    let a = _mm512_broadcastd_epi32(bytes);
                    for (a_ib, wv) in row.iter_mut().zip(&w) {
                        *a_ib = _mm512_dpbusd_epi32(*a_ib, a, *wv);
                    }
                }
            }
            // Bias and row terms, rescaling per vector, then one store of
            // up to 64 codes per row.
            let c0 = b0 * 16;
            let valid = (n - c0).min(NB * 16);
            let mask: __mmask64 = if valid == 64 { !0 } else { (1 << valid) - 1 };
            let cols: [__m512i; NB] =
                std::array::from_fn(|b| _mm512_loadu_si512(g.col.as_ptr().add(c0 + b * 16).cast()));
            let lanes: [Lanes512; NB] =
                std::array::from_fn(|b| Lanes512::load(&g.quant, c0 + b * 16));
            for (i, row) in acc.iter().enumerate() {
                let term = _mm512_set1_epi32(row_terms[i]);
                let mut rescaled = [_mm512_setzero_si512(); 4];
                for b in 0..NB {
                    let v = _mm512_add_epi32(_mm512_add_epi32(row[b], cols[b]), term);
                    rescaled[b] = rescale_avx512(&g.quant, &lanes[b], v);
                }
                let codes = codes_avx512(&g.quant, rescaled);
                _mm512_mask_storeu_epi8(out.add(i * n + c0).cast(), mask, codes);
            }
        }
    }

    /// # Safety
    /// AVX2 available; `input` holds `m * k` and `output` `m * n` bytes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn run_avx2(g: &PackedGemm, input: &[u8], m: usize, output: &mut [u8]) {
        let (k, n) = (g.k, g.n);
        let blocks = n.div_ceil(8);
        let mc = g.block_rows();
        let mut m0 = 0;
        while m0 < m {
            let rows = mc.min(m - m0);
            let mut b0 = 0;
            while b0 < blocks {
                let nb = (blocks - b0).min(3);
                let mut r = 0;
                while r < rows {
                    let mr = (rows - r).min(MR);
                    let x = input[(m0 + r) * k..].as_ptr();
                    let out = output[(m0 + r) * n..].as_mut_ptr();
                    // SAFETY: rows `m0 + r .. + mr` exist in both buffers
                    // and blocks `b0 .. b0 + nb` in the packed weights.
                    unsafe { dispatch!(tile_avx2, mr, nb, g, x, out, b0) };
                    r += mr;
                }
                b0 += nb;
            }
            m0 += rows;
        }
    }

    /// One `MR` rows x `NB * 8` channels tile, `NB` at most 3.
    ///
    /// # Safety
    /// `x` points at `MR` rows of `k` bytes, `out` at `MR` rows of `n`
    /// bytes, blocks `b0 .. b0 + NB` exist; AVX2 available.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn tile_avx2<const M: usize, const NB: usize>(
        g: &PackedGemm,
        x: *const u8,
        out: *mut u8,
        b0: usize,
    ) {
        let (k, n) = (g.k, g.n);
        let pairs = k.div_ceil(2);
        let mut acc = [[_mm256_setzero_si256(); NB]; M];
        // SAFETY (whole body): reads stay within the `M` rows of `k` bytes
        // at `x` and the packed blocks; writes cover only the `n` columns
        // of `M` rows at `out`.
        unsafe {
            let wb = g.w16.as_ptr().add(b0 * pairs * 16);
            // Whole pairs of depths: the two input bytes are broadcast as
            // one 16-bit word and zero-extended, so every 32-bit lane holds
            // the pair (x[2p], x[2p + 1]) as two words for `vpmaddwd`
            // (3 instructions instead of 2 byte loads, a shift, an or and a
            // broadcast).
            for p in 0..k / 2 {
                let mut w = [_mm256_setzero_si256(); NB];
                for (b, wv) in w.iter_mut().enumerate() {
                    *wv = _mm256_loadu_si256(wb.add((b * pairs + p) * 16).cast());
                }
                for (i, row) in acc.iter_mut().enumerate() {
                    let two = x.add(i * k + 2 * p).cast::<i16>().read_unaligned();
                    let a = _mm256_cvtepu8_epi16(_mm_set1_epi16(two));
                    for (a_ib, wv) in row.iter_mut().zip(&w) {
                        *a_ib = _mm256_add_epi32(*a_ib, _mm256_madd_epi16(a, *wv));
                    }
                }
            }
            // An odd last depth pairs with zero.
            if k % 2 == 1 {
                let p = k / 2;
                let mut w = [_mm256_setzero_si256(); NB];
                for (b, wv) in w.iter_mut().enumerate() {
                    *wv = _mm256_loadu_si256(wb.add((b * pairs + p) * 16).cast());
                }
                for (i, row) in acc.iter_mut().enumerate() {
                    let a = _mm256_set1_epi32(i32::from(*x.add(i * k + 2 * p)));
                    for (a_ib, wv) in row.iter_mut().zip(&w) {
                        *a_ib = _mm256_add_epi32(*a_ib, _mm256_madd_epi16(a, *wv));
                    }
                }
            }
            for b in 0..NB {
                let c = (b0 + b) * 8;
                if c >= n {
                    break;
                }
                let col = _mm256_loadu_si256(g.col.as_ptr().add(c).cast());
                let valid = (n - c).min(8);
                let lanes = Lanes256::load(&g.quant, c);
                for (i, row) in acc.iter().enumerate() {
                    let codes =
                        requantize_lanes_avx2(&g.quant, &lanes, _mm256_add_epi32(row[b], col));
                    let words = _mm256_packs_epi32(codes, codes);
                    let bytes = _mm256_packus_epi16(words, words);
                    let lo = _mm256_cvtsi256_si32(bytes) as u32;
                    let hi = _mm256_extract_epi32(bytes, 4) as u32;
                    let packed = (u64::from(hi) << 32 | u64::from(lo)).to_le_bytes();
                    std::ptr::copy_nonoverlapping(packed.as_ptr(), out.add(i * n + c), valid);
                }
            }
        }
    }
}
