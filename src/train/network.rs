//! A MobileNet in training form: weights as flat parameter slices, batch
//! norm in training mode, and a backward pass over a whole batch.
//!
//! The inference engine folds BN into the weights and fuses layers; training
//! cannot (the batch statistics change every step), so this graph keeps each
//! convolution, its batch norm and its activation apart and stores what the
//! backward pass needs: every conv output `z` (before BN) and every
//! activation `a` (after BN + clamp). The arithmetic goes through the
//! kernels: forward convolutions through the inference kernels (weights
//! repacked each step, a `D_K²·M·N`-sized cost next to the `D_F²` factor),
//! pointwise backward as two GEMMs (`dX = dZ·W`, `dW = dZᵀ·X`), depthwise
//! and stem backward through [`crate::kernels::conv_grad`]. Work is split
//! over images or rows with rayon; callers choose the thread count by
//! running inside a [`crate::engine::Parallelism`].

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernels::conv_grad::{
    conv3x3_grad_weight_nhwc, depthwise3x3_grad_input_nhwc, depthwise3x3_grad_weight_nhwc,
    oihw_from_taps, taps_from_oihw,
};
use crate::kernels::depthwise::{Conv3x3Geometry, PackedDepthwise3x3};
use crate::kernels::gemm::{MatRef, matmul};
use crate::kernels::pointwise::PackedPointwise;
use crate::kernels::stem::PackedStemConv3x3;
use crate::kernels::{Epilogue, Isa, batch_norm};
use crate::layers::{Activation, BatchNorm};
use crate::model::network::{Classifier, ConvBn};
use crate::model::{Architecture, LayerKind, LayerSpec, MobileNet, Variant};
use crate::tensor::Tensor;
use crate::train::optim::{ParamGroup, ParamSpec};

/// Most rows of a pointwise GEMM handed to one rayon task.
const ROWS_PER_TASK: usize = 512;

/// Rows per task of a pointwise GEMM over `rows` rows: at most
/// [`ROWS_PER_TASK`], fewer when that would leave a thread idle (the last
/// layers of a small-image batch have only a few hundred rows). Rows are
/// computed independently, so the split changes no bit.
fn rows_per_task(rows: usize) -> usize {
    rows.div_ceil(rayon::current_num_threads().max(1))
        .clamp(1, ROWS_PER_TASK)
}

/// How one training step treats the network.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepOptions {
    /// Label smoothing ε of the cross-entropy (0 = none).
    pub label_smoothing: f32,
    /// Weight of the batch statistics in the running ones (PyTorch's BN
    /// `momentum`; TF's `decay` d is `1 - d`).
    pub bn_momentum: f32,
    /// Train only the classifier, with batch norm in inference mode (no
    /// statistics update) and no gradient into the backbone.
    pub freeze_backbone: bool,
    /// Seed of this step's dropout mask (derive it from the run's seed and
    /// the step number so that a resumed run draws the same masks).
    pub dropout_seed: u64,
}

impl Default for StepOptions {
    fn default() -> Self {
        StepOptions {
            label_smoothing: 0.0,
            bn_momentum: 0.1,
            freeze_backbone: false,
            dropout_seed: 0,
        }
    }
}

/// What a forward + backward pass measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Mean cross-entropy over the batch (with label smoothing if set).
    pub loss: f32,
    /// Images whose arg-max logit is their label.
    pub correct: usize,
}

/// One convolution + batch norm in training form.
#[derive(Clone, Debug)]
struct ConvLayer {
    spec: LayerSpec,
    /// Conv geometry for 3x3 layers (`None` for pointwise).
    geom: Option<Conv3x3Geometry>,
    /// Running statistics and ε (γ and β live in the parameter list).
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
    eps: f32,
}

/// Per-layer tensors a forward pass keeps for the backward pass.
#[derive(Debug, Default)]
struct LayerCache {
    /// Conv output before BN, `[B, H_out, W_out, C_out]`.
    z: Vec<f32>,
    /// Activation after BN + clamp (the next layer's input).
    a: Vec<f32>,
    /// Batch mean and 1 / sqrt(var + ε) of `z` per channel (or the running
    /// ones when frozen).
    mean: Vec<f32>,
    inv_std: Vec<f32>,
}

/// A MobileNet being trained (see the [module docs](self)).
#[derive(Debug)]
pub struct TrainNet {
    architecture: Architecture,
    layers: Vec<ConvLayer>,
    /// Parameters in [`TrainNet::param_specs`] order, and their gradients.
    params: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
    specs: Vec<ParamSpec>,
    activation: Activation,
    dropout: f32,
    isa: Isa,
    caches: Vec<LayerCache>,
    pooled: Vec<f32>,
    mask: Vec<f32>,
    logits: Vec<f32>,
    /// Gradient of the mean loss with respect to the logits.
    dlogits: Vec<f32>,
    /// The backward pass's two activation-gradient buffers, kept between
    /// steps: fresh ones would cost page faults on every step.
    grad_buffers: [Vec<f32>; 2],
}

/// Index of layer `l`'s weight, γ and β in the parameter list.
fn weight_index(l: usize) -> usize {
    3 * l
}
fn gamma_index(l: usize) -> usize {
    3 * l + 1
}
fn beta_index(l: usize) -> usize {
    3 * l + 2
}

impl TrainNet {
    /// Takes the weights and batch-norm statistics of `net` for training.
    ///
    /// Only the separable networks train (paper Table 1 and the shallow
    /// variant): Conv MobileNet's full 3x3 convolutions have no fast
    /// backward kernel here.
    ///
    /// ```
    /// use mobilenet::model::{MobileNet, MobileNetConfig};
    /// use mobilenet::train::network::{StepOptions, TrainNet};
    /// let cfg = MobileNetConfig { alpha: 0.25, resolution: 32, classes: 3, ..Default::default() };
    /// let mut net = TrainNet::new(&MobileNet::random(&cfg, 1)?)?;
    /// let images = vec![0.5f32; 2 * 32 * 32 * 3];
    /// let stats = net.forward_backward(&images, &[0, 2], &StepOptions::default())?;
    /// assert!(stats.loss.is_finite());
    /// # Ok::<(), mobilenet::Error>(())
    /// ```
    pub fn new(net: &MobileNet) -> Result<TrainNet> {
        let architecture = net.architecture().clone();
        let config = architecture.config().clone();
        if config.variant == Variant::Conv {
            return Err(Error::InvalidConfig(
                "training supports the separable networks (mobilenet, shallow), not Conv MobileNet"
                    .into(),
            ));
        }
        let isa = Isa::detect();
        let mut layers = Vec::new();
        let mut params = Vec::new();
        let mut specs = Vec::new();
        let conv_specs = architecture
            .layers()
            .iter()
            .filter(|s| s.kind.has_batch_norm());
        for (spec, conv) in conv_specs.zip(net.convs()) {
            let geom = match spec.kind {
                LayerKind::Pointwise => None,
                _ => Some(Conv3x3Geometry::new(
                    spec.input[0],
                    spec.input[1],
                    spec.stride,
                    spec.padding.top,
                    spec.padding.bottom,
                    spec.padding.left,
                    spec.padding.right,
                )?),
            };
            let group = match spec.kind {
                LayerKind::Depthwise => ParamGroup::DepthwiseWeights,
                _ => ParamGroup::Weights,
            };
            let bn = &conv.bn;
            for (suffix, data, group) in [
                ("weight", conv.weight.data().to_vec(), group),
                ("bn.gamma", bn.gamma.clone(), ParamGroup::BatchNorm),
                ("bn.beta", bn.beta.clone(), ParamGroup::BatchNorm),
            ] {
                specs.push(ParamSpec {
                    name: format!("{}.{suffix}", spec.name),
                    len: data.len(),
                    group,
                });
                params.push(data);
            }
            layers.push(ConvLayer {
                spec: spec.clone(),
                geom,
                running_mean: bn.mean.clone(),
                running_var: bn.var.clone(),
                eps: bn.eps,
            });
        }
        let c = net.classifier();
        for (name, data, group) in [
            ("fc.weight", c.weight.data().to_vec(), ParamGroup::Weights),
            ("fc.bias", c.bias.data().to_vec(), ParamGroup::Bias),
        ] {
            specs.push(ParamSpec {
                name: name.into(),
                len: data.len(),
                group,
            });
            params.push(data);
        }
        let grads = params.iter().map(|p| vec![0.0; p.len()]).collect();
        let caches = layers.iter().map(|_| LayerCache::default()).collect();
        Ok(TrainNet {
            activation: config.activation,
            dropout: config.dropout,
            architecture,
            layers,
            params,
            grads,
            specs,
            isa,
            caches,
            pooled: Vec::new(),
            mask: Vec::new(),
            logits: Vec::new(),
            dlogits: Vec::new(),
            grad_buffers: Default::default(),
        })
    }

    /// Uses `isa`'s kernels for the forward convolutions (tests run every
    /// instruction set this way).
    pub fn set_isa(&mut self, isa: Isa) {
        self.isa = isa;
    }

    /// The architecture being trained.
    pub fn architecture(&self) -> &Architecture {
        &self.architecture
    }

    /// Names, sizes and weight-decay groups of the parameters, in the order
    /// of [`TrainNet::params_and_grads`].
    pub fn param_specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// Every parameter with its gradient from the last
    /// [`TrainNet::forward_backward`], for the optimizer.
    pub fn params_and_grads(&mut self) -> impl Iterator<Item = (&mut [f32], &[f32])> {
        self.params
            .iter_mut()
            .zip(&self.grads)
            .map(|(p, g)| (p.as_mut_slice(), g.as_slice()))
    }

    /// The parameters (read-only), in [`TrainNet::param_specs`] order.
    pub fn params(&self) -> &[Vec<f32>] {
        &self.params
    }

    /// The gradients of the last [`TrainNet::forward_backward`].
    pub fn grads(&self) -> &[Vec<f32>] {
        &self.grads
    }

    /// Running means and variances of every batch norm, in layer order.
    pub fn running_stats(&self) -> impl Iterator<Item = (&str, &[f32], &[f32])> {
        self.layers.iter().map(|l| {
            (
                l.spec.name.as_str(),
                l.running_mean.as_slice(),
                l.running_var.as_slice(),
            )
        })
    }

    /// Replaces the parameters and running statistics with those of `net`
    /// (same architecture), e.g. a checkpoint being resumed.
    pub fn load_from(&mut self, net: &MobileNet) -> Result<()> {
        if net.architecture() != &self.architecture {
            return Err(Error::Shape(format!(
                "the checkpoint is a {}, this run trains a {}",
                net.config().name(),
                self.architecture.config().name()
            )));
        }
        let mut fresh = TrainNet::new(net)?;
        fresh.isa = self.isa;
        *self = fresh;
        Ok(())
    }

    /// The network as trained so far, with its running statistics, as an
    /// inference [`MobileNet`].
    pub fn to_model(&self) -> Result<MobileNet> {
        let mut convs = Vec::with_capacity(self.layers.len());
        for (l, layer) in self.layers.iter().enumerate() {
            let spec = &layer.spec;
            let per_group = match spec.kind {
                LayerKind::Depthwise => 1,
                _ => spec.input[2],
            };
            convs.push(ConvBn {
                weight: Tensor::new(
                    vec![spec.output[2], per_group, spec.kernel, spec.kernel],
                    self.params[weight_index(l)].clone(),
                )?,
                bn: BatchNorm {
                    gamma: self.params[gamma_index(l)].clone(),
                    beta: self.params[beta_index(l)].clone(),
                    mean: layer.running_mean.clone(),
                    var: layer.running_var.clone(),
                    eps: layer.eps,
                },
            });
        }
        let n = self.params.len();
        let classes = self.params[n - 1].len();
        let classifier = Classifier {
            weight: Tensor::new(
                vec![classes, self.params[n - 2].len() / classes.max(1)],
                self.params[n - 2].clone(),
            )?,
            bias: Tensor::new(vec![classes], self.params[n - 1].clone())?,
        };
        MobileNet::from_parts(self.architecture.clone(), convs, classifier)
    }

    /// The logits `[B, classes]` of the last forward pass.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// One forward and backward pass over a batch: `images` NHWC
    /// `[B, R, R, 3]` (normalised), `labels` one class per image. Fills the
    /// gradients of the mean loss (read them with
    /// [`TrainNet::params_and_grads`]) and, unless the backbone is frozen,
    /// updates the running BN statistics. Uses the rayon pool it runs in.
    pub fn forward_backward(
        &mut self,
        images: &[f32],
        labels: &[usize],
        options: &StepOptions,
    ) -> Result<StepStats> {
        let batch = labels.len();
        let r = self.architecture.config().resolution;
        if batch == 0 || Some(images.len()) != batch.checked_mul(r * r * 3) {
            return Err(Error::Shape(format!(
                "a batch of {batch} images at {r}x{r}x3 needs {} values, got {}",
                batch.saturating_mul(r * r * 3),
                images.len()
            )));
        }
        let classes = self.architecture.config().classes;
        if let Some((i, &l)) = labels.iter().enumerate().find(|(_, l)| **l >= classes) {
            return Err(Error::InvalidConfig(format!(
                "label {l} of image {i} is out of range for {classes} classes"
            )));
        }
        if !(0.0..1.0).contains(&options.label_smoothing) {
            return Err(Error::InvalidConfig(format!(
                "label smoothing must be in [0, 1), got {}",
                options.label_smoothing
            )));
        }
        self.forward(images, batch, options)?;
        let (loss, correct) = self.loss_and_logit_grad(labels, options.label_smoothing);
        self.backward(images, batch, options)?;
        Ok(StepStats { loss, correct })
    }

    /// Training-mode forward pass (BN on batch statistics unless frozen).
    fn forward(&mut self, images: &[f32], batch: usize, options: &StepOptions) -> Result<()> {
        let train_bn = !options.freeze_backbone;
        let (lo, hi) = clamp_bounds(self.activation);
        for l in 0..self.layers.len() {
            let (done, rest) = self.caches.split_at_mut(l);
            let cache = &mut rest[0];
            let input: &[f32] = if l == 0 { images } else { &done[l - 1].a };
            let layer = &self.layers[l];
            let spec = &layer.spec;
            let rows = batch * spec.output[0] * spec.output[1];
            let c = spec.output[2];
            cache.z.resize(rows * c, 0.0);
            conv_forward(
                self.isa,
                layer,
                &self.params[weight_index(l)],
                input,
                &mut cache.z,
                batch,
            )?;
            // Batch norm statistics.
            let (mean, inv_std) = if train_bn {
                let (mean, var) = channel_mean_var(self.isa, &cache.z, c)?;
                let layer = &mut self.layers[l];
                let n = rows as f64;
                let unbiased = if rows > 1 { n / (n - 1.0) } else { 1.0 };
                let m = f64::from(options.bn_momentum);
                for ch in 0..c {
                    let rm = &mut layer.running_mean[ch];
                    *rm = ((1.0 - m) * f64::from(*rm) + m * mean[ch]) as f32;
                    let rv = &mut layer.running_var[ch];
                    *rv = ((1.0 - m) * f64::from(*rv) + m * var[ch] * unbiased) as f32;
                }
                let eps = f64::from(layer.eps);
                (
                    mean.iter().map(|&v| v as f32).collect::<Vec<f32>>(),
                    var.iter()
                        .map(|&v| (1.0 / (v + eps).sqrt()) as f32)
                        .collect::<Vec<f32>>(),
                )
            } else {
                let layer = &self.layers[l];
                let eps = f64::from(layer.eps);
                (
                    layer.running_mean.clone(),
                    layer
                        .running_var
                        .iter()
                        .map(|&v| (1.0 / (f64::from(v) + eps).sqrt()) as f32)
                        .collect(),
                )
            };
            cache.mean = mean;
            cache.inv_std = inv_std;
            // y = clamp((z - mean) * (inv_std * γ) + β).
            let gamma = &self.params[gamma_index(l)];
            let beta = &self.params[beta_index(l)];
            let mean = &cache.mean;
            let scale: Vec<f32> = (0..c).map(|ch| cache.inv_std[ch] * gamma[ch]).collect();
            cache.a.resize(rows * c, 0.0);
            let isa = self.isa;
            cache
                .a
                .par_chunks_mut(c * ROWS_PER_PARTIAL)
                .zip(cache.z.par_chunks(c * ROWS_PER_PARTIAL))
                .try_for_each(|(a, z)| {
                    batch_norm::normalize_clamp(isa, z, a, c, mean, &scale, beta, (lo, hi))
                })?;
        }
        // Global average pool, dropout, classifier.
        let last = self
            .layers
            .last()
            .ok_or_else(|| Error::InvalidConfig("the network has no convolution layers".into()))?;
        let [h, w, c] = last.spec.output;
        let a = &self.caches[self.layers.len() - 1].a;
        self.pooled.clear();
        self.pooled.resize(batch * c, 0.0);
        let inv = 1.0 / (h * w) as f32;
        for (b, pooled) in self.pooled.chunks_exact_mut(c).enumerate() {
            for px in a[b * h * w * c..(b + 1) * h * w * c].chunks_exact(c) {
                for (p, &v) in pooled.iter_mut().zip(px) {
                    *p += v;
                }
            }
            pooled.iter_mut().for_each(|p| *p *= inv);
        }
        self.mask.clear();
        if self.dropout > 0.0 {
            let keep = 1.0 - self.dropout;
            let mut rng = ChaCha8Rng::seed_from_u64(options.dropout_seed);
            self.mask.extend((0..batch * c).map(|_| {
                if rng.random::<f32>() < keep {
                    1.0 / keep
                } else {
                    0.0
                }
            }));
            for (p, m) in self.pooled.iter_mut().zip(&self.mask) {
                *p *= m;
            }
        }
        let n = self.params.len();
        let classes = self.params[n - 1].len();
        self.logits.resize(batch * classes, 0.0);
        let pooled = MatRef::row_major(&self.pooled, batch, c)?;
        let weight = MatRef::row_major(&self.params[n - 2], classes, c)?;
        matmul(pooled, weight.t(), &mut self.logits, false)?;
        for row in self.logits.chunks_exact_mut(classes) {
            for (v, &b) in row.iter_mut().zip(&self.params[n - 1]) {
                *v += b;
            }
        }
        Ok(())
    }

    /// Mean softmax cross-entropy (with label smoothing) and the number of
    /// correct arg-maxes; leaves the gradient with respect to the logits in
    /// `self.dlogits`.
    fn loss_and_logit_grad(&mut self, labels: &[usize], smoothing: f32) -> (f32, usize) {
        let classes = self.architecture.config().classes;
        let batch = labels.len();
        let mut loss = 0.0f64;
        let mut correct = 0;
        let mut grad = std::mem::take(&mut self.dlogits);
        grad.clear();
        grad.resize(batch * classes, 0.0);
        for (b, &label) in labels.iter().enumerate() {
            let row = &self.logits[b * classes..(b + 1) * classes];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let arg_max = row.iter().position(|&v| v == max).unwrap_or(0);
            if arg_max == label {
                correct += 1;
            }
            let sum: f64 = row.iter().map(|&v| f64::from(v - max).exp()).sum();
            let log_sum = sum.ln() + f64::from(max);
            let eps = f64::from(smoothing);
            let uniform = eps / classes as f64;
            for (k, (&v, g)) in row
                .iter()
                .zip(&mut grad[b * classes..(b + 1) * classes])
                .enumerate()
            {
                let target = uniform + if k == label { 1.0 - eps } else { 0.0 };
                let log_p = f64::from(v) - log_sum;
                loss -= target * log_p;
                *g = ((log_p.exp() - target) / batch as f64) as f32;
            }
        }
        self.dlogits = grad;
        ((loss / batch as f64) as f32, correct)
    }

    /// Backward pass from the logit gradient left in `self.dlogits`.
    fn backward(&mut self, images: &[f32], batch: usize, options: &StepOptions) -> Result<()> {
        let n = self.params.len();
        let classes = self.params[n - 1].len();
        let last = self.layers.len() - 1;
        let [h, w, c] = self.layers[last].spec.output;
        let dlogits = MatRef::row_major(&self.dlogits, batch, classes)?;
        // Classifier: dW = dLᵀ·pooled, db = Σ dL, dpooled = dL·W.
        let pooled = MatRef::row_major(&self.pooled, batch, c)?;
        matmul(dlogits.t(), pooled, &mut self.grads[n - 2], false)?;
        let db = &mut self.grads[n - 1];
        db.fill(0.0);
        for row in self.dlogits.chunks_exact(classes) {
            for (d, &g) in db.iter_mut().zip(row) {
                *d += g;
            }
        }
        for g in &mut self.grads[..n - 2] {
            g.fill(0.0);
        }
        if options.freeze_backbone {
            return Ok(());
        }
        let mut dpooled = vec![0.0f32; batch * c];
        let weight = MatRef::row_major(&self.params[n - 2], classes, c)?;
        matmul(dlogits, weight, &mut dpooled, false)?;
        if !self.mask.is_empty() {
            for (d, m) in dpooled.iter_mut().zip(&self.mask) {
                *d *= m;
            }
        }
        // Global average pool: every pixel gets dpooled / (H·W).
        let inv = 1.0 / (h * w) as f32;
        let [mut grad, mut grad_prev] = std::mem::take(&mut self.grad_buffers);
        grad.clear();
        for d in dpooled.chunks_exact(c) {
            for _ in 0..h * w {
                grad.extend(d.iter().map(|v| v * inv));
            }
        }
        let (lo, hi) = clamp_bounds(self.activation);
        for l in (0..self.layers.len()).rev() {
            let layer = &self.layers[l];
            let spec = &layer.spec;
            let cache = &self.caches[l];
            let c = spec.output[2];
            // Activation and batch norm, in place: grad becomes dL/dz.
            let (dgamma, dbeta) = bn_act_backward(
                self.isa,
                &mut grad,
                cache,
                &self.params[gamma_index(l)],
                c,
                (lo, hi),
            )?;
            self.grads[gamma_index(l)].copy_from_slice(&dgamma);
            self.grads[beta_index(l)].copy_from_slice(&dbeta);
            let input: &[f32] = if l == 0 {
                images
            } else {
                &self.caches[l - 1].a
            };
            let need_input_grad = l > 0;
            if need_input_grad {
                grad_prev.resize(input.len(), 0.0);
            }
            conv_backward(
                self.isa,
                layer,
                &self.params[weight_index(l)],
                input,
                &grad,
                &mut self.grads[weight_index(l)],
                need_input_grad.then_some(grad_prev.as_mut_slice()),
            )?;
            std::mem::swap(&mut grad, &mut grad_prev);
        }
        self.grad_buffers = [grad, grad_prev];
        Ok(())
    }
}

/// The activation as clamp bounds.
fn clamp_bounds(activation: Activation) -> (f32, f32) {
    let e = match activation {
        Activation::Relu => Epilogue::RELU,
        Activation::Relu6 => Epilogue::RELU6,
        Activation::Identity => Epilogue::IDENTITY,
    };
    (e.min, e.max)
}

/// Rows of `[rows, c]` data summed in f32 before joining the f64 totals:
/// short enough to keep f32 rounding negligible, long enough for rayon.
const ROWS_PER_PARTIAL: usize = 256;

/// Sums per-chunk f64 partial vectors.
fn add_f64(mut a: Vec<f64>, b: Vec<f64>) -> Vec<f64> {
    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
    a
}

/// Two f32 per-channel partial sums as one f64 vector `[a..., b...]`.
fn widen_pair(a: &[f32], b: &[f32]) -> Vec<f64> {
    a.iter().chain(b).map(|&v| f64::from(v)).collect()
}

/// Per-channel mean and biased variance of `[rows, c]` data. Sums are
/// taken around a per-channel shift (the first row), which keeps
/// `E[(x-k)²] - E[x-k]²` accurate when the mean is large next to the spread;
/// chunks of rows are summed in f32, the chunk totals in f64.
fn channel_mean_var(isa: Isa, z: &[f32], c: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let rows = z.len() / c;
    let shift = &z[..c];
    let totals = z
        .par_chunks(c * ROWS_PER_PARTIAL)
        .map(|part| {
            let mut s1 = vec![0.0f32; c];
            let mut s2 = vec![0.0f32; c];
            batch_norm::shifted_channel_sums(isa, part, c, shift, &mut s1, &mut s2)?;
            Ok(widen_pair(&s1, &s2))
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .fold(vec![0.0f64; 2 * c], add_f64);
    let n = rows as f64;
    let mut mean = Vec::with_capacity(c);
    let mut var = Vec::with_capacity(c);
    for ch in 0..c {
        let m = totals[ch] / n;
        mean.push(m + f64::from(shift[ch]));
        var.push((totals[c + ch] / n - m * m).max(0.0));
    }
    Ok((mean, var))
}

/// Backward through clamp and batch norm, in place: on entry `grad` is
/// dL/da, on exit dL/dz. Returns (dγ, dβ).
///
/// With x̂ = (z - μ)·σ⁻¹ and dy = dL/da · [lo < a < hi]:
/// dβ = Σ dy, dγ = Σ dy·x̂, dz = γσ⁻¹ (dy - dβ/n - x̂·dγ/n) in training
/// mode (the statistics depend on z). Frozen statistics never get here:
/// the backbone then has no gradient.
fn bn_act_backward(
    isa: Isa,
    grad: &mut [f32],
    cache: &LayerCache,
    gamma: &[f32],
    c: usize,
    clamp: (f32, f32),
) -> Result<(Vec<f32>, Vec<f32>)> {
    let chunk = c * ROWS_PER_PARTIAL;
    let (mean, inv_std) = (&cache.mean[..c], &cache.inv_std[..c]);
    // Pass 1: mask the gradient, gather Σ dy and Σ dy·x̂.
    let totals = grad
        .par_chunks_mut(chunk)
        .zip(cache.a.par_chunks(chunk))
        .zip(cache.z.par_chunks(chunk))
        .map(|((g, a), z)| {
            let mut dg = vec![0.0f32; c];
            let mut db = vec![0.0f32; c];
            batch_norm::backward_sums(isa, g, a, z, c, mean, inv_std, clamp, &mut dg, &mut db)?;
            Ok(widen_pair(&dg, &db))
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .fold(vec![0.0f64; 2 * c], add_f64);
    let (dgamma, dbeta) = totals.split_at(c);
    let n = (grad.len() / c) as f64;
    let k: Vec<f32> = (0..c).map(|ch| gamma[ch] * inv_std[ch]).collect();
    let dg_n: Vec<f32> = dgamma.iter().map(|v| (v / n) as f32).collect();
    let db_n: Vec<f32> = dbeta.iter().map(|v| (v / n) as f32).collect();
    // Pass 2: dz.
    grad.par_chunks_mut(chunk)
        .zip(cache.z.par_chunks(chunk))
        .try_for_each(|(g, z)| {
            batch_norm::backward_input(isa, g, z, c, mean, inv_std, &k, &dg_n, &db_n)
        })?;
    Ok((
        dgamma.iter().map(|&v| v as f32).collect(),
        dbeta.iter().map(|&v| v as f32).collect(),
    ))
}

/// Forward convolution of a whole batch into `z` (no bias, no clamp).
fn conv_forward(
    isa: Isa,
    layer: &ConvLayer,
    weight: &[f32],
    input: &[f32],
    z: &mut [f32],
    batch: usize,
) -> Result<()> {
    let spec = &layer.spec;
    let (c_in, c_out) = (spec.input[2], spec.output[2]);
    let in_len = spec.input[0] * spec.input[1] * c_in;
    let out_len = spec.output[0] * spec.output[1] * c_out;
    let zero_bias = vec![0.0f32; c_out];
    match (spec.kind, layer.geom) {
        (LayerKind::Pointwise, _) => {
            let packed = PackedPointwise::pack(isa, weight, &zero_bias, c_in, c_out)?;
            let per_task = rows_per_task(z.len() / c_out.max(1));
            z.par_chunks_mut(per_task * c_out)
                .zip(input.par_chunks(per_task * c_in))
                .try_for_each(|(out, inp)| {
                    packed.run(inp, out, inp.len() / c_in, Epilogue::IDENTITY)
                })
        }
        (LayerKind::Depthwise, Some(geom)) => {
            let packed = PackedDepthwise3x3::pack(isa, weight, &zero_bias, c_out)?;
            z.par_chunks_mut(out_len)
                .zip(input.par_chunks(in_len))
                .try_for_each(|(out, inp)| {
                    packed.run(inp, out, &geom, 0..geom.out_h, Epilogue::IDENTITY)
                })
        }
        (_, Some(geom)) => {
            let packed = PackedStemConv3x3::pack(isa, weight, &zero_bias, c_in, c_out)?;
            z.par_chunks_mut(out_len)
                .zip(input.par_chunks(in_len))
                .try_for_each(|(out, inp)| {
                    packed.run(inp, out, &geom, 0..geom.out_h, Epilogue::IDENTITY)
                })
        }
        _ => Err(Error::InvalidConfig(format!(
            "{}: no training kernel for a {:?} layer",
            spec.name, spec.kind
        ))),
    }?;
    debug_assert_eq!(z.len(), batch * out_len);
    Ok(())
}

/// Rows of a pointwise layer's `[rows, channels]` data whose share of the
/// weight gradient is summed apart, the shares then added in order. The
/// split is fixed by the shapes alone, never by the thread count, so that a
/// step gives the same bits with any number of threads.
const ROWS_PER_WEIGHT_PARTIAL: usize = 2048;

/// Images whose share of a depthwise or stem weight gradient is summed
/// apart (for the same reason).
const IMAGES_PER_WEIGHT_PARTIAL: usize = 4;

/// Pointwise weight gradient `dW [N, K] = dZᵀ [N, M] · X [M, K]` (`dz`
/// `[M, N]`, `x` `[M, K]`, M the rows of the batch). The rows are cut into
/// fixed parts (partial sums added in order); each part's product is split
/// by rows of dW across the threads, which changes no bit (each element is
/// the same dot product whichever block computes it).
fn pointwise_grad_weight(
    dz: &[f32],
    n: usize,
    x: &[f32],
    k: usize,
    grad_weight: &mut [f32],
) -> Result<()> {
    let (n, k) = (n.max(1), k.max(1));
    let rows = dz.len() / n;
    let parts = rows.div_ceil(ROWS_PER_WEIGHT_PARTIAL).max(1);
    // Blocks of dW rows per part: enough tasks for every thread when there
    // are few parts, in multiples of 8 rows (the GEMM's register tile).
    let blocks = rayon::current_num_threads().div_ceil(parts);
    let block_rows = n.div_ceil(blocks).next_multiple_of(8);
    let mut partials = vec![0.0f32; parts * n * k];
    partials
        .par_chunks_mut(n * k)
        .zip(dz.par_chunks(ROWS_PER_WEIGHT_PARTIAL * n))
        .zip(x.par_chunks(ROWS_PER_WEIGHT_PARTIAL * k))
        .try_for_each(|((part, d), x)| {
            let m = d.len() / n;
            let dt = MatRef::row_major(d, m, n)?.t();
            let x = MatRef::row_major(x, m, k)?;
            part.par_chunks_mut(block_rows * k)
                .enumerate()
                .try_for_each(|(b, out)| {
                    let start = b * block_rows;
                    matmul(dt.row_range(start..start + out.len() / k)?, x, out, false)
                })
        })?;
    let mut shares = partials.chunks_exact(n * k);
    if let Some(first) = shares.next() {
        grad_weight.copy_from_slice(first);
    }
    for share in shares {
        grad_weight.iter_mut().zip(share).for_each(|(g, s)| *g += s);
    }
    Ok(())
}

/// Adds `b` into `a` element-wise. Per-task partial sums are collected in
/// task order and folded with this sequentially, never with rayon's
/// `reduce`, whose tree follows work stealing: a step must give the same
/// bits every time for a resumed run to equal an uninterrupted one.
fn add_into(mut a: Vec<f32>, b: Vec<f32>) -> Vec<f32> {
    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
    a
}

/// Backward convolution of a whole batch: the weight gradient into
/// `grad_weight` (OIHW, overwritten) and, if asked, the input gradient.
fn conv_backward(
    isa: Isa,
    layer: &ConvLayer,
    weight: &[f32],
    input: &[f32],
    dz: &[f32],
    grad_weight: &mut [f32],
    grad_input: Option<&mut [f32]>,
) -> Result<()> {
    let spec = &layer.spec;
    let (c_in, c_out) = (spec.input[2], spec.output[2]);
    let in_len = spec.input[0] * spec.input[1] * c_in;
    let out_len = spec.output[0] * spec.output[1] * c_out;
    match (spec.kind, layer.geom) {
        (LayerKind::Pointwise, _) => {
            pointwise_grad_weight(dz, c_out, input, c_in, grad_weight)?;
            if let Some(dx) = grad_input {
                // dX [M, K] = dZ [M, N] · W [N, K].
                let w = MatRef::row_major(weight, c_out, c_in)?;
                let per_task = rows_per_task(dz.len() / c_out.max(1));
                dx.par_chunks_mut(per_task * c_in)
                    .zip(dz.par_chunks(per_task * c_out))
                    .try_for_each(|(dx, d)| {
                        let m = d.len() / c_out;
                        matmul(MatRef::row_major(d, m, c_out)?, w, dx, false)
                    })?;
            }
        }
        (LayerKind::Depthwise, Some(geom)) => {
            let taps = dz
                .par_chunks(IMAGES_PER_WEIGHT_PARTIAL * out_len)
                .zip(input.par_chunks(IMAGES_PER_WEIGHT_PARTIAL * in_len))
                .map(|(d, x)| {
                    let mut part = vec![0.0f32; 9 * c_out];
                    for (d, x) in d.chunks_exact(out_len).zip(x.chunks_exact(in_len)) {
                        depthwise3x3_grad_weight_nhwc(isa, &geom, c_out, x, d, &mut part)?;
                    }
                    Ok(part)
                })
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .fold(vec![0.0f32; 9 * c_out], add_into);
            grad_weight.fill(0.0);
            oihw_from_taps(&taps, 1, c_out, grad_weight)?;
            if let Some(dx) = grad_input {
                let mut w_taps = vec![0.0f32; 9 * c_out];
                taps_from_oihw(weight, 1, c_out, &mut w_taps)?;
                dx.par_chunks_mut(in_len)
                    .zip(dz.par_chunks(out_len))
                    .try_for_each(|(dx, d)| {
                        depthwise3x3_grad_input_nhwc(isa, &geom, c_out, &w_taps, d, dx)
                    })?;
            }
        }
        (_, Some(geom)) => {
            if grad_input.is_some() {
                return Err(Error::InvalidConfig(format!(
                    "{}: no input gradient for a full 3x3 convolution",
                    spec.name
                )));
            }
            let taps = dz
                .par_chunks(IMAGES_PER_WEIGHT_PARTIAL * out_len)
                .zip(input.par_chunks(IMAGES_PER_WEIGHT_PARTIAL * in_len))
                .map(|(d, x)| {
                    let mut part = vec![0.0f32; 9 * c_in * c_out];
                    for (d, x) in d.chunks_exact(out_len).zip(x.chunks_exact(in_len)) {
                        conv3x3_grad_weight_nhwc(isa, &geom, c_in, c_out, x, d, &mut part)?;
                    }
                    Ok(part)
                })
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .fold(vec![0.0f32; 9 * c_in * c_out], add_into);
            grad_weight.fill(0.0);
            oihw_from_taps(&taps, c_in, c_out, grad_weight)?;
        }
        _ => {
            return Err(Error::InvalidConfig(format!(
                "{}: no training kernel for a {:?} layer",
                spec.name, spec.kind
            )));
        }
    }
    Ok(())
}
