//! Global average pooling: the reference implementation.
//!
//! MobileNet v1 ends with "Avg Pool 7×7" (paper Table 1), but that 7 is just
//! `D_F` at 224×224 input. At other resolutions the final feature map has
//! another size, so the pool is *global*: it always averages over the whole
//! `D_F × D_F` map, never a fixed window.

use crate::error::{Error, Result, shape_err};
use crate::tensor::Tensor;

/// NHWC `[batch, H, W, C]` -> `[batch, C]`: the mean over all `H * W`
/// positions, per image and channel, summed in f64 and rounded once.
///
/// Errors: [`Error::Shape`] if the input is not rank 4 or `H * W == 0`.
///
/// ```
/// use mobilenet::Tensor;
/// use mobilenet::layers::global_avg_pool;
/// // One 2x2 image with 2 channels.
/// let x = Tensor::new(vec![1, 2, 2, 2], vec![1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 40.0]).unwrap();
/// let y = global_avg_pool(&x).unwrap();
/// assert_eq!(y.shape(), &[1, 2]);
/// assert_eq!(y.data(), &[2.5, 25.0]);
/// ```
pub fn global_avg_pool(input: &Tensor) -> Result<Tensor> {
    let [batch, h, w, c] = input.dims4("global_avg_pool input (NHWC)")?;
    // Cannot overflow: h * w divides the length of an existing tensor,
    // unless batch or c is 0, hence the check.
    let positions = h
        .checked_mul(w)
        .ok_or_else(|| Error::Shape(format!("global_avg_pool: {h} x {w} positions overflow")))?;
    if positions == 0 {
        shape_err!("global_avg_pool needs at least one position, got H = {h}, W = {w}");
    }
    let x = input.data();
    let mut out = Vec::with_capacity(batch * c);
    let mut sums = vec![0.0f64; c];
    for b in 0..batch {
        sums.fill(0.0);
        let image = &x[b * positions * c..(b + 1) * positions * c];
        if c > 0 {
            for pixel in image.chunks_exact(c) {
                for (s, &v) in sums.iter_mut().zip(pixel) {
                    *s += f64::from(v);
                }
            }
        }
        out.extend(sums.iter().map(|&s| (s / positions as f64) as f32));
    }
    Tensor::new(vec![batch, c], out)
}

/// Backward pass of [`global_avg_pool`]: every one of the `H * W` positions
/// contributed `x / (H * W)` to its channel's mean, so each receives
/// `∂L/∂y[b, c] / (H * W)`.
///
/// `grad_output` is `[batch, C]` and `input_shape` the forward input's
/// `[batch, H, W, C]`; the result has `input_shape`.
///
/// Errors: [`Error::Shape`] if `input_shape` is not rank 4, `H * W == 0`, or
/// `grad_output` is not `[batch, C]`; [`Error::TooLarge`] if the result
/// could not be allocated.
///
/// ```
/// use mobilenet::Tensor;
/// use mobilenet::layers::global_avg_pool_backward;
/// let g = Tensor::new(vec![1, 2], vec![4.0, 8.0]).unwrap();
/// let dx = global_avg_pool_backward(&g, &[1, 2, 2, 2]).unwrap();
/// assert_eq!(dx.shape(), &[1, 2, 2, 2]);
/// assert_eq!(dx.data(), &[1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0]);
/// ```
pub fn global_avg_pool_backward(grad_output: &Tensor, input_shape: &[usize]) -> Result<Tensor> {
    let &[batch, h, w, c] = input_shape else {
        shape_err!(
            "global_avg_pool_backward input shape must have rank 4 (NHWC), got {input_shape:?}"
        );
    };
    if grad_output.shape() != [batch, c] {
        shape_err!(
            "global_avg_pool_backward grad_output must have shape [{batch}, {c}] for input \
             {input_shape:?}, got {:?}",
            grad_output.shape()
        );
    }
    let positions = h.checked_mul(w).ok_or_else(|| {
        Error::TooLarge(format!(
            "global_avg_pool_backward: {h} x {w} positions overflow"
        ))
    })?;
    if positions == 0 {
        shape_err!("global_avg_pool_backward needs at least one position, got H = {h}, W = {w}");
    }
    let len = input_shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize / std::mem::size_of::<f32>())
        .ok_or_else(|| {
            Error::TooLarge(format!(
                "global_avg_pool_backward input shape {input_shape:?} has too many elements"
            ))
        })?;
    let mut out = Vec::with_capacity(len);
    for row in grad_output.data().chunks_exact(c.max(1)).take(batch) {
        let share: Vec<f32> = row
            .iter()
            .map(|&g| (f64::from(g) / positions as f64) as f32)
            .collect();
        for _ in 0..positions {
            out.extend_from_slice(&share);
        }
    }
    Tensor::new(input_shape.to_vec(), out)
}
