//! `mobilenet eval`: top-1, top-5, per-class accuracy and the confusion
//! matrix of a model on a labelled dataset.

use std::path::PathBuf;

use serde_json::json;

use crate::cli::format::table;
use crate::cli::model_args::ModelArgs;
use mobilenet::data::{
    Augment, Crop, Loader, LoaderConfig, Normalize, SourceKind, Split, open_dataset,
};
use mobilenet::engine::Parallelism;
use mobilenet::image::Preprocess;
use mobilenet::train::evaluate::evaluate;
use mobilenet::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Labelled data: an image folder (a sub-folder per class), an IDX images
    /// file, or a folder of MNIST-style IDX files (its t10k-* test split).
    #[arg(long)]
    data: PathBuf,
    /// Preprocessing (default: what the model's metadata says, else tf).
    #[arg(long)]
    preprocess: Option<Preprocess>,
    /// Images per engine run.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Threads.
    #[arg(long)]
    threads: Option<usize>,
    /// Threads decoding images.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// One JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let loaded = args.model.load()?;
    let net = &loaded.net;
    let source = open_dataset(&args.data, Split::Test)?;
    let classes = source.dataset.class_names().to_vec();
    if classes.len() != net.config().classes {
        return Err(Error::InvalidConfig(format!(
            "{} has {} classes, the model {}",
            args.data.display(),
            classes.len(),
            net.config().classes
        )));
    }
    let preprocess = match args.preprocess {
        Some(p) => p,
        None => match loaded.metadata.preprocess.as_deref() {
            Some("torch") => Preprocess::Torch,
            _ => Preprocess::Tf,
        },
    };
    let normalize = match preprocess {
        Preprocess::Torch => Normalize::Torch,
        _ => Normalize::Tf,
    };
    let size = net.config().resolution;
    let augment = match source.kind {
        SourceKind::Idx => Augment::eval_pad(size, normalize),
        SourceKind::Folder => Augment {
            size,
            crop: Crop::Center(preprocess),
            flip: false,
            erase: None,
            normalize,
        },
    };
    let loader = Loader::new(
        source.dataset.clone(),
        augment,
        LoaderConfig {
            batch_size: args.batch,
            shuffle: false,
            workers: args.workers,
            ..Default::default()
        },
    )?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let result = evaluate(net, &loader, &Parallelism::new(threads)?)?;
    let per_class = result.per_class();
    if args.json {
        let value = json!({
            "images": result.images,
            "skipped": result.skipped,
            "loss": result.loss,
            "top1": result.top1,
            "top5": result.top5,
            "classes": classes,
            "per_class": per_class,
            "confusion": result.confusion,
        });
        println!("{value}");
        return Ok(());
    }
    println!(
        "{} images ({} skipped): top-1 {:.2} %, top-5 {:.2} %, loss {:.4}\n",
        result.images,
        result.skipped,
        result.top1 * 100.0,
        result.top5 * 100.0,
        result.loss
    );
    let mut rows = vec![vec![
        "class".to_string(),
        "images".into(),
        "accuracy".into(),
    ]];
    for ((name, acc), row) in classes.iter().zip(&per_class).zip(&result.confusion) {
        rows.push(vec![
            name.clone(),
            row.iter().sum::<usize>().to_string(),
            acc.map_or("-".into(), |a| format!("{:.2} %", a * 100.0)),
        ]);
    }
    print!("{}", table(&rows, &[1, 2]));
    if classes.len() <= 20 {
        println!("\nconfusion (rows: true class, columns: predicted)");
        let mut rows = vec![
            std::iter::once(String::new())
                .chain((0..classes.len()).map(|c| c.to_string()))
                .collect::<Vec<_>>(),
        ];
        for (c, row) in result.confusion.iter().enumerate() {
            rows.push(
                std::iter::once(format!("{c} {}", classes[c]))
                    .chain(row.iter().map(|v| v.to_string()))
                    .collect(),
            );
        }
        let right: Vec<usize> = (1..=classes.len()).collect();
        print!("{}", table(&rows, &right));
    }
    Ok(())
}
