//! Output sizes and padding of windowed ops (convolutions, pooling), as
//! TFLite's `ComputeOutSize` and `ComputePaddingHeightWidth`.
//!
//! TFLite pads SAME windows by `total / 2` before and the rest after; the
//! reference kernels only use the leading pad and skip every tap that falls
//! outside the input, so the trailing pad never needs to be stored.

use crate::error::{Error, Result};

/// TFLite's padding schemes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Output size `ceil(in / stride)`, zero taps around the input.
    Same,
    /// Output size `ceil((in - effective_filter + 1) / stride)`, no taps
    /// outside the input.
    Valid,
}

/// One spatial axis of a windowed op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Axis {
    /// Input size.
    pub input: usize,
    /// Output size.
    pub output: usize,
    /// Filter (window) size.
    pub filter: usize,
    /// Stride, at least 1.
    pub stride: usize,
    /// Dilation, at least 1.
    pub dilation: usize,
    /// Taps skipped before the input (`ComputePaddingWithOffset`'s
    /// `total / 2`).
    pub pad: usize,
}

impl Axis {
    /// The axis for `input` taps under `filter`, `stride`, `dilation` and
    /// `padding`, as TFLite computes output size and padding.
    ///
    /// Fails with [`Error::InvalidConfig`] for a zero size, stride or
    /// dilation, an overflowing effective filter, or an empty output.
    ///
    /// ```
    /// use mobilenet::quant::geometry::{Axis, Padding};
    /// // 224 input, 3x3 stride 2 SAME: 112 outputs, no leading pad (the
    /// // one padded tap is at the end).
    /// let a = Axis::new(224, 3, 2, 1, Padding::Same)?;
    /// assert_eq!((a.output, a.pad), (112, 0));
    /// let a = Axis::new(7, 7, 2, 1, Padding::Valid)?;
    /// assert_eq!((a.output, a.pad), (1, 0));
    /// # Ok::<(), mobilenet::Error>(())
    /// ```
    pub fn new(
        input: usize,
        filter: usize,
        stride: usize,
        dilation: usize,
        padding: Padding,
    ) -> Result<Axis> {
        if input == 0 || filter == 0 || stride == 0 || dilation == 0 {
            return Err(Error::InvalidConfig(format!(
                "window of input {input}, filter {filter}, stride {stride}, dilation {dilation}: \
                 every size must be at least 1"
            )));
        }
        let effective = (filter - 1)
            .checked_mul(dilation)
            .and_then(|v| v.checked_add(1))
            .ok_or_else(|| Error::InvalidConfig("dilated filter size overflows".into()))?;
        let output = match padding {
            Padding::Same => input.div_ceil(stride),
            Padding::Valid => match input.checked_sub(effective) {
                Some(rest) => rest / stride + 1,
                None => 0,
            },
        };
        if output == 0 {
            return Err(Error::InvalidConfig(format!(
                "a filter of {effective} (dilated) over {input} inputs leaves no output (VALID)"
            )));
        }
        // total = (out - 1) * stride + effective - in, at least 0.
        let total = (output - 1)
            .checked_mul(stride)
            .and_then(|v| v.checked_add(effective))
            .ok_or_else(|| Error::InvalidConfig("window extent overflows".into()))?
            .saturating_sub(input);
        Ok(Axis {
            input,
            output,
            filter,
            stride,
            dilation,
            pad: total / 2,
        })
    }

    /// The input index of tap `k` for output `o`, if it lies inside the
    /// input.
    #[inline]
    pub fn tap(&self, o: usize, k: usize) -> Option<usize> {
        (o * self.stride + k * self.dilation)
            .checked_sub(self.pad)
            .filter(|&i| i < self.input)
    }

    /// The taps `k` of output `o` that land inside the input, as a range
    /// (valid because taps are evenly spaced).
    pub fn taps(&self, o: usize) -> std::ops::Range<usize> {
        let origin = o * self.stride;
        // First k with origin + k * d >= pad.
        let first = self.pad.saturating_sub(origin).div_ceil(self.dilation);
        // First k with origin + k * d - pad >= input.
        let limit = (self.input + self.pad)
            .saturating_sub(origin)
            .div_ceil(self.dilation);
        first.min(self.filter)..limit.min(self.filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_and_valid_follow_tflite() {
        // Stride 1 SAME 3x3: one pad on each side.
        let a = Axis::new(112, 3, 1, 1, Padding::Same).unwrap();
        assert_eq!((a.output, a.pad), (112, 1));
        // Odd input, stride 2: total pad 2 -> 1 before.
        let a = Axis::new(7, 3, 2, 1, Padding::Same).unwrap();
        assert_eq!((a.output, a.pad), (4, 1));
        // Even input, stride 2: total pad 1 -> 0 before, 1 after.
        let a = Axis::new(8, 3, 2, 1, Padding::Same).unwrap();
        assert_eq!((a.output, a.pad), (4, 0));
        // Dilation 2: effective 5.
        let a = Axis::new(10, 3, 1, 2, Padding::Same).unwrap();
        assert_eq!((a.output, a.pad), (10, 2));
        let a = Axis::new(10, 3, 1, 2, Padding::Valid).unwrap();
        assert_eq!((a.output, a.pad), (6, 0));
        assert!(Axis::new(2, 3, 1, 1, Padding::Valid).is_err());
        assert!(Axis::new(4, 3, 0, 1, Padding::Same).is_err());
        assert!(Axis::new(4, usize::MAX, 1, 2, Padding::Same).is_err());
    }

    #[test]
    fn taps_agree_with_tap() {
        for input in 1..9 {
            for filter in 1..5 {
                for stride in 1..4 {
                    for dilation in 1..3 {
                        for padding in [Padding::Same, Padding::Valid] {
                            let Ok(a) = Axis::new(input, filter, stride, dilation, padding) else {
                                continue;
                            };
                            for o in 0..a.output {
                                let inside: Vec<usize> =
                                    (0..filter).filter(|&k| a.tap(o, k).is_some()).collect();
                                let range: Vec<usize> = a.taps(o).collect();
                                assert_eq!(inside, range, "{a:?} output {o}");
                            }
                        }
                    }
                }
            }
        }
    }
}
