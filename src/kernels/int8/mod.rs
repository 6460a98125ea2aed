//! uint8 inference kernels for asymmetric quantized networks (TFLite's
//! uint8 scheme): int32 accumulation of `(x - x_zero) * (w - w_zero)`,
//! then a requantizing epilogue bit-exact with gemmlowp's fixed-point
//! `MultiplyByQuantizedMultiplier` (double rounding).
//!
//! Like the float kernels these know slices and packed weights only. Each
//! family has a portable path (also the plainest statement of the
//! arithmetic), an AVX2 path and an AVX-512 VNNI path, chosen once from
//! [`IntIsa`].
//!
//! | module | what |
//! |---|---|
//! | [`isa`] | [`IntIsa`], the integer instruction-set choice |
//! | [`requant`] | the per-channel requantize + clamp epilogue, scalar and vector |
//! | [`gemm`] | `u8 x u8` matrix product with zero points: 1x1 convs, FC, im2col convs |
//! | [`depthwise`] | 3x3 depthwise conv, channels innermost |
//! | [`im2col`] | patches of a general conv as GEMM rows |
//! | [`pool`] | average pooling |
//! | [`stem`] | the first layer's conv straight from the image (VNNI), no im2col |

pub mod depthwise;
pub mod gemm;
pub mod im2col;
pub mod isa;
pub mod pool;
pub mod requant;
pub mod stem;

pub use depthwise::{DepthwiseGeometry, PackedDepthwise3x3};
pub use gemm::PackedGemm;
pub use isa::IntIsa;
pub use requant::OutputQuant;
pub use stem::PackedStem;
