//! Compiling a network into an execution plan.

use crate::cost::LayerCost;
use crate::engine::chain::{self, Stage};
use crate::engine::fold::fold_batch_norm;
use crate::error::{Error, Result};
use crate::kernels::depthwise::{Conv3x3Geometry, PackedDepthwise3x3};
use crate::kernels::pointwise::PackedPointwise;
use crate::kernels::stem::PackedStemConv3x3;
use crate::kernels::{Epilogue, Isa};
use crate::layers::Activation;
use crate::model::architecture::numel;
use crate::model::{LayerKind, LayerSpec, MobileNet};

/// Classes per packed block of the classifier. At batch 1 the classifier
/// is bound by reading its weights (4 MB for 1000 classes x 1024), so the
/// blocks are split across threads.
pub(crate) const CLASSIFIER_BLOCK: usize = 256;

/// Choices made when compiling a [`Plan`]. The defaults are the fastest.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanOptions {
    /// Instruction set for every kernel; `None` picks the best this CPU has
    /// (lowered by the `MOBILENET_ISA` environment variable).
    pub isa: Option<Isa>,
    /// Run each depthwise conv and the pointwise conv after it together,
    /// band of rows by band of rows, so the depthwise output is read back
    /// from cache instead of memory.
    pub fuse_separable: bool,
    /// Largest band of depthwise output, in bytes. Each band's pointwise
    /// GEMM streams all of that layer's weights, so bands should hold many
    /// pixels; and the band should stay in L2 until the GEMM reads it.
    /// 256 KiB (a quarter of a 1 MiB L2) measured 8 % faster than 48 KiB
    /// for 1.0 MobileNet-224 on a Zen 5 core, whose FMAs outrun the
    /// weights' streaming when a 14x14 layer runs one row per band.
    pub band_bytes: usize,
    /// Run the leading steps whose outputs have at least this many bytes
    /// (at 224 px and α 1.0: the stem and blocks 1-3, 1.6-3.2 MB each) as
    /// one chain, a band of rows at a time through all of them, so that
    /// those activations stay in L2 (see [`chain_scratch_bytes`]); `None`
    /// runs every step over whole images.
    ///
    /// [`chain_scratch_bytes`]: Self::chain_scratch_bytes
    pub chain_min_bytes: Option<usize>,
    /// Scratch memory per thread for a chain's rows: its bands are as tall
    /// as this allows.
    pub chain_scratch_bytes: usize,
    /// Fuse only blocks whose output has at least this many rows: smaller
    /// maps are split across threads better pixel by pixel.
    pub min_fused_rows: usize,
    /// Split a step across threads only if it has at least this many
    /// mult-adds: below that, waking another thread costs more than it saves.
    pub min_parallel_mult_adds: u64,
    /// Split an unfused pointwise conv across threads by output channels
    /// rather than by pixels when its weights outweigh its input (more
    /// output channels than pixels), so that each thread streams only its
    /// share of the weights.
    pub split_columns: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            isa: None,
            fuse_separable: true,
            band_bytes: 256 << 10,
            chain_min_bytes: Some(1 << 20),
            chain_scratch_bytes: 1 << 20,
            min_fused_rows: 8,
            min_parallel_mult_adds: 1_000_000,
            split_columns: true,
        }
    }
}

/// What one step of a plan is, for profiles and reports.
#[derive(Clone, Debug, PartialEq)]
pub struct StepInfo {
    /// The layer's name, `conv_dw_N+conv_pw_N` for a fused block, or
    /// `first..last` for a chain of layers.
    pub name: String,
    /// The layer kinds it computes.
    pub kinds: Vec<LayerKind>,
    /// Mult-adds of one image.
    pub mult_adds: u64,
    /// Input shape `[H, W, C]`.
    pub input: [usize; 3],
    /// Output shape `[H, W, C]`.
    pub output: [usize; 3],
}

/// The kernel work of one step.
#[derive(Debug)]
pub(crate) enum Op {
    /// A full 3x3 conv (the stem; the blocks of Conv MobileNet).
    Conv3x3 {
        kernel: PackedStemConv3x3,
        geom: Conv3x3Geometry,
    },
    Depthwise {
        kernel: PackedDepthwise3x3,
        geom: Conv3x3Geometry,
    },
    Pointwise {
        kernel: PackedPointwise,
        pixels: usize,
        /// Split across threads by output channels, not by pixels.
        by_columns: bool,
    },
    /// Depthwise then pointwise over bands of `band_rows` output rows.
    Separable {
        depthwise: PackedDepthwise3x3,
        geom: Conv3x3Geometry,
        pointwise: PackedPointwise,
        band_rows: usize,
    },
    /// Several of the above (leading stem and separable steps) run band by
    /// band together (see [`chain`]).
    Chain {
        stages: Vec<Stage>,
        band_rows: usize,
    },
    /// Global average pool, then the classifier as 1-row GEMMs over
    /// blocks of [`CLASSIFIER_BLOCK`] classes.
    PoolClassifier {
        pixels: usize,
        channels: usize,
        fc: Vec<PackedPointwise>,
    },
}

#[derive(Debug)]
pub(crate) struct Step {
    pub info: StepInfo,
    /// Whether the step is worth splitting across threads.
    pub parallel: bool,
    pub op: Op,
    pub in_len: usize,
    pub out_len: usize,
}

/// A network compiled for fast inference: BN folded, activations fused,
/// weights packed for one instruction set, buffers sized. Immutable; share
/// it between threads, each with its own [`Workspace`](crate::engine::Workspace).
#[derive(Debug)]
pub struct Plan {
    pub(crate) isa: Isa,
    pub(crate) epilogue: Epilogue,
    pub(crate) steps: Vec<Step>,
    input_shape: [usize; 3],
    classes: usize,
    activation_len: usize,
    band_len: usize,
    pooled_len: usize,
}

impl Plan {
    /// Compiles `net`. Fails if `options.isa` names an instruction set this
    /// CPU lacks.
    pub fn compile(net: &MobileNet, options: &PlanOptions) -> Result<Plan> {
        let isa = match options.isa {
            Some(isa) if !isa.is_supported() => {
                return Err(Error::InvalidConfig(format!(
                    "this CPU does not support the {isa} instruction set"
                )));
            }
            Some(isa) => isa,
            None => Isa::detect(),
        };
        let epilogue = match net.config().activation {
            Activation::Relu => Epilogue::RELU,
            Activation::Relu6 => Epilogue::RELU6,
            Activation::Identity => Epilogue::IDENTITY,
        };
        let specs = net.architecture().layers();
        let mut convs = net.convs().iter();
        let mut next_conv = |name: &str| {
            convs
                .next()
                .map(fold_batch_norm)
                .ok_or_else(|| Error::Shape(format!("{name}: no weights")))
        };
        let mut steps = Vec::new();
        let mut band_len = 0;
        let mut i = 0;
        while i < specs.len() {
            let spec = &specs[i];
            let (step, consumed) = match spec.kind {
                LayerKind::Conv => {
                    let f = next_conv(&spec.name)?;
                    let kernel = PackedStemConv3x3::pack(
                        isa,
                        &f.weight,
                        &f.bias,
                        spec.input[2],
                        spec.output[2],
                    )?;
                    let op = Op::Conv3x3 {
                        kernel,
                        geom: geometry(spec)?,
                    };
                    (step(vec![spec], op), 1)
                }
                LayerKind::Depthwise => {
                    let dw = next_conv(&spec.name)?;
                    let depthwise =
                        PackedDepthwise3x3::pack(isa, &dw.weight, &dw.bias, spec.input[2])?;
                    let geom = geometry(spec)?;
                    let next = specs.get(i + 1).filter(|n| n.kind == LayerKind::Pointwise);
                    match next {
                        Some(pw_spec)
                            if options.fuse_separable && geom.out_h >= options.min_fused_rows =>
                        {
                            let pw = next_conv(&pw_spec.name)?;
                            let pointwise = pointwise_kernel(isa, pw_spec, &pw.weight, &pw.bias)?;
                            let row = geom.out_w * spec.input[2];
                            let band_rows =
                                (options.band_bytes / 4 / row.max(1)).clamp(1, geom.out_h);
                            band_len = band_len.max(band_rows * row);
                            let op = Op::Separable {
                                depthwise,
                                geom,
                                pointwise,
                                band_rows,
                            };
                            (step(vec![spec, pw_spec], op), 2)
                        }
                        _ => (
                            step(
                                vec![spec],
                                Op::Depthwise {
                                    kernel: depthwise,
                                    geom,
                                },
                            ),
                            1,
                        ),
                    }
                }
                LayerKind::Pointwise => {
                    let f = next_conv(&spec.name)?;
                    let kernel = pointwise_kernel(isa, spec, &f.weight, &f.bias)?;
                    let pixels = spec.output[0] * spec.output[1];
                    let by_columns = options.split_columns && kernel.n() > pixels;
                    let op = Op::Pointwise {
                        kernel,
                        pixels,
                        by_columns,
                    };
                    (step(vec![spec], op), 1)
                }
                LayerKind::GlobalAvgPool => {
                    let fc_spec = specs
                        .get(i + 1)
                        .filter(|n| n.kind == LayerKind::FullyConnected)
                        .ok_or_else(|| Error::Shape("global pool without a classifier".into()))?;
                    let classifier = net.classifier();
                    let (channels, classes) = (fc_spec.input[2], fc_spec.output[2]);
                    // Packed in blocks of classes, so that threads can share
                    // the weight stream of a one-image batch.
                    let (weight, bias) = (classifier.weight.data(), classifier.bias.data());
                    let fc = (0..classes)
                        .step_by(CLASSIFIER_BLOCK)
                        .map(|c0| {
                            let c1 = (c0 + CLASSIFIER_BLOCK).min(classes);
                            PackedPointwise::pack(
                                isa,
                                &weight[c0 * channels..c1 * channels],
                                &bias[c0..c1],
                                channels,
                                c1 - c0,
                            )
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let pixels = spec.input[0] * spec.input[1];
                    let op = Op::PoolClassifier {
                        pixels,
                        channels,
                        fc,
                    };
                    (step(vec![spec, fc_spec], op), 2)
                }
                // The plan outputs logits; softmax is the caller's choice.
                LayerKind::Softmax => break,
                LayerKind::FullyConnected => {
                    return Err(Error::Shape(format!(
                        "{}: a classifier must follow the global pool",
                        spec.name
                    )));
                }
            };
            let mut step = step;
            step.parallel = step.info.mult_adds >= options.min_parallel_mult_adds;
            steps.push(step);
            i += consumed;
        }
        if let Some(min_bytes) = options.chain_min_bytes {
            steps = chain_leading_steps(steps, min_bytes, options.chain_scratch_bytes);
        }
        for s in &steps {
            if let Op::Chain { stages, band_rows } = &s.op {
                band_len = band_len.max(chain::scratch_len(stages, *band_rows));
            }
        }
        match steps.last() {
            Some(Step {
                op: Op::PoolClassifier { .. },
                ..
            }) => {}
            _ => {
                return Err(Error::Shape(
                    "the network must end with pool + classifier".into(),
                ));
            }
        }
        let r = net.config().resolution;
        let input_shape = [r, r, 3];
        let activation_len = steps
            .iter()
            .flat_map(|s| [s.in_len, s.out_len])
            .max()
            .unwrap_or(0);
        let pooled_len = steps
            .iter()
            .map(|s| match s.op {
                Op::PoolClassifier { channels, .. } => channels,
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        Ok(Plan {
            isa,
            epilogue,
            steps,
            input_shape,
            classes: net.config().classes,
            activation_len,
            band_len,
            pooled_len,
        })
    }

    /// The instruction set every kernel of the plan uses.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// One image's input shape `[H, W, 3]` (NHWC without the batch).
    pub fn input_shape(&self) -> [usize; 3] {
        self.input_shape
    }

    /// Elements of one input image.
    pub fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }

    /// Number of logits per image.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The steps, in execution order.
    pub fn steps(&self) -> impl ExactSizeIterator<Item = &StepInfo> {
        self.steps.iter().map(|s| &s.info)
    }

    /// Mult-adds of one image.
    pub fn mult_adds(&self) -> u64 {
        self.steps.iter().map(|s| s.info.mult_adds).sum()
    }

    /// Element counts of the scratch buffers: activation, band, pooled.
    pub(crate) fn scratch_sizes(&self) -> [usize; 3] {
        [self.activation_len, self.band_len.max(1), self.pooled_len]
    }
}

/// Merges the leading stem and separable steps whose outputs have at least
/// `min_bytes` into one [`Op::Chain`] (if there are two or more).
fn chain_leading_steps(steps: Vec<Step>, min_bytes: usize, scratch_bytes: usize) -> Vec<Step> {
    let chainable = |s: &Step| {
        matches!(s.op, Op::Conv3x3 { .. } | Op::Separable { .. })
            && s.out_len.saturating_mul(size_of::<f32>()) >= min_bytes
    };
    let count = steps
        .iter()
        .take_while(|s| chainable(s))
        .count()
        .min(chain::MAX_STAGES);
    if count < 2 {
        return steps;
    }
    let mut steps = steps.into_iter();
    let mut stages = Vec::with_capacity(count);
    let mut infos = Vec::with_capacity(count);
    let (mut in_len, mut out_len) = (0, 0);
    for (i, s) in steps.by_ref().take(count).enumerate() {
        if i == 0 {
            in_len = s.in_len;
        }
        out_len = s.out_len;
        infos.push(s.info);
        stages.push(match s.op {
            Op::Conv3x3 { kernel, geom } => Stage::Conv3x3 { kernel, geom },
            Op::Separable {
                depthwise,
                geom,
                pointwise,
                ..
            } => Stage::Separable {
                depthwise,
                geom,
                pointwise,
            },
            _ => unreachable!("only chainable steps are taken"),
        });
    }
    let band_rows = chain::band_rows_for(&stages, scratch_bytes);
    // Named by its first and last layer: "conv1..conv_pw_3".
    let first_layer = infos[0].name.split('+').next().unwrap_or_default();
    let last_layer = infos[count - 1].name.rsplit('+').next().unwrap_or_default();
    let info = StepInfo {
        name: format!("{first_layer}..{last_layer}"),
        kinds: infos.iter().flat_map(|i| i.kinds.iter().copied()).collect(),
        mult_adds: infos.iter().map(|i| i.mult_adds).sum(),
        input: infos[0].input,
        output: infos[count - 1].output,
    };
    let chained = Step {
        info,
        parallel: true,
        op: Op::Chain { stages, band_rows },
        in_len,
        out_len,
    };
    std::iter::once(chained).chain(steps).collect()
}

fn step(specs: Vec<&LayerSpec>, op: Op) -> Step {
    let (first, last) = (specs[0], specs[specs.len() - 1]);
    let output = last.output;
    let out_len = match op {
        Op::PoolClassifier { .. } => last.output[2],
        _ => numel(output) as usize,
    };
    Step {
        info: StepInfo {
            name: specs
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join("+"),
            kinds: specs.iter().map(|s| s.kind).collect(),
            mult_adds: specs.iter().map(|s| LayerCost::of(s).mult_adds).sum(),
            input: first.input,
            output,
        },
        parallel: true,
        op,
        in_len: numel(first.input) as usize,
        out_len,
    }
}

fn geometry(spec: &LayerSpec) -> Result<Conv3x3Geometry> {
    if spec.kernel != 3 {
        return Err(Error::InvalidConfig(format!(
            "{}: the engine runs 3x3 convolutions only, got {}x{}",
            spec.name, spec.kernel, spec.kernel
        )));
    }
    let p = spec.padding;
    Conv3x3Geometry::new(
        spec.input[0],
        spec.input[1],
        spec.stride,
        p.top,
        p.bottom,
        p.left,
        p.right,
    )
}

fn pointwise_kernel(
    isa: Isa,
    spec: &LayerSpec,
    weight: &[f32],
    bias: &[f32],
) -> Result<PackedPointwise> {
    PackedPointwise::pack(isa, weight, bias, spec.input[2], spec.output[2])
}
