//! Batch-norm folding: `BN(conv(x, W)) = conv(x, W·s) + t` with the per
//! output channel scale `s = γ / sqrt(σ² + ε)` and shift `t = β - μ·s`.

use crate::model::network::ConvBn;

/// Weights with the batch norm folded in, in the conv's own layout
/// (`[C_out, C_in / groups, D_K, D_K]`), and the resulting bias `[C_out]`.
pub(crate) struct Folded {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// Folds `conv.bn` into `conv.weight`. The scale is computed in f64 so that
/// folding adds no more rounding than one f32 multiply per weight.
pub(crate) fn fold_batch_norm(conv: &ConvBn) -> Folded {
    let bn = &conv.bn;
    let c_out = bn.channels();
    let per_channel = conv.weight.len() / c_out.max(1);
    let mut weight = conv.weight.data().to_vec();
    let mut bias = vec![0.0f32; c_out];
    for c in 0..c_out {
        let scale = bn.gamma[c] as f64 / (bn.var[c] as f64 + bn.eps as f64).sqrt();
        for w in &mut weight[c * per_channel..(c + 1) * per_channel] {
            *w = (*w as f64 * scale) as f32;
        }
        bias[c] = (bn.beta[c] as f64 - bn.mean[c] as f64 * scale) as f32;
    }
    Folded { weight, bias }
}
