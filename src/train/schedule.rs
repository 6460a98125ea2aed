//! Learning-rate schedules as a function of the (fractional) epoch.
//!
//! A [`Schedule`] is a [`Decay`] rule plus an optional linear warm-up. The
//! epoch is fractional, `step / steps_per_epoch`, so a schedule can be
//! evaluated at every step. TF-slim trained MobileNet v1 with
//! [`Schedule::tf_slim`]: ×0.94 every 2.5 epochs, staircase.
//!
//! # CLI grammar
//!
//! `NAME[:ARG]...`, positional arguments first, then `key=value` options:
//!
//! | string | meaning |
//! | --- | --- |
//! | `constant` | the base rate throughout |
//! | `exp[:FACTOR[:EVERY[:smooth]]]` | ×FACTOR (default 0.94) every EVERY epochs (default 2.5), staircase unless `smooth` |
//! | `step:EVERY[:FACTOR]` | ×FACTOR (default 0.1) every EVERY epochs |
//! | `cosine` | cosine from the base rate down to `min` (default 0) at the last epoch |
//!
//! Options for every schedule: `warmup=EPOCHS` (linear ramp from 0, default
//! 0); for `cosine` also `min=LR`. Examples: `exp:0.94:2.5`, `step:30:0.1`,
//! `cosine:warmup=2:min=1e-5`, `exp:0.98:1:smooth:warmup=5`.
//!
//! ```
//! use mobilenet::train::schedule::Schedule;
//!
//! let schedule: Schedule = "exp:0.94:2.5".parse()?;
//! assert_eq!(schedule, Schedule::tf_slim());
//! assert_eq!(schedule.lr(0.045, 2.4, 100.0), 0.045);
//! assert!((schedule.lr(0.045, 2.5, 100.0) - 0.045 * 0.94).abs() < 1e-15);
//! assert_eq!(schedule.to_string(), "exp:0.94:2.5");
//! # Ok::<(), mobilenet::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// How the rate falls after warm-up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decay {
    /// The base rate throughout.
    Constant,
    /// `base · factor^(epoch / every_epochs)`, with the exponent floored
    /// when `staircase` (TensorFlow's `exponential_decay`).
    Exponential {
        /// Multiplier per period, in (0, 1] for a decay.
        factor: f64,
        /// Period in epochs.
        every_epochs: f64,
        /// Jump once per period instead of decaying continuously.
        staircase: bool,
    },
    /// `base · factor^floor(epoch / every_epochs)` (e.g. ×0.1 every 30).
    Step {
        /// Period in epochs.
        every_epochs: f64,
        /// Multiplier per period.
        factor: f64,
    },
    /// Half a cosine from the base rate at the end of warm-up down to
    /// `min_lr` at the last epoch, then `min_lr`.
    Cosine {
        /// The final rate (absolute, not a fraction of the base).
        min_lr: f64,
    },
}

/// A decay rule with an optional linear warm-up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// The decay rule.
    pub decay: Decay,
    /// Epochs of linear warm-up from 0 to the scheduled rate; 0 for none.
    ///
    /// For exponential and step decay the rate is the decayed rate times
    /// `epoch / warmup_epochs` (the decay clock starts at epoch 0, as in
    /// Goyal et al. 2017); cosine starts its half period after warm-up.
    pub warmup_epochs: f64,
}

impl Schedule {
    /// The base rate throughout, no warm-up.
    pub const CONSTANT: Schedule = Schedule {
        decay: Decay::Constant,
        warmup_epochs: 0.0,
    };

    /// TF-slim's default for MobileNet v1: ×0.94 every 2.5 epochs,
    /// staircase, no warm-up.
    pub fn tf_slim() -> Schedule {
        Schedule {
            decay: Decay::Exponential {
                factor: 0.94,
                every_epochs: 2.5,
                staircase: true,
            },
            warmup_epochs: 0.0,
        }
    }

    /// The rate at `epoch` (fractional; negative counts as 0) for a run of
    /// `total_epochs` (used only by cosine). Never divides by zero: a
    /// cosine with no epochs after warm-up is at `min_lr` once warm-up ends.
    ///
    /// ```
    /// use mobilenet::train::schedule::{Decay, Schedule};
    /// let cosine = Schedule { decay: Decay::Cosine { min_lr: 0.0 }, warmup_epochs: 2.0 };
    /// assert_eq!(cosine.lr(0.1, 1.0, 10.0), 0.05); // half-way through warm-up
    /// assert_eq!(cosine.lr(0.1, 2.0, 10.0), 0.1); // peak
    /// assert!(cosine.lr(0.1, 10.0, 10.0).abs() < 1e-12); // end
    /// ```
    pub fn lr(&self, base_lr: f64, epoch: f64, total_epochs: f64) -> f64 {
        let epoch = if epoch > 0.0 { epoch } else { 0.0 };
        let warmup = self.warmup_epochs;
        let ramp = if warmup > 0.0 && epoch < warmup {
            epoch / warmup
        } else {
            1.0
        };
        let decayed = match self.decay {
            Decay::Constant => base_lr,
            Decay::Exponential {
                factor,
                every_epochs,
                staircase,
            } => {
                let periods = epoch / every_epochs;
                let periods = if staircase { periods.floor() } else { periods };
                base_lr * factor.powf(periods)
            }
            Decay::Step {
                every_epochs,
                factor,
            } => base_lr * factor.powf((epoch / every_epochs).floor()),
            Decay::Cosine { min_lr } => {
                let span = total_epochs - warmup;
                let progress = if span <= 0.0 {
                    if epoch >= warmup { 1.0 } else { 0.0 }
                } else if epoch <= warmup {
                    0.0
                } else {
                    ((epoch - warmup) / span).min(1.0)
                };
                min_lr + (base_lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        };
        decayed * ramp
    }

    /// Rejects non-finite or out-of-range parameters (factors and periods
    /// must be > 0, warm-up and `min_lr` >= 0).
    pub fn validate(&self) -> Result<()> {
        self.check().map_err(Error::InvalidConfig)
    }

    fn check(&self) -> std::result::Result<(), String> {
        non_negative("warm-up epochs", self.warmup_epochs)?;
        match self.decay {
            Decay::Constant => Ok(()),
            Decay::Exponential {
                factor,
                every_epochs,
                ..
            }
            | Decay::Step {
                every_epochs,
                factor,
            } => {
                positive("decay factor", factor)?;
                positive("decay period (epochs)", every_epochs)
            }
            Decay::Cosine { min_lr } => non_negative("cosine min_lr", min_lr),
        }
    }
}

impl Default for Schedule {
    /// [`Schedule::tf_slim`].
    fn default() -> Schedule {
        Schedule::tf_slim()
    }
}

fn positive(what: &str, value: f64) -> std::result::Result<(), String> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(format!("{what} must be finite and > 0, got {value}"))
    }
}

fn non_negative(what: &str, value: f64) -> std::result::Result<(), String> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(format!("{what} must be finite and >= 0, got {value}"))
    }
}

const GRAMMAR: &str = "expected constant, exp[:FACTOR[:EVERY[:smooth]]], step:EVERY[:FACTOR] \
     or cosine, optionally followed by :warmup=EPOCHS (and :min=LR for cosine), \
     e.g. exp:0.94:2.5, step:30:0.1, cosine:warmup=2";

impl FromStr for Schedule {
    type Err = Error;

    /// Parses the [module grammar](self) and validates the result.
    fn from_str(text: &str) -> Result<Schedule> {
        let bad =
            |why: String| Error::InvalidConfig(format!("schedule {text:?}: {why}; {GRAMMAR}"));
        let mut parts = text.trim().split(':');
        let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let is_cosine = matches!(name.as_str(), "cosine" | "cos");
        let mut positional = Vec::new();
        let mut warmup = None;
        let mut min_lr = None;
        for part in parts {
            if let Some((key, value)) = part.split_once('=') {
                let slot = match key.trim() {
                    "warmup" => &mut warmup,
                    "min" if is_cosine => &mut min_lr,
                    other => return Err(bad(format!("unknown option {other:?}"))),
                };
                if slot.is_some() {
                    return Err(bad(format!("option {key:?} given twice")));
                }
                *slot = Some(number(value).map_err(bad)?);
            } else if warmup.is_some() || min_lr.is_some() {
                return Err(bad(format!("argument {part:?} after an option")));
            } else {
                positional.push(part.trim());
            }
        }
        let too_many = |max: usize| {
            if positional.len() > max {
                Err(bad(format!(
                    "{name} takes at most {max} arguments, got {}",
                    positional.len()
                )))
            } else {
                Ok(())
            }
        };
        let decay = match name.as_str() {
            "constant" => {
                too_many(0)?;
                Decay::Constant
            }
            "exp" | "exponential" => {
                too_many(3)?;
                let staircase = match positional.get(2) {
                    None | Some(&"staircase") => true,
                    Some(&"smooth") => false,
                    Some(other) => {
                        return Err(bad(format!("expected staircase or smooth, got {other:?}")));
                    }
                };
                Decay::Exponential {
                    factor: positional
                        .first()
                        .map_or(Ok(0.94), |s| number(s))
                        .map_err(bad)?,
                    every_epochs: positional
                        .get(1)
                        .map_or(Ok(2.5), |s| number(s))
                        .map_err(bad)?,
                    staircase,
                }
            }
            "step" => {
                too_many(2)?;
                let Some(every) = positional.first() else {
                    return Err(bad("step needs a period in epochs".into()));
                };
                Decay::Step {
                    every_epochs: number(every).map_err(bad)?,
                    factor: positional
                        .get(1)
                        .map_or(Ok(0.1), |s| number(s))
                        .map_err(bad)?,
                }
            }
            "cosine" | "cos" => {
                too_many(0)?;
                Decay::Cosine {
                    min_lr: min_lr.unwrap_or(0.0),
                }
            }
            "" => return Err(bad("empty".into())),
            other => return Err(bad(format!("unknown schedule {other:?}"))),
        };
        let schedule = Schedule {
            decay,
            warmup_epochs: warmup.unwrap_or(0.0),
        };
        schedule.check().map_err(bad)?;
        Ok(schedule)
    }
}

fn number(text: &str) -> std::result::Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .map_err(|_| format!("{text:?} is not a number"))
}

impl fmt::Display for Schedule {
    /// The canonical string of the [module grammar](self), which parses
    /// back to the same schedule.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.decay {
            Decay::Constant => write!(f, "constant")?,
            Decay::Exponential {
                factor,
                every_epochs,
                staircase,
            } => {
                write!(f, "exp:{factor}:{every_epochs}")?;
                if !staircase {
                    write!(f, ":smooth")?;
                }
            }
            Decay::Step {
                every_epochs,
                factor,
            } => write!(f, "step:{every_epochs}:{factor}")?,
            Decay::Cosine { min_lr } => {
                write!(f, "cosine")?;
                if min_lr != 0.0 {
                    write!(f, ":min={min_lr}")?;
                }
            }
        }
        if self.warmup_epochs != 0.0 {
            write!(f, ":warmup={}", self.warmup_epochs)?;
        }
        Ok(())
    }
}
