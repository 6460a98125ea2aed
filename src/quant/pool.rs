//! uint8 average pooling as TFLite's reference `AveragePool`: the sum of
//! the codes inside the window (taps outside the input do not count), then
//! `(sum + count / 2) / count`, clamped to the activation's range. Input
//! and output share one quantization, so no rescaling happens.

use super::conv::product;
use super::geometry::{Axis, Padding};
use super::requantize::{Activation, QuantParams};
use crate::error::{Error, Result};

/// A prepared uint8 average pool over NHWC tensors.
///
/// ```
/// use mobilenet::quant::geometry::Padding;
/// use mobilenet::quant::pool::AveragePool;
/// use mobilenet::quant::{Activation, QuantParams};
/// // Global pool of a 2x2 image with one channel: (1 + 2 + 3 + 5 + 2) / 4.
/// let q = QuantParams::new(0.1, 0)?;
/// let pool = AveragePool::new(1, [2, 2], 1, [2, 2], [1, 1], Padding::Valid, q, Activation::None)?;
/// let mut out = [0u8];
/// pool.run(&[1, 2, 3, 5], &mut out)?;
/// assert_eq!(out, [3]);
/// # Ok::<(), mobilenet::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct AveragePool {
    pub(crate) batches: usize,
    pub(crate) channels: usize,
    pub(crate) rows: Axis,
    pub(crate) cols: Axis,
    pub(crate) min: i32,
    pub(crate) max: i32,
}

impl AveragePool {
    /// Prepares a pool of `filter` `[height, width]` windows with `stride`
    /// over `batches` images of `input_hw` and `channels`; `params` is the
    /// quantization of both input and output.
    ///
    /// Fails with [`Error::InvalidConfig`] for an impossible geometry or an
    /// empty activation range, [`Error::TooLarge`] if sizes overflow.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        batches: usize,
        input_hw: [usize; 2],
        channels: usize,
        filter: [usize; 2],
        stride: [usize; 2],
        padding: Padding,
        params: QuantParams,
        activation: Activation,
    ) -> Result<AveragePool> {
        if batches == 0 || channels == 0 {
            return Err(Error::InvalidConfig(format!(
                "average pool of {batches} images of {channels} channels: both must be at least 1"
            )));
        }
        let rows = Axis::new(input_hw[0], filter[0], stride[0], 1, padding)?;
        let cols = Axis::new(input_hw[1], filter[1], stride[1], 1, padding)?;
        product(&[batches, input_hw[0], input_hw[1], channels], "the input")?;
        product(&[rows.filter, cols.filter, 255], "the window sum")
            .ok()
            .filter(|&max_sum| i32::try_from(max_sum).is_ok())
            .ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "a {}x{} window could overflow the int32 sum",
                    rows.filter, cols.filter
                ))
            })?;
        let (min, max) = activation.range(params)?;
        Ok(AveragePool {
            batches,
            channels,
            rows,
            cols,
            min,
            max,
        })
    }

    /// The input shape `[batches, height, width, channels]`.
    pub fn input_shape(&self) -> [usize; 4] {
        [
            self.batches,
            self.rows.input,
            self.cols.input,
            self.channels,
        ]
    }

    /// The output shape `[batches, height, width, channels]`.
    pub fn output_shape(&self) -> [usize; 4] {
        [
            self.batches,
            self.rows.output,
            self.cols.output,
            self.channels,
        ]
    }

    /// Runs on an NHWC `input` of [`AveragePool::input_shape`] into
    /// `output` of [`AveragePool::output_shape`].
    ///
    /// Fails with [`Error::Shape`] if a length is wrong.
    pub fn run(&self, input: &[u8], output: &mut [u8]) -> Result<()> {
        let want_in: usize = self.input_shape().iter().product();
        let want_out: usize = self.output_shape().iter().product();
        if input.len() != want_in || output.len() != want_out {
            return Err(Error::Shape(format!(
                "average pool: input of {} and output of {} bytes, expected {want_in} and \
                 {want_out}",
                input.len(),
                output.len()
            )));
        }
        let c = self.channels;
        let (h, w) = (self.rows.input, self.cols.input);
        let mut sums = vec![0i32; c];
        let mut pixels = output.chunks_exact_mut(c);
        for b in 0..self.batches {
            for oy in 0..self.rows.output {
                let ky = self.rows.taps(oy);
                for ox in 0..self.cols.output {
                    let kx = self.cols.taps(ox);
                    let Some(out) = pixels.next() else {
                        return Ok(());
                    };
                    // At least one tap: SAME and VALID windows always
                    // overlap the input.
                    let count = (ky.len() * kx.len()).max(1) as i32;
                    sums.fill(0);
                    for fy in ky.clone() {
                        let iy = oy * self.rows.stride + fy - self.rows.pad;
                        for fx in kx.clone() {
                            let ix = ox * self.cols.stride + fx - self.cols.pad;
                            let at = ((b * h + iy) * w + ix) * c;
                            for (s, &v) in sums.iter_mut().zip(&input[at..at + c]) {
                                *s += i32::from(v);
                            }
                        }
                    }
                    for (dst, &s) in out.iter_mut().zip(&sums) {
                        let avg = (s + count / 2) / count;
                        *dst = avg.max(self.min).min(self.max) as u8;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_half_up_and_counts_only_inside_taps() {
        let q = QuantParams::new(1.0, 0).unwrap();
        // 3x3 SAME stride 1 over 2x2: every window holds the 4 pixels.
        let pool = AveragePool::new(
            1,
            [2, 2],
            1,
            [3, 3],
            [1, 1],
            Padding::Same,
            q,
            Activation::None,
        )
        .unwrap();
        assert_eq!(pool.output_shape(), [1, 2, 2, 1]);
        let mut out = [0u8; 4];
        pool.run(&[1, 2, 2, 1], &mut out).unwrap();
        assert_eq!(out, [2; 4]); // 6 / 4 = 1.5 -> 2
        pool.run(&[1, 1, 2, 1], &mut out).unwrap();
        assert_eq!(out, [1; 4]); // 5 / 4 = 1.25 -> 1
        // The activation clamps.
        let q = QuantParams::new(1.0, 0).unwrap();
        let pool = AveragePool::new(
            1,
            [1, 1],
            1,
            [1, 1],
            [1, 1],
            Padding::Valid,
            q,
            Activation::Relu6,
        )
        .unwrap();
        let mut out = [0u8];
        pool.run(&[200], &mut out).unwrap();
        assert_eq!(out, [6]);
        assert!(pool.run(&[1, 2], &mut out).is_err());
    }
}
