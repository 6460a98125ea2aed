//! Fully connected layer: the reference implementation.
//!
//! The classifier at the end of MobileNet v1 (paper Table 1, "FC / s1"):
//! 1024·α features to the class logits. Weight layout is PyTorch's
//! `[out, in]`, so importing a checkpoint needs no transpose.

use crate::error::{Error, Result, shape_err};
use crate::tensor::Tensor;

/// `y[n, o] = bias[o] + Σ_i x[n, i] * weight[o, i]`.
///
/// `input` is `[batch, in]`, `weight` is `[out, in]`, the optional `bias` is
/// `[out]`; the result is `[batch, out]`. Each output is summed in f64 in
/// ascending `i`, the bias added last, and rounded once to f32.
///
/// Errors: [`Error::Shape`] for wrong ranks, mismatched `in`, or a bias that
/// is not `[out]`.
///
/// ```
/// use mobilenet::Tensor;
/// use mobilenet::layers::fully_connected;
/// let x = Tensor::new(vec![1, 2], vec![1.0, 2.0]).unwrap();
/// let w = Tensor::new(vec![3, 2], vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]).unwrap();
/// let b = Tensor::new(vec![3], vec![0.0, 0.0, 0.5]).unwrap();
/// let y = fully_connected(&x, &w, Some(&b)).unwrap();
/// assert_eq!(y.data(), &[1.0, 2.0, 3.5]);
/// ```
pub fn fully_connected(input: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let [batch, n_in] = input.dims2("fully_connected input [batch, in]")?;
    let [n_out, w_in] = weight.dims2("fully_connected weight [out, in]")?;
    if w_in != n_in {
        shape_err!(
            "fully_connected weight {:?} expects {w_in} inputs, but the input has {n_in} features",
            weight.shape()
        );
    }
    let bias = match bias {
        None => None,
        Some(b) if b.shape() == [n_out] => Some(b.data()),
        Some(b) => {
            shape_err!(
                "fully_connected bias must have shape [{n_out}], got {:?}",
                b.shape()
            );
        }
    };
    let out_len = batch.checked_mul(n_out).ok_or_else(|| {
        Error::TooLarge(format!(
            "fully_connected output [{batch}, {n_out}] is too large"
        ))
    })?;
    let x = input.data();
    let w = weight.data();
    let mut out = Vec::with_capacity(out_len);
    for n in 0..batch {
        let row = &x[n * n_in..(n + 1) * n_in];
        for o in 0..n_out {
            let w_row = &w[o * n_in..(o + 1) * n_in];
            let mut acc = 0.0f64;
            for (&xv, &wv) in row.iter().zip(w_row) {
                acc += f64::from(xv) * f64::from(wv);
            }
            if let Some(bias) = bias {
                acc += f64::from(bias[o]);
            }
            out.push(acc as f32);
        }
    }
    Tensor::new(vec![batch, n_out], out)
}
