//! The pointwise (1x1 conv) kernels against the plain reference, for every
//! instruction set this CPU supports.

use mobilenet::Tensor;
use mobilenet::kernels::pointwise::{PackedPointwise, pointwise_reference};
use mobilenet::kernels::{ColumnsMut, Epilogue, Isa};
use mobilenet::layers::{Conv2dParams, conv2d};
use proptest::prelude::*;

/// Deterministic pseudo-random values in [-1, 1).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

struct Case {
    m: usize,
    k: usize,
    n: usize,
    input: Vec<f32>,
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl Case {
    fn new(m: usize, k: usize, n: usize, seed: u64) -> Case {
        Case {
            m,
            k,
            n,
            input: values(m * k, seed),
            weight: values(n * k, seed.wrapping_add(1)),
            bias: values(n, seed.wrapping_add(2)),
        }
    }

    fn reference(&self, ep: Epilogue) -> Vec<f32> {
        let mut out = vec![f32::NAN; self.m * self.n];
        pointwise_reference(
            &self.input,
            &self.weight,
            &self.bias,
            &mut out,
            self.m,
            self.k,
            self.n,
            ep,
        )
        .expect("reference");
        out
    }

    fn packed(&self, isa: Isa) -> PackedPointwise {
        PackedPointwise::pack(isa, &self.weight, &self.bias, self.k, self.n).expect("pack")
    }

    fn run(&self, isa: Isa, ep: Epilogue) -> Vec<f32> {
        let mut out = vec![f32::NAN; self.m * self.n];
        self.packed(isa)
            .run(&self.input, &mut out, self.m, ep)
            .expect("run");
        out
    }

    /// Checks `got` against the reference within a tolerance that allows
    /// for another summation order: 1e-5 x (1 + sum of |terms|).
    fn check(&self, what: &str, got: &[f32], ep: Epilogue) -> Result<(), String> {
        let want = self.reference(ep);
        assert_eq!(got.len(), want.len());
        for m in 0..self.m {
            for j in 0..self.n {
                let scale: f32 = self.bias[j].abs()
                    + (0..self.k)
                        .map(|kk| {
                            (self.input[m * self.k + kk] * self.weight[j * self.k + kk]).abs()
                        })
                        .sum::<f32>();
                let (g, w) = (got[m * self.n + j], want[m * self.n + j]);
                // Written so that a NaN fails.
                let close = (g - w).abs() <= 1e-5 * (1.0 + scale);
                if !close {
                    return Err(format!(
                        "{what}: m={} k={} n={} {ep:?}: out[{m}, {j}] = {g}, reference {w}",
                        self.m, self.k, self.n
                    ));
                }
            }
        }
        Ok(())
    }
}

fn check_all_isas(m: usize, k: usize, n: usize, seed: u64, ep: Epilogue) -> Result<(), String> {
    let case = Case::new(m, k, n, seed);
    for isa in Isa::supported() {
        case.check(isa.name(), &case.run(isa, ep), ep)?;
    }
    Ok(())
}

fn dim(special: &'static [usize]) -> impl Strategy<Value = usize> {
    prop_oneof![
        1 => proptest::sample::select(special),
        2 => 1usize..300,
    ]
}

fn epilogue() -> impl Strategy<Value = Epilogue> {
    prop_oneof![
        Just(Epilogue::IDENTITY),
        Just(Epilogue::RELU),
        Just(Epilogue::RELU6),
        (-3.0f32..1.0, 0.0f32..4.0).prop_map(|(min, width)| Epilogue {
            min,
            max: min + width,
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn matches_reference(
        m in dim(&[1, 7, 13]),
        k in dim(&[1, 3]),
        n in dim(&[1, 15, 17, 33]),
        seed in any::<u64>(),
        ep in epilogue(),
    ) {
        check_all_isas(m, k, n, seed, ep).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn row_ranges_compose(
        m in 2usize..80,
        k in 1usize..70,
        n in 1usize..70,
        split in 0.0f64..1.0,
        seed in any::<u64>(),
    ) {
        // Running two row ranges separately (as the engine's threads do)
        // gives exactly the result of one call over all rows.
        let case = Case::new(m, k, n, seed);
        let cut = ((m as f64 * split) as usize).clamp(1, m - 1);
        for isa in Isa::supported() {
            let packed = case.packed(isa);
            let whole = case.run(isa, Epilogue::RELU);
            let mut parts = vec![f32::NAN; m * n];
            let (top, bottom) = parts.split_at_mut(cut * n);
            packed.run(&case.input[..cut * k], top, cut, Epilogue::RELU).unwrap();
            packed.run(&case.input[cut * k..], bottom, m - cut, Epilogue::RELU).unwrap();
            prop_assert_eq!(&whole, &parts, "{}", isa);
        }
    }

    #[test]
    fn column_ranges_compose(
        m in 1usize..40,
        k in 1usize..50,
        n in 1usize..150,
        cuts in proptest::collection::vec(0.0f64..1.0, 0..4),
        seed in any::<u64>(),
        ep in epilogue(),
    ) {
        // Column ranges on panel boundaries, run one by one into one output
        // (as the engine's threads do for weight-heavy layers), give exactly
        // the result of one call over all columns.
        let case = Case::new(m, k, n, seed);
        for isa in Isa::supported() {
            let (whole, parts, bounds) = run_in_column_ranges(&case, isa, &cuts, ep);
            prop_assert_eq!(&whole, &parts, "{} cuts {:?}", isa, bounds);
        }
    }
}

/// Runs `case` once over all columns and once as column ranges cut at the
/// panel boundaries nearest the fractions `cuts`; returns both outputs and
/// the cuts.
fn run_in_column_ranges(
    case: &Case,
    isa: Isa,
    cuts: &[f64],
    ep: Epilogue,
) -> (Vec<f32>, Vec<f32>, Vec<usize>) {
    let (m, n) = (case.m, case.n);
    let packed = case.packed(isa);
    let nr = packed.panel_columns();
    let panels = n.div_ceil(nr);
    let mut bounds: Vec<usize> = cuts
        .iter()
        .map(|c| ((panels as f64 * c) as usize * nr).min(n))
        .collect();
    bounds.sort_unstable();
    let whole = case.run(isa, ep);
    let mut out = vec![f32::NAN; m * n];
    let mut rest = ColumnsMut::new(&mut out, m, n).unwrap();
    let mut at = 0;
    for &b in &bounds {
        let (part, right) = rest.split_at(b - at);
        packed.run_columns(&case.input, part, ep).unwrap();
        (rest, at) = (right, b);
    }
    packed.run_columns(&case.input, rest, ep).unwrap();
    (whole, out, bounds)
}

#[test]
fn weights_past_the_prefetch_size_in_column_ranges() {
    // 300 x 490 weights (574 KiB) are prefetched panel by panel, and 490
    // columns end in a half-width panel; the column ranges stop the
    // prefetching at their last panel.
    let case = Case::new(23, 300, 490, 11);
    for isa in Isa::supported() {
        let (whole, parts, bounds) =
            run_in_column_ranges(&case, isa, &[0.3, 0.5, 0.9], Epilogue::RELU6);
        case.check(isa.name(), &whole, Epilogue::RELU6).unwrap();
        assert_eq!(whole, parts, "{isa} cuts {bounds:?}");
    }
}

#[test]
fn column_ranges_off_panel_boundaries_are_errors() {
    let case = Case::new(3, 4, 40, 7);
    for isa in Isa::supported() {
        let packed = case.packed(isa);
        let nr = packed.panel_columns();
        let mut out = vec![0.0; 3 * 40];
        let (left, right) = ColumnsMut::new(&mut out, 3, 40).unwrap().split_at(nr - 1);
        assert!(
            packed
                .run_columns(&case.input, left, Epilogue::RELU)
                .is_err(),
            "{isa}"
        );
        assert!(
            packed
                .run_columns(&case.input, right, Epilogue::RELU)
                .is_err(),
            "{isa}"
        );
        // A view of another matrix width, and too few input rows.
        let mut other = vec![0.0; 3 * 41];
        let view = ColumnsMut::new(&mut other, 3, 41).unwrap();
        assert!(
            packed
                .run_columns(&case.input, view, Epilogue::RELU)
                .is_err(),
            "{isa}"
        );
        let view = ColumnsMut::new(&mut out, 3, 40).unwrap();
        assert!(
            packed
                .run_columns(&case.input[4..], view, Epilogue::RELU)
                .is_err(),
            "{isa}"
        );
        assert!(
            out.iter().all(|&v| v == 0.0),
            "{isa}: an error wrote output"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn matches_reference_conv2d_layer(
        batch in 1usize..3,
        h in 1usize..9,
        w in 1usize..9,
        c_in in 1usize..70,
        c_out in 1usize..70,
        seed in any::<u64>(),
        ep in epilogue(),
    ) {
        // An NHWC activation is a [batch*h*w, c_in] matrix, and a 1x1 conv
        // with OIHW weights [c_out, c_in, 1, 1] is the pointwise kernel.
        let m = batch * h * w;
        let case = Case::new(m, c_in, c_out, seed);
        let x = Tensor::new(vec![batch, h, w, c_in], case.input.clone()).unwrap();
        let wt = Tensor::new(vec![c_out, c_in, 1, 1], case.weight.clone()).unwrap();
        let b = Tensor::new(vec![c_out], case.bias.clone()).unwrap();
        let y = conv2d(&x, &wt, Some(&b), &Conv2dParams::default()).unwrap();
        prop_assert_eq!(y.shape(), &[batch, h, w, c_out]);
        let want: Vec<f32> = y.data().iter().map(|&v| ep.apply(v)).collect();
        for isa in Isa::supported() {
            let got = case.run(isa, ep);
            for (idx, (&g, &e)) in got.iter().zip(&want).enumerate() {
                let (row, j) = (idx / c_out, idx % c_out);
                let scale: f32 = case.bias[j].abs()
                    + (0..c_in)
                        .map(|kk| (case.input[row * c_in + kk] * case.weight[j * c_in + kk]).abs())
                        .sum::<f32>();
                prop_assert!(
                    (g - e).abs() <= 1e-5 * (1.0 + scale),
                    "{}: out[{}] = {}, conv2d {}", isa, idx, g, e
                );
            }
        }
    }
}

#[test]
fn every_mobilenet_shape() {
    // (M, K, N) of MobileNet v1's pointwise layers at 224 (α = 1 and 0.25),
    // with M cut down to 49 rows to keep the reference quick.
    let shapes = [
        (64, 32, 64),
        (64, 64, 128),
        (49, 128, 128),
        (49, 128, 256),
        (49, 256, 256),
        (49, 256, 512),
        (49, 512, 512),
        (49, 512, 1024),
        (49, 1024, 1024),
        (100, 8, 16),
        (100, 16, 32),
        (49, 32, 32),
        (49, 32, 64),
        (49, 64, 64),
        // Rows spanning a multiple of 4 KiB take another tiling.
        (30, 2048, 40),
    ];
    for (i, &(m, k, n)) in shapes.iter().enumerate() {
        check_all_isas(m, k, n, i as u64, Epilogue::RELU6).unwrap();
    }
}

#[test]
fn epilogue_clamps() {
    // Every output lands inside [min, max]; bias alone when the input is 0.
    let (m, k, n) = (5, 4, 40);
    let mut case = Case::new(m, k, n, 9);
    case.input.iter_mut().for_each(|x| *x = 0.0);
    case.bias = (0..n).map(|j| j as f32 - 20.0).collect();
    for isa in Isa::supported() {
        let out = case.run(isa, Epilogue::RELU6);
        for (idx, &y) in out.iter().enumerate() {
            let b = case.bias[idx % n];
            assert_eq!(y, b.clamp(0.0, 6.0), "{isa} at {idx}");
        }
        let out = case.run(isa, Epilogue::IDENTITY);
        for (idx, &y) in out.iter().enumerate() {
            assert_eq!(y, case.bias[idx % n], "{isa} at {idx}");
        }
    }
}

#[test]
fn threads_share_one_packing() {
    let (m, k, n) = (97, 40, 70);
    let case = Case::new(m, k, n, 5);
    for isa in Isa::supported() {
        let packed = case.packed(isa);
        let whole = case.run(isa, Epilogue::RELU);
        let mut out = vec![f32::NAN; m * n];
        std::thread::scope(|s| {
            let mut rest = &mut out[..];
            let mut input = &case.input[..];
            for rows in [30, 30, 37] {
                let (mine, tail) = rest.split_at_mut(rows * n);
                rest = tail;
                let (a, a_tail) = input.split_at(rows * k);
                input = a_tail;
                let packed = &packed;
                s.spawn(move || packed.run(a, mine, rows, Epilogue::RELU).unwrap());
            }
        });
        assert_eq!(whole, out, "{isa}");
    }
}

#[test]
fn clone_keeps_results() {
    let case = Case::new(20, 17, 45, 3);
    for isa in Isa::supported() {
        let packed = case.packed(isa).clone();
        let mut out = vec![0.0; 20 * 45];
        packed
            .run(&case.input, &mut out, 20, Epilogue::IDENTITY)
            .unwrap();
        assert_eq!(out, case.run(isa, Epilogue::IDENTITY), "{isa}");
        assert_eq!((packed.isa(), packed.k(), packed.n()), (isa, 17, 45));
    }
}

#[test]
fn zero_rows_is_a_no_op() {
    let case = Case::new(0, 8, 16, 1);
    for isa in Isa::supported() {
        let mut out: Vec<f32> = vec![];
        case.packed(isa)
            .run(&[], &mut out, 0, Epilogue::RELU)
            .unwrap();
    }
}

#[test]
fn wrong_lengths_are_errors() {
    let (m, k, n) = (3, 4, 5);
    let case = Case::new(m, k, n, 1);
    for isa in Isa::supported() {
        let w = &case.weight;
        let b = &case.bias;
        assert!(PackedPointwise::pack(isa, &w[1..], b, k, n).is_err());
        assert!(PackedPointwise::pack(isa, w, &b[1..], k, n).is_err());
        assert!(PackedPointwise::pack(isa, &[], &[], 0, n).is_err());
        assert!(PackedPointwise::pack(isa, &[], &[], k, 0).is_err());
        assert!(PackedPointwise::pack(isa, &[], &[], usize::MAX, 2).is_err());
        let packed = case.packed(isa);
        let mut out = vec![0.0; m * n];
        let ep = Epilogue::IDENTITY;
        assert!(packed.run(&case.input[1..], &mut out, m, ep).is_err());
        assert!(packed.run(&case.input, &mut out[1..], m, ep).is_err());
        assert!(packed.run(&case.input, &mut out, m + 1, ep).is_err());
        assert!(packed.run(&case.input, &mut out, usize::MAX, ep).is_err());
        let err = packed.run(&case.input, &mut out[1..], m, ep).unwrap_err();
        assert!(matches!(err, mobilenet::Error::Shape(_)), "{err}");
    }
    let mut out = vec![0.0; m * n];
    let ep = Epilogue::IDENTITY;
    let (i, w, b) = (&case.input, &case.weight, &case.bias);
    assert!(pointwise_reference(i, w, b, &mut out, m, k, n, ep).is_ok());
    assert!(pointwise_reference(&i[1..], w, b, &mut out, m, k, n, ep).is_err());
    assert!(pointwise_reference(i, &w[1..], b, &mut out, m, k, n, ep).is_err());
    assert!(pointwise_reference(i, w, &b[1..], &mut out, m, k, n, ep).is_err());
    assert!(pointwise_reference(i, w, b, &mut out[1..], m, k, n, ep).is_err());
    assert!(pointwise_reference(&[], &[], &[], &mut [], 0, 0, n, ep).is_err());
}

#[test]
fn unsupported_isa_is_refused() {
    for isa in Isa::ALL.into_iter().filter(|i| !i.is_supported()) {
        let err = PackedPointwise::pack(isa, &[1.0], &[0.0], 1, 1).unwrap_err();
        assert!(err.is_bad_input(), "{err}");
    }
}
