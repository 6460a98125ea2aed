//! The `mobilenet` commands on the official uint8 TFLite MobileNets, run
//! in integer arithmetic: classify against LiteRT's reference outputs and
//! our exact executor, the two-file 1.0_224 model, features, bench, and
//! damaged files.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::fb::Fb;
use common::{json, read};
use mobilenet::quant::{QuantizedPipeline, QuantizedTflite};
use serde_json::Value;

const CORAL: &str = "models/coral_test_data_mobilenet_v1_quant";
const SMALL: &str = "mobilenet_v1_0.25_128_quant.tflite";
const EXTRACTOR: &str = "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite";
const HEAD: &str = "mobilenet_quant_v1_224_head_layers.tflite";

fn mobilenet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mobilenet"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn coral(shared: &Path, file: &str) -> String {
    path(&shared.join(CORAL).join(file))
}

/// A fresh folder for one test's files.
fn temp_dir(test: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("mobilenet-cli-quant-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The JSON lines of a successful command.
fn json_lines(args: &[&str]) -> Vec<Value> {
    let out = mobilenet(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn u8s(v: &Value) -> Vec<u8> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| u8::try_from(x.as_u64().unwrap()).unwrap())
        .collect()
}

/// `scale * (q - zero_point)` with the reference's `*_qparams`.
fn dequantize(codes: &[u8], qparams: &Value) -> Vec<f32> {
    let scale = qparams["scale"].as_f64().unwrap() as f32;
    let zero_point = qparams["zero_point"].as_i64().unwrap() as i32;
    codes
        .iter()
        .map(|&q| scale * (i32::from(q) - zero_point) as f32)
        .collect()
}

#[test]
fn classify_runs_the_uint8_model_exactly() {
    let Some(shared) = common::shared_dir("classify_runs_the_uint8_model_exactly") else {
        return;
    };
    let model = coral(&shared, SMALL);
    // PNG and BMP decode exactly as the references did.
    let images = [
        ("images/packages/chelsea.png", "skimage_chelsea"),
        ("images/coral_test_data/cat.bmp", "coral_cat_bmp"),
    ];
    let paths: Vec<String> = images.iter().map(|(p, _)| path(&shared.join(p))).collect();
    let mut args = vec!["classify", "--model", &model, "--json", "--logits"];
    args.extend(paths.iter().map(String::as_str));
    let lines = json_lines(&args);
    assert_eq!(lines.len(), images.len());

    let pipeline = QuantizedPipeline::new(vec![
        QuantizedTflite::from_bytes(&read(&shared.join(CORAL).join(SMALL))).unwrap(),
    ])
    .unwrap();
    for (line, (_, id)) in lines.iter().zip(images) {
        let reference = json(&shared.join(format!("refs/tflite_quant_v1_0.25_128__{id}.json")));
        let outputs = &reference["outputs"];
        assert_eq!(line["quantized"], true);
        assert_eq!(line["dtype"], "uint8");
        assert_eq!(
            line["top"][0]["class"], reference["top5"][0]["index"],
            "{id}: top-1"
        );
        // The labels come from the file's metadata.
        assert_eq!(line["top"][0]["label"], reference["top5"][0]["label"]);

        // Scores are LiteRT's uint8 probabilities, dequantized.
        let probs = dequantize(&u8s(&outputs["probs_u8"]), &outputs["probs_qparams"]);
        for top in line["top"].as_array().unwrap() {
            let class = top["class"].as_u64().unwrap() as usize;
            assert_eq!(top["score"].as_f64().unwrap() as f32, probs[class], "{id}");
        }

        // --logits: the dequantized softmax input, as LiteRT computes it ...
        let logits = floats(&line["logits"]);
        let want = dequantize(&u8s(&outputs["logits_u8"]), &outputs["logits_qparams"]);
        assert_eq!(logits, want, "{id}: logits vs LiteRT");
        // ... and as our executor traces it on the reference input bytes.
        let input = read(&shared.join(format!("refs/inputs/{id}__128.u8.bin")));
        let trace = pipeline.run_traced(&input).unwrap();
        let [.., pre_softmax, _] = &trace[..] else {
            panic!("too few ops")
        };
        assert_eq!(
            logits,
            pre_softmax.dequantize(),
            "{id}: logits vs run_traced"
        );
    }

    // The old float path is still there, and says so.
    let out = json_lines(&[
        "classify",
        "--model",
        &model,
        "--dequantize",
        "--json",
        &paths[0],
    ]);
    assert_eq!(out[0]["quantized"], false);
    assert_eq!(out[0]["dtype"], "float32");
}

#[test]
fn classify_joins_the_two_file_model_with_head() {
    let Some(shared) = common::shared_dir("classify_joins_the_two_file_model_with_head") else {
        return;
    };
    let extractor = coral(&shared, EXTRACTOR);
    let head = coral(&shared, HEAD);
    let chelsea = path(&shared.join("images/packages/chelsea.png"));
    let lines = json_lines(&[
        "classify", "--model", &extractor, "--head", &head, "--json", "--logits", &chelsea,
    ]);
    let reference = json(&shared.join("refs/tflite_quant_v1_1.0_224__skimage_chelsea.json"));
    let outputs = &reference["outputs"];
    assert_eq!(lines[0]["top"][0]["class"], reference["top5"][0]["index"]);
    assert_eq!(lines[0]["dtype"], "uint8");
    assert_eq!(
        floats(&lines[0]["logits"]),
        dequantize(&u8s(&outputs["logits_u8"]), &outputs["logits_qparams"])
    );

    // The extractor alone has no classes.
    let out = mobilenet(&["classify", "--model", &extractor, &chelsea]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--head"),
        "{}",
        text(&out.stderr)
    );
}

/// The `.npy` header of `bytes` and the offset of its data.
fn npy_header(bytes: &[u8]) -> (String, usize) {
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    (
        std::str::from_utf8(&bytes[10..10 + len])
            .unwrap()
            .to_string(),
        10 + len,
    )
}

#[test]
fn features_writes_the_dequantized_layer() {
    let Some(shared) = common::shared_dir("features_writes_the_dequantized_layer") else {
        return;
    };
    let dir = temp_dir("features");
    let model = coral(&shared, SMALL);
    let chelsea = path(&shared.join("images/packages/chelsea.png"));
    let features = |layer: &str| {
        mobilenet(&[
            "features",
            "--model",
            &model,
            "--layer",
            layer,
            "--out",
            &path(&dir),
            &chelsea,
        ])
    };
    let out = features("conv_pw_13");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bytes = read(&dir.join("chelsea.conv_pw_13.npy"));
    let (header, start) = npy_header(&bytes);
    // α = 0.25: 1024 · 0.25 channels at 128 / 32.
    assert!(header.contains("'shape': (4, 4, 256)"), "{header}");
    assert_eq!(bytes.len(), start + 4 * 4 * 256 * 4);

    // The same op by its TFLite tensor name gives the same values, which
    // are our executor's, dequantized.
    let pipeline = QuantizedPipeline::new(vec![
        QuantizedTflite::from_bytes(&read(&shared.join(CORAL).join(SMALL))).unwrap(),
    ])
    .unwrap();
    let input = read(&shared.join("refs/inputs/skimage_chelsea__128.u8.bin"));
    let trace = pipeline.run_traced(&input).unwrap();
    let pw13 = trace
        .iter()
        .rfind(|t| t.spec.shape == [1, 4, 4, 256])
        .expect("the last pointwise conv");
    let values: Vec<f32> = bytes[start..]
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(values, pw13.dequantize());
    let out = features(&pw13.spec.name);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let file = format!("chelsea.{}.npy", pw13.spec.name.replace('/', "_"));
    assert_eq!(read(&dir.join(file)), bytes);

    let out = features("global_pool");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (header, _) = npy_header(&read(&dir.join("chelsea.global_pool.npy")));
    assert!(header.contains("'shape': (1, 1, 256)"), "{header}");

    let bad = features("conv_pw_99");
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("no layer 'conv_pw_99'"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bench_and_profile_report_uint8_runs() {
    let Some(shared) = common::shared_dir("bench_and_profile_report_uint8_runs") else {
        return;
    };
    let model = coral(&shared, SMALL);
    let quick = ["--runs", "2", "--warmup", "0", "--json"];
    let mut args = vec!["bench", "--model", &model];
    args.extend(quick);
    let v = &json_lines(&args)[0];
    assert_eq!(v["dtype"], "uint8");
    assert_eq!(v["alpha"], 0.25);
    assert_eq!(v["resolution"], 128);
    assert_eq!(v["batch"], 1);
    for key in ["median_ms", "p10_ms", "p90_ms", "images_per_s", "gflops"] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}: {v}");
    }
    assert!(v["isa"].is_string());
    let two_images_per_s = 2.0 * 1e3 / v["median_ms"].as_f64().unwrap();
    // GFLOP/s = 2 · mult-adds · images/s: the paper's 14 M for 0.25_128.
    let implied = v["gflops"].as_f64().unwrap() * 1e9 / two_images_per_s;
    assert!((13.5e6..14.5e6).contains(&implied), "{implied}");

    // The same file dequantized runs on the float engine.
    let mut args = vec!["bench", "--model", &model, "--dequantize"];
    args.extend(quick);
    let v = &json_lines(&args)[0];
    assert_eq!(v["dtype"], "float32");
    assert_eq!(v["alpha"], 0.25);
    assert_eq!(v["resolution"], 128);

    let mut args = vec!["profile", "--model", &model];
    args.extend(quick);
    let v = &json_lines(&args)[0];
    assert_eq!(v["dtype"], "uint8");
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers[0]["name"], "conv1");
    assert_eq!(layers[0]["kinds"][0], "CONV_2D");
    assert!(layers.iter().any(|l| l["name"] == "conv_dw_13"));
    let total: u64 = layers
        .iter()
        .map(|l| l["mult_adds"].as_u64().unwrap())
        .sum();
    assert!((13_500_000..14_500_000).contains(&total), "{total}");
}

#[test]
fn damaged_uint8_files_fail_with_a_message() {
    let Some(shared) = common::shared_dir("damaged_uint8_files_fail_with_a_message") else {
        return;
    };
    let dir = temp_dir("damaged");
    let file = read(&shared.join(CORAL).join(SMALL));
    let chelsea = path(&shared.join("images/packages/chelsea.png"));
    let truncated = dir.join("truncated.tflite");
    std::fs::write(&truncated, &file[..file.len() / 3]).unwrap();
    let mut bad_zero_point = file.clone();
    let fb = Fb(&file);
    let at = fb.zero_point(fb.op_output(0));
    bad_zero_point[at..at + 8].copy_from_slice(&300i64.to_le_bytes());
    let zero_point = dir.join("zero_point.tflite");
    std::fs::write(&zero_point, &bad_zero_point).unwrap();

    for (file, needle) in [
        (&truncated, "tflite"),
        (&zero_point, "zero point 300 is outside [0, 255]"),
    ] {
        for command in [
            vec!["classify", "--model", &path(file), &chelsea],
            vec!["bench", "--model", &path(file), "--runs", "1"],
        ] {
            let out = mobilenet(&command);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{command:?}: {err}");
            assert!(err.starts_with("error: "), "{err}");
            assert!(err.contains(needle), "{command:?}: {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
