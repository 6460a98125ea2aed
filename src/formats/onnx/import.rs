//! Reading an ONNX MobileNet v1 back into a [`MobileNet`].
//!
//! The graph must be a chain: every operator takes the previous one's output
//! as its data input and constants (initializers or `Constant` nodes) for
//! everything else. The chain is read into convolutions and a classifier,
//! the configuration is inferred from their shapes (or taken from our
//! `mobilenet.config` metadata, after checking it agrees), and every layer
//! is compared with [`Architecture::new`] of that configuration.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use prost::Message;

use super::proto::{
    AttributeProto, DATA_LOCATION_EXTERNAL, DATA_TYPE_FLOAT, DATA_TYPE_INT64, GraphProto,
    ModelProto, NodeProto, TensorProto, ValueInfoProto, attribute_type, check_decode_budget,
    tensor_shape_proto::dimension, type_proto,
};
use super::{
    KEY_CONFIG, KEY_LABELS, KEY_NAME, KEY_PREPROCESS, MAX_OPSET, MIN_OPSET, config_from_json,
    padding_name,
};
use crate::error::{Error, Result};
use crate::formats::{LoadedModel, ModelMetadata};
use crate::layers::{Activation, BatchNorm, Padding, PaddingMode, conv_output_size};
use crate::model::network::{Classifier, ConvBn, groups};
use crate::model::{Architecture, LayerKind, MobileNet, MobileNetConfig, Variant};
use crate::tensor::Tensor;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::Format(msg.into()))
}

pub(super) fn load(bytes: &[u8]) -> Result<LoadedModel> {
    check_decode_budget(bytes)?;
    let model = ModelProto::decode(bytes)
        .map_err(|e| Error::Format(format!("not a valid ONNX protobuf: {e}")))?;
    let opset = default_opset(&model)?;
    let Some(graph) = &model.graph else {
        return err("ONNX model has no graph");
    };
    let props = metadata_props(&model)?;
    let meta_config = props
        .get(KEY_CONFIG)
        .map(|text| config_from_json(text))
        .transpose()?;

    let consts = constants(graph)?;
    let input = graph_input(graph, &consts, meta_config.as_ref())?;
    let chain = read_chain(graph, &consts, opset, &input)?;
    let net = build(chain, &input, meta_config)?;

    let labels = match props.get(KEY_LABELS) {
        None => None,
        Some(text) => {
            let labels: Vec<String> = serde_json::from_str(text).map_err(|e| {
                Error::Format(format!(
                    "metadata_props {KEY_LABELS}: not a JSON list of strings: {e}"
                ))
            })?;
            if labels.len() != net.config().classes {
                return err(format!(
                    "metadata_props {KEY_LABELS} has {} labels for {} classes",
                    labels.len(),
                    net.config().classes
                ));
            }
            Some(labels)
        }
    };
    let metadata = ModelMetadata {
        name: props.get(KEY_NAME).map(|s| s.to_string()),
        preprocess: props.get(KEY_PREPROCESS).map(|s| s.to_string()),
        labels,
        source_format: "onnx".into(),
    };
    Ok(LoadedModel { net, metadata })
}

/// The version of the default (`ai.onnx`) opset the model imports.
fn default_opset(model: &ModelProto) -> Result<i64> {
    match model.ir_version {
        Some(v) if v >= 3 => {}
        Some(v) => return err(format!("ONNX IR version {v} is too old (need >= 3)")),
        None => return err("ONNX model has no ir_version"),
    }
    let mut found = None;
    for set in &model.opset_import {
        if is_default_domain(set.domain.as_deref()) {
            if found.is_some() {
                return err("ONNX model imports the default opset twice");
            }
            found = set.version;
        }
    }
    match found {
        Some(v) if (MIN_OPSET..=MAX_OPSET).contains(&v) => Ok(v),
        Some(v) => err(format!(
            "ONNX opset {v} is not supported (need {MIN_OPSET}..={MAX_OPSET})"
        )),
        None => err("ONNX model does not import the default (ai.onnx) opset"),
    }
}

fn is_default_domain(domain: Option<&str>) -> bool {
    matches!(domain, None | Some("") | Some("ai.onnx"))
}

/// Our `mobilenet.*` metadata entries (others are ignored).
fn metadata_props(model: &ModelProto) -> Result<HashMap<&str, &str>> {
    let mut props = HashMap::new();
    for entry in &model.metadata_props {
        let key = entry.key.as_deref().unwrap_or("");
        if !key.starts_with("mobilenet.") {
            continue;
        }
        let value = entry.value.as_deref().unwrap_or("");
        if props.insert(key, value).is_some() {
            return err(format!("metadata_props has two entries for {key}"));
        }
    }
    Ok(props)
}

/// Initializers and `Constant` node outputs, by name.
fn constants(graph: &GraphProto) -> Result<HashMap<&str, Cow<'_, TensorProto>>> {
    if !graph.sparse_initializer.is_empty() {
        return err("sparse initializers are not supported");
    }
    let mut consts: HashMap<&str, Cow<'_, TensorProto>> = HashMap::new();
    for t in &graph.initializer {
        let name = t.name.as_deref().unwrap_or("");
        if name.is_empty() {
            return err("an initializer has no name");
        }
        if consts.insert(name, Cow::Borrowed(t)).is_some() {
            return err(format!("two initializers are called '{name}'"));
        }
    }
    for (index, node) in graph.node.iter().enumerate() {
        if node.op_type.as_deref() != Some("Constant") || !is_default_domain(node.domain.as_deref())
        {
            continue;
        }
        let what = describe(index, node);
        if !node.input.is_empty() || node.output.len() != 1 || node.output[0].is_empty() {
            return err(format!("{what}: needs no inputs and one output"));
        }
        let [attr] = &node.attribute[..] else {
            return err(format!("{what}: needs exactly one attribute"));
        };
        let name = attr.name.as_deref().unwrap_or("");
        let tensor = match name {
            "value" => match (&attr.t, attr.r#type) {
                (Some(t), None | Some(attribute_type::TENSOR)) => Cow::Borrowed(t),
                _ => return err(format!("{what}: attribute 'value' is not a tensor")),
            },
            "value_float" => Cow::Owned(float_tensor(vec![], vec![get_float(attr, &what)?])),
            "value_floats" => {
                let values = get_floats(attr, &what)?;
                Cow::Owned(float_tensor(vec![values.len() as i64], values))
            }
            "value_int" => Cow::Owned(int_tensor(vec![], vec![get_int(attr, &what)?])),
            "value_ints" => {
                let values = get_ints(attr, &what)?;
                Cow::Owned(int_tensor(vec![values.len() as i64], values))
            }
            _ => return err(format!("{what}: unsupported attribute '{name}'")),
        };
        if consts.insert(&node.output[0], tensor).is_some() {
            return err(format!(
                "{what}: output '{}' is defined twice",
                node.output[0]
            ));
        }
    }
    Ok(consts)
}

fn float_tensor(dims: Vec<i64>, values: Vec<f32>) -> TensorProto {
    TensorProto {
        dims,
        data_type: Some(DATA_TYPE_FLOAT),
        float_data: values,
        ..Default::default()
    }
}

fn int_tensor(dims: Vec<i64>, values: Vec<i64>) -> TensorProto {
    TensorProto {
        dims,
        data_type: Some(DATA_TYPE_INT64),
        int64_data: values,
        ..Default::default()
    }
}

/// The graph's one data input.
struct Input {
    name: String,
    /// Height and width, if the file or our metadata says.
    resolution: usize,
}

fn graph_input(
    graph: &GraphProto,
    consts: &HashMap<&str, Cow<'_, TensorProto>>,
    meta: Option<&MobileNetConfig>,
) -> Result<Input> {
    // Before IR 4, initializers were listed among the inputs too.
    let inputs: Vec<&ValueInfoProto> = graph
        .input
        .iter()
        .filter(|v| !consts.contains_key(v.name.as_deref().unwrap_or("")))
        .collect();
    let [input] = inputs[..] else {
        return err(format!(
            "the graph needs exactly one data input, it has {}",
            inputs.len()
        ));
    };
    let name = input.name.clone().unwrap_or_default();
    if name.is_empty() {
        return err("the graph input has no name");
    }
    let what = format!("graph input '{name}'");
    let tensor = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => t,
        None => return err(format!("{what} is not a tensor")),
    };
    if let Some(elem) = tensor.elem_type
        && elem != DATA_TYPE_FLOAT
    {
        return err(format!("{what} has element type {elem}, not float"));
    }
    // Static sizes of the shape, `None` for symbolic ones.
    let mut hw = [None, None];
    if let Some(shape) = &tensor.shape {
        let dims: Vec<Option<i64>> = shape
            .dim
            .iter()
            .map(|d| match d.value {
                Some(dimension::Value::DimValue(v)) => Some(v),
                _ => None,
            })
            .collect();
        let [batch, c, h, w] = dims[..] else {
            return err(format!(
                "{what} has rank {}, expected 4 (NCHW images)",
                dims.len()
            ));
        };
        if let Some(n) = batch
            && n < 1
        {
            return err(format!("{what} has batch size {n}"));
        }
        if c.is_some_and(|c| c != 3) {
            return err(format!(
                "{what} has shape {dims:?}: expected NCHW [N, 3, R, R] (NHWC inputs are not supported)"
            ));
        }
        hw = [h, w];
    }
    let resolution = match hw {
        [Some(h), Some(w)] if h == w => {
            usize::try_from(h).map_err(|_| Error::Format(format!("{what} has height {h}")))?
        }
        [Some(h), Some(w)] => {
            return err(format!(
                "{what} is {h}x{w}: only square inputs are supported"
            ));
        }
        _ => match meta {
            Some(m) => m.resolution,
            None => {
                return err(format!(
                    "{what} has no fixed height and width, and the file has no \
                     {KEY_CONFIG} metadata: cannot tell the resolution"
                ));
            }
        },
    };
    Ok(Input { name, resolution })
}

/// One convolution of the feature extractor as read from the graph.
struct ConvLayer {
    /// The node's description, for errors.
    what: String,
    /// `[C_out, C_in / groups, K, K]`.
    weight: Tensor,
    bn: BatchNorm,
    stride: usize,
    padding: Padding,
    groups: usize,
    activation: Activation,
}

/// The graph read as a chain.
struct Chain {
    convs: Vec<ConvLayer>,
    classifier: Classifier,
}

/// What flows between the nodes.
struct Cursor<'g> {
    /// Name of the current value.
    value: String,
    /// Its channels and spatial size (NCHW `[C, H, W]`), or `[C]` once
    /// flattened to `[N, C]`.
    channels: usize,
    spatial: Option<[usize; 2]>,
    /// Names defined so far (SSA check).
    defined: HashSet<&'g str>,
}

/// The non-`Constant` nodes, with their index in the graph.
struct Nodes<'g> {
    nodes: Vec<(usize, &'g NodeProto)>,
    next: usize,
}

impl<'g> Nodes<'g> {
    fn peek(&self) -> Option<&'g NodeProto> {
        self.nodes.get(self.next).map(|(_, n)| *n)
    }

    fn peek_op(&self) -> Option<&'g str> {
        self.peek().map(|n| n.op_type.as_deref().unwrap_or(""))
    }

    fn take(&mut self) -> Option<(String, &'g NodeProto)> {
        let (index, node) = *self.nodes.get(self.next)?;
        self.next += 1;
        Some((describe(index, node), node))
    }
}

fn describe(index: usize, node: &NodeProto) -> String {
    let op = node.op_type.as_deref().unwrap_or("?");
    match node.name.as_deref() {
        Some(name) if !name.is_empty() => format!("node {index} ('{name}', {op})"),
        _ => format!("node {index} ({op})"),
    }
}

/// The operators' context: constants and opset.
struct Ctx<'a, 'g> {
    consts: &'a HashMap<&'g str, Cow<'g, TensorProto>>,
    opset: i64,
}

fn read_chain(
    graph: &GraphProto,
    consts: &HashMap<&str, Cow<'_, TensorProto>>,
    opset: i64,
    input: &Input,
) -> Result<Chain> {
    let ctx = Ctx { consts, opset };
    let mut nodes = Nodes {
        nodes: graph
            .node
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                !(n.op_type.as_deref() == Some("Constant")
                    && is_default_domain(n.domain.as_deref()))
            })
            .collect(),
        next: 0,
    };
    let r = input.resolution;
    let mut cur = Cursor {
        value: input.name.clone(),
        channels: 3,
        spatial: Some([r, r]),
        defined: HashSet::new(),
    };
    cur.defined.insert(&input.name);

    // The feature extractor: Conv [BatchNormalization] [Relu | Clip], ...
    let mut convs = Vec::new();
    loop {
        let Some((what, node)) = nodes.take() else {
            return err("the graph ends before its GlobalAveragePool");
        };
        match node.op_type.as_deref().unwrap_or("") {
            "Conv" => {
                let mut layer = conv(&ctx, &mut cur, &what, node)?;
                skip_pass_through(&ctx, &mut cur, &mut nodes)?;
                if nodes.peek_op() == Some("BatchNormalization") {
                    let (what, node) = nodes.take().expect("peeked");
                    batch_norm(&ctx, &mut cur, &what, node, &mut layer.bn)?;
                    skip_pass_through(&ctx, &mut cur, &mut nodes)?;
                }
                if matches!(nodes.peek_op(), Some("Relu" | "Clip")) {
                    let (what, node) = nodes.take().expect("peeked");
                    layer.activation = activation(&ctx, &mut cur, &what, node)?;
                }
                convs.push(layer);
            }
            "GlobalAveragePool" => {
                no_attributes(&what, node)?;
                flow(&ctx, &mut cur, &what, node, 1)?;
                cur.spatial = Some([1, 1]);
                break;
            }
            "Identity" | "Dropout" => pass_through(&ctx, &mut cur, &what, node)?,
            other => {
                return err(format!(
                    "{what}: unexpected operator {other} in the feature extractor \
                     (expected Conv, BatchNormalization, Relu, Clip or GlobalAveragePool)"
                ));
            }
        }
    }

    // The head: Flatten / Reshape / Squeeze, Gemm / MatMul [+ Add] / 1x1 Conv, [Softmax].
    let mut classifier = None;
    let mut softmax = false;
    while let Some((what, node)) = nodes.take() {
        let op = node.op_type.as_deref().unwrap_or("");
        if softmax {
            return err(format!("{what}: nothing may follow the Softmax"));
        }
        match op {
            "Flatten" | "Reshape" | "Squeeze" if cur.spatial.is_some() => {
                flatten(&ctx, &mut cur, &what, node)?;
            }
            "Gemm" | "MatMul" if cur.spatial.is_none() && classifier.is_none() => {
                let mut fc = if op == "Gemm" {
                    gemm(&ctx, &mut cur, &what, node)?
                } else {
                    matmul(&ctx, &mut cur, &what, node)?
                };
                if op == "MatMul" && nodes.peek_op() == Some("Add") {
                    let (what, node) = nodes.take().expect("peeked");
                    add_bias(&ctx, &mut cur, &what, node, &mut fc)?;
                }
                classifier = Some(fc);
            }
            "Conv" if cur.spatial.is_some() && classifier.is_none() => {
                let layer = conv(&ctx, &mut cur, &what, node)?;
                classifier = Some(conv_classifier(&what, layer)?);
            }
            "Softmax" if cur.spatial.is_none() && classifier.is_some() => {
                softmax_node(&ctx, &mut cur, &what, node)?;
                softmax = true;
            }
            "Identity" | "Dropout" => pass_through(&ctx, &mut cur, &what, node)?,
            _ => {
                return err(format!(
                    "{what}: unexpected operator {op} after the GlobalAveragePool \
                     (expected Flatten, Reshape or Squeeze, then Gemm, MatMul + Add or a 1x1 \
                     Conv, then optionally Softmax)"
                ));
            }
        }
    }
    let Some(classifier) = classifier else {
        return err("the graph has no classifier (Gemm, MatMul or 1x1 Conv) after its pooling");
    };
    if cur.spatial.is_some() {
        return err("the graph's output is not flattened to [N, classes]");
    }
    let outputs: Vec<&str> = graph
        .output
        .iter()
        .map(|v| v.name.as_deref().unwrap_or(""))
        .collect();
    if outputs != [cur.value.as_str()] {
        return err(format!(
            "the graph's outputs are {outputs:?}; expected just '{}', the end of the chain",
            cur.value
        ));
    }
    Ok(Chain { convs, classifier })
}

/// Checks that `node` reads the current value as its first input, that its
/// other inputs are constants, and that it has one new output (and at most
/// `max_outputs` in all); moves the cursor to it.
fn flow<'g>(
    ctx: &Ctx<'_, '_>,
    cur: &mut Cursor<'g>,
    what: &str,
    node: &'g NodeProto,
    max_outputs: usize,
) -> Result<()> {
    flow_at(ctx, cur, what, node, 0, max_outputs)
}

/// [`flow`] with the data input at `slot`.
fn flow_at<'g>(
    ctx: &Ctx<'_, '_>,
    cur: &mut Cursor<'g>,
    what: &str,
    node: &'g NodeProto,
    slot: usize,
    max_outputs: usize,
) -> Result<()> {
    if !is_default_domain(node.domain.as_deref()) {
        return err(format!(
            "{what}: operator domain '{}' is not supported",
            node.domain.as_deref().unwrap_or("")
        ));
    }
    let Some(data) = node.input.get(slot) else {
        return err(format!("{what}: has no input {slot}"));
    };
    if *data != cur.value {
        return err(format!(
            "{what}: reads '{data}' where the chain has '{}' (only a single chain of \
             operators is supported)",
            cur.value
        ));
    }
    for (i, name) in node.input.iter().enumerate() {
        if i != slot && !name.is_empty() && !ctx.consts.contains_key(name.as_str()) {
            return err(format!(
                "{what}: input '{name}' is not an initializer or constant"
            ));
        }
    }
    let Some(out) = node.output.first().filter(|o| !o.is_empty()) else {
        return err(format!("{what}: has no output"));
    };
    if node.output.len() > max_outputs {
        return err(format!(
            "{what}: has {} outputs, at most {max_outputs} supported",
            node.output.len()
        ));
    }
    for name in &node.output {
        if name.is_empty() {
            continue;
        }
        if ctx.consts.contains_key(name.as_str()) || !cur.defined.insert(name) {
            return err(format!("{what}: output '{name}' is defined twice"));
        }
    }
    cur.value = out.clone();
    Ok(())
}

/// The constant input `slot` of a node, or `None` if absent or empty.
fn const_input<'a>(ctx: &'a Ctx<'_, '_>, node: &NodeProto, slot: usize) -> Option<&'a TensorProto> {
    let name = node.input.get(slot).filter(|n| !n.is_empty())?;
    ctx.consts.get(name.as_str()).map(|c| c.as_ref())
}

fn required_input<'a>(
    ctx: &'a Ctx<'_, '_>,
    what: &str,
    node: &NodeProto,
    slot: usize,
    role: &str,
) -> Result<&'a TensorProto> {
    const_input(ctx, node, slot).ok_or_else(|| {
        Error::Format(format!(
            "{what}: missing initializer for its {role} (input {slot})"
        ))
    })
}

/// The node's attributes by name, refusing names not in `allowed`.
fn attributes<'n>(
    what: &str,
    node: &'n NodeProto,
    allowed: &[&str],
) -> Result<HashMap<&'n str, &'n AttributeProto>> {
    let mut map = HashMap::new();
    for attr in &node.attribute {
        let name = attr.name.as_deref().unwrap_or("");
        if attr.ref_attr_name.is_some() {
            return err(format!(
                "{what}: attribute '{name}' refers to a function attribute"
            ));
        }
        if !allowed.contains(&name) {
            return err(format!("{what}: unsupported attribute '{name}'"));
        }
        if map.insert(name, attr).is_some() {
            return err(format!("{what}: attribute '{name}' given twice"));
        }
    }
    Ok(map)
}

fn no_attributes(what: &str, node: &NodeProto) -> Result<()> {
    attributes(what, node, &[]).map(|_| ())
}

fn check_type(attr: &AttributeProto, expected: i32, what: &str) -> Result<()> {
    match attr.r#type {
        None => Ok(()),
        Some(t) if t == expected => Ok(()),
        Some(t) => err(format!(
            "{what}: attribute '{}' has type {t}, expected {expected}",
            attr.name.as_deref().unwrap_or("")
        )),
    }
}

fn get_int(attr: &AttributeProto, what: &str) -> Result<i64> {
    check_type(attr, attribute_type::INT, what)?;
    attr.i.ok_or_else(|| {
        Error::Format(format!(
            "{what}: attribute '{}' has no integer",
            attr.name.as_deref().unwrap_or("")
        ))
    })
}

fn get_float(attr: &AttributeProto, what: &str) -> Result<f32> {
    check_type(attr, attribute_type::FLOAT, what)?;
    attr.f.ok_or_else(|| {
        Error::Format(format!(
            "{what}: attribute '{}' has no float",
            attr.name.as_deref().unwrap_or("")
        ))
    })
}

fn get_ints(attr: &AttributeProto, what: &str) -> Result<Vec<i64>> {
    check_type(attr, attribute_type::INTS, what)?;
    Ok(attr.ints.clone())
}

fn get_floats(attr: &AttributeProto, what: &str) -> Result<Vec<f32>> {
    check_type(attr, attribute_type::FLOATS, what)?;
    Ok(attr.floats.clone())
}

fn get_string<'a>(attr: &'a AttributeProto, what: &str) -> Result<&'a str> {
    check_type(attr, attribute_type::STRING, what)?;
    let bytes = attr.s.as_deref().unwrap_or(b"");
    std::str::from_utf8(bytes).map_err(|_| {
        Error::Format(format!(
            "{what}: attribute '{}' is not UTF-8",
            attr.name.as_deref().unwrap_or("")
        ))
    })
}

fn int_attr(
    attrs: &HashMap<&str, &AttributeProto>,
    key: &str,
    default: i64,
    what: &str,
) -> Result<i64> {
    attrs.get(key).map_or(Ok(default), |a| get_int(a, what))
}

fn float_attr(
    attrs: &HashMap<&str, &AttributeProto>,
    key: &str,
    default: f32,
    what: &str,
) -> Result<f32> {
    attrs.get(key).map_or(Ok(default), |a| get_float(a, what))
}

/// The dimensions of a tensor, checked non-negative, and its element count.
fn dims_of(t: &TensorProto, what: &str) -> Result<(Vec<usize>, usize)> {
    let dims = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<Vec<usize>, _>>()
        .map_err(|_| Error::Format(format!("{what}: negative dimension in {:?}", t.dims)))?;
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::Format(format!("{what}: dimensions {dims:?} overflow")))?;
    Ok((dims, count))
}

fn check_inline(t: &TensorProto, what: &str) -> Result<()> {
    if t.data_location == Some(DATA_LOCATION_EXTERNAL) || !t.external_data.is_empty() {
        return err(format!("{what}: external tensor data is not supported"));
    }
    if t.segment.is_some() {
        return err(format!("{what}: segmented tensors are not supported"));
    }
    Ok(())
}

/// A float tensor's dimensions and finite values.
fn floats(t: &TensorProto, what: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let what = match t.name.as_deref() {
        Some(name) if !name.is_empty() => format!("{what} (tensor '{name}')"),
        _ => what.to_string(),
    };
    check_inline(t, &what)?;
    match t.data_type {
        Some(DATA_TYPE_FLOAT) => {}
        other => {
            return err(format!(
                "{what}: data type {} is not float32",
                other.unwrap_or(0)
            ));
        }
    }
    let (dims, count) = dims_of(t, &what)?;
    let values = match (&t.raw_data, t.float_data.is_empty()) {
        (Some(raw), true) => {
            if Some(raw.len()) != count.checked_mul(4) {
                return err(format!(
                    "{what}: shape {dims:?} needs {count} floats, raw_data holds {} bytes",
                    raw.len()
                ));
            }
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        }
        (None, _) => {
            if t.float_data.len() != count {
                return err(format!(
                    "{what}: shape {dims:?} needs {count} floats, float_data holds {}",
                    t.float_data.len()
                ));
            }
            t.float_data.clone()
        }
        (Some(_), false) => return err(format!("{what}: has both raw_data and float_data")),
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return err(format!("{what}: element {i} is {}", values[i]));
    }
    Ok((dims, values))
}

/// An int64 tensor's dimensions and values.
fn int64s(t: &TensorProto, what: &str) -> Result<(Vec<usize>, Vec<i64>)> {
    check_inline(t, what)?;
    if t.data_type != Some(DATA_TYPE_INT64) {
        return err(format!(
            "{what}: data type {} is not int64",
            t.data_type.unwrap_or(0)
        ));
    }
    let (dims, count) = dims_of(t, what)?;
    let values = match (&t.raw_data, t.int64_data.is_empty()) {
        (Some(raw), true) => {
            if Some(raw.len()) != count.checked_mul(8) {
                return err(format!(
                    "{what}: shape {dims:?} needs {count} int64s, raw_data holds {} bytes",
                    raw.len()
                ));
            }
            raw.chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect()
        }
        (None, _) if t.int64_data.len() == count => t.int64_data.clone(),
        _ => return err(format!("{what}: int64 data does not match shape {dims:?}")),
    };
    Ok((dims, values))
}

/// A float vector of exactly `len` elements (shape `[len]`).
fn vector(t: &TensorProto, len: usize, what: &str) -> Result<Vec<f32>> {
    let (dims, values) = floats(t, what)?;
    if dims != [len] {
        return err(format!("{what}: shape {dims:?}, expected [{len}]"));
    }
    Ok(values)
}

/// A single float (shape `[]` or `[1]`).
fn scalar(t: &TensorProto, what: &str) -> Result<f32> {
    let (dims, values) = floats(t, what)?;
    match (&dims[..], &values[..]) {
        ([] | [1], [v]) => Ok(*v),
        _ => err(format!("{what}: shape {dims:?}, expected a scalar")),
    }
}

fn to_usize(v: i64, what: &str, name: &str) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::Format(format!("{what}: {name} {v} is negative")))
}

fn conv<'g>(
    ctx: &Ctx<'_, '_>,
    cur: &mut Cursor<'g>,
    what: &str,
    node: &'g NodeProto,
) -> Result<ConvLayer> {
    let Some([h, w]) = cur.spatial else {
        return err(format!("{what}: Conv on a flattened tensor"));
    };
    let c_in = cur.channels;
    flow(ctx, cur, what, node, 1)?;
    if node.input.len() > 3 {
        return err(format!("{what}: Conv takes at most 3 inputs"));
    }
    let attrs = attributes(
        what,
        node,
        &[
            "auto_pad",
            "dilations",
            "group",
            "kernel_shape",
            "pads",
            "strides",
        ],
    )?;
    let (dims, weight) = floats(required_input(ctx, what, node, 1, "weight")?, what)?;
    let [c_out, per_group, kh, kw] = dims[..] else {
        return err(format!("{what}: weight shape {dims:?} is not 4-D"));
    };
    if kh != kw || kh == 0 {
        return err(format!(
            "{what}: kernel {kh}x{kw}: only square kernels are supported"
        ));
    }
    if c_out == 0 {
        return err(format!("{what}: weight has no output channels"));
    }
    let group = to_usize(int_attr(&attrs, "group", 1, what)?, what, "group")?;
    if group == 0 || per_group.checked_mul(group) != Some(c_in) {
        return err(format!(
            "{what}: weight {dims:?} with group {group} does not take the {c_in} input channels"
        ));
    }
    if group != 1 && !(group == c_in && c_out == c_in) {
        return err(format!(
            "{what}: group {group}: only standard and depthwise (group = channels) \
             convolutions are supported"
        ));
    }
    let k = kh;
    if let Some(a) = attrs.get("kernel_shape") {
        let ks = get_ints(a, what)?;
        if ks != [k as i64, k as i64] {
            return err(format!(
                "{what}: kernel_shape {ks:?} does not match weight {dims:?}"
            ));
        }
    }
    if let Some(a) = attrs.get("dilations")
        && get_ints(a, what)?.iter().any(|&d| d != 1)
    {
        return err(format!("{what}: dilated convolutions are not supported"));
    }
    let strides = match attrs.get("strides") {
        Some(a) => get_ints(a, what)?,
        None => vec![1, 1],
    };
    let stride = match strides[..] {
        [s, t] if s == t && s >= 1 => to_usize(s, what, "stride")?,
        _ => {
            return err(format!(
                "{what}: strides {strides:?}: need two equal strides >= 1"
            ));
        }
    };
    let auto_pad = match attrs.get("auto_pad") {
        Some(a) => get_string(a, what)?,
        None => "NOTSET",
    };
    let padding = match auto_pad {
        "NOTSET" => {
            let pads = match attrs.get("pads") {
                Some(a) => get_ints(a, what)?,
                None => vec![0; 4],
            };
            let [top, left, bottom, right] = pads[..] else {
                return err(format!("{what}: pads {pads:?} need 4 entries"));
            };
            Padding {
                top: to_usize(top, what, "pad")?,
                left: to_usize(left, what, "pad")?,
                bottom: to_usize(bottom, what, "pad")?,
                right: to_usize(right, what, "pad")?,
            }
        }
        "VALID" | "SAME_UPPER" | "SAME_LOWER" if attrs.contains_key("pads") => {
            return err(format!("{what}: both auto_pad {auto_pad} and pads"));
        }
        "VALID" => Padding::zero(),
        "SAME_UPPER" => PaddingMode::TfSame.resolve(h, w, [k, k], [stride, stride], [1, 1]),
        "SAME_LOWER" => {
            let p = PaddingMode::TfSame.resolve(h, w, [k, k], [stride, stride], [1, 1]);
            Padding {
                top: p.bottom,
                bottom: p.top,
                left: p.right,
                right: p.left,
            }
        }
        other => return err(format!("{what}: unknown auto_pad '{other}'")),
    };
    let size_err = |e: Error| Error::Format(format!("{what}: {e}"));
    let out_h = conv_output_size(h, k, stride, 1, padding.top, padding.bottom).map_err(size_err)?;
    let out_w = conv_output_size(w, k, stride, 1, padding.left, padding.right).map_err(size_err)?;
    let bias = match const_input(ctx, node, 2) {
        Some(t) => vector(t, c_out, &format!("{what} bias"))?,
        None if node.input.get(2).is_some_and(|n| !n.is_empty()) => {
            return err(format!("{what}: missing initializer for its bias"));
        }
        None => vec![0.0; c_out],
    };
    cur.channels = c_out;
    cur.spatial = Some([out_h, out_w]);
    Ok(ConvLayer {
        what: what.to_string(),
        weight: Tensor::new(dims, weight)?,
        bn: BatchNorm {
            gamma: vec![1.0; c_out],
            beta: bias,
            mean: vec![0.0; c_out],
            var: vec![1.0; c_out],
            eps: 0.0,
        },
        stride,
        padding,
        groups: group,
        activation: Activation::Identity,
    })
}

/// Replaces the conv's bias-only batch norm `bn` with the node's, folding
/// the conv bias `b` into the mean: `BN(y + b) = γ (y - (μ - b)) / ... + β`.
fn batch_norm<'g>(
    ctx: &Ctx<'_, '_>,
    cur: &mut Cursor<'g>,
    what: &str,
    node: &'g NodeProto,
    bn: &mut BatchNorm,
) -> Result<()> {
    // Training-mode outputs (running mean and variance) must be absent.
    let extra_outputs = node.output.iter().skip(1).any(|o| !o.is_empty());
    if extra_outputs {
        return err(format!(
            "{what}: BatchNormalization in training mode is not supported"
        ));
    }
    flow(ctx, cur, what, node, node.output.len().max(1))?;
    if node.input.len() != 5 {
        return err(format!(
            "{what}: BatchNormalization needs 5 inputs, has {}",
            node.input.len()
        ));
    }
    let attrs = attributes(
        what,
        node,
        &[
            "epsilon",
            "momentum",
            "spatial",
            "training_mode",
            "is_test",
            "consumed_inputs",
        ],
    )?;
    if int_attr(&attrs, "spatial", 1, what)? != 1 {
        return err(format!("{what}: spatial = 0 is not supported"));
    }
    if int_attr(&attrs, "training_mode", 0, what)? != 0 {
        return err(format!("{what}: training_mode = 1 is not supported"));
    }
    let eps = float_attr(&attrs, "epsilon", 1e-5, what)?;
    let c = cur.channels;
    let part = |slot: usize, role: &str| {
        vector(
            required_input(ctx, what, node, slot, role)?,
            c,
            &format!("{what} {role}"),
        )
    };
    let gamma = part(1, "scale")?;
    let beta = part(2, "bias")?;
    let mean = part(3, "mean")?;
    let var = part(4, "variance")?;
    if !eps.is_finite() || eps < 0.0 {
        return err(format!("{what}: epsilon {eps}"));
    }
    if let Some(i) = var
        .iter()
        .position(|&v| f64::from(v) + f64::from(eps) <= 0.0)
    {
        return err(format!(
            "{what}: variance {} + epsilon {eps} of channel {i} is not positive",
            var[i]
        ));
    }
    let mean = mean
        .iter()
        .zip(&bn.beta)
        .map(|(&m, &b)| (f64::from(m) - f64::from(b)) as f32)
        .collect();
    *bn = BatchNorm {
        gamma,
        beta,
        mean,
        var,
        eps,
    };
    Ok(())
}

/// `Relu` or `Clip(0, 6)` (or `Clip(0, +inf)`).
fn activation<'g>(
    ctx: &Ctx<'_, '_>,
    cur: &mut Cursor<'g>,
    what: &str,
    node: &'g NodeProto,
) -> Result<Activation> {
    flow(ctx, cur, what, node, 1)?;
    if node.op_type.as_deref() == Some("Relu") {
        no_attributes(what, node)?;
        if node.input.len() != 1 {
            return err(format!("{what}: Relu takes one input"));
        }
        return Ok(Activation::Relu);
    }
    let (min, max) = if ctx.opset < 11 {
        let attrs = attributes(what, node, &["min", "max"])?;
        if node.input.len() != 1 {
            return err(format!("{what}: Clip takes one input before opset 11"));
        }
        (
            float_attr(&attrs, "min", f32::MIN, what)?,
            float_attr(&attrs, "max", f32::MAX, what)?,
        )
    } else {
        no_attributes(what, node)?;
        if node.input.len() > 3 {
            return err(format!("{what}: Clip takes at most 3 inputs"));
        }
        let bound = |slot: usize, role: &str, default: f32| match const_input(ctx, node, slot) {
            Some(t) => scalar(t, &format!("{what} {role}")),
            None => Ok(default),
        };
        (bound(1, "min", f32::MIN)?, bound(2, "max", f32::MAX)?)
    };
    match (min, max) {
        (0.0, 6.0) => Ok(Activation::Relu6),
        (0.0, f32::MAX) => Ok(Activation::Relu),
        _ => err(format!(
            "{what}: Clip({min}, {max}) is not supported (only Clip(0, 6) = ReLU6)"
        )),
    }
}

fn pass_through<'g>(
    ctx: &Ctx<'_, '_>,
    cur: &mut Cursor<'g>,
    what: &str,
    node: &'g NodeProto,
) -> Result<()> {
    if node.op_type.as_deref() == Some("Dropout") {
        // At inference Dropout is the identity; its mask output must be unused.
        if node.output.iter().skip(1).any(|o| !o.is_empty()) {
            return err(format!("{what}: Dropout's mask output is not supported"));
        }
        attributes(what, node, &["ratio", "seed", "is_test"])?;
        if let Some(t) = const_input(ctx, node, 2) {
            let training = match t.data_type {
                Some(9) => {
                    t.raw_data.as_deref().unwrap_or(&[]).iter().any(|&b| b != 0)
                        || t.int32_data.iter().any(|&v| v != 0)
                }
                _ => true,
            };
            if training {
                return err(format!("{what}: Dropout in training mode is not supported"));
            }
        }
        flow(ctx, cur, what, node, node.output.len().max(1))
    } else {
        no_attributes(what, node)?;
        if node.input.len() != 1 {
            return err(format!("{what}: Identity takes one input"));
        }
        flow(ctx, cur, what, node, 1)
    }
}

fn skip_pass_through<'g>(
    ctx: &Ctx<'_, '_>,
    cur: &mut Cursor<'g>,
    nodes: &mut Nodes<'g>,
) -> Result<()> {
    while matches!(nodes.peek_op(), Some("Identity" | "Dropout")) {
        let (what, node) = nodes.take().expect("peeked");
        pass_through(ctx, cur, &what, node)?;
    }
    Ok(())
}

/// `[N, C, 1, 1]` -> `[N, C]` by Flatten (axis 1), Reshape (to `[N, C]`)
/// or Squeeze (axes 2 and 3).
fn flatten<'g>(
    ctx: &Ctx<'_, '_>,
    cur: &mut Cursor<'g>,
    what: &str,
    node: &'g NodeProto,
) -> Result<()> {
    if cur.spatial != Some([1, 1]) {
        return err(format!("{what}: flattening a map that is not 1x1"));
    }
    flow(ctx, cur, what, node, 1)?;
    let c = cur.channels as i64;
    match node.op_type.as_deref().unwrap_or("") {
        "Flatten" => {
            let attrs = attributes(what, node, &["axis"])?;
            let axis = int_attr(&attrs, "axis", 1, what)?;
            if (axis != 1 && axis != -3) || node.input.len() != 1 {
                return err(format!("{what}: Flatten with axis {axis} is not supported"));
            }
        }
        "Reshape" => {
            let attrs = attributes(what, node, &["allowzero", "shape"])?;
            if attrs.contains_key("shape") || node.input.len() != 2 {
                return err(format!("{what}: Reshape needs its shape as a second input"));
            }
            let allow_zero = int_attr(&attrs, "allowzero", 0, what)? != 0;
            let t = required_input(ctx, what, node, 1, "shape")?;
            let (_, shape) = int64s(t, &format!("{what} shape"))?;
            let ok = match shape[..] {
                [n, d] => {
                    let batch_ok = (n == 0 && !allow_zero) || n == -1 || n >= 1;
                    let keeps = d == c || (n != -1 && d == -1);
                    batch_ok && keeps
                }
                _ => false,
            };
            if !ok {
                return err(format!("{what}: Reshape to {shape:?} is not [N, {c}]"));
            }
        }
        _ => {
            let axes = if ctx.opset < 13 {
                let attrs = attributes(what, node, &["axes"])?;
                match attrs.get("axes") {
                    Some(a) => get_ints(a, what)?,
                    None => vec![],
                }
            } else {
                no_attributes(what, node)?;
                match const_input(ctx, node, 1) {
                    Some(t) => int64s(t, &format!("{what} axes"))?.1,
                    None => vec![],
                }
            };
            let mut axes: Vec<i64> = axes
                .iter()
                .map(|&a| if a < 0 { a + 4 } else { a })
                .collect();
            axes.sort_unstable();
            if axes != [2, 3] || node.input.len() > 2 {
                return err(format!(
                    "{what}: Squeeze must remove axes 2 and 3 of [N, C, 1, 1]"
                ));
            }
        }
    }
    cur.spatial = None;
    Ok(())
}

fn gemm<'g>(
    ctx: &Ctx<'_, '_>,
    cur: &mut Cursor<'g>,
    what: &str,
    node: &'g NodeProto,
) -> Result<Classifier> {
    flow(ctx, cur, what, node, 1)?;
    if !(2..=3).contains(&node.input.len()) {
        return err(format!("{what}: Gemm takes 2 or 3 inputs"));
    }
    let attrs = attributes(
        what,
        node,
        &["alpha", "beta", "transA", "transB", "broadcast"],
    )?;
    if int_attr(&attrs, "transA", 0, what)? != 0 {
        return err(format!("{what}: transA = 1 is not supported"));
    }
    let trans_b = int_attr(&attrs, "transB", 0, what)? != 0;
    let alpha = float_attr(&attrs, "alpha", 1.0, what)?;
    let beta = float_attr(&attrs, "beta", 1.0, what)?;
    if !alpha.is_finite() || !beta.is_finite() {
        return err(format!("{what}: alpha {alpha}, beta {beta}"));
    }
    let (dims, w) = floats(required_input(ctx, what, node, 1, "weight")?, what)?;
    let fc = classifier_weight(cur, what, &dims, w, trans_b, alpha)?;
    let bias = match const_input(ctx, node, 2) {
        Some(t) => broadcast_bias(t, fc.1, beta, what)?,
        None if node.input.get(2).is_some_and(|n| !n.is_empty()) => {
            return err(format!("{what}: missing initializer for its bias"));
        }
        None => vec![0.0; fc.1],
    };
    let classes = fc.1;
    cur.channels = classes;
    Ok(Classifier {
        weight: fc.0,
        bias: Tensor::new(vec![classes], bias)?,
    })
}

fn matmul<'g>(
    ctx: &Ctx<'_, '_>,
    cur: &mut Cursor<'g>,
    what: &str,
    node: &'g NodeProto,
) -> Result<Classifier> {
    flow(ctx, cur, what, node, 1)?;
    no_attributes(what, node)?;
    if node.input.len() != 2 {
        return err(format!("{what}: MatMul takes 2 inputs"));
    }
    let (dims, w) = floats(required_input(ctx, what, node, 1, "weight")?, what)?;
    let (weight, classes) = classifier_weight(cur, what, &dims, w, false, 1.0)?;
    cur.channels = classes;
    Ok(Classifier {
        weight,
        bias: Tensor::zeros(vec![classes])?,
    })
}

/// The classifier weight `[classes, C]` from a Gemm / MatMul operand
/// (`[C, classes]`, or `[classes, C]` when `transposed`), times `alpha`.
fn classifier_weight(
    cur: &Cursor<'_>,
    what: &str,
    dims: &[usize],
    w: Vec<f32>,
    transposed: bool,
    alpha: f32,
) -> Result<(Tensor, usize)> {
    let c = cur.channels;
    let (rows, cols) = match dims {
        [a, b] => (*a, *b),
        _ => return err(format!("{what}: weight shape {dims:?} is not 2-D")),
    };
    let (classes, inner) = if transposed {
        (rows, cols)
    } else {
        (cols, rows)
    };
    if inner != c || classes == 0 {
        return err(format!(
            "{what}: weight shape {dims:?} does not map {c} features to classes"
        ));
    }
    let scale = |v: f32| (f64::from(v) * f64::from(alpha)) as f32;
    let data = if transposed {
        w.into_iter().map(scale).collect()
    } else {
        // [C, classes] -> [classes, C]
        let mut out = vec![0.0f32; w.len()];
        for (i, row) in w.chunks_exact(classes).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                out[j * c + i] = scale(v);
            }
        }
        out
    };
    Ok((Tensor::new(vec![classes, c], data)?, classes))
}

/// A bias of shape `[classes]`, `[1, classes]` or a scalar, times `beta`.
fn broadcast_bias(t: &TensorProto, classes: usize, beta: f32, what: &str) -> Result<Vec<f32>> {
    let what = format!("{what} bias");
    let (dims, values) = floats(t, &what)?;
    let values = match dims[..] {
        [n] | [1, n] if n == classes => values,
        [] | [1] | [1, 1] => vec![values[0]; classes],
        _ => {
            return err(format!(
                "{what}: shape {dims:?} does not broadcast to [{classes}]"
            ));
        }
    };
    Ok(values
        .into_iter()
        .map(|v| (f64::from(v) * f64::from(beta)) as f32)
        .collect())
}

fn add_bias<'g>(
    ctx: &Ctx<'_, '_>,
    cur: &mut Cursor<'g>,
    what: &str,
    node: &'g NodeProto,
    fc: &mut Classifier,
) -> Result<()> {
    attributes(what, node, &["broadcast", "axis"])?;
    if node.input.len() != 2 {
        return err(format!("{what}: Add takes 2 inputs"));
    }
    // The bias may come first: Add is commutative.
    let data_slot = usize::from(node.input[0] != cur.value);
    let t = required_input(ctx, what, node, 1 - data_slot, "bias")?;
    let bias = broadcast_bias(t, cur.channels, 1.0, what)?;
    flow_at(ctx, cur, what, node, data_slot, 1)?;
    fc.bias = Tensor::new(vec![cur.channels], bias)?;
    Ok(())
}

/// A 1x1 convolution on the pooled `[N, C, 1, 1]` map as the classifier.
fn conv_classifier(what: &str, layer: ConvLayer) -> Result<Classifier> {
    let dims = layer.weight.shape().to_vec();
    let [classes, c, 1, 1] = dims[..] else {
        return err(format!(
            "{what}: a classifier conv must be 1x1, weight {dims:?}"
        ));
    };
    if layer.groups != 1 || layer.stride != 1 || layer.padding != Padding::zero() {
        return err(format!(
            "{what}: a classifier conv must be a plain 1x1 conv"
        ));
    }
    Ok(Classifier {
        weight: layer.weight.reshape(vec![classes, c])?,
        bias: Tensor::new(vec![classes], layer.bn.beta)?,
    })
}

fn softmax_node<'g>(
    ctx: &Ctx<'_, '_>,
    cur: &mut Cursor<'g>,
    what: &str,
    node: &'g NodeProto,
) -> Result<()> {
    flow(ctx, cur, what, node, 1)?;
    let attrs = attributes(what, node, &["axis"])?;
    let axis = int_attr(&attrs, "axis", if ctx.opset < 13 { 1 } else { -1 }, what)?;
    if (axis != 1 && axis != -1) || node.input.len() != 1 {
        return err(format!("{what}: Softmax over axis {axis} is not supported"));
    }
    Ok(())
}

/// Infers the configuration, checks every layer against its architecture
/// and assembles the network.
fn build(chain: Chain, input: &Input, meta: Option<MobileNetConfig>) -> Result<MobileNet> {
    let Chain { convs, classifier } = chain;
    let variant = match convs.len() {
        27 => Variant::MobileNet,
        17 => Variant::Shallow,
        14 => Variant::Conv,
        n => {
            return err(format!(
                "the graph has {n} convolutions; a MobileNet v1 has 27 (14 for the \
                 Conv variant, 17 for the Shallow one)"
            ));
        }
    };
    let activation = convs[0].activation;
    if let Some(layer) = convs.iter().find(|l| l.activation != activation) {
        return err(format!(
            "{}: activation {} differs from the first convolution's {}",
            layer.what,
            layer.activation.name(),
            activation.name()
        ));
    }
    let classes = classifier.weight.shape()[0];
    let last_channels = convs.last().map_or(0, |l| l.weight.shape()[0]);
    let mut config = MobileNetConfig {
        alpha: last_channels as f64 / 1024.0,
        resolution: input.resolution,
        classes,
        activation,
        variant,
        ..Default::default()
    };
    let mut paddings = vec![PaddingMode::TfSame, PaddingMode::Symmetric];
    if let Some(meta) = meta {
        let disagree = |what: &str, file: String, graph: String| {
            err(format!(
                "metadata_props {KEY_CONFIG} says {what} {file}, the graph has {graph}"
            ))
        };
        if meta.resolution != config.resolution {
            return disagree(
                "resolution",
                meta.resolution.to_string(),
                config.resolution.to_string(),
            );
        }
        if meta.classes != classes {
            return disagree("classes", meta.classes.to_string(), classes.to_string());
        }
        if meta.activation != activation {
            return disagree(
                "activation",
                meta.activation.name().into(),
                activation.name().into(),
            );
        }
        if meta.variant != variant {
            return disagree("variant", meta.variant.name().into(), variant.name().into());
        }
        paddings.retain(|&p| p != meta.padding);
        paddings.insert(0, meta.padding);
        config = meta;
    }
    // The first padding mode whose architecture matches every layer.
    let mut first_error = None;
    for padding in paddings {
        config.padding = padding;
        let architecture = Architecture::new(&config)
            .map_err(|e| Error::Format(format!("the inferred configuration is invalid: {e}")))?;
        match check_layers(&architecture, &convs) {
            Ok(()) => {
                let convs = convs
                    .into_iter()
                    .map(|l| ConvBn {
                        weight: l.weight,
                        bn: l.bn,
                    })
                    .collect();
                return MobileNet::from_parts(architecture, convs, classifier)
                    .map_err(|e| Error::Format(e.to_string()));
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.expect("two padding modes were tried"))
}

/// Compares the graph's convolutions with the architecture's.
fn check_layers(architecture: &Architecture, convs: &[ConvLayer]) -> Result<()> {
    let config = architecture.config();
    let specs = architecture
        .layers()
        .iter()
        .filter(|l| l.kind.has_batch_norm());
    for (spec, layer) in specs.zip(convs) {
        let (c_in, c_out, k) = (spec.input[2], spec.output[2], spec.kernel);
        let expected = [c_out, c_in / groups(spec), k, k];
        let mismatch = |what: &str, got: String, want: String| {
            err(format!(
                "{} (our {}): {what} {got}, but {} ({} padding) needs {want}",
                layer.what,
                spec.name,
                config.name(),
                padding_name(config.padding)
            ))
        };
        if layer.weight.shape() != expected {
            return mismatch(
                "weight shape",
                format!("{:?}", layer.weight.shape()),
                format!("{expected:?}"),
            );
        }
        let depthwise = spec.kind == LayerKind::Depthwise;
        if layer.groups != groups(spec) {
            return mismatch(
                "group",
                layer.groups.to_string(),
                format!(
                    "{} ({})",
                    groups(spec),
                    if depthwise { "depthwise" } else { "standard" }
                ),
            );
        }
        if layer.stride != spec.stride {
            return mismatch("stride", layer.stride.to_string(), spec.stride.to_string());
        }
        if layer.padding != spec.padding {
            let p = |p: Padding| format!("[{}, {}, {}, {}]", p.top, p.left, p.bottom, p.right);
            return mismatch("pads", p(layer.padding), p(spec.padding));
        }
    }
    Ok(())
}
