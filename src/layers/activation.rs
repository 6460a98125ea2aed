//! Element-wise activations: the reference implementations.
//!
//! The paper uses ReLU after every BN; the TensorFlow release of MobileNet v1
//! uses ReLU6. The fast kernels fuse these into their epilogue as clamp
//! bounds; these plain functions are what that fusion is checked against.

use crate::tensor::Tensor;

/// The non-linearity after a convolution + batch norm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Activation {
    /// `max(x, 0)` (the paper).
    #[default]
    Relu,
    /// `min(max(x, 0), 6)` (the TensorFlow release).
    Relu6,
    /// `x` (no activation).
    Identity,
}

impl Activation {
    /// Applies the activation to one value.
    ///
    /// Uses [`f32::max`] / [`f32::min`], so a NaN input becomes 0 under ReLU
    /// and ReLU6 (the same as a clamp-based epilogue) and stays NaN under
    /// `Identity`.
    ///
    /// ```
    /// use mobilenet::layers::Activation;
    /// assert_eq!(Activation::Relu.apply(-1.5), 0.0);
    /// assert_eq!(Activation::Relu.apply(7.0), 7.0);
    /// assert_eq!(Activation::Relu6.apply(7.0), 6.0);
    /// assert_eq!(Activation::Identity.apply(-1.5), -1.5);
    /// ```
    // Not `clamp`: it keeps NaN, while the kernels' clamp epilogue (max then
    // min) maps it to 0, and this oracle must agree with them.
    #[allow(clippy::manual_clamp)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Relu => x.max(0.0),
            Activation::Relu6 => x.max(0.0).min(6.0),
            Activation::Identity => x,
        }
    }

    /// The lower-case name: `"relu"`, `"relu6"` or `"identity"`.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Relu6 => "relu6",
            Activation::Identity => "identity",
        }
    }
}

/// `max(x, 0)` element-wise.
pub fn relu(input: &Tensor) -> Tensor {
    activate(input, Activation::Relu)
}

/// `min(max(x, 0), 6)` element-wise.
pub fn relu6(input: &Tensor) -> Tensor {
    activate(input, Activation::Relu6)
}

/// Applies `act` element-wise, keeping the shape.
pub fn activate(input: &Tensor, act: Activation) -> Tensor {
    let mut out = input.clone();
    for v in out.data_mut() {
        *v = act.apply(*v);
    }
    out
}
