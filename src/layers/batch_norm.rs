//! Batch normalization in inference mode: the reference implementation.
//!
//! MobileNet v1 follows every convolution with batch norm (paper Fig. 3).
//! At inference the statistics are frozen, so BN is a per-channel affine map
//! `y = γ (x - μ) / sqrt(σ² + ε) + β`. [`batch_norm`] computes exactly that
//! formula and is the oracle; [`BatchNorm::scale_shift`] gives the same map
//! as `y = x * scale + shift`, which is how it is folded into the preceding
//! convolution's weights and bias for the fast path.

use crate::error::{Error, Result, shape_err};
use crate::tensor::Tensor;

/// Frozen batch-norm parameters, one entry per channel.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm {
    /// Learned scale γ.
    pub gamma: Vec<f32>,
    /// Learned shift β.
    pub beta: Vec<f32>,
    /// Running mean μ.
    pub mean: Vec<f32>,
    /// Running variance σ².
    pub var: Vec<f32>,
    /// Added to the variance before the square root (PyTorch default 1e-5,
    /// TensorFlow's MobileNet 1e-3).
    pub eps: f32,
}

impl BatchNorm {
    /// The identity map on `channels` channels (up to the `ε` in the
    /// denominator): γ = 1, β = 0, μ = 0, σ² = 1.
    pub fn identity(channels: usize, eps: f32) -> BatchNorm {
        BatchNorm {
            gamma: vec![1.0; channels],
            beta: vec![0.0; channels],
            mean: vec![0.0; channels],
            var: vec![1.0; channels],
            eps,
        }
    }

    /// The number of channels (the length of `gamma`).
    pub fn channels(&self) -> usize {
        self.gamma.len()
    }

    /// Per-channel `(scale, shift)` with `y = x * scale + shift`:
    /// `scale = γ / sqrt(σ² + ε)`, `shift = β - μ * scale`. Used to fold BN
    /// into the preceding convolution.
    ///
    /// Computed in f64 and rounded once. If the four vectors have different
    /// lengths, the result has the shortest length ([`batch_norm`] rejects
    /// such parameters).
    ///
    /// ```
    /// use mobilenet::layers::BatchNorm;
    /// let bn = BatchNorm { gamma: vec![2.0], beta: vec![1.0], mean: vec![3.0], var: vec![4.0], eps: 0.0 };
    /// let (scale, shift) = bn.scale_shift();
    /// assert_eq!((scale[0], shift[0]), (1.0, -2.0)); // 2/sqrt(4), 1 - 3*1
    /// ```
    pub fn scale_shift(&self) -> (Vec<f32>, Vec<f32>) {
        self.gamma
            .iter()
            .zip(&self.beta)
            .zip(&self.mean)
            .zip(&self.var)
            .map(|(((&g, &b), &m), &v)| {
                let scale = f64::from(g) / (f64::from(v) + f64::from(self.eps)).sqrt();
                let shift = f64::from(b) - f64::from(m) * scale;
                (scale as f32, shift as f32)
            })
            .unzip()
    }

    /// Checks that all four vectors have `channels` entries and that
    /// `σ² + ε > 0` for every channel.
    fn validate(&self, channels: usize) -> Result<()> {
        for (name, v) in [
            ("gamma", &self.gamma),
            ("beta", &self.beta),
            ("mean", &self.mean),
            ("var", &self.var),
        ] {
            if v.len() != channels {
                shape_err!(
                    "batch norm {name} has {} entries but the input has {channels} channels",
                    v.len()
                );
            }
        }
        for (c, &v) in self.var.iter().enumerate() {
            let denom = f64::from(v) + f64::from(self.eps);
            if denom.is_nan() || denom <= 0.0 {
                return Err(Error::InvalidConfig(format!(
                    "batch norm channel {c}: var + eps = {v} + {} is not positive",
                    self.eps
                )));
            }
        }
        Ok(())
    }
}

/// Applies inference-mode batch norm over the last axis of a tensor of any
/// rank >= 1 (for NHWC images, the channel axis):
/// `y = γ (x - μ) / sqrt(σ² + ε) + β`, evaluated literally in f64 and rounded
/// once to f32.
///
/// Errors: [`Error::Shape`] on a rank-0 input or if a parameter vector's
/// length differs from the channel count; [`Error::InvalidConfig`] if
/// `σ² + ε <= 0` (or NaN) for some channel.
pub fn batch_norm(input: &Tensor, bn: &BatchNorm) -> Result<Tensor> {
    let Some(&channels) = input.shape().last() else {
        shape_err!("batch norm needs an input of rank >= 1, got a scalar");
    };
    bn.validate(channels)?;
    let mut out = input.clone();
    if channels == 0 {
        return Ok(out);
    }
    for row in out.data_mut().chunks_exact_mut(channels) {
        for (c, v) in row.iter_mut().enumerate() {
            let x = f64::from(*v);
            let normalized =
                (x - f64::from(bn.mean[c])) / (f64::from(bn.var[c]) + f64::from(bn.eps)).sqrt();
            *v = (f64::from(bn.gamma[c]) * normalized + f64::from(bn.beta[c])) as f32;
        }
    }
    Ok(out)
}
