//! PyTorch MobileNet v1 weights: a `state_dict` saved as safetensors
//! (`safetensors.torch.save_file(model.state_dict(), path)`).
//!
//! Two module layouts are recognised from the tensor names (a `module.`
//! prefix on every name, as `nn.DataParallel` writes, is ignored):
//!
//! **The seed article's code** ([`TorchNaming::Seed`]): a stem
//! `first_conv = Sequential(Conv2d(3, 32α, 3, 2, 1, bias=False),
//! BatchNorm2d, ReLU)`, then `stage_layers`, a `Sequential` of 13 blocks,
//! each with `dw = Sequential(Conv2d(C, C, 3, s, 1, groups=C, bias=False),
//! BatchNorm2d, ReLU)` and `pw = Sequential(Conv2d(C, C', 1, bias=False),
//! BatchNorm2d, ReLU)`, then average pooling and a `Linear` called
//! `classifier` or `fc`:
//!
//! | tensor | shape |
//! |---|---|
//! | `first_conv.0.weight` | `[32α, 3, 3, 3]` |
//! | `first_conv.1.{weight, bias, running_mean, running_var, num_batches_tracked}` | `[32α]` (the last `[]`) |
//! | `stage_layers.N.dw.0.weight`, N = 0..12 | `[C, 1, 3, 3]` |
//! | `stage_layers.N.dw.1.*` | BatchNorm2d as above |
//! | `stage_layers.N.pw.0.weight` | `[C', C, 1, 1]` |
//! | `stage_layers.N.pw.1.*` | BatchNorm2d |
//! | `classifier.weight` / `fc.weight`, `.bias` | `[classes, 1024α]`, `[classes]` |
//!
//! With 8 blocks instead of 13 it is read as the paper's shallow MobileNet.
//!
//! **timm's `mobilenetv1_100`** ([`TorchNaming::Timm`], an `EfficientNet`
//! built from `dsa` blocks, `timm/models/efficientnet.py`
//! `_gen_mobilenet_v1`, without the head conv): `conv_stem.weight`,
//! `bn1.*`, then `blocks.S.J` for the stages of 1, 2, 2, 6, 2 blocks, each a
//! `DepthwiseSeparableConv` with `conv_dw.weight`, `bn1.*`, `conv_pw.weight`,
//! `bn2.*`, then `classifier.weight` / `.bias`. timm rounds channels to
//! multiples of 8, which equals our rounding for α = 0.25, 0.5, 0.75, 1, ...
//!
//! Both use PyTorch padding (1 pixel on every side of the 3x3 convs) and
//! batch-norm ε = 1e-5 (`BatchNorm2d`'s default; ε is not in a
//! `state_dict`). α is read from the channel counts (the stem's 32·α, or
//! the last block's 1024·α) and classes from the classifier; every tensor
//! is checked against [`Architecture::new`] of that configuration. What the
//! weights cannot tell comes from the `config_hint` of
//! [`load_torch_safetensors`], or from [`TorchNaming::default_config`]:
//! resolution 224, activation ReLU for the seed code and ReLU6 for timm (its
//! `mobilenetv1_100` default), preprocessing `torch` for the seed code and
//! `tf` for timm (whose `mobilenetv1_100` weights are trained with mean =
//! std = 0.5, i.e. `x / 127.5 - 1`).
//!
//! Tensors may be `F32`, `F16`, `BF16` or `F64` (converted to f32);
//! `num_batches_tracked` (any integer type) is ignored. A conv bias, if
//! present, is folded into the batch norm's running mean, and a batch norm
//! without `weight` and `bias` (`affine=False`) gets γ = 1, β = 0. Any
//! other tensor, a missing one, a wrong shape or dtype, or a non-finite
//! value is an [`Error::Format`] naming the tensor.

use std::collections::BTreeMap;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Error, Result};
use crate::formats::safetensors::check_values;
use crate::formats::{LoadedModel, ModelMetadata};
use crate::layers::{Activation, BatchNorm, PaddingMode};
use crate::model::network::{Classifier, ConvBn};
use crate::model::{Architecture, LayerKind, MobileNet, MobileNetConfig, Variant};
use crate::tensor::Tensor;

/// Batch-norm ε of PyTorch's `BatchNorm2d`.
pub const TORCH_BN_EPSILON: f32 = 1e-5;

/// Blocks per stage of timm's `mobilenetv1_100` (`dsa_r1`, `r2`, `r2`,
/// `r6`, `r2`).
const TIMM_STAGES: [usize; 5] = [1, 2, 2, 6, 2];

fn format_err(msg: impl std::fmt::Display) -> Error {
    Error::Format(format!("torch safetensors: {msg}"))
}

/// Which PyTorch module layout a `state_dict` follows (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TorchNaming {
    /// `first_conv.*`, `stage_layers.N.{dw,pw}.*`, `classifier.*` / `fc.*`.
    Seed,
    /// timm `mobilenetv1_100`: `conv_stem`, `bn1`, `blocks.S.J.*`, `classifier`.
    Timm,
}

impl TorchNaming {
    /// `seed` or `timm`.
    pub fn name(self) -> &'static str {
        match self {
            TorchNaming::Seed => "seed",
            TorchNaming::Timm => "timm",
        }
    }

    /// What the weights of this layout cannot tell, as the code that
    /// defines it does it: resolution 224, PyTorch symmetric padding, no
    /// dropout, ReLU (seed) or ReLU6 (timm). α and classes are placeholders
    /// (the loader reads them from the weights). Start a `config_hint` from
    /// this to change only, say, the resolution.
    pub fn default_config(self) -> MobileNetConfig {
        MobileNetConfig {
            activation: match self {
                TorchNaming::Seed => Activation::Relu,
                TorchNaming::Timm => Activation::Relu6,
            },
            padding: PaddingMode::Symmetric,
            dropout: 0.0,
            ..MobileNetConfig::default()
        }
    }

    /// The preprocessing recipe the layout's published weights expect:
    /// `torch` (ImageNet mean / std) for the seed code, `tf` (mean = std =
    /// 0.5) for timm's `mobilenetv1_100`.
    pub fn preprocess(self) -> &'static str {
        match self {
            TorchNaming::Seed => "torch",
            TorchNaming::Timm => "tf",
        }
    }
}

/// The module layout of a `state_dict` in safetensors form.
pub fn detect_naming(bytes: &[u8]) -> Result<TorchNaming> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| format_err(e.to_string()))?;
    let names = StrippedNames::new(&st);
    names.naming()
}

/// Reads a MobileNet v1 `state_dict` saved as safetensors (see the module
/// docs for the accepted layouts).
///
/// α and the number of classes come from the weights. Everything else comes
/// from `config_hint` if given (its resolution, activation, padding,
/// dropout and min_depth; its α, classes and variant are ignored), else from
/// [`TorchNaming::default_config`]. The metadata has `source_format`
/// `torch` and the layout's [`TorchNaming::preprocess`].
///
/// ```no_run
/// use mobilenet::formats::torch::{detect_naming, load_torch_safetensors};
/// let bytes = std::fs::read("mobilenet_v1.safetensors")?;
/// let mut hint = detect_naming(&bytes)?.default_config();
/// hint.resolution = 192;
/// let model = load_torch_safetensors(&bytes, Some(&hint))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn load_torch_safetensors(
    bytes: &[u8],
    config_hint: Option<&MobileNetConfig>,
) -> Result<LoadedModel> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| format_err(e.to_string()))?;
    let names = StrippedNames::new(&st);
    let naming = names.naming()?;
    let base = config_hint
        .cloned()
        .unwrap_or_else(|| naming.default_config());

    // Probe the channel counts to guess α, the block count and the classes.
    let (variant, blocks) = match naming {
        TorchNaming::Timm => (Variant::MobileNet, 13),
        TorchNaming::Seed => {
            let blocks = names.seed_blocks()?;
            match blocks {
                13 => (Variant::MobileNet, 13),
                8 => (Variant::Shallow, 8),
                n => {
                    return Err(format_err(format!(
                        "stage_layers has {n} blocks; MobileNet v1 has 13 (8 for the shallow one)"
                    )));
                }
            }
        }
    };
    let head = names.head_prefix(naming)?;
    let dims = |key: &str| -> Result<Vec<usize>> {
        names
            .view(key)
            .map(|v| v.shape().to_vec())
            .ok_or_else(|| format_err(format!("missing tensor {key}")))
    };
    let (stem_key, last_key) = match naming {
        TorchNaming::Seed => (
            "first_conv.0.weight".to_string(),
            format!("stage_layers.{}.pw.0.weight", blocks - 1),
        ),
        TorchNaming::Timm => (
            "conv_stem.weight".to_string(),
            "blocks.4.1.conv_pw.weight".to_string(),
        ),
    };
    let stem = dims(&stem_key)?.first().copied().unwrap_or(0);
    let last = dims(&last_key)?.first().copied().unwrap_or(0);
    let classes = dims(&format!("{head}.weight"))?
        .first()
        .copied()
        .unwrap_or(0);
    let mut alphas = vec![stem as f64 / 32.0];
    if last as f64 / 1024.0 != alphas[0] {
        alphas.push(last as f64 / 1024.0);
    }

    // The first α whose shapes fit the tensors that are there; then the
    // full check (missing, unexpected, dtypes) of that one, so that its
    // errors are the ones reported. If none fits, the error of the one with
    // the fewest wrong shapes.
    let mut best: Option<(usize, Error)> = None;
    let mut found = None;
    for alpha in alphas {
        let config = MobileNetConfig {
            alpha,
            classes,
            variant,
            ..base.clone()
        };
        let (wrong, err) = match expected_layout(&config, naming, &head) {
            Ok(layout) => {
                let wrong = layout.shape_mismatches(&names);
                match wrong.first() {
                    None => {
                        found = Some(layout);
                        break;
                    }
                    Some(first) => (wrong.len(), format_err(first)),
                }
            }
            Err(e) => (usize::MAX, e),
        };
        if best.as_ref().is_none_or(|(w, _)| wrong < *w) {
            best = Some((wrong, err));
        }
    }
    let Some(layout) = found else {
        return Err(best.map_or_else(|| format_err("no matching architecture"), |(_, e)| e));
    };
    layout.check(&names)?;
    build(layout, &names, naming)
}

/// The tensor names of a file, without a common `module.` prefix.
struct StrippedNames<'a, 'data> {
    st: &'a SafeTensors<'data>,
    /// Stripped name -> name in the file.
    names: BTreeMap<String, String>,
}

impl<'a, 'data> StrippedNames<'a, 'data> {
    fn new(st: &'a SafeTensors<'data>) -> Self {
        let all = st.names();
        let strip = !all.is_empty() && all.iter().all(|n| n.starts_with("module."));
        let names = all
            .into_iter()
            .map(|n| {
                let short = if strip { &n["module.".len()..] } else { n };
                (short.to_string(), n.to_string())
            })
            .collect();
        StrippedNames { st, names }
    }

    fn view(&self, key: &str) -> Option<TensorView<'data>> {
        self.st.tensor(self.names.get(key)?).ok()
    }

    fn naming(&self) -> Result<TorchNaming> {
        let has = |prefix: &str| self.names.keys().any(|n| n.starts_with(prefix));
        let seed = has("first_conv.") || has("stage_layers.");
        let timm = has("conv_stem.") || has("blocks.");
        match (seed, timm) {
            (true, false) => Ok(TorchNaming::Seed),
            (false, true) => Ok(TorchNaming::Timm),
            (true, true) => Err(format_err(
                "the tensor names mix two layouts (first_conv/stage_layers and conv_stem/blocks)",
            )),
            (false, false) => Err(format_err(
                "not a MobileNet v1 state_dict we know: expected first_conv.* and \
                 stage_layers.* (seed code) or conv_stem.* and blocks.* (timm mobilenetv1_100)",
            )),
        }
    }

    /// The number of `stage_layers.N` blocks (largest N + 1).
    fn seed_blocks(&self) -> Result<usize> {
        let mut max = None;
        for name in self.names.keys() {
            if let Some(rest) = name.strip_prefix("stage_layers.") {
                let index = rest.split('.').next().unwrap_or("");
                let n: usize = index.parse().map_err(|_| {
                    format_err(format!("tensor {name}: {index:?} is not a block number"))
                })?;
                if n >= 64 {
                    return Err(format_err(format!(
                        "tensor {name}: no block {n} in MobileNet v1"
                    )));
                }
                max = Some(max.map_or(n, |m: usize| m.max(n)));
            }
        }
        max.map(|m| m + 1)
            .ok_or_else(|| format_err("no stage_layers.* tensors"))
    }

    /// `classifier` or `fc`.
    fn head_prefix(&self, naming: TorchNaming) -> Result<String> {
        let candidates: &[&str] = match naming {
            TorchNaming::Seed => &["classifier", "fc"],
            TorchNaming::Timm => &["classifier"],
        };
        let present: Vec<&str> = candidates
            .iter()
            .copied()
            .filter(|c| self.names.contains_key(&format!("{c}.weight")))
            .collect();
        match present.as_slice() {
            [one] => Ok(one.to_string()),
            [] => Err(format_err(format!(
                "no classifier: missing tensor {}.weight",
                candidates.join(".weight or ")
            ))),
            _ => Err(format_err(
                "both classifier.weight and fc.weight are present",
            )),
        }
    }
}

/// One expected tensor.
struct Expect {
    shape: Vec<usize>,
    required: bool,
    /// `num_batches_tracked`: an integer counter we ignore.
    counter: bool,
}

/// Where each layer's tensors are, for one configuration.
struct Layout {
    arch: Architecture,
    /// Per conv layer: (conv weight key, batch-norm prefix).
    layers: Vec<(String, String)>,
    head: String,
    tensors: BTreeMap<String, Expect>,
}

fn expected_layout(config: &MobileNetConfig, naming: TorchNaming, head: &str) -> Result<Layout> {
    let arch = Architecture::new(config).map_err(|e| {
        format_err(format!(
            "the weights describe a network we cannot build (alpha {}, resolution {}, {} \
             classes): {e}",
            config.alpha, config.resolution, config.classes
        ))
    })?;
    let mut layers = Vec::new();
    let mut tensors = BTreeMap::new();
    let mut put = |key: String, shape: Vec<usize>, required: bool| {
        tensors.insert(
            key,
            Expect {
                shape,
                required,
                counter: false,
            },
        );
    };
    let mut counters = Vec::new();
    for spec in arch.layers() {
        let (c_in, c_out, k) = (spec.input[2], spec.output[2], spec.kernel);
        let (conv, bn) = match spec.kind {
            LayerKind::Conv | LayerKind::Depthwise | LayerKind::Pointwise => {
                torch_names(naming, &spec.name)?
            }
            LayerKind::FullyConnected => {
                put(format!("{head}.weight"), vec![c_out, c_in], true);
                put(format!("{head}.bias"), vec![c_out], false);
                continue;
            }
            LayerKind::GlobalAvgPool | LayerKind::Softmax => continue,
        };
        let per_group = if spec.kind == LayerKind::Depthwise {
            1
        } else {
            c_in
        };
        put(format!("{conv}.weight"), vec![c_out, per_group, k, k], true);
        put(format!("{conv}.bias"), vec![c_out], false);
        put(format!("{bn}.weight"), vec![c_out], false);
        put(format!("{bn}.bias"), vec![c_out], false);
        put(format!("{bn}.running_mean"), vec![c_out], true);
        put(format!("{bn}.running_var"), vec![c_out], true);
        counters.push(format!("{bn}.num_batches_tracked"));
        layers.push((conv, bn));
    }
    for key in counters {
        tensors.insert(
            key,
            Expect {
                shape: Vec::new(),
                required: false,
                counter: true,
            },
        );
    }
    Ok(Layout {
        arch,
        layers,
        head: head.to_string(),
        tensors,
    })
}

/// The PyTorch (conv module, batch-norm module) names of our layer `name`.
fn torch_names(naming: TorchNaming, name: &str) -> Result<(String, String)> {
    let block = |prefix: &str| -> Result<usize> {
        name.strip_prefix(prefix)
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n >= 1)
            .map(|n| n - 1)
            .ok_or_else(|| format_err(format!("layer {name} has no PyTorch counterpart")))
    };
    let timm_block = |b: usize| -> Result<String> {
        let mut first = 0;
        for (s, &n) in TIMM_STAGES.iter().enumerate() {
            if b < first + n {
                return Ok(format!("blocks.{s}.{}", b - first));
            }
            first += n;
        }
        Err(format_err(format!("layer {name} has no timm counterpart")))
    };
    Ok(match (naming, name) {
        (TorchNaming::Seed, "conv1") => ("first_conv.0".into(), "first_conv.1".into()),
        (TorchNaming::Timm, "conv1") => ("conv_stem".into(), "bn1".into()),
        (TorchNaming::Seed, _) if name.starts_with("conv_dw_") => {
            let b = block("conv_dw_")?;
            (
                format!("stage_layers.{b}.dw.0"),
                format!("stage_layers.{b}.dw.1"),
            )
        }
        (TorchNaming::Seed, _) if name.starts_with("conv_pw_") => {
            let b = block("conv_pw_")?;
            (
                format!("stage_layers.{b}.pw.0"),
                format!("stage_layers.{b}.pw.1"),
            )
        }
        (TorchNaming::Timm, _) if name.starts_with("conv_dw_") => {
            let p = timm_block(block("conv_dw_")?)?;
            (format!("{p}.conv_dw"), format!("{p}.bn1"))
        }
        (TorchNaming::Timm, _) if name.starts_with("conv_pw_") => {
            let p = timm_block(block("conv_pw_")?)?;
            (format!("{p}.conv_pw"), format!("{p}.bn2"))
        }
        _ => {
            return Err(format_err(format!(
                "layer {name} has no {} counterpart",
                naming.name()
            )));
        }
    })
}

impl Layout {
    /// What is wrong with the shapes of the float tensors that the file has
    /// and we expect.
    fn shape_mismatches(&self, names: &StrippedNames<'_, '_>) -> Vec<String> {
        let mut out = Vec::new();
        for (key, e) in &self.tensors {
            if e.counter {
                continue;
            }
            if let Some(view) = names.view(key)
                && view.shape() != e.shape.as_slice()
            {
                out.push(format!(
                    "tensor {key} has shape {:?}, expected {:?} (alpha {}, {} classes)",
                    view.shape(),
                    e.shape,
                    self.arch.config().alpha,
                    self.arch.config().classes
                ));
            }
        }
        out
    }

    /// Checks names, shapes and dtypes against the file, without reading
    /// any values.
    fn check(&self, names: &StrippedNames<'_, '_>) -> Result<()> {
        let unexpected: Vec<&str> = names
            .names
            .iter()
            .filter(|(short, _)| !self.tensors.contains_key(*short))
            .map(|(_, full)| full.as_str())
            .collect();
        if !unexpected.is_empty() {
            return Err(format_err(format!(
                "unexpected tensors: {}",
                unexpected.join(", ")
            )));
        }
        let missing: Vec<&str> = self
            .tensors
            .iter()
            .filter(|(k, e)| e.required && !names.names.contains_key(*k))
            .map(|(k, _)| k.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(format_err(format!(
                "missing tensors: {}",
                missing.join(", ")
            )));
        }
        for (key, e) in &self.tensors {
            let Some(view) = names.view(key) else {
                continue;
            };
            if e.counter {
                let ints = [
                    Dtype::I64,
                    Dtype::I32,
                    Dtype::I16,
                    Dtype::I8,
                    Dtype::U64,
                    Dtype::U32,
                    Dtype::U16,
                    Dtype::U8,
                ];
                if !ints.contains(&view.dtype()) || view.shape().iter().product::<usize>() > 1 {
                    return Err(format_err(format!(
                        "tensor {key} should be an integer counter, is {} {:?}",
                        view.dtype(),
                        view.shape()
                    )));
                }
                continue;
            }
            if !matches!(
                view.dtype(),
                Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64
            ) {
                return Err(format_err(format!(
                    "tensor {key} has dtype {}, expected a float type (F32, F16, BF16, F64)",
                    view.dtype()
                )));
            }
            if view.shape() != e.shape.as_slice() {
                return Err(format_err(format!(
                    "tensor {key} has shape {:?}, expected {:?} (alpha {}, {} classes)",
                    view.shape(),
                    e.shape,
                    self.arch.config().alpha,
                    self.arch.config().classes
                )));
            }
        }
        for (_, bn) in &self.layers {
            let w = names.names.contains_key(&format!("{bn}.weight"));
            let b = names.names.contains_key(&format!("{bn}.bias"));
            if w != b {
                return Err(format_err(format!(
                    "batch norm {bn} has only one of weight and bias"
                )));
            }
        }
        Ok(())
    }
}

/// The values of a float tensor as f32, checked finite.
fn floats(names: &StrippedNames<'_, '_>, key: &str) -> Result<Option<Vec<f32>>> {
    let Some(view) = names.view(key) else {
        return Ok(None);
    };
    let values = to_f32(view.dtype(), view.data())
        .ok_or_else(|| format_err(format!("tensor {key}: bad data length or dtype")))?;
    check_values(key, &values).map_err(|e| format_err(e.to_string()))?;
    Ok(Some(values))
}

/// Little-endian floats of `dtype` as f32.
fn to_f32(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    let size = match dtype {
        Dtype::F64 => 8,
        Dtype::F32 => 4,
        Dtype::F16 | Dtype::BF16 => 2,
        _ => return None,
    };
    if !data.len().is_multiple_of(size) {
        return None;
    }
    Some(
        data.chunks_exact(size)
            .map(|c| match dtype {
                Dtype::F64 => {
                    f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                }
                Dtype::F32 => f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                Dtype::F16 => f16_to_f32(u16::from_le_bytes([c[0], c[1]])),
                _ => f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16),
            })
            .collect(),
    )
}

/// IEEE 754 half precision to single precision (exact).
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let magnitude = match exp {
        // Zero and subnormals: man * 2^-24, exact in f32.
        0 => (man as f32) * (1.0 / 16_777_216.0),
        // Infinity and NaN.
        0x1f => f32::from_bits(0x7f80_0000 | (man << 13)),
        _ => f32::from_bits(((exp + 112) << 23) | (man << 13)),
    };
    f32::from_bits(magnitude.to_bits() | sign)
}

fn build(
    layout: Layout,
    names: &StrippedNames<'_, '_>,
    naming: TorchNaming,
) -> Result<LoadedModel> {
    let need = |key: &str| -> Result<Vec<f32>> {
        floats(names, key)?.ok_or_else(|| format_err(format!("missing tensor {key}")))
    };
    let tensor = |key: &str| -> Result<Tensor> {
        let shape = layout
            .tensors
            .get(key)
            .map(|e| e.shape.clone())
            .ok_or_else(|| format_err(format!("unknown tensor {key}")))?;
        Tensor::new(shape, need(key)?).map_err(|e| format_err(e.to_string()))
    };
    let mut convs = Vec::with_capacity(layout.layers.len());
    for (conv, bn) in &layout.layers {
        let weight = tensor(&format!("{conv}.weight"))?;
        let c = weight.shape()[0];
        let mut mean = need(&format!("{bn}.running_mean"))?;
        if let Some(bias) = floats(names, &format!("{conv}.bias"))? {
            // BN(x + b) with mean μ is BN(x) with mean μ - b.
            for (m, b) in mean.iter_mut().zip(bias) {
                *m -= b;
            }
        }
        let var = need(&format!("{bn}.running_var"))?;
        if let Some(v) = var.iter().find(|&&v| v < 0.0) {
            return Err(format_err(format!(
                "tensor {bn}.running_var has a negative variance {v}"
            )));
        }
        convs.push(ConvBn {
            weight,
            bn: BatchNorm {
                gamma: floats(names, &format!("{bn}.weight"))?.unwrap_or_else(|| vec![1.0; c]),
                beta: floats(names, &format!("{bn}.bias"))?.unwrap_or_else(|| vec![0.0; c]),
                mean,
                var,
                eps: TORCH_BN_EPSILON,
            },
        });
    }
    let head = &layout.head;
    let weight = tensor(&format!("{head}.weight"))?;
    let classes = weight.shape()[0];
    let bias = floats(names, &format!("{head}.bias"))?.unwrap_or_else(|| vec![0.0; classes]);
    let bias = Tensor::new(vec![classes], bias).map_err(|e| format_err(e.to_string()))?;
    let name = layout.arch.config().name();
    let net = MobileNet::from_parts(layout.arch, convs, Classifier { weight, bias })
        .map_err(|e| format_err(format!("the weights do not fit the network: {e}")))?;
    Ok(LoadedModel {
        net,
        metadata: ModelMetadata {
            name: Some(name),
            preprocess: Some(naming.preprocess().into()),
            labels: None,
            source_format: "torch".into(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
    }

    #[test]
    fn timm_blocks() {
        let names: Vec<String> = (1..=13)
            .map(|n| {
                torch_names(TorchNaming::Timm, &format!("conv_dw_{n}"))
                    .unwrap()
                    .0
            })
            .collect();
        assert_eq!(names[0], "blocks.0.0.conv_dw");
        assert_eq!(names[2], "blocks.1.1.conv_dw");
        assert_eq!(names[5], "blocks.3.0.conv_dw");
        assert_eq!(names[12], "blocks.4.1.conv_dw");
    }
}
