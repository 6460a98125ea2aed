//! The ONNX protobuf messages we read and write, written by hand for
//! `prost` (no `protoc`, no build script).
//!
//! Transcribed from `onnx/onnx.proto` of ONNX 1.23.2 (IR version 14
//! schema, `syntax = "proto2"`): every field tag and wire type below was
//! copied from that file. The file is proto2, so singular scalars are
//! `Option`s (presence is kept, as in the C++ and Python bindings) and
//! repeated scalars are packed only where onnx.proto says `[packed = true]`
//! (`TensorProto`'s data fields); decoding accepts either encoding anyway.
//!
//! Only the messages and fields a MobileNet needs are declared. Fields we
//! leave out (sub-graphs in attributes, sparse tensors, training info,
//! functions, `value_info`, ...) are skipped by the decoder without being
//! stored; the importer rejects the few whose presence changes the meaning
//! of a model (see [`GraphProto::sparse_initializer`]).
//!
//! [`check_decode_budget`] bounds what decoding can allocate: a protobuf
//! message costs two bytes on the wire but a few hundred in memory, so a
//! hostile file of nothing but empty messages would otherwise blow up by a
//! factor of ~100.

use crate::error::{Error, Result};

/// `TensorProto.DataType.FLOAT`.
pub const DATA_TYPE_FLOAT: i32 = 1;
/// `TensorProto.DataType.INT64`.
pub const DATA_TYPE_INT64: i32 = 7;
/// `TensorProto.DataLocation.EXTERNAL`.
pub const DATA_LOCATION_EXTERNAL: i32 = 1;

/// `AttributeProto.AttributeType` values.
pub mod attribute_type {
    /// A single float (`f`).
    pub const FLOAT: i32 = 1;
    /// A single integer (`i`).
    pub const INT: i32 = 2;
    /// A byte string (`s`).
    pub const STRING: i32 = 3;
    /// A tensor (`t`).
    pub const TENSOR: i32 = 4;
    /// A list of floats (`floats`).
    pub const FLOATS: i32 = 6;
    /// A list of integers (`ints`).
    pub const INTS: i32 = 7;
}

/// `ModelProto`: the top-level message of a `.onnx` file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    /// `ir_version = 1`.
    #[prost(int64, optional, tag = "1")]
    pub ir_version: Option<i64>,
    /// `opset_import = 8`.
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    /// `producer_name = 2`.
    #[prost(string, optional, tag = "2")]
    pub producer_name: Option<String>,
    /// `producer_version = 3`.
    #[prost(string, optional, tag = "3")]
    pub producer_version: Option<String>,
    /// `domain = 4`.
    #[prost(string, optional, tag = "4")]
    pub domain: Option<String>,
    /// `model_version = 5`.
    #[prost(int64, optional, tag = "5")]
    pub model_version: Option<i64>,
    /// `doc_string = 6`.
    #[prost(string, optional, tag = "6")]
    pub doc_string: Option<String>,
    /// `graph = 7`.
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    /// `metadata_props = 14`.
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// `OperatorSetIdProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OperatorSetIdProto {
    /// `domain = 1` (empty or absent: the default `ai.onnx` domain).
    #[prost(string, optional, tag = "1")]
    pub domain: Option<String>,
    /// `version = 2`.
    #[prost(int64, optional, tag = "2")]
    pub version: Option<i64>,
}

/// `StringStringEntryProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StringStringEntryProto {
    /// `key = 1`.
    #[prost(string, optional, tag = "1")]
    pub key: Option<String>,
    /// `value = 2`.
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// `GraphProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphProto {
    /// `node = 1`, in topological order.
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    /// `name = 2`.
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
    /// `initializer = 5`.
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    /// `sparse_initializer = 15`, kept as undecoded bytes: we only need to
    /// know that there are some, to refuse them.
    #[prost(bytes = "vec", repeated, tag = "15")]
    pub sparse_initializer: Vec<Vec<u8>>,
    /// `doc_string = 10`.
    #[prost(string, optional, tag = "10")]
    pub doc_string: Option<String>,
    /// `input = 11`.
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    /// `output = 12`.
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
}

/// `NodeProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeProto {
    /// `input = 1`.
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    /// `output = 2`.
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    /// `name = 3`.
    #[prost(string, optional, tag = "3")]
    pub name: Option<String>,
    /// `op_type = 4`.
    #[prost(string, optional, tag = "4")]
    pub op_type: Option<String>,
    /// `domain = 7`.
    #[prost(string, optional, tag = "7")]
    pub domain: Option<String>,
    /// `attribute = 5`.
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    /// `doc_string = 6`.
    #[prost(string, optional, tag = "6")]
    pub doc_string: Option<String>,
}

/// `AttributeProto` (without the graph, sparse-tensor and type-proto
/// fields, which MobileNet's operators do not use).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeProto {
    /// `name = 1`.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// `ref_attr_name = 21` (only meaningful inside functions).
    #[prost(string, optional, tag = "21")]
    pub ref_attr_name: Option<String>,
    /// `doc_string = 13`.
    #[prost(string, optional, tag = "13")]
    pub doc_string: Option<String>,
    /// `type = 20`, an [`attribute_type`] value.
    #[prost(int32, optional, tag = "20")]
    pub r#type: Option<i32>,
    /// `f = 2`.
    #[prost(float, optional, tag = "2")]
    pub f: Option<f32>,
    /// `i = 3`.
    #[prost(int64, optional, tag = "3")]
    pub i: Option<i64>,
    /// `s = 4`.
    #[prost(bytes = "vec", optional, tag = "4")]
    pub s: Option<Vec<u8>>,
    /// `t = 5`.
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    /// `floats = 7` (not packed in onnx.proto).
    #[prost(float, repeated, packed = "false", tag = "7")]
    pub floats: Vec<f32>,
    /// `ints = 8` (not packed in onnx.proto).
    #[prost(int64, repeated, packed = "false", tag = "8")]
    pub ints: Vec<i64>,
    /// `strings = 9`.
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub strings: Vec<Vec<u8>>,
}

/// `TensorProto` (float, int32 and int64 payloads; the string, double and
/// uint64 payload fields are not declared).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    /// `dims = 1` (not packed in onnx.proto).
    #[prost(int64, repeated, packed = "false", tag = "1")]
    pub dims: Vec<i64>,
    /// `data_type = 2`, a `TensorProto.DataType` value.
    #[prost(int32, optional, tag = "2")]
    pub data_type: Option<i32>,
    /// `segment = 3`.
    #[prost(message, optional, tag = "3")]
    pub segment: Option<tensor_proto::Segment>,
    /// `float_data = 4 [packed = true]`.
    #[prost(float, repeated, packed = "true", tag = "4")]
    pub float_data: Vec<f32>,
    /// `int32_data = 5 [packed = true]`.
    #[prost(int32, repeated, packed = "true", tag = "5")]
    pub int32_data: Vec<i32>,
    /// `int64_data = 7 [packed = true]`.
    #[prost(int64, repeated, packed = "true", tag = "7")]
    pub int64_data: Vec<i64>,
    /// `name = 8`.
    #[prost(string, optional, tag = "8")]
    pub name: Option<String>,
    /// `doc_string = 12`.
    #[prost(string, optional, tag = "12")]
    pub doc_string: Option<String>,
    /// `raw_data = 9`: little-endian element bytes.
    #[prost(bytes = "vec", optional, tag = "9")]
    pub raw_data: Option<Vec<u8>>,
    /// `external_data = 13`.
    #[prost(message, repeated, tag = "13")]
    pub external_data: Vec<StringStringEntryProto>,
    /// `data_location = 14` ([`DATA_LOCATION_EXTERNAL`] = 1).
    #[prost(int32, optional, tag = "14")]
    pub data_location: Option<i32>,
}

/// Nested messages of `TensorProto`.
pub mod tensor_proto {
    /// `TensorProto.Segment`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Segment {
        /// `begin = 1`.
        #[prost(int64, optional, tag = "1")]
        pub begin: Option<i64>,
        /// `end = 2`.
        #[prost(int64, optional, tag = "2")]
        pub end: Option<i64>,
    }
}

/// `ValueInfoProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueInfoProto {
    /// `name = 1`.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// `type = 2`.
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
    /// `doc_string = 3`.
    #[prost(string, optional, tag = "3")]
    pub doc_string: Option<String>,
}

/// `TypeProto` (only the `tensor_type` member of its `value` oneof).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeProto {
    /// `oneof value { Tensor tensor_type = 1; ... }`.
    #[prost(oneof = "type_proto::Value", tags = "1")]
    pub value: Option<type_proto::Value>,
    /// `denotation = 6`.
    #[prost(string, optional, tag = "6")]
    pub denotation: Option<String>,
}

/// Nested messages of `TypeProto`.
pub mod type_proto {
    /// `TypeProto.Tensor`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Tensor {
        /// `elem_type = 1`, a `TensorProto.DataType` value.
        #[prost(int32, optional, tag = "1")]
        pub elem_type: Option<i32>,
        /// `shape = 2`.
        #[prost(message, optional, tag = "2")]
        pub shape: Option<super::TensorShapeProto>,
    }

    /// The `value` oneof of `TypeProto`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        /// `tensor_type = 1`.
        #[prost(message, tag = "1")]
        TensorType(Tensor),
    }
}

/// `TensorShapeProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    /// `dim = 1`.
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<tensor_shape_proto::Dimension>,
}

/// Nested messages of `TensorShapeProto`.
pub mod tensor_shape_proto {
    /// `TensorShapeProto.Dimension`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dimension {
        /// `oneof value { int64 dim_value = 1; string dim_param = 2; }`.
        #[prost(oneof = "dimension::Value", tags = "1, 2")]
        pub value: Option<dimension::Value>,
        /// `denotation = 3`.
        #[prost(string, optional, tag = "3")]
        pub denotation: Option<String>,
    }

    /// Nested types of `Dimension`.
    pub mod dimension {
        /// The `value` oneof of `Dimension`.
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            /// `dim_value = 1`: a fixed size.
            #[prost(int64, tag = "1")]
            DimValue(i64),
            /// `dim_param = 2`: a symbolic size such as `N`.
            #[prost(string, tag = "2")]
            DimParam(String),
        }
    }
}

/// Most embedded messages a file may hold (a MobileNet needs a few hundred).
pub const MAX_MESSAGES: usize = 1 << 16;
/// Most field occurrences (of any kind) in the messages we decode.
pub const MAX_FIELDS: usize = 1 << 22;

/// The message types of the tree we decode, for [`check_decode_budget`].
#[derive(Clone, Copy)]
enum Kind {
    Model,
    Graph,
    Node,
    Attribute,
    Tensor,
    ValueInfo,
    Type,
    TypeTensor,
    Shape,
    Leaf,
}

impl Kind {
    /// The message type of field `tag`, if it is one we decode as a message.
    fn child(self, tag: u64) -> Option<Kind> {
        use Kind::*;
        Some(match (self, tag) {
            (Model, 7) => Graph,
            (Model, 8 | 14) => Leaf,
            (Graph, 1) => Node,
            (Graph, 5) => Tensor,
            (Graph, 11 | 12) => ValueInfo,
            (Node, 5) => Attribute,
            (Attribute, 5) => Tensor,
            (Tensor, 3 | 13) => Leaf,
            (ValueInfo, 2) => Type,
            (Type, 1) => TypeTensor,
            (TypeTensor, 2) => Shape,
            (Shape, 1) => Leaf,
            _ => return None,
        })
    }
}

/// Walks the protobuf wire format of a `ModelProto` along the fields we
/// decode and fails if it holds more than [`MAX_MESSAGES`] messages or
/// [`MAX_FIELDS`] fields, so that decoding allocates at most a small
/// multiple of the input size. Malformed wire data is reported here too.
pub fn check_decode_budget(bytes: &[u8]) -> Result<()> {
    let mut messages = 0usize;
    let mut fields = 0usize;
    walk(bytes, Kind::Model, &mut messages, &mut fields)
}

fn walk(mut buf: &[u8], kind: Kind, messages: &mut usize, fields: &mut usize) -> Result<()> {
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let (tag, wire) = (key >> 3, key & 7);
        if tag == 0 {
            return Err(wire_err("field number 0"));
        }
        *fields += 1;
        if *fields > MAX_FIELDS {
            return Err(Error::Format(format!(
                "ONNX model has more than {MAX_FIELDS} protobuf fields; \
                 not a MobileNet (or a decompression bomb)"
            )));
        }
        match wire {
            0 => {
                varint(&mut buf)?;
            }
            1 => buf = advance(buf, 8)?,
            5 => buf = advance(buf, 4)?,
            2 => {
                let len = usize::try_from(varint(&mut buf)?)
                    .map_err(|_| wire_err("length does not fit in memory"))?;
                let body = buf.get(..len).ok_or_else(|| wire_err("truncated field"))?;
                buf = &buf[len..];
                if let Some(child) = kind.child(tag) {
                    *messages += 1;
                    if *messages > MAX_MESSAGES {
                        return Err(Error::Format(format!(
                            "ONNX model has more than {MAX_MESSAGES} protobuf messages; \
                             not a MobileNet"
                        )));
                    }
                    if !matches!(child, Kind::Leaf) {
                        walk(body, child, messages, fields)?;
                    }
                }
            }
            _ => return Err(wire_err(&format!("unsupported wire type {wire}"))),
        }
    }
    Ok(())
}

fn wire_err(what: &str) -> Error {
    Error::Format(format!("not a valid ONNX protobuf: {what}"))
}

fn advance(buf: &[u8], n: usize) -> Result<&[u8]> {
    buf.get(n..).ok_or_else(|| wire_err("truncated field"))
}

fn varint(buf: &mut &[u8]) -> Result<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&byte, rest) = buf
            .split_first()
            .ok_or_else(|| wire_err("truncated varint"))?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(wire_err("varint longer than 10 bytes"))
}
