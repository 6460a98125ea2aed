//! The training loop: epochs of shuffled, augmented batches through
//! [`TrainNet`] and the [`Optimizer`], validation on the engine, and a run
//! directory that can be resumed exactly.
//!
//! The run directory holds, after every epoch:
//! * `epoch-NNNN.safetensors`: the model in our format (loadable anywhere a
//!   model is, e.g. `mobilenet classify --model`);
//! * `best.safetensors`: the epoch with the best validation accuracy (the
//!   training accuracy when there is no validation set);
//! * `state.safetensors`: the optimizer's slots and the loop's position,
//!   naming the epoch file it goes with and that file's SHA-256;
//! * `metrics.csv` and `curves.png`.
//!
//! Every file is written whole to a temporary name and renamed
//! ([`write_atomic`]), the epoch file before the state that points to it,
//! so a crash at any moment leaves the last complete epoch resumable.
//! Batch order and augmentation depend only on (seed, epoch, sample) and
//! dropout masks on (seed, step), so a resumed run repeats exactly what an
//! uninterrupted one computes (with the same thread count).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::Loader;
use crate::engine::Parallelism;
use crate::error::{Error, Result};
use crate::formats::safetensors::{from_bytes, to_bytes};
use crate::formats::{LoadedModel, ModelMetadata};
use crate::model::MobileNet;
use crate::train::atomic::write_atomic;
use crate::train::evaluate::{Evaluation, evaluate};
use crate::train::metrics::{EpochMetrics, MetricsLog};
use crate::train::network::{StepOptions, StepStats, TrainNet};
use crate::train::optim::{Optimizer, OptimizerConfig};
use crate::train::plot::plot_curves;
use crate::train::schedule::Schedule;

/// The file holding the optimizer state and the loop's position.
pub const STATE_FILE: &str = "state.safetensors";
/// The best model so far.
pub const BEST_FILE: &str = "best.safetensors";
/// The training curves.
pub const CURVES_FILE: &str = "curves.png";

/// How to train.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Epochs in total (a resumed run continues up to this many).
    pub epochs: usize,
    /// Learning rate before the schedule.
    pub lr: f64,
    /// How the learning rate changes over the epochs.
    pub schedule: Schedule,
    /// The optimizer and its weight-decay policy.
    pub optimizer: OptimizerConfig,
    /// Label smoothing, BN momentum and whether the backbone is frozen
    /// (`dropout_seed` is set per step from `seed`).
    pub step: StepOptions,
    /// Seeds dropout (the loaders carry their own seed).
    pub seed: u64,
}

/// Told about progress; the CLI draws a progress bar with it.
pub trait Progress {
    /// After each training batch: the epoch (from 1), batches done and in
    /// the epoch, and the running mean loss and accuracy of the epoch.
    fn batch(&mut self, epoch: usize, done: usize, total: usize, loss: f64, accuracy: f64);
    /// After each epoch, with what it measured.
    fn epoch(&mut self, metrics: &EpochMetrics);
}

/// A [`Progress`] that says nothing.
pub struct Silent;

impl Progress for Silent {
    fn batch(&mut self, _: usize, _: usize, _: usize, _: f64, _: f64) {}
    fn epoch(&mut self, _: &EpochMetrics) {}
}

/// Where a run stands, as saved in [`STATE_FILE`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Epochs finished.
    pub epochs_done: usize,
    /// Optimizer steps taken.
    pub steps: u64,
    /// The epoch checkpoint this state belongs to, and its SHA-256.
    pub checkpoint: String,
    pub checkpoint_sha256: String,
    /// Best accuracy so far and its epoch (0 = none yet).
    pub best_accuracy: f64,
    pub best_epoch: usize,
}

/// A run to continue: the model of its last epoch, the optimizer slots and
/// its position.
pub struct Resume {
    /// The model as saved after the last finished epoch.
    pub model: LoadedModel,
    /// The optimizer's slots (see [`Optimizer::state`]).
    pub optimizer_state: Vec<(String, Vec<f32>)>,
    /// The loop's position.
    pub state: RunState,
}

/// The result of [`train`].
#[derive(Debug)]
pub struct TrainSummary {
    /// One row per epoch of the whole run (resumed epochs included).
    pub metrics: Vec<EpochMetrics>,
    /// The model after the last epoch.
    pub last: MobileNet,
    /// The best epoch (from 1) and its accuracy.
    pub best_epoch: usize,
    pub best_accuracy: f64,
}

/// The name of epoch `epoch`'s checkpoint (`epoch-0003.safetensors`).
pub fn epoch_file(epoch: usize) -> String {
    format!("epoch-{epoch:04}.safetensors")
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Reads the resumable state of run directory `dir`.
///
/// Errors name what is wrong: no state, a state whose checkpoint is
/// missing or is not the file it was saved with.
pub fn load_resume(dir: &Path) -> Result<Resume> {
    let state_path = dir.join(STATE_FILE);
    if !state_path.is_file() {
        return Err(Error::InvalidConfig(format!(
            "{}: no {STATE_FILE}; nothing to resume (has the run finished an epoch?)",
            dir.display()
        )));
    }
    let bytes = read(&state_path)?;
    let bad = |what: String| Error::Format(format!("{}: {what}", state_path.display()));
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let run_json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("run"))
        .ok_or_else(|| bad("no \"run\" metadata".into()))?;
    let state: RunState = serde_json::from_str(run_json).map_err(|e| bad(e.to_string()))?;
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut optimizer_state = Vec::new();
    for (name, view) in tensors.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!("{name} is {:?}, not F32", view.dtype())));
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        optimizer_state.push((name, values));
    }
    if state.checkpoint.contains(['/', '\\']) {
        return Err(bad(format!("bad checkpoint name {:?}", state.checkpoint)));
    }
    let model_bytes = read(&dir.join(&state.checkpoint))?;
    if hex_sha256(&model_bytes) != state.checkpoint_sha256 {
        return Err(bad(format!(
            "{} is not the checkpoint this state was saved with (SHA-256 differs)",
            state.checkpoint
        )));
    }
    let model = from_bytes(&model_bytes)?;
    Ok(Resume {
        model,
        optimizer_state,
        state,
    })
}

/// Trains `net` for the epochs `options.epochs` asks for, writing the run
/// directory `dir` (created if needed) as it goes. With `resume` (from
/// [`load_resume`]), `net` must be its model and training continues after
/// its last epoch.
#[allow(clippy::too_many_arguments)]
pub fn train(
    dir: &Path,
    net: &MobileNet,
    metadata: &ModelMetadata,
    train_loader: &Loader,
    val_loader: Option<&Loader>,
    options: &TrainOptions,
    resume: Option<Resume>,
    par: &Parallelism,
    progress: &mut dyn Progress,
) -> Result<TrainSummary> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let classes = net.config().classes;
    if train_loader.dataset().classes() != classes {
        return Err(Error::InvalidConfig(format!(
            "the training data has {} classes, the model {classes}",
            train_loader.dataset().classes()
        )));
    }
    let resolution = net.config().resolution;
    let batches = train_loader.batches_per_epoch();
    if batches == 0 {
        return Err(Error::Data("the training set yields no batch".into()));
    }
    let mut trainee = TrainNet::new(net)?;
    let specs = trainee.param_specs().to_vec();
    let mut optimizer = Optimizer::new(options.optimizer, &specs)?;
    let log = MetricsLog::in_dir(dir);
    let mut state = RunState {
        epochs_done: 0,
        steps: 0,
        checkpoint: String::new(),
        checkpoint_sha256: String::new(),
        best_accuracy: f64::NEG_INFINITY,
        best_epoch: 0,
    };
    let mut metrics = Vec::new();
    if let Some(resume) = resume {
        if resume.model.net.architecture() != net.architecture() {
            return Err(Error::InvalidConfig(format!(
                "the checkpoint is a {}, this run trains a {}",
                resume.model.net.config().name(),
                net.config().name()
            )));
        }
        trainee.load_from(&resume.model.net)?;
        optimizer.load_state(&resume.optimizer_state, resume.state.steps)?;
        metrics = log.truncate_after(resume.state.epochs_done as u32)?;
        state = resume.state;
    } else {
        log.write_all(&[])?;
    }
    // Only the classifier's two tensors move when the backbone is frozen.
    let first_trained = if options.step.freeze_backbone {
        specs.len() - 2
    } else {
        0
    };
    let total_epochs = options.epochs as f64;
    for epoch in state.epochs_done..options.epochs {
        let started = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        let mut lr = options.lr;
        let mut batches_done = 0;
        for batch in train_loader.epoch(epoch as u64) {
            let batch = batch?;
            if batch.shape[1] != resolution || batch.shape[2] != resolution {
                return Err(Error::Shape(format!(
                    "batches are {}x{}, the model takes {resolution}x{resolution}",
                    batch.shape[1], batch.shape[2]
                )));
            }
            let position = epoch as f64 + batches_done as f64 / batches as f64;
            lr = options.schedule.lr(options.lr, position, total_epochs);
            let step_options = StepOptions {
                dropout_seed: options
                    .seed
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .wrapping_add(state.steps),
                ..options.step
            };
            let stats = par.install(|| -> Result<StepStats> {
                let stats =
                    trainee.forward_backward(&batch.images, &batch.labels, &step_options)?;
                for (i, (param, grad)) in trainee.params_and_grads().enumerate().skip(first_trained)
                {
                    optimizer.step(i, param, grad, lr as f32)?;
                }
                Ok(stats)
            })?;
            if !stats.loss.is_finite() {
                return Err(Error::InvalidConfig(format!(
                    "the loss became {} at epoch {}, batch {}: lower the learning rate",
                    stats.loss,
                    epoch + 1,
                    batch.index + 1
                )));
            }
            state.steps += 1;
            batches_done += 1;
            loss_sum += f64::from(stats.loss) * batch.len() as f64;
            correct += stats.correct;
            seen += batch.len();
            progress.batch(
                epoch + 1,
                batches_done,
                batches,
                loss_sum / seen as f64,
                correct as f64 / seen as f64,
            );
        }
        let train_seconds = started.elapsed().as_secs_f64();
        let model = trainee.to_model()?;
        let validation: Option<Evaluation> = match val_loader {
            Some(loader) => Some(evaluate(&model, loader, par)?),
            None => None,
        };
        let train_acc = correct as f64 / seen.max(1) as f64;
        let row = EpochMetrics {
            epoch: (epoch + 1) as u32,
            lr,
            train_loss: loss_sum / seen.max(1) as f64,
            train_acc,
            val_loss: validation.as_ref().map(|v| v.loss),
            val_acc: validation.as_ref().map(|v| v.top1),
            val_top5: validation.as_ref().map(|v| v.top5),
            images_per_s: seen as f64 / train_seconds,
            seconds: started.elapsed().as_secs_f64(),
        };
        // Checkpoint: the epoch's model, then the best, then the state.
        let model_bytes = to_bytes(&model, metadata)?;
        let name = epoch_file(epoch + 1);
        write_atomic(dir.join(&name), &model_bytes)?;
        let accuracy = row.val_acc.unwrap_or(train_acc);
        if accuracy > state.best_accuracy {
            write_atomic(dir.join(BEST_FILE), &model_bytes)?;
            state.best_accuracy = accuracy;
            state.best_epoch = epoch + 1;
        }
        state.epochs_done = epoch + 1;
        state.checkpoint_sha256 = hex_sha256(&model_bytes);
        state.checkpoint = name;
        write_state(&dir.join(STATE_FILE), &state, &optimizer)?;
        log.append(&row)?;
        metrics.push(row.clone());
        plot_curves(&metrics, dir.join(CURVES_FILE))?;
        progress.epoch(&row);
    }
    Ok(TrainSummary {
        metrics,
        last: trainee.to_model()?,
        best_epoch: state.best_epoch,
        best_accuracy: state.best_accuracy,
    })
}

/// Writes the optimizer slots and `state` as one safetensors file.
fn write_state(path: &PathBuf, state: &RunState, optimizer: &Optimizer) -> Result<()> {
    let slots = optimizer.state();
    let bytes: Vec<(String, Vec<u8>, usize)> = slots
        .iter()
        .map(|(name, values)| {
            let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), data, values.len())
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, data, len)| {
            TensorView::new(Dtype::F32, vec![*len], data)
                .map(|view| (name.clone(), view))
                .map_err(|e| Error::Format(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut meta = BTreeMap::new();
    meta.insert(
        "run".to_string(),
        serde_json::to_string(state).map_err(|e| Error::Format(e.to_string()))?,
    );
    let meta: std::collections::HashMap<String, String> = meta.into_iter().collect();
    let out =
        safetensors::serialize(views, Some(meta)).map_err(|e| Error::Format(e.to_string()))?;
    write_atomic(path, &out)
}
