//! Our own model file: a [safetensors](https://github.com/huggingface/safetensors)
//! file with the weights under our layer names and everything else in its
//! `__metadata__`.
//!
//! # Layout
//!
//! Tensors, all `F32`, little-endian, in the layouts of [`MobileNet`]:
//!
//! | tensor | shape |
//! |---|---|
//! | `conv1.weight` | `[C_out, 3, 3, 3]` (OIHW) |
//! | `conv_dw_N.weight` | `[C, 1, 3, 3]` |
//! | `conv_pw_N.weight` | `[C_out, C_in, 1, 1]` |
//! | `conv_N.weight` (Conv MobileNet) | `[C_out, C_in, 3, 3]` |
//! | `<layer>.bn.gamma`, `.bn.beta`, `.bn.mean`, `.bn.var` | `[C_out]` |
//! | `fc.weight` | `[classes, C]` |
//! | `fc.bias` | `[classes]` |
//!
//! `__metadata__` (a string-to-string map):
//!
//! | key | value |
//! |---|---|
//! | `format` | `mobilenet-v1` |
//! | `format_version` | `1` |
//! | `config` | JSON object: `alpha`, `resolution`, `classes`, `min_depth`, `activation` (`relu`, `relu6`, `identity`), `padding` (`symmetric`, `tf_same`), `dropout`, `variant` (`mobilenet`, `conv`, `shallow`), `bn_eps` (one number for every batch norm, or an object from layer name to ε) |
//! | `source_format` | the format the weights first came from (`tfjs`, `tflite`, `torch`, ...) |
//! | `preprocess` | optional: `tf` or `torch` |
//! | `name` | optional |
//! | `labels` | optional: JSON array of `classes` strings |
//! | `quantization` | only in int8 files written by `mobilenet quantize` (see [`crate::quant::ptq::file`]): this loader refuses them with a clear error |
//!
//! A float in `config` is a JSON number, or, if this crate's JSON reader
//! would not read the number back to the same bits, a string holding its
//! shortest decimal form; either way a saved model loads bit for bit.
//!
//! # Loading
//!
//! [`from_bytes`] checks everything before building the network: the format
//! name and version, the configuration (through [`Architecture::new`]),
//! that every expected tensor is present with its exact shape and dtype
//! `F32`, that there are no other tensors, and that every value is finite
//! (and every variance non-negative). Any failure is an
//! [`Error::Format`] naming the tensor or key; nothing is allocated from
//! what the header claims before it has been checked against the expected
//! shapes and the file's length. Each tensor is copied once, straight from
//! the borrowed file bytes into its [`Tensor`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::formats::{LoadedModel, ModelMetadata};
use crate::layers::{Activation, BatchNorm, PaddingMode};
use crate::model::config::PAPER_STRIDES;
use crate::model::network::{Classifier, ConvBn};
use crate::model::{Architecture, LayerKind, MobileNet, MobileNetConfig, Variant};
use crate::tensor::Tensor;

/// The value of `__metadata__["format"]`.
pub const FORMAT_NAME: &str = "mobilenet-v1";
/// The value of `__metadata__["format_version"]` this code writes and reads.
pub const FORMAT_VERSION: &str = "1";
/// The `__metadata__` key that marks a quantized file (its value names the
/// scheme); float files never have it, see [`crate::quant::ptq`].
pub const QUANTIZATION_KEY: &str = "quantization";
/// The `source_format` of a model read by [`from_bytes`].
pub const SOURCE_FORMAT: &str = "mobilenet";

fn format_err(msg: impl fmt::Display) -> Error {
    Error::Format(format!("mobilenet safetensors: {msg}"))
}

/// Why `view` is not tensor `name` of `dtype` and `shape`, if it is not:
/// the check every reader of our safetensors files makes on each tensor.
pub(crate) fn view_mismatch(
    name: &str,
    view: &TensorView,
    dtype: Dtype,
    shape: &[usize],
) -> Option<String> {
    if view.dtype() != dtype {
        return Some(format!(
            "tensor {name} has dtype {}, expected {dtype}",
            view.dtype()
        ));
    }
    (view.shape() != shape).then(|| {
        format!(
            "tensor {name} has shape {:?}, expected {shape:?}",
            view.shape()
        )
    })
}

/// Writes `model` to `path` in our format, atomically: the bytes go to a
/// temporary file in the same directory, which is flushed to disk and then
/// renamed over `path`. A failure leaves any existing `path` untouched.
///
/// ```no_run
/// use mobilenet::formats::safetensors::{load_model_file, save_model};
/// let model = mobilenet::formats::tfjs::load_tfjs("model/model.json".as_ref())?;
/// save_model(&model, "mobilenet.safetensors".as_ref())?;
/// let again = load_model_file("mobilenet.safetensors".as_ref())?;
/// assert_eq!(again.net, model.net);
/// # Ok::<(), mobilenet::Error>(())
/// ```
pub fn save_model(model: &LoadedModel, path: &Path) -> Result<()> {
    let bytes = to_bytes(&model.net, &model.metadata)?;
    write_atomically(path, &bytes)
}

/// Serializes `net` and `metadata` into the bytes of a model file.
///
/// Fails with [`Error::InvalidConfig`] if the network has a non-finite
/// weight or a negative variance, if a batch-norm ε is negative or not
/// finite, or if `metadata.labels` does not have one label per class:
/// such a file could not be loaded again.
pub fn to_bytes(net: &MobileNet, metadata: &ModelMetadata) -> Result<Vec<u8>> {
    let arch = net.architecture();
    let config = net.config();
    let invalid = |msg: String| Error::InvalidConfig(format!("cannot save the model: {msg}"));

    let conv_layers: Vec<&str> = conv_layer_names(arch);
    let mut tensors: Vec<(String, Vec<usize>, &[f32])> = Vec::new();
    let mut eps = Vec::with_capacity(conv_layers.len());
    for (name, conv) in conv_layers.iter().zip(net.convs()) {
        let bn = &conv.bn;
        if !bn.eps.is_finite() || bn.eps < 0.0 {
            return Err(invalid(format!(
                "{name}: batch norm eps {} is not >= 0",
                bn.eps
            )));
        }
        eps.push((name.to_string(), bn.eps));
        tensors.push((
            format!("{name}.weight"),
            conv.weight.shape().to_vec(),
            conv.weight.data(),
        ));
        for (field, values) in bn_fields(bn) {
            tensors.push((format!("{name}.bn.{field}"), vec![values.len()], values));
        }
    }
    let fc = net.classifier();
    tensors.push((
        "fc.weight".into(),
        fc.weight.shape().to_vec(),
        fc.weight.data(),
    ));
    tensors.push(("fc.bias".into(), fc.bias.shape().to_vec(), fc.bias.data()));
    for (name, _, data) in &tensors {
        check_values(name, data).map_err(|e| invalid(e.to_string()))?;
    }

    let bn_eps = match eps.first() {
        Some((_, first)) if eps.iter().all(|(_, e)| e.to_bits() == first.to_bits()) => {
            BnEps::Global(ExactF32(*first))
        }
        _ => BnEps::PerLayer(eps.into_iter().map(|(n, e)| (n, ExactF32(e))).collect()),
    };
    let config_json = ConfigJson {
        alpha: ExactF64(config.alpha),
        resolution: config.resolution,
        classes: config.classes,
        min_depth: config.min_depth,
        activation: config.activation.name().into(),
        padding: padding_name(config.padding).into(),
        dropout: ExactF32(config.dropout),
        variant: config.variant.name().into(),
        strides: config.strides,
        bn_eps: Some(bn_eps),
    };
    let mut info = BTreeMap::new();
    info.insert("format".to_string(), FORMAT_NAME.to_string());
    info.insert("format_version".to_string(), FORMAT_VERSION.to_string());
    info.insert(
        "config".to_string(),
        serde_json::to_string(&config_json).map_err(|e| invalid(e.to_string()))?,
    );
    info.insert("source_format".to_string(), metadata.source_format.clone());
    if let Some(p) = &metadata.preprocess {
        info.insert("preprocess".to_string(), p.clone());
    }
    if let Some(n) = &metadata.name {
        info.insert("name".to_string(), n.clone());
    }
    if let Some(labels) = &metadata.labels {
        if labels.len() != config.classes {
            return Err(invalid(format!(
                "{} labels for {} classes",
                labels.len(),
                config.classes
            )));
        }
        info.insert(
            "labels".to_string(),
            serde_json::to_string(labels).map_err(|e| invalid(e.to_string()))?,
        );
    }
    serialize(&tensors, &info).map_err(|e| invalid(e.to_string()))
}

/// A safetensors file of F32 tensors, written here rather than by the
/// `safetensors` crate so that the same model always gives the same bytes
/// (sorted JSON keys; the data in the order given).
fn serialize(
    tensors: &[(String, Vec<usize>, &[f32])],
    metadata: &BTreeMap<String, String>,
) -> std::result::Result<Vec<u8>, serde_json::Error> {
    let raw: Vec<RawTensor> = tensors
        .iter()
        .map(|(name, shape, data)| RawTensor {
            name: name.clone(),
            dtype: "F32",
            shape: shape.clone(),
            bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        })
        .collect();
    serialize_raw(&raw, metadata)
}

/// One tensor of any dtype, as little-endian bytes.
pub(crate) struct RawTensor {
    pub name: String,
    /// The safetensors dtype name: `F32`, `I8`, `I32`, ...
    pub dtype: &'static str,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// A safetensors file of `tensors` (any dtype), deterministic as
/// [`serialize`].
pub(crate) fn serialize_raw(
    tensors: &[RawTensor],
    metadata: &BTreeMap<String, String>,
) -> std::result::Result<Vec<u8>, serde_json::Error> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::to_value(metadata)?);
    let mut offset = 0usize;
    for t in tensors {
        let end = offset + t.bytes.len();
        header.insert(
            t.name.clone(),
            serde_json::json!({
                "dtype": t.dtype,
                "shape": t.shape,
                "data_offsets": [offset, end],
            }),
        );
        offset = end;
    }
    let mut json = serde_json::to_vec(&serde_json::Value::Object(header))?;
    // The data starts 8-byte aligned, as the safetensors crate writes it.
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for t in tensors {
        out.extend_from_slice(&t.bytes);
    }
    Ok(out)
}

/// The `config` metadata entry of `config` without batch-norm ε (for files
/// whose batch norms are folded away).
pub(crate) fn encode_config(config: &MobileNetConfig) -> Result<String> {
    let json = ConfigJson {
        alpha: ExactF64(config.alpha),
        resolution: config.resolution,
        classes: config.classes,
        min_depth: config.min_depth,
        activation: config.activation.name().into(),
        padding: padding_name(config.padding).into(),
        dropout: ExactF32(config.dropout),
        variant: config.variant.name().into(),
        strides: config.strides,
        bn_eps: None,
    };
    serde_json::to_string(&json).map_err(|e| Error::InvalidConfig(e.to_string()))
}

/// Reads a `config` metadata entry (any `bn_eps` in it is ignored).
pub(crate) fn decode_config(text: &str) -> Result<MobileNetConfig> {
    let json: ConfigJson =
        serde_json::from_str(text).map_err(|e| format_err(format!("bad \"config\": {e}")))?;
    json.to_config()
}

/// Reads a model file's bytes (see the [module docs](self) for what is
/// checked). The result's `source_format` is `mobilenet`.
pub fn from_bytes(bytes: &[u8]) -> Result<LoadedModel> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| format_err(e.to_string()))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| format_err(e.to_string()))?;
    let info = header
        .metadata()
        .as_ref()
        .ok_or_else(|| format_err("no __metadata__: not a MobileNet model file"))?;
    let get = |key: &str| info.get(key).map(String::as_str);
    match get("format") {
        Some(FORMAT_NAME) => {}
        Some(other) => {
            return Err(format_err(format!(
                "format is {other:?}, expected {FORMAT_NAME:?}"
            )));
        }
        None => return Err(format_err("no \"format\" in __metadata__")),
    }
    if let Some(scheme) = get(QUANTIZATION_KEY) {
        return Err(format_err(format!(
            "this is a quantized model ({scheme}); this command needs a float model \
             (only classify and convert run int8 files)"
        )));
    }
    match get("format_version") {
        Some(FORMAT_VERSION) => {}
        Some(other) => {
            return Err(format_err(format!(
                "format version {other:?} is not supported (this build reads version \
                 {FORMAT_VERSION})"
            )));
        }
        None => return Err(format_err("no \"format_version\" in __metadata__")),
    }
    let config_text = get("config").ok_or_else(|| format_err("no \"config\" in __metadata__"))?;
    let config_json: ConfigJson = serde_json::from_str(config_text)
        .map_err(|e| format_err(format!("bad \"config\": {e}")))?;
    let config = config_json.to_config()?;
    let arch = Architecture::new(&config).map_err(|e| {
        format_err(format!(
            "the configuration does not describe a network we can build: {e}"
        ))
    })?;
    let layers = conv_layer_names(&arch);
    let eps = config_json
        .bn_eps
        .as_ref()
        .ok_or_else(|| format_err("config has no \"bn_eps\""))?
        .per_layer(&layers)?;
    let labels = match get("labels") {
        None => None,
        Some(text) => {
            let labels: Vec<String> = serde_json::from_str(text)
                .map_err(|e| format_err(format!("bad \"labels\": {e}")))?;
            if labels.len() != config.classes {
                return Err(format_err(format!(
                    "{} labels for {} classes",
                    labels.len(),
                    config.classes
                )));
            }
            Some(labels)
        }
    };

    // Names, dtypes and shapes first, before anything is copied.
    let expected = expected_tensors(&arch);
    let expected_names: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let unexpected: Vec<&str> = st
        .names()
        .into_iter()
        .filter(|n| !expected_names.contains(n))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !unexpected.is_empty() {
        return Err(format_err(format!(
            "unexpected tensors: {}",
            unexpected.join(", ")
        )));
    }
    let missing: Vec<&str> = expected
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| st.tensor(n).is_err())
        .collect();
    if !missing.is_empty() {
        return Err(format_err(format!(
            "missing tensors: {}",
            missing.join(", ")
        )));
    }
    let mut views = HashMap::with_capacity(expected.len());
    for (name, shape) in &expected {
        let view = st.tensor(name).map_err(|e| format_err(e.to_string()))?;
        if let Some(why) = view_mismatch(name, &view, Dtype::F32, shape) {
            return Err(format_err(why));
        }
        views.insert(name.as_str(), view);
    }
    let read = |name: &str| -> Result<Vec<f32>> {
        let view = views
            .get(name)
            .ok_or_else(|| format_err(format!("missing tensor {name}")))?;
        let data = le_bytes_to_f32(view.data())
            .ok_or_else(|| format_err(format!("tensor {name}: length is not a multiple of 4")))?;
        check_values(name, &data)?;
        Ok(data)
    };
    let tensor = |name: &str| -> Result<Tensor> {
        let view = views
            .get(name)
            .ok_or_else(|| format_err(format!("missing tensor {name}")))?;
        Tensor::new(view.shape().to_vec(), read(name)?).map_err(|e| format_err(e.to_string()))
    };

    let mut convs = Vec::with_capacity(layers.len());
    for (layer, eps) in layers.iter().zip(eps) {
        let var = read(&format!("{layer}.bn.var"))?;
        if let Some(v) = var.iter().find(|&&v| v < 0.0) {
            return Err(format_err(format!(
                "tensor {layer}.bn.var has a negative variance {v}"
            )));
        }
        if var.iter().any(|&v| f64::from(v) + f64::from(eps) <= 0.0) {
            return Err(format_err(format!(
                "{layer}: a variance plus eps {eps} is 0 (division by zero)"
            )));
        }
        convs.push(ConvBn {
            weight: tensor(&format!("{layer}.weight"))?,
            bn: BatchNorm {
                gamma: read(&format!("{layer}.bn.gamma"))?,
                beta: read(&format!("{layer}.bn.beta"))?,
                mean: read(&format!("{layer}.bn.mean"))?,
                var,
                eps,
            },
        });
    }
    let classifier = Classifier {
        weight: tensor("fc.weight")?,
        bias: tensor("fc.bias")?,
    };
    let net = MobileNet::from_parts(arch, convs, classifier)
        .map_err(|e| format_err(format!("the weights do not fit the network: {e}")))?;
    Ok(LoadedModel {
        net,
        metadata: ModelMetadata {
            name: get("name").map(str::to_string),
            preprocess: get("preprocess").map(str::to_string),
            labels,
            source_format: SOURCE_FORMAT.into(),
        },
    })
}

/// Reads a model file from disk: [`Error::Io`] if it cannot be read,
/// otherwise as [`from_bytes`] (errors name the file).
pub fn load_model_file(path: &Path) -> Result<LoadedModel> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    from_bytes(&bytes).map_err(|e| match e {
        Error::Format(msg) => Error::Format(format!("{}: {msg}", path.display())),
        other => other,
    })
}

/// Whether `bytes` look like one of our model files (a safetensors header
/// whose `__metadata__` says `format: mobilenet-v1`), without checking the
/// rest. Useful to tell our files from other safetensors files.
pub fn is_model_file(bytes: &[u8]) -> bool {
    SafeTensors::read_metadata(bytes).is_ok_and(|(_, m)| {
        m.metadata()
            .as_ref()
            .and_then(|m| m.get("format"))
            .is_some_and(|f| f == FORMAT_NAME)
    })
}

/// The tensors a file for `arch` holds: name and shape, in execution order.
pub fn expected_tensors(arch: &Architecture) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    for spec in arch.layers() {
        let (c_in, c_out, k) = (spec.input[2], spec.output[2], spec.kernel);
        match spec.kind {
            LayerKind::Conv | LayerKind::Depthwise | LayerKind::Pointwise => {
                let per_group = if spec.kind == LayerKind::Depthwise {
                    1
                } else {
                    c_in
                };
                out.push((
                    format!("{}.weight", spec.name),
                    vec![c_out, per_group, k, k],
                ));
                for field in ["gamma", "beta", "mean", "var"] {
                    out.push((format!("{}.bn.{field}", spec.name), vec![c_out]));
                }
            }
            LayerKind::FullyConnected => {
                out.push(("fc.weight".into(), vec![c_out, c_in]));
                out.push(("fc.bias".into(), vec![c_out]));
            }
            LayerKind::GlobalAvgPool | LayerKind::Softmax => {}
        }
    }
    out
}

/// Names of the layers with a batch norm, in execution order.
fn conv_layer_names(arch: &Architecture) -> Vec<&str> {
    arch.layers()
        .iter()
        .filter(|l| l.kind.has_batch_norm())
        .map(|l| l.name.as_str())
        .collect()
}

fn bn_fields(bn: &BatchNorm) -> [(&'static str, &[f32]); 4] {
    [
        ("gamma", &bn.gamma),
        ("beta", &bn.beta),
        ("mean", &bn.mean),
        ("var", &bn.var),
    ]
}

/// Fails, naming the tensor and the index, on the first non-finite value.
pub(crate) fn check_values(name: &str, data: &[f32]) -> Result<()> {
    match data.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::Format(format!(
            "tensor {name} has a non-finite value {} at index {i}",
            data[i]
        ))),
    }
}

/// Little-endian f32s, or `None` if the length is not a multiple of 4.
pub(crate) fn le_bytes_to_f32(bytes: &[u8]) -> Option<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

fn padding_name(p: PaddingMode) -> &'static str {
    match p {
        PaddingMode::Symmetric => "symmetric",
        PaddingMode::TfSame => "tf_same",
    }
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames
/// it over `path`.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |source| Error::Io { path: p, source }
    };
    let file_name = path.file_name().ok_or_else(|| Error::Io {
        path: path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let temp = dir.join(format!(
        ".{}.{}.{nanos}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(io(&temp))?;
        file.write_all(bytes).map_err(io(&temp))?;
        file.sync_all().map_err(io(&temp))?;
        drop(file);
        std::fs::rename(&temp, path).map_err(io(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// The `config` entry of `__metadata__`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigJson {
    alpha: ExactF64,
    resolution: usize,
    classes: usize,
    min_depth: usize,
    activation: String,
    padding: String,
    dropout: ExactF32,
    variant: String,
    /// Absent in files written before the small-input knob: the paper's.
    #[serde(default = "paper_strides")]
    strides: [usize; 5],
    /// Absent in int8 files, whose batch norms are folded away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bn_eps: Option<BnEps>,
}

fn paper_strides() -> [usize; 5] {
    PAPER_STRIDES
}

impl ConfigJson {
    fn to_config(&self) -> Result<MobileNetConfig> {
        let activation = match self.activation.as_str() {
            "relu" => Activation::Relu,
            "relu6" => Activation::Relu6,
            "identity" => Activation::Identity,
            other => {
                return Err(format_err(format!(
                    "config: unknown activation {other:?} (relu, relu6 or identity)"
                )));
            }
        };
        let padding = match self.padding.as_str() {
            "symmetric" => PaddingMode::Symmetric,
            "tf_same" => PaddingMode::TfSame,
            other => {
                return Err(format_err(format!(
                    "config: unknown padding {other:?} (symmetric or tf_same)"
                )));
            }
        };
        let variant: Variant = self
            .variant
            .parse()
            .map_err(|e| format_err(format!("config: {e}")))?;
        Ok(MobileNetConfig {
            alpha: self.alpha.0,
            resolution: self.resolution,
            classes: self.classes,
            min_depth: self.min_depth,
            activation,
            padding,
            dropout: self.dropout.0,
            variant,
            strides: self.strides,
        })
    }
}

/// Batch-norm ε: one for all layers, or one per layer.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum BnEps {
    Global(ExactF32),
    PerLayer(BTreeMap<String, ExactF32>),
}

impl BnEps {
    /// ε for each of `layers`, checked.
    fn per_layer(&self, layers: &[&str]) -> Result<Vec<f32>> {
        let eps: Vec<f32> = match self {
            BnEps::Global(e) => vec![e.0; layers.len()],
            BnEps::PerLayer(map) => {
                let extra: Vec<&str> = map
                    .keys()
                    .map(String::as_str)
                    .filter(|k| !layers.contains(k))
                    .collect();
                if !extra.is_empty() {
                    return Err(format_err(format!(
                        "config: bn_eps names layers the network does not have: {}",
                        extra.join(", ")
                    )));
                }
                layers
                    .iter()
                    .map(|l| {
                        map.get(*l)
                            .map(|e| e.0)
                            .ok_or_else(|| format_err(format!("config: no bn_eps for {l}")))
                    })
                    .collect::<Result<_>>()?
            }
        };
        if let Some((l, e)) = layers
            .iter()
            .zip(&eps)
            .find(|(_, e)| !e.is_finite() || **e < 0.0)
        {
            return Err(format_err(format!(
                "config: bn_eps of {l} is {e}, must be >= 0"
            )));
        }
        Ok(eps)
    }
}

/// An f64 that survives a trip through JSON bit for bit (see the module
/// docs).
#[derive(Clone, Copy, Debug)]
struct ExactF64(f64);

/// An f32 that survives a trip through JSON bit for bit.
#[derive(Clone, Copy, Debug)]
struct ExactF32(f32);

impl Serialize for ExactF64 {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let back = serde_json::to_string(&self.0)
            .ok()
            .and_then(|t| serde_json::from_str::<ExactF64>(&t).ok());
        if back.is_some_and(|b| b.0.to_bits() == self.0.to_bits()) {
            s.serialize_f64(self.0)
        } else {
            s.serialize_str(&format!("{:?}", self.0))
        }
    }
}

impl Serialize for ExactF32 {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let back = serde_json::to_string(&self.0)
            .ok()
            .and_then(|t| serde_json::from_str::<ExactF32>(&t).ok());
        if back.is_some_and(|b| b.0.to_bits() == self.0.to_bits()) {
            s.serialize_f32(self.0)
        } else {
            s.serialize_str(&format!("{:?}", self.0))
        }
    }
}

/// Accepts a JSON number or a string holding a decimal float.
struct FloatVisitor;

impl Visitor<'_> for FloatVisitor {
    type Value = FloatText;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number, or a string holding a number")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<FloatText, E> {
        Ok(FloatText::Number(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<FloatText, E> {
        Ok(FloatText::Number(v as f64))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<FloatText, E> {
        Ok(FloatText::Number(v as f64))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<FloatText, E> {
        Ok(FloatText::Text(v.to_string()))
    }
}

enum FloatText {
    Number(f64),
    Text(String),
}

impl<'de> Deserialize<'de> for ExactF64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match d.deserialize_any(FloatVisitor)? {
            FloatText::Number(v) => Ok(ExactF64(v)),
            FloatText::Text(t) => t
                .trim()
                .parse()
                .map(ExactF64)
                .map_err(|_| de::Error::custom(format!("{t:?} is not a number"))),
        }
    }
}

impl<'de> Deserialize<'de> for ExactF32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match d.deserialize_any(FloatVisitor)? {
            FloatText::Number(v) => Ok(ExactF32(v as f32)),
            FloatText::Text(t) => t
                .trim()
                .parse()
                .map(ExactF32)
                .map_err(|_| de::Error::custom(format!("{t:?} is not a number"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_survive_json() {
        for v in [
            0.0,
            1e-3,
            1e-5,
            0.1 + 0.2,
            1.0 / 3.0,
            0.75,
            5e-324,
            f64::MAX,
        ] {
            let t = serde_json::to_string(&ExactF64(v)).unwrap();
            let back: ExactF64 = serde_json::from_str(&t).unwrap();
            assert_eq!(back.0.to_bits(), v.to_bits(), "{v} as {t}");
        }
        for v in [
            0.0f32,
            1e-3,
            1e-5,
            0.1,
            1.0 / 3.0,
            1e-45,
            f32::MAX,
            0.001_000_1,
        ] {
            let t = serde_json::to_string(&ExactF32(v)).unwrap();
            let back: ExactF32 = serde_json::from_str(&t).unwrap();
            assert_eq!(back.0.to_bits(), v.to_bits(), "{v} as {t}");
        }
    }
}
