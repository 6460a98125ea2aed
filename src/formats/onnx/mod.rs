//! ONNX export of any of our networks, and import of the ONNX MobileNets we
//! export (and close variants of them).
//!
//! The protobuf messages are declared by hand in [`proto`] (no `protoc`, no
//! build script). The exported model uses opset 13 and IR version 7, so any
//! ONNX runtime from 2020 on can run it:
//!
//! | ours | ONNX |
//! |---|---|
//! | input `[N, R, R, 3]` (NHWC) | input `input`, float `[N, 3, R, R]` (**NCHW**, the ONNX convention; `N` symbolic unless [`OnnxExportOptions::dynamic_batch`] is off) |
//! | conv / depthwise / pointwise + batch norm | `Conv` with the batch norm folded into its weight and bias (`group = C` for depthwise); `pads` `[top, left, bottom, right]` from our padding, so TF 'SAME' at stride 2 is `[0, 0, 1, 1]` |
//! | ReLU / ReLU6 / identity | `Relu` / `Clip(x, 0, 6)` (min and max as inputs, opset >= 11) / nothing |
//! | `global_pool` | `GlobalAveragePool`, then `Flatten` (axis 1) |
//! | `fc`, weight `[classes, C]` | `Gemm` with `transB = 1`, output `logits` |
//! | softmax | optional `Softmax` (axis 1), output `probs` |
//!
//! Our engine is NHWC; the exported graph takes NCHW, so callers of an ONNX
//! runtime transpose images (`[N, H, W, C]` -> `[N, C, H, W]`) first. The
//! weights need no change: ours are OIHW, as ONNX's `Conv` wants.
//!
//! The model's `metadata_props` carry what the weights cannot say:
//! `mobilenet.config` (JSON: alpha, resolution, classes, min_depth,
//! activation, padding, dropout, variant), `mobilenet.name`,
//! `mobilenet.preprocess` (`tf` or `torch`) and `mobilenet.labels` (a JSON
//! array of strings), the last two only when known.
//!
//! [`load_onnx`] reads such a file back. It also accepts close variants, as
//! other exporters write them: batch norm kept as `BatchNormalization`
//! nodes, convolutions with or without bias, `Relu` or `Clip(0, 6)` (as
//! inputs or, before opset 11, attributes), `auto_pad` `SAME_UPPER` /
//! `SAME_LOWER` / `VALID`, `Constant` nodes in place of initializers,
//! `Identity` and `Dropout` nodes, `Flatten` / `Reshape` / `Squeeze`, and a
//! `Gemm` (any `transB`, `alpha`, `beta`), `MatMul` + `Add`, or 1x1 `Conv`
//! classifier, with or without a final `Softmax`. Without our metadata the
//! configuration is inferred: α = (last conv's channels) / 1024 (exact for
//! every channel count TF-slim's rule produces), `min_depth` 8, the
//! resolution from the input shape, the variant from the number of
//! convolutions, the padding mode from the pads.
//!
//! Not supported (refused with [`Error::Format`]):
//! any other operator or graph shape (residual connections, NHWC inputs
//! behind a `Transpose`, MobileNet v2/v3), non-float weights
//! (float16, double, quantized), external or sparse tensor data, dilated or
//! non-square convolutions, operators from non-default domains, opsets
//! outside 7..=25, and non-finite weights.

mod export;
mod export_qdq;
mod import;
pub mod proto;

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::formats::{LoadedModel, ModelMetadata};
use crate::layers::{Activation, PaddingMode};
use crate::model::config::PAPER_STRIDES;
use crate::model::{MobileNet, MobileNetConfig, Variant};

/// The opset of the default (`ai.onnx`) domain that [`export_onnx`] writes.
pub const OPSET_VERSION: i64 = 13;
/// The IR version [`export_onnx`] writes (IR 7 goes with opset 13).
pub const IR_VERSION: i64 = 7;
/// Oldest default-domain opset [`load_onnx`] reads.
pub const MIN_OPSET: i64 = 7;
/// Newest default-domain opset [`load_onnx`] reads.
pub const MAX_OPSET: i64 = 25;
/// The name of the exported graph's input.
pub const INPUT_NAME: &str = "input";

/// `metadata_props` key of the configuration (JSON).
pub const KEY_CONFIG: &str = "mobilenet.config";
/// `metadata_props` key of the model name.
pub const KEY_NAME: &str = "mobilenet.name";
/// `metadata_props` key of the preprocessing recipe (`tf` or `torch`).
pub const KEY_PREPROCESS: &str = "mobilenet.preprocess";
/// `metadata_props` key of the class names (a JSON array of strings).
pub const KEY_LABELS: &str = "mobilenet.labels";

/// What [`export_onnx`] writes besides the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnnxExportOptions {
    /// Append a `Softmax` (axis 1): the output is `probs` instead of
    /// `logits`. Default `true`.
    pub softmax: bool,
    /// Make the batch dimension symbolic (`N`) instead of 1. Default `true`.
    pub dynamic_batch: bool,
}

impl Default for OnnxExportOptions {
    fn default() -> Self {
        OnnxExportOptions {
            softmax: true,
            dynamic_batch: true,
        }
    }
}

/// Writes an ONNX model (opset 13, IR version 7) of `net`: input `input`,
/// float NCHW `[N, 3, R, R]`; output `probs` (with
/// [`OnnxExportOptions::softmax`]) or `logits`, `[N, classes]`. Batch norm
/// is folded into each `Conv` as the inference engine folds it
/// (`scale = γ / sqrt(σ² + ε)` in f64). `metadata` (name, preprocessing,
/// labels) and the configuration go into `metadata_props`.
///
/// Fails with [`Error::InvalidConfig`] if `metadata.labels` does not have
/// one entry per class or a batch norm has `σ² + ε <= 0`, and with
/// [`Error::Shape`] if a batch norm's vectors have different lengths.
///
/// ```
/// use mobilenet::formats::ModelMetadata;
/// use mobilenet::formats::onnx::{OnnxExportOptions, export_onnx, load_onnx};
/// use mobilenet::model::{MobileNet, MobileNetConfig};
///
/// let cfg = MobileNetConfig { alpha: 0.25, resolution: 32, classes: 10, ..Default::default() };
/// let net = MobileNet::random(&cfg, 1)?;
/// let bytes = export_onnx(&net, &ModelMetadata::default(), &OnnxExportOptions::default())?;
/// let back = load_onnx(&bytes)?;
/// assert_eq!(back.net.config(), net.config());
/// assert_eq!(back.metadata.source_format, "onnx");
/// # Ok::<(), mobilenet::Error>(())
/// ```
pub fn export_onnx(
    net: &MobileNet,
    metadata: &ModelMetadata,
    options: &OnnxExportOptions,
) -> Result<Vec<u8>> {
    export::export(net, metadata, options)
}

/// Writes an int8 model from `mobilenet quantize` as a QDQ ONNX model
/// (opset 13): float operators between `QuantizeLinear`/`DequantizeLinear`
/// pairs, int8 weights with per-output-channel scales (axis 0). Input
/// `input` `[N, 3, R, R]` float, output `logits` `[N, classes]`.
pub fn export_onnx_int8(model: &crate::quant::ptq::Int8MobileNet) -> Result<Vec<u8>> {
    export_qdq::export_qdq(model)
}

/// Reads an ONNX model of the form [`export_onnx`] writes, or a close
/// variant of it (see the [module documentation](self)), back into a
/// [`MobileNet`] (`source_format` `onnx`). Batch norms kept as
/// `BatchNormalization` nodes stay batch norms; a convolution with a bias
/// and no batch norm becomes a batch norm with γ = 1, β = bias, μ = 0,
/// σ² = 1, ε = 0.
///
/// Fails with [`Error::Format`] for anything else (damaged protobuf,
/// unknown operator, missing initializer, wrong shape, external data,
/// non-float or non-finite weights), naming the node or tensor at fault.
/// Never panics, whatever the bytes, and allocates at most a small multiple
/// of `bytes.len()`.
pub fn load_onnx(bytes: &[u8]) -> Result<LoadedModel> {
    import::load(bytes)
}

/// The configuration as the JSON of [`KEY_CONFIG`].
fn config_to_json(config: &MobileNetConfig) -> Value {
    json!({
        "alpha": config.alpha,
        "resolution": config.resolution,
        "classes": config.classes,
        "min_depth": config.min_depth,
        "activation": config.activation.name(),
        "padding": padding_name(config.padding),
        "dropout": config.dropout,
        "variant": config.variant.name(),
        "strides": config.strides,
    })
}

/// Parses the JSON of [`KEY_CONFIG`] (every field required but `strides`,
/// which files written before it existed lack: the paper's then).
fn config_from_json(text: &str) -> Result<MobileNetConfig> {
    let bad = |what: String| Error::Format(format!("metadata_props {KEY_CONFIG}: {what}"));
    let value: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let field = |key: &str| {
        value
            .get(key)
            .ok_or_else(|| bad(format!("missing \"{key}\"")))
    };
    let number = |key: &str| {
        field(key)?
            .as_f64()
            .ok_or_else(|| bad(format!("\"{key}\" is not a number")))
    };
    let count = |key: &str| {
        field(key)?
            .as_u64()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| bad(format!("\"{key}\" is not a non-negative integer")))
    };
    let string = |key: &str| {
        field(key)?
            .as_str()
            .ok_or_else(|| bad(format!("\"{key}\" is not a string")))
    };
    let activation = match string("activation")? {
        "relu" => Activation::Relu,
        "relu6" => Activation::Relu6,
        "identity" => Activation::Identity,
        other => return Err(bad(format!("unknown activation \"{other}\""))),
    };
    let padding = match string("padding")? {
        "symmetric" => PaddingMode::Symmetric,
        "tf_same" => PaddingMode::TfSame,
        other => return Err(bad(format!("unknown padding \"{other}\""))),
    };
    let variant: Variant = string("variant")?
        .parse()
        .map_err(|e: Error| bad(e.to_string()))?;
    let strides = match value.get("strides") {
        None => PAPER_STRIDES,
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| bad("\"strides\" is not a list of five integers".into()))?,
    };
    Ok(MobileNetConfig {
        alpha: number("alpha")?,
        resolution: count("resolution")?,
        classes: count("classes")?,
        min_depth: count("min_depth")?,
        activation,
        padding,
        dropout: number("dropout")? as f32,
        variant,
        strides,
    })
}

/// `symmetric` or `tf_same`.
fn padding_name(padding: PaddingMode) -> &'static str {
    match padding {
        PaddingMode::Symmetric => "symmetric",
        PaddingMode::TfSame => "tf_same",
    }
}
