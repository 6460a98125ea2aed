//! Plain reference layers, forward and backward.
//!
//! Each function here is the most direct transcription of its formula, with
//! explicit shape checks and no cleverness: these are the oracles that the
//! optimized kernels in [`crate::kernels`] and the fused inference plan are
//! tested against. Clarity beats speed; sums are accumulated in f64.
//!
//! Every layer a MobileNet needs for training also has a reference backward
//! pass next to its forward function ([`conv2d_backward`],
//! [`batch_norm_train_backward`], [`activation_backward`],
//! [`global_avg_pool_backward`], [`fully_connected_backward`],
//! [`dropout_backward`]), plus the loss [`softmax_cross_entropy`], which
//! returns its own gradient. A backward function takes the forward inputs
//! and `∂L/∂output` and returns `∂L/∂` of each input and parameter; the
//! tests check them all against finite differences of the forward pass.
//! Batch norm has a separate training mode ([`batch_norm_train`]) because
//! its gradient must flow through the batch statistics.
//!
//! Image tensors are NHWC; weights use PyTorch layouts (OIHW for
//! convolutions, `[out, in]` for the classifier).

pub mod activation;
pub mod batch_norm;
pub mod conv;
pub mod dropout;
pub mod linear;
pub mod loss;
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
pub use dropout::{dropout, dropout_backward};
pub use linear::{LinearGrads, fully_connected, fully_connected_backward};
pub use loss::softmax_cross_entropy;
pub use pooling::{global_avg_pool, global_avg_pool_backward};
pub use softmax::softmax;
