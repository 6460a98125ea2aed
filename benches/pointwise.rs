//! Pointwise (1x1) conv kernels on MobileNet v1's shapes, one core.
//!
//! Throughput is reported in elements = flops (2 * M * K * N), so criterion's
//! "Gelem/s" reads as GFLOP/s.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mobilenet::kernels::pointwise::PackedPointwise;
use mobilenet::kernels::{Epilogue, Isa};
use std::hint::black_box;

/// (M, K, N) of every pointwise layer of MobileNet v1 at 224x224, α = 1.0
/// and α = 0.25 (pixels, input channels, output channels).
const SHAPES: [(usize, usize, usize); 18] = [
    (12544, 32, 64),
    (3136, 64, 128),
    (3136, 128, 128),
    (784, 128, 256),
    (784, 256, 256),
    (196, 256, 512),
    (196, 512, 512),
    (49, 512, 1024),
    (49, 1024, 1024),
    (12544, 8, 16),
    (3136, 16, 32),
    (3136, 32, 32),
    (784, 32, 64),
    (784, 64, 64),
    (196, 64, 128),
    (196, 128, 128),
    (49, 128, 256),
    (49, 256, 256),
];

/// Deterministic pseudo-random values in [-1, 1).
fn values(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1 << 23) as f32 - 1.0
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    for isa in Isa::supported() {
        let mut group = c.benchmark_group(format!("pointwise/{isa}"));
        for &(m, k, n) in &SHAPES {
            let weight = values(n * k, 1);
            let bias = values(n, 2);
            let input = values(m * k, 3);
            let mut output = vec![0.0; m * n];
            let packed = PackedPointwise::pack(isa, &weight, &bias, k, n).expect("pack");
            group.throughput(Throughput::Elements((2 * m * k * n) as u64));
            group.bench_function(BenchmarkId::from_parameter(format!("{m}x{k}x{n}")), |b| {
                b.iter(|| {
                    packed
                        .run(black_box(&input), &mut output, m, Epilogue::RELU6)
                        .expect("run");
                    black_box(&mut output);
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
