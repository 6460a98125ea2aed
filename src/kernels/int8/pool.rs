//! uint8 average pooling as TFLite's reference kernel: the sum of the codes
//! inside the window (outside taps do not count), `(sum + count / 2) /
//! count`, clamped. Pooling is a sliver of MobileNet's work, so this is
//! plain code; it exists so the planned path never allocates.

use crate::error::{Error, Result};

/// The shape of one average pool of one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeometry {
    /// Input `[height, width]`.
    pub input: [usize; 2],
    /// Channels.
    pub channels: usize,
    /// Window `[height, width]`.
    pub window: [usize; 2],
    /// `[height, width]` strides.
    pub stride: [usize; 2],
    /// Taps before the input on `[top, left]`.
    pub pad: [usize; 2],
    /// Output `[height, width]`.
    pub output: [usize; 2],
}

/// Averages one `input` image into `output`, clamping to `[min, max]`.
///
/// Fails with [`Error::Shape`] if a length does not fit the geometry.
pub fn average_pool(
    geom: &PoolGeometry,
    input: &[u8],
    min: u8,
    max: u8,
    output: &mut [u8],
) -> Result<()> {
    let [h, w] = geom.input;
    let c = geom.channels;
    let size = |d: [usize; 3]| d.iter().try_fold(1usize, |a, &v| a.checked_mul(v));
    if size([h, w, c]) != Some(input.len())
        || size([geom.output[0], geom.output[1], c]) != Some(output.len())
        || geom.stride.contains(&0)
    {
        return Err(Error::Shape(format!(
            "average pool {geom:?}: input of {} and output of {} bytes",
            input.len(),
            output.len()
        )));
    }
    // Inside taps of output `o` along an axis: input indices.
    let span = |o: usize, axis: usize, len: usize| {
        let start = o * geom.stride[axis];
        let lo = start.max(geom.pad[axis]) - geom.pad[axis];
        let hi = (start + geom.window[axis])
            .saturating_sub(geom.pad[axis])
            .min(len);
        lo..hi.max(lo)
    };
    let mut outs = output.chunks_exact_mut(c.max(1));
    for oy in 0..geom.output[0] {
        let ys = span(oy, 0, h);
        for ox in 0..geom.output[1] {
            let xs = span(ox, 1, w);
            let count = (ys.len() * xs.len()).max(1) as u64;
            let Some(out) = outs.next() else {
                return Ok(());
            };
            // Channels innermost, a stack block of sums at a time, so the
            // window's pixels are read in order and the adds vectorize.
            // Windows of up to 2^16 pixels sum below 2^24 in u32 lanes and
            // divide exactly by a 48-bit reciprocal (`n d < 2^48`); larger
            // ones take u64 sums and plain division.
            const BLOCK: usize = 256;
            let mut sums = [0u32; BLOCK];
            let mut wide = [0u64; BLOCK];
            let reciprocal = (count <= 1 << 16).then(|| (1u64 << 48).div_ceil(count));
            for (c0, out) in (0..c).step_by(BLOCK).zip(out.chunks_mut(BLOCK)) {
                let pixels = ys
                    .clone()
                    .flat_map(|y| xs.clone().map(move |x| (y * w + x) * c + c0));
                let clamp = |avg: u64| avg.clamp(u64::from(min), u64::from(max)) as u8;
                match reciprocal {
                    Some(r) => {
                        let sums = &mut sums[..out.len()];
                        sums.fill(0);
                        for at in pixels {
                            for (s, &v) in sums.iter_mut().zip(&input[at..at + out.len()]) {
                                *s += u32::from(v);
                            }
                        }
                        for (o, &sum) in out.iter_mut().zip(sums.iter()) {
                            *o = clamp(((u64::from(sum) + count / 2) * r) >> 48);
                        }
                    }
                    None => {
                        let sums = &mut wide[..out.len()];
                        sums.fill(0);
                        for at in pixels {
                            for (s, &v) in sums.iter_mut().zip(&input[at..at + out.len()]) {
                                *s += u64::from(v);
                            }
                        }
                        for (o, &sum) in out.iter_mut().zip(sums.iter()) {
                            *o = clamp((sum + count / 2) / count);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
