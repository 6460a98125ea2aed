//! Cost analysis: mult-adds, FLOPs, parameters, memory access cost and
//! activation memory, per layer and in total (paper Tables 1 and 2).
//!
//! Conventions, for one image:
//! - **mult-adds** (MACC): one multiply plus one add. A D_K x D_K conv with
//!   M input and N output channels on a D_F x D_F output costs
//!   D_K·D_K·(M/groups)·N·D_F·D_F; the FC costs M·N. Pooling and softmax are
//!   counted as zero, as the paper does.
//! - **FLOPs** = 2 x mult-adds.
//! - **params** = conv weights + FC weights + FC bias, with batch norm folded
//!   away; **bn_params** = the 2·C learned γ and β of every batch norm
//!   (running mean and variance are buffers, not parameters).
//! - **memory access** (MAC) = input + output activations + weights, in
//!   elements: what a layer must at least read and write.
//! - **activation memory** = the elements of a layer's output.

pub mod paper;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::architecture::numel;
use crate::model::{Architecture, LayerKind, LayerSpec};

/// The costs of one layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LayerCost {
    /// Multiply-accumulate operations.
    pub mult_adds: u64,
    /// Weights (and the FC bias).
    pub params: u64,
    /// γ and β of the batch norm after the layer, if any.
    pub bn_params: u64,
    /// Input + output activations + weights, in elements.
    pub memory_access: u64,
    /// Output activations, in elements.
    pub activation_memory: u64,
}

impl LayerCost {
    /// The costs of `layer`.
    ///
    /// ```
    /// use mobilenet::cost::LayerCost;
    /// use mobilenet::model::{Architecture, MobileNetConfig};
    /// let arch = Architecture::new(&MobileNetConfig::default()).unwrap();
    /// let stem = LayerCost::of(&arch.layers()[0]);
    /// assert_eq!(stem.mult_adds, 112 * 112 * 32 * 3 * 3 * 3);
    /// assert_eq!(stem.params, 3 * 3 * 3 * 32);
    /// ```
    pub fn of(layer: &LayerSpec) -> LayerCost {
        let [_, _, c_in] = layer.input.map(|d| d as u64);
        let [h_out, w_out, c_out] = layer.output.map(|d| d as u64);
        let taps = (layer.kernel * layer.kernel) as u64;
        let (mult_adds, params) = match layer.kind {
            LayerKind::Conv | LayerKind::Pointwise => {
                (h_out * w_out * c_out * c_in * taps, c_out * c_in * taps)
            }
            LayerKind::Depthwise => (h_out * w_out * c_out * taps, c_out * taps),
            LayerKind::FullyConnected => (c_in * c_out, c_in * c_out + c_out),
            LayerKind::GlobalAvgPool | LayerKind::Softmax => (0, 0),
        };
        let bn_params = if layer.kind.has_batch_norm() {
            2 * c_out
        } else {
            0
        };
        let input = numel(layer.input) as u64;
        let output = numel(layer.output) as u64;
        LayerCost {
            mult_adds,
            params,
            bn_params,
            memory_access: input + output + params,
            activation_memory: output,
        }
    }

    /// Floating-point operations: 2 x mult-adds.
    pub fn flops(&self) -> u64 {
        2 * self.mult_adds
    }
}

/// Sums over a whole network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Multiply-accumulate operations.
    pub mult_adds: u64,
    /// 2 x mult-adds.
    pub flops: u64,
    /// Conv weights + FC weights + FC bias.
    pub params: u64,
    /// Batch-norm γ and β.
    pub bn_params: u64,
    /// Sum of every layer's memory access cost, in elements.
    pub memory_access: u64,
    /// The largest input + output of one layer, in elements: what a
    /// two-buffer executor must hold for one image.
    pub peak_activation_memory: u64,
}

/// The share of mult-adds and parameters of one kind of layer (paper Table 2).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KindShare {
    /// The paper's row name: `Conv 1x1`, `Conv DW 3x3`, `Conv 3x3`,
    /// `Fully Connected`.
    pub row: &'static str,
    /// Mult-adds of all layers of this kind.
    pub mult_adds: u64,
    /// Parameters of all layers of this kind.
    pub params: u64,
    /// Share of the network's mult-adds, in percent.
    pub mult_adds_percent: f64,
    /// Share of the network's parameters, in percent.
    pub params_percent: f64,
}

/// Per-layer and total costs of an [`Architecture`].
#[derive(Clone, Debug, PartialEq)]
pub struct CostReport {
    /// One entry per layer, in execution order.
    pub layers: Vec<(LayerSpec, LayerCost)>,
    /// Sums over the layers.
    pub total: Totals,
}

impl CostReport {
    /// Analyses every layer of `arch`.
    ///
    /// ```
    /// use mobilenet::cost::CostReport;
    /// use mobilenet::model::{Architecture, MobileNetConfig};
    /// let report = CostReport::new(&Architecture::new(&MobileNetConfig::default()).unwrap());
    /// assert_eq!(report.total.mult_adds, 568_740_352); // the paper's "569 million"
    /// ```
    pub fn new(arch: &Architecture) -> CostReport {
        let layers: Vec<_> = arch
            .layers()
            .iter()
            .map(|l| (l.clone(), LayerCost::of(l)))
            .collect();
        let mut total = Totals::default();
        for (spec, cost) in &layers {
            total.mult_adds += cost.mult_adds;
            total.params += cost.params;
            total.bn_params += cost.bn_params;
            total.memory_access += cost.memory_access;
            let live = (numel(spec.input) + numel(spec.output)) as u64;
            total.peak_activation_memory = total.peak_activation_memory.max(live);
        }
        total.flops = 2 * total.mult_adds;
        CostReport { layers, total }
    }

    /// Mult-adds and parameters grouped as in paper Table 2. With
    /// `fc_bias = false` the FC bias is left out of the parameter count, which
    /// is what the paper's percentages assume.
    pub fn by_kind(&self, fc_bias: bool) -> Vec<KindShare> {
        let rows = [
            ("Conv 1x1", LayerKind::Pointwise),
            ("Conv DW 3x3", LayerKind::Depthwise),
            ("Conv 3x3", LayerKind::Conv),
            ("Fully Connected", LayerKind::FullyConnected),
        ];
        let params_of = |(spec, cost): &(LayerSpec, LayerCost)| {
            if !fc_bias && spec.kind == LayerKind::FullyConnected {
                cost.params - spec.output[2] as u64
            } else {
                cost.params
            }
        };
        let total_params: u64 = self.layers.iter().map(params_of).sum();
        rows.into_iter()
            .map(|(row, kind)| {
                let selected = self.layers.iter().filter(|(spec, _)| spec.kind == kind);
                let (mult_adds, params) = selected.fold((0, 0), |(m, p), entry| {
                    (m + entry.1.mult_adds, p + params_of(entry))
                });
                KindShare {
                    row,
                    mult_adds,
                    params,
                    mult_adds_percent: percent(mult_adds, self.total.mult_adds),
                    params_percent: percent(params, total_params),
                }
            })
            .collect()
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// Cost of one D_K x D_K layer from M to N channels on a D_F x D_F map,
/// as a standard conv and as a depthwise-separable one (paper Section 3.1).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SeparableComparison {
    /// D_K·D_K·M·N·D_F·D_F.
    pub standard_mult_adds: u64,
    /// D_K·D_K·M·D_F·D_F + M·N·D_F·D_F.
    pub separable_mult_adds: u64,
    /// D_K·D_K·M·N.
    pub standard_params: u64,
    /// D_K·D_K·M + M·N.
    pub separable_params: u64,
    /// separable / standard mult-adds, measured.
    pub ratio: f64,
    /// The paper's closed form 1/N + 1/D_K², equal to `ratio`.
    pub formula: f64,
}

impl SeparableComparison {
    /// Compares the two for M = `m` input channels, N = `n` output channels,
    /// kernel D_K = `k` and output size D_F = `size`.
    ///
    /// Fails on a zero size or when a count would overflow 64 bits.
    ///
    /// ```
    /// let c = mobilenet::cost::SeparableComparison::new(512, 512, 3, 14).unwrap();
    /// assert!((c.ratio - (1.0 / 512.0 + 1.0 / 9.0)).abs() < 1e-12);
    /// ```
    pub fn new(m: u64, n: u64, k: u64, size: u64) -> Result<SeparableComparison> {
        if [m, n, k, size].contains(&0) {
            return Err(Error::InvalidConfig(format!(
                "channels, kernel and size must be at least 1 (M={m}, N={n}, D_K={k}, D_F={size})"
            )));
        }
        let overflow = || {
            Error::TooLarge(format!(
                "M={m}, N={n}, D_K={k}, D_F={size} overflows a 64-bit mult-add count"
            ))
        };
        let mul = |factors: &[u64]| -> Result<u64> {
            factors
                .iter()
                .try_fold(1u64, |acc, &f| acc.checked_mul(f))
                .ok_or_else(overflow)
        };
        let standard_mult_adds = mul(&[k, k, m, n, size, size])?;
        let separable_mult_adds = mul(&[k, k, m, size, size])?
            .checked_add(mul(&[m, n, size, size])?)
            .ok_or_else(overflow)?;
        Ok(SeparableComparison {
            standard_mult_adds,
            separable_mult_adds,
            standard_params: mul(&[k, k, m, n])?,
            separable_params: mul(&[k, k, m])? + mul(&[m, n])?,
            ratio: separable_mult_adds as f64 / standard_mult_adds as f64,
            formula: 1.0 / n as f64 + 1.0 / (k * k) as f64,
        })
    }
}
