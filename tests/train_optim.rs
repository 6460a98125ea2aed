//! Optimizers, learning-rate schedules, the metrics log, atomic writes and
//! the training-curve plot (`mobilenet::train`).

use std::fs;
use std::path::PathBuf;

use mobilenet::Error;
use mobilenet::train::atomic::write_atomic;
use mobilenet::train::metrics::{EpochMetrics, HEADER, MetricsLog};
use mobilenet::train::optim::{
    Algorithm, Optimizer, OptimizerConfig, ParamGroup, ParamSpec, RmsPropConfig, RmsPropFlavour,
    SgdConfig, WeightDecay,
};
use mobilenet::train::plot::{PLOT_HEIGHT, PLOT_WIDTH, plot_curves};
use mobilenet::train::schedule::{Decay, Schedule};

// ---------------------------------------------------------------- helpers

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "mobilenet-train-optim-{name}-{}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn one_param(len: usize, group: ParamGroup) -> Vec<ParamSpec> {
    vec![ParamSpec::new("w", len, group)]
}

fn sgd(momentum: f32, dampening: f32, nesterov: bool, wd: f32) -> OptimizerConfig {
    OptimizerConfig {
        algorithm: Algorithm::Sgd(SgdConfig {
            momentum,
            dampening,
            nesterov,
        }),
        weight_decay: WeightDecay::new(wd),
    }
}

fn rmsprop(flavour: RmsPropFlavour, decay: f32, momentum: f32, epsilon: f32) -> OptimizerConfig {
    OptimizerConfig {
        algorithm: Algorithm::RmsProp(RmsPropConfig {
            decay,
            momentum,
            epsilon,
            flavour,
        }),
        weight_decay: WeightDecay::NONE,
    }
}

/// Runs `steps` scalar updates with the given gradients and rates and
/// returns the parameter after each.
fn run_scalar(config: OptimizerConfig, p0: f32, grads: &[f32], lrs: &[f32]) -> Vec<f32> {
    let mut opt = Optimizer::new(config, &one_param(1, ParamGroup::Weights)).unwrap();
    let mut p = [p0];
    grads
        .iter()
        .zip(lrs)
        .map(|(&g, &lr)| {
            opt.step(0, &mut p, &[g], lr).unwrap();
            p[0]
        })
        .collect()
}

fn assert_close(got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (f64::from(g) - w).abs() <= tol * w.abs().max(1.0),
            "value {i}: got {g}, want {w} (all: {got:?} vs {want:?})"
        );
    }
}

// ------------------------------------------------------------------- SGD

/// A long parameter is updated in parallel pieces: every element must get
/// exactly the update it gets alone (as a one-element parameter).
#[test]
fn long_parameters_update_in_pieces_as_each_element_alone() {
    let len = 40_003;
    let configs = [
        sgd(0.9, 0.0, true, 1e-3),
        rmsprop(RmsPropFlavour::TensorFlow, 0.9, 0.9, 1.0),
        rmsprop(RmsPropFlavour::PyTorch, 0.99, 0.9, 1e-8),
    ];
    let value = |i: usize, step: usize| ((i * 7919 + step * 104_729) % 2001) as f32 / 1000.0 - 1.0;
    for config in configs {
        for threads in [1, 2] {
            let par = mobilenet::engine::Parallelism::new(threads).unwrap();
            let mut long = Optimizer::new(config, &one_param(len, ParamGroup::Weights)).unwrap();
            let mut p: Vec<f32> = (0..len).map(|i| value(i, 0)).collect();
            let mut alone = Vec::new();
            for i in (0..len).step_by(997) {
                let opt = Optimizer::new(config, &one_param(1, ParamGroup::Weights)).unwrap();
                alone.push((i, opt, [p[i]]));
            }
            for step in 1..=3 {
                let g: Vec<f32> = (0..len).map(|i| value(i, step)).collect();
                par.install(|| long.step(0, &mut p, &g, 0.01)).unwrap();
                for (i, opt, q) in &mut alone {
                    opt.step(0, q, &g[*i..*i + 1], 0.01).unwrap();
                }
            }
            for (i, _, q) in &alone {
                assert_eq!(p[*i].to_bits(), q[0].to_bits(), "{config:?}, element {i}");
            }
        }
    }
}

#[test]
fn sgd_plain_matches_hand_computation() {
    let specs = one_param(2, ParamGroup::Weights);
    let mut opt = Optimizer::new(sgd(0.0, 0.0, false, 0.0), &specs).unwrap();
    let mut p = [1.0f32, -2.0];
    let mut after = Vec::new();
    for g in [[0.5f32, 1.0], [0.25, -1.0], [1.0, 0.0]] {
        opt.step(0, &mut p, &g, 0.1).unwrap();
        after.extend_from_slice(&p);
    }
    // p -= 0.1 g: [0.95, -2.1], [0.925, -2.0], [0.825, -2.0]
    assert_close(&after, &[0.95, -2.1, 0.925, -2.0, 0.825, -2.0], 1e-6);
    // Plain SGD keeps no state.
    assert!(opt.state().is_empty());
    assert_eq!(opt.step_count(), 3);
}

#[test]
fn sgd_momentum_matches_hand_computation() {
    // buf: 1, 1.9, 2.71; p: 1 - 0.1·buf cumulatively.
    let got = run_scalar(sgd(0.9, 0.0, false, 0.0), 1.0, &[1.0; 3], &[0.1; 3]);
    assert_close(&got, &[0.9, 0.71, 0.439], 1e-6);
}

#[test]
fn sgd_dampening_leaves_the_first_gradient_undamped() {
    // PyTorch: the first step copies g into the buffer; later ones add (1-d)g.
    // buf: 1, 0.9 + 0.5 = 1.4, 1.26 + 0.5 = 1.76.
    let got = run_scalar(sgd(0.9, 0.5, false, 0.0), 1.0, &[1.0; 3], &[0.1; 3]);
    assert_close(&got, &[0.9, 0.76, 0.584], 1e-6);
}

#[test]
fn sgd_nesterov_matches_hand_computation() {
    // buf: 1, 1.9, 2.71; update g + 0.9 buf: 1.9, 2.71, 3.439.
    let got = run_scalar(sgd(0.9, 0.0, true, 0.0), 1.0, &[1.0; 3], &[0.1; 3]);
    assert_close(&got, &[0.81, 0.539, 0.1951], 1e-6);
}

#[test]
fn sgd_weight_decay_is_added_to_the_gradient() {
    // Zero gradient, wd 0.1: d = 0.1 p. d1 = 0.1, buf 0.1, p 0.99;
    // d2 = 0.099, buf 0.189, p 0.9711; d3 = 0.09711, buf 0.26721, p 0.944379.
    let got = run_scalar(sgd(0.9, 0.0, false, 0.1), 1.0, &[0.0; 3], &[0.1; 3]);
    assert_close(&got, &[0.99, 0.9711, 0.944379], 1e-6);
}

#[test]
fn sgd_uses_each_steps_learning_rate() {
    // buf 1, 1.9; p = 1 - 0.1·1 - 0.01·1.9.
    let got = run_scalar(sgd(0.9, 0.0, false, 0.0), 1.0, &[1.0; 2], &[0.1, 0.01]);
    assert_close(&got, &[0.9, 0.881], 1e-6);
}

#[test]
fn sgd_rounds_like_atens_fused_add() {
    // PyTorch's `p.add_(d, alpha=-lr)` is one FMA on CPUs with FMA units:
    // check bit for bit, on values where an unfused update differs.
    let lr = 0.1f32;
    let mut differs = 0;
    for k in 1..200 {
        let p0 = 1.0 + k as f32 * 0.013;
        let g = (k as f32 * 0.77).sin();
        let mut opt = Optimizer::new(
            sgd(0.0, 0.0, false, 0.0),
            &one_param(1, ParamGroup::Weights),
        )
        .unwrap();
        let mut p = [p0];
        opt.step(0, &mut p, &[g], lr).unwrap();
        assert_eq!(
            p[0].to_bits(),
            g.mul_add(-lr, p0).to_bits(),
            "p0 {p0}, g {g}"
        );
        differs += usize::from(p[0] != p0 + -lr * g);
    }
    assert!(differs > 0, "no case where fusing matters");
}

// --------------------------------------------------------------- RMSprop

/// TensorFlow's RMSprop in f64, as NumPy would write it.
fn rmsprop_tf_reference(
    p: &mut [f64],
    grads: &[Vec<f64>],
    lrs: &[f64],
    rho: f64,
    mu: f64,
    eps: f64,
) {
    let mut ms = vec![1.0; p.len()];
    let mut mom = vec![0.0; p.len()];
    for (g, &lr) in grads.iter().zip(lrs) {
        for i in 0..p.len() {
            ms[i] = rho * ms[i] + (1.0 - rho) * g[i] * g[i];
            mom[i] = mu * mom[i] + lr * g[i] / (ms[i] + eps).sqrt();
            p[i] -= mom[i];
        }
    }
}

#[test]
fn rmsprop_tf_matches_an_f64_reference_over_three_steps() {
    let p0 = [0.5f32, -1.0, 2.0, 0.0];
    let grads: Vec<Vec<f32>> = vec![
        vec![1.0, -0.5, 3.0, 0.01],
        vec![0.8, 0.25, -2.0, 0.0],
        vec![-0.3, 1.5, 0.5, -4.0],
    ];
    let lrs = [0.1f32, 0.05, 0.02];

    let mut opt = Optimizer::new(
        OptimizerConfig {
            weight_decay: WeightDecay::NONE,
            ..OptimizerConfig::rmsprop_tf()
        },
        &one_param(4, ParamGroup::Weights),
    )
    .unwrap();
    let mut p = p0;
    for (g, &lr) in grads.iter().zip(&lrs) {
        opt.step(0, &mut p, g, lr).unwrap();
    }

    let mut want: Vec<f64> = p0.iter().map(|&v| f64::from(v)).collect();
    let grads64: Vec<Vec<f64>> = grads
        .iter()
        .map(|g| g.iter().map(|&v| f64::from(v)).collect())
        .collect();
    let lrs64: Vec<f64> = lrs.iter().map(|&v| f64::from(v)).collect();
    rmsprop_tf_reference(&mut want, &grads64, &lrs64, 0.9, 0.9, 1.0);
    assert_close(&p, &want, 1e-6);

    // And the first step by hand: ms = 0.9·1 + 0.1·1 = 1, mom = 0.1/sqrt(2).
    let mut q = [0.5f32];
    let mut one = Optimizer::new(
        OptimizerConfig::rmsprop_tf(),
        &one_param(1, ParamGroup::Bias),
    )
    .unwrap();
    one.step(0, &mut q, &[1.0], 0.1).unwrap();
    assert_close(&q, &[0.5 - 0.1 / 2f64.sqrt()], 1e-7);
    let state = one.state();
    assert_eq!(state[0].0, "w.momentum");
    assert_eq!(state[1], ("w.mean_square".to_string(), vec![1.0]));
}

#[test]
fn rmsprop_tf_mean_square_starts_at_one() {
    let opt = Optimizer::new(
        OptimizerConfig::rmsprop_tf(),
        &one_param(3, ParamGroup::Weights),
    )
    .unwrap();
    let state = opt.state();
    assert_eq!(state[0], ("w.momentum".to_string(), vec![0.0; 3]));
    assert_eq!(state[1], ("w.mean_square".to_string(), vec![1.0; 3]));
}

#[test]
fn rmsprop_pytorch_flavour_matches_an_f64_reference() {
    let (rho, mu, eps) = (0.99f64, 0.5f64, 1e-8f64);
    let grads = [1.0f32, -2.0, 0.5];
    let lrs = [0.01f32, 0.02, 0.01];
    let got = run_scalar(
        rmsprop(RmsPropFlavour::PyTorch, rho as f32, mu as f32, eps as f32),
        1.0,
        &grads,
        &lrs,
    );
    let (mut p, mut ms, mut buf) = (1.0f64, 0.0f64, 0.0f64);
    let mut want = Vec::new();
    for (&g, &lr) in grads.iter().zip(&lrs) {
        let (g, lr) = (f64::from(g), f64::from(lr));
        ms = rho * ms + (1.0 - rho) * g * g;
        buf = mu * buf + g / (ms.sqrt() + eps);
        p -= lr * buf;
        want.push(p);
    }
    assert_close(&got, &want, 1e-6);
    // First step by hand: ms = 0.01, sqrt 0.1, buf = 10, p = 1 - 0.1.
    assert!((got[0] - 0.9).abs() < 1e-5);
}

// ---------------------------------------------------------- weight decay

#[test]
fn weight_decay_groups_follow_the_policy() {
    let specs = [
        ParamSpec::new("conv.weight", 1, ParamGroup::Weights),
        ParamSpec::new("dw.weight", 1, ParamGroup::DepthwiseWeights),
        ParamSpec::new("bn.gamma", 1, ParamGroup::BatchNorm),
        ParamSpec::new("fc.bias", 1, ParamGroup::Bias),
    ];
    let after = |weight_decay: WeightDecay| -> Vec<f32> {
        let config = OptimizerConfig {
            weight_decay,
            ..sgd(0.0, 0.0, false, 0.0)
        };
        let mut opt = Optimizer::new(config, &specs).unwrap();
        (0..specs.len())
            .map(|i| {
                let mut p = [1.0f32];
                opt.step(i, &mut p, &[0.0], 0.1).unwrap();
                p[0]
            })
            .collect()
    };
    // Default policy: only conv/FC weights decay (1 - 0.1·0.5).
    assert_eq!(after(WeightDecay::new(0.5)), vec![0.95, 1.0, 1.0, 1.0]);
    assert_eq!(
        after(WeightDecay {
            rate: 0.5,
            depthwise: true
        }),
        vec![0.95, 0.95, 1.0, 1.0]
    );
    assert_eq!(after(WeightDecay::NONE), vec![1.0; 4]);
    let default = WeightDecay::default();
    assert_eq!(default.rate, 4e-5);
    assert!(!default.depthwise);
}

// --------------------------------------------------------------- errors

#[test]
fn step_rejects_bad_lengths_indices_and_rates_without_changing_anything() {
    let mut opt = Optimizer::new(
        OptimizerConfig::rmsprop_tf(),
        &one_param(2, ParamGroup::Weights),
    )
    .unwrap();
    let before = opt.state();
    let mut p = [1.0f32, 2.0];
    assert!(matches!(
        opt.step(0, &mut p, &[1.0], 0.1),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        opt.step(0, &mut [1.0], &[1.0, 1.0], 0.1),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        opt.step(1, &mut p, &[1.0, 1.0], 0.1),
        Err(Error::InvalidConfig(_))
    ));
    for lr in [-0.1, f32::NAN, f32::INFINITY] {
        assert!(matches!(
            opt.step(0, &mut p, &[1.0, 1.0], lr),
            Err(Error::InvalidConfig(_))
        ));
    }
    assert_eq!(p, [1.0, 2.0]);
    assert_eq!(opt.state(), before);
    assert_eq!(opt.step_count(), 0);
}

#[test]
fn bad_configurations_are_rejected() {
    let specs = one_param(1, ParamGroup::Weights);
    let bad = [
        sgd(0.0, 0.0, true, 0.0),  // Nesterov without momentum
        sgd(0.9, 0.1, true, 0.0),  // Nesterov with dampening
        sgd(1.0, 0.0, false, 0.0), // momentum 1
        sgd(-0.1, 0.0, false, 0.0),
        sgd(0.9, 1.5, false, 0.0),
        sgd(0.9, 0.0, false, -1.0), // negative weight decay
        sgd(0.9, 0.0, false, f32::NAN),
        rmsprop(RmsPropFlavour::TensorFlow, 1.0, 0.9, 1.0),
        rmsprop(RmsPropFlavour::TensorFlow, 0.9, 0.9, 0.0),
        rmsprop(RmsPropFlavour::PyTorch, 0.99, 0.0, f32::NAN),
    ];
    for config in bad {
        assert!(
            matches!(Optimizer::new(config, &specs), Err(Error::InvalidConfig(_))),
            "{config:?} accepted"
        );
    }
    let twice = [
        ParamSpec::new("a", 1, ParamGroup::Weights),
        ParamSpec::new("a", 2, ParamGroup::Bias),
    ];
    assert!(matches!(
        Optimizer::new(OptimizerConfig::rmsprop_tf(), &twice),
        Err(Error::InvalidConfig(_))
    ));
    assert!(
        Optimizer::new(
            OptimizerConfig::rmsprop_tf(),
            &one_param(1, ParamGroup::Weights)
        )
        .is_ok()
    );
}

// ------------------------------------------------------------ save/load

fn two_params() -> Vec<ParamSpec> {
    vec![
        ParamSpec::new("conv.weight", 3, ParamGroup::Weights),
        ParamSpec::new("dw.weight", 2, ParamGroup::DepthwiseWeights),
    ]
}

fn gradient(step: usize, index: usize) -> Vec<f32> {
    let len = two_params()[index].len;
    (0..len)
        .map(|i| ((step * 7 + index * 3 + i) as f32 * 0.37).sin())
        .collect()
}

/// Runs 6 steps without interruption and with a save after step 3 into a
/// fresh optimizer; the parameters must agree bit for bit.
fn check_resume(config: OptimizerConfig) {
    let specs = two_params();
    let lr = |step: usize| 0.1 / (1 + step) as f32;
    let init = || vec![vec![0.5f32, -0.25, 1.0], vec![2.0f32, -1.0]];

    let mut straight = Optimizer::new(config, &specs).unwrap();
    let mut p_straight = init();
    for step in 0..6 {
        for (i, p) in p_straight.iter_mut().enumerate() {
            straight.step(i, p, &gradient(step, i), lr(step)).unwrap();
        }
    }

    let mut first = Optimizer::new(config, &specs).unwrap();
    let mut p_resumed = init();
    for step in 0..3 {
        for (i, p) in p_resumed.iter_mut().enumerate() {
            first.step(i, p, &gradient(step, i), lr(step)).unwrap();
        }
    }
    let (saved, count) = (first.state(), first.step_count());
    assert_eq!(count, 3);
    drop(first);
    let mut second = Optimizer::new(config, &specs).unwrap();
    // Slot order does not matter.
    let reversed: Vec<_> = saved.iter().rev().cloned().collect();
    second.load_state(&reversed, count).unwrap();
    assert_eq!(second.state(), saved);
    for step in 3..6 {
        for (i, p) in p_resumed.iter_mut().enumerate() {
            second.step(i, p, &gradient(step, i), lr(step)).unwrap();
        }
    }
    assert_eq!(p_resumed, p_straight, "{config:?}");
    assert_eq!(second.state(), straight.state());
    assert_eq!(second.step_count(), 6);
}

#[test]
fn save_and_load_continue_exactly() {
    check_resume(sgd(0.9, 0.0, false, 1e-2));
    check_resume(sgd(0.9, 0.0, true, 0.0));
    check_resume(sgd(0.8, 0.3, false, 0.0));
    check_resume(OptimizerConfig::rmsprop_tf());
    check_resume(OptimizerConfig {
        weight_decay: WeightDecay {
            rate: 1e-2,
            depthwise: true,
        },
        ..rmsprop(RmsPropFlavour::PyTorch, 0.99, 0.9, 1e-8)
    });
}

#[test]
fn load_state_checks_names_and_lengths() {
    let specs = two_params();
    let mut opt = Optimizer::new(OptimizerConfig::rmsprop_tf(), &specs).unwrap();
    let good = opt.state();
    let names: Vec<&str> = good.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "conv.weight.momentum",
            "conv.weight.mean_square",
            "dw.weight.momentum",
            "dw.weight.mean_square"
        ]
    );

    let mut renamed = good.clone();
    renamed[0].0 = "conv.weight.velocity".into();
    let mut short = good.clone();
    short[2].1.pop();
    let missing = good[..3].to_vec();
    let mut twice = good.clone();
    twice.push(good[0].clone());
    let mut changed = good.clone();
    changed[1].1[0] = 42.0;
    changed[2].0 = "nope".into();

    assert!(matches!(
        opt.load_state(&renamed, 1),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(opt.load_state(&short, 1), Err(Error::Shape(_))));
    assert!(matches!(
        opt.load_state(&missing, 1),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        opt.load_state(&twice, 1),
        Err(Error::InvalidConfig(_))
    ));
    assert!(opt.load_state(&changed, 1).is_err());
    // Failed loads change nothing.
    assert_eq!(opt.state(), good);
    assert_eq!(opt.step_count(), 0);

    // SGD's state has momentum slots only.
    let sgd_opt = Optimizer::new(sgd(0.9, 0.0, false, 0.0), &specs).unwrap();
    assert!(matches!(
        opt.load_state(&sgd_opt.state(), 0),
        Err(Error::InvalidConfig(_))
    ));
}

// ------------------------------------------------------------ schedules

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

#[test]
fn exponential_staircase_is_tf_slim_default() {
    let s = Schedule::tf_slim();
    let base = 0.045;
    assert_eq!(s.lr(base, 0.0, 100.0), base);
    assert_eq!(s.lr(base, 2.49, 100.0), base);
    assert!(close(s.lr(base, 2.5, 100.0), base * 0.94));
    assert!(close(s.lr(base, 4.99, 100.0), base * 0.94));
    assert!(close(s.lr(base, 5.0, 100.0), base * 0.94 * 0.94));
    // Epoch from steps: 2.5 epochs of 1000 steps.
    assert!(close(s.lr(base, 2500.0 / 1000.0, 100.0), base * 0.94));
    // Negative epochs count as 0.
    assert_eq!(s.lr(base, -3.0, 100.0), base);

    let smooth = Schedule {
        decay: Decay::Exponential {
            factor: 0.94,
            every_epochs: 2.5,
            staircase: false,
        },
        warmup_epochs: 0.0,
    };
    assert!(close(smooth.lr(base, 1.25, 100.0), base * 0.94f64.sqrt()));
}

#[test]
fn step_decay() {
    let s: Schedule = "step:30:0.1".parse().unwrap();
    assert_eq!(s.lr(0.1, 29.9, 90.0), 0.1);
    assert!(close(s.lr(0.1, 30.0, 90.0), 0.01));
    assert!(close(s.lr(0.1, 60.0, 90.0), 0.001));
}

#[test]
fn cosine_endpoints_and_warm_up() {
    let s = Schedule {
        decay: Decay::Cosine { min_lr: 0.001 },
        warmup_epochs: 0.0,
    };
    assert!(close(s.lr(0.1, 0.0, 10.0), 0.1));
    assert!(close(s.lr(0.1, 5.0, 10.0), (0.1 + 0.001) / 2.0));
    assert!(close(s.lr(0.1, 10.0, 10.0), 0.001));
    assert!(close(s.lr(0.1, 12.0, 10.0), 0.001));

    let warm: Schedule = "cosine:warmup=2".parse().unwrap();
    assert_eq!(warm.lr(0.1, 0.0, 12.0), 0.0);
    assert!(close(warm.lr(0.1, 0.5, 12.0), 0.025));
    assert!(close(warm.lr(0.1, 1.0, 12.0), 0.05));
    assert!(close(warm.lr(0.1, 2.0, 12.0), 0.1));
    assert!(close(warm.lr(0.1, 7.0, 12.0), 0.05)); // half of the 10 cosine epochs
    assert!(warm.lr(0.1, 12.0, 12.0).abs() < 1e-15);
    // No epochs after warm-up: no division by zero.
    assert_eq!(warm.lr(0.1, 2.0, 2.0), 0.0);
    assert_eq!(warm.lr(0.1, 1.0, 1.0), 0.05);
    assert!(warm.lr(0.1, 3.0, 0.0).is_finite());
}

#[test]
fn warm_up_combines_with_exponential_decay() {
    let s: Schedule = "exp:0.5:1:warmup=4".parse().unwrap();
    assert_eq!(s.warmup_epochs, 4.0);
    // The decay clock runs from epoch 0; the ramp multiplies it.
    assert_eq!(s.lr(1.0, 0.0, 10.0), 0.0);
    assert!(close(s.lr(1.0, 1.0, 10.0), 0.5 * 0.25));
    assert!(close(s.lr(1.0, 2.0, 10.0), 0.25 * 0.5));
    assert!(close(s.lr(1.0, 4.0, 10.0), 0.0625));
    let constant: Schedule = "constant:warmup=1".parse().unwrap();
    assert!(close(constant.lr(0.2, 0.25, 10.0), 0.05));
    assert_eq!(constant.lr(0.2, 1.0, 10.0), 0.2);
}

#[test]
fn schedules_parse_and_print() {
    let cases = [
        ("constant", "constant", Schedule::CONSTANT),
        ("exp", "exp:0.94:2.5", Schedule::tf_slim()),
        ("exp:0.94:2.5", "exp:0.94:2.5", Schedule::tf_slim()),
        (
            "EXP:0.94:2.5:staircase",
            "exp:0.94:2.5",
            Schedule::tf_slim(),
        ),
        (
            "exp:0.98:1:smooth:warmup=5",
            "exp:0.98:1:smooth:warmup=5",
            Schedule {
                decay: Decay::Exponential {
                    factor: 0.98,
                    every_epochs: 1.0,
                    staircase: false,
                },
                warmup_epochs: 5.0,
            },
        ),
        (
            "step:30",
            "step:30:0.1",
            Schedule {
                decay: Decay::Step {
                    every_epochs: 30.0,
                    factor: 0.1,
                },
                warmup_epochs: 0.0,
            },
        ),
        (
            "cosine",
            "cosine",
            Schedule {
                decay: Decay::Cosine { min_lr: 0.0 },
                warmup_epochs: 0.0,
            },
        ),
        (
            " cosine:min=1e-5:warmup=2 ",
            "cosine:min=0.00001:warmup=2",
            Schedule {
                decay: Decay::Cosine { min_lr: 1e-5 },
                warmup_epochs: 2.0,
            },
        ),
    ];
    for (text, canonical, want) in cases {
        let got: Schedule = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(got, want, "{text}");
        assert_eq!(got.to_string(), canonical, "{text}");
        assert_eq!(canonical.parse::<Schedule>().unwrap(), want, "{canonical}");
    }
    assert_eq!(Schedule::default(), Schedule::tf_slim());
}

#[test]
fn bad_schedule_strings_are_clear_errors() {
    let cases = [
        ("", "empty"),
        ("linear", "unknown schedule"),
        ("exp:fast", "not a number"),
        ("exp:0.9:2:weird", "staircase or smooth"),
        ("exp:0.9:2:smooth:1", "at most 3"),
        ("exp:0:2", "decay factor"),
        ("exp:0.9:-2", "decay period"),
        ("step", "period"),
        ("step:0", "decay period"),
        ("step:30:0.1:min=0.1", "unknown option"),
        ("constant:3", "at most 0"),
        ("cosine:min=-1", "min_lr"),
        ("cosine:warmup=1:warmup=2", "twice"),
        ("cosine:warmup=nan", "warm-up"),
        ("exp:warmup=2:0.9", "after an option"),
        ("cosine:speed=2", "unknown option"),
    ];
    for (text, needle) in cases {
        match text.parse::<Schedule>() {
            Err(Error::InvalidConfig(message)) => {
                assert!(message.contains(needle), "{text:?}: {message}");
                assert!(message.contains("e.g. exp:0.94:2.5"), "{text:?}: {message}");
            }
            other => panic!("{text:?} gave {other:?}"),
        }
    }
    let bad = Schedule {
        decay: Decay::Step {
            every_epochs: 0.0,
            factor: 0.1,
        },
        warmup_epochs: 0.0,
    };
    assert!(matches!(bad.validate(), Err(Error::InvalidConfig(_))));
}

// -------------------------------------------------------------- metrics

fn sample_rows() -> Vec<EpochMetrics> {
    (1..=3)
        .map(|epoch| EpochMetrics {
            epoch,
            lr: 0.045 * 0.94f64.powi(epoch as i32),
            train_loss: 6.9 / f64::from(epoch) + 0.1 + 0.2,
            train_acc: 0.1 * f64::from(epoch),
            val_loss: (epoch != 2).then_some(1.0 / 3.0),
            val_acc: (epoch != 2).then_some(0.25),
            val_top5: (epoch == 3).then_some(0.7),
            images_per_s: 123.456,
            seconds: 1e-3 * f64::from(epoch),
        })
        .collect()
}

#[test]
fn metrics_csv_round_trips_exactly() {
    let dir = temp_dir("metrics");
    let log = MetricsLog::in_dir(&dir);
    assert_eq!(log.path(), dir.join("metrics.csv"));
    assert_eq!(log.read().unwrap(), vec![], "a missing file has no rows");

    let rows = sample_rows();
    for row in &rows {
        log.append(row).unwrap();
    }
    assert_eq!(log.read().unwrap(), rows);
    let text = fs::read_to_string(log.path()).unwrap();
    assert_eq!(text.lines().next(), Some(HEADER));
    assert_eq!(text.matches(HEADER).count(), 1, "header written once");
    assert_eq!(text.lines().count(), 4);
    let line = text.lines().nth(2).unwrap();
    assert!(
        line.starts_with("2,") && line.ends_with(",0.2,,,,123.456,0.002"),
        "{line}"
    );

    // Non-finite values survive.
    let mut diverged = rows[0].clone();
    diverged.epoch = 4;
    diverged.train_loss = f64::NAN;
    diverged.val_loss = Some(f64::INFINITY);
    log.append(&diverged).unwrap();
    let back = log.read().unwrap();
    assert!(back[3].train_loss.is_nan());
    assert_eq!(back[3].val_loss, Some(f64::INFINITY));

    // Resume from a checkpoint after epoch 2.
    assert_eq!(log.truncate_after(2).unwrap(), rows[..2].to_vec());
    assert_eq!(log.read().unwrap(), rows[..2].to_vec());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn metrics_csv_with_a_bad_header_or_line_is_an_error() {
    let dir = temp_dir("metrics-bad");
    let log = MetricsLog::new(dir.join("m.csv"));
    let good_line = sample_rows()[0].to_csv_line();

    fs::write(log.path(), format!("epoch,loss\n{good_line}\n")).unwrap();
    match log.read() {
        Err(Error::Format(message)) => assert!(message.contains("header"), "{message}"),
        other => panic!("{other:?}"),
    }
    // Appending to a foreign file refuses and leaves it alone.
    assert!(log.append(&sample_rows()[1]).is_err());
    assert_eq!(
        fs::read_to_string(log.path()).unwrap(),
        format!("epoch,loss\n{good_line}\n")
    );

    fs::write(log.path(), "").unwrap();
    assert!(matches!(log.read(), Err(Error::Format(_))));

    fs::write(log.path(), format!("{HEADER}\n{good_line}\n1,2,3\n")).unwrap();
    match log.read() {
        Err(Error::Format(message)) => assert!(message.contains("line 3"), "{message}"),
        other => panic!("{other:?}"),
    }
    fs::write(log.path(), format!("{HEADER}\n1,x,1,1,,,,1,1\n")).unwrap();
    match log.read() {
        Err(Error::Format(message)) => assert!(message.contains("lr"), "{message}"),
        other => panic!("{other:?}"),
    }
    // CRLF and blank lines are fine.
    fs::write(log.path(), format!("{HEADER}\r\n{good_line}\r\n\r\n")).unwrap();
    assert_eq!(log.read().unwrap(), sample_rows()[..1].to_vec());
    fs::remove_dir_all(&dir).unwrap();
}

// --------------------------------------------------------------- atomic

fn leftovers(dir: &std::path::Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

#[test]
fn atomic_write_replaces_and_leaves_no_temporary_files() {
    let dir = temp_dir("atomic");
    let path = dir.join("checkpoint.bin");
    write_atomic(&path, b"first").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"first");
    write_atomic(&path, b"second, longer").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"second, longer");
    write_atomic(&path, b"").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"");
    assert!(leftovers(&dir).is_empty());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failed_atomic_writes_are_errors_and_keep_the_old_file() {
    let dir = temp_dir("atomic-fail");

    // A missing directory.
    let missing = dir.join("no-such-dir").join("x.bin");
    match write_atomic(&missing, b"data") {
        Err(Error::Io { path, .. }) => assert!(path.contains("no-such-dir")),
        other => panic!("{other:?}"),
    }

    // The target is a non-empty directory: the rename fails after the
    // temporary file was written; it must be cleaned up.
    let occupied = dir.join("occupied");
    fs::create_dir(&occupied).unwrap();
    fs::write(occupied.join("keep"), b"keep").unwrap();
    assert!(matches!(
        write_atomic(&occupied, b"data"),
        Err(Error::Io { .. })
    ));
    assert_eq!(fs::read(occupied.join("keep")).unwrap(), b"keep");
    assert!(leftovers(&dir).is_empty());

    // A read-only directory (root ignores the permission, so only checked
    // where it takes effect).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let locked = dir.join("locked");
        fs::create_dir(&locked).unwrap();
        let target = locked.join("metrics.csv");
        fs::write(&target, b"old good content").unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o555)).unwrap();
        let enforced = fs::write(locked.join("probe"), b"").is_err();
        if enforced {
            assert!(matches!(
                write_atomic(&target, b"new"),
                Err(Error::Io { .. })
            ));
            assert_eq!(fs::read(&target).unwrap(), b"old good content");
            assert!(leftovers(&locked).is_empty());
        }
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::remove_dir_all(&dir).unwrap();
}

// ----------------------------------------------------------------- plot

fn curve(epochs: u32) -> Vec<EpochMetrics> {
    (1..=epochs)
        .map(|epoch| {
            let e = f64::from(epoch);
            EpochMetrics {
                epoch,
                lr: 0.045,
                train_loss: 6.9 / e,
                train_acc: 1.0 - 1.0 / (e + 1.0),
                val_loss: Some(7.0 / e + 0.1),
                val_acc: Some(0.9 - 1.0 / (e + 1.0)),
                val_top5: Some(0.95 - 0.5 / (e + 1.0)),
                images_per_s: 100.0,
                seconds: 10.0,
            }
        })
        .collect()
}

fn plot_and_decode(rows: &[EpochMetrics], name: &str) -> image::RgbImage {
    let dir = temp_dir(name);
    let path = dir.join("curves.png");
    plot_curves(rows, &path).unwrap();
    let image = image::open(&path).unwrap().to_rgb8();
    fs::remove_dir_all(&dir).unwrap();
    assert_eq!(image.dimensions(), (PLOT_WIDTH, PLOT_HEIGHT));
    image
}

fn count_color(image: &image::RgbImage, rgb: [u8; 3]) -> usize {
    image.pixels().filter(|p| p.0 == rgb).count()
}

const TRAIN_BLUE: [u8; 3] = [31, 119, 180];
const VAL_ORANGE: [u8; 3] = [255, 127, 14];

#[test]
fn plot_of_one_epoch() {
    let image = plot_and_decode(&curve(1), "plot-1");
    // Markers (and legend swatches) are drawn in both colours.
    assert!(count_color(&image, TRAIN_BLUE) > 2 * 25);
    assert!(count_color(&image, VAL_ORANGE) > 2 * 25);
    // Text and axes are black.
    assert!(count_color(&image, [0, 0, 0]) > 1000);
}

#[test]
fn plot_of_twenty_epochs() {
    let image = plot_and_decode(&curve(20), "plot-20");
    // Lines between points: many more coloured pixels than markers alone.
    assert!(count_color(&image, TRAIN_BLUE) > 2 * 20 * 25);
    assert!(
        count_color(&image, [44, 160, 44]) > 20 * 25,
        "val top-5 drawn"
    );
}

#[test]
fn plot_with_nan_inf_missing_and_constant_values() {
    let mut rows = curve(10);
    rows[3].train_loss = f64::NAN;
    rows[4].train_loss = f64::INFINITY;
    rows[5].val_loss = Some(f64::NEG_INFINITY);
    rows[6].val_loss = None;
    rows[6].val_acc = None;
    for row in &mut rows {
        row.train_acc = 0.5; // constant curve
        row.val_top5 = None;
    }
    let image = plot_and_decode(&rows, "plot-nan");
    assert!(count_color(&image, TRAIN_BLUE) > 100);
    assert_eq!(
        count_color(&image, [44, 160, 44]),
        0,
        "no top-5 curve when never logged"
    );

    // Everything non-finite, constant zero accuracy, and no rows at all.
    let mut broken = curve(3);
    for row in &mut broken {
        row.train_loss = f64::NAN;
        row.val_loss = Some(f64::NAN);
        row.train_acc = 0.0;
        row.val_acc = Some(0.0);
    }
    plot_and_decode(&broken, "plot-broken");
    plot_and_decode(&[], "plot-empty");
}

#[test]
fn plot_to_a_missing_directory_is_an_io_error() {
    let path = std::env::temp_dir().join("mobilenet-no-such-dir-for-plot/curves.png");
    assert!(matches!(
        plot_curves(&curve(2), &path),
        Err(Error::Io { .. })
    ));
}
