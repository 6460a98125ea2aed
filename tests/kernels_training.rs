//! Property tests of the training kernels.
//!
//! The conv gradient kernels are checked through the adjoint identity of a
//! linear map: for y = conv(x; w) and any g,
//! `<y, g> = <x, ∂x(g)> = <w, ∂w(x, g)>`, with the forward computed by the
//! reference `layers::conv2d`. The GEMM is checked against its triple-loop
//! reference with every combination of transposed operands. The batch-norm
//! passes are checked against plain per-element loops written here. Every
//! instruction set must give the portable build's bits exactly.

use mobilenet::kernels::Isa;
use mobilenet::kernels::batch_norm;
use mobilenet::kernels::conv_grad::{
    conv3x3_grad_weight_nhwc, conv3x3_grad_weight_reference, depthwise3x3_grad_input_nhwc,
    depthwise3x3_grad_weight_nhwc, oihw_from_taps, taps_from_oihw,
};
use mobilenet::kernels::depthwise::Conv3x3Geometry;
use mobilenet::kernels::gemm::{MatRef, matmul, matmul_reference};
use mobilenet::layers::{Conv2dParams, Padding, conv2d};
use mobilenet::{Error, Tensor};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(n: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

/// A geometry with the given leading padding and enough trailing padding
/// for the window to end at most 2 pixels past the image.
fn geometry(h: usize, w: usize, stride: usize, pad: [usize; 4]) -> Option<Conv3x3Geometry> {
    Conv3x3Geometry::new(h, w, stride, pad[0], pad[1], pad[2], pad[3]).ok()
}

fn conv_params(geom: &Conv3x3Geometry, pad: [usize; 4], groups: usize) -> Conv2dParams {
    Conv2dParams {
        stride: [geom.stride; 2],
        padding: Padding {
            top: pad[0],
            bottom: pad[1],
            left: pad[2],
            right: pad[3],
        },
        groups,
        ..Default::default()
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Element-wise agreement of two sums of at most a few hundred products
/// of values in [-1, 1] taken in different orders.
fn near(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + x.abs().max(y.abs())) * 16.0)
}

fn close(a: f64, b: f64, scale: f64) -> bool {
    (a - b).abs() <= 1e-4 * scale.max(1.0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn depthwise_gradients_are_the_adjoints_of_the_reference_conv(
        h in 1usize..9, w in 1usize..9, c in 1usize..21, stride in 1usize..3,
        pad in proptest::array::uniform4(0usize..2), seed in any::<u64>(),
    ) {
        let Some(geom) = geometry(h, w, stride, pad) else { return Ok(()); };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = random(h * w * c, &mut rng);
        let weight = random(c * 9, &mut rng);
        let g = random(geom.out_h * geom.out_w * c, &mut rng);
        let y = conv2d(
            &Tensor::new(vec![1, h, w, c], x.clone()).unwrap(),
            &Tensor::new(vec![c, 1, 3, 3], weight.clone()).unwrap(),
            None,
            &conv_params(&geom, pad, c),
        ).unwrap();
        prop_assert_eq!(y.shape(), &[1, geom.out_h, geom.out_w, c]);
        let lhs = dot(y.data(), &g);

        let mut taps = vec![0.0; 9 * c];
        taps_from_oihw(&weight, 1, c, &mut taps).unwrap();
        let mut dx = vec![f32::NAN; h * w * c];
        depthwise3x3_grad_input_nhwc(Isa::Portable, &geom, c, &taps, &g, &mut dx).unwrap();
        prop_assert!(close(dot(&x, &dx), lhs, lhs.abs()), "input: {} vs {}", dot(&x, &dx), lhs);

        let mut dw_taps = vec![0.0; 9 * c];
        depthwise3x3_grad_weight_nhwc(Isa::Portable, &geom, c, &x, &g, &mut dw_taps).unwrap();
        // Every instruction set gives the very same bits.
        for isa in Isa::supported() {
            let mut dx_isa = vec![f32::NAN; h * w * c];
            depthwise3x3_grad_input_nhwc(isa, &geom, c, &taps, &g, &mut dx_isa).unwrap();
            prop_assert!(bits(&dx_isa) == bits(&dx), "{isa}: input gradient differs");
            let mut dw_isa = vec![0.0; 9 * c];
            depthwise3x3_grad_weight_nhwc(isa, &geom, c, &x, &g, &mut dw_isa).unwrap();
            prop_assert!(bits(&dw_isa) == bits(&dw_taps), "{isa}: weight gradient differs");
        }
        let mut dw = vec![0.0; 9 * c];
        oihw_from_taps(&dw_taps, 1, c, &mut dw).unwrap();
        prop_assert!(close(dot(&weight, &dw), lhs, lhs.abs()), "weight: {} vs {}", dot(&weight, &dw), lhs);
    }

    #[test]
    fn stem_weight_gradient_is_the_adjoint_of_the_reference_conv(
        h in 1usize..9, w in 1usize..9, c_in in 1usize..5, c_out in 1usize..19,
        stride in 1usize..3, pad in proptest::array::uniform4(0usize..2), seed in any::<u64>(),
    ) {
        let Some(geom) = geometry(h, w, stride, pad) else { return Ok(()); };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = random(h * w * c_in, &mut rng);
        let weight = random(c_out * c_in * 9, &mut rng);
        let g = random(geom.out_h * geom.out_w * c_out, &mut rng);
        let y = conv2d(
            &Tensor::new(vec![1, h, w, c_in], x.clone()).unwrap(),
            &Tensor::new(vec![c_out, c_in, 3, 3], weight.clone()).unwrap(),
            None,
            &conv_params(&geom, pad, 1),
        ).unwrap();
        let lhs = dot(y.data(), &g);
        let mut taps = vec![0.0; 9 * c_in * c_out];
        conv3x3_grad_weight_nhwc(Isa::Portable, &geom, c_in, c_out, &x, &g, &mut taps).unwrap();
        let mut plain = vec![0.0; 9 * c_in * c_out];
        conv3x3_grad_weight_reference(Isa::Portable, &geom, c_in, c_out, &x, &g, &mut plain).unwrap();
        prop_assert!(near(&taps, &plain), "stem weight gradient: {:?} vs the plain loop {:?}", taps, plain);
        for isa in Isa::supported() {
            let mut taps_isa = vec![0.0; 9 * c_in * c_out];
            conv3x3_grad_weight_nhwc(isa, &geom, c_in, c_out, &x, &g, &mut taps_isa).unwrap();
            prop_assert!(bits(&taps_isa) == bits(&taps), "{isa}: stem weight gradient differs");
        }
        let mut dw = vec![0.0; weight.len()];
        oihw_from_taps(&taps, c_in, c_out, &mut dw).unwrap();
        prop_assert!(close(dot(&weight, &dw), lhs, lhs.abs()));
        // The layout helpers are inverses.
        let mut back = vec![0.0; taps.len()];
        taps_from_oihw(&dw, c_in, c_out, &mut back).unwrap();
        prop_assert_eq!(back, taps);
    }

    #[test]
    fn gemm_equals_the_triple_loop_for_every_transposition(
        m in 0usize..40, k in 0usize..40, n in 0usize..40,
        ta in any::<bool>(), tb in any::<bool>(), accumulate in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let a_data = random(m * k, &mut rng);
        let b_data = random(k * n, &mut rng);
        let a = if ta { MatRef::row_major(&a_data, k, m).unwrap().t() } else { MatRef::row_major(&a_data, m, k).unwrap() };
        let b = if tb { MatRef::row_major(&b_data, n, k).unwrap().t() } else { MatRef::row_major(&b_data, k, n).unwrap() };
        let init = random(m * n, &mut rng);
        let (mut fast, mut slow) = (init.clone(), init);
        matmul(a, b, &mut fast, accumulate).unwrap();
        matmul_reference(a, b, &mut slow, accumulate).unwrap();
        for (x, y) in fast.iter().zip(&slow) {
            prop_assert!((x - y).abs() <= 1e-5 * (k as f32 + 1.0), "{x} vs {y}");
        }
    }

    /// The training step computes a weight gradient in row blocks, as many
    /// as it has threads; its result must not depend on that count, so a
    /// block of a product must equal the same rows of the whole product
    /// bit for bit.
    #[test]
    fn gemm_row_blocks_equal_the_whole_product_bit_for_bit(
        m in 1usize..70, k in 0usize..300, n in 1usize..40, cut in 0usize..70,
        ta in any::<bool>(), seed in any::<u64>(),
    ) {
        let cut = cut.min(m);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let a_data = random(m * k, &mut rng);
        let b_data = random(k * n, &mut rng);
        let a = if ta { MatRef::row_major(&a_data, k, m).unwrap().t() } else { MatRef::row_major(&a_data, m, k).unwrap() };
        let b = MatRef::row_major(&b_data, k, n).unwrap();
        let mut whole = vec![0.0; m * n];
        matmul(a, b, &mut whole, false).unwrap();
        let mut blocks = vec![0.0; m * n];
        let (top, bottom) = blocks.split_at_mut(cut * n);
        matmul(a.row_range(0..cut).unwrap(), b, top, false).unwrap();
        matmul(a.row_range(cut..m).unwrap(), b, bottom, false).unwrap();
        prop_assert!(bits(&blocks) == bits(&whole));
        prop_assert!(a.row_range(cut..m + 1).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn batch_norm_passes_equal_plain_loops_on_every_isa(
        rows in 1usize..40, c in 1usize..40, seed in any::<u64>(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let z = random(rows * c, &mut rng);
        let g0 = random(rows * c, &mut rng);
        let [mean, scale, beta, inv_std, k, dgn, dbn] = std::array::from_fn(|_| random(c, &mut rng));
        let shift = &z[..c];
        let clamp = (0.0f32, 0.5f32);
        // The plain loops.
        let (mut s1, mut s2) = (vec![0.0f32; c], vec![0.0f32; c]);
        let mut y = vec![0.0f32; rows * c];
        let mut g = g0.clone();
        let (mut dg, mut db) = (vec![0.0f32; c], vec![0.0f32; c]);
        for r in 0..rows {
            for ch in 0..c {
                let i = r * c + ch;
                let d = z[i] - shift[ch];
                s1[ch] += d;
                s2[ch] += d * d;
                y[i] = ((z[i] - mean[ch]) * scale[ch] + beta[ch]).max(clamp.0).min(clamp.1);
                let dy = if y[i] > clamp.0 && y[i] < clamp.1 { g[i] } else { 0.0 };
                g[i] = dy;
                dg[ch] += dy * ((z[i] - mean[ch]) * inv_std[ch]);
                db[ch] += dy;
            }
        }
        let mut dz = g.clone();
        for r in 0..rows {
            for ch in 0..c {
                let i = r * c + ch;
                dz[i] = k[ch] * (dz[i] - dbn[ch] - (z[i] - mean[ch]) * inv_std[ch] * dgn[ch]);
            }
        }
        for isa in Isa::supported() {
            let (mut t1, mut t2) = (vec![0.0f32; c], vec![0.0f32; c]);
            batch_norm::shifted_channel_sums(isa, &z, c, shift, &mut t1, &mut t2).unwrap();
            prop_assert!(bits(&t1) == bits(&s1) && bits(&t2) == bits(&s2), "{isa}: sums");
            let mut y_isa = vec![f32::NAN; rows * c];
            batch_norm::normalize_clamp(isa, &z, &mut y_isa, c, &mean, &scale, &beta, clamp).unwrap();
            prop_assert!(bits(&y_isa) == bits(&y), "{isa}: forward");
            let mut g_isa = g0.clone();
            let (mut dg_isa, mut db_isa) = (vec![0.0f32; c], vec![0.0f32; c]);
            batch_norm::backward_sums(
                isa, &mut g_isa, &y, &z, c, &mean, &inv_std, clamp, &mut dg_isa, &mut db_isa,
            ).unwrap();
            prop_assert!(bits(&g_isa) == bits(&g), "{isa}: masked gradient");
            prop_assert!(bits(&dg_isa) == bits(&dg) && bits(&db_isa) == bits(&db), "{isa}: dγ, dβ");
            batch_norm::backward_input(isa, &mut g_isa, &z, c, &mean, &inv_std, &k, &dgn, &dbn).unwrap();
            prop_assert!(bits(&g_isa) == bits(&dz), "{isa}: dz");
        }
    }
}

#[test]
fn batch_norm_kernels_reject_wrong_lengths() {
    let (z, v) = (vec![0.0f32; 12], vec![0.0f32; 3]);
    let (mut a, mut b) = (vec![0.0f32; 3], vec![0.0f32; 3]);
    let isa = Isa::Portable;
    assert!(matches!(
        batch_norm::shifted_channel_sums(isa, &z[1..], 3, &v, &mut a, &mut b),
        Err(Error::Shape(_))
    ));
    assert!(batch_norm::shifted_channel_sums(isa, &z, 3, &v[1..], &mut a, &mut b).is_err());
    assert!(batch_norm::shifted_channel_sums(isa, &z, 0, &v, &mut a, &mut b).is_err());
    let mut y = vec![0.0f32; 9];
    assert!(batch_norm::normalize_clamp(isa, &z, &mut y, 3, &v, &v, &v, (0.0, 6.0)).is_err());
    let mut g = vec![0.0f32; 12];
    assert!(
        batch_norm::backward_sums(
            isa,
            &mut g,
            &z,
            &z[3..],
            3,
            &v,
            &v,
            (0.0, 6.0),
            &mut a,
            &mut b
        )
        .is_err()
    );
    assert!(batch_norm::backward_input(isa, &mut g, &z, 3, &v, &v, &v, &v, &v[..2]).is_err());
}

#[test]
fn gradient_kernels_reject_wrong_lengths() {
    let geom = Conv3x3Geometry::new(4, 4, 1, 1, 1, 1, 1).unwrap();
    let c = 3;
    let (x, g, taps) = (vec![0.0; 48], vec![0.0; 48], vec![0.0; 27]);
    let mut dx = vec![0.0; 48];
    assert!(matches!(
        depthwise3x3_grad_input_nhwc(Isa::Portable, &geom, c, &taps[1..], &g, &mut dx),
        Err(Error::Shape(_))
    ));
    assert!(
        depthwise3x3_grad_input_nhwc(Isa::Portable, &geom, c, &taps, &g[1..], &mut dx).is_err()
    );
    assert!(
        depthwise3x3_grad_input_nhwc(Isa::Portable, &geom, c, &taps, &g, &mut dx[1..]).is_err()
    );
    let mut dw = vec![0.0; 26];
    assert!(depthwise3x3_grad_weight_nhwc(Isa::Portable, &geom, c, &x, &g, &mut dw).is_err());
    assert!(conv3x3_grad_weight_nhwc(Isa::Portable, &geom, c, 2, &x, &g, &mut [0.0; 54]).is_err());
    let bad = Conv3x3Geometry { stride: 0, ..geom };
    assert!(depthwise3x3_grad_weight_nhwc(Isa::Portable, &bad, c, &x, &g, &mut [0.0; 27]).is_err());
    let a = MatRef::row_major(&[1.0; 6], 2, 3).unwrap();
    assert!(matmul(a, a, &mut [0.0; 4], false).is_err()); // 2x3 · 2x3
    assert!(matmul(a, a.t(), &mut [0.0; 3], false).is_err()); // output 2x2
    assert!(MatRef::row_major(&[1.0; 5], 2, 3).is_err());
}
