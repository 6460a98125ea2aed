//! Training data: datasets (IDX files such as Fashion-MNIST, folders of
//! images), a seeded train/validation split, augmentation, and a loader that
//! decodes and augments in background threads and hands out NHWC batches.
//!
//! Training must be able to resume exactly, so nothing random here depends
//! on thread timing: the order of an epoch is a function of (seed, epoch),
//! the crop and flip of a sample a function of (seed, epoch, sample index),
//! and batches arrive in order whatever the number of workers.
//!
//! ```
//! use std::sync::Arc;
//! use mobilenet::data::{Augment, Dataset, IdxArray, IdxDataset, Loader, LoaderConfig, Normalize};
//!
//! // Ten 28x28 grayscale images with labels 0..9, as the IDX files would hold.
//! let images = IdxArray { dims: vec![10, 28, 28], data: vec![128; 10 * 28 * 28] };
//! let labels = IdxArray { dims: vec![10], data: (0..10).collect() };
//! let dataset: Arc<dyn Dataset> = Arc::new(IdxDataset::from_arrays(images, labels, None)?);
//!
//! // Fashion-MNIST style: padded to 32, random 4-pixel shifts and flips.
//! let augment = Augment::pad_crop(32, 4, Normalize::fashion_mnist());
//! let config = LoaderConfig { batch_size: 4, seed: 7, workers: 2, ..LoaderConfig::default() };
//! let loader = Loader::new(dataset, augment, config)?;
//! for batch in loader.epoch(0) {
//!     let batch = batch?;
//!     assert_eq!(batch.shape[1..], [32, 32, 3]);
//!     assert_eq!(batch.images.len(), batch.shape.iter().product::<usize>());
//!     assert_eq!(batch.labels.len(), batch.shape[0]);
//! }
//! assert_eq!(loader.batches_per_epoch(), 3); // 4 + 4 + 2, the last one kept
//! # Ok::<(), mobilenet::Error>(())
//! ```

mod augment;
mod folder;
mod idx;
mod loader;
mod rng;
mod source;
mod split;

pub use augment::{Augment, Crop, FASHION_MNIST_MEAN, FASHION_MNIST_STD, Normalize, RandomErase};
pub use folder::{IMAGE_EXTENSIONS, ImageFolder};
pub use idx::{FASHION_MNIST_CLASSES, IdxArray, IdxDataset, MAX_IDX_BYTES};
pub use loader::{Batch, Epoch, Loader, LoaderConfig};
pub use source::{Source, SourceKind, Split, open_dataset};
pub use split::{Subset, check_same_classes, split_indices, train_val_split};

use crate::error::Result;
use crate::image::RgbImage;

/// One decoded sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The image, 8-bit RGB, at its stored size.
    pub image: RgbImage,
    /// The class index, below [`Dataset::classes`].
    pub label: usize,
}

/// A labelled image dataset: samples `0..len()`, each an image and a class.
///
/// `Send + Sync` because the loader's worker threads share it. Loading may
/// fail for one sample (an unreadable or corrupt file): the loader skips
/// such samples when the error is [`Error::Io`](crate::Error::Io) or
/// [`Error::Image`](crate::Error::Image) and stops on any other.
pub trait Dataset: Send + Sync {
    /// The number of samples.
    fn len(&self) -> usize;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The class names, in class-index order.
    fn class_names(&self) -> &[String];

    /// The number of classes.
    fn classes(&self) -> usize {
        self.class_names().len()
    }

    /// The class of sample `index`, without decoding its image.
    fn label(&self, index: usize) -> Result<usize>;

    /// Sample `index`, decoded.
    fn load(&self, index: usize) -> Result<Sample>;
}
