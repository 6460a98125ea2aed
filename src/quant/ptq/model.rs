//! The int8 network as plain data, how a float network becomes one
//! ([`Int8MobileNet::quantize`]), and the exact integer loops that run it.

use crate::engine::fold_batch_norm;
use crate::error::{Error, Result};
use crate::formats::ModelMetadata;
use crate::layers::Activation;
use crate::model::{Architecture, LayerKind, LayerSpec, MobileNet};
use crate::quant::fixed_point::{multiply_by_quantized_multiplier, quantize_multiplier};
use crate::tensor::Tensor;

use super::calibrate::{CalibrationMethod, Observer};
use super::scheme::{ActQuant, StoredCode, quantize_bias, quantize_weights};

/// One convolution (standard, depthwise or pointwise) with its folded batch
/// norm and fused activation, in int8.
#[derive(Clone, Debug, PartialEq)]
pub struct Int8Conv {
    /// The layer's name and shapes (geometry: kernel, stride, padding).
    pub spec: LayerSpec,
    /// Weight codes `[C_out, C_in / groups, K, K]` (the float layout).
    pub weight: Vec<i8>,
    /// Per output channel weight scale.
    pub weight_scale: Vec<f32>,
    /// int32 bias codes, scale `input.scale * weight_scale[c]`.
    pub bias: Vec<i32>,
    /// Quantization of the input activation.
    pub input: ActQuant,
    /// Quantization of the output activation.
    pub output: ActQuant,
    /// Per output channel fixed-point `(multiplier, shift)` of
    /// `input.scale * weight_scale[c] / output.scale`.
    pub requant: Vec<(i32, i32)>,
    /// Output code range: the fused activation's clamp.
    pub clamp: (i8, i8),
}

/// The classifier: int8 weights per class, int32 accumulation, logits
/// dequantized to f32.
#[derive(Clone, Debug, PartialEq)]
pub struct Int8Classifier {
    /// Weight codes `[classes, C]`.
    pub weight: Vec<i8>,
    /// Per class weight scale.
    pub weight_scale: Vec<f32>,
    /// int32 bias codes, scale `input.scale * weight_scale[c]`.
    pub bias: Vec<i32>,
    /// Quantization of the pooled input (that of the last conv's output).
    pub input: ActQuant,
}

/// A whole int8 MobileNet.
#[derive(Clone, Debug, PartialEq)]
pub struct Int8MobileNet {
    architecture: Architecture,
    /// Quantization of the network input.
    pub input: ActQuant,
    /// The convolutions, in execution order.
    pub convs: Vec<Int8Conv>,
    /// The classifier.
    pub classifier: Int8Classifier,
    /// Name, labels and preprocessing, carried over from the float model.
    pub metadata: ModelMetadata,
    /// How the activation ranges were chosen, e.g. `minmax` (informative).
    pub calibration: String,
}

/// What [`Int8MobileNet::quantize`] needs besides the network.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantizeOptions {
    /// How the activation ranges are chosen.
    pub method: CalibrationMethod,
}

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::InvalidConfig(format!("int8 model: {msg}"))
}

impl Int8Conv {
    /// Builds a layer from its codes and scales, checking every length and
    /// value, and derives the requantization multipliers and the clamp.
    ///
    /// Fails with [`Error::InvalidConfig`] for a layer that is not a
    /// convolution, wrong lengths, or a weight scale that is not finite and
    /// positive.
    pub fn new(
        spec: LayerSpec,
        activation: Activation,
        weight: Vec<i8>,
        weight_scale: Vec<f32>,
        bias: Vec<i32>,
        input: ActQuant,
        output: ActQuant,
    ) -> Result<Int8Conv> {
        if !spec.kind.has_batch_norm() {
            return Err(bad(format!("{} is not a convolution", spec.name)));
        }
        let (c_in, c_out, k) = (spec.input[2], spec.output[2], spec.kernel);
        let per_group = if spec.kind == LayerKind::Depthwise {
            1
        } else {
            c_in
        };
        let per_out = per_group * k * k;
        if weight.len() != c_out * per_out || weight_scale.len() != c_out || bias.len() != c_out {
            return Err(bad(format!(
                "{}: {} weights, {} scales and {} biases for {c_out} channels of {per_out}",
                spec.name,
                weight.len(),
                weight_scale.len(),
                bias.len()
            )));
        }
        if spec.kind == LayerKind::Depthwise && c_in != c_out {
            return Err(bad(format!("{}: depthwise with C_in != C_out", spec.name)));
        }
        let requant = requant_multipliers(&spec.name, input, &weight_scale, output)?;
        let clamp = activation_clamp(activation, output);
        Ok(Int8Conv {
            spec,
            weight,
            weight_scale,
            bias,
            input,
            output,
            requant,
            clamp,
        })
    }

    /// Runs on one image: `input` `[H, W, C_in]` codes into `output`
    /// `[H', W', C_out]`. The accumulator of output channel `c` is
    /// `bias[c] + Σ (x - input.zero_point) * w`, over the taps inside the input
    /// (padding is real 0, i.e. contributes nothing), then requantized and
    /// clamped.
    pub fn run(&self, input: &[i8], output: &mut [i8]) -> Result<()> {
        let s = &self.spec;
        let ([h, w, c_in], [oh, ow, c_out]) = (s.input, s.output);
        if input.len() != h * w * c_in || output.len() != oh * ow * c_out {
            return Err(Error::Shape(format!(
                "{}: input of {} and output of {} codes, expected {} and {}",
                s.name,
                input.len(),
                output.len(),
                h * w * c_in,
                oh * ow * c_out
            )));
        }
        let (k, stride) = (s.kernel, s.stride);
        let (pad_y, pad_x) = (s.padding.top, s.padding.left);
        let zp = self.input.zero_point;
        let centred: Vec<i32> = input.iter().map(|&v| i32::from(v) - zp).collect();
        let mut acc = vec![0i32; c_out];
        for oy in 0..oh {
            for ox in 0..ow {
                acc.copy_from_slice(&self.bias);
                for ky in 0..k {
                    let Some(iy) = (oy * stride + ky).checked_sub(pad_y).filter(|&i| i < h) else {
                        continue;
                    };
                    for kx in 0..k {
                        let Some(ix) = (ox * stride + kx).checked_sub(pad_x).filter(|&i| i < w)
                        else {
                            continue;
                        };
                        let x = &centred[(iy * w + ix) * c_in..][..c_in];
                        match s.kind {
                            LayerKind::Depthwise => {
                                for (c, (a, &xv)) in acc.iter_mut().zip(x).enumerate() {
                                    *a = a.wrapping_add(
                                        xv * i32::from(self.weight[(c * k + ky) * k + kx]),
                                    );
                                }
                            }
                            _ => {
                                for (co, a) in acc.iter_mut().enumerate() {
                                    let base = co * c_in * k * k + ky * k + kx;
                                    let mut sum = 0i32;
                                    for (ci, &xv) in x.iter().enumerate() {
                                        sum += xv * i32::from(self.weight[base + ci * k * k]);
                                    }
                                    *a = a.wrapping_add(sum);
                                }
                            }
                        }
                    }
                }
                let out = &mut output[(oy * ow + ox) * c_out..][..c_out];
                for ((o, &a), &(m, shift)) in out.iter_mut().zip(&acc).zip(&self.requant) {
                    *o = requantize(a, m, shift, self.output.zero_point, self.clamp);
                }
            }
        }
        Ok(())
    }
}

/// `clamp(MultiplyByQuantizedMultiplier(acc) + zero_point)`.
#[inline]
pub(crate) fn requantize(acc: i32, m: i32, shift: i32, zero_point: i32, clamp: (i8, i8)) -> i8 {
    let v = multiply_by_quantized_multiplier(acc, m, shift).saturating_add(zero_point);
    v.clamp(i32::from(clamp.0), i32::from(clamp.1)) as i8
}

/// Per channel `(multiplier, shift)` of `input.scale * weight_scale[c] /
/// output.scale`, computed in f64.
fn requant_multipliers(
    name: &str,
    input: ActQuant,
    weight_scale: &[f32],
    output: ActQuant,
) -> Result<Vec<(i32, i32)>> {
    weight_scale
        .iter()
        .enumerate()
        .map(|(c, &sw)| {
            if !(sw.is_finite() && sw > 0.0) {
                return Err(bad(format!(
                    "{name}: weight scale {sw} of channel {c} is not finite and positive"
                )));
            }
            let real = f64::from(input.scale) * f64::from(sw) / f64::from(output.scale);
            Ok(quantize_multiplier(real))
        })
        .collect()
}

/// The output codes the fused activation allows: ReLU cuts at the code of
/// real 0, ReLU6 also at the code of 6.
fn activation_clamp(activation: Activation, output: ActQuant) -> (i8, i8) {
    let code = |x: f32| {
        ((f64::from(x) / f64::from(output.scale)).round() + f64::from(output.zero_point))
            .clamp(-128.0, 127.0) as i8
    };
    match activation {
        Activation::Identity => (-128, 127),
        Activation::Relu => (code(0.0), 127),
        Activation::Relu6 => (code(0.0), code(6.0)),
    }
}

impl Int8Classifier {
    /// Checks lengths and scales for `classes` classes of `channels` inputs.
    pub fn validate(&self, channels: usize, classes: usize) -> Result<()> {
        if self.weight.len() != classes * channels
            || self.weight_scale.len() != classes
            || self.bias.len() != classes
        {
            return Err(bad(format!(
                "fc: {} weights, {} scales and {} biases for {classes} classes of {channels}",
                self.weight.len(),
                self.weight_scale.len(),
                self.bias.len()
            )));
        }
        if let Some(s) = self
            .weight_scale
            .iter()
            .find(|s| !(s.is_finite() && **s > 0.0))
        {
            return Err(bad(format!(
                "fc: weight scale {s} is not finite and positive"
            )));
        }
        Ok(())
    }

    /// Logits of one pooled vector of codes: `input.scale * weight_scale[c]
    /// * (bias[c] + Σ (x - zero_point) * w)`.
    pub fn run<T: StoredCode>(&self, pooled: &[T], logits: &mut [f32]) {
        let zp = self.input.zero_point;
        let c = pooled.len();
        for (class, out) in logits.iter_mut().enumerate() {
            let row = &self.weight[class * c..][..c];
            let mut acc = self.bias[class];
            for (&x, &w) in pooled.iter().zip(row) {
                acc = acc.wrapping_add((x.code() - zp) * i32::from(w));
            }
            *out = (f64::from(acc)
                * f64::from(self.input.scale)
                * f64::from(self.weight_scale[class])) as f32;
        }
    }
}

/// Global average pool of `[H, W, C]` codes, in the same quantization:
/// `round(sum / count)` with halves away from zero (TFLite's int8
/// `AveragePool`). Pixels in order into a stack block of channel sums at a
/// time, so that it reads memory sequentially and needs no heap scratch.
pub fn average_pool<T: StoredCode>(input: &[T], channels: usize, pooled: &mut [T]) {
    const BLOCK: usize = 256;
    let channels = channels.max(1);
    let count = (input.len() / channels).max(1) as i32;
    let mut sums = [0i32; BLOCK];
    for (c0, out) in (0..channels).step_by(BLOCK).zip(pooled.chunks_mut(BLOCK)) {
        let sums = &mut sums[..out.len().min(channels - c0)];
        sums.fill(0);
        for pixel in input.chunks_exact(channels) {
            for (s, &v) in sums.iter_mut().zip(&pixel[c0..]) {
                *s += v.code();
            }
        }
        for (p, &s) in out.iter_mut().zip(sums.iter()) {
            let rounded = if s >= 0 {
                (s + count / 2) / count
            } else {
                (s - count / 2) / count
            };
            *p = T::store(rounded.clamp(-128, 127) as i8);
        }
    }
}

impl Int8MobileNet {
    /// Assembles a network, checking that the layers match the
    /// architecture and chain (each layer's input quantization is the
    /// previous layer's output quantization).
    pub fn from_parts(
        architecture: Architecture,
        input: ActQuant,
        convs: Vec<Int8Conv>,
        classifier: Int8Classifier,
        metadata: ModelMetadata,
        calibration: String,
    ) -> Result<Int8MobileNet> {
        let specs: Vec<&LayerSpec> = architecture
            .layers()
            .iter()
            .filter(|l| l.kind.has_batch_norm())
            .collect();
        if specs.len() != convs.len() {
            return Err(bad(format!(
                "{} convolutions for an architecture of {}",
                convs.len(),
                specs.len()
            )));
        }
        let mut previous = input;
        for (spec, conv) in specs.iter().zip(&convs) {
            if **spec != conv.spec {
                return Err(bad(format!(
                    "layer {} does not fit the architecture",
                    spec.name
                )));
            }
            if conv.input != previous {
                return Err(bad(format!(
                    "{}: input quantization differs from the previous output",
                    spec.name
                )));
            }
            previous = conv.output;
        }
        if classifier.input != previous {
            return Err(bad(
                "fc: input quantization differs from the last conv output",
            ));
        }
        let fc = architecture
            .layer("fc")
            .ok_or_else(|| bad("the architecture has no classifier"))?;
        classifier.validate(fc.input[2], fc.output[2])?;
        if let Some(labels) = &metadata.labels
            && labels.len() != fc.output[2]
        {
            return Err(bad(format!(
                "{} labels for {} classes",
                labels.len(),
                fc.output[2]
            )));
        }
        Ok(Int8MobileNet {
            architecture,
            input,
            convs,
            classifier,
            metadata,
            calibration,
        })
    }

    /// Quantizes `net` with activation ranges observed while running it in
    /// float on `calibration` (batches `[N, R, R, 3]`, preprocessed as the
    /// model expects).
    pub fn quantize(
        net: &MobileNet,
        metadata: &ModelMetadata,
        calibration: &[Tensor],
        options: &QuantizeOptions,
    ) -> Result<Int8MobileNet> {
        let method = options.method.validate()?;
        let (input_obs, conv_obs) = observe(net, calibration)?;
        let arch = net.architecture().clone();
        let activation = net.config().activation;
        let input = input_obs.quant(method)?;
        let mut previous = input;
        let mut convs = Vec::with_capacity(net.convs().len());
        let specs = arch.layers().iter().filter(|l| l.kind.has_batch_norm());
        for ((spec, conv), obs) in specs.zip(net.convs()).zip(&conv_obs) {
            let folded = fold_batch_norm(conv);
            let c_out = spec.output[2];
            let (weight, weight_scale) = quantize_weights(&folded.weight, c_out);
            let bias = quantize_bias(&folded.bias, previous.scale, &weight_scale);
            let output = obs.quant(method)?;
            convs.push(Int8Conv::new(
                spec.clone(),
                activation,
                weight,
                weight_scale,
                bias,
                previous,
                output,
            )?);
            previous = output;
        }
        let fc = net.classifier();
        let classes = fc.bias.len();
        let (weight, weight_scale) = quantize_weights(fc.weight.data(), classes);
        let bias = quantize_bias(fc.bias.data(), previous.scale, &weight_scale);
        let classifier = Int8Classifier {
            weight,
            weight_scale,
            bias,
            input: previous,
        };
        let calibration = match method {
            CalibrationMethod::MinMax => "minmax".to_string(),
            CalibrationMethod::Percentile(p) => format!("percentile {p}"),
        };
        Int8MobileNet::from_parts(
            arch,
            input,
            convs,
            classifier,
            metadata.clone(),
            calibration,
        )
    }

    /// The layer shapes.
    pub fn architecture(&self) -> &Architecture {
        &self.architecture
    }

    /// Input side in pixels.
    pub fn resolution(&self) -> usize {
        self.architecture.config().resolution
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.architecture.config().classes
    }

    /// Values in one input image (`R * R * 3`).
    pub fn input_len(&self) -> usize {
        let r = self.resolution();
        r * r * 3
    }

    /// Quantizes a float image (`[R, R, 3]`, preprocessed) to input codes.
    pub fn quantize_input(&self, image: &[f32]) -> Vec<i8> {
        image.iter().map(|&x| self.input.quantize(x)).collect()
    }

    /// Logits `[N, classes]` of `n` float images (NHWC, preprocessed).
    pub fn run(&self, images: &[f32], n: usize) -> Result<Vec<f32>> {
        let len = self.input_len();
        if n == 0 || images.len() != n * len {
            return Err(Error::Shape(format!(
                "int8 model: {} input values for {n} images of {len}",
                images.len()
            )));
        }
        let classes = self.classes();
        let mut logits = vec![0.0f32; n * classes];
        for (image, out) in images
            .chunks_exact(len)
            .zip(logits.chunks_exact_mut(classes))
        {
            let codes = self.quantize_input(image);
            self.run_codes(&codes, |_, _| {}, out)?;
        }
        Ok(logits)
    }

    /// Runs one image of input codes, calling `visit` with each conv's output
    /// codes, and writes the logits.
    pub fn run_codes(
        &self,
        codes: &[i8],
        mut visit: impl FnMut(&Int8Conv, &[i8]),
        logits: &mut [f32],
    ) -> Result<()> {
        let mut x = codes.to_vec();
        for conv in &self.convs {
            let [h, w, c] = conv.spec.output;
            let mut y = vec![0i8; h * w * c];
            conv.run(&x, &mut y)?;
            visit(conv, &y);
            x = y;
        }
        let channels = self.classifier.weight.len() / self.classes().max(1);
        if logits.len() != self.classes() || !x.len().is_multiple_of(channels.max(1)) {
            return Err(Error::Shape("int8 model: wrong logits length".into()));
        }
        let mut pooled = vec![0i8; channels];
        average_pool(&x, channels, &mut pooled);
        self.classifier.run(&pooled, logits);
        Ok(())
    }
}

/// Runs `net` in float over the calibration batches, observing the input
/// and every conv's output (after batch norm and activation).
fn observe(net: &MobileNet, calibration: &[Tensor]) -> Result<(Observer, Vec<Observer>)> {
    if calibration.is_empty() {
        return Err(Error::InvalidConfig(
            "quantization needs at least one calibration image".into(),
        ));
    }
    let mut input = Observer::new();
    let mut convs = vec![Observer::new(); net.convs().len()];
    for batch in calibration {
        input.observe(batch.data())?;
        let mut i = 0;
        let mut failure = None;
        net.forward_traced(batch, |spec, out| {
            if spec.kind.has_batch_norm() {
                if let Err(e) = convs[i].observe(out.data()) {
                    failure.get_or_insert(e);
                }
                i += 1;
            }
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
    }
    Ok((input, convs))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sum of channel `c` over the pixels, rounded to nearest with
    /// halves away from zero, written out plainly.
    fn naive_pool(input: &[i8], channels: usize) -> Vec<i8> {
        let pixels = input.len() / channels;
        (0..channels)
            .map(|c| {
                let sum: i64 = (0..pixels)
                    .map(|p| i64::from(input[p * channels + c]))
                    .sum();
                let mean = sum as f64 / pixels as f64;
                (mean.abs() + 0.5)
                    .floor()
                    .copysign(mean)
                    .clamp(-128.0, 127.0) as i8
            })
            .collect()
    }

    #[test]
    fn average_pool_rounds_halves_away_from_zero_in_both_storages() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as i8
        };
        // Channel counts below, at and above the 256-channel block; pixel
        // counts that make exact halves possible.
        for (pixels, channels) in [(1, 3), (2, 7), (4, 256), (2, 300), (49, 513), (6, 1)] {
            let input: Vec<i8> = (0..pixels * channels).map(|_| next()).collect();
            let want = naive_pool(&input, channels);
            let mut got = vec![0i8; channels];
            average_pool(&input, channels, &mut got);
            assert_eq!(got, want, "{pixels} pixels of {channels} channels");
            let stored: Vec<u8> = input.iter().map(|&v| u8::store(v)).collect();
            let mut got_u8 = vec![0u8; channels];
            average_pool(&stored, channels, &mut got_u8);
            let back: Vec<i8> = got_u8.iter().map(|&v| v.code() as i8).collect();
            assert_eq!(
                back, want,
                "u8 storage, {pixels} pixels of {channels} channels"
            );
        }
    }
}
