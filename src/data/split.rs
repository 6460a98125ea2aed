//! Holding out a validation set: a seeded split of one dataset by fraction,
//! or a check that a separately opened validation dataset (`--val PATH`)
//! has the same classes as the training one.
//!
//! The split is stratified (each class contributes the same fraction) so a
//! small validation set still sees every class, and it depends only on the
//! seed and the labels, so a resumed run validates on the same samples.

use std::sync::Arc;

use super::rng::{self, Purpose};
use super::{Dataset, Sample};
use crate::error::{Error, Result};

/// The sample indices of a split, each list sorted.
///
/// Per class, `round(n * val_fraction)` samples, chosen at random with
/// `seed`, go to validation and the rest to training.
///
/// ```
/// use mobilenet::data::split_indices;
///
/// let labels = [0, 1, 0, 1, 0, 1, 0, 1, 0, 1];
/// let (train, val) = split_indices(&labels, 2, 0.2, 42)?;
/// assert_eq!((train.len(), val.len()), (8, 2)); // one of each class held out
/// assert_eq!(split_indices(&labels, 2, 0.2, 42)?, (train, val)); // same seed, same split
/// # Ok::<(), mobilenet::Error>(())
/// ```
pub fn split_indices(
    labels: &[usize],
    classes: usize,
    val_fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(val_fraction > 0.0 && val_fraction < 1.0) {
        return Err(Error::InvalidConfig(format!(
            "validation fraction must be strictly between 0 and 1, got {val_fraction}"
        )));
    }
    let mut by_class = vec![Vec::new(); classes];
    for (i, &label) in labels.iter().enumerate() {
        by_class
            .get_mut(label)
            .ok_or_else(|| {
                Error::Data(format!(
                    "label {label} of sample {i} is out of range for {classes} classes"
                ))
            })?
            .push(i);
    }
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (class, mut members) in by_class.into_iter().enumerate() {
        let held = (members.len() as f64 * val_fraction).round() as usize;
        rng::shuffle(
            &mut members,
            &mut rng::stream(seed, Purpose::Split, 0, class as u64),
        );
        val.extend_from_slice(&members[..held]);
        train.extend_from_slice(&members[held..]);
    }
    if train.is_empty() || val.is_empty() {
        return Err(Error::InvalidConfig(format!(
            "a validation fraction of {val_fraction} of {} samples leaves {} for training and {} for validation",
            labels.len(),
            train.len(),
            val.len()
        )));
    }
    train.sort_unstable();
    val.sort_unstable();
    Ok((train, val))
}

/// Splits `dataset` into training and validation subsets (see
/// [`split_indices`]). Reads every label, decodes no image.
pub fn train_val_split(
    dataset: Arc<dyn Dataset>,
    val_fraction: f64,
    seed: u64,
) -> Result<(Subset, Subset)> {
    let labels = (0..dataset.len())
        .map(|i| dataset.label(i))
        .collect::<Result<Vec<_>>>()?;
    let (train, val) = split_indices(&labels, dataset.classes(), val_fraction, seed)?;
    Ok((
        Subset::new(dataset.clone(), train)?,
        Subset::new(dataset, val)?,
    ))
}

/// Checks that a validation dataset opened on its own has the training
/// dataset's classes, in the same order: otherwise class indices would mean
/// different things in the two.
pub fn check_same_classes(train: &dyn Dataset, val: &dyn Dataset) -> Result<()> {
    if train.class_names() == val.class_names() {
        return Ok(());
    }
    let (t, v) = (train.class_names(), val.class_names());
    let detail = match t.iter().zip(v).position(|(a, b)| a != b) {
        Some(i) => format!(
            "class {i} is {:?} in training, {:?} in validation",
            t[i], v[i]
        ),
        None => format!("{} classes in training, {} in validation", t.len(), v.len()),
    };
    Err(Error::Data(format!(
        "the validation dataset's classes differ from the training dataset's: {detail}"
    )))
}

/// Some samples of a dataset, renumbered `0..len`.
#[derive(Clone)]
pub struct Subset {
    inner: Arc<dyn Dataset>,
    indices: Vec<usize>,
}

impl Subset {
    /// The samples `indices` of `inner` (each below `inner.len()`).
    pub fn new(inner: Arc<dyn Dataset>, indices: Vec<usize>) -> Result<Subset> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= inner.len()) {
            return Err(Error::Data(format!(
                "subset index {bad} is out of range for a dataset of {}",
                inner.len()
            )));
        }
        Ok(Subset { inner, indices })
    }

    /// The indices in the underlying dataset, in subset order.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    fn inner_index(&self, index: usize) -> Result<usize> {
        self.indices.get(index).copied().ok_or_else(|| {
            Error::Data(format!(
                "sample index {index} is out of range for a subset of {}",
                self.indices.len()
            ))
        })
    }
}

impl std::fmt::Debug for Subset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subset")
            .field("len", &self.indices.len())
            .field("of", &self.inner.len())
            .finish()
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn class_names(&self) -> &[String] {
        self.inner.class_names()
    }

    fn label(&self, index: usize) -> Result<usize> {
        self.inner.label(self.inner_index(index)?)
    }

    fn load(&self, index: usize) -> Result<Sample> {
        self.inner.load(self.inner_index(index)?)
    }
}
