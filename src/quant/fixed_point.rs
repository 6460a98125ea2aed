//! The integer arithmetic of TFLite's uint8 kernels (gemmlowp's
//! `fixedpoint.h` and TFLite's `quantization_util` / `common`), bit for bit.
//!
//! A real multiplier `M` (for a convolution `input_scale * filter_scale /
//! output_scale`) is stored as a Q0.31 significand `m` in `[2^30, 2^31)` and
//! a power-of-two exponent: `M ≈ m / 2^31 * 2^shift`. Rescaling an int32
//! accumulator is then integer-only.
//!
//! # Which rounding TFLite's reference kernels use
//!
//! TFLite has two forms of `MultiplyByQuantizedMultiplier`, chosen at build
//! time by `TFLITE_SINGLE_ROUNDING`:
//! * double rounding, the default when the macro is not set: the high
//!   multiply `SaturatingRoundingDoublingHighMul(x * 2^left, m)` rounds
//!   once (halves up), then `RoundingDivideByPOT(.., right)` rounds again
//!   (halves away from zero);
//! * single rounding: `(x * m + 2^(30 - shift)) >> (31 - shift)` in 64 bits.
//!
//! LiteRT 2.x's reference uint8 `Conv`, `DepthwiseConv` (its
//! `kAwayFromZero` output rounding is this same call) and `FullyConnected`
//! all requantize through `MultiplyByQuantizedMultiplier`, and the pip
//! builds of LiteRT do not set the macro: [`multiply_by_quantized_multiplier`]
//! is the double-rounding form. The two differ by one on some accumulators
//! (see the tests), often enough to tell: with single rounding, 986 of the
//! 65,536 outputs of the 0.25_128 MobileNet's first pointwise layer on
//! `skimage_chelsea` would differ from LiteRT's; with double rounding every
//! layer of the four official models is bit-identical.
//!
//! Operations that overflow in C++ (undefined behaviour there, never reached
//! by valid models) wrap here, so hostile parameters cannot panic.

/// `frexp`: `x = q * 2^e` with `|q|` in `[0.5, 1)`; zero and non-finite
/// values are returned as is with `e = 0`.
fn frexp(x: f64) -> (f64, i32) {
    if x == 0.0 || !x.is_finite() {
        return (x, 0);
    }
    let bits = x.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 {
        // Subnormal: scale into the normal range first (exact).
        let (q, e) = frexp(x * 2f64.powi(64));
        return (q, e - 64);
    }
    let q = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (q, biased - 1022)
}

/// TFLite's `QuantizeMultiplier`: the Q0.31 significand and the exponent of
/// `real`, so that `real ≈ multiplier / 2^31 * 2^shift`.
///
/// As TFLite: `frexp`, then `round(q * 2^31)` (halves away from zero); a
/// significand that rounds up to `2^31` is halved and the exponent raised;
/// exponents below -31 flush to `(0, 0)`, as does `real == 0`. Non-finite
/// `real` (which TFLite never checks) also gives `(0, 0)`.
///
/// ```
/// use mobilenet::quant::fixed_point::quantize_multiplier;
/// assert_eq!(quantize_multiplier(0.5), (1 << 30, 0));
/// assert_eq!(quantize_multiplier(1.0), (1 << 30, 1));
/// assert_eq!(quantize_multiplier(0.0), (0, 0));
/// ```
pub fn quantize_multiplier(real: f64) -> (i32, i32) {
    if real == 0.0 || !real.is_finite() {
        return (0, 0);
    }
    let (q, mut shift) = frexp(real);
    // |q| < 1, so |q * 2^31| <= 2^31: fits in i64 exactly.
    let mut q_fixed = (q * 2_147_483_648.0).round() as i64;
    if q_fixed == 1 << 31 {
        q_fixed /= 2;
        shift += 1;
    }
    if shift < -31 {
        return (0, 0);
    }
    // q_fixed is in [-2^31, 2^31 - 1] here.
    (q_fixed as i32, shift)
}

/// gemmlowp's `SaturatingRoundingDoublingHighMul` (ARM `VQRDMULH`):
/// `a * b / 2^31` rounded to nearest with halves rounded up (towards +∞:
/// 0.5 -> 1 but -0.5 -> 0), and the one overflowing case `i32::MIN *
/// i32::MIN` saturated to `i32::MAX`.
///
/// ```
/// use mobilenet::quant::fixed_point::saturating_rounding_doubling_high_mul as srdhm;
/// assert_eq!(srdhm(1 << 30, 1 << 30), 1 << 29); // 0.5 * 0.5 = 0.25
/// assert_eq!(srdhm(i32::MIN, i32::MIN), i32::MAX);
/// ```
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = i64::from(a) * i64::from(b);
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // Truncating division, as C++; the quotient fits in i32.
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// gemmlowp's `RoundingDivideByPOT`: `x / 2^exponent` rounded to nearest,
/// halves away from zero. `exponent` must be at most 31 (larger values are
/// treated as 31).
///
/// ```
/// use mobilenet::quant::fixed_point::rounding_divide_by_pot;
/// assert_eq!(rounding_divide_by_pot(5, 1), 3); // 2.5 -> 3
/// assert_eq!(rounding_divide_by_pot(-5, 1), -3); // -2.5 -> -3
/// assert_eq!(rounding_divide_by_pot(-6, 2), -2); // -1.5 -> -2
/// ```
pub fn rounding_divide_by_pot(x: i32, exponent: u32) -> i32 {
    let exponent = exponent.min(31);
    let mask = ((1i64 << exponent) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> exponent) + i32::from(remainder > threshold)
}

/// TFLite's double-rounding `MultiplyByQuantizedMultiplier(x, multiplier,
/// shift)`: `x * multiplier / 2^31 * 2^shift`, as the reference uint8
/// kernels requantize their accumulators (see the module docs for why this
/// form). A positive `shift` multiplies `x` by `2^shift` first (wrapping if
/// that overflows; `shift` is capped at 30), a negative one divides the high
/// product by `2^-shift` with rounding (capped at 31).
///
/// ```
/// use mobilenet::quant::fixed_point::{multiply_by_quantized_multiplier, quantize_multiplier};
/// let (m, shift) = quantize_multiplier(0.25);
/// assert_eq!(multiply_by_quantized_multiplier(1000, m, shift), 250);
/// assert_eq!(multiply_by_quantized_multiplier(-6, m, shift), -2); // -1.5 -> -2
/// ```
pub fn multiply_by_quantized_multiplier(x: i32, multiplier: i32, shift: i32) -> i32 {
    let left = shift.clamp(0, 30) as u32;
    let right = shift.saturating_neg().clamp(0, 31) as u32;
    rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(x.wrapping_mul(1 << left), multiplier),
        right,
    )
}

/// TFLite's `MultiplyByQuantizedMultiplierGreaterThanOne`: the high
/// multiply of `x * 2^left_shift`, without a rounding shift (softmax uses
/// it on input differences bounded so that the shift cannot overflow).
///
/// ```
/// use mobilenet::quant::fixed_point::multiply_by_quantized_multiplier_greater_than_one as mul;
/// // 3 * 2^4 * 0.75
/// assert_eq!(mul(3, 3 << 29, 4), 36);
/// ```
pub fn multiply_by_quantized_multiplier_greater_than_one(
    x: i32,
    multiplier: i32,
    left_shift: u32,
) -> i32 {
    saturating_rounding_doubling_high_mul(x.wrapping_mul(1i32.wrapping_shl(left_shift)), multiplier)
}

/// gemmlowp's `SaturatingRoundingMultiplyByPOT` for a positive exponent: `x
/// * 2^exponent`, saturated to the i32 range.
pub(crate) fn saturating_shift_left(x: i32, exponent: u32) -> i32 {
    let threshold = (1i32 << (31 - exponent)) - 1;
    if x > threshold {
        i32::MAX
    } else if x < -threshold {
        i32::MIN
    } else {
        x << exponent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TFLite's single-rounding form, for comparison only.
    fn single_rounding(x: i32, multiplier: i32, shift: i32) -> i32 {
        let total = 31 - shift;
        let round = 1i64 << (total - 1);
        ((i64::from(x) * i64::from(multiplier) + round) >> total) as i32
    }

    #[test]
    fn frexp_matches_the_c_definition() {
        assert_eq!(frexp(1.0), (0.5, 1));
        assert_eq!(frexp(0.75), (0.75, 0));
        assert_eq!(frexp(-3.0), (-0.75, 2));
        assert_eq!(frexp(f64::MIN_POSITIVE / 4.0), (0.5, -1023));
        assert_eq!(frexp(0.0), (0.0, 0));
    }

    #[test]
    fn quantize_multiplier_edges() {
        assert_eq!(quantize_multiplier(0.0), (0, 0));
        assert_eq!(quantize_multiplier(f64::NAN), (0, 0));
        assert_eq!(quantize_multiplier(0.5), (1 << 30, 0));
        assert_eq!(quantize_multiplier(2.0), (1 << 30, 2));
        // A significand that rounds to 2^31 becomes 2^30 with one more bit
        // of exponent.
        let just_below_one = 1.0 - 1e-12;
        assert_eq!(quantize_multiplier(just_below_one), (1 << 30, 1));
        // Largest significand that does not round up.
        let (m, s) = quantize_multiplier(1.0 - 2f64.powi(-31) * 0.75);
        assert_eq!((m, s), (i32::MAX, 0));
        // Exponents below -31 flush to zero; -31 itself survives.
        assert_eq!(quantize_multiplier(2f64.powi(-33)), (0, 0));
        assert_eq!(quantize_multiplier(2f64.powi(-32)), (1 << 30, -31));
        // A typical conv multiplier (0.0078125 * 0.02 / 0.0235).
        let (m, s) = quantize_multiplier(0.0078125 * 0.02 / 0.0235);
        assert!((1 << 30..=i32::MAX).contains(&m));
        let back = f64::from(m) / 2f64.powi(31) * 2f64.powi(s);
        assert!((back / (0.0078125 * 0.02 / 0.0235) - 1.0).abs() < 1e-9);
        // Negative values mirror positive ones.
        assert_eq!(quantize_multiplier(-0.5), (-(1 << 30), 0));
    }

    #[test]
    fn srdhm_rounds_and_saturates() {
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN),
            i32::MAX
        );
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, i32::MAX),
            -i32::MAX
        );
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MAX, i32::MAX),
            i32::MAX - 1
        );
        assert_eq!(saturating_rounding_doubling_high_mul(0, i32::MIN), 0);
        // Halves go up: 0.5 -> 1, -0.5 -> 0, -1.5 -> -1.
        assert_eq!(saturating_rounding_doubling_high_mul(1, 1 << 30), 1);
        assert_eq!(saturating_rounding_doubling_high_mul(-1, 1 << 30), 0);
        assert_eq!(saturating_rounding_doubling_high_mul(-3, 1 << 30), -1);
        // Just past a negative half rounds down.
        assert_eq!(saturating_rounding_doubling_high_mul(-1, (1 << 30) + 1), -1);
        // Just below a half rounds towards zero on both sides.
        assert_eq!(saturating_rounding_doubling_high_mul(1, (1 << 30) - 1), 0);
        assert_eq!(saturating_rounding_doubling_high_mul(-1, (1 << 30) - 1), 0);
    }

    #[test]
    fn rounding_divide_by_pot_edges() {
        assert_eq!(rounding_divide_by_pot(7, 0), 7);
        assert_eq!(rounding_divide_by_pot(-7, 0), -7);
        assert_eq!(rounding_divide_by_pot(3, 1), 2); // 1.5 -> 2
        assert_eq!(rounding_divide_by_pot(-3, 1), -2); // -1.5 -> -2
        assert_eq!(rounding_divide_by_pot(-1, 1), -1); // -0.5 -> -1
        assert_eq!(rounding_divide_by_pot(-1, 2), 0); // -0.25 -> 0
        assert_eq!(rounding_divide_by_pot(i32::MAX, 31), 1);
        assert_eq!(rounding_divide_by_pot(i32::MIN, 31), -1);
        assert_eq!(rounding_divide_by_pot(1 << 30, 31), 1); // exactly 0.5
        assert_eq!(rounding_divide_by_pot(-(1 << 30), 31), -1);
        assert_eq!(rounding_divide_by_pot((1 << 30) - 1, 31), 0);
        assert_eq!(rounding_divide_by_pot(i32::MIN, 40), -1); // capped at 31
        // Matches round-half-away-from-zero division on a range.
        for x in -300..300 {
            for e in 0..6u32 {
                let exact = f64::from(x) / f64::from(1 << e);
                let want = exact.abs().round().copysign(exact) as i32;
                assert_eq!(rounding_divide_by_pot(x, e), want, "{x} / 2^{e}");
            }
        }
    }

    #[test]
    fn multiply_by_quantized_multiplier_shifts() {
        let (m, s) = quantize_multiplier(0.5);
        assert_eq!(s, 0);
        // With shift 0 only the high multiply rounds (halves up).
        assert_eq!(multiply_by_quantized_multiplier(3, m, s), 2); // 1.5
        assert_eq!(multiply_by_quantized_multiplier(-3, m, s), -1); // -1.5
        // With a right shift the final rounding is away from zero.
        let (m, s) = quantize_multiplier(0.25);
        assert_eq!(multiply_by_quantized_multiplier(-6, m, s), -2); // -1.5
        assert_eq!(multiply_by_quantized_multiplier(6, m, s), 2);
        // Left shift: multiplier 3 = 0.75 * 2^2.
        let (m, s) = quantize_multiplier(3.0);
        assert_eq!(s, 2);
        assert_eq!(multiply_by_quantized_multiplier(100, m, s), 300);
        assert_eq!(multiply_by_quantized_multiplier(-100, m, s), -300);
        // Shift -31 (the smallest kept) and a large accumulator: the exact
        // 0.49999999977 becomes 2^30 after the high multiply, a half, and
        // then 1 (double rounding at work).
        let (m, s) = quantize_multiplier(2f64.powi(-32));
        assert_eq!(s, -31);
        assert_eq!(multiply_by_quantized_multiplier(i32::MAX, m, s), 1);
        assert_eq!(multiply_by_quantized_multiplier(i32::MAX / 2, m, s), 0);
        // Overflowing left shifts wrap instead of panicking.
        let _ = multiply_by_quantized_multiplier(i32::MAX, 1 << 30, 30);
        let _ = multiply_by_quantized_multiplier(i32::MIN, i32::MIN, i32::MIN);
        assert_eq!(
            multiply_by_quantized_multiplier_greater_than_one(-3, 1 << 30, 4),
            -24
        );
    }

    #[test]
    fn double_and_single_rounding_differ() {
        // Double rounding rounds the high product first: 1 * (2^30 + 1)
        // / 2^31 just exceeds 0.5 and becomes 1, then 1 / 2 = 0.5 -> 1.
        // The exact value 0.25000000023 rounds to 0 in one step.
        let (m, s) = (1 << 30, -1);
        assert_eq!(multiply_by_quantized_multiplier(1, m + 1, s), 1);
        assert_eq!(single_rounding(1, m + 1, s), 0);
        // Elsewhere they agree.
        let (m, s) = quantize_multiplier(0.0123);
        let mut differ = 0;
        for x in -100_000..100_000 {
            let a = multiply_by_quantized_multiplier(x, m, s);
            let b = single_rounding(x, m, s);
            assert!((a - b).abs() <= 1);
            differ += i32::from(a != b);
        }
        assert!(differ > 0, "some accumulators round differently");
    }

    #[test]
    fn saturating_shift_left_saturates() {
        assert_eq!(saturating_shift_left(3, 2), 12);
        assert_eq!(saturating_shift_left(-3, 2), -12);
        assert_eq!(saturating_shift_left(1 << 29, 2), i32::MAX);
        assert_eq!(saturating_shift_left(-(1 << 29), 2), i32::MIN);
        assert_eq!(
            saturating_shift_left((1 << 29) - 1, 2),
            ((1 << 29) - 1) << 2
        );
    }
}
