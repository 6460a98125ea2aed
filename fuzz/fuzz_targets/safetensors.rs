//! Feeds arbitrary bytes to the two safetensors readers, our model format
//! and the PyTorch `state_dict` importer: they must return `Ok` or an error,
//! never panic, hang or allocate without bound.
//!
//! Run from `fuzz/` (nightly), seeding with a model in our format and the
//! PyTorch fixtures:
//!
//! ```text
//! mkdir -p corpus/safetensors
//! cargo run --release --manifest-path ../Cargo.toml -- convert \
//!     ../../shared/models/tfjs_mobilenet_v1_0.75_224 corpus/safetensors/tfjs.safetensors
//! cp ../tests/fixtures/torch/*.safetensors corpus/safetensors/
//! cargo +nightly fuzz run safetensors corpus/safetensors -- -max_len=20000000
//! ```

#![no_main]

use libfuzzer_sys::fuzz_target;
use mobilenet::formats::safetensors::from_bytes;
use mobilenet::formats::torch::{detect_naming, load_torch_safetensors};

fuzz_target!(|data: &[u8]| {
    let _ = from_bytes(data);
    let _ = detect_naming(data);
    let _ = load_torch_safetensors(data, None);
});
