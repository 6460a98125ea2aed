//! Calibration statistics: what range of values a tensor takes over the
//! calibration images, from which its [`ActQuant`] is chosen.
//!
//! An [`Observer`] keeps the exact min and max and a histogram of every
//! value seen. The histogram has a fixed number of equal bins; when a value
//! falls outside it, the bin width doubles (pairs of bins merge) until it
//! fits, so memory stays constant however many images are observed — the
//! approach of ONNX Runtime's `HistogramCollector`, here on signed values
//! because our activations are asymmetric.

use std::str::FromStr;

use super::scheme::ActQuant;
use crate::error::{Error, Result};

/// Bins of an [`Observer`]'s histogram (even, so bins merge in pairs).
pub const HISTOGRAM_BINS: usize = 4096;

/// How a tensor's range is chosen from its statistics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CalibrationMethod {
    /// The smallest and largest value observed.
    MinMax,
    /// The `p`-th and `(100 - p)`-th percentiles of the observed values
    /// (p in (50, 100]): ignores rare outliers, so that the bulk of the
    /// values gets finer steps.
    Percentile(f64),
}

impl CalibrationMethod {
    /// Checks a percentile lies in (50, 100].
    pub fn validate(self) -> Result<CalibrationMethod> {
        if let CalibrationMethod::Percentile(p) = self
            && !(p > 50.0 && p <= 100.0)
        {
            return Err(Error::InvalidConfig(format!(
                "percentile {p} must be in (50, 100]"
            )));
        }
        Ok(self)
    }
}

impl FromStr for CalibrationMethod {
    type Err = Error;
    /// `minmax` or `percentile` (at 99.99; set another with the struct).
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "minmax" => Ok(CalibrationMethod::MinMax),
            "percentile" => Ok(CalibrationMethod::Percentile(99.99)),
            other => Err(Error::InvalidConfig(format!(
                "unknown calibration method {other:?} (minmax or percentile)"
            ))),
        }
    }
}

/// Running statistics of one tensor.
#[derive(Clone, Debug)]
pub struct Observer {
    min: f32,
    max: f32,
    count: u64,
    /// Left edge of bin 0 and the bin width (0 until a non-constant value
    /// arrives).
    origin: f64,
    width: f64,
    bins: Vec<u64>,
}

impl Default for Observer {
    fn default() -> Self {
        Observer::new()
    }
}

impl Observer {
    /// An observer that has seen nothing.
    pub fn new() -> Observer {
        Observer {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            count: 0,
            origin: 0.0,
            width: 0.0,
            bins: vec![0; HISTOGRAM_BINS],
        }
    }

    /// Values observed so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The smallest and largest value observed (`None` before any).
    pub fn min_max(&self) -> Option<(f32, f32)> {
        (self.count > 0).then_some((self.min, self.max))
    }

    /// Adds `values`. Fails with [`Error::InvalidConfig`] on a non-finite
    /// value (a float model that overflows cannot be calibrated).
    pub fn observe(&mut self, values: &[f32]) -> Result<()> {
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for &v in values {
            if !v.is_finite() {
                return Err(Error::InvalidConfig(format!(
                    "calibration saw a non-finite activation {v}"
                )));
            }
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if values.is_empty() {
            return Ok(());
        }
        self.min = self.min.min(lo);
        self.max = self.max.max(hi);
        self.cover(f64::from(lo), f64::from(hi));
        let n = self.bins.len();
        for &v in values {
            let i = ((f64::from(v) - self.origin) / self.width).floor();
            self.bins[(i.max(0.0) as usize).min(n - 1)] += 1;
        }
        self.count += values.len() as u64;
        Ok(())
    }

    /// Grows the histogram until `[lo, hi]` is inside it.
    fn cover(&mut self, lo: f64, hi: f64) {
        let n = self.bins.len();
        if self.width == 0.0 {
            // First values: spread the bins over their range, a little wider
            // so that the maximum lands inside the last bin.
            let span = (hi - lo).max(f64::from(f32::MIN_POSITIVE));
            self.origin = lo;
            self.width = span * (1.0 + 1e-9) / n as f64;
            return;
        }
        while hi >= self.origin + self.width * n as f64 {
            // Double to the right: bins 2i, 2i+1 become bin i.
            for i in 0..n / 2 {
                self.bins[i] = self.bins[2 * i] + self.bins[2 * i + 1];
            }
            self.bins[n / 2..].fill(0);
            self.width *= 2.0;
        }
        while lo < self.origin {
            // Double to the left: the old range becomes the right half.
            let mut merged = vec![0u64; n];
            for (i, &c) in self.bins.iter().enumerate() {
                merged[(n + i) / 2] += c;
            }
            self.bins = merged;
            self.origin -= self.width * n as f64;
            self.width *= 2.0;
        }
    }

    /// The range to quantize to under `method`: min/max, or the percentiles
    /// read off the histogram (bin edges, so within one bin width of the
    /// exact percentile) and kept inside the observed min/max.
    ///
    /// Fails with [`Error::InvalidConfig`] before any value was observed.
    pub fn range(&self, method: CalibrationMethod) -> Result<(f32, f32)> {
        let (min, max) = self
            .min_max()
            .ok_or_else(|| Error::InvalidConfig("calibration observed no values".into()))?;
        match method.validate()? {
            CalibrationMethod::MinMax => Ok((min, max)),
            CalibrationMethod::Percentile(p) => {
                let total = self.count as f64;
                // Values strictly below the lower cut and above the upper
                // one: at most (100 - p)% on each side.
                let tail = total * (100.0 - p) / 100.0;
                let mut seen = 0.0;
                let mut lo = min;
                for (i, &c) in self.bins.iter().enumerate() {
                    if seen + c as f64 > tail {
                        lo = (self.origin + self.width * i as f64) as f32;
                        break;
                    }
                    seen += c as f64;
                }
                seen = 0.0;
                let mut hi = max;
                for (i, &c) in self.bins.iter().enumerate().rev() {
                    if seen + c as f64 > tail {
                        hi = (self.origin + self.width * (i + 1) as f64) as f32;
                        break;
                    }
                    seen += c as f64;
                }
                Ok((lo.clamp(min, max), hi.clamp(min, max)))
            }
        }
    }

    /// The activation quantization for this tensor under `method`.
    pub fn quant(&self, method: CalibrationMethod) -> Result<ActQuant> {
        let (lo, hi) = self.range(method)?;
        ActQuant::from_range(lo, hi)
    }
}
