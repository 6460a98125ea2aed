//! Saving and loading an [`Int8MobileNet`] in our safetensors format.
//!
//! The file is one of ours (`format: mobilenet-v1`) with two more
//! `__metadata__` keys: `quantization: int8` (float loaders refuse files
//! that have it, and this loader refuses files without it) and
//! `quantization_version: 1` (the layout below; other versions are
//! refused). `config` is the float model's, without `bn_eps` (batch norms
//! are folded); `calibration` says how ranges were chosen.
//!
//! | tensor | dtype | shape |
//! |---|---|---|
//! | `input.scale`, `<layer>.output.scale` | F32 | `[1]` |
//! | `input.zero_point`, `<layer>.output.zero_point` | I32 | `[1]` |
//! | `<layer>.weight` | I8 | `[C_out, C_in / groups, K, K]` |
//! | `<layer>.weight_scale` | F32 | `[C_out]` |
//! | `<layer>.bias` | I32 | `[C_out]` |
//! | `fc.weight` | I8 | `[classes, C]` |
//! | `fc.weight_scale` | F32 | `[classes]` |
//! | `fc.bias` | I32 | `[classes]` |
//!
//! Loading checks every name, dtype and shape before reading values, then
//! every scale (finite, > 0) and zero point (in `[-128, 127]`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::model::{Int8Classifier, Int8Conv, Int8MobileNet};
use super::scheme::ActQuant;
use crate::error::{Error, Result};
use crate::formats::ModelMetadata;
use crate::formats::load::read_bounded;
use crate::formats::safetensors::{
    FORMAT_NAME, FORMAT_VERSION, QUANTIZATION_KEY, RawTensor, decode_config, encode_config,
    serialize_raw, view_mismatch, write_atomically,
};
use crate::model::{Architecture, LayerKind};

/// The value of `__metadata__["quantization"]` for this scheme.
pub const QUANTIZATION: &str = "int8";
/// The value of `__metadata__["quantization_version"]` written and read.
pub const QUANTIZATION_VERSION: &str = "1";
/// The `source_format` of a model read back.
pub const SOURCE_FORMAT: &str = "mobilenet-int8";

fn format_err(msg: impl std::fmt::Display) -> Error {
    Error::Format(format!("mobilenet int8 safetensors: {msg}"))
}

/// Whether `bytes` are one of our files marked quantized (header only).
pub fn is_quantized_file(bytes: &[u8]) -> bool {
    SafeTensors::read_metadata(bytes).is_ok_and(|(_, m)| {
        m.metadata().as_ref().is_some_and(|m| {
            m.get("format").is_some_and(|f| f == FORMAT_NAME) && m.contains_key(QUANTIZATION_KEY)
        })
    })
}

/// Whether the file at `path` is a quantized model, reading only its
/// header (false for anything unreadable or not safetensors).
pub fn is_quantized_path(path: &Path) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut len = [0u8; 8];
    if f.read_exact(&mut len).is_err() {
        return false;
    }
    let n = u64::from_le_bytes(len);
    // Our headers are a few kB; a huge claim is not one of our files.
    if n == 0 || n > 1 << 24 {
        return false;
    }
    let mut header = vec![0u8; n as usize];
    if f.read_exact(&mut header).is_err() {
        return false;
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&header) else {
        return false;
    };
    let meta = &json["__metadata__"];
    meta["format"] == FORMAT_NAME && !meta[QUANTIZATION_KEY].is_null()
}

/// Serializes `model` (deterministic: the same model gives the same bytes).
pub fn to_bytes(model: &Int8MobileNet) -> Result<Vec<u8>> {
    let mut tensors = Vec::new();
    push_quant(&mut tensors, "input", model.input);
    for conv in &model.convs {
        let name = &conv.spec.name;
        let shape = weight_shape(&conv.spec);
        tensors.push(i8_tensor(format!("{name}.weight"), shape, &conv.weight));
        tensors.push(f32_tensor(
            format!("{name}.weight_scale"),
            &conv.weight_scale,
        ));
        tensors.push(i32_tensor(format!("{name}.bias"), &conv.bias));
        push_quant(&mut tensors, &format!("{name}.output"), conv.output);
    }
    let fc = &model.classifier;
    let classes = model.classes();
    let channels = fc.weight.len() / classes.max(1);
    tensors.push(i8_tensor(
        "fc.weight".into(),
        vec![classes, channels],
        &fc.weight,
    ));
    tensors.push(f32_tensor("fc.weight_scale".into(), &fc.weight_scale));
    tensors.push(i32_tensor("fc.bias".into(), &fc.bias));

    let meta = &model.metadata;
    let mut info = BTreeMap::new();
    info.insert("format".to_string(), FORMAT_NAME.to_string());
    info.insert("format_version".to_string(), FORMAT_VERSION.to_string());
    info.insert(QUANTIZATION_KEY.to_string(), QUANTIZATION.to_string());
    info.insert(
        "quantization_version".to_string(),
        QUANTIZATION_VERSION.to_string(),
    );
    info.insert(
        "config".to_string(),
        encode_config(model.architecture().config())?,
    );
    info.insert("calibration".to_string(), model.calibration.clone());
    info.insert("source_format".to_string(), meta.source_format.clone());
    if let Some(p) = &meta.preprocess {
        info.insert("preprocess".to_string(), p.clone());
    }
    if let Some(n) = &meta.name {
        info.insert("name".to_string(), n.clone());
    }
    if let Some(labels) = &meta.labels {
        info.insert(
            "labels".to_string(),
            serde_json::to_string(labels).map_err(|e| Error::InvalidConfig(e.to_string()))?,
        );
    }
    serialize_raw(&tensors, &info).map_err(|e| Error::InvalidConfig(e.to_string()))
}

/// Writes `model` to `path` atomically.
pub fn save(model: &Int8MobileNet, path: &Path) -> Result<()> {
    write_atomically(path, &to_bytes(model)?)
}

/// Reads a quantized model file from disk (errors name the file).
pub fn load(path: &Path) -> Result<Int8MobileNet> {
    from_bytes(&read_bounded(path)?).map_err(|e| match e {
        Error::Format(msg) => Error::Format(format!("{}: {msg}", path.display())),
        other => other,
    })
}

/// Reads a quantized model's bytes (see the [module docs](self)).
pub fn from_bytes(bytes: &[u8]) -> Result<Int8MobileNet> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| format_err(e.to_string()))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| format_err(e.to_string()))?;
    let info = header
        .metadata()
        .as_ref()
        .ok_or_else(|| format_err("no __metadata__: not a MobileNet model file"))?;
    let get = |key: &str| info.get(key).map(String::as_str);
    if get("format") != Some(FORMAT_NAME) {
        return Err(format_err(format!(
            "format is {:?}, expected {FORMAT_NAME:?}",
            get("format")
        )));
    }
    match get(QUANTIZATION_KEY) {
        Some(QUANTIZATION) => {}
        Some(other) => {
            return Err(format_err(format!(
                "quantization {other:?} is not supported (expected {QUANTIZATION:?})"
            )));
        }
        None => {
            return Err(format_err(
                "this is a float model, not a quantized one; make one with `mobilenet quantize`",
            ));
        }
    }
    if get("quantization_version") != Some(QUANTIZATION_VERSION) {
        return Err(format_err(format!(
            "quantization version {:?} is not supported (this build reads {QUANTIZATION_VERSION})",
            get("quantization_version")
        )));
    }
    let config = decode_config(get("config").ok_or_else(|| format_err("no \"config\""))?)?;
    let arch = Architecture::new(&config)
        .map_err(|e| format_err(format!("the configuration is not a network we build: {e}")))?;
    let labels = match get("labels") {
        None => None,
        Some(text) => Some(
            serde_json::from_str::<Vec<String>>(text)
                .map_err(|e| format_err(format!("bad \"labels\": {e}")))?,
        ),
    };

    let expected = expected_tensors(&arch);
    let names: BTreeSet<&str> = expected.iter().map(|(n, _, _)| n.as_str()).collect();
    let unexpected: Vec<&str> = st
        .names()
        .into_iter()
        .filter(|n| !names.contains(n))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !unexpected.is_empty() {
        return Err(format_err(format!(
            "unexpected tensors: {}",
            unexpected.join(", ")
        )));
    }
    let mut views: HashMap<&str, TensorView> = HashMap::new();
    for (name, dtype, shape) in &expected {
        let view = st
            .tensor(name)
            .map_err(|_| format_err(format!("missing tensor {name}")))?;
        if let Some(why) = view_mismatch(name, &view, *dtype, shape) {
            return Err(format_err(why));
        }
        views.insert(name.as_str(), view);
    }
    let data = |name: &str| -> Result<Vec<u8>> {
        views
            .get(name)
            .map(|v| v.data().to_vec())
            .ok_or_else(|| format_err(format!("missing tensor {name}")))
    };
    let i8s =
        |name: &str| -> Result<Vec<i8>> { Ok(data(name)?.iter().map(|&b| b as i8).collect()) };
    let words = |name: &str| -> Result<Vec<[u8; 4]>> {
        let bytes = data(name)?;
        if !bytes.len().is_multiple_of(4) {
            return Err(format_err(format!(
                "tensor {name}: length is not a multiple of 4"
            )));
        }
        Ok(bytes
            .chunks_exact(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect())
    };
    let f32s = |name: &str| -> Result<Vec<f32>> {
        let values: Vec<f32> = words(name)?.into_iter().map(f32::from_le_bytes).collect();
        if let Some(v) = values.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            return Err(format_err(format!(
                "tensor {name}: scale {v} is not finite and positive"
            )));
        }
        Ok(values)
    };
    let i32s = |name: &str| -> Result<Vec<i32>> {
        Ok(words(name)?.into_iter().map(i32::from_le_bytes).collect())
    };
    let quant = |prefix: &str| -> Result<ActQuant> {
        let scale = f32s(&format!("{prefix}.scale"))?[0];
        let zero_point = i32s(&format!("{prefix}.zero_point"))?[0];
        ActQuant::new(scale, zero_point).map_err(|e| format_err(format!("{prefix}: {e}")))
    };

    let input = quant("input")?;
    let mut previous = input;
    let mut convs = Vec::new();
    for spec in arch.layers().iter().filter(|l| l.kind.has_batch_norm()) {
        let name = &spec.name;
        let output = quant(&format!("{name}.output"))?;
        let conv = Int8Conv::new(
            spec.clone(),
            config.activation,
            i8s(&format!("{name}.weight"))?,
            f32s(&format!("{name}.weight_scale"))?,
            i32s(&format!("{name}.bias"))?,
            previous,
            output,
        )
        .map_err(|e| format_err(e.to_string()))?;
        previous = output;
        convs.push(conv);
    }
    let classifier = Int8Classifier {
        weight: i8s("fc.weight")?,
        weight_scale: f32s("fc.weight_scale")?,
        bias: i32s("fc.bias")?,
        input: previous,
    };
    let metadata = ModelMetadata {
        name: get("name").map(str::to_string),
        preprocess: get("preprocess").map(str::to_string),
        labels,
        source_format: SOURCE_FORMAT.into(),
    };
    Int8MobileNet::from_parts(
        arch,
        input,
        convs,
        classifier,
        metadata,
        get("calibration").unwrap_or("").to_string(),
    )
    .map_err(|e| format_err(e.to_string()))
}

/// Name, dtype and shape of every tensor of a file for `arch`.
fn expected_tensors(arch: &Architecture) -> Vec<(String, Dtype, Vec<usize>)> {
    let mut out = vec![
        ("input.scale".to_string(), Dtype::F32, vec![1]),
        ("input.zero_point".to_string(), Dtype::I32, vec![1]),
    ];
    for spec in arch.layers() {
        let name = &spec.name;
        let (c_in, c_out) = (spec.input[2], spec.output[2]);
        match spec.kind {
            LayerKind::Conv | LayerKind::Depthwise | LayerKind::Pointwise => {
                out.push((format!("{name}.weight"), Dtype::I8, weight_shape(spec)));
                out.push((format!("{name}.weight_scale"), Dtype::F32, vec![c_out]));
                out.push((format!("{name}.bias"), Dtype::I32, vec![c_out]));
                out.push((format!("{name}.output.scale"), Dtype::F32, vec![1]));
                out.push((format!("{name}.output.zero_point"), Dtype::I32, vec![1]));
            }
            LayerKind::FullyConnected => {
                out.push(("fc.weight".into(), Dtype::I8, vec![c_out, c_in]));
                out.push(("fc.weight_scale".into(), Dtype::F32, vec![c_out]));
                out.push(("fc.bias".into(), Dtype::I32, vec![c_out]));
            }
            LayerKind::GlobalAvgPool | LayerKind::Softmax => {}
        }
    }
    out
}

fn weight_shape(spec: &crate::model::LayerSpec) -> Vec<usize> {
    let per_group = if spec.kind == LayerKind::Depthwise {
        1
    } else {
        spec.input[2]
    };
    vec![spec.output[2], per_group, spec.kernel, spec.kernel]
}

fn push_quant(tensors: &mut Vec<RawTensor>, prefix: &str, q: ActQuant) {
    tensors.push(f32_tensor(format!("{prefix}.scale"), &[q.scale]));
    tensors.push(i32_tensor(format!("{prefix}.zero_point"), &[q.zero_point]));
}

fn f32_tensor(name: String, values: &[f32]) -> RawTensor {
    RawTensor {
        name,
        dtype: "F32",
        shape: vec![values.len()],
        bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn i32_tensor(name: String, values: &[i32]) -> RawTensor {
    RawTensor {
        name,
        dtype: "I32",
        shape: vec![values.len()],
        bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn i8_tensor(name: String, shape: Vec<usize>, values: &[i8]) -> RawTensor {
    RawTensor {
        name,
        dtype: "I8",
        shape,
        bytes: values.iter().map(|&v| v as u8).collect(),
    }
}
