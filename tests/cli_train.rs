//! `mobilenet train` and `mobilenet eval` end to end on datasets made here:
//! run directories, exact resume, fine-tuning a real pretrained model, and
//! bad input that must end in one clear error line.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn mobilenet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mobilenet"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    common::temp_dir("cli-train", name)
}

/// An MNIST-style folder: `n` train and `n / 2` test images of 16x16 in
/// `classes` classes, each class a distinct brightness pattern (learnable).
fn idx_folder(name: &str, n: usize, classes: u8, bad_label: bool) -> PathBuf {
    let dir = temp_dir(name);
    for (prefix, count) in [("train", n), ("t10k", n / 2)] {
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for i in 0..count {
            let label = (i % classes as usize) as u8;
            labels.push(label);
            for y in 0..16u8 {
                for x in 0..16u8 {
                    let on = (x / 4 + y / 4 + label).is_multiple_of(2);
                    pixels.push(if on {
                        200 + (i % 50) as u8
                    } else {
                        (i % 30) as u8
                    });
                }
            }
        }
        if bad_label {
            labels[1] = 200;
        }
        let images = common::idx(&[count as u32, 16, 16], &pixels);
        let labels = common::idx(&[count as u32], &labels);
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
    }
    dir
}

const TINY: &[&str] = &[
    "--strides",
    "1,2,2,2,2",
    "--batch",
    "8",
    "--workers",
    "1",
    "--threads",
    "2",
    "--quiet",
    "--optimizer",
    "sgd",
    "--lr",
    "0.05",
    "--seed",
    "3",
];

fn train(data: &Path, out: &Path, epochs: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--data",
        path(data),
        "--val",
        path(data),
        "--out",
        path(out),
    ];
    args.extend(["--epochs", epochs]);
    args.extend(TINY);
    if !extra.contains(&"--alpha") {
        args.extend(["--alpha", "0.25"]);
    }
    args.extend(extra);
    mobilenet(&args)
}

#[test]
fn train_writes_a_run_directory_and_resumes_exactly() {
    let data = idx_folder("resume-data", 48, 3, false);
    let full = temp_dir("resume-full");
    let out = train(&data, &full, "2", &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for file in [
        "run.json",
        "state.safetensors",
        "epoch-0001.safetensors",
        "epoch-0002.safetensors",
        "best.safetensors",
        "metrics.csv",
        "curves.png",
    ] {
        assert!(full.join(file).is_file(), "{file} missing");
    }
    let csv = std::fs::read_to_string(full.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.starts_with("epoch,lr,train_loss"));

    // One epoch, then --resume to two: the same second epoch, bit for bit.
    let split = temp_dir("resume-split");
    let out = train(&data, &split, "1", &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!split.join("epoch-0002.safetensors").exists());
    let out = mobilenet(&[
        "train",
        "--resume",
        path(&split),
        "--epochs",
        "2",
        "--threads",
        "2",
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let a = std::fs::read(full.join("epoch-0002.safetensors")).unwrap();
    let b = std::fs::read(split.join("epoch-0002.safetensors")).unwrap();
    assert!(
        a == b,
        "the resumed run's second epoch differs from the uninterrupted one"
    );
    let csv_split = std::fs::read_to_string(split.join("metrics.csv")).unwrap();
    assert_eq!(csv_split.lines().count(), 3);

    // Training again into a used directory is refused.
    let out = train(&data, &full, "1", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--resume"),
        "{}",
        text(&out.stderr)
    );

    // The trained model evaluates and classifies.
    let best = full.join("best.safetensors");
    let out = mobilenet(&[
        "eval",
        "--model",
        path(&best),
        "--data",
        path(&data),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(v["images"], 24);
    assert_eq!(v["confusion"].as_array().unwrap().len(), 3);
    let top1 = v["top1"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&top1));
    let per_class: f64 = v["per_class"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_f64().unwrap())
        .sum();
    assert!(
        (per_class / 3.0 - top1).abs() < 1e-9,
        "balanced classes: mean per-class = top-1"
    );
}

#[test]
fn resume_refuses_a_checkpoint_of_another_architecture() {
    let data = idx_folder("arch-data", 16, 2, false);
    let a = temp_dir("arch-a");
    let b = temp_dir("arch-b");
    assert!(train(&data, &a, "1", &[]).status.success());
    assert!(train(&data, &b, "1", &["--alpha", "0.5"]).status.success());
    // Put b's checkpoint and state into a's run.
    for file in ["epoch-0001.safetensors", "state.safetensors"] {
        std::fs::copy(b.join(file), a.join(file)).unwrap();
    }
    let out = mobilenet(&["train", "--resume", path(&a), "--epochs", "2", "--quiet"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("mobilenet_v1_0.5_16") && err.contains("mobilenet_v1_0.25_16"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // A state whose checkpoint was replaced is refused too.
    std::fs::copy(b.join("state.safetensors"), a.join("state.safetensors")).unwrap();
    std::fs::copy(a.join("best.safetensors"), a.join("epoch-0001.safetensors")).unwrap();
    let out = mobilenet(&["train", "--resume", path(&a), "--quiet"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("SHA-256"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bad_datasets_get_one_clear_error() {
    let out_dir = temp_dir("bad-out");
    let empty = temp_dir("bad-empty");
    std::fs::create_dir_all(empty.join("cats")).unwrap();
    let labels_out_of_range = idx_folder("bad-labels", 16, 2, true);
    let cases: Vec<(PathBuf, &str)> = vec![
        (empty.clone(), "no images"),
        (labels_out_of_range, "label"),
        (out_dir.join("missing"), "no such"),
    ];
    for (data, needle) in cases {
        let out = train(&data, &out_dir.join("run"), "1", &[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", data.display());
        assert!(err.starts_with("error:") && err.contains(needle), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // 16 px images at the paper's strides: say which knob to turn.
    let data = idx_folder("bad-strides", 16, 2, false);
    let out = mobilenet(&[
        "train",
        "--data",
        path(&data),
        "--out",
        path(&out_dir.join("s")),
        "--quiet",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--strides"),
        "{}",
        text(&out.stderr)
    );
    // Bad option values.
    for bad in [["--lr", "-1"], ["--schedule", "sideways"], ["--batch", "0"]] {
        let out = train(&data, &out_dir.join("o"), "1", &bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out.stderr));
    }
}

/// Writes a PNG of `w` x `h` with a colour per class.
fn write_png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let shade = ((x + y) % 16) as u8;
        image::Rgb([
            rgb[0].saturating_add(shade),
            rgb[1],
            rgb[2].saturating_sub(shade),
        ])
    });
    img.save(path).unwrap();
}

#[test]
fn fine_tunes_a_pretrained_tfjs_model_on_an_image_folder() {
    let Some(shared) = common::shared_dir("fine_tunes_a_pretrained_tfjs_model_on_an_image_folder")
    else {
        return;
    };
    let model = shared.join("models/tfjs_mobilenet_v1_0.75_224");
    let data = temp_dir("finetune-data");
    for (class, rgb) in [("red", [220, 30, 30]), ("blue", [30, 40, 220])] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for i in 0..3u32 {
            // Mixed sizes on purpose.
            write_png(
                &data.join(class).join(format!("{i}.png")),
                40 + 10 * i,
                50,
                rgb,
            );
        }
    }
    // One corrupt file: skipped with a warning, never a crash.
    std::fs::write(data.join("red").join("broken.png"), b"\x89PNG not really").unwrap();
    for (name, extra) in [("frozen", &["--freeze-backbone"][..]), ("full", &[][..])] {
        let out_dir = temp_dir(&format!("finetune-{name}"));
        let mut args = vec![
            "train",
            "--from",
            path(&model),
            "--data",
            path(&data),
            "--out",
            path(&out_dir),
            "--resolution",
            "64",
            "--epochs",
            "1",
            "--batch",
            "4",
            "--workers",
            "1",
            "--quiet",
        ];
        args.extend(extra);
        let out = mobilenet(&args);
        let err = text(&out.stderr);
        assert!(out.status.success(), "{name}: {err}");
        assert!(
            err.contains("broken.png"),
            "the corrupt image is reported: {err}"
        );
        let best = out_dir.join("best.safetensors");
        let out = mobilenet(&[
            "classify",
            "--model",
            path(&best),
            "--json",
            "--top",
            "2",
            path(&data.join("blue").join("0.png")),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: Value = serde_json::from_str(text(&out.stdout).lines().next().unwrap()).unwrap();
        let labels: Vec<&str> = v["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["label"].as_str().unwrap())
            .collect();
        let mut sorted = labels.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            ["blue", "red"],
            "the new head has the folder's classes: {v}"
        );
    }
}
