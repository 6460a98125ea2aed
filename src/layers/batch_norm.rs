//! Batch normalization in inference mode: the reference implementation.
//!
//! MobileNet v1 follows every convolution with batch norm (paper Fig. 3).
//! At inference the statistics are frozen, so BN is a per-channel affine map
//! `y = γ (x - μ) / sqrt(σ² + ε) + β`. [`batch_norm`] computes exactly that
//! formula and is the oracle; [`BatchNorm::scale_shift`] gives the same map
//! as `y = x * scale + shift`, which is how it is folded into the preceding
//! convolution's weights and bias for the fast path.
//!
//! In training, BN normalizes with the statistics of the current batch
//! instead ([`batch_norm_train`]), so every output depends on every input of
//! its channel through the mean and variance; [`batch_norm_train_backward`]
//! differentiates through those statistics, and
//! [`BatchNorm::update_running`] folds them into the running estimates used
//! at inference.

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

    /// Folds one training batch's statistics into the running estimates,
    /// with PyTorch's semantics:
    ///
    /// ```text
    /// μ  <- (1 - momentum) μ  + momentum · batch_mean
    /// σ² <- (1 - momentum) σ² + momentum · batch_var · n / (n - 1)
    /// ```
    ///
    /// `batch_var` is the *biased* variance that [`batch_norm_train`]
    /// normalizes with (divided by `n`); the running variance estimates the
    /// population variance, so it takes the unbiased one (divided by `n - 1`),
    /// where `count = n` is the number of values per channel (`N·H·W` for
    /// NHWC). PyTorch's default momentum is 0.1. TensorFlow/Keras call the
    /// same update `decay` (or `momentum`) `d` and weight the *old* value:
    /// `running = d · running + (1 - d) · batch`, so TF's `d` is momentum
    /// `1 - d` here (TF's MobileNet uses `d = 0.997`, momentum 0.003). Note
    /// that Keras also uses the unbiased variance in this update.
    ///
    /// Computed in f64 and rounded once. Nothing is modified on error.
    ///
    /// Errors: [`Error::Shape`] if `batch_mean` or `batch_var` does not have
    /// one entry per channel or `mean` / `var` disagree with `gamma` in
    /// length; [`Error::InvalidConfig`] if `count < 2` (no unbiased variance)
    /// or `momentum` is not in `[0, 1]`.
    ///
    /// ```
    /// use mobilenet::layers::BatchNorm;
    /// let mut bn = BatchNorm::identity(1, 1e-5); // μ = 0, σ² = 1
    /// // A batch of 4 values 1, 2, 3, 4: mean 2.5, biased var 1.25, unbiased 5/3.
    /// bn.update_running(&[2.5], &[1.25], 4, 0.1).unwrap();
    /// assert!((bn.mean[0] - 0.25).abs() < 1e-6); // 0.9 * 0 + 0.1 * 2.5
    /// assert!((bn.var[0] - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-6);
    /// ```
    pub fn update_running(
        &mut self,
        batch_mean: &[f32],
        batch_var: &[f32],
        count: usize,
        momentum: f32,
    ) -> Result<()> {
        let channels = self.channels();
        for (name, len) in [
            ("running mean", self.mean.len()),
            ("running var", self.var.len()),
            ("batch mean", batch_mean.len()),
            ("batch var", batch_var.len()),
        ] {
            if len != channels {
                shape_err!(
                    "batch norm update: {name} has {len} entries but gamma has {channels} channels"
                );
            }
        }
        if count < 2 {
            return Err(Error::InvalidConfig(format!(
                "batch norm update needs at least 2 values per channel for an unbiased \
                 variance, got {count}"
            )));
        }
        // Written so that NaN fails too.
        if !(0.0..=1.0).contains(&momentum) {
            return Err(Error::InvalidConfig(format!(
                "batch norm momentum must be in [0, 1], got {momentum}"
            )));
        }
        let m = f64::from(momentum);
        let n = count as f64;
        let bessel = n / (n - 1.0);
        for c in 0..channels {
            let mean = (1.0 - m) * f64::from(self.mean[c]) + m * f64::from(batch_mean[c]);
            let var = (1.0 - m) * f64::from(self.var[c]) + m * f64::from(batch_var[c]) * bessel;
            self.mean[c] = mean as f32;
            self.var[c] = var as f32;
        }
        Ok(())
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

/// The result of [`batch_norm_train`]: the normalized output and the batch
/// statistics it used (keep them for [`batch_norm_train_backward`] and
/// [`BatchNorm::update_running`]).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNormTrain {
    /// `γ (x - μ_B) / sqrt(σ²_B + ε) + β`, the shape of the input.
    pub output: Tensor,
    /// Per-channel batch mean `μ_B`.
    pub mean: Vec<f32>,
    /// Per-channel *biased* batch variance `σ²_B = Σ (x - μ_B)² / n`.
    pub var: Vec<f32>,
    /// `n`, the number of values per channel the statistics were taken over
    /// (`N·H·W` for an NHWC input).
    pub count: usize,
}

/// Number of values per channel (the product of all but the last axis) and
/// the channel count, for the training-mode functions.
fn train_dims(input: &Tensor, what: &str) -> Result<(usize, usize)> {
    let Some((&channels, outer)) = input.shape().split_last() else {
        shape_err!("{what} needs an input of rank >= 1, got a scalar");
    };
    // Cannot overflow: the product divides the length of an existing tensor
    // (or one of its factors is 0).
    let count = outer.iter().product::<usize>();
    if count == 0 {
        shape_err!(
            "{what} needs at least one value per channel for batch statistics, got shape {:?}",
            input.shape()
        );
    }
    Ok((count, channels))
}

/// Checks that `v` has one entry per channel.
fn check_len(what: &str, name: &str, v: &[f32], channels: usize) -> Result<()> {
    if v.len() != channels {
        shape_err!(
            "{what}: {name} has {} entries but the input has {channels} channels",
            v.len()
        );
    }
    Ok(())
}

/// `1 / sqrt(σ² + ε)` in f64, or an error if `ε` is negative or NaN or
/// `σ² + ε` is not positive. A NaN variance (from NaN inputs) is not an
/// error: it propagates to the outputs, as in the other layers.
fn inv_std(what: &str, c: usize, var: f64, eps: f32) -> Result<f64> {
    if eps.is_nan() || eps < 0.0 {
        return Err(Error::InvalidConfig(format!(
            "{what}: eps must be >= 0, got {eps}"
        )));
    }
    let denom = var + f64::from(eps);
    if denom <= 0.0 {
        return Err(Error::InvalidConfig(format!(
            "{what} channel {c}: var + eps = {var} + {eps} is not positive"
        )));
    }
    Ok(1.0 / denom.sqrt())
}

/// Batch norm in training mode, over the last axis of a tensor of rank >= 1
/// (for NHWC, the statistics of each channel are taken over all `N·H·W`
/// values, as PyTorch and TensorFlow do in training):
///
/// ```text
/// μ_B = Σ x / n,   σ²_B = Σ (x - μ_B)² / n   (biased),
/// y   = γ (x - μ_B) / sqrt(σ²_B + ε) + β
/// ```
///
/// The statistics are computed in f64 (two passes, so no cancellation) and
/// the output rounded once; the returned `mean` / `var` are the same values
/// rounded to f32.
///
/// Errors: [`Error::Shape`] on a rank-0 input, an input with no values per
/// channel, or `gamma` / `beta` not of the channel count;
/// [`Error::InvalidConfig`] if `ε` is negative or NaN, or `σ²_B + ε <= 0`
/// for a channel (a constant channel with `ε = 0`). NaN inputs are not an
/// error: they give NaN in their channel.
///
/// ```
/// use mobilenet::Tensor;
/// use mobilenet::layers::batch_norm_train;
/// // One channel, values 1..4: mean 2.5, biased variance 1.25.
/// let x = Tensor::new(vec![1, 2, 2, 1], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
/// let bn = batch_norm_train(&x, &[1.0], &[0.0], 0.0).unwrap();
/// assert_eq!((bn.mean[0], bn.var[0], bn.count), (2.5, 1.25, 4));
/// let s = 1.25f32.sqrt();
/// for (y, x) in bn.output.data().iter().zip(x.data()) {
///     assert!((y - (x - 2.5) / s).abs() < 1e-6);
/// }
/// ```
pub fn batch_norm_train(
    input: &Tensor,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> Result<BatchNormTrain> {
    const WHAT: &str = "batch_norm_train";
    let (count, channels) = train_dims(input, WHAT)?;
    check_len(WHAT, "gamma", gamma, channels)?;
    check_len(WHAT, "beta", beta, channels)?;
    let mut out = input.clone();
    if channels == 0 {
        return Ok(BatchNormTrain {
            output: out,
            mean: Vec::new(),
            var: Vec::new(),
            count,
        });
    }
    let n = count as f64;
    let mut mean = vec![0.0f64; channels];
    for row in input.data().chunks_exact(channels) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let mut var = vec![0.0f64; channels];
    for row in input.data().chunks_exact(channels) {
        for ((s, &m), &v) in var.iter_mut().zip(&mean).zip(row) {
            *s += (f64::from(v) - m).powi(2);
        }
    }
    var.iter_mut().for_each(|s| *s /= n);
    let inv = (0..channels)
        .map(|c| inv_std(WHAT, c, var[c], eps))
        .collect::<Result<Vec<f64>>>()?;
    for row in out.data_mut().chunks_exact_mut(channels) {
        for (c, v) in row.iter_mut().enumerate() {
            let normalized = (f64::from(*v) - mean[c]) * inv[c];
            *v = (f64::from(gamma[c]) * normalized + f64::from(beta[c])) as f32;
        }
    }
    Ok(BatchNormTrain {
        output: out,
        mean: mean.iter().map(|&m| m as f32).collect(),
        var: var.iter().map(|&v| v as f32).collect(),
        count,
    })
}

/// Gradients of a scalar loss with respect to the input and parameters of
/// [`batch_norm_train`].
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNormGrads {
    /// `∂L/∂x`, the shape of the input.
    pub input: Tensor,
    /// `∂L/∂γ`, one per channel.
    pub gamma: Vec<f32>,
    /// `∂L/∂β`, one per channel.
    pub beta: Vec<f32>,
}

/// Backward pass of [`batch_norm_train`], including the gradient through
/// the batch mean and variance (each output depends on every input of its
/// channel). With `x̂ = (x - μ_B) / σ`, `σ = sqrt(σ²_B + ε)`, `g = ∂L/∂y` and
/// means over the `n` values of a channel:
///
/// ```text
/// ∂L/∂β = Σ g
/// ∂L/∂γ = Σ g x̂
/// ∂L/∂x = γ / σ · (g - mean(g) - x̂ · mean(g x̂))
/// ```
///
/// The last line is what remains of `γ/σ · g` after adding the paths through
/// `μ_B` (which removes `mean(g)`) and through `σ²_B` (which removes the
/// component along `x̂`). Dropping those two terms is the classic bug; it is
/// only right in inference mode.
///
/// `mean` and `var` are the batch statistics [`batch_norm_train`] returned
/// (the biased variance) and `eps` the same ε. Sums are taken in f64.
///
/// Errors: [`Error::Shape`] for the cases [`batch_norm_train`] rejects, if
/// `mean` / `var` are not of the channel count or `grad_output` does not
/// have the input's shape; [`Error::InvalidConfig`] if `ε` is negative or
/// NaN or `var + ε <= 0`.
///
/// ```
/// use mobilenet::Tensor;
/// use mobilenet::layers::{batch_norm_train, batch_norm_train_backward};
/// let x = Tensor::new(vec![4, 1], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
/// let fwd = batch_norm_train(&x, &[2.0], &[0.0], 1e-5).unwrap();
/// // A gradient that is the same everywhere only shifts the batch, which
/// // batch norm removes: ∂L/∂x = 0, ∂L/∂β = Σ g, ∂L/∂γ = Σ x̂ = 0.
/// let g = Tensor::new(vec![4, 1], vec![1.0; 4]).unwrap();
/// let grads = batch_norm_train_backward(&x, &[2.0], &fwd.mean, &fwd.var, 1e-5, &g).unwrap();
/// assert!(grads.input.data().iter().all(|v| v.abs() < 1e-6));
/// assert_eq!(grads.beta, vec![4.0]);
/// assert!(grads.gamma[0].abs() < 1e-6);
/// ```
pub fn batch_norm_train_backward(
    input: &Tensor,
    gamma: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
    grad_output: &Tensor,
) -> Result<BatchNormGrads> {
    const WHAT: &str = "batch_norm_train_backward";
    let (count, channels) = train_dims(input, WHAT)?;
    check_len(WHAT, "gamma", gamma, channels)?;
    check_len(WHAT, "mean", mean, channels)?;
    check_len(WHAT, "var", var, channels)?;
    if grad_output.shape() != input.shape() {
        shape_err!(
            "{WHAT}: grad_output has shape {:?} but the input has shape {:?}",
            grad_output.shape(),
            input.shape()
        );
    }
    let inv = (0..channels)
        .map(|c| inv_std(WHAT, c, f64::from(var[c]), eps))
        .collect::<Result<Vec<f64>>>()?;
    if channels == 0 {
        return Ok(BatchNormGrads {
            input: input.clone(),
            gamma: Vec::new(),
            beta: Vec::new(),
        });
    }
    let x_hat = |c: usize, v: f32| (f64::from(v) - f64::from(mean[c])) * inv[c];
    let mut sum_g = vec![0.0f64; channels];
    let mut sum_g_xhat = vec![0.0f64; channels];
    for (x_row, g_row) in input
        .data()
        .chunks_exact(channels)
        .zip(grad_output.data().chunks_exact(channels))
    {
        for c in 0..channels {
            let g = f64::from(g_row[c]);
            sum_g[c] += g;
            sum_g_xhat[c] += g * x_hat(c, x_row[c]);
        }
    }
    let n = count as f64;
    let mut grad_input = grad_output.clone();
    for (x_row, g_row) in input
        .data()
        .chunks_exact(channels)
        .zip(grad_input.data_mut().chunks_exact_mut(channels))
    {
        for c in 0..channels {
            let g = f64::from(g_row[c]);
            let centered = g - sum_g[c] / n - x_hat(c, x_row[c]) * sum_g_xhat[c] / n;
            g_row[c] = (f64::from(gamma[c]) * inv[c] * centered) as f32;
        }
    }
    Ok(BatchNormGrads {
        input: grad_input,
        gamma: sum_g_xhat.iter().map(|&s| s as f32).collect(),
        beta: sum_g.iter().map(|&s| s as f32).collect(),
    })
}
