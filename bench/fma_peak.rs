//! FP32 FMA peak of this CPU, in GFLOP/s, for 1 and N threads, with AVX-512 (16 lanes, zmm) and
//! AVX2+FMA (8 lanes, ymm). No dependencies:
//!
//!     rustc -O -C target-cpu=native bench/fma_peak.rs -o /tmp/fma_peak && /tmp/fma_peak
//!
//! Each thread runs a tight loop of independent FMA chains (ACC accumulators, enough to cover the
//! FMA latency times the number of FMA pipes), all threads start together behind a barrier, and
//! the wall time of the slowest thread counts. Best of RUNS short runs (median printed too). One FMA = 2 FLOPs per lane.
//! Note: AMD Zen 4 executes a 512-bit FMA as two 256-bit halves, so its AVX-512 and AVX2 peaks
//! are about equal (32 FLOP/cycle/core either way); Intel cores with two 512-bit FMA units double.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::Instant;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Independent accumulator chains per thread (FMA latency 4 x 2 pipes = 8 needed on Zen 4).
const ACC: usize = 16;
/// AVX2 has only 16 ymm registers: 16 chains plus the multiplier spill to the stack and the loop
/// measured 59 instead of 83+ GFLOP/s on a Zen 3 core. 12 chains still cover latency x pipes.
const ACC_AVX2: usize = 12;
/// Loop trips per timed run; each trip issues ACC FMAs (500k trips ~ 2-4 ms: short runs, so that
/// on a shared machine the best of many runs is one that no other process interrupted).
const ITERS: u64 = 500_000;
const RUNS: usize = 60;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn chains_avx512(iters: u64, seed: f32) -> f32 {
    let mut acc = [_mm512_set1_ps(seed); ACC];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = _mm512_add_ps(*a, _mm512_set1_ps(i as f32 * 1e-3));
    }
    // x <- x * m + c converges to c / (1 - m) = 1.0: no overflow, no denormals.
    let m = _mm512_set1_ps(black_box(0.999_999_9));
    let c = _mm512_set1_ps(black_box(1.0e-7));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, m, c);
        }
    }
    let mut s = _mm512_setzero_ps();
    for a in acc {
        s = _mm512_add_ps(s, a);
    }
    _mm512_reduce_add_ps(s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn chains_avx2(iters: u64, seed: f32) -> f32 {
    let mut acc = [_mm256_set1_ps(seed); ACC_AVX2];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = _mm256_add_ps(*a, _mm256_set1_ps(i as f32 * 1e-3));
    }
    let m = _mm256_set1_ps(black_box(0.999_999_9));
    let c = _mm256_set1_ps(black_box(1.0e-7));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, m, c);
        }
    }
    let mut s = _mm256_setzero_ps();
    for a in acc {
        s = _mm256_add_ps(s, a);
    }
    let mut out = [0.0f32; 8];
    // SAFETY: `out` holds exactly 8 f32 = 32 bytes; storeu has no alignment requirement.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
    out.iter().sum()
}

/// uint8 x int8 dot-product chains (`vpdpbusd`: 4 mult-adds per 32-bit lane), the integer
/// kernels' inner instruction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
fn chains_vnni(iters: u64, seed: f32) -> f32 {
    let mut acc = [_mm512_set1_epi32(seed as i32); ACC];
    let a = _mm512_set1_epi32(black_box(0x0101_0101));
    let b = _mm512_set1_epi32(black_box(0x0102_0301));
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm512_dpbusd_epi32(*x, a, b);
        }
    }
    let mut s = _mm512_setzero_si512();
    for x in acc {
        s = _mm512_add_epi32(s, x);
    }
    _mm512_reduce_add_epi32(s) as f32
}

#[derive(Clone, Copy, PartialEq)]
enum Isa {
    Avx512,
    Avx2,
    Vnni,
}

impl Isa {
    fn lanes(self) -> u64 {
        match self {
            Isa::Avx512 | Isa::Vnni => 16,
            Isa::Avx2 => 8,
        }
    }
    /// Mult-adds per lane per instruction.
    fn macs(self) -> u64 {
        match self {
            Isa::Avx512 | Isa::Avx2 => 1,
            Isa::Vnni => 4,
        }
    }
    /// Independent accumulator chains per thread.
    fn chains(self) -> u64 {
        match self {
            Isa::Avx512 | Isa::Vnni => ACC as u64,
            Isa::Avx2 => ACC_AVX2 as u64,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "AVX-512 (zmm, 16 lanes)",
            Isa::Avx2 => "AVX2+FMA (ymm, 8 lanes)",
            Isa::Vnni => "AVX-512 VNNI vpdpbusd (int8 ops: 2 per u8 x i8 mult-add)",
        }
    }
    fn supported(self) -> bool {
        match self {
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            Isa::Vnni => is_x86_feature_detected!("avx512vnni"),
        }
    }
}

fn run_chains(isa: Isa, iters: u64, seed: f32) -> f32 {
    match isa {
        // SAFETY: `supported()` checked avx512f with is_x86_feature_detected! before any call.
        Isa::Avx512 => unsafe { chains_avx512(iters, seed) },
        // SAFETY: `supported()` checked avx2 and fma with is_x86_feature_detected! before any call.
        Isa::Avx2 => unsafe { chains_avx2(iters, seed) },
        // SAFETY: `supported()` checked avx512vnni (which implies avx512f) before any call.
        Isa::Vnni => unsafe { chains_vnni(iters, seed) },
    }
}

/// One timed run on `threads` threads; returns GFLOP/s over the span from the first thread's
/// start to the last thread's end (each thread reads the clock itself after the barrier, so a
/// late-waking main thread cannot distort the span).
fn measure(isa: Isa, threads: usize, iters: u64) -> f64 {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let b = Arc::clone(&barrier);
            std::thread::spawn(move || {
                b.wait();
                let start = Instant::now();
                let r = run_chains(isa, iters, black_box(0.5 + t as f32 * 0.01));
                black_box(r);
                (start, Instant::now())
            })
        })
        .collect();
    let spans: Vec<(Instant, Instant)> =
        handles.into_iter().map(|h| h.join().expect("worker thread panicked")).collect();
    let start = spans.iter().map(|s| s.0).min().expect("threads >= 1");
    let end = spans.iter().map(|s| s.1).max().expect("threads >= 1");
    let secs = (end - start).as_secs_f64();
    let flops = 2.0 * (isa.macs() * isa.lanes() * isa.chains() * iters * threads as u64) as f64;
    flops / secs / 1e9
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let max_threads: usize = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    println!(
        "FP32 FMA and int8 VNNI peaks: {ACC} independent chains/thread ({ACC_AVX2} with AVX2), \
         {ITERS} trips, best of {RUNS} runs"
    );
    for isa in [Isa::Avx512, Isa::Avx2, Isa::Vnni] {
        if !isa.supported() {
            println!("{:26} not supported on this CPU", isa.name());
            continue;
        }
        // warm-up: let the clocks settle
        for _ in 0..20 {
            measure(isa, max_threads, ITERS);
        }
        let mut threads = 1;
        loop {
            let mut all: Vec<f64> = (0..RUNS).map(|_| measure(isa, threads, ITERS)).collect();
            all.sort_by(f64::total_cmp);
            let best = all[RUNS - 1];
            let median = all[RUNS / 2];
            let per_core = best / threads as f64;
            println!(
                "{:26} threads={threads}: {best:7.1} G{unit}/s best ({per_core:.1} per thread = {:.2} GHz x 32 {unit}/cycle); median {median:.1}",
                isa.name(),
                per_core / 32.0,
                unit = if isa == Isa::Vnni { "OP" } else { "FLOP" },
            );
            if threads >= max_threads {
                break;
            }
            threads = (threads * 2).min(max_threads);
        }
    }
}
