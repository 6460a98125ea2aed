//! Writing a [`MobileNet`] as an ONNX model.

use prost::Message;

use super::proto::{
    AttributeProto, DATA_TYPE_FLOAT, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
    attribute_type, tensor_shape_proto, type_proto,
};
use super::{
    INPUT_NAME, IR_VERSION, KEY_CONFIG, KEY_LABELS, KEY_NAME, KEY_PREPROCESS, OPSET_VERSION,
    OnnxExportOptions, config_to_json,
};
use crate::error::{Error, Result};
use crate::formats::ModelMetadata;
use crate::layers::Activation;
use crate::model::network::{ConvBn, groups};
use crate::model::{LayerKind, MobileNet};

/// Initializer names of the `Clip` bounds shared by every ReLU6.
const CLIP_MIN: &str = "relu6.min";
const CLIP_MAX: &str = "relu6.max";

pub(super) fn export(
    net: &MobileNet,
    metadata: &ModelMetadata,
    options: &OnnxExportOptions,
) -> Result<Vec<u8>> {
    let config = net.config();
    if let Some(labels) = &metadata.labels
        && labels.len() != config.classes
    {
        return Err(Error::InvalidConfig(format!(
            "{} labels for a model with {} classes",
            labels.len(),
            config.classes
        )));
    }
    let mut graph = GraphProto {
        name: Some(config.name()),
        ..Default::default()
    };
    if config.activation == Activation::Relu6 {
        graph.initializer.push(tensor(CLIP_MIN, &[], &[0.0]));
        graph.initializer.push(tensor(CLIP_MAX, &[], &[6.0]));
    }
    let mut x = INPUT_NAME.to_string();
    let mut convs = net.convs().iter();
    for spec in net.architecture().layers() {
        match spec.kind {
            LayerKind::Conv | LayerKind::Depthwise | LayerKind::Pointwise => {
                let conv = convs
                    .next()
                    .ok_or_else(|| Error::Shape(format!("{}: no weights", spec.name)))?;
                let (weight, bias) = fold(conv, &spec.name)?;
                let (w_name, b_name) = (
                    format!("{}.weight", spec.name),
                    format!("{}.bias", spec.name),
                );
                graph
                    .initializer
                    .push(tensor(&w_name, conv.weight.shape(), &weight));
                graph
                    .initializer
                    .push(tensor(&b_name, &[bias.len()], &bias));
                let conv_out = match config.activation {
                    Activation::Identity => spec.name.clone(),
                    _ => format!("{}.conv", spec.name),
                };
                let (k, s, p) = (spec.kernel as i64, spec.stride as i64, spec.padding);
                graph.node.push(node(
                    "Conv",
                    &spec.name,
                    &[&x, &w_name, &b_name],
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
                let act_name = format!("{}.act", spec.name);
                match config.activation {
                    Activation::Identity => {}
                    Activation::Relu => {
                        graph
                            .node
                            .push(node("Relu", &act_name, &[&conv_out], &spec.name, vec![]));
                    }
                    Activation::Relu6 => graph.node.push(node(
                        "Clip",
                        &act_name,
                        &[&conv_out, CLIP_MIN, CLIP_MAX],
                        &spec.name,
                        vec![],
                    )),
                }
                x = spec.name.clone();
            }
            LayerKind::GlobalAvgPool => {
                graph.node.push(node(
                    "GlobalAveragePool",
                    &spec.name,
                    &[&x],
                    &spec.name,
                    vec![],
                ));
                graph.node.push(node(
                    "Flatten",
                    "flatten",
                    &[&spec.name],
                    "flatten",
                    vec![int("axis", 1)],
                ));
                x = "flatten".into();
            }
            LayerKind::FullyConnected => {
                let fc = net.classifier();
                let (w_name, b_name) = (
                    format!("{}.weight", spec.name),
                    format!("{}.bias", spec.name),
                );
                graph
                    .initializer
                    .push(tensor(&w_name, fc.weight.shape(), fc.weight.data()));
                graph
                    .initializer
                    .push(tensor(&b_name, fc.bias.shape(), fc.bias.data()));
                graph.node.push(node(
                    "Gemm",
                    &spec.name,
                    &[&x, &w_name, &b_name],
                    "logits",
                    vec![int("transB", 1)],
                ));
                x = "logits".into();
            }
            LayerKind::Softmax => {
                if options.softmax {
                    graph.node.push(node(
                        "Softmax",
                        &spec.name,
                        &[&x],
                        "probs",
                        vec![int("axis", 1)],
                    ));
                    x = "probs".into();
                }
            }
        }
    }
    let r = config.resolution as i64;
    let batch = if options.dynamic_batch {
        tensor_shape_proto::dimension::Value::DimParam("N".into())
    } else {
        tensor_shape_proto::dimension::Value::DimValue(1)
    };
    graph.input.push(value_info(
        INPUT_NAME,
        vec![batch.clone(), dim(3), dim(r), dim(r)],
    ));
    graph
        .output
        .push(value_info(&x, vec![batch, dim(config.classes as i64)]));
    graph.doc_string = Some(format!(
        "{}: input '{INPUT_NAME}' is a float NCHW batch [N, 3, {r}, {r}] of preprocessed \
         RGB images; output '{x}' is [N, {}] {}.",
        config.name(),
        config.classes,
        if options.softmax {
            "class probabilities"
        } else {
            "logits"
        }
    ));

    let name = metadata.name.clone().unwrap_or_else(|| config.name());
    let mut props = vec![
        entry(KEY_CONFIG, config_to_json(config).to_string()),
        entry(KEY_NAME, name),
    ];
    if let Some(preprocess) = &metadata.preprocess {
        props.push(entry(KEY_PREPROCESS, preprocess.clone()));
    }
    if let Some(labels) = &metadata.labels {
        props.push(entry(
            KEY_LABELS,
            serde_json::Value::from(labels.clone()).to_string(),
        ));
    }
    let model = ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET_VERSION),
        }],
        producer_name: Some("mobilenet".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        domain: None,
        model_version: None,
        doc_string: Some(
            "MobileNet v1 (Howard et al. 2017), exported by the mobilenet crate. \
             Batch norm is folded into the convolutions."
                .into(),
        ),
        graph: Some(graph),
        metadata_props: props,
    };
    Ok(model.encode_to_vec())
}

/// The conv's weight and bias with its batch norm folded in, exactly as the
/// inference engine folds it (`crate::engine` computes the same per-channel
/// scale `γ / sqrt(σ² + ε)` in f64 and rounds each product once).
fn fold(conv: &ConvBn, layer: &str) -> Result<(Vec<f32>, Vec<f32>)> {
    let bn = &conv.bn;
    let c_out = bn.channels();
    if [bn.beta.len(), bn.mean.len(), bn.var.len()] != [c_out; 3] {
        return Err(Error::Shape(format!(
            "{layer}: batch norm vectors have lengths {}, {}, {}, {} (gamma, beta, mean, var)",
            c_out,
            bn.beta.len(),
            bn.mean.len(),
            bn.var.len()
        )));
    }
    if c_out == 0 || !conv.weight.len().is_multiple_of(c_out) {
        return Err(Error::Shape(format!(
            "{layer}: weight {:?} does not match a batch norm of {c_out} channels",
            conv.weight.shape()
        )));
    }
    let per_channel = conv.weight.len() / c_out;
    let mut weight = conv.weight.data().to_vec();
    let mut bias = vec![0.0f32; c_out];
    for c in 0..c_out {
        let denom = f64::from(bn.var[c]) + f64::from(bn.eps);
        if denom.is_nan() || denom <= 0.0 {
            return Err(Error::InvalidConfig(format!(
                "{layer}: batch norm channel {c}: var + eps = {} + {} is not positive",
                bn.var[c], bn.eps
            )));
        }
        let scale = f64::from(bn.gamma[c]) / denom.sqrt();
        for w in &mut weight[c * per_channel..(c + 1) * per_channel] {
            *w = (f64::from(*w) * scale) as f32;
        }
        bias[c] = (f64::from(bn.beta[c]) - f64::from(bn.mean[c]) * scale) as f32;
    }
    Ok((weight, bias))
}

/// A float initializer with little-endian `raw_data`.
pub(super) fn tensor(name: &str, dims: &[usize], data: &[f32]) -> TensorProto {
    TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(DATA_TYPE_FLOAT),
        name: Some(name.into()),
        raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

pub(super) fn node(
    op_type: &str,
    name: &str,
    inputs: &[&str],
    output: &str,
    attribute: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: Some(name.into()),
        op_type: Some(op_type.into()),
        attribute,
        ..Default::default()
    }
}

pub(super) fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::INT),
        i: Some(value),
        ..Default::default()
    }
}

pub(super) fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::INTS),
        ints: values.to_vec(),
        ..Default::default()
    }
}

pub(super) fn dim(size: i64) -> tensor_shape_proto::dimension::Value {
    tensor_shape_proto::dimension::Value::DimValue(size)
}

/// A float tensor value with the given dimensions.
pub(super) fn value_info(
    name: &str,
    dims: Vec<tensor_shape_proto::dimension::Value>,
) -> ValueInfoProto {
    let shape = TensorShapeProto {
        dim: dims
            .into_iter()
            .map(|value| tensor_shape_proto::Dimension {
                value: Some(value),
                denotation: None,
            })
            .collect(),
    };
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DATA_TYPE_FLOAT),
                shape: Some(shape),
            })),
            denotation: None,
        }),
        doc_string: None,
    }
}

pub(super) fn entry(key: &str, value: String) -> StringStringEntryProto {
    StringStringEntryProto {
        key: Some(key.into()),
        value: Some(value),
    }
}
