//! Importing TFLite MobileNet v1 models (float and uint8) and checking them
//! against LiteRT's reference outputs in `shared/refs/`, plus damaged and
//! hostile files.

mod common;

use common::fb::Fb;
use common::{json, read};

use std::path::{Path, PathBuf};

use mobilenet::Error;
use mobilenet::Tensor;
use mobilenet::engine::{Parallelism, Plan, PlanOptions, Workspace};
use mobilenet::formats::LoadedModel;
use mobilenet::formats::tflite::{load_tflite, load_tflite_with_head};
use mobilenet::layers::softmax;
use mobilenet::model::MobileNet;
use serde_json::Value;

/// The photos with reference outputs.
const IMAGES: [&str; 3] = ["coral_cat_bmp", "mpl_grace_hopper", "skimage_chelsea"];

/// Largest logit difference we accept against LiteRT's float reference
/// kernels (LiteRT's own runtimes differ from each other by up to 2e-5).
const LOGIT_TOLERANCE: f32 = 1e-4;

const FLOAT_MODEL: &str =
    "models/mobilenet_v1_0.25_224_float_tflite/mobilenet_v1_0.25_224_1_default_1.tflite";
const CORAL: &str = "models/coral_test_data_mobilenet_v1_quant";
const EXTRACTOR: &str = "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite";
const HEAD: &str = "mobilenet_quant_v1_224_head_layers.tflite";

fn f32_list(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

/// `top5[*].index` of a reference file.
fn reference_top5(reference: &Value, key: &str) -> Vec<usize> {
    reference[key]
        .as_array()
        .expect("top5")
        .iter()
        .map(|e| e["index"].as_u64().expect("index") as usize)
        .collect()
}

/// Indices of the `k` largest values, largest first (ties: lower index).
fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The preprocessed float input `[1, 224, 224, 3]` of a photo.
fn float_input(shared: &Path, image: &str) -> Tensor {
    let bytes = read(&shared.join(format!("refs/inputs/{image}__224.f32.bin")));
    let data: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Tensor::new(vec![1, 224, 224, 3], data).unwrap()
}

/// The uint8 input of a photo at `size`, dequantized with the models' input
/// quantization (scale 1/128, zero point 128).
fn dequantized_input(shared: &Path, image: &str, size: usize) -> Vec<f32> {
    let bytes = read(&shared.join(format!("refs/inputs/{image}__{size}.u8.bin")));
    assert_eq!(bytes.len(), size * size * 3);
    bytes
        .iter()
        .map(|&q| (f32::from(q) - 128.0) * 0.0078125)
        .collect()
}

/// Runs `net` through the fast engine on one image.
fn engine_logits(plan: &Plan, input: &[f32]) -> Vec<f32> {
    let par = Parallelism::new(1).unwrap();
    let mut ws = Workspace::new(plan, &par);
    let mut logits = vec![0.0f32; plan.classes()];
    plan.run(input, 1, &mut logits, &mut ws, &par).unwrap();
    logits
}

fn compile(net: &MobileNet) -> Plan {
    Plan::compile(net, &PlanOptions::default()).unwrap()
}

fn load_float(shared: &Path) -> LoadedModel {
    load_tflite(&read(&shared.join(FLOAT_MODEL))).unwrap()
}

#[test]
fn float_model_matches_litert_logits() {
    let Some(shared) = common::shared_dir("float_model_matches_litert_logits") else {
        return;
    };
    let model = load_float(&shared);
    let cfg = model.net.config();
    assert_eq!((cfg.alpha, cfg.resolution, cfg.classes), (0.25, 224, 1001));
    let meta = &model.metadata;
    assert_eq!(meta.source_format, "tflite");
    assert_eq!(meta.preprocess.as_deref(), Some("tf"));
    assert_eq!(meta.name.as_deref(), Some("mobilenet_v1_0.25_224"));
    // Every bias became a batch norm that is exactly the identity plus shift.
    for conv in model.net.convs() {
        let (scale, shift) = conv.bn.scale_shift();
        assert!(scale.iter().all(|&s| s == 1.0));
        assert_eq!(shift, conv.bn.beta);
    }
    let plan = compile(&model.net);
    for image in IMAGES {
        let reference = json(&shared.join(format!("refs/tflite_float_v1_0.25_224__{image}.json")));
        let expected = f32_list(&reference["outputs"]["logits"]);
        let input = float_input(&shared, image);

        let ours = model.net.forward(&input).unwrap();
        assert_eq!(ours.shape(), &[1, 1001]);
        let diff = max_abs_diff(ours.data(), &expected);
        let fast = engine_logits(&plan, input.data());
        let fast_diff = max_abs_diff(&fast, &expected);
        eprintln!(
            "tflite float 0.25_224 {image}: largest logit difference {diff:.2e} (reference \
             layers), {fast_diff:.2e} (engine)"
        );
        assert!(diff <= LOGIT_TOLERANCE, "{image}: logits differ by {diff}");
        assert!(
            fast_diff <= LOGIT_TOLERANCE,
            "{image}: engine logits differ by {fast_diff}"
        );
        let want = reference_top5(&reference, "top5_by_logits");
        assert_eq!(
            top_k(ours.data(), 5),
            want,
            "{image}: top-5 (reference layers)"
        );
        assert_eq!(top_k(&fast, 5), want, "{image}: top-5 (engine)");
    }
}

/// Tolerance of the per-layer comparison: absolute 1e-4 plus 1e-5 of the
/// value (activations are at most 6, logits about 20).
fn close(ours: f64, reference: f64) -> bool {
    (ours - reference).abs() <= 1e-4 + 1e-5 * reference.abs()
}

#[test]
fn float_model_matches_litert_layer_by_layer() {
    let Some(shared) = common::shared_dir("float_model_matches_litert_layer_by_layer") else {
        return;
    };
    let model = load_float(&shared);
    let trace = json(&shared.join("refs/trace/tflite_float_v1_0.25_224__skimage_chelsea.json"));
    let entries = trace["layers"].as_array().expect("layers");
    let input = float_input(&shared, "skimage_chelsea");

    // Our outputs, in order: 27 convolutions, global_pool, fc.
    let mut outputs: Vec<(String, Tensor)> = Vec::new();
    let logits = model
        .net
        .forward_traced(&input, |spec, t| {
            outputs.push((spec.name.clone(), t.clone()))
        })
        .unwrap();
    // TFLite's SQUEEZE output is the logits, its SOFTMAX the probabilities.
    outputs.push(("logits (squeeze)".into(), logits.clone()));
    outputs.push(("softmax".into(), softmax(&logits).unwrap()));
    assert_eq!(outputs.len(), entries.len(), "one output per trace entry");

    let mut worst = 0.0f64;
    for ((name, ours), entry) in outputs.iter().zip(entries) {
        let op = entry["op"].as_str().unwrap_or("?");
        let shape: Vec<usize> = entry["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        // Our pool and classifier drop TFLite's 1x1 spatial dimensions.
        assert_eq!(
            ours.len(),
            shape.iter().product::<usize>(),
            "{name} ({op}): {:?} vs trace {shape:?}",
            ours.shape()
        );
        if shape.len() == 4 && shape[1] > 1 {
            assert_eq!(ours.shape(), &shape[..], "{name} ({op})");
        }
        let data = ours.data();
        let min = data.iter().copied().fold(f32::INFINITY, f32::min) as f64;
        let max = data.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let mean = data.iter().map(|&v| f64::from(v)).sum::<f64>() / data.len() as f64;
        let first8: Vec<f64> = data.iter().take(8).map(|&v| f64::from(v)).collect();
        let want_first8: Vec<f64> = f32_list(&entry["first8"])
            .into_iter()
            .map(f64::from)
            .collect();
        let stats = [
            ("min", min, entry["min"].as_f64().unwrap()),
            ("max", max, entry["max"].as_f64().unwrap()),
            ("mean", mean, entry["mean"].as_f64().unwrap()),
        ];
        for (what, o, r) in stats {
            worst = worst.max((o - r).abs());
            assert!(close(o, r), "{name} ({op}): {what} {o} vs trace {r}");
        }
        assert_eq!(first8.len(), want_first8.len(), "{name}");
        for (k, (&o, &r)) in first8.iter().zip(&want_first8).enumerate() {
            worst = worst.max((o - r).abs());
            assert!(close(o, r), "{name} ({op}): element {k} {o} vs trace {r}");
        }
    }
    eprintln!(
        "tflite float 0.25_224 trace: {} layers, largest difference in min/max/mean/first \
         values {worst:.2e}",
        entries.len()
    );
}

/// A uint8 model of the Coral test data, as (id, resolution, files).
fn quantized_models() -> [(&'static str, usize, &'static [&'static str]); 4] {
    [
        ("0.25_128", 128, &["mobilenet_v1_0.25_128_quant.tflite"]),
        ("0.5_160", 160, &["mobilenet_v1_0.5_160_quant.tflite"]),
        ("0.75_192", 192, &["mobilenet_v1_0.75_192_quant.tflite"]),
        ("1.0_224", 224, &[EXTRACTOR, HEAD]),
    ]
}

#[test]
fn quantized_models_agree_with_litert_top1() {
    let Some(shared) = common::shared_dir("quantized_models_agree_with_litert_top1") else {
        return;
    };
    let coral = shared.join(CORAL);
    for (id, size, files) in quantized_models() {
        let model = match files {
            [one] => load_tflite(&read(&coral.join(one))).unwrap(),
            [extractor, head] => {
                load_tflite_with_head(&read(&coral.join(extractor)), &read(&coral.join(head)))
                    .unwrap()
            }
            _ => unreachable!(),
        };
        let cfg = model.net.config();
        let alpha: f64 = id.split('_').next().unwrap().parse().unwrap();
        assert_eq!(
            (cfg.alpha, cfg.resolution, cfg.classes),
            (alpha, size, 1001),
            "{id}"
        );
        assert_eq!(
            model.metadata.name.as_deref(),
            Some(format!("mobilenet_v1_{id}_quant").as_str())
        );
        // The single-file models carry the ImageNet labels in their metadata.
        if files.len() == 1 {
            let labels = model.metadata.labels.as_ref().expect("labels");
            assert_eq!(labels.len(), 1001);
            assert_eq!(labels[0], "background");
            assert_eq!(labels[286], "Egyptian cat");
        }
        let plan = compile(&model.net);
        for image in IMAGES {
            let reference = json(&shared.join(format!("refs/tflite_quant_v1_{id}__{image}.json")));
            let want = reference_top5(&reference, "top5");
            let logits = engine_logits(&plan, &dequantized_input(&shared, image, size));
            let ours = top_k(&logits, 5);
            let agree = ours.iter().filter(|i| want.contains(i)).count();
            // For information: how far float inference on the dequantized
            // weights lands from LiteRT's uint8 logits (dequantized).
            let diff = max_abs_diff(&logits, &f32_list(&reference["outputs"]["logits"]));
            eprintln!(
                "tflite uint8 {id} {image}: top-1 ours {} reference {}; top-5 agree {agree}/5; \
                 largest logit difference to the uint8 run {diff:.3}",
                ours[0], want[0]
            );
            assert_eq!(ours[0], want[0], "{id} {image}: top-1");
        }
    }
}

/// Asserts a format error whose message contains `needle`.
fn assert_format_error(result: mobilenet::Result<LoadedModel>, needle: &str, case: &str) {
    match result {
        Err(Error::Format(msg)) => {
            assert!(
                msg.contains(needle),
                "{case}: message {msg:?} lacks {needle:?}"
            );
            eprintln!("{case}: {msg}");
        }
        Err(other) => panic!("{case}: expected a format error, got {other:?}"),
        Ok(_) => panic!("{case}: a damaged file loaded"),
    }
}

fn patch_u32(bytes: &[u8], pos: usize, value: u32) -> Vec<u8> {
    let mut copy = bytes.to_vec();
    copy[pos..pos + 4].copy_from_slice(&value.to_le_bytes());
    copy
}

#[test]
fn hostile_files_are_refused_with_format_errors() {
    let Some(shared) = common::shared_dir("hostile_files_are_refused_with_format_errors") else {
        return;
    };
    let float = read(&shared.join(FLOAT_MODEL));
    let fb = Fb(&float);
    let root = fb.root();

    // Truncated at many lengths: all of the float file is needed.
    let step = float.len() / 97;
    let cuts = (0..64)
        .chain((64..float.len()).step_by(step))
        .chain([float.len() - 1]);
    for cut in cuts {
        assert!(
            matches!(load_tflite(&float[..cut]), Err(Error::Format(_))),
            "truncated at {cut}"
        );
    }
    assert_format_error(load_tflite(&[]), "too short", "empty file");

    let mut wrong_id = float.clone();
    wrong_id[4..8].copy_from_slice(b"TFL2");
    assert_format_error(
        load_tflite(&wrong_id),
        "file identifier",
        "wrong identifier",
    );
    assert_format_error(
        load_tflite(b"PK\x03\x04 not a model"),
        "identifier",
        "a zip file",
    );

    let bad_root = patch_u32(&float, 0, 0xFFFF_FFF0);
    assert_format_error(load_tflite(&bad_root), "outside the file", "root offset");
    let subgraphs_field = fb.field(root, 2).unwrap();
    let bad_offset = patch_u32(&float, subgraphs_field, 0x7FFF_0000);
    assert_format_error(
        load_tflite(&bad_offset),
        "outside the file",
        "subgraphs offset",
    );
    let bad_vtable = patch_u32(&float, root, 0x8000_0000);
    assert_format_error(load_tflite(&bad_vtable), "vtable", "root vtable");

    // Huge claimed vector lengths: the subgraph list, the tensor list, the
    // stem's weight data.
    let subgraphs = fb.vector(root, 2);
    let huge = patch_u32(&float, subgraphs, 0x4000_0000);
    assert_format_error(
        load_tflite(&huge),
        "claims 1073741824 elements",
        "subgraphs",
    );
    let tensors = fb.vector(fb.table_at(subgraphs, 0), 0);
    let huge = patch_u32(&float, tensors, u32::MAX);
    assert_format_error(load_tflite(&huge), "claims 4294967295 elements", "tensors");
    let stem_weights = fb.weights_of(0);
    let huge = patch_u32(&float, stem_weights - 4, 0x7FFF_FFFF);
    assert_format_error(load_tflite(&huge), "claims", "weight data");

    // A NaN weight.
    let mut nan = float.clone();
    nan[stem_weights + 8..stem_weights + 12].copy_from_slice(&f32::NAN.to_le_bytes());
    assert_format_error(
        load_tflite(&nan),
        "non-finite value (NaN) at element 2",
        "NaN",
    );
    let mut inf = float.clone();
    let dw_weights = fb.weights_of(1);
    inf[dw_weights..dw_weights + 4].copy_from_slice(&f32::INFINITY.to_le_bytes());
    assert_format_error(
        load_tflite(&inf),
        "non-finite value (inf)",
        "infinite weight",
    );

    // An operator MobileNet does not use: every operator code becomes
    // HARD_SWISH (117), in both code fields.
    let mut unknown = float.clone();
    let codes = fb.vector(root, 1);
    for i in 0..fb.u32(codes) {
        let code = fb.table_at(codes, i);
        if let Some(p) = fb.field(code, 0) {
            unknown[p] = 117;
        }
        if let Some(p) = fb.field(code, 3) {
            unknown[p..p + 4].copy_from_slice(&117i32.to_le_bytes());
        }
    }
    assert_format_error(
        load_tflite(&unknown),
        "operator 0 is builtin operator 117 (an operator MobileNet v1 does not use)",
        "unknown operator",
    );

    // Wrong files for the two-part loader, and a part on its own.
    let coral = shared.join(CORAL);
    let extractor = read(&coral.join(EXTRACTOR));
    let head = read(&coral.join(HEAD));
    assert_format_error(
        load_tflite(&extractor),
        "load_tflite_with_head",
        "extractor alone",
    );
    assert_format_error(load_tflite(&head), "[1, R, R, 3]", "head alone");
    assert_format_error(
        load_tflite_with_head(&head, &extractor),
        "extractor file:",
        "swapped parts",
    );
    assert_format_error(
        load_tflite_with_head(&float, &head),
        "extractor file: unexpected operator 28",
        "a whole model as extractor",
    );
}

/// xorshift64*: a deterministic stream of pseudo-random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Damages `file` at random: flipped bytes, overwritten 32-bit words
/// (offsets, lengths, indices) with edge values, truncation. Mostly outside
/// the large weight buffers, where damage is merely wrong numbers.
fn mutate(rng: &mut Rng, file: &[u8], weights: &[(usize, usize)]) -> Vec<u8> {
    let mut out = file.to_vec();
    let position = |rng: &mut Rng| loop {
        let p = rng.below(file.len());
        let in_weights = weights.iter().any(|&(s, l)| l > 256 && p >= s && p < s + l);
        if !in_weights || rng.below(10) == 0 {
            return p;
        }
    };
    for _ in 0..1 + rng.below(4) {
        let p = position(rng);
        match rng.below(4) {
            0 => out[p] ^= 1 << rng.below(8),
            1 => out[p] = rng.next() as u8,
            _ => {
                let p = p.min(out.len() - 4);
                let values = [
                    0,
                    1,
                    4,
                    0x7FFF_FFFF,
                    0xFFFF_FFFF,
                    file.len() as u32,
                    0x8000_0000,
                ];
                let v = if rng.below(3) == 0 {
                    rng.next() as u32
                } else {
                    values[rng.below(values.len())]
                };
                out[p..p + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
    }
    if rng.below(8) == 0 {
        out.truncate(rng.below(out.len()));
    }
    out
}

#[test]
fn random_damage_never_panics() {
    let Some(shared) = common::shared_dir("random_damage_never_panics") else {
        return;
    };
    let coral = shared.join(CORAL);
    let files: [(PathBuf, usize); 3] = [
        (shared.join(FLOAT_MODEL), 300),
        (coral.join("mobilenet_v1_0.25_128_quant.tflite"), 300),
        // Each case also loads the 3 MB extractor: fewer.
        (coral.join(HEAD), 25),
    ];
    let extractor = read(&coral.join(EXTRACTOR));
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for (path, count) in files {
        let file = read(&path);
        let weights = Fb(&file).buffer_ranges();
        let is_head = path.ends_with(HEAD);
        let (mut ok, mut refused) = (0, 0);
        let start = std::time::Instant::now();
        for case in 0..count {
            let damaged = mutate(&mut rng, &file, &weights);
            let result = std::panic::catch_unwind(|| {
                if is_head {
                    load_tflite_with_head(&extractor, &damaged)
                } else {
                    load_tflite(&damaged)
                }
            });
            match result {
                Ok(Ok(_)) => ok += 1,
                Ok(Err(Error::Format(_))) => refused += 1,
                Ok(Err(e)) => panic!("{} case {case}: not a format error: {e:?}", path.display()),
                Err(_) => panic!("{} case {case}: the loader panicked", path.display()),
            }
        }
        eprintln!(
            "{}: {count} damaged copies, {refused} refused, {ok} still loaded ({:.1} s)",
            path.file_name().unwrap().to_string_lossy(),
            start.elapsed().as_secs_f64()
        );
    }
}
