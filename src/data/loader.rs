//! Batches for one epoch, prepared in background threads.
//!
//! Batch `k` of an epoch always holds the same samples with the same
//! augmentation: the order is a seeded shuffle of (seed, epoch), each sample
//! is augmented from its own (seed, epoch, index) stream, and worker `w` of
//! `W` builds batches `w, w + W, ...` into its own bounded channel, which
//! the consumer reads in turn. So batches arrive in order, whatever the
//! number of workers or their speed, and at most `workers * (prefetch + 1)`
//! batches exist at once. The workers are plain threads of their own, not
//! the global rayon pool that the training step computes in.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::augment::Augment;
use super::rng::{self, Purpose};
use super::{Dataset, Sample};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The most floats one batch may hold (4 GiB of f32).
const MAX_BATCH_VALUES: usize = 1 << 30;

/// The most worker threads a loader starts.
const MAX_WORKERS: usize = 256;

/// How batches are formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Samples per batch (the last one may be smaller, see `drop_last`).
    pub batch_size: usize,
    /// Shuffle the samples each epoch (training); `false` keeps dataset
    /// order (evaluation).
    pub shuffle: bool,
    /// Drop the last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// Seeds the shuffle and the augmentation.
    pub seed: u64,
    /// Background threads decoding and augmenting; 0 builds each batch in
    /// the calling thread when it is asked for. Does not change the batches.
    pub workers: usize,
    /// Finished batches each worker may hold beyond the one it is building.
    pub prefetch: usize,
}

impl Default for LoaderConfig {
    /// Batches of 32, shuffled, last batch kept, seed 0, 2 workers each one
    /// batch ahead.
    fn default() -> LoaderConfig {
        LoaderConfig {
            batch_size: 32,
            shuffle: true,
            drop_last: false,
            seed: 0,
            workers: 2,
            prefetch: 1,
        }
    }
}

/// A batch of augmented samples, NHWC.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Position of the batch in its epoch (0-based): resume after batch `k`
    /// with [`Loader::epoch_from`]`(epoch, k + 1)`.
    pub index: usize,
    /// `shape.iter().product()` values: image after image, each `H x W x 3`.
    pub images: Vec<f32>,
    /// The class of each image.
    pub labels: Vec<usize>,
    /// The dataset index of each image.
    pub indices: Vec<usize>,
    /// `[B, H, W, 3]`. `B` is below the batch size for the last batch of an
    /// epoch, and when samples were skipped.
    pub shape: [usize; 4],
    /// Samples that could not be loaded since the previous batch (this
    /// batch's, plus those of any batch in between that lost every sample
    /// and so was not delivered). A warning names each one.
    pub skipped: usize,
}

impl Batch {
    /// The number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch has no images (never true of a delivered batch).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The images as a `[B, H, W, 3]` tensor.
    pub fn into_tensor(self) -> Result<Tensor> {
        Tensor::new(self.shape.to_vec(), self.images)
    }
}

/// A dataset, its augmentation and batching: hands out epochs.
///
/// ```
/// use std::sync::Arc;
/// use mobilenet::data::{Augment, IdxArray, IdxDataset, Loader, LoaderConfig, Normalize};
///
/// let images = IdxArray { dims: vec![6, 4, 4], data: (0..96).collect() };
/// let labels = IdxArray { dims: vec![6], data: vec![0, 1, 0, 1, 0, 1] };
/// let dataset = Arc::new(IdxDataset::from_arrays(images, labels, None)?);
/// let config = LoaderConfig { batch_size: 2, seed: 3, ..LoaderConfig::default() };
/// let loader = Loader::new(dataset, Augment::random_resized(4, Normalize::Tf), config)?;
///
/// // A run stopped after batch 0 of epoch 5 resumes with batch 1: the same
/// // samples, the same crops, as if it had never stopped.
/// let first: Vec<_> = loader.epoch(5).collect::<Result<_, _>>()?;
/// let resumed: Vec<_> = loader.epoch_from(5, 1)?.collect::<Result<_, _>>()?;
/// assert_eq!(resumed, first[1..]);
/// # Ok::<(), mobilenet::Error>(())
/// ```
pub struct Loader {
    dataset: Arc<dyn Dataset>,
    augment: Augment,
    config: LoaderConfig,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("samples", &self.dataset.len())
            .field("augment", &self.augment)
            .field("config", &self.config)
            .finish()
    }
}

impl Loader {
    /// Checks the configuration against the dataset.
    ///
    /// Errors: an empty dataset or one without classes, batch size 0, a
    /// batch too large to allocate, `drop_last` with fewer samples than a
    /// batch, invalid augmentation parameters.
    pub fn new(
        dataset: Arc<dyn Dataset>,
        augment: Augment,
        config: LoaderConfig,
    ) -> Result<Loader> {
        augment.validate()?;
        if dataset.is_empty() {
            return Err(Error::Data("the dataset has no samples".to_string()));
        }
        if dataset.classes() == 0 {
            return Err(Error::Data("the dataset has no classes".to_string()));
        }
        if config.batch_size == 0 {
            return Err(Error::InvalidConfig(
                "batch size must be at least 1".to_string(),
            ));
        }
        if config.workers > MAX_WORKERS {
            return Err(Error::InvalidConfig(format!(
                "at most {MAX_WORKERS} loader workers, got {}",
                config.workers
            )));
        }
        let values = config
            .batch_size
            .checked_mul(augment.size * augment.size * 3)
            .filter(|&n| n <= MAX_BATCH_VALUES);
        if values.is_none() {
            return Err(Error::TooLarge(format!(
                "a batch of {} images of {}x{}x3 is over {MAX_BATCH_VALUES} values",
                config.batch_size, augment.size, augment.size
            )));
        }
        if config.drop_last && dataset.len() < config.batch_size {
            return Err(Error::InvalidConfig(format!(
                "with drop_last, {} samples make no batch of {}",
                dataset.len(),
                config.batch_size
            )));
        }
        Ok(Loader {
            dataset,
            augment,
            config,
        })
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }

    /// The augmentation.
    pub fn augment(&self) -> &Augment {
        &self.augment
    }

    /// The batching configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Batches in every epoch (before any sample is skipped).
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.dataset.len(), self.config.batch_size);
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The dataset indices of `epoch` in the order they are batched: a
    /// permutation of `0..len` from (seed, epoch), or `0..len` without
    /// shuffling. With `drop_last` the tail beyond the last full batch is
    /// not used.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.config.shuffle {
            let mut rng = rng::stream(self.config.seed, Purpose::Shuffle, epoch, 0);
            rng::shuffle(&mut order, &mut rng);
        }
        order
    }

    /// The batches of `epoch`, from the first. Workers start now; dropping
    /// the returned iterator stops them.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        self.start(epoch, 0)
    }

    /// The batches of `epoch` from batch `start` on (`start` up to
    /// [`Loader::batches_per_epoch`]; at the end, nothing is left). The
    /// batches are the very ones an uninterrupted epoch would have given.
    pub fn epoch_from(&self, epoch: u64, start: usize) -> Result<Epoch> {
        let total = self.batches_per_epoch();
        if start > total {
            return Err(Error::InvalidConfig(format!(
                "cannot start epoch {epoch} at batch {start}: it has {total} batches"
            )));
        }
        Ok(self.start(epoch, start))
    }

    fn start(&self, epoch: u64, start: usize) -> Epoch {
        let end = self.batches_per_epoch();
        let job = Arc::new(Job {
            dataset: self.dataset.clone(),
            augment: self.augment,
            order: self.order(epoch),
            batch_size: self.config.batch_size,
            seed: self.config.seed,
            epoch,
        });
        let mut pending = None;
        let source = if self.config.workers == 0 || start == end {
            Source::Inline(job)
        } else {
            match Workers::spawn(job, start, end, self.config.workers, self.config.prefetch) {
                Ok(workers) => Source::Workers(workers),
                Err(e) => {
                    pending = Some(e);
                    Source::Done
                }
            }
        };
        Epoch {
            epoch,
            next: start,
            end,
            source,
            pending,
            carried: 0,
            delivered: 0,
            skipped: 0,
            finished: false,
        }
    }
}

/// What every worker of an epoch shares.
struct Job {
    dataset: Arc<dyn Dataset>,
    augment: Augment,
    order: Vec<usize>,
    batch_size: usize,
    seed: u64,
    epoch: u64,
}

/// A built batch (possibly empty) and a message per skipped sample.
type Built = (Batch, Vec<String>);

impl Job {
    /// Loads and augments batch `k`; gives up early when `stop` is set.
    fn build(&self, k: usize, stop: &AtomicBool) -> Result<Built> {
        let size = self.augment.size;
        let per = size * size * 3;
        let lo = k * self.batch_size;
        let hi = (lo + self.batch_size).min(self.order.len());
        let members = &self.order[lo..hi];
        let mut images = vec![0f32; members.len() * per];
        let mut labels = Vec::with_capacity(members.len());
        let mut indices = Vec::with_capacity(members.len());
        let mut failures = Vec::new();
        for &i in members {
            if stop.load(Ordering::Relaxed) {
                return Err(Error::Data("the loader was stopped".to_string()));
            }
            let Sample { image, label } = match self.dataset.load(i) {
                Ok(sample) => sample,
                Err(e @ (Error::Io { .. } | Error::Image(_))) => {
                    failures.push(format!("sample {i}: {e}"));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if label >= self.dataset.classes() {
                return Err(Error::Data(format!(
                    "label {label} of sample {i} is out of range for {} classes",
                    self.dataset.classes()
                )));
            }
            let n = labels.len();
            self.augment.apply(
                &image,
                self.seed,
                self.epoch,
                i as u64,
                &mut images[n * per..(n + 1) * per],
            )?;
            labels.push(label);
            indices.push(i);
        }
        images.truncate(labels.len() * per);
        let batch = Batch {
            index: k,
            shape: [labels.len(), size, size, 3],
            images,
            labels,
            indices,
            skipped: failures.len(),
        };
        Ok((batch, failures))
    }
}

/// Background threads, worker `w` building batches `start + w + i * W`.
struct Workers {
    start: usize,
    receivers: Vec<Receiver<Result<Built>>>,
    handles: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Workers {
    fn spawn(
        job: Arc<Job>,
        start: usize,
        end: usize,
        count: usize,
        prefetch: usize,
    ) -> Result<Workers> {
        let count = count.min(end - start);
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Workers {
            start,
            receivers: Vec::with_capacity(count),
            handles: Vec::with_capacity(count),
            stop: stop.clone(),
        };
        for w in 0..count {
            let (tx, rx) = sync_channel(prefetch);
            let (job, stop) = (job.clone(), stop.clone());
            let handle = std::thread::Builder::new()
                .name(format!("mobilenet-data-{w}"))
                .spawn(move || work(&job, start + w, end, count, &stop, &tx))
                .map_err(|source| Error::Io {
                    path: "data loader worker thread".to_string(),
                    source,
                })?;
            workers.receivers.push(rx);
            workers.handles.push(handle);
        }
        Ok(workers)
    }

    fn get(&self, k: usize) -> Result<Built> {
        let rx = &self.receivers[(k - self.start) % self.receivers.len()];
        rx.recv().unwrap_or_else(|_| {
            Err(Error::Data(format!(
                "the data loader worker for batch {k} stopped unexpectedly"
            )))
        })
    }
}

/// One worker's loop: build its batches in order and send them; stop at
/// the first error, or when the consumer is gone.
fn work(
    job: &Job,
    first: usize,
    end: usize,
    step: usize,
    stop: &AtomicBool,
    tx: &SyncSender<Result<Built>>,
) {
    for k in (first..end).step_by(step) {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let built = job.build(k, stop);
        let failed = built.is_err();
        if tx.send(built).is_err() || failed {
            return;
        }
    }
}

impl Drop for Workers {
    /// Stops and joins the workers: the flag ends a batch in progress at the
    /// next sample, and closing the channels wakes a worker blocked on a
    /// full one.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.receivers.clear();
        for handle in self.handles.drain(..) {
            // A worker that panicked has already reported through its closed
            // channel; nothing more to do with the panic here.
            let _ = handle.join();
        }
    }
}

enum Source {
    /// Batches built in the consumer's thread.
    Inline(Arc<Job>),
    Workers(Workers),
    Done,
}

/// The batches of one epoch, in order: an iterator of `Result<Batch>`.
///
/// Samples that cannot be loaded (an unreadable or corrupt image file) are
/// skipped with a warning on stderr and counted in [`Batch::skipped`]; an
/// epoch in which no sample at all could be loaded ends with an error. Any
/// other error ends the epoch after it is yielded. Dropping the iterator
/// stops the workers and waits for them (at most one sample each).
pub struct Epoch {
    epoch: u64,
    next: usize,
    end: usize,
    source: Source,
    pending: Option<Error>,
    /// Skipped samples of undelivered (emptied) batches, for the next batch.
    carried: usize,
    delivered: usize,
    skipped: usize,
    finished: bool,
}

impl Epoch {
    /// The epoch number.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The index of the next batch to come.
    pub fn next_batch(&self) -> usize {
        self.next
    }

    /// Samples skipped so far in this epoch.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    fn finish(&mut self) {
        self.finished = true;
        self.source = Source::Done;
    }
}

impl std::fmt::Debug for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epoch")
            .field("epoch", &self.epoch)
            .field("next", &self.next)
            .field("end", &self.end)
            .field("skipped", &self.skipped)
            .finish()
    }
}

impl Iterator for Epoch {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if let Some(e) = self.pending.take() {
            self.finish();
            return Some(Err(e));
        }
        while !self.finished {
            if self.next >= self.end {
                self.finish();
                if self.delivered == 0 && self.skipped > 0 {
                    return Some(Err(Error::Data(format!(
                        "none of the {} samples of epoch {} could be loaded (see the warnings)",
                        self.skipped, self.epoch
                    ))));
                }
                return None;
            }
            let k = self.next;
            self.next += 1;
            let built = match &self.source {
                Source::Inline(job) => job.build(k, &AtomicBool::new(false)),
                Source::Workers(workers) => workers.get(k),
                Source::Done => return None,
            };
            let (mut batch, failures) = match built {
                Ok(built) => built,
                Err(e) => {
                    self.finish();
                    return Some(Err(e));
                }
            };
            for failure in &failures {
                eprintln!("warning: skipped {failure}");
            }
            self.skipped += batch.skipped;
            if batch.is_empty() {
                self.carried += batch.skipped;
                continue;
            }
            batch.skipped += std::mem::take(&mut self.carried);
            self.delivered += batch.len();
            return Some(Ok(batch));
        }
        None
    }
}
