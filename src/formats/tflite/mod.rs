//! TensorFlow Lite (`.tflite`) MobileNet v1 models, float and quantized.
//!
//! A `.tflite` file is a FlatBuffer of the TFLite schema. We read it with a
//! small hand-written, bounds-checked reader (`flatbuffer`) and a typed
//! view of the few schema tables MobileNet needs (`schema`); no generated
//! code. The importer (`import`) then recognises MobileNet v1 in the
//! operator list and builds a float [`MobileNet`](crate::model::MobileNet):
//!
//! | TFLite | ours |
//! |---|---|
//! | `CONV_2D` 3x3 s2, weights OHWI `[C, 3, 3, 3]` | `conv1`, weight `[C, 3, 3, 3]` (OIHW) |
//! | `DEPTHWISE_CONV_2D` 3x3, weights `[1, 3, 3, C]` | `conv_dw_n`, weight `[C, 1, 3, 3]` |
//! | `CONV_2D` 1x1, weights `[C_out, 1, 1, C_in]` | `conv_pw_n`, weight `[C_out, C_in, 1, 1]` |
//! | conv bias `[C]` | batch norm with γ = 1, β = bias, μ = 0, σ² = 1, ε = 0 |
//! | fused `RELU6` (float) / output range [0, 6] (quantized) | ReLU6 |
//! | `AVERAGE_POOL_2D` over the whole map | `global_pool` |
//! | `CONV_2D` 1x1 to the classes | `fc`, weight `[classes, C]`, bias |
//! | `RESHAPE` / `SQUEEZE`, `SOFTMAX` | (logits are our output) |
//!
//! Quantized (uint8 or int8, per-tensor or per-axis) weights and int32
//! biases are dequantized: `(q - zero_point) * scale`. The importer runs the
//! network as float; it does not reproduce TFLite's integer arithmetic.
//!
//! Not supported: other operators or layouts (e.g. a `FULLY_CONNECTED`
//! classifier, MobileNet v2/v3), float16/int16 tensors, sparse tensors,
//! custom quantization, several subgraphs, and labels that are compressed
//! inside the metadata archive.

pub(crate) mod flatbuffer;
mod import;
mod labels;
pub(crate) mod schema;

use crate::error::Result;
use crate::formats::LoadedModel;

/// Parses a `.tflite` file's bytes into a float MobileNet with metadata
/// (`source_format` `tflite`, preprocess `tf`, labels if the file's
/// metadata carries a label file).
///
/// Fails with [`Error::Format`](crate::Error::Format) for anything that is
/// not a well-formed MobileNet v1 TFLite file, naming what is wrong and
/// where (operator, tensor, offset). Never panics, whatever the bytes.
///
/// ```no_run
/// let bytes = std::fs::read("mobilenet_v1_0.25_224.tflite")?;
/// let model = mobilenet::formats::tflite::load_tflite(&bytes)?;
/// println!("{:?}, alpha {}", model.metadata.name, model.net.config().alpha);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn load_tflite(bytes: &[u8]) -> Result<LoadedModel> {
    import::load(bytes)
}

/// Joins a model that ends at the average pool (an "embedding extractor")
/// with a head file (1x1 conv 1024·α -> classes, squeeze/reshape, softmax),
/// as the official uint8 1.0_224 MobileNet is shipped by Coral
/// (`mobilenet_v1_1.0_224_quant_embedding_extractor.tflite` and
/// `mobilenet_quant_v1_224_head_layers.tflite`).
///
/// The head's input must have the extractor's output shape, type and
/// quantization.
pub fn load_tflite_with_head(extractor: &[u8], head: &[u8]) -> Result<LoadedModel> {
    import::load_with_head(extractor, head)
}

/// The class labels stored in a `.tflite` file's metadata archive, if it
/// holds a plain text file with exactly `classes` lines (see `labels`);
/// `None` otherwise, never an error: labels are a convenience.
pub fn find_labels(bytes: &[u8], classes: usize) -> Option<Vec<String>> {
    labels::find_labels(bytes, classes)
}
