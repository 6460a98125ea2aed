//! Instruction-set selection, done once at plan time.
//!
//! [`Isa::detect`] picks the best set this CPU supports; the environment
//! variable `MOBILENET_ISA` (`avx512`, `avx2`, `portable`) forces a lower one
//! so that tests can run every path on one machine.

use std::fmt;

/// An instruction set a kernel family has an implementation for, best last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust, compiled for the baseline target: serves every CPU.
    Portable,
    /// x86-64 AVX2 with FMA (256-bit vectors, 8 f32 lanes).
    Avx2Fma,
    /// x86-64 AVX-512F (512-bit vectors, 16 f32 lanes).
    Avx512,
}

impl Isa {
    /// Every variant, worst first.
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2Fma, Isa::Avx512];

    /// Whether this CPU can run code for `self`.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The instruction sets this CPU supports, worst first.
    pub fn supported() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_supported()).collect()
    }

    /// The best supported set, lowered to `MOBILENET_ISA` if that is set to
    /// a known name. An unknown name is ignored (the CLI validates its own
    /// `--isa` flag before it gets here).
    pub fn detect() -> Isa {
        let best = *Isa::supported().last().unwrap_or(&Isa::Portable);
        match std::env::var("MOBILENET_ISA")
            .ok()
            .and_then(|s| s.parse::<Isa>().ok())
        {
            Some(forced) => forced.min(best),
            None => best,
        }
    }

    /// The short name used by `MOBILENET_ISA`, `--isa` and JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2Fma => "avx2",
            Isa::Avx512 => "avx512",
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Isa {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name() == s)
            .ok_or_else(|| format!("unknown ISA '{s}' (expected portable, avx2 or avx512)"))
    }
}

/// Runs `$body` (a call of an `#[inline(always)]` function of plain loops)
/// compiled under the target features of `$isa`, so that the compiler
/// vectorizes it at that width: for memory-bound element-wise kernels whose
/// per-element arithmetic is the same in every version (bit-identical
/// results on every ISA). Falls back to the baseline build when the CPU
/// lacks the features.
macro_rules! at_vector_width {
    ($isa:expr, $body:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx2,fma")]
            fn avx512(f: impl FnOnce()) {
                f()
            }
            #[target_feature(enable = "avx2,fma")]
            fn avx2(f: impl FnOnce()) {
                f()
            }
            match $isa {
                // SAFETY: the CPU supports AVX-512F (checked just before).
                crate::kernels::Isa::Avx512 if crate::kernels::Isa::Avx512.is_supported() => unsafe { avx512(|| $body) },
                // SAFETY: the CPU supports AVX2 and FMA (checked just before).
                crate::kernels::Isa::Avx2Fma | crate::kernels::Isa::Avx512 if crate::kernels::Isa::Avx2Fma.is_supported() => unsafe {
                    avx2(|| $body)
                },
                _ => $body,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = $isa;
            $body
        }
    }};
}
pub(crate) use at_vector_width;
