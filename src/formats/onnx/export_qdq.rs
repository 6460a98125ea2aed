//! Writing an [`Int8MobileNet`] as a QDQ ONNX model: float operators
//! (`Conv`, `Clip`/`Relu`, `GlobalAveragePool`, `Gemm`) with every
//! activation passed through a `QuantizeLinear`/`DequantizeLinear` pair at
//! its int8 scale and zero point, and every weight and bias stored in
//! integers behind a per-axis `DequantizeLinear` (axis 0: one scale per
//! output channel). This is the form ONNX Runtime's quantization tool
//! writes, so runtimes can fuse the pairs into integer kernels
//! (`QLinearConv`) or run the graph as a float simulation.

use super::export::{dim, entry, int, ints, node, tensor, value_info};
use super::proto::{GraphProto, ModelProto, OperatorSetIdProto, TensorProto, tensor_shape_proto};
use super::{
    INPUT_NAME, IR_VERSION, KEY_CONFIG, KEY_LABELS, KEY_NAME, KEY_PREPROCESS, OPSET_VERSION,
};
use crate::error::Result;
use crate::layers::Activation;
use crate::model::LayerKind;
use crate::model::network::groups;
use crate::quant::ptq::{ActQuant, Int8MobileNet};

/// `TensorProto.DataType.INT8`.
const DATA_TYPE_INT8: i32 = 3;
/// `TensorProto.DataType.INT32`.
const DATA_TYPE_INT32: i32 = 6;

fn raw(name: &str, dims: &[usize], data_type: i32, raw_data: Vec<u8>) -> TensorProto {
    TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(data_type),
        name: Some(name.into()),
        raw_data: Some(raw_data),
        ..Default::default()
    }
}

fn int8s(name: &str, dims: &[usize], data: &[i8]) -> TensorProto {
    raw(
        name,
        dims,
        DATA_TYPE_INT8,
        data.iter().map(|&v| v as u8).collect(),
    )
}

fn int32s(name: &str, dims: &[usize], data: &[i32]) -> TensorProto {
    raw(
        name,
        dims,
        DATA_TYPE_INT32,
        data.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

/// Appends `Q` then `DQ` of `x` with `q`'s parameters (stored as scalars
/// named `<name>.scale` / `<name>.zero_point`); returns the DQ output.
fn qdq(graph: &mut GraphProto, x: &str, name: &str, q: ActQuant) -> String {
    let (scale, zp) = (format!("{name}.scale"), format!("{name}.zero_point"));
    graph.initializer.push(tensor(&scale, &[], &[q.scale]));
    graph
        .initializer
        .push(int8s(&zp, &[], &[q.zero_point as i8]));
    let (quantized, out) = (format!("{name}.q"), format!("{name}.dq"));
    graph.node.push(node(
        "QuantizeLinear",
        &quantized,
        &[x, &scale, &zp],
        &quantized,
        vec![],
    ));
    graph.node.push(node(
        "DequantizeLinear",
        &out,
        &[&quantized, &scale, &zp],
        &out,
        vec![],
    ));
    out
}

/// Per-output-channel int8 weight `[O, ...]` and int32 bias `[O]` behind
/// `DequantizeLinear` (axis 0); returns the float weight and bias names.
fn dequantized_params(
    graph: &mut GraphProto,
    name: &str,
    weight: (&[i8], &[usize]),
    weight_scale: &[f32],
    bias: &[i32],
    input_scale: f32,
) -> (String, String) {
    let c = weight_scale.len();
    let (wq, ws, wz, w) = (
        format!("{name}.weight_q"),
        format!("{name}.weight_scale"),
        format!("{name}.weight_zero_point"),
        format!("{name}.weight"),
    );
    graph.initializer.push(int8s(&wq, weight.1, weight.0));
    graph.initializer.push(tensor(&ws, &[c], weight_scale));
    graph.initializer.push(int8s(&wz, &[c], &vec![0; c]));
    graph.node.push(node(
        "DequantizeLinear",
        &w,
        &[&wq, &ws, &wz],
        &w,
        vec![int("axis", 0)],
    ));
    let (bq, bs, bz, b) = (
        format!("{name}.bias_q"),
        format!("{name}.bias_scale"),
        format!("{name}.bias_zero_point"),
        format!("{name}.bias"),
    );
    let bias_scale: Vec<f32> = weight_scale.iter().map(|&s| input_scale * s).collect();
    graph.initializer.push(int32s(&bq, &[c], bias));
    graph.initializer.push(tensor(&bs, &[c], &bias_scale));
    graph.initializer.push(int32s(&bz, &[c], &vec![0; c]));
    graph.node.push(node(
        "DequantizeLinear",
        &b,
        &[&bq, &bs, &bz],
        &b,
        vec![int("axis", 0)],
    ));
    (w, b)
}

/// The QDQ ONNX model (opset 13) of `model`: input `input`, float NCHW
/// `[N, 3, R, R]`; output `logits` `[N, classes]` (dequantized, no softmax).
pub(super) fn export_qdq(model: &Int8MobileNet) -> Result<Vec<u8>> {
    let config = model.architecture().config();
    let mut graph = GraphProto {
        name: Some(format!("{}_int8", config.name())),
        ..Default::default()
    };
    if config.activation == Activation::Relu6 {
        graph.initializer.push(tensor("relu6.min", &[], &[0.0]));
        graph.initializer.push(tensor("relu6.max", &[], &[6.0]));
    }
    let mut x = qdq(&mut graph, INPUT_NAME, "input", model.input);
    for conv in &model.convs {
        let spec = &conv.spec;
        let shape: Vec<usize> = {
            let per_group = spec.input[2] / groups(spec);
            vec![spec.output[2], per_group, spec.kernel, spec.kernel]
        };
        let (w, b) = dequantized_params(
            &mut graph,
            &spec.name,
            (conv.weight.as_slice(), shape.as_slice()),
            &conv.weight_scale,
            &conv.bias,
            conv.input.scale,
        );
        let conv_out = format!("{}.conv", spec.name);
        let (k, s, p) = (spec.kernel as i64, spec.stride as i64, spec.padding);
        graph.node.push(node(
            "Conv",
            &spec.name,
            &[&x, &w, &b],
            &conv_out,
            vec![
                ints("kernel_shape", &[k, k]),
                ints("strides", &[s, s]),
                ints(
                    "pads",
                    &[p.top, p.left, p.bottom, p.right].map(|v| v as i64),
                ),
                ints("dilations", &[1, 1]),
                int("group", groups(spec) as i64),
            ],
        ));
        let act = format!("{}.act", spec.name);
        let activated = match config.activation {
            Activation::Identity => conv_out,
            Activation::Relu => {
                graph
                    .node
                    .push(node("Relu", &act, &[&conv_out], &act, vec![]));
                act
            }
            Activation::Relu6 => {
                graph.node.push(node(
                    "Clip",
                    &act,
                    &[&conv_out, "relu6.min", "relu6.max"],
                    &act,
                    vec![],
                ));
                act
            }
        };
        x = qdq(&mut graph, &activated, &spec.name, conv.output);
    }
    let pool = model
        .architecture()
        .layers()
        .iter()
        .find(|l| l.kind == LayerKind::GlobalAvgPool)
        .map_or_else(|| "avg_pool".to_string(), |l| l.name.clone());
    graph
        .node
        .push(node("GlobalAveragePool", &pool, &[&x], &pool, vec![]));
    let pooled = qdq(
        &mut graph,
        &pool,
        &format!("{pool}.out"),
        model.classifier.input,
    );
    graph.node.push(node(
        "Flatten",
        "flatten",
        &[&pooled],
        "flatten",
        vec![int("axis", 1)],
    ));
    let fc = &model.classifier;
    let classes = model.classes();
    let channels = fc.weight.len() / classes.max(1);
    let (w, b) = dequantized_params(
        &mut graph,
        "fc",
        (fc.weight.as_slice(), &[classes, channels][..]),
        &fc.weight_scale,
        &fc.bias,
        fc.input.scale,
    );
    graph.node.push(node(
        "Gemm",
        "fc",
        &["flatten", &w, &b],
        "logits",
        vec![int("transB", 1)],
    ));
    let r = config.resolution as i64;
    let batch = tensor_shape_proto::dimension::Value::DimParam("N".into());
    graph.input.push(value_info(
        INPUT_NAME,
        vec![batch.clone(), dim(3), dim(r), dim(r)],
    ));
    graph
        .output
        .push(value_info("logits", vec![batch, dim(classes as i64)]));
    graph.doc_string = Some(format!(
        "{}, int8 (QDQ): input '{INPUT_NAME}' is a float NCHW batch [N, 3, {r}, {r}] of \
         preprocessed RGB images; output 'logits' is [N, {classes}].",
        config.name()
    ));
    let meta = &model.metadata;
    let mut props = vec![
        entry(KEY_CONFIG, super::config_to_json(config).to_string()),
        entry(KEY_NAME, meta.name.clone().unwrap_or_else(|| config.name())),
        entry("mobilenet.quantization", "int8".into()),
    ];
    if let Some(p) = &meta.preprocess {
        props.push(entry(KEY_PREPROCESS, p.clone()));
    }
    if let Some(labels) = &meta.labels {
        props.push(entry(
            KEY_LABELS,
            serde_json::Value::from(labels.clone()).to_string(),
        ));
    }
    let proto = ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET_VERSION),
        }],
        producer_name: Some("mobilenet".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        doc_string: Some(
            "MobileNet v1 quantized to int8 after training by the mobilenet crate \
             (per-channel weights, per-tensor activations), as QDQ."
                .into(),
        ),
        graph: Some(graph),
        metadata_props: props,
        ..Default::default()
    };
    use prost::Message;
    Ok(proto.encode_to_vec())
}
