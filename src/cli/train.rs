//! `mobilenet train`: train from scratch or fine-tune, with a progress bar,
//! per-epoch checkpoints, metrics.csv and curves.png in the run directory,
//! and `--resume DIR` to continue a run exactly where it stopped.

use std::path::PathBuf;
use std::sync::Arc;

use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::cli::summary::strides_arg;
use mobilenet::data::{
    Augment, Crop, Dataset, Loader, LoaderConfig, Normalize, RandomErase, Source, SourceKind,
    Split, check_same_classes, open_dataset, train_val_split,
};
use mobilenet::engine::Parallelism;
use mobilenet::formats::{ModelMetadata, load_model};
use mobilenet::image::Preprocess;
use mobilenet::model::network::Classifier;
use mobilenet::model::{Architecture, MobileNet, MobileNetConfig};
use mobilenet::train::metrics::EpochMetrics;
use mobilenet::train::network::StepOptions;
use mobilenet::train::optim::{OptimizerConfig, RmsPropConfig, SgdConfig, WeightDecay};
use mobilenet::train::schedule::Schedule;
use mobilenet::train::trainer::{
    BEST_FILE, CURVES_FILE, Progress, STATE_FILE, TrainOptions, load_resume, train,
};
use mobilenet::{Error, Result, Tensor};

/// The file in the run directory holding the options the run started with.
const RUN_FILE: &str = "run.json";
/// Epochs when --epochs is not given.
const DEFAULT_EPOCHS: usize = 10;

/// The optimizers `--optimizer` offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerArg {
    /// TF's RMSprop, the paper's (decay 0.9, momentum 0.9, epsilon 1.0).
    Rmsprop,
    /// SGD with momentum (PyTorch's).
    Sgd,
}

/// Input normalisations `--normalize` offers (the saved model records it
/// so that `classify` prepares photos the same way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormalizeArg {
    /// `q / 127.5 - 1`, as TF's MobileNets.
    Tf,
    /// ImageNet mean and standard deviation, as torchvision's.
    Torch,
}

/// Everything that defines a run: saved to run.json so that `--resume`
/// continues with exactly the same settings.
#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct RunArgs {
    /// Training data: an image folder (a sub-folder per class), an IDX
    /// images file, or a folder with MNIST-style train-*/t10k-* IDX files.
    #[arg(long, required_unless_present = "resume")]
    pub data: Option<PathBuf>,
    /// Validation data (same forms; an MNIST-style folder gives its t10k
    /// files). Without it, --val-split holds out part of --data.
    #[arg(long)]
    pub val: Option<PathBuf>,
    /// Fraction of --data held out for validation when --val is not given
    /// (0 = no validation; the best model is then the best training epoch).
    #[arg(long, default_value_t = 0.0)]
    pub val_split: f64,
    /// Fine-tune this model (any format `classify` reads); its classifier is
    /// replaced when the number of classes differs.
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// Train only the classifier, batch norm frozen (with --from).
    #[arg(long, requires = "from")]
    pub freeze_backbone: bool,
    /// Width multiplier α (from scratch).
    #[arg(long, default_value_t = 1.0)]
    pub alpha: f64,
    /// Input size in pixels (default: the IDX images' size, 224 for folders,
    /// the model's with --from).
    #[arg(long)]
    pub resolution: Option<usize>,
    /// Strides of the five downsampling layers, e.g. 1,2,2,2,2 for 28-32 px
    /// images (default: the paper's 2,2,2,2,2, or the model's with --from).
    #[arg(long, value_parser = strides_arg)]
    pub strides: Option<[usize; 5]>,
    /// Dropout before the classifier.
    #[arg(long, default_value_t = 0.001)]
    pub dropout: f32,
    /// Epochs in total [default: 10]; with --resume, extends the run.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Images per step.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Optimizer.
    #[arg(long, value_enum, default_value_t = OptimizerArg::Rmsprop)]
    pub optimizer: OptimizerArg,
    /// Learning rate (default 0.01 for rmsprop, 0.1 for sgd).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Momentum of either optimizer.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    /// L2 weight decay on conv and FC weights (none on BN and biases).
    #[arg(long, default_value_t = 4e-5)]
    pub weight_decay: f32,
    /// Also decay the depthwise filters (the paper advises against it).
    #[arg(long)]
    pub decay_depthwise: bool,
    /// Learning-rate schedule: constant, exp[:FACTOR[:EVERY]] (TF-slim:
    /// exp:0.94:2.5), step:EVERY[:FACTOR], cosine; options warmup=EPOCHS,
    /// min=LR (cosine), e.g. cosine:warmup=1.
    #[arg(long, default_value = "exp:0.94:2.5")]
    pub schedule: String,
    /// Label smoothing of the cross-entropy.
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f32,
    /// Batch-norm momentum (PyTorch's convention; TF's decay d is 1 - d).
    #[arg(long, default_value_t = 0.1)]
    pub bn_momentum: f32,
    /// Input normalisation.
    #[arg(long, value_enum, default_value_t = NormalizeArg::Tf)]
    pub normalize: NormalizeArg,
    /// Pixels of random shift for small (IDX) images: zero-pad by this much
    /// and crop back [default: size / 8].
    #[arg(long)]
    pub pad: Option<usize>,
    /// No random horizontal flips (e.g. for digits).
    #[arg(long)]
    pub no_flip: bool,
    /// Random erasing (Zhong et al. 2017): the chance, 0-1, that a training
    /// image gets a random rectangle (2-40 % of its area) of noise [default:
    /// 0, off].
    #[arg(long, default_value_t = 0.0)]
    #[serde(default)]
    pub erase: f64,
    /// Seed of initialisation, shuffling, augmentation and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    run: RunArgs,
    /// Run directory: checkpoints, metrics.csv, curves.png.
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    out: Option<PathBuf>,
    /// Continue the run in this directory with its saved settings (only
    /// --threads, --workers and --epochs may be given with it).
    #[arg(long, conflicts_with_all = ["data", "val", "from", "alpha", "resolution", "strides", "batch", "optimizer", "lr", "seed", "schedule"])]
    resume: Option<PathBuf>,
    /// Threads for the training step (default: one per core; the image
    /// workers take little beside it on small images).
    #[arg(long)]
    threads: Option<usize>,
    /// Threads decoding and augmenting images.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// No progress bar, one line per epoch.
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let (dir, mut run_args, resume) = match &args.resume {
        Some(dir) => {
            let text = std::fs::read_to_string(dir.join(RUN_FILE)).map_err(|source| Error::Io {
                path: dir.join(RUN_FILE).display().to_string(),
                source,
            })?;
            let saved: RunArgs = serde_json::from_str(&text)
                .map_err(|e| Error::Format(format!("{}: {e}", dir.join(RUN_FILE).display())))?;
            (dir.clone(), saved, Some(load_resume(dir)?))
        }
        None => {
            let dir = args
                .out
                .clone()
                .expect("clap requires --out without --resume");
            if dir.join(STATE_FILE).exists() {
                return Err(Error::InvalidConfig(format!(
                    "{} already holds a run; continue it with --resume {0} or choose another --out",
                    dir.display()
                )));
            }
            (dir, args.run.clone(), None)
        }
    };
    if let (Some(_), Some(epochs)) = (&resume, args.run.epochs) {
        run_args.epochs = Some(epochs);
    }
    let epochs = run_args.epochs.unwrap_or(DEFAULT_EPOCHS);
    let threads = match args.threads {
        Some(t) => t,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let par = Parallelism::new(threads)?;
    let data_path = run_args
        .data
        .clone()
        .ok_or_else(|| Error::InvalidConfig("--data is required".into()))?;
    let train_source = open_dataset(&data_path, Split::Train)?;
    let val_source = match &run_args.val {
        Some(path) => {
            let source = open_dataset(path, Split::Test)?;
            check_same_classes(train_source.dataset.as_ref(), source.dataset.as_ref())?;
            Some(source)
        }
        None => None,
    };
    let (net, metadata) = initial_model(&run_args, &train_source)?;
    let net = match &resume {
        Some(r) if r.model.net.architecture() != net.architecture() => {
            return Err(Error::InvalidConfig(format!(
                "the checkpoint in {} is a {}, but this run trains a {}",
                dir.display(),
                r.model.net.config().name(),
                net.config().name()
            )));
        }
        Some(r) => r.model.net.clone(),
        None => net,
    };
    let resolution = net.config().resolution;
    let (train_set, held_out): (Arc<dyn Dataset>, Option<Arc<dyn Dataset>>) =
        if val_source.is_none() && run_args.val_split > 0.0 {
            let (t, v) = train_val_split(
                train_source.dataset.clone(),
                run_args.val_split,
                run_args.seed,
            )?;
            (Arc::new(t), Some(Arc::new(v)))
        } else {
            (train_source.dataset.clone(), None)
        };
    let normalize = match run_args.normalize {
        NormalizeArg::Tf => Normalize::Tf,
        NormalizeArg::Torch => Normalize::Torch,
    };
    let (mut train_augment, eval_augment) =
        augmentations(train_source.kind, resolution, normalize, !run_args.no_flip);
    if let (Some(pad), Crop::Pad { .. }) = (run_args.pad, train_augment.crop) {
        train_augment.crop = Crop::Pad { pad };
    }
    if run_args.erase > 0.0 {
        train_augment.erase = Some(RandomErase::with_probability(run_args.erase));
    }
    let loader_config = LoaderConfig {
        batch_size: run_args.batch,
        shuffle: true,
        drop_last: false,
        seed: run_args.seed,
        workers: args.workers,
        prefetch: 2,
    };
    let train_loader = Loader::new(train_set, train_augment, loader_config)?;
    let val_set = held_out.or(val_source.map(|s| s.dataset));
    let val_loader = match val_set {
        Some(set) => Some(Loader::new(
            set,
            eval_augment,
            LoaderConfig {
                batch_size: 256,
                shuffle: false,
                ..loader_config
            },
        )?),
        None => None,
    };
    let options = train_options(&run_args, epochs)?;
    if resume.is_none() {
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let json = serde_json::to_string_pretty(&run_args)
            .map_err(|e| Error::InvalidConfig(e.to_string()))?;
        mobilenet::train::atomic::write_atomic(dir.join(RUN_FILE), json.as_bytes())?;
    }
    eprintln!(
        "training {} ({} parameters) on {} images ({} classes){}, {} threads, into {}",
        net.config().name(),
        mobilenet::cost::CostReport::new(net.architecture())
            .total
            .params,
        train_loader.dataset().len(),
        net.config().classes,
        val_loader
            .as_ref()
            .map(|l| format!(", validating on {}", l.dataset().len()))
            .unwrap_or_default(),
        threads,
        dir.display()
    );
    let mut progress = BarProgress::new(args.quiet, epochs);
    let summary = train(
        &dir,
        &net,
        &metadata,
        &train_loader,
        val_loader.as_ref(),
        &options,
        resume,
        &par,
        &mut progress,
    )?;
    progress.finish();
    eprintln!(
        "best epoch {} ({:.2} % {} accuracy): {}; curves: {}",
        summary.best_epoch,
        summary.best_accuracy * 100.0,
        if val_loader.is_some() {
            "validation"
        } else {
            "training"
        },
        dir.join(BEST_FILE).display(),
        dir.join(CURVES_FILE).display()
    );
    Ok(())
}

/// The network to start from: a fresh one, or `--from` with a classifier
/// for the data's classes; and the metadata saved with every checkpoint.
fn initial_model(args: &RunArgs, source: &Source) -> Result<(MobileNet, ModelMetadata)> {
    let classes = source.dataset.classes();
    let preprocess = match args.normalize {
        NormalizeArg::Tf => "tf",
        NormalizeArg::Torch => "torch",
    };
    let metadata = |config: &MobileNetConfig| ModelMetadata {
        name: Some(config.name()),
        preprocess: Some(preprocess.into()),
        labels: Some(source.dataset.class_names().to_vec()),
        source_format: "mobilenet train".into(),
    };
    let default_resolution = match source.kind {
        SourceKind::Idx => source.image_size.unwrap_or(28),
        SourceKind::Folder => 224,
    };
    let Some(from) = &args.from else {
        let config = MobileNetConfig {
            alpha: args.alpha,
            resolution: args.resolution.unwrap_or(default_resolution),
            classes,
            dropout: args.dropout,
            strides: args.strides.unwrap_or([2; 5]),
            ..Default::default()
        };
        if let Err(Error::InvalidConfig(msg)) = config.validate() {
            return Err(Error::InvalidConfig(format!(
                "{msg} (for small images try --strides 1,2,2,2,2)"
            )));
        }
        let net = MobileNet::random(&config, args.seed)?;
        return Ok((net, metadata(&config)));
    };
    let loaded = load_model(from, None)?;
    let old = loaded.net.config().clone();
    let config = MobileNetConfig {
        classes,
        resolution: args.resolution.unwrap_or(old.resolution),
        strides: args.strides.unwrap_or(old.strides),
        dropout: args.dropout,
        ..old.clone()
    };
    let arch = Architecture::new(&config)?;
    let classifier = if classes == old.classes {
        loaded.net.classifier().clone()
    } else {
        // A fresh head, initialised like MobileNet::random's.
        let c = loaded.net.classifier().weight.shape()[1];
        let bound = 1.0 / (c as f32).sqrt();
        let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
        Classifier {
            weight: Tensor::from_fn(vec![classes, c], |_| rng.random_range(-bound..=bound))?,
            bias: Tensor::zeros(vec![classes])?,
        }
    };
    let net = MobileNet::from_parts(arch, loaded.net.convs().to_vec(), classifier)?;
    Ok((net, metadata(&config)))
}

/// Training and evaluation augmentation for a kind of data.
fn augmentations(
    kind: SourceKind,
    size: usize,
    normalize: Normalize,
    flip: bool,
) -> (Augment, Augment) {
    let preprocess = match normalize {
        Normalize::Torch => Preprocess::Torch,
        _ => Preprocess::Tf,
    };
    match kind {
        SourceKind::Idx => {
            let mut train = Augment::pad_crop(size, size.div_ceil(8), normalize);
            train.flip = flip;
            (train, Augment::eval_pad(size, normalize))
        }
        SourceKind::Folder => {
            let mut train = Augment::random_resized(size, normalize);
            train.flip = flip;
            let eval = Augment {
                size,
                crop: Crop::Center(preprocess),
                flip: false,
                erase: None,
                normalize,
            };
            (train, eval)
        }
    }
}

fn train_options(args: &RunArgs, epochs: usize) -> Result<TrainOptions> {
    if epochs == 0 || args.batch == 0 {
        return Err(Error::InvalidConfig(
            "--epochs and --batch must be at least 1".into(),
        ));
    }
    let schedule: Schedule = args.schedule.parse()?;
    let weight_decay = WeightDecay {
        rate: args.weight_decay,
        depthwise: args.decay_depthwise,
    };
    let (algorithm_config, lr) = match args.optimizer {
        OptimizerArg::Rmsprop => (
            OptimizerConfig {
                weight_decay,
                ..OptimizerConfig::rmsprop_tf()
            },
            0.01,
        ),
        OptimizerArg::Sgd => (
            OptimizerConfig {
                weight_decay,
                ..OptimizerConfig::sgd(SgdConfig {
                    momentum: args.momentum,
                    ..Default::default()
                })
            },
            0.1,
        ),
    };
    let optimizer = match algorithm_config.algorithm {
        mobilenet::train::optim::Algorithm::RmsProp(c) => OptimizerConfig {
            algorithm: mobilenet::train::optim::Algorithm::RmsProp(RmsPropConfig {
                momentum: args.momentum,
                ..c
            }),
            ..algorithm_config
        },
        _ => algorithm_config,
    };
    optimizer.validate()?;
    let lr = args.lr.unwrap_or(lr);
    if !(lr.is_finite() && lr > 0.0) {
        return Err(Error::InvalidConfig(format!(
            "--lr must be a positive number, got {lr}"
        )));
    }
    Ok(TrainOptions {
        epochs,
        lr,
        schedule,
        optimizer,
        step: StepOptions {
            label_smoothing: args.label_smoothing,
            bn_momentum: args.bn_momentum,
            freeze_backbone: args.freeze_backbone,
            dropout_seed: 0,
        },
        seed: args.seed,
    })
}

/// A progress bar per epoch (loss, accuracy, images/s, ETA) and one line
/// per finished epoch on stderr.
struct BarProgress {
    bar: Option<ProgressBar>,
    quiet: bool,
    epochs: usize,
}

impl BarProgress {
    fn new(quiet: bool, epochs: usize) -> BarProgress {
        BarProgress {
            bar: None,
            quiet,
            epochs,
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Progress for BarProgress {
    fn batch(&mut self, epoch: usize, done: usize, total: usize, loss: f64, accuracy: f64) {
        if self.quiet {
            return;
        }
        let epochs = self.epochs;
        let bar = self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} {msg} {per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        });
        bar.set_prefix(format!("epoch {epoch}/{epochs}"));
        bar.set_position(done as u64);
        bar.set_message(format!("loss {loss:.4} acc {:.2}%", accuracy * 100.0));
    }

    fn epoch(&mut self, m: &EpochMetrics) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let val = match (m.val_loss, m.val_acc) {
            (Some(l), Some(a)) => format!(", val loss {l:.4} acc {:.2}%", a * 100.0),
            _ => String::new(),
        };
        eprintln!(
            "epoch {}/{}: lr {:.5}, loss {:.4} acc {:.2}%{val}, {:.0} img/s, {:.0} s",
            m.epoch,
            self.epochs,
            m.lr,
            m.train_loss,
            m.train_acc * 100.0,
            m.images_per_s,
            m.seconds
        );
    }
}
