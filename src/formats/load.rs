//! Opening a model file of any format we read, recognised by its content
//! (and, where content cannot tell, by its name).

use std::path::Path;

use crate::error::{Error, Result};
use crate::formats::{LoadedModel, onnx, safetensors, tfjs, tflite, torch};

/// Largest model file we read into memory (MobileNet v1 1.0 is 17 MB as f32).
pub const MAX_MODEL_BYTES: u64 = 1 << 30;

/// Reads a model from `path`: a `.tflite` file (float or uint8), our
/// safetensors format, a PyTorch state_dict saved as safetensors, an `.onnx`
/// file, or a TF.js layers model (`model.json` or the folder holding it).
/// `head` is the second file of a TFLite model shipped in two parts
/// (embedding extractor + classification head).
pub fn load_model(path: &Path, head: Option<&Path>) -> Result<LoadedModel> {
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        return tfjs::load_tfjs(&path.join("model.json"));
    }
    if path.extension().is_some_and(|e| e == "json") {
        return tfjs::load_tfjs(path);
    }
    let bytes = read_bounded(path)?;
    if let Some(head) = head {
        if !is_tflite(&bytes) {
            return Err(Error::InvalidConfig(
                "--head goes with a TFLite embedding extractor".into(),
            ));
        }
        return tflite::load_tflite_with_head(&bytes, &read_bounded(head)?);
    }
    if is_tflite(&bytes) {
        tflite::load_tflite(&bytes)
    } else if is_safetensors(&bytes) {
        if safetensors::is_model_file(&bytes) {
            safetensors::from_bytes(&bytes)
        } else {
            torch::load_torch_safetensors(&bytes, None)
        }
    } else if path.extension().is_some_and(|e| e == "onnx") {
        onnx::load_onnx(&bytes)
    } else {
        Err(Error::Format(format!(
            "{}: not a model file we recognise (TFLite, safetensors, .onnx, TF.js model.json)",
            path.display()
        )))
    }
}

/// The whole file, refusing files over [`MAX_MODEL_BYTES`].
pub fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_MODEL_BYTES {
        return Err(Error::Format(format!(
            "{}: {len} bytes is more than any MobileNet needs (limit {MAX_MODEL_BYTES})",
            path.display()
        )));
    }
    std::fs::read(path).map_err(io)
}

/// TFLite flatbuffers carry the file identifier `TFL3` at bytes 4..8.
fn is_tflite(bytes: &[u8]) -> bool {
    bytes.get(4..8) == Some(b"TFL3")
}

/// Safetensors files start with a little-endian u64 header length and a
/// JSON object.
fn is_safetensors(bytes: &[u8]) -> bool {
    let Some(len) = bytes.get(..8) else {
        return false;
    };
    let len = u64::from_le_bytes(len.try_into().unwrap_or_default());
    len > 0 && len <= bytes.len() as u64 - 8 && bytes.get(8) == Some(&b'{')
}
