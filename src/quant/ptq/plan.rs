//! An [`Int8MobileNet`] compiled for the fast integer kernels of
//! [`kernels::int8`](crate::kernels::int8) (the ones the uint8 TFLite
//! plan runs on), with the same logits, bit for bit, as
//! [`Int8MobileNet::run_codes`].
//!
//! The kernels take uint8 codes; an int8 code maps onto one exactly by
//! adding 128 (see [`StoredCode`]): activations and zero points move up by
//! 128, symmetric weights become codes with zero point 128, and every
//! difference `x - zero_point` (hence every accumulator) is unchanged. The
//! output stage takes the same per-channel `(multiplier, shift)` and clamp,
//! moved up by 128. The global average pool and the classifier are the
//! reference's own functions, reading the offset codes in place.
//!
//! ```no_run
//! use mobilenet::engine::Parallelism;
//! use mobilenet::quant::plan::QuantizedPlanOptions;
//! use mobilenet::quant::ptq::{file, plan::Int8Plan};
//! let model = file::load("int8.safetensors".as_ref())?;
//! let plan = Int8Plan::compile(&model, &QuantizedPlanOptions::default())?;
//! let par = Parallelism::new(1)?;
//! let mut ws = plan.workspace(&par);
//! let mut codes = vec![0u8; plan.input_len()];
//! plan.quantize_input(&vec![0.0; plan.input_len()], &mut codes)?;
//! let mut logits = vec![0.0; plan.classes()];
//! plan.run(&codes, 1, &mut logits, &mut ws, &par)?;
//! # Ok::<(), mobilenet::Error>(())
//! ```

use std::time::Duration;

use super::model::{Int8Classifier, Int8Conv, Int8MobileNet, average_pool};
use super::scheme::{ActQuant, StoredCode};
use crate::engine::Parallelism;
use crate::error::{Error, Result};
use crate::kernels::int8::im2col::PatchGeometry;
use crate::kernels::int8::{DepthwiseGeometry, OutputQuant};
use crate::model::LayerKind;
use crate::quant::chain::{Chain, ChainSizes, Head, Step, StepOp, StepQuant, refuse, resolve_isa};
use crate::quant::plan::{QuantizedPlanOptions, QuantizedStepInfo, QuantizedWorkspace};

/// The zero point of symmetric int8 weights as uint8 codes.
const WEIGHT_ZERO_POINT: i32 = 128;

/// An int8 MobileNet compiled for one
/// [`IntIsa`](crate::kernels::int8::IntIsa). See the module docs.
#[derive(Debug)]
pub struct Int8Plan {
    chain: Chain<ClassifierHead>,
    input: ActQuant,
    classes: usize,
}

/// Global average pool and classifier: the last conv's codes into f32
/// logits, the pooled codes kept as the image's record.
#[derive(Debug)]
struct ClassifierHead {
    classifier: Int8Classifier,
    channels: usize,
}

impl Head for ClassifierHead {
    type Out = f32;
    fn run(&self, src: &[u8], out: &mut [f32], pooled: &mut [u8]) -> Result<()> {
        average_pool(src, self.channels, pooled);
        let pooled: &[u8] = pooled;
        self.classifier.run(pooled, out);
        Ok(())
    }
}

impl Int8Plan {
    /// Compiles `model` for `options.isa` (or the best detected): packs
    /// every weight and sizes every buffer.
    ///
    /// Fails with [`Error::InvalidConfig`] for an unsupported ISA or
    /// inconsistent layers, [`Error::Format`] for a layer the kernels
    /// cannot reproduce exactly (an output stage that could overflow where
    /// the reference saturates; no calibrated model has one).
    pub fn compile(model: &Int8MobileNet, options: &QuantizedPlanOptions) -> Result<Int8Plan> {
        let isa = resolve_isa(options.isa)?;
        let steps = model
            .convs
            .iter()
            .map(|conv| conv_step(isa, conv))
            .collect::<Result<Vec<_>>>()?;
        let Some(last) = model.convs.last() else {
            return Err(refuse("this int8 model", "it has no convolutions"));
        };
        let [h, w, channels] = last.spec.output;
        let classes = model.classes();
        model.classifier.validate(channels, classes)?;
        let head = ClassifierHead {
            classifier: model.classifier.clone(),
            channels,
        };
        let head_info = QuantizedStepInfo {
            name: "fc".into(),
            kind: "avg_pool+fc",
            mult_adds: (h * w * channels + channels * classes) as u64,
            shape: vec![1, classes],
        };
        let sizes = ChainSizes {
            input: model.input_len(),
            output: classes,
            record: channels,
        };
        let chain = Chain::new(
            isa,
            steps,
            head,
            head_info,
            sizes,
            options.min_parallel_mult_adds,
        )?;
        Ok(Int8Plan {
            chain,
            input: model.input,
            classes,
        })
    }

    /// The instruction set the weights were packed for.
    pub fn isa(&self) -> crate::kernels::int8::IntIsa {
        self.chain.isa()
    }

    /// Input codes of one image (`R * R * 3`).
    pub fn input_len(&self) -> usize {
        self.chain.input_len()
    }

    /// Logits per image.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The steps in execution order: one per conv, then pool + classifier.
    pub fn steps(&self) -> impl ExactSizeIterator<Item = &QuantizedStepInfo> {
        self.chain.steps()
    }

    /// Mult-adds of one image.
    pub fn mult_adds(&self) -> u64 {
        self.steps().map(|s| s.mult_adds).sum()
    }

    /// Buffers for running this plan with one lane per thread of `par`.
    pub fn workspace(&self, par: &Parallelism) -> QuantizedWorkspace {
        self.chain.workspace(par)
    }

    /// Quantizes float images (preprocessed, NHWC) into the plan's input
    /// codes: [`Int8MobileNet::quantize_input`] offset by 128.
    ///
    /// Fails with [`Error::Shape`] if the lengths differ.
    pub fn quantize_input(&self, images: &[f32], codes: &mut [u8]) -> Result<()> {
        if images.len() != codes.len() {
            return Err(Error::Shape(format!(
                "{} image values for {} codes",
                images.len(),
                codes.len()
            )));
        }
        for (c, &x) in codes.iter_mut().zip(images) {
            *c = u8::store(self.input.quantize(x));
        }
        Ok(())
    }

    /// Runs `batch` images of input codes (batch-major, from
    /// [`Int8Plan::quantize_input`]) into `logits` (`batch * classes`).
    /// With more than one thread, images are split across threads when
    /// there are enough, otherwise each step is.
    ///
    /// Fails with [`Error::Shape`] if a length is wrong or `ws` was made
    /// for another plan.
    pub fn run(
        &self,
        codes: &[u8],
        batch: usize,
        logits: &mut [f32],
        ws: &mut QuantizedWorkspace,
        par: &Parallelism,
    ) -> Result<()> {
        self.chain.run(codes, batch, logits, ws, par)
    }

    /// [`Int8Plan::run`] that adds each step's wall time to `times` (one
    /// entry per step of [`Int8Plan::steps`], summed over the images).
    ///
    /// Fails as [`Int8Plan::run`], and with [`Error::Shape`] if `times`
    /// does not have one entry per step.
    pub fn run_profiled(
        &self,
        codes: &[u8],
        batch: usize,
        logits: &mut [f32],
        ws: &mut QuantizedWorkspace,
        par: &Parallelism,
        times: &mut [Duration],
    ) -> Result<()> {
        self.chain
            .run_profiled(codes, batch, logits, ws, par, times)
    }
}

/// The packed step of one conv.
fn conv_step(isa: crate::kernels::int8::IntIsa, conv: &Int8Conv) -> Result<Step> {
    let s = &conv.spec;
    let ([h, w, c_in], [oh, ow, c_out]) = (s.input, s.output);
    let k = s.kernel;
    let what = format!("{} '{}'", s.kind, s.name);
    let per_out = match s.kind {
        LayerKind::Depthwise => k * k,
        _ => c_in * k * k,
    };
    if conv.weight.len() != c_out * per_out
        || conv.bias.len() != c_out
        || conv.requant.len() != c_out
    {
        return Err(Error::InvalidConfig(format!(
            "int8 model: {}: {} weights, {} biases and {} multipliers for {c_out} channels of \
             {per_out}",
            s.name,
            conv.weight.len(),
            conv.bias.len(),
            conv.requant.len()
        )));
    }
    for (c, ((&bias, taps), &requant)) in conv
        .bias
        .iter()
        .zip(conv.weight.chunks_exact(per_out))
        .zip(&conv.requant)
        .enumerate()
    {
        if !epilogue_is_exact(bias, taps, requant) {
            return Err(refuse(
                &what,
                &format!(
                    "channel {c} may requantize past the i32 range, where the kernels wrap and \
                     the reference saturates"
                ),
            ));
        }
    }
    let (multipliers, shifts): (Vec<i32>, Vec<i32>) = conv.requant.iter().copied().unzip();
    let quant = StepQuant {
        weight_zero_point: WEIGHT_ZERO_POINT,
        input_zero_point: conv.input.zero_point + 128,
        bias: &conv.bias,
        output: OutputQuant::new(
            &multipliers,
            &shifts,
            conv.output.zero_point + 128,
            i32::from(u8::store(conv.clamp.0)),
            i32::from(u8::store(conv.clamp.1)),
        )?,
    };
    let stride = [s.stride; 2];
    let pad = [s.padding.top, s.padding.left];
    let (op, mult_adds) = match s.kind {
        LayerKind::Depthwise => {
            if k != 3 || c_in != c_out {
                return Err(refuse(
                    &what,
                    "only 3x3 depthwise convs with as many outputs as inputs are planned",
                ));
            }
            // [C][1][3][3] to tap-major [3][3][C].
            let weights: Vec<u8> = (0..9)
                .flat_map(|t| (0..c_out).map(move |c| u8::store(conv.weight[c * 9 + t])))
                .collect();
            let geom = DepthwiseGeometry {
                input: [h, w],
                output: [oh, ow],
                stride,
                pad,
                channels: c_out,
            };
            StepOp::depthwise(isa, &weights, geom, quant)?
        }
        LayerKind::Conv | LayerKind::Pointwise => {
            // [C_out][C_in][K][K] to im2col's patch order [C_out][K][K][C_in].
            let taps = k * k;
            let weights: Vec<u8> = (0..c_out)
                .flat_map(|o| {
                    (0..taps).flat_map(move |t| {
                        (0..c_in).map(move |i| u8::store(conv.weight[(o * c_in + i) * taps + t]))
                    })
                })
                .collect();
            let geom = PatchGeometry {
                input: [h, w],
                channels: c_in,
                kernel: [k, k],
                stride,
                dilation: [1, 1],
                pad,
                output: [oh, ow],
            };
            StepOp::conv(isa, &weights, c_out, geom, quant)?
        }
        _ => return Err(refuse(&what, "it is not a convolution")),
    };
    Ok(Step {
        op,
        info: QuantizedStepInfo {
            name: s.name.clone(),
            kind: s.kind.name(),
            mult_adds,
            shape: vec![1, oh, ow, c_out],
        },
        out_len: oh * ow * c_out,
    })
}

/// Whether the kernels' output stage gives the reference's code for every
/// accumulator one channel can reach. Both rescale the same i32
/// accumulator; the reference then adds the output zero point saturating,
/// the kernels (on codes offset by 128) wrapping, which differ only for a
/// rescaled value within 255 of `i32::MAX`. That takes a multiplier of at
/// least 1/2 and an accumulator near the i32 limits, which no calibrated
/// layer has; bounding `|acc| <= |bias| + 255 Σ |w|` rules it out.
fn epilogue_is_exact(bias: i32, weights: &[i8], (multiplier, shift): (i32, i32)) -> bool {
    let taps: i128 = weights.iter().map(|&w| i128::from(w.unsigned_abs())).sum();
    let reach = i128::from(bias.unsigned_abs()) + 255 * taps;
    let left = shift.clamp(0, 30);
    let right = shift.saturating_neg().clamp(0, 31);
    // Past 2^31 the shifted accumulator may wrap to any i32.
    let shifted = (reach << left).min(1 << 31);
    let high = ((shifted * i128::from(multiplier.unsigned_abs())) >> 31) + 1;
    let rescaled = (high >> right) + 1;
    rescaled + 255 <= i128::from(i32::MAX)
}
