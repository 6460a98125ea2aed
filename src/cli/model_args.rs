//! Choosing a model file: a path, a catalogue name (fetched into the cache
//! when missing), or the default model.

use std::path::{Path, PathBuf};

use mobilenet::Result;
use mobilenet::fetch::{self, FetchOptions};
use mobilenet::formats::{LoadedModel, load_model};

/// The model `classify` uses when none is given.
pub const DEFAULT_MODEL: &str = "mobilenet_v1_1.0_224";

#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// Model file (.tflite, .safetensors, .onnx, TF.js model.json or its
    /// folder) or a published model's name (see `mobilenet fetch --list`).
    #[arg(long)]
    pub model: Option<String>,
    /// Second file of a two-part TFLite model (the classification head).
    #[arg(long)]
    pub head: Option<PathBuf>,
    /// Cache folder for fetched models.
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

impl ModelArgs {
    /// Loads the model: an existing path as is, otherwise a catalogue name,
    /// fetched into the cache first if needed.
    pub fn load(&self) -> Result<LoadedModel> {
        load_model(&self.resolve()?, self.head.as_deref())
    }

    /// The model file: an existing path as is, otherwise a catalogue name's
    /// file in the cache, fetched first if needed.
    pub fn resolve(&self) -> Result<PathBuf> {
        let name = self.model.as_deref().unwrap_or(DEFAULT_MODEL);
        let path = Path::new(name);
        if path.exists() {
            return Ok(path.to_path_buf());
        }
        let entry = fetch::find(name)?;
        let cache = match &self.cache {
            Some(dir) => dir.clone(),
            None => fetch::default_cache_dir()?,
        };
        fetch::fetch(entry, &cache, &FetchOptions::default())
    }
}
