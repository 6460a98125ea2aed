//! `mobilenet features`: the activations of any named layer, as `.npy`
//! files (feature extraction, like Keras `include_top=False` or TF-slim's
//! end points).

use std::path::PathBuf;

use crate::cli::model_args::ModelArgs;
use mobilenet::formats::npy::encode_f32;
use mobilenet::image::{Preprocess, preprocess, read_image};
use mobilenet::{Error, Result, Tensor};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The layer whose output to write, e.g. conv_pw_13 or global_pool
    /// (`mobilenet summary` lists the names).
    #[arg(long)]
    layer: String,
    /// Folder for the .npy files (default: beside each image).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Preprocessing recipe (default: the model's, else tf).
    #[arg(long)]
    preprocess: Option<Preprocess>,
    /// The images.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

pub fn run(args: &Args) -> Result<()> {
    let loaded = args.model.load()?;
    let net = &loaded.net;
    if net.architecture().layer(&args.layer).is_none() || args.layer == "softmax" {
        let names: Vec<_> = net
            .architecture()
            .layers()
            .iter()
            .map(|l| l.name.as_str())
            .filter(|n| *n != "softmax")
            .collect();
        return Err(Error::InvalidConfig(format!(
            "no layer '{}' (choose one of {})",
            args.layer,
            names.join(", ")
        )));
    }
    let recipe = match (args.preprocess, loaded.metadata.preprocess.as_deref()) {
        (Some(recipe), _) => recipe,
        (None, Some(name)) => name.parse()?,
        (None, None) => Preprocess::Tf,
    };
    let size = net.config().resolution;
    for path in &args.images {
        let input = preprocess(&read_image(path)?, size, recipe)?;
        let mut features: Option<Tensor> = None;
        net.forward_traced(&input, |spec, out| {
            if spec.name == args.layer {
                features = Some(out.clone());
            }
        })?;
        let features = features.ok_or_else(|| {
            Error::InvalidConfig(format!("layer '{}' produced no output", args.layer))
        })?;
        // Drop the batch dimension of one image.
        let shape = &features.shape()[1..];
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        let file = format!("{stem}.{}.npy", args.layer);
        let target = match &args.out {
            Some(dir) => dir.join(file),
            None => path.with_file_name(file),
        };
        std::fs::write(&target, encode_f32(shape, features.data())).map_err(|source| {
            Error::Io {
                path: target.display().to_string(),
                source,
            }
        })?;
        println!("{} {:?} -> {}", path.display(), shape, target.display());
    }
    Ok(())
}
