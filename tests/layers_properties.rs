//! Property tests for the plain reference layers in `mobilenet::layers`.
//!
//! These layers are the oracles for every optimized kernel, so they are
//! checked here against independent formulations: a naive convolution
//! written separately below, per-channel / per-group decompositions, a
//! matrix product for pointwise convolutions, hand-computed tiny cases, and
//! the algebraic properties of batch norm, pooling and softmax. Bad inputs
//! must give `Err`, never a panic.

use mobilenet::layers::{
    Activation, BatchNorm, Conv2dParams, Padding, PaddingMode, activate, batch_norm,
    conv_output_size, conv2d, fully_connected, global_avg_pool, relu, relu6, softmax,
};
use mobilenet::{Error, Tensor};
use proptest::collection::vec;
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn t(shape: &[usize], data: Vec<f32>) -> Tensor {
    Tensor::new(shape.to_vec(), data).expect("test tensor shape")
}

/// Asserts two tensors have the same shape and agree to within
/// `tol * (1 + |expected|)` element-wise.
fn assert_close(actual: &Tensor, expected: &Tensor, tol: f32) -> Result<(), TestCaseError> {
    prop_assert_eq!(actual.shape(), expected.shape());
    for (i, (&a, &e)) in actual.data().iter().zip(expected.data()).enumerate() {
        prop_assert!(
            (a - e).abs() <= tol * (1.0 + e.abs()),
            "element {} differs: got {}, expected {} (shape {:?})",
            i,
            a,
            e,
            actual.shape()
        );
    }
    Ok(())
}

/// Channels `start..start + len` of an NHWC tensor.
fn channel_slice(x: &Tensor, start: usize, len: usize) -> Tensor {
    let [n, h, w, c] = x.dims4("slice").unwrap();
    let mut data = Vec::with_capacity(n * h * w * len);
    for pixel in x.data().chunks_exact(c) {
        data.extend_from_slice(&pixel[start..start + len]);
    }
    t(&[n, h, w, len], data)
}

/// Outer rows `start..start + len` of a tensor (e.g. output channels of an
/// OIHW weight, or entries of a bias).
fn outer_slice(x: &Tensor, start: usize, len: usize) -> Tensor {
    let inner: usize = x.shape()[1..].iter().product();
    let mut shape = x.shape().to_vec();
    shape[0] = len;
    t(
        &shape,
        x.data()[start * inner..(start + len) * inner].to_vec(),
    )
}

/// Concatenates NHWC tensors with equal N, H, W along channels.
fn concat_channels(parts: &[Tensor]) -> Tensor {
    let [n, h, w, _] = parts[0].dims4("concat").unwrap();
    let widths: Vec<usize> = parts.iter().map(|p| p.shape()[3]).collect();
    let total: usize = widths.iter().sum();
    let mut data = Vec::with_capacity(n * h * w * total);
    for pixel in 0..n * h * w {
        for (p, &cw) in parts.iter().zip(&widths) {
            data.extend_from_slice(&p.data()[pixel * cw..(pixel + 1) * cw]);
        }
    }
    t(&[n, h, w, total], data)
}

/// An independent, deliberately naive convolution: for each output pixel
/// and channel, walk every tap, compute the signed input coordinate and skip
/// it if it falls outside the image. Written from the textbook formula, not
/// from the library's code.
fn naive_conv(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, p: &Conv2dParams) -> Tensor {
    let [n, h, wd, cin] = x.dims4("x").unwrap();
    let (cout, cin_g, kh, kw) = (w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]);
    let g = p.groups;
    let cout_g = cout / g;
    let eff_h = (kh - 1) * p.dilation[0] + 1;
    let eff_w = (kw - 1) * p.dilation[1] + 1;
    let ho = (h + p.padding.top + p.padding.bottom - eff_h) / p.stride[0] + 1;
    let wo = (wd + p.padding.left + p.padding.right - eff_w) / p.stride[1] + 1;
    let xat = |b: usize, y: i64, xx: i64, c: usize| -> f64 {
        if y < 0 || xx < 0 || y >= h as i64 || xx >= wd as i64 {
            0.0
        } else {
            x.data()[((b * h + y as usize) * wd + xx as usize) * cin + c] as f64
        }
    };
    let wat = |o: usize, c: usize, i: usize, j: usize| -> f64 {
        w.data()[((o * cin_g + c) * kh + i) * kw + j] as f64
    };
    let mut out = vec![0.0f32; n * ho * wo * cout];
    for b in 0..n {
        for oy in 0..ho {
            for ox in 0..wo {
                for o in 0..cout {
                    let grp = o / cout_g;
                    let mut s = bias.map_or(0.0, |bb| bb.data()[o] as f64);
                    for i in 0..kh {
                        for j in 0..kw {
                            let y = (oy * p.stride[0] + i * p.dilation[0]) as i64
                                - p.padding.top as i64;
                            let xx = (ox * p.stride[1] + j * p.dilation[1]) as i64
                                - p.padding.left as i64;
                            for c in 0..cin_g {
                                s += xat(b, y, xx, grp * cin_g + c) * wat(o, c, i, j);
                            }
                        }
                    }
                    out[((b * ho + oy) * wo + ox) * cout + o] = s as f32;
                }
            }
        }
    }
    t(&[n, ho, wo, cout], out)
}

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

/// Spatial geometry of a convolution: batch, input size, kernel, stride,
/// dilation and concrete padding, always such that the kernel fits.
#[derive(Clone, Debug)]
struct Geometry {
    n: usize,
    h: usize,
    w: usize,
    k: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    padding: Padding,
}

#[derive(Clone, Copy, Debug)]
enum PadChoice {
    Explicit(Padding),
    Mode(PaddingMode),
}

fn pad_choice() -> impl Strategy<Value = PadChoice> {
    prop_oneof![
        (0..=2usize, 0..=2usize, 0..=2usize, 0..=2usize).prop_map(|(top, bottom, left, right)| {
            PadChoice::Explicit(Padding {
                top,
                bottom,
                left,
                right,
            })
        }),
        Just(PadChoice::Mode(PaddingMode::Symmetric)),
        Just(PadChoice::Mode(PaddingMode::TfSame)),
    ]
}

/// Geometry with kernels `1..=max_k`.
fn geometry(max_k: usize) -> impl Strategy<Value = Geometry> {
    (
        1..=3usize,
        1..=7usize,
        1..=7usize,
        (1..=max_k, 1..=max_k),
        (1..=3usize, 1..=3usize),
        (1..=2usize, 1..=2usize),
        pad_choice(),
    )
        .prop_map(|(n, h0, w0, (kh, kw), (sh, sw), (dh, dw), pad)| {
            let eff_h = (kh - 1) * dh + 1;
            let eff_w = (kw - 1) * dw + 1;
            let (h, w, padding) = match pad {
                PadChoice::Explicit(p) => (
                    // Grow the image just enough for the kernel to fit.
                    h0.max(eff_h.saturating_sub(p.top + p.bottom)),
                    w0.max(eff_w.saturating_sub(p.left + p.right)),
                    p,
                ),
                PadChoice::Mode(mode) => {
                    let (h, w) = (h0.max(eff_h), w0.max(eff_w));
                    (h, w, mode.resolve(h, w, [kh, kw], [sh, sw], [dh, dw]))
                }
            };
            Geometry {
                n,
                h,
                w,
                k: [kh, kw],
                stride: [sh, sw],
                dilation: [dh, dw],
                padding,
            }
        })
}

fn values(len: usize) -> impl Strategy<Value = Vec<f32>> {
    vec(-1.0f32..1.0, len)
}

/// A full convolution problem: input, weight, optional bias, parameters.
#[derive(Clone, Debug)]
struct ConvCase {
    x: Tensor,
    w: Tensor,
    b: Option<Tensor>,
    p: Conv2dParams,
}

/// `groups` from `groups`, channels per group from the given ranges.
fn conv_case(
    max_k: usize,
    groups: std::ops::RangeInclusive<usize>,
    cin_per_group: std::ops::RangeInclusive<usize>,
    cout_per_group: std::ops::RangeInclusive<usize>,
) -> impl Strategy<Value = ConvCase> {
    (geometry(max_k), groups, cin_per_group, cout_per_group)
        .prop_flat_map(|(g, groups, cig, cog)| {
            let cin = groups * cig;
            let cout = groups * cog;
            let x_len = g.n * g.h * g.w * cin;
            let w_len = cout * cig * g.k[0] * g.k[1];
            (
                Just((g, groups, cig, cout)),
                values(x_len),
                values(w_len),
                prop::option::of(values(cout)),
            )
        })
        .prop_map(|((g, groups, cig, cout), xd, wd, bd)| {
            let cin = groups * cig;
            ConvCase {
                x: t(&[g.n, g.h, g.w, cin], xd),
                w: t(&[cout, cig, g.k[0], g.k[1]], wd),
                b: bd.map(|b| t(&[cout], b)),
                p: Conv2dParams {
                    stride: g.stride,
                    dilation: g.dilation,
                    padding: g.padding,
                    groups,
                },
            }
        })
}

const TOL: f32 = 1e-5;

// ---------------------------------------------------------------------------
// Convolution properties
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// conv2d equals the naive textbook formula for random standard and
    /// grouped convolutions, all strides, dilations and paddings.
    #[test]
    fn conv2d_matches_naive_formula(case in conv_case(5, 1..=3, 1..=3, 1..=3)) {
        let got = conv2d(&case.x, &case.w, case.b.as_ref(), &case.p).unwrap();
        let want = naive_conv(&case.x, &case.w, case.b.as_ref(), &case.p);
        assert_close(&got, &want, TOL)?;
    }

    /// Output spatial size is conv_output_size on each axis.
    #[test]
    fn conv2d_output_shape(case in conv_case(5, 1..=2, 1..=2, 1..=2)) {
        let y = conv2d(&case.x, &case.w, case.b.as_ref(), &case.p).unwrap();
        let [n, h, w, _] = case.x.dims4("x").unwrap();
        let p = case.p;
        let ho = conv_output_size(h, case.w.shape()[2], p.stride[0], p.dilation[0], p.padding.top, p.padding.bottom).unwrap();
        let wo = conv_output_size(w, case.w.shape()[3], p.stride[1], p.dilation[1], p.padding.left, p.padding.right).unwrap();
        prop_assert_eq!(y.shape(), &[n, ho, wo, case.w.shape()[0]]);
    }

    /// Depthwise (groups == C, weight (C, 1, K, K)) equals one single-channel
    /// convolution per channel.
    #[test]
    fn depthwise_equals_per_channel_convs(case in conv_case(5, 1..=5, 1..=1, 1..=1)) {
        let c = case.x.shape()[3];
        prop_assert_eq!(case.p.groups, c);
        let got = conv2d(&case.x, &case.w, case.b.as_ref(), &case.p).unwrap();
        let single = Conv2dParams { groups: 1, ..case.p };
        let per_channel: Vec<Tensor> = (0..c)
            .map(|ch| {
                let x = channel_slice(&case.x, ch, 1);
                let w = outer_slice(&case.w, ch, 1);
                let b = case.b.as_ref().map(|b| outer_slice(b, ch, 1));
                conv2d(&x, &w, b.as_ref(), &single).unwrap()
            })
            .collect();
        // Bit-identical: same taps, same order, same accumulator.
        prop_assert_eq!(got, concat_channels(&per_channel));
    }

    /// Grouped convolution equals the concatenation of independent
    /// convolutions on each group's channel slice.
    #[test]
    fn grouped_equals_concat_of_group_convs(case in conv_case(4, 1..=4, 1..=3, 1..=3)) {
        let g = case.p.groups;
        let cig = case.x.shape()[3] / g;
        let cog = case.w.shape()[0] / g;
        let got = conv2d(&case.x, &case.w, case.b.as_ref(), &case.p).unwrap();
        let single = Conv2dParams { groups: 1, ..case.p };
        let parts: Vec<Tensor> = (0..g)
            .map(|gi| {
                let x = channel_slice(&case.x, gi * cig, cig);
                let w = outer_slice(&case.w, gi * cog, cog);
                let b = case.b.as_ref().map(|b| outer_slice(b, gi * cog, cog));
                conv2d(&x, &w, b.as_ref(), &single).unwrap()
            })
            .collect();
        prop_assert_eq!(got, concat_channels(&parts));
    }

    /// A pointwise (1x1) convolution is the matrix product
    /// [N*H*W, C_in] x [C_out, C_in]^T (+ bias), computed here by hand and
    /// also through fully_connected.
    #[test]
    fn pointwise_equals_matrix_product(
        (n, h, w, cin, cout, has_bias) in (1..=3usize, 1..=6usize, 1..=6usize, 1..=8usize, 1..=8usize, any::<bool>()),
        seed in vec(-1.0f32..1.0, 3 * 36 * 8 + 64 + 8),
    ) {
        let rows = n * h * w;
        let x = t(&[n, h, w, cin], seed[..rows * cin].to_vec());
        let wt = t(&[cout, cin, 1, 1], seed[rows * cin..rows * cin + cout * cin].to_vec());
        let b = has_bias.then(|| t(&[cout], seed[seed.len() - cout..].to_vec()));
        let got = conv2d(&x, &wt, b.as_ref(), &Conv2dParams::default()).unwrap();

        let mut want = vec![0.0f32; rows * cout];
        for r in 0..rows {
            for o in 0..cout {
                let mut s = b.as_ref().map_or(0.0f64, |b| b.data()[o] as f64);
                for c in 0..cin {
                    s += x.data()[r * cin + c] as f64 * wt.data()[o * cin + c] as f64;
                }
                want[r * cout + o] = s as f32;
            }
        }
        assert_close(&got, &t(&[n, h, w, cout], want), TOL)?;

        let fc = fully_connected(
            &x.clone().reshape(vec![rows, cin]).unwrap(),
            &wt.clone().reshape(vec![cout, cin]).unwrap(),
            b.as_ref(),
        ).unwrap();
        prop_assert_eq!(got.into_data(), fc.into_data());
    }

    /// Depthwise-separable convolution (depthwise then pointwise, both via
    /// conv2d) equals (a) a hand loop of the two-stage formula and (b) one
    /// standard convolution with the composed weights
    /// W[o, c, i, j] = pw[o, c] * dw[c, i, j] and bias pw_b + pw · dw_b.
    #[test]
    fn separable_equals_two_stage_formula_and_composed_conv(
        dw_case in conv_case(3, 1..=4, 1..=1, 1..=1),
        cout in 1..=5usize,
        pw_seed in vec(-1.0f32..1.0, 4 * 5 + 5),
    ) {
        let x = &dw_case.x;
        let [n, h, w, m] = x.dims4("x").unwrap();
        let pw = t(&[cout, m, 1, 1], pw_seed[..cout * m].to_vec());
        let pw_b = t(&[cout], pw_seed[20..20 + cout].to_vec());
        let dw_b = dw_case.b.clone();
        let p = dw_case.p;
        let (kh, kw) = (dw_case.w.shape()[2], dw_case.w.shape()[3]);

        let mid = conv2d(x, &dw_case.w, dw_b.as_ref(), &p).unwrap();
        let got = conv2d(&mid, &pw, Some(&pw_b), &Conv2dParams::default()).unwrap();
        let [_, ho, wo, _] = got.dims4("y").unwrap();

        // (a) two-stage formula, by hand.
        let mut want = vec![0.0f32; n * ho * wo * cout];
        for b in 0..n {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut depth = vec![0.0f64; m];
                    for (c, d) in depth.iter_mut().enumerate() {
                        *d = dw_b.as_ref().map_or(0.0, |bb| bb.data()[c] as f64);
                        for i in 0..kh {
                            for j in 0..kw {
                                let y = (oy * p.stride[0] + i * p.dilation[0]) as i64 - p.padding.top as i64;
                                let xx = (ox * p.stride[1] + j * p.dilation[1]) as i64 - p.padding.left as i64;
                                if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < w {
                                    let xv = x.data()[((b * h + y as usize) * w + xx as usize) * m + c];
                                    *d += xv as f64 * dw_case.w.data()[(c * kh + i) * kw + j] as f64;
                                }
                            }
                        }
                        // The intermediate tensor is f32.
                        *d = *d as f32 as f64;
                    }
                    for o in 0..cout {
                        let mut s = pw_b.data()[o] as f64;
                        for (c, d) in depth.iter().enumerate() {
                            s += pw.data()[o * m + c] as f64 * d;
                        }
                        want[((b * ho + oy) * wo + ox) * cout + o] = s as f32;
                    }
                }
            }
        }
        assert_close(&got, &t(&[n, ho, wo, cout], want), TOL)?;

        // (b) composed standard convolution.
        let mut wc = vec![0.0f32; cout * m * kh * kw];
        for o in 0..cout {
            for c in 0..m {
                for k in 0..kh * kw {
                    wc[(o * m + c) * kh * kw + k] =
                        pw.data()[o * m + c] * dw_case.w.data()[c * kh * kw + k];
                }
            }
        }
        let bc: Vec<f32> = (0..cout)
            .map(|o| {
                pw_b.data()[o]
                    + (0..m)
                        .map(|c| pw.data()[o * m + c] * dw_b.as_ref().map_or(0.0, |bb| bb.data()[c]))
                        .sum::<f32>()
            })
            .collect();
        let composed = conv2d(
            x,
            &t(&[cout, m, kh, kw], wc),
            Some(&t(&[cout], bc)),
            &Conv2dParams { groups: 1, ..p },
        )
        .unwrap();
        assert_close(&got, &composed, 1e-4)?;
    }

    /// Adding a bias shifts every output of that channel by the bias.
    #[test]
    fn conv2d_bias_is_an_additive_shift(case in conv_case(3, 1..=2, 1..=2, 1..=3)) {
        let no_bias = conv2d(&case.x, &case.w, None, &case.p).unwrap();
        let cout = case.w.shape()[0];
        let bias = t(&[cout], (0..cout).map(|o| o as f32 - 1.5).collect());
        let with_bias = conv2d(&case.x, &case.w, Some(&bias), &case.p).unwrap();
        let shifted = Tensor::from_fn(no_bias.shape().to_vec(), |i| no_bias.data()[i] + bias.data()[i % cout]).unwrap();
        assert_close(&with_bias, &shifted, TOL)?;
    }
}

// ---------------------------------------------------------------------------
// Padding modes
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// TF 'SAME': the output size is ceil(in / stride) for every input size,
    /// stride, kernel and dilation; the extra pixel goes after.
    #[test]
    fn tf_same_output_is_ceil_in_over_stride(
        in_h in 1..=64usize, in_w in 1..=64usize,
        kh in 1..=5usize, kw in 1..=5usize,
        sh in 1..=3usize, sw in 1..=3usize,
        dh in 1..=2usize, dw in 1..=2usize,
    ) {
        let p = PaddingMode::TfSame.resolve(in_h, in_w, [kh, kw], [sh, sw], [dh, dw]);
        prop_assert!(p.bottom == p.top || p.bottom == p.top + 1, "{:?}", p);
        prop_assert!(p.right == p.left || p.right == p.left + 1, "{:?}", p);
        prop_assert_eq!(conv_output_size(in_h, kh, sh, dh, p.top, p.bottom).unwrap(), in_h.div_ceil(sh));
        prop_assert_eq!(conv_output_size(in_w, kw, sw, dw, p.left, p.right).unwrap(), in_w.div_ceil(sw));
    }

    /// At stride 2 with a 3x3 kernel on an even input, TF 'SAME' pads
    /// 0 before and 1 after.
    #[test]
    fn tf_same_stride2_k3_even_input_pads_after(half in 1..=112usize) {
        let n = 2 * half;
        let p = PaddingMode::TfSame.resolve(n, n, [3, 3], [2, 2], [1, 1]);
        prop_assert_eq!(p, Padding { top: 0, bottom: 1, left: 0, right: 1 });
    }

    /// PyTorch style: (k - 1) * d / 2 on every side; odd kernels at stride 1
    /// keep the size.
    #[test]
    fn symmetric_padding_keeps_size_for_odd_kernels(
        n in 1..=64usize, half_k in 0..=2usize, d in 1..=2usize, s in 1..=3usize,
    ) {
        let k = 2 * half_k + 1;
        let p = PaddingMode::Symmetric.resolve(n, n, [k, k], [s, s], [d, d]);
        prop_assert_eq!(p, Padding::symmetric(half_k * d));
        prop_assert_eq!(conv_output_size(n, k, 1, d, p.top, p.bottom).unwrap(), n);
        prop_assert_eq!(conv_output_size(n, k, s, d, p.top, p.bottom).unwrap(), n.div_ceil(s));
    }

    /// conv_output_size matches a count of the valid window positions.
    #[test]
    fn conv_output_size_counts_window_positions(
        input in 0..=20usize, k in 1..=5usize, s in 1..=3usize, d in 1..=2usize,
        before in 0..=3usize, after in 0..=3usize,
    ) {
        let padded = input + before + after;
        let extent = (k - 1) * d + 1;
        let count = (0..padded).step_by(s).filter(|&start| start + extent <= padded).count();
        match conv_output_size(input, k, s, d, before, after) {
            Ok(out) => prop_assert_eq!(out, count),
            Err(e) => {
                prop_assert_eq!(count, 0);
                prop_assert!(matches!(e, Error::InvalidConfig(_)));
            }
        }
    }
}

#[test]
fn padding_constructors() {
    assert_eq!(
        Padding::symmetric(2),
        Padding {
            top: 2,
            bottom: 2,
            left: 2,
            right: 2
        }
    );
    assert_eq!(Padding::zero(), Padding::default());
    assert_eq!(Padding::zero(), Padding::symmetric(0));
    assert_eq!(PaddingMode::default(), PaddingMode::Symmetric);
    let p = Conv2dParams::default();
    assert_eq!(
        (p.stride, p.dilation, p.padding, p.groups),
        ([1, 1], [1, 1], Padding::zero(), 1)
    );
    // 224 -> 112 at stride 2, both modes.
    let tf = PaddingMode::TfSame.resolve(224, 224, [3, 3], [2, 2], [1, 1]);
    assert_eq!((tf.top, tf.bottom), (0, 1));
    let pt = PaddingMode::Symmetric.resolve(224, 224, [3, 3], [2, 2], [1, 1]);
    assert_eq!(pt, Padding::symmetric(1));
    // Odd input at stride 2: TF pads 1 on each side.
    let tf = PaddingMode::TfSame.resolve(7, 7, [3, 3], [2, 2], [1, 1]);
    assert_eq!((tf.top, tf.bottom), (1, 1));
    // Stride 1, 3x3, dilation 2: 2 on each side in both modes.
    let tf = PaddingMode::TfSame.resolve(10, 10, [3, 3], [1, 1], [2, 2]);
    assert_eq!(tf, Padding::symmetric(2));
    // resolve never panics on degenerate input.
    let _ = PaddingMode::TfSame.resolve(0, 5, [0, 3], [0, 0], [0, 1]);
    let _ = PaddingMode::Symmetric.resolve(usize::MAX, 5, [usize::MAX, 3], [1, 1], [usize::MAX, 1]);
}

// ---------------------------------------------------------------------------
// Hand-computed convolutions
// ---------------------------------------------------------------------------

fn iota(shape: &[usize]) -> Tensor {
    Tensor::from_fn(shape.to_vec(), |i| (i + 1) as f32).unwrap()
}

#[test]
fn hand_3x3_input_2x2_kernel() {
    // x = 1..9 row-major, w = [[1, 2], [3, 4]]
    let x = iota(&[1, 3, 3, 1]);
    let w = t(&[1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]);
    let y = conv2d(&x, &w, None, &Conv2dParams::default()).unwrap();
    assert_eq!(y.shape(), &[1, 2, 2, 1]);
    // 1+4+12+20, 2+6+15+24, 4+10+21+32, 5+12+24+36
    assert_eq!(y.data(), &[37.0, 47.0, 67.0, 77.0]);
    let b = t(&[1], vec![-7.0]);
    let y = conv2d(&x, &w, Some(&b), &Conv2dParams::default()).unwrap();
    assert_eq!(y.data(), &[30.0, 40.0, 60.0, 70.0]);
}

#[test]
fn hand_stride2_single_channel() {
    // x = 1..16 on a 4x4 grid, 3x3 box filter, stride 2.
    let x = iota(&[1, 4, 4, 1]);
    let w = t(&[1, 1, 3, 3], vec![1.0; 9]);
    // PyTorch padding 1 all round: windows centred on (0,0), (0,2), (2,0), (2,2).
    let p = Conv2dParams {
        stride: [2, 2],
        padding: Padding::symmetric(1),
        ..Default::default()
    };
    let y = conv2d(&x, &w, None, &p).unwrap();
    assert_eq!(y.shape(), &[1, 2, 2, 1]);
    assert_eq!(y.data(), &[14.0, 30.0, 57.0, 99.0]);
    // TF 'SAME': 0 before, 1 after; windows start at (0,0), (0,2), (2,0), (2,2).
    let p = Conv2dParams {
        stride: [2, 2],
        padding: PaddingMode::TfSame.resolve(4, 4, [3, 3], [2, 2], [1, 1]),
        ..Default::default()
    };
    let y = conv2d(&x, &w, None, &p).unwrap();
    assert_eq!(y.data(), &[54.0, 45.0, 72.0, 54.0]);
}

#[test]
fn hand_dilated() {
    // x(r, c) = 5r + c + 1 on 5x5, w = [[1, 2], [3, 4]] at dilation 2:
    // y(i, j) = x(i,j) + 2 x(i,j+2) + 3 x(i+2,j) + 4 x(i+2,j+2) = 10 x(i,j) + 82.
    let x = iota(&[1, 5, 5, 1]);
    let w = t(&[1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]);
    let p = Conv2dParams {
        dilation: [2, 2],
        ..Default::default()
    };
    let y = conv2d(&x, &w, None, &p).unwrap();
    assert_eq!(y.shape(), &[1, 3, 3, 1]);
    assert_eq!(
        y.data(),
        &[92.0, 102.0, 112.0, 142.0, 152.0, 162.0, 192.0, 202.0, 212.0]
    );
}

#[test]
fn hand_asymmetric_stride_and_padding() {
    // 1x3 input [1, 2, 3], 1x2 kernel [1, 10], stride (1, 2), one zero on the left.
    let x = t(&[1, 1, 3, 1], vec![1.0, 2.0, 3.0]);
    let w = t(&[1, 1, 1, 2], vec![1.0, 10.0]);
    let p = Conv2dParams {
        stride: [1, 2],
        padding: Padding {
            top: 0,
            bottom: 0,
            left: 1,
            right: 0,
        },
        ..Default::default()
    };
    // padded row [0, 1, 2, 3]: windows at 0 and 2 -> 0 + 10, 2 + 30.
    let y = conv2d(&x, &w, None, &p).unwrap();
    assert_eq!(y.shape(), &[1, 1, 2, 1]);
    assert_eq!(y.data(), &[10.0, 32.0]);
}

#[test]
fn hand_pointwise_multi_channel() {
    let x = t(&[1, 1, 1, 2], vec![1.0, -1.0]);
    let w = t(&[3, 2, 1, 1], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = t(&[3], vec![0.5, 0.0, -1.0]);
    let y = conv2d(&x, &w, Some(&b), &Conv2dParams::default()).unwrap();
    assert_eq!(y.shape(), &[1, 1, 1, 3]);
    assert_eq!(y.data(), &[-0.5, -1.0, -2.0]);
}

#[test]
fn hand_depthwise_two_channels_batch_two() {
    // Two 2x2 images with 2 channels; channel 0 = 1..4, channel 1 = 10 * that.
    let mut data = Vec::new();
    for img in 0..2 {
        for v in 1..=4 {
            let v = (v + 4 * img) as f32;
            data.extend([v, 10.0 * v]);
        }
    }
    let x = t(&[2, 2, 2, 2], data);
    // Channel 0: sum of all four; channel 1: top-left minus bottom-right.
    let w = t(&[2, 1, 2, 2], vec![1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, -1.0]);
    let p = Conv2dParams {
        groups: 2,
        ..Default::default()
    };
    let y = conv2d(&x, &w, None, &p).unwrap();
    assert_eq!(y.shape(), &[2, 1, 1, 2]);
    assert_eq!(y.data(), &[10.0, -30.0, 26.0, -30.0]);
}

#[test]
fn one_by_one_image_with_padding() {
    // A 1x1 image padded by 1 under a 3x3 kernel sees only the centre tap.
    let x = t(&[1, 1, 1, 1], vec![2.0]);
    let w = Tensor::from_fn(vec![1, 1, 3, 3], |i| i as f32).unwrap();
    let p = Conv2dParams {
        padding: Padding::symmetric(1),
        ..Default::default()
    };
    let y = conv2d(&x, &w, None, &p).unwrap();
    assert_eq!(y.data(), &[8.0]); // 2 * w[1][1] = 2 * 4
}

// ---------------------------------------------------------------------------
// Convolution errors: Err, never a panic
// ---------------------------------------------------------------------------

fn is_shape(r: mobilenet::Result<Tensor>) -> bool {
    matches!(r, Err(Error::Shape(_)))
}
fn is_config(r: mobilenet::Result<Tensor>) -> bool {
    matches!(r, Err(Error::InvalidConfig(_)))
}

#[test]
fn conv2d_errors() {
    let x = Tensor::zeros(vec![1, 4, 4, 4]).unwrap();
    let w = Tensor::zeros(vec![8, 4, 3, 3]).unwrap();
    let ok = Conv2dParams::default();
    assert!(conv2d(&x, &w, None, &ok).is_ok());

    // Wrong ranks.
    let x3 = Tensor::zeros(vec![4, 4, 4]).unwrap();
    assert!(is_shape(conv2d(&x3, &w, None, &ok)));
    let w3 = Tensor::zeros(vec![8, 4, 9]).unwrap();
    assert!(is_shape(conv2d(&x, &w3, None, &ok)));
    let w5 = Tensor::zeros(vec![8, 4, 3, 3, 1]).unwrap();
    assert!(is_shape(conv2d(&x, &w5, None, &ok)));
    // Channel mismatch.
    let w_bad = Tensor::zeros(vec![8, 3, 3, 3]).unwrap();
    assert!(is_shape(conv2d(&x, &w_bad, None, &ok)));
    // Depthwise weight with groups forgotten.
    let dw = Tensor::zeros(vec![4, 1, 3, 3]).unwrap();
    assert!(is_shape(conv2d(&x, &dw, None, &ok)));
    let dw_params = Conv2dParams { groups: 4, ..ok };
    assert!(conv2d(&x, &dw, None, &dw_params).is_ok());
    // Groups not dividing C_in, not dividing C_out, zero.
    assert!(is_config(conv2d(
        &x,
        &w,
        None,
        &Conv2dParams { groups: 3, ..ok }
    )));
    let w_g = Tensor::zeros(vec![6, 1, 3, 3]).unwrap();
    assert!(is_config(conv2d(
        &x,
        &w_g,
        None,
        &Conv2dParams { groups: 4, ..ok }
    )));
    assert!(is_config(conv2d(
        &x,
        &w,
        None,
        &Conv2dParams { groups: 0, ..ok }
    )));
    // Stride 0, dilation 0 (each axis).
    for stride in [[0, 1], [1, 0]] {
        assert!(is_config(conv2d(
            &x,
            &w,
            None,
            &Conv2dParams { stride, ..ok }
        )));
    }
    for dilation in [[0, 1], [1, 0]] {
        assert!(is_config(conv2d(
            &x,
            &w,
            None,
            &Conv2dParams { dilation, ..ok }
        )));
    }
    // Kernel bigger than the (padded) input.
    let w_big = Tensor::zeros(vec![8, 4, 5, 5]).unwrap();
    assert!(is_config(conv2d(&x, &w_big, None, &ok)));
    let padded = Conv2dParams {
        padding: Padding::symmetric(1),
        ..ok
    };
    assert!(conv2d(&x, &w_big, None, &padded).is_ok());
    let dilated = Conv2dParams {
        dilation: [2, 2],
        ..ok
    };
    assert!(is_config(conv2d(&x, &w, None, &dilated)));
    // Zero-size kernel.
    let w0 = Tensor::zeros(vec![8, 4, 0, 3]).unwrap();
    assert!(is_config(conv2d(&x, &w0, None, &ok)));
    // Bias of the wrong length or rank.
    let b_short = Tensor::zeros(vec![7]).unwrap();
    assert!(is_shape(conv2d(&x, &w, Some(&b_short), &ok)));
    let b_rank2 = Tensor::zeros(vec![1, 8]).unwrap();
    assert!(is_shape(conv2d(&x, &w, Some(&b_rank2), &ok)));
    // Padding that overflows usize.
    let huge = Conv2dParams {
        padding: Padding::symmetric(usize::MAX / 2 + 1),
        ..ok
    };
    assert!(conv2d(&x, &w, None, &huge).is_err());
    // Padding that fits in usize but gives an unallocatable output.
    let vast = Conv2dParams {
        padding: Padding::symmetric(usize::MAX / 8),
        ..ok
    };
    assert!(matches!(
        conv2d(&x, &w, None, &vast),
        Err(Error::TooLarge(_))
    ));
}

#[test]
fn conv_output_size_errors() {
    assert!(conv_output_size(4, 3, 0, 1, 0, 0).is_err());
    assert!(conv_output_size(4, 3, 1, 0, 0, 0).is_err());
    assert!(conv_output_size(4, 0, 1, 1, 0, 0).is_err());
    assert!(conv_output_size(2, 3, 1, 1, 0, 0).is_err());
    assert_eq!(conv_output_size(2, 3, 1, 1, 1, 0).unwrap(), 1);
    assert!(conv_output_size(0, 1, 1, 1, 0, 0).is_err());
    assert!(conv_output_size(usize::MAX, 1, 1, 1, 1, 0).is_err());
    assert!(conv_output_size(10, usize::MAX, 1, 2, 0, 0).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any combination of small (possibly inconsistent) shapes and parameters
    /// gives Ok with the right shape or Err, never a panic.
    #[test]
    fn conv2d_never_panics(
        xs in vec(0..=4usize, 4),
        ws in vec(0..=4usize, 4),
        bias_len in prop::option::of(0..=5usize),
        stride in (0..=2usize, 0..=2usize),
        dilation in (0..=2usize, 0..=2usize),
        pad in (0..=2usize, 0..=2usize, 0..=2usize, 0..=2usize),
        groups in 0..=4usize,
    ) {
        let x = Tensor::zeros(xs.clone()).unwrap();
        let w = Tensor::zeros(ws.clone()).unwrap();
        let b = bias_len.map(|l| Tensor::zeros(vec![l]).unwrap());
        let p = Conv2dParams {
            stride: [stride.0, stride.1],
            dilation: [dilation.0, dilation.1],
            padding: Padding { top: pad.0, bottom: pad.1, left: pad.2, right: pad.3 },
            groups,
        };
        if let Ok(y) = conv2d(&x, &w, b.as_ref(), &p) {
            prop_assert_eq!(y.shape()[0], xs[0]);
            prop_assert_eq!(y.shape()[3], ws[0]);
            prop_assert!(groups > 0 && xs[3] % groups == 0 && ws[1] * groups == xs[3]);
        }
    }
}

// ---------------------------------------------------------------------------
// Batch norm
// ---------------------------------------------------------------------------

/// A tensor of rank 1..=4 with random shape (last axis = channels >= 1) and
/// a matching random BatchNorm.
fn bn_case() -> impl Strategy<Value = (Tensor, BatchNorm)> {
    (vec(1..=4usize, 0..=3), 1..=6usize)
        .prop_flat_map(|(outer, c)| {
            let mut shape = outer;
            shape.push(c);
            let len: usize = shape.iter().product();
            (
                Just(shape),
                vec(-5.0f32..5.0, len),
                vec(-2.0f32..2.0, c),
                vec(-2.0f32..2.0, c),
                vec(-2.0f32..2.0, c),
                vec(0.0f32..4.0, c),
                1e-5f32..1e-2,
            )
        })
        .prop_map(|(shape, x, gamma, beta, mean, var, eps)| {
            (
                t(&shape, x),
                BatchNorm {
                    gamma,
                    beta,
                    mean,
                    var,
                    eps,
                },
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// batch_norm equals x * scale + shift with (scale, shift) from
    /// scale_shift, and the literal formula computed here.
    #[test]
    fn batch_norm_matches_scale_shift((x, bn) in bn_case()) {
        let y = batch_norm(&x, &bn).unwrap();
        let c = bn.channels();
        let (scale, shift) = bn.scale_shift();
        prop_assert_eq!(scale.len(), c);
        prop_assert_eq!(shift.len(), c);
        let folded = Tensor::from_fn(x.shape().to_vec(), |i| x.data()[i] * scale[i % c] + shift[i % c]).unwrap();
        // The folded form loses a little precision when var + eps is tiny.
        assert_close(&y, &folded, 2e-3)?;
        let literal = Tensor::from_fn(x.shape().to_vec(), |i| {
            let ch = i % c;
            bn.gamma[ch] * (x.data()[i] - bn.mean[ch]) / (bn.var[ch] + bn.eps).sqrt() + bn.beta[ch]
        }).unwrap();
        assert_close(&y, &literal, 1e-4)?;
    }

    /// The identity BN with eps 0 returns the input exactly.
    #[test]
    fn batch_norm_identity((x, _) in bn_case()) {
        let c = *x.shape().last().unwrap();
        prop_assert_eq!(batch_norm(&x, &BatchNorm::identity(c, 0.0)).unwrap(), x);
    }
}

#[test]
fn batch_norm_hand_and_errors() {
    let bn = BatchNorm {
        gamma: vec![2.0, 1.0],
        beta: vec![1.0, 0.0],
        mean: vec![3.0, -1.0],
        var: vec![4.0, 0.25],
        eps: 0.0,
    };
    assert_eq!(bn.channels(), 2);
    let x = t(&[2, 2], vec![3.0, -1.0, 5.0, 0.0]);
    // ch0: 2 (x - 3) / 2 + 1 = x - 2; ch1: (x + 1) / 0.5 = 2x + 2.
    assert_eq!(batch_norm(&x, &bn).unwrap().data(), &[1.0, 0.0, 3.0, 2.0]);
    let (scale, shift) = bn.scale_shift();
    assert_eq!((scale, shift), (vec![1.0, 2.0], vec![-2.0, 2.0]));

    let id = BatchNorm::identity(3, 1e-5);
    assert_eq!(id.channels(), 3);
    assert_eq!(
        (&id.gamma, &id.beta, &id.mean, &id.var),
        (&vec![1.0; 3], &vec![0.0; 3], &vec![0.0; 3], &vec![1.0; 3])
    );

    // Channel mismatch, each vector in turn.
    assert!(matches!(
        batch_norm(&x, &BatchNorm::identity(3, 0.0)),
        Err(Error::Shape(_))
    ));
    for field in 0..4 {
        let mut b = bn.clone();
        match field {
            0 => b.gamma.pop(),
            1 => b.beta.pop(),
            2 => b.mean.pop(),
            _ => b.var.pop(),
        };
        assert!(
            matches!(batch_norm(&x, &b), Err(Error::Shape(_))),
            "field {field}"
        );
    }
    // var + eps <= 0 or NaN.
    let mut b = bn.clone();
    b.var[1] = -1.0;
    assert!(matches!(batch_norm(&x, &b), Err(Error::InvalidConfig(_))));
    b.var[1] = 0.0;
    assert!(matches!(batch_norm(&x, &b), Err(Error::InvalidConfig(_))));
    b.eps = 1e-3;
    assert!(batch_norm(&x, &b).is_ok());
    b.var[0] = f32::NAN;
    assert!(matches!(batch_norm(&x, &b), Err(Error::InvalidConfig(_))));
    // Rank 0.
    let scalar = t(&[], vec![1.0]);
    assert!(matches!(
        batch_norm(&scalar, &BatchNorm::identity(1, 0.0)),
        Err(Error::Shape(_))
    ));
    // NHWC image: channels are the last axis.
    let img = iota(&[1, 2, 2, 2]);
    let y = batch_norm(&img, &bn).unwrap();
    assert_eq!(y.shape(), img.shape());
    assert_eq!(y.data(), &[-1.0, 6.0, 1.0, 10.0, 3.0, 14.0, 5.0, 18.0]);
}

// ---------------------------------------------------------------------------
// Activations
// ---------------------------------------------------------------------------

#[test]
fn activation_values() {
    let x = t(&[7], vec![-10.0, -1.0, -0.0, 0.5, 6.0, 6.5, 1e9]);
    assert_eq!(relu(&x).data(), &[0.0, 0.0, 0.0, 0.5, 6.0, 6.5, 1e9]);
    assert_eq!(relu6(&x).data(), &[0.0, 0.0, 0.0, 0.5, 6.0, 6.0, 6.0]);
    assert_eq!(activate(&x, Activation::Identity), x);
    assert_eq!(activate(&x, Activation::Relu), relu(&x));
    assert_eq!(activate(&x, Activation::Relu6), relu6(&x));
    assert_eq!(Activation::default(), Activation::Relu);
    assert_eq!(Activation::Relu.name(), "relu");
    assert_eq!(Activation::Relu6.name(), "relu6");
    assert_eq!(Activation::Identity.name(), "identity");
    assert_eq!(Activation::Relu.apply(f32::NEG_INFINITY), 0.0);
    assert_eq!(Activation::Relu6.apply(f32::INFINITY), 6.0);
    let img = iota(&[2, 3, 3, 2]);
    assert_eq!(relu(&img).shape(), img.shape());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn activation_properties(data in vec(-20.0f32..20.0, 0..64)) {
        let x = t(&[data.len()], data.clone());
        let r = relu(&x);
        let r6 = relu6(&x);
        for ((&v, &a), &b) in data.iter().zip(r.data()).zip(r6.data()) {
            prop_assert_eq!(a, if v > 0.0 { v } else { 0.0 });
            prop_assert!((0.0..=6.0).contains(&b));
            prop_assert_eq!(b, a.min(6.0));
            prop_assert_eq!(Activation::Relu.apply(v), a);
            prop_assert_eq!(Activation::Relu6.apply(v), b);
            prop_assert_eq!(Activation::Identity.apply(v), v);
        }
        // Idempotent.
        prop_assert_eq!(relu(&r), r.clone());
        prop_assert_eq!(relu6(&r6), r6);
    }
}

// ---------------------------------------------------------------------------
// Global average pooling
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Equals the per-image, per-channel mean computed by hand, for any
    /// spatial size (global, not a fixed 7x7 window).
    #[test]
    fn global_avg_pool_is_mean(
        (shape, data) in (1..=3usize, 1..=9usize, 1..=9usize, 1..=5usize)
            .prop_flat_map(|(n, h, w, c)| (Just([n, h, w, c]), vec(-10.0f32..10.0, n * h * w * c)))
    ) {
        let [n, h, w, c] = shape;
        let x = t(&shape, data);
        let y = global_avg_pool(&x).unwrap();
        let mut want = vec![0.0f32; n * c];
        for b in 0..n {
            for ch in 0..c {
                let mut s = 0.0f64;
                for p in 0..h * w {
                    s += x.data()[(b * h * w + p) * c + ch] as f64;
                }
                want[b * c + ch] = (s / (h * w) as f64) as f32;
            }
        }
        assert_close(&y, &t(&[n, c], want), 1e-6)?;
    }

    /// A constant image pools to the constant.
    #[test]
    fn global_avg_pool_constant(
        n in 1..=3usize, h in 1..=12usize, w in 1..=12usize, c in 1..=4usize, v in -100.0f32..100.0,
    ) {
        let x = Tensor::from_fn(vec![n, h, w, c], |_| v).unwrap();
        let y = global_avg_pool(&x).unwrap();
        prop_assert_eq!(y.shape(), &[n, c]);
        for &o in y.data() {
            prop_assert!((o - v).abs() <= 1e-6 * (1.0 + v.abs()), "{} vs {}", o, v);
        }
    }
}

#[test]
fn global_avg_pool_hand_and_errors() {
    // 7x7 and 5x3 both average over everything.
    let x = iota(&[1, 7, 7, 1]);
    assert_eq!(global_avg_pool(&x).unwrap().data(), &[25.0]);
    let x = iota(&[1, 5, 3, 1]);
    assert_eq!(global_avg_pool(&x).unwrap().data(), &[8.0]);
    let x = t(&[2, 1, 1, 2], vec![1.0, 2.0, 3.0, 4.0]);
    assert_eq!(global_avg_pool(&x).unwrap().data(), &[1.0, 2.0, 3.0, 4.0]);

    assert!(matches!(
        global_avg_pool(&t(&[2, 2, 2], vec![0.0; 8])),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        global_avg_pool(&Tensor::zeros(vec![1, 0, 3, 2]).unwrap()),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        global_avg_pool(&Tensor::zeros(vec![1, 3, 0, 2]).unwrap()),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        global_avg_pool(&Tensor::zeros(vec![0, usize::MAX, 2, 1]).unwrap()),
        Err(Error::Shape(_))
    ));
    // Empty batch / no channels are fine.
    assert_eq!(
        global_avg_pool(&Tensor::zeros(vec![0, 2, 2, 3]).unwrap())
            .unwrap()
            .shape(),
        &[0, 3]
    );
    assert_eq!(
        global_avg_pool(&Tensor::zeros(vec![2, 2, 2, 0]).unwrap())
            .unwrap()
            .shape(),
        &[2, 0]
    );
}

// ---------------------------------------------------------------------------
// Fully connected
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn fully_connected_equals_hand_product(
        (n, i, o, x, w, b) in (1..=3usize, 1..=16usize, 1..=10usize)
            .prop_flat_map(|(n, i, o)| (
                Just(n), Just(i), Just(o),
                vec(-1.0f32..1.0, n * i),
                vec(-1.0f32..1.0, o * i),
                prop::option::of(vec(-1.0f32..1.0, o)),
            ))
    ) {
        let xt = t(&[n, i], x.clone());
        let wt = t(&[o, i], w.clone());
        let bt = b.clone().map(|b| t(&[o], b));
        let y = fully_connected(&xt, &wt, bt.as_ref()).unwrap();
        let mut want = vec![0.0f32; n * o];
        for r in 0..n {
            for k in 0..o {
                let mut s = b.as_ref().map_or(0.0f64, |b| b[k] as f64);
                for j in 0..i {
                    s += x[r * i + j] as f64 * w[k * i + j] as f64;
                }
                want[r * o + k] = s as f32;
            }
        }
        assert_close(&y, &t(&[n, o], want), TOL)?;
    }
}

#[test]
fn fully_connected_hand_and_errors() {
    let x = t(&[2, 3], vec![1.0, 2.0, 3.0, -1.0, 0.0, 1.0]);
    let w = t(&[2, 3], vec![1.0, 1.0, 1.0, 0.0, 1.0, -1.0]);
    let b = t(&[2], vec![10.0, 20.0]);
    let y = fully_connected(&x, &w, Some(&b)).unwrap();
    assert_eq!(y.shape(), &[2, 2]);
    assert_eq!(y.data(), &[16.0, 19.0, 10.0, 19.0]);
    assert_eq!(
        fully_connected(&x, &w, None).unwrap().data(),
        &[6.0, -1.0, 0.0, -1.0]
    );

    let shape = |r: mobilenet::Result<Tensor>| matches!(r, Err(Error::Shape(_)));
    assert!(shape(fully_connected(&t(&[3], vec![0.0; 3]), &w, None)));
    assert!(shape(fully_connected(
        &t(&[1, 1, 3], vec![0.0; 3]),
        &w,
        None
    )));
    assert!(shape(fully_connected(&x, &t(&[6], vec![0.0; 6]), None)));
    assert!(shape(fully_connected(&x, &t(&[3, 2], vec![0.0; 6]), None)));
    assert!(shape(fully_connected(&x, &w, Some(&t(&[3], vec![0.0; 3])))));
    assert!(shape(fully_connected(
        &x,
        &w,
        Some(&t(&[1, 2], vec![0.0; 2]))
    )));
    // Zero-sized but consistent shapes are fine.
    let y = fully_connected(
        &Tensor::zeros(vec![2, 0]).unwrap(),
        &Tensor::zeros(vec![3, 0]).unwrap(),
        None,
    )
    .unwrap();
    assert_eq!(y.data(), &[0.0; 6]);
}

// ---------------------------------------------------------------------------
// Softmax
// ---------------------------------------------------------------------------

fn rows_strategy(scale: f32) -> impl Strategy<Value = (Vec<usize>, Vec<f32>)> {
    (vec(1..=3usize, 0..=2), 1..=12usize).prop_flat_map(move |(outer, len)| {
        let mut shape = outer;
        shape.push(len);
        let total: usize = shape.iter().product();
        (Just(shape), vec(-scale..scale, total))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Rows sum to 1 and every entry is in [0, 1]; the largest logit gets
    /// the largest probability.
    #[test]
    fn softmax_rows_are_distributions((shape, data) in rows_strategy(30.0)) {
        let x = t(&shape, data);
        let y = softmax(&x).unwrap();
        prop_assert_eq!(y.shape(), x.shape());
        let len = *shape.last().unwrap();
        for (row, xrow) in y.data().chunks(len).zip(x.data().chunks(len)) {
            let s: f32 = row.iter().sum();
            prop_assert!((s - 1.0).abs() < 1e-5, "row sums to {}", s);
            prop_assert!(row.iter().all(|&p| (0.0..=1.0).contains(&p)));
            let argmax_x = xrow.iter().enumerate().fold(0, |m, (i, &v)| if v > xrow[m] { i } else { m });
            let pmax = row.iter().copied().fold(0.0f32, f32::max);
            prop_assert_eq!(row[argmax_x], pmax);
        }
    }

    /// Adding a constant to a row does not change its softmax.
    #[test]
    fn softmax_shift_invariant((shape, data) in rows_strategy(10.0), shift in vec(-50.0f32..50.0, 9)) {
        let len = *shape.last().unwrap();
        let x = t(&shape, data.clone());
        let shifted = Tensor::from_fn(shape.clone(), |i| data[i] + shift[(i / len) % shift.len()]).unwrap();
        assert_close(&softmax(&shifted).unwrap(), &softmax(&x).unwrap(), 1e-4)?;
    }

    /// Huge logits (|x| up to 1e4) give no NaN or infinity and still sum to 1.
    #[test]
    fn softmax_stable_with_huge_inputs((shape, data) in rows_strategy(1e4)) {
        let y = softmax(&t(&shape, data)).unwrap();
        let len = *shape.last().unwrap();
        prop_assert!(y.data().iter().all(|v| v.is_finite()));
        for row in y.data().chunks(len) {
            let s: f32 = row.iter().sum();
            prop_assert!((s - 1.0).abs() < 1e-5, "row sums to {}", s);
        }
    }
}

#[test]
fn softmax_hand_and_errors() {
    let y = softmax(&t(&[2, 2], vec![0.0, 0.0, 1e4, 1e4])).unwrap();
    assert_eq!(y.data(), &[0.5, 0.5, 0.5, 0.5]);
    let y = softmax(&t(&[3], vec![1e4, 1e4 - 1.0, -1e4])).unwrap();
    let e = (-1.0f64).exp();
    assert!((y.data()[0] as f64 - 1.0 / (1.0 + e)).abs() < 1e-7);
    assert!((y.data()[1] as f64 - e / (1.0 + e)).abs() < 1e-7);
    assert_eq!(y.data()[2], 0.0);
    let y = softmax(&t(&[1], vec![-3.0])).unwrap();
    assert_eq!(y.data(), &[1.0]);
    let y = softmax(&t(&[2], vec![f32::NEG_INFINITY, 0.0])).unwrap();
    assert_eq!(y.data(), &[0.0, 1.0]);
    assert!(matches!(softmax(&t(&[], vec![1.0])), Err(Error::Shape(_))));
    assert!(matches!(
        softmax(&Tensor::zeros(vec![2, 0]).unwrap()),
        Err(Error::Shape(_))
    ));
    // No rows at all is fine.
    assert_eq!(
        softmax(&Tensor::zeros(vec![0, 3]).unwrap())
            .unwrap()
            .shape(),
        &[0, 3]
    );
}
