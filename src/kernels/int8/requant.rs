//! The requantizing epilogue of every accumulating uint8 kernel:
//! `clamp(MultiplyByQuantizedMultiplier(acc, m_c, shift_c) + zero_point)`
//! with a multiplier per output channel (per-tensor models repeat one).
//!
//! The scalar form is gemmlowp's double rounding: a rounding doubling high
//! multiply (halves up), then a rounding right shift (halves away from
//! zero). The vector forms compute the same bits: the high multiply's
//! "nudge, then truncate towards zero" equals `(a * b + 2^30) >> 31` with an
//! arithmetic (flooring) shift, which 64-bit lane products give directly.

use crate::error::{Error, Result};
use crate::kernels::int8::IntIsa;

/// Channels per padded group: every per-channel array is padded to a
/// multiple of this so vector epilogues can load whole registers.
pub const CHANNEL_PAD: usize = 16;

/// Per-channel requantization of int32 accumulators to clamped uint8
/// codes, its arrays padded to [`CHANNEL_PAD`] (padding repeats the last
/// channel's values, so padded lanes compute harmlessly).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputQuant {
    channels: usize,
    multiplier: Vec<i32>,
    /// `shift.clamp(0, 30)`: the left shift before the high multiply.
    left: Vec<i32>,
    /// `(-shift).clamp(0, 31)`: the rounding right shift after it.
    right: Vec<i32>,
    zero_point: i32,
    min: i32,
    max: i32,
    /// Whether some multiplier is `i32::MIN`, the one value whose high
    /// multiply can saturate (TFLite's multipliers never are).
    saturates: bool,
}

impl OutputQuant {
    /// The epilogue for `multipliers[c] / 2^31 * 2^shifts[c]` (TFLite's
    /// quantized multipliers), the output zero point and the clamp
    /// `[min, max]`.
    ///
    /// Fails with [`Error::Shape`] if the two lists differ in length or are
    /// empty, [`Error::InvalidConfig`] if the clamp is not within `[0, 255]`
    /// or empty or the zero point is outside it.
    pub fn new(
        multipliers: &[i32],
        shifts: &[i32],
        zero_point: i32,
        min: i32,
        max: i32,
    ) -> Result<OutputQuant> {
        if multipliers.is_empty() || multipliers.len() != shifts.len() {
            return Err(Error::Shape(format!(
                "requantization: {} multipliers and {} shifts",
                multipliers.len(),
                shifts.len()
            )));
        }
        if !(0 <= min && min <= max && max <= 255 && (0..=255).contains(&zero_point)) {
            return Err(Error::InvalidConfig(format!(
                "requantization clamp [{min}, {max}] with zero point {zero_point} is not within \
                 [0, 255]"
            )));
        }
        let channels = multipliers.len();
        let padded = channels.next_multiple_of(CHANNEL_PAD);
        let pad = |v: Vec<i32>| -> Vec<i32> {
            let last = v[v.len() - 1];
            let mut v = v;
            v.resize(padded, last);
            v
        };
        Ok(OutputQuant {
            channels,
            multiplier: pad(multipliers.to_vec()),
            left: pad(shifts.iter().map(|&s| s.clamp(0, 30)).collect()),
            right: pad(shifts
                .iter()
                .map(|&s| s.saturating_neg().clamp(0, 31))
                .collect()),
            zero_point,
            min,
            max,
            saturates: multipliers.contains(&i32::MIN),
        })
    }

    /// The same multiplier and shift for `channels` channels.
    pub fn per_tensor(
        channels: usize,
        multiplier: i32,
        shift: i32,
        zero_point: i32,
        min: i32,
        max: i32,
    ) -> Result<OutputQuant> {
        OutputQuant::new(
            &vec![multiplier; channels],
            &vec![shift; channels],
            zero_point,
            min,
            max,
        )
    }

    /// Output channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Channel `c`'s `(multiplier, left shift, right shift)`, for kernels
    /// that lay the epilogue out in their own lane order.
    pub(crate) fn channel_params(&self, c: usize) -> [i32; 3] {
        [self.multiplier[c], self.left[c], self.right[c]]
    }

    /// The code of accumulator `acc` of channel `c` (scalar reference).
    #[inline]
    pub fn apply(&self, acc: i32, c: usize) -> u8 {
        let v =
            multiply_by_quantized_multiplier(acc, self.multiplier[c], self.left[c], self.right[c])
                .wrapping_add(self.zero_point);
        v.clamp(self.min, self.max) as u8
    }

    /// Requantizes one row of [`OutputQuant::channels`] accumulators with
    /// `isa`'s vector epilogue (so tests can compare every lane with
    /// [`OutputQuant::apply`]).
    ///
    /// Fails with [`Error::Shape`] if a length differs from the channel
    /// count, [`Error::InvalidConfig`] if `isa` is not supported here.
    pub fn apply_row(&self, isa: IntIsa, acc: &[i32], out: &mut [u8]) -> Result<()> {
        if acc.len() != self.channels || out.len() != self.channels {
            return Err(Error::Shape(format!(
                "requantize row: {} accumulators, {} outputs, {} channels",
                acc.len(),
                out.len(),
                self.channels
            )));
        }
        if !isa.is_supported() {
            return Err(Error::InvalidConfig(format!("{isa} is not supported here")));
        }
        let n = self.channels;
        match isa {
            #[cfg(target_arch = "x86_64")]
            IntIsa::Avx512Vnni => {
                // 64 channels at a time, as the GEMM epilogue stores them.
                let mut c = 0;
                while c < n {
                    let take = (n - c).min(64);
                    let mut lanes = [0i32; 64];
                    lanes[..take].copy_from_slice(&acc[c..c + take]);
                    let mut bytes = [0u8; 64];
                    // SAFETY: AVX-512 F/BW checked above; `from + 16` is
                    // within the padded per-channel arrays (vectors past
                    // the last channel reuse channel `c`'s parameters);
                    // `lanes` and `bytes` hold 64 elements.
                    unsafe {
                        use std::arch::x86_64::*;
                        let rescaled: [__m512i; 4] = std::array::from_fn(|v| {
                            let from = if c + 16 * v < n { c + 16 * v } else { c };
                            let params = x86::Lanes512::load(self, from);
                            let acc = _mm512_loadu_si512(lanes.as_ptr().add(16 * v).cast());
                            x86::rescale_avx512(self, &params, acc)
                        });
                        let codes = x86::codes_avx512(self, rescaled);
                        _mm512_storeu_si512(bytes.as_mut_ptr().cast(), codes);
                    }
                    out[c..c + take].copy_from_slice(&bytes[..take]);
                    c += take;
                }
            }
            #[cfg(target_arch = "x86_64")]
            IntIsa::Avx2 => {
                let mut c = 0;
                while c < n {
                    let take = (n - c).min(8);
                    let mut lanes = [0i32; 8];
                    lanes[..take].copy_from_slice(&acc[c..c + take]);
                    let mut codes = [0i32; 8];
                    // SAFETY: AVX2 checked above; `c + 8` is within the
                    // padded arrays; `lanes` and `codes` hold 8 elements.
                    unsafe {
                        use std::arch::x86_64::*;
                        let v = _mm256_loadu_si256(lanes.as_ptr().cast());
                        let r = x86::requantize_avx2(self, c, v);
                        _mm256_storeu_si256(codes.as_mut_ptr().cast(), r);
                    }
                    for (o, &v) in out[c..c + take].iter_mut().zip(&codes) {
                        *o = v as u8;
                    }
                    c += take;
                }
            }
            _ => {
                for (c, (o, &a)) in out.iter_mut().zip(acc).enumerate() {
                    *o = self.apply(a, c);
                }
            }
        }
        Ok(())
    }
}

/// gemmlowp's `SaturatingRoundingDoublingHighMul`: `a * b / 2^31`, halves
/// rounded up, `MIN * MIN` saturated.
#[inline]
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    // Nudge-and-truncate equals add-half-and-floor (see the module docs).
    ((i64::from(a) * i64::from(b) + (1 << 30)) >> 31) as i32
}

/// gemmlowp's `RoundingDivideByPOT` for `exponent` in `[0, 31]`: halves
/// away from zero.
#[inline]
pub fn rounding_divide_by_pot(x: i32, exponent: i32) -> i32 {
    let mask = 1i32.wrapping_shl(exponent as u32).wrapping_sub(1);
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> exponent) + i32::from(remainder > threshold)
}

/// TFLite's double-rounding `MultiplyByQuantizedMultiplier` with the shift
/// already split into `left` (`0..=30`) and `right` (`0..=31`).
#[inline]
pub fn multiply_by_quantized_multiplier(x: i32, multiplier: i32, left: i32, right: i32) -> i32 {
    rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(x.wrapping_shl(left as u32), multiplier),
        right,
    )
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    //! The epilogue on 8 (AVX2) or 16 (AVX-512) channels at once.
    use super::OutputQuant;
    use std::arch::x86_64::*;

    /// One vector's per-lane requantization parameters, with the rounding
    /// shift's mask and half precomputed: kernels keep them in registers
    /// across a tile's rows or a depthwise block's pixels.
    #[derive(Clone, Copy)]
    pub(crate) struct Lanes512 {
        multiplier: __m512i,
        /// The odd lanes' multipliers moved to the even lanes.
        multiplier_odd: __m512i,
        left: __m512i,
        right: __m512i,
        /// `2^right - 1`.
        mask: __m512i,
        /// `mask / 2`.
        half: __m512i,
    }

    impl Lanes512 {
        /// The parameters of channels `c..c + 16`.
        ///
        /// # Safety
        /// AVX-512F must be available and `c + 16` within the padded arrays.
        #[inline]
        #[target_feature(enable = "avx512f")]
        pub(crate) unsafe fn load(q: &OutputQuant, c: usize) -> Lanes512 {
            debug_assert!(c + 16 <= q.multiplier.len());
            // SAFETY: the caller guarantees `c + 16` is within the arrays.
            unsafe {
                Lanes512::new(
                    _mm512_loadu_si512(q.multiplier.as_ptr().add(c).cast()),
                    _mm512_loadu_si512(q.left.as_ptr().add(c).cast()),
                    _mm512_loadu_si512(q.right.as_ptr().add(c).cast()),
                )
            }
        }

        /// From the lanes of [`OutputQuant::channel_params`], in any order.
        #[inline]
        #[target_feature(enable = "avx512f")]
        pub(crate) fn new(multiplier: __m512i, left: __m512i, right: __m512i) -> Lanes512 {
            let one = _mm512_set1_epi32(1);
            let mask = _mm512_sub_epi32(_mm512_sllv_epi32(one, right), one);
            Lanes512 {
                multiplier,
                multiplier_odd: _mm512_srli_epi64(multiplier, 32),
                left,
                right,
                mask,
                half: _mm512_srai_epi32(mask, 1),
            }
        }
    }

    /// `MultiplyByQuantizedMultiplier` of 16 accumulators with per-lane
    /// parameters `lanes`, plus the zero point (wrapping, as the scalar
    /// form): the value before the clamp, which [`codes_avx512`] or
    /// [`clamp_words_avx512`] apply.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn rescale_avx512(q: &OutputQuant, lanes: &Lanes512, acc: __m512i) -> __m512i {
        let m = lanes.multiplier;
        let x = _mm512_sllv_epi32(acc, lanes.left);
        let half = _mm512_set1_epi64(1 << 30);
        let even = _mm512_add_epi64(_mm512_mul_epi32(x, m), half);
        let odd = _mm512_add_epi64(
            _mm512_mul_epi32(_mm512_srli_epi64(x, 32), lanes.multiplier_odd),
            half,
        );
        // Bits 31..62 of each product into its 32-bit lane.
        let mut high = _mm512_mask_blend_epi32(
            0xAAAA,
            _mm512_srli_epi64(even, 31),
            _mm512_slli_epi64(odd, 1),
        );
        if q.saturates {
            let min = _mm512_set1_epi32(i32::MIN);
            let saturate = _mm512_cmpeq_epi32_mask(x, min) & _mm512_cmpeq_epi32_mask(m, min);
            high = _mm512_mask_mov_epi32(high, saturate, _mm512_set1_epi32(i32::MAX));
        }
        let remainder = _mm512_and_si512(high, lanes.mask);
        let threshold = _mm512_add_epi32(lanes.half, _mm512_srli_epi32(high, 31));
        let up = _mm512_cmpgt_epi32_mask(remainder, threshold);
        let shifted = _mm512_srav_epi32(high, lanes.right);
        let rounded = _mm512_mask_add_epi32(shifted, up, shifted, _mm512_set1_epi32(1));
        _mm512_add_epi32(rounded, _mm512_set1_epi32(q.zero_point))
    }

    /// Two rescaled vectors as 16-bit lanes, four of `a` then four of `b`
    /// in each 128-bit lane (`packs_epi32` order). Saturating to 16 bits
    /// keeps every value's final clamp, which lies within `[0, 255]`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) fn words_avx512(a: __m512i, b: __m512i) -> __m512i {
        _mm512_packs_epi32(a, b)
    }

    /// [`words_avx512`] clamped to the output range.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) fn clamp_words_avx512(q: &OutputQuant, words: __m512i) -> __m512i {
        _mm512_min_epi16(
            _mm512_max_epi16(words, _mm512_set1_epi16(q.min as i16)),
            _mm512_set1_epi16(q.max as i16),
        )
    }

    /// The 64 codes of four rescaled vectors, in order: one pack to words,
    /// one to bytes, one permute back from the packs' lane interleave and
    /// a byte clamp, instead of a clamp and narrowing per vector.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) fn codes_avx512(q: &OutputQuant, rescaled: [__m512i; 4]) -> __m512i {
        let [a, b, c, d] = rescaled;
        // 128-bit lane `k` now holds dwords `a_k, b_k, c_k, d_k`; output
        // dword `i` is vector `i / 4`'s lane `k = i % 4`.
        let bytes = _mm512_packus_epi16(words_avx512(a, b), words_avx512(c, d));
        let order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
        let ordered = _mm512_permutexvar_epi32(order, bytes);
        _mm512_min_epu8(
            _mm512_max_epu8(ordered, _mm512_set1_epi8(q.min as i8)),
            _mm512_set1_epi8(q.max as i8),
        )
    }

    /// Codes (as i32 lanes, already clamped) of 8 accumulators of channels
    /// `c..c + 8`.
    ///
    /// # Safety
    /// AVX2 must be available and `c + 8` within the padded arrays.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn requantize_avx2(q: &OutputQuant, c: usize, acc: __m256i) -> __m256i {
        // SAFETY: the caller's guarantee.
        let lanes = unsafe { Lanes256::load(q, c) };
        requantize_lanes_avx2(q, &lanes, acc)
    }

    /// [`Lanes512`] for 8 lanes.
    #[derive(Clone, Copy)]
    pub(crate) struct Lanes256 {
        multiplier: __m256i,
        left: __m256i,
        right: __m256i,
        mask: __m256i,
        half: __m256i,
    }

    impl Lanes256 {
        /// The parameters of channels `c..c + 8`.
        ///
        /// # Safety
        /// AVX2 must be available and `c + 8` within the padded arrays.
        #[inline]
        #[target_feature(enable = "avx2")]
        pub(crate) unsafe fn load(q: &OutputQuant, c: usize) -> Lanes256 {
            debug_assert!(c + 8 <= q.multiplier.len());
            // SAFETY: the caller guarantees `c + 8` is within the arrays.
            unsafe {
                Lanes256::new(
                    _mm256_loadu_si256(q.multiplier.as_ptr().add(c).cast()),
                    _mm256_loadu_si256(q.left.as_ptr().add(c).cast()),
                    _mm256_loadu_si256(q.right.as_ptr().add(c).cast()),
                )
            }
        }

        /// [`Lanes512::new`] for 8 lanes.
        #[inline]
        #[target_feature(enable = "avx2")]
        pub(crate) fn new(multiplier: __m256i, left: __m256i, right: __m256i) -> Lanes256 {
            let one = _mm256_set1_epi32(1);
            let mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, right), one);
            Lanes256 {
                multiplier,
                left,
                right,
                mask,
                half: _mm256_srai_epi32(mask, 1),
            }
        }
    }

    /// [`requantize_lanes_avx512`] on 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn requantize_lanes_avx2(
        q: &OutputQuant,
        lanes: &Lanes256,
        acc: __m256i,
    ) -> __m256i {
        let m = lanes.multiplier;
        let x = _mm256_sllv_epi32(acc, lanes.left);
        let half = _mm256_set1_epi64x(1 << 30);
        let even = _mm256_add_epi64(_mm256_mul_epi32(x, m), half);
        let odd = _mm256_add_epi64(
            _mm256_mul_epi32(_mm256_srli_epi64(x, 32), _mm256_srli_epi64(m, 32)),
            half,
        );
        let mut high = _mm256_blend_epi32(
            _mm256_srli_epi64(even, 31),
            _mm256_slli_epi64(odd, 1),
            0b1010_1010,
        );
        if q.saturates {
            let min = _mm256_set1_epi32(i32::MIN);
            let saturate = _mm256_and_si256(_mm256_cmpeq_epi32(x, min), _mm256_cmpeq_epi32(m, min));
            high = _mm256_blendv_epi8(high, _mm256_set1_epi32(i32::MAX), saturate);
        }
        let remainder = _mm256_and_si256(high, lanes.mask);
        let threshold = _mm256_add_epi32(lanes.half, _mm256_srli_epi32(high, 31));
        // `up` is -1 where the remainder passes the threshold.
        let up = _mm256_cmpgt_epi32(remainder, threshold);
        let rounded = _mm256_sub_epi32(_mm256_srav_epi32(high, lanes.right), up);
        let v = _mm256_add_epi32(rounded, _mm256_set1_epi32(q.zero_point));
        _mm256_min_epi32(
            _mm256_max_epi32(v, _mm256_set1_epi32(q.min)),
            _mm256_set1_epi32(q.max),
        )
    }
}
