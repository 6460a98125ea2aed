//! The model commands of the `mobilenet` binary on the real models in
//! `shared/`: classify (top-5 against the references), convert, features,
//! and fetch's offline message.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn mobilenet(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mobilenet"));
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn float_model(shared: &Path) -> PathBuf {
    shared
        .join("models/mobilenet_v1_0.25_224_float_tflite/mobilenet_v1_0.25_224_1_default_1.tflite")
}

fn labels(shared: &Path) -> PathBuf {
    shared.join("models/coral_test_data_mobilenet_v1_quant/imagenet_labels.txt")
}

/// Top-5 class indices of a reference JSON.
fn reference_top5(shared: &Path, name: &str) -> Vec<u64> {
    let file = shared.join("refs").join(name);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    v["top5"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["index"].as_u64().unwrap())
        .collect()
}

fn classify_top5(args: &[&str]) -> Vec<Vec<u64>> {
    let out = mobilenet(args, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            v["top"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["class"].as_u64().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn classify_float_tflite_matches_the_reference_top5() {
    let Some(shared) = common::shared_dir("classify_float_tflite_matches_the_reference_top5")
    else {
        return;
    };
    let model = path(&float_model(&shared));
    let labels = path(&labels(&shared));
    // PNG and BMP decode exactly as the references did.
    let images = [
        ("images/packages/chelsea.png", "skimage_chelsea"),
        ("images/coral_test_data/cat.bmp", "coral_cat_bmp"),
    ];
    let paths: Vec<String> = images.iter().map(|(p, _)| path(&shared.join(p))).collect();
    let mut args = vec![
        "classify", "--model", &model, "--labels", &labels, "--json", "--logits",
    ];
    args.extend(paths.iter().map(String::as_str));
    let out = mobilenet(&args, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for (line, (_, id)) in lines.iter().zip(images) {
        let want = reference_top5(&shared, &format!("tflite_float_v1_0.25_224__{id}.json"));
        let got: Vec<u64> = line["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["class"].as_u64().unwrap())
            .collect();
        assert_eq!(got, want, "{id}");
        assert_eq!(line["top"][0]["label"], "Egyptian cat");
        assert_eq!(line["logits"].as_array().unwrap().len(), 1001);
        let score = line["top"][0]["score"].as_f64().unwrap();
        assert!(score > 0.5 && score <= 1.0);
    }
}

#[test]
fn classify_uint8_and_tfjs_models_agree_with_the_reference_top1() {
    let Some(shared) =
        common::shared_dir("classify_uint8_and_tfjs_models_agree_with_the_reference_top1")
    else {
        return;
    };
    let chelsea = path(&shared.join("images/packages/chelsea.png"));
    let quant = shared.join("models/coral_test_data_mobilenet_v1_quant");
    for (file, reference) in [
        (
            "mobilenet_v1_0.25_128_quant.tflite",
            "tflite_quant_v1_0.25_128__skimage_chelsea.json",
        ),
        (
            "mobilenet_v1_0.5_160_quant.tflite",
            "tflite_quant_v1_0.5_160__skimage_chelsea.json",
        ),
        (
            "mobilenet_v1_0.75_192_quant.tflite",
            "tflite_quant_v1_0.75_192__skimage_chelsea.json",
        ),
    ] {
        let model = path(&quant.join(file));
        let top = classify_top5(&["classify", "--model", &model, "--json", &chelsea]);
        assert_eq!(top[0][0], reference_top5(&shared, reference)[0], "{file}");
    }
    let extractor = path(&quant.join("mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"));
    let head = path(&quant.join("mobilenet_quant_v1_224_head_layers.tflite"));
    let top = classify_top5(&[
        "classify", "--model", &extractor, "--head", &head, "--json", &chelsea,
    ]);
    let want = reference_top5(&shared, "tflite_quant_v1_1.0_224__skimage_chelsea.json");
    assert_eq!(top[0][0], want[0]);
    let tfjs = path(&shared.join("models/tfjs_mobilenet_v1_0.75_224"));
    let top = classify_top5(&["classify", "--model", &tfjs, "--json", &chelsea]);
    assert_eq!(
        top[0],
        reference_top5(
            &shared,
            "keras_tfjs_float_v1_0.75_224__skimage_chelsea.json"
        )
    );
}

#[test]
fn convert_round_trips_keep_the_logits() {
    let Some(shared) = common::shared_dir("convert_round_trips_keep_the_logits") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("mobilenet-cli-convert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ours = path(&dir.join("m.safetensors"));
    let onnx = path(&dir.join("m.onnx"));
    let model = path(&float_model(&shared));
    let labels = path(&labels(&shared));
    let chelsea = path(&shared.join("images/packages/chelsea.png"));
    let logits = |model: &str| -> Vec<f64> {
        let out = mobilenet(
            &["classify", "--model", model, "--json", "--logits", &chelsea],
            &[],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
        v["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let original = logits(&model);
    assert!(
        mobilenet(&["convert", &model, &ours, "--labels", &labels], &[])
            .status
            .success()
    );
    assert_eq!(logits(&ours), original, "our format must be exact");
    // Our format carries the labels now.
    let out = mobilenet(&["classify", "--model", &ours, "--top", "1", &chelsea], &[]);
    assert!(text(&out.stdout).contains("Egyptian cat"));
    assert!(mobilenet(&["convert", &ours, &onnx], &[]).status.success());
    let largest = original.iter().fold(0f64, |m, v| m.max(v.abs()));
    for (a, b) in logits(&onnx).iter().zip(&original) {
        assert!((a - b).abs() <= 1e-4 * largest, "{a} vs {b}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn features_writes_the_named_layer_as_npy() {
    let Some(shared) = common::shared_dir("features_writes_the_named_layer_as_npy") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("mobilenet-cli-features-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = path(&float_model(&shared));
    let chelsea = path(&shared.join("images/packages/chelsea.png"));
    let out = mobilenet(
        &[
            "features",
            "--model",
            &model,
            "--layer",
            "conv_pw_13",
            "--out",
            &path(&dir),
            &chelsea,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bytes = std::fs::read(dir.join("chelsea.conv_pw_13.npy")).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.contains("'shape': (7, 7, 256)"), "{header}");
    assert_eq!(bytes.len(), 10 + header_len + 7 * 7 * 256 * 4);
    let bad = mobilenet(
        &[
            "features",
            "--model",
            &model,
            "--layer",
            "conv_pw_99",
            &chelsea,
        ],
        &[],
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("no layer 'conv_pw_99'"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn classify_reports_bad_images_and_goes_on() {
    let Some(shared) = common::shared_dir("classify_reports_bad_images_and_goes_on") else {
        return;
    };
    let bad = std::env::temp_dir().join(format!("mobilenet-bad-{}.png", std::process::id()));
    std::fs::write(&bad, b"not an image at all").unwrap();
    let model = path(&float_model(&shared));
    let chelsea = path(&shared.join("images/packages/chelsea.png"));
    let out = mobilenet(
        &[
            "classify",
            "--model",
            &model,
            "--json",
            &path(&bad),
            &chelsea,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not a JPEG, PNG or BMP image"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        text(&out.stdout).lines().count(),
        1,
        "the good image is still classified"
    );
    std::fs::remove_file(&bad).ok();
}

#[test]
fn offline_fetch_says_how_to_use_a_local_file() {
    let cache = std::env::temp_dir().join(format!("mobilenet-cache-{}", std::process::id()));
    // Port 9 (discard) on loopback: nothing listens, the connection is refused.
    let envs = [
        ("MOBILENET_CACHE", cache.to_str().unwrap()),
        ("MOBILENET_FETCH_BASE_URL", "http://127.0.0.1:9"),
    ];
    let out = mobilenet(&["fetch", "mobilenet_v1_0.25_128_quant"], &envs);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("could not download mobilenet_v1_0.25_128_quant"),
        "{err}"
    );
    assert!(err.contains("--model PATH"), "{err}");
    let out = mobilenet(&["fetch", "mobilenet_v9"], &envs);
    assert_eq!(out.status.code(), Some(2));
    let out = mobilenet(&["fetch", "--list"], &envs);
    assert!(
        text(&out.stdout)
            .lines()
            .any(|l| l == "mobilenet_v1_1.0_224")
    );
}
