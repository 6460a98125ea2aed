//! Softmax: the reference implementation.
//!
//! Turns the classifier's logits into class probabilities (paper Table 1,
//! last row). Written in the numerically stable form so that large logits
//! (e.g. 1e4) neither overflow `exp` nor produce NaN.

use crate::error::{Result, shape_err};
use crate::tensor::Tensor;

/// Softmax over the last axis: `y_i = exp(x_i - m) / Σ_j exp(x_j - m)` with
/// `m` the row maximum, so every exponent is <= 0 and nothing overflows.
/// The sum is taken in f64.
///
/// Each row of finite values sums to 1 (up to rounding). A `-inf` entry gets
/// probability 0 when its row has a finite maximum; rows containing NaN or
/// `+inf`, or only `-inf`, give NaN.
///
/// Errors: [`Error::Shape`](crate::Error::Shape) on a rank-0 input or an empty last axis.
///
/// ```
/// use mobilenet::Tensor;
/// use mobilenet::layers::softmax;
/// let x = Tensor::new(vec![1, 3], vec![1e4, 0.0, -1e4]).unwrap();
/// let p = softmax(&x).unwrap();
/// assert_eq!(p.data(), &[1.0, 0.0, 0.0]);
/// ```
pub fn softmax(input: &Tensor) -> Result<Tensor> {
    let Some(&len) = input.shape().last() else {
        shape_err!("softmax needs an input of rank >= 1, got a scalar");
    };
    if len == 0 {
        shape_err!(
            "softmax over an empty last axis (shape {:?})",
            input.shape()
        );
    }
    let mut out = input.clone();
    for row in out.data_mut().chunks_exact_mut(len) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let max = f64::from(max);
        let sum: f64 = row.iter().map(|&v| (f64::from(v) - max).exp()).sum();
        for v in row.iter_mut() {
            *v = ((f64::from(*v) - max).exp() / sum) as f32;
        }
    }
    Ok(out)
}
