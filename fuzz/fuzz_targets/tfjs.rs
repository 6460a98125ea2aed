//! Feeds arbitrary input to the TF.js layers importer: it must return `Ok`
//! or an error, never panic, hang or allocate without bound.
//!
//! The input is the text of `model.json`, a NUL byte, then the weight
//! shards: each shard the importer asks for is the next chunk, a
//! little-endian `u32` length followed by that many bytes (a missing chunk
//! is an I/O error, as a missing file would be).
//!
//! Run from `fuzz/` (nightly):
//!
//! ```text
//! mkdir -p corpus/tfjs
//! cargo +nightly fuzz run tfjs corpus/tfjs -- -max_len=1000000
//! ```

#![no_main]

use libfuzzer_sys::fuzz_target;
use mobilenet::Error;
use mobilenet::formats::tfjs::load_tfjs_from;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (json, rest) = data.split_at(split);
    let Ok(json) = std::str::from_utf8(json) else {
        return;
    };
    let mut blob = rest.get(1..).unwrap_or(&[]);
    let _ = load_tfjs_from(json, |path| {
        let missing = || Error::Io {
            path: path.to_string(),
            source: std::io::ErrorKind::NotFound.into(),
        };
        let (len, tail) = blob.split_first_chunk::<4>().ok_or_else(missing)?;
        let len = u32::from_le_bytes(*len) as usize;
        let chunk = tail.get(..len).ok_or_else(missing)?;
        blob = &tail[len..];
        Ok(chunk.to_vec())
    });
});
