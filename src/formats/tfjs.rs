//! TensorFlow.js "layers" models (`model.json` + binary weight shards), as
//! the TF.js converter writes them for the Keras MobileNet v1.
//!
//! `model.json` holds the Keras topology (`modelTopology`) and a
//! `weightsManifest`: groups of weights, each stored in one or more shard
//! files that are concatenated in order, the weights laid out one after the
//! other in the manifest's order.
//!
//! We walk the topology, which must be a plain chain of layers:
//!
//! | Keras layers | ours |
//! |---|---|
//! | `InputLayer` `[null, R, R, 3]` | resolution R |
//! | `ZeroPadding2D`? `Conv2D` 3x3 (HWIO kernel `[3, 3, 3, C]`) | `conv1`, weight `[C, 3, 3, 3]` |
//! | `ZeroPadding2D`? `DepthwiseConv2D` 3x3 (kernel `[3, 3, C, 1]`) | `conv_dw_n`, weight `[C, 1, 3, 3]` |
//! | `Conv2D` 1x1 (kernel `[1, 1, C_in, C_out]`) | `conv_pw_n`, weight `[C_out, C_in, 1, 1]` |
//! | `BatchNormalization` (gamma, beta, moving_mean, moving_variance, ε) after each conv | its batch norm, not folded |
//! | `Activation('relu6')` / `ReLU(max_value=6)` (or plain ReLU) after each batch norm | the activation |
//! | `GlobalAveragePooling2D`, then `Reshape` / `Dropout` / `Flatten` | `global_pool`; the dropout rate |
//! | `Conv2D` 1x1 with bias (`conv_preds`, kernel `[1, 1, C, K]`) or `Dense` (`[C, K]`) | `fc`, weight `[K, C]`, bias |
//! | `Activation('softmax')`, `Softmax`, `Reshape`, `Flatten` at the end | (logits are our output) |
//!
//! A convolution with a bias has it folded into its batch norm's mean.
//! α is read from the stem (32·α filters; if that does not fit, from the
//! last layer's 1024·α), and every layer's kind, kernel, stride, channels
//! and padding are checked against [`Architecture::new`] of the inferred
//! configuration: anything else is refused. Padding must be TF `SAME`
//! (Keras `'same'`, or `ZeroPadding2D((0, 1), (0, 1))` + `'valid'` before
//! the stride-2 convs, as newer Keras writes it) or, for every layer,
//! PyTorch-style symmetric padding. The shallow and Conv MobileNets of
//! the paper are recognised as well.
//!
//! Weights may be `float32`, or quantized by the converter: `uint8` /
//! `uint16` with `value = q * scale + min`, or `float16`. Every manifest
//! entry must be a weight the topology needs, with the shape it needs,
//! before a single shard is read; shards are read group by group and their
//! length must be exactly what the group's weights need.
//!
//! The result has preprocessing `tf` (Keras `preprocess_input`: `x / 127.5 - 1`),
//! and, with [`load_tfjs`], the labels of a `metadata.json` beside
//! `model.json` (`{"labels": [...]}`, one per class) if there is one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::formats::safetensors::check_values;
use crate::formats::torch::f16_to_f32;
use crate::formats::{LoadedModel, ModelMetadata};
use crate::layers::{Activation, BatchNorm, Padding, PaddingMode, conv_output_size};
use crate::model::network::{Classifier, ConvBn};
use crate::model::{Architecture, LayerKind, MobileNet, MobileNetConfig, Variant};
use crate::tensor::Tensor;

/// Largest input side and padding we accept: far beyond any MobileNet,
/// small enough that no shape arithmetic can overflow.
const MAX_SIZE: usize = 1 << 16;

fn format_err(msg: impl std::fmt::Display) -> Error {
    Error::Format(format!("tfjs: {msg}"))
}

/// Reads a TF.js layers model: `model_json_path` is `model.json`; the
/// weight shards are read from the same directory, as its
/// `weightsManifest` names them (paths must stay inside that directory).
/// Labels come from `metadata.json` beside it, if present and well-formed.
///
/// ```no_run
/// let model = mobilenet::formats::tfjs::load_tfjs("mobilenet_v1_0.75_224/model.json".as_ref())?;
/// assert_eq!(model.net.config().alpha, 0.75);
/// # Ok::<(), mobilenet::Error>(())
/// ```
pub fn load_tfjs(model_json_path: &Path) -> Result<LoadedModel> {
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |source| Error::Io { path: p, source }
    };
    let text = std::fs::read_to_string(model_json_path).map_err(io(model_json_path))?;
    let dir = model_json_path.parent().unwrap_or(Path::new("."));
    let read_shard = |rel: &str| -> Result<Vec<u8>> {
        let rel_path = Path::new(rel);
        let inside = !rel.is_empty()
            && rel_path
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !inside {
            return Err(format_err(format!(
                "weight shard path {rel:?} is not a relative path inside the model's directory"
            )));
        }
        let path = dir.join(rel_path);
        std::fs::read(&path).map_err(io(&path))
    };
    let mut model = load_tfjs_from(&text, read_shard).map_err(|e| match e {
        Error::Format(msg) => Error::Format(format!("{}: {msg}", model_json_path.display())),
        other => other,
    })?;
    if let Ok(meta) = std::fs::read_to_string(dir.join("metadata.json")) {
        model.metadata.labels = labels_from_metadata_json(&meta, model.net.config().classes);
    }
    Ok(model)
}

/// Like [`load_tfjs`], from memory: the text of `model.json`, and
/// `read_shard`, which returns a shard's bytes given its path as the
/// manifest spells it. No labels (see [`labels_from_metadata_json`]).
pub fn load_tfjs_from(
    model_json: &str,
    read_shard: impl FnMut(&str) -> Result<Vec<u8>>,
) -> Result<LoadedModel> {
    let root: Value =
        serde_json::from_str(model_json).map_err(|e| format_err(format!("model.json: {e}")))?;
    if !root.is_object() {
        return Err(format_err("model.json is not a JSON object"));
    }
    if let Some(f) = root.get("format").and_then(Value::as_str)
        && f != "layers-model"
    {
        return Err(format_err(format!(
            "format {f:?} is not supported (only TF.js \"layers-model\")"
        )));
    }
    let topology = root
        .get("modelTopology")
        .ok_or_else(|| format_err("model.json has no modelTopology"))?;
    let layers = topology_layers(topology)?;
    let graph = walk(&layers)?;
    let arch = match_architecture(&graph)?;
    let manifest = root
        .get("weightsManifest")
        .ok_or_else(|| format_err("model.json has no weightsManifest"))?;
    let weights = read_weights(&graph, manifest, read_shard)?;
    build(&graph, arch, weights)
}

/// The labels of a TF.js `metadata.json` (`{"labels": ["tench, ...", ...]}`),
/// if it parses and has exactly `classes` string labels.
pub fn labels_from_metadata_json(text: &str, classes: usize) -> Option<Vec<String>> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let labels = crate::formats::labels::parse_labels(text).ok()?;
    (labels.len() == classes).then_some(labels)
}

/// One Keras layer of the topology.
struct Layer<'a> {
    class: &'a str,
    name: &'a str,
    config: &'a Value,
    /// Names of the layers feeding this one (`None`: implied by order, as
    /// in a `Sequential` model).
    inbound: Option<Vec<&'a str>>,
}

/// The layers of the topology, in order, and checks that they form a chain.
fn topology_layers(topology: &Value) -> Result<Vec<Layer<'_>>> {
    let model = topology.get("model_config").unwrap_or(topology);
    let class = model
        .get("class_name")
        .and_then(Value::as_str)
        .ok_or_else(|| format_err("modelTopology has no class_name"))?;
    if !matches!(class, "Model" | "Functional" | "Sequential") {
        return Err(format_err(format!(
            "model class {class:?} is not supported (Model, Functional or Sequential)"
        )));
    }
    let config = model
        .get("config")
        .ok_or_else(|| format_err("modelTopology has no config"))?;
    let list = if config.is_array() {
        config
    } else {
        config
            .get("layers")
            .ok_or_else(|| format_err("modelTopology config has no layers"))?
    };
    let list = list
        .as_array()
        .ok_or_else(|| format_err("modelTopology layers is not a list"))?;
    let mut layers = Vec::with_capacity(list.len());
    for (i, l) in list.iter().enumerate() {
        let class = l
            .get("class_name")
            .and_then(Value::as_str)
            .ok_or_else(|| format_err(format!("layer {i} has no class_name")))?;
        let config = l
            .get("config")
            .filter(|c| c.is_object())
            .ok_or_else(|| format_err(format!("layer {i} ({class}) has no config object")))?;
        let name = l
            .get("name")
            .or_else(|| config.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| format_err(format!("layer {i} ({class}) has no name")))?;
        let inbound = match l.get("inbound_nodes") {
            None => None,
            Some(nodes) => Some(
                inbound_names(nodes)
                    .ok_or_else(|| format_err(format!("layer {name}: unreadable inbound_nodes")))?,
            ),
        };
        layers.push(Layer {
            class,
            name,
            config,
            inbound,
        });
    }
    for pair in layers.windows(2) {
        let (prev, layer) = (&pair[0], &pair[1]);
        if let Some(inbound) = &layer.inbound
            && inbound.as_slice() != [prev.name]
        {
            return Err(format_err(format!(
                "layer {} takes its input from {inbound:?}, not from the layer before it ({}): \
                 only a plain chain of layers is supported",
                layer.name, prev.name
            )));
        }
    }
    if let (Some(first), Some(outputs)) = (
        layers.last(),
        config.get("output_layers").and_then(first_string),
    ) && outputs != first.name
    {
        return Err(format_err(format!(
            "the model's output is {outputs}, not its last layer {}",
            first.name
        )));
    }
    Ok(layers)
}

/// The first string anywhere in a (nested) JSON list.
fn first_string(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Array(a) => a.iter().find_map(first_string),
        _ => None,
    }
}

/// The names of the layers feeding a layer: Keras 2 (`[[["name", 0, 0,
/// {}]]]`) or Keras 3 (`[{"args": [{"config": {"keras_history": ["name",
/// 0, 0]}}]}]`). `None` if the structure is not recognised.
fn inbound_names(nodes: &Value) -> Option<Vec<&str>> {
    let nodes = nodes.as_array()?;
    let mut names = Vec::new();
    for node in nodes {
        match node {
            Value::Array(tensors) => {
                for t in tensors {
                    names.push(t.as_array()?.first()?.as_str()?);
                }
            }
            Value::Object(_) => {
                for arg in node.get("args")?.as_array()? {
                    let history = arg.get("config")?.get("keras_history")?;
                    names.push(history.as_array()?.first()?.as_str()?);
                }
            }
            _ => return None,
        }
    }
    Some(names)
}

/// Kind of a convolution of the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConvKind {
    Conv2D,
    Depthwise,
}

/// A convolution with its batch norm, as read from the topology.
struct ConvUnit<'a> {
    conv: &'a str,
    kind: ConvKind,
    kernel: usize,
    stride: usize,
    padding: Padding,
    input: [usize; 3],
    output: [usize; 3],
    use_bias: bool,
    bn: Option<BnLayer<'a>>,
    activated: bool,
}

struct BnLayer<'a> {
    name: &'a str,
    eps: f32,
    center: bool,
    scale: bool,
}

/// The classifier.
struct Head<'a> {
    name: &'a str,
    dense: bool,
    channels: usize,
    classes: usize,
    use_bias: bool,
}

/// What the topology describes.
struct Graph<'a> {
    resolution: usize,
    units: Vec<ConvUnit<'a>>,
    activation: Activation,
    dropout: f32,
    head: Head<'a>,
}

/// Where the walk is.
#[derive(PartialEq, Eq)]
enum Phase {
    Body,
    /// After the global pool, before the classifier.
    Pooled,
    /// After the classifier.
    Tail,
}

fn walk<'a>(layers: &[Layer<'a>]) -> Result<Graph<'a>> {
    let mut shape: Option<[usize; 3]> = None;
    let mut resolution = 0;
    let mut pending_pad = Padding::zero();
    let mut padded = false;
    let mut units: Vec<ConvUnit<'a>> = Vec::new();
    let mut activation: Option<Activation> = None;
    let mut dropout = 0.0f32;
    let mut head: Option<Head<'a>> = None;
    let mut phase = Phase::Body;

    for (i, layer) in layers.iter().enumerate() {
        let name = layer.name;
        let cfg = layer.config;
        let err = |msg: String| format_err(format!("layer {name} ({}): {msg}", layer.class));
        if layer.class == "InputLayer" {
            if i != 0 {
                return Err(err("a second input layer".into()));
            }
            let input = input_shape(cfg).map_err(err)?;
            resolution = input[0];
            shape = Some(input);
            continue;
        }
        if shape.is_none() {
            // A Sequential model's first layer carries the input shape.
            let input = input_shape(cfg).map_err(err)?;
            resolution = input[0];
            shape = Some(input);
        }
        let [h, w, c] = shape.ok_or_else(|| err("no input shape".into()))?;
        if padded && !matches!(layer.class, "Conv2D" | "DepthwiseConv2D" | "ZeroPadding2D") {
            return Err(err("zero padding must be followed by a convolution".into()));
        }
        if let Some(last) = units.last()
            && phase == Phase::Body
            && !matches!(layer.class, "BatchNormalization" | "Activation" | "ReLU")
            && !(last.bn.is_some() && last.activated)
        {
            return Err(format_err(format!(
                "convolution {} is not followed by a batch norm and an activation (found {} {name})",
                last.conv, layer.class
            )));
        }
        match (layer.class, &phase) {
            ("ZeroPadding2D", Phase::Body) => {
                check_channels_last(cfg).map_err(err)?;
                let p = zero_padding(cfg).map_err(err)?;
                pending_pad.top += p.top;
                pending_pad.bottom += p.bottom;
                pending_pad.left += p.left;
                pending_pad.right += p.right;
                padded = true;
                shape = Some([h + p.top + p.bottom, w + p.left + p.right, c]);
            }
            ("Conv2D" | "DepthwiseConv2D", Phase::Body) => {
                let kind = if layer.class == "Conv2D" {
                    ConvKind::Conv2D
                } else {
                    ConvKind::Depthwise
                };
                let conv = conv_config(cfg, kind, c).map_err(err)?;
                if conv.activation != "linear" {
                    return Err(err(format!(
                        "activation {:?} inside a convolution is not supported",
                        conv.activation
                    )));
                }
                // The input before any explicit zero padding.
                let input = [
                    h - pending_pad.top - pending_pad.bottom,
                    w - pending_pad.left - pending_pad.right,
                    c,
                ];
                let same = if conv.same {
                    PaddingMode::TfSame.resolve(
                        h,
                        w,
                        [conv.kernel, conv.kernel],
                        [conv.stride, conv.stride],
                        [1, 1],
                    )
                } else {
                    Padding::zero()
                };
                let padding = Padding {
                    top: pending_pad.top + same.top,
                    bottom: pending_pad.bottom + same.bottom,
                    left: pending_pad.left + same.left,
                    right: pending_pad.right + same.right,
                };
                let out = |size: usize, before: usize, after: usize| {
                    conv_output_size(size, conv.kernel, conv.stride, 1, before, after)
                        .map_err(|e| err(e.to_string()))
                };
                let output = [
                    out(h, same.top, same.bottom)?,
                    out(w, same.left, same.right)?,
                    conv.filters,
                ];
                units.push(ConvUnit {
                    conv: name,
                    kind,
                    kernel: conv.kernel,
                    stride: conv.stride,
                    padding,
                    input,
                    output,
                    use_bias: conv.use_bias,
                    bn: None,
                    activated: false,
                });
                shape = Some(output);
                pending_pad = Padding::zero();
                padded = false;
            }
            ("BatchNormalization", Phase::Body) => {
                let unit = units
                    .last_mut()
                    .filter(|u| u.bn.is_none())
                    .ok_or_else(|| err("a batch norm not right after a convolution".into()))?;
                unit.bn = Some(bn_config(name, cfg).map_err(err)?);
            }
            ("Activation" | "ReLU", Phase::Body) => {
                let act = activation_of(layer.class, cfg).map_err(err)?;
                let unit = units
                    .last_mut()
                    .filter(|u| u.bn.is_some() && !u.activated)
                    .ok_or_else(|| err("an activation not right after a batch norm".into()))?;
                unit.activated = true;
                match activation {
                    None => activation = Some(act),
                    Some(a) if a == act => {}
                    Some(a) => {
                        return Err(err(format!(
                            "activation {} differs from the earlier layers' {}",
                            act.name(),
                            a.name()
                        )));
                    }
                }
            }
            ("GlobalAveragePooling2D", Phase::Body) => {
                check_channels_last(cfg).map_err(err)?;
                if units.is_empty() {
                    return Err(err("no convolutions before the global pool".into()));
                }
                phase = Phase::Pooled;
                shape = Some([1, 1, c]);
            }
            ("Reshape" | "Flatten", Phase::Pooled | Phase::Tail) => {}
            ("Dropout", Phase::Pooled) => {
                let rate = cfg
                    .get("rate")
                    .and_then(Value::as_f64)
                    .ok_or_else(|| err("no dropout rate".into()))?;
                if !(0.0..1.0).contains(&rate) {
                    return Err(err(format!("dropout rate {rate} is not in [0, 1)")));
                }
                dropout = rate as f32;
            }
            ("Conv2D" | "Dense", Phase::Pooled) => {
                let dense = layer.class == "Dense";
                let (classes, use_bias, act) = if dense {
                    let units = get_usize(cfg, "units").map_err(err)?;
                    (units, get_bool(cfg, "use_bias", true), act_name(cfg))
                } else {
                    let conv = conv_config(cfg, ConvKind::Conv2D, c).map_err(err)?;
                    if conv.kernel != 1 || conv.stride != 1 {
                        return Err(err("the classifier must be a 1x1 convolution".into()));
                    }
                    (conv.filters, conv.use_bias, conv.activation)
                };
                if !matches!(act, "linear" | "softmax") {
                    return Err(err(format!(
                        "classifier activation {act:?} is not supported"
                    )));
                }
                if classes == 0 {
                    return Err(err("the classifier has no classes".into()));
                }
                head = Some(Head {
                    name,
                    dense,
                    channels: c,
                    classes,
                    use_bias,
                });
                phase = Phase::Tail;
                shape = Some([1, 1, classes]);
            }
            ("Activation", Phase::Tail) => {
                let act = act_name(cfg);
                if !matches!(act, "linear" | "softmax") {
                    return Err(err(format!(
                        "activation {act:?} after the classifier is not supported"
                    )));
                }
            }
            ("Softmax", Phase::Tail) => {}
            (class, _) => {
                return Err(err(format!(
                    "layer class {class} is not supported here (a MobileNet v1 is a chain of \
                     [ZeroPadding2D] Conv2D/DepthwiseConv2D, BatchNormalization, ReLU6; then \
                     GlobalAveragePooling2D, Dropout, a 1x1 Conv2D or Dense classifier, softmax)"
                )));
            }
        }
    }
    let head = head.ok_or_else(|| {
        format_err("the model has no classifier (a 1x1 Conv2D or Dense after the global pool)")
    })?;
    let activation = activation.ok_or_else(|| format_err("the model has no activation layers"))?;
    Ok(Graph {
        resolution,
        units,
        activation,
        dropout,
        head,
    })
}

/// `[H, W, C]` of an input layer's `batch_input_shape` / `batch_shape`
/// (Keras 3) / `batch_size` + `input_shape`: square, fixed, 3 channels.
fn input_shape(cfg: &Value) -> std::result::Result<[usize; 3], String> {
    let dims = cfg
        .get("batch_input_shape")
        .or_else(|| cfg.get("batch_shape"))
        .and_then(Value::as_array)
        .ok_or("no batch_input_shape: the model's input size is unknown")?;
    let fixed = |v: &Value| v.as_u64().and_then(|d| usize::try_from(d).ok());
    let text = Value::from(dims.clone());
    match dims.as_slice() {
        [_, h, w, c] => match (fixed(h), fixed(w), fixed(c)) {
            (Some(h), Some(w), Some(3)) if h == w && h > 0 && h <= MAX_SIZE => Ok([h, w, 3]),
            _ => Err(format!(
                "input shape {text} is not [batch, R, R, 3] with a fixed R (at most {MAX_SIZE})"
            )),
        },
        _ => Err(format!("input shape {text} is not [batch, R, R, 3]")),
    }
}

fn check_channels_last(cfg: &Value) -> std::result::Result<(), String> {
    match cfg.get("data_format").and_then(Value::as_str) {
        None | Some("channels_last") => Ok(()),
        Some(f) => Err(format!(
            "data_format {f:?} is not supported (channels_last)"
        )),
    }
}

/// `(a, b)` from `n` or `[a, b]`.
fn pair(v: &Value) -> Option<(usize, usize)> {
    let one = |v: &Value| v.as_u64().and_then(|d| usize::try_from(d).ok());
    match v {
        Value::Number(_) => one(v).map(|n| (n, n)),
        Value::Array(a) => match a.as_slice() {
            [x, y] => Some((one(x)?, one(y)?)),
            _ => None,
        },
        _ => None,
    }
}

fn zero_padding(cfg: &Value) -> std::result::Result<Padding, String> {
    let p = cfg.get("padding").ok_or("no padding")?;
    let bad = || format!("padding {p} is not understood");
    let padding = if let Some((a, b)) = pair(p) {
        Padding {
            top: a,
            bottom: a,
            left: b,
            right: b,
        }
    } else {
        match p.as_array().map(Vec::as_slice) {
            Some([rows, cols]) => {
                let (top, bottom) = pair(rows).ok_or_else(bad)?;
                let (left, right) = pair(cols).ok_or_else(bad)?;
                Padding {
                    top,
                    bottom,
                    left,
                    right,
                }
            }
            _ => return Err(bad()),
        }
    };
    // Anything more than a few pixels is not a MobileNet; this keeps the
    // shape arithmetic far from overflow.
    let sides = [padding.top, padding.bottom, padding.left, padding.right];
    if sides.iter().any(|&v| v > MAX_SIZE) {
        return Err(bad());
    }
    Ok(padding)
}

struct ConvConfig<'a> {
    kernel: usize,
    stride: usize,
    same: bool,
    filters: usize,
    use_bias: bool,
    activation: &'a str,
}

fn conv_config(
    cfg: &Value,
    kind: ConvKind,
    in_channels: usize,
) -> std::result::Result<ConvConfig<'_>, String> {
    check_channels_last(cfg)?;
    let (kh, kw) = cfg
        .get("kernel_size")
        .and_then(pair)
        .ok_or("no kernel_size")?;
    let (sh, sw) = cfg
        .get("strides")
        .map_or(Some((1, 1)), pair)
        .ok_or("bad strides")?;
    let dilation = cfg
        .get("dilation_rate")
        .map_or(Some((1, 1)), pair)
        .ok_or("bad dilation_rate")?;
    if kh != kw || !matches!(kh, 1 | 3) {
        return Err(format!("kernel {kh}x{kw} is not 1x1 or 3x3"));
    }
    if sh != sw || !matches!(sh, 1 | 2) {
        return Err(format!("strides {sh}x{sw} are not 1x1 or 2x2"));
    }
    if dilation != (1, 1) {
        return Err(format!("dilation {dilation:?} is not supported"));
    }
    let same = match cfg.get("padding").and_then(Value::as_str) {
        Some("same") => true,
        Some("valid") | None => false,
        Some(p) => return Err(format!("padding {p:?} is not supported")),
    };
    let filters = match kind {
        ConvKind::Conv2D => {
            if cfg.get("groups").is_some_and(|g| g.as_u64() != Some(1)) {
                return Err("grouped convolutions are not supported".into());
            }
            get_usize(cfg, "filters")?
        }
        ConvKind::Depthwise => {
            if cfg
                .get("depth_multiplier")
                .is_some_and(|m| m.as_u64() != Some(1))
            {
                return Err("depth_multiplier must be 1".into());
            }
            in_channels
        }
    };
    if filters == 0 || filters > 1 << 24 {
        return Err(format!("{filters} filters"));
    }
    Ok(ConvConfig {
        kernel: kh,
        stride: sh,
        same,
        filters,
        use_bias: get_bool(cfg, "use_bias", true),
        activation: act_name(cfg),
    })
}

fn bn_config<'a>(name: &'a str, cfg: &Value) -> std::result::Result<BnLayer<'a>, String> {
    let axis_ok = match cfg.get("axis") {
        None => true,
        Some(Value::Array(a)) => a.len() == 1 && matches!(a[0].as_i64(), Some(-1 | 3)),
        Some(v) => matches!(v.as_i64(), Some(-1 | 3)),
    };
    if !axis_ok {
        return Err("batch norm must normalise the channel axis (-1)".into());
    }
    let eps = match cfg.get("epsilon") {
        None => 1e-3,
        Some(e) => e.as_f64().ok_or("epsilon is not a number")?,
    };
    let eps32 = eps as f32;
    if !eps32.is_finite() || eps32 < 0.0 {
        return Err(format!("epsilon {eps} is not >= 0"));
    }
    Ok(BnLayer {
        name,
        eps: eps32,
        center: get_bool(cfg, "center", true),
        scale: get_bool(cfg, "scale", true),
    })
}

/// The activation of an `Activation` or `ReLU` layer of the body.
fn activation_of(class: &str, cfg: &Value) -> std::result::Result<Activation, String> {
    if class == "ReLU" {
        let num = |key: &str| match cfg.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| format!("{key} is not a number")),
        };
        if num("negative_slope")?.unwrap_or(0.0) != 0.0 || num("threshold")?.unwrap_or(0.0) != 0.0 {
            return Err("leaky or thresholded ReLU is not supported".into());
        }
        return match num("max_value")? {
            None => Ok(Activation::Relu),
            Some(6.0) => Ok(Activation::Relu6),
            Some(m) => Err(format!("ReLU max_value {m} is not supported (6 or none)")),
        };
    }
    match act_name(cfg) {
        "relu6" => Ok(Activation::Relu6),
        "relu" => Ok(Activation::Relu),
        other => Err(format!(
            "activation {other:?} is not supported (relu6 or relu)"
        )),
    }
}

fn act_name(cfg: &Value) -> &str {
    cfg.get("activation")
        .and_then(Value::as_str)
        .unwrap_or("linear")
}

fn get_usize(cfg: &Value, key: &str) -> std::result::Result<usize, String> {
    cfg.get(key)
        .and_then(Value::as_u64)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("no integer {key}"))
}

fn get_bool(cfg: &Value, key: &str, default: bool) -> bool {
    cfg.get(key).and_then(Value::as_bool).unwrap_or(default)
}

/// The architecture whose every convolution matches the topology: α from
/// the stem or from the last layer, each variant, TF or symmetric padding.
fn match_architecture(g: &Graph<'_>) -> Result<Architecture> {
    let stem = g.units.first().map_or(0, |u| u.output[2]);
    let last = g.units.last().map_or(0, |u| u.output[2]);
    let mut alphas = vec![stem as f64 / 32.0];
    if last as f64 / 1024.0 != alphas[0] {
        alphas.push(last as f64 / 1024.0);
    }
    let mut first_err = None;
    for variant in Variant::ALL {
        for padding in [PaddingMode::TfSame, PaddingMode::Symmetric] {
            for &alpha in &alphas {
                let config = MobileNetConfig {
                    alpha,
                    resolution: g.resolution,
                    classes: g.head.classes,
                    min_depth: 8,
                    activation: g.activation,
                    padding,
                    dropout: g.dropout,
                    variant,
                    ..Default::default()
                };
                match check_units(&config, g) {
                    Ok(arch) => return Ok(arch),
                    Err(e) => {
                        if first_err.is_none() {
                            first_err = Some(e);
                        }
                    }
                }
            }
        }
    }
    Err(first_err.unwrap_or_else(|| format_err("no matching architecture")))
}

fn check_units(config: &MobileNetConfig, g: &Graph<'_>) -> Result<Architecture> {
    let arch = Architecture::new(config).map_err(|e| {
        format_err(format!(
            "the topology describes a network we cannot build (alpha {}, resolution {}, {} \
             classes): {e}",
            config.alpha, config.resolution, config.classes
        ))
    })?;
    let specs: Vec<_> = arch
        .layers()
        .iter()
        .filter(|l| l.kind.has_batch_norm())
        .collect();
    if specs.len() != g.units.len() {
        return Err(format_err(format!(
            "the model has {} convolutions; a {} MobileNet v1 has {}",
            g.units.len(),
            config.variant,
            specs.len()
        )));
    }
    for (spec, unit) in specs.iter().zip(&g.units) {
        let kind = match (unit.kind, unit.kernel) {
            (ConvKind::Depthwise, _) => LayerKind::Depthwise,
            (ConvKind::Conv2D, 1) => LayerKind::Pointwise,
            (ConvKind::Conv2D, _) => LayerKind::Conv,
        };
        let found = (kind, unit.kernel, unit.stride, unit.input, unit.output);
        let expected = (spec.kind, spec.kernel, spec.stride, spec.input, spec.output);
        if found != expected {
            return Err(format_err(format!(
                "layer {} is a {} {k}x{k} conv, stride {}, {:?} -> {:?}; MobileNet v1 (alpha \
                 {}) has {} there: {} {k2}x{k2}, stride {}, {:?} -> {:?}",
                unit.conv,
                kind,
                unit.stride,
                unit.input,
                unit.output,
                config.alpha,
                spec.name,
                spec.kind,
                spec.stride,
                spec.input,
                spec.output,
                k = unit.kernel,
                k2 = spec.kernel,
            )));
        }
        if unit.padding != spec.padding {
            return Err(format_err(format!(
                "layer {} pads {:?}, not as {:?} padding would ({:?})",
                unit.conv, unit.padding, config.padding, spec.padding
            )));
        }
    }
    let fc = arch
        .layer("fc")
        .ok_or_else(|| format_err("no classifier"))?;
    if fc.input[2] != g.head.channels {
        return Err(format_err(format!(
            "classifier {} takes {} channels, expected {}",
            g.head.name, g.head.channels, fc.input[2]
        )));
    }
    Ok(arch)
}

/// Where a weight goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Kernel(usize),
    ConvBias(usize),
    Gamma(usize),
    Beta(usize),
    Mean(usize),
    Var(usize),
    HeadKernel,
    HeadBias,
}

/// The weights the topology needs: manifest name (`layer/param`) to Keras
/// shape and slot.
fn expected_weights(g: &Graph<'_>) -> BTreeMap<String, (Vec<usize>, Slot)> {
    let mut out = BTreeMap::new();
    for (i, u) in g.units.iter().enumerate() {
        let (k, c_in, c_out) = (u.kernel, u.input[2], u.output[2]);
        match u.kind {
            ConvKind::Conv2D => {
                out.insert(
                    format!("{}/kernel", u.conv),
                    (vec![k, k, c_in, c_out], Slot::Kernel(i)),
                );
            }
            ConvKind::Depthwise => {
                out.insert(
                    format!("{}/depthwise_kernel", u.conv),
                    (vec![k, k, c_in, 1], Slot::Kernel(i)),
                );
            }
        }
        if u.use_bias {
            out.insert(format!("{}/bias", u.conv), (vec![c_out], Slot::ConvBias(i)));
        }
        if let Some(bn) = &u.bn {
            if bn.scale {
                out.insert(format!("{}/gamma", bn.name), (vec![c_out], Slot::Gamma(i)));
            }
            if bn.center {
                out.insert(format!("{}/beta", bn.name), (vec![c_out], Slot::Beta(i)));
            }
            out.insert(
                format!("{}/moving_mean", bn.name),
                (vec![c_out], Slot::Mean(i)),
            );
            out.insert(
                format!("{}/moving_variance", bn.name),
                (vec![c_out], Slot::Var(i)),
            );
        }
    }
    let h = &g.head;
    let shape = if h.dense {
        vec![h.channels, h.classes]
    } else {
        vec![1, 1, h.channels, h.classes]
    };
    out.insert(format!("{}/kernel", h.name), (shape, Slot::HeadKernel));
    if h.use_bias {
        out.insert(
            format!("{}/bias", h.name),
            (vec![h.classes], Slot::HeadBias),
        );
    }
    out
}

/// How a weight's values are stored.
#[derive(Clone, Copy, Debug)]
enum Encoding {
    F32,
    F16,
    U8 { scale: f32, min: f32 },
    U16 { scale: f32, min: f32 },
}

impl Encoding {
    fn bytes_per_value(self) -> usize {
        match self {
            Encoding::F32 => 4,
            Encoding::F16 | Encoding::U16 { .. } => 2,
            Encoding::U8 { .. } => 1,
        }
    }

    fn decode(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            Encoding::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Encoding::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            Encoding::U8 { scale, min } => bytes
                .iter()
                .map(|&q| (f64::from(q) * f64::from(scale) + f64::from(min)) as f32)
                .collect(),
            Encoding::U16 { scale, min } => bytes
                .chunks_exact(2)
                .map(|c| {
                    let q = u16::from_le_bytes([c[0], c[1]]);
                    (f64::from(q) * f64::from(scale) + f64::from(min)) as f32
                })
                .collect(),
        }
    }
}

/// One manifest entry, checked.
struct Entry {
    key: String,
    slot: Slot,
    encoding: Encoding,
    bytes: usize,
}

/// The weights by slot, as Keras lays them out.
type Weights = BTreeMap<SlotKey, Vec<f32>>;

/// A sortable [`Slot`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SlotKey(u8, usize);

impl From<Slot> for SlotKey {
    fn from(s: Slot) -> SlotKey {
        match s {
            Slot::Kernel(i) => SlotKey(0, i),
            Slot::ConvBias(i) => SlotKey(1, i),
            Slot::Gamma(i) => SlotKey(2, i),
            Slot::Beta(i) => SlotKey(3, i),
            Slot::Mean(i) => SlotKey(4, i),
            Slot::Var(i) => SlotKey(5, i),
            Slot::HeadKernel => SlotKey(6, 0),
            Slot::HeadBias => SlotKey(7, 0),
        }
    }
}

/// `layer/param` of a manifest name such as `conv1/kernel`,
/// `mobilenet/conv1/kernel` or `conv1/kernel:0`.
fn weight_key(name: &str) -> String {
    let name = match name.rsplit_once(':') {
        Some((head, tail)) if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => name,
    };
    let mut parts = name.rsplitn(3, '/');
    match (parts.next(), parts.next()) {
        (Some(param), Some(layer)) => format!("{layer}/{param}"),
        _ => name.to_string(),
    }
}

fn read_weights(
    g: &Graph<'_>,
    manifest: &Value,
    mut read_shard: impl FnMut(&str) -> Result<Vec<u8>>,
) -> Result<Weights> {
    let expected = expected_weights(g);
    let groups = manifest
        .as_array()
        .ok_or_else(|| format_err("weightsManifest is not a list"))?;
    // Check every entry before reading anything.
    let mut plan: Vec<(Vec<&str>, Vec<Entry>, usize)> = Vec::with_capacity(groups.len());
    let mut seen = BTreeSet::new();
    let mut unexpected = Vec::new();
    for (gi, group) in groups.iter().enumerate() {
        let paths = group
            .get("paths")
            .and_then(Value::as_array)
            .ok_or_else(|| format_err(format!("manifest group {gi} has no paths")))?
            .iter()
            .map(|p| {
                p.as_str().ok_or_else(|| {
                    format_err(format!("manifest group {gi}: a path is not a string"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let weights = group
            .get("weights")
            .and_then(Value::as_array)
            .ok_or_else(|| format_err(format!("manifest group {gi} has no weights")))?;
        let mut entries = Vec::with_capacity(weights.len());
        let mut total = 0usize;
        for w in weights {
            let name = w
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| format_err(format!("manifest group {gi}: a weight has no name")))?;
            let key = weight_key(name);
            let Some((shape, slot)) = expected.get(&key) else {
                unexpected.push(name.to_string());
                continue;
            };
            if !seen.insert(key.clone()) {
                return Err(format_err(format!(
                    "weight {name} appears twice in the manifest"
                )));
            }
            let found: Option<Vec<usize>> =
                w.get("shape").and_then(Value::as_array).and_then(|d| {
                    d.iter()
                        .map(|v| v.as_u64().and_then(|v| usize::try_from(v).ok()))
                        .collect()
                });
            if found.as_ref() != Some(shape) {
                return Err(format_err(format!(
                    "weight {name} has shape {}, the topology needs {shape:?}",
                    w.get("shape").map_or("(none)".into(), Value::to_string)
                )));
            }
            let encoding = encoding(w).map_err(|e| format_err(format!("weight {name}: {e}")))?;
            // The shape matched the topology, so this cannot overflow in
            // practice; checked anyway.
            let bytes = shape
                .iter()
                .try_fold(encoding.bytes_per_value(), |a, &d| a.checked_mul(d))
                .ok_or_else(|| format_err(format!("weight {name} is too large")))?;
            total = total
                .checked_add(bytes)
                .ok_or_else(|| format_err("the weights are too large"))?;
            entries.push(Entry {
                key,
                slot: *slot,
                encoding,
                bytes,
            });
        }
        plan.push((paths, entries, total));
    }
    if !unexpected.is_empty() {
        return Err(format_err(format!(
            "weights the topology does not use: {}",
            unexpected.join(", ")
        )));
    }
    let missing: Vec<&str> = expected
        .keys()
        .filter(|k| !seen.contains(*k))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(format_err(format!(
            "missing weights: {}",
            missing.join(", ")
        )));
    }

    let mut out = Weights::new();
    for (gi, (paths, entries, total)) in plan.into_iter().enumerate() {
        let mut buf: Vec<u8> = Vec::new();
        for p in &paths {
            let shard = read_shard(p)?;
            if shard.len() > total - buf.len() {
                return Err(format_err(format!(
                    "weight group {gi}: shard {p} makes the group longer than the {total} bytes \
                     its weights need"
                )));
            }
            if buf.is_empty() {
                buf = shard;
            } else {
                buf.extend_from_slice(&shard);
            }
        }
        if buf.len() != total {
            return Err(format_err(format!(
                "weight group {gi} ({}) needs {total} bytes, its shards have {}",
                paths.join(", "),
                buf.len()
            )));
        }
        let mut at = 0;
        for e in entries {
            let values = e.encoding.decode(&buf[at..at + e.bytes]);
            at += e.bytes;
            check_values(&e.key, &values).map_err(|e| format_err(e.to_string()))?;
            out.insert(e.slot.into(), values);
        }
    }
    Ok(out)
}

/// The storage of a manifest weight: `dtype` float32, or a `quantization`.
fn encoding(w: &Value) -> std::result::Result<Encoding, String> {
    let dtype = w.get("dtype").and_then(Value::as_str).unwrap_or("float32");
    if dtype != "float32" {
        return Err(format!("dtype {dtype:?} is not supported (float32)"));
    }
    let Some(q) = w.get("quantization") else {
        return Ok(Encoding::F32);
    };
    let qdtype = q
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or("quantization without a dtype")?;
    let num = |key: &str| {
        q.get(key)
            .and_then(Value::as_f64)
            .map(|v| v as f32)
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("{qdtype} quantization without a finite {key}"))
    };
    match qdtype {
        "float16" => Ok(Encoding::F16),
        "uint8" => Ok(Encoding::U8 {
            scale: num("scale")?,
            min: num("min")?,
        }),
        "uint16" => Ok(Encoding::U16 {
            scale: num("scale")?,
            min: num("min")?,
        }),
        other => Err(format!(
            "quantization dtype {other:?} is not supported (uint8, uint16, float16)"
        )),
    }
}

/// Transposes the weights into our layouts and builds the network.
fn build(g: &Graph<'_>, arch: Architecture, mut w: Weights) -> Result<LoadedModel> {
    let mut take = |slot: Slot| w.remove(&slot.into());
    let mut convs = Vec::with_capacity(g.units.len());
    for (i, u) in g.units.iter().enumerate() {
        let (k, c_in, c_out) = (u.kernel, u.input[2], u.output[2]);
        let kernel =
            take(Slot::Kernel(i)).ok_or_else(|| format_err(format!("{}: no kernel", u.conv)))?;
        let weight = match u.kind {
            // HWIO [k, k, C_in, C_out] -> OIHW.
            ConvKind::Conv2D => Tensor::from_fn(vec![c_out, c_in, k, k], |idx| {
                let (o, rest) = (idx / (c_in * k * k), idx % (c_in * k * k));
                let (ci, rest) = (rest / (k * k), rest % (k * k));
                let (y, x) = (rest / k, rest % k);
                kernel[((y * k + x) * c_in + ci) * c_out + o]
            }),
            // [k, k, C, 1] -> [C, 1, k, k].
            ConvKind::Depthwise => Tensor::from_fn(vec![c_out, 1, k, k], |idx| {
                let (c, rest) = (idx / (k * k), idx % (k * k));
                kernel[rest * c_out + c]
            }),
        }
        .map_err(|e| format_err(e.to_string()))?;
        let bn =
            u.bn.as_ref()
                .ok_or_else(|| format_err(format!("{}: no batch norm", u.conv)))?;
        let mut mean = take(Slot::Mean(i)).unwrap_or_else(|| vec![0.0; c_out]);
        if let Some(bias) = take(Slot::ConvBias(i)) {
            // BN(x + b) with mean μ is BN(x) with mean μ - b.
            for (m, b) in mean.iter_mut().zip(bias) {
                *m -= b;
            }
        }
        let var = take(Slot::Var(i)).unwrap_or_else(|| vec![1.0; c_out]);
        if let Some(v) = var
            .iter()
            .find(|&&v| v < 0.0 || f64::from(v) + f64::from(bn.eps) <= 0.0)
        {
            return Err(format_err(format!(
                "{}: moving variance {v} with epsilon {} is not positive",
                bn.name, bn.eps
            )));
        }
        convs.push(ConvBn {
            weight,
            bn: BatchNorm {
                gamma: take(Slot::Gamma(i)).unwrap_or_else(|| vec![1.0; c_out]),
                beta: take(Slot::Beta(i)).unwrap_or_else(|| vec![0.0; c_out]),
                mean,
                var,
                eps: bn.eps,
            },
        });
    }
    let (c, classes) = (g.head.channels, g.head.classes);
    let kernel =
        take(Slot::HeadKernel).ok_or_else(|| format_err(format!("{}: no kernel", g.head.name)))?;
    // [1, 1, C, K] or [C, K] -> [K, C].
    let weight = Tensor::from_fn(vec![classes, c], |idx| {
        let (k, ci) = (idx / c, idx % c);
        kernel[ci * classes + k]
    })
    .map_err(|e| format_err(e.to_string()))?;
    let bias = take(Slot::HeadBias).unwrap_or_else(|| vec![0.0; classes]);
    let bias = Tensor::new(vec![classes], bias).map_err(|e| format_err(e.to_string()))?;
    let name = arch.config().name();
    let net = MobileNet::from_parts(arch, convs, Classifier { weight, bias })
        .map_err(|e| format_err(format!("the weights do not fit the network: {e}")))?;
    Ok(LoadedModel {
        net,
        metadata: ModelMetadata {
            name: Some(name),
            preprocess: Some("tf".into()),
            labels: None,
            source_format: "tfjs".into(),
        },
    })
}
