//! The uint8 kernels (`kernels::int8`) against the plain integer reference
//! (`quant::*`): bit-exact on random shapes, channel counts, zero points,
//! multipliers, strides and paddings, for every integer ISA this CPU has.

use mobilenet::Error;
use mobilenet::kernels::int8::im2col::{PatchGeometry, im2col};
use mobilenet::kernels::int8::pool::{PoolGeometry, average_pool};
use mobilenet::kernels::int8::{
    DepthwiseGeometry, IntIsa, OutputQuant, PackedDepthwise3x3, PackedGemm, PackedStem,
};
use mobilenet::quant::conv::{Conv2d, ConvKind, ConvSpec, conv_multiplier};
use mobilenet::quant::fixed_point::multiply_by_quantized_multiplier;
use mobilenet::quant::fully_connected::{FullyConnected, FullyConnectedSpec};
use mobilenet::quant::geometry::{Axis, Padding};
use mobilenet::quant::pool::AveragePool;
use mobilenet::quant::requantize::OutputStage;
use mobilenet::quant::{Activation, QuantParams};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn isas() -> Vec<IntIsa> {
    IntIsa::supported()
}

/// Zero points: the edges and anything.
fn zero_point() -> impl Strategy<Value = i32> {
    prop_oneof![Just(0), Just(128), Just(255), 0..=255i32]
}

/// Channel counts around the vector widths.
fn channels() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(1usize),
        Just(3),
        Just(7),
        Just(16),
        Just(17),
        Just(33),
        Just(64),
        1..80usize
    ]
}

fn activation() -> impl Strategy<Value = Activation> {
    prop_oneof![
        Just(Activation::None),
        Just(Activation::Relu),
        Just(Activation::Relu6)
    ]
}

fn bytes(rng: &mut ChaCha8Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.random()).collect()
}

fn biases(rng: &mut ChaCha8Rng, n: usize) -> Vec<i32> {
    (0..n)
        .map(|_| rng.random_range(-(1 << 16)..(1 << 16)))
        .collect()
}

/// The kernel epilogue of a reference output stage.
fn quant_of(stage: &OutputStage, channels: usize) -> OutputQuant {
    let (m, s) = stage.multiplier();
    let (lo, hi) = stage.clamp_range();
    OutputQuant::per_tensor(channels, m, s, stage.zero_point(), lo, hi).unwrap()
}

/// Scales that keep the multiplier below 1 but varied.
fn scales() -> impl Strategy<Value = (f32, f32, f32)> {
    (0.001f32..0.05, 0.001f32..0.05, 0.0005f32..0.5)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every lane of every vector epilogue equals the scalar gemmlowp
    /// arithmetic of the reference, including saturating and extreme
    /// shifts.
    #[test]
    fn requantize_lanes_match_fixed_point(
        seed in any::<u64>(),
        n in channels(),
        zp in zero_point(),
        lo in 0..=255i32,
        span in 0..=255i32,
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let hi = (lo + span).min(255);
        let mults: Vec<i32> = (0..n)
            .map(|_| match rng.random_range(0..4) {
                0 => i32::MIN,
                1 => rng.random(),
                _ => rng.random_range(1 << 30..i32::MAX),
            })
            .collect();
        let shifts: Vec<i32> = (0..n).map(|_| rng.random_range(-40..40)).collect();
        let acc: Vec<i32> = (0..n)
            .map(|_| match rng.random_range(0..4) {
                0 => [i32::MIN, i32::MAX, 0, -1][rng.random_range(0..4)],
                1 => rng.random(),
                _ => rng.random_range(-100_000..100_000),
            })
            .collect();
        let q = OutputQuant::new(&mults, &shifts, zp, lo, hi).unwrap();
        let want: Vec<u8> = (0..n)
            .map(|c| {
                let v = multiply_by_quantized_multiplier(acc[c], mults[c], shifts[c])
                    .wrapping_add(zp);
                v.clamp(lo, hi) as u8
            })
            .collect();
        for c in 0..n {
            prop_assert_eq!(q.apply(acc[c], c), want[c], "scalar channel {}", c);
        }
        for isa in isas() {
            let mut got = vec![0u8; n];
            q.apply_row(isa, &acc, &mut got).unwrap();
            prop_assert_eq!(&got, &want, "{}", isa);
        }
    }

    /// The GEMM equals the reference fully connected layer.
    #[test]
    fn gemm_matches_fully_connected(
        seed in any::<u64>(),
        m in 1..11usize,
        n in channels(),
        k in prop_oneof![Just(1usize), Just(3), Just(4), Just(27), 1..70usize],
        zx in zero_point(),
        zw in zero_point(),
        zo in zero_point(),
        (sx, sw, so) in scales(),
        act in activation(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let q = |s, z| QuantParams::new(s, z).unwrap();
        let spec = FullyConnectedSpec {
            batches: m,
            depth: k,
            units: n,
            input: q(sx, zx),
            filter: q(sw, zw),
            output: q(so, zo),
            activation: act,
        };
        let weights = bytes(&mut rng, n * k);
        let bias = biases(&mut rng, n);
        let input = bytes(&mut rng, m * k);
        let Ok(reference) = FullyConnected::new(&spec, &weights, Some(&bias)) else {
            return Err(TestCaseError::reject("empty activation range"));
        };
        let mut want = vec![0u8; m * n];
        reference.run(&input, &mut want).unwrap();
        let stage = OutputStage::new(conv_multiplier(spec.input, spec.filter, spec.output), spec.output, act).unwrap();
        for isa in isas() {
            let gemm = PackedGemm::new(isa, &weights, n, k, zw, zx, &bias, quant_of(&stage, n)).unwrap();
            let mut got = vec![0u8; m * n];
            gemm.run(&input, m, &mut got).unwrap();
            prop_assert_eq!(&got, &want, "{}", isa);
        }
    }

    /// Per-channel multipliers: each channel requantizes with its own.
    #[test]
    fn gemm_per_channel_multipliers(
        seed in any::<u64>(),
        m in 1..9usize,
        n in channels(),
        k in 1..40usize,
        zx in zero_point(),
        zw in zero_point(),
        zo in zero_point(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let weights = bytes(&mut rng, n * k);
        let bias = biases(&mut rng, n);
        let input = bytes(&mut rng, m * k);
        let mults: Vec<i32> = (0..n).map(|_| rng.random_range(1 << 30..i32::MAX)).collect();
        let shifts: Vec<i32> = (0..n).map(|_| rng.random_range(-12..2)).collect();
        let mut want = vec![0u8; m * n];
        for r in 0..m {
            for c in 0..n {
                let acc = (0..k).fold(bias[c], |s, d| {
                    s + (i32::from(input[r * k + d]) - zx) * (i32::from(weights[c * k + d]) - zw)
                });
                let v = multiply_by_quantized_multiplier(acc, mults[c], shifts[c]) + zo;
                want[r * n + c] = v.clamp(0, 255) as u8;
            }
        }
        for isa in isas() {
            let quant = OutputQuant::new(&mults, &shifts, zo, 0, 255).unwrap();
            let gemm = PackedGemm::new(isa, &weights, n, k, zw, zx, &bias, quant).unwrap();
            let mut got = vec![0u8; m * n];
            gemm.run(&input, m, &mut got).unwrap();
            prop_assert_eq!(&got, &want, "{}", isa);
        }
    }

    /// The depthwise kernel equals the reference depthwise conv, whole
    /// images and any band of rows.
    #[test]
    fn depthwise_matches_reference(
        seed in any::<u64>(),
        h in 1..12usize,
        w in 1..12usize,
        c in channels(),
        stride in 1..4usize,
        same in any::<bool>(),
        zx in zero_point(),
        zw in zero_point(),
        zo in zero_point(),
        (sx, sw, so) in scales(),
        act in activation(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let q = |s, z| QuantParams::new(s, z).unwrap();
        let padding = if same { Padding::Same } else { Padding::Valid };
        let spec = ConvSpec {
            kind: ConvKind::Depthwise { multiplier: 1 },
            batches: 1,
            input_hw: [h, w],
            in_channels: c,
            out_channels: c,
            kernel: [3, 3],
            stride: [stride, stride],
            dilation: [1, 1],
            padding,
            input: q(sx, zx),
            filter: q(sw, zw),
            output: q(so, zo),
            activation: act,
        };
        let weights = bytes(&mut rng, 9 * c);
        let bias = biases(&mut rng, c);
        let input = bytes(&mut rng, h * w * c);
        let Ok(reference) = Conv2d::new(&spec, &weights, Some(&bias)) else {
            return Err(TestCaseError::reject("no output"));
        };
        let [_, oh, ow, _] = reference.output_shape();
        let mut want = vec![0u8; oh * ow * c];
        reference.run(&input, &mut want).unwrap();
        let rows = Axis::new(h, 3, stride, 1, padding).unwrap();
        let cols = Axis::new(w, 3, stride, 1, padding).unwrap();
        let geom = DepthwiseGeometry {
            input: [h, w],
            output: [oh, ow],
            stride: [stride, stride],
            pad: [rows.pad, cols.pad],
            channels: c,
        };
        let quant = quant_of(reference.output_stage(), c);
        let split = rng.random_range(0..=oh);
        for isa in isas() {
            let kernel = PackedDepthwise3x3::new(isa, &weights, c, zw, zx, &bias, quant.clone()).unwrap();
            let mut got = vec![0u8; oh * ow * c];
            let (top, bottom) = got.split_at_mut(split * ow * c);
            kernel.run(&geom, &input, 0..split, top).unwrap();
            kernel.run(&geom, &input, split..oh, bottom).unwrap();
            prop_assert_eq!(&got, &want, "{}", isa);
        }
    }

    /// Per-channel multipliers in the depthwise kernel: the SIMD paths lay
    /// the epilogue out in their own lane order, so each channel must still
    /// meet its own multiplier (checked against the formula directly).
    #[test]
    fn depthwise_per_channel_multipliers(
        seed in any::<u64>(),
        h in 1..9usize,
        w in 1..9usize,
        c in channels(),
        stride in 1..3usize,
        pad in 0..2usize,
        zx in zero_point(),
        zw in zero_point(),
        zo in zero_point(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let weights = bytes(&mut rng, 9 * c);
        let bias = biases(&mut rng, c);
        let input = bytes(&mut rng, h * w * c);
        let mults: Vec<i32> = (0..c).map(|_| rng.random_range(1 << 30..i32::MAX)).collect();
        let shifts: Vec<i32> = (0..c).map(|_| rng.random_range(-14..1)).collect();
        // Images smaller than the filter need padding to have an output.
        let pad = if h.min(w) < 3 { 1 } else { pad };
        let out_dim = |d: usize| (d + 2 * pad).checked_sub(3).map(|r| r / stride + 1);
        let (Some(oh), Some(ow)) = (out_dim(h), out_dim(w)) else {
            return Err(TestCaseError::reject("no output"));
        };
        let mut want = vec![0u8; oh * ow * c];
        for (p, px) in want.chunks_exact_mut(c).enumerate() {
            let (oy, ox) = (p / ow, p % ow);
            for (ch, code) in px.iter_mut().enumerate() {
                let mut acc = bias[ch];
                for t in 0..9 {
                    let iy = (oy * stride + t / 3).checked_sub(pad).filter(|&y| y < h);
                    let ix = (ox * stride + t % 3).checked_sub(pad).filter(|&x| x < w);
                    if let (Some(iy), Some(ix)) = (iy, ix) {
                        let x = i32::from(input[(iy * w + ix) * c + ch]) - zx;
                        acc += x * (i32::from(weights[t * c + ch]) - zw);
                    }
                }
                let v = multiply_by_quantized_multiplier(acc, mults[ch], shifts[ch]) + zo;
                *code = v.clamp(0, 255) as u8;
            }
        }
        let geom = DepthwiseGeometry {
            input: [h, w],
            output: [oh, ow],
            stride: [stride, stride],
            pad: [pad, pad],
            channels: c,
        };
        for isa in isas() {
            let quant = OutputQuant::new(&mults, &shifts, zo, 0, 255).unwrap();
            let kernel = PackedDepthwise3x3::new(isa, &weights, c, zw, zx, &bias, quant).unwrap();
            let mut got = vec![0u8; oh * ow * c];
            kernel.run(&geom, &input, 0..oh, &mut got).unwrap();
            prop_assert_eq!(&got, &want, "{}", isa);
        }
    }

    /// im2col followed by the GEMM equals the reference full conv, for any
    /// filter size, stride, dilation and padding (the stem among them).
    #[test]
    fn im2col_gemm_matches_conv(
        seed in any::<u64>(),
        h in 1..10usize,
        w in 1..10usize,
        cin in prop_oneof![Just(3usize), 1..9usize],
        cout in channels(),
        kernel in 1..4usize,
        stride in 1..3usize,
        dilation in 1..3usize,
        same in any::<bool>(),
        zx in zero_point(),
        zw in zero_point(),
        zo in zero_point(),
        (sx, sw, so) in scales(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let q = |s, z| QuantParams::new(s, z).unwrap();
        let padding = if same { Padding::Same } else { Padding::Valid };
        let spec = ConvSpec {
            kind: ConvKind::Full,
            batches: 1,
            input_hw: [h, w],
            in_channels: cin,
            out_channels: cout,
            kernel: [kernel, kernel],
            stride: [stride, stride],
            dilation: [dilation, dilation],
            padding,
            input: q(sx, zx),
            filter: q(sw, zw),
            output: q(so, zo),
            activation: Activation::Relu6,
        };
        let k = kernel * kernel * cin;
        let weights = bytes(&mut rng, cout * k);
        let bias = biases(&mut rng, cout);
        let input = bytes(&mut rng, h * w * cin);
        let Ok(reference) = Conv2d::new(&spec, &weights, Some(&bias)) else {
            return Err(TestCaseError::reject("no output"));
        };
        let [_, oh, ow, _] = reference.output_shape();
        let mut want = vec![0u8; oh * ow * cout];
        reference.run(&input, &mut want).unwrap();
        let rows = Axis::new(h, kernel, stride, dilation, padding).unwrap();
        let cols = Axis::new(w, kernel, stride, dilation, padding).unwrap();
        let geom = PatchGeometry {
            input: [h, w],
            channels: cin,
            kernel: [kernel, kernel],
            stride: [stride, stride],
            dilation: [dilation, dilation],
            pad: [rows.pad, cols.pad],
            output: [oh, ow],
        };
        let mut patches = vec![0u8; oh * ow * k];
        im2col(&geom, &input, zx as u8, 0..oh, &mut patches).unwrap();
        for isa in isas() {
            let gemm = PackedGemm::new(isa, &weights, cout, k, zw, zx, &bias, quant_of(reference.output_stage(), cout)).unwrap();
            let mut got = vec![0u8; oh * ow * cout];
            gemm.run(&patches, oh * ow, &mut got).unwrap();
            prop_assert_eq!(&got, &want, "{}", isa);
        }
    }

    /// The direct stem kernel equals im2col + the portable GEMM (itself
    /// checked against the reference conv above), on any rows band.
    #[test]
    fn stem_matches_im2col_gemm(
        seed in any::<u64>(),
        h in 1..12usize,
        w in 1..12usize,
        cin in prop_oneof![Just(3usize), 1..6usize],
        cout in channels(),
        kh in 1..4usize,
        kw in 1..4usize,
        stride in (1..4usize, 1..4usize),
        pad in (0..3usize, 0..3usize, 0..3usize, 0..3usize),
        zx in zero_point(),
        zw in zero_point(),
        zo in zero_point(),
        per_channel in any::<bool>(),
    ) {
        if !IntIsa::Avx512Vnni.is_supported() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI, the stem kernel's only ISA");
            return Ok(());
        }
        let (pt, pl, pb, pr) = pad;
        if kw * cin > 16 || h + pt + pb < kh || w + pl + pr < kw {
            return Err(TestCaseError::reject("unsupported or empty"));
        }
        let out = [(h + pt + pb - kh) / stride.0 + 1, (w + pl + pr - kw) / stride.1 + 1];
        let geom = PatchGeometry {
            input: [h, w],
            channels: cin,
            kernel: [kh, kw],
            stride: [stride.0, stride.1],
            dilation: [1, 1],
            pad: [pt, pl],
            output: out,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let k = kh * kw * cin;
        let weights = bytes(&mut rng, cout * k);
        let bias = biases(&mut rng, cout);
        let input = bytes(&mut rng, h * w * cin);
        let (mults, shifts): (Vec<i32>, Vec<i32>) = if per_channel {
            (0..cout).map(|_| (rng.random_range(1 << 30..i32::MAX), rng.random_range(-12..2))).unzip()
        } else {
            (vec![1 << 30; cout], vec![-6; cout])
        };
        let quant = || OutputQuant::new(&mults, &shifts, zo, 0, 255).unwrap();
        let mut patches = vec![0u8; out[0] * out[1] * k];
        im2col(&geom, &input, zx as u8, 0..out[0], &mut patches).unwrap();
        let gemm = PackedGemm::new(IntIsa::Portable, &weights, cout, k, zw, zx, &bias, quant()).unwrap();
        let mut want = vec![0u8; out[0] * out[1] * cout];
        gemm.run(&patches, out[0] * out[1], &mut want).unwrap();
        let stem = PackedStem::new(IntIsa::Avx512Vnni, &weights, cout, geom, zw, zx, &bias, quant()).unwrap();
        let mut got = vec![0u8; want.len()];
        stem.run(&input, 0..out[0], &mut got).unwrap();
        prop_assert_eq!(&got, &want);
        // A band of rows writes exactly those rows.
        let band = out[0] / 2..out[0];
        let row = out[1] * cout;
        let mut part = vec![0u8; band.len() * row];
        stem.run(&input, band.clone(), &mut part).unwrap();
        prop_assert_eq!(&part[..], &want[band.start * row..]);
    }

    /// The pool equals the reference average pool.
    #[test]
    fn pool_matches_reference(
        seed in any::<u64>(),
        h in 1..10usize,
        w in 1..10usize,
        c in channels(),
        window in 1..5usize,
        stride in 1..4usize,
        same in any::<bool>(),
        act in activation(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let padding = if same { Padding::Same } else { Padding::Valid };
        let params = QuantParams::new(0.02, rng.random_range(0..=255)).unwrap();
        let Ok(reference) = AveragePool::new(1, [h, w], c, [window, window], [stride, stride], padding, params, act) else {
            return Err(TestCaseError::reject("no output"));
        };
        let [_, oh, ow, _] = reference.output_shape();
        let input = bytes(&mut rng, h * w * c);
        let mut want = vec![0u8; oh * ow * c];
        reference.run(&input, &mut want).unwrap();
        let rows = Axis::new(h, window, stride, 1, padding).unwrap();
        let cols = Axis::new(w, window, stride, 1, padding).unwrap();
        let (lo, hi) = act.range(params).unwrap();
        let geom = PoolGeometry {
            input: [h, w],
            channels: c,
            window: [window, window],
            stride: [stride, stride],
            pad: [rows.pad, cols.pad],
            output: [oh, ow],
        };
        let mut got = vec![0u8; oh * ow * c];
        average_pool(&geom, &input, lo as u8, hi as u8, &mut got).unwrap();
        prop_assert_eq!(got, want);
    }
}

/// Shrunk from a proptest failure: the vector epilogues pack to 16 bits
/// with saturation, yet a rescaled value near `i32::MAX` plus the zero
/// point must wrap to a negative value as in the scalar form.
/// Weights larger than L2 at MobileNet's sizes (up to 1 MiB) and row
/// counts that split into several cache blocks, with ragged last panels:
/// the GEMM still equals the reference fully connected layer.
#[test]
fn gemm_with_large_weights_and_several_row_blocks() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let q = |s, z| QuantParams::new(s, z).unwrap();
    for (m, k, n) in [(49, 1024, 300), (133, 700, 400), (7, 2050, 130)] {
        let spec = FullyConnectedSpec {
            batches: m,
            depth: k,
            units: n,
            input: q(0.02, 3),
            filter: q(0.01, 128),
            // About 50 codes per standard deviation of the sums.
            output: q(2e-4 * (k as f32).sqrt() * 220.0, 128),
            activation: Activation::None,
        };
        let weights = bytes(&mut rng, n * k);
        let bias = biases(&mut rng, n);
        let input = bytes(&mut rng, m * k);
        let reference = FullyConnected::new(&spec, &weights, Some(&bias)).unwrap();
        let mut want = vec![0u8; m * n];
        reference.run(&input, &mut want).unwrap();
        let saturated = want.iter().filter(|&&v| v == 0 || v == 255).count();
        assert!(
            saturated * 10 < want.len(),
            "{saturated} of {} saturated",
            want.len()
        );
        let stage = OutputStage::new(
            conv_multiplier(spec.input, spec.filter, spec.output),
            spec.output,
            spec.activation,
        )
        .unwrap();
        for isa in isas() {
            let gemm =
                PackedGemm::new(isa, &weights, n, k, 128, 3, &bias, quant_of(&stage, n)).unwrap();
            let mut got = vec![0u8; m * n];
            gemm.run(&input, m, &mut got).unwrap();
            assert_eq!(got, want, "{isa} m {m} k {k} n {n}");
        }
    }
}

#[test]
fn requantize_zero_point_wraps_like_the_scalar_form() {
    let n = 33;
    let q = OutputQuant::new(&vec![i32::MAX; n], &vec![0; n], 128, 0, 1).unwrap();
    let acc = vec![i32::MAX; n];
    let want: Vec<u8> = (0..n).map(|c| q.apply(acc[c], c)).collect();
    assert_eq!(want, vec![0; n]);
    for isa in isas() {
        let mut got = vec![9u8; n];
        q.apply_row(isa, &acc, &mut got).unwrap();
        assert_eq!(got, want, "{isa}");
    }
}

/// Global pools of every window size round to nearest exactly: windows of
/// up to 2^16 pixels divide by a reciprocal, larger ones plainly.
#[test]
fn global_pool_rounds_exactly_on_both_sides_of_the_reciprocal_path() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (h, w) in [(7, 7), (256, 256), (256, 257), (300, 301)] {
        let c = 3;
        let input = bytes(&mut rng, h * w * c);
        let geom = PoolGeometry {
            input: [h, w],
            channels: c,
            window: [h, w],
            stride: [1, 1],
            pad: [0, 0],
            output: [1, 1],
        };
        let mut got = vec![0u8; c];
        average_pool(&geom, &input, 0, 255, &mut got).unwrap();
        let count = (h * w) as u64;
        let want: Vec<u8> = (0..c)
            .map(|ch| {
                let sum: u64 = input
                    .iter()
                    .skip(ch)
                    .step_by(c)
                    .map(|&v| u64::from(v))
                    .sum();
                ((sum + count / 2) / count) as u8
            })
            .collect();
        assert_eq!(got, want, "{h}x{w}");
    }
}

#[test]
fn kernels_refuse_bad_lengths() {
    let quant = OutputQuant::per_tensor(4, 1 << 30, -3, 0, 0, 255).unwrap();
    for isa in isas() {
        let gemm = PackedGemm::new(isa, &[1; 12], 4, 3, 0, 0, &[0; 4], quant.clone()).unwrap();
        assert!(gemm.run(&[0; 6], 2, &mut [0; 8]).is_ok());
        assert!(gemm.run(&[0; 5], 2, &mut [0; 8]).is_err());
        assert!(gemm.run(&[0; 6], 2, &mut [0; 7]).is_err());
        assert!(gemm.run(&[0; 6], usize::MAX, &mut [0; 8]).is_err());
        assert!(PackedGemm::new(isa, &[1; 11], 4, 3, 0, 0, &[0; 4], quant.clone()).is_err());
        assert!(PackedGemm::new(isa, &[1; 12], 4, 3, 0, 0, &[0; 3], quant.clone()).is_err());
        assert!(PackedGemm::new(isa, &[1; 12], 4, 3, 256, 0, &[0; 4], quant.clone()).is_err());
        let dw = PackedDepthwise3x3::new(isa, &[1; 36], 4, 0, 0, &[0; 4], quant.clone()).unwrap();
        let geom = DepthwiseGeometry {
            input: [2, 2],
            output: [2, 2],
            stride: [1, 1],
            pad: [1, 1],
            channels: 4,
        };
        assert!(dw.run(&geom, &[0; 16], 0..2, &mut [0; 16]).is_ok());
        assert!(dw.run(&geom, &[0; 15], 0..2, &mut [0; 16]).is_err());
        assert!(dw.run(&geom, &[0; 16], 0..3, &mut [0; 24]).is_err());
        assert!(dw.run(&geom, &[0; 16], 1..2, &mut [0; 16]).is_err());
        let bad = DepthwiseGeometry {
            stride: [0, 1],
            ..geom
        };
        assert!(dw.run(&bad, &[0; 16], 0..2, &mut [0; 16]).is_err());
        let huge = DepthwiseGeometry {
            input: [usize::MAX, 2],
            ..geom
        };
        assert!(dw.run(&huge, &[0; 16], 0..2, &mut [0; 16]).is_err());
    }
    assert!(OutputQuant::new(&[1], &[0, 0], 0, 0, 255).is_err());
    assert!(OutputQuant::new(&[1], &[0], 0, 10, 5).is_err());
    assert!(OutputQuant::new(&[1], &[0], 0, 0, 256).is_err());
}

#[test]
fn stem_refuses_what_it_cannot_run() {
    let geom = PatchGeometry {
        input: [8, 8],
        channels: 3,
        kernel: [3, 3],
        stride: [2, 2],
        dilation: [1, 1],
        pad: [0, 0],
        output: [3, 3],
    };
    let quant = || OutputQuant::per_tensor(4, 1 << 30, -3, 0, 0, 255).unwrap();
    let (w, b) = (vec![7u8; 4 * 27], vec![0i32; 4]);
    let new = |isa, geom, w: &[u8], zw| PackedStem::new(isa, w, 4, geom, zw, 0, &b, quant());
    // Other ISAs, dilation and too wide kernel rows belong to im2col + GEMM.
    assert!(!PackedStem::supports(IntIsa::Portable, &geom));
    assert!(new(IntIsa::Portable, geom, &w, 0).is_err());
    let dilated = PatchGeometry {
        dilation: [2, 2],
        ..geom
    };
    assert!(!PackedStem::supports(IntIsa::Avx512Vnni, &dilated));
    let wide = PatchGeometry {
        channels: 6,
        ..geom
    };
    assert!(!PackedStem::supports(IntIsa::Avx512Vnni, &wide));
    if !IntIsa::Avx512Vnni.is_supported() {
        eprintln!("skipped the rest: this CPU has no AVX-512 VNNI");
        return;
    }
    let isa = IntIsa::Avx512Vnni;
    assert!(matches!(new(isa, geom, &w[1..], 0), Err(Error::Shape(_))));
    assert!(matches!(
        new(isa, geom, &w, 256),
        Err(Error::InvalidConfig(_))
    ));
    let empty = PatchGeometry {
        output: [0, 3],
        ..geom
    };
    assert!(new(isa, empty, &w, 0).is_err());
    let huge = PatchGeometry {
        input: [usize::MAX, 2],
        ..geom
    };
    assert!(matches!(new(isa, huge, &w, 0), Err(Error::TooLarge(_))));
    let stem = new(isa, geom, &w, 0).unwrap();
    let mut out = vec![0u8; 9 * 4];
    assert!(stem.run(&[0; 8 * 8 * 3 - 1], 0..3, &mut out).is_err());
    assert!(stem.run(&[0; 8 * 8 * 3], 0..4, &mut out).is_err());
    assert!(stem.run(&[0; 8 * 8 * 3], 0..2, &mut out).is_err());
    assert!(stem.run(&[0; 8 * 8 * 3], 0..3, &mut out).is_ok());
}

#[test]
fn isa_detection_honours_the_environment_order() {
    let best = IntIsa::detect();
    assert!(best.is_supported());
    assert!(IntIsa::supported().contains(&IntIsa::Portable));
    for isa in IntIsa::ALL {
        assert_eq!(isa.name().parse::<IntIsa>().unwrap(), isa);
    }
}
