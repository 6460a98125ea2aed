//! Our model file format: exact round trips for every configuration, the
//! file layout, atomic saving, and damaged files.

use std::collections::HashMap;
use std::path::PathBuf;

use mobilenet::formats::safetensors::{
    expected_tensors, from_bytes, is_model_file, load_model_file, save_model, to_bytes,
};
use mobilenet::formats::{LoadedModel, ModelMetadata};
use mobilenet::layers::{Activation, BatchNorm, PaddingMode};
use mobilenet::model::network::{Classifier, ConvBn};
use mobilenet::model::{MobileNet, MobileNetConfig, Variant};
use mobilenet::{Error, Tensor};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde_json::Value;

/// A small xorshift generator: uniform in [0, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A random network with non-trivial batch norms, ε per layer from `eps`.
fn random_net(config: &MobileNetConfig, seed: u64, eps: impl Fn(usize) -> f32) -> MobileNet {
    let base = MobileNet::random(config, seed).unwrap();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut vec = |n: usize, lo: f32, hi: f32| -> Vec<f32> {
        (0..n).map(|_| lo + (hi - lo) * rng.next()).collect()
    };
    let convs = base
        .convs()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let n = c.bn.channels();
            ConvBn {
                weight: c.weight.clone(),
                bn: BatchNorm {
                    gamma: vec(n, 0.5, 1.5),
                    beta: vec(n, -0.5, 0.5),
                    mean: vec(n, -0.3, 0.3),
                    var: vec(n, 0.3, 2.0),
                    eps: eps(i),
                },
            }
        })
        .collect();
    let fc = base.classifier();
    let classes = fc.bias.len();
    let classifier = Classifier {
        weight: fc.weight.clone(),
        bias: Tensor::new(vec![classes], vec(classes, -0.1, 0.1)).unwrap(),
    };
    MobileNet::from_parts(base.architecture().clone(), convs, classifier).unwrap()
}

fn small_config() -> MobileNetConfig {
    MobileNetConfig {
        alpha: 0.25,
        resolution: 32,
        classes: 7,
        ..Default::default()
    }
}

fn metadata(classes: usize) -> ModelMetadata {
    ModelMetadata {
        name: Some("tiny \"test\" model".into()),
        preprocess: Some("torch".into()),
        labels: Some(
            (0..classes)
                .map(|i| format!("class {i}, ünïcode"))
                .collect(),
        ),
        source_format: "tfjs".into(),
    }
}

fn small_file() -> (MobileNet, Vec<u8>) {
    let net = random_net(&small_config(), 3, |_| 1e-3);
    let bytes = to_bytes(&net, &metadata(7)).unwrap();
    (net, bytes)
}

#[test]
fn round_trip_is_exact() {
    let (net, bytes) = small_file();
    assert!(is_model_file(&bytes));
    let loaded = from_bytes(&bytes).unwrap();
    assert_eq!(loaded.net, net);
    let meta = metadata(7);
    assert_eq!(loaded.metadata.name, meta.name);
    assert_eq!(loaded.metadata.preprocess, meta.preprocess);
    assert_eq!(loaded.metadata.labels, meta.labels);
    assert_eq!(loaded.metadata.source_format, "mobilenet");
    let x = Tensor::from_fn(vec![1, 32, 32, 3], |i| {
        ((i * 7919) % 255) as f32 / 127.5 - 1.0
    })
    .unwrap();
    let a = net.forward(&x).unwrap();
    let b = loaded.net.forward(&x).unwrap();
    assert!(
        a.data()
            .iter()
            .zip(b.data())
            .all(|(x, y)| x.to_bits() == y.to_bits())
    );
    // Saving what was loaded gives the same bytes.
    let again = to_bytes(
        &loaded.net,
        &ModelMetadata {
            source_format: "tfjs".into(),
            ..loaded.metadata.clone()
        },
    )
    .unwrap();
    assert_eq!(again, bytes);
    // No optional metadata.
    let bare = to_bytes(&net, &ModelMetadata::default()).unwrap();
    let loaded = from_bytes(&bare).unwrap();
    assert_eq!(loaded.net, net);
    assert_eq!(loaded.metadata.labels, None);
    assert_eq!(loaded.metadata.name, None);
}

#[test]
fn every_configuration_round_trips() {
    let configs = [
        MobileNetConfig {
            variant: Variant::Shallow,
            activation: Activation::Relu,
            padding: PaddingMode::Symmetric,
            dropout: 0.3,
            ..small_config()
        },
        MobileNetConfig {
            variant: Variant::Conv,
            activation: Activation::Identity,
            alpha: 0.1 + 0.2,
            min_depth: 3,
            classes: 1,
            ..small_config()
        },
        MobileNetConfig {
            alpha: 1.0 / 3.0,
            resolution: 33,
            dropout: 0.1,
            ..small_config()
        },
        MobileNetConfig {
            resolution: 28,
            strides: [1, 2, 2, 2, 1],
            ..small_config()
        },
    ];
    for (i, config) in configs.iter().enumerate() {
        // ε per layer, including awkward values and zero.
        let eps = |l: usize| match l % 4 {
            0 => 1e-3,
            1 => 0.0,
            2 => 1.0 / 3.0,
            _ => 1e-5,
        };
        let net = random_net(config, i as u64 + 10, eps);
        let bytes = to_bytes(&net, &ModelMetadata::default()).unwrap();
        let loaded = from_bytes(&bytes).unwrap();
        assert_eq!(loaded.net, net, "{config:?}");
        assert_eq!(loaded.net.config().alpha.to_bits(), config.alpha.to_bits());
        assert_eq!(
            loaded.net.config().dropout.to_bits(),
            config.dropout.to_bits()
        );
    }
}

/// The header: names, shapes and metadata as documented.
#[test]
fn file_layout() {
    let (net, bytes) = small_file();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let expected = expected_tensors(net.architecture());
    assert_eq!(st.len(), expected.len());
    for (name, shape) in &expected {
        let view = st.tensor(name).unwrap();
        assert_eq!(view.dtype(), Dtype::F32);
        assert_eq!(view.shape(), shape.as_slice(), "{name}");
    }
    assert_eq!(st.tensor("conv1.weight").unwrap().shape(), &[8, 3, 3, 3]);
    assert_eq!(
        st.tensor("conv_dw_1.weight").unwrap().shape(),
        &[8, 1, 3, 3]
    );
    assert_eq!(
        st.tensor("conv_pw_13.weight").unwrap().shape(),
        &[256, 256, 1, 1]
    );
    assert_eq!(st.tensor("conv_pw_13.bn.var").unwrap().shape(), &[256]);
    assert_eq!(st.tensor("fc.weight").unwrap().shape(), &[7, 256]);
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().as_ref().unwrap();
    assert_eq!(meta["format"], "mobilenet-v1");
    assert_eq!(meta["format_version"], "1");
    assert_eq!(meta["source_format"], "tfjs");
    assert_eq!(meta["preprocess"], "torch");
    let config: Value = serde_json::from_str(&meta["config"]).unwrap();
    assert_eq!(config["alpha"], 0.25);
    assert_eq!(config["resolution"], 32);
    assert_eq!(config["classes"], 7);
    assert_eq!(config["min_depth"], 8);
    assert_eq!(config["activation"], "relu6");
    assert_eq!(config["padding"], "tf_same");
    assert_eq!(config["variant"], "mobilenet");
    assert_eq!(config["bn_eps"], 0.001);
    let labels: Vec<String> = serde_json::from_str(&meta["labels"]).unwrap();
    assert_eq!(labels.len(), 7);
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "mobilenet-format-safetensors-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn save_and_load_files() {
    let dir = temp_dir("files");
    let (net, _) = small_file();
    let model = LoadedModel {
        net: net.clone(),
        metadata: metadata(7),
    };
    let path = dir.join("model.safetensors");
    save_model(&model, &path).unwrap();
    assert_eq!(load_model_file(&path).unwrap().net, net);
    // Overwriting replaces the file; no temporary file is left behind.
    let other = random_net(&small_config(), 99, |_| 1e-5);
    save_model(
        &LoadedModel {
            net: other.clone(),
            metadata: ModelMetadata::default(),
        },
        &path,
    )
    .unwrap();
    assert_eq!(load_model_file(&path).unwrap().net, other);
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["model.safetensors"]);
    // A failed save leaves the old file alone.
    let bad = LoadedModel {
        net: net.clone(),
        metadata: ModelMetadata {
            labels: Some(vec!["only one".into()]),
            ..ModelMetadata::default()
        },
    };
    assert!(matches!(
        save_model(&bad, &path),
        Err(Error::InvalidConfig(_))
    ));
    assert_eq!(load_model_file(&path).unwrap().net, other);
    // I/O errors.
    let missing_dir = dir.join("no/such/dir/model.safetensors");
    assert!(matches!(
        save_model(&model, &missing_dir),
        Err(Error::Io { .. })
    ));
    assert!(matches!(
        load_model_file(&dir.join("absent.safetensors")),
        Err(Error::Io { .. })
    ));
    // Format errors name the file.
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"not a model").unwrap();
    match load_model_file(&junk) {
        Err(Error::Format(msg)) => assert!(msg.contains("junk.safetensors"), "{msg}"),
        other => panic!("{other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn saving_refuses_what_could_not_be_loaded() {
    let net = random_net(&small_config(), 4, |_| 1e-3);
    let mut convs = net.convs().to_vec();
    convs[5].weight.data_mut()[3] = f32::NAN;
    let nan =
        MobileNet::from_parts(net.architecture().clone(), convs, net.classifier().clone()).unwrap();
    match to_bytes(&nan, &ModelMetadata::default()) {
        Err(Error::InvalidConfig(msg)) => assert!(msg.contains("conv_dw_3.weight"), "{msg}"),
        other => panic!("{other:?}"),
    }
    let mut convs = net.convs().to_vec();
    convs[0].bn.eps = -1.0;
    let neg =
        MobileNet::from_parts(net.architecture().clone(), convs, net.classifier().clone()).unwrap();
    assert!(matches!(
        to_bytes(&neg, &ModelMetadata::default()),
        Err(Error::InvalidConfig(_))
    ));
}

type Tensors = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

/// The tensors and metadata of a file.
fn decode(bytes: &[u8]) -> (Tensors, HashMap<String, String>) {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    let (_, header) = SafeTensors::read_metadata(bytes).unwrap();
    (tensors, header.metadata().clone().unwrap_or_default())
}

fn encode(tensors: &Tensors, meta: Option<HashMap<String, String>>) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::tensor::serialize(views, meta).unwrap()
}

fn edited(edit: impl FnOnce(&mut Tensors, &mut HashMap<String, String>)) -> Vec<u8> {
    let (_, bytes) = small_file();
    let (mut t, mut m) = decode(&bytes);
    edit(&mut t, &mut m);
    encode(&t, Some(m))
}

fn format_error(bytes: &[u8]) -> String {
    match from_bytes(bytes) {
        Err(Error::Format(msg)) => msg,
        Err(other) => panic!("expected a format error, got {other:?}"),
        Ok(_) => panic!("expected a format error, got a model"),
    }
}

fn tensor_mut<'a>(t: &'a mut Tensors, name: &str) -> &'a mut (String, Dtype, Vec<usize>, Vec<u8>) {
    t.iter_mut().find(|x| x.0 == name).unwrap()
}

#[test]
fn damaged_files_are_format_errors() {
    let (_, good) = small_file();
    // Truncated at many lengths: all of the header, then strided.
    let mut cuts: Vec<usize> = (0..2500.min(good.len())).collect();
    cuts.extend((2500..good.len()).step_by(1009));
    cuts.push(good.len() - 1);
    for cut in cuts {
        format_error(&good[..cut]);
    }
    // Trailing bytes.
    let mut long = good.clone();
    long.extend_from_slice(&[0; 4]);
    format_error(&long);
    // Header length larger than the file, or absurd.
    for n in [good.len() as u64, u64::MAX, 1 << 40] {
        let mut b = good.clone();
        b[..8].copy_from_slice(&n.to_le_bytes());
        format_error(&b);
    }
    // Headers that are not a JSON object of tensors.
    for header in [
        "[]",
        "1",
        "null",
        "\"x\"",
        "{",
        "{\"__metadata__\": {\"format\": 1}}",
        "{}",
    ] {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        format_error(&b);
    }
    // Another safetensors file: no metadata.
    let (t, _) = decode(&good);
    let msg = format_error(&encode(&t, None));
    assert!(msg.contains("__metadata__"), "{msg}");

    // Wrong dtype, shape, missing and extra tensors, each named.
    let msg = format_error(&edited(|t, _| {
        let w = tensor_mut(t, "conv_pw_4.weight");
        let values: Vec<u8> =
            w.3.chunks_exact(4)
                .flat_map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes())
                .collect();
        (w.1, w.3) = (Dtype::F64, values);
    }));
    assert!(
        msg.contains("conv_pw_4.weight") && msg.contains("F64"),
        "{msg}"
    );
    let msg = format_error(&edited(|t, _| {
        let w = tensor_mut(t, "conv_dw_2.weight");
        w.1 = Dtype::I32;
    }));
    assert!(msg.contains("conv_dw_2.weight"), "{msg}");
    let msg = format_error(&edited(|t, _| {
        let w = tensor_mut(t, "conv_pw_2.weight");
        let [o, i, _, _] = w.2[..] else { panic!() };
        w.2 = vec![i, o, 1, 1];
    }));
    assert!(msg.contains("conv_pw_2.weight"), "{msg}");
    let msg = format_error(&edited(|t, _| t.retain(|x| x.0 != "conv_dw_7.bn.mean")));
    assert!(
        msg.contains("missing") && msg.contains("conv_dw_7.bn.mean"),
        "{msg}"
    );
    let msg = format_error(&edited(|t, _| {
        t.push(("extra.weight".into(), Dtype::F32, vec![2], vec![0; 8]));
        t.push(("conv_dw_14.weight".into(), Dtype::F32, vec![1], vec![0; 4]));
    }));
    assert!(
        msg.contains("extra.weight") && msg.contains("conv_dw_14.weight"),
        "{msg}"
    );

    // Non-finite weights and impossible statistics, named.
    for (name, value) in [
        ("conv1.weight", f32::NAN),
        ("conv_pw_13.bn.gamma", f32::INFINITY),
        ("fc.bias", f32::NEG_INFINITY),
        ("conv_dw_5.bn.var", -0.5),
    ] {
        let msg = format_error(&edited(|t, _| {
            let w = tensor_mut(t, name);
            let at = w.3.len() - 4;
            w.3[at..].copy_from_slice(&value.to_le_bytes());
        }));
        assert!(msg.contains(name), "{name}: {msg}");
    }

    // Metadata.
    let msg = format_error(&edited(|_, m| {
        m.insert("format".into(), "gguf".into());
    }));
    assert!(msg.contains("gguf"), "{msg}");
    let msg = format_error(&edited(|_, m| {
        m.insert("format_version".into(), "2".into());
    }));
    assert!(msg.contains("version"), "{msg}");
    format_error(&edited(|_, m| {
        m.remove("format_version");
    }));
    format_error(&edited(|_, m| {
        m.remove("config");
    }));
    let config = |edit: &dyn Fn(&mut Value)| {
        edited(|_, m| {
            let mut c: Value = serde_json::from_str(&m["config"]).unwrap();
            edit(&mut c);
            m.insert("config".into(), c.to_string());
        })
    };
    for edit in [
        &(|c: &mut Value| c["alpha"] = (-1.0).into()) as &dyn Fn(&mut Value),
        &|c| c["alpha"] = 0.5.into(), // valid, but the tensors do not fit
        &|c| c["resolution"] = 1_000_000_000u64.into(),
        &|c| c["resolution"] = 8.into(),
        &|c| c["classes"] = 0.into(),
        &|c| c["classes"] = (1u64 << 40).into(),
        &|c| c["activation"] = "gelu".into(),
        &|c| c["padding"] = "reflect".into(),
        &|c| c["variant"] = "v2".into(),
        &|c| c["bn_eps"] = (-1.0).into(),
        &|c| c["bn_eps"] = serde_json::json!({"conv1": 0.001}),
        &|c| c["bn_eps"] = "zero".into(),
        &|c| c["unknown"] = 1.into(),
        &|c| {
            c.as_object_mut().unwrap().remove("min_depth");
        },
        &|c| *c = serde_json::json!([1, 2]),
    ] {
        format_error(&config(edit));
    }
    format_error(&edited(|_, m| {
        m.insert("config".into(), "{not json".into());
    }));
    let msg = format_error(&edited(|_, m| {
        m.insert("labels".into(), "[\"a\", \"b\"]".into());
    }));
    assert!(msg.contains("labels"), "{msg}");
    format_error(&edited(|_, m| {
        m.insert("labels".into(), "{\"a\": 1}".into());
    }));

    // A huge claimed shape must fail before anything is allocated.
    let header = r#"{"__metadata__":{"format":"mobilenet-v1","format_version":"1"},"conv1.weight":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,16]}}"#;
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(&[0; 16]);
    format_error(&b);
    let msg = format_error(&edited(|t, _| {
        let w = tensor_mut(t, "fc.weight");
        let n: usize = w.2.iter().product();
        w.2 = vec![n];
    }));
    assert!(msg.contains("fc.weight"), "{msg}");
}

#[test]
fn random_byte_damage_never_panics() {
    let (_, good) = small_file();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize + 8;
    let mut rng = Rng(0x5eed);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for _ in 0..400 {
        let mut b = good.clone();
        for _ in 0..1 + (rng.next() * 3.0) as usize {
            let range = if rng.next() < 0.75 {
                header_len
            } else {
                b.len()
            };
            let at = (rng.next() * range as f32) as usize % range;
            b[at] = (rng.next() * 256.0) as u8;
        }
        let kind = match from_bytes(&b) {
            Ok(_) => "ok",
            Err(Error::Format(_)) => "format",
            Err(e) => panic!("unexpected error kind: {e:?}"),
        };
        *counts.entry(kind).or_default() += 1;
    }
    eprintln!("random damage: {counts:?}");
}
