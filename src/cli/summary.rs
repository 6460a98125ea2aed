//! `mobilenet summary`: paper Table 1 for any α, resolution and variant,
//! with every layer's shapes and costs.

use clap::ValueEnum;
use serde_json::json;

use crate::cli::format::{millions, shape, table, thousands};
use mobilenet::Result;
use mobilenet::cost::CostReport;
use mobilenet::model::architecture::format_bytes;
use mobilenet::model::config::{format_alpha, parse_strides};
use mobilenet::model::{Architecture, LayerKind, MobileNetConfig, Variant};

/// The networks of the paper, as the CLI names them.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum VariantArg {
    /// Paper Table 1.
    Mobilenet,
    /// Full 3x3 convolutions instead of separable blocks (Table 4).
    Conv,
    /// Without the five 14x14x512 blocks (Table 5).
    Shallow,
}

impl From<VariantArg> for Variant {
    fn from(v: VariantArg) -> Variant {
        match v {
            VariantArg::Mobilenet => Variant::MobileNet,
            VariantArg::Conv => Variant::Conv,
            VariantArg::Shallow => Variant::Shallow,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Width multiplier α (> 0; 1.0, 0.75, 0.5 and 0.25 are published).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    alpha: f64,
    /// Input resolution in pixels (>= 32; ρ = resolution / 224).
    #[arg(long, default_value_t = 224)]
    resolution: usize,
    /// Number of classes.
    #[arg(long, default_value_t = 1000)]
    classes: usize,
    /// Which network of the paper.
    #[arg(long, value_enum, default_value_t = VariantArg::Mobilenet)]
    variant: VariantArg,
    /// Strides of the five downsampling layers (conv1, conv_dw_2, 4, 6, 12),
    /// each 1 or 2; e.g. 1,1,2,2,2 for 28-32 px images.
    #[arg(long, default_value = "2,2,2,2,2", value_parser = strides_arg)]
    strides: [usize; 5],
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// clap's parser for `--strides`.
pub fn strides_arg(text: &str) -> std::result::Result<[usize; 5], String> {
    parse_strides(text).map_err(|e| e.to_string())
}

pub fn run(args: &Args) -> Result<()> {
    let config = MobileNetConfig {
        alpha: args.alpha,
        resolution: args.resolution,
        classes: args.classes,
        variant: args.variant.into(),
        strides: args.strides,
        ..Default::default()
    };
    let arch = Architecture::new(&config)?;
    let report = CostReport::new(&arch);
    if args.json {
        println!("{}", to_json(&config, &report));
    } else {
        print!("{}", to_text(&arch, &report));
    }
    Ok(())
}

fn to_json(config: &MobileNetConfig, report: &CostReport) -> serde_json::Value {
    let layers: Vec<_> = report
        .layers
        .iter()
        .map(|(spec, cost)| {
            json!({
                "name": spec.name,
                "kind": spec.kind.name(),
                "stride": spec.stride,
                "filter": spec.filter_shape(),
                "input": spec.input,
                "output": spec.output,
                "mult_adds": cost.mult_adds,
                "flops": cost.flops(),
                "params": cost.params,
                "bn_params": cost.bn_params,
                "memory_access": cost.memory_access,
                "activation_memory": cost.activation_memory,
            })
        })
        .collect();
    let t = &report.total;
    json!({
        "alpha": config.alpha,
        "resolution": config.resolution,
        "classes": config.classes,
        "variant": config.variant.name(),
        "strides": config.strides,
        "layers": layers,
        "total": {
            "mult_adds": t.mult_adds,
            "flops": t.flops,
            "params": t.params,
            "bn_params": t.bn_params,
            "memory_access": t.memory_access,
            "peak_activation_memory": t.peak_activation_memory,
        },
    })
}

/// The paper's "Type / Stride" column.
fn type_stride(kind: LayerKind, stride: usize) -> String {
    let name = match kind {
        LayerKind::Conv | LayerKind::Pointwise => "Conv",
        LayerKind::Depthwise => "Conv dw",
        LayerKind::GlobalAvgPool => "Avg Pool",
        LayerKind::FullyConnected => "FC",
        LayerKind::Softmax => "Softmax",
    };
    format!("{name} / s{stride}")
}

fn to_text(arch: &Architecture, report: &CostReport) -> String {
    let config = arch.config();
    let mut rows = vec![
        [
            "Layer",
            "Type / Stride",
            "Filter Shape",
            "Input Size",
            "Output Size",
            "Mult-Adds",
            "Params",
            "Memory Access",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for (spec, cost) in &report.layers {
        rows.push(vec![
            spec.name.clone(),
            type_stride(spec.kind, spec.stride),
            spec.filter_shape(),
            shape(&spec.input),
            shape(&spec.output),
            thousands(cost.mult_adds),
            thousands(cost.params),
            thousands(cost.memory_access),
        ]);
    }
    let t = &report.total;
    let mut out = format!(
        "{} (variant {}): alpha {}, resolution {} (rho {:.3}), {} classes\n\n",
        config.name(),
        config.variant,
        format_alpha(config.alpha),
        config.resolution,
        config.rho(),
        config.classes
    );
    out.push_str(&table(&rows, &[5, 6, 7]));
    out.push_str(&format!(
        "\nmult-adds       {:>16}  ({})\n\
         FLOPs           {:>16}  (2 x mult-adds)\n\
         params          {:>16}  (conv + FC weights + FC bias; BN folded)\n\
         bn params       {:>16}  (gamma and beta)\n\
         memory access   {:>16}  elements (inputs + outputs + weights)\n\
         peak activation {:>16}  elements per image ({} as f32)\n",
        thousands(t.mult_adds),
        millions(t.mult_adds),
        thousands(t.flops),
        thousands(t.params),
        thousands(t.bn_params),
        thousands(t.memory_access),
        thousands(t.peak_activation_memory),
        format_bytes(t.peak_activation_memory as u128 * 4),
    ));
    out
}
