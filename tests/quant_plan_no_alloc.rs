//! `QuantizedPlan::run` allocates nothing once its workspace exists and the
//! thread pool has warmed up.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use mobilenet::engine::Parallelism;
use mobilenet::kernels::int8::IntIsa;
use mobilenet::quant::plan::{QuantizedPlan, QuantizedPlanOptions, QuantizedWorkspace};
use mobilenet::quant::{QuantizedPipeline, QuantizedTflite};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only
// counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

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
                let before = ALLOCATIONS.load(Ordering::SeqCst);
                for _ in 0..5 {
                    plan.run(&input, batch, &mut out, &mut ws, &par).unwrap();
                }
                let during = ALLOCATIONS.load(Ordering::SeqCst) - before;
                assert_eq!(
                    during, 0,
                    "{isa} threads {threads} batch {batch}: {during} allocations"
                );
            }
        }
    }
}
