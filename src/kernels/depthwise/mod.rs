//! Depthwise 3x3 convolution over one NHWC image, with the bias + clamp
//! epilogue fused before the single store.
//!
//! The family is one generic driver (`kernel.rs`) instantiated per ISA
//! (`portable.rs`, `avx2.rs`, `avx512.rs`); [`PackedDepthwise3x3::pack`]
//! chooses the ISA once, and [`depthwise3x3_reference`] is the plain loop
//! nest the others are tested against. [`Conv3x3Geometry`] is shared with the
//! stem convolution ([`crate::kernels::stem`]).
//!
//! Layout: activations `[H, W, C]` row-major, channels innermost. Packed
//! parameters are block-major: for each block of 16 (AVX-512) or 8 channels,
//! the bias then the 9 taps, one vector each, so that a tile's 10 parameter
//! vectors are 10 consecutive cache lines (a tap-major `[9][C]` layout puts
//! them `4 * C` bytes apart, in the same L1 sets as the input pixels).

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
mod kernel;
pub(crate) mod portable;
mod reference;
pub(crate) mod simd;

use std::ops::Range;

use crate::error::{Error, Result};
use crate::kernels::AlignedBuf;
use crate::kernels::{Epilogue, Isa};

pub use reference::depthwise3x3_reference;

/// Geometry of a 3x3 convolution over one image.
///
/// Padding is per side: `pad_top` and `pad_left` are explicit, the bottom and
/// right padding are implied by `out_h` and `out_w`. Taps outside the image
/// read zero. Build it with [`Conv3x3Geometry::new`], or by hand and let the
/// kernels [`validate`](Conv3x3Geometry::validate) it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv3x3Geometry {
    /// Input rows.
    pub in_h: usize,
    /// Input columns.
    pub in_w: usize,
    /// Step between output pixels (the fast paths cover 1 and 2; larger
    /// strides work through the bounds-checked path).
    pub stride: usize,
    /// Rows of zeros above the input (at most 2).
    pub pad_top: usize,
    /// Columns of zeros left of the input (at most 2).
    pub pad_left: usize,
    /// Output rows.
    pub out_h: usize,
    /// Output columns.
    pub out_w: usize,
}

impl Conv3x3Geometry {
    /// The geometry of a 3x3 convolution with the given stride and padding:
    /// `out = (in + pad_before + pad_after - 3) / stride + 1` per axis.
    ///
    /// Errors: [`Error::InvalidConfig`] for stride 0 or a padding above 2
    /// (a window entirely in the padding), [`Error::Shape`] for an empty
    /// input or one too small for the kernel even with its padding.
    ///
    /// ```
    /// use mobilenet::kernels::depthwise::Conv3x3Geometry;
    /// // PyTorch, stride 2: one pixel of padding on every side.
    /// let g = Conv3x3Geometry::new(224, 224, 2, 1, 1, 1, 1).unwrap();
    /// assert_eq!((g.out_h, g.out_w), (112, 112));
    /// // TensorFlow 'SAME', stride 2 on an even input: 0 before, 1 after.
    /// let g = Conv3x3Geometry::new(224, 224, 2, 0, 1, 0, 1).unwrap();
    /// assert_eq!((g.out_h, g.out_w), (112, 112));
    /// assert!(Conv3x3Geometry::new(224, 224, 0, 1, 1, 1, 1).is_err());
    /// assert!(Conv3x3Geometry::new(1, 5, 1, 0, 0, 1, 1).is_err());
    /// ```
    pub fn new(
        in_h: usize,
        in_w: usize,
        stride: usize,
        pad_top: usize,
        pad_bottom: usize,
        pad_left: usize,
        pad_right: usize,
    ) -> Result<Self> {
        if stride == 0 {
            return Err(Error::InvalidConfig(
                "3x3 convolution stride must be at least 1".into(),
            ));
        }
        if [pad_top, pad_bottom, pad_left, pad_right]
            .iter()
            .any(|&p| p > 2)
        {
            return Err(Error::InvalidConfig(format!(
                "3x3 convolution padding must be at most 2 per side, got \
                 top {pad_top}, bottom {pad_bottom}, left {pad_left}, right {pad_right}"
            )));
        }
        let out = |input: usize, before: usize, after: usize, axis: &str| -> Result<usize> {
            let padded = input + before + after;
            if input == 0 || padded < 3 {
                return Err(Error::Shape(format!(
                    "3x3 convolution input {axis} {input} with padding {before}+{after} \
                     is smaller than the kernel"
                )));
            }
            Ok((padded - 3) / stride + 1)
        };
        let g = Conv3x3Geometry {
            in_h,
            in_w,
            stride,
            pad_top,
            pad_left,
            out_h: out(in_h, pad_top, pad_bottom, "height")?,
            out_w: out(in_w, pad_left, pad_right, "width")?,
        };
        g.validate()?;
        Ok(g)
    }

    /// Checks that the geometry is one the kernels accept: stride >= 1,
    /// non-empty input and output, `pad_top, pad_left <= 2`, and every
    /// output window overlapping the image (so the implied bottom / right
    /// padding is at most 2 as well).
    pub fn validate(&self) -> Result<()> {
        if self.stride == 0 {
            return Err(Error::InvalidConfig(
                "3x3 convolution stride must be at least 1".into(),
            ));
        }
        for (axis, input, pad, out) in [
            ("height", self.in_h, self.pad_top, self.out_h),
            ("width", self.in_w, self.pad_left, self.out_w),
        ] {
            if input == 0 || out == 0 {
                return Err(Error::Shape(format!(
                    "3x3 convolution {axis}: input {input} and output {out} must be non-zero"
                )));
            }
            if pad > 2 {
                return Err(Error::Shape(format!(
                    "3x3 convolution {axis}: leading padding {pad} is above 2"
                )));
            }
            // The last window must start inside the image:
            // (out - 1) * stride - pad <= input - 1.
            let fits = (out - 1)
                .checked_mul(self.stride)
                .is_some_and(|last| last <= input - 1 + pad);
            if !fits {
                return Err(Error::Shape(format!(
                    "3x3 convolution {axis}: {out} outputs at stride {} with leading padding \
                     {pad} run past the input of {input}",
                    self.stride
                )));
            }
        }
        Ok(())
    }

    /// Elements of an `[in_h, in_w, channels]` input.
    pub fn input_len(&self, channels: usize) -> Result<usize> {
        checked_len(&[self.in_h, self.in_w, channels])
    }

    /// Elements of an `[out_h, out_w, channels]` output.
    pub fn output_len(&self, channels: usize) -> Result<usize> {
        checked_len(&[self.out_h, self.out_w, channels])
    }

    /// The rows `rows` of a whole `[out_h, out_w, channels]` output buffer,
    /// checking the buffer's length and the range (`what` names the kernel
    /// in the error).
    pub fn output_band<'a>(
        &self,
        output: &'a mut [f32],
        channels: usize,
        rows: &Range<usize>,
        what: &str,
    ) -> Result<&'a mut [f32]> {
        let total = self.output_len(channels)?;
        if output.len() != total {
            return Err(Error::Shape(format!(
                "{what} output [{}, {}, {channels}] needs {total} elements, got {}",
                self.out_h,
                self.out_w,
                output.len()
            )));
        }
        if rows.start > rows.end || rows.end > self.out_h {
            return Err(Error::Shape(format!(
                "output rows {rows:?} are not a range within 0..{}",
                self.out_h
            )));
        }
        let row_len = self.out_w * channels;
        Ok(&mut output[rows.start * row_len..rows.end * row_len])
    }

    /// Input rows of the three taps of output row `oy` (`None` = padding).
    pub(crate) fn tap_rows(&self, oy: usize) -> [Option<usize>; 3] {
        let top = oy * self.stride;
        std::array::from_fn(|ky| {
            (top + ky)
                .checked_sub(self.pad_top)
                .filter(|&iy| iy < self.in_h)
        })
    }

    /// Output columns whose three taps all lie inside the image, as a range
    /// within `0..out_w` (possibly empty): left of it and right of it are
    /// the border columns.
    pub(crate) fn interior_cols(&self) -> Range<usize> {
        let s = self.stride;
        let lo = self.pad_left.div_ceil(s).min(self.out_w);
        // x * s - pad_left + 2 <= in_w - 1.
        let hi = if self.in_w + self.pad_left >= 3 {
            ((self.in_w + self.pad_left - 3) / s + 1).min(self.out_w)
        } else {
            0
        };
        lo..hi.max(lo)
    }
}

/// Product of `dims`, or a shape error on overflow.
fn checked_len(dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::TooLarge(format!("dimensions {dims:?} overflow")))
}

/// Rejects NaN clamp bounds (vector min/max and `f32::max` disagree on NaN).
pub(crate) fn check_epilogue(e: &Epilogue) -> Result<()> {
    if e.min.is_nan() || e.max.is_nan() {
        return Err(Error::InvalidConfig(format!(
            "epilogue bounds must not be NaN, got [{}, {}]",
            e.min, e.max
        )));
    }
    Ok(())
}

/// Errors unless `isa` runs on this CPU (with everything its kernels use).
pub(crate) fn check_isa(isa: Isa) -> Result<()> {
    let ok = match isa {
        Isa::Portable => true,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => isa.is_supported(),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            isa.is_supported()
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "instruction set {isa} is not supported by this CPU"
        )))
    }
}

/// Vector width (f32 lanes) that packed buffers are padded to for `isa`.
pub(crate) fn pad_lanes(isa: Isa) -> usize {
    match isa {
        Isa::Portable | Isa::Avx2Fma => 8,
        Isa::Avx512 => 16,
    }
}

/// Checks `rows` against `out_h` and the band length; returns the length of
/// one output row.
pub(crate) fn check_band(
    geom: &Conv3x3Geometry,
    channels: usize,
    band_len: usize,
    rows: &Range<usize>,
) -> Result<usize> {
    if rows.start > rows.end || rows.end > geom.out_h {
        return Err(Error::Shape(format!(
            "output rows {rows:?} are not a range within 0..{}",
            geom.out_h
        )));
    }
    let row_len = checked_len(&[geom.out_w, channels])?;
    let want = checked_len(&[rows.len(), row_len])?;
    if band_len != want {
        return Err(Error::Shape(format!(
            "output band for rows {rows:?} needs {want} elements ({} x {} x {channels}), got {band_len}",
            rows.len(),
            geom.out_w
        )));
    }
    Ok(row_len)
}

/// Depthwise 3x3 weights and bias packed for one ISA.
#[derive(Clone, Debug)]
pub struct PackedDepthwise3x3 {
    isa: Isa,
    channels: usize,
    /// Channels per packed block (the ISA's vector width).
    lanes: usize,
    /// `[blocks][10][lanes]`: per block the bias, then taps `ky * 3 + kx`;
    /// zero past `channels`.
    packed: AlignedBuf,
}

impl PackedDepthwise3x3 {
    /// Packs `weight` in PyTorch layout `[C, 1, 3, 3]` (flattened, length
    /// `9 * C`) and `bias` `[C]` for `isa`.
    ///
    /// Errors: [`Error::InvalidConfig`] if this CPU lacks `isa`,
    /// [`Error::Shape`] for zero channels or wrong lengths.
    pub fn pack(isa: Isa, weight: &[f32], bias: &[f32], channels: usize) -> Result<Self> {
        check_isa(isa)?;
        if channels == 0 {
            return Err(Error::Shape(
                "depthwise conv needs at least 1 channel".into(),
            ));
        }
        if Some(weight.len()) != channels.checked_mul(9) || bias.len() != channels {
            return Err(Error::Shape(format!(
                "depthwise 3x3 with {channels} channels needs weight [{channels}, 1, 3, 3] \
                 ({} values) and bias [{channels}], got {} and {}",
                channels.saturating_mul(9),
                weight.len(),
                bias.len()
            )));
        }
        let lanes = pad_lanes(isa);
        let mut packed = AlignedBuf::zeros(channels.div_ceil(lanes) * 10 * lanes);
        let p = packed.as_mut_slice();
        for (c, taps) in weight.chunks_exact(9).enumerate() {
            let base = (c / lanes) * 10 * lanes + c % lanes;
            p[base] = bias[c];
            for (k, &v) in taps.iter().enumerate() {
                p[base + (k + 1) * lanes] = v;
            }
        }
        Ok(PackedDepthwise3x3 {
            isa,
            channels,
            lanes,
            packed,
        })
    }

    /// The instruction set the weights were packed for.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The number of channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Computes output rows `rows` (a sub-range of `0..out_h`) of one image.
    ///
    /// `input` is the whole `[in_h, in_w, C]` image and `output` the whole
    /// `[out_h, out_w, C]` buffer, of which only the rows in `rows` are
    /// written. Returns [`Error::Shape`] on any length or geometry mismatch
    /// and [`Error::InvalidConfig`] for NaN clamp bounds; allocates nothing.
    pub fn run(
        &self,
        input: &[f32],
        output: &mut [f32],
        geom: &Conv3x3Geometry,
        rows: Range<usize>,
        epilogue: Epilogue,
    ) -> Result<()> {
        let band = geom.output_band(output, self.channels, &rows, "depthwise")?;
        self.run_band(input, band, geom, rows, epilogue)
    }

    /// Like [`run`](Self::run), but `band` holds only the output rows `rows`
    /// (`[rows.len(), out_w, C]`, row `rows.start` first), so that threads
    /// can each own a disjoint `&mut` band obtained with `split_at_mut`.
    pub fn run_band(
        &self,
        input: &[f32],
        band: &mut [f32],
        geom: &Conv3x3Geometry,
        rows: Range<usize>,
        epilogue: Epilogue,
    ) -> Result<()> {
        geom.validate()?;
        check_epilogue(&epilogue)?;
        let c = self.channels;
        let in_len = geom.input_len(c)?;
        if input.len() != in_len {
            return Err(Error::Shape(format!(
                "depthwise input [{}, {}, {c}] needs {in_len} elements, got {}",
                geom.in_h,
                geom.in_w,
                input.len()
            )));
        }
        check_band(geom, c, band.len(), &rows)?;
        if rows.is_empty() {
            return Ok(());
        }
        let job = kernel::DwJob {
            input,
            band,
            packed: self.packed.as_slice(),
            pack_lanes: self.lanes,
            channels: c,
            geom: *geom,
            rows,
            epilogue,
        };
        match self.isa {
            Isa::Portable => portable::depthwise(job),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `pack` checked that the CPU has AVX2 and FMA; the job's
            // lengths and geometry were checked above.
            Isa::Avx2Fma => unsafe { avx2::depthwise(job) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `pack` checked AVX-512F/VL, AVX2 and FMA; the job was
            // checked above.
            Isa::Avx512 => unsafe { avx512::depthwise(job) },
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("pack refuses ISAs this CPU lacks"),
        }
        Ok(())
    }
}
