//! uint8 fully connected layer as TFLite's reference `FullyConnected`: each
//! of `batches` rows of `depth` inputs times a `[units, depth]` weight
//! matrix, plus bias, through the [`OutputStage`].

use super::conv::{
    bias_or_zeros, check_accumulator, conv_multiplier, dot, offset_input, offset_weights, product,
};
use super::requantize::{Activation, OutputStage, QuantParams};
use crate::error::{Error, Result};

/// Shapes, quantizations and activation of a fully connected layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FullyConnectedSpec {
    /// Rows of input.
    pub batches: usize,
    /// Inputs per row (the weights' inner dimension).
    pub depth: usize,
    /// Outputs per row.
    pub units: usize,
    /// Input quantization.
    pub input: QuantParams,
    /// Weight quantization (per tensor).
    pub filter: QuantParams,
    /// Output quantization.
    pub output: QuantParams,
    /// Fused activation.
    pub activation: Activation,
}

/// A prepared uint8 fully connected layer.
///
/// ```
/// use mobilenet::quant::fully_connected::{FullyConnected, FullyConnectedSpec};
/// use mobilenet::quant::{Activation, QuantParams};
/// let q = QuantParams::new(1.0, 0)?;
/// let spec = FullyConnectedSpec {
///     batches: 1,
///     depth: 2,
///     units: 2,
///     input: q,
///     filter: q,
///     output: q,
///     activation: Activation::None,
/// };
/// // Rows [1, 2] and [3, 0]; bias [0, 1].
/// let fc = FullyConnected::new(&spec, &[1, 2, 3, 0], Some(&[0, 1]))?;
/// let mut out = [0u8; 2];
/// fc.run(&[5, 6], &mut out)?;
/// assert_eq!(out, [17, 16]);
/// # Ok::<(), mobilenet::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct FullyConnected {
    pub(crate) batches: usize,
    pub(crate) depth: usize,
    pub(crate) units: usize,
    pub(crate) weights: Vec<i16>,
    pub(crate) bias: Vec<i32>,
    pub(crate) input_zero_point: i32,
    /// Kept so faster kernels can repack the original codes.
    pub(crate) filter_zero_point: i32,
    pub(crate) stage: OutputStage,
}

impl FullyConnected {
    /// Prepares the layer: `weights` row-major `[units, depth]`, optional
    /// int32 `bias` of `units` entries.
    ///
    /// Fails with [`Error::Shape`] if the weights or bias do not fit,
    /// [`Error::InvalidConfig`] for a zero size, a bad multiplier or an
    /// accumulator that could overflow, [`Error::TooLarge`] if sizes
    /// overflow.
    pub fn new(
        spec: &FullyConnectedSpec,
        weights: &[u8],
        bias: Option<&[i32]>,
    ) -> Result<FullyConnected> {
        if spec.batches == 0 || spec.depth == 0 || spec.units == 0 {
            return Err(Error::InvalidConfig(format!(
                "fully connected layer of {} rows, {} -> {}: every size must be at least 1",
                spec.batches, spec.depth, spec.units
            )));
        }
        let expected = product(&[spec.units, spec.depth], "the weights")?;
        if weights.len() != expected {
            return Err(Error::Shape(format!(
                "the weights have {} entries, [{}, {}] needs {expected}",
                weights.len(),
                spec.units,
                spec.depth
            )));
        }
        product(&[spec.batches, spec.depth], "the input")?;
        product(&[spec.batches, spec.units], "the output")?;
        let bias = bias_or_zeros(bias, spec.units)?;
        check_accumulator(spec.depth, spec.input, spec.filter, &bias)?;
        let real = conv_multiplier(spec.input, spec.filter, spec.output);
        Ok(FullyConnected {
            batches: spec.batches,
            depth: spec.depth,
            units: spec.units,
            weights: offset_weights(weights, spec.filter.zero_point),
            bias,
            input_zero_point: spec.input.zero_point,
            filter_zero_point: spec.filter.zero_point,
            stage: OutputStage::new(real, spec.output, spec.activation)?,
        })
    }

    /// `(batches, depth)` of the input.
    pub fn input_dims(&self) -> (usize, usize) {
        (self.batches, self.depth)
    }

    /// `(batches, units)` of the output.
    pub fn output_dims(&self) -> (usize, usize) {
        (self.batches, self.units)
    }

    /// Runs on `batches * depth` inputs into `batches * units` outputs.
    ///
    /// Fails with [`Error::Shape`] if a length is wrong.
    pub fn run(&self, input: &[u8], output: &mut [u8]) -> Result<()> {
        if input.len() != self.batches * self.depth || output.len() != self.batches * self.units {
            return Err(Error::Shape(format!(
                "fully connected: input of {} and output of {} bytes, expected {} and {}",
                input.len(),
                output.len(),
                self.batches * self.depth,
                self.batches * self.units
            )));
        }
        let mut xs = Vec::with_capacity(input.len());
        offset_input(input, self.input_zero_point, &mut xs);
        for (x, out) in xs
            .chunks_exact(self.depth)
            .zip(output.chunks_exact_mut(self.units))
        {
            for ((dst, w), &bias) in out
                .iter_mut()
                .zip(self.weights.chunks_exact(self.depth))
                .zip(&self.bias)
            {
                *dst = self.stage.apply(bias.wrapping_add(dot(x, w)));
            }
        }
        Ok(())
    }
}
