//! Model files in and out: the published formats we import and our own.
//!
//! Model files come from strangers: every parser checks every length and
//! offset and reports a damaged or unsupported file as
//! [`Error::Format`](crate::Error::Format), never by panicking or by
//! allocating what a header claims without checking it against the file.

pub mod labels;
pub mod load;
pub mod npy;
pub mod onnx;
pub mod safetensors;
pub mod tfjs;
pub mod tflite;
pub mod torch;

pub use load::load_model;

use crate::model::MobileNet;

/// A network read from a file, with what the file says about using it.
#[derive(Clone, Debug)]
pub struct LoadedModel {
    /// The network, as float weights (quantized files are dequantized).
    pub net: MobileNet,
    /// What else the file told us.
    pub metadata: ModelMetadata,
}

/// What a model file says besides its weights.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelMetadata {
    /// A name for the model, e.g. `mobilenet_v1_0.25_224`.
    pub name: Option<String>,
    /// The input preprocessing the weights were trained with: `tf` or
    /// `torch` (see [`crate::image`]).
    pub preprocess: Option<String>,
    /// Class names, index by index, if the file carries them.
    pub labels: Option<Vec<String>>,
    /// The format the model was read from (`tflite`, `tfjs`, ...).
    pub source_format: String,
}
