//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod fb;

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The bytes of a file the test needs.
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A JSON file the test needs.
pub fn json(path: &Path) -> Value {
    serde_json::from_slice(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `shared/` data folder beside the checkout (models, photos, reference
/// outputs), or `None` when it is absent, after saying that the calling test
/// is skipped. With `MOBILENET_REQUIRE_SHARED=1` (set by `.ci/run`) a
/// missing folder fails the test instead, so CI always runs these tests.
/// `MOBILENET_SHARED` overrides the location.
pub fn shared_dir(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("MOBILENET_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    if dir.join("README.md").is_file() {
        return Some(dir);
    }
    if std::env::var("MOBILENET_REQUIRE_SHARED").is_ok_and(|v| v == "1") {
        panic!(
            "{test}: shared data folder {} is required but missing",
            dir.display()
        );
    }
    eprintln!("SKIPPED {test}: no shared data folder at {}", dir.display());
    None
}

/// A fresh, empty folder under the system's temp dir, unique to this test
/// process: `mobilenet-{prefix}-{pid}-{name}`.
pub fn temp_dir(prefix: &str, name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("mobilenet-{prefix}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An uncompressed IDX file of unsigned bytes with dimensions `dims`.
pub fn idx(dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend(d.to_be_bytes());
    }
    out.extend(payload);
    out
}
