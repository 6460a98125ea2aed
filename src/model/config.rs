//! What defines one member of the MobileNet family.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::layers::{Activation, PaddingMode};

/// Which network of the paper to build.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Variant {
    /// Paper Table 1: a full 3x3 stem, then 13 depthwise-separable blocks.
    #[default]
    MobileNet,
    /// "Conv MobileNet" of paper Table 4: each separable block replaced by a
    /// full 3x3 convolution with the same stride and output channels.
    Conv,
    /// "Shallow MobileNet" of paper Table 5: the five separable blocks at
    /// 14x14x512 removed.
    Shallow,
}

impl Variant {
    /// Every variant, in the order the CLI lists them.
    pub const ALL: [Variant; 3] = [Variant::MobileNet, Variant::Conv, Variant::Shallow];

    /// The CLI / JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Variant::MobileNet => "mobilenet",
            Variant::Conv => "conv",
            Variant::Shallow => "shallow",
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Variant {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Variant::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "unknown variant '{s}' (expected mobilenet, conv or shallow)"
                ))
            })
    }
}

/// The hyper-parameters of one MobileNet. Build with [`Default`] and
/// struct-update syntax, then [`MobileNetConfig::validate`] (which
/// [`crate::model::Architecture::new`] calls for you).
///
/// ```
/// use mobilenet::model::MobileNetConfig;
/// let cfg = MobileNetConfig { alpha: 0.5, resolution: 160, ..Default::default() };
/// assert_eq!(cfg.depth(1024), 512);
/// assert!((cfg.rho() - 160.0 / 224.0).abs() < 1e-12);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct MobileNetConfig {
    /// Width multiplier α: every layer's channel count d becomes
    /// `max(floor(d·α), min_depth)` (TF-slim's rule).
    pub alpha: f64,
    /// Input height and width in pixels (>= 32). The resolution multiplier
    /// is ρ = resolution / 224.
    pub resolution: usize,
    /// Number of output classes (1000 for ImageNet, 1001 with TF's
    /// `background` class).
    pub classes: usize,
    /// Smallest channel count the width multiplier may produce.
    pub min_depth: usize,
    /// Activation after every batch norm. The paper says ReLU; the published
    /// TF checkpoints use ReLU6.
    pub activation: Activation,
    /// Padding convention of every 3x3 convolution. It changes which pixels
    /// are read, never the output sizes (for 3x3 kernels
    /// `ceil(D/s) = floor((D + 2 - 3)/s) + 1`).
    pub padding: PaddingMode,
    /// Dropout rate before the classifier (training only). TF-slim keeps
    /// 0.999 of the units.
    pub dropout: f32,
    /// Which network of the paper.
    pub variant: Variant,
    /// Strides of the five layers that downsample in paper Table 1: `conv1`,
    /// `conv_dw_2`, `conv_dw_4`, `conv_dw_6` and `conv_dw_12` (each 1 or 2).
    /// The paper's `[2; 5]` takes 224 pixels to 7; small images (28-32 px,
    /// as Fashion-MNIST or CIFAR) keep more of their resolution with e.g.
    /// `[1, 1, 2, 2, 2]` instead of being upsampled to 224 — the role of
    /// TF-slim's `conv_defs`.
    pub strides: [usize; 5],
}

impl Default for MobileNetConfig {
    fn default() -> Self {
        MobileNetConfig {
            alpha: 1.0,
            resolution: 224,
            classes: 1000,
            min_depth: 8,
            activation: Activation::Relu6,
            padding: PaddingMode::TfSame,
            dropout: 0.001,
            variant: Variant::MobileNet,
            strides: PAPER_STRIDES,
        }
    }
}

/// The paper's downsampling strides (see [`MobileNetConfig::strides`]).
pub const PAPER_STRIDES: [usize; 5] = [2; 5];

/// Largest width multiplier we accept; beyond it the request is a typo.
pub const MAX_ALPHA: f64 = 16.0;
/// Smallest input at the paper's strides: five stride-2 stages take 32
/// pixels to 1. With smaller strides the floor is their product.
pub const MIN_RESOLUTION: usize = 32;

impl MobileNetConfig {
    /// The resolution multiplier ρ = resolution / 224.
    pub fn rho(&self) -> f64 {
        self.resolution as f64 / 224.0
    }

    /// The smallest input the strides allow: their product (32 for the
    /// paper's five stride-2 stages), so the last map is at least 1x1.
    pub fn min_resolution(&self) -> usize {
        self.strides.iter().product()
    }

    /// The channel count of a layer that has `d` channels at α = 1:
    /// `max(floor(d·α), min_depth)`, as TF-slim's `depth()`.
    pub fn depth(&self, d: usize) -> usize {
        ((d as f64 * self.alpha) as usize).max(self.min_depth)
    }

    /// Checks every field. Memory limits are checked by
    /// [`crate::model::Architecture::new`], which knows the layer sizes.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidConfig(msg));
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return bad(format!(
                "width multiplier alpha must be > 0, got {}",
                self.alpha
            ));
        }
        if self.alpha > MAX_ALPHA {
            return bad(format!(
                "width multiplier alpha {} is absurd (at most {MAX_ALPHA})",
                self.alpha
            ));
        }
        if let Some(s) = self.strides.iter().find(|&&s| s != 1 && s != 2) {
            return bad(format!(
                "downsampling strides must be 1 or 2, got {s} in {:?}",
                self.strides
            ));
        }
        let min_resolution = self.min_resolution();
        if self.resolution < min_resolution {
            return bad(format!(
                "resolution must be at least {min_resolution} pixels with strides {:?}, got {}",
                self.strides, self.resolution
            ));
        }
        if self.classes == 0 {
            return bad("the number of classes must be at least 1".into());
        }
        if self.min_depth == 0 {
            return bad("min_depth must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!(
                "dropout rate must be in [0, 1), got {}",
                self.dropout
            ));
        }
        Ok(())
    }

    /// A short name in the style of the published checkpoints,
    /// e.g. `mobilenet_v1_0.75_192`.
    pub fn name(&self) -> String {
        let prefix = match self.variant {
            Variant::MobileNet => "mobilenet_v1",
            Variant::Conv => "conv_mobilenet_v1",
            Variant::Shallow => "shallow_mobilenet_v1",
        };
        let mut name = format!("{prefix}_{}_{}", format_alpha(self.alpha), self.resolution);
        if self.strides != PAPER_STRIDES {
            name.push_str("_s");
            name.extend(self.strides.iter().map(|s| s.to_string()));
        }
        name
    }
}

/// Parses downsampling strides as the CLI takes them: five comma-separated
/// values, each 1 or 2, e.g. `1,1,2,2,2` (see [`MobileNetConfig::strides`]).
///
/// ```
/// use mobilenet::model::config::parse_strides;
/// assert_eq!(parse_strides("1,1,2,2,2").unwrap(), [1, 1, 2, 2, 2]);
/// assert!(parse_strides("2,2,2").is_err());
/// assert!(parse_strides("1,1,3,2,2").is_err());
/// ```
pub fn parse_strides(text: &str) -> Result<[usize; 5]> {
    let bad = || {
        Error::InvalidConfig(format!(
            "strides must be five comma-separated values, each 1 or 2 (e.g. 1,1,2,2,2), got {text:?}"
        ))
    };
    let values: Vec<usize> = text
        .split(',')
        .map(|v| v.trim().parse::<usize>().map_err(|_| bad()))
        .collect::<Result<_>>()?;
    let strides: [usize; 5] = values.try_into().map_err(|_| bad())?;
    if strides.iter().any(|&s| s != 1 && s != 2) {
        return Err(bad());
    }
    Ok(strides)
}

/// α as the checkpoints spell it: `1.0`, `0.75`, `0.5`, `0.25`.
pub fn format_alpha(alpha: f64) -> String {
    let s = format!("{alpha}");
    if s.contains('.') { s } else { format!("{s}.0") }
}
