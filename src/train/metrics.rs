//! Per-epoch training metrics and the `metrics.csv` log.
//!
//! One row per epoch, written after each epoch and read back to resume a run
//! or to [plot](super::plot) it. Every append rewrites the whole (small)
//! file with [`write_atomic`], so a crash never leaves a torn last line.
//! Numbers are written in Rust's shortest round-trip form, so reading gives
//! back exactly the values written (NaN and infinities included); a missing
//! validation value is an empty field.
//!
//! ```
//! use mobilenet::train::metrics::{EpochMetrics, MetricsLog};
//!
//! let dir = std::env::temp_dir().join(format!("mobilenet-doc-metrics-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let log = MetricsLog::in_dir(&dir);
//! let row = EpochMetrics { epoch: 1, lr: 0.045, train_loss: 6.2, train_acc: 0.01, ..Default::default() };
//! log.append(&row)?;
//! assert_eq!(log.read()?, vec![row]);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), mobilenet::Error>(())
//! ```

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::atomic::write_atomic;
use crate::error::{Error, Result};

/// What one epoch of training measured. Accuracies are fractions in [0, 1].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EpochMetrics {
    /// The epoch just finished, counting from 1.
    pub epoch: u32,
    /// The learning rate at the end of the epoch.
    pub lr: f64,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Training top-1 accuracy.
    pub train_acc: f64,
    /// Validation loss, if validated this epoch.
    pub val_loss: Option<f64>,
    /// Validation top-1 accuracy.
    pub val_acc: Option<f64>,
    /// Validation top-5 accuracy.
    pub val_top5: Option<f64>,
    /// Training throughput.
    pub images_per_s: f64,
    /// Wall-clock seconds for the epoch (training and validation).
    pub seconds: f64,
}

/// The CSV header, in field order.
pub const HEADER: &str =
    "epoch,lr,train_loss,train_acc,val_loss,val_acc,val_top5,images_per_s,seconds";

const COLUMNS: usize = 9;

impl EpochMetrics {
    /// The row as one CSV line, without the newline.
    pub fn to_csv_line(&self) -> String {
        let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        format!(
            "{},{},{},{},{},{},{},{},{}",
            self.epoch,
            self.lr,
            self.train_loss,
            self.train_acc,
            opt(self.val_loss),
            opt(self.val_acc),
            opt(self.val_top5),
            self.images_per_s,
            self.seconds
        )
    }

    /// Parses a line written by [`EpochMetrics::to_csv_line`].
    pub fn from_csv_line(line: &str) -> std::result::Result<EpochMetrics, String> {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != COLUMNS {
            return Err(format!("expected {COLUMNS} fields, found {}", fields.len()));
        }
        let names: Vec<&str> = HEADER.split(',').collect();
        let num = |i: usize| -> std::result::Result<f64, String> {
            fields[i]
                .parse::<f64>()
                .map_err(|_| format!("{}: {:?} is not a number", names[i], fields[i]))
        };
        let opt = |i: usize| -> std::result::Result<Option<f64>, String> {
            if fields[i].is_empty() {
                Ok(None)
            } else {
                num(i).map(Some)
            }
        };
        Ok(EpochMetrics {
            epoch: fields[0]
                .parse()
                .map_err(|_| format!("epoch: {:?} is not an epoch number", fields[0]))?,
            lr: num(1)?,
            train_loss: num(2)?,
            train_acc: num(3)?,
            val_loss: opt(4)?,
            val_acc: opt(5)?,
            val_top5: opt(6)?,
            images_per_s: num(7)?,
            seconds: num(8)?,
        })
    }
}

/// Renders rows as a complete CSV document: the header, then one line per
/// row, each ending in `\n`.
pub fn to_csv(rows: &[EpochMetrics]) -> String {
    let mut out = String::with_capacity(HEADER.len() + 1 + rows.len() * 80);
    out.push_str(HEADER);
    out.push('\n');
    for row in rows {
        let _ = writeln!(out, "{}", row.to_csv_line());
    }
    out
}

/// Parses a CSV document written by [`to_csv`]: the first line must be
/// exactly [`HEADER`]; blank lines are ignored and `\r\n` is accepted. The
/// error names the line (1-based).
pub fn parse_csv(text: &str) -> std::result::Result<Vec<EpochMetrics>, String> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.trim() == HEADER => {}
        Some((_, header)) => {
            return Err(format!(
                "line 1: expected the header {HEADER:?}, found {:?}",
                header.trim()
            ));
        }
        None => return Err(format!("empty file: expected the header {HEADER:?}")),
    }
    lines
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            EpochMetrics::from_csv_line(line).map_err(|e| format!("line {}: {e}", i + 1))
        })
        .collect()
}

/// The `metrics.csv` file of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsLog {
    path: PathBuf,
}

impl MetricsLog {
    /// The file name used by [`MetricsLog::in_dir`].
    pub const FILE_NAME: &'static str = "metrics.csv";

    /// A log at `path`. Nothing is read or created yet.
    pub fn new(path: impl Into<PathBuf>) -> MetricsLog {
        MetricsLog { path: path.into() }
    }

    /// The log `dir/metrics.csv`.
    pub fn in_dir(dir: impl AsRef<Path>) -> MetricsLog {
        MetricsLog::new(dir.as_ref().join(Self::FILE_NAME))
    }

    /// Where the log lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every row in the file; no rows if the file does not exist yet. A
    /// wrong header or a malformed line is [`Error::Format`].
    pub fn read(&self) -> Result<Vec<EpochMetrics>> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error::Io {
                    path: self.path.display().to_string(),
                    source,
                });
            }
        };
        parse_csv(&text).map_err(|e| Error::Format(format!("{}: {e}", self.path.display())))
    }

    /// Adds one row at the end (writing the header if the file is new).
    /// Fails without writing if the existing file does not parse.
    pub fn append(&self, row: &EpochMetrics) -> Result<()> {
        let mut rows = self.read()?;
        rows.push(row.clone());
        self.write_all(&rows)
    }

    /// Replaces the file's content with `rows`, atomically.
    pub fn write_all(&self, rows: &[EpochMetrics]) -> Result<()> {
        write_atomic(&self.path, to_csv(rows).as_bytes())
    }

    /// For resuming from a checkpoint taken after `last_epoch`: drops rows of
    /// later epochs (logged after that checkpoint, before a crash), rewrites
    /// the file if anything was dropped, and returns the rows kept.
    pub fn truncate_after(&self, last_epoch: u32) -> Result<Vec<EpochMetrics>> {
        let mut rows = self.read()?;
        let before = rows.len();
        rows.retain(|r| r.epoch <= last_epoch);
        if rows.len() != before {
            self.write_all(&rows)?;
        }
        Ok(rows)
    }
}
