//! Post-training int8 quantization (`mobilenet::quant::ptq`): calibration
//! statistics, the integer executor against a float simulation of the same
//! arithmetic, real models keeping their top-1, the file format (round
//! trip and damaged files), the `quantize` command, and `bench`, `profile`
//! and `classify` on int8 files.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mobilenet::formats::safetensors::{from_bytes as float_from_bytes, to_bytes as float_to_bytes};
use mobilenet::formats::{ModelMetadata, load_model};
use mobilenet::model::{MobileNet, MobileNetConfig};
use mobilenet::quant::ptq::{
    ActQuant, CalibrationMethod, Int8Conv, Int8MobileNet, Observer, QuantizeOptions, file,
};
use mobilenet::{Error, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn small_net(seed: u64) -> MobileNet {
    let cfg = MobileNetConfig {
        alpha: 0.25,
        resolution: 32,
        classes: 10,
        ..Default::default()
    };
    MobileNet::random(&cfg, seed).unwrap()
}

fn random_images(n: usize, r: usize, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Tensor::from_fn(vec![n, r, r, 3], |_| rng.random_range(-1.0f32..=1.0)).unwrap()
}

fn quantized_small(method: CalibrationMethod) -> (MobileNet, Int8MobileNet) {
    let net = small_net(3);
    let calibration = [random_images(4, 32, 1), random_images(3, 32, 2)];
    let model = Int8MobileNet::quantize(
        &net,
        &ModelMetadata {
            source_format: "test".into(),
            labels: Some((0..10).map(|i| format!("c{i}")).collect()),
            ..Default::default()
        },
        &calibration,
        &QuantizeOptions { method },
    )
    .unwrap();
    (net, model)
}

#[test]
fn calibration_statistics_on_a_known_tensor() {
    // -20.00, -19.99, ..., 79.99 in shuffled chunks: the histogram has to
    // grow both ways.
    let values: Vec<f32> = (0..10_000).map(|i| i as f32 / 100.0 - 20.0).collect();
    let mut obs = Observer::new();
    for chunk in [
        &values[4000..4100],
        &values[..10],
        &values[9000..],
        &values[..],
    ] {
        obs.observe(chunk).unwrap();
    }
    assert_eq!(obs.count(), 100 + 10 + 1000 + 10_000);
    assert_eq!(obs.min_max(), Some((-20.0, 79.99)));
    assert_eq!(
        obs.range(CalibrationMethod::MinMax).unwrap(),
        (-20.0, 79.99)
    );

    // The 99th percentile of the multiset, computed exactly.
    let mut all: Vec<f32> = [
        &values[4000..4100],
        &values[..10],
        &values[9000..],
        &values[..],
    ]
    .concat();
    all.sort_by(f32::total_cmp);
    let n = all.len();
    let exact_hi = all[n - n / 100 - 1];
    let exact_lo = all[n / 100];
    let (lo, hi) = obs.range(CalibrationMethod::Percentile(99.0)).unwrap();
    // Within one bin: the histogram covers at most 4x the observed range.
    let bin = 4.0 * 100.0 / 4096.0;
    assert!((hi - exact_hi).abs() <= bin, "hi {hi} vs {exact_hi}");
    assert!((lo - exact_lo).abs() <= bin, "lo {lo} vs {exact_lo}");
    assert!(hi < 79.99 && lo > -20.0, "the percentiles cut the tails");

    let q = obs.quant(CalibrationMethod::MinMax).unwrap();
    assert!((q.scale - 99.99 / 255.0).abs() < 1e-6);
    assert_eq!(q.dequantize(q.quantize(0.0)), 0.0, "zero is exact");
    assert_eq!(q.quantize(-20.0), -128);
    assert_eq!(q.quantize(79.99), 127);

    // Positive-only values still get a range that includes 0.
    let mut relu = Observer::new();
    relu.observe(&[0.5, 3.0, 6.0]).unwrap();
    let q = relu.quant(CalibrationMethod::MinMax).unwrap();
    assert_eq!(q.zero_point, -128);
    assert!(relu.observe(&[f32::NAN]).is_err());
    assert!(Observer::new().range(CalibrationMethod::MinMax).is_err());
    assert!(
        obs.range(CalibrationMethod::Percentile(40.0)).is_err(),
        "a percentile below 50 is refused"
    );
}

/// One conv in f64 from the dequantized codes: `round(y / s_out) + zp`,
/// clamped — what the integer arithmetic approximates.
fn simulate_conv(conv: &Int8Conv, input: &[i8]) -> Vec<i32> {
    let s = &conv.spec;
    let ([h, w, c_in], [oh, ow, c_out]) = (s.input, s.output);
    let k = s.kernel;
    let depthwise = s.kind == mobilenet::model::LayerKind::Depthwise;
    let x = |iy: usize, ix: usize, c: usize| {
        f64::from(conv.input.scale)
            * f64::from(i32::from(input[(iy * w + ix) * c_in + c]) - conv.input.zero_point)
    };
    let mut out = Vec::with_capacity(oh * ow * c_out);
    for oy in 0..oh {
        for ox in 0..ow {
            for co in 0..c_out {
                let sw = f64::from(conv.weight_scale[co]);
                let mut y = f64::from(conv.bias[co]) * f64::from(conv.input.scale) * sw;
                for ky in 0..k {
                    for kx in 0..k {
                        let (Some(iy), Some(ix)) = (
                            (oy * s.stride + ky)
                                .checked_sub(s.padding.top)
                                .filter(|&v| v < h),
                            (ox * s.stride + kx)
                                .checked_sub(s.padding.left)
                                .filter(|&v| v < w),
                        ) else {
                            continue;
                        };
                        if depthwise {
                            y +=
                                x(iy, ix, co) * sw * f64::from(conv.weight[(co * k + ky) * k + kx]);
                        } else {
                            for ci in 0..c_in {
                                let wi = ((co * c_in + ci) * k + ky) * k + kx;
                                y += x(iy, ix, ci) * sw * f64::from(conv.weight[wi]);
                            }
                        }
                    }
                }
                let q = (y / f64::from(conv.output.scale)).round() as i64
                    + i64::from(conv.output.zero_point);
                out.push(q.clamp(i64::from(conv.clamp.0), i64::from(conv.clamp.1)) as i32);
            }
        }
    }
    out
}

#[test]
fn executor_matches_a_float_simulation_within_one_step() {
    for method in [
        CalibrationMethod::MinMax,
        CalibrationMethod::Percentile(99.9),
    ] {
        let (_, model) = quantized_small(method);
        let images = random_images(2, 32, 9);
        for image in images.data().chunks(32 * 32 * 3) {
            let mut input = model.quantize_input(image);
            let (mut total, mut equal, mut worst) = (0usize, 0usize, 0i32);
            let mut logits = vec![0.0; 10];
            model
                .run_codes(
                    &input.clone(),
                    |conv, out| {
                        let sim = simulate_conv(conv, &input);
                        for (&q, &s) in out.iter().zip(&sim) {
                            let d = (i32::from(q) - s).abs();
                            worst = worst.max(d);
                            equal += usize::from(d == 0);
                            total += 1;
                        }
                        input = out.to_vec();
                    },
                    &mut logits,
                )
                .unwrap();
            assert!(worst <= 1, "{method:?}: a code is {worst} steps off");
            assert!(
                equal as f64 >= 0.99 * total as f64,
                "{method:?}: only {equal} of {total} codes equal"
            );
            // The logits from the pooled codes, in f64.
            let last = model.convs.last().unwrap();
            let fc = &model.classifier;
            let c = last.spec.output[2];
            let pixels = input.len() / c;
            for (class, &l) in logits.iter().enumerate() {
                let mut y = f64::from(fc.bias[class]);
                for ch in 0..c {
                    let mean = (0..pixels)
                        .map(|p| f64::from(input[p * c + ch]))
                        .sum::<f64>()
                        / pixels as f64;
                    let pooled = mean.round() - f64::from(fc.input.zero_point);
                    y += pooled * f64::from(fc.weight[class * c + ch]);
                }
                let expected = y * f64::from(fc.input.scale) * f64::from(fc.weight_scale[class]);
                assert!((f64::from(l) - expected).abs() <= 1e-4 * expected.abs().max(1.0));
            }
        }
    }
}

#[test]
fn int8_tracks_float_on_a_random_network() {
    let (net, model) = quantized_small(CalibrationMethod::MinMax);
    let images = random_images(4, 32, 1);
    let float = net.forward(&images).unwrap().into_data();
    let int8 = model.run(images.data(), 4).unwrap();
    let snr = snr_db(&float, &int8);
    assert!(snr > 15.0, "logit SNR {snr:.1} dB");
}

fn snr_db(reference: &[f32], test: &[f32]) -> f64 {
    let signal: f64 = reference.iter().map(|&v| f64::from(v).powi(2)).sum();
    let noise: f64 = reference
        .iter()
        .zip(test)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum();
    10.0 * (signal / noise.max(1e-30)).log10()
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap()
}

const PHOTOS: [&str; 3] = ["coral_cat_bmp", "mpl_grace_hopper", "skimage_chelsea"];

fn photo_inputs(shared: &Path) -> Vec<f32> {
    let mut all = Vec::new();
    for photo in PHOTOS {
        let bytes = common::read(&shared.join(format!("refs/inputs/{photo}__224.f32.bin")));
        all.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
    }
    all
}

/// Quantizes a real model calibrated on the three photos and two synthetic
/// images, and checks each photo keeps its float top-1.
fn real_model_keeps_top1(test: &str, model_path: &str) {
    let Some(shared) = common::shared_dir(test) else {
        return;
    };
    let loaded = load_model(&shared.join(model_path), None).unwrap();
    let inputs = photo_inputs(&shared);
    let len = 224 * 224 * 3;
    let photos = Tensor::new(vec![3, 224, 224, 3], inputs.clone()).unwrap();
    // Synthetic: a horizontal gradient and a flipped photo.
    let gradient = Tensor::from_fn(vec![1, 224, 224, 3], |i| {
        let x = (i / 3) % 224;
        x as f32 / 111.5 - 1.0
    })
    .unwrap();
    let calibration = [photos, gradient];
    let model = Int8MobileNet::quantize(
        &loaded.net,
        &loaded.metadata,
        &calibration,
        &QuantizeOptions {
            method: CalibrationMethod::MinMax,
        },
    )
    .unwrap();
    let float = loaded
        .net
        .forward(&Tensor::new(vec![3, 224, 224, 3], inputs.clone()).unwrap())
        .unwrap()
        .into_data();
    let int8 = model.run(&inputs, 3).unwrap();
    let classes = model.classes();
    for (i, photo) in PHOTOS.iter().enumerate() {
        let f = &float[i * classes..][..classes];
        let q = &int8[i * classes..][..classes];
        eprintln!(
            "{test}: {photo}: float top-1 {}, int8 top-1 {}, logit SNR {:.1} dB",
            argmax(f),
            argmax(q),
            snr_db(f, q)
        );
        assert_eq!(argmax(f), argmax(q), "{photo}: int8 changed the top-1");
        assert!(snr_db(f, q) > 10.0, "{photo}: logit SNR too low");
    }
    // Round trip through the file: bit-identical logits.
    let again = file::from_bytes(&file::to_bytes(&model).unwrap()).unwrap();
    let int8_again = again.run(&inputs[..len], 1).unwrap();
    assert_eq!(
        int8_again.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        int8[..classes]
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    );
}

#[test]
fn tflite_float_0_25_keeps_its_top1_in_int8() {
    real_model_keeps_top1(
        "tflite_float_0_25_keeps_its_top1_in_int8",
        "models/mobilenet_v1_0.25_224_float_tflite/mobilenet_v1_0.25_224_1_default_1.tflite",
    );
}

#[test]
fn tfjs_0_75_keeps_its_top1_in_int8() {
    real_model_keeps_top1(
        "tfjs_0_75_keeps_its_top1_in_int8",
        "models/tfjs_mobilenet_v1_0.75_224",
    );
}

#[test]
fn save_load_round_trip_is_bit_identical() {
    let (_, model) = quantized_small(CalibrationMethod::Percentile(99.99));
    let bytes = file::to_bytes(&model).unwrap();
    assert!(file::is_quantized_file(&bytes));
    let back = file::from_bytes(&bytes).unwrap();
    assert_eq!(back.convs, model.convs);
    assert_eq!(back.classifier, model.classifier);
    assert_eq!(back.input, model.input);
    assert_eq!(back.metadata.labels, model.metadata.labels);
    assert_eq!(back.calibration, "percentile 99.99");
    // Reading sets source_format to ours; with it restored, the same bytes.
    assert_eq!(back.metadata.source_format, "mobilenet-int8");
    let mut restored = back.clone();
    restored.metadata.source_format = model.metadata.source_format.clone();
    assert_eq!(
        file::to_bytes(&restored).unwrap(),
        bytes,
        "same bytes again"
    );
    let images = random_images(2, 32, 5);
    let a = model.run(images.data(), 2).unwrap();
    let b = back.run(images.data(), 2).unwrap();
    assert_eq!(
        a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    // On disk too.
    let path =
        std::env::temp_dir().join(format!("mobilenet-ptq-{}.safetensors", std::process::id()));
    file::save(&model, &path).unwrap();
    assert!(file::is_quantized_path(&path));
    assert_eq!(file::load(&path).unwrap().convs, model.convs);
    let _ = std::fs::remove_file(path);
}

/// The error text of loading `bytes` as an int8 model.
fn int8_error(bytes: &[u8]) -> String {
    match file::from_bytes(bytes) {
        Ok(_) => panic!("a damaged file loaded"),
        Err(e @ Error::Format(_)) => e.to_string(),
        Err(other) => panic!("not a format error: {other}"),
    }
}

/// `bytes` with its JSON header edited by `edit`.
fn edit_header(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let mut json = serde_json::to_vec(&header).unwrap();
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    out.extend(&bytes[8 + n..]);
    out
}

#[test]
fn damaged_quantized_files_give_clear_errors() {
    let (net, model) = quantized_small(CalibrationMethod::MinMax);
    let damaged = |f: &dyn Fn(&mut Int8MobileNet)| {
        let mut m = model.clone();
        f(&mut m);
        int8_error(&file::to_bytes(&m).unwrap())
    };
    for bad in [0.0, -0.5, f32::NAN, f32::INFINITY] {
        let e = damaged(&|m| m.input.scale = bad);
        assert!(e.contains("input.scale"), "{e}");
        let e = damaged(&|m| m.convs[3].output.scale = bad);
        assert!(
            e.contains("conv_pw_1.output.scale") || e.contains("conv_dw_2"),
            "{e}"
        );
        let e = damaged(&|m| m.convs[0].weight_scale[2] = bad);
        assert!(e.contains("conv1.weight_scale"), "{e}");
        let e = damaged(&|m| m.classifier.weight_scale[0] = bad);
        assert!(e.contains("fc.weight_scale"), "{e}");
    }
    for zp in [128, -129, 1000] {
        let e = damaged(&|m| m.input.zero_point = zp);
        assert!(e.contains("zero point") && e.contains("input"), "{e}");
        let e = damaged(&|m| m.convs[1].output.zero_point = zp);
        assert!(e.contains("conv_dw_1.output"), "{e}");
    }

    let bytes = file::to_bytes(&model).unwrap();
    let e = int8_error(&edit_header(&bytes, |h| {
        h["conv1.weight"]["dtype"] = "U8".into()
    }));
    assert!(e.contains("conv1.weight") && e.contains("dtype"), "{e}");
    let e = int8_error(&edit_header(&bytes, |h| {
        h["fc.bias"]["dtype"] = "F32".into()
    }));
    assert!(e.contains("fc.bias") && e.contains("dtype"), "{e}");
    let e = int8_error(&edit_header(&bytes, |h| {
        h["fc.bias"]["shape"] = serde_json::json!([5, 2])
    }));
    assert!(e.contains("fc.bias") && e.contains("shape"), "{e}");
    let e = int8_error(&edit_header(&bytes, |h| {
        h["__metadata__"]["quantization_version"] = "7".into()
    }));
    assert!(e.contains("version"), "{e}");
    let e = int8_error(&edit_header(&bytes, |h| {
        h["__metadata__"]["quantization"] = "int4".into()
    }));
    assert!(e.contains("int4"), "{e}");
    let e = int8_error(&edit_header(&bytes, |h| {
        let obj = h.as_object_mut().unwrap();
        let bias = obj.remove("conv_pw_2.bias").unwrap();
        obj.insert("conv_pw_2.bias_renamed".into(), bias);
    }));
    assert!(e.contains("conv_pw_2.bias"), "{e}");
    let e = int8_error(&bytes[..bytes.len() - 3]);
    assert!(!e.is_empty());

    // A quantized file where a float one is expected, and vice versa.
    match float_from_bytes(&bytes) {
        Err(Error::Format(e)) => assert!(e.contains("quantized"), "{e}"),
        other => panic!("a quantized file loaded as float: {:?}", other.is_ok()),
    }
    let float = float_to_bytes(
        &net,
        &ModelMetadata {
            source_format: "test".into(),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!file::is_quantized_file(&float));
    let e = int8_error(&float);
    assert!(e.contains("float model"), "{e}");
}

#[test]
fn act_quant_rejects_bad_parameters() {
    assert!(ActQuant::new(0.0, 0).is_err());
    assert!(ActQuant::new(-1.0, 0).is_err());
    assert!(ActQuant::new(f32::NAN, 0).is_err());
    assert!(ActQuant::new(1.0, 128).is_err());
    assert!(ActQuant::from_range(f32::NEG_INFINITY, 1.0).is_err());
    let q = ActQuant::from_range(0.0, 0.0).unwrap();
    assert_eq!(q.quantize(0.0), 0);
}

// ---- the command ----

fn mobilenet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mobilenet"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn temp_dir(name: &str) -> PathBuf {
    common::temp_dir("ptq", name)
}

/// An MNIST-style folder of 16x16 images in 10 classes.
fn idx_folder(dir: &Path) {
    for (prefix, count) in [("train", 20usize), ("t10k", 12)] {
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for i in 0..count {
            let label = (i % 10) as u8;
            labels.push(label);
            for y in 0..16u8 {
                for x in 0..16u8 {
                    pixels.push(x.wrapping_mul(label + 1).wrapping_add(y * 7 + i as u8));
                }
            }
        }
        std::fs::write(
            dir.join(format!("{prefix}-images-idx3-ubyte")),
            common::idx(&[count as u32, 16, 16], &pixels),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte")),
            common::idx(&[count as u32], &labels),
        )
        .unwrap();
    }
}

#[test]
fn quantize_command_on_an_idx_folder() {
    let dir = temp_dir("idx");
    idx_folder(&dir);
    let float = dir.join("float.safetensors");
    let loaded = mobilenet::formats::LoadedModel {
        net: small_net(4),
        metadata: ModelMetadata {
            source_format: "test".into(),
            ..Default::default()
        },
    };
    mobilenet::formats::safetensors::save_model(&loaded, &float).unwrap();
    let out = dir.join("int8.safetensors");
    let p = |p: &Path| p.to_str().unwrap().to_string();
    let run = mobilenet(&[
        "quantize",
        "--model",
        &p(&float),
        "--calibrate",
        &p(&dir),
        "--calibration-images",
        "6",
        "--method",
        "percentile",
        "--out",
        &p(&out),
        "--eval",
        &p(&dir),
        "--threads",
        "1",
    ]);
    let stdout = text(&run.stdout);
    assert!(run.status.success(), "{}{}", stdout, text(&run.stderr));
    assert!(stdout.contains("6 images"), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains("int8 top-1"))
        .unwrap_or_else(|| panic!("no comparison in {stdout}"));
    assert!(line.starts_with("12 images: float top-1"), "{line}");
    assert!(line.contains("points"), "{line}");
    let model = file::load(&out).unwrap();
    assert_eq!(model.calibration, "percentile 99.99");

    // The int8 file where a float model is expected: one clear line.
    let again = mobilenet(&[
        "quantize",
        "--model",
        &p(&out),
        "--calibrate",
        &p(&dir),
        "--out",
        &p(&dir.join("x")),
    ]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        text(&again.stderr).contains("quantized"),
        "{}",
        text(&again.stderr)
    );

    // Bad options.
    let bad = mobilenet(&[
        "quantize",
        "--model",
        &p(&float),
        "--calibrate",
        &p(&dir),
        "--out",
        &p(&dir.join("y")),
        "--method",
        "percentile",
        "--percentile",
        "20",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("percentile"),
        "{}",
        text(&bad.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn quantize_and_classify_photos() {
    let Some(shared) = common::shared_dir("quantize_and_classify_photos") else {
        return;
    };
    let dir = temp_dir("photos");
    let model = shared
        .join("models/mobilenet_v1_0.25_224_float_tflite/mobilenet_v1_0.25_224_1_default_1.tflite");
    let photos = [
        shared.join("images/packages/chelsea.png"),
        shared.join("images/packages/grace_hopper.jpg"),
        shared.join("images/coral_test_data/cat.bmp"),
    ];
    let out = dir.join("int8.safetensors");
    let p = |p: &Path| p.to_str().unwrap().to_string();
    let mut args = vec![
        "quantize".to_string(),
        "--model".into(),
        p(&model),
        "--out".into(),
        p(&out),
        "--calibrate".into(),
    ];
    args.extend(photos.iter().map(|x| p(x)));
    args.push("--eval".into());
    args.extend(photos.iter().map(|x| p(x)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = mobilenet(&args);
    let stdout = text(&run.stdout);
    assert!(run.status.success(), "{stdout}{}", text(&run.stderr));
    eprintln!("{stdout}");
    assert!(
        stdout.contains("int8 agrees with float on 3 of 3 photos"),
        "{stdout}"
    );

    // classify runs the int8 file with the executor.
    let run = mobilenet(&[
        "classify",
        "--model",
        &p(&out),
        "--top",
        "1",
        &p(&photos[0]),
    ]);
    let stdout = text(&run.stdout);
    assert!(run.status.success(), "{stdout}{}", text(&run.stderr));
    assert!(
        stdout.contains("chelsea.png") && stdout.contains("1."),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `n` PNG files of colour patterns.
fn write_pngs(dir: &Path, n: usize) -> Vec<PathBuf> {
    (0..n as u32)
        .map(|k| {
            let path = dir.join(format!("pattern{k}.png"));
            image::RgbImage::from_fn(40, 36, |x, y| {
                image::Rgb([
                    (x * 6 + k * 40) as u8,
                    (y * 7 + k * 13) as u8,
                    ((x + y) * 3 * (k + 1)) as u8,
                ])
            })
            .save(&path)
            .unwrap();
            path
        })
        .collect()
}

#[test]
fn bench_profile_and_classify_run_int8_files() {
    let dir = temp_dir("commands");
    let (_, model) = quantized_small(CalibrationMethod::MinMax);
    let int8 = dir.join("int8.safetensors");
    file::save(&model, &int8).unwrap();
    let p = |p: &Path| p.to_str().unwrap().to_string();
    let json = |args: &[&str]| -> Vec<serde_json::Value> {
        let run = mobilenet(args);
        assert!(run.status.success(), "{args:?}: {}", text(&run.stderr));
        text(&run.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let quick = ["--runs", "2", "--warmup", "1", "--json"];
    let int8_path = p(&int8);

    let mut args = vec!["bench", "--model", &int8_path];
    args.extend(["--batch", "3", "--threads", "2"]);
    args.extend(quick);
    let v = &json(&args)[0];
    assert_eq!(v["dtype"], "int8");
    assert_eq!(v["alpha"], 0.25);
    assert_eq!(v["resolution"], 32);
    assert_eq!(v["batch"], 3);
    assert_ne!(v["isa"], "reference");
    for key in ["median_ms", "images_per_s", "gflops"] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}: {v}");
    }

    let mut args = vec!["profile", "--model", &int8_path];
    args.extend(quick);
    let v = &json(&args)[0];
    assert_eq!(v["dtype"], "int8");
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), model.convs.len() + 1);
    assert_eq!(layers[0]["name"], "conv1");
    assert_eq!(layers[0]["kinds"][0], "conv");
    assert_eq!(layers[1]["name"], "conv_dw_1");
    assert_eq!(layers[layers.len() - 1]["name"], "fc");
    assert!(layers.iter().all(|l| l.get("tensor").is_none()));

    // classify on the fast plan: the exact executor's logits, bit for bit.
    let photos = write_pngs(&dir, 3);
    let mut args = vec!["classify".to_string(), "--model".into(), int8_path.clone()];
    args.extend(["--json", "--logits", "--top", "1", "--threads", "2"].map(String::from));
    args.extend(photos.iter().map(|x| p(x)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let lines = json(&args);
    assert_eq!(lines.len(), photos.len());
    for (line, photo) in lines.iter().zip(&photos) {
        assert_eq!(line["dtype"], "int8");
        let image = mobilenet::image::read_image(photo).unwrap();
        let mut input = vec![0.0; model.input_len()];
        mobilenet::image::preprocess_into(
            &image,
            model.resolution(),
            mobilenet::image::Preprocess::Tf,
            &mut input,
        )
        .unwrap();
        let expected = model.run(&input, 1).unwrap();
        let logits: Vec<u32> = line["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x.as_f64().unwrap() as f32).to_bits())
            .collect();
        let expected_bits: Vec<u32> = expected.iter().map(|v| v.to_bits()).collect();
        assert_eq!(logits, expected_bits, "{}", photo.display());
        assert_eq!(line["top"][0]["class"], argmax(&expected), "{line}");
    }

    // A damaged int8 file: one clear line from each command.
    let bytes = std::fs::read(&int8).unwrap();
    let damaged = dir.join("damaged.safetensors");
    std::fs::write(&damaged, &bytes[..bytes.len() - 3]).unwrap();
    let (photo, damaged) = (p(&photos[0]), p(&damaged));
    for args in [
        vec!["bench", "--model", &damaged, "--runs", "1"],
        vec!["profile", "--model", &damaged, "--runs", "1"],
        vec!["classify", "--model", &damaged, &photo],
    ] {
        let run = mobilenet(&args);
        let stderr = text(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("int8 safetensors"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Whether this CPU has AVX512-VNNI or AVX-VNNI, the instructions ONNX
/// Runtime's exact integer kernels need on x86.
fn cpu_has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512vnni") || std::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The QDQ ONNX export run by ONNX Runtime (with `MOBILENET_ONNX_PYTHON`
/// naming a Python that has onnxruntime): its logits close to our
/// executor's and the same top-1, both for the graph as ONNX defines it
/// (Q/DQ run in float) and, on CPUs with VNNI, for ONNX Runtime's fused
/// integer kernels. Either rounds the requantization differently from
/// ours, so the logits agree to a few steps, not bit for bit.
#[test]
fn qdq_onnx_export_agrees_with_onnx_runtime() {
    let (_, model) = quantized_small(CalibrationMethod::MinMax);
    let bytes = mobilenet::formats::onnx::export_onnx_int8(&model).unwrap();
    assert!(bytes.len() > 1000);
    let Some(python) = std::env::var_os("MOBILENET_ONNX_PYTHON") else {
        eprintln!("SKIPPED qdq_onnx_export_agrees_with_onnx_runtime: set MOBILENET_ONNX_PYTHON");
        return;
    };
    let dir = temp_dir("onnx");
    let images = random_images(3, 32, 11);
    let logits = model.run(images.data(), 3).unwrap();
    let write = |name: &str, data: &[f32]| {
        let path = dir.join(name);
        std::fs::write(
            &path,
            data.iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        )
        .unwrap();
        path
    };
    let (inp, out) = (
        write("input.bin", images.data()),
        write("logits.bin", &logits),
    );
    let onnx = dir.join("int8.onnx");
    std::fs::write(&onnx, bytes).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/check_onnx.py");
    let check = |extra: &[&str]| {
        let result = Command::new(&python)
            .arg(&script)
            .args([&onnx, &inp, &out])
            .args(["--layout", "nhwc", "--tolerance", "0.05"])
            .args(extra)
            .output()
            .expect("run MOBILENET_ONNX_PYTHON");
        let stdout = text(&result.stdout);
        eprintln!("{extra:?}: {stdout}");
        (result.status.success(), stdout, text(&result.stderr))
    };
    // The graph as ONNX defines it: every QuantizeLinear / DequantizeLinear
    // executed in float. This is the check that holds on every CPU.
    let (ok, stdout, stderr) = check(&["--no-qdq-fusion"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("top-1 agrees: True"), "{stdout}");
    // ONNX Runtime's own integer kernels. Without VNNI they multiply
    // u8 x s8 pairs with `vpmaddubsw`, whose 16-bit sums saturate (ONNX
    // Runtime documents this and advises `reduce_range` there): on an AVX2
    // host they drift 16 % from the exact result, so they are only held to
    // the tolerance where VNNI runs them.
    let (ok, stdout, stderr) = check(&[]);
    if cpu_has_vnni() {
        assert!(ok, "{stdout}{stderr}");
        assert!(stdout.contains("top-1 agrees: True"), "{stdout}");
    } else {
        eprintln!(
            "NOT CHECKED: ONNX Runtime's fused integer kernels on a CPU without AVX512-VNNI \
             (they saturate); the unfused graph above was checked"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
