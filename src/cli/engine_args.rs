//! Options shared by the commands that run the engine (`bench`, `profile`).

use crate::cli::model_args::ModelArgs;
use crate::cli::quantized::{self, IntegerRunner, QuantizedEngine};
use mobilenet::Result;
use mobilenet::engine::{Parallelism, Plan, PlanOptions, Workspace};
use mobilenet::kernels::Isa;
use mobilenet::model::{MobileNet, MobileNetConfig};
use mobilenet::quant::ptq::file as int8_file;

/// Most timed runs we accept (the samples are kept in memory).
const MAX_RUNS: usize = 1_000_000;
/// Largest batch we accept before even trying to allocate it.
const MAX_BATCH: usize = 65_536;

#[derive(clap::Args, Debug)]
pub struct EngineArgs {
    /// A model file to run instead of a random network (a uint8 TFLite
    /// model or an int8 one from `quantize` runs in integer arithmetic);
    /// --alpha, --resolution, --classes
    /// and --strides are then the file's.
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, help = quantized::DEQUANTIZE_HELP)]
    pub dequantize: bool,
    /// Width multiplier α of the (randomly initialised) network.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub alpha: f64,
    /// Input resolution in pixels.
    #[arg(long, default_value_t = 224)]
    pub resolution: usize,
    /// Number of classes.
    #[arg(long, default_value_t = 1000)]
    pub classes: usize,
    /// Strides of the five downsampling layers, each 1 or 2.
    #[arg(long, default_value = "2,2,2,2,2", value_parser = crate::cli::summary::strides_arg)]
    pub strides: [usize; 5],
    /// Images per run.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 100)]
    pub runs: usize,
    /// Untimed runs first.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Instruction set (portable, avx2, avx512); the best available by default.
    #[arg(long)]
    pub isa: Option<Isa>,
    /// Do not fuse each depthwise conv with the pointwise conv after it.
    #[arg(long)]
    pub no_fuse: bool,
    /// Tuning: bytes of depthwise output per fused band, in KiB.
    #[arg(long, hide_short_help = true)]
    pub band_kib: Option<usize>,
    /// Tuning: fuse only blocks with at least this many output rows.
    #[arg(long, hide_short_help = true)]
    pub min_fused_rows: Option<usize>,
    /// Tuning: split only steps with at least this many mult-adds across threads.
    #[arg(long, hide_short_help = true)]
    pub min_parallel_mult_adds: Option<u64>,
    /// Tuning: split every pointwise conv across threads by pixels, also
    /// those whose weights outweigh their input (split by output channels
    /// by default).
    #[arg(long, hide_short_help = true)]
    pub no_column_split: bool,
    /// Tuning: run every step over whole images, without chaining the
    /// leading layers band by band.
    #[arg(long, hide_short_help = true)]
    pub no_chain: bool,
    /// Tuning: chain the leading layers whose outputs have at least this
    /// many KiB.
    #[arg(long, hide_short_help = true)]
    pub chain_min_kib: Option<usize>,
    /// Tuning: scratch per thread for the chained layers' bands, in KiB.
    #[arg(long, hide_short_help = true)]
    pub chain_scratch_kib: Option<usize>,
}

/// An integer model ready to run, with everything needed to run it.
pub struct QuantPrepared {
    /// Width multiplier α (of a uint8 file: from the stem's channels,
    /// 32·α).
    pub alpha: f64,
    pub resolution: usize,
    /// The file name, for the text output.
    pub name: String,
    pub engine: IntegerRunner,
    pub par: Parallelism,
    pub input: Vec<u8>,
}

/// A compiled plan with everything needed to run it.
pub struct Prepared {
    pub config: MobileNetConfig,
    pub plan: Plan,
    pub par: Parallelism,
    pub workspace: Workspace,
    pub input: Vec<f32>,
    pub logits: Vec<f32>,
}

impl EngineArgs {
    /// The integer model given by `--model` (and `--head`), if it is one
    /// (a uint8 TFLite file without `--dequantize`, or an int8 file of
    /// ours), ready to run on a fixed input.
    pub fn prepare_quantized(&self) -> Result<Option<QuantPrepared>> {
        self.check_counts()?;
        if self.model.model.is_none() {
            return Ok(None);
        }
        let isa = quantized::int_isa(self.isa);
        let par = Parallelism::new(self.threads)?;
        let path = self.model.resolve()?;
        let (engine, alpha, resolution) = if int8_file::is_quantized_path(&path) {
            let model = int8_file::load(&path)?;
            let engine = IntegerRunner::int8(&model, isa, self.batch, &par)?;
            let config = model.architecture().config();
            (engine, config.alpha, config.resolution)
        } else {
            let Some(model) = quantized::open(&self.model, self.dequantize)? else {
                return Ok(None);
            };
            let resolution = quantized::image_size(model.pipeline.input())?;
            let engine = QuantizedEngine::new(model.pipeline, isa, &par)?;
            let stem = engine
                .steps()
                .first()
                .and_then(|s| s.output.last().copied())
                .unwrap_or(0);
            (
                IntegerRunner::uint8(engine, self.batch),
                stem as f64 / 32.0,
                resolution,
            )
        };
        // A fixed pattern over all codes, like the pixels of a photo.
        let input = (0..self.batch * engine.input_len())
            .map(|i| ((i * 7919) % 256) as u8)
            .collect();
        let name = self.model.model.clone().unwrap_or_default();
        let name = std::path::Path::new(&name)
            .file_stem()
            .map_or(name.clone(), |s| s.to_string_lossy().into_owned());
        Ok(Some(QuantPrepared {
            alpha,
            resolution,
            name,
            engine,
            par,
            input,
        }))
    }

    /// Checks batch, runs and warm-up before anything is allocated.
    fn check_counts(&self) -> Result<()> {
        let bad = |msg: String| Err(mobilenet::Error::InvalidConfig(msg));
        if self.batch == 0 || self.batch > MAX_BATCH {
            return bad(format!(
                "batch must be between 1 and {MAX_BATCH}, got {}",
                self.batch
            ));
        }
        if self.runs == 0 || self.runs > MAX_RUNS {
            return bad(format!(
                "runs must be between 1 and {MAX_RUNS}, got {}",
                self.runs
            ));
        }
        if self.warmup > MAX_RUNS {
            return bad(format!(
                "warmup must be at most {MAX_RUNS}, got {}",
                self.warmup
            ));
        }
        Ok(())
    }

    /// Checks the numbers, builds the network (`--model`'s, else a random
    /// one) and compiles it.
    pub fn prepare(&self, fuse_by_default: bool) -> Result<Prepared> {
        self.check_counts()?;
        let net = if self.model.model.is_some() {
            self.model.load()?.net
        } else {
            MobileNet::random(&self.config()?, 0)?
        };
        let config = net.config().clone();
        let defaults = PlanOptions::default();
        let options = PlanOptions {
            isa: self.isa,
            fuse_separable: fuse_by_default && !self.no_fuse,
            band_bytes: self
                .band_kib
                .map_or(defaults.band_bytes, |k| k.saturating_mul(1024)),
            min_fused_rows: self.min_fused_rows.unwrap_or(defaults.min_fused_rows),
            min_parallel_mult_adds: self
                .min_parallel_mult_adds
                .unwrap_or(defaults.min_parallel_mult_adds),
            split_columns: !self.no_column_split,
            chain_min_bytes: match (
                self.no_chain || !fuse_by_default || self.no_fuse,
                self.chain_min_kib,
            ) {
                (true, _) => None,
                (false, None) => defaults.chain_min_bytes,
                (false, Some(k)) => Some(k.saturating_mul(1024)),
            },
            chain_scratch_bytes: self
                .chain_scratch_kib
                .map_or(defaults.chain_scratch_bytes, |k| k.saturating_mul(1024)),
        };
        let plan = Plan::compile(&net, &options)?;
        let par = Parallelism::new(self.threads)?;
        let workspace = Workspace::new(&plan, &par);
        // A fixed pattern in [-1, 1], like a normalised image.
        let input = (0..self.batch * plan.input_len())
            .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let logits = vec![0.0; self.batch * plan.classes()];
        Ok(Prepared {
            config,
            plan,
            par,
            workspace,
            input,
            logits,
        })
    }

    /// Checks batch, runs and warm-up, and gives the random network's
    /// configuration (its own checks run when the network is built).
    pub fn config(&self) -> Result<MobileNetConfig> {
        self.check_counts()?;
        Ok(MobileNetConfig {
            alpha: self.alpha,
            resolution: self.resolution,
            classes: self.classes,
            strides: self.strides,
            ..Default::default()
        })
    }
}

/// The `q`-quantile (0..=1) of sorted samples, by nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}
