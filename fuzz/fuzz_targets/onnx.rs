//! Feeds arbitrary bytes to the ONNX importer: it must return `Ok` or an
//! error, never panic, hang or allocate without bound.
//!
//! Run from `fuzz/` (nightly). Seed the corpus with exported models, e.g.
//! from `cargo run --release -- convert ... out.onnx` or the files the
//! `onnx_runtime_agrees` test writes (libFuzzer only writes to the first
//! corpus folder):
//!
//! ```text
//! mkdir -p corpus/onnx
//! cargo +nightly fuzz run onnx corpus/onnx -- -max_len=2000000
//! ```

#![no_main]

use libfuzzer_sys::fuzz_target;
use mobilenet::formats::onnx::load_onnx;

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = load_onnx(data) {
        // Whatever loads must be a network we can run.
        let _ = model.net.architecture().layers().len();
    }
});
