//! Reading a uint8 `.tflite` file into a [`QuantizedTflite`]: every
//! operator checked and prepared as TFLite's `Prepare` would, with the
//! checks TFLite leaves to debug builds (or skips) made into errors.
//!
//! Each operator must read the model input or an earlier operator's output
//! and write a tensor nothing else writes, so the ops run in file order. Every
//! tensor it touches must have the type the kernel expects (uint8
//! activations and weights, int32 bias) and valid per-tensor quantization
//! (scale finite and > 0, zero point within the type), and every declared
//! output shape must be the one the op computes.

use std::collections::HashMap;

use super::conv::{Conv2d, ConvKind, ConvSpec, product};
use super::fully_connected::{FullyConnected, FullyConnectedSpec};
use super::geometry::Padding;
use super::model::{Node, Op, QuantizedTflite, TensorSpec};
use super::pool::AveragePool;
use super::requantize::{Activation, QuantParams};
use super::softmax::{SOFTMAX_OUTPUT, Softmax};
use crate::error::{Error, Result};
use crate::formats::tflite::flatbuffer::{Table, format_err};
use crate::formats::tflite::schema::{
    ConvOptions, FullyConnectedOptions, Fused, Model, Operator, Padding as FilePadding,
    PoolOptions, SubGraph, TensorDef, TensorType, op, options, softmax_beta,
};

/// Longest tensor name we keep (the converter's fused names run to a few
/// hundred bytes).
const MAX_NAME: usize = 4096;

/// Largest tensor we allocate, in elements (bytes).
const MAX_TENSOR: usize = 1 << 28;

/// Most bytes of values (all operator outputs together) a run may hold.
const MAX_VALUES: usize = 1 << 30;

/// Most multiply-adds we accept per run (MobileNet v1 1.0_224 needs
/// 0.57 G).
const MAX_MACS: u64 = 1 << 35;

/// The operators we run, for messages.
const SUPPORTED: &str = "CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, AVERAGE_POOL_2D, SOFTMAX, \
                         RESHAPE, SQUEEZE";

/// Whether `bytes` are a TFLite file for this module rather than for the
/// float importer: the file identifier is `TFL3` and the model input is
/// uint8, or cannot be read at all (so that a damaged uint8 file gets this
/// module's precise message rather than the importer's).
///
/// ```
/// // Not TFLite at all.
/// assert!(!mobilenet::quant::is_uint8_tflite(b"{\"format\": \"layers-model\"}"));
/// ```
pub fn is_uint8_tflite(bytes: &[u8]) -> bool {
    if bytes.get(4..8) != Some(b"TFL3") {
        return false;
    }
    let input_type = || -> Result<TensorType> {
        let sub = Model::parse(bytes)?.subgraph(0)?;
        let input = *sub
            .inputs()?
            .first()
            .ok_or_else(|| format_err("no input"))?;
        Ok(sub.tensor(input)?.dtype)
    };
    !matches!(input_type(), Ok(t) if !matches!(t, TensorType::Uint8))
}

/// Parses a uint8 TFLite model.
pub(crate) fn load(bytes: &[u8]) -> Result<QuantizedTflite> {
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
    // Every buffer must lie in the file, even those we do not use (such
    // as metadata), so that a cut or damaged file is refused even where
    // the operators read nothing.
    let n_buffers = u32::try_from(model.buffer_count()?).unwrap_or(u32::MAX);
    for b in 0..n_buffers {
        model.buffer_data(b)?;
    }
    let sub = model.subgraph(0)?;
    let inputs = sub.inputs()?;
    let outputs = sub.outputs()?;
    let ([input], [output]) = (&inputs[..], &outputs[..]) else {
        return Err(format_err(format!(
            "the subgraph has {} inputs and {} outputs, expected 1 each",
            inputs.len(),
            outputs.len()
        )));
    };
    let mut loader = Loader {
        model,
        sub,
        n_codes: model.operator_code_count()?,
        slots: HashMap::new(),
        nodes: Vec::new(),
        macs: 0,
        bytes: 0,
    };
    let input_def = loader.tensor(*input)?;
    let input_spec = loader.activation_spec(&input_def, "the model input")?;
    loader.slots.insert(*input, 0);
    let n_ops = sub.operators()?.len();
    for i in 0..n_ops {
        loader.operator(i)?;
    }
    let output_slot = *loader.slots.get(output).ok_or_else(|| {
        format_err(format!(
            "the subgraph output is tensor {output}, which no operator writes"
        ))
    })?;
    Ok(QuantizedTflite {
        input: input_spec,
        nodes: loader.nodes,
        output: output_slot,
    })
}

/// The state of a load: which tensors hold computed values so far.
struct Loader<'a> {
    model: Model<'a>,
    sub: SubGraph<'a>,
    n_codes: usize,
    /// Tensor index -> value slot (0: model input, k + 1: node k).
    slots: HashMap<i32, usize>,
    nodes: Vec<Node>,
    macs: u64,
    /// Bytes of all operator outputs so far.
    bytes: usize,
}

/// An operator being read: its index, name and table.
struct OpRef<'a> {
    index: usize,
    name: String,
    op: Operator<'a>,
}

impl<'a> OpRef<'a> {
    /// `operator 3 (CONV_2D)`, for messages.
    fn describe(&self) -> String {
        format!("operator {} ({})", self.index, self.name)
    }

    /// Turns an error of an op constructor into a format error naming the
    /// operator (size limits stay [`Error::TooLarge`]).
    fn context(&self, e: Error) -> Error {
        match e {
            Error::Shape(m) | Error::InvalidConfig(m) => {
                format_err(format!("{}: {m}", self.describe()))
            }
            Error::TooLarge(m) => Error::TooLarge(format!("tflite: {}: {m}", self.describe())),
            other => other,
        }
    }

    /// The `n`-th input tensor index, if present and not -1 (optional).
    fn input(&self, n: usize) -> Option<i32> {
        self.op.inputs.get(n).copied().filter(|&t| t != -1)
    }

    /// The `n`-th input tensor index, which must be present.
    fn required_input(&self, n: usize, what: &str) -> Result<i32> {
        self.input(n)
            .ok_or_else(|| format_err(format!("{} has no {what}", self.describe())))
    }

    /// Checks the number of inputs is within `range`.
    fn expect_inputs(&self, range: std::ops::RangeInclusive<usize>) -> Result<()> {
        if range.contains(&self.op.inputs.len()) {
            return Ok(());
        }
        Err(format_err(format!(
            "{} has {} inputs, expected {} to {}",
            self.describe(),
            self.op.inputs.len(),
            range.start(),
            range.end()
        )))
    }

    /// The options table, which must be present and of union type `tag`.
    fn options(&self, tag: u8) -> Result<Table<'a>> {
        match self.op.options {
            Some(t) if self.op.options_type == tag => Ok(t),
            _ => Err(format_err(format!(
                "{} has options of union type {} (present: {}), expected {tag}",
                self.describe(),
                self.op.options_type,
                self.op.options.is_some()
            ))),
        }
    }
}

fn activation_of(fused: Fused, what: &str) -> Result<Activation> {
    match fused {
        Fused::None => Ok(Activation::None),
        Fused::Relu => Ok(Activation::Relu),
        Fused::Relu6 => Ok(Activation::Relu6),
        Fused::Other(2) => Ok(Activation::ReluN1To1),
        Fused::Other(code) => Err(format_err(format!(
            "{what}: fused activation {code} is not supported (only NONE, RELU, RELU_N1_TO_1, \
             RELU6)"
        ))),
    }
}

fn padding_of(padding: FilePadding, what: &str) -> Result<Padding> {
    match padding {
        FilePadding::Same => Ok(Padding::Same),
        FilePadding::Valid => Ok(Padding::Valid),
        FilePadding::Other(code) => Err(format_err(format!("{what}: unknown padding {code}"))),
    }
}

/// A stride or dilation of the file: at least 1.
fn positive(v: i32, field: &str, what: &str) -> Result<usize> {
    usize::try_from(v)
        .ok()
        .filter(|&v| v >= 1)
        .ok_or_else(|| format_err(format!("{what}: {field} {v} must be at least 1")))
}

/// The four dimensions of an NHWC tensor.
fn dims4(t: &TensorDef, what: &str) -> Result<[usize; 4]> {
    <[usize; 4]>::try_from(t.shape.as_slice()).map_err(|_| {
        format_err(format!(
            "{} ({what}) has shape {:?}, expected 4 dimensions",
            t.describe(),
            t.shape
        ))
    })
}

impl<'a> Loader<'a> {
    fn tensor(&self, index: i32) -> Result<TensorDef> {
        self.sub.tensor_with_name(index, MAX_NAME)
    }

    /// The per-tensor uint8 quantization of `t`, checked.
    fn uint8_params(&self, t: &TensorDef, what: &str) -> Result<QuantParams> {
        if t.dtype != TensorType::Uint8 {
            return Err(format_err(format!(
                "{} ({what}) is {}, expected UINT8",
                t.describe(),
                t.dtype.name()
            )));
        }
        let (scale, zero_point) = self.per_tensor(t, what)?;
        if !(0..=255).contains(&zero_point) {
            return Err(format_err(format!(
                "{} ({what}): zero point {zero_point} is outside [0, 255] for UINT8",
                t.describe()
            )));
        }
        QuantParams::new(scale, zero_point as i32)
            .map_err(|_| format_err(format!("{} ({what}): bad quantization", t.describe())))
    }

    /// The one scale (finite, > 0) and zero point of `t`.
    fn per_tensor(&self, t: &TensorDef, what: &str) -> Result<(f32, i64)> {
        let q = t.quantization.as_ref().ok_or_else(|| {
            format_err(format!(
                "{} ({what}) has no quantization parameters",
                t.describe()
            ))
        })?;
        let (&[scale], &[zero_point]) = (&q.scale[..], &q.zero_point[..]) else {
            return Err(format_err(format!(
                "{} ({what}) is quantized per axis ({} scales); only per-tensor quantization is \
                 supported",
                t.describe(),
                q.scale.len()
            )));
        };
        if !(scale.is_finite() && scale > 0.0) {
            return Err(format_err(format!(
                "{} ({what}): quantization scale {scale} is not finite and positive",
                t.describe()
            )));
        }
        Ok((scale, zero_point))
    }

    /// Spec of an activation tensor, with its size limited.
    fn activation_spec(&self, t: &TensorDef, what: &str) -> Result<TensorSpec> {
        let params = self.uint8_params(t, what)?;
        let numel = product(&t.shape, &t.describe())?;
        if numel > MAX_TENSOR {
            return Err(Error::TooLarge(format!(
                "tflite: {} ({what}) has {numel} elements, more than the {MAX_TENSOR} we allocate",
                t.describe()
            )));
        }
        Ok(TensorSpec {
            name: t.name.clone(),
            shape: t.shape.clone(),
            params,
        })
    }

    /// The constant data of `t`: exactly `numel * element size` bytes.
    fn constant(&self, t: &TensorDef, what: &str) -> Result<&'a [u8]> {
        let size = t.dtype.size().unwrap_or(1);
        let expected = t.numel().and_then(|n| n.checked_mul(size));
        let data = self.model.buffer_data(t.buffer)?;
        if data.is_empty() {
            return Err(format_err(format!(
                "{} ({what}) has no data (buffer {}); weights must be constant",
                t.describe(),
                t.buffer
            )));
        }
        if expected != Some(data.len()) {
            return Err(format_err(format!(
                "{} ({what}): buffer {} holds {} bytes, shape {:?} of {} needs {}",
                t.describe(),
                t.buffer,
                data.len(),
                t.shape,
                t.dtype.name(),
                expected.map_or("too many".into(), |e| e.to_string())
            )));
        }
        Ok(data)
    }

    /// The int32 bias of an accumulating op, checked as TFLite's
    /// `GetQuantizedConvolutionMultipler` (its scale within 2% of an output
    /// step of `input_scale * filter_scale`), with a zero point of 0.
    fn bias(
        &self,
        o: &OpRef<'_>,
        index: Option<i32>,
        scales: (QuantParams, QuantParams, QuantParams),
        channels: usize,
    ) -> Result<Option<Vec<i32>>> {
        let Some(index) = index else {
            return Ok(None);
        };
        let what = format!("{}'s bias", o.describe());
        let t = self.tensor(index)?;
        if t.dtype != TensorType::Int32 {
            return Err(format_err(format!(
                "{} ({what}) is {}, expected INT32",
                t.describe(),
                t.dtype.name()
            )));
        }
        if t.shape != [channels] {
            return Err(format_err(format!(
                "{} ({what}) has shape {:?}, expected [{channels}]",
                t.describe(),
                t.shape
            )));
        }
        // TFLite reads a missing bias scale as 0.
        let bias_scale = match t.quantization {
            Some(_) => {
                let (scale, zero_point) = self.per_tensor(&t, &what)?;
                if zero_point != 0 {
                    return Err(format_err(format!(
                        "{} ({what}): zero point {zero_point}, expected 0",
                        t.describe()
                    )));
                }
                f64::from(scale)
            }
            None => 0.0,
        };
        let (input, filter, output) = scales;
        let product_scale = f64::from(input.scale) * f64::from(filter.scale);
        if (product_scale - bias_scale).abs() / f64::from(output.scale) > 0.02 {
            return Err(format_err(format!(
                "{} ({what}): scale {bias_scale} differs from input scale × filter scale \
                 {product_scale} (TFLite refuses this)",
                t.describe()
            )));
        }
        let data = self.constant(&t, &what)?;
        Ok(Some(
            data.chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ))
    }

    /// The value slot and spec of the activation operator `o` reads.
    fn activation_input(&self, o: &OpRef<'_>) -> Result<(usize, TensorDef, TensorSpec)> {
        let index = o.required_input(0, "input tensor")?;
        let slot = *self.slots.get(&index).ok_or_else(|| {
            format_err(format!(
                "{} reads tensor {index}, which is neither the model input nor an earlier \
                 operator's output",
                o.describe()
            ))
        })?;
        let t = self.tensor(index)?;
        let spec = self.activation_spec(&t, &format!("{}'s input", o.describe()))?;
        Ok((slot, t, spec))
    }

    /// The one output tensor of `o`, not written before, within
    /// [`MAX_VALUES`] with the outputs before it.
    fn output(&mut self, o: &OpRef<'_>) -> Result<(i32, TensorDef, TensorSpec)> {
        let [index] = o.op.outputs[..] else {
            return Err(format_err(format!(
                "{} has {} outputs, expected 1",
                o.describe(),
                o.op.outputs.len()
            )));
        };
        if self.slots.contains_key(&index) {
            return Err(format_err(format!(
                "{} writes tensor {index}, which already holds a value",
                o.describe()
            )));
        }
        let t = self.tensor(index)?;
        let spec = self.activation_spec(&t, &format!("{}'s output", o.describe()))?;
        self.bytes = self
            .bytes
            .checked_add(spec.numel())
            .filter(|&b| b <= MAX_VALUES)
            .ok_or_else(|| {
                Error::TooLarge(format!(
                    "tflite: {} brings the model's values past {MAX_VALUES} bytes",
                    o.describe()
                ))
            })?;
        Ok((index, t, spec))
    }

    /// Checks the declared output shape against the computed one.
    fn expect_shape(&self, o: &OpRef<'_>, t: &TensorDef, shape: &[usize]) -> Result<()> {
        if t.shape != shape {
            return Err(format_err(format!(
                "{}: output {} has shape {:?}, the operator computes {shape:?}",
                o.describe(),
                t.describe(),
                t.shape
            )));
        }
        Ok(())
    }

    /// Adds `work` multiply-adds to the running total, within [`MAX_MACS`].
    fn add_work(&mut self, o: &OpRef<'_>, dims: &[usize]) -> Result<()> {
        let work = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
            .and_then(|w| w.checked_add(self.macs))
            .filter(|&total| total <= MAX_MACS)
            .ok_or_else(|| {
                Error::TooLarge(format!(
                    "tflite: {} brings the model past {MAX_MACS} multiply-adds per run",
                    o.describe()
                ))
            })?;
        self.macs = work;
        Ok(())
    }

    /// Appends a node reading slot `input` and writing tensor `output`.
    fn push(&mut self, kind: &'static str, op: Op, input: usize, output: (i32, TensorSpec)) {
        self.slots.insert(output.0, self.nodes.len() + 1);
        self.nodes.push(Node {
            op,
            kind,
            input,
            output: output.1,
        });
    }

    /// Reads operator `i` and appends it.
    fn operator(&mut self, index: usize) -> Result<()> {
        let op = self.sub.operator(index)?;
        let code_index = usize::try_from(op.opcode_index)
            .ok()
            .filter(|&c| c < self.n_codes)
            .ok_or_else(|| {
                format_err(format!(
                    "operator {index}: opcode index {} out of range (the file has {} operator \
                     codes)",
                    op.opcode_index, self.n_codes
                ))
            })?;
        let code = self.model.operator_code(code_index)?;
        let o = OpRef {
            index,
            name: code.name(),
            op,
        };
        match code.code {
            op::CONV_2D => self.conv(&o, false),
            op::DEPTHWISE_CONV_2D => self.conv(&o, true),
            op::FULLY_CONNECTED => self.fully_connected(&o),
            op::AVERAGE_POOL_2D => self.average_pool(&o),
            op::SOFTMAX => self.softmax(&o),
            op::RESHAPE | op::SQUEEZE => self.reshape(&o, code.code),
            _ => Err(format_err(format!(
                "operator {index} is {}, which the uint8 interpreter does not run (it runs \
                 {SUPPORTED})",
                o.name
            ))),
        }
    }

    fn conv(&mut self, o: &OpRef<'_>, depthwise: bool) -> Result<()> {
        let what = o.describe();
        o.expect_inputs(2..=3)?;
        let opts = if depthwise {
            ConvOptions::depthwise(o.options(options::DEPTHWISE_CONV_2D)?, &what)?
        } else {
            ConvOptions::conv(o.options(options::CONV_2D)?, &what)?
        };
        let (slot, input_def, input) = self.activation_input(o)?;
        let [batches, h, w, cin] = dims4(&input_def, &format!("{what}'s input"))?;
        let filter_def = self.tensor(o.required_input(1, "filter")?)?;
        let filter_what = format!("{what}'s filter");
        let filter = self.uint8_params(&filter_def, &filter_what)?;
        let [f0, kh, kw, f3] = dims4(&filter_def, &filter_what)?;
        let (kind, cout) = if depthwise {
            if f0 != 1 || cin == 0 || !f3.is_multiple_of(cin) {
                return Err(format_err(format!(
                    "{what}: depthwise filter {:?} does not fit {cin} input channels",
                    filter_def.shape
                )));
            }
            let multiplier = f3 / cin;
            if usize::try_from(opts.depth_multiplier) != Ok(multiplier) {
                return Err(format_err(format!(
                    "{what}: depth_multiplier {} but the filter gives {multiplier}",
                    opts.depth_multiplier
                )));
            }
            (ConvKind::Depthwise { multiplier }, f3)
        } else {
            if f3 != cin {
                return Err(format_err(format!(
                    "{what}: filter {:?} reads {f3} channels, the input has {cin}",
                    filter_def.shape
                )));
            }
            (ConvKind::Full, f0)
        };
        let weights = self.constant(&filter_def, &filter_what)?;
        let (out_index, out_def, output) = self.output(o)?;
        let bias = self.bias(o, o.input(2), (input.params, filter, output.params), cout)?;
        let spec = ConvSpec {
            kind,
            batches,
            input_hw: [h, w],
            in_channels: cin,
            out_channels: cout,
            kernel: [kh, kw],
            stride: [
                positive(opts.stride[0], "stride_h", &what)?,
                positive(opts.stride[1], "stride_w", &what)?,
            ],
            dilation: [
                positive(opts.dilation[0], "dilation_h_factor", &what)?,
                positive(opts.dilation[1], "dilation_w_factor", &what)?,
            ],
            padding: padding_of(opts.padding, &what)?,
            input: input.params,
            filter,
            output: output.params,
            activation: activation_of(opts.fused, &what)?,
        };
        let conv = Conv2d::new(&spec, weights, bias.as_deref()).map_err(|e| o.context(e))?;
        let shape = conv.output_shape();
        self.expect_shape(o, &out_def, &shape)?;
        let per_output = if depthwise { kh * kw } else { kh * kw * cin };
        self.add_work(o, &[shape.iter().product(), per_output])?;
        let kind = if depthwise {
            "DEPTHWISE_CONV_2D"
        } else {
            "CONV_2D"
        };
        self.push(kind, Op::Conv(conv), slot, (out_index, output));
        Ok(())
    }

    fn fully_connected(&mut self, o: &OpRef<'_>) -> Result<()> {
        let what = o.describe();
        o.expect_inputs(2..=3)?;
        let opts = FullyConnectedOptions::parse(o.options(options::FULLY_CONNECTED)?, &what)?;
        if opts.weights_format != 0 {
            return Err(format_err(format!(
                "{what}: weights format {} is not supported (only DEFAULT)",
                opts.weights_format
            )));
        }
        let (slot, input_def, input) = self.activation_input(o)?;
        let filter_def = self.tensor(o.required_input(1, "filter")?)?;
        let filter_what = format!("{what}'s weights");
        let filter = self.uint8_params(&filter_def, &filter_what)?;
        let &[units, depth] = filter_def.shape.as_slice() else {
            return Err(format_err(format!(
                "{} ({filter_what}) has shape {:?}, expected [units, depth]",
                filter_def.describe(),
                filter_def.shape
            )));
        };
        let numel = input.numel();
        if depth == 0 || !numel.is_multiple_of(depth) {
            return Err(format_err(format!(
                "{what}: input {:?} is not whole rows of {depth}",
                input.shape
            )));
        }
        let batches = numel / depth;
        let weights = self.constant(&filter_def, &filter_what)?;
        let (out_index, out_def, output) = self.output(o)?;
        let bias = self.bias(o, o.input(2), (input.params, filter, output.params), units)?;
        let spec = FullyConnectedSpec {
            batches,
            depth,
            units,
            input: input.params,
            filter,
            output: output.params,
            activation: activation_of(opts.fused, &what)?,
        };
        let fc = FullyConnected::new(&spec, weights, bias.as_deref()).map_err(|e| o.context(e))?;
        let shape = match input_def.shape.split_last() {
            Some((&last, rest)) if opts.keep_num_dims && last == depth => {
                let mut s = rest.to_vec();
                s.push(units);
                s
            }
            _ => vec![batches, units],
        };
        self.expect_shape(o, &out_def, &shape)?;
        self.add_work(o, &[batches, units, depth])?;
        self.push(
            "FULLY_CONNECTED",
            Op::FullyConnected(fc),
            slot,
            (out_index, output),
        );
        Ok(())
    }

    fn average_pool(&mut self, o: &OpRef<'_>) -> Result<()> {
        let what = o.describe();
        o.expect_inputs(1..=1)?;
        let opts = PoolOptions::parse(o.options(options::POOL_2D)?, &what)?;
        let (slot, input_def, input) = self.activation_input(o)?;
        let [batches, h, w, c] = dims4(&input_def, &format!("{what}'s input"))?;
        let (out_index, out_def, output) = self.output(o)?;
        // TFLite's pooling assumes one quantization for input and output.
        if (input.params.scale - output.params.scale).abs() > 1e-6
            || input.params.zero_point != output.params.zero_point
        {
            return Err(format_err(format!(
                "{what}: output quantization {:?} differs from the input's {:?}",
                output.params, input.params
            )));
        }
        let filter = [
            positive(opts.filter[0], "filter_height", &what)?,
            positive(opts.filter[1], "filter_width", &what)?,
        ];
        let pool = AveragePool::new(
            batches,
            [h, w],
            c,
            filter,
            [
                positive(opts.stride[0], "stride_h", &what)?,
                positive(opts.stride[1], "stride_w", &what)?,
            ],
            padding_of(opts.padding, &what)?,
            output.params,
            activation_of(opts.fused, &what)?,
        )
        .map_err(|e| o.context(e))?;
        let shape = pool.output_shape();
        self.expect_shape(o, &out_def, &shape)?;
        self.add_work(o, &[shape.iter().product(), filter[0], filter[1]])?;
        self.push(
            "AVERAGE_POOL_2D",
            Op::AveragePool(pool),
            slot,
            (out_index, output),
        );
        Ok(())
    }

    fn softmax(&mut self, o: &OpRef<'_>) -> Result<()> {
        let what = o.describe();
        o.expect_inputs(1..=1)?;
        let beta = softmax_beta(o.options(options::SOFTMAX)?, &what)?;
        let (slot, input_def, input) = self.activation_input(o)?;
        let depth = input_def.shape.last().copied().unwrap_or(0);
        let (out_index, out_def, output) = self.output(o)?;
        if output.params != SOFTMAX_OUTPUT {
            return Err(format_err(format!(
                "{what}: output quantization {:?}, the uint8 softmax writes scale 1/256, zero \
                 point 0",
                output.params
            )));
        }
        let softmax = Softmax::new(beta, input.params, depth).map_err(|e| o.context(e))?;
        self.expect_shape(o, &out_def, &input_def.shape)?;
        self.add_work(o, &[input.numel(), 2])?;
        self.push("SOFTMAX", Op::Softmax(softmax), slot, (out_index, output));
        Ok(())
    }

    fn reshape(&mut self, o: &OpRef<'_>, code: i32) -> Result<()> {
        let what = o.describe();
        // RESHAPE may carry its new shape as a second input; the declared
        // output shape is what we use (and check).
        o.expect_inputs(1..=if code == op::RESHAPE { 2 } else { 1 })?;
        if let Some(shape) = o.input(1) {
            self.tensor(shape)?;
        }
        let (slot, _, input) = self.activation_input(o)?;
        let (out_index, _, output) = self.output(o)?;
        if output.numel() != input.numel() {
            return Err(format_err(format!(
                "{what}: cannot reshape {:?} to {:?}",
                input.shape, output.shape
            )));
        }
        if output.params != input.params {
            return Err(format_err(format!(
                "{what}: output quantization {:?} differs from the input's {:?}",
                output.params, input.params
            )));
        }
        let kind = if code == op::RESHAPE {
            "RESHAPE"
        } else {
            "SQUEEZE"
        };
        self.push(kind, Op::Reshape, slot, (out_index, output));
        Ok(())
    }
}
