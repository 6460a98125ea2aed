//! Plain reference layers (forward only).
//!
//! Each function here is the most direct transcription of its formula, with
//! explicit shape checks and no cleverness: these are the oracles that the
//! optimized kernels in [`crate::kernels`] and the fused inference plan are
//! tested against. Clarity beats speed; sums are accumulated in f64.
//!
//! Image tensors are NHWC; weights use PyTorch layouts (OIHW for
//! convolutions, `[out, in]` for the classifier).

pub mod activation;
pub mod batch_norm;
pub mod conv;
pub mod linear;
pub mod pooling;
pub mod softmax;

pub use activation::{Activation, activate, activation_backward, relu, relu6};
pub use batch_norm::{
    BatchNorm, BatchNormGrads, BatchNormTrain, batch_norm, batch_norm_train,
    batch_norm_train_backward,
};
pub use conv::{
    Conv2dGrads, Conv2dParams, Padding, PaddingMode, conv_output_size, conv2d, conv2d_backward,
};
pub use linear::{LinearGrads, fully_connected, fully_connected_backward};
pub use pooling::{global_avg_pool, global_avg_pool_backward};
pub use softmax::softmax;
