//! Post-training quantization of our float MobileNets to int8, and an
//! exact integer executor for the result.
//!
//! # Scheme
//!
//! * Batch norm is folded into the convolutions first (as the float engine
//!   does), so each conv has a weight and a bias.
//! * Weights: int8, symmetric, **per output channel**: `scale_c =
//!   max|w_c| / 127`, zero point 0, codes in `[-127, 127]`. One scale per
//!   channel is what keeps depthwise convolutions accurate: their channels'
//!   ranges differ by orders of magnitude.
//! * Activations: **int8 asymmetric, per tensor** (`real = scale * (q -
//!   zero_point)`, `q` in `[-128, 127]`), from calibration statistics
//!   ([`calibrate`]): the observed min/max or a percentile of the observed
//!   values, widened to include 0 so that zero padding is exact. int8
//!   rather than uint8 because that is what TFLite's and ONNX Runtime's
//!   int8 kernels take, and the signed `x - zero_point` fits VNNI.
//! * Bias: int32, `round(b / (s_in * s_w[c]))`.
//! * Requantization: `M_c = s_in * s_w[c] / s_out` as a Q0.31 fixed-point
//!   multiplier and shift per channel ([`super::fixed_point`]), the fused
//!   ReLU / ReLU6 as the clamp range of the output codes.
//! * Global average pool in int8 (same scale in and out); the classifier
//!   accumulates in int32 and its logits are dequantized to f32 (softmax,
//!   if wanted, runs in float).
//!
//! [`Int8MobileNet`] is plain data (per layer: i8 weights, per-channel
//! `(multiplier, shift)`, zero points, clamp, geometry), run by plain loops
//! that are the reference for faster kernels; [`file`] saves and loads it
//! in our safetensors format; [`plan::Int8Plan`] runs it on the fast
//! integer kernels with the same bits.

pub mod calibrate;
pub mod file;
mod model;
pub mod plan;
pub mod scheme;

pub use calibrate::{CalibrationMethod, Observer};
pub use model::{Int8Classifier, Int8Conv, Int8MobileNet, QuantizeOptions};
pub use scheme::{ActQuant, StoredCode};
