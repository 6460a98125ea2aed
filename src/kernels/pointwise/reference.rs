//! The plain oracle for the pointwise kernels.

use crate::error::{Result, shape_err};
use crate::kernels::Epilogue;

/// `output[m*n + j] = epilogue(sum_kk input[m*k + kk] * weight[j*k + kk] +
/// bias[j])` for `m in 0..rows`, by a plain triple loop.
///
/// The same contract as [`PackedPointwise::run`](super::PackedPointwise::run)
/// with the packing arguments inlined: `weight` is `[n, k]` row-major, `bias`
/// is `[n]`, `input` `[rows, k]` and `output` `[rows, n]`. Errors with
/// [`crate::Error::Shape`] (and writes nothing) if a length does not match
/// or `k` or `n` is zero. The sum is accumulated in `f64`, so that it is
/// closer to the exact value than any `f32` kernel.
#[allow(clippy::too_many_arguments)]
pub fn pointwise_reference(
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    output: &mut [f32],
    rows: usize,
    k: usize,
    n: usize,
    epilogue: Epilogue,
) -> Result<()> {
    if k == 0 || n == 0 {
        shape_err!("pointwise reference: k ({k}) and n ({n}) must be non-zero");
    }
    let check = |what: &str, len: usize, a: usize, b: usize| -> Result<()> {
        match a.checked_mul(b) {
            Some(want) if want == len => Ok(()),
            _ => shape_err!("pointwise reference: {what} has {len} elements, expected {a} x {b}"),
        }
    };
    check("input", input.len(), rows, k)?;
    check("weight", weight.len(), n, k)?;
    check("bias", bias.len(), n, 1)?;
    check("output", output.len(), rows, n)?;
    for m in 0..rows {
        let a = &input[m * k..][..k];
        for j in 0..n {
            let w = &weight[j * k..][..k];
            let sum: f64 = a
                .iter()
                .zip(w)
                .map(|(&x, &y)| f64::from(x) * f64::from(y))
                .sum();
            output[m * n + j] = epilogue.apply((sum + f64::from(bias[j])) as f32);
        }
    }
    Ok(())
}
