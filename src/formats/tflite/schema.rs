//! The subset of the TFLite schema (`tensorflow/lite/schema/schema.fbs`)
//! that a MobileNet v1 file uses, read through [`super::flatbuffer`].
//!
//! Field numbers ("slots") are those of the schema; a field missing from a
//! table takes the schema's default, as FlatBuffers prescribes.

use super::flatbuffer::{Buf, Table, Vector, format_err};
use crate::error::Result;

/// The FlatBuffers file identifier of TFLite models.
pub(crate) const FILE_IDENTIFIER: &[u8; 4] = b"TFL3";

/// Built-in operator codes we recognise (schema `enum BuiltinOperator`).
pub(crate) mod op {
    pub const AVERAGE_POOL_2D: i32 = 1;
    pub const CONV_2D: i32 = 3;
    pub const DEPTHWISE_CONV_2D: i32 = 4;
    pub const FULLY_CONNECTED: i32 = 9;
    pub const RESHAPE: i32 = 22;
    pub const SOFTMAX: i32 = 25;
    pub const SQUEEZE: i32 = 43;
}

/// A human-readable name for a built-in operator code.
pub(crate) fn op_name(code: i32) -> String {
    let known = match code {
        0 => "ADD",
        op::AVERAGE_POOL_2D => "AVERAGE_POOL_2D",
        2 => "CONCATENATION",
        op::CONV_2D => "CONV_2D",
        op::DEPTHWISE_CONV_2D => "DEPTHWISE_CONV_2D",
        6 => "DEQUANTIZE",
        op::FULLY_CONNECTED => "FULLY_CONNECTED",
        14 => "LOGISTIC",
        17 => "MAX_POOL_2D",
        18 => "MUL",
        19 => "RELU",
        21 => "RELU6",
        op::RESHAPE => "RESHAPE",
        op::SOFTMAX => "SOFTMAX",
        32 => "CUSTOM",
        34 => "PAD",
        op::SQUEEZE => "SQUEEZE",
        114 => "QUANTIZE",
        _ => return format!("builtin operator {code}"),
    };
    known.to_string()
}

/// Tensor element types (schema `enum TensorType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TensorType {
    Float32,
    Int32,
    Uint8,
    Int8,
    /// Any other type, with its schema code.
    Other(i8),
}

impl TensorType {
    fn from_code(code: i8) -> TensorType {
        match code {
            0 => TensorType::Float32,
            2 => TensorType::Int32,
            3 => TensorType::Uint8,
            9 => TensorType::Int8,
            other => TensorType::Other(other),
        }
    }

    /// Bytes per element of the types we read.
    pub(crate) fn size(self) -> Option<usize> {
        match self {
            TensorType::Float32 | TensorType::Int32 => Some(4),
            TensorType::Uint8 | TensorType::Int8 => Some(1),
            TensorType::Other(_) => None,
        }
    }

    pub(crate) fn name(self) -> String {
        match self {
            TensorType::Float32 => "FLOAT32".into(),
            TensorType::Int32 => "INT32".into(),
            TensorType::Uint8 => "UINT8".into(),
            TensorType::Int8 => "INT8".into(),
            TensorType::Other(1) => "FLOAT16".into(),
            TensorType::Other(4) => "INT64".into(),
            TensorType::Other(7) => "INT16".into(),
            TensorType::Other(c) => format!("tensor type {c}"),
        }
    }
}

/// Padding (schema `enum Padding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Padding {
    Same,
    Valid,
    Other(u8),
}

impl Padding {
    fn from_code(code: u8) -> Padding {
        match code {
            0 => Padding::Same,
            1 => Padding::Valid,
            other => Padding::Other(other),
        }
    }
}

/// Fused activations (schema `enum ActivationFunctionType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fused {
    None,
    Relu,
    Relu6,
    Other(u8),
}

impl Fused {
    fn from_code(code: u8) -> Fused {
        match code {
            0 => Fused::None,
            1 => Fused::Relu,
            3 => Fused::Relu6,
            other => Fused::Other(other),
        }
    }
}

/// The root `Model` table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Model<'a> {
    table: Table<'a>,
}

impl<'a> Model<'a> {
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Model<'a>> {
        let table = Buf::new(bytes).root(FILE_IDENTIFIER, "Model")?;
        Ok(Model { table })
    }

    pub(crate) fn version(&self) -> Result<u32> {
        self.table.u32_or(0, 0, "Model.version")
    }

    /// The number of `operator_codes`.
    pub(crate) fn operator_code_count(&self) -> Result<usize> {
        Ok(self
            .table
            .vector_or_empty(1, 4, "Model.operator_codes")?
            .len())
    }

    /// `operator_codes[i]`, resolved to its built-in code (read on demand:
    /// a file could point many entries at one table with a huge name).
    pub(crate) fn operator_code(&self, i: usize) -> Result<OperatorCode> {
        let v = self.table.vector_or_empty(1, 4, "Model.operator_codes")?;
        let what = format!("Model.operator_codes[{i}]");
        let t = v.table(i, &what)?;
        let deprecated = t.i8_or(0, 0, &what)?;
        let custom = t.string(1, MAX_NAME, &what)?;
        let extended = t.i32_or(3, 0, &what)?;
        // As TFLite's GetBuiltinCode: the larger of the two fields (old
        // files only have the 8-bit one, new files put codes >= 127 only in
        // the 32-bit one).
        let code = extended.max(i32::from(deprecated));
        Ok(OperatorCode { code, custom })
    }

    pub(crate) fn subgraphs(&self) -> Result<Vector<'a>> {
        self.table.vector_or_empty(2, 4, "Model.subgraphs")
    }

    pub(crate) fn subgraph(&self, i: usize) -> Result<SubGraph<'a>> {
        let what = format!("Model.subgraphs[{i}]");
        Ok(SubGraph {
            table: self.subgraphs()?.table(i, &what)?,
        })
    }

    fn buffers(&self) -> Result<Vector<'a>> {
        self.table.vector_or_empty(4, 4, "Model.buffers")
    }

    /// The number of buffers.
    pub(crate) fn buffer_count(&self) -> Result<usize> {
        Ok(self.buffers()?.len())
    }

    /// The bytes of buffer `index` (empty if it has none). Buffers either
    /// hold their bytes inline (`data`) or, in files larger than 2 GB,
    /// point at them with an absolute `offset` and `size`.
    pub(crate) fn buffer_data(&self, index: u32) -> Result<&'a [u8]> {
        let buffers = self.buffers()?;
        let what = format!("Model.buffers[{index}]");
        let i = usize::try_from(index).unwrap_or(usize::MAX);
        if i >= buffers.len() {
            return Err(format_err(format!(
                "{what}: buffer index out of range (the file has {} buffers)",
                buffers.len()
            )));
        }
        let t = buffers.table(i, &what)?;
        if let Some(v) = t.vector(0, 1, &what)? {
            return Ok(v.bytes());
        }
        let offset = t.u64_or(1, 0, &what)?;
        let size = t.u64_or(2, 0, &what)?;
        if offset <= 1 {
            return Ok(&[]);
        }
        let (Ok(offset), Ok(size)) = (usize::try_from(offset), usize::try_from(size)) else {
            return Err(format_err(format!(
                "{what}: offset {offset} / size {size} out of range"
            )));
        };
        t.buf().bytes(offset, size, &what)
    }
}

/// An `OperatorCode`, resolved.
#[derive(Clone, Debug)]
pub(crate) struct OperatorCode {
    /// The built-in operator code.
    pub code: i32,
    /// The name of a custom operator.
    pub custom: Option<String>,
}

impl OperatorCode {
    pub(crate) fn name(&self) -> String {
        match &self.custom {
            Some(name) if self.code == 32 => format!("CUSTOM '{name}'"),
            _ => op_name(self.code),
        }
    }
}

/// A `SubGraph` table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SubGraph<'a> {
    table: Table<'a>,
}

impl<'a> SubGraph<'a> {
    pub(crate) fn tensors(&self) -> Result<Vector<'a>> {
        self.table.vector_or_empty(0, 4, "SubGraph.tensors")
    }

    /// `inputs` (at most [`MAX_OPERANDS`] are read).
    pub(crate) fn inputs(&self) -> Result<Vec<i32>> {
        small_i32s(self.table, 1, "SubGraph.inputs")
    }

    /// `outputs` (at most [`MAX_OPERANDS`] are read).
    pub(crate) fn outputs(&self) -> Result<Vec<i32>> {
        small_i32s(self.table, 2, "SubGraph.outputs")
    }

    pub(crate) fn operators(&self) -> Result<Vector<'a>> {
        self.table.vector_or_empty(3, 4, "SubGraph.operators")
    }

    /// Tensor `index` (checked against the number of tensors), its name
    /// cut at [`MAX_NAME`] bytes.
    pub(crate) fn tensor(&self, index: i32) -> Result<TensorDef> {
        self.tensor_with_name(index, MAX_NAME)
    }

    /// Like [`SubGraph::tensor`], with names of up to `max_name` bytes
    /// (TFLite's converter joins fused op names into long tensor names).
    pub(crate) fn tensor_with_name(&self, index: i32, max_name: usize) -> Result<TensorDef> {
        let tensors = self.tensors()?;
        let what = format!("tensor {index}");
        let i = usize::try_from(index)
            .ok()
            .filter(|&i| i < tensors.len())
            .ok_or_else(|| {
                format_err(format!(
                    "{what}: index out of range (the subgraph has {} tensors)",
                    tensors.len()
                ))
            })?;
        TensorDef::parse(tensors.table(i, &what)?, index, &what, max_name)
    }

    pub(crate) fn operator(&self, i: usize) -> Result<Operator<'a>> {
        let what = format!("operator {i}");
        let t = self.operators()?.table(i, &what)?;
        Operator::parse(t, &what)
    }
}

/// A `Tensor` table, read in full.
#[derive(Clone, Debug)]
pub(crate) struct TensorDef {
    pub index: i32,
    pub shape: Vec<usize>,
    pub dtype: TensorType,
    pub buffer: u32,
    pub name: String,
    pub quantization: Option<Quantization>,
}

/// Longest tensor or operator name we read (for messages).
const MAX_NAME: usize = 160;

impl TensorDef {
    fn parse(t: Table<'_>, index: i32, what: &str, max_name: usize) -> Result<TensorDef> {
        let shape_v = t.vector_or_empty(0, 4, what)?;
        let mut shape = Vec::with_capacity(shape_v.len().min(8));
        for i in 0..shape_v.len() {
            let d = shape_v.i32(i, what)?;
            let d = usize::try_from(d)
                .map_err(|_| format_err(format!("{what}: negative dimension {d} in its shape")))?;
            shape.push(d);
        }
        let dtype = TensorType::from_code(t.i8_or(1, 0, what)?);
        let buffer = t.u32_or(2, 0, what)?;
        let name = t.string(3, max_name, what)?.unwrap_or_default();
        let quantization = match t.table(4, what)? {
            Some(q) => Quantization::parse(q, &shape, what)?,
            None => None,
        };
        Ok(TensorDef {
            index,
            shape,
            dtype,
            buffer,
            name,
            quantization,
        })
    }

    /// `tensor 12 'MobilenetV1/Conv2d_0/weights'`, for messages.
    pub(crate) fn describe(&self) -> String {
        format!("tensor {} '{}'", self.index, self.name)
    }

    /// The number of elements, if it does not overflow.
    pub(crate) fn numel(&self) -> Option<usize> {
        self.shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }
}

/// `QuantizationParameters`: `real = scale * (q - zero_point)`, per tensor
/// (one scale) or per axis (one scale per index of `dimension`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Quantization {
    pub scale: Vec<f32>,
    pub zero_point: Vec<i64>,
    pub dimension: usize,
}

impl Quantization {
    /// `None` when the table carries no scales (a float tensor may still
    /// carry min/max only). There must be one scale and zero point, or one
    /// per index of the quantized dimension of `shape`: checked before
    /// reading them.
    fn parse(t: Table<'_>, shape: &[usize], what: &str) -> Result<Option<Quantization>> {
        let what = format!("{what}: quantization");
        let details_type = t.u8_or(4, 0, &what)?;
        if details_type != 0 {
            return Err(format_err(format!(
                "{what}: custom quantization details (type {details_type}) are not supported"
            )));
        }
        let scales = t.vector_or_empty(2, 4, &what)?;
        let zeros = t.vector_or_empty(3, 8, &what)?;
        if scales.len() == 0 && zeros.len() == 0 {
            return Ok(None);
        }
        let dimension = t.i32_or(6, 0, &what)?;
        let dimension = usize::try_from(dimension)
            .map_err(|_| format_err(format!("{what}: negative quantized_dimension {dimension}")))?;
        let n = scales.len();
        let per_axis = shape.get(dimension).copied();
        if n == 0 || zeros.len() != n || (n != 1 && Some(n) != per_axis) {
            return Err(format_err(format!(
                "{what}: {n} scales and {} zero points for shape {shape:?} (quantized dimension \
                 {dimension}), expected 1 each or one per index of that dimension",
                zeros.len()
            )));
        }
        let scale = (0..n)
            .map(|i| scales.f32(i, &what))
            .collect::<Result<Vec<_>>>()?;
        let zero_point = (0..n)
            .map(|i| zeros.i64(i, &what))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Quantization {
            scale,
            zero_point,
            dimension,
        }))
    }
}

/// A vector of `i32` that should be short (operator inputs, outputs).
fn small_i32s(t: Table<'_>, slot: usize, what: &str) -> Result<Vec<i32>> {
    let v = t.vector_or_empty(slot, 4, what)?;
    if v.len() > MAX_OPERANDS {
        return Err(format_err(format!(
            "{what}: {} entries, more than MobileNet v1 uses",
            v.len()
        )));
    }
    v.i32s(what)
}

/// An `Operator` table, with its options (if any) as a raw table.
#[derive(Clone, Debug)]
pub(crate) struct Operator<'a> {
    pub opcode_index: u32,
    pub inputs: Vec<i32>,
    pub outputs: Vec<i32>,
    pub options_type: u8,
    pub options: Option<Table<'a>>,
}

/// Union tags of `BuiltinOptions` we read.
pub(crate) mod options {
    pub const CONV_2D: u8 = 1;
    pub const DEPTHWISE_CONV_2D: u8 = 2;
    pub const POOL_2D: u8 = 5;
    pub const FULLY_CONNECTED: u8 = 8;
    pub const SOFTMAX: u8 = 9;
    pub const RESHAPE: u8 = 17;
    pub const SQUEEZE: u8 = 30;
}

/// Most inputs or outputs an operator of ours has.
const MAX_OPERANDS: usize = 16;

impl<'a> Operator<'a> {
    fn parse(t: Table<'a>, what: &str) -> Result<Operator<'a>> {
        let opcode_index = t.u32_or(0, 0, what)?;
        let inputs = small_i32s(t, 1, what)?;
        let outputs = small_i32s(t, 2, what)?;
        let options_type = t.u8_or(3, 0, what)?;
        let options = if options_type == 0 {
            None
        } else {
            t.table(4, what)?
        };
        Ok(Operator {
            opcode_index,
            inputs,
            outputs,
            options_type,
            options,
        })
    }
}

/// `Conv2DOptions` and `DepthwiseConv2DOptions` (the fields we check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvOptions {
    pub padding: Padding,
    pub stride: [i32; 2],
    pub dilation: [i32; 2],
    pub depth_multiplier: i32,
    pub fused: Fused,
}

impl ConvOptions {
    /// `Conv2DOptions { padding, stride_w, stride_h,
    /// fused_activation_function, dilation_w_factor = 1,
    /// dilation_h_factor = 1 }`.
    pub(crate) fn conv(t: Table<'_>, what: &str) -> Result<ConvOptions> {
        Ok(ConvOptions {
            padding: Padding::from_code(t.u8_or(0, 0, what)?),
            stride: [t.i32_or(2, 0, what)?, t.i32_or(1, 0, what)?],
            fused: Fused::from_code(t.u8_or(3, 0, what)?),
            dilation: [t.i32_or(5, 1, what)?, t.i32_or(4, 1, what)?],
            depth_multiplier: 1,
        })
    }

    /// `DepthwiseConv2DOptions { padding, stride_w, stride_h,
    /// depth_multiplier, fused_activation_function, dilation_w_factor = 1,
    /// dilation_h_factor = 1 }`.
    pub(crate) fn depthwise(t: Table<'_>, what: &str) -> Result<ConvOptions> {
        Ok(ConvOptions {
            padding: Padding::from_code(t.u8_or(0, 0, what)?),
            stride: [t.i32_or(2, 0, what)?, t.i32_or(1, 0, what)?],
            depth_multiplier: t.i32_or(3, 0, what)?,
            fused: Fused::from_code(t.u8_or(4, 0, what)?),
            dilation: [t.i32_or(6, 1, what)?, t.i32_or(5, 1, what)?],
        })
    }
}

/// `Pool2DOptions { padding, stride_w, stride_h, filter_width,
/// filter_height, fused_activation_function }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PoolOptions {
    pub padding: Padding,
    pub stride: [i32; 2],
    pub filter: [i32; 2],
    pub fused: Fused,
}

impl PoolOptions {
    pub(crate) fn parse(t: Table<'_>, what: &str) -> Result<PoolOptions> {
        Ok(PoolOptions {
            padding: Padding::from_code(t.u8_or(0, 0, what)?),
            stride: [t.i32_or(2, 0, what)?, t.i32_or(1, 0, what)?],
            filter: [t.i32_or(4, 0, what)?, t.i32_or(3, 0, what)?],
            fused: Fused::from_code(t.u8_or(5, 0, what)?),
        })
    }
}

/// `FullyConnectedOptions { fused_activation_function, weights_format =
/// DEFAULT, keep_num_dims = false, asymmetric_quantize_inputs }` (the fields
/// we check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FullyConnectedOptions {
    pub fused: Fused,
    /// 0 is `DEFAULT`; others are shuffled layouts.
    pub weights_format: u8,
    pub keep_num_dims: bool,
}

impl FullyConnectedOptions {
    pub(crate) fn parse(t: Table<'_>, what: &str) -> Result<FullyConnectedOptions> {
        Ok(FullyConnectedOptions {
            fused: Fused::from_code(t.u8_or(0, 0, what)?),
            weights_format: t.u8_or(1, 0, what)?,
            keep_num_dims: t.u8_or(2, 0, what)? != 0,
        })
    }
}

/// `SoftmaxOptions { beta: float }`.
pub(crate) fn softmax_beta(t: Table<'_>, what: &str) -> Result<f32> {
    t.f32_or(0, 0.0, what)
}

/// `ReshapeOptions { new_shape: [int] }` / `SqueezeOptions { squeeze_dims:
/// [int] }`: the one vector field both have.
pub(crate) fn int_list(t: Table<'_>, what: &str) -> Result<Vec<i32>> {
    small_i32s(t, 0, what)
}
