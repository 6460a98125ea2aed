//! Depthwise 3x3 kernels: every supported ISA against the plain reference
//! loop nest and against the reference conv layer, on random geometries,
//! channel counts, row bands and epilogues; plus the error contract.

use std::ops::Range;

use mobilenet::Tensor;
use mobilenet::kernels::depthwise::{Conv3x3Geometry, PackedDepthwise3x3, depthwise3x3_reference};
use mobilenet::kernels::{Epilogue, Isa};
use mobilenet::layers::{Conv2dParams, Padding, conv2d};
use proptest::prelude::*;

/// Deterministic pseudo-random values in [-1, 1).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// One test problem.
#[derive(Clone, Debug)]
struct Case {
    h: usize,
    w: usize,
    c: usize,
    stride: usize,
    /// top, bottom, left, right.
    pads: [usize; 4],
    epilogue: Epilogue,
    seed: u64,
    /// Cut points (fractions of out_h) splitting the rows into bands.
    cuts: Vec<f64>,
}

impl Case {
    fn geom(&self) -> Option<Conv3x3Geometry> {
        let [t, b, l, r] = self.pads;
        Conv3x3Geometry::new(self.h, self.w, self.stride, t, b, l, r).ok()
    }
}

fn epilogue() -> impl Strategy<Value = Epilogue> {
    prop_oneof![
        Just(Epilogue::IDENTITY),
        Just(Epilogue::RELU),
        Just(Epilogue::RELU6),
        (-1.0f32..0.5, 0.0f32..1.5).prop_map(|(min, span)| Epilogue {
            min,
            max: min + span
        }),
    ]
}

fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(2), Just(3), Just(4), 1usize..40]
}

fn channels() -> impl Strategy<Value = usize> {
    prop_oneof![
        prop::sample::select(vec![1usize, 7, 8, 15, 16, 17, 24, 32, 33]),
        1usize..70
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        dim(),
        dim(),
        channels(),
        prop_oneof![4 => Just(1usize), 4 => Just(2), 1 => Just(3)],
        prop::array::uniform4(0usize..=1),
        epilogue(),
        any::<u64>(),
        prop::collection::vec(0.0f64..1.0, 0..4),
    )
        .prop_map(|(h, w, c, stride, pads, epilogue, seed, cuts)| Case {
            h,
            w,
            c,
            stride,
            pads,
            epilogue,
            seed,
            cuts,
        })
}

/// Disjoint bands covering `0..out_h` at the given cut fractions.
fn bands(out_h: usize, cuts: &[f64]) -> Vec<Range<usize>> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|f| ((f * out_h as f64) as usize).min(out_h))
        .collect();
    points.push(0);
    points.push(out_h);
    points.sort_unstable();
    points.windows(2).map(|p| p[0]..p[1]).collect()
}

/// |a - b| <= 1e-5 * (1 + sum |terms|) everywhere, where `mag` holds the
/// per-output sum of |terms| (computed by the reference on absolute values).
fn assert_close(got: &[f32], want: &[f32], mag: &[f32], what: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len());
    for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(mag).enumerate() {
        let tol = 1e-5 * (1.0 + m);
        prop_assert!(
            (g - w).abs() <= tol,
            "{}: element {} got {} want {} (tol {})",
            what,
            i,
            g,
            w,
            tol
        );
    }
    Ok(())
}

/// Runs every check of one case; `Ok` without checking if the geometry is
/// invalid (input smaller than the kernel).
fn check_case(case: &Case) -> Result<(), TestCaseError> {
    let Some(g) = case.geom() else {
        return Ok(());
    };
    let c = case.c;
    let input = values(g.input_len(c).unwrap(), case.seed);
    let weight = values(9 * c, case.seed ^ 1);
    let bias = values(c, case.seed ^ 2);
    let out_len = g.output_len(c).unwrap();

    let mut want = vec![0.0; out_len];
    depthwise3x3_reference(&input, &weight, &bias, &mut want, c, &g, case.epilogue).unwrap();
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let mut mag = vec![0.0; out_len];
    depthwise3x3_reference(
        &abs(&input),
        &abs(&weight),
        &abs(&bias),
        &mut mag,
        c,
        &g,
        Epilogue::IDENTITY,
    )
    .unwrap();

    for isa in Isa::supported() {
        let packed = PackedDepthwise3x3::pack(isa, &weight, &bias, c).unwrap();
        prop_assert_eq!(packed.isa(), isa);
        prop_assert_eq!(packed.channels(), c);
        let mut full = vec![f32::NAN; out_len];
        packed
            .run(&input, &mut full, &g, 0..g.out_h, case.epilogue)
            .unwrap();
        assert_close(&full, &want, &mag, &format!("{isa} {g:?} c={c}"))?;

        // Disjoint bands covering all rows give exactly the full run, and a
        // band writes nothing outside its rows.
        let row_len = g.out_w * c;
        let mut split = vec![f32::NAN; out_len];
        for rows in bands(g.out_h, &case.cuts) {
            let before = split.clone();
            packed
                .run(&input, &mut split, &g, rows.clone(), case.epilogue)
                .unwrap();
            for (i, (a, b)) in split.iter().zip(&before).enumerate() {
                if !rows.contains(&(i / row_len)) {
                    prop_assert!(
                        a.to_bits() == b.to_bits(),
                        "{isa}: row band {rows:?} wrote element {i}"
                    );
                }
            }
        }
        prop_assert!(
            split
                .iter()
                .zip(&full)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{isa}: banded run differs from the full run"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]

    #[test]
    fn kernels_match_reference(case in case()) {
        check_case(&case)?;
    }

    #[test]
    fn reference_matches_conv_layer(case in case()) {
        let Some(g) = case.geom() else { return Ok(()) };
        let c = case.c;
        let input = values(g.input_len(c).unwrap(), case.seed);
        let weight = values(9 * c, case.seed ^ 1);
        let bias = values(c, case.seed ^ 2);
        let mut got = vec![0.0; g.output_len(c).unwrap()];
        depthwise3x3_reference(&input, &weight, &bias, &mut got, c, &g, case.epilogue).unwrap();

        let [top, bottom, left, right] = case.pads;
        let x = Tensor::new(vec![1, case.h, case.w, c], input.clone()).unwrap();
        let wt = Tensor::new(vec![c, 1, 3, 3], weight.clone()).unwrap();
        let bt = Tensor::new(vec![c], bias.clone()).unwrap();
        let params = Conv2dParams {
            stride: [case.stride; 2],
            dilation: [1, 1],
            padding: Padding { top, bottom, left, right },
            groups: c,
        };
        let y = conv2d(&x, &wt, Some(&bt), &params).unwrap();
        prop_assert_eq!(y.shape(), &[1, g.out_h, g.out_w, c]);
        let want: Vec<f32> = y.data().iter().map(|&v| case.epilogue.apply(v)).collect();
        let mag: Vec<f32> = vec![9.0 + 1.0; want.len()]; // |x|, |w|, |b| < 1
        assert_close(&got, &want, &mag, "reference vs conv2d")?;
    }

    /// Leading padding 2 and strides above 2 (slow paths) still agree.
    #[test]
    fn wide_padding_and_stride(
        h in 1usize..12, w in 1usize..12, c in 1usize..40,
        stride in 1usize..=4, pads in prop::array::uniform4(0usize..=2),
        seed in any::<u64>(),
    ) {
        check_case(&Case { h, w, c, stride, pads, epilogue: Epilogue::IDENTITY, seed, cuts: vec![0.5] })?;
    }
}

/// Every depthwise shape of MobileNet v1 at 224x224, α = 1 and α = 0.25,
/// with both PyTorch and TF 'SAME' padding.
#[test]
fn mobilenet_shapes() {
    let shapes = [
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
        (28, 64, 2),
        (7, 256, 1),
    ];
    for (i, &(hw, c, stride)) in shapes.iter().enumerate() {
        let (before, after) = if stride == 2 { (0, 1) } else { (1, 1) };
        for (pt, pb) in [(1, 1), (before, after)] {
            let case = Case {
                h: hw,
                w: hw,
                c,
                stride,
                pads: [pt, pb, pt, pb],
                epilogue: Epilogue::RELU6,
                seed: i as u64,
                cuts: vec![0.3, 0.6],
            };
            check_case(&case).unwrap();
        }
    }
}

#[test]
fn hand_computed_single_channel() {
    // 3x3 image 1..9, all-ones kernel, bias 0.5, PyTorch padding.
    let g = Conv3x3Geometry::new(3, 3, 1, 1, 1, 1, 1).unwrap();
    let input: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let weight = [1.0; 9];
    let want = [12.5, 21.5, 16.5, 27.5, 45.5, 33.5, 24.5, 39.5, 28.5];
    for isa in Isa::supported() {
        let p = PackedDepthwise3x3::pack(isa, &weight, &[0.5], 1).unwrap();
        let mut out = [0.0; 9];
        p.run(&input, &mut out, &g, 0..3, Epilogue::IDENTITY)
            .unwrap();
        assert_eq!(out, want, "{isa}");
        p.run(&input, &mut out, &g, 0..3, Epilogue::RELU6).unwrap();
        assert_eq!(out, [6.0; 9], "{isa}");
    }
}

#[test]
fn run_band_writes_only_the_band() {
    let g = Conv3x3Geometry::new(9, 7, 1, 1, 1, 1, 1).unwrap();
    let c = 20;
    let input = values(g.input_len(c).unwrap(), 5);
    let weight = values(9 * c, 6);
    let bias = values(c, 7);
    for isa in Isa::supported() {
        let p = PackedDepthwise3x3::pack(isa, &weight, &bias, c).unwrap();
        let mut full = vec![0.0; g.output_len(c).unwrap()];
        p.run(&input, &mut full, &g, 0..9, Epilogue::RELU).unwrap();
        let row = g.out_w * c;
        let (a, b) = full.split_at(4 * row);
        let mut band_a = vec![0.0; 4 * row];
        let mut band_b = vec![0.0; 5 * row];
        p.run_band(&input, &mut band_a, &g, 0..4, Epilogue::RELU)
            .unwrap();
        p.run_band(&input, &mut band_b, &g, 4..9, Epilogue::RELU)
            .unwrap();
        assert_eq!(band_a, a);
        assert_eq!(band_b, b);
    }
}

#[test]
fn errors_not_panics() {
    let c = 5;
    let g = Conv3x3Geometry::new(6, 6, 2, 1, 1, 1, 1).unwrap();
    let input = vec![0.0; g.input_len(c).unwrap()];
    let weight = vec![0.0; 9 * c];
    let bias = vec![0.0; c];
    let out_len = g.output_len(c).unwrap();

    // Geometry.
    assert!(Conv3x3Geometry::new(6, 6, 0, 1, 1, 1, 1).is_err());
    assert!(Conv3x3Geometry::new(0, 6, 1, 1, 1, 1, 1).is_err());
    assert!(Conv3x3Geometry::new(2, 6, 1, 0, 0, 1, 1).is_err());
    assert!(Conv3x3Geometry::new(6, 6, 1, 3, 0, 1, 1).is_err());
    let bad_stride = Conv3x3Geometry { stride: 0, ..g };
    let too_many_rows = Conv3x3Geometry {
        out_h: g.out_h + 2,
        ..g
    };

    for isa in Isa::supported() {
        assert!(PackedDepthwise3x3::pack(isa, &weight[1..], &bias, c).is_err());
        assert!(PackedDepthwise3x3::pack(isa, &weight, &bias[1..], c).is_err());
        assert!(PackedDepthwise3x3::pack(isa, &[], &[], 0).is_err());
        let p = PackedDepthwise3x3::pack(isa, &weight, &bias, c).unwrap();
        let e = Epilogue::IDENTITY;
        let mut out = vec![0.0; out_len];
        assert!(p.run(&input[1..], &mut out, &g, 0..1, e).is_err());
        assert!(p.run(&input, &mut out[1..], &g, 0..1, e).is_err());
        assert!(p.run(&input, &mut out, &g, 0..g.out_h + 1, e).is_err());
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = 2..1;
        assert!(p.run(&input, &mut out, &g, backwards, e).is_err());
        assert!(p.run(&input, &mut out, &bad_stride, 0..1, e).is_err());
        let mut big = vec![0.0; too_many_rows.output_len(c).unwrap()];
        assert!(p.run(&input, &mut big, &too_many_rows, 0..1, e).is_err());
        let nan = Epilogue {
            min: f32::NAN,
            max: 1.0,
        };
        assert!(p.run(&input, &mut out, &g, 0..1, nan).is_err());
        assert!(p.run_band(&input, &mut out, &g, 0..1, e).is_err());
        assert!(p.run(&input, &mut out, &g, 1..1, e).is_ok());
    }
    let mut out = vec![0.0; out_len];
    let e = Epilogue::IDENTITY;
    assert!(depthwise3x3_reference(&input, &weight, &bias, &mut out, c, &bad_stride, e).is_err());
    assert!(depthwise3x3_reference(&input[1..], &weight, &bias, &mut out, c, &g, e).is_err());
    assert!(depthwise3x3_reference(&input, &weight[1..], &bias, &mut out, c, &g, e).is_err());
}

#[test]
fn unsupported_isa_is_refused() {
    for isa in Isa::ALL {
        let r = PackedDepthwise3x3::pack(isa, &[0.0; 9], &[0.0], 1);
        // Supported ISAs pack (AVX-512 also needs VL, present on every
        // AVX-512 CPU but Xeon Phi); unsupported ones are refused.
        if isa == Isa::Portable || (isa.is_supported() && isa != Isa::Avx512) {
            assert!(r.is_ok(), "{isa}");
        }
        if !isa.is_supported() {
            assert!(r.is_err(), "{isa}");
        }
    }
}
