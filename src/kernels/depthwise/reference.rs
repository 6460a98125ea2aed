//! The plain depthwise 3x3 loop nest the optimized kernels are tested
//! against.

use super::{Conv3x3Geometry, check_epilogue};
use crate::error::{Error, Result};
use crate::kernels::Epilogue;

/// Depthwise 3x3 convolution of one `[in_h, in_w, C]` image into the whole
/// `[out_h, out_w, C]` output: `out = clamp(sum(in * w) + bias)`.
///
/// `weight` is in PyTorch layout `[C, 1, 3, 3]` (flattened), `bias` `[C]`.
/// Same checks and errors as [`super::PackedDepthwise3x3::run`].
pub fn depthwise3x3_reference(
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    output: &mut [f32],
    channels: usize,
    geom: &Conv3x3Geometry,
    epilogue: Epilogue,
) -> Result<()> {
    geom.validate()?;
    check_epilogue(&epilogue)?;
    let c = channels;
    if c == 0 {
        return Err(Error::Shape(
            "depthwise conv needs at least 1 channel".into(),
        ));
    }
    if Some(weight.len()) != c.checked_mul(9) || bias.len() != c {
        return Err(Error::Shape(format!(
            "depthwise 3x3 with {c} channels needs weight of {} and bias of {c} values, \
             got {} and {}",
            c.saturating_mul(9),
            weight.len(),
            bias.len()
        )));
    }
    let (in_len, out_len) = (geom.input_len(c)?, geom.output_len(c)?);
    if input.len() != in_len || output.len() != out_len {
        return Err(Error::Shape(format!(
            "depthwise input needs {in_len} and output {out_len} elements, got {} and {}",
            input.len(),
            output.len()
        )));
    }
    for oy in 0..geom.out_h {
        for ox in 0..geom.out_w {
            for ch in 0..c {
                let mut acc = 0.0f32;
                for ky in 0..3 {
                    let iy = (oy * geom.stride + ky) as isize - geom.pad_top as isize;
                    if iy < 0 || iy >= geom.in_h as isize {
                        continue;
                    }
                    for kx in 0..3 {
                        let ix = (ox * geom.stride + kx) as isize - geom.pad_left as isize;
                        if ix < 0 || ix >= geom.in_w as isize {
                            continue;
                        }
                        let x = input[(iy as usize * geom.in_w + ix as usize) * c + ch];
                        acc += x * weight[ch * 9 + ky * 3 + kx];
                    }
                }
                output[(oy * geom.out_w + ox) * c + ch] = epilogue.apply(acc + bias[ch]);
            }
        }
    }
    Ok(())
}
