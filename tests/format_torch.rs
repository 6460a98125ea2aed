//! Importing PyTorch `state_dict`s saved as safetensors, in the seed
//! article's and timm's module layouts, against logits computed by the
//! fixture script (`tests/fixtures/torch/make_fixtures.py`), plus damaged
//! files made here from the fixtures.

use std::collections::HashMap;
use std::path::PathBuf;

use mobilenet::engine::{Parallelism, Plan, PlanOptions, Workspace};
use mobilenet::formats::LoadedModel;
use mobilenet::formats::torch::{TorchNaming, detect_naming, load_torch_safetensors};
use mobilenet::layers::{Activation, PaddingMode};
use mobilenet::model::{MobileNet, MobileNetConfig};
use mobilenet::{Error, Tensor};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde_json::Value;

/// Largest logit difference, relative to max(1, |logit|).
const TOLERANCE: f64 = 1e-4;

const SEED: &str = "seed_a0.125_r32";
const TIMM: &str = "timm_a0.25_r64";

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch")
}

fn read(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct Fixture {
    bytes: Vec<u8>,
    meta: Value,
    input: Tensor,
    logits: Vec<Vec<f64>>,
}

fn fixture(name: &str) -> Fixture {
    let meta: Value = serde_json::from_slice(&read(&format!("{name}.json"))).unwrap();
    let shape: Vec<usize> = meta["input_shape_nhwc"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let data: Vec<f32> = read(meta["input"].as_str().unwrap())
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let logits = meta["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect();
    Fixture {
        bytes: read(&format!("{name}.safetensors")),
        input: Tensor::new(shape, data).unwrap(),
        meta,
        logits,
    }
}

/// The configuration hint for a fixture: its layout's defaults at its
/// resolution.
fn hint(f: &Fixture) -> MobileNetConfig {
    let naming = detect_naming(&f.bytes).unwrap();
    MobileNetConfig {
        resolution: f.meta["resolution"].as_u64().unwrap() as usize,
        ..naming.default_config()
    }
}

/// Largest |ours - expected| / max(1, |expected|).
fn max_rel_diff(ours: &[f32], expected: &[Vec<f64>]) -> f64 {
    let flat: Vec<f64> = expected.iter().flatten().copied().collect();
    assert_eq!(ours.len(), flat.len());
    ours.iter()
        .zip(&flat)
        .map(|(&a, &b)| (f64::from(a) - b).abs() / b.abs().max(1.0))
        .fold(0.0, f64::max)
}

fn engine_logits(model: &LoadedModel, input: &Tensor) -> Vec<f32> {
    let plan = Plan::compile(&model.net, &PlanOptions::default()).unwrap();
    let par = Parallelism::new(1).unwrap();
    let mut ws = Workspace::new(&plan, &par);
    let batch = input.shape()[0];
    let mut logits = vec![0.0; batch * plan.classes()];
    plan.run(input.data(), batch, &mut logits, &mut ws, &par)
        .unwrap();
    logits
}

/// Loads a fixture and checks the reference forward and the engine
/// against the expected logits.
fn check_fixture(name: &str, naming: TorchNaming) -> LoadedModel {
    let f = fixture(name);
    assert_eq!(detect_naming(&f.bytes).unwrap(), naming);
    let model = load_torch_safetensors(&f.bytes, Some(&hint(&f))).unwrap();
    let cfg = model.net.config();
    assert_eq!(cfg.alpha, f.meta["alpha"].as_f64().unwrap());
    assert_eq!(cfg.classes, f.meta["classes"].as_u64().unwrap() as usize);
    assert_eq!(
        cfg.activation.name(),
        f.meta["activation"].as_str().unwrap()
    );
    assert_eq!(cfg.padding, PaddingMode::Symmetric);
    assert!(model.net.convs().iter().all(|c| c.bn.eps == 1e-5));
    assert_eq!(model.metadata.source_format, "torch");
    assert_eq!(
        model.metadata.preprocess.as_deref(),
        Some(naming.preprocess())
    );

    let ours = model.net.forward(&f.input).unwrap();
    let diff = max_rel_diff(ours.data(), &f.logits);
    eprintln!("{name}: reference forward, max relative logit difference {diff:.3e}");
    assert!(
        diff <= TOLERANCE,
        "{name}: reference forward differs by {diff}"
    );
    let fast = engine_logits(&model, &f.input);
    let diff = max_rel_diff(&fast, &f.logits);
    eprintln!("{name}: engine, max relative logit difference {diff:.3e}");
    assert!(diff <= TOLERANCE, "{name}: engine differs by {diff}");
    model
}

#[test]
fn seed_layout_matches_reference_logits() {
    let model = check_fixture(SEED, TorchNaming::Seed);
    // The stem has max(8, 32 * 0.125) = 8 channels: alpha comes from the
    // last layer.
    assert_eq!(model.net.convs()[0].weight.shape(), &[8, 3, 3, 3]);
    assert_eq!(model.net.config().activation, Activation::Relu);
}

#[test]
fn timm_layout_matches_reference_logits() {
    let model = check_fixture(TIMM, TorchNaming::Timm);
    assert_eq!(model.net.config().activation, Activation::Relu6);
    assert_eq!(model.net.config().resolution, 64);
}

/// The fixtures can tell a correct import from a plausible wrong one: the
/// 3x3 depthwise kernels read transposed give other logits.
#[test]
fn fixtures_catch_a_transposed_kernel() {
    let f = fixture(TIMM);
    let model = load_torch_safetensors(&f.bytes, Some(&hint(&f))).unwrap();
    let mut convs = model.net.convs().to_vec();
    for conv in convs.iter_mut().skip(1).step_by(2) {
        let [c, _, k, _] = conv.weight.shape().try_into().unwrap();
        let w = conv.weight.data().to_vec();
        conv.weight = Tensor::from_fn(vec![c, 1, k, k], |i| {
            let (ch, y, x) = (i / (k * k), i / k % k, i % k);
            w[ch * k * k + x * k + y]
        })
        .unwrap();
    }
    let wrong = MobileNet::from_parts(
        model.net.architecture().clone(),
        convs,
        model.net.classifier().clone(),
    )
    .unwrap();
    let diff = max_rel_diff(wrong.forward(&f.input).unwrap().data(), &f.logits);
    assert!(
        diff > 1e-2,
        "transposed kernels give nearly the same logits: {diff}"
    );
}

#[test]
fn defaults_without_a_hint() {
    let f = fixture(TIMM);
    let model = load_torch_safetensors(&f.bytes, None).unwrap();
    assert_eq!(model.net.config().resolution, 224);
    assert_eq!(model.net.config().activation, Activation::Relu6);
    let f = fixture(SEED);
    let model = load_torch_safetensors(&f.bytes, None).unwrap();
    assert_eq!(model.net.config().activation, Activation::Relu);
    assert_eq!(
        model.metadata.name.as_deref(),
        Some("mobilenet_v1_0.125_224")
    );
}

/// The fixture's tensors, decoded as (dtype, shape, bytes).
fn tensors(bytes: &[u8]) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn serialize(tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::tensor::serialize(views, None).unwrap()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn bytes_of(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn edited(
    name: &str,
    edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>),
) -> Vec<u8> {
    let mut t = tensors(&fixture(name).bytes);
    edit(&mut t);
    serialize(&t)
}

fn format_error(result: mobilenet::Result<LoadedModel>) -> String {
    match result {
        Err(Error::Format(msg)) => msg,
        Err(other) => panic!("expected a format error, got {other:?}"),
        Ok(_) => panic!("expected a format error, got a model"),
    }
}

#[test]
fn module_prefix_other_dtypes_conv_bias_and_fc_name() {
    let f = fixture(SEED);
    let h = hint(&f);
    let base = load_torch_safetensors(&f.bytes, Some(&h)).unwrap();
    // `module.` prefix (nn.DataParallel), `fc` instead of `classifier`, F64
    // everywhere: the same network.
    let bytes = edited(SEED, |t| {
        for (n, d, _, b) in t.iter_mut() {
            let short = n.replace("classifier.", "fc.");
            *n = format!("module.{short}");
            if *d == Dtype::F32 {
                *b = f32s(b)
                    .iter()
                    .flat_map(|&v| f64::from(v).to_le_bytes())
                    .collect();
                *d = Dtype::F64;
            }
        }
    });
    let model = load_torch_safetensors(&bytes, Some(&h)).unwrap();
    assert_eq!(model.net, base.net);

    // A conv bias is folded into the batch norm: adding b to the conv and
    // to the running mean changes nothing.
    let bytes = edited(SEED, |t| {
        let c = 8;
        t.push((
            "first_conv.0.bias".into(),
            Dtype::F32,
            vec![c],
            bytes_of(&vec![0.25; c]),
        ));
        let mean = t
            .iter_mut()
            .find(|x| x.0 == "first_conv.1.running_mean")
            .unwrap();
        mean.3 = bytes_of(&f32s(&mean.3).iter().map(|m| m + 0.25).collect::<Vec<_>>());
    });
    let model = load_torch_safetensors(&bytes, Some(&h)).unwrap();
    let a = model.net.forward(&f.input).unwrap();
    let diff = max_rel_diff(a.data(), &f.logits);
    assert!(diff <= TOLERANCE, "{diff}");

    // BF16: loads (values rounded), close to the original.
    let bytes = edited(SEED, |t| {
        for (_, d, _, b) in t.iter_mut() {
            if *d == Dtype::F32 {
                *b = f32s(b)
                    .iter()
                    .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
                    .collect();
                *d = Dtype::BF16;
            }
        }
    });
    let model = load_torch_safetensors(&bytes, Some(&h)).unwrap();
    assert_eq!(model.net.config(), base.net.config());

    // Batch norms without affine parameters: gamma 1, beta 0.
    let bytes = edited(SEED, |t| {
        t.retain(|x| !(x.0.starts_with("first_conv.1.weight") || x.0 == "first_conv.1.bias"));
    });
    let model = load_torch_safetensors(&bytes, Some(&h)).unwrap();
    assert!(model.net.convs()[0].bn.gamma.iter().all(|&g| g == 1.0));
    assert!(model.net.convs()[0].bn.beta.iter().all(|&b| b == 0.0));
}

#[test]
fn the_hint_sets_what_the_weights_cannot() {
    let f = fixture(TIMM);
    let h = MobileNetConfig {
        alpha: 3.0,  // ignored: from the weights
        classes: 77, // ignored
        resolution: 96,
        activation: Activation::Relu,
        padding: PaddingMode::TfSame,
        ..Default::default()
    };
    let model = load_torch_safetensors(&f.bytes, Some(&h)).unwrap();
    let cfg = model.net.config();
    assert_eq!((cfg.alpha, cfg.classes, cfg.resolution), (0.25, 10, 96));
    assert_eq!(
        (cfg.activation, cfg.padding),
        (Activation::Relu, PaddingMode::TfSame)
    );
}

#[test]
fn damaged_files_are_format_errors() {
    let f = fixture(SEED);
    let h = hint(&f);
    let load = |b: &[u8]| load_torch_safetensors(b, Some(&h));

    // Truncated at many lengths, including inside the header.
    let len = f.bytes.len();
    let mut cuts: Vec<usize> = (0..200).collect();
    cuts.extend((200..len).step_by(997));
    cuts.push(len - 1);
    for cut in cuts {
        format_error(load(&f.bytes[..cut]));
    }
    // Header length larger than the file.
    let mut b = f.bytes.clone();
    b[..8].copy_from_slice(&(len as u64 * 2).to_le_bytes());
    format_error(load(&b));
    // A JSON header that is not an object.
    for header in ["[]", "1", "\"x\"", "null", "{", "{\"a\": 1}"] {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        format_error(load(&b));
    }
    // Not a MobileNet at all.
    let msg = format_error(load(&serialize(&[(
        "encoder.weight".into(),
        Dtype::F32,
        vec![1],
        vec![0; 4],
    )])));
    assert!(msg.contains("first_conv"), "{msg}");

    // Missing and extra tensors.
    let msg = format_error(load(&edited(SEED, |t| {
        t.retain(|x| x.0 != "stage_layers.3.pw.1.running_var")
    })));
    assert!(msg.contains("stage_layers.3.pw.1.running_var"), "{msg}");
    let msg = format_error(load(&edited(SEED, |t| {
        t.push((
            "stage_layers.3.se.weight".into(),
            Dtype::F32,
            vec![1],
            vec![0; 4],
        ))
    })));
    assert!(msg.contains("stage_layers.3.se.weight"), "{msg}");
    let msg = format_error(load(&edited(SEED, |t| {
        t.retain(|x| x.0 != "first_conv.1.weight")
    })));
    assert!(msg.contains("first_conv.1"), "{msg}");
    // Both classifier names.
    format_error(load(&edited(SEED, |t| {
        let extra: Vec<_> = t
            .iter()
            .filter(|x| x.0.starts_with("classifier."))
            .map(|x| {
                (
                    x.0.replace("classifier", "fc"),
                    x.1,
                    x.2.clone(),
                    x.3.clone(),
                )
            })
            .collect();
        t.extend(extra);
    })));
    // Mixed layouts.
    format_error(load(&edited(SEED, |t| {
        t.push(("conv_stem.weight".into(), Dtype::F32, vec![1], vec![0; 4]))
    })));

    // Wrong dtypes: an integer weight, a float counter.
    let msg = format_error(load(&edited(SEED, |t| {
        let w = t
            .iter_mut()
            .find(|x| x.0 == "stage_layers.0.dw.0.weight")
            .unwrap();
        w.1 = Dtype::I32;
    })));
    assert!(msg.contains("stage_layers.0.dw.0.weight"), "{msg}");
    format_error(load(&edited(SEED, |t| {
        let w = t
            .iter_mut()
            .find(|x| x.0 == "first_conv.1.num_batches_tracked")
            .unwrap();
        (w.1, w.3) = (Dtype::F64, vec![0; 8]);
    })));

    // Wrong shapes.
    let msg = format_error(load(&edited(SEED, |t| {
        let w = t
            .iter_mut()
            .find(|x| x.0 == "stage_layers.5.pw.0.weight")
            .unwrap();
        let (o, i) = (w.2[0], w.2[1]);
        w.2 = vec![i, o, 1, 1];
    })));
    assert!(msg.contains("stage_layers.5.pw.0.weight"), "{msg}");
    format_error(load(&edited(SEED, |t| {
        let w = t.iter_mut().find(|x| x.0 == "classifier.bias").unwrap();
        (w.2, w.3) = (vec![11], vec![0; 44]);
    })));
    // A block missing: 12 blocks is no MobileNet.
    format_error(load(&edited(SEED, |t| {
        t.retain(|x| !x.0.starts_with("stage_layers.12."))
    })));

    // NaN and infinite weights, a negative variance.
    for (key, value) in [
        ("stage_layers.7.dw.0.weight", f32::NAN),
        ("classifier.weight", f32::INFINITY),
        ("stage_layers.2.pw.1.running_var", -1.0),
    ] {
        let msg = format_error(load(&edited(SEED, |t| {
            let w = t.iter_mut().find(|x| x.0 == key).unwrap();
            w.3[..4].copy_from_slice(&value.to_le_bytes());
        })));
        assert!(msg.contains(key), "{key}: {msg}");
    }

    // A huge claimed shape: the safetensors header must cover the file,
    // so this fails before anything is allocated.
    let header = r#"{"first_conv.0.weight":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,16]}}"#;
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(&[0; 16]);
    format_error(load(&b));
    // A shape that fits the file but not the network.
    format_error(load(&edited(SEED, |t| {
        let w = t.iter_mut().find(|x| x.0 == "first_conv.0.weight").unwrap();
        let n: usize = w.2.iter().product();
        w.2 = vec![n];
    })));
}

#[test]
fn random_byte_damage_never_panics() {
    let f = fixture(SEED);
    let h = hint(&f);
    let header_len = u64::from_le_bytes(f.bytes[..8].try_into().unwrap()) as usize + 8;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut outcomes: HashMap<&str, usize> = HashMap::new();
    for _ in 0..300 {
        let mut b = f.bytes.clone();
        for _ in 0..1 + next() % 3 {
            // Mostly in the header, where the structure is.
            let at = if next() % 4 == 0 {
                next() as usize % b.len()
            } else {
                next() as usize % header_len
            };
            b[at] = next() as u8;
        }
        let kind = match load_torch_safetensors(&b, Some(&h)) {
            Ok(_) => "ok",
            Err(Error::Format(_)) => "format",
            Err(e) => panic!("unexpected error kind: {e:?}"),
        };
        *outcomes.entry(kind).or_default() += 1;
    }
    eprintln!("random damage: {outcomes:?}");
}
