//! Patches of a general convolution laid out as GEMM rows, so one packed
//! GEMM serves every full convolution (the 3x3 stem included): row `p`
//! holds the `kh * kw * channels` inputs under output pixel `p`, in the
//! OHWI order of TFLite filters, with the input zero point where a tap
//! falls outside the image (TFLite skips those taps, the same thing).

use std::ops::Range;

use crate::error::{Error, Result};

/// The shape of one full convolution of one image, as im2col needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchGeometry {
    /// Input `[height, width]`.
    pub input: [usize; 2],
    /// Input channels.
    pub channels: usize,
    /// Filter `[height, width]`.
    pub kernel: [usize; 2],
    /// `[height, width]` strides.
    pub stride: [usize; 2],
    /// `[height, width]` dilations.
    pub dilation: [usize; 2],
    /// Taps before the input on `[top, left]`.
    pub pad: [usize; 2],
    /// Output `[height, width]`.
    pub output: [usize; 2],
}

impl PatchGeometry {
    /// Bytes of one patch row (the GEMM depth).
    pub fn depth(&self) -> usize {
        self.kernel[0] * self.kernel[1] * self.channels
    }
}

/// Writes the patch rows of output rows `rows` (each `output[1]` pixels)
/// of one `input` image into `patches`, outside taps as `zero_point`.
///
/// Fails with [`Error::Shape`] if a length or `rows` does not fit the
/// geometry.
pub fn im2col(
    geom: &PatchGeometry,
    input: &[u8],
    zero_point: u8,
    rows: Range<usize>,
    patches: &mut [u8],
) -> Result<()> {
    let [h, w] = geom.input;
    let c = geom.channels;
    let want_in = [h, w, c].iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let want_out = [rows.len(), geom.output[1], geom.depth()]
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d));
    if want_in != Some(input.len())
        || want_out != Some(patches.len())
        || rows.end > geom.output[0]
        || geom.stride.contains(&0)
        || geom.dilation.contains(&0)
        || geom.kernel.contains(&0)
        || c == 0
    {
        return Err(Error::Shape(format!(
            "im2col {geom:?}: input of {} bytes, rows {rows:?} into {} bytes",
            input.len(),
            patches.len()
        )));
    }
    let [kh, kw] = geom.kernel;
    let [sh, sw] = geom.stride;
    let [dh, dw] = geom.dilation;
    let [pt, pl] = geom.pad;
    // With no column dilation a patch row whose taps are all inside the
    // image is `kw * c` contiguous input bytes: one copy instead of `kw`.
    let span = kw * c;
    let mut dst = patches.chunks_exact_mut(span);
    for oy in rows {
        for ox in 0..geom.output[1] {
            let left = (ox * sw).checked_sub(pl).filter(|&x| x + (kw - 1) * dw < w);
            for ky in 0..kh {
                let Some(out) = dst.next() else {
                    return Ok(());
                };
                let Some(y) = (oy * sh + ky * dh).checked_sub(pt).filter(|&y| y < h) else {
                    out.fill(zero_point);
                    continue;
                };
                let row = &input[y * w * c..(y + 1) * w * c];
                match left {
                    Some(x) if dw == 1 => copy_span(out, &row[x * c..x * c + span]),
                    _ => {
                        for (kx, tap) in out.chunks_exact_mut(c).enumerate() {
                            match (ox * sw + kx * dw).checked_sub(pl).filter(|&x| x < w) {
                                Some(x) => tap.copy_from_slice(&row[x * c..(x + 1) * c]),
                                None => tap.fill(zero_point),
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// `dst.copy_from_slice(src)` with the common patch-row lengths known at
/// compile time: a 3x3 stem's rows are 9 bytes, and a call to `memcpy`
/// per 9 bytes costs more than the copy.
#[inline(always)]
fn copy_span(dst: &mut [u8], src: &[u8]) {
    fn fixed<const N: usize>(dst: &mut [u8], src: &[u8]) {
        match <&[u8; N]>::try_from(src) {
            Ok(src) => dst[..N].copy_from_slice(src),
            Err(_) => dst.copy_from_slice(src),
        }
    }
    match dst.len() {
        3 => fixed::<3>(dst, src),
        6 => fixed::<6>(dst, src),
        9 => fixed::<9>(dst, src),
        12 => fixed::<12>(dst, src),
        _ => dst.copy_from_slice(src),
    }
}
