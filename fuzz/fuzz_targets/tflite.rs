//! Feeds arbitrary bytes to the TFLite importer: it must return `Ok` or an
//! error, never panic, hang or allocate without bound.
//!
//! Run from `fuzz/` (nightly), seeding with the real models beside the
//! checkout (libFuzzer only writes to the first corpus folder):
//!
//! ```text
//! mkdir -p corpus/tflite
//! cargo +nightly fuzz run tflite corpus/tflite \
//!     ../../shared/models/mobilenet_v1_0.25_224_float_tflite \
//!     ../../shared/models/coral_test_data_mobilenet_v1_quant -- -max_len=4000000
//! ```

#![no_main]

use libfuzzer_sys::fuzz_target;
use mobilenet::formats::tflite::{load_tflite, load_tflite_with_head};

fuzz_target!(|data: &[u8]| {
    let _ = load_tflite(data);
    // The two-part loader on the two halves of the input.
    let (extractor, head) = data.split_at(data.len() / 2);
    let _ = load_tflite_with_head(extractor, head);
});
