//! `mobilenet bench --train`: images/s of a whole training step (forward,
//! backward, optimizer update) on a random network and batch, the figure
//! `bench/train_compare.py` sets beside PyTorch's.

use std::time::Instant;

use serde_json::json;

use crate::cli::engine_args::{EngineArgs, quantile};
use mobilenet::Result;
use mobilenet::engine::Parallelism;
use mobilenet::model::MobileNet;
use mobilenet::train::network::{StepOptions, TrainNet};
use mobilenet::train::optim::{Optimizer, OptimizerConfig, SgdConfig};

/// The learning rate of the timed SGD steps: small, so that many steps on
/// one batch stay finite.
const LR: f32 = 1e-3;

/// Times `runs` training steps after `warmup` untimed ones: SGD with
/// momentum 0.9 and the default weight decay, as the PyTorch side does.
pub fn run(a: &EngineArgs, json_output: bool) -> Result<()> {
    let config = a.config()?;
    let net = MobileNet::random(&config, 0)?;
    let mut trainee = TrainNet::new(&net)?;
    if let Some(isa) = a.isa {
        if !isa.is_supported() {
            return Err(mobilenet::Error::InvalidConfig(format!(
                "this CPU cannot run {isa} code"
            )));
        }
        trainee.set_isa(isa);
    }
    let mut optimizer = Optimizer::new(
        OptimizerConfig::sgd(SgdConfig::default()),
        trainee.param_specs(),
    )?;
    let par = Parallelism::new(a.threads)?;
    let r = config.resolution;
    // A fixed pattern in [-1, 1] and labels cycling through the classes.
    let images: Vec<f32> = (0..a.batch * r * r * 3)
        .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
        .collect();
    let labels: Vec<usize> = (0..a.batch).map(|i| i % config.classes).collect();
    let options = StepOptions::default();
    let mut step = || -> Result<f32> {
        par.install(|| {
            let stats = trainee.forward_backward(&images, &labels, &options)?;
            for (i, (param, grad)) in trainee.params_and_grads().enumerate() {
                optimizer.step(i, param, grad, LR)?;
            }
            Ok(stats.loss)
        })
    };
    for _ in 0..a.warmup {
        step()?;
    }
    let mut ms = Vec::with_capacity(a.runs);
    let mut last_loss = f32::NAN;
    for _ in 0..a.runs {
        let start = Instant::now();
        last_loss = step()?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let (median, p10, p90) = (quantile(&ms, 0.5), quantile(&ms, 0.1), quantile(&ms, 0.9));
    let images_per_s = a.batch as f64 / (median / 1e3);
    let isa = a.isa.unwrap_or_else(mobilenet::kernels::Isa::detect).name();
    if json_output {
        let value = json!({
            "mode": "train",
            "alpha": config.alpha,
            "resolution": r,
            "strides": config.strides,
            "batch": a.batch,
            "threads": a.threads,
            "isa": isa,
            "median_ms": median,
            "p10_ms": p10,
            "p90_ms": p90,
            "images_per_s": images_per_s,
            "loss": last_loss,
        });
        println!("{value}");
    } else {
        println!(
            "{} training step (forward + backward + SGD): batch {}, {} thread(s), {isa}, {} runs after {} warm-up",
            config.name(),
            a.batch,
            a.threads,
            a.runs,
            a.warmup
        );
        println!("step      median {median:.2} ms   p10 {p10:.2} ms   p90 {p90:.2} ms");
        println!("throughput {images_per_s:.1} images/s   (last loss {last_loss:.4})");
    }
    Ok(())
}
