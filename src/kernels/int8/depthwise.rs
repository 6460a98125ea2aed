//! 3x3 depthwise convolution of uint8 NHWC images with zero points, any
//! stride and leading padding, channels innermost.
//!
//! Taps outside the image read a row of input zero points, which is what
//! TFLite's "skip the tap" amounts to; every output pixel then sums nine
//! `x * (w - zw)` products, and `- zx Σ_t (w_t - zw) + bias` is one
//! per-channel constant. The SIMD paths multiply with `vpmaddwd`: an `i32`
//! lane holding a zero-extended `x` times a lane holding `w - zw` in its
//! low half is exactly `x (w - zw)`.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::kernels::int8::IntIsa;
use crate::kernels::int8::requant::{CHANNEL_PAD, OutputQuant};

/// The shape of one depthwise 3x3 convolution of one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DepthwiseGeometry {
    /// Input `[height, width]`.
    pub input: [usize; 2],
    /// Output `[height, width]`.
    pub output: [usize; 2],
    /// `[height, width]` strides.
    pub stride: [usize; 2],
    /// Taps before the input on `[top, left]`.
    pub pad: [usize; 2],
    /// Channels of input and output.
    pub channels: usize,
}

impl DepthwiseGeometry {
    /// Bytes of one input image.
    pub fn input_len(&self) -> usize {
        self.input[0] * self.input[1] * self.channels
    }

    /// Bytes of one output row.
    pub fn output_row_len(&self) -> usize {
        self.output[1] * self.channels
    }

    fn check(&self) -> Result<()> {
        let sizes = [self.input, self.output, self.stride];
        if sizes.iter().flatten().any(|&d| d == 0) || self.channels == 0 {
            return Err(Error::InvalidConfig(format!(
                "depthwise geometry {self:?}: sizes and strides must be at least 1"
            )));
        }
        let fits = |dims: &[usize]| dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let reach = |o: usize, s: usize| (o - 1).checked_mul(s).and_then(|v| v.checked_add(3));
        if fits(&[self.input[0], self.input[1], self.channels]).is_none()
            || fits(&[self.output[0], self.output[1], self.channels]).is_none()
            || reach(self.output[0], self.stride[0]).is_none()
            || reach(self.output[1], self.stride[1]).is_none()
        {
            return Err(Error::TooLarge(format!(
                "depthwise geometry {self:?} overflows"
            )));
        }
        Ok(())
    }
}

/// Packed 3x3 depthwise weights for one [`IntIsa`], with the folded
/// zero-point constant and the output epilogue.
#[derive(Clone, Debug)]
pub struct PackedDepthwise3x3 {
    isa: IntIsa,
    channels: usize,
    padded: usize,
    /// `[9][padded]` lanes holding `w - zw` as the low 16 bits.
    taps: Vec<i32>,
    /// `bias - zx Σ_t (w_t - zw)`, padded.
    col: Vec<i32>,
    /// The input zero point for every channel: what outside taps read.
    pad_row: Vec<u8>,
    quant: OutputQuant,
}

impl PackedDepthwise3x3 {
    /// Packs `weights` (`[3][3][channels]` codes, TFLite's `[1, 3, 3, C]`)
    /// with zero point `weight_zero_point`, `bias` per channel, the
    /// epilogue `quant`; inputs will have zero point `input_zero_point`.
    ///
    /// Fails with [`Error::Shape`] if a length does not fit,
    /// [`Error::InvalidConfig`] for no channels, a zero point outside
    /// `[0, 255]` or an `isa` this CPU lacks.
    pub fn new(
        isa: IntIsa,
        weights: &[u8],
        channels: usize,
        weight_zero_point: i32,
        input_zero_point: i32,
        bias: &[i32],
        quant: OutputQuant,
    ) -> Result<PackedDepthwise3x3> {
        if channels == 0 {
            return Err(Error::InvalidConfig("depthwise conv of 0 channels".into()));
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
        if channels.checked_mul(9) != Some(weights.len())
            || bias.len() != channels
            || quant.channels() != channels
        {
            return Err(Error::Shape(format!(
                "depthwise 3x3 of {channels} channels: {} weights, {} biases, {} requantized \
                 channels",
                weights.len(),
                bias.len(),
                quant.channels()
            )));
        }
        let padded = channels.next_multiple_of(CHANNEL_PAD);
        let mut taps = vec![0i32; 9 * padded];
        let mut col = vec![0i32; padded];
        for (t, row) in weights.chunks_exact(channels).enumerate() {
            for (c, &w) in row.iter().enumerate() {
                let w = i32::from(w) - weight_zero_point;
                taps[t * padded + c] = i32::from(w as i16 as u16);
                col[c] = col[c].wrapping_sub(input_zero_point * w);
            }
        }
        for (c, &b) in col.iter_mut().zip(bias) {
            *c = c.wrapping_add(b);
        }
        Ok(PackedDepthwise3x3 {
            isa,
            channels,
            padded,
            taps,
            col,
            pad_row: vec![input_zero_point as u8; padded],
            quant,
        })
    }

    /// The implementation packed for.
    pub fn isa(&self) -> IntIsa {
        self.isa
    }

    /// Computes output rows `rows` of one image: `input` is the whole image
    /// (`geom.input_len()` bytes), `output` those rows only.
    ///
    /// Fails with [`Error::Shape`] if the geometry's channels differ from
    /// the packed ones, a length does not fit or `rows` is outside the
    /// output, [`Error::InvalidConfig`] / [`Error::TooLarge`] for a bad
    /// geometry.
    pub fn run(
        &self,
        geom: &DepthwiseGeometry,
        input: &[u8],
        rows: Range<usize>,
        output: &mut [u8],
    ) -> Result<()> {
        geom.check()?;
        if geom.channels != self.channels
            || input.len() != geom.input_len()
            || rows.start > rows.end
            || rows.end > geom.output[0]
            || output.len() != rows.len() * geom.output_row_len()
        {
            return Err(Error::Shape(format!(
                "depthwise 3x3 of {} channels on {geom:?}: input of {} bytes, rows {rows:?} into \
                 {} bytes",
                self.channels,
                input.len(),
                output.len()
            )));
        }
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `new` checked the CPU; the lengths were checked above.
            IntIsa::Avx512Vnni => unsafe { x86::run_avx512(self, geom, input, rows, output) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            IntIsa::Avx2 => unsafe { x86::run_avx2(self, geom, input, rows, output) },
            _ => for_each_pixel(self, geom, input, rows, output, |taps, out| {
                self.pixel_portable(taps, 0, out)
            }),
        }
        Ok(())
    }

    /// Channels `from..` of one pixel, plain.
    #[inline(always)]
    fn pixel_portable(&self, taps: &[&[u8]; 9], from: usize, out: &mut [u8]) {
        let c_all = self.channels;
        for c in from..c_all {
            let mut acc = self.col[c];
            for (t, x) in taps.iter().enumerate() {
                let w = self.taps[t * self.padded + c] as u16 as i16;
                acc = acc.wrapping_add(i32::from(x[c]) * i32::from(w));
            }
            out[c] = self.quant.apply(acc, c);
        }
    }
}

/// Calls `pixel(taps, out)` for every output pixel of `rows`, with the
/// nine input pixels (or the zero-point row) its taps read.
#[inline(always)]
fn for_each_pixel(
    k: &PackedDepthwise3x3,
    geom: &DepthwiseGeometry,
    input: &[u8],
    rows: Range<usize>,
    output: &mut [u8],
    mut pixel: impl FnMut(&[&[u8]; 9], &mut [u8]),
) {
    let c = geom.channels;
    let [h, w] = geom.input;
    let [sh, sw] = geom.stride;
    let [pt, pl] = geom.pad;
    let pad = &k.pad_row[..c];
    let mut outs = output.chunks_exact_mut(c);
    for oy in rows {
        for ox in 0..geom.output[1] {
            let mut taps = [pad; 9];
            for ky in 0..3 {
                let Some(iy) = (oy * sh + ky).checked_sub(pt).filter(|&y| y < h) else {
                    continue;
                };
                for kx in 0..3 {
                    if let Some(ix) = (ox * sw + kx).checked_sub(pl).filter(|&x| x < w) {
                        let at = (iy * w + ix) * c;
                        taps[ky * 3 + kx] = &input[at..at + c];
                    }
                }
            }
            let Some(out) = outs.next() else { return };
            pixel(&taps, out);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{DepthwiseGeometry, PackedDepthwise3x3, for_each_pixel};
    use crate::kernels::int8::requant::x86::{requantize_avx2, requantize_avx512};
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// # Safety
    /// AVX-512 F/BW/VL available; lengths checked by the caller.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn run_avx512(
        k: &PackedDepthwise3x3,
        geom: &DepthwiseGeometry,
        input: &[u8],
        rows: Range<usize>,
        output: &mut [u8],
    ) {
        let n = k.channels;
        for_each_pixel(k, geom, input, rows, output, |taps, out| {
            let mut c = 0;
            while c < n {
                let valid = (n - c).min(16);
                let mask: __mmask16 = if valid == 16 { !0 } else { (1 << valid) - 1 };
                // SAFETY: each tap slice and `out` hold `n` bytes and the
                // loads and store are masked to `c .. c + valid <= n`;
                // the packed arrays are padded to a multiple of 16.
                unsafe {
                    let mut acc = _mm512_loadu_si512(k.col.as_ptr().add(c).cast());
                    for (t, x) in taps.iter().enumerate() {
                        let xv = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(
                            mask,
                            x.as_ptr().add(c).cast(),
                        ));
                        let wv = _mm512_loadu_si512(k.taps.as_ptr().add(t * k.padded + c).cast());
                        acc = _mm512_add_epi32(acc, _mm512_madd_epi16(xv, wv));
                    }
                    let codes = _mm512_cvtepi32_epi8(requantize_avx512(&k.quant, c, acc));
                    _mm_mask_storeu_epi8(out.as_mut_ptr().add(c).cast(), mask, codes);
                }
                c += 16;
            }
        });
    }

    /// # Safety
    /// AVX2 available; lengths checked by the caller.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn run_avx2(
        k: &PackedDepthwise3x3,
        geom: &DepthwiseGeometry,
        input: &[u8],
        rows: Range<usize>,
        output: &mut [u8],
    ) {
        let n = k.channels;
        for_each_pixel(k, geom, input, rows, output, |taps, out| {
            let mut c = 0;
            while c + 8 <= n {
                // SAFETY: each tap slice and `out` hold `n >= c + 8`
                // bytes; the packed arrays are padded past `c + 8`.
                unsafe {
                    let mut acc = _mm256_loadu_si256(k.col.as_ptr().add(c).cast());
                    for (t, x) in taps.iter().enumerate() {
                        let xv = _mm256_cvtepu8_epi32(_mm_loadl_epi64(x.as_ptr().add(c).cast()));
                        let wv = _mm256_loadu_si256(k.taps.as_ptr().add(t * k.padded + c).cast());
                        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(xv, wv));
                    }
                    let codes = requantize_avx2(&k.quant, c, acc);
                    let words = _mm256_packs_epi32(codes, codes);
                    let bytes = _mm256_packus_epi16(words, words);
                    let lo = _mm256_cvtsi256_si32(bytes) as u32;
                    let hi = _mm256_extract_epi32(bytes, 4) as u32;
                    out[c..c + 8]
                        .copy_from_slice(&(u64::from(hi) << 32 | u64::from(lo)).to_le_bytes());
                }
                c += 8;
            }
            k.pixel_portable(taps, c, out);
        });
    }
}
