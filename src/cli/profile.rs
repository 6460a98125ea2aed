//! `mobilenet profile`: time per layer beside mult-adds per layer, the
//! paper's "FLOPs are not latency" made visible on the machine at hand.

use std::time::Duration;

use serde_json::json;

use crate::cli::engine_args::{EngineArgs, QuantPrepared, quantile};
use crate::cli::format::{table, thousands};
use crate::cli::quantized::layer_aliases;
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

/// One timed step, whichever engine ran it.
struct Step {
    /// Our layer name (for a uint8 model: its TFLite tensor's name when the
    /// op has no counterpart among our layers).
    name: String,
    /// The TFLite tensor name, for uint8 models.
    tensor: Option<String>,
    kinds: Vec<String>,
    /// Output shape of one image.
    output: Vec<usize>,
    mult_adds: u64,
}

/// What was profiled, for the heading.
struct Heading {
    name: String,
    alpha: f64,
    resolution: usize,
    isa: String,
    dtype: &'static str,
}

pub fn run(args: &Args) -> Result<()> {
    let a = &args.engine;
    if let Some(q) = a.prepare_quantized()? {
        return run_quantized(args, q);
    }
    let mut p = a.prepare(args.fused)?;
    let steps: Vec<Step> = p
        .plan
        .steps()
        .map(|s| Step {
            name: s.name.clone(),
            tensor: None,
            kinds: s.kinds.iter().map(|k| k.name().to_string()).collect(),
            output: s.output.to_vec(),
            mult_adds: s.mult_adds,
        })
        .collect();
    for _ in 0..a.warmup {
        p.plan
            .run(&p.input, a.batch, &mut p.logits, &mut p.workspace, &p.par)?;
    }
    let medians = time_steps(a, steps.len(), |times| {
        p.plan.run_profiled(
            &p.input,
            a.batch,
            &mut p.logits,
            &mut p.workspace,
            &p.par,
            times,
        )
    })?;
    let heading = Heading {
        name: p.config.name(),
        alpha: p.config.alpha,
        resolution: p.config.resolution,
        isa: p.plan.isa().to_string(),
        dtype: "float32",
    };
    report(args, &heading, &steps, &medians);
    Ok(())
}

/// An integer model, timed step by step, one image after the other: a
/// uint8 file's steps named after our layers where they have one, with
/// their TFLite tensor names; an int8 file's steps are our layers.
fn run_quantized(args: &Args, mut q: QuantPrepared) -> Result<()> {
    let a = &args.engine;
    let engine_steps = q.engine.steps();
    let kinds: Vec<&str> = engine_steps.iter().map(|s| s.kind).collect();
    let uint8 = q.engine.dtype() == "uint8";
    let steps: Vec<Step> = engine_steps
        .iter()
        .zip(layer_aliases(&kinds))
        .map(|(s, alias)| Step {
            name: alias.unwrap_or_else(|| s.name.clone()),
            tensor: uint8.then(|| s.name.clone()),
            kinds: vec![s.kind.to_string()],
            output: s.output.clone(),
            mult_adds: s.mult_adds,
        })
        .collect();
    for _ in 0..a.warmup {
        q.engine.run(&q.input, a.batch, &q.par)?;
    }
    let medians = time_steps(a, steps.len(), |times| {
        q.engine.run_profiled(&q.input, a.batch, &q.par, times)
    })?;
    let heading = Heading {
        name: q.name.clone(),
        alpha: q.alpha,
        resolution: q.resolution,
        isa: q.engine.isa().to_string(),
        dtype: q.engine.dtype(),
    };
    report(args, &heading, &steps, &medians);
    Ok(())
}

/// `--runs` profiled runs; the median time of each step per image, in ms.
fn time_steps(
    a: &EngineArgs,
    n_steps: usize,
    mut run: impl FnMut(&mut [Duration]) -> Result<()>,
) -> Result<Vec<f64>> {
    let mut times = vec![Duration::ZERO; n_steps];
    // samples[step][run], in milliseconds per image.
    let mut samples = vec![Vec::with_capacity(a.runs); n_steps];
    for _ in 0..a.runs {
        times.fill(Duration::ZERO);
        run(&mut times)?;
        for (s, t) in samples.iter_mut().zip(&times) {
            s.push(t.as_secs_f64() * 1e3 / a.batch as f64);
        }
    }
    Ok(samples
        .iter_mut()
        .map(|s| {
            s.sort_by(f64::total_cmp);
            quantile(s, 0.5)
        })
        .collect())
}

fn report(args: &Args, heading: &Heading, steps: &[Step], medians: &[f64]) {
    let a = &args.engine;
    let total_ms: f64 = medians.iter().sum();
    let total_mult_adds: u64 = steps.iter().map(|s| s.mult_adds).sum();
    let rows: Vec<_> = steps
        .iter()
        .zip(medians)
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
                100.0 * step.mult_adds as f64 / total_mult_adds.max(1) as f64,
                gflops,
            )
        })
        .collect();
    if args.json {
        let layers: Vec<_> = rows
            .iter()
            .map(|(step, ms, time_share, ma_share, gflops)| {
                let mut layer = json!({
                    "name": step.name,
                    "kinds": step.kinds,
                    "output": step.output,
                    "time_ms": ms,
                    "time_percent": time_share,
                    "mult_adds": step.mult_adds,
                    "mult_adds_percent": ma_share,
                    "gflops": gflops,
                });
                if let Some(tensor) = &step.tensor {
                    layer["tensor"] = json!(tensor);
                }
                layer
            })
            .collect();
        let value = json!({
            "alpha": heading.alpha,
            "resolution": heading.resolution,
            "batch": a.batch,
            "threads": a.threads,
            "isa": heading.isa,
            "dtype": heading.dtype,
            "layers": layers,
            "total_ms": total_ms,
            "gflops": 2.0 * total_mult_adds as f64 / (total_ms * 1e6),
        });
        println!("{value}");
        return;
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
        let shape: Vec<String> = step.output.iter().map(usize::to_string).collect();
        cells.push(vec![
            step.name.clone(),
            shape.join("x"),
            format!("{ms:.4}"),
            format!("{time_share:.1}"),
            thousands(step.mult_adds),
            format!("{ma_share:.1}"),
            format!("{gflops:.1}"),
        ]);
    }
    println!(
        "{} ({}): batch {}, {} thread(s), {}, median of {} runs per layer, per image",
        heading.name, heading.dtype, a.batch, a.threads, heading.isa, a.runs
    );
    print!("{}", table(&cells, &[2, 3, 4, 5, 6]));
    println!(
        "total {total_ms:.3} ms, {:.1} GFLOP/s",
        2.0 * total_mult_adds as f64 / (total_ms * 1e6)
    );
}
