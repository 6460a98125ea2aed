//! The layer-by-layer structure a [`MobileNetConfig`] implies: paper Table 1
//! scaled by α and ρ, or one of the paper's comparison networks.
//!
//! An [`Architecture`] holds shapes only, no weights: the cost analysis and
//! the CLI's `summary` work on it without allocating a network.

use std::fmt;

use crate::error::{Error, Result};
use crate::layers::{Padding, conv_output_size};
use crate::model::config::{MobileNetConfig, Variant};

/// Stride and output channels (at α = 1) of the 13 depthwise-separable
/// blocks of paper Table 1. The last depthwise conv is taken at stride 1,
/// as in TF-slim: Table 1 prints "s2" there, which would shrink the 7x7 map
/// to 4x4 and contradict the table's own "7x7x1024" input size of the
/// average pool.
pub const SEPARABLE_BLOCKS: [(usize, usize); 13] = [
    (1, 64),
    (2, 128),
    (1, 128),
    (2, 256),
    (1, 256),
    (2, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (2, 1024),
    (1, 1024),
];

/// Output channels (at α = 1) and stride of the first, full 3x3 conv.
pub const STEM: (usize, usize) = (2, 32);

/// Indices into [`SEPARABLE_BLOCKS`] of the five 14x14x512 blocks that the
/// shallow network of paper Table 5 removes.
pub const SHALLOW_REMOVED: std::ops::Range<usize> = 6..11;

/// What a layer computes. Every convolution is followed by batch norm and
/// the configured activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerKind {
    /// A full D_K x D_K convolution (the stem, and the blocks of Conv MobileNet).
    Conv,
    /// A depthwise D_K x D_K convolution: one filter per input channel.
    Depthwise,
    /// A 1x1 convolution combining channels.
    Pointwise,
    /// Mean over all spatial positions (the paper's "Avg Pool 7x7" at 224).
    GlobalAvgPool,
    /// The classifier.
    FullyConnected,
    /// Class probabilities.
    Softmax,
}

impl LayerKind {
    /// The JSON / CLI name.
    pub fn name(self) -> &'static str {
        match self {
            LayerKind::Conv => "conv",
            LayerKind::Depthwise => "depthwise",
            LayerKind::Pointwise => "pointwise",
            LayerKind::GlobalAvgPool => "avg_pool",
            LayerKind::FullyConnected => "fc",
            LayerKind::Softmax => "softmax",
        }
    }

    /// Whether a batch norm and an activation follow the layer.
    pub fn has_batch_norm(self) -> bool {
        matches!(
            self,
            LayerKind::Conv | LayerKind::Depthwise | LayerKind::Pointwise
        )
    }
}

impl fmt::Display for LayerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One row of paper Table 1: a layer with its input and output shapes
/// (H, W, C) for one image.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSpec {
    /// Unique name, e.g. `conv1`, `conv_dw_3`, `conv_pw_3`, `fc`.
    pub name: String,
    /// What the layer computes.
    pub kind: LayerKind,
    /// Kernel size D_K (1 for pointwise, FC and pooling).
    pub kernel: usize,
    /// Stride (1 for non-convolutions).
    pub stride: usize,
    /// Padding of the convolution (zero for the others).
    pub padding: Padding,
    /// Input shape `[H, W, C]` (`[1, 1, C]` for FC and softmax).
    pub input: [usize; 3],
    /// Output shape `[H, W, C]`.
    pub output: [usize; 3],
}

impl LayerSpec {
    /// The filter shape as paper Table 1 prints it: `3x3x3x32`,
    /// `3x3x32 dw`, `1x1x32x64`, `Pool 7x7`, `1024x1000`, `Classifier`.
    pub fn filter_shape(&self) -> String {
        let (k, c_in, c_out) = (self.kernel, self.input[2], self.output[2]);
        match self.kind {
            LayerKind::Conv | LayerKind::Pointwise => format!("{k}x{k}x{c_in}x{c_out}"),
            LayerKind::Depthwise => format!("{k}x{k}x{c_in} dw"),
            LayerKind::GlobalAvgPool => format!("Pool {}x{}", self.input[0], self.input[1]),
            LayerKind::FullyConnected => format!("{c_in}x{c_out}"),
            LayerKind::Softmax => "Classifier".into(),
        }
    }
}

/// The layers of one network, in execution order.
#[derive(Clone, Debug, PartialEq)]
pub struct Architecture {
    config: MobileNetConfig,
    layers: Vec<LayerSpec>,
}

impl Architecture {
    /// Lays out the network for `config`, checking it first. Fails with
    /// [`Error::TooLarge`] when one image's activations would not fit in this
    /// machine's memory.
    ///
    /// ```
    /// use mobilenet::model::{Architecture, MobileNetConfig};
    /// let arch = Architecture::new(&MobileNetConfig::default()).unwrap();
    /// assert_eq!(arch.layers().len(), 1 + 2 * 13 + 3);
    /// assert_eq!(arch.layers()[0].output, [112, 112, 32]);
    /// ```
    pub fn new(config: &MobileNetConfig) -> Result<Self> {
        config.validate()?;
        let mut builder = Builder {
            config,
            shape: [config.resolution, config.resolution, 3],
            layers: Vec::new(),
        };
        // The paper's stride-2 layers take their strides, in order, from
        // `config.strides` (all 2 unless a small-input config lowers some).
        let mut downsampling = config.strides.iter().copied();
        let mut stride_of = |paper_stride: usize| match paper_stride {
            2 => downsampling.next().unwrap_or(2),
            s => s,
        };
        let (stem_stride, stem_channels) = STEM;
        builder.conv(
            "conv1".into(),
            LayerKind::Conv,
            3,
            stride_of(stem_stride),
            config.depth(stem_channels),
        )?;
        let blocks: Vec<(usize, usize)> = SEPARABLE_BLOCKS
            .iter()
            .enumerate()
            .map(|(i, &(stride, channels))| (i, (stride_of(stride), channels)))
            .filter(|(i, _)| config.variant != Variant::Shallow || !SHALLOW_REMOVED.contains(i))
            .map(|(_, b)| b)
            .collect();
        for (index, (stride, channels)) in blocks.into_iter().enumerate() {
            let (n, out) = (index + 1, config.depth(channels));
            if config.variant == Variant::Conv {
                builder.conv(format!("conv_{n}"), LayerKind::Conv, 3, stride, out)?;
            } else {
                let c = builder.shape[2];
                builder.conv(format!("conv_dw_{n}"), LayerKind::Depthwise, 3, stride, c)?;
                builder.conv(format!("conv_pw_{n}"), LayerKind::Pointwise, 1, 1, out)?;
            }
        }
        let c = builder.shape[2];
        builder.push("global_pool", LayerKind::GlobalAvgPool, [1, 1, c]);
        builder.push("fc", LayerKind::FullyConnected, [1, 1, config.classes]);
        builder.push("softmax", LayerKind::Softmax, [1, 1, config.classes]);
        let arch = Architecture {
            config: config.clone(),
            layers: builder.layers,
        };
        arch.check_fits_in_memory()?;
        Ok(arch)
    }

    /// The configuration this architecture was built from.
    pub fn config(&self) -> &MobileNetConfig {
        &self.config
    }

    /// The layers in execution order.
    pub fn layers(&self) -> &[LayerSpec] {
        &self.layers
    }

    /// The layer called `name`, if any.
    pub fn layer(&self, name: &str) -> Option<&LayerSpec> {
        self.layers.iter().find(|l| l.name == name)
    }

    /// Bytes of f32 activations one image needs at the widest point: the
    /// largest input + output of any layer (two live buffers).
    pub fn peak_activation_bytes(&self) -> u128 {
        self.layers
            .iter()
            .map(|l| (numel(l.input) + numel(l.output)) * 4)
            .max()
            .unwrap_or(0)
    }

    fn check_fits_in_memory(&self) -> Result<()> {
        let need = self.peak_activation_bytes();
        let have = crate::sysinfo::total_memory_bytes();
        if need > have as u128 {
            return Err(Error::TooLarge(format!(
                "resolution {} needs {} of activation memory for one image, \
                 more than this machine's {}",
                self.config.resolution,
                format_bytes(need),
                format_bytes(have as u128)
            )));
        }
        Ok(())
    }
}

/// Number of elements of an `[H, W, C]` shape, without overflow.
pub(crate) fn numel(shape: [usize; 3]) -> u128 {
    shape.iter().map(|&d| d as u128).product()
}

/// `1.5 GiB`, `12.0 MiB`, ...
pub fn format_bytes(bytes: u128) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Tracks the running activation shape while layers are appended.
struct Builder<'a> {
    config: &'a MobileNetConfig,
    shape: [usize; 3],
    layers: Vec<LayerSpec>,
}

impl Builder<'_> {
    fn conv(
        &mut self,
        name: String,
        kind: LayerKind,
        kernel: usize,
        stride: usize,
        out_channels: usize,
    ) -> Result<()> {
        let [h, w, c] = self.shape;
        let padding = if kernel == 1 {
            Padding::zero()
        } else {
            self.config
                .padding
                .resolve(h, w, [kernel, kernel], [stride, stride], [1, 1])
        };
        let out_h = conv_output_size(h, kernel, stride, 1, padding.top, padding.bottom)?;
        let out_w = conv_output_size(w, kernel, stride, 1, padding.left, padding.right)?;
        let input = [h, w, c];
        self.shape = [out_h, out_w, out_channels];
        self.layers.push(LayerSpec {
            name,
            kind,
            kernel,
            stride,
            padding,
            input,
            output: self.shape,
        });
        Ok(())
    }

    fn push(&mut self, name: &str, kind: LayerKind, output: [usize; 3]) {
        let input = match kind {
            LayerKind::GlobalAvgPool => self.shape,
            _ => [1, 1, self.shape[2]],
        };
        self.shape = output;
        self.layers.push(LayerSpec {
            name: name.into(),
            kind,
            kernel: 1,
            stride: 1,
            padding: Padding::zero(),
            input,
            output,
        });
    }
}
