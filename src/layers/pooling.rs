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
