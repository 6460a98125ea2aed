//! Chains of 3x3-window layers run band by band: the stem and the first
//! separable blocks computed a few output rows at a time, each layer's rows
//! kept in a small per-thread window, so that the large early activations
//! (1.6-3.2 MB each at 224 px) never travel to L3 or memory and back.
//!
//! A chain is a list of [`Stage`]s. For each band of the last stage's
//! output rows, the rows every earlier stage must supply are found backwards
//! ([`Stage::input_rows`]), then computed forwards. Each intermediate stage
//! keeps its rows in a window: rows the next band needs again (the 3x3
//! halo) are moved to the window's front and only the new rows are
//! computed, so no row is computed twice except at the start of a thread's
//! share.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::kernels::Epilogue;
use crate::kernels::depthwise::{Conv3x3Geometry, PackedDepthwise3x3};
use crate::kernels::pointwise::PackedPointwise;
use crate::kernels::stem::PackedStemConv3x3;

/// Most stages in one chain: the run keeps its per-stage state in arrays
/// of this size, so that it allocates nothing.
pub(crate) const MAX_STAGES: usize = 8;

/// One layer (or fused separable block) of a chain.
#[derive(Debug)]
pub(crate) enum Stage {
    /// A full 3x3 convolution (the stem).
    Conv3x3 {
        kernel: PackedStemConv3x3,
        geom: Conv3x3Geometry,
    },
    /// A depthwise 3x3 conv, then the pointwise conv after it.
    Separable {
        depthwise: PackedDepthwise3x3,
        geom: Conv3x3Geometry,
        pointwise: PackedPointwise,
    },
}

impl Stage {
    fn geom(&self) -> &Conv3x3Geometry {
        match self {
            Stage::Conv3x3 { geom, .. } | Stage::Separable { geom, .. } => geom,
        }
    }

    fn in_channels(&self) -> usize {
        match self {
            Stage::Conv3x3 { kernel, .. } => kernel.c_in(),
            Stage::Separable { depthwise, .. } => depthwise.channels(),
        }
    }

    fn out_channels(&self) -> usize {
        match self {
            Stage::Conv3x3 { kernel, .. } => kernel.c_out(),
            Stage::Separable { pointwise, .. } => pointwise.n(),
        }
    }

    /// Floats of one output row.
    fn out_row(&self) -> usize {
        self.geom().out_w * self.out_channels()
    }

    /// Floats of one row of the depthwise output (0 for a full conv).
    fn mid_row(&self) -> usize {
        match self {
            Stage::Conv3x3 { .. } => 0,
            Stage::Separable {
                geom, depthwise, ..
            } => geom.out_w * depthwise.channels(),
        }
    }

    /// The input rows that output rows `out` (non-empty) read.
    fn input_rows(&self, out: &Range<usize>) -> Range<usize> {
        let g = self.geom();
        let start = (out.start * g.stride).saturating_sub(g.pad_top);
        let end = ((out.end - 1) * g.stride + 3)
            .saturating_sub(g.pad_top)
            .min(g.in_h);
        start..end
    }

    /// Computes output rows `rows` into `out` (`rows.len()` rows) from
    /// `window`, which holds input rows `window_rows`, using `mid` for the
    /// depthwise output.
    fn run_rows(
        &self,
        window: &[f32],
        window_rows: Range<usize>,
        rows: Range<usize>,
        out: &mut [f32],
        mid: &mut [f32],
        epilogue: Epilogue,
    ) -> Result<()> {
        let g = self.geom();
        let needed = self.input_rows(&rows);
        let in_row = g.in_w * self.in_channels();
        if needed.start < window_rows.start || needed.end > window_rows.end {
            return Err(Error::Shape(format!(
                "chain: rows {rows:?} need input rows {needed:?}, the window holds {window_rows:?}"
            )));
        }
        // The convolution of the sub-image that starts at input row
        // `needed.start`: its top padding is what remains of the real one
        // above that row (none inside the image). Rows past its end are the
        // real bottom padding, since `needed` reaches the real end whenever
        // a window would read past it.
        let first = needed.start - window_rows.start;
        let input = &window[first * in_row..(window_rows.end - window_rows.start) * in_row];
        let sub = Conv3x3Geometry {
            in_h: window_rows.end - needed.start,
            pad_top: g.pad_top + needed.start - rows.start * g.stride,
            out_h: rows.len(),
            ..*g
        };
        let local = 0..rows.len();
        match self {
            Stage::Conv3x3 { kernel, .. } => kernel.run_band(input, out, &sub, local, epilogue),
            Stage::Separable {
                depthwise,
                pointwise,
                ..
            } => {
                let mid = &mut mid[..rows.len() * self.mid_row()];
                depthwise.run_band(input, mid, &sub, local, epilogue)?;
                pointwise.run(mid, out, rows.len() * g.out_w, epilogue)
            }
        }
    }
}

/// Rows and floats per row of the chain's output.
pub(crate) fn output_rows(stages: &[Stage]) -> (usize, usize) {
    stages
        .last()
        .map_or((0, 0), |s| (s.geom().out_h, s.out_row()))
}

/// Floats of each stage's window (none for the last, which writes the
/// output) and depthwise band for bands of `band_rows` last-stage rows,
/// each rounded up to a cache line. A stage computes at most the rows the
/// next one reads for its largest band.
fn scratch_parts(stages: &[Stage], band_rows: usize) -> impl Iterator<Item = (usize, usize)> {
    let line = |n: usize| n.div_ceil(16) * 16;
    let mut rows = [0; MAX_STAGES];
    let mut next = band_rows;
    for (i, s) in stages.iter().enumerate().take(MAX_STAGES).rev() {
        rows[i] = next.min(s.geom().out_h);
        next = (rows[i] - 1) * s.geom().stride + 3;
    }
    let n = stages.len();
    stages.iter().zip(rows).enumerate().map(move |(i, (s, r))| {
        let window = if i + 1 < n { line(r * s.out_row()) } else { 0 };
        (window, line(r * s.mid_row()))
    })
}

/// Floats of per-thread scratch a chain needs for bands of `band_rows`.
pub(crate) fn scratch_len(stages: &[Stage], band_rows: usize) -> usize {
    scratch_parts(stages, band_rows).map(|(w, m)| w + m).sum()
}

/// The largest band of last-stage rows whose scratch fits in `bytes`
/// (at least one row).
pub(crate) fn band_rows_for(stages: &[Stage], bytes: usize) -> usize {
    let out_h = stages.last().map_or(1, |s| s.geom().out_h);
    let mut rows = 1;
    while rows < out_h && scratch_len(stages, rows + 1) * 4 <= bytes {
        rows += 1;
    }
    rows
}

/// Computes the last stage's output rows `rows` into `out` (those rows
/// only) from the chain's whole `input`, `band_rows` at a time, with
/// `scratch` of at least [`scratch_len`] floats.
pub(crate) fn run_chain(
    stages: &[Stage],
    band_rows: usize,
    input: &[f32],
    rows: Range<usize>,
    out: &mut [f32],
    scratch: &mut [f32],
    epilogue: Epilogue,
) -> Result<()> {
    let n = stages.len();
    let Some(last) = stages.last() else {
        return Ok(());
    };
    if n > MAX_STAGES {
        return Err(Error::Shape(format!(
            "chain: {n} stages, at most {MAX_STAGES}"
        )));
    }
    let last_row = last.out_row();
    if rows.end > last.geom().out_h || out.len() != rows.len() * last_row {
        return Err(Error::Shape(format!(
            "chain: rows {rows:?} of {} into {} floats, expected {} per row",
            last.geom().out_h,
            out.len(),
            last_row
        )));
    }
    // Carve the scratch: a window and a depthwise band per stage.
    let mut windows: [&mut [f32]; MAX_STAGES] = std::array::from_fn(|_| &mut [][..]);
    let mut mids: [&mut [f32]; MAX_STAGES] = std::array::from_fn(|_| &mut [][..]);
    let mut rest = scratch;
    for (i, (window_len, mid_len)) in scratch_parts(stages, band_rows).enumerate() {
        if rest.len() < window_len + mid_len {
            return Err(Error::Shape("chain: scratch too small".into()));
        }
        let (window, tail) = rest.split_at_mut(window_len);
        let (mid, tail) = tail.split_at_mut(mid_len);
        (windows[i], mids[i], rest) = (window, mid, tail);
    }
    // Rows each intermediate stage's window holds, and needs for the band.
    let mut held: [Range<usize>; MAX_STAGES] = std::array::from_fn(|_| 0..0);
    let mut needs: [Range<usize>; MAX_STAGES] = std::array::from_fn(|_| 0..0);
    let first_h = stages[0].geom().in_h;
    let mut band = rows.start;
    while band < rows.end {
        let end = (band + band_rows).min(rows.end);
        needs[n - 1] = band..end;
        for i in (0..n - 1).rev() {
            needs[i] = stages[i + 1].input_rows(&needs[i + 1]);
        }
        for i in 0..n {
            let (before, after) = windows.split_at_mut(i);
            let (src, src_rows): (&[f32], Range<usize>) = match before.last() {
                None => (input, 0..first_h),
                Some(window) => (window, held[i - 1].clone()),
            };
            let need = needs[i].clone();
            if i + 1 == n {
                let dst = &mut out[(band - rows.start) * last_row..(end - rows.start) * last_row];
                stages[i].run_rows(src, src_rows, need, dst, &mut mids[i][..], epilogue)?;
                continue;
            }
            // Keep the rows of the window this band needs again, at its
            // front; compute the rest.
            let window = &mut after[0];
            let row = stages[i].out_row();
            let h = &mut held[i];
            if h.start <= need.start && need.start < h.end {
                window.copy_within((need.start - h.start) * row..(h.end - h.start) * row, 0);
                *h = need.start..h.end;
            } else {
                *h = need.start..need.start;
            }
            let new = h.end..need.end;
            if !new.is_empty() {
                let at = (new.start - h.start) * row;
                let dst = &mut window[at..at + new.len() * row];
                stages[i].run_rows(src, src_rows, new, dst, &mut mids[i][..], epilogue)?;
            }
            *h = need;
        }
        band = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Isa;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed.into());
        (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// A stem (3 -> 8, stride 2) and two separable stages (8 -> 12 at
    /// stride 1, 12 -> 6 at stride 2) on a 19x17 image, with per-side
    /// padding `(top, bottom)` for every stage.
    fn stages(isa: Isa, pads: [(usize, usize); 3]) -> Vec<Stage> {
        let mut h = 19;
        let w = 17;
        let mut w_now = w;
        let mut out = Vec::new();
        for (i, &(top, bottom)) in pads.iter().enumerate() {
            let (c_in, c_out, stride) = [(3, 8, 2), (8, 12, 1), (12, 6, 2)][i];
            let geom = Conv3x3Geometry::new(h, w_now, stride, top, bottom, top, bottom).unwrap();
            let seed = 10 * i as u32;
            out.push(if i == 0 {
                let kernel = PackedStemConv3x3::pack(
                    isa,
                    &values(c_out * c_in * 9, seed),
                    &values(c_out, seed + 1),
                    c_in,
                    c_out,
                )
                .unwrap();
                Stage::Conv3x3 { kernel, geom }
            } else {
                let depthwise = PackedDepthwise3x3::pack(
                    isa,
                    &values(c_in * 9, seed),
                    &values(c_in, seed + 1),
                    c_in,
                )
                .unwrap();
                let pointwise = PackedPointwise::pack(
                    isa,
                    &values(c_out * c_in, seed + 2),
                    &values(c_out, seed + 3),
                    c_in,
                    c_out,
                )
                .unwrap();
                Stage::Separable {
                    depthwise,
                    geom,
                    pointwise,
                }
            });
            (h, w_now) = (geom.out_h, geom.out_w);
        }
        out
    }

    /// The stages one after the other over whole images.
    fn whole(stages: &[Stage], input: &[f32], ep: Epilogue) -> Vec<f32> {
        let mut x = input.to_vec();
        for s in stages {
            let g = s.geom();
            let mut y = vec![0.0; g.out_h * s.out_row()];
            let mut mid = vec![0.0; g.out_h * s.mid_row()];
            s.run_rows(&x, 0..g.in_h, 0..g.out_h, &mut y, &mut mid, ep)
                .unwrap();
            x = y;
        }
        x
    }

    #[test]
    fn input_rows_follow_stride_and_padding() {
        let s = &stages(Isa::Portable, [(1, 1), (1, 1), (0, 1)]);
        // Stride 2, padding 1 on a 19-row input.
        assert_eq!(s[0].input_rows(&(0..1)), 0..2);
        assert_eq!(s[0].input_rows(&(3..5)), 5..10);
        assert_eq!(s[0].input_rows(&(9..10)), 17..19);
        // Stride 2 with TF 'SAME' padding (none on top).
        assert_eq!(s[2].input_rows(&(0..2)), 0..5);
        assert_eq!(s[2].input_rows(&(4..5)), 8..10);
    }

    #[test]
    fn any_band_height_and_row_range_gives_the_whole_image_result() {
        let ep = Epilogue::RELU6;
        for isa in Isa::supported() {
            for pads in [
                [(1, 1); 3],
                [(0, 1), (1, 1), (0, 1)],
                [(1, 0), (2, 2), (1, 1)],
            ] {
                let stages = stages(isa, pads);
                let input = values(19 * 17 * 3, 7);
                let want = whole(&stages, &input, ep);
                let (out_h, row) = output_rows(&stages);
                assert_eq!(want.len(), out_h * row);
                for band_rows in 1..=out_h + 1 {
                    let mut scratch = vec![f32::NAN; scratch_len(&stages, band_rows)];
                    for rows in [0..out_h, 1..out_h, 0..1, 2..out_h - 1, out_h - 1..out_h] {
                        let mut got = vec![f32::NAN; rows.len() * row];
                        run_chain(
                            &stages,
                            band_rows,
                            &input,
                            rows.clone(),
                            &mut got,
                            &mut scratch,
                            ep,
                        )
                        .unwrap();
                        assert_eq!(
                            got,
                            want[rows.start * row..rows.end * row],
                            "{isa} pads {pads:?} band {band_rows} rows {rows:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn band_rows_fit_the_scratch() {
        let stages = stages(Isa::Portable, [(1, 1); 3]);
        let out_h = output_rows(&stages).0;
        assert_eq!(band_rows_for(&stages, 0), 1);
        assert_eq!(band_rows_for(&stages, usize::MAX), out_h);
        let budget = scratch_len(&stages, 2) * 4;
        assert_eq!(band_rows_for(&stages, budget), 2);
        let mut scratch = vec![0.0; scratch_len(&stages, 2) - 1];
        let mut out = vec![0.0; out_h * output_rows(&stages).1];
        let input = values(19 * 17 * 3, 1);
        let err = run_chain(
            &stages,
            2,
            &input,
            0..out_h,
            &mut out,
            &mut scratch,
            Epilogue::RELU,
        );
        assert!(err.is_err());
        // An output of the wrong length, and rows past the end.
        let mut scratch = vec![0.0; scratch_len(&stages, 2)];
        let row = output_rows(&stages).1;
        for (rows, len) in [(0..out_h, out_h * row - 1), (1..out_h + 1, out_h * row)] {
            let mut out = vec![0.0; len];
            let got = run_chain(
                &stages,
                2,
                &input,
                rows,
                &mut out,
                &mut scratch,
                Epilogue::RELU,
            );
            assert!(got.is_err());
        }
    }
}
