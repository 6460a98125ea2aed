//! Quantization parameters and the output stage shared by the accumulating
//! ops: rescale an int32 accumulator to the output's scale, add the output
//! zero point, clamp to the fused activation's range.

use super::fixed_point::{multiply_by_quantized_multiplier, quantize_multiplier};
use crate::error::{Error, Result};

/// Per-tensor affine quantization of a uint8 tensor: `real = scale * (q -
/// zero_point)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantParams {
    /// Real value of one step; finite and > 0.
    pub scale: f32,
    /// The code of real 0, within `[0, 255]`.
    pub zero_point: i32,
}

impl QuantParams {
    /// Checked parameters: `scale` finite and > 0, `zero_point` within the
    /// uint8 range. Anything else is an [`Error::InvalidConfig`].
    ///
    /// ```
    /// use mobilenet::quant::QuantParams;
    /// let p = QuantParams::new(0.5, 128)?;
    /// assert_eq!(p.dequantize(130), 1.0);
    /// assert!(QuantParams::new(0.0, 0).is_err());
    /// assert!(QuantParams::new(1.0, 256).is_err());
    /// # Ok::<(), mobilenet::Error>(())
    /// ```
    pub fn new(scale: f32, zero_point: i32) -> Result<QuantParams> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::InvalidConfig(format!(
                "quantization scale {scale} is not finite and positive"
            )));
        }
        if !(0..=255).contains(&zero_point) {
            return Err(Error::InvalidConfig(format!(
                "zero point {zero_point} is outside [0, 255] for uint8"
            )));
        }
        Ok(QuantParams { scale, zero_point })
    }

    /// The real value of code `q`.
    pub fn dequantize(&self, q: u8) -> f32 {
        self.scale * (i32::from(q) - self.zero_point) as f32
    }

    /// The code of real value `x`: `clamp(round(x / scale) + zero_point, 0,
    /// 255)`, rounding half away from zero as TFLite's `QUANTIZE` does
    /// (NaN maps to the zero point).
    ///
    /// ```
    /// use mobilenet::quant::QuantParams;
    /// let q = QuantParams::new(1.0 / 128.0, 128)?;
    /// assert_eq!([q.quantize(-1.0), q.quantize(0.5), q.quantize(7.0)], [0, 192, 255]);
    /// # Ok::<(), mobilenet::Error>(())
    /// ```
    pub fn quantize(&self, x: f32) -> u8 {
        let steps = (x / self.scale).round();
        let steps = if steps.is_nan() { 0.0 } else { steps };
        (steps.clamp(-512.0, 512.0) as i32 + self.zero_point).clamp(0, 255) as u8
    }
}

/// A fused activation (TFLite's `ActivationFunctionType`), applied as a
/// clamp of the quantized output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// No clamp beyond the uint8 range.
    None,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `min(max(x, -1), 1)`.
    ReluN1To1,
}

impl Activation {
    /// TFLite's `CalculateActivationRangeQuantized` for uint8: the codes of
    /// the activation's bounds (`zero_point + round(bound / scale)`, in f32
    /// as TFLite), intersected with `[0, 255]`.
    ///
    /// Fails with [`Error::InvalidConfig`] if a bound does not fit in i32
    /// (TFLite refuses these too) or the range is empty.
    ///
    /// ```
    /// use mobilenet::quant::{Activation, QuantParams};
    /// let out = QuantParams::new(0.023528477, 0)?; // 6 / 255
    /// assert_eq!(Activation::Relu6.range(out)?, (0, 255));
    /// let out = QuantParams::new(0.05, 10)?;
    /// assert_eq!(Activation::Relu6.range(out)?, (10, 130));
    /// # Ok::<(), mobilenet::Error>(())
    /// ```
    pub fn range(self, output: QuantParams) -> Result<(i32, i32)> {
        let quantize = |f: f32| -> Result<i32> {
            let tmp = (f / output.scale).round();
            // As TFLite: compare in f32 against the i32 bounds.
            if !(tmp >= i32::MIN as f32 && tmp <= i32::MAX as f32) {
                return Err(Error::InvalidConfig(format!(
                    "activation bound {f} does not fit the output scale {}",
                    output.scale
                )));
            }
            Ok(output.zero_point.saturating_add(tmp as i32))
        };
        let (lo, hi) = match self {
            Activation::None => (0, 255),
            Activation::Relu => (quantize(0.0)?.max(0), 255),
            Activation::Relu6 => (quantize(0.0)?.max(0), quantize(6.0)?.min(255)),
            Activation::ReluN1To1 => (quantize(-1.0)?.max(0), quantize(1.0)?.min(255)),
        };
        if lo > hi {
            return Err(Error::InvalidConfig(format!(
                "{self:?} leaves no output codes for scale {} and zero point {}",
                output.scale, output.zero_point
            )));
        }
        Ok((lo, hi))
    }
}

/// Requantization of an int32 accumulator to a uint8 output, as the
/// reference `Conv`, `DepthwiseConv` and `FullyConnected` end:
/// `clamp(MultiplyByQuantizedMultiplier(acc) + output_zero_point)`.
///
/// ```
/// use mobilenet::quant::requantize::OutputStage;
/// use mobilenet::quant::{Activation, QuantParams};
/// let out = QuantParams::new(0.1, 20)?;
/// let stage = OutputStage::new(0.01, out, Activation::Relu6)?;
/// assert_eq!(stage.apply(1250), 33); // 12.5 -> 13, plus 20
/// assert_eq!(stage.apply(-5000), 20); // ReLU: real 0 is code 20
/// assert_eq!(stage.apply(9000), 80); // ReLU6: 6 / 0.1 + 20
/// # Ok::<(), mobilenet::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputStage {
    multiplier: i32,
    shift: i32,
    zero_point: i32,
    min: i32,
    max: i32,
}

impl OutputStage {
    /// The stage for `real_multiplier` (`input_scale * filter_scale /
    /// output_scale`, computed in f64 as TFLite does), the output's zero
    /// point and the activation's clamp.
    ///
    /// Fails with [`Error::InvalidConfig`] if the multiplier is not finite
    /// and positive, is 2^30 or more (the left shift would overflow), or the
    /// activation range is empty.
    pub fn new(
        real_multiplier: f64,
        output: QuantParams,
        activation: Activation,
    ) -> Result<OutputStage> {
        if !(real_multiplier.is_finite() && real_multiplier > 0.0) {
            return Err(Error::InvalidConfig(format!(
                "requantization multiplier {real_multiplier} is not finite and positive"
            )));
        }
        let (multiplier, shift) = quantize_multiplier(real_multiplier);
        if shift > 30 {
            return Err(Error::InvalidConfig(format!(
                "requantization multiplier {real_multiplier} is too large"
            )));
        }
        let (min, max) = activation.range(output)?;
        Ok(OutputStage {
            multiplier,
            shift,
            zero_point: output.zero_point,
            min,
            max,
        })
    }

    /// The quantized multiplier and its exponent.
    pub fn multiplier(&self) -> (i32, i32) {
        (self.multiplier, self.shift)
    }

    /// The output zero point.
    pub fn zero_point(&self) -> i32 {
        self.zero_point
    }

    /// The clamp `[min, max]`.
    pub fn clamp_range(&self) -> (i32, i32) {
        (self.min, self.max)
    }

    /// The uint8 output for accumulator `acc`.
    #[inline]
    pub fn apply(&self, acc: i32) -> u8 {
        let v = multiply_by_quantized_multiplier(acc, self.multiplier, self.shift)
            .wrapping_add(self.zero_point);
        // min <= max within [0, 255], checked in `new`.
        v.max(self.min).min(self.max) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_ranges_follow_tflite() {
        let p = QuantParams::new(6.0 / 255.0, 0).unwrap();
        assert_eq!(Activation::Relu6.range(p).unwrap(), (0, 255));
        assert_eq!(Activation::None.range(p).unwrap(), (0, 255));
        let p = QuantParams::new(0.1, 100).unwrap();
        assert_eq!(Activation::Relu.range(p).unwrap(), (100, 255));
        assert_eq!(Activation::Relu6.range(p).unwrap(), (100, 160));
        assert_eq!(Activation::ReluN1To1.range(p).unwrap(), (90, 110));
        // A bound past i32 is refused, as TFLite's Quantize does.
        let tiny = QuantParams::new(1e-38, 0).unwrap();
        assert!(Activation::Relu6.range(tiny).is_err());
        // ReLU with a zero point at the top still leaves one code.
        let top = QuantParams::new(1.0, 255).unwrap();
        assert_eq!(Activation::Relu.range(top).unwrap(), (255, 255));
    }

    #[test]
    fn output_stage_requantizes_and_clamps() {
        let out = QuantParams::new(1.0, 10).unwrap();
        let stage = OutputStage::new(0.5, out, Activation::Relu6).unwrap();
        assert_eq!(stage.clamp_range(), (10, 16));
        assert_eq!(stage.apply(4), 12);
        assert_eq!(stage.apply(5), 13); // 2.5 -> 3
        assert_eq!(stage.apply(-100), 10);
        assert_eq!(stage.apply(1000), 16);
        assert_eq!(stage.apply(i32::MIN), 10);
        assert!(OutputStage::new(f64::NAN, out, Activation::None).is_err());
        assert!(OutputStage::new(0.0, out, Activation::None).is_err());
        assert!(OutputStage::new(2f64.powi(31), out, Activation::None).is_err());
        assert!(OutputStage::new(2f64.powi(29), out, Activation::None).is_ok());
    }
}
