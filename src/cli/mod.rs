//! Command-line parsing and dispatch. Every failure becomes one readable
//! line on stderr and a non-zero exit code: 2 for bad input (arguments,
//! configurations, files), 1 for anything else. Never a panic or backtrace.

mod bench;
mod bench_train;
mod classify;
mod convert;
mod engine_args;
mod eval;
mod features;
mod fetch;
mod format;
mod model_args;
mod paper;
mod profile;
mod quantize;
mod quantized;
mod separable;
mod summary;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for bad arguments or input, the same clap uses for usage errors.
const EXIT_BAD_INPUT: u8 = 2;
/// Exit code for failures of the environment (I/O and the like).
const EXIT_FAILURE: u8 = 1;

#[derive(Parser, Debug)]
#[command(
    name = "mobilenet",
    version,
    about = "MobileNet v1 (Howard et al. 2017) from scratch: inspect, cost, run",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Per-layer table of a MobileNet (paper Table 1) with shapes and costs.
    Summary(summary::Args),
    /// Our exact counts beside the figures the paper prints.
    Paper(paper::Args),
    /// Standard vs depthwise-separable cost of one layer.
    Separable(separable::Args),
    /// Latency and throughput of the inference engine on this machine.
    Bench(bench::Args),
    /// Time per layer beside mult-adds per layer.
    Profile(profile::Args),
    /// Classify images with a pretrained model.
    Classify(classify::Args),
    /// Write the activations of a layer as .npy files.
    Features(features::Args),
    /// Convert a model to our safetensors format or to ONNX.
    Convert(convert::Args),
    /// Download a published checkpoint into the cache.
    Fetch(fetch::Args),
    /// Train from scratch or fine-tune on an image folder or IDX files.
    Train(train::Args),
    /// Accuracy of a model on a labelled dataset.
    Eval(eval::Args),
    /// Post-training int8 quantization of a float model.
    Quantize(quantize::Args),
}

/// Parses the arguments, runs the command and maps errors to exit codes.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // --help and --version print to stdout and succeed; usage
            // errors print clap's message and exit 2.
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { EXIT_BAD_INPUT } else { 0 });
        }
    };
    let result = match cli.command {
        Command::Summary(args) => summary::run(&args),
        Command::Paper(args) => paper::run(&args),
        Command::Separable(args) => separable::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Profile(args) => profile::run(&args),
        Command::Classify(args) => classify::run(&args),
        Command::Features(args) => features::run(&args),
        Command::Convert(args) => convert::run(&args),
        Command::Train(args) => train::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Quantize(args) => quantize::run(&args),
        Command::Fetch(args) => fetch::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(if err.is_bad_input() {
                EXIT_BAD_INPUT
            } else {
                EXIT_FAILURE
            })
        }
    }
}
