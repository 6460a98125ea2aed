//! uint8 TFLite models in the CLI, run in integer arithmetic.
//!
//! [`QuantizedEngine`] is the one seam between the commands and the uint8
//! executors: `classify`, `bench` and `profile` only call its methods. It
//! runs the fast [`QuantizedPlan`] (bit-exact with the reference, tested in
//! `tests/quant_plan.rs`), or the exact reference executor for graphs the
//! plan does not cover. `features` needs every op's output and uses the
//! reference pipeline's trace. [`IntegerRunner`] is what `bench` and
//! `profile` time: a uint8 model on that engine, or one of our int8 models
//! (`mobilenet quantize`) on its fast [`Int8Plan`].

use std::path::Path;
use std::time::Duration;

use rayon::prelude::*;

use crate::cli::model_args::ModelArgs;
use mobilenet::engine::Parallelism;
use mobilenet::formats::load::read_bounded;
use mobilenet::formats::tflite::find_labels;
use mobilenet::image::{Preprocess, RgbImage, preprocess_into, preprocess_tf_u8};
use mobilenet::kernels::int8::IntIsa;
use mobilenet::quant::plan::{
    QuantizedPlan, QuantizedPlanOptions, QuantizedStepInfo, QuantizedWorkspace,
};
use mobilenet::quant::ptq::plan::Int8Plan;
use mobilenet::quant::{
    QuantParams, QuantizedPipeline, QuantizedTflite, TensorSpec, is_uint8_tflite,
};
use mobilenet::{Error, Result};

/// A uint8 model opened from the command line, with its labels.
pub struct QuantizedModel {
    pub pipeline: QuantizedPipeline,
    /// Labels from the files' metadata (the head's first).
    pub labels: Option<Vec<String>>,
}

/// Help of the `--dequantize` flag of the commands that run models.
pub const DEQUANTIZE_HELP: &str = "Run a uint8 TFLite model in float, its weights dequantized, \
                                   instead of in integer arithmetic as TFLite does";

/// Opens `--model` (and `--head`) as a uint8 model, or returns `None` when
/// the float path applies: `dequantize` (the command's `--dequantize`), or
/// a file that is not a uint8 TFLite model.
pub fn open(args: &ModelArgs, dequantize: bool) -> Result<Option<QuantizedModel>> {
    if dequantize {
        return Ok(None);
    }
    let path = args.resolve()?;
    if path.is_dir() {
        return Ok(None);
    }
    let bytes = read_bounded(&path)?;
    if !is_uint8_tflite(&bytes) {
        return Ok(None);
    }
    let mut files = vec![(path, bytes)];
    if let Some(head) = &args.head {
        files.push((head.clone(), read_bounded(head)?));
    }
    let stages = files
        .iter()
        .map(|(path, bytes)| QuantizedTflite::from_bytes(bytes).map_err(|e| in_file(path, e)))
        .collect::<Result<Vec<_>>>()?;
    let pipeline = QuantizedPipeline::new(stages)?;
    let classes = pipeline.output().numel();
    let labels = files
        .iter()
        .rev()
        .find_map(|(_, bytes)| find_labels(bytes, classes));
    Ok(Some(QuantizedModel { pipeline, labels }))
}

/// The integer kernels matching a float `--isa`: the same vector width
/// (AVX-512 means the best integer set, VNNI where the CPU has it).
pub fn int_isa(isa: Option<mobilenet::kernels::Isa>) -> Option<IntIsa> {
    use mobilenet::kernels::Isa;
    match isa? {
        Isa::Portable => Some(IntIsa::Portable),
        Isa::Avx2Fma => Some(IntIsa::Avx2),
        Isa::Avx512 => None,
    }
}

/// Names the file in a format error.
fn in_file(path: &Path, e: Error) -> Error {
    match e {
        Error::Format(m) => Error::Format(format!("{}: {m}", path.display())),
        other => other,
    }
}

/// `[height, width]` of an NHWC RGB model input of batch 1.
pub fn image_size(input: &TensorSpec) -> Result<usize> {
    match input.shape[..] {
        [1, h, w, 3] if h == w => Ok(h),
        _ => Err(Error::InvalidConfig(format!(
            "the model input '{}' has shape {:?}; expected one square RGB image [1, S, S, 3]",
            input.name, input.shape
        ))),
    }
}

/// The classifier's outputs: `[1, classes]` probabilities from a softmax.
pub fn classes(pipeline: &QuantizedPipeline) -> Result<usize> {
    let out = pipeline.output();
    match (&out.shape[..], pipeline.logits()) {
        ([1, classes], Some(_)) => Ok(*classes),
        _ => Err(Error::InvalidConfig(format!(
            "the model ends in '{}' {:?}, not in a softmax over classes (an embedding extractor \
             needs its head: --head FILE)",
            out.name, out.shape
        ))),
    }
}

/// Whether the input quantization is TF's pixel mapping `(q - 128) / 128`,
/// under which the official files take the preprocessed RGB bytes as they
/// are (`shared/refs/README.md`).
fn takes_pixels(params: QuantParams) -> bool {
    params.zero_point == 128 && params.scale == 1.0 / 128.0
}

/// One image as the model's uint8 input: for the TF recipe and an input
/// quantized as pixels, the resized and cropped RGB bytes themselves;
/// otherwise the float input of `recipe`, quantized to the input's params.
pub fn image_input(
    image: &RgbImage,
    input: &TensorSpec,
    recipe: Preprocess,
    out: &mut [u8],
) -> Result<()> {
    let size = image_size(input)?;
    if recipe == Preprocess::Tf && takes_pixels(input.params) {
        let pixels = preprocess_tf_u8(image, size)?;
        if out.len() != pixels.len() {
            return Err(Error::Shape(format!(
                "input buffer of {} bytes for {} pixels",
                out.len(),
                pixels.len()
            )));
        }
        out.copy_from_slice(&pixels);
        return Ok(());
    }
    let mut real = vec![0f32; out.len()];
    preprocess_into(image, size, recipe, &mut real)?;
    for (o, &x) in out.iter_mut().zip(&real) {
        *o = input.params.quantize(x);
    }
    Ok(())
}

/// One step of the executor, for `profile`.
#[derive(Clone, Debug)]
pub struct QuantStep {
    /// The op's output tensor name.
    pub name: String,
    /// The TFLite operator (`CONV_2D`, ...).
    pub kind: &'static str,
    /// Its output shape without the batch dimension.
    pub output: Vec<usize>,
    pub mult_adds: u64,
}

impl From<&QuantizedStepInfo> for QuantStep {
    fn from(step: &QuantizedStepInfo) -> QuantStep {
        QuantStep {
            name: step.name.clone(),
            kind: step.kind,
            output: step.shape.get(1..).unwrap_or_default().to_vec(),
            mult_adds: step.mult_adds,
        }
    }
}

/// Runs a uint8 model on batches of images: on the fast integer plan
/// ([`QuantizedPlan`]: packed weights, VNNI/AVX2 kernels, no allocation per
/// run) when it covers the model (a MobileNet-style chain ending in a
/// softmax), else on the exact reference executor, image by image.
pub struct QuantizedEngine {
    pipeline: QuantizedPipeline,
    backend: Backend,
}

enum Backend {
    Plan {
        plan: Box<QuantizedPlan>,
        workspace: Box<QuantizedWorkspace>,
    },
    /// The reference executor, with the last run's pre-softmax codes, one
    /// row per image (empty when the model has no final softmax).
    Reference { logits: Vec<u8> },
}

impl QuantizedEngine {
    /// Compiles the fast plan for `isa` (`None`: the best this CPU has,
    /// lowered by `MOBILENET_ISA`), falling back to the reference
    /// executor for graphs the plan does not cover.
    pub fn new(
        pipeline: QuantizedPipeline,
        isa: Option<IntIsa>,
        par: &Parallelism,
    ) -> Result<QuantizedEngine> {
        let options = QuantizedPlanOptions {
            isa,
            ..Default::default()
        };
        let backend = match QuantizedPlan::compile(&pipeline, &options) {
            Ok(plan) => {
                let workspace = Box::new(QuantizedWorkspace::new(&plan, par));
                Backend::Plan {
                    plan: Box::new(plan),
                    workspace,
                }
            }
            // An ISA this CPU lacks is the caller's error, not a reason
            // to fall back.
            Err(e) if isa.is_some_and(|i| !i.is_supported()) => return Err(e),
            Err(_) => Backend::Reference { logits: Vec::new() },
        };
        Ok(QuantizedEngine { pipeline, backend })
    }

    /// Input bytes per image.
    pub fn input_len(&self) -> usize {
        self.pipeline.input().numel()
    }

    /// Output bytes per image.
    pub fn output_len(&self) -> usize {
        self.pipeline.output().numel()
    }

    /// The input tensor (batch 1).
    pub fn input(&self) -> &TensorSpec {
        self.pipeline.input()
    }

    /// The output tensor (batch 1).
    pub fn output(&self) -> &TensorSpec {
        self.pipeline.output()
    }

    /// The pre-softmax tensor (batch 1), if the model ends in a softmax.
    pub fn logits_spec(&self) -> Option<&TensorSpec> {
        self.pipeline.logits()
    }

    /// The instruction set of the fast plan, or `reference`.
    pub fn isa(&self) -> &'static str {
        match &self.backend {
            Backend::Plan { plan, .. } => plan.isa().name(),
            Backend::Reference { .. } => "reference",
        }
    }

    /// The steps in execution order.
    pub fn steps(&self) -> Vec<QuantStep> {
        match &self.backend {
            Backend::Plan { plan, .. } => plan.steps().map(QuantStep::from).collect(),
            Backend::Reference { .. } => self
                .pipeline
                .stages()
                .iter()
                .flat_map(|stage| {
                    stage
                        .ops()
                        .zip(stage.mult_adds())
                        .map(|((kind, spec), mult_adds)| QuantStep {
                            name: spec.name.clone(),
                            kind,
                            output: spec.shape.get(1..).unwrap_or_default().to_vec(),
                            mult_adds,
                        })
                })
                .collect(),
        }
    }

    /// Runs `batch` images (`batch * input_len` bytes) into `output`
    /// (`batch * output_len` codes); keeps the logits for
    /// [`QuantizedEngine::logits`].
    pub fn run(
        &mut self,
        input: &[u8],
        batch: usize,
        output: &mut [u8],
        par: &Parallelism,
    ) -> Result<()> {
        self.check(input, batch, output)?;
        let (in_len, out_len) = (self.input_len(), self.output_len());
        let pipeline = &self.pipeline;
        match &mut self.backend {
            Backend::Plan { plan, workspace } => plan.run(input, batch, output, workspace, par),
            Backend::Reference { logits } => {
                let rows: Vec<Option<Vec<u8>>> = par.install(|| {
                    input
                        .par_chunks(in_len)
                        .zip(output.par_chunks_mut(out_len))
                        .map(|(image, out)| {
                            let (probs, logits) = pipeline.run_with_logits(image)?;
                            out.copy_from_slice(&probs.data);
                            Ok(logits.map(|l| l.data))
                        })
                        .collect::<Result<_>>()
                })?;
                *logits = rows.into_iter().flatten().flatten().collect();
                Ok(())
            }
        }
    }

    /// Like [`QuantizedEngine::run`], adding each step's time to `times`
    /// (one entry per step of [`QuantizedEngine::steps`]).
    pub fn run_profiled(
        &mut self,
        input: &[u8],
        batch: usize,
        output: &mut [u8],
        par: &Parallelism,
        times: &mut [Duration],
    ) -> Result<()> {
        self.check(input, batch, output)?;
        let (in_len, out_len) = (self.input_len(), self.output_len());
        match &mut self.backend {
            Backend::Plan { plan, workspace } => {
                plan.run_profiled(input, batch, output, workspace, par, times)
            }
            Backend::Reference { .. } => {
                for (image, out) in input.chunks(in_len).zip(output.chunks_mut(out_len)) {
                    let probs = self.pipeline.run_profiled(image, times)?;
                    out.copy_from_slice(&probs.data);
                }
                Ok(())
            }
        }
    }

    /// The pre-softmax codes of the last [`QuantizedEngine::run`], one row
    /// per image.
    pub fn logits(&self) -> &[u8] {
        match &self.backend {
            Backend::Plan { workspace, .. } => workspace.logits(),
            Backend::Reference { logits } => logits,
        }
    }

    fn check(&self, input: &[u8], batch: usize, output: &[u8]) -> Result<()> {
        let (in_len, out_len) = (self.input_len(), self.output_len());
        if batch == 0 || input.len() != batch * in_len || output.len() != batch * out_len {
            return Err(Error::Shape(format!(
                "a batch of {batch} takes {} input and {} output bytes, got {} and {}",
                batch * in_len,
                batch * out_len,
                input.len(),
                output.len()
            )));
        }
        Ok(())
    }
}

/// An integer model for `bench` and `profile`, with its output buffer.
pub enum IntegerRunner {
    /// A uint8 TFLite model.
    Uint8 {
        engine: QuantizedEngine,
        output: Vec<u8>,
    },
    /// One of our int8 models, on its fast plan.
    Int8 {
        plan: Box<Int8Plan>,
        workspace: Box<QuantizedWorkspace>,
        logits: Vec<f32>,
    },
}

impl IntegerRunner {
    /// A uint8 model with its output buffer for `batch` images.
    pub fn uint8(engine: QuantizedEngine, batch: usize) -> IntegerRunner {
        let output = vec![0; batch * engine.output_len()];
        IntegerRunner::Uint8 { engine, output }
    }

    /// Compiles an int8 model for `isa` (`None`: the best this CPU has,
    /// lowered by `MOBILENET_ISA`), with buffers for `batch` images.
    pub fn int8(
        model: &mobilenet::quant::ptq::Int8MobileNet,
        isa: Option<IntIsa>,
        batch: usize,
        par: &Parallelism,
    ) -> Result<IntegerRunner> {
        let options = QuantizedPlanOptions {
            isa,
            ..Default::default()
        };
        let plan = Int8Plan::compile(model, &options)?;
        let workspace = Box::new(plan.workspace(par));
        let logits = vec![0.0; batch * plan.classes()];
        Ok(IntegerRunner::Int8 {
            plan: Box::new(plan),
            workspace,
            logits,
        })
    }

    /// `uint8` or `int8`.
    pub fn dtype(&self) -> &'static str {
        match self {
            IntegerRunner::Uint8 { .. } => "uint8",
            IntegerRunner::Int8 { .. } => "int8",
        }
    }

    /// The instruction set it runs on (`reference` for a uint8 graph the
    /// fast plan does not cover).
    pub fn isa(&self) -> &'static str {
        match self {
            IntegerRunner::Uint8 { engine, .. } => engine.isa(),
            IntegerRunner::Int8 { plan, .. } => plan.isa().name(),
        }
    }

    /// Input codes per image.
    pub fn input_len(&self) -> usize {
        match self {
            IntegerRunner::Uint8 { engine, .. } => engine.input_len(),
            IntegerRunner::Int8 { plan, .. } => plan.input_len(),
        }
    }

    /// The steps in execution order.
    pub fn steps(&self) -> Vec<QuantStep> {
        match self {
            IntegerRunner::Uint8 { engine, .. } => engine.steps(),
            IntegerRunner::Int8 { plan, .. } => plan.steps().map(QuantStep::from).collect(),
        }
    }

    /// Multiply-adds per image.
    pub fn mult_adds(&self) -> u64 {
        self.steps().iter().map(|s| s.mult_adds).sum()
    }

    /// Runs `batch` images of input codes.
    pub fn run(&mut self, input: &[u8], batch: usize, par: &Parallelism) -> Result<()> {
        match self {
            IntegerRunner::Uint8 { engine, output } => engine.run(input, batch, output, par),
            IntegerRunner::Int8 {
                plan,
                workspace,
                logits,
            } => plan.run(input, batch, logits, workspace, par),
        }
    }

    /// Like [`IntegerRunner::run`], adding each step's time to `times`
    /// (one entry per step of [`IntegerRunner::steps`]).
    pub fn run_profiled(
        &mut self,
        input: &[u8],
        batch: usize,
        par: &Parallelism,
        times: &mut [Duration],
    ) -> Result<()> {
        match self {
            IntegerRunner::Uint8 { engine, output } => {
                engine.run_profiled(input, batch, output, par, times)
            }
            IntegerRunner::Int8 {
                plan,
                workspace,
                logits,
            } => plan.run_profiled(input, batch, logits, workspace, par, times),
        }
    }
}

/// Our layer names (`conv1`, `conv_dw_1`, `conv_pw_1`, ..., `global_pool`,
/// `fc`) for the ops of a MobileNet v1 graph, so that `features --layer`
/// takes the same names for uint8 and float models; `None` for ops with no
/// counterpart (reshape, softmax).
pub fn layer_aliases(kinds: &[&str]) -> Vec<Option<String>> {
    let mut block = 0;
    let mut after_dw = false;
    let mut after_pool = false;
    let mut seen_conv = false;
    kinds
        .iter()
        .map(|&kind| match kind {
            "DEPTHWISE_CONV_2D" => {
                block += 1;
                after_dw = true;
                Some(format!("conv_dw_{block}"))
            }
            "CONV_2D" if after_dw => {
                after_dw = false;
                Some(format!("conv_pw_{block}"))
            }
            "CONV_2D" | "FULLY_CONNECTED" if after_pool => {
                after_pool = false;
                Some("fc".into())
            }
            "CONV_2D" if !seen_conv => {
                seen_conv = true;
                Some("conv1".into())
            }
            "AVERAGE_POOL_2D" => {
                after_pool = true;
                Some("global_pool".into())
            }
            _ => None,
        })
        .collect()
}
