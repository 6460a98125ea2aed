//! Replacing a file so that a crash never leaves it half-written.
//!
//! Checkpoints, the metrics log and plots are rewritten many times during a
//! run; a crash or a full disk in the middle of a plain `fs::write` would
//! destroy the last good copy. [`write_atomic`] writes a temporary file
//! beside the target, flushes it to disk, renames it over the target (an
//! atomic replacement on POSIX file systems and NTFS) and then flushes the
//! directory entry where the platform allows it. Readers see either the old
//! file or the new one, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically: either the whole new content is in
/// place when this returns `Ok`, or (on any error) the old file, if any, is
/// untouched and no temporary file is left behind.
///
/// The directory must exist. The temporary file is
/// `.{file name}.tmp-{pid}-{n}` in the same directory, so the rename never
/// crosses file systems and concurrent writers do not collide (the last
/// rename wins).
///
/// ```
/// let dir = std::env::temp_dir().join(format!("mobilenet-doc-atomic-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("state.json");
/// mobilenet::train::atomic::write_atomic(&path, b"{}")?;
/// assert_eq!(std::fs::read(&path).unwrap(), b"{}");
/// assert!(mobilenet::train::atomic::write_atomic(dir.join("missing/x"), b"").is_err());
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), mobilenet::Error>(())
/// ```
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let io_err = |source: io::Error| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let Some(file_name) = path.file_name() else {
        return Err(io_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file path",
        )));
    };
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let temp = temp_path(dir, &file_name.to_string_lossy());
    let written = write_and_sync(&temp, bytes).and_then(|()| fs::rename(&temp, path));
    if let Err(source) = written {
        // Best effort: the temporary file may not even exist.
        let _ = fs::remove_file(&temp);
        return Err(io_err(source));
    }
    sync_dir(dir);
    Ok(())
}

/// A fresh temporary name in `dir`, unique within this process and across
/// processes (by pid).
fn temp_path(dir: &Path, file_name: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{file_name}.tmp-{}-{n}", std::process::id()))
}

fn write_and_sync(temp: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(temp)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Flushes the directory entry of the rename. Only possible on Unix (other
/// platforms cannot open a directory as a file), and not supported by every
/// file system, so failures are ignored: the data itself is already synced.
fn sync_dir(dir: &Path) {
    if cfg!(unix)
        && let Ok(handle) = File::open(dir)
    {
        let _ = handle.sync_all();
    }
}
