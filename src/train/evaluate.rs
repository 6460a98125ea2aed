//! Accuracy of a network on a labelled dataset: top-1, top-5, mean loss,
//! per-class accuracy and the confusion matrix.
//!
//! Evaluation runs the inference engine (BN folded, fused kernels), so the
//! figures are those of the model as it will be deployed, and validation
//! during training costs a fraction of a training epoch.

use crate::data::Loader;
use crate::engine::{Parallelism, Plan, PlanOptions, Workspace};
use crate::error::{Error, Result};
use crate::model::MobileNet;

/// What [`evaluate`] measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Images evaluated (unreadable ones are skipped and counted apart).
    pub images: usize,
    /// Samples skipped because they could not be read.
    pub skipped: usize,
    /// Mean cross-entropy (no label smoothing).
    pub loss: f64,
    /// Fraction whose highest logit is the label.
    pub top1: f64,
    /// Fraction whose label is among the five highest logits (all of them
    /// when there are fewer than five classes).
    pub top5: f64,
    /// `confusion[label][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
}

impl Evaluation {
    /// Accuracy of each class (`None` for a class with no image).
    pub fn per_class(&self) -> Vec<Option<f64>> {
        self.confusion
            .iter()
            .enumerate()
            .map(|(c, row)| {
                let total: usize = row.iter().sum();
                (total > 0).then(|| row[c] as f64 / total as f64)
            })
            .collect()
    }
}

/// Runs every batch of `loader` (its epoch 0, in order if it does not
/// shuffle) through `net` on the engine.
pub fn evaluate(net: &MobileNet, loader: &Loader, par: &Parallelism) -> Result<Evaluation> {
    let classes = net.config().classes;
    if loader.dataset().classes() != classes {
        return Err(Error::InvalidConfig(format!(
            "the dataset has {} classes, the model {classes}",
            loader.dataset().classes()
        )));
    }
    let plan = Plan::compile(net, &PlanOptions::default())?;
    let mut ws = Workspace::new(&plan, par);
    let mut logits = Vec::new();
    let mut confusion = vec![vec![0usize; classes]; classes];
    let (mut images, mut loss, mut top5) = (0usize, 0.0f64, 0usize);
    let mut epoch = loader.epoch(0);
    for batch in &mut epoch {
        let batch = batch?;
        let n = batch.len();
        logits.resize(n * classes, 0.0);
        plan.run(&batch.images, n, &mut logits, &mut ws, par)?;
        for (row, &label) in logits.chunks_exact(classes).zip(&batch.labels) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f64 = row.iter().map(|&v| f64::from(v - max).exp()).sum();
            loss += sum.ln() - f64::from(row[label] - max);
            let predicted = row.iter().position(|&v| v == max).unwrap_or(0);
            confusion[label][predicted] += 1;
            let above = row.iter().filter(|&&v| v > row[label]).count();
            if above < 5 {
                top5 += 1;
            }
        }
        images += n;
    }
    if images == 0 {
        return Err(Error::Data("no image could be evaluated".into()));
    }
    let correct: usize = (0..classes).map(|c| confusion[c][c]).sum();
    Ok(Evaluation {
        images,
        skipped: epoch.skipped(),
        loss: loss / images as f64,
        top1: correct as f64 / images as f64,
        top5: top5 as f64 / images as f64,
        confusion,
    })
}
