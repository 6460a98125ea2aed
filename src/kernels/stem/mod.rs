//! The stem: a full (not depthwise) 3x3 convolution from a few input
//! channels (3 for RGB) to `C_out`, over one NHWC image, with the bias +
//! clamp epilogue fused before the single store.
//!
//! One generic driver (`kernel.rs`) instantiated per ISA (`portable.rs`,
//! `avx2.rs`, `avx512.rs`), reusing the depthwise family's vector layer and
//! [`Conv3x3Geometry`]; [`stem_conv3x3_reference`] is the plain loop nest.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod kernel;
mod portable;
mod reference;

use std::ops::Range;

use crate::error::{Error, Result};
use crate::kernels::AlignedBuf;
use crate::kernels::depthwise::{check_band, check_epilogue, check_isa, pad_lanes};
use crate::kernels::{Epilogue, Isa};

pub use crate::kernels::depthwise::Conv3x3Geometry;
pub use reference::stem_conv3x3_reference;

/// Stem 3x3 convolution weights and bias packed for one ISA.
#[derive(Clone, Debug)]
pub struct PackedStemConv3x3 {
    isa: Isa,
    c_in: usize,
    c_out: usize,
    /// `c_out` rounded up to the ISA's vector width.
    padded: usize,
    /// `[ky][kx][ci][padded]`, zero past `c_out`.
    weights: AlignedBuf,
    /// `[padded]`, zero past `c_out`.
    bias: AlignedBuf,
}

/// Checks the weight and bias lengths of a `[c_out, c_in, 3, 3]` conv.
pub(crate) fn check_params(weight: &[f32], bias: &[f32], c_in: usize, c_out: usize) -> Result<()> {
    if c_in == 0 || c_out == 0 {
        return Err(Error::Shape(format!(
            "stem conv needs at least 1 input and output channel, got {c_in} -> {c_out}"
        )));
    }
    let want = c_out.checked_mul(c_in).and_then(|n| n.checked_mul(9));
    if Some(weight.len()) != want || bias.len() != c_out {
        return Err(Error::Shape(format!(
            "stem conv {c_in} -> {c_out} needs weight [{c_out}, {c_in}, 3, 3] and bias \
             [{c_out}], got {} and {} values",
            weight.len(),
            bias.len()
        )));
    }
    Ok(())
}

impl PackedStemConv3x3 {
    /// Packs `weight` in PyTorch layout `[C_out, C_in, 3, 3]` (flattened)
    /// and `bias` `[C_out]` for `isa`.
    ///
    /// Errors: [`Error::InvalidConfig`] if this CPU lacks `isa`,
    /// [`Error::Shape`] for zero channels or wrong lengths.
    pub fn pack(isa: Isa, weight: &[f32], bias: &[f32], c_in: usize, c_out: usize) -> Result<Self> {
        check_isa(isa)?;
        check_params(weight, bias, c_in, c_out)?;
        let padded = c_out.next_multiple_of(pad_lanes(isa));
        let mut w = AlignedBuf::zeros(9 * c_in * padded);
        let wp = w.as_mut_slice();
        for co in 0..c_out {
            for ci in 0..c_in {
                for k in 0..9 {
                    wp[(k * c_in + ci) * padded + co] = weight[(co * c_in + ci) * 9 + k];
                }
            }
        }
        let mut b = AlignedBuf::zeros(padded);
        b.as_mut_slice()[..c_out].copy_from_slice(bias);
        Ok(PackedStemConv3x3 {
            isa,
            c_in,
            c_out,
            padded,
            weights: w,
            bias: b,
        })
    }

    /// The instruction set the weights were packed for.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Input channels.
    pub fn c_in(&self) -> usize {
        self.c_in
    }

    /// Output channels.
    pub fn c_out(&self) -> usize {
        self.c_out
    }

    /// Computes output rows `rows` (a sub-range of `0..out_h`) of one image.
    ///
    /// `input` is the whole `[in_h, in_w, C_in]` image and `output` the
    /// whole `[out_h, out_w, C_out]` buffer, of which only the rows in `rows`
    /// are written. Returns [`Error::Shape`] on any length or geometry
    /// mismatch and [`Error::InvalidConfig`] for NaN clamp bounds; allocates
    /// nothing.
    pub fn run(
        &self,
        input: &[f32],
        output: &mut [f32],
        geom: &Conv3x3Geometry,
        rows: Range<usize>,
        epilogue: Epilogue,
    ) -> Result<()> {
        let band = geom.output_band(output, self.c_out, &rows, "stem")?;
        self.run_band(input, band, geom, rows, epilogue)
    }

    /// Like [`run`](Self::run), but `band` holds only the output rows `rows`
    /// (`[rows.len(), out_w, C_out]`, row `rows.start` first), so that
    /// threads can each own a disjoint `&mut` band.
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
        let in_len = geom.input_len(self.c_in)?;
        if input.len() != in_len {
            return Err(Error::Shape(format!(
                "stem input [{}, {}, {}] needs {in_len} elements, got {}",
                geom.in_h,
                geom.in_w,
                self.c_in,
                input.len()
            )));
        }
        check_band(geom, self.c_out, band.len(), &rows)?;
        if rows.is_empty() {
            return Ok(());
        }
        let job = kernel::StemJob {
            input,
            band,
            weights: self.weights.as_slice(),
            bias: self.bias.as_slice(),
            c_in: self.c_in,
            c_out: self.c_out,
            padded: self.padded,
            geom: *geom,
            rows,
            epilogue,
        };
        match self.isa {
            Isa::Portable => portable::stem(job),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `pack` checked that the CPU has AVX2 and FMA; the job's
            // lengths and geometry were checked above.
            Isa::Avx2Fma => unsafe { avx2::stem(job) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `pack` checked AVX-512F/VL, AVX2 and FMA; the job was
            // checked above.
            Isa::Avx512 => unsafe { avx512::stem(job) },
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("pack refuses ISAs this CPU lacks"),
        }
        Ok(())
    }
}
