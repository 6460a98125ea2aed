//! Softmax cross-entropy: the training loss of the classifier.
//!
//! MobileNet v1 is trained with softmax cross-entropy on the logits of the
//! last fully connected layer (the TensorFlow release adds label smoothing
//! 0.1). The loss and its gradient come from one function because the
//! gradient is so simple once the softmax is known: `(p - t) / N`.

use crate::error::{Error, Result, shape_err};
use crate::tensor::Tensor;

/// Mean softmax cross-entropy of `logits` (`[batch, K]`) against integer
/// `labels` (one per row, in `0..K`), with label smoothing `ε`, and its
/// gradient with respect to the logits.
///
/// As in PyTorch's `cross_entropy(..., label_smoothing=ε)`, the target of a
/// row with label `y` is `t = (1 - ε) · onehot(y) + ε / K`, and
///
/// ```text
/// loss = (1 / N) Σ_n -Σ_k t[n, k] · log p[n, k]
///      = (1 / N) Σ_n (lse(x[n]) - (1 - ε) x[n, y_n] - (ε / K) Σ_k x[n, k])
/// ∂loss/∂x[n, k] = (p[n, k] - t[n, k]) / N
/// ```
///
/// with `p = softmax(x)` and `lse(x) = m + ln Σ_k exp(x_k - m)`, `m` the row
/// maximum: every exponent is <= 0, so large logits neither overflow nor
/// lose the loss to `log(0)` (logits `[1e4, 0]` with label 1 give loss 1e4,
/// not `inf`). Sums in f64; the loss and gradient are rounded once.
///
/// Returns `(loss, gradient)`, the gradient shaped like `logits`. Non-finite
/// logits give a non-finite loss, not an error.
///
/// Errors: [`Error::Shape`] if `logits` is not rank 2, has no rows or no
/// classes, or `labels` does not have one entry per row;
/// [`Error::InvalidConfig`] if a label is `>= K` or `ε` is not in `[0, 1]`.
///
/// ```
/// use mobilenet::Tensor;
/// use mobilenet::layers::softmax_cross_entropy;
/// // Two equal logits: p = [0.5, 0.5], loss = ln 2 whatever the label.
/// let x = Tensor::new(vec![1, 2], vec![0.0, 0.0]).unwrap();
/// let (loss, grad) = softmax_cross_entropy(&x, &[0], 0.0).unwrap();
/// assert!((loss - 2f32.ln()).abs() < 1e-7);
/// assert_eq!(grad.data(), &[-0.5, 0.5]); // p - onehot
/// // With smoothing 0.1 the target is [0.95, 0.05].
/// let (_, grad) = softmax_cross_entropy(&x, &[0], 0.1).unwrap();
/// assert!((grad.data()[0] + 0.45).abs() < 1e-7);
/// assert!(softmax_cross_entropy(&x, &[2], 0.0).is_err()); // only 2 classes
/// ```
pub fn softmax_cross_entropy(
    logits: &Tensor,
    labels: &[usize],
    label_smoothing: f32,
) -> Result<(f32, Tensor)> {
    let [batch, classes] = logits.dims2("softmax_cross_entropy logits [batch, classes]")?;
    if batch == 0 {
        shape_err!("softmax_cross_entropy needs at least one row to average over");
    }
    if classes == 0 {
        shape_err!("softmax_cross_entropy needs at least one class, got logits [{batch}, 0]");
    }
    if labels.len() != batch {
        shape_err!(
            "softmax_cross_entropy got {} labels for {batch} rows of logits",
            labels.len()
        );
    }
    if let Some((row, &label)) = labels.iter().enumerate().find(|&(_, &l)| l >= classes) {
        return Err(Error::InvalidConfig(format!(
            "softmax_cross_entropy: label {label} of row {row} is out of range for {classes} \
             classes (labels are 0..{classes})"
        )));
    }
    // Written so that NaN fails too.
    if !(0.0..=1.0).contains(&label_smoothing) {
        return Err(Error::InvalidConfig(format!(
            "label smoothing must be in [0, 1], got {label_smoothing}"
        )));
    }
    let eps = f64::from(label_smoothing);
    let k = classes as f64;
    let n = batch as f64;
    let mut total = 0.0f64;
    let mut grad = logits.clone();
    for (row, &label) in grad.data_mut().chunks_exact_mut(classes).zip(labels) {
        let max = f64::from(row.iter().copied().fold(f32::NEG_INFINITY, f32::max));
        let sum: f64 = row.iter().map(|&v| (f64::from(v) - max).exp()).sum();
        let lse = max + sum.ln();
        let mut loss = lse - (1.0 - eps) * f64::from(row[label]);
        // Only when smoothing: 0 * (-inf) would turn a finite loss into NaN.
        if eps > 0.0 {
            loss -= eps / k * row.iter().map(|&v| f64::from(v)).sum::<f64>();
        }
        total += loss;
        for (j, v) in row.iter_mut().enumerate() {
            let p = (f64::from(*v) - max).exp() / sum;
            let target = if j == label { 1.0 - eps } else { 0.0 } + eps / k;
            *v = ((p - target) / n) as f32;
        }
    }
    Ok(((total / n) as f32, grad))
}
