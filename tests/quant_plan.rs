//! The compiled uint8 plan (`quant::plan`) on the official quantized
//! MobileNet v1 files: on every integer ISA its outputs equal the reference
//! executor's and LiteRT's, byte for byte; batches equal single images;
//! one and two threads agree; bad arguments are errors.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{json, read};
use mobilenet::engine::Parallelism;
use mobilenet::kernels::int8::IntIsa;
use mobilenet::quant::plan::{QuantizedPlan, QuantizedPlanOptions, QuantizedWorkspace};
use mobilenet::quant::{QuantizedPipeline, QuantizedTflite};
use serde_json::Value;

const IMAGES: [&str; 3] = ["coral_cat_bmp", "mpl_grace_hopper", "skimage_chelsea"];
const CORAL: &str = "models/coral_test_data_mobilenet_v1_quant";
const MODELS: [(&str, usize, &[&str]); 4] = [
    ("0.25_128", 128, &["mobilenet_v1_0.25_128_quant.tflite"]),
    ("0.5_160", 160, &["mobilenet_v1_0.5_160_quant.tflite"]),
    ("0.75_192", 192, &["mobilenet_v1_0.75_192_quant.tflite"]),
    (
        "1.0_224",
        224,
        &[
            "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite",
            "mobilenet_quant_v1_224_head_layers.tflite",
        ],
    ),
];

fn pipeline(shared: &Path, files: &[&str]) -> QuantizedPipeline {
    let stages = files
        .iter()
        .map(|f| QuantizedTflite::from_bytes(&read(&shared.join(CORAL).join(f))).unwrap())
        .collect();
    QuantizedPipeline::new(stages).unwrap()
}

fn input(shared: &Path, image: &str, size: usize) -> Vec<u8> {
    read(&shared.join(format!("refs/inputs/{image}__{size}.u8.bin")))
}

fn u8_list(v: &Value) -> Vec<u8> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|x| u8::try_from(x.as_u64().expect("an integer")).expect("a byte"))
        .collect()
}

fn plan(model: &QuantizedPipeline, isa: IntIsa) -> QuantizedPlan {
    let options = QuantizedPlanOptions {
        isa: Some(isa),
        ..Default::default()
    };
    QuantizedPlan::compile(model, &options).unwrap()
}

#[test]
fn plan_equals_reference_and_litert_on_every_isa() {
    let Some(shared) = common::shared_dir("plan_equals_reference_and_litert_on_every_isa") else {
        return;
    };
    let one = Parallelism::new(1).unwrap();
    for (id, size, files) in MODELS {
        let model = pipeline(&shared, files);
        let images: Vec<Vec<u8>> = IMAGES.iter().map(|i| input(&shared, i, size)).collect();
        let reference: Vec<Vec<u8>> = images.iter().map(|x| model.run(x).unwrap().data).collect();
        for (image, want) in IMAGES.iter().zip(&reference) {
            let litert = json(&shared.join(format!("refs/tflite_quant_v1_{id}__{image}.json")));
            assert_eq!(
                *want,
                u8_list(&litert["outputs"]["probs_u8"]),
                "{id} {image}: reference vs LiteRT"
            );
        }
        for isa in IntIsa::supported() {
            let plan = plan(&model, isa);
            assert_eq!(plan.isa(), isa);
            assert_eq!(plan.input(), model.input());
            assert_eq!(plan.output(), model.output());
            let mut ws = QuantizedWorkspace::new(&plan, &one);
            for ((image, x), want) in IMAGES.iter().zip(&images).zip(&reference) {
                let mut got = vec![0u8; plan.output().numel()];
                plan.run(x, 1, &mut got, &mut ws, &one).unwrap();
                assert_eq!(&got, want, "{id} {image} on {isa}");
                let litert = json(&shared.join(format!("refs/tflite_quant_v1_{id}__{image}.json")));
                assert_eq!(
                    ws.logits(),
                    u8_list(&litert["outputs"]["logits_u8"]),
                    "{id} {image} logits on {isa}"
                );
            }
            // A batch of all three, and two threads (batch-split and
            // step-split), give the same bytes as single images.
            let batch: Vec<u8> = images.concat();
            let want: Vec<u8> = reference.concat();
            let two = Parallelism::new(2).unwrap();
            for par in [&one, &two] {
                let mut ws = QuantizedWorkspace::new(&plan, par);
                let mut got = vec![0u8; want.len()];
                plan.run(&batch, 3, &mut got, &mut ws, par).unwrap();
                assert_eq!(
                    got,
                    want,
                    "{id} batch of 3, {} threads, {isa}",
                    par.threads()
                );
                let mut single = vec![0u8; plan.output().numel()];
                plan.run(&images[0], 1, &mut single, &mut ws, par).unwrap();
                assert_eq!(
                    single,
                    reference[0],
                    "{id} 1 image, {} threads",
                    par.threads()
                );
            }
        }
    }
}

#[test]
fn profiled_run_equals_run_and_times_every_step() {
    let Some(shared) = common::shared_dir("profiled_run_equals_run_and_times_every_step") else {
        return;
    };
    let (_, size, files) = MODELS[0];
    let model = pipeline(&shared, files);
    let plan = QuantizedPlan::compile(&model, &QuantizedPlanOptions::default()).unwrap();
    let par = Parallelism::new(2).unwrap();
    let mut ws = QuantizedWorkspace::new(&plan, &par);
    let x = [
        input(&shared, IMAGES[0], size),
        input(&shared, IMAGES[1], size),
    ]
    .concat();
    let mut want = vec![0u8; 2 * plan.output().numel()];
    plan.run(&x, 2, &mut want, &mut ws, &par).unwrap();
    let mut times = vec![Duration::ZERO; plan.steps().len()];
    let mut got = vec![0u8; want.len()];
    plan.run_profiled(&x, 2, &mut got, &mut ws, &par, &mut times)
        .unwrap();
    assert_eq!(got, want);
    assert!(times.iter().any(|t| !t.is_zero()));
    let total: u64 = plan.steps().map(|s| s.mult_adds).sum();
    assert!(total > 10_000_000, "{total} mult-adds");
    assert!(plan.steps().any(|s| s.kind == "DEPTHWISE_CONV_2D"));
    let mut short = vec![Duration::ZERO; times.len() - 1];
    assert!(
        plan.run_profiled(&x, 2, &mut got, &mut ws, &par, &mut short)
            .is_err()
    );
}

#[test]
fn bad_arguments_are_errors() {
    let Some(shared) = common::shared_dir("bad_arguments_are_errors") else {
        return;
    };
    let (_, size, files) = MODELS[0];
    let model = pipeline(&shared, files);
    let plan = QuantizedPlan::compile(&model, &QuantizedPlanOptions::default()).unwrap();
    let par = Parallelism::new(1).unwrap();
    let mut ws = QuantizedWorkspace::new(&plan, &par);
    let x = input(&shared, IMAGES[0], size);
    let n = plan.output().numel();
    let mut out = vec![0u8; 2 * n];
    assert!(plan.run(&x, 1, &mut out[..n], &mut ws, &par).is_ok());
    assert!(plan.run(&x, 0, &mut out[..0], &mut ws, &par).is_err());
    assert!(plan.run(&x[1..], 1, &mut out[..n], &mut ws, &par).is_err());
    assert!(plan.run(&x, 1, &mut out, &mut ws, &par).is_err());
    assert!(plan.run(&x, 2, &mut out, &mut ws, &par).is_err());
    // A workspace of another plan is refused.
    let other = pipeline(&shared, MODELS[1].2);
    let other = QuantizedPlan::compile(&other, &QuantizedPlanOptions::default()).unwrap();
    let mut other_ws = QuantizedWorkspace::new(&other, &par);
    assert!(plan.run(&x, 1, &mut out[..n], &mut other_ws, &par).is_err());
    // The 1.0 head alone starts from pooled features: fine; the extractor
    // alone has no softmax: refused.
    let extractor = pipeline(&shared, &MODELS[3].2[..1]);
    assert!(QuantizedPlan::compile(&extractor, &QuantizedPlanOptions::default()).is_err());
}
