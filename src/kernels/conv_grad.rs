//! Gradients of the 3x3 convolutions for training, NHWC, one image at a time.
//!
//! A depthwise layer has only `D_K²·M` weights but touches `D_F²·M`
//! activations: its backward pass, like its forward, is memory-bound, so
//! these kernels stream the image once, row by row, with the channel loop
//! innermost over contiguous memory (NHWC), which the compiler turns into
//! full-width vector code on every ISA. They keep the forward kernels'
//! [`Conv3x3Geometry`] (stride, leading padding, output size).
//!
//! Weights and weight gradients are tap-major here, `[9][C]` (tap `ky * 3 +
//! kx`, channels innermost); [`taps_from_oihw`] and [`oihw_from_taps`]
//! convert from and to PyTorch's `(C, 1, 3, 3)` / `(C_out, C_in, 3, 3)`.

use crate::error::{Error, Result};
use crate::kernels::Isa;
use crate::kernels::depthwise::Conv3x3Geometry;
use crate::kernels::isa::at_vector_width;

/// Checks `len == rows * cols * channels` for the buffer called `what`.
fn check_len(what: &str, len: usize, dims: [usize; 3]) -> Result<()> {
    let want = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::TooLarge(format!("{what} dimensions {dims:?} overflow")))?;
    if len != want {
        return Err(Error::Shape(format!(
            "{what} [{}, {}, {}] needs {want} elements, got {len}",
            dims[0], dims[1], dims[2]
        )));
    }
    Ok(())
}

/// Input row (or column) of tap `k` of output row `o`, if inside the image.
#[inline(always)]
fn tap_index(o: usize, k: usize, stride: usize, pad: usize, size: usize) -> Option<usize> {
    (o * stride + k).checked_sub(pad).filter(|&i| i < size)
}

/// Gradient of a depthwise 3x3 convolution with respect to its input:
/// `grad_input[iy, ix, c] = Σ_{taps} w[ky, kx, c] · grad_output[oy, ox, c]`
/// over the output pixels whose window covers `(iy, ix)`.
///
/// `weight` is tap-major `[9][C]`; `grad_input` (`[in_h, in_w, C]`) is
/// overwritten. Errors on any length or geometry mismatch.
pub fn depthwise3x3_grad_input_nhwc(
    isa: Isa,
    geom: &Conv3x3Geometry,
    channels: usize,
    weight: &[f32],
    grad_output: &[f32],
    grad_input: &mut [f32],
) -> Result<()> {
    geom.validate()?;
    let c = channels;
    check_len("depthwise weight taps", weight.len(), [9, 1, c])?;
    check_len(
        "grad output",
        grad_output.len(),
        [geom.out_h, geom.out_w, c],
    )?;
    check_len("grad input", grad_input.len(), [geom.in_h, geom.in_w, c])?;
    grad_input.fill(0.0);
    if c == 0 {
        return Ok(());
    }
    #[inline(always)]
    fn loops(
        geom: &Conv3x3Geometry,
        c: usize,
        weight: &[f32],
        grad_output: &[f32],
        grad_input: &mut [f32],
    ) {
        let s = geom.stride;
        for oy in 0..geom.out_h {
            let go_row = &grad_output[oy * geom.out_w * c..(oy + 1) * geom.out_w * c];
            for ky in 0..3 {
                let Some(iy) = tap_index(oy, ky, s, geom.pad_top, geom.in_h) else {
                    continue;
                };
                let gi_row = &mut grad_input[iy * geom.in_w * c..(iy + 1) * geom.in_w * c];
                for (ox, go) in go_row.chunks_exact(c).enumerate() {
                    for kx in 0..3 {
                        let Some(ix) = tap_index(ox, kx, s, geom.pad_left, geom.in_w) else {
                            continue;
                        };
                        let w = &weight[(ky * 3 + kx) * c..(ky * 3 + kx + 1) * c];
                        let gi = &mut gi_row[ix * c..(ix + 1) * c];
                        for ((g, &w), &d) in gi.iter_mut().zip(w).zip(go) {
                            *g += w * d;
                        }
                    }
                }
            }
        }
    }
    at_vector_width!(isa, loops(geom, c, weight, grad_output, grad_input));
    Ok(())
}

/// Gradient of a depthwise 3x3 convolution with respect to its weights,
/// **added** to `grad_weight` (tap-major `[9][C]`), so that one buffer
/// gathers a whole batch: `grad_w[ky, kx, c] += Σ_{oy, ox} x[iy, ix, c] ·
/// grad_output[oy, ox, c]`.
pub fn depthwise3x3_grad_weight_nhwc(
    isa: Isa,
    geom: &Conv3x3Geometry,
    channels: usize,
    input: &[f32],
    grad_output: &[f32],
    grad_weight: &mut [f32],
) -> Result<()> {
    geom.validate()?;
    let c = channels;
    check_len("input", input.len(), [geom.in_h, geom.in_w, c])?;
    check_len(
        "grad output",
        grad_output.len(),
        [geom.out_h, geom.out_w, c],
    )?;
    check_len("depthwise weight grad", grad_weight.len(), [9, 1, c])?;
    if c == 0 {
        return Ok(());
    }
    #[inline(always)]
    fn loops(
        geom: &Conv3x3Geometry,
        c: usize,
        input: &[f32],
        grad_output: &[f32],
        grad_weight: &mut [f32],
    ) {
        let s = geom.stride;
        for oy in 0..geom.out_h {
            let go_row = &grad_output[oy * geom.out_w * c..(oy + 1) * geom.out_w * c];
            for ky in 0..3 {
                let Some(iy) = tap_index(oy, ky, s, geom.pad_top, geom.in_h) else {
                    continue;
                };
                let x_row = &input[iy * geom.in_w * c..(iy + 1) * geom.in_w * c];
                for kx in 0..3 {
                    let gw = &mut grad_weight[(ky * 3 + kx) * c..(ky * 3 + kx + 1) * c];
                    for (ox, go) in go_row.chunks_exact(c).enumerate() {
                        let Some(ix) = tap_index(ox, kx, s, geom.pad_left, geom.in_w) else {
                            continue;
                        };
                        let x = &x_row[ix * c..(ix + 1) * c];
                        for ((g, &x), &d) in gw.iter_mut().zip(x).zip(go) {
                            *g += x * d;
                        }
                    }
                }
            }
        }
    }
    at_vector_width!(isa, loops(geom, c, input, grad_output, grad_weight));
    Ok(())
}

/// Output channels per register block of the stem's weight gradient: one
/// 256-bit vector, so that its nine running sums fit the 16 vector
/// registers of AVX2.
const BLOCK: usize = 8;

/// `width` (<= [`BLOCK`]) values of `src` from `at`, zero-padded to a block.
#[inline(always)]
fn load_block(src: &[f32], at: usize, width: usize) -> [f32; BLOCK] {
    let mut v = [0.0; BLOCK];
    v[..width].copy_from_slice(&src[at..at + width]);
    v
}

/// `acc += x · d`, lane by lane (a separate multiply and add, as the plain
/// loops compute it, on every ISA).
#[inline(always)]
fn multiply_add(acc: &mut [f32; BLOCK], x: &[f32; BLOCK], d: &[f32; BLOCK]) {
    for ((a, &x), &d) in acc.iter_mut().zip(x).zip(d) {
        *a += x * d;
    }
}

/// The valid taps of output position `o` along one axis.
#[inline(always)]
fn taps_of(o: usize, stride: usize, pad: usize, size: usize) -> [Option<usize>; 3] {
    [0, 1, 2].map(|k| tap_index(o, k, stride, pad, size))
}

/// The geometry and the buffer lengths of a stem weight gradient.
fn check_stem_lengths(
    geom: &Conv3x3Geometry,
    c_in: usize,
    c_out: usize,
    input: &[f32],
    grad_output: &[f32],
    grad_weight: &[f32],
) -> Result<()> {
    geom.validate()?;
    check_len("input", input.len(), [geom.in_h, geom.in_w, c_in])?;
    check_len(
        "grad output",
        grad_output.len(),
        [geom.out_h, geom.out_w, c_out],
    )?;
    check_len("conv weight grad", grad_weight.len(), [9, c_in, c_out])?;
    Ok(())
}

/// Gradient of a full 3x3 convolution (`C_in -> C_out`, the stem) with
/// respect to its weights, **added** to `grad_weight`, laid out
/// `[ky][kx][c_in][C_out]` (output channels innermost, so each input value
/// scales one contiguous row of `grad_output`).
///
/// Output channels go in blocks of [`BLOCK`] and input channels in threes;
/// for one kernel row `ky`, the 3 x 3 running sums of a block (`kx` by input
/// channel) stay in registers while the image streams past. The plain loop
/// ([`conv3x3_grad_weight_reference`]) reads and writes a sum in memory for
/// every pixel, tap and input channel. Same order, same bits, on every ISA.
pub fn conv3x3_grad_weight_nhwc(
    isa: Isa,
    geom: &Conv3x3Geometry,
    c_in: usize,
    c_out: usize,
    input: &[f32],
    grad_output: &[f32],
    grad_weight: &mut [f32],
) -> Result<()> {
    check_stem_lengths(geom, c_in, c_out, input, grad_output, grad_weight)?;
    #[inline(always)]
    fn blocks(
        geom: &Conv3x3Geometry,
        c_in: usize,
        c_out: usize,
        input: &[f32],
        grad_output: &[f32],
        grad_weight: &mut [f32],
    ) {
        for ci0 in (0..c_in).step_by(3) {
            let inputs = (c_in - ci0).min(3);
            for ky in 0..3 {
                let mut co0 = 0;
                while co0 + BLOCK <= c_out {
                    let block = StemBlock {
                        ky,
                        ci0,
                        inputs,
                        co0,
                        width: BLOCK,
                    };
                    stem_weight_block(geom, c_in, c_out, block, input, grad_output, grad_weight);
                    co0 += BLOCK;
                }
                if co0 < c_out {
                    let block = StemBlock {
                        ky,
                        ci0,
                        inputs,
                        co0,
                        width: c_out - co0,
                    };
                    stem_weight_block(geom, c_in, c_out, block, input, grad_output, grad_weight);
                }
            }
        }
    }
    at_vector_width!(
        isa,
        blocks(geom, c_in, c_out, input, grad_output, grad_weight)
    );
    Ok(())
}

/// Which sums one pass of [`stem_weight_block`] gathers: kernel row `ky`,
/// input channels `ci0..ci0 + inputs` (<= 3), output channels
/// `co0..co0 + width` (<= [`BLOCK`]).
#[derive(Clone, Copy)]
struct StemBlock {
    ky: usize,
    ci0: usize,
    inputs: usize,
    co0: usize,
    width: usize,
}

/// One block of [`conv3x3_grad_weight_nhwc`].
#[inline(always)]
fn stem_weight_block(
    geom: &Conv3x3Geometry,
    c_in: usize,
    c_out: usize,
    b: StemBlock,
    input: &[f32],
    grad_output: &[f32],
    grad_weight: &mut [f32],
) {
    let s = geom.stride;
    // acc[kx * 3 + i]: tap (ky, kx), input channel ci0 + i.
    let mut acc = [[0.0f32; BLOCK]; 9];
    for oy in 0..geom.out_h {
        let Some(iy) = tap_index(oy, b.ky, s, geom.pad_top, geom.in_h) else {
            continue;
        };
        for ox in 0..geom.out_w {
            let cols = taps_of(ox, s, geom.pad_left, geom.in_w);
            let d = load_block(grad_output, (oy * geom.out_w + ox) * c_out + b.co0, b.width);
            for (kx, ix) in cols.iter().enumerate() {
                let Some(ix) = *ix else { continue };
                let pixel = (iy * geom.in_w + ix) * c_in + b.ci0;
                for i in 0..3 {
                    if i < b.inputs {
                        let x = [input[pixel + i]; BLOCK];
                        multiply_add(&mut acc[kx * 3 + i], &x, &d);
                    }
                }
            }
        }
    }
    for kx in 0..3 {
        for i in 0..b.inputs {
            let row = ((b.ky * 3 + kx) * c_in + b.ci0 + i) * c_out + b.co0;
            for (g, v) in grad_weight[row..][..b.width]
                .iter_mut()
                .zip(&acc[kx * 3 + i])
            {
                *g += v;
            }
        }
    }
}

/// The plain loop of [`conv3x3_grad_weight_nhwc`] (accumulating in memory):
/// its oracle. Gradient of a full 3x3 convolution (`C_in -> C_out`, the
/// stem) with respect to its weights, **added** to `grad_weight`, laid out
/// `[ky][kx][c_in][C_out]` (output channels innermost, so each input value
/// scales one contiguous row of `grad_output`).
pub fn conv3x3_grad_weight_reference(
    isa: Isa,
    geom: &Conv3x3Geometry,
    c_in: usize,
    c_out: usize,
    input: &[f32],
    grad_output: &[f32],
    grad_weight: &mut [f32],
) -> Result<()> {
    check_stem_lengths(geom, c_in, c_out, input, grad_output, grad_weight)?;
    if c_in == 0 || c_out == 0 {
        return Ok(());
    }
    #[inline(always)]
    fn loops(
        geom: &Conv3x3Geometry,
        c_in: usize,
        c_out: usize,
        input: &[f32],
        grad_output: &[f32],
        grad_weight: &mut [f32],
    ) {
        let s = geom.stride;
        for oy in 0..geom.out_h {
            for ox in 0..geom.out_w {
                let go = &grad_output[(oy * geom.out_w + ox) * c_out..][..c_out];
                for ky in 0..3 {
                    let Some(iy) = tap_index(oy, ky, s, geom.pad_top, geom.in_h) else {
                        continue;
                    };
                    for kx in 0..3 {
                        let Some(ix) = tap_index(ox, kx, s, geom.pad_left, geom.in_w) else {
                            continue;
                        };
                        let x = &input[(iy * geom.in_w + ix) * c_in..][..c_in];
                        let tap = &mut grad_weight[(ky * 3 + kx) * c_in * c_out..][..c_in * c_out];
                        for (&xv, gw) in x.iter().zip(tap.chunks_exact_mut(c_out)) {
                            for (g, &d) in gw.iter_mut().zip(go) {
                                *g += xv * d;
                            }
                        }
                    }
                }
            }
        }
    }
    at_vector_width!(
        isa,
        loops(geom, c_in, c_out, input, grad_output, grad_weight)
    );
    Ok(())
}

/// Index pairs `(oihw, tap-major)` of every weight of a `C_in -> C_out`
/// 3x3 convolution.
fn oihw_tap_pairs(c_in: usize, c_out: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..c_out).flat_map(move |o| {
        (0..c_in).flat_map(move |i| {
            (0..9).map(move |t| ((o * c_in + i) * 9 + t, (t * c_in + i) * c_out + o))
        })
    })
}

/// `(C_out, C_in, 3, 3)` (PyTorch OIHW) to tap-major `[9][C_in][C_out]`;
/// for a depthwise weight `(C, 1, 3, 3)` pass `c_in = 1`, `c_out = C`.
pub fn taps_from_oihw(oihw: &[f32], c_in: usize, c_out: usize, taps: &mut [f32]) -> Result<()> {
    check_len("OIHW weight", oihw.len(), [c_out, c_in, 9])?;
    check_len("tap-major weight", taps.len(), [9, c_in, c_out])?;
    for (from, to) in oihw_tap_pairs(c_in, c_out) {
        taps[to] = oihw[from];
    }
    Ok(())
}

/// The inverse of [`taps_from_oihw`], **adding** into `oihw`.
pub fn oihw_from_taps(taps: &[f32], c_in: usize, c_out: usize, oihw: &mut [f32]) -> Result<()> {
    check_len("OIHW weight", oihw.len(), [c_out, c_in, 9])?;
    check_len("tap-major weight", taps.len(), [9, c_in, c_out])?;
    for (to, from) in oihw_tap_pairs(c_in, c_out) {
        oihw[to] += taps[from];
    }
    Ok(())
}
