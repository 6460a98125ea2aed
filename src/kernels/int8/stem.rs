//! A full convolution over a few input channels straight from the image,
//! without im2col: the network's first layer (3x3, stride 2, RGB to
//! `32 α` channels) on AVX-512 VNNI.
//!
//! Through im2col the stem copies every patch (27 bytes per output pixel)
//! into a buffer larger than the image and then runs a GEMM of depth 27 on
//! it; here each kernel row of a patch, `kw * C_in` consecutive bytes of
//! one input row (9 for RGB), is read where it lies as groups of 4 bytes,
//! each broadcast into `vpdpbusd` against the weights of 16 channels. The
//! last group of a row overhangs into the next pixel: its weights there are
//! zero, and the row sum below skips those bytes. Patches that cross the
//! image border are gathered into a small stack buffer, with the input zero
//! point for outside taps as TFLite's reference does.
//!
//! Zero points are folded as in [`PackedGemm`](super::PackedGemm): weights
//! are stored as `w - 128` (vpdpbusd multiplies unsigned by signed bytes),
//! `(128 - zw) Σ x` is added per pixel, `bias - zx Σ (w - zw)` per channel.
//! Only the AVX-512 VNNI path exists; other ISAs keep im2col and the GEMM
//! ([`PackedStem::supports`] says which).

use std::ops::Range;

use crate::error::{Error, Result};
use crate::kernels::int8::IntIsa;
use crate::kernels::int8::gemm::channel_constants;
use crate::kernels::int8::im2col::PatchGeometry;
use crate::kernels::int8::requant::OutputQuant;

/// Most kernel rows supported (the gathered border patches live on the
/// stack).
const MAX_KERNEL_ROWS: usize = 4;
/// Most bytes per kernel row (`kw * C_in`): four groups of four.
const MAX_SPAN: usize = 16;

/// Weights of one small-input full convolution packed for VNNI, with the
/// folded zero-point terms and the output epilogue.
#[derive(Clone, Debug)]
pub struct PackedStem {
    geom: PatchGeometry,
    n: usize,
    /// Bytes of one kernel row of a patch, `kw * C_in`.
    span: usize,
    /// Groups of 4 bytes per kernel row.
    groups: usize,
    /// `w - 128` as 64-byte vectors `[block of 16 channels][ky][group]`,
    /// 4 bytes per channel; zero for bytes past `span` and channels past `n`.
    w8: Vec<i8>,
    /// Per group, the bytes that belong to the row (1) or overhang (0): the
    /// weights of the row sum.
    ones: [i32; MAX_SPAN / 4],
    /// `bias - zx Σ (w - zw)` per channel, padded.
    col: Vec<i32>,
    /// `128 - zw`, the weight of each pixel's input sum.
    row_coef: i32,
    /// The input zero point, what taps outside the image read.
    zero_point: u8,
    quant: OutputQuant,
}

impl PackedStem {
    /// Whether `isa` has a direct kernel for convolutions of `geom`: AVX-512
    /// VNNI, no dilation, at most 4 kernel rows of at most 16 bytes each
    /// (`kw * C_in`, 9 for a 3x3 kernel on RGB).
    pub fn supports(isa: IntIsa, geom: &PatchGeometry) -> bool {
        let span = geom.kernel[1].checked_mul(geom.channels);
        isa == IntIsa::Avx512Vnni
            && isa.is_supported()
            && geom.dilation == [1, 1]
            && (1..=MAX_KERNEL_ROWS).contains(&geom.kernel[0])
            && span.is_some_and(|s| (1..=MAX_SPAN).contains(&s))
    }

    /// Packs `weights` (`[n][kh][kw][C_in]` codes, im2col's patch order,
    /// with zero point `weight_zero_point`) for a convolution of `geom`,
    /// with `bias` per channel and the epilogue `quant`; inputs will have
    /// zero point `input_zero_point`.
    ///
    /// Fails with [`Error::InvalidConfig`] when [`PackedStem::supports`]
    /// does not hold, for no channels, a zero point outside `[0, 255]` or a
    /// geometry with an empty or overflowing side; [`Error::Shape`] if a
    /// length does not fit.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        isa: IntIsa,
        weights: &[u8],
        n: usize,
        geom: PatchGeometry,
        weight_zero_point: i32,
        input_zero_point: i32,
        bias: &[i32],
        quant: OutputQuant,
    ) -> Result<PackedStem> {
        if !Self::supports(isa, &geom) {
            return Err(Error::InvalidConfig(format!(
                "no direct {isa} convolution for {geom:?}: it needs AVX-512 VNNI, no dilation, \
                 at most {MAX_KERNEL_ROWS} kernel rows of at most {MAX_SPAN} bytes"
            )));
        }
        check_geometry(&geom)?;
        if n == 0 {
            return Err(Error::InvalidConfig("convolution to 0 channels".into()));
        }
        let ok_zp = |z: i32| (0..=255).contains(&z);
        if !ok_zp(weight_zero_point) || !ok_zp(input_zero_point) {
            return Err(Error::InvalidConfig(format!(
                "zero points {weight_zero_point} and {input_zero_point} must be within [0, 255]"
            )));
        }
        let [kh, kw] = geom.kernel;
        let span = kw * geom.channels;
        let depth = kh * span;
        if n.checked_mul(depth) != Some(weights.len()) || bias.len() != n || quant.channels() != n {
            return Err(Error::Shape(format!(
                "convolution to {n} channels over patches of {depth}: {} weights, {} biases, {} \
                 requantized channels",
                weights.len(),
                bias.len(),
                quant.channels()
            )));
        }
        let zw = weight_zero_point;
        let col = channel_constants(weights, depth, bias, input_zero_point, zw);
        let groups = span.div_ceil(4);
        let blocks = n.div_ceil(16);
        let mut w8 = Vec::with_capacity(blocks * kh * groups * 64);
        for b in 0..blocks {
            for ky in 0..kh {
                for g in 0..groups {
                    for j in 0..16 {
                        for t in 0..4 {
                            let (c, byte) = (b * 16 + j, g * 4 + t);
                            let w = if c < n && byte < span {
                                i32::from(weights[c * depth + ky * span + byte]) - 128
                            } else {
                                0
                            };
                            w8.push(w as i8);
                        }
                    }
                }
            }
        }
        let ones = std::array::from_fn(|g| {
            (0..4).fold(0i32, |v, t| v | (i32::from(g * 4 + t < span) << (8 * t)))
        });
        Ok(PackedStem {
            geom,
            n,
            span,
            groups,
            w8,
            ones,
            col,
            row_coef: 128 - zw,
            zero_point: input_zero_point as u8,
            quant,
        })
    }

    /// `(n, depth)`: output channels and patch length, as a GEMM would see
    /// them.
    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.geom.kernel[0] * self.span)
    }

    /// The geometry packed for.
    pub fn geometry(&self) -> &PatchGeometry {
        &self.geom
    }

    /// Computes output rows `rows` of one image: `input` is the whole image
    /// (`[h][w][C_in]` codes), `output` those rows only (`[rows][out_w][n]`).
    ///
    /// Fails with [`Error::Shape`] if a length does not fit or `rows` is
    /// outside the output.
    pub fn run(&self, input: &[u8], rows: Range<usize>, output: &mut [u8]) -> Result<()> {
        let g = &self.geom;
        let in_len = g.input[0] * g.input[1] * g.channels;
        if input.len() != in_len
            || rows.start > rows.end
            || rows.end > g.output[0]
            || output.len() != rows.len() * g.output[1] * self.n
        {
            return Err(Error::Shape(format!(
                "direct convolution {g:?} to {} channels: input of {} bytes, rows {rows:?} into \
                 {} bytes",
                self.n,
                input.len(),
                output.len()
            )));
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `new` checked the CPU has AVX-512 F/BW/VL/VNNI (through
        // `supports`); the lengths were checked above.
        unsafe {
            x86::run_vnni(self, input, rows, output)
        };
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("PackedStem::new accepts AVX-512 VNNI only");
        Ok(())
    }

    /// The output pixels `[lo, hi)` of output row `oy` whose patches lie
    /// inside the image, each kernel row with the overhang of its last
    /// group, and the byte offset of the first one's top kernel row. An
    /// empty range when some kernel row is outside the image.
    fn interior(&self, input_len: usize, oy: usize) -> (usize, usize, usize) {
        let g = &self.geom;
        let [h, w] = g.input;
        let [kh, kw] = g.kernel;
        let [sh, sw] = g.stride;
        let empty = (0, 0, 0);
        let Some(y) = (oy * sh).checked_sub(g.pad[0]).filter(|&y| y + kh <= h) else {
            return empty;
        };
        let lo = g.pad[1].div_ceil(sw);
        // The last pixel whose kernel row fits: (ox sw - pl) + kw <= w.
        let Some(fit) = (w + g.pad[1]).checked_sub(kw) else {
            return empty;
        };
        let mut hi = (fit / sw + 1).min(g.output[1]);
        let offset = |ox: usize| ((y * w) + ox * sw - g.pad[1]) * g.channels;
        let row_len = w * g.channels;
        // The overhang of the bottom kernel row of the last pixel may run
        // past the image: that pixel is gathered instead.
        while hi > lo && offset(hi - 1) + (kh - 1) * row_len + 4 * self.groups > input_len {
            hi -= 1;
        }
        if hi <= lo {
            return empty;
        }
        (lo, hi, offset(lo))
    }

    /// Kernel row `ky` of output pixel `(oy, ox)` gathered into `row`: the
    /// input bytes of taps inside the image, the zero point elsewhere
    /// (including the overhang, whose weights are zero).
    fn gather_row(&self, input: &[u8], oy: usize, ox: usize, ky: usize, row: &mut [u8; MAX_SPAN]) {
        let g = &self.geom;
        let c = g.channels;
        row.fill(self.zero_point);
        let Some(y) = (oy * g.stride[0] + ky)
            .checked_sub(g.pad[0])
            .filter(|&y| y < g.input[0])
        else {
            return;
        };
        for (kx, tap) in row[..self.span].chunks_exact_mut(c).enumerate() {
            if let Some(x) = (ox * g.stride[1] + kx)
                .checked_sub(g.pad[1])
                .filter(|&x| x < g.input[1])
            {
                let at = (y * g.input[1] + x) * c;
                tap.copy_from_slice(&input[at..at + c]);
            }
        }
    }
}

/// Refuses geometries with an empty side or whose products overflow.
fn check_geometry(g: &PatchGeometry) -> Result<()> {
    let dims = [g.input, g.output, g.stride, g.kernel];
    if dims.iter().flatten().any(|&d| d == 0) || g.channels == 0 {
        return Err(Error::InvalidConfig(format!(
            "convolution geometry {g:?}: sizes, strides and kernel must be at least 1"
        )));
    }
    let fits = |dims: &[usize]| dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let reach = |o: usize, s: usize, k: usize| (o - 1).checked_mul(s)?.checked_add(k);
    if fits(&[g.input[0], g.input[1], g.channels, 2]).is_none()
        || fits(&[g.output[0], g.output[1], MAX_SPAN * MAX_KERNEL_ROWS]).is_none()
        || reach(g.output[0], g.stride[0], g.kernel[0]).is_none()
        || reach(g.output[1], g.stride[1], g.kernel[1]).is_none()
    {
        return Err(Error::TooLarge(format!(
            "convolution geometry {g:?} overflows"
        )));
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MAX_KERNEL_ROWS, MAX_SPAN, PackedStem};
    use crate::kernels::int8::requant::x86::{Lanes512, codes_avx512, rescale_avx512};
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// Output pixels per register tile.
    const MR: usize = 4;
    /// Where each kernel row of a tile's first pixel starts.
    type Spans = [*const u8; MAX_KERNEL_ROWS];
    /// Blocks of 16 channels per register tile.
    const NB_MAX: usize = 4;

    /// Calls `tile::<mr, nb>` for runtime `mr` in `1..=4`, `nb` in `1..=4`.
    macro_rules! dispatch {
        ($mr:expr, $nb:expr, $($arg:expr),*) => {
            match ($mr, $nb) {
                (4, 4) => tile::<4, 4>($($arg),*),
                (4, 3) => tile::<4, 3>($($arg),*),
                (4, 2) => tile::<4, 2>($($arg),*),
                (4, _) => tile::<4, 1>($($arg),*),
                (3, 4) => tile::<3, 4>($($arg),*),
                (3, 3) => tile::<3, 3>($($arg),*),
                (3, 2) => tile::<3, 2>($($arg),*),
                (3, _) => tile::<3, 1>($($arg),*),
                (2, 4) => tile::<2, 4>($($arg),*),
                (2, 3) => tile::<2, 3>($($arg),*),
                (2, 2) => tile::<2, 2>($($arg),*),
                (2, _) => tile::<2, 1>($($arg),*),
                (_, 4) => tile::<1, 4>($($arg),*),
                (_, 3) => tile::<1, 3>($($arg),*),
                (_, 2) => tile::<1, 2>($($arg),*),
                (_, _) => tile::<1, 1>($($arg),*),
            }
        };
    }

    /// # Safety
    /// AVX-512 F/BW/VL/VNNI available; `input` is the whole image and
    /// `output` holds the output rows `rows` (checked by the caller).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn run_vnni(
        s: &PackedStem,
        input: &[u8],
        rows: Range<usize>,
        output: &mut [u8],
    ) {
        let g = &s.geom;
        let kh = g.kernel[0];
        let out_w = g.output[1];
        let row_len = g.input[1] * g.channels;
        let pixel_step = g.stride[1] * g.channels;
        let blocks = s.n.div_ceil(16);
        let out_base = output.as_mut_ptr();
        // `m` pixels from output pixel `ox` of output row `r`, kernel row
        // `ky` of pixel `i` at `spans[ky] + i * step`.
        let run_tile = |r: usize, ox: usize, m: usize, spans: &Spans, step: usize| {
            let out = out_base.wrapping_add((r * out_w + ox) * s.n);
            for b0 in (0..blocks).step_by(NB_MAX) {
                let nb = (blocks - b0).min(NB_MAX);
                // SAFETY: `m` pixels of output row `r` start at `out` (the
                // caller checked `output` holds rows `rows`); blocks `b0 ..
                // b0 + nb` exist in the packed weights; the spans are
                // readable as the callers below establish.
                unsafe { dispatch!(m, nb, s, spans, step, out, b0) };
            }
        };
        for (r, oy) in rows.enumerate() {
            let (lo, hi, first) = s.interior(input.len(), oy);
            // Border pixels one at a time, gathered into a stack patch
            // whose every row has `4 * groups <= MAX_SPAN` bytes.
            let gathered = |ox: usize| {
                let mut patch = [[0u8; MAX_SPAN]; MAX_KERNEL_ROWS];
                for (ky, row) in patch.iter_mut().enumerate().take(kh) {
                    s.gather_row(input, oy, ox, ky, row);
                }
                let spans = std::array::from_fn(|ky| patch[ky].as_ptr());
                run_tile(r, ox, 1, &spans, 0);
            };
            (0..lo.min(out_w)).for_each(gathered);
            let mut ox = lo;
            while ox < hi {
                let m = (hi - ox).min(MR);
                let at = first + (ox - lo) * pixel_step;
                // `interior` checked that every kernel row of pixels
                // `lo..hi`, with its overhang, lies inside `input`.
                let spans =
                    std::array::from_fn(|ky| input.as_ptr().wrapping_add(at + ky * row_len));
                run_tile(r, ox, m, &spans, pixel_step);
                ox += m;
            }
            (hi.max(lo)..out_w).for_each(gathered);
        }
    }

    /// `M` output pixels x `NB * 16` channels.
    ///
    /// # Safety
    /// VNNI available; `spans[ky] + i * step` readable for `4 * groups`
    /// bytes for `i < M`, `ky < kh`; `out` points at `M` pixels of `n`
    /// bytes; blocks `b0 .. b0 + NB` exist.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn tile<const M: usize, const NB: usize>(
        s: &PackedStem,
        spans: &Spans,
        step: usize,
        out: *mut u8,
        b0: usize,
    ) {
        let (kh, groups, n) = (s.geom.kernel[0], s.groups, s.n);
        let mut acc = [[_mm512_setzero_si512(); NB]; M];
        let mut sums = [_mm_setzero_si128(); M];
        // SAFETY (whole body): the reads stay within the spans and the
        // packed blocks `b0 .. b0 + NB` (`kh * groups` vectors of 64
        // bytes each); the stores are masked to the `n` channels of `M`
        // pixels at `out`.
        unsafe {
            for (ky, &span) in spans.iter().enumerate().take(kh) {
                for g in 0..groups {
                    let ones = _mm_set1_epi32(s.ones[g]);
                    let w: [__m512i; NB] = std::array::from_fn(|b| {
                        let at = (((b0 + b) * kh + ky) * groups + g) * 64;
                        _mm512_loadu_si512(s.w8.as_ptr().add(at).cast())
                    });
                    for i in 0..M {
                        let bytes = span.add(i * step + 4 * g).cast::<i32>().read_unaligned();
                        let a = _mm512_set1_epi32(bytes);
                        for (acc, w) in acc[i].iter_mut().zip(&w) {
                            *acc = _mm512_dpbusd_epi32(*acc, a, *w);
                        }
                        sums[i] = _mm_dpbusd_epi32(sums[i], _mm512_castsi512_si128(a), ones);
                    }
                }
            }
            let c0 = b0 * 16;
            let valid = (n - c0).min(NB * 16);
            let mask: __mmask64 = if valid == 64 { !0 } else { (1 << valid) - 1 };
            let cols: [__m512i; NB] =
                std::array::from_fn(|b| _mm512_loadu_si512(s.col.as_ptr().add(c0 + b * 16).cast()));
            let lanes: [Lanes512; NB] =
                std::array::from_fn(|b| Lanes512::load(&s.quant, c0 + b * 16));
            let coef = _mm_set1_epi32(s.row_coef);
            for i in 0..M {
                let term = _mm512_broadcastd_epi32(_mm_mullo_epi32(sums[i], coef));
                let mut rescaled = [_mm512_setzero_si512(); 4];
                for b in 0..NB {
                    let v = _mm512_add_epi32(_mm512_add_epi32(acc[i][b], cols[b]), term);
                    rescaled[b] = rescale_avx512(&s.quant, &lanes[b], v);
                }
                let codes = codes_avx512(&s.quant, rescaled);
                _mm512_mask_storeu_epi8(out.add(i * n + c0).cast(), mask, codes);
            }
        }
    }
}
