//! `mobilenet classify`: ImageNet (or any) labels for photos.

use std::path::PathBuf;

use rayon::prelude::*;
use serde_json::json;

use crate::cli::model_args::ModelArgs;
use mobilenet::engine::{Parallelism, Plan, PlanOptions, Workspace};
use mobilenet::formats::labels::read_labels;
use mobilenet::image::{Preprocess, preprocess_into, read_image};
use mobilenet::layers::softmax;
use mobilenet::{Error, Result, Tensor};

/// Images per engine run.
const BATCH: usize = 8;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Labels file: one per line, or a TF.js metadata.json (default: the
    /// model's own labels, if it carries them).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Preprocessing recipe (default: what the model's metadata says, else tf).
    #[arg(long)]
    preprocess: Option<Preprocess>,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// One JSON object per image per line.
    #[arg(long)]
    json: bool,
    /// Include all pre-softmax logits in the JSON output.
    #[arg(long, requires = "json")]
    logits: bool,
    /// Threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The images (JPEG, PNG, BMP).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

pub fn run(args: &Args) -> Result<()> {
    if let Some(path) = args.model.model.as_deref().map(std::path::Path::new)
        && mobilenet::quant::ptq::file::is_quantized_path(path)
    {
        return run_int8(args, &mobilenet::quant::ptq::file::load(path)?);
    }
    let loaded = args.model.load()?;
    let labels = match &args.labels {
        Some(path) => Some(read_labels(path)?),
        None => loaded.metadata.labels.clone(),
    };
    let recipe = match args.preprocess {
        Some(recipe) => recipe,
        None => match loaded.metadata.preprocess.as_deref() {
            Some(name) => name.parse()?,
            None => Preprocess::Tf,
        },
    };
    let plan = Plan::compile(&loaded.net, &PlanOptions::default())?;
    let classes = plan.classes();
    if let Some(labels) = &labels
        && labels.len() != classes
    {
        return Err(Error::InvalidConfig(format!(
            "{} labels for a model with {classes} classes",
            labels.len()
        )));
    }
    let par = Parallelism::new(args.threads)?;
    let mut workspace = Workspace::new(&plan, &par);
    let size = plan.input_shape()[0];
    let in_len = plan.input_len();
    let mut failures = 0;
    for paths in args.images.chunks(BATCH) {
        // Decode and preprocess the batch in parallel; a bad image is
        // reported and skipped, the others go on.
        let inputs: Vec<Result<Vec<f32>>> = par.install(|| {
            paths
                .par_iter()
                .map(|path| {
                    let image = read_image(path)?;
                    let mut input = vec![0.0; in_len];
                    preprocess_into(&image, size, recipe, &mut input)?;
                    Ok(input)
                })
                .collect()
        });
        let mut good = Vec::new();
        let mut batch = Vec::new();
        for (path, input) in paths.iter().zip(inputs) {
            match input {
                Ok(input) => {
                    batch.extend_from_slice(&input);
                    good.push(path);
                }
                Err(err) => {
                    failures += 1;
                    eprintln!("error: {err}");
                }
            }
        }
        let mut logits = vec![0.0; good.len() * classes];
        plan.run(&batch, good.len(), &mut logits, &mut workspace, &par)?;
        for (path, row) in good.iter().zip(logits.chunks(classes)) {
            print_result(args, path, row, labels.as_deref())?;
        }
    }
    if failures > 0 {
        return Err(Error::Image(format!(
            "{failures} of {} images could not be read",
            args.images.len()
        )));
    }
    Ok(())
}

fn print_result(
    args: &Args,
    path: &std::path::Path,
    logits: &[f32],
    labels: Option<&[String]>,
) -> Result<()> {
    let probs = softmax(&Tensor::new(vec![1, logits.len()], logits.to_vec())?)?.into_data();
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    order.truncate(args.top);
    let label = |i: usize| labels.map_or_else(|| format!("class {i}"), |l| l[i].clone());
    if args.json {
        let top: Vec<_> = order
            .iter()
            .map(|&i| json!({"class": i, "label": label(i), "score": probs[i]}))
            .collect();
        let mut value = json!({"image": path.display().to_string(), "top": top});
        if args.logits {
            value["logits"] = json!(logits);
        }
        println!("{value}");
    } else {
        println!("{}", path.display());
        for (rank, &i) in order.iter().enumerate() {
            println!(
                "  {}. {:>6.2} %  {:>4}  {}",
                rank + 1,
                100.0 * probs[i],
                i,
                label(i)
            );
        }
    }
    Ok(())
}

/// `classify` with an int8 model from `mobilenet quantize`: its exact
/// integer executor, one image at a time.
fn run_int8(args: &Args, model: &mobilenet::quant::ptq::Int8MobileNet) -> Result<()> {
    let labels = match &args.labels {
        Some(path) => Some(read_labels(path)?),
        None => model.metadata.labels.clone(),
    };
    if let Some(labels) = &labels
        && labels.len() != model.classes()
    {
        return Err(Error::InvalidConfig(format!(
            "{} labels for a model with {} classes",
            labels.len(),
            model.classes()
        )));
    }
    let recipe = match (args.preprocess, model.metadata.preprocess.as_deref()) {
        (Some(recipe), _) => recipe,
        (None, Some(name)) => name.parse()?,
        (None, None) => Preprocess::Tf,
    };
    let size = model.resolution();
    let mut failures = 0;
    for path in &args.images {
        let logits = read_image(path).and_then(|image| {
            let mut input = vec![0.0; model.input_len()];
            preprocess_into(&image, size, recipe, &mut input)?;
            model.run(&input, 1)
        });
        match logits {
            Ok(logits) => print_result(args, path, &logits, labels.as_deref())?,
            Err(err) => {
                failures += 1;
                eprintln!("error: {err}");
            }
        }
    }
    if failures > 0 {
        return Err(Error::Image(format!(
            "{failures} of {} images could not be read",
            args.images.len()
        )));
    }
    Ok(())
}
