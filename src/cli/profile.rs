//! `mobilenet profile`: time per layer beside mult-adds per layer, the
//! paper's "FLOPs are not latency" made visible on the machine at hand.

use std::time::Duration;

use serde_json::json;

use crate::cli::engine_args::{EngineArgs, quantile};
use crate::cli::format::{table, thousands};
use mobilenet::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    engine: EngineArgs,
    /// Profile the fused plan that `bench` runs (depthwise + pointwise as
    /// one step) instead of one step per layer.
    #[arg(long, conflicts_with = "no_fuse")]
    fused: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let a = &args.engine;
    let mut p = a.prepare(args.fused)?;
    let steps: Vec<_> = p.plan.steps().cloned().collect();
    let mut times = vec![Duration::ZERO; steps.len()];
    for _ in 0..a.warmup {
        p.plan
            .run(&p.input, a.batch, &mut p.logits, &mut p.workspace, &p.par)?;
    }
    // samples[step][run], in milliseconds per image.
    let mut samples = vec![Vec::with_capacity(a.runs); steps.len()];
    for _ in 0..a.runs {
        times.fill(Duration::ZERO);
        p.plan.run_profiled(
            &p.input,
            a.batch,
            &mut p.logits,
            &mut p.workspace,
            &p.par,
            &mut times,
        )?;
        for (s, t) in samples.iter_mut().zip(&times) {
            s.push(t.as_secs_f64() * 1e3 / a.batch as f64);
        }
    }
    let medians: Vec<f64> = samples
        .iter_mut()
        .map(|s| {
            s.sort_by(f64::total_cmp);
            quantile(s, 0.5)
        })
        .collect();
    let total_ms: f64 = medians.iter().sum();
    let total_mult_adds = p.plan.mult_adds();
    let rows: Vec<_> = steps
        .iter()
        .zip(&medians)
        .map(|(step, &ms)| {
            let gflops = if ms > 0.0 {
                2.0 * step.mult_adds as f64 / (ms * 1e6)
            } else {
                0.0
            };
            (
                step,
                ms,
                100.0 * ms / total_ms,
                100.0 * step.mult_adds as f64 / total_mult_adds as f64,
                gflops,
            )
        })
        .collect();
    if args.json {
        let layers: Vec<_> = rows
            .iter()
            .map(|(step, ms, time_share, ma_share, gflops)| {
                json!({
                    "name": step.name,
                    "kinds": step.kinds.iter().map(|k| k.name()).collect::<Vec<_>>(),
                    "output": step.output,
                    "time_ms": ms,
                    "time_percent": time_share,
                    "mult_adds": step.mult_adds,
                    "mult_adds_percent": ma_share,
                    "gflops": gflops,
                })
            })
            .collect();
        let value = json!({
            "alpha": p.config.alpha,
            "resolution": p.config.resolution,
            "batch": a.batch,
            "threads": a.threads,
            "isa": p.plan.isa().name(),
            "layers": layers,
            "total_ms": total_ms,
            "gflops": 2.0 * total_mult_adds as f64 / (total_ms * 1e6),
        });
        println!("{value}");
        return Ok(());
    }
    let mut cells = vec![
        [
            "Layer",
            "Output",
            "Time ms",
            "Time %",
            "Mult-Adds",
            "Mult-Adds %",
            "GFLOP/s",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for (step, ms, time_share, ma_share, gflops) in &rows {
        let [h, w, c] = step.output;
        cells.push(vec![
            step.name.clone(),
            format!("{h}x{w}x{c}"),
            format!("{ms:.4}"),
            format!("{time_share:.1}"),
            thousands(step.mult_adds),
            format!("{ma_share:.1}"),
            format!("{gflops:.1}"),
        ]);
    }
    println!(
        "{}: batch {}, {} thread(s), {}, median of {} runs per layer, per image",
        p.config.name(),
        a.batch,
        a.threads,
        p.plan.isa(),
        a.runs
    );
    print!("{}", table(&cells, &[2, 3, 4, 5, 6]));
    println!(
        "total {total_ms:.3} ms, {:.1} GFLOP/s",
        2.0 * total_mult_adds as f64 / (total_ms * 1e6)
    );
    Ok(())
}
