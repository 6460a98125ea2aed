//! Opening a dataset from a path, as the CLI's `--data` / `--val` take it.
//!
//! * an ImageFolder directory (one sub-folder per class);
//! * an IDX image file (`...-images-idx3-ubyte[.gz]`): its labels are the
//!   file named with `labels-idx1` in place of `images-idx3`;
//! * a directory holding the MNIST / Fashion-MNIST files (e.g. Debian's
//!   `/usr/share/datasets/fashion-mnist/`): its `train-*` files for
//!   training, its `t10k-*` files for validation and evaluation.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::data::{Dataset, FASHION_MNIST_CLASSES, IdxDataset, ImageFolder};
use crate::error::{Error, Result};

/// Which part of an MNIST-style directory to open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The `train-*` files.
    Train,
    /// The `t10k-*` files.
    Test,
}

/// The kinds of dataset [`open_dataset`] recognises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// Small grayscale images held in memory (MNIST-style IDX files).
    Idx,
    /// Image files in class folders, decoded as they are needed.
    Folder,
}

/// An opened dataset and what it is.
#[derive(Clone)]
pub struct Source {
    /// The samples.
    pub dataset: Arc<dyn Dataset>,
    /// Where they come from.
    pub kind: SourceKind,
    /// The side of the stored images when they all have one (IDX).
    pub image_size: Option<usize>,
}

/// Opens `path` (see the [module documentation](self)); `split` picks the
/// files of an MNIST-style directory.
pub fn open_dataset(path: &Path, split: Split) -> Result<Source> {
    if path.is_file() {
        let name = path.to_string_lossy();
        if !name.contains("images-idx3") {
            return Err(Error::Data(format!(
                "{}: a file dataset must be an IDX image file named like \
                 train-images-idx3-ubyte[.gz]; image folders are directories",
                path.display()
            )));
        }
        let labels = PathBuf::from(name.replace("images-idx3", "labels-idx1"));
        return open_idx(path, &labels);
    }
    if !path.is_dir() {
        return Err(Error::Data(format!(
            "{}: no such dataset file or directory",
            path.display()
        )));
    }
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    for suffix in ["", ".gz"] {
        let images = path.join(format!("{prefix}-images-idx3-ubyte{suffix}"));
        if images.is_file() {
            let labels = path.join(format!("{prefix}-labels-idx1-ubyte{suffix}"));
            return open_idx(&images, &labels);
        }
    }
    Ok(Source {
        dataset: Arc::new(ImageFolder::open(path)?),
        kind: SourceKind::Folder,
        image_size: None,
    })
}

fn open_idx(images: &Path, labels: &Path) -> Result<Source> {
    if !labels.is_file() {
        return Err(Error::Data(format!(
            "{}: no label file {} beside it",
            images.display(),
            labels.display()
        )));
    }
    let mut dataset = IdxDataset::open(images, labels, None)?;
    check_contiguous_labels(&dataset, images)?;
    if dataset.classes() <= FASHION_MNIST_CLASSES.len()
        && images.to_string_lossy().to_lowercase().contains("fashion")
    {
        // Labels 0..9 of Fashion-MNIST have names; a subset still uses them.
        let classes = FASHION_MNIST_CLASSES.len();
        dataset = IdxDataset::open(images, labels, Some(classes))?
            .with_class_names(&FASHION_MNIST_CLASSES)?;
    }
    let (h, w) = dataset.image_size();
    Ok(Source {
        dataset: Arc::new(dataset),
        kind: SourceKind::Idx,
        image_size: (h == w).then_some(h),
    })
}

/// IDX files do not say how many classes there are, so it is taken as the
/// largest label + 1. A class below it with no sample at all means a stray
/// label (e.g. 200 among 0..9): refuse it rather than train a 201-way head.
fn check_contiguous_labels(dataset: &IdxDataset, images: &Path) -> Result<()> {
    let classes = dataset.classes();
    let mut counts = vec![0usize; classes];
    let mut last_of = vec![0usize; classes];
    for i in 0..dataset.len() {
        let label = dataset.label(i)?;
        counts[label] += 1;
        last_of[label] = i;
    }
    if let Some(empty) = counts.iter().position(|&c| c == 0) {
        let top = classes - 1;
        return Err(Error::Data(format!(
            "{}: labels are out of range: sample {} has label {top}, but no sample has label \
             {empty} (labels must be 0..N-1 for N classes)",
            images.display(),
            last_of[top]
        )));
    }
    Ok(())
}
