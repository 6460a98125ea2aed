//! Property tests of the training kernels.
//!
//! The conv gradient kernels are checked through the adjoint identity of a
//! linear map: for y = conv(x; w) and any g,
//! `<y, g> = <x, ∂x(g)> = <w, ∂w(x, g)>`, with the forward computed by the
//! reference `layers::conv2d`. The GEMM is checked against its triple-loop
//! reference with every combination of transposed operands.

use mobilenet::kernels::conv_grad::{
    conv3x3_grad_weight_nhwc, depthwise3x3_grad_input_nhwc, depthwise3x3_grad_weight_nhwc,
    oihw_from_taps, taps_from_oihw,
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
        depthwise3x3_grad_input_nhwc(&geom, c, &taps, &g, &mut dx).unwrap();
        prop_assert!(close(dot(&x, &dx), lhs, lhs.abs()), "input: {} vs {}", dot(&x, &dx), lhs);

        let mut dw_taps = vec![0.0; 9 * c];
        depthwise3x3_grad_weight_nhwc(&geom, c, &x, &g, &mut dw_taps).unwrap();
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
        conv3x3_grad_weight_nhwc(&geom, c_in, c_out, &x, &g, &mut taps).unwrap();
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
}

#[test]
fn gradient_kernels_reject_wrong_lengths() {
    let geom = Conv3x3Geometry::new(4, 4, 1, 1, 1, 1, 1).unwrap();
    let c = 3;
    let (x, g, taps) = (vec![0.0; 48], vec![0.0; 48], vec![0.0; 27]);
    let mut dx = vec![0.0; 48];
    assert!(matches!(
        depthwise3x3_grad_input_nhwc(&geom, c, &taps[1..], &g, &mut dx),
        Err(Error::Shape(_))
    ));
    assert!(depthwise3x3_grad_input_nhwc(&geom, c, &taps, &g[1..], &mut dx).is_err());
    assert!(depthwise3x3_grad_input_nhwc(&geom, c, &taps, &g, &mut dx[1..]).is_err());
    let mut dw = vec![0.0; 26];
    assert!(depthwise3x3_grad_weight_nhwc(&geom, c, &x, &g, &mut dw).is_err());
    assert!(conv3x3_grad_weight_nhwc(&geom, c, 2, &x, &g, &mut [0.0; 54]).is_err());
    let bad = Conv3x3Geometry { stride: 0, ..geom };
    assert!(depthwise3x3_grad_weight_nhwc(&bad, c, &x, &g, &mut [0.0; 27]).is_err());
    let a = MatRef::row_major(&[1.0; 6], 2, 3).unwrap();
    assert!(matmul(a, a, &mut [0.0; 4], false).is_err()); // 2x3 · 2x3
    assert!(matmul(a, a.t(), &mut [0.0; 3], false).is_err()); // output 2x2
    assert!(MatRef::row_major(&[1.0; 5], 2, 3).is_err());
}
