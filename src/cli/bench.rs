//! `mobilenet bench`: latency and throughput of the engine on this machine.

use std::time::Instant;

use serde_json::json;

use crate::cli::engine_args::{EngineArgs, quantile};
use mobilenet::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    engine: EngineArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Time training steps (forward + backward + SGD update) instead of
    /// inference.
    #[arg(long)]
    train: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let a = &args.engine;
    if args.train {
        return crate::cli::bench_train::run(a, args.json);
    }
    let mut p = a.prepare(true)?;
    let batch = a.batch;
    for _ in 0..a.warmup {
        p.plan
            .run(&p.input, batch, &mut p.logits, &mut p.workspace, &p.par)?;
    }
    let mut ms = Vec::with_capacity(a.runs);
    for _ in 0..a.runs {
        let start = Instant::now();
        p.plan
            .run(&p.input, batch, &mut p.logits, &mut p.workspace, &p.par)?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let (median, p10, p90) = (quantile(&ms, 0.5), quantile(&ms, 0.1), quantile(&ms, 0.9));
    let images_per_s = batch as f64 / (median / 1e3);
    let gflops = 2.0 * p.plan.mult_adds() as f64 * images_per_s / 1e9;
    let isa = p.plan.isa().name();
    if args.json {
        let value = json!({
            "alpha": p.config.alpha,
            "resolution": p.config.resolution,
            "batch": batch,
            "threads": a.threads,
            "isa": isa,
            "median_ms": median,
            "p10_ms": p10,
            "p90_ms": p90,
            "images_per_s": images_per_s,
            "gflops": gflops,
        });
        println!("{value}");
    } else {
        println!(
            "{}: batch {batch}, {} thread(s), {isa}, {} runs after {} warm-up",
            p.config.name(),
            a.threads,
            a.runs,
            a.warmup
        );
        println!("latency   median {median:.3} ms   p10 {p10:.3} ms   p90 {p90:.3} ms");
        println!("throughput {images_per_s:.1} images/s   {gflops:.1} GFLOP/s");
    }
    Ok(())
}
