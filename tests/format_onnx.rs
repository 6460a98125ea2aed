//! ONNX export and import: round trips of random networks, graphs written
//! the way other exporters write them, damaged and hostile files, and (with
//! `MOBILENET_ONNX_PYTHON` naming a Python that has onnxruntime) a check of
//! the exported files against ONNX Runtime via `scripts/check_onnx.py`.

use std::path::{Path, PathBuf};
use std::process::Command;

use mobilenet::Error;
use mobilenet::Tensor;
use mobilenet::formats::ModelMetadata;
use mobilenet::formats::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_type, tensor_shape_proto, type_proto,
};
use mobilenet::formats::onnx::{KEY_CONFIG, OnnxExportOptions, export_onnx, load_onnx};
use mobilenet::layers::{Activation, BatchNorm, PaddingMode};
use mobilenet::model::network::{Classifier, ConvBn};
use mobilenet::model::{MobileNet, MobileNetConfig, Variant};
use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A random network whose batch norms have non-trivial statistics and whose
/// classifier has a non-zero bias.
fn random_net(config: &MobileNetConfig, seed: u64) -> MobileNet {
    let net = MobileNet::random(config, seed).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut vec = |n: usize, lo: f32, hi: f32| -> Vec<f32> {
        (0..n).map(|_| rng.random_range(lo..hi)).collect()
    };
    let convs = net
        .convs()
        .iter()
        .map(|c| {
            let n = c.bn.channels();
            ConvBn {
                weight: c.weight.clone(),
                bn: BatchNorm {
                    gamma: vec(n, 0.5, 1.5),
                    beta: vec(n, -0.3, 0.3),
                    mean: vec(n, -0.3, 0.3),
                    var: vec(n, 0.3, 2.0),
                    eps: c.bn.eps,
                },
            }
        })
        .collect();
    let fc = net.classifier();
    let classes = fc.bias.len();
    let classifier = Classifier {
        weight: fc.weight.clone(),
        bias: Tensor::new(vec![classes], vec(classes, -0.5, 0.5)).unwrap(),
    };
    MobileNet::from_parts(net.architecture().clone(), convs, classifier).unwrap()
}

/// A deterministic NHWC batch in [-1, 1].
fn input(batch: usize, resolution: usize, seed: u32) -> Tensor {
    Tensor::from_fn(vec![batch, resolution, resolution, 3], |i| {
        let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
        (x >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    })
    .unwrap()
}

fn config(
    alpha: f64,
    resolution: usize,
    activation: Activation,
    padding: PaddingMode,
) -> MobileNetConfig {
    MobileNetConfig {
        alpha,
        resolution,
        classes: 13,
        activation,
        padding,
        ..Default::default()
    }
}

/// `max |a - b| / max |a|`.
fn relative_diff(a: &Tensor, b: &Tensor) -> f32 {
    let scale = a.data().iter().fold(0.0f32, |m, v| m.max(v.abs()));
    a.max_abs_diff(b).unwrap() / scale
}

fn assert_format_error(result: mobilenet::Result<impl std::fmt::Debug>, what: &str) -> String {
    match result {
        Err(Error::Format(msg)) => msg,
        other => panic!("{what}: expected a format error, got {other:?}"),
    }
}

fn metadata() -> ModelMetadata {
    ModelMetadata {
        name: Some("test net".into()),
        preprocess: Some("torch".into()),
        labels: Some((0..13).map(|i| format!("class \"{i}\"")).collect()),
        source_format: "test".into(),
    }
}

#[test]
fn round_trip_matches_the_original() {
    let cases = [
        (0.25, 32, Activation::Relu6, PaddingMode::TfSame),
        (0.25, 96, Activation::Relu, PaddingMode::Symmetric),
        (0.25, 57, Activation::Relu6, PaddingMode::TfSame),
        (0.5, 64, Activation::Relu6, PaddingMode::Symmetric),
        (0.5, 48, Activation::Relu, PaddingMode::TfSame),
        (0.5, 40, Activation::Identity, PaddingMode::TfSame),
        (0.75, 33, Activation::Relu6, PaddingMode::Symmetric),
    ];
    for (i, &(alpha, resolution, activation, padding)) in cases.iter().enumerate() {
        let cfg = config(alpha, resolution, activation, padding);
        let net = random_net(&cfg, i as u64);
        let x = input(2, resolution, i as u32);
        let expected = net.forward(&x).unwrap();
        for (softmax, dynamic_batch) in [(true, true), (false, false)] {
            let options = OnnxExportOptions {
                softmax,
                dynamic_batch,
            };
            let bytes = export_onnx(&net, &metadata(), &options).unwrap();
            let loaded = load_onnx(&bytes).unwrap();
            assert_eq!(loaded.net.config(), &cfg, "case {i}");
            assert_eq!(loaded.metadata.source_format, "onnx");
            assert_eq!(loaded.metadata.name.as_deref(), Some("test net"));
            assert_eq!(loaded.metadata.preprocess.as_deref(), Some("torch"));
            assert_eq!(loaded.metadata.labels, metadata().labels);
            let got = loaded.net.forward(&x).unwrap();
            let rel = relative_diff(&expected, &got);
            println!("case {i} ({alpha}, {resolution}): relative difference {rel:e}");
            assert!(rel <= 1e-5, "case {i} ({cfg:?}): relative difference {rel}");
        }
    }
}

#[test]
fn export_without_metadata_names_the_model() {
    let cfg = config(0.25, 32, Activation::Relu6, PaddingMode::TfSame);
    let net = random_net(&cfg, 9);
    let bytes = export_onnx(&net, &ModelMetadata::default(), &Default::default()).unwrap();
    let loaded = load_onnx(&bytes).unwrap();
    assert_eq!(
        loaded.metadata.name.as_deref(),
        Some("mobilenet_v1_0.25_32")
    );
    assert_eq!(loaded.metadata.preprocess, None);
    assert_eq!(loaded.metadata.labels, None);
}

#[test]
fn exported_graph_has_the_documented_form() {
    let cfg = config(0.25, 64, Activation::Relu6, PaddingMode::TfSame);
    let net = random_net(&cfg, 3);
    let bytes = export_onnx(&net, &metadata(), &OnnxExportOptions::default()).unwrap();
    let model = ModelProto::decode(&bytes[..]).unwrap();
    assert_eq!(model.ir_version, Some(7));
    assert_eq!(model.opset_import[0].version, Some(13));
    let graph = model.graph.unwrap();
    let ops: Vec<&str> = graph
        .node
        .iter()
        .map(|n| n.op_type.as_deref().unwrap())
        .collect();
    assert_eq!(ops.iter().filter(|&&o| o == "Conv").count(), 27);
    assert_eq!(ops.iter().filter(|&&o| o == "Clip").count(), 27);
    assert_eq!(
        ops[ops.len() - 4..],
        ["GlobalAveragePool", "Flatten", "Gemm", "Softmax"]
    );
    assert!(!ops.contains(&"BatchNormalization"));
    // The stem: stride 2 with TF 'SAME' padding: [top, left, bottom, right] = [0, 0, 1, 1].
    let attr = |node: &NodeProto, name: &str| -> Vec<i64> {
        let a = node
            .attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
            .unwrap();
        if a.ints.is_empty() {
            vec![a.i.unwrap()]
        } else {
            a.ints.clone()
        }
    };
    assert_eq!(attr(&graph.node[0], "pads"), [0, 0, 1, 1]);
    assert_eq!(attr(&graph.node[0], "strides"), [2, 2]);
    // conv_dw_1: depthwise, group = channels.
    let dw = graph
        .node
        .iter()
        .find(|n| n.name.as_deref() == Some("conv_dw_1"))
        .unwrap();
    assert_eq!(attr(dw, "group"), [8]);
    assert_eq!(attr(dw, "pads"), [1, 1, 1, 1]);
    let io = |v: &ValueInfoProto| {
        let Some(type_proto::Value::TensorType(t)) = &v.r#type.as_ref().unwrap().value else {
            panic!("not a tensor")
        };
        let dims: Vec<String> = t
            .shape
            .as_ref()
            .unwrap()
            .dim
            .iter()
            .map(|d| match d.value.as_ref().unwrap() {
                tensor_shape_proto::dimension::Value::DimValue(v) => v.to_string(),
                tensor_shape_proto::dimension::Value::DimParam(p) => p.clone(),
            })
            .collect();
        (v.name.clone().unwrap(), dims.join(","))
    };
    assert_eq!(
        io(&graph.input[0]),
        ("input".to_string(), "N,3,64,64".into())
    );
    assert_eq!(io(&graph.output[0]), ("probs".to_string(), "N,13".into()));
    let keys: Vec<&str> = model
        .metadata_props
        .iter()
        .map(|e| e.key.as_deref().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "mobilenet.config",
            "mobilenet.name",
            "mobilenet.preprocess",
            "mobilenet.labels"
        ]
    );
}

#[test]
fn conv_and_shallow_variants_round_trip() {
    for (i, variant) in [Variant::Conv, Variant::Shallow].into_iter().enumerate() {
        let cfg = MobileNetConfig {
            variant,
            ..config(0.25, 32, Activation::Relu, PaddingMode::Symmetric)
        };
        let net = random_net(&cfg, 20 + i as u64);
        let bytes = export_onnx(&net, &ModelMetadata::default(), &Default::default()).unwrap();
        let loaded = load_onnx(&bytes).unwrap();
        assert_eq!(loaded.net.config(), &cfg);
        let x = input(1, 32, 5);
        let rel = relative_diff(&net.forward(&x).unwrap(), &loaded.net.forward(&x).unwrap());
        assert!(rel <= 1e-5, "{variant}: relative difference {rel}");
        // Without our metadata the variant is inferred from the layer count.
        let mut model = ModelProto::decode(&bytes[..]).unwrap();
        model.metadata_props.clear();
        let inferred = load_onnx(&model.encode_to_vec()).unwrap();
        assert_eq!(inferred.net.config().variant, variant);
    }
}

#[test]
fn configuration_is_inferred_without_metadata() {
    for (i, padding) in [PaddingMode::TfSame, PaddingMode::Symmetric]
        .into_iter()
        .enumerate()
    {
        for alpha in [0.25, 0.5, 0.75] {
            let cfg = config(alpha, 64, Activation::Relu6, padding);
            let net = random_net(&cfg, i as u64);
            let bytes = export_onnx(&net, &metadata(), &Default::default()).unwrap();
            let mut model = ModelProto::decode(&bytes[..]).unwrap();
            model.metadata_props.clear();
            let loaded = load_onnx(&model.encode_to_vec()).unwrap();
            assert_eq!(loaded.net.config(), &cfg);
            assert_eq!(loaded.metadata.name, None);
            assert_eq!(loaded.metadata.labels, None);
        }
    }
}

// ---- Graphs in the style of other exporters, built with the prost structs.

fn ints_attr(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::INTS),
        ints: values.to_vec(),
        ..Default::default()
    }
}

fn int_attr(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::INT),
        i: Some(value),
        ..Default::default()
    }
}

fn float_attr(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::FLOAT),
        f: Some(value),
        ..Default::default()
    }
}

fn string_attr(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::STRING),
        s: Some(value.as_bytes().to_vec()),
        ..Default::default()
    }
}

/// A float tensor stored in `float_data` (our exporter uses `raw_data`).
fn float_tensor(name: &str, dims: &[usize], data: &[f32]) -> TensorProto {
    TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(1),
        name: Some(name.into()),
        float_data: data.to_vec(),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: Some(format!("{op}_{output}")),
        op_type: Some(op.into()),
        attribute,
        ..Default::default()
    }
}

fn float_value(name: &str, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(1),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| tensor_shape_proto::Dimension {
                            value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                            denotation: None,
                        })
                        .collect(),
                }),
            })),
            denotation: None,
        }),
        doc_string: None,
    }
}

/// The graph a PyTorch-style exporter would write for `net` at opset 11:
/// bias-free Conv + BatchNormalization + Clip (bounds from Constant nodes)
/// or Relu, `auto_pad SAME_UPPER` for TF padding when `auto_pad`,
/// initializers also listed as graph inputs (IR 3 style), Reshape, MatMul,
/// Add with the bias first, Softmax.
fn foreign_style(net: &MobileNet, auto_pad: bool) -> ModelProto {
    let cfg = net.config();
    let mut graph = GraphProto {
        name: Some("torch_jit".into()),
        ..Default::default()
    };
    let r = cfg.resolution as i64;
    graph.input.push(float_value("images", &[1, 3, r, r]));
    let mut x = "images".to_string();
    let conv_specs = net
        .architecture()
        .layers()
        .iter()
        .filter(|l| l.kind.has_batch_norm());
    for (i, (spec, conv)) in conv_specs.zip(net.convs()).enumerate() {
        let p = |s: &str| format!("{}.{s}", spec.name);
        graph.initializer.push(float_tensor(
            &p("w"),
            conv.weight.shape(),
            conv.weight.data(),
        ));
        let n = conv.bn.channels();
        for (part, values) in [
            ("gamma", &conv.bn.gamma),
            ("beta", &conv.bn.beta),
            ("mean", &conv.bn.mean),
            ("var", &conv.bn.var),
        ] {
            graph.initializer.push(float_tensor(&p(part), &[n], values));
        }
        let k = spec.kernel as i64;
        let s = spec.stride as i64;
        let pad = spec.padding;
        let mut attrs = vec![
            ints_attr("kernel_shape", &[k, k]),
            ints_attr("strides", &[s, s]),
            int_attr(
                "group",
                if spec.kind == mobilenet::model::LayerKind::Depthwise {
                    spec.input[2] as i64
                } else {
                    1
                },
            ),
        ];
        if auto_pad && cfg.padding == PaddingMode::TfSame {
            attrs.push(string_attr("auto_pad", "SAME_UPPER"));
        } else {
            attrs.push(ints_attr(
                "pads",
                &[pad.top, pad.left, pad.bottom, pad.right].map(|v| v as i64),
            ));
        }
        graph
            .node
            .push(node("Conv", &[&x, &p("w")], &p("conv"), attrs));
        graph.node.push(node(
            "BatchNormalization",
            &[&p("conv"), &p("gamma"), &p("beta"), &p("mean"), &p("var")],
            &p("bn"),
            vec![
                float_attr("epsilon", conv.bn.eps),
                float_attr("momentum", 0.9),
            ],
        ));
        match cfg.activation {
            Activation::Relu => graph
                .node
                .push(node("Relu", &[&p("bn")], &p("out"), vec![])),
            Activation::Relu6 => {
                // A Constant node for each bound, as torch.onnx writes them.
                let constant = |name: String, v: f32| NodeProto {
                    output: vec![name],
                    op_type: Some("Constant".into()),
                    attribute: vec![AttributeProto {
                        name: Some("value".into()),
                        r#type: Some(attribute_type::TENSOR),
                        t: Some(float_tensor("", &[], &[v])),
                        ..Default::default()
                    }],
                    ..Default::default()
                };
                graph.node.push(constant(format!("min{i}"), 0.0));
                graph.node.push(constant(format!("max{i}"), 6.0));
                graph.node.push(node(
                    "Clip",
                    &[&p("bn"), &format!("min{i}"), &format!("max{i}")],
                    &p("out"),
                    vec![],
                ));
            }
            Activation::Identity => {
                graph
                    .node
                    .push(node("Identity", &[&p("bn")], &p("out"), vec![]))
            }
        }
        x = p("out");
    }
    let fc = net.classifier();
    let [classes, c] = fc.weight.dims2("fc").unwrap();
    graph
        .node
        .push(node("GlobalAveragePool", &[&x], "pool", vec![]));
    graph.initializer.push(TensorProto {
        dims: vec![2],
        data_type: Some(7),
        name: Some("shape".into()),
        int64_data: vec![-1, c as i64],
        ..Default::default()
    });
    graph
        .node
        .push(node("Reshape", &["pool", "shape"], "flat", vec![]));
    // MatMul wants [C, classes].
    let w = fc.weight.data();
    let transposed: Vec<f32> = (0..c * classes)
        .map(|i| w[(i % classes) * c + i / classes])
        .collect();
    graph
        .initializer
        .push(float_tensor("fc_w", &[c, classes], &transposed));
    graph
        .initializer
        .push(float_tensor("fc_b", &[classes], fc.bias.data()));
    graph
        .node
        .push(node("MatMul", &["flat", "fc_w"], "mm", vec![]));
    graph
        .node
        .push(node("Add", &["fc_b", "mm"], "logits", vec![]));
    graph.node.push(node(
        "Softmax",
        &["logits"],
        "probs",
        vec![int_attr("axis", 1)],
    ));
    graph
        .output
        .push(float_value("probs", &[1, classes as i64]));
    // IR 3 style: every initializer is also a graph input.
    let inits: Vec<ValueInfoProto> = graph
        .initializer
        .iter()
        .map(|t| float_value(t.name.as_deref().unwrap(), &t.dims))
        .collect();
    graph.input.extend(inits);
    ModelProto {
        ir_version: Some(6),
        opset_import: vec![OperatorSetIdProto {
            domain: None,
            version: Some(11),
        }],
        producer_name: Some("pytorch".into()),
        graph: Some(graph),
        ..Default::default()
    }
}

#[test]
fn foreign_style_graphs_load_with_batch_norm_kept() {
    let cases = [
        (0.25, 64, Activation::Relu6, PaddingMode::TfSame, true),
        (0.25, 48, Activation::Relu6, PaddingMode::TfSame, false),
        (0.5, 32, Activation::Relu, PaddingMode::Symmetric, false),
    ];
    for (i, &(alpha, resolution, activation, padding, auto_pad)) in cases.iter().enumerate() {
        let cfg = config(alpha, resolution, activation, padding);
        let net = random_net(&cfg, 40 + i as u64);
        let bytes = foreign_style(&net, auto_pad).encode_to_vec();
        let loaded = load_onnx(&bytes).unwrap_or_else(|e| panic!("case {i}: {e}"));
        assert_eq!(loaded.net.config(), &cfg, "case {i}");
        // Batch norm is kept as is, so the network is the same network.
        assert_eq!(&loaded.net, &net, "case {i}");
    }
}

#[test]
fn gemm_classifier_variants() {
    let cfg = config(0.25, 32, Activation::Relu, PaddingMode::Symmetric);
    let net = random_net(&cfg, 50);
    let x = input(1, 32, 1);
    let expected = net.forward(&x).unwrap();
    let bytes = export_onnx(&net, &ModelMetadata::default(), &Default::default()).unwrap();
    let model = ModelProto::decode(&bytes[..]).unwrap();
    // Gemm with transB = 0 (weight [C, classes]) and alpha 2 on half the weight.
    let mut m = model.clone();
    let graph = m.graph.as_mut().unwrap();
    let fc = net.classifier();
    let [classes, c] = fc.weight.dims2("fc").unwrap();
    let w = fc.weight.data();
    let half_t: Vec<f32> = (0..c * classes)
        .map(|i| w[(i % classes) * c + i / classes] / 2.0)
        .collect();
    let init = graph
        .initializer
        .iter_mut()
        .find(|t| t.name.as_deref() == Some("fc.weight"))
        .unwrap();
    *init = float_tensor("fc.weight", &[c, classes], &half_t);
    let gemm = graph
        .node
        .iter_mut()
        .find(|n| n.op_type.as_deref() == Some("Gemm"))
        .unwrap();
    gemm.attribute = vec![int_attr("transB", 0), float_attr("alpha", 2.0)];
    let loaded = load_onnx(&m.encode_to_vec()).unwrap();
    let rel = relative_diff(&expected, &loaded.net.forward(&x).unwrap());
    assert!(rel <= 1e-5, "relative difference {rel}");
}

// ---- Damaged and hostile files.

fn small_model() -> (MobileNet, Vec<u8>) {
    let cfg = MobileNetConfig {
        classes: 10,
        ..config(0.25, 32, Activation::Relu6, PaddingMode::TfSame)
    };
    let net = random_net(&cfg, 77);
    let bytes = export_onnx(&net, &metadata_for(10), &Default::default()).unwrap();
    (net, bytes)
}

fn metadata_for(classes: usize) -> ModelMetadata {
    ModelMetadata {
        labels: Some((0..classes).map(|i| i.to_string()).collect()),
        ..Default::default()
    }
}

#[test]
fn truncated_files_are_errors() {
    let (net, bytes) = small_model();
    let mut model = ModelProto::decode(&bytes[..]).unwrap();
    model.metadata_props.clear();
    // Cut anywhere before the metadata and the file is incomplete; within
    // the metadata entries a cut can fall between two whole entries.
    let essential = model.encode_to_vec().len();
    let mut lengths: Vec<usize> = (0..600.min(bytes.len())).collect();
    lengths.extend((600..bytes.len()).step_by(997));
    lengths.extend(bytes.len().saturating_sub(600)..bytes.len());
    for len in lengths {
        match load_onnx(&bytes[..len]) {
            Err(Error::Format(_)) => {}
            Err(e) => panic!("length {len}: not a format error: {e}"),
            Ok(loaded) => {
                assert!(len >= essential, "length {len} < {essential} loaded");
                assert_eq!(loaded.net, load_onnx(&bytes).unwrap().net);
            }
        }
    }
    let _ = net;
}

#[test]
fn random_bytes_and_bit_flips_never_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(123);
    for _ in 0..2000 {
        let len = rng.random_range(0..4096);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        assert!(load_onnx(&bytes).is_err());
    }
    // Mutations of a real file: any result but a panic is fine.
    let (_, bytes) = small_model();
    for _ in 0..300 {
        let mut damaged = bytes.clone();
        for _ in 0..rng.random_range(1..8) {
            let i = rng.random_range(0..damaged.len());
            damaged[i] = rng.random();
        }
        let _ = load_onnx(&damaged);
    }
    // Protobuf-shaped junk: a graph of many empty nodes (the decode budget).
    let mut bomb = vec![0x3a]; // ModelProto.graph, length-delimited
    let body: Vec<u8> = std::iter::repeat_n([0x0a, 0x00], 200_000)
        .flatten()
        .collect();
    let mut len = body.len();
    while len >= 0x80 {
        bomb.push((len as u8) | 0x80);
        len >>= 7;
    }
    bomb.push(len as u8);
    bomb.extend(body);
    let msg = assert_format_error(load_onnx(&bomb), "message bomb");
    assert!(msg.contains("messages"), "{msg}");
}

/// Decodes the small model, lets `damage` edit it, and expects an error
/// whose message contains `expected`.
fn damaged(what: &str, expected: &str, damage: impl FnOnce(&mut ModelProto)) {
    let (_, bytes) = small_model();
    let mut model = ModelProto::decode(&bytes[..]).unwrap();
    damage(&mut model);
    let msg = assert_format_error(load_onnx(&model.encode_to_vec()), what);
    assert!(
        msg.contains(expected),
        "{what}: message '{msg}' lacks '{expected}'"
    );
}

fn graph(m: &mut ModelProto) -> &mut GraphProto {
    m.graph.as_mut().unwrap()
}

fn initializer<'a>(m: &'a mut ModelProto, name: &str) -> &'a mut TensorProto {
    graph(m)
        .initializer
        .iter_mut()
        .find(|t| t.name.as_deref() == Some(name))
        .unwrap()
}

fn node_named<'a>(m: &'a mut ModelProto, name: &str) -> &'a mut NodeProto {
    graph(m)
        .node
        .iter_mut()
        .find(|n| n.name.as_deref() == Some(name))
        .unwrap()
}

#[test]
fn damaged_graphs_are_format_errors() {
    damaged("unknown op", "unexpected operator Elu", |m| {
        node_named(m, "conv_pw_3.act").op_type = Some("Elu".into());
    });
    damaged("NaN weight", "is NaN", |m| {
        let t = initializer(m, "conv_dw_2.weight");
        t.raw_data.as_mut().unwrap()[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    damaged("infinite bias", "is inf", |m| {
        let t = initializer(m, "fc.bias");
        t.raw_data.as_mut().unwrap()[0..4].copy_from_slice(&f32::INFINITY.to_le_bytes());
    });
    damaged("wrong-shaped weight", "input channels", |m| {
        // conv_pw_3 with one output channel fewer, consistently.
        let t = initializer(m, "conv_pw_3.weight");
        let per = (t.dims[1] * t.dims[2] * t.dims[3]) as usize;
        t.dims[0] -= 1;
        let raw = t.raw_data.as_mut().unwrap();
        raw.truncate(raw.len() - per * 4);
        let b = initializer(m, "conv_pw_3.bias");
        b.dims[0] -= 1;
        b.raw_data
            .as_mut()
            .unwrap()
            .truncate(b.dims[0] as usize * 4);
    });
    damaged("data shorter than shape", "needs", |m| {
        let t = initializer(m, "conv1.weight");
        t.raw_data.as_mut().unwrap().pop();
    });
    damaged("huge claimed shape", "needs", |m| {
        initializer(m, "conv1.weight").dims = vec![1 << 40, 1 << 20, 3, 3];
    });
    damaged("overflowing shape", "overflow", |m| {
        initializer(m, "conv1.weight").dims = vec![i64::MAX, i64::MAX, 3, 3];
    });
    damaged("negative dim", "negative", |m| {
        initializer(m, "conv1.weight").dims[0] = -8;
    });
    damaged("missing initializer", "not an initializer", |m| {
        graph(m)
            .initializer
            .retain(|t| t.name.as_deref() != Some("conv_dw_5.weight"));
    });
    damaged("external data", "external", |m| {
        initializer(m, "conv1.weight").data_location = Some(1);
    });
    damaged("float16 weights", "not float32", |m| {
        initializer(m, "conv1.weight").data_type = Some(10);
    });
    damaged("residual connection", "only a single chain", |m| {
        let node = node_named(m, "conv_dw_4");
        node.input[0] = "conv_pw_2".into();
    });
    damaged("extra output", "outputs", |m| {
        let out = graph(m).output[0].clone();
        graph(m).output.push(ValueInfoProto {
            name: Some("conv1".into()),
            ..out
        });
    });
    damaged("dilated conv", "dilated", |m| {
        let node = node_named(m, "conv_dw_3");
        for a in &mut node.attribute {
            if a.name.as_deref() == Some("dilations") {
                a.ints = vec![2, 2];
            }
        }
    });
    damaged("wrong stride", "stride", |m| {
        let node = node_named(m, "conv_dw_2");
        for a in &mut node.attribute {
            if a.name.as_deref() == Some("strides") {
                a.ints = vec![1, 1];
            }
            if a.name.as_deref() == Some("pads") {
                a.ints = vec![1, 1, 1, 1];
            }
        }
    });
    damaged("Clip(0, 5)", "Clip(0, 5)", |m| {
        let t = initializer(m, "relu6.max");
        t.raw_data = Some(5.0f32.to_le_bytes().to_vec());
    });
    damaged("foreign domain", "domain", |m| {
        node_named(m, "conv_pw_1").domain = Some("com.microsoft".into());
    });
    damaged("no opset", "opset", |m| m.opset_import.clear());
    damaged("future opset", "opset 99", |m| {
        m.opset_import[0].version = Some(99)
    });
    damaged("no graph", "no graph", |m| m.graph = None);
    damaged("a layer removed", "convolutions", |m| {
        // Drop conv_pw_13 and its Clip and read the pool from conv_dw_13.
        graph(m)
            .node
            .retain(|n| !n.name.as_deref().unwrap().starts_with("conv_pw_13"));
        node_named(m, "global_pool").input[0] = "conv_dw_13".into();
    });
    damaged("metadata disagrees", "classes", |m| {
        let entry = m
            .metadata_props
            .iter_mut()
            .find(|e| e.key.as_deref() == Some(KEY_CONFIG))
            .unwrap();
        let v = entry.value.as_mut().unwrap();
        *v = v.replace("\"classes\":10", "\"classes\":11");
    });
    damaged("metadata alpha wrong", "weight shape", |m| {
        let entry = m
            .metadata_props
            .iter_mut()
            .find(|e| e.key.as_deref() == Some(KEY_CONFIG))
            .unwrap();
        let v = entry.value.as_mut().unwrap();
        *v = v.replace("\"alpha\":0.25", "\"alpha\":0.5");
    });
    damaged("bad metadata JSON", KEY_CONFIG, |m| {
        m.metadata_props[0].value = Some("{not json".into());
    });
    damaged("labels count", "labels", |m| {
        let entry = m
            .metadata_props
            .iter_mut()
            .find(|e| e.key.as_deref() == Some("mobilenet.labels"))
            .unwrap();
        entry.value = Some("[\"one\"]".into());
    });
    damaged("symbolic resolution without metadata", "resolution", |m| {
        m.metadata_props.clear();
        let input = &mut graph(m).input[0];
        let Some(type_proto::Value::TensorType(t)) = &mut input.r#type.as_mut().unwrap().value
        else {
            unreachable!()
        };
        t.shape.as_mut().unwrap().dim[2].value =
            Some(tensor_shape_proto::dimension::Value::DimParam("H".into()));
    });
    damaged("training-mode batch norm", "training", |m| {
        // Unfold conv1 into Conv + BatchNormalization with extra outputs.
        let c = 8;
        let g = graph(m);
        for (name, v) in [("g", 1.0), ("b", 0.0), ("m", 0.0), ("v", 1.0)] {
            g.initializer.push(float_tensor(name, &[c], &vec![v; c]));
        }
        let conv = g
            .node
            .iter_mut()
            .find(|n| n.name.as_deref() == Some("conv1"))
            .unwrap();
        conv.output[0] = "conv1.raw".into();
        let mut bn = node(
            "BatchNormalization",
            &["conv1.raw", "g", "b", "m", "v"],
            "conv1.conv",
            vec![],
        );
        bn.output.push("running_mean".into());
        g.node.insert(1, bn);
    });
}

#[test]
fn export_rejects_bad_metadata_and_batch_norm() {
    let cfg = config(0.25, 32, Activation::Relu, PaddingMode::TfSame);
    let net = random_net(&cfg, 1);
    let bad_labels = ModelMetadata {
        labels: Some(vec!["a".into()]),
        ..Default::default()
    };
    assert!(matches!(
        export_onnx(&net, &bad_labels, &Default::default()),
        Err(Error::InvalidConfig(_))
    ));
    let mut convs = net.convs().to_vec();
    convs[3].bn.var[0] = -1.0;
    let broken =
        MobileNet::from_parts(net.architecture().clone(), convs, net.classifier().clone()).unwrap();
    assert!(matches!(
        export_onnx(&broken, &ModelMetadata::default(), &Default::default()),
        Err(Error::InvalidConfig(_))
    ));
    let mut convs = net.convs().to_vec();
    convs[2].bn.mean.pop();
    let broken =
        MobileNet::from_parts(net.architecture().clone(), convs, net.classifier().clone()).unwrap();
    assert!(matches!(
        export_onnx(&broken, &ModelMetadata::default(), &Default::default()),
        Err(Error::Shape(_))
    ));
}

// ---- ONNX Runtime cross-check.

fn write_f32(path: &Path, data: &[f32]) {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Exports networks at 224 (α 0.25 and 1.0), writes the model, an NHWC
/// input and our logits to a temporary folder, and runs
/// `scripts/check_onnx.py` on them with the Python named by
/// `MOBILENET_ONNX_PYTHON` (skipped when unset).
#[test]
fn onnx_runtime_agrees() {
    let Some(python) = std::env::var_os("MOBILENET_ONNX_PYTHON") else {
        eprintln!(
            "SKIPPED onnx_runtime_agrees: set MOBILENET_ONNX_PYTHON to a Python with \
             numpy and onnxruntime to run scripts/check_onnx.py"
        );
        return;
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/check_onnx.py");
    let dir = std::env::temp_dir().join(format!("mobilenet-onnx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (0.25, Activation::Relu6, PaddingMode::TfSame, false, 2),
        (0.25, Activation::Relu, PaddingMode::Symmetric, true, 1),
        (1.0, Activation::Relu6, PaddingMode::TfSame, false, 1),
    ];
    for (i, &(alpha, activation, padding, softmax, batch)) in cases.iter().enumerate() {
        let cfg = MobileNetConfig {
            classes: 1000,
            ..config(alpha, 224, activation, padding)
        };
        let net = random_net(&cfg, 100 + i as u64);
        let x = input(batch, 224, i as u32);
        let logits = net.forward(&x).unwrap();
        let options = OnnxExportOptions {
            softmax,
            dynamic_batch: true,
        };
        let model = dir.join(format!("case{i}.onnx"));
        std::fs::write(
            &model,
            export_onnx(&net, &ModelMetadata::default(), &options).unwrap(),
        )
        .unwrap();
        let (inp, out) = (
            dir.join(format!("case{i}.input.bin")),
            dir.join(format!("case{i}.logits.bin")),
        );
        write_f32(&inp, x.data());
        write_f32(&out, logits.data());
        let result = Command::new(&python)
            .arg(&script)
            .args([&model, &inp, &out])
            .arg("--layout")
            .arg("nhwc")
            .output()
            .expect("run MOBILENET_ONNX_PYTHON");
        let stdout = String::from_utf8_lossy(&result.stdout);
        println!("alpha {alpha} {activation:?} {padding:?} softmax {softmax}: {stdout}");
        assert!(
            result.status.success(),
            "check_onnx.py failed for case {i}:\n{stdout}\n{}",
            String::from_utf8_lossy(&result.stderr)
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
