//! `mobilenet quantize`: post-training int8 quantization of a float model
//! (see [`mobilenet::quant::ptq`]), with an optional float-vs-int8 check.

use std::path::{Path, PathBuf};

use crate::cli::model_args::ModelArgs;
use mobilenet::data::{
    Augment, Crop, Loader, LoaderConfig, Normalize, Source, SourceKind, Split, open_dataset,
};
use mobilenet::engine::{Parallelism, Plan, PlanOptions, Workspace};
use mobilenet::formats::LoadedModel;
use mobilenet::image::{Preprocess, preprocess_into, read_image};
use mobilenet::quant::plan::QuantizedPlanOptions;
use mobilenet::quant::ptq::plan::Int8Plan;
use mobilenet::quant::ptq::{CalibrationMethod, Int8MobileNet, QuantizeOptions, file};
use mobilenet::train::evaluate::evaluate;
use mobilenet::{Error, Result, Tensor};

/// Images per calibration batch of the float network.
const CALIBRATION_BATCH: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// The observed min and max of each activation.
    Minmax,
    /// The --percentile-th (and 100 - it) percentiles.
    Percentile,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Calibration images: photo files, an image folder, an IDX images file
    /// or a folder of MNIST-style IDX files (its train-* split).
    #[arg(long, required = true, num_args = 1..)]
    calibrate: Vec<PathBuf>,
    /// Where to write the int8 model (our safetensors format).
    #[arg(long)]
    out: PathBuf,
    /// How many calibration images to run.
    #[arg(long, default_value_t = 100)]
    calibration_images: usize,
    /// How activation ranges are chosen.
    #[arg(long, value_enum, default_value_t = Method::Minmax)]
    method: Method,
    /// The percentile of --method percentile, in (50, 100].
    #[arg(long, default_value_t = 99.99)]
    percentile: f64,
    /// Compare float and int8 top-1: a labelled dataset (image folder, IDX
    /// file or MNIST-style folder: its t10k-* split), or photo files.
    #[arg(long, num_args = 1..)]
    eval: Vec<PathBuf>,
    /// Preprocessing (default: what the model's metadata says, else tf).
    #[arg(long)]
    preprocess: Option<Preprocess>,
    /// Threads for the evaluation.
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(args: &Args) -> Result<()> {
    if args.calibration_images == 0 {
        return Err(Error::InvalidConfig(
            "--calibration-images must be at least 1".into(),
        ));
    }
    let method = match args.method {
        Method::Minmax => CalibrationMethod::MinMax,
        Method::Percentile => CalibrationMethod::Percentile(args.percentile),
    }
    .validate()?;
    let loaded = args.model.load()?;
    let preprocess = match args.preprocess {
        Some(p) => p,
        None => match loaded.metadata.preprocess.as_deref() {
            Some(name) => name.parse()?,
            None => Preprocess::Tf,
        },
    };
    let calibration = calibration_batches(
        &loaded,
        &args.calibrate,
        args.calibration_images,
        preprocess,
    )?;
    let images: usize = calibration.iter().map(|t| t.shape()[0]).sum();
    let model = Int8MobileNet::quantize(
        &loaded.net,
        &loaded.metadata,
        &calibration,
        &QuantizeOptions { method },
    )?;
    file::save(&model, &args.out)?;
    println!(
        "quantized {} layers to int8 ({} calibration, {images} images) -> {}",
        model.convs.len() + 1,
        model.calibration,
        args.out.display()
    );
    if !args.eval.is_empty() {
        let threads = args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let par = Parallelism::new(threads)?;
        compare(&loaded, &model, &args.eval, preprocess, &par)?;
    }
    Ok(())
}

/// A dataset when `paths` is one folder or one IDX file, else photos.
fn open_inputs(paths: &[PathBuf], split: Split) -> Result<Option<Source>> {
    match paths {
        [one] if one.is_dir() || one.to_string_lossy().contains("images-idx3") => {
            open_dataset(one, split).map(Some)
        }
        _ => Ok(None),
    }
}

/// The evaluation transform `eval` uses for a dataset of `kind`.
fn eval_augment(kind: SourceKind, size: usize, preprocess: Preprocess) -> Augment {
    let normalize = match preprocess {
        Preprocess::Torch => Normalize::Torch,
        Preprocess::Tf => Normalize::Tf,
    };
    match kind {
        SourceKind::Idx => Augment::eval_pad(size, normalize),
        SourceKind::Folder => Augment {
            size,
            crop: Crop::Center(preprocess),
            flip: false,
            erase: None,
            normalize,
        },
    }
}

/// Up to `limit` preprocessed calibration images, in batches.
fn calibration_batches(
    loaded: &LoadedModel,
    paths: &[PathBuf],
    limit: usize,
    preprocess: Preprocess,
) -> Result<Vec<Tensor>> {
    let size = loaded.net.config().resolution;
    let mut batches = Vec::new();
    if let Some(source) = open_inputs(paths, Split::Train)? {
        // A spread of classes: a seeded shuffle, not the first images.
        let loader = Loader::new(
            source.dataset.clone(),
            eval_augment(source.kind, size, preprocess),
            LoaderConfig {
                batch_size: CALIBRATION_BATCH.min(limit),
                shuffle: true,
                seed: 0,
                workers: 1,
                ..Default::default()
            },
        )?;
        let mut taken = 0;
        for batch in loader.epoch(0) {
            let batch = batch?;
            let n = batch.len().min(limit - taken);
            let mut shape = batch.shape;
            shape[0] = n;
            let values: usize = shape.iter().product();
            batches.push(Tensor::new(
                shape.to_vec(),
                batch.images[..values].to_vec(),
            )?);
            taken += n;
            if taken == limit {
                break;
            }
        }
    } else {
        let photos = &paths[..paths.len().min(limit)];
        for chunk in photos.chunks(CALIBRATION_BATCH) {
            let mut values = Vec::new();
            for path in chunk {
                values.extend(read_photo(path, size, preprocess)?);
            }
            batches.push(Tensor::new(vec![chunk.len(), size, size, 3], values)?);
        }
    }
    if batches.is_empty() {
        return Err(Error::Data("no calibration images".into()));
    }
    Ok(batches)
}

fn read_photo(path: &Path, size: usize, preprocess: Preprocess) -> Result<Vec<f32>> {
    let image = read_image(path)?;
    let mut input = vec![0.0; size * size * 3];
    preprocess_into(&image, size, preprocess, &mut input)?;
    Ok(input)
}

/// Index of the largest logit (the first on ties).
fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}

/// Float vs int8 top-1 on a dataset, or per photo; the int8 side on the
/// fast integer plan.
fn compare(
    loaded: &LoadedModel,
    model: &Int8MobileNet,
    paths: &[PathBuf],
    preprocess: Preprocess,
    par: &Parallelism,
) -> Result<()> {
    let size = model.resolution();
    let classes = model.classes();
    let int8_plan = Int8Plan::compile(model, &QuantizedPlanOptions::default())?;
    let mut int8_ws = int8_plan.workspace(par);
    let mut int8_logits = |images: &[f32]| -> Result<Vec<f32>> {
        let mut codes = vec![0; images.len()];
        int8_plan.quantize_input(images, &mut codes)?;
        let n = images.len() / int8_plan.input_len().max(1);
        let mut logits = vec![0.0; n * classes];
        int8_plan.run(&codes, n, &mut logits, &mut int8_ws, par)?;
        Ok(logits)
    };
    let Some(source) = open_inputs(paths, Split::Test)? else {
        let plan = Plan::compile(&loaded.net, &PlanOptions::default())?;
        let mut ws = Workspace::new(&plan, par);
        let label = |i: usize| {
            loaded
                .metadata
                .labels
                .as_ref()
                .map_or_else(|| format!("class {i}"), |l| format!("{i} {}", l[i]))
        };
        let mut agree = 0;
        for path in paths {
            let input = read_photo(path, size, preprocess)?;
            let mut float = vec![0.0; classes];
            plan.run(&input, 1, &mut float, &mut ws, par)?;
            let int8 = int8_logits(&input)?;
            let (f, q) = (argmax(&float), argmax(&int8));
            agree += usize::from(f == q);
            println!(
                "{}: float top-1 {}, int8 top-1 {}{}",
                path.display(),
                label(f),
                label(q),
                if f == q { "" } else { "  (differs)" }
            );
        }
        println!(
            "int8 agrees with float on {agree} of {} photos",
            paths.len()
        );
        return Ok(());
    };
    if source.dataset.classes() != classes {
        return Err(Error::InvalidConfig(format!(
            "the evaluation data has {} classes, the model {classes}",
            source.dataset.classes()
        )));
    }
    let loader = Loader::new(
        source.dataset.clone(),
        eval_augment(source.kind, size, preprocess),
        LoaderConfig {
            batch_size: 64,
            shuffle: false,
            workers: 2,
            ..Default::default()
        },
    )?;
    let float = evaluate(&loaded.net, &loader, par)?;
    let (mut right, mut total) = (0usize, 0usize);
    for batch in loader.epoch(0) {
        let batch = batch?;
        let logits = int8_logits(&batch.images)?;
        for (row, &label) in logits.chunks_exact(classes).zip(&batch.labels) {
            right += usize::from(argmax(row) == label);
            total += 1;
        }
    }
    if total == 0 {
        return Err(Error::Data("the evaluation data has no images".into()));
    }
    let int8_top1 = right as f64 / total as f64;
    println!(
        "{total} images: float top-1 {:.2} %, int8 top-1 {:.2} %, change {:+.2} points",
        float.top1 * 100.0,
        int8_top1 * 100.0,
        (int8_top1 - float.top1) * 100.0
    );
    Ok(())
}
