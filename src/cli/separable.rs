//! `mobilenet separable`: the cost of one layer as a standard convolution
//! and as a depthwise-separable one (paper Section 3.1).

use serde_json::json;

use crate::cli::format::thousands;
use mobilenet::Result;
use mobilenet::cost::SeparableComparison;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Input channels M.
    #[arg(long = "in")]
    input: u64,
    /// Output channels N.
    #[arg(long = "out")]
    output: u64,
    /// Kernel size D_K.
    #[arg(long, default_value_t = 3)]
    kernel: u64,
    /// Output feature map size D_F (square).
    #[arg(long, default_value_t = 14)]
    size: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let (m, n, k, d) = (args.input, args.output, args.kernel, args.size);
    let c = SeparableComparison::new(m, n, k, d)?;
    if args.json {
        let value = json!({
            "in": m, "out": n, "kernel": k, "size": d,
            "standard": {"mult_adds": c.standard_mult_adds, "params": c.standard_params},
            "separable": {"mult_adds": c.separable_mult_adds, "params": c.separable_params},
            "ratio": c.ratio,
            "formula": c.formula,
            "reduction": 1.0 / c.ratio,
        });
        println!("{value}");
        return Ok(());
    }
    println!("{k}x{k} conv, M = {m} -> N = {n} channels, on a {d}x{d} output map");
    println!(
        "standard             D_K·D_K·M·N·D_F·D_F = {:>16} mult-adds, {:>12} params",
        thousands(c.standard_mult_adds),
        thousands(c.standard_params)
    );
    println!(
        "depthwise separable  D_K·D_K·M·D_F·D_F + M·N·D_F·D_F = {} mult-adds, {} params",
        thousands(c.separable_mult_adds),
        thousands(c.separable_params)
    );
    println!(
        "ratio separable / standard = {:.6} = 1/N + 1/D_K^2 = {:.6}  ({:.2}x fewer mult-adds)",
        c.ratio,
        c.formula,
        1.0 / c.ratio
    );
    Ok(())
}
