//! Element-wise activations: the reference implementations.
//!
//! The paper uses ReLU after every BN; the TensorFlow release of MobileNet v1
//! uses ReLU6. The fast kernels fuse these into their epilogue as clamp
//! bounds; these plain functions are what that fusion is checked against.

use crate::error::{Result, shape_err};
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

    /// The derivative at the pre-activation value `x`: for ReLU 1 where
    /// `x > 0`, for ReLU6 1 where `0 < x < 6`, otherwise 0; for `Identity`
    /// always 1.
    ///
    /// At the kinks (0, and 6 for ReLU6) we take 0, as PyTorch does (its
    /// ReLU6 is `hardtanh(x, 0, 6)`, whose gradient is 1 only strictly
    /// inside the interval). A NaN input gets 0 under ReLU and ReLU6.
    ///
    /// ```
    /// use mobilenet::layers::Activation;
    /// assert_eq!(Activation::Relu.derivative(0.0), 0.0);
    /// assert_eq!(Activation::Relu.derivative(7.0), 1.0);
    /// assert_eq!(Activation::Relu6.derivative(6.0), 0.0);
    /// assert_eq!(Activation::Relu6.derivative(5.9), 1.0);
    /// assert_eq!(Activation::Identity.derivative(-3.0), 1.0);
    /// ```
    pub fn derivative(self, x: f32) -> f32 {
        let inside = match self {
            Activation::Relu => x > 0.0,
            Activation::Relu6 => x > 0.0 && x < 6.0,
            Activation::Identity => true,
        };
        if inside { 1.0 } else { 0.0 }
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

/// Backward pass of [`activate`]: `∂L/∂x = ∂L/∂y · act'(x)` element-wise,
/// with `act'` from [`Activation::derivative`] (0 at the kinks).
///
/// `input` is the *pre-activation* tensor `x` that went into the forward
/// pass (not its output: ReLU6's output 6 cannot tell `x = 6` from `x = 9`).
/// `Identity` returns `grad_output` unchanged.
///
/// Errors: [`Error::Shape`](crate::Error::Shape) if the two tensors have
/// different shapes.
///
/// ```
/// use mobilenet::Tensor;
/// use mobilenet::layers::{Activation, activation_backward};
/// let x = Tensor::new(vec![4], vec![-1.0, 0.5, 6.0, 7.0]).unwrap();
/// let g = Tensor::new(vec![4], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
/// let dx = activation_backward(&x, &g, Activation::Relu6).unwrap();
/// assert_eq!(dx.data(), &[0.0, 2.0, 0.0, 0.0]);
/// let dx = activation_backward(&x, &g, Activation::Relu).unwrap();
/// assert_eq!(dx.data(), &[0.0, 2.0, 3.0, 4.0]);
/// ```
pub fn activation_backward(
    input: &Tensor,
    grad_output: &Tensor,
    act: Activation,
) -> Result<Tensor> {
    if input.shape() != grad_output.shape() {
        shape_err!(
            "activation_backward: grad_output has shape {:?} but the input has shape {:?}",
            grad_output.shape(),
            input.shape()
        );
    }
    let mut out = grad_output.clone();
    if act != Activation::Identity {
        for (g, &x) in out.data_mut().iter_mut().zip(input.data()) {
            // A select, not a product: 0 * inf or 0 * NaN would give NaN.
            if act.derivative(x) == 0.0 {
                *g = 0.0;
            }
        }
    }
    Ok(out)
}
