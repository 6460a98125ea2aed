//! The integer instruction set, chosen once at plan time.
//!
//! [`IntIsa::detect`] picks the best set this CPU supports, lowered by
//! `MOBILENET_ISA` like the float [`Isa`](crate::kernels::Isa):
//! `portable` gives [`IntIsa::Portable`], `avx2` gives [`IntIsa::Avx2`],
//! `avx512` allows the best.

use std::fmt;

use crate::kernels::Isa;

/// An integer kernel implementation, best last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IntIsa {
    /// Plain Rust for every CPU.
    Portable,
    /// x86-64 AVX2: `i16` pairs multiplied by `vpmaddwd` into `i32` lanes.
    Avx2,
    /// x86-64 AVX-512 (F, BW) with VNNI: `u8 x i8` quadruples summed by
    /// `vpdpbusd` into 16 `i32` lanes.
    Avx512Vnni,
}

impl IntIsa {
    /// Every variant, worst first.
    pub const ALL: [IntIsa; 3] = [IntIsa::Portable, IntIsa::Avx2, IntIsa::Avx512Vnni];

    /// Whether this CPU can run code for `self`.
    pub fn is_supported(self) -> bool {
        match self {
            IntIsa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            IntIsa::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            IntIsa::Avx512Vnni => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The sets this CPU supports, worst first.
    pub fn supported() -> Vec<IntIsa> {
        IntIsa::ALL
            .into_iter()
            .filter(|i| i.is_supported())
            .collect()
    }

    /// The best supported set, lowered to what `MOBILENET_ISA` allows.
    pub fn detect() -> IntIsa {
        let best = *IntIsa::supported().last().unwrap_or(&IntIsa::Portable);
        let cap = match std::env::var("MOBILENET_ISA")
            .ok()
            .and_then(|s| s.parse::<Isa>().ok())
        {
            Some(Isa::Portable) => IntIsa::Portable,
            Some(Isa::Avx2Fma) => IntIsa::Avx2,
            Some(Isa::Avx512) | None => IntIsa::Avx512Vnni,
        };
        best.min(cap)
    }

    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            IntIsa::Portable => "portable",
            IntIsa::Avx2 => "avx2",
            IntIsa::Avx512Vnni => "avx512vnni",
        }
    }
}

impl fmt::Display for IntIsa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for IntIsa {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IntIsa::ALL
            .into_iter()
            .find(|i| i.name() == s)
            .ok_or_else(|| format!("unknown integer ISA '{s}' (portable, avx2 or avx512vnni)"))
    }
}
