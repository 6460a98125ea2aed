//! `mobilenet bench`: latency and throughput of the engine on this machine.

use std::time::Instant;

use serde_json::json;

use crate::cli::engine_args::{EngineArgs, QuantPrepared, quantile};
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

/// What a benchmark measured, and of what.
struct Report<'a> {
    name: String,
    alpha: f64,
    resolution: usize,
    isa: &'a str,
    mult_adds: u64,
    dtype: &'a str,
    /// Sorted run times, ms.
    ms: Vec<f64>,
}

pub fn run(args: &Args) -> Result<()> {
    let a = &args.engine;
    if args.train {
        return crate::cli::bench_train::run(a, args.json);
    }
    if let Some(q) = a.prepare_quantized()? {
        return run_quantized(args, q);
    }
    let mut p = a.prepare(true)?;
    let ms = time_runs(a, || {
        p.plan
            .run(&p.input, a.batch, &mut p.logits, &mut p.workspace, &p.par)
    })?;
    print_report(
        args,
        &Report {
            name: p.config.name(),
            alpha: p.config.alpha,
            resolution: p.config.resolution,
            isa: p.plan.isa().name(),
            mult_adds: p.plan.mult_adds(),
            dtype: "float32",
            ms,
        },
    );
    Ok(())
}

fn run_quantized(args: &Args, mut q: QuantPrepared) -> Result<()> {
    let a = &args.engine;
    let ms = time_runs(a, || q.engine.run(&q.input, a.batch, &q.par))?;
    print_report(
        args,
        &Report {
            name: q.name.clone(),
            alpha: q.alpha,
            resolution: q.resolution,
            isa: q.engine.isa(),
            mult_adds: q.engine.mult_adds(),
            dtype: q.engine.dtype(),
            ms,
        },
    );
    Ok(())
}

/// Warm-up runs, then timed runs; returns the sorted times in ms.
fn time_runs(a: &EngineArgs, mut run: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    for _ in 0..a.warmup {
        run()?;
    }
    let mut ms = Vec::with_capacity(a.runs);
    for _ in 0..a.runs {
        let start = Instant::now();
        run()?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}

fn print_report(args: &Args, r: &Report<'_>) {
    let a = &args.engine;
    let batch = a.batch;
    let (median, p10, p90) = (
        quantile(&r.ms, 0.5),
        quantile(&r.ms, 0.1),
        quantile(&r.ms, 0.9),
    );
    let images_per_s = batch as f64 / (median / 1e3);
    let gflops = 2.0 * r.mult_adds as f64 * images_per_s / 1e9;
    let isa = r.isa;
    if args.json {
        let value = json!({
            "alpha": r.alpha,
            "resolution": r.resolution,
            "batch": batch,
            "threads": a.threads,
            "isa": isa,
            "dtype": r.dtype,
            "median_ms": median,
            "p10_ms": p10,
            "p90_ms": p90,
            "images_per_s": images_per_s,
            "gflops": gflops,
        });
        println!("{value}");
    } else {
        println!(
            "{} ({}): batch {batch}, {} thread(s), {isa}, {} runs after {} warm-up",
            r.name, r.dtype, a.threads, a.runs, a.warmup
        );
        println!("latency   median {median:.3} ms   p10 {p10:.3} ms   p90 {p90:.3} ms");
        println!("throughput {images_per_s:.1} images/s   {gflops:.1} GFLOP/s");
    }
}
