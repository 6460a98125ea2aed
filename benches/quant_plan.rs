//! Timing of the compiled uint8 plan on the official 1.0_224 MobileNet v1
//! (extractor + head), batch 1, per integer ISA and thread count, against
//! the reference executor; then a per-step profile of the best path.
//!
//! `cargo bench --bench quant_plan` (needs `../shared` or
//! `MOBILENET_SHARED`; `REPS` sets the runs per figure, `ISAS` the paths). Prints medians; the machine may be shared, so
//! compare figures from the same run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mobilenet::engine::Parallelism;
use mobilenet::kernels::int8::IntIsa;
use mobilenet::quant::plan::{QuantizedPlan, QuantizedPlanOptions, QuantizedWorkspace};
use mobilenet::quant::{QuantizedPipeline, QuantizedTflite};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let shared = std::env::var_os("MOBILENET_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let dir = shared.join("models/coral_test_data_mobilenet_v1_quant");
    let Ok(extractor) =
        QuantizedTflite::read(dir.join("mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"))
    else {
        eprintln!("SKIPPED: no models under {}", dir.display());
        return;
    };
    let head =
        QuantizedTflite::read(dir.join("mobilenet_quant_v1_224_head_layers.tflite")).unwrap();
    let model = QuantizedPipeline::new(vec![extractor, head]).unwrap();
    let input: Vec<u8> = (0..model.input().numel())
        .map(|i| (i * 37 % 251) as u8)
        .collect();
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);

    let start = Instant::now();
    // The reference: plain loops, for the figure and the check below.
    let reference = model.run(&input).unwrap().data;
    println!(
        "reference executor: {:.2} ms (one run)",
        start.elapsed().as_secs_f64() * 1e3
    );

    let mut best = None;
    // `ISAS=avx2,avx512vnni` limits the paths timed.
    let wanted = std::env::var("ISAS").ok();
    for isa in IntIsa::supported() {
        if wanted
            .as_ref()
            .is_some_and(|w| !w.split(',').any(|n| n == isa.name()))
        {
            continue;
        }
        let options = QuantizedPlanOptions {
            isa: Some(isa),
            ..Default::default()
        };
        let plan = QuantizedPlan::compile(&model, &options).unwrap();
        for threads in [1, 2] {
            let par = Parallelism::new(threads).unwrap();
            let mut ws = QuantizedWorkspace::new(&plan, &par);
            let mut out = vec![0u8; plan.output().numel()];
            plan.run(&input, 1, &mut out, &mut ws, &par).unwrap();
            assert_eq!(out, reference, "{isa} differs from the reference");
            let times: Vec<Duration> = (0..reps)
                .map(|_| {
                    let t = Instant::now();
                    plan.run(&input, 1, &mut out, &mut ws, &par).unwrap();
                    t.elapsed()
                })
                .collect();
            let m = median(times);
            println!(
                "plan {isa:>10} threads {threads}: median {:.3} ms over {reps}",
                m.as_secs_f64() * 1e3
            );
            if threads == 1 {
                best = Some(plan_profile(&plan, &input, reps));
            }
        }
    }
    if let Some(profile) = best {
        println!("per step, best ISA, 1 thread (median of {reps}):\n{profile}");
    }
}

fn plan_profile(plan: &QuantizedPlan, input: &[u8], reps: usize) -> String {
    let par = Parallelism::new(1).unwrap();
    let mut ws = QuantizedWorkspace::new(plan, &par);
    let mut out = vec![0u8; plan.output().numel()];
    let steps = plan.steps().len();
    let mut samples = vec![Vec::new(); steps];
    for _ in 0..reps {
        let mut t = vec![Duration::ZERO; steps];
        plan.run_profiled(input, 1, &mut out, &mut ws, &par, &mut t)
            .unwrap();
        for (s, d) in samples.iter_mut().zip(t) {
            s.push(d);
        }
    }
    let mut text = String::new();
    for (info, s) in plan.steps().zip(samples) {
        let m = median(s);
        let gops = info.mult_adds as f64 / m.as_secs_f64().max(1e-9) / 1e9;
        text += &format!(
            "  {:>8.1} us {:>6.1} GMAC/s {:<18} {:?}\n",
            m.as_secs_f64() * 1e6,
            gops,
            info.kind,
            info.shape
        );
    }
    text
}
