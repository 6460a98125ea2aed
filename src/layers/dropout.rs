//! Inverted dropout (the paper's classifier is trained with dropout before
//! the fully connected layer; Keras' MobileNet uses rate 1e-3).
//!
//! "Inverted" means the kept activations are scaled by `1 / (1 - rate)` at
//! training time, so the expected output equals the input and inference is
//! the identity: nothing to undo when the model is exported.

use crate::error::{Error, Result, shape_err};
use crate::tensor::Tensor;

/// Drops each element with probability `rate` and scales the survivors by
/// `1 / (1 - rate)`: `y = x · mask`, with every mask entry either 0 or
/// `1 / (1 - rate)` (rounded to f32).
///
/// Returns the output and the mask (already scaled; keep it for
/// [`dropout_backward`]). The mask depends only on `rng`, never on the
/// values, so the same seed drops the same positions. Rate 0 returns the
/// input unchanged with a mask of ones, without drawing from `rng`.
///
/// Errors: [`Error::InvalidConfig`] if `rate` is not in `[0, 1)` (rate 1
/// would drop everything and scale by infinity).
///
/// ```
/// use mobilenet::Tensor;
/// use mobilenet::layers::dropout;
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
/// let x = Tensor::new(vec![1000], vec![1.0; 1000]).unwrap();
/// let (y, mask) = dropout(&x, 0.5, &mut rng).unwrap();
/// assert!(mask.iter().all(|&m| m == 0.0 || m == 2.0));
/// assert_eq!(y.data(), &mask[..]); // x is all ones
/// let kept = mask.iter().filter(|&&m| m > 0.0).count();
/// assert!((400..600).contains(&kept));
/// ```
pub fn dropout(
    input: &Tensor,
    rate: f32,
    rng: &mut (impl rand::Rng + ?Sized),
) -> Result<(Tensor, Vec<f32>)> {
    // Written so that NaN fails too.
    if !(0.0..1.0).contains(&rate) {
        return Err(Error::InvalidConfig(format!(
            "dropout rate must be in [0, 1), got {rate}"
        )));
    }
    if rate == 0.0 {
        return Ok((input.clone(), vec![1.0; input.len()]));
    }
    let keep = 1.0 - f64::from(rate);
    let scale = (1.0 / keep) as f32;
    let mask: Vec<f32> = (0..input.len())
        .map(|_| if rng.random_bool(keep) { scale } else { 0.0 })
        .collect();
    let mut out = input.clone();
    for (v, &m) in out.data_mut().iter_mut().zip(&mask) {
        *v *= m;
    }
    Ok((out, mask))
}

/// Backward pass of [`dropout`]: `∂L/∂x = ∂L/∂y · mask`, element-wise (the
/// forward pass is `y = x · mask` with the mask fixed).
///
/// Errors: [`Error::Shape`] if the mask does not have one entry per element
/// of `grad_output`.
///
/// ```
/// use mobilenet::Tensor;
/// use mobilenet::layers::dropout_backward;
/// let g = Tensor::new(vec![3], vec![1.0, 2.0, 3.0]).unwrap();
/// let dx = dropout_backward(&g, &[2.0, 0.0, 2.0]).unwrap();
/// assert_eq!(dx.data(), &[2.0, 0.0, 6.0]);
/// assert!(dropout_backward(&g, &[2.0]).is_err());
/// ```
pub fn dropout_backward(grad_output: &Tensor, mask: &[f32]) -> Result<Tensor> {
    if mask.len() != grad_output.len() {
        shape_err!(
            "dropout_backward: mask has {} entries but grad_output {:?} has {}",
            mask.len(),
            grad_output.shape(),
            grad_output.len()
        );
    }
    let mut out = grad_output.clone();
    for (g, &m) in out.data_mut().iter_mut().zip(mask) {
        *g *= m;
    }
    Ok(out)
}
