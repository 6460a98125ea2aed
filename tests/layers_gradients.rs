//! Finite-difference checks of every backward pass in `mobilenet::layers`.
//!
//! Method: for a layer `y = f(θ)` we take the scalar loss `L = Σ r ⊙ y` with
//! a fixed random `r` (so `∂L/∂y = r`), ask the backward pass for `∂L/∂θ`
//! given `grad_output = r`, and compare each checked element with the
//! central difference `(L(θ + h e_i) - L(θ - h e_i)) / (2h)`, `L` summed in
//! f64 from the f32 outputs. The step actually taken is
//! `f64(θ_i + h) - f64(θ_i - h)` (after f32 rounding), not `2h`.
//!
//! Every element is checked for small tensors, a random subset for larger
//! ones. Each check uses an error relative to the largest gradient of the
//! tensor (see [`fd_error`]); the tolerances are below, with why. The
//! `*_catches_*` tests show that those tolerances are tight enough to reject
//! the classic bugs (a flipped kernel, an off-by-one shift, a transposed
//! weight, a forgotten `1/N`, the batch-norm gradient without the paths
//! through the batch statistics, ...).

use mobilenet::layers::{
    Activation, BatchNorm, Conv2dParams, Padding, PaddingMode, activate, activation_backward,
    batch_norm, batch_norm_train, batch_norm_train_backward, conv2d, conv2d_backward, dropout,
    dropout_backward, fully_connected, fully_connected_backward, global_avg_pool,
    global_avg_pool_backward, softmax_cross_entropy,
};
use mobilenet::{Error, Tensor};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

// ---------------------------------------------------------------------------
// Finite differences
// ---------------------------------------------------------------------------

/// Step of the central differences: inputs are of order 1, so `h = 1e-2`
/// keeps the f32 rounding of the outputs (~1e-7 relative) well below the
/// difference it divides (`~h`), while the truncation error of the smooth
/// layers (`~h²`) stays around 1e-4.
const H: f32 = 1e-2;

/// Tolerance for the layers that are linear in what we perturb
/// (convolution, fully connected, pooling, dropout): central differences
/// have no truncation error there, only f32 rounding of the few outputs the
/// element touches, divided by `2h`. Observed errors are below 1e-4;
/// 1e-3 leaves a margin and still rejects a 0.3% error in the largest
/// gradient.
const TOL_LINEAR: f64 = 1e-3;

/// Tolerance for the non-linear layers (batch norm in training mode,
/// softmax cross-entropy, the whole chain): here the `O(h²)` truncation
/// error and the f32 rounding of a loss of order 1 (returned as f32 by
/// `softmax_cross_entropy`) add up to a few 1e-4 relative error; 1e-2 is
/// the usual f32 finite-difference tolerance and every deliberate bug below
/// is off by far more than that.
const TOL_SMOOTH: f64 = 1e-2;

/// Elements checked per tensor in the random-shape tests (all of them if
/// the tensor is smaller).
const MAX_CHECKED: usize = 48;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn t(shape: &[usize], data: Vec<f32>) -> Tensor {
    Tensor::new(shape.to_vec(), data).expect("test tensor shape")
}

fn uniform(rng: &mut ChaCha8Rng, len: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(lo..hi)).collect()
}

fn rand_tensor(rng: &mut ChaCha8Rng, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    let len = shape.iter().product();
    t(shape, uniform(rng, len, lo, hi))
}

/// `Σ r ⊙ y` in f64.
fn weighted_sum(y: &Tensor, r: &Tensor) -> f64 {
    assert_eq!(y.shape(), r.shape(), "loss weights must match the output");
    y.data()
        .iter()
        .zip(r.data())
        .map(|(&a, &b)| f64::from(a) * f64::from(b))
        .sum()
}

/// The elements to check: all of them if there are at most `max`, else
/// `max` distinct random ones, always including the first and the last.
fn pick(len: usize, max: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    if len <= max {
        return (0..len).collect();
    }
    let mut chosen = vec![0, len - 1];
    while chosen.len() < max {
        let i = rng.random_range(0..len);
        if !chosen.contains(&i) {
            chosen.push(i);
        }
    }
    chosen
}

/// Central-difference estimates of `∂loss/∂x[i]` for `i` in `indices`.
fn numeric_grad(x: &[f32], indices: &[usize], loss: &mut dyn FnMut(&[f32]) -> f64) -> Vec<f64> {
    let mut probe = x.to_vec();
    indices
        .iter()
        .map(|&i| {
            probe[i] = x[i] + H;
            let up = loss(&probe);
            let taken_up = probe[i];
            probe[i] = x[i] - H;
            let down = loss(&probe);
            let step = f64::from(taken_up) - f64::from(probe[i]);
            probe[i] = x[i];
            (up - down) / step
        })
        .collect()
}

/// Largest `|analytic - numeric|` over the checked elements, relative to
/// `max(max |analytic| over the whole tensor, max |numeric|, 1e-2)`. The
/// floor keeps an all-but-zero gradient from turning rounding noise into a
/// large relative error (it makes the test absolute below 1e-2).
fn fd_error(analytic: &[f32], indices: &[usize], numeric: &[f64]) -> f64 {
    let scale = analytic
        .iter()
        .map(|&a| f64::from(a).abs())
        .chain(numeric.iter().map(|n| n.abs()))
        .fold(1e-2, f64::max);
    indices
        .iter()
        .zip(numeric)
        .map(|(&i, &n)| (f64::from(analytic[i]) - n).abs() / scale)
        .fold(0.0, f64::max)
}

/// Compares `analytic` (the gradient of `loss` at `x`) with central
/// differences at `indices`; `Err` describes the worst element.
fn fd_check(
    what: &str,
    x: &[f32],
    analytic: &[f32],
    indices: &[usize],
    tol: f64,
    loss: &mut dyn FnMut(&[f32]) -> f64,
) -> Result<(), String> {
    assert_eq!(x.len(), analytic.len(), "{what}: gradient length");
    let numeric = numeric_grad(x, indices, loss);
    let err = fd_error(analytic, indices, &numeric);
    if err <= tol {
        return Ok(());
    }
    let (worst, _) = indices
        .iter()
        .zip(&numeric)
        .map(|(&i, &n)| (i, (f64::from(analytic[i]) - n).abs()))
        .fold((0, -1.0), |a, b| if b.1 > a.1 { b } else { a });
    let n = numeric[indices.iter().position(|&i| i == worst).unwrap()];
    Err(format!(
        "{what}: relative error {err:.3e} > {tol:.0e}; worst element {worst}: analytic {}, \
         numeric {n}",
        analytic[worst]
    ))
}

/// [`fd_check`] over every element, panicking on a mismatch.
fn assert_fd(
    what: &str,
    x: &[f32],
    analytic: &[f32],
    tol: f64,
    loss: &mut dyn FnMut(&[f32]) -> f64,
) {
    let all: Vec<usize> = (0..x.len()).collect();
    if let Err(e) = fd_check(what, x, analytic, &all, tol, loss) {
        panic!("{e}");
    }
}

/// Asserts that `wrong` (a deliberately buggy gradient) fails the check that
/// `right` passes.
fn assert_catches(
    what: &str,
    x: &[f32],
    right: &[f32],
    wrong: &[f32],
    tol: f64,
    loss: &mut dyn FnMut(&[f32]) -> f64,
) {
    let all: Vec<usize> = (0..x.len()).collect();
    let numeric = numeric_grad(x, &all, loss);
    let ok = fd_error(right, &all, &numeric);
    let bad = fd_error(wrong, &all, &numeric);
    assert!(ok <= tol, "{what}: the correct gradient fails ({ok:.3e})");
    assert!(
        bad > 3.0 * tol,
        "{what}: the buggy gradient passes (error {bad:.3e}, tolerance {tol:.0e})"
    );
}

fn is_shape<T>(r: mobilenet::Result<T>) -> bool {
    matches!(r, Err(Error::Shape(_)))
}

fn is_config<T>(r: mobilenet::Result<T>) -> bool {
    matches!(r, Err(Error::InvalidConfig(_)))
}

// ---------------------------------------------------------------------------
// Convolution
// ---------------------------------------------------------------------------

/// Checks all three conv gradients at a random point, on `max` elements per
/// tensor.
fn check_conv(
    x_shape: [usize; 4],
    w_shape: [usize; 4],
    params: &Conv2dParams,
    seed: u64,
    max: usize,
) -> Result<(), String> {
    let mut rng = rng(seed);
    let x = rand_tensor(&mut rng, &x_shape, -1.0, 1.0);
    let w = rand_tensor(&mut rng, &w_shape, -1.0, 1.0);
    let b = rand_tensor(&mut rng, &[w_shape[0]], -1.0, 1.0);
    let y = conv2d(&x, &w, Some(&b), params).map_err(|e| e.to_string())?;
    let r = rand_tensor(&mut rng, y.shape(), -1.0, 1.0);
    let grads = conv2d_backward(&x, &w, &r, params).map_err(|e| e.to_string())?;
    assert_eq!(grads.input.shape(), x.shape());
    assert_eq!(grads.weight.shape(), w.shape());
    assert_eq!(grads.bias.shape(), b.shape());

    let what = format!("conv x {x_shape:?} w {w_shape:?} {params:?}");
    let idx = pick(x.len(), max, &mut rng);
    fd_check(
        &format!("{what}: input"),
        x.data(),
        grads.input.data(),
        &idx,
        TOL_LINEAR,
        &mut |v| {
            weighted_sum(
                &conv2d(&t(&x_shape, v.to_vec()), &w, Some(&b), params).unwrap(),
                &r,
            )
        },
    )?;
    let idx = pick(w.len(), max, &mut rng);
    fd_check(
        &format!("{what}: weight"),
        w.data(),
        grads.weight.data(),
        &idx,
        TOL_LINEAR,
        &mut |v| {
            weighted_sum(
                &conv2d(&x, &t(&w_shape, v.to_vec()), Some(&b), params).unwrap(),
                &r,
            )
        },
    )?;
    let idx = pick(b.len(), max, &mut rng);
    fd_check(
        &format!("{what}: bias"),
        b.data(),
        grads.bias.data(),
        &idx,
        TOL_LINEAR,
        &mut |v| {
            weighted_sum(
                &conv2d(&x, &w, Some(&t(b.shape(), v.to_vec())), params).unwrap(),
                &r,
            )
        },
    )
}

#[derive(Clone, Debug)]
struct ConvCase {
    x_shape: [usize; 4],
    w_shape: [usize; 4],
    params: Conv2dParams,
    seed: u64,
}

/// Batch 1-3, images 1x1..7x7 (grown only as far as the kernel needs),
/// kernels 1-3 per axis (so 1x1 and non-square ones), stride and dilation
/// 1-2, padding 0 or 1 on each side independently (TF 'SAME' is 0/1), and
/// three channel layouts: standard (any 1-5 channels, odd included),
/// depthwise (`groups = C_in`, channel multiplier 1 or 2) and 2 groups.
fn conv_case() -> impl Strategy<Value = ConvCase> {
    (
        (1..=3usize, 1..=7usize, 1..=7usize),
        (1..=3usize, 1..=3usize),
        (1..=2usize, 1..=2usize, 1..=2usize, 1..=2usize),
        (0..=1usize, 0..=1usize, 0..=1usize, 0..=1usize),
        (0..3usize, 1..=5usize, 1..=5usize),
        any::<u64>(),
    )
        .prop_map(
            |(
                (n, h0, w0),
                (kh, kw),
                (sh, sw, dh, dw),
                (top, bottom, left, right),
                layout,
                seed,
            )| {
                let (kind, a, b) = layout;
                let (c_in, c_out, groups) = match kind {
                    0 => (a, b, 1),
                    1 => (a, a * (1 + b % 2), a),
                    _ => (2 * (1 + a % 3), 2 * (1 + b % 3), 2),
                };
                let padding = Padding {
                    top,
                    bottom,
                    left,
                    right,
                };
                let h = h0.max(((kh - 1) * dh + 1).saturating_sub(top + bottom));
                let w = w0.max(((kw - 1) * dw + 1).saturating_sub(left + right));
                ConvCase {
                    x_shape: [n, h, w, c_in],
                    w_shape: [c_out, c_in / groups, kh, kw],
                    params: Conv2dParams {
                        stride: [sh, sw],
                        dilation: [dh, dw],
                        padding,
                        groups,
                    },
                    seed,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random geometries: every conv gradient matches finite differences.
    #[test]
    fn conv2d_backward_matches_finite_differences(case in conv_case()) {
        let r = check_conv(case.x_shape, case.w_shape, &case.params, case.seed, MAX_CHECKED);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}

/// The layers MobileNet itself uses, every element checked.
#[test]
fn conv2d_backward_mobilenet_layers_every_element() {
    let same =
        |h: usize, k: usize, s: usize| PaddingMode::TfSame.resolve(h, h, [k, k], [s, s], [1, 1]);
    let cases = [
        // Stem: 3x3 stride 2, TF 'SAME' on an even input (pads only after).
        ([2, 6, 6, 3], [4, 3, 3, 3], [2, 2], same(6, 3, 2), 1),
        // Depthwise 3x3 stride 2 on an odd input, odd channel count.
        ([1, 7, 7, 5], [5, 1, 3, 3], [2, 2], same(7, 3, 2), 5),
        // Depthwise 3x3 stride 1, PyTorch symmetric padding.
        ([2, 4, 5, 3], [3, 1, 3, 3], [1, 1], Padding::symmetric(1), 3),
        // Pointwise 1x1.
        ([3, 3, 2, 5], [7, 5, 1, 1], [1, 1], Padding::zero(), 1),
        // A 1x1 image with padding all round.
        ([2, 1, 1, 3], [2, 3, 3, 3], [1, 1], Padding::symmetric(1), 1),
    ];
    for (i, (xs, ws, stride, padding, groups)) in cases.into_iter().enumerate() {
        let params = Conv2dParams {
            stride,
            dilation: [1, 1],
            padding,
            groups,
        };
        check_conv(xs, ws, &params, 100 + i as u64, usize::MAX).unwrap();
    }
}

#[test]
fn conv2d_backward_with_a_zero_gradient_is_zero() {
    let mut rng = rng(3);
    let x = rand_tensor(&mut rng, &[1, 4, 4, 2], -1.0, 1.0);
    let w = rand_tensor(&mut rng, &[3, 2, 3, 3], -1.0, 1.0);
    let p = Conv2dParams::default();
    let g = Tensor::zeros(vec![1, 2, 2, 3]).unwrap();
    let grads = conv2d_backward(&x, &w, &g, &p).unwrap();
    for v in [&grads.input, &grads.weight, &grads.bias] {
        assert!(v.data().iter().all(|&e| e == 0.0));
    }
}

/// Stride 2 on a 4-wide input with a 1x1 kernel: the odd rows and columns
/// are never read, so their gradient is exactly 0.
#[test]
fn conv2d_backward_unread_pixels_get_zero() {
    let x = t(&[1, 4, 4, 1], vec![1.0; 16]);
    let w = t(&[1, 1, 1, 1], vec![2.0]);
    let p = Conv2dParams {
        stride: [2, 2],
        ..Default::default()
    };
    let g = t(&[1, 2, 2, 1], vec![1.0, 2.0, 3.0, 4.0]);
    let grads = conv2d_backward(&x, &w, &g, &p).unwrap();
    #[rustfmt::skip]
    let expected = [
        2.0, 0.0, 4.0, 0.0,
        0.0, 0.0, 0.0, 0.0,
        6.0, 0.0, 8.0, 0.0,
        0.0, 0.0, 0.0, 0.0,
    ];
    assert_eq!(grads.input.data(), &expected);
    assert_eq!(grads.weight.data(), &[10.0]);
    assert_eq!(grads.bias.data(), &[10.0]);
}

/// A standard conv with a non-square kernel, stride 2 and asymmetric
/// padding: the correct gradients pass, the classic bugs do not.
#[test]
fn conv2d_fd_catches_flipped_kernel_shift_and_missing_batch() {
    let mut rng = rng(11);
    let (xs, ws) = ([2, 5, 6, 3], [4, 3, 2, 3]);
    let p = Conv2dParams {
        stride: [2, 1],
        dilation: [1, 1],
        padding: Padding {
            top: 0,
            bottom: 1,
            left: 1,
            right: 0,
        },
        groups: 1,
    };
    let x = rand_tensor(&mut rng, &xs, -1.0, 1.0);
    let w = rand_tensor(&mut rng, &ws, -1.0, 1.0);
    let y = conv2d(&x, &w, None, &p).unwrap();
    let r = rand_tensor(&mut rng, y.shape(), -1.0, 1.0);
    let grads = conv2d_backward(&x, &w, &r, &p).unwrap();
    let loss_w =
        &mut |v: &[f32]| weighted_sum(&conv2d(&x, &t(&ws, v.to_vec()), None, &p).unwrap(), &r);

    // Convolution instead of cross-correlation: the kernel rotated 180°.
    let gw = grads.weight.data();
    let (kh, kw) = (ws[2], ws[3]);
    let flipped: Vec<f32> = (0..gw.len())
        .map(|i| {
            let (oc, ky, kx) = (i / (kh * kw), i / kw % kh, i % kw);
            gw[oc * kh * kw + (kh - 1 - ky) * kw + (kw - 1 - kx)]
        })
        .collect();
    assert_catches(
        "conv weight, flipped",
        w.data(),
        gw,
        &flipped,
        TOL_LINEAR,
        loss_w,
    );

    // Off by one: every weight gradient shifted by one element.
    let mut shifted = gw.to_vec();
    shifted.rotate_right(1);
    assert_catches(
        "conv weight, shifted",
        w.data(),
        gw,
        &shifted,
        TOL_LINEAR,
        loss_w,
    );

    // 0.5% too large everywhere.
    let scaled: Vec<f32> = gw.iter().map(|v| v * 1.005).collect();
    assert_catches(
        "conv weight, scaled",
        w.data(),
        gw,
        &scaled,
        TOL_LINEAR,
        loss_w,
    );

    // The input gradient shifted by one pixel (C elements).
    let gx = grads.input.data();
    let mut shifted = gx.to_vec();
    shifted.rotate_right(xs[3]);
    let loss_x =
        &mut |v: &[f32]| weighted_sum(&conv2d(&t(&xs, v.to_vec()), &w, None, &p).unwrap(), &r);
    assert_catches(
        "conv input, shifted",
        x.data(),
        gx,
        &shifted,
        TOL_LINEAR,
        loss_x,
    );

    // The bias gradient of the first image only.
    let b = vec![0.0f32; ws[0]];
    let first_image: Vec<f32> = (0..ws[0])
        .map(|o| r.data()[..r.len() / 2].iter().skip(o).step_by(ws[0]).sum())
        .collect();
    let loss_b = &mut |v: &[f32]| {
        weighted_sum(
            &conv2d(&x, &w, Some(&t(&[ws[0]], v.to_vec())), &p).unwrap(),
            &r,
        )
    };
    assert_catches(
        "conv bias, one image",
        &b,
        grads.bias.data(),
        &first_image,
        TOL_LINEAR,
        loss_b,
    );
}

#[test]
fn conv2d_backward_errors() {
    let x = t(&[1, 4, 4, 2], vec![0.0; 32]);
    let w = t(&[3, 2, 3, 3], vec![0.0; 54]);
    let p = Conv2dParams::default();
    let g = t(&[1, 2, 2, 3], vec![0.0; 12]);
    assert!(conv2d_backward(&x, &w, &g, &p).is_ok());
    // grad_output of the wrong shape: batch, spatial, channels, rank.
    for shape in [
        vec![2, 2, 2, 3],
        vec![1, 3, 2, 3],
        vec![1, 2, 3, 3],
        vec![1, 2, 2, 2],
        vec![4, 3],
        vec![1, 2, 2, 3, 1],
    ] {
        let g = Tensor::zeros(shape.clone()).unwrap();
        assert!(is_shape(conv2d_backward(&x, &w, &g, &p)), "{shape:?}");
    }
    // Input and weight as conv2d rejects them.
    let x3 = t(&[4, 4, 2], vec![0.0; 32]);
    assert!(is_shape(conv2d_backward(&x3, &w, &g, &p)));
    let w3 = t(&[3, 2, 9], vec![0.0; 54]);
    assert!(is_shape(conv2d_backward(&x, &w3, &g, &p)));
    let w_bad_cin = t(&[3, 1, 3, 3], vec![0.0; 27]);
    assert!(is_shape(conv2d_backward(&x, &w_bad_cin, &g, &p)));
    for bad in [
        Conv2dParams { groups: 0, ..p },
        Conv2dParams { groups: 2, ..p }, // 3 output channels
        Conv2dParams {
            stride: [0, 1],
            ..p
        },
        Conv2dParams {
            dilation: [1, 0],
            ..p
        },
        Conv2dParams {
            dilation: [2, 2],
            ..p
        }, // span 5 > 4
    ] {
        assert!(is_config(conv2d_backward(&x, &w, &g, &bad)), "{bad:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Arbitrary (mostly inconsistent) shapes and parameters: an `Err` or
    /// gradients of the arguments' shapes, never a panic.
    #[test]
    fn conv2d_backward_never_panics(
        xs in proptest::collection::vec(0..=4usize, 3..=5),
        ws in proptest::collection::vec(0..=3usize, 3..=5),
        gs in proptest::collection::vec(0..=4usize, 3..=5),
        stride in (0..=2usize, 0..=2usize),
        dilation in (0..=2usize, 0..=2usize),
        pad in (0..=2usize, 0..=2usize, 0..=2usize, 0..=2usize),
        groups in 0..=3usize,
    ) {
        let zeros = |s: &Vec<usize>| Tensor::zeros(s.clone()).unwrap();
        let params = Conv2dParams {
            stride: [stride.0, stride.1],
            dilation: [dilation.0, dilation.1],
            padding: Padding { top: pad.0, bottom: pad.1, left: pad.2, right: pad.3 },
            groups,
        };
        let (x, w, g) = (zeros(&xs), zeros(&ws), zeros(&gs));
        if let Ok(grads) = conv2d_backward(&x, &w, &g, &params) {
            prop_assert_eq!(grads.input.shape(), x.shape());
            prop_assert_eq!(grads.weight.shape(), w.shape());
            let y = conv2d(&x, &w, None, &params).unwrap();
            prop_assert_eq!(y.shape(), g.shape());
        }
    }
}

// ---------------------------------------------------------------------------
// Batch norm, training mode
// ---------------------------------------------------------------------------

/// A batch-norm test point: input with per-channel offsets and spreads (so
/// the mean and variance matter), γ of both signs, β, and loss weights.
fn bn_point(shape: &[usize], seed: u64) -> (Tensor, Vec<f32>, Vec<f32>, Tensor) {
    let mut rng = rng(seed);
    let c = *shape.last().unwrap();
    let offsets = uniform(&mut rng, c, -2.0, 2.0);
    let spreads = uniform(&mut rng, c, 0.5, 2.0);
    let len: usize = shape.iter().product();
    let data = (0..len)
        .map(|i| offsets[i % c] + spreads[i % c] * rng.random_range(-1.0f32..1.0))
        .collect();
    let gamma = uniform(&mut rng, c, -1.5, 1.5);
    let beta = uniform(&mut rng, c, -1.0, 1.0);
    let r = rand_tensor(&mut rng, shape, -1.0, 1.0);
    (t(shape, data), gamma, beta, r)
}

const BN_EPS: f32 = 1e-3;

#[test]
fn batch_norm_train_backward_matches_finite_differences() {
    // NHWC shapes with 1 to 18 values per channel, plus a rank-2 [N, C].
    // With n = 2, x̂ = ±u / sqrt(u² + ε) (u half the difference of the two
    // values): a tiny ε makes x̂ = ±1 flat with kinks of width sqrt(ε) that
    // h = 1e-2 cannot resolve, so that case uses ε = 0.1.
    let shapes: [(&[usize], f32); 7] = [
        (&[2, 3, 3, 4], BN_EPS),
        (&[1, 2, 2, 3], BN_EPS),
        (&[3, 1, 2, 5], BN_EPS),
        (&[1, 1, 2, 2], 0.1),    // n = 2
        (&[1, 1, 1, 3], BN_EPS), // n = 1: y = β, every other gradient 0
        (&[2, 2, 1, 1], BN_EPS),
        (&[6, 4], BN_EPS),
    ];
    for (i, &(shape, eps)) in shapes.iter().enumerate() {
        let (x, gamma, beta, r) = bn_point(shape, 200 + i as u64);
        let fwd = batch_norm_train(&x, &gamma, &beta, eps).unwrap();
        let grads = batch_norm_train_backward(&x, &gamma, &fwd.mean, &fwd.var, eps, &r).unwrap();
        let what = format!("batch norm {shape:?}");
        let out = |x: &Tensor, g: &[f32], b: &[f32]| {
            weighted_sum(&batch_norm_train(x, g, b, eps).unwrap().output, &r)
        };
        assert_fd(
            &format!("{what}: input"),
            x.data(),
            grads.input.data(),
            TOL_SMOOTH,
            &mut |v| out(&t(shape, v.to_vec()), &gamma, &beta),
        );
        assert_fd(
            &format!("{what}: gamma"),
            &gamma,
            &grads.gamma,
            TOL_SMOOTH,
            &mut |v| out(&x, v, &beta),
        );
        assert_fd(
            &format!("{what}: beta"),
            &beta,
            &grads.beta,
            TOL_SMOOTH,
            &mut |v| out(&x, &gamma, v),
        );
    }
}

/// The inference-mode formula `γ/σ · g` (no gradient through the batch mean
/// and variance) is the classic bug: finite differences reject it, and
/// also the version that keeps only the path through the mean.
#[test]
fn batch_norm_fd_catches_missing_statistics_paths() {
    let shape = [2, 2, 2, 3];
    let (x, gamma, beta, r) = bn_point(&shape, 7);
    let fwd = batch_norm_train(&x, &gamma, &beta, BN_EPS).unwrap();
    let grads = batch_norm_train_backward(&x, &gamma, &fwd.mean, &fwd.var, BN_EPS, &r).unwrap();
    let c = shape[3];
    let n = (x.len() / c) as f32;
    let inv: Vec<f32> = fwd.var.iter().map(|v| 1.0 / (v + BN_EPS).sqrt()).collect();
    let naive: Vec<f32> = r
        .data()
        .iter()
        .enumerate()
        .map(|(i, g)| gamma[i % c] * inv[i % c] * g)
        .collect();
    let mut mean_g = vec![0.0f32; c];
    for (i, g) in r.data().iter().enumerate() {
        mean_g[i % c] += g / n;
    }
    let mean_only: Vec<f32> = r
        .data()
        .iter()
        .enumerate()
        .map(|(i, g)| gamma[i % c] * inv[i % c] * (g - mean_g[i % c]))
        .collect();
    let loss = &mut |v: &[f32]| {
        weighted_sum(
            &batch_norm_train(&t(&shape, v.to_vec()), &gamma, &beta, BN_EPS)
                .unwrap()
                .output,
            &r,
        )
    };
    assert_catches(
        "bn, inference formula",
        x.data(),
        grads.input.data(),
        &naive,
        TOL_SMOOTH,
        loss,
    );
    assert_catches(
        "bn, mean path only",
        x.data(),
        grads.input.data(),
        &mean_only,
        TOL_SMOOTH,
        loss,
    );
}

#[test]
fn batch_norm_train_statistics_and_output() {
    // Two channels over n = 4: [1, 2, 3, 4] and [10, 10, 10, 14].
    let x = t(
        &[2, 1, 2, 2],
        vec![1.0, 10.0, 2.0, 10.0, 3.0, 10.0, 4.0, 14.0],
    );
    let fwd = batch_norm_train(&x, &[1.0, 2.0], &[0.0, 1.0], 0.0).unwrap();
    assert_eq!(fwd.count, 4);
    assert_eq!(fwd.mean, vec![2.5, 11.0]);
    assert_eq!(fwd.var, vec![1.25, 3.0]); // biased: divided by n = 4
    // Channel 1: (x - 11) / sqrt(3) * 2 + 1.
    let s3 = 3f32.sqrt();
    let expected = [-1.5, -1.0, -0.5, -1.0, 0.5, -1.0, 1.5, 3.0];
    let expected: Vec<f32> = expected
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if i % 2 == 0 {
                v / 1.25f32.sqrt()
            } else {
                v / s3 * 2.0 + 1.0
            }
        })
        .collect();
    for (a, e) in fwd.output.data().iter().zip(&expected) {
        assert!((a - e).abs() < 1e-6, "{a} vs {e}");
    }

    // Same as inference mode with the batch statistics frozen in.
    let (x, gamma, beta, _) = bn_point(&[2, 3, 3, 4], 5);
    let fwd = batch_norm_train(&x, &gamma, &beta, BN_EPS).unwrap();
    let frozen = BatchNorm {
        gamma: gamma.clone(),
        beta: beta.clone(),
        mean: fwd.mean.clone(),
        var: fwd.var.clone(),
        eps: BN_EPS,
    };
    let inference = batch_norm(&x, &frozen).unwrap();
    assert!(fwd.output.max_abs_diff(&inference).unwrap() < 1e-5);
    // And the output has per-channel mean β and variance γ² σ² / (σ² + ε).
    let again = batch_norm_train(&fwd.output, &[1.0; 4], &[0.0; 4], BN_EPS).unwrap();
    for c in 0..4 {
        assert!((again.mean[c] - beta[c]).abs() < 1e-5);
        let v = gamma[c].powi(2) * fwd.var[c] / (fwd.var[c] + BN_EPS);
        assert!((again.var[c] - v).abs() < 1e-5 * (1.0 + v));
    }
}

#[test]
fn batch_norm_update_running_by_hand() {
    // The batch above: means [2.5, 11], biased variances [1.25, 3] over
    // n = 4, so unbiased [5/3, 4].
    let mut bn = BatchNorm {
        gamma: vec![1.0, 1.0],
        beta: vec![0.0, 0.0],
        mean: vec![0.0, 1.0],
        var: vec![1.0, 2.0],
        eps: 1e-5,
    };
    bn.update_running(&[2.5, 11.0], &[1.25, 3.0], 4, 0.1)
        .unwrap();
    let expected_mean = [0.9 * 0.0 + 0.1 * 2.5, 0.9 * 1.0 + 0.1 * 11.0];
    let expected_var = [0.9 * 1.0 + 0.1 * 5.0 / 3.0, 0.9 * 2.0 + 0.1 * 4.0];
    for c in 0..2 {
        assert!((f64::from(bn.mean[c]) - expected_mean[c]).abs() < 1e-6);
        assert!((f64::from(bn.var[c]) - expected_var[c]).abs() < 1e-6);
    }
    // TF's decay d = 0.997 is momentum 0.003.
    let mut tf = BatchNorm::identity(1, 1e-3);
    tf.update_running(&[1.0], &[3.0], 4, 1.0 - 0.997).unwrap();
    assert!((tf.mean[0] - 0.003).abs() < 1e-6);
    assert!((tf.var[0] - (0.997 + 0.003 * 4.0)).abs() < 1e-6);
    // Momentum 0 keeps the running values; momentum 1 replaces them.
    let before = bn.clone();
    bn.update_running(&[5.0, 5.0], &[1.0, 1.0], 2, 0.0).unwrap();
    assert_eq!(bn, before);
    bn.update_running(&[5.0, 6.0], &[1.0, 2.0], 2, 1.0).unwrap();
    assert_eq!(
        (bn.mean.clone(), bn.var.clone()),
        (vec![5.0, 6.0], vec![2.0, 4.0])
    );

    // Errors leave everything unchanged.
    let before = bn.clone();
    assert!(is_config(bn.update_running(&[0.0; 2], &[1.0; 2], 1, 0.1)));
    assert!(is_config(bn.update_running(&[0.0; 2], &[1.0; 2], 0, 0.1)));
    assert!(is_config(bn.update_running(&[0.0; 2], &[1.0; 2], 4, 1.5)));
    assert!(is_config(bn.update_running(&[0.0; 2], &[1.0; 2], 4, -0.1)));
    assert!(is_config(bn.update_running(
        &[0.0; 2],
        &[1.0; 2],
        4,
        f32::NAN
    )));
    assert!(is_shape(bn.update_running(&[0.0; 3], &[1.0; 2], 4, 0.1)));
    assert!(is_shape(bn.update_running(&[0.0; 2], &[1.0; 1], 4, 0.1)));
    let mut broken = bn.clone();
    broken.var.pop();
    assert!(is_shape(
        broken.update_running(&[0.0; 2], &[1.0; 2], 4, 0.1)
    ));
    assert_eq!(bn, before);
}

#[test]
fn batch_norm_train_errors() {
    let x = t(&[1, 2, 2, 3], vec![0.5; 12]);
    let g = vec![1.0; 3];
    let ok = batch_norm_train(&x, &g, &g, 1e-3).unwrap();
    assert!(ok.output.data().iter().all(|&v| v == 1.0)); // constant input: x̂ = 0, y = β
    // Scalar input, no values per channel, wrong parameter lengths.
    let scalar = t(&[], vec![1.0]);
    assert!(is_shape(batch_norm_train(&scalar, &[], &[], 1e-3)));
    let empty = t(&[0, 2, 2, 3], vec![]);
    assert!(is_shape(batch_norm_train(&empty, &g, &g, 1e-3)));
    assert!(is_shape(batch_norm_train(&x, &g[..2], &g, 1e-3)));
    assert!(is_shape(batch_norm_train(&x, &g, &[1.0; 4], 1e-3)));
    // A constant channel with ε = 0 has no scale; a negative or NaN ε.
    assert!(is_config(batch_norm_train(&x, &g, &g, 0.0)));
    assert!(is_config(batch_norm_train(&x, &g, &g, -1e-3)));
    assert!(is_config(batch_norm_train(&x, &g, &g, f32::NAN)));

    let r = t(&[1, 2, 2, 3], vec![1.0; 12]);
    let (m, v) = (&ok.mean, &ok.var);
    assert!(batch_norm_train_backward(&x, &g, m, v, 1e-3, &r).is_ok());
    assert!(is_shape(batch_norm_train_backward(
        &scalar,
        &[],
        &[],
        &[],
        1e-3,
        &scalar
    )));
    assert!(is_shape(batch_norm_train_backward(
        &empty, &g, m, v, 1e-3, &empty
    )));
    assert!(is_shape(batch_norm_train_backward(
        &x,
        &g[..1],
        m,
        v,
        1e-3,
        &r
    )));
    assert!(is_shape(batch_norm_train_backward(
        &x,
        &g,
        &m[..2],
        v,
        1e-3,
        &r
    )));
    assert!(is_shape(batch_norm_train_backward(
        &x, &g, m, &[1.0; 4], 1e-3, &r
    )));
    let r_bad = t(&[1, 2, 3, 2], vec![1.0; 12]);
    assert!(is_shape(batch_norm_train_backward(
        &x, &g, m, v, 1e-3, &r_bad
    )));
    assert!(is_config(batch_norm_train_backward(
        &x, &g, m, &[0.0; 3], 0.0, &r
    )));
    assert!(is_config(batch_norm_train_backward(
        &x, &g, m, &[-1.0; 3], 1e-3, &r
    )));
    assert!(is_config(batch_norm_train_backward(&x, &g, m, v, -1.0, &r)));
}

// ---------------------------------------------------------------------------
// Activations
// ---------------------------------------------------------------------------

/// Values in [-3, 9) at least `2h` away from the kinks at 0 and 6, so that
/// no central difference straddles one.
fn away_from_kinks(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let v: f32 = rng.random_range(-3.0..9.0);
        if v.abs() > 2.0 * H && (v - 6.0).abs() > 2.0 * H {
            out.push(v);
        }
    }
    out
}

#[test]
fn activation_backward_matches_finite_differences() {
    let mut rng = rng(31);
    let shape = [2, 3, 3, 4];
    let x = t(&shape, away_from_kinks(&mut rng, 72));
    let r = rand_tensor(&mut rng, &shape, -1.0, 1.0);
    for act in [Activation::Relu, Activation::Relu6, Activation::Identity] {
        let grad = activation_backward(&x, &r, act).unwrap();
        assert_fd(act.name(), x.data(), grad.data(), TOL_LINEAR, &mut |v| {
            weighted_sum(&activate(&t(&shape, v.to_vec()), act), &r)
        });
    }
    // ReLU6 with ReLU's gradient (no upper cut) is wrong above 6.
    let right = activation_backward(&x, &r, Activation::Relu6).unwrap();
    let wrong = activation_backward(&x, &r, Activation::Relu).unwrap();
    assert_catches(
        "relu6 without the cut at 6",
        x.data(),
        right.data(),
        wrong.data(),
        TOL_LINEAR,
        &mut |v| weighted_sum(&activate(&t(&shape, v.to_vec()), Activation::Relu6), &r),
    );
}

#[test]
fn activation_backward_at_the_kinks_and_errors() {
    let x = t(&[6], vec![-0.0, 0.0, 6.0, 1e-7, 5.9999995, f32::NAN]);
    let g = t(&[6], vec![1.0; 6]);
    let relu = activation_backward(&x, &g, Activation::Relu).unwrap();
    assert_eq!(relu.data(), &[0.0, 0.0, 1.0, 1.0, 1.0, 0.0]);
    let relu6 = activation_backward(&x, &g, Activation::Relu6).unwrap();
    assert_eq!(relu6.data(), &[0.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
    // Identity passes the gradient through untouched, NaN included.
    let g2 = t(&[6], vec![1.0, -2.0, 3.0, f32::NAN, 5.0, 6.0]);
    let id = activation_backward(&x, &g2, Activation::Identity).unwrap();
    assert_eq!(id.data()[..3], g2.data()[..3]);
    assert!(id.data()[3].is_nan());
    // A blocked gradient is 0 even if it was infinite.
    let inf = t(&[6], vec![f32::INFINITY; 6]);
    assert_eq!(
        activation_backward(&x, &inf, Activation::Relu)
            .unwrap()
            .data()[0],
        0.0
    );

    for act in [Activation::Relu, Activation::Relu6, Activation::Identity] {
        assert!(is_shape(activation_backward(
            &x,
            &t(&[5], vec![0.0; 5]),
            act
        )));
        assert!(is_shape(activation_backward(
            &x,
            &t(&[2, 3], vec![0.0; 6]),
            act
        )));
    }
}

// ---------------------------------------------------------------------------
// Global average pooling
// ---------------------------------------------------------------------------

#[test]
fn global_avg_pool_backward_matches_finite_differences() {
    let mut rng = rng(41);
    for shape in [[2, 3, 3, 4], [1, 1, 1, 3], [3, 2, 5, 1], [1, 7, 7, 2]] {
        let x = rand_tensor(&mut rng, &shape, -1.0, 1.0);
        let r = rand_tensor(&mut rng, &[shape[0], shape[3]], -1.0, 1.0);
        let grad = global_avg_pool_backward(&r, &shape).unwrap();
        assert_eq!(grad.shape(), &shape);
        let loss =
            &mut |v: &[f32]| weighted_sum(&global_avg_pool(&t(&shape, v.to_vec())).unwrap(), &r);
        assert_fd(
            &format!("pool {shape:?}"),
            x.data(),
            grad.data(),
            TOL_LINEAR,
            loss,
        );
        if shape[1] * shape[2] > 1 {
            // Forgetting the 1 / (H * W).
            let wrong: Vec<f32> = grad
                .data()
                .iter()
                .map(|g| g * (shape[1] * shape[2]) as f32)
                .collect();
            assert_catches(
                "pool without 1/HW",
                x.data(),
                grad.data(),
                &wrong,
                TOL_LINEAR,
                loss,
            );
        }
    }
}

#[test]
fn global_avg_pool_backward_errors() {
    let g = t(&[2, 3], vec![0.0; 6]);
    assert!(global_avg_pool_backward(&g, &[2, 4, 4, 3]).is_ok());
    for shape in [
        &[2, 4, 4, 4][..], // C differs
        &[1, 4, 4, 3],     // batch differs
        &[2, 0, 4, 3],     // no positions
        &[2, 4, 3],        // rank 3
        &[2, 1, 4, 4, 3],  // rank 5
    ] {
        assert!(is_shape(global_avg_pool_backward(&g, shape)), "{shape:?}");
    }
    assert!(is_shape(global_avg_pool_backward(
        &t(&[6], vec![0.0; 6]),
        &[2, 1, 1, 3]
    )));
    assert!(matches!(
        global_avg_pool_backward(&g, &[2, usize::MAX, 2, 3]),
        Err(Error::TooLarge(_))
    ));
    assert!(matches!(
        global_avg_pool_backward(&g, &[2, 1 << 40, 1 << 20, 3]),
        Err(Error::TooLarge(_))
    ));
}

// ---------------------------------------------------------------------------
// Fully connected
// ---------------------------------------------------------------------------

#[test]
fn fully_connected_backward_matches_finite_differences() {
    let mut rng = rng(51);
    for (batch, n_in, n_out) in [(3, 5, 4), (1, 1, 1), (2, 7, 3), (4, 2, 6)] {
        let x = rand_tensor(&mut rng, &[batch, n_in], -1.0, 1.0);
        let w = rand_tensor(&mut rng, &[n_out, n_in], -1.0, 1.0);
        let b = rand_tensor(&mut rng, &[n_out], -1.0, 1.0);
        let r = rand_tensor(&mut rng, &[batch, n_out], -1.0, 1.0);
        let grads = fully_connected_backward(&x, &w, &r).unwrap();
        let what = format!("fc [{batch}, {n_in}] -> {n_out}");
        assert_fd(
            &format!("{what}: input"),
            x.data(),
            grads.input.data(),
            TOL_LINEAR,
            &mut |v| {
                weighted_sum(
                    &fully_connected(&t(x.shape(), v.to_vec()), &w, Some(&b)).unwrap(),
                    &r,
                )
            },
        );
        assert_fd(
            &format!("{what}: weight"),
            w.data(),
            grads.weight.data(),
            TOL_LINEAR,
            &mut |v| {
                weighted_sum(
                    &fully_connected(&x, &t(w.shape(), v.to_vec()), Some(&b)).unwrap(),
                    &r,
                )
            },
        );
        assert_fd(
            &format!("{what}: bias"),
            b.data(),
            grads.bias.data(),
            TOL_LINEAR,
            &mut |v| {
                weighted_sum(
                    &fully_connected(&x, &w, Some(&t(b.shape(), v.to_vec()))).unwrap(),
                    &r,
                )
            },
        );
    }
}

/// `∂L/∂W` computed as `xᵀ · g` (`[in, out]`) and stored as if it were
/// `[out, in]`: finite differences reject it.
#[test]
fn fully_connected_fd_catches_transposed_weight_gradient() {
    let mut rng = rng(53);
    let (batch, n_in, n_out) = (3, 4, 5);
    let x = rand_tensor(&mut rng, &[batch, n_in], -1.0, 1.0);
    let w = rand_tensor(&mut rng, &[n_out, n_in], -1.0, 1.0);
    let r = rand_tensor(&mut rng, &[batch, n_out], -1.0, 1.0);
    let grads = fully_connected_backward(&x, &w, &r).unwrap();
    let gw = grads.weight.data();
    let transposed: Vec<f32> = (0..n_in * n_out)
        .map(|k| gw[(k % n_out) * n_in + k / n_out])
        .collect();
    assert_catches(
        "fc weight, transposed",
        w.data(),
        gw,
        &transposed,
        TOL_LINEAR,
        &mut |v| {
            weighted_sum(
                &fully_connected(&x, &t(w.shape(), v.to_vec()), None).unwrap(),
                &r,
            )
        },
    );
}

#[test]
fn fully_connected_backward_errors() {
    let x = t(&[2, 3], vec![0.0; 6]);
    let w = t(&[4, 3], vec![0.0; 12]);
    let g = t(&[2, 4], vec![0.0; 8]);
    assert!(fully_connected_backward(&x, &w, &g).is_ok());
    assert!(is_shape(fully_connected_backward(
        &t(&[6], vec![0.0; 6]),
        &w,
        &g
    )));
    assert!(is_shape(fully_connected_backward(
        &x,
        &t(&[3, 4], vec![0.0; 12]),
        &g
    )));
    assert!(is_shape(fully_connected_backward(
        &x,
        &t(&[12], vec![0.0; 12]),
        &g
    )));
    for shape in [[2, 3], [1, 4], [4, 2]] {
        let g = Tensor::zeros(shape.to_vec()).unwrap();
        assert!(is_shape(fully_connected_backward(&x, &w, &g)), "{shape:?}");
    }
    assert!(is_shape(fully_connected_backward(
        &x,
        &w,
        &t(&[8], vec![0.0; 8])
    )));
}

// ---------------------------------------------------------------------------
// Softmax cross-entropy
// ---------------------------------------------------------------------------

#[test]
fn softmax_cross_entropy_matches_finite_differences() {
    let mut rng = rng(61);
    for (batch, classes) in [(3, 5), (1, 2), (4, 10), (2, 1)] {
        let x = rand_tensor(&mut rng, &[batch, classes], -3.0, 3.0);
        let labels: Vec<usize> = (0..batch).map(|_| rng.random_range(0..classes)).collect();
        for eps in [0.0, 0.1] {
            let (_, grad) = softmax_cross_entropy(&x, &labels, eps).unwrap();
            // Each row of p - t sums to 0.
            for row in grad.data().chunks(classes) {
                assert!(row.iter().sum::<f32>().abs() < 1e-6);
            }
            let loss = &mut |v: &[f32]| {
                f64::from(
                    softmax_cross_entropy(&t(x.shape(), v.to_vec()), &labels, eps)
                        .unwrap()
                        .0,
                )
            };
            let what = format!("cross-entropy [{batch}, {classes}] ε = {eps}");
            assert_fd(&what, x.data(), grad.data(), TOL_SMOOTH, loss);
            if batch > 1 && classes > 1 {
                // The gradient of the summed loss, not the mean.
                let wrong: Vec<f32> = grad.data().iter().map(|g| g * batch as f32).collect();
                assert_catches(
                    &format!("{what}, no 1/N"),
                    x.data(),
                    grad.data(),
                    &wrong,
                    TOL_SMOOTH,
                    loss,
                );
            }
            if eps > 0.0 && classes > 1 {
                // Label smoothing forgotten in the gradient.
                let (_, plain) = softmax_cross_entropy(&x, &labels, 0.0).unwrap();
                assert_catches(
                    &format!("{what}, no smoothing"),
                    x.data(),
                    grad.data(),
                    plain.data(),
                    TOL_SMOOTH,
                    loss,
                );
            }
        }
    }
}

#[test]
fn softmax_cross_entropy_by_hand() {
    // Row 0: logits ln 1, ln 2, ln 3, so p = [1/6, 2/6, 3/6]; label 2.
    // Row 1: logits 0, 0, 0, so p = 1/3 each; label 0.
    let x = t(&[2, 3], vec![0.0, 2f32.ln(), 3f32.ln(), 0.0, 0.0, 0.0]);
    let labels = [2, 0];
    let p = [[1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0], [1.0 / 3.0; 3]];

    let (loss, grad) = softmax_cross_entropy(&x, &labels, 0.0).unwrap();
    let expected = (-(0.5f64).ln() - (1.0f64 / 3.0).ln()) / 2.0;
    assert!(
        (f64::from(loss) - expected).abs() < 1e-6,
        "{loss} vs {expected}"
    );
    let onehot = [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]];
    for n in 0..2 {
        for k in 0..3 {
            let e = (p[n][k] - onehot[n][k]) / 2.0;
            assert!((f64::from(grad.data()[n * 3 + k]) - e).abs() < 1e-7);
        }
    }

    // ε = 0.3, K = 3: targets 0.7 · onehot + 0.1.
    let (loss, grad) = softmax_cross_entropy(&x, &labels, 0.3).unwrap();
    let target = [[0.1, 0.1, 0.8], [0.8, 0.1, 0.1]];
    let expected: f64 = (0..2)
        .map(|n| -(0..3).map(|k| target[n][k] * f64::ln(p[n][k])).sum::<f64>())
        .sum::<f64>()
        / 2.0;
    assert!(
        (f64::from(loss) - expected).abs() < 1e-6,
        "{loss} vs {expected}"
    );
    for n in 0..2 {
        for k in 0..3 {
            let e = (p[n][k] - target[n][k]) / 2.0;
            assert!((f64::from(grad.data()[n * 3 + k]) - e).abs() < 1e-7);
        }
    }

    // ε = 1: the target is uniform whatever the label.
    let (_, grad) = softmax_cross_entropy(&x, &labels, 1.0).unwrap();
    assert!(grad.data()[3..].iter().all(|g| g.abs() < 1e-7));
}

#[test]
fn softmax_cross_entropy_is_stable() {
    // Huge logits: log-sum-exp keeps the loss finite and exact.
    let x = t(&[2, 3], vec![1e4, 0.0, -1e4, 50.0, 50.0, 50.0]);
    let (loss, grad) = softmax_cross_entropy(&x, &[2, 1], 0.0).unwrap();
    let expected = (2e4 + 3f64.ln()) / 2.0;
    assert!((f64::from(loss) - expected).abs() < 1e-2, "{loss}");
    assert!(grad.data().iter().all(|g| g.is_finite()));
    assert_eq!(grad.data()[..3], [0.5, 0.0, -0.5]);
    // A -inf logit away from the label is probability 0, not NaN.
    let x = t(&[1, 3], vec![0.0, f32::NEG_INFINITY, 0.0]);
    let (loss, grad) = softmax_cross_entropy(&x, &[0], 0.0).unwrap();
    assert!((loss - 2f32.ln()).abs() < 1e-6);
    assert_eq!(grad.data(), &[-0.5, 0.0, 0.5]);
}

#[test]
fn softmax_cross_entropy_errors() {
    let x = t(&[2, 3], vec![0.0; 6]);
    assert!(softmax_cross_entropy(&x, &[0, 2], 0.1).is_ok());
    // Labels out of range: a clear message naming the label and row.
    let err = softmax_cross_entropy(&x, &[0, 3], 0.0).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)));
    let msg = err.to_string();
    assert!(
        msg.contains("label 3") && msg.contains("row 1") && msg.contains("3 classes"),
        "{msg}"
    );
    assert!(is_config(softmax_cross_entropy(&x, &[usize::MAX, 0], 0.0)));
    // Label count, ranks, empty batch, no classes.
    assert!(is_shape(softmax_cross_entropy(&x, &[0], 0.0)));
    assert!(is_shape(softmax_cross_entropy(&x, &[0, 0, 0], 0.0)));
    assert!(is_shape(softmax_cross_entropy(
        &t(&[6], vec![0.0; 6]),
        &[0],
        0.0
    )));
    assert!(is_shape(softmax_cross_entropy(
        &t(&[1, 2, 3], vec![0.0; 6]),
        &[0],
        0.0
    )));
    assert!(is_shape(softmax_cross_entropy(
        &t(&[0, 3], vec![]),
        &[],
        0.0
    )));
    assert!(is_shape(softmax_cross_entropy(
        &t(&[2, 0], vec![]),
        &[0, 0],
        0.0
    )));
    // Smoothing outside [0, 1].
    for eps in [-0.1, 1.5, f32::NAN, f32::INFINITY] {
        assert!(is_config(softmax_cross_entropy(&x, &[0, 1], eps)), "{eps}");
    }
}

// ---------------------------------------------------------------------------
// Dropout
// ---------------------------------------------------------------------------

#[test]
fn dropout_rate_zero_is_identity() {
    let mut r = rng(71);
    let x = rand_tensor(&mut r, &[2, 3, 3, 4], -1.0, 1.0);
    let (y, mask) = dropout(&x, 0.0, &mut r).unwrap();
    assert_eq!(y, x);
    assert!(mask.iter().all(|&m| m == 1.0));
    let g = rand_tensor(&mut r, &[2, 3, 3, 4], -1.0, 1.0);
    assert_eq!(dropout_backward(&g, &mask).unwrap(), g);
}

#[test]
fn dropout_mask_values_and_kept_fraction() {
    let x = t(&[200_000], vec![1.0; 200_000]);
    for rate in [0.1f32, 0.5, 0.8] {
        let (y, mask) = dropout(&x, rate, &mut rng(72)).unwrap();
        let scale = 1.0 / (1.0 - rate);
        assert!(mask.iter().all(|&m| m == 0.0 || m == scale), "rate {rate}");
        assert_eq!(y.data(), &mask[..]);
        // Binomial: the standard deviation of the kept fraction is at most
        // sqrt(0.25 / 200000) ≈ 0.0011; 0.006 is over 5 of them.
        let kept = mask.iter().filter(|&&m| m > 0.0).count() as f64 / mask.len() as f64;
        assert!(
            (kept - f64::from(1.0 - rate)).abs() < 0.006,
            "rate {rate}: kept {kept}"
        );
        // Inverted dropout preserves the mean.
        let mean = y.data().iter().map(|&v| f64::from(v)).sum::<f64>() / y.len() as f64;
        assert!((mean - 1.0).abs() < 0.03, "rate {rate}: mean {mean}");
    }
    // The same seed drops the same positions, whatever the values.
    let a = dropout(&x, 0.5, &mut rng(9)).unwrap().1;
    let b = dropout(&t(&[200_000], vec![-3.0; 200_000]), 0.5, &mut rng(9))
        .unwrap()
        .1;
    assert_eq!(a, b);
}

#[test]
fn dropout_backward_matches_finite_differences() {
    let mut r = rng(73);
    let shape = [2, 3, 3, 4];
    let x = rand_tensor(&mut r, &shape, -1.0, 1.0);
    let weights = rand_tensor(&mut r, &shape, -1.0, 1.0);
    let (_, mask) = dropout(&x, 0.3, &mut rng(74)).unwrap();
    let grad = dropout_backward(&weights, &mask).unwrap();
    // backward = grad · mask, exactly.
    for ((&d, &g), &m) in grad.data().iter().zip(weights.data()).zip(&mask) {
        assert_eq!(d, g * m);
    }
    // Re-seeding draws the same mask, so the forward pass is a function of x.
    assert_fd("dropout", x.data(), grad.data(), TOL_LINEAR, &mut |v| {
        let (y, _) = dropout(&t(&shape, v.to_vec()), 0.3, &mut rng(74)).unwrap();
        weighted_sum(&y, &weights)
    });
}

#[test]
fn dropout_errors() {
    let x = t(&[4], vec![1.0; 4]);
    for rate in [1.0, 1.5, -0.1, f32::NAN] {
        assert!(is_config(dropout(&x, rate, &mut rng(1))), "{rate}");
    }
    let g = t(&[2, 2], vec![1.0; 4]);
    assert!(dropout_backward(&g, &[1.0; 4]).is_ok());
    assert!(is_shape(dropout_backward(&g, &[1.0; 3])));
    assert!(is_shape(dropout_backward(&g, &[1.0; 5])));
}

// ---------------------------------------------------------------------------
// The whole chain
// ---------------------------------------------------------------------------

/// A MobileNet in miniature, trained in one step: stem conv 3x3/2 (TF
/// 'SAME') -> BN -> ReLU6 -> depthwise 3x3 -> BN -> ReLU6 -> pointwise ->
/// BN -> ReLU -> global pool -> dropout -> FC -> softmax cross-entropy with
/// label smoothing 0.1.
struct Mini {
    x: Tensor,
    stem: Tensor,
    dw: Tensor,
    pw: Tensor,
    fc: Tensor,
    fc_bias: Tensor,
    gammas: [Vec<f32>; 3],
    betas: [Vec<f32>; 3],
    labels: Vec<usize>,
}

const MINI_DROP: f32 = 0.2;
const MINI_SEED: u64 = 99;

impl Mini {
    fn new() -> Mini {
        let mut r = rng(81);
        let mut params = |c: usize| (uniform(&mut r, c, 0.5, 1.5), uniform(&mut r, c, -0.5, 0.5));
        let (g0, b0) = params(4);
        let (g1, b1) = params(4);
        let (g2, b2) = params(6);
        let mut r = rng(82);
        Mini {
            x: rand_tensor(&mut r, &[2, 8, 8, 3], -1.0, 1.0),
            stem: rand_tensor(&mut r, &[4, 3, 3, 3], -0.5, 0.5),
            dw: rand_tensor(&mut r, &[4, 1, 3, 3], -0.5, 0.5),
            pw: rand_tensor(&mut r, &[6, 4, 1, 1], -0.5, 0.5),
            fc: rand_tensor(&mut r, &[5, 6], -1.0, 1.0),
            fc_bias: rand_tensor(&mut r, &[5], -0.1, 0.1),
            gammas: [g0, g1, g2],
            betas: [b0, b1, b2],
            labels: vec![3, 1],
        }
    }

    fn convs(&self) -> [(&Tensor, Conv2dParams, Activation); 3] {
        let stem = Conv2dParams {
            stride: [2, 2],
            padding: PaddingMode::TfSame.resolve(8, 8, [3, 3], [2, 2], [1, 1]),
            ..Default::default()
        };
        let dw = Conv2dParams {
            padding: Padding::symmetric(1),
            groups: 4,
            ..Default::default()
        };
        [
            (&self.stem, stem, Activation::Relu6),
            (&self.dw, dw, Activation::Relu6),
            (&self.pw, Conv2dParams::default(), Activation::Relu),
        ]
    }

    /// The tensors [`Mini::backward`] differentiates, by its output index.
    fn tensor_mut(&mut self, which: usize) -> &mut Tensor {
        match which {
            0 => &mut self.x,
            1 => &mut self.stem,
            2 => &mut self.dw,
            3 => &mut self.pw,
            _ => &mut self.fc,
        }
    }

    /// The loss, and which side of its kinks every pre-activation is on
    /// (to tell when a finite difference straddled one).
    fn loss(&self) -> (f64, Vec<f32>) {
        let mut h = self.x.clone();
        let mut sides = Vec::new();
        for (i, (w, p, act)) in self.convs().into_iter().enumerate() {
            let z = conv2d(&h, w, None, &p).unwrap();
            let bn = batch_norm_train(&z, &self.gammas[i], &self.betas[i], BN_EPS).unwrap();
            sides.extend(bn.output.data().iter().map(|&v| act.derivative(v)));
            h = activate(&bn.output, act);
        }
        let pooled = global_avg_pool(&h).unwrap();
        let (dropped, _) = dropout(&pooled, MINI_DROP, &mut rng(MINI_SEED)).unwrap();
        let logits = fully_connected(&dropped, &self.fc, Some(&self.fc_bias)).unwrap();
        let (loss, _) = softmax_cross_entropy(&logits, &self.labels, 0.1).unwrap();
        (f64::from(loss), sides)
    }

    /// The gradients of the loss with respect to the input, the three conv
    /// weights and the FC weight, by chaining the backward passes.
    fn backward(&self) -> [Tensor; 5] {
        let mut h = self.x.clone();
        let mut tape = Vec::new();
        for (i, (w, p, act)) in self.convs().into_iter().enumerate() {
            let z = conv2d(&h, w, None, &p).unwrap();
            let bn = batch_norm_train(&z, &self.gammas[i], &self.betas[i], BN_EPS).unwrap();
            let next = activate(&bn.output, act);
            tape.push((h, z, bn));
            h = next;
        }
        let pooled = global_avg_pool(&h).unwrap();
        let (dropped, mask) = dropout(&pooled, MINI_DROP, &mut rng(MINI_SEED)).unwrap();
        let logits = fully_connected(&dropped, &self.fc, Some(&self.fc_bias)).unwrap();
        let (_, g) = softmax_cross_entropy(&logits, &self.labels, 0.1).unwrap();
        let fc = fully_connected_backward(&dropped, &self.fc, &g).unwrap();
        let g = dropout_backward(&fc.input, &mask).unwrap();
        let mut g = global_avg_pool_backward(&g, h.shape()).unwrap();
        let mut weight_grads = Vec::new();
        for (i, ((w, p, act), (input, z, bn))) in
            self.convs().into_iter().zip(tape).enumerate().rev()
        {
            let g_bn = activation_backward(&bn.output, &g, act).unwrap();
            let bn_grads =
                batch_norm_train_backward(&z, &self.gammas[i], &bn.mean, &bn.var, BN_EPS, &g_bn)
                    .unwrap();
            let conv = conv2d_backward(&input, w, &bn_grads.input, &p).unwrap();
            weight_grads.push(conv.weight);
            g = conv.input;
        }
        let [pw, dw, stem] = <[Tensor; 3]>::try_from(weight_grads).unwrap();
        [g, stem, dw, pw, fc.weight]
    }
}

#[test]
fn chained_backward_matches_finite_differences_of_the_whole_network() {
    let mini = Mini::new();
    let grads = mini.backward();
    let (_, base_sides) = mini.loss();
    for (which, grad) in grads.iter().enumerate() {
        let mut checked = 0;
        let mut m = Mini::new();
        let values = m.tensor_mut(which).data().to_vec();
        let mut sample = rng(83 + which as u64);
        let indices = pick(values.len(), 24, &mut sample);
        let scale = grad.data().iter().fold(1e-2f32, |a, g| a.max(g.abs()));
        for i in indices {
            let mut eval = |v: f32| {
                m.tensor_mut(which).data_mut()[i] = v;
                m.loss()
            };
            let (up, up_sides) = eval(values[i] + H);
            let (down, down_sides) = eval(values[i] - H);
            m.tensor_mut(which).data_mut()[i] = values[i];
            if up_sides != base_sides || down_sides != base_sides {
                continue; // a pre-activation crossed a kink: no derivative there
            }
            let step = f64::from(values[i] + H) - f64::from(values[i] - H);
            let numeric = (up - down) / step;
            let err = (f64::from(grad.data()[i]) - numeric).abs() / f64::from(scale);
            assert!(
                err <= TOL_SMOOTH,
                "tensor {which} element {i}: analytic {}, numeric {numeric}, error {err:.3e}",
                grad.data()[i]
            );
            checked += 1;
        }
        // About 1 in 5 differences straddles a kink (mostly for the weights
        // feeding the ReLU6 layers); at least half must remain.
        assert!(
            checked >= 12,
            "tensor {which}: only {checked} of 24 elements checked"
        );
    }
}
