//! `mobilenet features`: the activations of any named layer, as `.npy`
//! files (feature extraction, like Keras `include_top=False` or TF-slim's
//! end points).

use std::path::{Path, PathBuf};

use crate::cli::model_args::ModelArgs;
use crate::cli::quantized;
use mobilenet::formats::npy::encode_f32;
use mobilenet::image::{Preprocess, preprocess, read_image};
use mobilenet::quant::QuantizedPipeline;
use mobilenet::{Error, Result, Tensor};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The layer whose output to write, e.g. conv_pw_13 or global_pool
    /// (`mobilenet summary` lists the names); for a uint8 TFLite model also
    /// any op's output tensor name.
    #[arg(long)]
    layer: String,
    /// Folder for the .npy files (default: beside each image).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Preprocessing recipe (default: the model's, else tf).
    #[arg(long)]
    preprocess: Option<Preprocess>,
    #[arg(long, help = quantized::DEQUANTIZE_HELP)]
    dequantize: bool,
    /// The images.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

pub fn run(args: &Args) -> Result<()> {
    if let Some(model) = quantized::open(&args.model, args.dequantize)? {
        return run_quantized(args, &model.pipeline);
    }
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
        write_npy(args, path, shape, features.data())?;
    }
    Ok(())
}

/// Writes one image's features beside it or into `--out`, named
/// `<image stem>.<layer>.npy` (a TFLite tensor name's `/` become `_`).
fn write_npy(args: &Args, path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let file = format!("{stem}.{}.npy", args.layer.replace(['/', '\\'], "_"));
    let target = match &args.out {
        Some(dir) => dir.join(file),
        None => path.with_file_name(file),
    };
    std::fs::write(&target, encode_f32(shape, data)).map_err(|source| Error::Io {
        path: target.display().to_string(),
        source,
    })?;
    println!("{} {:?} -> {}", path.display(), shape, target.display());
    Ok(())
}

/// A uint8 model: the dequantized output of the op named `--layer`, by its
/// tensor name or by our layer name (`conv_pw_13`, `global_pool`, ...).
fn run_quantized(args: &Args, pipeline: &QuantizedPipeline) -> Result<()> {
    let ops: Vec<(&str, &str)> = pipeline
        .stages()
        .iter()
        .flat_map(|s| s.ops().map(|(kind, spec)| (kind, spec.name.as_str())))
        .collect();
    let kinds: Vec<&str> = ops.iter().map(|(kind, _)| *kind).collect();
    let aliases = quantized::layer_aliases(&kinds);
    let wanted = ops.iter().zip(&aliases).position(|((kind, name), alias)| {
        *kind != "SOFTMAX" && (*name == args.layer || alias.as_deref() == Some(&args.layer))
    });
    let Some(index) = wanted else {
        let names: Vec<&str> = aliases
            .iter()
            .flatten()
            .map(String::as_str)
            .chain(ops.iter().filter(|(k, _)| *k != "SOFTMAX").map(|(_, n)| *n))
            .collect();
        return Err(Error::InvalidConfig(format!(
            "no layer '{}' (choose one of {})",
            args.layer,
            names.join(", ")
        )));
    };
    let recipe = args.preprocess.unwrap_or(Preprocess::Tf);
    let input_spec = pipeline.input();
    for path in &args.images {
        let image = read_image(path)?;
        let mut input = vec![0u8; input_spec.numel()];
        quantized::image_input(&image, input_spec, recipe, &mut input)?;
        let mut trace = pipeline.run_traced(&input)?;
        if index >= trace.len() {
            return Err(Error::Shape(format!(
                "layer '{}' produced no output",
                args.layer
            )));
        }
        let features = trace.swap_remove(index);
        // Drop the batch dimension of one image.
        let shape = features.spec.shape.get(1..).unwrap_or_default();
        write_npy(args, path, shape, &features.dequantize())?;
    }
    Ok(())
}
