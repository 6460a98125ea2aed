//! `Plan::run` allocates nothing: a counting global allocator sees no
//! allocation during runs once the workspace exists and the thread pool has
//! warmed up.

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{Counting, fewest_allocations};

use mobilenet::engine::{Parallelism, Plan, PlanOptions, Workspace};
use mobilenet::model::{MobileNet, MobileNetConfig};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn run_allocates_nothing() {
    let cfg = MobileNetConfig {
        alpha: 0.5,
        resolution: 96,
        classes: 10,
        ..Default::default()
    };
    let net = MobileNet::random(&cfg, 1).unwrap();
    // The defaults, and every leading block chained (at this size the
    // defaults chain nothing).
    let chained = PlanOptions {
        chain_min_bytes: Some(0),
        chain_scratch_bytes: 64 << 10,
        ..Default::default()
    };
    for options in [PlanOptions::default(), chained] {
        let plan = Plan::compile(&net, &options).unwrap();
        check_runs(&plan);
    }
}

fn check_runs(plan: &Plan) {
    for threads in [1, 2] {
        for batch in [1, 4] {
            let par = Parallelism::new(threads).unwrap();
            let mut ws = Workspace::new(plan, &par);
            let input = vec![0.25f32; batch * plan.input_len()];
            let mut logits = vec![0.0f32; batch * plan.classes()];
            // Warm-up: the pool's threads start and settle.
            for _ in 0..3 {
                plan.run(&input, batch, &mut logits, &mut ws, &par).unwrap();
            }
            let during = fewest_allocations(3, || {
                for _ in 0..10 {
                    plan.run(&input, batch, &mut logits, &mut ws, &par).unwrap();
                }
            });
            assert_eq!(
                during, 0,
                "threads {threads} batch {batch}: {during} allocations"
            );
        }
    }
}
