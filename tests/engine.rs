//! The engine against the reference forward pass: every α, resolution,
//! batch, thread count, instruction set and fusion choice gives the same
//! logits within 1e-4 x the largest |logit|.

use mobilenet::Tensor;
use mobilenet::engine::{Parallelism, Plan, PlanOptions, Workspace};
use mobilenet::kernels::Isa;
use mobilenet::layers::{Activation, BatchNorm, PaddingMode};
use mobilenet::model::network::ConvBn;
use mobilenet::model::{Architecture, MobileNet, MobileNetConfig, Variant};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A random network whose batch norms are not the identity, so that
/// folding is exercised.
fn network(cfg: &MobileNetConfig, seed: u64) -> MobileNet {
    let net = MobileNet::random(cfg, seed).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let convs: Vec<ConvBn> = net
        .convs()
        .iter()
        .map(|c| {
            let n = c.bn.channels();
            let mut r = |lo: f32, hi: f32| (0..n).map(|_| rng.random_range(lo..hi)).collect();
            ConvBn {
                weight: c.weight.clone(),
                bn: BatchNorm {
                    gamma: r(0.5, 1.5),
                    beta: r(-0.2, 0.2),
                    mean: r(-0.2, 0.2),
                    var: r(0.5, 2.0),
                    eps: 1e-3,
                },
            }
        })
        .collect();
    MobileNet::from_parts(
        Architecture::new(cfg).unwrap(),
        convs,
        net.classifier().clone(),
    )
    .unwrap()
}

fn images(batch: usize, r: usize, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Tensor::from_fn(vec![batch, r, r, 3], |_| rng.random_range(-1.0..1.0)).unwrap()
}

fn engine_logits(net: &MobileNet, x: &Tensor, options: &PlanOptions, threads: usize) -> Vec<f32> {
    let plan = Plan::compile(net, options).unwrap();
    let par = Parallelism::new(threads).unwrap();
    let mut ws = Workspace::new(&plan, &par);
    let batch = x.shape()[0];
    let mut logits = vec![f32::NAN; batch * plan.classes()];
    plan.run(x.data(), batch, &mut logits, &mut ws, &par)
        .unwrap();
    logits
}

fn assert_close(reference: &Tensor, got: &[f32], what: &str) {
    let largest = reference.data().iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = reference
        .data()
        .iter()
        .zip(got)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 1e-4 * largest,
        "{what}: max |diff| {worst} > 1e-4 x {largest}"
    );
}

fn check(cfg: &MobileNetConfig, batch: usize, thread_counts: &[usize]) {
    let net = network(cfg, 11);
    let x = images(batch, cfg.resolution, 3);
    let reference = net.forward(&x).unwrap();
    for isa in Isa::supported() {
        // Fused with the default bands (one per layer on small maps), with
        // 4 KiB bands (many per layer, thin last ones), unfused, and with
        // every leading block chained (in bands of one row, and of as many
        // rows as 64 KiB of scratch allows).
        let default_band = PlanOptions::default().band_bytes;
        let variants = [
            (true, default_band, None, 0),
            (true, 4 << 10, None, 0),
            (false, default_band, None, 0),
            (true, default_band, Some(0), 0),
            (true, default_band, Some(0), 64 << 10),
        ];
        for (fuse_separable, band_bytes, chain_min_bytes, chain_scratch_bytes) in variants {
            // Split every step across the threads, however small, so that
            // the parallel paths are exercised on small test networks too.
            let options = PlanOptions {
                isa: Some(isa),
                fuse_separable,
                band_bytes,
                chain_min_bytes,
                chain_scratch_bytes,
                min_parallel_mult_adds: 0,
                ..Default::default()
            };
            for &threads in thread_counts {
                let got = engine_logits(&net, &x, &options, threads);
                let what = format!(
                    "{} batch {batch} {isa} fuse {fuse_separable} band {band_bytes} B chain \
                     {chain_min_bytes:?} in {chain_scratch_bytes} B threads {threads}",
                    cfg.name()
                );
                assert_close(&reference, &got, &what);
            }
        }
    }
}

#[test]
fn engine_matches_reference_for_every_alpha_and_resolution() {
    for alpha in [1.0, 0.75, 0.5, 0.25] {
        for resolution in [224, 192, 160, 128, 97, 32] {
            let cfg = MobileNetConfig {
                alpha,
                resolution,
                classes: 1000,
                ..Default::default()
            };
            let big = alpha * resolution as f64 > 100.0;
            check(
                &cfg,
                if big { 1 } else { 3 },
                if big { &[2] } else { &[1, 2] },
            );
        }
    }
}

#[test]
fn engine_matches_reference_across_batches_and_threads() {
    let cfg = MobileNetConfig {
        alpha: 0.25,
        resolution: 64,
        classes: 10,
        ..Default::default()
    };
    for batch in [1, 2, 3, 5] {
        check(&cfg, batch, &[1, 2, 3]);
    }
    // The default options, which keep small steps on one thread.
    let net = network(&cfg, 11);
    let x = images(2, 64, 3);
    let reference = net.forward(&x).unwrap();
    let got = engine_logits(&net, &x, &PlanOptions::default(), 2);
    assert_close(&reference, &got, "default options");
}

#[test]
fn engine_matches_reference_for_variants_and_conventions() {
    for variant in [Variant::MobileNet, Variant::Conv, Variant::Shallow] {
        for (activation, padding) in [
            (Activation::Relu, PaddingMode::Symmetric),
            (Activation::Relu6, PaddingMode::TfSame),
            (Activation::Identity, PaddingMode::TfSame),
        ] {
            let cfg = MobileNetConfig {
                alpha: 0.25,
                resolution: 48,
                classes: 7,
                variant,
                activation,
                padding,
                ..Default::default()
            };
            check(&cfg, 2, &[1, 2]);
        }
    }
}

#[test]
fn bad_buffers_are_errors() {
    let cfg = MobileNetConfig {
        alpha: 0.25,
        resolution: 32,
        classes: 4,
        ..Default::default()
    };
    let net = network(&cfg, 1);
    let plan = Plan::compile(&net, &PlanOptions::default()).unwrap();
    let par = Parallelism::new(2).unwrap();
    let mut ws = Workspace::new(&plan, &par);
    let image = vec![0.0; plan.input_len()];
    let mut logits = vec![0.0; 4];
    assert!(
        plan.run(&image[1..], 1, &mut logits, &mut ws, &par)
            .is_err()
    );
    assert!(plan.run(&image, 2, &mut logits, &mut ws, &par).is_err());
    assert!(
        plan.run(&image, 1, &mut logits[1..], &mut ws, &par)
            .is_err()
    );
    // A workspace for fewer threads, or for another plan.
    let one = Parallelism::new(1).unwrap();
    let mut small = Workspace::new(&plan, &one);
    assert!(plan.run(&image, 1, &mut logits, &mut small, &par).is_err());
    let other_cfg = MobileNetConfig {
        resolution: 64,
        ..cfg.clone()
    };
    let other = Plan::compile(&network(&other_cfg, 1), &PlanOptions::default()).unwrap();
    let mut other_ws = Workspace::new(&other, &par);
    assert!(
        plan.run(&image, 1, &mut logits, &mut other_ws, &par)
            .is_err()
    );
    assert!(Parallelism::new(0).is_err());
    // Zero images is fine and touches nothing.
    assert!(plan.run(&[], 0, &mut [], &mut ws, &par).is_ok());
}

#[test]
fn one_plan_serves_several_threads_with_their_own_workspaces() {
    let cfg = MobileNetConfig {
        alpha: 0.25,
        resolution: 40,
        classes: 6,
        ..Default::default()
    };
    let net = network(&cfg, 4);
    let plan = Plan::compile(&net, &PlanOptions::default()).unwrap();
    let inputs: Vec<Tensor> = (0..4).map(|i| images(1, 40, i)).collect();
    let expected: Vec<Tensor> = inputs.iter().map(|x| net.forward(x).unwrap()).collect();
    std::thread::scope(|s| {
        for (x, want) in inputs.iter().zip(&expected) {
            let plan = &plan;
            s.spawn(move || {
                let par = Parallelism::new(1).unwrap();
                let mut ws = Workspace::new(plan, &par);
                let mut logits = vec![0.0; 6];
                for _ in 0..5 {
                    plan.run(x.data(), 1, &mut logits, &mut ws, &par).unwrap();
                    assert_close(want, &logits, "shared plan");
                }
            });
        }
    });
}
