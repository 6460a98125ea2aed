//! Recognising MobileNet v1 in a TFLite operator list and turning it into a
//! [`MobileNet`].
//!
//! The importer walks the operators in order and accepts exactly the chain
//! of MobileNet v1: a 3x3 stride-2 `CONV_2D` stem, 13 pairs of a 3x3
//! `DEPTHWISE_CONV_2D` and a 1x1 `CONV_2D`, an `AVERAGE_POOL_2D` over the
//! whole map, then the head: a 1x1 `CONV_2D` to the classes, `RESHAPE` or
//! `SQUEEZE`, `SOFTMAX`. Each operator must read the previous one's output,
//! so the walk visits every operator once and cannot loop. α, the
//! resolution and the number of classes come from the tensors, and every
//! layer is checked against [`Architecture::new`] for them.
//!
//! Quantized files (uint8, or int8) are dequantized to float:
//! `(q - zero_point) * scale`, per tensor or per axis, int32 biases with
//! their own scale. ReLU6 is then implied by each layer's output range,
//! which must be [0, 6].

use super::flatbuffer::format_err;
use super::labels::find_labels;
use super::schema::{
    ConvOptions, Fused, Model, Operator, Padding, PoolOptions, Quantization, SubGraph, TensorDef,
    TensorType, int_list, op, op_name, options, softmax_beta,
};
use crate::error::{Error, Result};
use crate::formats::{LoadedModel, ModelMetadata};
use crate::layers::BatchNorm;
use crate::model::architecture::SEPARABLE_BLOCKS;
use crate::model::network::{Classifier, ConvBn};
use crate::model::{Architecture, LayerKind, MobileNet, MobileNetConfig};
use crate::tensor::Tensor;

/// How far a quantized layer's output range may be from [0, 6] and still
/// count as ReLU6 (uint8 files use 6/255 * 255 = 5.99976...).
const RELU6_RANGE_TOLERANCE: f64 = 1e-2;

/// The largest relative difference we accept between an int32 bias scale
/// and input scale * weight scale (TFLite's kernels assume they are equal).
const BIAS_SCALE_TOLERANCE: f64 = 1e-3;

/// Parses a `.tflite` file into a float MobileNet.
pub(crate) fn load(bytes: &[u8]) -> Result<LoadedModel> {
    let mut g = Graph::open(bytes)?;
    let body = g.body()?;
    if g.at_end() {
        return Err(format_err(
            "the file ends at the average pool (an embedding extractor); join it with its \
             head file (load_tflite_with_head)",
        ));
    }
    let head = g.head(body.channels())?;
    g.finish()?;
    let labels = find_labels(bytes, head.classes());
    assemble(&g, body, head, labels)
}

/// Joins an embedding extractor (ending at the average pool) and a head.
pub(crate) fn load_with_head(extractor: &[u8], head_file: &[u8]) -> Result<LoadedModel> {
    let (g, body) = in_part("extractor", || {
        let mut g = Graph::open(extractor)?;
        let body = g.body()?;
        g.finish()?;
        Ok((g, body))
    })?;
    let pooled = &g.current;
    let head = in_part("head", || {
        let mut h = Graph::open(head_file)?;
        let c = body.channels();
        h.expect_shape(&h.current, &[1, 1, 1, c], "its input")?;
        if h.current.dtype != pooled.dtype {
            return Err(format_err(format!(
                "its input is {}, the extractor's output {}",
                h.current.dtype.name(),
                pooled.dtype.name()
            )));
        }
        if h.current.quantization != pooled.quantization {
            return Err(format_err(format!(
                "its input quantization {:?} differs from the extractor's output {:?}",
                h.current.quantization, pooled.quantization
            )));
        }
        let head = h.head(c)?;
        h.finish()?;
        Ok(head)
    })?;
    let classes = head.classes();
    let labels = find_labels(head_file, classes).or_else(|| find_labels(extractor, classes));
    assemble(&g, body, head, labels)
}

/// Runs `f`, naming `part` (`extractor`, `head`) in its format errors.
fn in_part<T>(part: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    f().map_err(|e| match e {
        Error::Format(m) => {
            let rest = m.strip_prefix("tflite: ").unwrap_or(&m);
            Error::Format(format!("tflite: {part} file: {rest}"))
        }
        other => other,
    })
}

/// One convolution as read from the file, weights already dequantized and
/// moved to our layout (OIHW; depthwise `[C, 1, 3, 3]`).
struct ConvLayer {
    op: usize,
    kind: LayerKind,
    kernel: usize,
    stride: usize,
    in_channels: usize,
    out_channels: usize,
    out_hw: [usize; 2],
    weight: Tensor,
    bias: Vec<f32>,
}

/// Stem and separable blocks.
struct Body {
    convs: Vec<ConvLayer>,
}

impl Body {
    fn channels(&self) -> usize {
        self.convs.last().map_or(0, |c| c.out_channels)
    }
}

/// The classifier.
struct Head {
    weight: Tensor,
    bias: Vec<f32>,
}

impl Head {
    fn classes(&self) -> usize {
        self.bias.len()
    }
}

/// A subgraph being walked: the current activation tensor and the next
/// operator.
struct Graph<'a> {
    model: Model<'a>,
    sub: SubGraph<'a>,
    n_codes: usize,
    n_ops: usize,
    next: usize,
    outputs: Vec<i32>,
    /// The activation tensor the next operator must read.
    current: TensorDef,
    /// Whether activations are quantized (uint8 / int8).
    quantized: bool,
}

/// What a convolution in the chain should be.
#[derive(Clone, Copy)]
enum Role {
    Stem,
    Depthwise,
    Pointwise,
    Classifier,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Stem => "the 3x3 stem convolution",
            Role::Depthwise => "a 3x3 depthwise convolution",
            Role::Pointwise => "a 1x1 pointwise convolution",
            Role::Classifier => "the 1x1 classifier convolution",
        }
    }
}

impl<'a> Graph<'a> {
    fn open(bytes: &'a [u8]) -> Result<Graph<'a>> {
        let model = Model::parse(bytes)?;
        let version = model.version()?;
        if version != 3 {
            return Err(format_err(format!(
                "schema version {version} is not supported (expected 3)"
            )));
        }
        let subgraphs = model.subgraphs()?.len();
        if subgraphs != 1 {
            return Err(format_err(format!(
                "the file has {subgraphs} subgraphs, expected exactly 1"
            )));
        }
        let n_codes = model.operator_code_count()?;
        let sub = model.subgraph(0)?;
        let inputs = sub.inputs()?;
        let outputs = sub.outputs()?;
        let [input] = inputs[..] else {
            return Err(format_err(format!(
                "the subgraph has {} inputs, expected 1",
                inputs.len()
            )));
        };
        if outputs.len() != 1 {
            return Err(format_err(format!(
                "the subgraph has {} outputs, expected 1",
                outputs.len()
            )));
        }
        let current = sub.tensor(input)?;
        let quantized = match current.dtype {
            TensorType::Float32 => false,
            TensorType::Uint8 | TensorType::Int8 => true,
            other => {
                return Err(format_err(format!(
                    "the input {} is {}; only FLOAT32, UINT8 and INT8 models are supported",
                    current.describe(),
                    other.name()
                )));
            }
        };
        let n_ops = sub.operators()?.len();
        let g = Graph {
            model,
            sub,
            n_codes,
            n_ops,
            next: 0,
            outputs,
            current,
            quantized,
        };
        if quantized {
            g.activation_quant(&g.current.clone(), "the model input")?;
        }
        Ok(g)
    }

    fn err(&self, msg: impl std::fmt::Display) -> Error {
        format_err(msg)
    }

    fn at_end(&self) -> bool {
        self.next >= self.n_ops
    }

    /// The built-in code of operator `i` (without consuming it).
    fn code_of(&self, i: usize) -> Result<(i32, String, Operator<'a>)> {
        let o = self.sub.operator(i)?;
        let index = usize::try_from(o.opcode_index)
            .ok()
            .filter(|&c| c < self.n_codes)
            .ok_or_else(|| {
                self.err(format!(
                    "operator {i}: opcode index {} out of range (the file has {} operator codes)",
                    o.opcode_index, self.n_codes
                ))
            })?;
        let code = self.model.operator_code(index)?;
        Ok((code.code, code.name(), o))
    }

    /// The next operator's code, if any.
    fn peek(&self) -> Result<Option<i32>> {
        if self.at_end() {
            return Ok(None);
        }
        Ok(Some(self.code_of(self.next)?.0))
    }

    /// Takes the next operator, which must be one of `codes` and read the
    /// current tensor as its first input.
    fn take(&mut self, codes: &[i32], what: &str) -> Result<(usize, i32, Operator<'a>)> {
        let i = self.next;
        if self.at_end() {
            return Err(self.err(format!(
                "the operator list ends after {i} operators, expected {what}"
            )));
        }
        let (code, name, o) = self.code_of(i)?;
        if !codes.contains(&code) {
            let known = [
                op::CONV_2D,
                op::DEPTHWISE_CONV_2D,
                op::AVERAGE_POOL_2D,
                op::RESHAPE,
                op::SQUEEZE,
                op::SOFTMAX,
            ];
            let note = if known.contains(&code) {
                ""
            } else {
                " (an operator MobileNet v1 does not use)"
            };
            return Err(self.err(format!("operator {i} is {name}{note}, expected {what}")));
        }
        let first = o.inputs.first().copied();
        if first != Some(self.current.index) {
            let reads = first.map_or("no tensor".into(), |t| format!("tensor {t}"));
            return Err(self.err(format!(
                "operator {i} ({name}) reads {reads}, expected the output of the previous layer \
                 ({})",
                self.current.describe()
            )));
        }
        if o.outputs.len() != 1 {
            return Err(self.err(format!(
                "operator {i} ({name}) has {} outputs, expected 1",
                o.outputs.len()
            )));
        }
        self.next += 1;
        Ok((i, code, o))
    }

    /// The options table of an operator, checked to be of union type `tag`.
    fn options(
        &self,
        i: usize,
        o: &Operator<'a>,
        tag: u8,
    ) -> Result<Option<super::flatbuffer::Table<'a>>> {
        if o.options_type == 0 {
            return Ok(None);
        }
        if o.options_type != tag {
            return Err(self.err(format!(
                "operator {i} ({}): options of union type {}, expected {tag}",
                op_name(self.code_of(i)?.0),
                o.options_type
            )));
        }
        Ok(o.options)
    }

    fn tensor(&self, index: i32) -> Result<TensorDef> {
        self.sub.tensor(index)
    }

    fn expect_shape(&self, t: &TensorDef, shape: &[usize], what: &str) -> Result<()> {
        if t.shape != shape {
            return Err(self.err(format!(
                "{} ({what}) has shape {:?}, expected {shape:?}",
                t.describe(),
                t.shape
            )));
        }
        Ok(())
    }

    /// The output activation of operator `i`: the right element type, and
    /// (quantized) a per-tensor quantization.
    fn activation(&self, i: usize, o: &Operator<'a>) -> Result<TensorDef> {
        let index = o.outputs.first().copied().unwrap_or(-1);
        let t = self.tensor(index)?;
        if t.dtype != self.current.dtype {
            return Err(self.err(format!(
                "operator {i}: output {} is {}, expected {} like the model input",
                t.describe(),
                t.dtype.name(),
                self.current.dtype.name()
            )));
        }
        if self.quantized {
            self.activation_quant(&t, &format!("operator {i}'s output"))?;
        }
        Ok(t)
    }

    /// The per-tensor `(scale, zero_point)` of a quantized activation.
    fn activation_quant(&self, t: &TensorDef, what: &str) -> Result<(f64, i64)> {
        let q = self.quant(t, what)?;
        match (&q.scale[..], &q.zero_point[..]) {
            ([s], [z]) => Ok((f64::from(*s), *z)),
            _ => Err(self.err(format!(
                "{} ({what}) is quantized per axis; activations must be quantized per tensor",
                t.describe()
            ))),
        }
    }

    /// The quantization of a quantized tensor (its counts were checked
    /// when it was read), with every scale finite and > 0 and every zero
    /// point within the element type's range.
    fn quant<'t>(&self, t: &'t TensorDef, what: &str) -> Result<&'t Quantization> {
        let q = t.quantization.as_ref().ok_or_else(|| {
            self.err(format!(
                "{} ({what}) is {} but has no quantization parameters",
                t.describe(),
                t.dtype.name()
            ))
        })?;
        if let Some(s) = q.scale.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(self.err(format!(
                "{} ({what}): quantization scale {s} is not finite and positive",
                t.describe()
            )));
        }
        let (lo, hi) = match t.dtype {
            TensorType::Uint8 => (0, 255),
            TensorType::Int8 => (-128, 127),
            _ => (i64::from(i32::MIN), i64::from(i32::MAX)),
        };
        if let Some(z) = q.zero_point.iter().find(|z| !(lo..=hi).contains(*z)) {
            return Err(self.err(format!(
                "{} ({what}): zero point {z} is outside [{lo}, {hi}] for {}",
                t.describe(),
                t.dtype.name()
            )));
        }
        Ok(q)
    }

    /// The values of a constant tensor as f32: float32 read as is,
    /// integers dequantized. Refuses missing or wrongly sized data and
    /// non-finite values.
    fn constant(&self, t: &TensorDef, allowed: &[TensorType], what: &str) -> Result<Vec<f32>> {
        if !allowed.contains(&t.dtype) {
            let names: Vec<String> = allowed.iter().map(|d| d.name()).collect();
            return Err(self.err(format!(
                "{} ({what}) is {}, expected {}",
                t.describe(),
                t.dtype.name(),
                names.join(" or ")
            )));
        }
        let size = t.dtype.size().unwrap_or(1);
        let numel = t.numel().ok_or_else(|| {
            self.err(format!(
                "{} ({what}): shape {:?} overflows",
                t.describe(),
                t.shape
            ))
        })?;
        let data = self.model.buffer_data(t.buffer)?;
        let expected = numel.checked_mul(size);
        if data.is_empty() {
            return Err(self.err(format!(
                "{} ({what}) has no data (buffer {})",
                t.describe(),
                t.buffer
            )));
        }
        if expected != Some(data.len()) {
            return Err(self.err(format!(
                "{} ({what}): buffer {} holds {} bytes, shape {:?} of {} needs {}",
                t.describe(),
                t.buffer,
                data.len(),
                t.shape,
                t.dtype.name(),
                numel.saturating_mul(size)
            )));
        }
        let values: Vec<f32> = match t.dtype {
            TensorType::Float32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            TensorType::Uint8 | TensorType::Int8 | TensorType::Int32 => {
                dequantize(data, t.dtype, &t.shape, self.quant(t, what)?)
            }
            TensorType::Other(_) => Vec::new(),
        };
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(self.err(format!(
                "{} ({what}) holds a non-finite value ({v}) at element {i}",
                t.describe()
            )));
        }
        Ok(values)
    }

    /// Checks that a conv's fused activation (and, quantized, its output
    /// range) gives ReLU6, or no activation for the classifier.
    fn check_activation(&self, i: usize, fused: Fused, out: &TensorDef, relu6: bool) -> Result<()> {
        if !relu6 {
            if fused != Fused::None {
                return Err(self.err(format!(
                    "operator {i} (the classifier) has fused activation {fused:?}, expected none"
                )));
            }
            return Ok(());
        }
        if !self.quantized {
            if fused != Fused::Relu6 {
                return Err(self.err(format!(
                    "operator {i} has fused activation {fused:?}, expected RELU6"
                )));
            }
            return Ok(());
        }
        if !matches!(fused, Fused::None | Fused::Relu | Fused::Relu6) {
            return Err(self.err(format!(
                "operator {i} has fused activation {fused:?}, expected RELU6 (or none, with the \
                 output range [0, 6])"
            )));
        }
        let (scale, zp) = self.activation_quant(out, &format!("operator {i}'s output"))?;
        let (qmin, qmax) = if out.dtype == TensorType::Uint8 {
            (0, 255)
        } else {
            (-128, 127)
        };
        let lo = (qmin - zp) as f64 * scale;
        let hi = (qmax - zp) as f64 * scale;
        if lo != 0.0 || (hi - 6.0).abs() > RELU6_RANGE_TOLERANCE {
            return Err(self.err(format!(
                "operator {i}: output {} covers [{lo}, {hi}], not the ReLU6 range [0, 6]",
                out.describe()
            )));
        }
        Ok(())
    }

    /// The next convolution, which must be `role`.
    fn conv(&mut self, role: Role) -> Result<ConvLayer> {
        let depthwise = matches!(role, Role::Depthwise);
        let code = if depthwise {
            op::DEPTHWISE_CONV_2D
        } else {
            op::CONV_2D
        };
        let (i, _, o) = self.take(&[code], role.name())?;
        let name = op_name(code);
        let opts = if depthwise {
            match self.options(i, &o, options::DEPTHWISE_CONV_2D)? {
                Some(t) => ConvOptions::depthwise(t, &format!("operator {i}"))?,
                None => return Err(self.err(format!("operator {i} ({name}) has no options"))),
            }
        } else {
            match self.options(i, &o, options::CONV_2D)? {
                Some(t) => ConvOptions::conv(t, &format!("operator {i}"))?,
                None => return Err(self.err(format!("operator {i} ({name}) has no options"))),
            }
        };
        let kernel = match role {
            Role::Stem | Role::Depthwise => 3,
            Role::Pointwise | Role::Classifier => 1,
        };
        let [n, h, w, c_in] = match self.current.shape[..] {
            [n, h, w, c] if n >= 1 => [n, h, w, c],
            _ => {
                return Err(self.err(format!(
                    "operator {i} ({name}): input {} has shape {:?}, expected [1, H, W, C]",
                    self.current.describe(),
                    self.current.shape
                )));
            }
        };
        // Options: padding SAME (1x1 convs are the same either way),
        // square stride, no dilation, depth multiplier 1.
        if kernel == 3 && opts.padding != Padding::Same {
            return Err(self.err(format!(
                "operator {i} ({name}) has padding {:?}, expected SAME",
                opts.padding
            )));
        }
        if matches!(opts.padding, Padding::Other(_)) {
            return Err(self.err(format!(
                "operator {i} ({name}) has unknown padding {:?}",
                opts.padding
            )));
        }
        if opts.dilation != [1, 1] {
            return Err(self.err(format!(
                "operator {i} ({name}) has dilation {:?}, expected [1, 1]",
                opts.dilation
            )));
        }
        let stride = match opts.stride {
            [s, t] if s == t && (1..=2).contains(&s) => s as usize,
            other => {
                return Err(self.err(format!(
                    "operator {i} ({name}) has stride {other:?}, expected 1 or 2 in both directions"
                )));
            }
        };
        if depthwise && !matches!(opts.depth_multiplier, 0 | 1) {
            return Err(self.err(format!(
                "operator {i} ({name}) has depth multiplier {}, expected 1",
                opts.depth_multiplier
            )));
        }
        if !(2..=3).contains(&o.inputs.len()) {
            return Err(self.err(format!(
                "operator {i} ({name}) has {} inputs, expected input, weights and bias",
                o.inputs.len()
            )));
        }
        // Weights.
        let wt = self.tensor(o.inputs.get(1).copied().unwrap_or(-1))?;
        let weight_types: &[TensorType] = if self.quantized {
            &[TensorType::Uint8, TensorType::Int8]
        } else {
            &[TensorType::Float32]
        };
        let (c_out, wshape) = if depthwise {
            let c = *wt.shape.last().unwrap_or(&0);
            (c, [1, 3, 3, c_in])
        } else {
            let c = *wt.shape.first().unwrap_or(&0);
            (c, [c, kernel, kernel, c_in])
        };
        if c_out == 0 {
            return Err(self.err(format!(
                "operator {i} ({name}): weights {} have shape {:?}",
                wt.describe(),
                wt.shape
            )));
        }
        self.expect_shape(&wt, &wshape, &format!("operator {i}'s weights"))?;
        let values = self.constant(&wt, weight_types, &format!("operator {i}'s weights"))?;
        // Bias (optional: index -1 or absent).
        let bias = match o.inputs.get(2) {
            Some(&b) if b >= 0 => {
                let bt = self.tensor(b)?;
                self.expect_shape(&bt, &[c_out], &format!("operator {i}'s bias"))?;
                let bias_types: &[TensorType] = if self.quantized {
                    &[TensorType::Int32]
                } else {
                    &[TensorType::Float32]
                };
                let values = self.constant(&bt, bias_types, &format!("operator {i}'s bias"))?;
                if self.quantized {
                    self.check_bias_scale(i, &bt, &wt)?;
                }
                values
            }
            _ => vec![0.0; c_out],
        };
        // Output.
        let out = self.activation(i, &o)?;
        let (oh, ow) = (h.div_ceil(stride), w.div_ceil(stride));
        self.expect_shape(&out, &[n, oh, ow, c_out], &format!("operator {i}'s output"))?;
        self.check_activation(i, opts.fused, &out, !matches!(role, Role::Classifier))?;
        // Move the weights to our layout.
        let weight = if depthwise {
            // [1, 3, 3, C] -> [C, 1, 3, 3]
            Tensor::from_fn(vec![c_out, 1, 3, 3], |j| {
                let (ch, tap) = (j / 9, j % 9);
                values.get(tap * c_out + ch).copied().unwrap_or(0.0)
            })
        } else {
            // OHWI [O, K, K, I] -> OIHW [O, I, K, K]
            let kk = kernel * kernel;
            Tensor::from_fn(vec![c_out, c_in, kernel, kernel], |j| {
                let (oc, rest) = (j / (c_in * kk), j % (c_in * kk));
                let (ic, tap) = (rest / kk, rest % kk);
                values
                    .get((oc * kk + tap) * c_in + ic)
                    .copied()
                    .unwrap_or(0.0)
            })
        }
        .map_err(|e| self.err(format!("operator {i} ({name}): {e}")))?;
        self.current = out;
        Ok(ConvLayer {
            op: i,
            kind: match role {
                Role::Stem => LayerKind::Conv,
                Role::Depthwise => LayerKind::Depthwise,
                Role::Pointwise | Role::Classifier => LayerKind::Pointwise,
            },
            kernel,
            stride,
            in_channels: c_in,
            out_channels: c_out,
            out_hw: [oh, ow],
            weight,
            bias,
        })
    }

    /// TFLite's integer kernels use input scale * weight scale for the
    /// bias, whatever the bias tensor says: refuse files where the two
    /// differ, since running them as float would not be the same network.
    fn check_bias_scale(&self, i: usize, bias: &TensorDef, weight: &TensorDef) -> Result<()> {
        let (in_scale, _) = self.activation_quant(&self.current, "the layer input")?;
        let bq = self.quant(bias, &format!("operator {i}'s bias"))?;
        let wq = self.quant(weight, &format!("operator {i}'s weights"))?;
        let scale = |v: &[f32], c: usize| f64::from(*v.get(c).or(v.first()).unwrap_or(&0.0));
        for c in 0..bq.scale.len().max(wq.scale.len()) {
            let (bs, expected) = (scale(&bq.scale, c), in_scale * scale(&wq.scale, c));
            if ((bs - expected) / expected).abs() > BIAS_SCALE_TOLERANCE {
                return Err(self.err(format!(
                    "operator {i}: bias {} channel {c} has scale {bs}, expected input scale * \
                     weight scale = {expected}",
                    bias.describe()
                )));
            }
        }
        Ok(())
    }

    /// Stem, 13 separable blocks (or however many the file has: checked
    /// against the architecture later) and the global average pool.
    fn body(&mut self) -> Result<Body> {
        let [_, h, w, c] = match self.current.shape[..] {
            [1, h, w, c] => [1, h, w, c],
            _ => {
                return Err(self.err(format!(
                    "the input {} has shape {:?}, expected [1, R, R, 3]",
                    self.current.describe(),
                    self.current.shape
                )));
            }
        };
        if h != w || c != 3 {
            return Err(self.err(format!(
                "the input {} has shape {:?}, expected a square RGB image [1, R, R, 3]",
                self.current.describe(),
                self.current.shape
            )));
        }
        let mut convs = vec![self.conv(Role::Stem)?];
        while self.peek()? == Some(op::DEPTHWISE_CONV_2D) {
            // Operators may share tables and tensors, so a small file could
            // describe an endless chain reusing one big weight buffer: stop
            // where MobileNet v1 does.
            if convs.len() > 2 * SEPARABLE_BLOCKS.len() {
                return Err(self.err(format!(
                    "operator {}: more than the {} depthwise-separable blocks of MobileNet v1",
                    self.next,
                    SEPARABLE_BLOCKS.len()
                )));
            }
            convs.push(self.conv(Role::Depthwise)?);
            convs.push(self.conv(Role::Pointwise)?);
        }
        self.global_pool()?;
        Ok(Body { convs })
    }

    /// `AVERAGE_POOL_2D` over the whole map, to `[1, 1, 1, C]`.
    fn global_pool(&mut self) -> Result<()> {
        let what = "a depthwise convolution or the average pool";
        let (i, _, o) = self.take(&[op::AVERAGE_POOL_2D], what)?;
        let opts = match self.options(i, &o, options::POOL_2D)? {
            Some(t) => PoolOptions::parse(t, &format!("operator {i}"))?,
            None => return Err(self.err(format!("operator {i} (AVERAGE_POOL_2D) has no options"))),
        };
        let [n, h, w, c] = match self.current.shape[..] {
            [n, h, w, c] => [n, h, w, c],
            _ => return Err(self.err(format!("operator {i}: input is not [N, H, W, C]"))),
        };
        let filter_ok = [i32::try_from(h).ok(), i32::try_from(w).ok()]
            == [Some(opts.filter[0]), Some(opts.filter[1])];
        if !filter_ok || matches!(opts.padding, Padding::Other(_)) || opts.fused != Fused::None {
            return Err(self.err(format!(
                "operator {i} (AVERAGE_POOL_2D) has filter {:?}, padding {:?} and activation \
                 {:?}; expected a {h}x{w} filter covering the whole map and no activation",
                opts.filter, opts.padding, opts.fused
            )));
        }
        let out = self.activation(i, &o)?;
        self.expect_shape(&out, &[n, 1, 1, c], &format!("operator {i}'s output"))?;
        self.current = out;
        Ok(())
    }

    /// The classifier, `RESHAPE`/`SQUEEZE` to `[1, classes]`, `SOFTMAX`.
    fn head(&mut self, channels: usize) -> Result<Head> {
        self.expect_shape(
            &self.current.clone(),
            &[1, 1, 1, channels],
            "the pooled features",
        )?;
        let fc = self.conv(Role::Classifier)?;
        let classes = fc.out_channels;
        let what = "RESHAPE or SQUEEZE to [1, classes]";
        let (i, code, o) = self.take(&[op::RESHAPE, op::SQUEEZE], what)?;
        if code == op::RESHAPE {
            if o.inputs.len() > 2 {
                return Err(self.err(format!("operator {i} (RESHAPE) has too many inputs")));
            }
            if let Some(t) = self.options(i, &o, options::RESHAPE)? {
                int_list(t, &format!("operator {i}"))?;
            }
        } else {
            if o.inputs.len() != 1 {
                return Err(self.err(format!("operator {i} (SQUEEZE) has too many inputs")));
            }
            if let Some(t) = self.options(i, &o, options::SQUEEZE)? {
                int_list(t, &format!("operator {i}"))?;
            }
        }
        let out = self.activation(i, &o)?;
        self.expect_shape(&out, &[1, classes], &format!("operator {i}'s output"))?;
        if self.quantized && out.quantization != self.current.quantization {
            return Err(self.err(format!(
                "operator {i} ({}) changes the quantization",
                op_name(code)
            )));
        }
        self.current = out;
        let (i, _, o) = self.take(&[op::SOFTMAX], "SOFTMAX")?;
        let beta = match self.options(i, &o, options::SOFTMAX)? {
            Some(t) => softmax_beta(t, &format!("operator {i}"))?,
            None => 0.0,
        };
        if beta != 1.0 {
            return Err(self.err(format!(
                "operator {i} (SOFTMAX) has beta {beta}, expected 1"
            )));
        }
        let out = self.activation(i, &o)?;
        self.expect_shape(&out, &[1, classes], &format!("operator {i}'s output"))?;
        self.current = out;
        let weight = fc
            .weight
            .reshape(vec![classes, channels])
            .map_err(|e| self.err(e))?;
        Ok(Head {
            weight,
            bias: fc.bias,
        })
    }

    /// Checks that no operator is left and the last output is the
    /// subgraph's output.
    fn finish(&self) -> Result<()> {
        if !self.at_end() {
            let (_, name, _) = self.code_of(self.next)?;
            return Err(self.err(format!(
                "unexpected operator {} ({name}) after the end of the network",
                self.next
            )));
        }
        if self.outputs != [self.current.index] {
            return Err(self.err(format!(
                "the subgraph output is tensor {:?}, not the last layer's output ({})",
                self.outputs,
                self.current.describe()
            )));
        }
        Ok(())
    }

    fn resolution(&self) -> Result<usize> {
        let input = self.sub.inputs()?;
        let t = self.tensor(input.first().copied().unwrap_or(-1))?;
        t.shape
            .get(1)
            .copied()
            .ok_or_else(|| self.err("the input has no height"))
    }
}

/// `(q - zero_point) * scale` for every element of `data` (uint8, int8 or
/// little-endian int32), computed in f64 and rounded once. With one scale
/// per index of the quantized dimension, element `i` uses the scale of its
/// index along that dimension of `shape`. The caller has checked that
/// `data` holds exactly `shape`'s elements and that the quantization fits
/// the shape.
fn dequantize(data: &[u8], dtype: TensorType, shape: &[usize], q: &Quantization) -> Vec<f32> {
    let size = dtype.size().unwrap_or(1);
    // Elements per step of the quantized dimension.
    let inner = shape
        .get(q.dimension.saturating_add(1)..)
        .unwrap_or(&[])
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .unwrap_or(usize::MAX)
        .max(1);
    let params: Vec<(i64, f64)> = q
        .zero_point
        .iter()
        .zip(&q.scale)
        .map(|(&z, &s)| (z, f64::from(s)))
        .collect();
    let channels = params.len().max(1);
    data.chunks_exact(size)
        .enumerate()
        .map(|(i, c)| {
            let raw = match *c {
                [b] if dtype == TensorType::Uint8 => i64::from(b),
                [b] => i64::from(b as i8),
                [a, b, c, d] => i64::from(i32::from_le_bytes([a, b, c, d])),
                _ => 0,
            };
            let channel = (i / inner) % channels;
            let (zero, scale) = params.get(channel).copied().unwrap_or((0, 0.0));
            ((raw - zero) as f64 * scale) as f32
        })
        .collect()
}

/// Checks the layers against the architecture for the inferred α,
/// resolution and classes and builds the network.
fn assemble(
    g: &Graph<'_>,
    body: Body,
    head: Head,
    labels: Option<Vec<String>>,
) -> Result<LoadedModel> {
    let resolution = g.resolution()?;
    let classes = head.classes();
    let stem = body.convs.first().map_or(0, |c| c.out_channels);
    let config_for = |alpha: f64| MobileNetConfig {
        alpha,
        resolution,
        classes,
        ..Default::default()
    };
    // α from the stem (32·α channels); if that does not fit every layer,
    // from the last layer (1024·α), which min_depth cannot round up.
    let mut result = check_layers(&config_for(stem as f64 / 32.0), &body);
    if result.is_err() {
        let last = config_for(body.channels() as f64 / 1024.0);
        if let Ok(arch) = check_layers(&last, &body) {
            result = Ok(arch);
        }
    }
    let arch = result?;
    let name = format!(
        "{}{}",
        arch.config().name(),
        if g.quantized { "_quant" } else { "" }
    );
    let convs = body
        .convs
        .into_iter()
        .map(|c| {
            let channels = c.bias.len();
            ConvBn {
                weight: c.weight,
                bn: BatchNorm {
                    gamma: vec![1.0; channels],
                    beta: c.bias,
                    mean: vec![0.0; channels],
                    var: vec![1.0; channels],
                    eps: 0.0,
                },
            }
        })
        .collect();
    let bias = Tensor::new(vec![classes], head.bias).map_err(format_err)?;
    let classifier = Classifier {
        weight: head.weight,
        bias,
    };
    let net = MobileNet::from_parts(arch, convs, classifier)
        .map_err(|e| format_err(format!("the weights do not fit the network: {e}")))?;
    Ok(LoadedModel {
        net,
        metadata: ModelMetadata {
            name: Some(name),
            preprocess: Some("tf".into()),
            labels,
            source_format: "tflite".into(),
        },
    })
}

/// The architecture for `config`, if every convolution read from the file
/// matches it (kind, kernel, stride, channels, output size).
fn check_layers(config: &MobileNetConfig, body: &Body) -> Result<Architecture> {
    let arch = Architecture::new(config).map_err(|e| {
        format_err(format!(
            "the file describes a network we cannot build (alpha {}, resolution {}, {} classes): \
             {e}",
            config.alpha, config.resolution, config.classes
        ))
    })?;
    let specs: Vec<_> = arch
        .layers()
        .iter()
        .filter(|l| l.kind.has_batch_norm())
        .collect();
    if specs.len() != body.convs.len() {
        return Err(format_err(format!(
            "the file has {} convolutions before the average pool, MobileNet v1 has {} (a 3x3 \
             stem and 13 depthwise-separable blocks)",
            body.convs.len(),
            specs.len()
        )));
    }
    for (spec, conv) in specs.iter().zip(&body.convs) {
        let found = (
            conv.kind,
            conv.kernel,
            conv.stride,
            conv.in_channels,
            conv.out_channels,
            conv.out_hw,
        );
        let expected = (
            spec.kind,
            spec.kernel,
            spec.stride,
            spec.input[2],
            spec.output[2],
            [spec.output[0], spec.output[1]],
        );
        if found != expected {
            return Err(format_err(format!(
                "operator {} does not match layer {} of MobileNet v1 with alpha {} at {}: found \
                 {} {}x{} stride {} {} -> {} channels, output {:?}; expected {} {}x{} stride {} \
                 {} -> {} channels, output {:?}",
                conv.op,
                spec.name,
                config.alpha,
                config.resolution,
                conv.kind,
                conv.kernel,
                conv.kernel,
                conv.stride,
                conv.in_channels,
                conv.out_channels,
                conv.out_hw,
                spec.kind,
                spec.kernel,
                spec.kernel,
                spec.stride,
                spec.input[2],
                spec.output[2],
                [spec.output[0], spec.output[1]],
            )));
        }
    }
    Ok(arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dequantizes_per_tensor_and_per_axis() {
        let per_tensor = Quantization {
            scale: vec![0.5],
            zero_point: vec![128],
            dimension: 0,
        };
        let got = dequantize(&[128, 130, 0, 255], TensorType::Uint8, &[4], &per_tensor);
        assert_eq!(got, vec![0.0, 1.0, -64.0, 63.5]);

        // int8 weights [2, 1, 1, 3] quantized along dimension 0 (OHWI).
        let per_axis = Quantization {
            scale: vec![1.0, 0.25],
            zero_point: vec![0, -4],
            dimension: 0,
        };
        let data = [1u8, 2, 0xFF, 0, 4, 0xFC];
        let got = dequantize(&data, TensorType::Int8, &[2, 1, 1, 3], &per_axis);
        assert_eq!(got, vec![1.0, 2.0, -1.0, 1.0, 2.0, 0.0]);

        // Depthwise [1, 1, 2, 2] quantized along its last dimension.
        let last = Quantization {
            scale: vec![1.0, 10.0],
            zero_point: vec![0, 0],
            dimension: 3,
        };
        let got = dequantize(&[1, 1, 2, 2], TensorType::Uint8, &[1, 1, 2, 2], &last);
        assert_eq!(got, vec![1.0, 10.0, 2.0, 20.0]);

        // int32 bias.
        let bias = Quantization {
            scale: vec![0.125],
            zero_point: vec![0],
            dimension: 0,
        };
        let data: Vec<u8> = [-2000i32, 3000]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let got = dequantize(&data, TensorType::Int32, &[2], &bias);
        assert_eq!(got, vec![-250.0, 375.0]);
    }
}
