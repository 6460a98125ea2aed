//! `QuantizedPlan::run` allocates nothing once its workspace exists and the
//! thread pool has warmed up.

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{Counting, fewest_allocations};

mod common;

use mobilenet::engine::Parallelism;
use mobilenet::kernels::int8::IntIsa;
use mobilenet::quant::plan::{QuantizedPlan, QuantizedPlanOptions, QuantizedWorkspace};
use mobilenet::quant::{QuantizedPipeline, QuantizedTflite};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn quantized_run_allocates_nothing() {
    let Some(shared) = common::shared_dir("quantized_run_allocates_nothing") else {
        return;
    };
    let path =
        shared.join("models/coral_test_data_mobilenet_v1_quant/mobilenet_v1_0.25_128_quant.tflite");
    let model = QuantizedPipeline::new(vec![QuantizedTflite::read(path).unwrap()]).unwrap();
    for isa in IntIsa::supported() {
        let options = QuantizedPlanOptions {
            isa: Some(isa),
            ..Default::default()
        };
        let plan = QuantizedPlan::compile(&model, &options).unwrap();
        for threads in [1, 2] {
            for batch in [1, 3] {
                let par = Parallelism::new(threads).unwrap();
                let mut ws = QuantizedWorkspace::new(&plan, &par);
                let input = vec![100u8; batch * plan.input().numel()];
                let mut out = vec![0u8; batch * plan.output().numel()];
                for _ in 0..3 {
                    plan.run(&input, batch, &mut out, &mut ws, &par).unwrap();
                }
                let during = fewest_allocations(3, || {
                    for _ in 0..5 {
                        plan.run(&input, batch, &mut out, &mut ws, &par).unwrap();
                    }
                });
                assert_eq!(
                    during, 0,
                    "{isa} threads {threads} batch {batch}: {during} allocations"
                );
            }
        }
    }
}
