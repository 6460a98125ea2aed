//! `mobilenet classify`: ImageNet (or any) labels for photos.

use std::path::PathBuf;

use rayon::prelude::*;
use serde_json::json;

use crate::cli::model_args::ModelArgs;
use crate::cli::quantized::{self, QuantizedEngine, QuantizedModel};
use mobilenet::engine::{Parallelism, Plan, PlanOptions, Workspace};
use mobilenet::formats::labels::read_labels;
use mobilenet::image::{Preprocess, RgbImage, preprocess_into, read_image};
use mobilenet::layers::softmax;
use mobilenet::quant::plan::QuantizedPlanOptions;
use mobilenet::quant::ptq::Int8MobileNet;
use mobilenet::quant::ptq::plan::Int8Plan;
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
    /// Include all pre-softmax logits in the JSON output (for a uint8
    /// model: the dequantized input of its softmax).
    #[arg(long, requires = "json")]
    logits: bool,
    /// Threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[arg(long, help = quantized::DEQUANTIZE_HELP)]
    dequantize: bool,
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
    match quantized::open(&args.model, args.dequantize)? {
        Some(model) => run_quantized(args, model),
        None => run_float(args),
    }
}

/// The labels to print: `--labels`, else the model's own, checked against
/// the number of classes.
fn choose_labels(
    args: &Args,
    own: Option<Vec<String>>,
    classes: usize,
) -> Result<Option<Vec<String>>> {
    let labels = match &args.labels {
        Some(path) => Some(read_labels(path)?),
        None => own,
    };
    if let Some(labels) = &labels
        && labels.len() != classes
    {
        return Err(Error::InvalidConfig(format!(
            "{} labels for a model with {classes} classes",
            labels.len()
        )));
    }
    Ok(labels)
}

/// Decodes and preprocesses a batch of images in parallel with `fill`; a
/// bad image is reported and skipped, the others go on. Returns the good
/// paths, their inputs one after the other, and the number of failures.
fn read_batch<'a, T: Clone + Default + Send>(
    paths: &'a [PathBuf],
    par: &Parallelism,
    in_len: usize,
    fill: impl Fn(&RgbImage, &mut [T]) -> Result<()> + Sync,
) -> (Vec<&'a PathBuf>, Vec<T>, usize) {
    let inputs: Vec<Result<Vec<T>>> = par.install(|| {
        paths
            .par_iter()
            .map(|path| {
                let image = read_image(path)?;
                let mut input = vec![T::default(); in_len];
                fill(&image, &mut input)?;
                Ok(input)
            })
            .collect()
    });
    let mut good = Vec::new();
    let mut batch = Vec::new();
    let mut failures = 0;
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
    (good, batch, failures)
}

fn unreadable(failures: usize, total: usize) -> Result<()> {
    if failures > 0 {
        return Err(Error::Image(format!(
            "{failures} of {total} images could not be read"
        )));
    }
    Ok(())
}

/// The float path: any model format, uint8 files dequantized.
fn run_float(args: &Args) -> Result<()> {
    let loaded = args.model.load()?;
    let recipe = match args.preprocess {
        Some(recipe) => recipe,
        None => match loaded.metadata.preprocess.as_deref() {
            Some(name) => name.parse()?,
            None => Preprocess::Tf,
        },
    };
    let plan = Plan::compile(&loaded.net, &PlanOptions::default())?;
    let classes = plan.classes();
    let labels = choose_labels(args, loaded.metadata.labels.clone(), classes)?;
    let par = Parallelism::new(args.threads)?;
    let mut workspace = Workspace::new(&plan, &par);
    let size = plan.input_shape()[0];
    let in_len = plan.input_len();
    let mut failures = 0;
    for paths in args.images.chunks(BATCH) {
        let (good, batch, failed) = read_batch(paths, &par, in_len, |image, input| {
            preprocess_into(image, size, recipe, input)
        });
        failures += failed;
        let mut logits = vec![0.0; good.len() * classes];
        plan.run(&batch, good.len(), &mut logits, &mut workspace, &par)?;
        for (path, row) in good.iter().zip(logits.chunks(classes)) {
            let probs = softmax(&Tensor::new(vec![1, row.len()], row.to_vec())?)?.into_data();
            print_result(args, path, &probs, row, labels.as_deref(), "float32");
        }
    }
    unreadable(failures, args.images.len())
}

/// The integer path: a uint8 TFLite model run as TFLite runs it; scores and
/// logits are the dequantized uint8 outputs.
fn run_quantized(args: &Args, model: QuantizedModel) -> Result<()> {
    let recipe = args.preprocess.unwrap_or(Preprocess::Tf);
    let classes = quantized::classes(&model.pipeline)?;
    let labels = choose_labels(args, model.labels, classes)?;
    let par = Parallelism::new(args.threads)?;
    let mut engine = QuantizedEngine::new(model.pipeline, None, &par)?;
    let input_spec = engine.input().clone();
    let (probs_params, logits_params) = match engine.logits_spec() {
        Some(logits) => (engine.output().params, logits.params),
        None => return Err(Error::InvalidConfig("the model has no softmax".into())),
    };
    let in_len = engine.input_len();
    let mut failures = 0;
    for paths in args.images.chunks(BATCH) {
        let (good, batch, failed) = read_batch(paths, &par, in_len, |image, input| {
            quantized::image_input(image, &input_spec, recipe, input)
        });
        failures += failed;
        if good.is_empty() {
            continue;
        }
        let mut probs = vec![0u8; good.len() * classes];
        engine.run(&batch, good.len(), &mut probs, &par)?;
        let logits = engine.logits();
        for (k, path) in good.iter().enumerate() {
            let row = k * classes..(k + 1) * classes;
            let p: Vec<f32> = probs[row.clone()]
                .iter()
                .map(|&q| probs_params.dequantize(q))
                .collect();
            let l: Vec<f32> = logits[row]
                .iter()
                .map(|&q| logits_params.dequantize(q))
                .collect();
            print_result(args, path, &p, &l, labels.as_deref(), "uint8");
        }
    }
    unreadable(failures, args.images.len())
}

fn print_result(
    args: &Args,
    path: &std::path::Path,
    probs: &[f32],
    logits: &[f32],
    labels: Option<&[String]>,
    dtype: &str,
) {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    order.truncate(args.top);
    let label = |i: usize| labels.map_or_else(|| format!("class {i}"), |l| l[i].clone());
    if args.json {
        let top: Vec<_> = order
            .iter()
            .map(|&i| json!({"class": i, "label": label(i), "score": probs[i]}))
            .collect();
        let mut value = json!({
            "image": path.display().to_string(),
            "top": top,
            "quantized": dtype != "float32",
            "dtype": dtype,
        });
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
}

/// `classify` with an int8 model from `mobilenet quantize`, on its fast
/// integer plan (the logits of its exact executor, bit for bit).
fn run_int8(args: &Args, model: &Int8MobileNet) -> Result<()> {
    let labels = choose_labels(args, model.metadata.labels.clone(), model.classes())?;
    let recipe = match (args.preprocess, model.metadata.preprocess.as_deref()) {
        (Some(recipe), _) => recipe,
        (None, Some(name)) => name.parse()?,
        (None, None) => Preprocess::Tf,
    };
    let size = model.resolution();
    let par = Parallelism::new(args.threads)?;
    let plan = Int8Plan::compile(model, &QuantizedPlanOptions::default())?;
    let mut workspace = plan.workspace(&par);
    let (in_len, classes) = (plan.input_len(), plan.classes());
    let mut failures = 0;
    for paths in args.images.chunks(BATCH) {
        let (good, batch, failed) = read_batch(paths, &par, in_len, |image, codes| {
            let mut input = vec![0.0; in_len];
            preprocess_into(image, size, recipe, &mut input)?;
            plan.quantize_input(&input, codes)
        });
        failures += failed;
        if good.is_empty() {
            continue;
        }
        let mut logits = vec![0.0; good.len() * classes];
        plan.run(&batch, good.len(), &mut logits, &mut workspace, &par)?;
        for (path, row) in good.iter().zip(logits.chunks(classes)) {
            let probs = softmax(&Tensor::new(vec![1, row.len()], row.to_vec())?)?.into_data();
            print_result(args, path, &probs, row, labels.as_deref(), "int8");
        }
    }
    unreadable(failures, args.images.len())
}
