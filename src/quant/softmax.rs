//! uint8 softmax as TFLite's reference kernel (`SoftmaxPrepare<kReference>`
//! and `reference_ops::Softmax`), which works in gemmlowp fixed point: no
//! float after preparation.
//!
//! Preparation turns `beta * input_scale` into a Q5.26 input multiplier:
//! `PreprocessSoftmaxScaling` takes `min(beta * input_scale * 2^26, 2^31 -
//! 1)` through `QuantizeMultiplierGreaterThanOne` (`multiplier`,
//! `left_shift`), and `diff_min = -floor(31 * 2^26 / 2^left_shift)`
//! (`CalculateInputRadius(5, left_shift)`) bounds the differences that are
//! evaluated at all.
//!
//! Per row: `diff = q - max(q)`; for `diff >= diff_min` the scaled
//! difference `diff * 2^left_shift * multiplier / 2^31` is a Q5.26 value,
//! `exp` of it is computed in Q0.31 by gemmlowp's `exp_on_negative_values`,
//! summed in Q12.19, inverted with `one_over_one_plus_x_for_x_in_0_1`, and
//! each output is `exp * (1 / sum)` rounded to units of 1/256.

use super::fixed_point::{
    multiply_by_quantized_multiplier_greater_than_one, quantize_multiplier, rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul as mul, saturating_shift_left,
};
use super::requantize::QuantParams;
use crate::error::{Error, Result};

/// Integer bits of the scaled input differences (Q5.26).
const SCALED_DIFF_INTEGER_BITS: u32 = 5;
/// Integer bits of the sum of exponentials (Q12.19).
const ACCUMULATION_INTEGER_BITS: u32 = 12;

/// The output quantization TFLite's uint8 softmax produces: 1/256, zero
/// point 0.
pub const SOFTMAX_OUTPUT: QuantParams = QuantParams {
    scale: 1.0 / 256.0,
    zero_point: 0,
};

/// A prepared uint8 softmax over the last dimension.
///
/// ```
/// use mobilenet::quant::QuantParams;
/// use mobilenet::quant::softmax::Softmax;
/// let input = QuantParams::new(0.1, 0)?;
/// let softmax = Softmax::new(1.0, input, 2)?;
/// let mut out = [0u8; 2];
/// softmax.run(&[50, 50], &mut out)?; // equal logits: 1/2 each
/// assert_eq!(out, [128, 128]);
/// # Ok::<(), mobilenet::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Softmax {
    depth: usize,
    multiplier: i32,
    left_shift: u32,
    diff_min: i32,
    /// `exp_of_diff(-d)` for every code difference `d` in `0..=255`, or
    /// -1 where `-d < diff_min` (such values get probability 0): uint8
    /// inputs have only 256 differences, so the fixed-point exponential
    /// is computed once per plan rather than twice per value.
    exp_table: Vec<i32>,
}

impl Softmax {
    /// Prepares a softmax of rows of `depth` codes quantized with `input`,
    /// as TFLite's `SoftmaxPrepare` for its reference kernel.
    ///
    /// Fails with [`Error::InvalidConfig`] if `depth` is 0 or `beta *
    /// input_scale * 2^26` is not above 1 (TFLite aborts on these: its
    /// `QuantizeMultiplierGreaterThanOne` requires it).
    pub fn new(beta: f32, input: QuantParams, depth: usize) -> Result<Softmax> {
        if depth == 0 {
            return Err(Error::InvalidConfig("softmax over 0 values".into()));
        }
        let scaled = f64::from(beta)
            * f64::from(input.scale)
            * f64::from(1u32 << (31 - SCALED_DIFF_INTEGER_BITS));
        // As C++'s std::min, NaN stays NaN (and is refused below).
        let real = if scaled.is_nan() {
            scaled
        } else {
            scaled.min(2_147_483_647.0)
        };
        if real.is_nan() || real <= 1.0 {
            return Err(Error::InvalidConfig(format!(
                "softmax beta {beta} times input scale {} is too small (or not a number)",
                input.scale
            )));
        }
        let (multiplier, shift) = quantize_multiplier(real);
        // real > 1 gives shift >= 1; real < 2^31 gives shift <= 31.
        let left_shift = u32::try_from(shift).unwrap_or(0).min(31);
        let radius = f64::from((1u32 << SCALED_DIFF_INTEGER_BITS) - 1)
            * f64::from(1u32 << (31 - SCALED_DIFF_INTEGER_BITS))
            / (1u64 << left_shift) as f64;
        let mut softmax = Softmax {
            depth,
            multiplier,
            left_shift,
            diff_min: -(radius.floor() as i32),
            exp_table: Vec::new(),
        };
        softmax.exp_table = (0..=255)
            .map(|d: i32| {
                if -d >= softmax.diff_min {
                    softmax.exp_of_diff(-d)
                } else {
                    -1
                }
            })
            .collect();
        Ok(softmax)
    }

    /// `(input_multiplier, input_left_shift, diff_min)` as TFLite's
    /// `SoftmaxParams`.
    pub fn params(&self) -> (i32, u32, i32) {
        (self.multiplier, self.left_shift, self.diff_min)
    }

    /// The number of values per row.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// `exp(diff * beta * input_scale)` in Q0.31, for `diff >= diff_min`.
    fn exp_of_diff(&self, diff: i32) -> i32 {
        let scaled = multiply_by_quantized_multiplier_greater_than_one(
            diff,
            self.multiplier,
            self.left_shift,
        );
        exp_on_negative_values_q5_26(scaled)
    }

    /// Runs on rows of [`Softmax::depth`] codes; `output` is quantized as
    /// [`SOFTMAX_OUTPUT`].
    ///
    /// Fails with [`Error::Shape`] if `input` is not whole rows or `output`
    /// differs in length.
    pub fn run(&self, input: &[u8], output: &mut [u8]) -> Result<()> {
        if !input.len().is_multiple_of(self.depth) || output.len() != input.len() {
            return Err(Error::Shape(format!(
                "softmax: input of {} and output of {} bytes for rows of {}",
                input.len(),
                output.len(),
                self.depth
            )));
        }
        for (row, out) in input
            .chunks_exact(self.depth)
            .zip(output.chunks_exact_mut(self.depth))
        {
            let max = row.iter().copied().max().unwrap_or(0);
            let exp = |q: u8| self.exp_table[usize::from(max - q)];
            let mut sum = 0i32; // Q12.19
            for &q in row {
                let e = exp(q);
                if e >= 0 {
                    sum = sum.wrapping_add(rounding_divide_by_pot(e, ACCUMULATION_INTEGER_BITS));
                }
            }
            let (scale, bits_over_unit) = reciprocal(sum, ACCUMULATION_INTEGER_BITS);
            // Outputs are units of 2^-8 of a Q0.31 value.
            let exponent = bits_over_unit + 31 - 8;
            for (dst, &q) in out.iter_mut().zip(row) {
                let e = exp(q);
                *dst = if e >= 0 {
                    let product = mul(scale, e);
                    let v = match u32::try_from(exponent) {
                        Ok(e) if e <= 31 => rounding_divide_by_pot(product, e),
                        // Beyond 31 bits every Q0.31 value rounds to 0.
                        Ok(_) => 0,
                        Err(_) => product,
                    };
                    v.clamp(0, 255) as u8
                } else {
                    0
                };
            }
        }
        Ok(())
    }
}

/// TFLite's `GetReciprocal`: `1 / x` of a positive value with
/// `integer_bits`, as a Q0.31 value in `[0.5, 1]` and the number of bits
/// by which `x` exceeds one (the caller shifts by it).
fn reciprocal(x: i32, integer_bits: u32) -> (i32, i32) {
    let headroom_plus_one = (x as u32).leading_zeros();
    let bits_over_unit = integer_bits as i32 - headroom_plus_one as i32;
    let shifted_minus_one = (x as u32)
        .checked_shl(headroom_plus_one)
        .unwrap_or(0)
        .wrapping_sub(1 << 31) as i32;
    (
        one_over_one_plus_x_for_x_in_0_1(shifted_minus_one),
        bits_over_unit,
    )
}

/// gemmlowp's `RoundingHalfSum`: `(a + b) / 2`, halves away from zero.
fn rounding_half_sum(a: i32, b: i32) -> i32 {
    let sum = i64::from(a) + i64::from(b);
    let sign = if sum >= 0 { 1 } else { -1 };
    ((sum + sign) / 2) as i32
}

/// gemmlowp's `one_over_one_plus_x_for_x_in_0_1`: `1 / (1 + a)` for a
/// Q0.31 `a` in `[0, 1)`, by three Newton-Raphson steps in Q2.29, returned
/// in Q0.31.
fn one_over_one_plus_x_for_x_in_0_1(a: i32) -> i32 {
    const Q2_ONE: i32 = 1 << 29;
    const C48_OVER_17: i32 = 1_515_870_810; // Q2.29
    const NEG_C32_OVER_17: i32 = -1_010_580_540; // Q2.29
    let half_denominator = rounding_half_sum(a, i32::MAX); // Q0.31
    let mut x = C48_OVER_17.wrapping_add(mul(half_denominator, NEG_C32_OVER_17));
    for _ in 0..3 {
        let one_minus = Q2_ONE.wrapping_sub(mul(half_denominator, x));
        // Q2.29 * Q2.29 is Q4.27; back to Q2.29 with a saturating shift.
        x = x.wrapping_add(saturating_shift_left(mul(x, one_minus), 2));
    }
    // x / 2 as Q1.30 (the same raw value), then Q1.30 -> Q0.31.
    saturating_shift_left(x, 1)
}

/// gemmlowp's `exp_on_interval_between_negative_one_quarter_and_0_excl`:
/// `exp(a)` for a Q0.31 `a` in `[-1/4, 0)`, by a Taylor expansion around
/// -1/8.
fn exp_on_interval_between_negative_one_quarter_and_0_excl(a: i32) -> i32 {
    const EXP_MINUS_ONE_EIGHTH: i32 = 1_895_147_668; // Q0.31
    const ONE_THIRD: i32 = 715_827_883; // Q0.31
    let x = a.wrapping_add(1 << 28);
    let x2 = mul(x, x);
    let x3 = mul(x2, x);
    let x4 = mul(x2, x2);
    let x4_over_4 = rounding_divide_by_pot(x4, 2);
    let poly = rounding_divide_by_pot(
        mul(x4_over_4.wrapping_add(x3), ONE_THIRD).wrapping_add(x2),
        1,
    );
    EXP_MINUS_ONE_EIGHTH.wrapping_add(mul(EXP_MINUS_ONE_EIGHTH, x.wrapping_add(poly)))
}

/// gemmlowp's `exp_on_negative_values` for a Q5.26 input `a <= 0`: `exp(a)`
/// in Q0.31, the interval `[-1/4, 0)` by Taylor series, each higher bit of
/// `-a` by a constant factor `exp(-2^k)`.
fn exp_on_negative_values_q5_26(a: i32) -> i32 {
    const FRACTIONAL_BITS: u32 = 31 - SCALED_DIFF_INTEGER_BITS;
    const ONE_QUARTER: i32 = 1 << (FRACTIONAL_BITS - 2);
    // exp(-2^k) in Q0.31 for k = -2..=4.
    const FACTORS: [(i32, i32); 7] = [
        (-2, 1_672_461_947),
        (-1, 1_302_514_674),
        (0, 790_015_084),
        (1, 290_630_308),
        (2, 39_332_535),
        (3, 720_401),
        (4, 242),
    ];
    let mask = ONE_QUARTER - 1;
    let a_mod_quarter_minus_one_quarter = (a & mask).wrapping_sub(ONE_QUARTER);
    // Q5.26 -> Q0.31 (saturating shift by 5).
    let mut result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        saturating_shift_left(a_mod_quarter_minus_one_quarter, SCALED_DIFF_INTEGER_BITS),
    );
    let remainder = a_mod_quarter_minus_one_quarter.wrapping_sub(a);
    for (exponent, factor) in FACTORS {
        let bit = (FRACTIONAL_BITS as i32 + exponent) as u32;
        if remainder & (1 << bit) != 0 {
            result = mul(result, factor);
        }
    }
    // Five integer bits: no clamp below -32 is needed (gemmlowp only adds
    // one for more integer bits).
    if a == 0 { i32::MAX } else { result }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q5_26(x: f64) -> i32 {
        (x * f64::from(1 << 26)).round() as i32
    }

    fn from_q0_31(x: i32) -> f64 {
        f64::from(x) / 2f64.powi(31)
    }

    #[test]
    fn fixed_point_exp_is_close_to_exp() {
        for i in 0..=640 {
            let x = -f64::from(i) / 20.0; // 0 .. -32
            let got = from_q0_31(exp_on_negative_values_q5_26(q5_26(x)));
            // gemmlowp's 4th-order Taylor step is good to ~3e-7.
            assert!((got - x.exp()).abs() < 5e-7, "exp({x}) = {got}");
        }
        assert_eq!(exp_on_negative_values_q5_26(0), i32::MAX);
    }

    #[test]
    fn reciprocal_is_close_to_one_over_x() {
        for i in 1..2000 {
            let x = f64::from(i) / 7.0; // Q12.19 values 0.14 .. 285
            let raw = (x * f64::from(1 << 19)).round() as i32;
            let (scale, bits) = reciprocal(raw, ACCUMULATION_INTEGER_BITS);
            let got = from_q0_31(scale) / 2f64.powi(bits);
            let exact = 1.0 / (f64::from(raw) / f64::from(1 << 19));
            assert!((got / exact - 1.0).abs() < 1e-7, "1/{x}: {got} vs {exact}");
        }
    }

    #[test]
    fn prepare_matches_tflite() {
        // The 1.0_224 head: logits scale 0.16609922, beta 1.
        let p = QuantParams::new(0.166_099_22, 66).unwrap();
        let s = Softmax::new(1.0, p, 1001).unwrap();
        let (m, shift, diff_min) = s.params();
        assert_eq!(shift, 24);
        assert!((1 << 30..=i32::MAX).contains(&m));
        assert_eq!(
            diff_min,
            -((31.0 * 2f64.powi(26) / 2f64.powi(24)).floor() as i32)
        );
        // Too small a product of beta and scale is refused, as TFLite's
        // QuantizeMultiplierGreaterThanOne aborts on it.
        let tiny = QuantParams::new(1e-9, 0).unwrap();
        assert!(Softmax::new(1.0, tiny, 10).is_err());
        assert!(Softmax::new(0.0, p, 10).is_err());
        assert!(Softmax::new(f32::NAN, p, 10).is_err());
        assert!(Softmax::new(1.0, p, 0).is_err());
        // A huge product is capped at 2^31 - 1, not refused.
        let huge = QuantParams::new(1e30, 0).unwrap();
        assert_eq!(Softmax::new(1.0, huge, 3).unwrap().params().1, 31);
    }

    #[test]
    fn outputs_are_probabilities_in_256ths() {
        let p = QuantParams::new(0.1, 0).unwrap();
        let s = Softmax::new(1.0, p, 4).unwrap();
        let input = [100u8, 90, 80, 0];
        let mut out = [0u8; 4];
        s.run(&input, &mut out).unwrap();
        let logits: Vec<f64> = input.iter().map(|&q| f64::from(q) * 0.1).collect();
        let total: f64 = logits.iter().map(|l| l.exp()).sum();
        for (o, l) in out.iter().zip(&logits) {
            let want = l.exp() / total * 256.0;
            assert!((f64::from(*o) - want).abs() <= 1.0, "{o} vs {want}");
        }
        // One clear winner saturates at 255.
        let s = Softmax::new(1.0, QuantParams::new(1.0, 0).unwrap(), 3).unwrap();
        s.run(&[255, 0, 0], &mut out[..3]).unwrap();
        assert_eq!(&out[..3], &[255, 0, 0]);
        // Many equal values: 1/1000 of 256 rounds to 0.
        let s = Softmax::new(1.0, QuantParams::new(0.1, 0).unwrap(), 1000).unwrap();
        let mut big = vec![0u8; 1000];
        s.run(&[7; 1000], &mut big).unwrap();
        assert!(big.iter().all(|&v| v == 0));
        assert!(s.run(&[7; 999], &mut big[..999]).is_err());
    }
}
