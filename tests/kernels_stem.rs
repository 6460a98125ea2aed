//! Stem 3x3 conv kernels: every supported ISA against the plain reference
//! loop nest and against the reference conv layer, on random geometries,
//! channel counts, row bands and epilogues; plus the error contract.

use std::ops::Range;

use mobilenet::Tensor;
use mobilenet::kernels::stem::{Conv3x3Geometry, PackedStemConv3x3, stem_conv3x3_reference};
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
    c_in: usize,
    c_out: usize,
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

fn case() -> impl Strategy<Value = Case> {
    (
        dim(),
        dim(),
        prop_oneof![3 => Just(3usize), 1 => 1usize..6],
        prop_oneof![
            prop::sample::select(vec![1usize, 7, 8, 9, 15, 16, 17, 24, 32, 33, 48]),
            1usize..70
        ],
        prop_oneof![1 => Just(1usize), 3 => Just(2), 1 => Just(3)],
        prop::array::uniform4(0usize..=1),
        epilogue(),
        any::<u64>(),
        prop::collection::vec(0.0f64..1.0, 0..4),
    )
        .prop_map(
            |(h, w, c_in, c_out, stride, pads, epilogue, seed, cuts)| Case {
                h,
                w,
                c_in,
                c_out,
                stride,
                pads,
                epilogue,
                seed,
                cuts,
            },
        )
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

/// |a - b| <= 1e-5 * (1 + sum |terms|) everywhere.
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

fn check_case(case: &Case) -> Result<(), TestCaseError> {
    let Some(g) = case.geom() else {
        return Ok(());
    };
    let (c_in, c_out) = (case.c_in, case.c_out);
    let input = values(g.input_len(c_in).unwrap(), case.seed);
    let weight = values(9 * c_in * c_out, case.seed ^ 1);
    let bias = values(c_out, case.seed ^ 2);
    let out_len = g.output_len(c_out).unwrap();

    let mut want = vec![0.0; out_len];
    stem_conv3x3_reference(
        &input,
        &weight,
        &bias,
        &mut want,
        c_in,
        c_out,
        &g,
        case.epilogue,
    )
    .unwrap();
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let mut mag = vec![0.0; out_len];
    stem_conv3x3_reference(
        &abs(&input),
        &abs(&weight),
        &abs(&bias),
        &mut mag,
        c_in,
        c_out,
        &g,
        Epilogue::IDENTITY,
    )
    .unwrap();

    for isa in Isa::supported() {
        let packed = PackedStemConv3x3::pack(isa, &weight, &bias, c_in, c_out).unwrap();
        prop_assert_eq!(packed.isa(), isa);
        prop_assert_eq!((packed.c_in(), packed.c_out()), (c_in, c_out));
        let mut full = vec![f32::NAN; out_len];
        packed
            .run(&input, &mut full, &g, 0..g.out_h, case.epilogue)
            .unwrap();
        assert_close(&full, &want, &mag, &format!("{isa} {g:?} {c_in}->{c_out}"))?;

        let row_len = g.out_w * c_out;
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
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn kernels_match_reference(case in case()) {
        check_case(&case)?;
    }

    #[test]
    fn reference_matches_conv_layer(case in case()) {
        let Some(g) = case.geom() else { return Ok(()) };
        let (c_in, c_out) = (case.c_in, case.c_out);
        let input = values(g.input_len(c_in).unwrap(), case.seed);
        let weight = values(9 * c_in * c_out, case.seed ^ 1);
        let bias = values(c_out, case.seed ^ 2);
        let mut got = vec![0.0; g.output_len(c_out).unwrap()];
        stem_conv3x3_reference(&input, &weight, &bias, &mut got, c_in, c_out, &g, case.epilogue)
            .unwrap();

        let [top, bottom, left, right] = case.pads;
        let x = Tensor::new(vec![1, case.h, case.w, c_in], input).unwrap();
        let wt = Tensor::new(vec![c_out, c_in, 3, 3], weight).unwrap();
        let bt = Tensor::new(vec![c_out], bias).unwrap();
        let params = Conv2dParams {
            stride: [case.stride; 2],
            dilation: [1, 1],
            padding: Padding { top, bottom, left, right },
            groups: 1,
        };
        let y = conv2d(&x, &wt, Some(&bt), &params).unwrap();
        prop_assert_eq!(y.shape(), &[1, g.out_h, g.out_w, c_out]);
        let want: Vec<f32> = y.data().iter().map(|&v| case.epilogue.apply(v)).collect();
        let mag = vec![1.0 + 9.0 * c_in as f32; want.len()]; // |x|, |w|, |b| < 1
        assert_close(&got, &want, &mag, "reference vs conv2d")?;
    }

    /// Leading padding 2 and strides above 2 still agree.
    #[test]
    fn wide_padding_and_stride(
        h in 1usize..12, w in 1usize..12, c_out in 1usize..40,
        stride in 1usize..=4, pads in prop::array::uniform4(0usize..=2),
        seed in any::<u64>(),
    ) {
        check_case(&Case {
            h, w, c_in: 3, c_out, stride, pads, epilogue: Epilogue::IDENTITY, seed, cuts: vec![0.5],
        })?;
    }
}

/// MobileNet v1 stems: 224x224x3 -> 112x112x{32, 8, 24, 16}, PyTorch and TF
/// 'SAME' padding.
#[test]
fn mobilenet_stems() {
    for (i, c_out) in [32, 8, 24, 16].into_iter().enumerate() {
        for (pt, pb) in [(1, 1), (0, 1)] {
            let case = Case {
                h: 224,
                w: 224,
                c_in: 3,
                c_out,
                stride: 2,
                pads: [pt, pb, pt, pb],
                epilogue: Epilogue::RELU6,
                seed: i as u64,
                cuts: vec![0.25, 0.7],
            };
            check_case(&case).unwrap();
        }
    }
}

#[test]
fn hand_computed() {
    // 2x2 image, 2 input channels, 1 output channel, PyTorch padding:
    // each output sums every pixel (weights 1 for ci 0, 10 for ci 1).
    let g = Conv3x3Geometry::new(2, 2, 1, 1, 1, 1, 1).unwrap();
    let input = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]; // (ci0, ci1) per pixel
    let mut weight = vec![1.0; 9];
    weight.extend([10.0; 9]);
    let want = (1.0 + 3.0 + 5.0 + 7.0) + 10.0 * (2.0 + 4.0 + 6.0 + 8.0) - 0.5;
    for isa in Isa::supported() {
        let p = PackedStemConv3x3::pack(isa, &weight, &[-0.5], 2, 1).unwrap();
        let mut out = [0.0; 4];
        p.run(&input, &mut out, &g, 0..2, Epilogue::IDENTITY)
            .unwrap();
        assert_eq!(out, [want; 4], "{isa}");
    }
}

#[test]
fn errors_not_panics() {
    let (c_in, c_out) = (3, 10);
    let g = Conv3x3Geometry::new(6, 6, 2, 1, 1, 1, 1).unwrap();
    let input = vec![0.0; g.input_len(c_in).unwrap()];
    let weight = vec![0.0; 9 * c_in * c_out];
    let bias = vec![0.0; c_out];
    let out_len = g.output_len(c_out).unwrap();
    let bad_stride = Conv3x3Geometry { stride: 0, ..g };
    let e = Epilogue::IDENTITY;
    for isa in Isa::supported() {
        assert!(PackedStemConv3x3::pack(isa, &weight[1..], &bias, c_in, c_out).is_err());
        assert!(PackedStemConv3x3::pack(isa, &weight, &bias[1..], c_in, c_out).is_err());
        assert!(PackedStemConv3x3::pack(isa, &[], &[], 0, 0).is_err());
        assert!(PackedStemConv3x3::pack(isa, &weight, &bias, c_out, c_in).is_err());
        let p = PackedStemConv3x3::pack(isa, &weight, &bias, c_in, c_out).unwrap();
        let mut out = vec![0.0; out_len];
        assert!(p.run(&input[1..], &mut out, &g, 0..1, e).is_err());
        assert!(p.run(&input, &mut out[1..], &g, 0..1, e).is_err());
        assert!(p.run(&input, &mut out, &g, 0..g.out_h + 1, e).is_err());
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = 3..2;
        assert!(p.run(&input, &mut out, &g, backwards, e).is_err());
        assert!(p.run(&input, &mut out, &bad_stride, 0..1, e).is_err());
        let nan = Epilogue {
            min: 0.0,
            max: f32::NAN,
        };
        assert!(p.run(&input, &mut out, &g, 0..1, nan).is_err());
        assert!(p.run_band(&input, &mut out, &g, 0..1, e).is_err());
        assert!(p.run(&input, &mut out, &g, 0..0, e).is_ok());
    }
    let mut out = vec![0.0; out_len];
    assert!(
        stem_conv3x3_reference(
            &input,
            &weight,
            &bias,
            &mut out,
            c_in,
            c_out,
            &bad_stride,
            e
        )
        .is_err()
    );
    assert!(
        stem_conv3x3_reference(&input[1..], &weight, &bias, &mut out, c_in, c_out, &g, e).is_err()
    );
}

#[test]
fn unsupported_isa_is_refused() {
    for isa in Isa::ALL {
        let r = PackedStemConv3x3::pack(isa, &[0.0; 27], &[0.0], 3, 1);
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
