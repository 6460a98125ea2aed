//! An owned, dense, row-major f32 tensor with a checked shape.
//!
//! Image tensors are NHWC: `[batch, height, width, channels]`, channels
//! innermost, because that is the layout the depthwise and pointwise kernels
//! want (a pointwise conv over NHWC is a plain matrix product).

use crate::error::{Error, Result};

/// A dense f32 tensor. The invariant `data.len() == shape.iter().product()`
/// holds for every value of this type.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Tensor {
    /// Wraps `data` with `shape`, checking that the lengths agree.
    ///
    /// ```
    /// use mobilenet::Tensor;
    /// let t = Tensor::new(vec![2, 3], vec![0.0; 6]).unwrap();
    /// assert_eq!(t.shape(), &[2, 3]);
    /// assert!(Tensor::new(vec![2, 3], vec![0.0; 5]).is_err());
    /// ```
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let expected = checked_numel(&shape)?;
        if expected != data.len() {
            return Err(Error::Shape(format!(
                "shape {shape:?} needs {expected} elements, got {}",
                data.len()
            )));
        }
        Ok(Tensor { shape, data })
    }

    /// A tensor of zeros.
    pub fn zeros(shape: Vec<usize>) -> Result<Self> {
        let n = checked_numel(&shape)?;
        Ok(Tensor {
            shape,
            data: vec![0.0; n],
        })
    }

    /// A tensor whose elements are `f(flat_index)`.
    pub fn from_fn(shape: Vec<usize>, f: impl FnMut(usize) -> f32) -> Result<Self> {
        let n = checked_numel(&shape)?;
        Ok(Tensor {
            shape,
            data: (0..n).map(f).collect(),
        })
    }

    /// The dimensions, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The elements in row-major order.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The elements in row-major order, mutable.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Takes the elements out.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// The same elements with another shape of the same size.
    pub fn reshape(self, shape: Vec<usize>) -> Result<Self> {
        Tensor::new(shape, self.data)
    }

    /// The shape as `[N, H, W, C]`, or an error naming `what` if the tensor
    /// is not rank 4.
    pub fn dims4(&self, what: &str) -> Result<[usize; 4]> {
        match self.shape[..] {
            [n, h, w, c] => Ok([n, h, w, c]),
            _ => Err(Error::Shape(format!(
                "{what} must have rank 4, got shape {:?}",
                self.shape
            ))),
        }
    }

    /// The shape as `[rows, cols]`, or an error naming `what` if the tensor
    /// is not rank 2.
    pub fn dims2(&self, what: &str) -> Result<[usize; 2]> {
        match self.shape[..] {
            [r, c] => Ok([r, c]),
            _ => Err(Error::Shape(format!(
                "{what} must have rank 2, got shape {:?}",
                self.shape
            ))),
        }
    }

    /// Largest absolute element-wise difference to `other` (shapes must match).
    pub fn max_abs_diff(&self, other: &Tensor) -> Result<f32> {
        if self.shape != other.shape {
            return Err(Error::Shape(format!(
                "cannot compare shapes {:?} and {:?}",
                self.shape, other.shape
            )));
        }
        Ok(self
            .data
            .iter()
            .zip(&other.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max))
    }
}

/// Product of `shape`, or an error if it overflows `usize`.
fn checked_numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::TooLarge(format!("shape {shape:?} has too many elements")))
}
