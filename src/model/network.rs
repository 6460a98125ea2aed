//! A MobileNet with weights, run forward on the plain reference layers.
//!
//! This is the oracle the fast engine is checked against: every layer is the
//! obviously-correct [`crate::layers`] function, batch norm is kept apart
//! from the conv (not folded), and nothing is fused.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::layers::{
    BatchNorm, Conv2dParams, activate, batch_norm, conv2d, fully_connected, global_avg_pool,
    softmax,
};
use crate::model::{Architecture, LayerKind, LayerSpec, MobileNetConfig};
use crate::tensor::Tensor;

/// Batch-norm ε of the TF-slim and Keras MobileNets.
pub const BN_EPSILON: f32 = 1e-3;

/// A convolution with the batch norm that follows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvBn {
    /// Weight `[C_out, C_in / groups, D_K, D_K]` (PyTorch layout; depthwise
    /// is `(C, 1, D_K, D_K)`).
    pub weight: Tensor,
    /// The batch norm after the convolution.
    pub bn: BatchNorm,
}

/// The classifier: weight `[classes, C]` and bias `[classes]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Classifier {
    /// Weight `[classes, C]` (PyTorch layout).
    pub weight: Tensor,
    /// Bias `[classes]`.
    pub bias: Tensor,
}

/// A MobileNet: its architecture and one [`ConvBn`] per convolution, in the
/// order of [`Architecture::layers`], then the classifier.
#[derive(Clone, Debug, PartialEq)]
pub struct MobileNet {
    architecture: Architecture,
    convs: Vec<ConvBn>,
    classifier: Classifier,
}

impl MobileNet {
    /// A network with seeded random weights: He-uniform convolutions
    /// (bound sqrt(6 / fan_in)), batch norms at their initial state
    /// (γ = 1, β = 0, μ = 0, σ² = 1) and a uniform ±1/sqrt(C) classifier,
    /// as PyTorch initialises `Linear`.
    ///
    /// ```
    /// use mobilenet::model::{MobileNet, MobileNetConfig};
    /// use mobilenet::Tensor;
    /// let cfg = MobileNetConfig { alpha: 0.25, resolution: 32, classes: 10, ..Default::default() };
    /// let net = MobileNet::random(&cfg, 7).unwrap();
    /// let logits = net.forward(&Tensor::zeros(vec![2, 32, 32, 3]).unwrap()).unwrap();
    /// assert_eq!(logits.shape(), &[2, 10]);
    /// ```
    pub fn random(config: &MobileNetConfig, seed: u64) -> Result<MobileNet> {
        let architecture = Architecture::new(config)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut uniform = |shape: Vec<usize>, bound: f32| {
            Tensor::from_fn(shape, |_| rng.random_range(-bound..=bound))
        };
        let mut convs = Vec::new();
        let mut classifier = None;
        for spec in architecture.layers() {
            let (c_in, c_out, k) = (spec.input[2], spec.output[2], spec.kernel);
            match spec.kind {
                LayerKind::Conv | LayerKind::Depthwise | LayerKind::Pointwise => {
                    let per_group = c_in / groups(spec);
                    let bound = (6.0 / (per_group * k * k) as f32).sqrt();
                    convs.push(ConvBn {
                        weight: uniform(vec![c_out, per_group, k, k], bound)?,
                        bn: BatchNorm::identity(c_out, BN_EPSILON),
                    });
                }
                LayerKind::FullyConnected => {
                    let bound = 1.0 / (c_in as f32).sqrt();
                    classifier = Some(Classifier {
                        weight: uniform(vec![c_out, c_in], bound)?,
                        bias: Tensor::zeros(vec![c_out])?,
                    });
                }
                LayerKind::GlobalAvgPool | LayerKind::Softmax => {}
            }
        }
        let classifier = classifier
            .ok_or_else(|| Error::InvalidConfig("the architecture has no classifier".into()))?;
        MobileNet::from_parts(architecture, convs, classifier)
    }

    /// Assembles a network from weights, checking every shape against the
    /// architecture. Importers of published checkpoints go through here.
    pub fn from_parts(
        architecture: Architecture,
        convs: Vec<ConvBn>,
        classifier: Classifier,
    ) -> Result<MobileNet> {
        let conv_specs: Vec<&LayerSpec> = architecture
            .layers()
            .iter()
            .filter(|l| l.kind.has_batch_norm())
            .collect();
        if conv_specs.len() != convs.len() {
            return Err(Error::Shape(format!(
                "the architecture has {} convolutions, got weights for {}",
                conv_specs.len(),
                convs.len()
            )));
        }
        for (spec, conv) in conv_specs.iter().zip(&convs) {
            let (c_in, c_out, k) = (spec.input[2], spec.output[2], spec.kernel);
            let expected = [c_out, c_in / groups(spec), k, k];
            if conv.weight.shape() != expected {
                return Err(Error::Shape(format!(
                    "{}: weight shape {:?}, expected {expected:?}",
                    spec.name,
                    conv.weight.shape()
                )));
            }
            if conv.bn.channels() != c_out {
                return Err(Error::Shape(format!(
                    "{}: batch norm has {} channels, expected {c_out}",
                    spec.name,
                    conv.bn.channels()
                )));
            }
        }
        let fc = architecture
            .layer("fc")
            .ok_or_else(|| Error::InvalidConfig("the architecture has no classifier".into()))?;
        let (c, classes) = (fc.input[2], fc.output[2]);
        if classifier.weight.shape() != [classes, c] || classifier.bias.shape() != [classes] {
            return Err(Error::Shape(format!(
                "fc: weight {:?} and bias {:?}, expected [{classes}, {c}] and [{classes}]",
                classifier.weight.shape(),
                classifier.bias.shape()
            )));
        }
        Ok(MobileNet {
            architecture,
            convs,
            classifier,
        })
    }

    /// The layer shapes.
    pub fn architecture(&self) -> &Architecture {
        &self.architecture
    }

    /// The configuration.
    pub fn config(&self) -> &MobileNetConfig {
        self.architecture.config()
    }

    /// The convolutions with their batch norms, in execution order.
    pub fn convs(&self) -> &[ConvBn] {
        &self.convs
    }

    /// The classifier.
    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    /// Logits `[N, classes]` for a batch of images `[N, R, R, 3]` (NHWC,
    /// already normalised).
    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        self.forward_traced(input, |_, _| {})
    }

    /// Class probabilities `[N, classes]`: softmax of [`MobileNet::forward`].
    pub fn predict(&self, input: &Tensor) -> Result<Tensor> {
        softmax(&self.forward(input)?)
    }

    /// Like [`MobileNet::forward`], calling `visit` with every layer's output
    /// (after batch norm and activation for convolutions) as it is computed:
    /// per-layer traces and feature extraction hang off this.
    pub fn forward_traced(
        &self,
        input: &Tensor,
        mut visit: impl FnMut(&LayerSpec, &Tensor),
    ) -> Result<Tensor> {
        let [n, h, w, c] = input.dims4("network input")?;
        let r = self.config().resolution;
        if n == 0 || [h, w, c] != [r, r, 3] {
            return Err(Error::Shape(format!(
                "network input must be [N >= 1, {r}, {r}, 3], got {:?}",
                input.shape()
            )));
        }
        let activation = self.config().activation;
        let mut convs = self.convs.iter();
        let mut x = input.clone();
        for spec in self.architecture.layers() {
            x = match spec.kind {
                LayerKind::Conv | LayerKind::Depthwise | LayerKind::Pointwise => {
                    let conv = convs
                        .next()
                        .ok_or_else(|| Error::Shape(format!("{}: no weights", spec.name)))?;
                    let params = Conv2dParams {
                        stride: [spec.stride, spec.stride],
                        dilation: [1, 1],
                        padding: spec.padding,
                        groups: groups(spec),
                    };
                    let y = conv2d(&x, &conv.weight, None, &params)?;
                    activate(&batch_norm(&y, &conv.bn)?, activation)
                }
                LayerKind::GlobalAvgPool => global_avg_pool(&x)?,
                LayerKind::FullyConnected => {
                    let c = &self.classifier;
                    fully_connected(&x, &c.weight, Some(&c.bias))?
                }
                // The logits are the network's output; `predict` applies it.
                LayerKind::Softmax => break,
            };
            visit(spec, &x);
        }
        Ok(x)
    }
}

/// Convolution groups of a layer: C_in for depthwise, 1 otherwise.
pub fn groups(spec: &LayerSpec) -> usize {
    match spec.kind {
        LayerKind::Depthwise => spec.input[2],
        _ => 1,
    }
}
