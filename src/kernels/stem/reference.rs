//! The plain stem convolution loop nest the optimized kernels are tested
//! against.

use super::check_params;
use crate::error::{Error, Result};
use crate::kernels::Epilogue;
use crate::kernels::depthwise::{Conv3x3Geometry, check_epilogue};

/// Full 3x3 convolution of one `[in_h, in_w, C_in]` image into the whole
/// `[out_h, out_w, C_out]` output: `out = clamp(sum(in * w) + bias)`.
///
/// `weight` is in PyTorch layout `[C_out, C_in, 3, 3]` (flattened), `bias`
/// `[C_out]`. Same checks and errors as [`super::PackedStemConv3x3::run`].
#[allow(clippy::too_many_arguments)]
pub fn stem_conv3x3_reference(
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    output: &mut [f32],
    c_in: usize,
    c_out: usize,
    geom: &Conv3x3Geometry,
    epilogue: Epilogue,
) -> Result<()> {
    geom.validate()?;
    check_epilogue(&epilogue)?;
    check_params(weight, bias, c_in, c_out)?;
    let (in_len, out_len) = (geom.input_len(c_in)?, geom.output_len(c_out)?);
    if input.len() != in_len || output.len() != out_len {
        return Err(Error::Shape(format!(
            "stem input needs {in_len} and output {out_len} elements, got {} and {}",
            input.len(),
            output.len()
        )));
    }
    for oy in 0..geom.out_h {
        for ox in 0..geom.out_w {
            for co in 0..c_out {
                let mut acc = 0.0f32;
                for ci in 0..c_in {
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
                            let x = input[(iy as usize * geom.in_w + ix as usize) * c_in + ci];
                            acc += x * weight[((co * c_in + ci) * 3 + ky) * 3 + kx];
                        }
                    }
                }
                output[(oy * geom.out_w + ox) * c_out + co] = epilogue.apply(acc + bias[co]);
            }
        }
    }
    Ok(())
}
