//! 3x3 depthwise convolution of uint8 NHWC images with zero points, any
//! stride and leading padding, channels innermost.
//!
//! Taps outside the image read a row of input zero points, which is what
//! TFLite's "skip the tap" amounts to; every output pixel then sums nine
//! `x * (w - zw)` products, and `- zx Σ_t (w_t - zw) + bias` is one
//! per-channel constant. The SIMD paths multiply with `vpmaddwd`: an `i32`
//! lane holding a zero-extended `x` times a lane holding `w - zw` in its
//! low half is exactly `x (w - zw)`.
//!
//! The SIMD paths go further and pair taps: zero-extend the channels of
//! two taps to 16 bits, interleave them with `unpack{lo,hi}`, and one
//! `vpmaddwd` against the interleaved weights adds both products to an
//! `i32` lane. The interleave permutes channels within each 128-bit lane;
//! the weights, bias and requantization parameters are packed in that same
//! order, and `packs_epi32` of the two halves restores the natural order
//! before the store. Channel blocks are the outer loop so a block's weights
//! and epilogue stay in registers over every pixel.
//!
//! - AVX2 pairs the taps in row-major order (`ROW_MAJOR_PAIRS`: nine
//!   taps, five multiplies) and finds an interior pixel's taps at fixed
//!   offsets from one pointer.
//! - AVX-512 pairs kernel rows 0 and 1 of each column and leaves row 2
//!   alone (`COLUMN_PAIRS`: six multiplies), so that the widened and
//!   interleaved vectors of an input column serve every output pixel that
//!   reads it: sliding along an output row, each pixel loads one new
//!   column at stride 1 (two at stride 2) instead of nine taps, which
//!   takes the shuffle port's load off the critical path.

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
    /// The SIMD paths' blocks of [`Lanes::block_vectors`] vectors each, in
    /// their lane order (empty for the portable path).
    blocks: Vec<i32>,
}

/// Which taps share a `vpmaddwd` lane pair, in packing order.
type TapPairs = [(usize, Option<usize>)];

/// Taps in row-major order, two by two: (0, 1), (2, 3), (4, 5), (6, 7),
/// (8, -). Any pixel's nine taps in five multiplies (the AVX2 path).
const ROW_MAJOR_PAIRS: [(usize, Option<usize>); 5] = [
    (0, Some(1)),
    (2, Some(3)),
    (4, Some(5)),
    (6, Some(7)),
    (8, None),
];

/// Kernel rows 0 and 1 of each column paired, row 2 alone: (0, 3), (1, 4),
/// (2, 5), (6, -), (7, -), (8, -). An input column's vectors then serve
/// every output pixel that reads it (the AVX-512 path, which slides along
/// output rows).
const COLUMN_PAIRS: [(usize, Option<usize>); 6] = [
    (0, Some(3)),
    (1, Some(4)),
    (2, Some(5)),
    (6, None),
    (7, None),
    (8, None),
];

/// The lane order of the paired-tap SIMD layout for vectors of `LANES128`
/// 128-bit lanes: a block of `8 * LANES128` channels is two halves of
/// `4 * LANES128` `i32` lanes; lane `j` of half `h` holds channel
/// `8 (j / 4) + 4 h + j % 4` (what `unpack{lo,hi}_epi16` of zero-extended
/// channels yields).
struct Lanes<const LANES128: usize>;

impl<const LANES128: usize> Lanes<LANES128> {
    /// Channels per block.
    const BLOCK: usize = 8 * LANES128;
    /// `i32` lanes per vector.
    const WIDTH: usize = 4 * LANES128;

    /// Vectors per packed block for `pairs`: each tap pair, bias,
    /// multiplier, left and right shifts, each as two halves.
    const fn block_vectors(pairs: usize) -> usize {
        2 * (pairs + 4)
    }

    /// The channel (within its block) of lane `j` of half `h`.
    fn channel(h: usize, j: usize) -> usize {
        8 * (j / 4) + 4 * h + j % 4
    }

    /// Packs every block: vector `2 p + h` is tap pair `p` of `pairs`
    /// (the first tap in the low 16 bits, the second, or zero, in the
    /// high), then bias, multiplier, left and right shifts. Padded channels
    /// get zero weights and repeat the epilogue of the last channel.
    fn pack(
        taps: &[i32],
        padded: usize,
        col: &[i32],
        quant: &OutputQuant,
        pairs: &TapPairs,
    ) -> Vec<i32> {
        let channels = quant.channels();
        let blocks = channels.div_ceil(Self::BLOCK);
        let per_block = Self::block_vectors(pairs.len()) * Self::WIDTH;
        let mut out = vec![0i32; blocks * per_block];
        for (b, block) in out.chunks_exact_mut(per_block).enumerate() {
            for (v, vector) in block.chunks_exact_mut(Self::WIDTH).enumerate() {
                let h = v % 2;
                for (j, lane) in vector.iter_mut().enumerate() {
                    let c = b * Self::BLOCK + Self::channel(h, j);
                    let real = c.min(channels - 1);
                    let tap = |t: Option<usize>| match t {
                        Some(t) if c < channels => taps[t * padded + c],
                        _ => 0,
                    };
                    let p = v / 2;
                    *lane = if let Some(&(first, second)) = pairs.get(p) {
                        tap(Some(first)) | tap(second) << 16
                    } else if p == pairs.len() {
                        if c < channels { col[c] } else { 0 }
                    } else {
                        quant.channel_params(real)[p - pairs.len() - 1]
                    };
                }
            }
        }
        out
    }
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
        let blocks = match isa {
            IntIsa::Avx512Vnni => Lanes::<4>::pack(&taps, padded, &col, &quant, &COLUMN_PAIRS),
            IntIsa::Avx2 => Lanes::<2>::pack(&taps, padded, &col, &quant, &ROW_MAJOR_PAIRS),
            IntIsa::Portable => Vec::new(),
        };
        Ok(PackedDepthwise3x3 {
            isa,
            channels,
            padded,
            taps,
            col,
            pad_row: vec![input_zero_point as u8; padded],
            quant,
            blocks,
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
                self.pixel_portable(taps, out)
            }),
        }
        Ok(())
    }

    /// All channels of one pixel, plain.
    #[inline(always)]
    fn pixel_portable(&self, taps: &[&[u8]; 9], out: &mut [u8]) {
        for c in 0..self.channels {
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

/// Where one output pixel's nine input taps are.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
enum Taps {
    /// All inside the image: tap `(ky, kx)` is at `top_left + ky row +
    /// kx channels` bytes, offsets a kernel keeps in registers.
    Interior { top_left: *const u8, row: usize },
    /// Some outside: each tap's pointer, the zero-point row for those.
    Border([*const u8; 9]),
}

#[cfg(target_arch = "x86_64")]
impl Taps {
    /// Every tap's pointer.
    #[inline(always)]
    fn pointers(self, channels: usize) -> [*const u8; 9] {
        match self {
            Taps::Interior { top_left, row } => {
                std::array::from_fn(|t| top_left.wrapping_add((t / 3) * row + (t % 3) * channels))
            }
            Taps::Border(taps) => taps,
        }
    }
}

/// Calls `pixel(taps, at)` for every output pixel of `rows`: `taps` point
/// at the nine input pixels' `channels` bytes (at `pad` for taps outside
/// the image, which must hold as many), `at` counts the pixels of `rows`
/// from 0.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn for_each_pixel_ptr(
    geom: &DepthwiseGeometry,
    input: &[u8],
    pad: &[u8],
    rows: Range<usize>,
    mut pixel: impl FnMut(Taps, usize),
) {
    let c = geom.channels;
    let [h, w] = geom.input;
    let [sh, sw] = geom.stride;
    let [pt, pl] = geom.pad;
    let at_pixel = |iy: usize, ix: usize| input.as_ptr().wrapping_add((iy * w + ix) * c);
    let mut at = 0;
    for oy in rows {
        let top = (oy * sh).checked_sub(pt).filter(|&y| y + 3 <= h);
        for ox in 0..geom.output[1] {
            let left = (ox * sw).checked_sub(pl).filter(|&x| x + 3 <= w);
            let taps = match (top, left) {
                (Some(y), Some(x)) => Taps::Interior {
                    top_left: at_pixel(y, x),
                    row: w * c,
                },
                _ => Taps::Border(std::array::from_fn(|t| {
                    let iy = (oy * sh + t / 3).checked_sub(pt).filter(|&y| y < h);
                    let ix = (ox * sw + t % 3).checked_sub(pl).filter(|&x| x < w);
                    match (iy, ix) {
                        (Some(iy), Some(ix)) => at_pixel(iy, ix),
                        _ => pad.as_ptr(),
                    }
                })),
            };
            pixel(taps, at);
            at += 1;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{
        COLUMN_PAIRS, DepthwiseGeometry, Lanes, OutputQuant, PackedDepthwise3x3, ROW_MAJOR_PAIRS,
        for_each_pixel_ptr,
    };
    use crate::kernels::int8::requant::x86::{
        Lanes256, Lanes512, clamp_words_avx512, requantize_lanes_avx2, rescale_avx512, words_avx512,
    };
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// One input column's vectors for a block of 32 channels: kernel rows
    /// 0 and 1 interleaved (the [`COLUMN_PAIRS`] pairs), row 2 beside
    /// zeros; low and high halves.
    #[derive(Clone, Copy)]
    struct Column {
        pair: [__m512i; 2],
        single: [__m512i; 2],
    }

    impl Column {
        /// From the column's three rows of zero-extended channels.
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw")]
        fn new([a0, a1, a2]: [__m512i; 3]) -> Column {
            let zero = _mm512_setzero_si512();
            Column {
                pair: [_mm512_unpacklo_epi16(a0, a1), _mm512_unpackhi_epi16(a0, a1)],
                single: [
                    _mm512_unpacklo_epi16(a2, zero),
                    _mm512_unpackhi_epi16(a2, zero),
                ],
            }
        }
    }

    /// Slides along each output row: every input column is loaded,
    /// widened and interleaved once and serves the up to three output
    /// pixels that read it (one at stride 2), instead of once per tap.
    ///
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
        type L = Lanes<4>;
        let n = k.channels;
        let [h, w] = geom.input;
        let [sh, sw] = geom.stride;
        let [pt, pl] = geom.pad;
        let out_w = geom.output[1];
        let out = output.as_mut_ptr();
        let block_len = L::block_vectors(COLUMN_PAIRS.len()) * L::WIDTH;
        for (b, block) in k.blocks.chunks_exact(block_len).enumerate() {
            let c0 = b * L::BLOCK;
            let valid = (n - c0).min(L::BLOCK);
            let mask: __mmask32 = if valid == L::BLOCK {
                !0
            } else {
                (1 << valid) - 1
            };
            // SAFETY: `block` holds `block_len / 16` vectors of 16 lanes.
            let v =
                |i: usize| unsafe { _mm512_loadu_si512(block.as_ptr().add(i * L::WIDTH).cast()) };
            let pairs: [[__m512i; 2]; 3] = std::array::from_fn(|kx| [v(2 * kx), v(2 * kx + 1)]);
            let singles: [[__m512i; 2]; 3] =
                std::array::from_fn(|kx| [v(6 + 2 * kx), v(7 + 2 * kx)]);
            let col = [v(12), v(13)];
            let lanes = [0, 1].map(|h| Lanes512::new(v(14 + h), v(16 + h), v(18 + h)));
            let pad = k.pad_row[c0..].as_ptr();
            for (r, oy) in rows.clone().enumerate() {
                // Kernel row `ky` reads input row `oy sh + ky - pt`: where
                // its block starts and the step between columns, or the
                // zero-point row with step 0 outside the image.
                let kernel_rows: [(*const u8, usize); 3] = std::array::from_fn(|ky| {
                    match (oy * sh + ky).checked_sub(pt).filter(|&y| y < h) {
                        Some(y) => (input[y * w * n + c0..].as_ptr(), n),
                        None => (pad, 0),
                    }
                });
                // Input column `ix` (the zero-point row outside the image).
                let column = |ix: isize| {
                    let inside = usize::try_from(ix).ok().filter(|&x| x < w);
                    // SAFETY: inside the image the kernel row's pointer
                    // plus `x` columns of `n` bytes is pixel `x` of an
                    // input row, else the zero-point row (`padded >= n`
                    // bytes); the loads are masked to channels `c0 .. c0 +
                    // valid <= n`.
                    let load = |ky: usize| unsafe {
                        let (start, step) = kernel_rows[ky];
                        let at = inside.map_or(pad, |x| start.add(x * step));
                        _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(mask, at.cast()))
                    };
                    Column::new([load(0), load(1), load(2)])
                };
                let left = -(pl as isize);
                // Output pixels whose three columns are all inside the
                // image: their columns advance by plain pointer steps.
                let first_inside = pl.div_ceil(sw).min(out_w);
                let last_inside = (w + pl)
                    .checked_sub(3)
                    .map_or(0, |span| (span / sw + 1).min(out_w))
                    .max(first_inside);
                let pixel = |ox: usize, window: &[Column; 3]| {
                    let mut acc = col;
                    for (kx, c) in window.iter().enumerate() {
                        for (half, acc) in acc.iter_mut().enumerate() {
                            let p = _mm512_madd_epi16(c.pair[half], pairs[kx][half]);
                            let s = _mm512_madd_epi16(c.single[half], singles[kx][half]);
                            *acc = _mm512_add_epi32(*acc, _mm512_add_epi32(p, s));
                        }
                    }
                    let lo = rescale_avx512(&k.quant, &lanes[0], acc[0]);
                    let hi = rescale_avx512(&k.quant, &lanes[1], acc[1]);
                    // `packs` restores channel order: lane k holds
                    // channels 8k..8k+4 of `lo`, then 8k+4..8k+8 of `hi`.
                    let words = clamp_words_avx512(&k.quant, words_avx512(lo, hi));
                    let codes = _mm512_cvtepi16_epi8(words);
                    // SAFETY: pixel `ox` of output row `r` owns `output[(r
                    // out_w + ox) n ..][..n]` (the caller checked `output`
                    // holds every pixel of `rows`); the store is masked to
                    // channels `c0 .. c0 + valid`.
                    unsafe {
                        let at = out.add((r * out_w + ox) * n + c0);
                        _mm256_mask_storeu_epi8(at.cast(), mask, codes);
                    }
                };
                let columns = |ox: usize| {
                    let ix = (ox * sw) as isize + left;
                    [column(ix), column(ix + 1), column(ix + 2)]
                };
                for ox in 0..first_inside {
                    pixel(ox, &columns(ox));
                }
                if first_inside < last_inside {
                    let x0 = first_inside * sw - pl;
                    let mut window = columns(first_inside);
                    pixel(first_inside, &window);
                    // The last column of the next pixel, in each kernel row,
                    // advanced by `sw` columns per pixel.
                    let mut next: [*const u8; 3] = std::array::from_fn(|ky| {
                        kernel_rows[ky]
                            .0
                            .wrapping_add((x0 + 2 + sw) * kernel_rows[ky].1)
                    });
                    let advance: [usize; 3] = std::array::from_fn(|ky| sw * kernel_rows[ky].1);
                    let load = |at: *const u8| {
                        // SAFETY: pixels `first_inside .. last_inside`
                        // read only columns inside the image (or the
                        // zero-point row); the load is masked to channels
                        // `c0 .. c0 + valid <= n`.
                        unsafe { _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(mask, at.cast())) }
                    };
                    let fresh = |at: [*const u8; 3], back: usize| {
                        let step = |ky: usize| at[ky].wrapping_sub(back * kernel_rows[ky].1);
                        Column::new([load(step(0)), load(step(1)), load(step(2))])
                    };
                    for ox in first_inside + 1..last_inside {
                        window = match sw {
                            1 => [window[1], window[2], fresh(next, 0)],
                            2 => [window[2], fresh(next, 1), fresh(next, 0)],
                            _ => [fresh(next, 2), fresh(next, 1), fresh(next, 0)],
                        };
                        next = std::array::from_fn(|ky| next[ky].wrapping_add(advance[ky]));
                        pixel(ox, &window);
                    }
                }
                for ox in last_inside..out_w {
                    pixel(ox, &columns(ox));
                }
            }
        }
    }

    /// Blocks of 16 channels. The channels after the last whole block go
    /// through the same vector code, with their taps copied into and the
    /// result out of 16-byte stack buffers (the plain per-channel loop took
    /// 37 % of the 0.25_128 model's time in its 8-channel first depthwise
    /// layer).
    ///
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
        type L = Lanes<2>;
        let n = k.channels;
        let whole = n / L::BLOCK;
        let out = output.as_mut_ptr();
        let block_len = L::block_vectors(ROW_MAJOR_PAIRS.len()) * L::WIDTH;
        for (b, block) in k.blocks.chunks_exact(block_len).enumerate() {
            let c0 = b * L::BLOCK;
            let width = (n - c0).min(L::BLOCK);
            // SAFETY: `block` holds `block_len / 8` vectors of 8 lanes.
            let v =
                |i: usize| unsafe { _mm256_loadu_si256(block.as_ptr().add(i * L::WIDTH).cast()) };
            let lanes = [0, 1].map(|h| Lanes256::new(v(12 + h), v(14 + h), v(16 + h)));
            for_each_pixel_ptr(geom, input, &k.pad_row, rows.clone(), |taps, at| {
                let taps = taps.pointers(n);
                // SAFETY: every tap points at `n` readable bytes, of which
                // channels c0..c0 + width are read (all 16 of a whole
                // block; the tail's `width` are copied to the stack first);
                // pixel `at` of `rows` owns `output[at n .. (at + 1) n]`,
                // checked by the caller, and only its channels c0..c0 +
                // width are written.
                unsafe {
                    let bytes = if b < whole {
                        block16_avx2(&v, &lanes, &k.quant, |t| {
                            _mm_loadu_si128(taps[t].add(c0).cast())
                        })
                    } else if width == 8 {
                        // A tail of 8 channels (α 0.25's first layers):
                        // 8-byte loads, no copies.
                        block16_avx2(&v, &lanes, &k.quant, |t| {
                            _mm_loadl_epi64(taps[t].add(c0).cast())
                        })
                    } else {
                        let mut copies = [[0u8; 16]; 9];
                        for (copy, tap) in copies.iter_mut().zip(taps) {
                            std::ptr::copy_nonoverlapping(tap.add(c0), copy.as_mut_ptr(), width);
                        }
                        block16_avx2(&v, &lanes, &k.quant, |t| {
                            _mm_loadu_si128(copies[t].as_ptr().cast())
                        })
                    };
                    if b < whole {
                        _mm_storeu_si128(out.add(at * n + c0).cast(), bytes);
                    } else if width == 8 {
                        _mm_storel_epi64(out.add(at * n + c0).cast(), bytes);
                    } else {
                        let mut result = [0u8; 16];
                        _mm_storeu_si128(result.as_mut_ptr().cast(), bytes);
                        std::ptr::copy_nonoverlapping(result.as_ptr(), out.add(at * n + c0), width);
                    }
                }
            });
        }
    }

    /// One pixel's 16 channels of a block: `v(i)` is the block's packed
    /// vector `i`, `tap(t)` loads the 16 input bytes of tap `t`.
    ///
    /// # Safety
    /// AVX2 available; `tap(t)` for `t < 9` must be sound to call.
    #[inline(always)]
    unsafe fn block16_avx2(
        v: &impl Fn(usize) -> __m256i,
        lanes: &[Lanes256; 2],
        quant: &OutputQuant,
        tap: impl Fn(usize) -> __m128i,
    ) -> __m128i {
        // SAFETY: AVX2 is available (the caller's contract).
        unsafe {
            let x = |t: usize| _mm256_cvtepu8_epi16(tap(t));
            let (mut lo, mut hi) = (v(10), v(11));
            for p in 0..5 {
                let a = x(2 * p);
                let b = if p < 4 {
                    x(2 * p + 1)
                } else {
                    _mm256_setzero_si256()
                };
                let pair_lo = _mm256_unpacklo_epi16(a, b);
                let pair_hi = _mm256_unpackhi_epi16(a, b);
                lo = _mm256_add_epi32(lo, _mm256_madd_epi16(pair_lo, v(2 * p)));
                hi = _mm256_add_epi32(hi, _mm256_madd_epi16(pair_hi, v(2 * p + 1)));
            }
            let lo = requantize_lanes_avx2(quant, &lanes[0], lo);
            let hi = requantize_lanes_avx2(quant, &lanes[1], hi);
            // Words in channel order per 128-bit lane, then bytes;
            // quadwords 0 and 2 hold channels 0..8 and 8..16.
            let words = _mm256_packs_epi32(lo, hi);
            let bytes = _mm256_permute4x64_epi64(_mm256_packus_epi16(words, words), 0b1000);
            _mm256_castsi256_si128(bytes)
        }
    }
}
