//! The arithmetic of the int8 scheme (see the [module docs](super)): how a
//! float range, weight or bias becomes codes.

use crate::error::{Error, Result};

/// Per-tensor asymmetric int8 quantization of an activation: `real = scale
/// * (q - zero_point)`, `q` in `[-128, 127]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActQuant {
    /// Real value of one step: finite and > 0.
    pub scale: f32,
    /// The code of real 0, in `[-128, 127]`.
    pub zero_point: i32,
}

impl ActQuant {
    /// Checked parameters: [`Error::InvalidConfig`] for a scale that is not
    /// finite and positive or a zero point outside the int8 range.
    ///
    /// ```
    /// use mobilenet::quant::ptq::ActQuant;
    /// assert!(ActQuant::new(0.1, -128).is_ok());
    /// assert!(ActQuant::new(0.0, 0).is_err());
    /// assert!(ActQuant::new(f32::NAN, 0).is_err());
    /// assert!(ActQuant::new(0.1, 128).is_err());
    /// ```
    pub fn new(scale: f32, zero_point: i32) -> Result<ActQuant> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::InvalidConfig(format!(
                "activation scale {scale} is not finite and positive"
            )));
        }
        if !(-128..=127).contains(&zero_point) {
            return Err(Error::InvalidConfig(format!(
                "activation zero point {zero_point} is outside [-128, 127]"
            )));
        }
        Ok(ActQuant { scale, zero_point })
    }

    /// The parameters that map `[min, max]` (widened to include 0) onto all
    /// 256 codes, with real 0 exactly representable. A range of width 0
    /// (a tensor that is always 0) gets scale 1.
    ///
    /// ```
    /// use mobilenet::quant::ptq::ActQuant;
    /// let q = ActQuant::from_range(0.0, 6.0)?;
    /// assert_eq!((q.scale, q.zero_point), (6.0 / 255.0, -128));
    /// let q = ActQuant::from_range(-1.0, 1.0)?;
    /// assert!((-1..=0).contains(&q.zero_point)); // -128 + 127.5, rounded
    /// # Ok::<(), mobilenet::Error>(())
    /// ```
    pub fn from_range(min: f32, max: f32) -> Result<ActQuant> {
        if !(min.is_finite() && max.is_finite()) {
            return Err(Error::InvalidConfig(format!(
                "activation range [{min}, {max}] is not finite"
            )));
        }
        let (min, max) = (f64::from(min.min(0.0)), f64::from(max.max(0.0)));
        let width = max - min;
        if width <= 0.0 {
            return ActQuant::new(1.0, 0);
        }
        let scale = (width / 255.0) as f32;
        if !(scale > 0.0 && scale.is_finite()) {
            return Err(Error::InvalidConfig(format!(
                "activation range [{min}, {max}] gives no usable scale"
            )));
        }
        let zero_point = (-128.0 - min / f64::from(scale)).round_ties_even();
        ActQuant::new(scale, zero_point.clamp(-128.0, 127.0) as i32)
    }

    /// The code of `x`: `clamp(round(x / scale) + zero_point)` (halves away
    /// from zero, as TFLite's `Quantize`).
    #[inline]
    pub fn quantize(&self, x: f32) -> i8 {
        let q = (x / self.scale).round() as i64 + i64::from(self.zero_point);
        q.clamp(-128, 127) as i8
    }

    /// The real value of code `q`.
    #[inline]
    pub fn dequantize(&self, q: i8) -> f32 {
        self.scale * (i32::from(q) - self.zero_point) as f32
    }
}

/// How an int8 code is stored: as itself (`i8`, the reference executor),
/// or as a uint8 code offset by 128 (`u8`, what the uint8 kernels of the
/// fast plan take: `x_u8 = x_i8 + 128` keeps every difference of codes).
pub trait StoredCode: Copy {
    /// The int8 code.
    fn code(self) -> i32;
    /// The stored form of int8 code `code`.
    fn store(code: i8) -> Self;
}

impl StoredCode for i8 {
    #[inline]
    fn code(self) -> i32 {
        i32::from(self)
    }
    #[inline]
    fn store(code: i8) -> i8 {
        code
    }
}

impl StoredCode for u8 {
    #[inline]
    fn code(self) -> i32 {
        i32::from(self) - 128
    }
    #[inline]
    fn store(code: i8) -> u8 {
        (i32::from(code) + 128) as u8
    }
}

/// Symmetric per-channel weight quantization: for each of the
/// `weight.len() / channels` long rows, `scale = max|w| / 127` (1 for an
/// all-zero row) and codes `round(w / scale)` in `[-127, 127]`.
///
/// ```
/// use mobilenet::quant::ptq::scheme::quantize_weights;
/// let (q, s) = quantize_weights(&[0.5, -1.0, 0.0, 2.0], 2);
/// assert_eq!(s, vec![1.0 / 127.0, 2.0 / 127.0]);
/// assert_eq!(q, vec![64, -127, 0, 127]);
/// ```
pub fn quantize_weights(weight: &[f32], channels: usize) -> (Vec<i8>, Vec<f32>) {
    let per = weight.len() / channels.max(1);
    let mut codes = Vec::with_capacity(weight.len());
    let mut scales = Vec::with_capacity(channels);
    for row in weight.chunks(per.max(1)).take(channels) {
        let max = row.iter().fold(0.0f32, |m, w| m.max(w.abs()));
        let scale = if max > 0.0 && max.is_finite() {
            max / 127.0
        } else {
            1.0
        };
        scales.push(scale);
        codes.extend(
            row.iter()
                .map(|&w| (w / scale).round().clamp(-127.0, 127.0) as i8),
        );
    }
    (codes, scales)
}

/// int32 bias codes `round(b / (input_scale * weight_scale[c]))`, saturated
/// to the i32 range.
pub fn quantize_bias(bias: &[f32], input_scale: f32, weight_scales: &[f32]) -> Vec<i32> {
    bias.iter()
        .zip(weight_scales)
        .map(|(&b, &sw)| {
            let q = (f64::from(b) / (f64::from(input_scale) * f64::from(sw))).round();
            q.clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
        })
        .collect()
}
