//! `Int8Plan::run` allocates nothing once its workspace exists and the
//! thread pool has warmed up.

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{Counting, fewest_allocations};

use mobilenet::Tensor;
use mobilenet::engine::Parallelism;
use mobilenet::formats::ModelMetadata;
use mobilenet::kernels::int8::IntIsa;
use mobilenet::model::{MobileNet, MobileNetConfig};
use mobilenet::quant::plan::QuantizedPlanOptions;
use mobilenet::quant::ptq::plan::Int8Plan;
use mobilenet::quant::ptq::{CalibrationMethod, Int8MobileNet, QuantizeOptions};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn int8_run_allocates_nothing() {
    let config = MobileNetConfig {
        alpha: 0.5,
        resolution: 64,
        classes: 10,
        ..Default::default()
    };
    let net = MobileNet::random(&config, 1).unwrap();
    let calibration = Tensor::from_fn(vec![2, 64, 64, 3], |i| {
        ((i * 7919) % 2001) as f32 / 1000.0 - 1.0
    })
    .unwrap();
    let model = Int8MobileNet::quantize(
        &net,
        &ModelMetadata::default(),
        &[calibration],
        &QuantizeOptions {
            method: CalibrationMethod::MinMax,
        },
    )
    .unwrap();
    for isa in IntIsa::supported() {
        for min_parallel_mult_adds in [0, u64::MAX] {
            let options = QuantizedPlanOptions {
                isa: Some(isa),
                min_parallel_mult_adds,
            };
            let plan = Int8Plan::compile(&model, &options).unwrap();
            for threads in [1, 2] {
                for batch in [1, 3] {
                    let par = Parallelism::new(threads).unwrap();
                    let mut ws = plan.workspace(&par);
                    let codes = vec![100u8; batch * plan.input_len()];
                    let mut logits = vec![0.0; batch * plan.classes()];
                    let mut times = vec![std::time::Duration::ZERO; plan.steps().len()];
                    for _ in 0..3 {
                        plan.run(&codes, batch, &mut logits, &mut ws, &par).unwrap();
                        plan.run_profiled(&codes, batch, &mut logits, &mut ws, &par, &mut times)
                            .unwrap();
                    }
                    let during = fewest_allocations(3, || {
                        for _ in 0..5 {
                            plan.run(&codes, batch, &mut logits, &mut ws, &par).unwrap();
                            plan.run_profiled(
                                &codes,
                                batch,
                                &mut logits,
                                &mut ws,
                                &par,
                                &mut times,
                            )
                            .unwrap();
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
}
