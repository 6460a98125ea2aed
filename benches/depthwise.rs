//! Depthwise 3x3 and stem kernels on MobileNet v1's shapes, one core.
//!
//! Throughput is effective memory traffic: (input + output + weights) * 4
//! bytes, in decimal GB/s.
//!
//! Activations live in 64-byte aligned buffers, as the engine should
//! allocate them: a `Vec<f32>` from the system allocator is typically only
//! 16-byte aligned, which makes every 512-bit access straddle two cache
//! lines and costs up to 2.4x on the large-channel layers.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mobilenet::kernels::depthwise::{Conv3x3Geometry, PackedDepthwise3x3};
use mobilenet::kernels::stem::PackedStemConv3x3;
use mobilenet::kernels::{Epilogue, Isa};
use std::hint::black_box;

/// (H = W, C, stride) of every depthwise layer of MobileNet v1 at 224x224,
/// α = 1.0 then α = 0.25 (the five 14x14x512 layers appear once).
const SHAPES: [(usize, usize, usize); 18] = [
    (112, 32, 1),
    (112, 64, 2),
    (56, 128, 1),
    (56, 128, 2),
    (28, 256, 1),
    (28, 256, 2),
    (14, 512, 1),
    (14, 512, 2),
    (7, 1024, 1),
    (112, 8, 1),
    (112, 16, 2),
    (56, 32, 1),
    (56, 32, 2),
    (28, 64, 1),
    (28, 64, 2),
    (14, 128, 1),
    (14, 128, 2),
    (7, 256, 1),
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

/// A 64-byte aligned, zeroed buffer of `len` f32 (a `Vec` with slack, and
/// the aligned range within it).
struct Aligned {
    store: Vec<f32>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(values: &[f32]) -> Self {
        let mut store = vec![0.0f32; values.len() + 16];
        let start = store.as_ptr().align_offset(64);
        store[start..start + values.len()].copy_from_slice(values);
        Aligned {
            store,
            start,
            len: values.len(),
        }
    }

    fn zeros(len: usize) -> Self {
        Aligned::new(&vec![0.0; len])
    }

    fn get(&self) -> &[f32] {
        &self.store[self.start..self.start + self.len]
    }

    fn get_mut(&mut self) -> &mut [f32] {
        &mut self.store[self.start..self.start + self.len]
    }
}

fn depthwise(c: &mut Criterion) {
    for isa in Isa::supported() {
        let mut group = c.benchmark_group(format!("depthwise/{isa}"));
        for &(hw, ch, stride) in &SHAPES {
            let g = Conv3x3Geometry::new(hw, hw, stride, 1, 1, 1, 1).expect("geometry");
            let input = Aligned::new(&values(g.input_len(ch).unwrap(), 1));
            let weight = values(9 * ch, 2);
            let bias = values(ch, 3);
            let mut output = Aligned::zeros(g.output_len(ch).unwrap());
            let packed = PackedDepthwise3x3::pack(isa, &weight, &bias, ch).expect("pack");
            let bytes = 4 * (input.len + output.len + weight.len() + bias.len());
            group.throughput(Throughput::BytesDecimal(bytes as u64));
            let id = format!("{hw}x{hw}x{ch}/s{stride}");
            group.bench_function(BenchmarkId::from_parameter(id), |b| {
                b.iter(|| {
                    packed
                        .run(
                            black_box(input.get()),
                            output.get_mut(),
                            &g,
                            0..g.out_h,
                            Epilogue::RELU6,
                        )
                        .expect("run");
                    black_box(output.get_mut());
                })
            });
        }
        group.finish();
    }
}

fn stem(c: &mut Criterion) {
    for isa in Isa::supported() {
        let mut group = c.benchmark_group(format!("stem/{isa}"));
        for c_out in [32, 8] {
            for (name, pt, pb) in [("torch", 1, 1), ("tf", 0, 1)] {
                let g = Conv3x3Geometry::new(224, 224, 2, pt, pb, pt, pb).expect("geometry");
                let input = Aligned::new(&values(g.input_len(3).unwrap(), 1));
                let weight = values(27 * c_out, 2);
                let bias = values(c_out, 3);
                let mut output = Aligned::zeros(g.output_len(c_out).unwrap());
                let packed = PackedStemConv3x3::pack(isa, &weight, &bias, 3, c_out).expect("pack");
                let bytes = 4 * (input.len + output.len + weight.len() + bias.len());
                group.throughput(Throughput::BytesDecimal(bytes as u64));
                let id = format!("224x224x3->{c_out}/{name}");
                group.bench_function(BenchmarkId::from_parameter(id), |b| {
                    b.iter(|| {
                        packed
                            .run(
                                black_box(input.get()),
                                output.get_mut(),
                                &g,
                                0..g.out_h,
                                Epilogue::RELU6,
                            )
                            .expect("run");
                        black_box(output.get_mut());
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, depthwise, stem);
criterion_main!(benches);
