//! `mobilenet convert`: any model we read into our format or ONNX.

use std::path::PathBuf;

use crate::cli::model_args::ModelArgs;
use mobilenet::formats::labels::read_labels;
use mobilenet::formats::onnx::{OnnxExportOptions, export_onnx};
use mobilenet::formats::safetensors::save_model;
use mobilenet::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model to read (any format `classify` reads).
    input: String,
    /// Where to write: `.onnx` for ONNX, anything else for our safetensors format.
    output: PathBuf,
    /// Second file of a two-part TFLite model.
    #[arg(long)]
    head: Option<PathBuf>,
    /// Labels to store in the output.
    #[arg(long)]
    labels: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<()> {
    let input = std::path::Path::new(&args.input);
    if mobilenet::quant::ptq::file::is_quantized_path(input) {
        return convert_int8(args, input);
    }
    let model_args = ModelArgs {
        model: Some(args.input.clone()),
        head: args.head.clone(),
        cache: None,
    };
    let mut loaded = model_args.load()?;
    if let Some(path) = &args.labels {
        loaded.metadata.labels = Some(read_labels(path)?);
    }
    if args.output.extension().is_some_and(|e| e == "onnx") {
        let bytes = export_onnx(&loaded.net, &loaded.metadata, &OnnxExportOptions::default())?;
        std::fs::write(&args.output, bytes).map_err(|source| Error::Io {
            path: args.output.display().to_string(),
            source,
        })?;
    } else {
        save_model(&loaded, &args.output)?;
    }
    println!("{} -> {}", args.input, args.output.display());
    Ok(())
}

/// An int8 model from `mobilenet quantize`: only to QDQ ONNX.
fn convert_int8(args: &Args, input: &std::path::Path) -> Result<()> {
    if args.output.extension().is_none_or(|e| e != "onnx") {
        return Err(Error::InvalidConfig(
            "an int8 model converts only to ONNX (an .onnx output)".into(),
        ));
    }
    let mut model = mobilenet::quant::ptq::file::load(input)?;
    if let Some(path) = &args.labels {
        let labels = read_labels(path)?;
        if labels.len() != model.classes() {
            return Err(Error::InvalidConfig(format!(
                "{} labels for a model with {} classes",
                labels.len(),
                model.classes()
            )));
        }
        model.metadata.labels = Some(labels);
    }
    let bytes = mobilenet::formats::onnx::export_onnx_int8(&model)?;
    std::fs::write(&args.output, bytes).map_err(|source| Error::Io {
        path: args.output.display().to_string(),
        source,
    })?;
    println!("{} -> {} (int8 QDQ)", args.input, args.output.display());
    Ok(())
}
