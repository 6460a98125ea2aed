//! Exact uint8 inference of quantized TFLite models (the official
//! quantization-aware-trained MobileNet v1 files), bit for bit equal to
//! LiteRT's reference kernels, layer by layer.
//!
//! Unlike [`formats::tflite`](crate::formats::tflite), which dequantizes
//! such files into our float network, this module keeps every tensor in
//! uint8 and reproduces TFLite's integer arithmetic: int32 accumulation of
//! offset products, requantization with gemmlowp's fixed-point multiply
//! ([`fixed_point`]), clamping to the fused activation's code range, and a
//! fixed-point softmax.
//!
//! | module | TFLite |
//! |---|---|
//! | [`fixed_point`] | `QuantizeMultiplier`, `SaturatingRoundingDoublingHighMul`, `RoundingDivideByPOT`, `MultiplyByQuantizedMultiplier` |
//! | [`requantize`] | `CalculateActivationRangeQuantized`, the output stage of the accumulating ops |
//! | [`geometry`] | `ComputeOutSize`, `ComputePaddingHeightWidth` |
//! | [`conv`] | `reference_ops::Conv`, `reference_ops::DepthwiseConv` (uint8) |
//! | [`fully_connected`] | `reference_ops::FullyConnected` (uint8) |
//! | [`pool`] | `reference_ops::AveragePool` (uint8) |
//! | [`softmax`] | `SoftmaxPrepare<kReference>`, `reference_ops::Softmax` (uint8) |
//! | [`QuantizedTflite`], [`QuantizedPipeline`] | the interpreter with `BUILTIN_REF` kernels |
//!
//! Three details decide bit-exactness against LiteRT 2.x (checked layer
//! by layer on the four official MobileNet v1 files, see
//! `tests/quant_tflite.rs`):
//! * requantization rounds twice (see [`fixed_point`]);
//! * the uint8 convolution multiplier multiplies `input_scale *
//!   filter_scale` in f32 before the f64 division by `output_scale`
//!   ([`conv::conv_multiplier`]);
//! * the softmax is the reference kernel's fixed-point one, not the float
//!   lookup table of LiteRT's optimized kernel ([`softmax`]).
//!
//! The kernels are plain loops over NHWC data, meant as the exact reference
//! that faster kernels are checked against.

mod chain;
pub mod conv;
pub mod fixed_point;
pub mod fully_connected;
pub mod geometry;
mod load;
pub use load::is_uint8_tflite;
mod model;
pub mod plan;
pub mod pool;
pub mod ptq;
pub mod requantize;
pub mod softmax;

pub use model::{QuantTensor, QuantizedPipeline, QuantizedTflite, TensorSpec};
pub use requantize::{Activation, QuantParams};
