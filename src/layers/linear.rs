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

/// Gradients of a scalar loss with respect to the three arguments of
/// [`fully_connected`].
#[derive(Clone, Debug, PartialEq)]
pub struct LinearGrads {
    /// `∂L/∂x`, `[batch, in]`.
    pub input: Tensor,
    /// `∂L/∂W`, `[out, in]` (the weight's own layout).
    pub weight: Tensor,
    /// `∂L/∂bias`, `[out]`.
    pub bias: Tensor,
}

/// Backward pass of [`fully_connected`], given `grad_output = ∂L/∂y`
/// (`[batch, out]`):
///
/// ```text
/// ∂L/∂x[n, i] = Σ_o g[n, o] * W[o, i]     (∂L/∂x = g · W)
/// ∂L/∂W[o, i] = Σ_n g[n, o] * x[n, i]     (∂L/∂W = gᵀ · x)
/// ∂L/∂b[o]    = Σ_n g[n, o]
/// ```
///
/// Sums in f64, rounded once.
///
/// Errors: [`Error::Shape`] for wrong ranks, a weight whose `in` differs
/// from the input's, or a `grad_output` that is not `[batch, out]`.
///
/// ```
/// use mobilenet::Tensor;
/// use mobilenet::layers::fully_connected_backward;
/// let x = Tensor::new(vec![1, 2], vec![1.0, 2.0]).unwrap();
/// let w = Tensor::new(vec![3, 2], vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]).unwrap();
/// let g = Tensor::new(vec![1, 3], vec![1.0, 0.0, 2.0]).unwrap();
/// let grads = fully_connected_backward(&x, &w, &g).unwrap();
/// assert_eq!(grads.input.data(), &[3.0, 2.0]); // 1*[1, 0] + 2*[1, 1]
/// assert_eq!(grads.weight.data(), &[1.0, 2.0, 0.0, 0.0, 2.0, 4.0]);
/// assert_eq!(grads.bias.data(), &[1.0, 0.0, 2.0]);
/// ```
pub fn fully_connected_backward(
    input: &Tensor,
    weight: &Tensor,
    grad_output: &Tensor,
) -> Result<LinearGrads> {
    let [batch, n_in] = input.dims2("fully_connected_backward input [batch, in]")?;
    let [n_out, w_in] = weight.dims2("fully_connected_backward weight [out, in]")?;
    if w_in != n_in {
        shape_err!(
            "fully_connected_backward weight {:?} expects {w_in} inputs, but the input has \
             {n_in} features",
            weight.shape()
        );
    }
    if grad_output.shape() != [batch, n_out] {
        shape_err!(
            "fully_connected_backward grad_output must have shape [{batch}, {n_out}], got {:?}",
            grad_output.shape()
        );
    }
    let x = input.data();
    let w = weight.data();
    let g = grad_output.data();
    let mut gx = vec![0.0f64; x.len()];
    let mut gw = vec![0.0f64; w.len()];
    let mut gb = vec![0.0f64; n_out];
    for n in 0..batch {
        let x_row = &x[n * n_in..(n + 1) * n_in];
        let gx_row = &mut gx[n * n_in..(n + 1) * n_in];
        for o in 0..n_out {
            let go = f64::from(g[n * n_out + o]);
            gb[o] += go;
            let w_row = &w[o * n_in..(o + 1) * n_in];
            let gw_row = &mut gw[o * n_in..(o + 1) * n_in];
            for i in 0..n_in {
                gx_row[i] += go * f64::from(w_row[i]);
                gw_row[i] += go * f64::from(x_row[i]);
            }
        }
    }
    let round = |v: Vec<f64>| v.into_iter().map(|s| s as f32).collect::<Vec<f32>>();
    Ok(LinearGrads {
        input: Tensor::new(vec![batch, n_in], round(gx))?,
        weight: Tensor::new(vec![n_out, n_in], round(gw))?,
        bias: Tensor::new(vec![n_out], round(gb))?,
    })
}
