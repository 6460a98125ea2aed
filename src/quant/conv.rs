//! uint8 convolutions as TFLite's reference `Conv` and `DepthwiseConv`
//! (`DepthwiseConvBasicKernel<kAwayFromZero>`): for every output, the int32
//! sum of `(filter - filter_zp) * (input - input_zp)` over the taps inside
//! the input, plus the int32 bias, through the [`OutputStage`].
//!
//! Taps outside the input are skipped, which is the same as padding with
//! the input zero point. The weights are stored already offset (as i16), and
//! each run offsets its input once, so the inner loops are plain
//! multiply-adds over contiguous NHWC channels.

use super::geometry::{Axis, Padding};
use super::requantize::{Activation, OutputStage, QuantParams};
use crate::error::{Error, Result};

/// Which convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKind {
    /// Every output channel reads every input channel; weights OHWI
    /// `[out, kh, kw, in]`.
    Full,
    /// Output channel `i * multiplier + m` reads input channel `i` only;
    /// weights `[1, kh, kw, in * multiplier]`.
    Depthwise {
        /// The depth multiplier (MobileNet uses 1).
        multiplier: usize,
    },
}

/// Everything a convolution needs besides its weights: the shape of its
/// input, the filter geometry, the three quantizations and the fused
/// activation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConvSpec {
    /// Full or depthwise.
    pub kind: ConvKind,
    /// Images per run.
    pub batches: usize,
    /// Input `[height, width]`.
    pub input_hw: [usize; 2],
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Filter `[height, width]`.
    pub kernel: [usize; 2],
    /// `[height, width]` strides.
    pub stride: [usize; 2],
    /// `[height, width]` dilations.
    pub dilation: [usize; 2],
    /// SAME or VALID.
    pub padding: Padding,
    /// Input quantization.
    pub input: QuantParams,
    /// Filter quantization (per tensor).
    pub filter: QuantParams,
    /// Output quantization.
    pub output: QuantParams,
    /// Fused activation.
    pub activation: Activation,
}

/// A prepared uint8 convolution: checked geometry, offset weights, bias and
/// output stage.
///
/// ```
/// use mobilenet::quant::conv::{Conv2d, ConvKind, ConvSpec};
/// use mobilenet::quant::geometry::Padding;
/// use mobilenet::quant::{Activation, QuantParams};
/// // A 1x1 convolution of a 1x1x2 image to one channel: 2·x0 + x1.
/// let q = QuantParams::new(1.0, 0)?;
/// let spec = ConvSpec {
///     kind: ConvKind::Full,
///     batches: 1,
///     input_hw: [1, 1],
///     in_channels: 2,
///     out_channels: 1,
///     kernel: [1, 1],
///     stride: [1, 1],
///     dilation: [1, 1],
///     padding: Padding::Valid,
///     input: q,
///     filter: q,
///     output: q,
///     activation: Activation::None,
/// };
/// let conv = Conv2d::new(&spec, &[2, 1], None)?;
/// let mut out = [0u8];
/// conv.run(&[10, 7], &mut out)?;
/// assert_eq!(out, [27]);
/// # Ok::<(), mobilenet::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Conv2d {
    pub(crate) kind: ConvKind,
    pub(crate) batches: usize,
    pub(crate) in_channels: usize,
    pub(crate) out_channels: usize,
    pub(crate) rows: Axis,
    pub(crate) cols: Axis,
    /// `filter - filter_zero_point`, in the TFLite layout of [`ConvKind`].
    pub(crate) weights: Vec<i16>,
    pub(crate) bias: Vec<i32>,
    pub(crate) input_zero_point: i32,
    /// Kept so faster kernels can repack the original codes.
    pub(crate) filter_zero_point: i32,
    pub(crate) stage: OutputStage,
}

/// `a * b` for sizes, or an error naming `what`.
fn mul(a: usize, b: usize, what: &str) -> Result<usize> {
    product(&[a, b], what)
}

/// The product of `dims`, or [`Error::TooLarge`] naming `what`.
pub(crate) fn product(dims: &[usize], what: &str) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::TooLarge(format!("the size of {what} {dims:?} overflows")))
}

/// TFLite's `GetQuantizedConvolutionMultipler` for uint8 convolutions and
/// fully connected layers: `input_scale * filter_scale / output_scale`,
/// where the product is taken in **f32** and only then widened to f64 for
/// the division (LiteRT's int8 per-channel path multiplies in f64 instead;
/// the two differ in the last bits of some multipliers, which moves a few
/// outputs of the official 0.75 and 1.0 MobileNets by one).
///
/// ```
/// use mobilenet::quant::QuantParams;
/// use mobilenet::quant::conv::conv_multiplier;
/// let a = QuantParams::new(0.5, 0)?;
/// let b = QuantParams::new(0.25, 0)?;
/// assert_eq!(conv_multiplier(a, b, a), 0.25);
/// # Ok::<(), mobilenet::Error>(())
/// ```
pub fn conv_multiplier(input: QuantParams, filter: QuantParams, output: QuantParams) -> f64 {
    f64::from(input.scale * filter.scale) / f64::from(output.scale)
}

/// The largest `|q - zero_point|` of a uint8 code.
fn max_offset(p: QuantParams) -> i64 {
    i64::from(p.zero_point.max(255 - p.zero_point))
}

/// Checks that no int32 accumulation of `taps` products (plus a bias) can
/// overflow, so the kernels' wrapping arithmetic is exact.
pub(crate) fn check_accumulator(
    taps: usize,
    input: QuantParams,
    filter: QuantParams,
    bias: &[i32],
) -> Result<()> {
    let bias_max = bias.iter().map(|b| i64::from(*b).abs()).max().unwrap_or(0);
    let bound = i64::try_from(taps)
        .ok()
        .and_then(|t| t.checked_mul(max_offset(input) * max_offset(filter)))
        .and_then(|v| v.checked_add(bias_max));
    match bound {
        Some(b) if b <= i64::from(i32::MAX) => Ok(()),
        _ => Err(Error::InvalidConfig(format!(
            "{taps} products per output (plus a bias up to {bias_max}) could overflow the int32 \
             accumulator"
        ))),
    }
}

/// `weights - zero_point` as i16.
pub(crate) fn offset_weights(weights: &[u8], zero_point: i32) -> Vec<i16> {
    // Both in [0, 255]: the difference fits in i16.
    weights
        .iter()
        .map(|&w| (i32::from(w) - zero_point) as i16)
        .collect()
}

/// The bias, or zeros, checked to have one entry per output.
pub(crate) fn bias_or_zeros(bias: Option<&[i32]>, outputs: usize) -> Result<Vec<i32>> {
    match bias {
        Some(b) if b.len() == outputs => Ok(b.to_vec()),
        Some(b) => Err(Error::Shape(format!(
            "the bias has {} entries for {outputs} output channels",
            b.len()
        ))),
        None => Ok(vec![0; outputs]),
    }
}

/// The int32 dot product of two offset vectors (wrapping: callers check
/// with [`check_accumulator`] that it cannot overflow).
#[inline]
pub(crate) fn dot(x: &[i16], w: &[i16]) -> i32 {
    x.iter().zip(w).fold(0i32, |acc, (&a, &b)| {
        acc.wrapping_add(i32::from(a).wrapping_mul(i32::from(b)))
    })
}

/// `input - zero_point` as i16, into `out` (cleared first).
pub(crate) fn offset_input(input: &[u8], zero_point: i32, out: &mut Vec<i16>) {
    out.clear();
    out.extend(input.iter().map(|&x| (i32::from(x) - zero_point) as i16));
}

impl Conv2d {
    /// Prepares a convolution as TFLite's `Prepare` does: output size and
    /// padding from the geometry, the multiplier of [`conv_multiplier`],
    /// the activation's clamp.
    /// `weights` are in the TFLite layout of [`ConvKind`]; `bias` (int32,
    /// one per output channel, in units of `input_scale * filter_scale`) may
    /// be absent.
    ///
    /// Fails with [`Error::Shape`] if the weights or bias do not fit the
    /// spec, [`Error::InvalidConfig`] for an impossible geometry or
    /// multiplier, or an accumulator that could overflow int32,
    /// [`Error::TooLarge`] if sizes overflow.
    pub fn new(spec: &ConvSpec, weights: &[u8], bias: Option<&[i32]>) -> Result<Conv2d> {
        let (cin, cout) = (spec.in_channels, spec.out_channels);
        if spec.batches == 0 || cin == 0 || cout == 0 {
            return Err(Error::InvalidConfig(format!(
                "convolution of {} images, {cin} -> {cout} channels: every count must be at least \
                 1",
                spec.batches
            )));
        }
        let [kh, kw] = spec.kernel;
        let taps = mul(kh, kw, "filter size")?;
        let (expected, per_output) = match spec.kind {
            ConvKind::Full => (mul(mul(taps, cin, "filter")?, cout, "filter")?, taps * cin),
            ConvKind::Depthwise { multiplier } => {
                if multiplier == 0 || cin.checked_mul(multiplier) != Some(cout) {
                    return Err(Error::InvalidConfig(format!(
                        "depthwise convolution of {cin} channels with multiplier {multiplier} \
                         cannot give {cout} channels"
                    )));
                }
                (mul(taps, cout, "filter")?, taps)
            }
        };
        if weights.len() != expected {
            return Err(Error::Shape(format!(
                "the filter has {} weights, {:?} {kh}x{kw} {cin} -> {cout} needs {expected}",
                weights.len(),
                spec.kind
            )));
        }
        let bias = bias_or_zeros(bias, cout)?;
        let rows = Axis::new(
            spec.input_hw[0],
            kh,
            spec.stride[0],
            spec.dilation[0],
            spec.padding,
        )?;
        let cols = Axis::new(
            spec.input_hw[1],
            kw,
            spec.stride[1],
            spec.dilation[1],
            spec.padding,
        )?;
        let [h, w] = spec.input_hw;
        product(&[spec.batches, h, w, cin], "the input")?;
        product(
            &[spec.batches, rows.output, cols.output, cout],
            "the output",
        )?;
        check_accumulator(per_output, spec.input, spec.filter, &bias)?;
        let real = conv_multiplier(spec.input, spec.filter, spec.output);
        let stage = OutputStage::new(real, spec.output, spec.activation)?;
        Ok(Conv2d {
            kind: spec.kind,
            batches: spec.batches,
            in_channels: cin,
            out_channels: cout,
            rows,
            cols,
            weights: offset_weights(weights, spec.filter.zero_point),
            bias,
            input_zero_point: spec.input.zero_point,
            filter_zero_point: spec.filter.zero_point,
            stage,
        })
    }

    /// The input shape `[batches, height, width, channels]`.
    pub fn input_shape(&self) -> [usize; 4] {
        [
            self.batches,
            self.rows.input,
            self.cols.input,
            self.in_channels,
        ]
    }

    /// The output shape `[batches, height, width, channels]`.
    pub fn output_shape(&self) -> [usize; 4] {
        [
            self.batches,
            self.rows.output,
            self.cols.output,
            self.out_channels,
        ]
    }

    /// Multiply-adds per run: each output value takes one per weight of its
    /// output channel (`kh * kw * in_channels` for a full convolution,
    /// `kh * kw` for a depthwise one).
    pub fn mult_adds(&self) -> u64 {
        let outputs: u64 = self.output_shape().iter().map(|&d| d as u64).product();
        let per_channel = self.weights.len() / self.out_channels.max(1);
        outputs * per_channel as u64
    }

    /// The output stage (multiplier, clamp).
    pub fn output_stage(&self) -> &OutputStage {
        &self.stage
    }

    /// Runs on an NHWC uint8 `input` of [`Conv2d::input_shape`] into
    /// `output` of [`Conv2d::output_shape`].
    ///
    /// Fails with [`Error::Shape`] if a length is wrong.
    pub fn run(&self, input: &[u8], output: &mut [u8]) -> Result<()> {
        let want_in: usize = self.input_shape().iter().product();
        let want_out: usize = self.output_shape().iter().product();
        if input.len() != want_in || output.len() != want_out {
            return Err(Error::Shape(format!(
                "convolution: input of {} and output of {} bytes, expected {want_in} and \
                 {want_out}",
                input.len(),
                output.len()
            )));
        }
        let mut xs = Vec::with_capacity(input.len());
        offset_input(input, self.input_zero_point, &mut xs);
        match self.kind {
            ConvKind::Full => self.run_full(&xs, output),
            ConvKind::Depthwise { multiplier } => self.run_depthwise(&xs, multiplier, output),
        }
        Ok(())
    }

    /// The input pixel `(b, y, x)` of the offset input.
    #[inline]
    fn pixel<'x>(&self, xs: &'x [i16], b: usize, y: usize, x: usize) -> &'x [i16] {
        let c = self.in_channels;
        let at = ((b * self.rows.input + y) * self.cols.input + x) * c;
        &xs[at..at + c]
    }

    fn run_full(&self, xs: &[i16], output: &mut [u8]) {
        let (cin, cout) = (self.in_channels, self.out_channels);
        let kw = self.cols.filter;
        let per_filter = self.rows.filter * kw * cin;
        let mut pixels = output.chunks_exact_mut(cout);
        for b in 0..self.batches {
            for oy in 0..self.rows.output {
                let ky_taps = self.rows.taps(oy);
                for ox in 0..self.cols.output {
                    let kx_taps = self.cols.taps(ox);
                    let Some(out) = pixels.next() else { return };
                    for ((dst, w), &bias) in out
                        .iter_mut()
                        .zip(self.weights.chunks_exact(per_filter))
                        .zip(&self.bias)
                    {
                        let mut acc = bias;
                        for ky in ky_taps.clone() {
                            let iy =
                                oy * self.rows.stride + ky * self.rows.dilation - self.rows.pad;
                            for kx in kx_taps.clone() {
                                let ix =
                                    ox * self.cols.stride + kx * self.cols.dilation - self.cols.pad;
                                let tap = (ky * kw + kx) * cin;
                                let x = self.pixel(xs, b, iy, ix);
                                acc = acc.wrapping_add(dot(x, &w[tap..tap + cin]));
                            }
                        }
                        *dst = self.stage.apply(acc);
                    }
                }
            }
        }
    }

    fn run_depthwise(&self, xs: &[i16], multiplier: usize, output: &mut [u8]) {
        let cout = self.out_channels;
        let kw = self.cols.filter;
        let mut acc = vec![0i32; cout];
        let mut pixels = output.chunks_exact_mut(cout);
        for b in 0..self.batches {
            for oy in 0..self.rows.output {
                let ky_taps = self.rows.taps(oy);
                for ox in 0..self.cols.output {
                    let kx_taps = self.cols.taps(ox);
                    acc.copy_from_slice(&self.bias);
                    for ky in ky_taps.clone() {
                        let iy = oy * self.rows.stride + ky * self.rows.dilation - self.rows.pad;
                        for kx in kx_taps.clone() {
                            let ix =
                                ox * self.cols.stride + kx * self.cols.dilation - self.cols.pad;
                            let tap = (ky * kw + kx) * cout;
                            let w = &self.weights[tap..tap + cout];
                            let x = self.pixel(xs, b, iy, ix);
                            if multiplier == 1 {
                                for ((a, &xv), &wv) in acc.iter_mut().zip(x).zip(w) {
                                    *a = a.wrapping_add(i32::from(xv).wrapping_mul(i32::from(wv)));
                                }
                            } else {
                                for ((a, &xv), w) in acc
                                    .chunks_exact_mut(multiplier)
                                    .zip(x)
                                    .zip(w.chunks_exact(multiplier))
                                {
                                    for (a, &wv) in a.iter_mut().zip(w) {
                                        *a = a.wrapping_add(
                                            i32::from(xv).wrapping_mul(i32::from(wv)),
                                        );
                                    }
                                }
                            }
                        }
                    }
                    let Some(out) = pixels.next() else { return };
                    for (dst, &a) in out.iter_mut().zip(&acc) {
                        *dst = self.stage.apply(a);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: ConvKind, hw: [usize; 2], cin: usize, cout: usize, k: usize) -> ConvSpec {
        let q = QuantParams::new(1.0, 0).unwrap();
        ConvSpec {
            kind,
            batches: 1,
            input_hw: hw,
            in_channels: cin,
            out_channels: cout,
            kernel: [k, k],
            stride: [1, 1],
            dilation: [1, 1],
            padding: Padding::Same,
            input: q,
            filter: q,
            output: q,
            activation: Activation::None,
        }
    }

    #[test]
    fn same_padding_skips_outside_taps() {
        // 3x3 box filter over a 2x2 image of ones: every output sees 4 taps.
        let s = spec(ConvKind::Full, [2, 2], 1, 1, 3);
        let conv = Conv2d::new(&s, &[1; 9], Some(&[1])).unwrap();
        let mut out = [0u8; 4];
        conv.run(&[1; 4], &mut out).unwrap();
        assert_eq!(out, [5; 4]);
        // With an input zero point of 1 the image is all real zeros: only
        // the bias remains.
        let mut s2 = s;
        s2.input = QuantParams::new(1.0, 1).unwrap();
        let conv = Conv2d::new(&s2, &[1; 9], Some(&[1])).unwrap();
        conv.run(&[1; 4], &mut out).unwrap();
        assert_eq!(out, [1; 4]);
    }

    #[test]
    fn depthwise_multiplier_orders_channels_like_tflite() {
        // Two input channels, multiplier 2: outputs [2x0, 3x0, 4x1, 5x1].
        let s = spec(ConvKind::Depthwise { multiplier: 2 }, [1, 1], 2, 4, 1);
        let conv = Conv2d::new(&s, &[2, 3, 4, 5], None).unwrap();
        let mut out = [0u8; 4];
        conv.run(&[10, 20], &mut out).unwrap();
        assert_eq!(out, [20, 30, 80, 100]);
    }

    #[test]
    fn refuses_bad_specs() {
        let s = spec(ConvKind::Full, [2, 2], 1, 1, 3);
        assert!(matches!(
            Conv2d::new(&s, &[1; 8], None),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            Conv2d::new(&s, &[1; 9], Some(&[1, 2])),
            Err(Error::Shape(_))
        ));
        let dw = spec(ConvKind::Depthwise { multiplier: 1 }, [2, 2], 2, 3, 1);
        assert!(Conv2d::new(&dw, &[1; 3], None).is_err());
        // A huge bias could overflow the accumulator.
        assert!(Conv2d::new(&s, &[1; 9], Some(&[i32::MAX])).is_err());
        let conv = Conv2d::new(&s, &[1; 9], None).unwrap();
        assert!(conv.run(&[1; 3], &mut [0; 4]).is_err());
        assert!(conv.run(&[1; 4], &mut [0; 5]).is_err());
    }
}
