//! Whole-network forward passes on the reference layers.

use mobilenet::Tensor;
use mobilenet::layers::{Activation, PaddingMode};
use mobilenet::model::{MobileNet, MobileNetConfig, Variant};

fn input(batch: usize, resolution: usize, seed: u32) -> Tensor {
    // A cheap deterministic pattern in [-1, 1].
    Tensor::from_fn(vec![batch, resolution, resolution, 3], |i| {
        let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
        (x >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    })
    .unwrap()
}

#[test]
fn forward_runs_for_every_alpha_and_resolution() {
    for alpha in [1.0, 0.75, 0.5, 0.25] {
        for resolution in [224, 192, 160, 128, 97, 32] {
            // Keep the suite fast: the big networks get one image, small ones a batch.
            let batch = if alpha * resolution as f64 >= 150.0 {
                1
            } else {
                2
            };
            let cfg = MobileNetConfig {
                alpha,
                resolution,
                classes: 17,
                ..Default::default()
            };
            let net = MobileNet::random(&cfg, 1).unwrap();
            let logits = net.forward(&input(batch, resolution, 3)).unwrap();
            assert_eq!(
                logits.shape(),
                &[batch, 17],
                "alpha {alpha} resolution {resolution}"
            );
            assert!(
                logits.data().iter().all(|v| v.is_finite()),
                "alpha {alpha} resolution {resolution}: non-finite logits"
            );
        }
    }
}

#[test]
fn comparison_networks_and_conventions_run() {
    for variant in [Variant::Conv, Variant::Shallow] {
        for (activation, padding) in [
            (Activation::Relu, PaddingMode::Symmetric),
            (Activation::Relu6, PaddingMode::TfSame),
        ] {
            let cfg = MobileNetConfig {
                alpha: 0.25,
                resolution: 64,
                classes: 5,
                variant,
                activation,
                padding,
                ..Default::default()
            };
            let net = MobileNet::random(&cfg, 2).unwrap();
            let probs = net.predict(&input(3, 64, 9)).unwrap();
            assert_eq!(probs.shape(), &[3, 5]);
            for row in probs.data().chunks(5) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            }
        }
    }
}

#[test]
fn batch_items_are_independent() {
    // Image i of a batch gives the same logits as when run alone.
    let cfg = MobileNetConfig {
        alpha: 0.25,
        resolution: 40,
        classes: 7,
        ..Default::default()
    };
    let net = MobileNet::random(&cfg, 5).unwrap();
    let batch = input(3, 40, 11);
    let together = net.forward(&batch).unwrap();
    let per_image = 40 * 40 * 3;
    for i in 0..3 {
        let one = Tensor::new(
            vec![1, 40, 40, 3],
            batch.data()[i * per_image..(i + 1) * per_image].to_vec(),
        )
        .unwrap();
        let alone = net.forward(&one).unwrap();
        assert_eq!(alone.data(), &together.data()[i * 7..(i + 1) * 7]);
    }
}

#[test]
fn seeds_are_reproducible_and_distinct() {
    let cfg = MobileNetConfig {
        alpha: 0.25,
        resolution: 32,
        classes: 3,
        ..Default::default()
    };
    let x = input(1, 32, 1);
    let a = MobileNet::random(&cfg, 1).unwrap().forward(&x).unwrap();
    let b = MobileNet::random(&cfg, 1).unwrap().forward(&x).unwrap();
    let c = MobileNet::random(&cfg, 2).unwrap().forward(&x).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn trace_visits_every_layer_with_its_shape() {
    let cfg = MobileNetConfig {
        alpha: 0.5,
        resolution: 64,
        classes: 4,
        ..Default::default()
    };
    let net = MobileNet::random(&cfg, 3).unwrap();
    let mut seen = Vec::new();
    net.forward_traced(&input(2, 64, 0), |spec, out| {
        let expected: Vec<usize> = match spec.output {
            [1, 1, c] if spec.name == "global_pool" || spec.name == "fc" => vec![2, c],
            [h, w, c] => vec![2, h, w, c],
        };
        assert_eq!(out.shape(), expected.as_slice(), "{}", spec.name);
        seen.push(spec.name.clone());
    })
    .unwrap();
    // Every layer but the softmax, which `forward` leaves to `predict`.
    assert_eq!(seen.len(), net.architecture().layers().len() - 1);
}

#[test]
fn wrong_input_shapes_are_errors() {
    let cfg = MobileNetConfig {
        alpha: 0.25,
        resolution: 32,
        classes: 3,
        ..Default::default()
    };
    let net = MobileNet::random(&cfg, 1).unwrap();
    for shape in [
        vec![1, 33, 32, 3],
        vec![1, 32, 32, 1],
        vec![0, 32, 32, 3],
        vec![32, 32, 3],
    ] {
        let x = Tensor::zeros(shape.clone()).unwrap();
        assert!(net.forward(&x).is_err(), "{shape:?}");
    }
}

#[test]
fn small_input_strides_keep_resolution() {
    use mobilenet::model::Architecture;
    // Fashion-MNIST size: the stem at stride 1 keeps 28x28, then four
    // stride-2 stages: 28 -> 14 -> 7 -> 4 -> 2.
    let config = MobileNetConfig {
        alpha: 0.5,
        resolution: 28,
        classes: 10,
        strides: [1, 2, 2, 2, 2],
        ..Default::default()
    };
    let arch = Architecture::new(&config).unwrap();
    let layer = |name: &str| arch.layer(name).unwrap().clone();
    assert_eq!(layer("conv1").output, [28, 28, 16]);
    assert_eq!(layer("conv_dw_2").output[..2], [14, 14]);
    assert_eq!(layer("conv_dw_12").output[..2], [2, 2]);
    assert_eq!(layer("conv_dw_13").stride, 1);
    assert_eq!(config.name(), "mobilenet_v1_0.5_28_s12222");
    let net = MobileNet::random(&config, 1).unwrap();
    let logits = net.forward(&input(2, 28, 3)).unwrap();
    assert_eq!(logits.shape(), &[2, 10]);
    // The floor on the resolution is the product of the strides.
    assert!(
        Architecture::new(&MobileNetConfig {
            resolution: 16,
            ..config.clone()
        })
        .is_ok()
    );
    assert!(
        Architecture::new(&MobileNetConfig {
            resolution: 15,
            ..config.clone()
        })
        .is_err()
    );
    assert!(
        Architecture::new(&MobileNetConfig {
            resolution: 28,
            strides: [2; 5],
            ..config.clone()
        })
        .is_err()
    );
    assert!(
        Architecture::new(&MobileNetConfig {
            strides: [3, 2, 2, 2, 2],
            ..config
        })
        .is_err()
    );
}
