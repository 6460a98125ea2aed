//! The training graph: its gradients against finite differences of its own
//! loss, its frozen (inference-BN) forward against the reference network,
//! and the running statistics against a direct computation.

use mobilenet::engine::Parallelism;
use mobilenet::kernels::Isa;
use mobilenet::layers::Activation;
use mobilenet::model::{MobileNet, MobileNetConfig, Variant};
use mobilenet::train::network::{StepOptions, TrainNet};
use mobilenet::{Error, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A network small enough for finite differences: 8x8 input, strides
/// 1,1,2,2,2 (so the last map is 1x1), 8 channels everywhere (α 0.25 with
/// min_depth 8), shallow (8 separable blocks).
fn tiny_config(activation: Activation) -> MobileNetConfig {
    MobileNetConfig {
        alpha: 0.25,
        resolution: 8,
        classes: 5,
        activation,
        dropout: 0.0,
        variant: Variant::Shallow,
        strides: [1, 1, 2, 2, 2],
        ..Default::default()
    }
}

fn random_images(n: usize, r: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * r * r * 3)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect()
}

/// A random network with non-trivial BN parameters and running stats.
fn random_net(config: &MobileNetConfig, seed: u64) -> MobileNet {
    let net = MobileNet::random(config, seed).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 1);
    let mut convs = net.convs().to_vec();
    for conv in &mut convs {
        for g in &mut conv.bn.gamma {
            *g = rng.random_range(0.5..1.5);
        }
        for b in &mut conv.bn.beta {
            *b = rng.random_range(-0.5..0.5);
        }
        for m in &mut conv.bn.mean {
            *m = rng.random_range(-0.3..0.3);
        }
        for v in &mut conv.bn.var {
            *v = rng.random_range(0.5..2.0);
        }
    }
    MobileNet::from_parts(net.architecture().clone(), convs, net.classifier().clone()).unwrap()
}

fn loss(net: &mut TrainNet, images: &[f32], labels: &[usize], options: &StepOptions) -> f64 {
    f64::from(net.forward_backward(images, labels, options).unwrap().loss)
}

/// Central differences on `coords` of every parameter tensor; returns the
/// worst |fd - analytic| / (max |analytic| of that tensor).
fn worst_fd_error(
    net: &mut TrainNet,
    images: &[f32],
    labels: &[usize],
    options: &StepOptions,
    coords_per_param: usize,
) -> (f64, String) {
    net.forward_backward(images, labels, options).unwrap();
    let grads: Vec<Vec<f32>> = net.grads().to_vec();
    let names: Vec<String> = net.param_specs().iter().map(|s| s.name.clone()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let mut worst = (0.0, String::new());
    for (p, grad) in grads.iter().enumerate() {
        let scale = grad.iter().fold(0.0f32, |m, g| m.max(g.abs())) as f64;
        if scale < 1e-6 {
            continue;
        }
        for _ in 0..coords_per_param {
            let i = rng.random_range(0..grad.len());
            let h = 1e-2f32;
            let original = net.params()[p][i];
            let set = |net: &mut TrainNet, v: f32| {
                net.params_and_grads().nth(p).unwrap().0[i] = v;
            };
            set(net, original + h);
            let plus = loss(net, images, labels, options);
            set(net, original - h);
            let minus = loss(net, images, labels, options);
            set(net, original);
            let fd = (plus - minus) / (2.0 * f64::from(h));
            let err = (fd - f64::from(grad[i])).abs() / scale;
            if err > worst.0 {
                worst = (
                    err,
                    format!("{}[{i}]: fd {fd:.6e}, analytic {:.6e}", names[p], grad[i]),
                );
            }
        }
    }
    worst
}

#[test]
fn whole_network_gradients_match_finite_differences() {
    // Identity activation: no kinks, so every coordinate must agree. The
    // loss is summed in f32 through ~20 layers; with h = 1e-2 the
    // difference quotient is good to about 1e-3 of the gradient's scale.
    let config = tiny_config(Activation::Identity);
    let mut net = TrainNet::new(&random_net(&config, 3)).unwrap();
    let images = random_images(3, 8, 4);
    let labels = [0, 3, 4];
    let options = StepOptions {
        label_smoothing: 0.1,
        ..Default::default()
    };
    let (err, at) = worst_fd_error(&mut net, &images, &labels, &options, 6);
    assert!(err < 2e-2, "worst relative error {err:.3e} at {at}");
}

#[test]
fn frozen_backbone_gradients_match_finite_differences_with_relu6() {
    // BN in inference mode: the loss is a smooth function of the
    // classifier; the backbone gets no gradient at all.
    let config = tiny_config(Activation::Relu6);
    let mut net = TrainNet::new(&random_net(&config, 5)).unwrap();
    let images = random_images(4, 8, 6);
    let labels = [1, 2, 0, 4];
    let options = StepOptions {
        freeze_backbone: true,
        ..Default::default()
    };
    let (err, at) = worst_fd_error(&mut net, &images, &labels, &options, 10);
    assert!(err < 2e-2, "worst relative error {err:.3e} at {at}");
    let n = net.grads().len();
    for g in &net.grads()[..n - 2] {
        assert!(g.iter().all(|&v| v == 0.0));
    }
    assert!(net.grads()[n - 2].iter().any(|&v| v != 0.0));
}

#[test]
fn frozen_forward_equals_the_reference_network_on_every_isa() {
    let config = MobileNetConfig {
        alpha: 0.25,
        resolution: 32,
        classes: 7,
        dropout: 0.0,
        ..Default::default()
    };
    let model = random_net(&config, 8);
    let images = random_images(2, 32, 9);
    let reference = model
        .forward(&Tensor::new(vec![2, 32, 32, 3], images.clone()).unwrap())
        .unwrap();
    let max = reference.data().iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for isa in Isa::supported() {
        let mut net = TrainNet::new(&model).unwrap();
        net.set_isa(isa);
        let options = StepOptions {
            freeze_backbone: true,
            ..Default::default()
        };
        net.forward_backward(&images, &[0, 1], &options).unwrap();
        let diff = net
            .logits()
            .iter()
            .zip(reference.data())
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= 1e-4 * max,
            "{isa}: logits differ by {diff} (max {max})"
        );
        // The frozen pass leaves the statistics alone: the model round-trips.
        assert_eq!(net.to_model().unwrap(), model);
    }
}

#[test]
fn running_statistics_follow_the_batch_with_momentum() {
    let config = tiny_config(Activation::Relu6);
    let model = random_net(&config, 10);
    let mut net = TrainNet::new(&model).unwrap();
    let images = random_images(2, 8, 11);
    let options = StepOptions {
        bn_momentum: 0.25,
        ..Default::default()
    };
    net.forward_backward(&images, &[0, 1], &options).unwrap();
    // conv1's batch statistics, computed directly from the reference conv.
    let conv = &model.convs()[0];
    let spec = &model.architecture().layers()[0];
    let params = mobilenet::layers::Conv2dParams {
        stride: [spec.stride; 2],
        padding: spec.padding,
        ..Default::default()
    };
    let x = Tensor::new(vec![2, 8, 8, 3], images).unwrap();
    let z = mobilenet::layers::conv2d(&x, &conv.weight, None, &params).unwrap();
    let c = spec.output[2];
    let n = z.len() / c;
    let (_, mean, var) = net.running_stats().next().unwrap();
    for ch in 0..c {
        let vals: Vec<f64> = z.data()[ch..]
            .iter()
            .step_by(c)
            .map(|&v| f64::from(v))
            .collect();
        let m = vals.iter().sum::<f64>() / n as f64;
        let v = vals.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64;
        let want_mean = 0.75 * f64::from(conv.bn.mean[ch]) + 0.25 * m;
        let want_var = 0.75 * f64::from(conv.bn.var[ch]) + 0.25 * v;
        assert!((f64::from(mean[ch]) - want_mean).abs() < 1e-5, "mean {ch}");
        assert!((f64::from(var[ch]) - want_var).abs() < 1e-4, "var {ch}");
    }
}

/// The step's sums are split by the shapes alone, so any thread count gives
/// the same bits (a run resumed with other `--threads` stays on course).
/// Nine 32 px images: more than one fixed part of rows in the first
/// pointwise layers and of images in the depthwise ones.
#[test]
fn any_thread_count_gives_the_same_step_bit_for_bit() {
    let config = MobileNetConfig {
        alpha: 0.25,
        resolution: 32,
        classes: 4,
        dropout: 0.2,
        ..Default::default()
    };
    let model = random_net(&config, 12);
    let images = random_images(9, 32, 13);
    let labels = [0, 1, 2, 3, 0, 1, 2, 3, 0];
    let options = StepOptions {
        dropout_seed: 77,
        ..Default::default()
    };
    let run = |threads: usize| {
        let mut net = TrainNet::new(&model).unwrap();
        let par = Parallelism::new(threads).unwrap();
        let stats = par
            .install(|| net.forward_backward(&images, &labels, &options))
            .unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let grads: Vec<Vec<u32>> = net.grads().iter().map(|g| bits(g)).collect();
        let stats_bits: Vec<Vec<u32>> = net
            .running_stats()
            .flat_map(|(_, mean, var)| [bits(mean), bits(var)])
            .collect();
        (stats.loss.to_bits(), grads, stats_bits)
    };
    let one = run(1);
    assert!(
        one.1
            .iter()
            .any(|g| g.iter().any(|&b| f32::from_bits(b) != 0.0))
    );
    for threads in [2, 3] {
        assert!(run(threads) == one, "{threads} threads differ from one");
    }
}

#[test]
fn bad_batches_are_errors() {
    let config = tiny_config(Activation::Relu6);
    let mut net = TrainNet::new(&random_net(&config, 14)).unwrap();
    let images = random_images(2, 8, 15);
    let o = StepOptions::default();
    assert!(matches!(
        net.forward_backward(&images, &[0], &o),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        net.forward_backward(&images, &[0, 5], &o),
        Err(Error::InvalidConfig(_))
    ));
    assert!(net.forward_backward(&[], &[], &o).is_err());
    let smoothing = StepOptions {
        label_smoothing: 1.5,
        ..Default::default()
    };
    assert!(net.forward_backward(&images, &[0, 1], &smoothing).is_err());
    let conv = MobileNetConfig {
        variant: Variant::Conv,
        ..tiny_config(Activation::Relu6)
    };
    assert!(TrainNet::new(&MobileNet::random(&conv, 1).unwrap()).is_err());
}
