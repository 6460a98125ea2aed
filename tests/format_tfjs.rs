//! Importing TF.js layers models: the real Keras MobileNet 0.75-224 against
//! Keras' outputs in `shared/refs/` (logits and a per-layer trace), exact
//! imports of synthetic models written here in several Keras dialects, the
//! round trip through our format, and damaged models.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use mobilenet::engine::{Parallelism, Plan, PlanOptions, Workspace};
use mobilenet::formats::LoadedModel;
use mobilenet::formats::safetensors::{from_bytes, to_bytes};
use mobilenet::formats::tfjs::{labels_from_metadata_json, load_tfjs, load_tfjs_from};
use mobilenet::layers::{Activation, BatchNorm, PaddingMode};
use mobilenet::model::network::{Classifier, ConvBn};
use mobilenet::model::{LayerKind, MobileNet, MobileNetConfig};
use mobilenet::{Error, Tensor};
use serde_json::{Value, json};

const MODEL: &str = "models/tfjs_mobilenet_v1_0.75_224/model.json";
const IMAGES: [&str; 3] = ["coral_cat_bmp", "mpl_grace_hopper", "skimage_chelsea"];
const LOGIT_TOLERANCE: f32 = 1e-4;

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f32_list(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

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

fn float_input(shared: &Path, image: &str) -> Tensor {
    let data: Vec<f32> = read(&shared.join(format!("refs/inputs/{image}__224.f32.bin")))
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Tensor::new(vec![1, 224, 224, 3], data).unwrap()
}

fn engine_logits(net: &MobileNet, input: &Tensor) -> Vec<f32> {
    let plan = Plan::compile(net, &PlanOptions::default()).unwrap();
    let par = Parallelism::new(1).unwrap();
    let mut ws = Workspace::new(&plan, &par);
    let batch = input.shape()[0];
    let mut logits = vec![0.0; batch * plan.classes()];
    plan.run(input.data(), batch, &mut logits, &mut ws, &par)
        .unwrap();
    logits
}

#[test]
fn keras_mobilenet_matches_keras_logits() {
    let Some(shared) = common::shared_dir("keras_mobilenet_matches_keras_logits") else {
        return;
    };
    let model = load_tfjs(&shared.join(MODEL)).unwrap();
    let cfg = model.net.config();
    assert_eq!(cfg.alpha, 0.75);
    assert_eq!(cfg.resolution, 224);
    assert_eq!(cfg.classes, 1000);
    assert_eq!(cfg.activation, Activation::Relu6);
    assert_eq!(cfg.padding, PaddingMode::TfSame);
    assert_eq!(cfg.dropout, 1e-3);
    assert!(model.net.convs().iter().all(|c| c.bn.eps == 1e-3));
    assert_eq!(model.metadata.source_format, "tfjs");
    assert_eq!(model.metadata.preprocess.as_deref(), Some("tf"));
    assert_eq!(
        model.metadata.name.as_deref(),
        Some("mobilenet_v1_0.75_224")
    );
    let labels = model
        .metadata
        .labels
        .as_ref()
        .expect("labels from metadata.json");
    assert_eq!(labels.len(), 1000);
    assert_eq!(labels[285], "Egyptian cat");

    // Through our format and back: the same network, bit for bit.
    let bytes = to_bytes(&model.net, &model.metadata).unwrap();
    let again = from_bytes(&bytes).unwrap();
    assert_eq!(again.net, model.net);
    assert_eq!(again.metadata.labels, model.metadata.labels);

    for image in IMAGES {
        let reference =
            json_file(&shared.join(format!("refs/keras_tfjs_float_v1_0.75_224__{image}.json")));
        let expected = f32_list(&reference["outputs"]["logits"]);
        let input = float_input(&shared, image);
        let logits = engine_logits(&model.net, &input);
        let diff = max_abs_diff(&logits, &expected);
        eprintln!("{image}: engine vs Keras, max logit difference {diff:.3e}");
        assert!(diff <= LOGIT_TOLERANCE, "{image}: {diff}");
        let top5: Vec<usize> = reference["top5"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["index"].as_u64().unwrap() as usize)
            .collect();
        assert_eq!(top_k(&logits, 5), top5, "{image}");
        let round_trip = engine_logits(&again.net, &input);
        assert!(
            logits
                .iter()
                .zip(&round_trip)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{image}: the round trip through our format changed the logits"
        );
    }
}

/// The reference forward on one photo, layer by layer against Keras' trace.
#[test]
fn keras_mobilenet_matches_keras_trace() {
    let Some(shared) = common::shared_dir("keras_mobilenet_matches_keras_trace") else {
        return;
    };
    let model = load_tfjs(&shared.join(MODEL)).unwrap();
    let trace =
        json_file(&shared.join("refs/trace/keras_tfjs_float_v1_0.75_224__skimage_chelsea.json"));
    let by_name: HashMap<&str, &Value> = trace["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["layer"].as_str().unwrap(), l))
        .collect();
    let input = float_input(&shared, "skimage_chelsea");
    let mut compared = 0;
    let mut worst = (0.0f64, String::new());
    let logits = model
        .net
        .forward_traced(&input, |spec, out| {
            let key = match spec.kind {
                LayerKind::FullyConnected => "conv_preds".to_string(),
                k if k.has_batch_norm() => format!("{}_relu", spec.name),
                _ => return,
            };
            let r = by_name[key.as_str()];
            let shape: Vec<usize> = r["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(
                shape.iter().product::<usize>(),
                out.len(),
                "{key}: {shape:?} vs {:?}",
                out.shape()
            );
            let data = out.data();
            let mean = data.iter().map(|&v| f64::from(v)).sum::<f64>() / data.len() as f64;
            let min = data.iter().copied().fold(f32::INFINITY, f32::min);
            let max = data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut check = |what: &str, ours: f64, theirs: f64| {
                let d = (ours - theirs).abs() / theirs.abs().max(1.0);
                if d > worst.0 {
                    worst = (d, format!("{key} {what}: ours {ours}, Keras {theirs}"));
                }
                assert!(d <= 1e-4, "{key} {what}: ours {ours}, Keras {theirs}");
            };
            check("mean", mean, r["mean"].as_f64().unwrap());
            check("min", f64::from(min), r["min"].as_f64().unwrap());
            check("max", f64::from(max), r["max"].as_f64().unwrap());
            for (i, v) in f32_list(&r["first8"]).iter().enumerate() {
                check(&format!("[{i}]"), f64::from(data[i]), f64::from(*v));
            }
            compared += 1;
        })
        .unwrap();
    eprintln!(
        "trace: {compared} layers compared, largest relative difference {:.3e} ({})",
        worst.0, worst.1
    );
    assert_eq!(compared, 27 + 1);
    let reference =
        json_file(&shared.join("refs/keras_tfjs_float_v1_0.75_224__skimage_chelsea.json"));
    let diff = max_abs_diff(logits.data(), &f32_list(&reference["outputs"]["logits"]));
    eprintln!("skimage_chelsea: reference forward vs Keras, max logit difference {diff:.3e}");
    assert!(diff <= LOGIT_TOLERANCE);
}

// ---------------------------------------------------------------------------
// Synthetic models.

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

fn random_net(config: &MobileNetConfig, seed: u64) -> MobileNet {
    let base = MobileNet::random(config, seed).unwrap();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut vec = |n: usize, lo: f32, hi: f32| -> Vec<f32> {
        (0..n).map(|_| lo + (hi - lo) * rng.next()).collect()
    };
    let convs = base
        .convs()
        .iter()
        .map(|c| {
            let n = c.bn.channels();
            ConvBn {
                weight: c.weight.clone(),
                bn: BatchNorm {
                    gamma: vec(n, 0.5, 1.5),
                    beta: vec(n, -0.5, 0.5),
                    mean: vec(n, -0.3, 0.3),
                    var: vec(n, 0.3, 2.0),
                    eps: 1e-3,
                },
            }
        })
        .collect();
    let classes = base.classifier().bias.len();
    let classifier = Classifier {
        weight: base.classifier().weight.clone(),
        bias: Tensor::new(vec![classes], vec(classes, -0.1, 0.1)).unwrap(),
    };
    MobileNet::from_parts(base.architecture().clone(), convs, classifier).unwrap()
}

fn small_net() -> MobileNet {
    let config = MobileNetConfig {
        alpha: 0.25,
        resolution: 32,
        classes: 5,
        ..Default::default()
    };
    random_net(&config, 11)
}

/// Which Keras dialect a synthetic model.json is written in.
#[derive(Clone, Copy, Default)]
struct Style {
    /// Keras 3 inbound nodes, `ReLU(max_value=6)` layers, explicit
    /// `ZeroPadding2D` + `'valid'` before the stride-2 convs.
    keras3: bool,
    /// A `Dense` classifier instead of the 1x1 `conv_preds`.
    dense: bool,
    /// A `Sequential` model: no input layer, no inbound nodes.
    sequential: bool,
}

/// One manifest group: (name, Keras shape, values) of each weight.
type Group = Vec<(String, Vec<usize>, Vec<f32>)>;

/// A change to a synthetic model.
type Edit = dyn Fn(&mut Synthetic);

/// A synthetic TF.js model of `net`: model.json and the shards (at most
/// 1000 bytes each, so weights span shards).
struct Synthetic {
    json: Value,
    shards: HashMap<String, Vec<u8>>,
}

impl Synthetic {
    fn new(net: &MobileNet, style: Style) -> Synthetic {
        let cfg = net.config();
        let mut layers: Vec<Value> = Vec::new();
        let mut groups: Vec<Group> = Vec::new();
        let r = cfg.resolution;
        let push = |layers: &mut Vec<Value>, class: &str, name: &str, config: Value| {
            let prev = layers
                .last()
                .map(|l| l["name"].as_str().unwrap().to_string());
            let mut config = config;
            config["name"] = name.into();
            let mut layer = json!({"class_name": class, "name": name, "config": config});
            if !style.sequential {
                layer["inbound_nodes"] = match (&prev, style.keras3) {
                    (None, _) => json!([]),
                    (Some(p), false) => json!([[[p, 0, 0, {}]]]),
                    (Some(p), true) => json!([{
                        "args": [{"class_name": "__keras_tensor__",
                                  "config": {"shape": [null], "dtype": "float32",
                                             "keras_history": [p, 0, 0]}}],
                        "kwargs": {}
                    }]),
                };
            }
            layers.push(layer);
        };
        if style.sequential {
            // The first layer carries the input shape.
        } else {
            push(
                &mut layers,
                "InputLayer",
                "input_1",
                json!({"batch_input_shape": [null, r, r, 3], "dtype": "float32"}),
            );
        }
        let act = match cfg.activation {
            Activation::Relu6 => "relu6",
            Activation::Relu => "relu",
            Activation::Identity => "linear",
        };
        for (spec, conv) in net
            .architecture()
            .layers()
            .iter()
            .filter(|l| l.kind.has_batch_norm())
            .zip(net.convs())
        {
            let name = &spec.name;
            let explicit_pad = style.keras3 && spec.stride == 2;
            if explicit_pad {
                let n = name.rsplit('_').next().unwrap();
                push(
                    &mut layers,
                    "ZeroPadding2D",
                    &format!("conv_pad_{n}"),
                    json!({"padding": [[0, 1], [0, 1]], "data_format": "channels_last"}),
                );
            }
            let padding = if explicit_pad { "valid" } else { "same" };
            let k = spec.kernel;
            let w = conv.weight.data();
            let (c_in, c_out) = (spec.input[2], spec.output[2]);
            let mut config = json!({
                "kernel_size": [k, k], "strides": [spec.stride, spec.stride],
                "padding": padding, "dilation_rate": [1, 1], "use_bias": false,
                "activation": "linear", "data_format": "channels_last",
            });
            let (class, wname, shape, values) = if spec.kind == LayerKind::Depthwise {
                config["depth_multiplier"] = 1.into();
                let mut v = vec![0.0; k * k * c_in];
                for c in 0..c_in {
                    for y in 0..k {
                        for x in 0..k {
                            v[(y * k + x) * c_in + c] = w[(c * k + y) * k + x];
                        }
                    }
                }
                (
                    "DepthwiseConv2D",
                    "depthwise_kernel",
                    vec![k, k, c_in, 1],
                    v,
                )
            } else {
                config["filters"] = c_out.into();
                let mut v = vec![0.0; k * k * c_in * c_out];
                for o in 0..c_out {
                    for i in 0..c_in {
                        for y in 0..k {
                            for x in 0..k {
                                v[((y * k + x) * c_in + i) * c_out + o] =
                                    w[((o * c_in + i) * k + y) * k + x];
                            }
                        }
                    }
                }
                ("Conv2D", "kernel", vec![k, k, c_in, c_out], v)
            };
            push(&mut layers, class, name, config);
            groups.push(vec![(format!("{name}/{wname}"), shape, values)]);
            let bn = &conv.bn;
            let bn_name = format!("{name}_bn");
            push(
                &mut layers,
                "BatchNormalization",
                &bn_name,
                json!({"axis": -1, "epsilon": f64::from(bn.eps), "center": true, "scale": true,
                       "momentum": 0.99}),
            );
            let c = bn.channels();
            groups.push(vec![
                (format!("{bn_name}/gamma"), vec![c], bn.gamma.clone()),
                (format!("{bn_name}/beta"), vec![c], bn.beta.clone()),
                (format!("{bn_name}/moving_mean"), vec![c], bn.mean.clone()),
                (
                    format!("{bn_name}/moving_variance"),
                    vec![c],
                    bn.var.clone(),
                ),
            ]);
            if style.keras3 {
                let max = if act == "relu6" {
                    json!(6.0)
                } else {
                    Value::Null
                };
                push(
                    &mut layers,
                    "ReLU",
                    &format!("{name}_relu"),
                    json!({"max_value": max, "negative_slope": 0.0, "threshold": 0.0}),
                );
            } else {
                push(
                    &mut layers,
                    "Activation",
                    &format!("{name}_relu"),
                    json!({"activation": act}),
                );
            }
        }
        let fc = net.classifier();
        let [classes, c] = fc.weight.shape().try_into().unwrap();
        push(
            &mut layers,
            "GlobalAveragePooling2D",
            "global_average_pooling2d",
            json!({"data_format": "channels_last", "keepdims": false}),
        );
        push(
            &mut layers,
            "Reshape",
            "reshape_1",
            json!({"target_shape": [1, 1, c]}),
        );
        push(
            &mut layers,
            "Dropout",
            "dropout",
            json!({"rate": f64::from(cfg.dropout)}),
        );
        let mut kernel = vec![0.0; c * classes];
        for k in 0..classes {
            for i in 0..c {
                kernel[i * classes + k] = fc.weight.data()[k * c + i];
            }
        }
        if style.dense {
            push(&mut layers, "Flatten", "flatten", json!({}));
            push(
                &mut layers,
                "Dense",
                "predictions",
                json!({"units": classes, "use_bias": true, "activation": "softmax"}),
            );
            groups.push(vec![
                ("predictions/kernel".into(), vec![c, classes], kernel),
                (
                    "predictions/bias".into(),
                    vec![classes],
                    fc.bias.data().to_vec(),
                ),
            ]);
        } else {
            push(
                &mut layers,
                "Conv2D",
                "conv_preds",
                json!({"kernel_size": [1, 1], "strides": [1, 1], "padding": "same",
                       "filters": classes, "use_bias": true, "activation": "linear"}),
            );
            groups.push(vec![
                ("conv_preds/kernel".into(), vec![1, 1, c, classes], kernel),
                (
                    "conv_preds/bias".into(),
                    vec![classes],
                    fc.bias.data().to_vec(),
                ),
            ]);
            push(
                &mut layers,
                "Reshape",
                "reshape_2",
                json!({"target_shape": [classes]}),
            );
            push(
                &mut layers,
                "Activation",
                "act_softmax",
                json!({"activation": "softmax"}),
            );
        }

        if style.sequential {
            layers[0]["config"]["batch_input_shape"] = json!([null, r, r, 3]);
        }
        let mut manifest = Vec::new();
        let mut shards = HashMap::new();
        for (g, weights) in groups.into_iter().enumerate() {
            let bytes: Vec<u8> = weights
                .iter()
                .flat_map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()))
                .collect();
            let chunks: Vec<&[u8]> = bytes.chunks(1000).collect();
            let n = chunks.len();
            let mut paths = Vec::new();
            for (i, chunk) in chunks.into_iter().enumerate() {
                let path = format!("group{}-shard{}of{n}", g + 1, i + 1);
                shards.insert(path.clone(), chunk.to_vec());
                paths.push(path);
            }
            manifest.push(json!({
                "paths": paths,
                "weights": weights.iter().map(|(name, shape, _)| json!({
                    "name": name, "shape": shape, "dtype": "float32"
                })).collect::<Vec<_>>(),
            }));
        }
        let (class, config) = if style.sequential {
            (
                "Sequential",
                json!({"name": "sequential", "layers": layers}),
            )
        } else {
            let last = layers.last().unwrap()["name"].clone();
            (
                if style.keras3 { "Functional" } else { "Model" },
                json!({"name": "mobilenet", "layers": layers,
                       "input_layers": [["input_1", 0, 0]], "output_layers": [[last, 0, 0]]}),
            )
        };
        let json = json!({
            "format": "layers-model",
            "modelTopology": {
                "keras_version": if style.keras3 { "3.0.0" } else { "2.1.4" },
                "backend": "tensorflow",
                "model_config": {"class_name": class, "config": config},
            },
            "weightsManifest": manifest,
        });
        Synthetic { json, shards }
    }

    fn load(&self) -> mobilenet::Result<LoadedModel> {
        load_tfjs_from(&self.json.to_string(), |p| self.shard(p))
    }

    fn shard(&self, p: &str) -> mobilenet::Result<Vec<u8>> {
        self.shards.get(p).cloned().ok_or_else(|| Error::Io {
            path: p.into(),
            source: std::io::ErrorKind::NotFound.into(),
        })
    }

    fn layers_mut(&mut self) -> &mut Vec<Value> {
        self.json["modelTopology"]["model_config"]["config"]["layers"]
            .as_array_mut()
            .unwrap()
    }

    fn layer_mut(&mut self, name: &str) -> &mut Value {
        self.layers_mut()
            .iter_mut()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("no layer {name}"))
    }

    /// (group index, weight index) of a manifest weight.
    fn weight_at(&self, name: &str) -> (usize, usize) {
        for (g, group) in self.json["weightsManifest"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            for (w, weight) in group["weights"].as_array().unwrap().iter().enumerate() {
                if weight["name"] == name {
                    return (g, w);
                }
            }
        }
        panic!("no weight {name}")
    }

    fn weight_mut(&mut self, name: &str) -> &mut Value {
        let (g, w) = self.weight_at(name);
        &mut self.json["weightsManifest"][g]["weights"][w]
    }

    /// The paths of the group holding a weight.
    fn group_paths(&self, name: &str) -> Vec<String> {
        let (g, _) = self.weight_at(name);
        self.json["weightsManifest"][g]["paths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect()
    }

    /// The bytes of a whole group, and a way to put them back as one shard.
    fn group_bytes(&self, name: &str) -> Vec<u8> {
        self.group_paths(name)
            .iter()
            .flat_map(|p| self.shards[p].clone())
            .collect()
    }

    fn set_group_bytes(&mut self, name: &str, bytes: Vec<u8>) {
        let (g, _) = self.weight_at(name);
        let path = format!("rewritten{g}");
        self.json["weightsManifest"][g]["paths"] = json!([path]);
        self.shards.insert(path, bytes);
    }
}

#[test]
fn synthetic_models_import_exactly() {
    let net = small_net();
    for style in [
        Style::default(),
        Style {
            keras3: true,
            ..Style::default()
        },
        Style {
            dense: true,
            ..Style::default()
        },
        Style {
            sequential: true,
            keras3: true,
            dense: true,
        },
    ] {
        let model = Synthetic::new(&net, style).load().unwrap();
        assert_eq!(model.net, net);
        assert_eq!(model.metadata.labels, None);
    }
    // ReLU instead of ReLU6, symmetric (PyTorch) padding written as
    // explicit ZeroPadding2D((1, 1), (1, 1)) + 'valid' everywhere.
    let relu = random_net(
        &MobileNetConfig {
            activation: Activation::Relu,
            padding: PaddingMode::Symmetric,
            ..small_net().config().clone()
        },
        5,
    );
    let mut s = Synthetic::new(&relu, Style::default());
    let names: Vec<String> = s
        .layers_mut()
        .iter()
        .filter(|l| l["config"]["kernel_size"] == json!([3, 3]))
        .map(|l| l["name"].as_str().unwrap().to_string())
        .collect();
    for name in names {
        s.layer_mut(&name)["config"]["padding"] = "valid".into();
        let at = s
            .layers_mut()
            .iter()
            .position(|l| l["name"] == name.as_str())
            .unwrap();
        let prev = s.layers_mut()[at - 1]["name"].clone();
        let pad = json!({"class_name": "ZeroPadding2D", "name": format!("{name}_pad"),
                         "config": {"name": format!("{name}_pad"), "padding": [[1, 1], [1, 1]]},
                         "inbound_nodes": [[[prev, 0, 0, {}]]]});
        s.layers_mut()[at]["inbound_nodes"] = json!([[[format!("{name}_pad"), 0, 0, {}]]]);
        s.layers_mut().insert(at, pad);
    }
    let model = s.load().unwrap();
    assert_eq!(model.net, relu);
}

/// A conv bias is folded into the batch norm after it: adding b to the
/// conv and to the moving mean changes nothing.
#[test]
fn conv_bias_is_folded() {
    let net = small_net();
    let mut s = Synthetic::new(&net, Style::default());
    s.layer_mut("conv_pw_2")["config"]["use_bias"] = true.into();
    let c = 32;
    let mut bytes = s.group_bytes("conv_pw_2/kernel");
    bytes.extend((0..c).flat_map(|_| 0.25f32.to_le_bytes()));
    s.set_group_bytes("conv_pw_2/kernel", bytes);
    let (g, _) = s.weight_at("conv_pw_2/kernel");
    s.json["weightsManifest"][g]["weights"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "conv_pw_2/bias", "shape": [c], "dtype": "float32"}));
    let mut bn = s.group_bytes("conv_pw_2_bn/moving_mean");
    for v in bn[2 * c * 4..3 * c * 4].chunks_exact_mut(4) {
        let m = f32::from_le_bytes(v.try_into().unwrap()) + 0.25;
        v.copy_from_slice(&m.to_le_bytes());
    }
    s.set_group_bytes("conv_pw_2_bn/moving_mean", bn);
    let model = s.load().unwrap();
    let x = Tensor::from_fn(vec![1, 32, 32, 3], |i| ((i * 13) % 23) as f32 / 11.5 - 1.0).unwrap();
    let diff = net
        .forward(&x)
        .unwrap()
        .max_abs_diff(&model.net.forward(&x).unwrap())
        .unwrap();
    assert!(diff < 1e-5, "{diff}");
}

#[test]
fn quantized_weights_are_dequantized() {
    let net = small_net();
    let mut s = Synthetic::new(&net, Style::default());
    // conv_pw_3/kernel as uint8, conv_dw_2/depthwise_kernel as uint16,
    // conv1_bn/gamma..variance as float16 (the whole group).
    let quantize = |s: &mut Synthetic, name: &str, dtype: &str| -> Vec<f32> {
        let values: Vec<f32> = s
            .group_bytes(name)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let (lo, hi) = values
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        let levels = if dtype == "uint8" { 255.0 } else { 65535.0 };
        let scale = (hi - lo) / levels;
        let q: Vec<u32> = values
            .iter()
            .map(|&v| ((v - lo) / scale).round().clamp(0.0, levels) as u32)
            .collect();
        let bytes: Vec<u8> = if dtype == "uint8" {
            q.iter().map(|&v| v as u8).collect()
        } else {
            q.iter().flat_map(|&v| (v as u16).to_le_bytes()).collect()
        };
        s.set_group_bytes(name, bytes);
        s.weight_mut(name)["quantization"] =
            json!({"dtype": dtype, "scale": f64::from(scale), "min": f64::from(lo)});
        q.iter()
            .map(|&v| (f64::from(v) * f64::from(scale) + f64::from(lo)) as f32)
            .collect()
    };
    let pw3 = quantize(&mut s, "conv_pw_3/kernel", "uint8");
    let dw2 = quantize(&mut s, "conv_dw_2/depthwise_kernel", "uint16");
    // float16: the BN group of conv1, four weights in one group.
    let group = s.group_bytes("conv1_bn/gamma");
    let halves: Vec<u8> = group
        .chunks_exact(4)
        .flat_map(|c| {
            let v = f32::from_le_bytes(c.try_into().unwrap());
            f32_to_f16_bits(v).to_le_bytes()
        })
        .collect();
    let expected_gamma: Vec<f32> = halves
        .chunks_exact(2)
        .take(8)
        .map(|c| f16_bits_to_f32(u16::from_le_bytes([c[0], c[1]])))
        .collect();
    s.set_group_bytes("conv1_bn/gamma", halves);
    for w in ["gamma", "beta", "moving_mean", "moving_variance"] {
        s.weight_mut(&format!("conv1_bn/{w}"))["quantization"] = json!({"dtype": "float16"});
    }
    let model = s.load().unwrap();
    let convs = model.net.convs();
    // conv_pw_3 is conv index 6: HWIO [1, 1, C_in, C_out] -> OIHW.
    let w = &convs[6].weight;
    let [c_out, c_in, _, _] = w.shape().try_into().unwrap();
    for o in 0..c_out {
        for i in 0..c_in {
            assert_eq!(w.data()[o * c_in + i], pw3[i * c_out + o]);
        }
    }
    let w = &convs[3].weight; // conv_dw_2
    let c = w.shape()[0];
    for ch in 0..c {
        for t in 0..9 {
            assert_eq!(w.data()[ch * 9 + t], dw2[t * c + ch]);
        }
    }
    assert_eq!(convs[0].bn.gamma, expected_gamma);
    // Close to the float network.
    let x = Tensor::from_fn(vec![1, 32, 32, 3], |i| ((i * 31) % 17) as f32 / 8.5 - 1.0).unwrap();
    let a = net.forward(&x).unwrap();
    let b = model.net.forward(&x).unwrap();
    assert!(a.max_abs_diff(&b).unwrap() < 0.1);
}

/// Round to nearest even half precision (normal range only; enough here).
fn f32_to_f16_bits(v: f32) -> u16 {
    let bits = v.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    let man = bits & 0x7f_ffff;
    if exp <= 0 {
        return sign;
    }
    let mut h = ((exp as u32) << 10) | (man >> 13);
    let rest = man & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && h & 1 == 1) {
        h += 1;
    }
    sign | h as u16
}

fn f16_bits_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let man = f32::from(h & 0x3ff);
    if exp == 0 {
        return sign * man * 2f32.powi(-24);
    }
    sign * (1.0 + man / 1024.0) * 2f32.powi(exp - 15)
}

fn format_error(result: mobilenet::Result<LoadedModel>) -> String {
    match result {
        Err(Error::Format(msg)) => msg,
        Err(other) => panic!("expected a format error, got {other:?}"),
        Ok(_) => panic!("expected a format error, got a model"),
    }
}

#[test]
fn damaged_models_are_format_errors() {
    let net = small_net();
    let good = Synthetic::new(&net, Style::default());
    let load_text = |text: &str| load_tfjs_from(text, |p| good.shard(p));

    // model.json that is not a model.
    for text in [
        "",
        "not json",
        "[]",
        "1",
        "{}",
        "{\"modelTopology\": 1}",
        "{\"modelTopology\": {\"class_name\": \"Model\", \"config\": {\"layers\": 5}}}",
    ] {
        format_error(load_text(text));
    }
    let mut s = Synthetic::new(&net, Style::default());
    s.json["format"] = "graph-model".into();
    assert!(format_error(s.load()).contains("graph-model"));
    let mut s = Synthetic::new(&net, Style::default());
    s.json.as_object_mut().unwrap().remove("weightsManifest");
    assert!(format_error(s.load()).contains("weightsManifest"));

    // Truncated model.json at many lengths.
    let text = good.json.to_string();
    let mut cut = 0;
    while cut < text.len() {
        if text.is_char_boundary(cut) {
            format_error(load_text(&text[..cut]));
        }
        cut += 1 + cut / 10;
    }

    // Shards too short or too long: the manifest's shapes need more (or
    // fewer) bytes than the shards have.
    let mut s = Synthetic::new(&net, Style::default());
    let path = s.group_paths("conv_pw_13/kernel").pop().unwrap();
    s.shards.get_mut(&path).unwrap().pop();
    let msg = format_error(s.load());
    assert!(msg.contains("needs"), "{msg}");
    let mut s = Synthetic::new(&net, Style::default());
    s.shards.get_mut(&path).unwrap().extend_from_slice(&[0; 4]);
    format_error(s.load());
    // A shard that is missing altogether: the reader's I/O error.
    let mut s = Synthetic::new(&net, Style::default());
    s.shards.remove(&path);
    assert!(matches!(s.load(), Err(Error::Io { .. })));

    // Manifest entries.
    let mut s = Synthetic::new(&net, Style::default());
    s.weight_mut("conv_dw_4/depthwise_kernel")["shape"] = json!([1u64 << 40, 1u64 << 40, 3, 1]);
    assert!(format_error(s.load()).contains("conv_dw_4/depthwise_kernel"));
    let mut s = Synthetic::new(&net, Style::default());
    s.weight_mut("conv_dw_4/depthwise_kernel")["shape"] = json!([3, 3, -1, 1]);
    format_error(s.load());
    let mut s = Synthetic::new(&net, Style::default());
    s.weight_mut("conv_pw_1/kernel")["dtype"] = "int32".into();
    assert!(format_error(s.load()).contains("int32"));
    let mut s = Synthetic::new(&net, Style::default());
    s.weight_mut("conv_pw_1/kernel")["quantization"] =
        json!({"dtype": "int4", "scale": 1, "min": 0});
    format_error(s.load());
    let mut s = Synthetic::new(&net, Style::default());
    s.weight_mut("conv_pw_1/kernel")["quantization"] = json!({"dtype": "uint8", "min": 0});
    format_error(s.load());
    // uint8 quantization declared but float32 bytes in the shard: the
    // group is longer than its weights need.
    let mut s = Synthetic::new(&net, Style::default());
    s.weight_mut("conv_pw_1/kernel")["quantization"] =
        json!({"dtype": "uint8", "scale": 0.01, "min": -1});
    format_error(s.load());
    let mut s = Synthetic::new(&net, Style::default());
    s.weight_mut("conv_pw_1/kernel")["name"] = "conv_pw_1/kernel_extra".into();
    let msg = format_error(s.load());
    assert!(msg.contains("conv_pw_1/kernel_extra"), "{msg}");
    let mut s = Synthetic::new(&net, Style::default());
    s.json["weightsManifest"][1]["weights"]
        .as_array_mut()
        .unwrap()
        .remove(3);
    let msg = format_error(s.load());
    assert!(msg.contains("conv1_bn/moving_variance"), "{msg}");
    let mut s = Synthetic::new(&net, Style::default());
    let dup = s.json["weightsManifest"][0].clone();
    s.json["weightsManifest"].as_array_mut().unwrap().push(dup);
    format_error(s.load());

    // NaN weights, named.
    let mut s = Synthetic::new(&net, Style::default());
    let mut bytes = s.group_bytes("conv_dw_9/depthwise_kernel");
    bytes[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    s.set_group_bytes("conv_dw_9/depthwise_kernel", bytes);
    assert!(format_error(s.load()).contains("conv_dw_9/depthwise_kernel"));

    // Topologies that are not this MobileNet.
    let broken: [(&str, &Edit); 12] = [
        ("wrong filters", &|s| {
            s.layer_mut("conv_pw_5")["config"]["filters"] = 40.into()
        }),
        ("huge filters", &|s| {
            s.layer_mut("conv_pw_5")["config"]["filters"] = (1u64 << 40).into()
        }),
        ("huge input", &|s| {
            s.layer_mut("input_1")["config"]["batch_input_shape"] =
                json!([null, 1u64 << 40, 1u64 << 40, 3])
        }),
        ("non-square input", &|s| {
            s.layer_mut("input_1")["config"]["batch_input_shape"] = json!([null, 32, 64, 3])
        }),
        ("tanh", &|s| {
            s.layer_mut("conv_dw_3_relu")["config"]["activation"] = "tanh".into()
        }),
        ("mixed activations", &|s| {
            s.layer_mut("conv_dw_3_relu")["config"]["activation"] = "relu".into()
        }),
        ("valid padding", &|s| {
            s.layer_mut("conv_dw_3")["config"]["padding"] = "valid".into()
        }),
        ("stride", &|s| {
            s.layer_mut("conv_dw_3")["config"]["strides"] = json!([2, 2])
        }),
        ("dilation", &|s| {
            s.layer_mut("conv_dw_3")["config"]["dilation_rate"] = json!([2, 2])
        }),
        ("not a chain", &|s| {
            s.layer_mut("conv_pw_4")["inbound_nodes"] = json!([[["conv1_relu", 0, 0, {}]]])
        }),
        ("missing batch norm", &|s| {
            s.layers_mut().retain(|l| l["name"] != "conv_pw_7_bn");
            s.layer_mut("conv_pw_7_relu")["inbound_nodes"] = json!([[["conv_pw_7", 0, 0, {}]]]);
        }),
        ("unknown layer", &|s| {
            s.layer_mut("dropout")["class_name"] = "SpatialDropout2D".into()
        }),
    ];
    for (what, edit) in broken {
        let mut s = Synthetic::new(&net, Style::default());
        edit(&mut s);
        let msg = format_error(s.load());
        eprintln!("{what}: {msg}");
    }
}

#[test]
fn random_damage_to_model_json_never_panics() {
    let net = small_net();
    let good = Synthetic::new(&net, Style::default());
    let text = good.json.to_string().into_bytes();
    let mut rng = Rng(0xdead_beef);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for _ in 0..300 {
        let mut b = text.clone();
        for _ in 0..1 + (rng.next() * 4.0) as usize {
            let at = (rng.next() * b.len() as f32) as usize % b.len();
            b[at] = b"0123456789[]{}\",:-.e abcxyz"[(rng.next() * 27.0) as usize % 27];
        }
        let kind = match load_tfjs_from(&String::from_utf8_lossy(&b), |p| good.shard(p)) {
            Ok(_) => "ok",
            Err(Error::Format(_)) => "format",
            Err(Error::Io { .. }) => "io",
            Err(e) => panic!("unexpected error kind: {e:?}"),
        };
        *counts.entry(kind).or_default() += 1;
    }
    eprintln!("random damage: {counts:?}");
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "mobilenet-format-tfjs-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn model_folders_on_disk() {
    let net = small_net();
    let s = Synthetic::new(&net, Style::default());
    let dir = temp_dir("disk");
    std::fs::write(dir.join("model.json"), s.json.to_string()).unwrap();
    for (p, b) in &s.shards {
        std::fs::write(dir.join(p), b).unwrap();
    }
    let labels: Vec<String> = (0..5).map(|i| format!("label {i}")).collect();
    std::fs::write(
        dir.join("metadata.json"),
        json!({"labels": labels}).to_string(),
    )
    .unwrap();
    let model = load_tfjs(&dir.join("model.json")).unwrap();
    assert_eq!(model.net, net);
    assert_eq!(model.metadata.labels.as_ref(), Some(&labels));
    // Labels that do not fit are dropped, not an error.
    std::fs::write(dir.join("metadata.json"), "{\"labels\": [\"a\"]}").unwrap();
    assert_eq!(
        load_tfjs(&dir.join("model.json")).unwrap().metadata.labels,
        None
    );
    assert_eq!(labels_from_metadata_json("{\"labels\": [1, 2]}", 2), None);

    // Shard paths must stay inside the folder.
    let mut escaping = s.json.clone();
    escaping["weightsManifest"][0]["paths"] = json!(["../outside.bin"]);
    std::fs::write(dir.join("escape.json"), escaping.to_string()).unwrap();
    let msg = format_error(load_tfjs(&dir.join("escape.json")));
    assert!(
        msg.contains("escape.json") && msg.contains("outside.bin"),
        "{msg}"
    );
    escaping["weightsManifest"][0]["paths"] = json!(["/etc/passwd"]);
    std::fs::write(dir.join("escape.json"), escaping.to_string()).unwrap();
    format_error(load_tfjs(&dir.join("escape.json")));
    // Missing files.
    std::fs::remove_file(dir.join("group1-shard1of1")).unwrap();
    assert!(matches!(
        load_tfjs(&dir.join("model.json")),
        Err(Error::Io { .. })
    ));
    assert!(matches!(
        load_tfjs(&dir.join("absent.json")),
        Err(Error::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}
