//! Batch norm in training mode, over `[rows, C]` NHWC data, channels
//! innermost.
//!
//! These loops are memory-bound streams over whole activations (several
//! per layer and step), so they matter as much as the convolutions in a
//! training step. Each is written once, as a plain loop over contiguous
//! channels, and compiled again under AVX2 and AVX-512 target features so
//! that it runs at the full vector width the CPU has; the arithmetic per
//! element is the same in every version (no fused multiply-add), so every
//! [`Isa`] gives bit-identical results.

use crate::error::{Error, Result};
use crate::kernels::Isa;
use crate::kernels::isa::at_vector_width;

/// Checks that `data` holds whole rows of `c` channels and that every
/// per-channel slice has `c` entries.
fn check(what: &str, c: usize, data: &[usize], per_channel: &[usize]) -> Result<()> {
    if c == 0 {
        return Err(Error::Shape(format!("{what}: zero channels")));
    }
    if let Some(len) = data.iter().find(|&&len| len % c != 0 || len != data[0]) {
        return Err(Error::Shape(format!(
            "{what}: buffers of {:?} values are not equal whole rows of {c} channels ({len})",
            data
        )));
    }
    if let Some(len) = per_channel.iter().find(|&&len| len != c) {
        return Err(Error::Shape(format!(
            "{what}: a per-channel vector has {len} entries, not {c}"
        )));
    }
    Ok(())
}

/// Adds `Σ (x - k)` and `Σ (x - k)²` per channel over the rows of `x` to
/// `sum` and `sum_sq`. The shift `k` (e.g. the first row) keeps the
/// variance `E[(x-k)²] - E[x-k]²` accurate when the mean dwarfs the spread.
pub fn shifted_channel_sums(
    isa: Isa,
    x: &[f32],
    c: usize,
    shift: &[f32],
    sum: &mut [f32],
    sum_sq: &mut [f32],
) -> Result<()> {
    check(
        "batch-norm sums",
        c,
        &[x.len(), x.len()],
        &[shift.len(), sum.len(), sum_sq.len()],
    )?;
    #[inline(always)]
    fn body(x: &[f32], c: usize, shift: &[f32], sum: &mut [f32], sum_sq: &mut [f32]) {
        let (shift, sum, sum_sq) = (&shift[..c], &mut sum[..c], &mut sum_sq[..c]);
        for px in x.chunks_exact(c) {
            for ch in 0..c {
                let d = px[ch] - shift[ch];
                sum[ch] += d;
                sum_sq[ch] += d * d;
            }
        }
    }
    at_vector_width!(isa, body(x, c, shift, sum, sum_sq));
    Ok(())
}

/// `y = clamp((z - mean) · scale + beta, lo, hi)` per channel. Not folded
/// into `z · scale + shift`: with few values per channel the mean can dwarf
/// the spread, and the folded form would cancel digits.
#[allow(clippy::too_many_arguments)]
pub fn normalize_clamp(
    isa: Isa,
    z: &[f32],
    y: &mut [f32],
    c: usize,
    mean: &[f32],
    scale: &[f32],
    beta: &[f32],
    (lo, hi): (f32, f32),
) -> Result<()> {
    check(
        "batch-norm forward",
        c,
        &[z.len(), y.len()],
        &[mean.len(), scale.len(), beta.len()],
    )?;
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn body(z: &[f32], y: &mut [f32], c: usize, m: &[f32], k: &[f32], b: &[f32], lo: f32, hi: f32) {
        let (m, k, b) = (&m[..c], &k[..c], &b[..c]);
        for (y, z) in y.chunks_exact_mut(c).zip(z.chunks_exact(c)) {
            let (y, z) = (&mut y[..c], &z[..c]);
            for ch in 0..c {
                y[ch] = ((z[ch] - m[ch]) * k[ch] + b[ch]).max(lo).min(hi);
            }
        }
    }
    at_vector_width!(isa, body(z, y, c, mean, scale, beta, lo, hi));
    Ok(())
}

/// First pass of the batch-norm backward: masks `grad` (dL/dy on entry) by
/// the clamp (`lo < y < hi`), leaving dy, and adds `Σ dy·x̂` to `dgamma` and
/// `Σ dy` to `dbeta`, with `x̂ = (z - mean) · inv_std`.
#[allow(clippy::too_many_arguments)]
pub fn backward_sums(
    isa: Isa,
    grad: &mut [f32],
    y: &[f32],
    z: &[f32],
    c: usize,
    mean: &[f32],
    inv_std: &[f32],
    (lo, hi): (f32, f32),
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> Result<()> {
    check(
        "batch-norm backward sums",
        c,
        &[grad.len(), y.len(), z.len()],
        &[mean.len(), inv_std.len(), dgamma.len(), dbeta.len()],
    )?;
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn body(
        grad: &mut [f32],
        y: &[f32],
        z: &[f32],
        c: usize,
        m: &[f32],
        s: &[f32],
        lo: f32,
        hi: f32,
        dg: &mut [f32],
        db: &mut [f32],
    ) {
        let (m, s, dg, db) = (&m[..c], &s[..c], &mut dg[..c], &mut db[..c]);
        let rows = grad
            .chunks_exact_mut(c)
            .zip(y.chunks_exact(c))
            .zip(z.chunks_exact(c));
        for ((g, y), z) in rows {
            let (g, y, z) = (&mut g[..c], &y[..c], &z[..c]);
            for ch in 0..c {
                let dy = if y[ch] > lo && y[ch] < hi { g[ch] } else { 0.0 };
                g[ch] = dy;
                dg[ch] += dy * ((z[ch] - m[ch]) * s[ch]);
                db[ch] += dy;
            }
        }
    }
    at_vector_width!(
        isa,
        body(grad, y, z, c, mean, inv_std, lo, hi, dgamma, dbeta)
    );
    Ok(())
}

/// Second pass: `dz = k · (dy - dβ/n - x̂ · dγ/n)` in place, with
/// `k = γ · inv_std` and the batch means `dgamma_n = dγ/n`, `dbeta_n = dβ/n`.
#[allow(clippy::too_many_arguments)]
pub fn backward_input(
    isa: Isa,
    grad: &mut [f32],
    z: &[f32],
    c: usize,
    mean: &[f32],
    inv_std: &[f32],
    k: &[f32],
    dgamma_n: &[f32],
    dbeta_n: &[f32],
) -> Result<()> {
    check(
        "batch-norm backward",
        c,
        &[grad.len(), z.len()],
        &[
            mean.len(),
            inv_std.len(),
            k.len(),
            dgamma_n.len(),
            dbeta_n.len(),
        ],
    )?;
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn body(
        grad: &mut [f32],
        z: &[f32],
        c: usize,
        m: &[f32],
        s: &[f32],
        k: &[f32],
        dg: &[f32],
        db: &[f32],
    ) {
        let (m, s, k, dg, db) = (&m[..c], &s[..c], &k[..c], &dg[..c], &db[..c]);
        for (g, z) in grad.chunks_exact_mut(c).zip(z.chunks_exact(c)) {
            let (g, z) = (&mut g[..c], &z[..c]);
            for ch in 0..c {
                g[ch] = k[ch] * (g[ch] - db[ch] - (z[ch] - m[ch]) * s[ch] * dg[ch]);
            }
        }
    }
    at_vector_width!(isa, body(grad, z, c, mean, inv_std, k, dgamma_n, dbeta_n));
    Ok(())
}
