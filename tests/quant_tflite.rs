//! Exact uint8 execution of the official quantized MobileNet v1 TFLite
//! files: every output byte and every layer's tensor must equal LiteRT's
//! reference kernels (`shared/refs/`), plus damaged files and a float oracle
//! for the integer convolution.

mod common;

use std::path::Path;
use std::time::Instant;

use common::fb::Fb;
use common::{json, read};
use mobilenet::Error;
use mobilenet::quant::conv::{Conv2d, ConvKind, ConvSpec};
use mobilenet::quant::fully_connected::{FullyConnected, FullyConnectedSpec};
use mobilenet::quant::geometry::Padding;
use mobilenet::quant::{Activation, QuantParams, QuantTensor, QuantizedPipeline, QuantizedTflite};
use proptest::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The photos with reference outputs.
const IMAGES: [&str; 3] = ["coral_cat_bmp", "mpl_grace_hopper", "skimage_chelsea"];

/// The photo with a per-layer trace.
const TRACED: &str = "skimage_chelsea";

const CORAL: &str = "models/coral_test_data_mobilenet_v1_quant";
const EXTRACTOR: &str = "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite";
const HEAD: &str = "mobilenet_quant_v1_224_head_layers.tflite";
const SMALL: &str = "mobilenet_v1_0.25_128_quant.tflite";

/// The uint8 models, as (id, resolution, files run one after the other).
const MODELS: [(&str, usize, &[&str]); 4] = [
    ("0.25_128", 128, &[SMALL]),
    ("0.5_160", 160, &["mobilenet_v1_0.5_160_quant.tflite"]),
    ("0.75_192", 192, &["mobilenet_v1_0.75_192_quant.tflite"]),
    ("1.0_224", 224, &[EXTRACTOR, HEAD]),
];

fn pipeline(shared: &Path, files: &[&str]) -> QuantizedPipeline {
    let stages = files
        .iter()
        .map(|f| QuantizedTflite::from_bytes(&read(&shared.join(CORAL).join(f))).unwrap())
        .collect();
    QuantizedPipeline::new(stages).unwrap()
}

fn input(shared: &Path, image: &str, size: usize) -> Vec<u8> {
    let bytes = read(&shared.join(format!("refs/inputs/{image}__{size}.u8.bin")));
    assert_eq!(bytes.len(), size * size * 3, "{image} at {size}");
    bytes
}

fn u8_list(v: &Value) -> Vec<u8> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|x| u8::try_from(x.as_u64().expect("an integer")).expect("a byte"))
        .collect()
}

/// `(scale, zero_point)` of a reference's `*_qparams`.
fn qparams(v: &Value) -> (f64, i64) {
    (
        v["scale"].as_f64().expect("scale"),
        v["zero_point"].as_i64().expect("zero_point"),
    )
}

fn assert_params(t: &QuantTensor, want: (f64, i64), what: &str) {
    let got = (
        f64::from(t.spec.params.scale),
        i64::from(t.spec.params.zero_point),
    );
    assert!(
        (got.0 - want.0).abs() <= 1e-9 * want.0 && got.1 == want.1,
        "{what}: quantization {got:?}, reference {want:?}"
    );
}

fn differing(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count() + a.len().abs_diff(b.len())
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn uint8_models_match_litert_outputs_exactly() {
    let Some(shared) = common::shared_dir("uint8_models_match_litert_outputs_exactly") else {
        return;
    };
    for (id, size, files) in MODELS {
        let model = pipeline(&shared, files);
        assert_eq!(model.input().shape, [1, size, size, 3], "{id}");
        assert_eq!(model.output().shape, [1, 1001], "{id}");
        for image in IMAGES {
            let reference = json(&shared.join(format!("refs/tflite_quant_v1_{id}__{image}.json")));
            let outputs = &reference["outputs"];
            let start = Instant::now();
            let trace = model.run_traced(&input(&shared, image, size)).unwrap();
            let elapsed = start.elapsed().as_secs_f64();
            // The last op is the softmax, the one before it the logits
            // (RESHAPE or SQUEEZE of the classifier convolution).
            let [.., logits, probs] = &trace[..] else {
                panic!("{id}: too few operators")
            };
            assert_params(probs, qparams(&outputs["probs_qparams"]), "probabilities");
            assert_params(logits, qparams(&outputs["logits_qparams"]), "logits");
            let want_logits = u8_list(&outputs["logits_u8"]);
            let want_probs = u8_list(&outputs["probs_u8"]);
            let bad_logits = differing(&logits.data, &want_logits);
            let bad_probs = differing(&probs.data, &want_probs);
            eprintln!(
                "tflite uint8 {id} {image}: {bad_logits} logits and {bad_probs} probabilities \
                 differ from LiteRT's reference kernels ({elapsed:.2} s)"
            );
            assert_eq!(bad_logits, 0, "{id} {image}: uint8 logits");
            assert_eq!(bad_probs, 0, "{id} {image}: uint8 probabilities");
            if image == TRACED {
                // The plain run gives the traced run's output.
                assert_eq!(model.run(&input(&shared, image, size)).unwrap(), *probs);
            }
        }
    }
}

#[test]
fn uint8_models_match_litert_layer_by_layer() {
    let Some(shared) = common::shared_dir("uint8_models_match_litert_layer_by_layer") else {
        return;
    };
    for (id, size, files) in MODELS {
        let model = pipeline(&shared, files);
        let reference =
            json(&shared.join(format!("refs/trace/tflite_quant_v1_{id}__{TRACED}.json")));
        let layers = reference["layers"].as_array().expect("layers");
        let ops: Vec<&str> = model
            .stages()
            .iter()
            .flat_map(|s| s.ops().map(|(kind, _)| kind))
            .collect();
        let trace = model.run_traced(&input(&shared, TRACED, size)).unwrap();
        assert_eq!(
            trace.len(),
            layers.len(),
            "{id}: one tensor per traced layer"
        );
        assert_eq!(ops.len(), trace.len());
        let mut matched = 0;
        for (k, ((ours, kind), layer)) in trace.iter().zip(&ops).zip(layers).enumerate() {
            let name = layer["tensor"].as_str().expect("tensor name");
            assert_eq!(*kind, layer["op"].as_str().unwrap(), "{id} layer {k}");
            assert_eq!(ours.spec.name, name, "{id} layer {k}");
            let shape: Vec<usize> = layer["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(ours.spec.shape, shape, "{id} layer {k} ({kind})");
            assert_params(
                ours,
                qparams(&layer["quantization"]),
                &format!("{id} layer {k}"),
            );
            let want = layer["sha256"].as_str().expect("sha256");
            assert_eq!(
                sha256_hex(&ours.data),
                want,
                "{id} layer {k} ({kind} '{name}'): bytes differ from LiteRT's; first values ours \
                 {:?}, reference {}",
                &ours.data[..8.min(ours.data.len())],
                layer["first8"]
            );
            matched += 1;
        }
        eprintln!(
            "tflite uint8 {id} trace on {TRACED}: {matched}/{} layers bit-identical",
            layers.len()
        );
    }
}

#[test]
fn pipeline_parts_must_fit() {
    let Some(shared) = common::shared_dir("pipeline_parts_must_fit") else {
        return;
    };
    let coral = shared.join(CORAL);
    let extractor = QuantizedTflite::read(coral.join(EXTRACTOR)).unwrap();
    let head = QuantizedTflite::read(coral.join(HEAD)).unwrap();
    assert_eq!(extractor.output().shape, [1, 1, 1, 1024]);
    assert_eq!(head.input(), extractor.output());
    assert_eq!(head.output().shape, [1, 1001]);
    match QuantizedPipeline::new(vec![head.clone(), extractor.clone()]) {
        Err(Error::Format(msg)) => assert!(msg.contains("model 1 of the pipeline"), "{msg}"),
        other => panic!("swapped parts: {other:?}"),
    }
    assert!(matches!(
        QuantizedPipeline::new(vec![]),
        Err(Error::Format(_))
    ));
    // Wrong input length.
    assert!(matches!(extractor.run(&[0; 10]), Err(Error::Shape(_))));
    match QuantizedTflite::read(coral.join("no such file.tflite")) {
        Err(Error::Io { .. }) => {}
        other => panic!("missing file: {other:?}"),
    }
}

/// Asserts a format error whose message contains `needle`.
fn assert_format_error(result: mobilenet::Result<QuantizedTflite>, needle: &str, case: &str) {
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

fn patched(bytes: &[u8], pos: usize, new: &[u8]) -> Vec<u8> {
    let mut copy = bytes.to_vec();
    copy[pos..pos + new.len()].copy_from_slice(new);
    copy
}

#[test]
fn damaged_and_unsupported_files_are_refused() {
    let Some(shared) = common::shared_dir("damaged_and_unsupported_files_are_refused") else {
        return;
    };
    let file = read(&shared.join(CORAL).join(SMALL));
    let fb = Fb(&file);
    QuantizedTflite::from_bytes(&file).unwrap();

    // Truncated anywhere in the FlatBuffer. (The metadata's label file is a
    // zip archive appended after it, which the interpreter does not need.)
    let end = file
        .windows(4)
        .position(|w| w == b"PK\x03\x04")
        .unwrap_or(file.len());
    let step = end / 61;
    for cut in (0..64).chain((64..end).step_by(step)).chain([end - 1]) {
        assert!(
            matches!(
                QuantizedTflite::from_bytes(&file[..cut]),
                Err(Error::Format(_))
            ),
            "truncated at {cut}"
        );
    }

    // Quantization parameters: a scale of 0 and NaN, zero points outside
    // [0, 255].
    let stem_filter = fb.op_input(0, 1);
    let stem_output = fb.op_output(0);
    let input = fb.model_input();
    assert_format_error(
        QuantizedTflite::from_bytes(&patched(&file, fb.scale(stem_filter), &0f32.to_le_bytes())),
        "quantization scale 0 is not finite and positive",
        "zero scale",
    );
    assert_format_error(
        QuantizedTflite::from_bytes(&patched(
            &file,
            fb.scale(stem_output),
            &f32::NAN.to_le_bytes(),
        )),
        "quantization scale NaN is not finite and positive",
        "NaN scale",
    );
    assert_format_error(
        QuantizedTflite::from_bytes(&patched(&file, fb.scale(input), &(-1f32).to_le_bytes())),
        "quantization scale -1",
        "negative scale",
    );
    assert_format_error(
        QuantizedTflite::from_bytes(&patched(&file, fb.zero_point(input), &300i64.to_le_bytes())),
        "zero point 300 is outside [0, 255]",
        "zero point 300",
    );
    assert_format_error(
        QuantizedTflite::from_bytes(&patched(
            &file,
            fb.zero_point(stem_filter),
            &(-1i64).to_le_bytes(),
        )),
        "zero point -1 is outside [0, 255]",
        "zero point -1",
    );

    // A weight tensor of the wrong type (INT8, FLOAT32), and an activation.
    assert_format_error(
        QuantizedTflite::from_bytes(&patched(&file, fb.tensor_type(stem_filter), &[9])),
        "is INT8, expected UINT8",
        "int8 weights",
    );
    assert_format_error(
        QuantizedTflite::from_bytes(&patched(&file, fb.tensor_type(stem_filter), &[0])),
        "is FLOAT32, expected UINT8",
        "float weights",
    );
    assert_format_error(
        QuantizedTflite::from_bytes(&patched(&file, fb.tensor_type(stem_output), &[9])),
        "is INT8, expected UINT8",
        "int8 activation",
    );
    // A bias that is not int32.
    let stem_bias = fb.op_input(0, 2);
    assert_format_error(
        QuantizedTflite::from_bytes(&patched(&file, fb.tensor_type(stem_bias), &[3])),
        "is UINT8, expected INT32",
        "uint8 bias",
    );
    // A bias scale far from input scale × filter scale (TFLite refuses it).
    assert_format_error(
        QuantizedTflite::from_bytes(&patched(&file, fb.scale(stem_bias), &1f32.to_le_bytes())),
        "differs from input scale × filter scale",
        "bias scale",
    );

    // An operator the interpreter does not run: the softmax becomes
    // LOGISTIC (14), in both opcode fields.
    let last = fb.u32(fb.vector(fb.subgraph(), 3)) - 1;
    let (deprecated, extended) = fb.opcode(fb.opcode_index(last));
    let mut logistic = file.clone();
    if let Some(p) = deprecated {
        logistic[p] = 14;
    }
    if let Some(p) = extended {
        logistic[p..p + 4].copy_from_slice(&14i32.to_le_bytes());
    }
    assert_format_error(
        QuantizedTflite::from_bytes(&logistic),
        &format!("operator {last} is LOGISTIC, which the uint8 interpreter does not run"),
        "unknown operator",
    );

    // A declared output shape that the convolution does not compute.
    let stem_shape = fb.vector(fb.tensor(stem_output), 0);
    assert_format_error(
        QuantizedTflite::from_bytes(&patched(&file, stem_shape + 8, &63i32.to_le_bytes())),
        "the operator computes [1, 64, 64, 8]",
        "output shape",
    );
    // Stride 0.
    let options = fb.deref(fb.field(fb.operator(0), 4).expect("options"));
    let stride_w = fb.field(options, 1).expect("stride_w");
    assert_format_error(
        QuantizedTflite::from_bytes(&patched(&file, stride_w, &0i32.to_le_bytes())),
        "stride_w 0 must be at least 1",
        "stride 0",
    );

    // A huge declared input is refused before anything is allocated.
    let input_shape = fb.vector(fb.tensor(input), 0);
    let huge = patched(&file, input_shape + 8, &0x7FFF_FFFFi32.to_le_bytes());
    match QuantizedTflite::from_bytes(&huge) {
        Err(Error::TooLarge(msg)) => eprintln!("huge input: {msg}"),
        other => panic!("huge input: {other:?}"),
    }

    // Float models are not uint8 models.
    let float = read(&shared.join(
        "models/mobilenet_v1_0.25_224_float_tflite/mobilenet_v1_0.25_224_1_default_1.tflite",
    ));
    assert_format_error(
        QuantizedTflite::from_bytes(&float),
        "is FLOAT32, expected UINT8",
        "float model",
    );
    assert_format_error(QuantizedTflite::from_bytes(&[]), "too short", "empty file");
    assert_format_error(
        QuantizedTflite::from_bytes(b"PK\x03\x04 not a model"),
        "identifier",
        "a zip file",
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

#[test]
fn random_damage_never_panics() {
    let Some(shared) = common::shared_dir("random_damage_never_panics") else {
        return;
    };
    let file = read(&shared.join(CORAL).join(SMALL));
    let weights = Fb(&file).buffer_ranges();
    let image = input(&shared, "coral_cat_bmp", 128);
    let mut rng = Rng(0x51_7CC1_B727_220A);
    let (mut refused, mut loaded, mut ran) = (0, 0, 0);
    for case in 0..200 {
        let mut damaged = file.clone();
        for _ in 0..1 + rng.below(4) {
            // Mostly outside the weights, where damage is just other numbers.
            let p = loop {
                let p = rng.below(file.len() - 4);
                let in_weights = weights.iter().any(|&(s, l)| l > 256 && p >= s && p < s + l);
                if !in_weights || rng.below(10) == 0 {
                    break p;
                }
            };
            match rng.below(3) {
                0 => damaged[p] ^= 1 << rng.below(8),
                1 => damaged[p] = rng.next() as u8,
                _ => {
                    let values = [0u32, 1, 0x7FFF_FFFF, 0xFFFF_FFFF, 0x8000_0000, 255, 256];
                    let v = values[rng.below(values.len())];
                    damaged[p..p + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
        if rng.below(8) == 0 {
            damaged.truncate(rng.below(damaged.len()));
        }
        let result = std::panic::catch_unwind(|| {
            let model = QuantizedTflite::from_bytes(&damaged)?;
            let input = if model.input().numel() == image.len() {
                image.clone()
            } else {
                vec![0; model.input().numel()]
            };
            model.run(&input).map(|_| ())
        });
        match result {
            Ok(Ok(())) => ran += 1,
            Ok(Err(Error::Format(_) | Error::TooLarge(_))) => refused += 1,
            Ok(Err(Error::Shape(_))) => loaded += 1,
            Ok(Err(e)) => panic!("case {case}: unexpected error {e:?}"),
            Err(_) => panic!("case {case}: panicked"),
        }
    }
    eprintln!("random damage: {refused} refused, {ran} loaded and ran, {loaded} failed to run");
}

/// A random small case for the float oracle.
#[derive(Debug, Clone)]
struct Case {
    spec: ConvSpec,
    weights: Vec<u8>,
    bias: Vec<i32>,
    input: Vec<u8>,
}

fn params() -> impl Strategy<Value = QuantParams> {
    (0.002f32..0.2, 0i32..=255).prop_map(|(s, z)| QuantParams::new(s, z).unwrap())
}

fn conv_case() -> impl Strategy<Value = Case> {
    (
        (any::<bool>(), 1usize..6, 1usize..6, 1usize..5, 1usize..5),
        (1usize..4, 1usize..3, 1usize..3, any::<bool>()),
        (params(), params(), params()),
        prop_oneof![
            Just(Activation::None),
            Just(Activation::Relu),
            Just(Activation::Relu6)
        ],
        any::<u64>(),
    )
        .prop_map(
            |((depthwise, h, w, cin, cout), (k, stride, dilation, same), (i, f, o), act, seed)| {
                let kind = if depthwise {
                    ConvKind::Depthwise { multiplier: cout }
                } else {
                    ConvKind::Full
                };
                let cout = if depthwise { cin * cout } else { cout };
                // An output step of about 1/100 of a typical accumulator
                // (products of offsets ~74 each, summed over the taps), so
                // most outputs land inside the code range.
                let taps = (k * k * if depthwise { 1 } else { cin }) as f64;
                let typical = f64::from(i.scale) * f64::from(f.scale) * 55.0 * taps.sqrt();
                let output =
                    QuantParams::new(typical as f32 * (0.5 + o.scale), o.zero_point).unwrap();
                let spec = ConvSpec {
                    kind,
                    batches: 1,
                    input_hw: [h, w],
                    in_channels: cin,
                    out_channels: cout,
                    kernel: [k, k],
                    stride: [stride, stride],
                    dilation: [dilation, dilation],
                    padding: if same { Padding::Same } else { Padding::Valid },
                    input: i,
                    filter: f,
                    output,
                    activation: act,
                };
                let mut rng = Rng(seed | 1);
                let n_weights = k * k * cout * if depthwise { 1 } else { cin };
                Case {
                    spec,
                    weights: (0..n_weights).map(|_| rng.next() as u8).collect(),
                    bias: (0..cout)
                        .map(|_| (rng.below(20001) as i32) - 10000)
                        .collect(),
                    input: (0..h * w * cin).map(|_| rng.next() as u8).collect(),
                }
            },
        )
}

/// Dequantize, convolve in f64, requantize: the float meaning of the op.
fn float_conv(case: &Case, out_shape: [usize; 4]) -> Vec<f64> {
    let s = &case.spec;
    let [_, oh, ow, cout] = out_shape;
    let [h, w] = s.input_hw;
    let cin = s.in_channels;
    let k = s.kernel[0];
    let pad = |in_size: usize, out: usize| -> i64 {
        let eff = (k - 1) * s.dilation[0] + 1;
        let total = ((out - 1) * s.stride[0] + eff) as i64 - in_size as i64;
        total.max(0) / 2
    };
    let (py, px) = (pad(h, oh), pad(w, ow));
    let x = |y: usize, xx: usize, c: usize| {
        f64::from(s.input.scale)
            * (f64::from(case.input[(y * w + xx) * cin + c]) - f64::from(s.input.zero_point))
    };
    let wt = |i: usize| {
        f64::from(s.filter.scale) * (f64::from(case.weights[i]) - f64::from(s.filter.zero_point))
    };
    let bias_scale = f64::from(s.input.scale) * f64::from(s.filter.scale);
    let (lo, hi) = s.activation.range(s.output).unwrap();
    let mut out = Vec::new();
    for oy in 0..oh {
        for ox in 0..ow {
            for oc in 0..cout {
                let mut acc = f64::from(case.bias[oc]) * bias_scale;
                for ky in 0..k {
                    for kx in 0..k {
                        let iy = (oy * s.stride[0] + ky * s.dilation[0]) as i64 - py;
                        let ix = (ox * s.stride[1] + kx * s.dilation[1]) as i64 - px;
                        if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                            continue;
                        }
                        let (iy, ix) = (iy as usize, ix as usize);
                        match s.kind {
                            ConvKind::Full => {
                                for c in 0..cin {
                                    acc += x(iy, ix, c) * wt(((oc * k + ky) * k + kx) * cin + c);
                                }
                            }
                            ConvKind::Depthwise { multiplier } => {
                                acc += x(iy, ix, oc / multiplier) * wt((ky * k + kx) * cout + oc);
                            }
                        }
                    }
                }
                let q = (acc / f64::from(s.output.scale)).round() + f64::from(s.output.zero_point);
                out.push(q.clamp(f64::from(lo), f64::from(hi)));
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The integer convolution is within one step of dequantize, compute in
    /// f64, requantize: the two roundings of the fixed-point multiply cost
    /// at most one code.
    #[test]
    fn integer_conv_is_within_one_step_of_float(case in conv_case()) {
        let conv = Conv2d::new(&case.spec, &case.weights, Some(&case.bias));
        // Some random geometries (VALID with a filter larger than the
        // input) have no output: those must be refused, not run.
        let Ok(conv) = conv else {
            prop_assert!(case.spec.padding == Padding::Valid);
            return Ok(());
        };
        let shape = conv.output_shape();
        let mut out = vec![0u8; shape.iter().product()];
        conv.run(&case.input, &mut out).unwrap();
        let want = float_conv(&case, shape);
        for (k, (&o, &f)) in out.iter().zip(&want).enumerate() {
            prop_assert!((f64::from(o) - f).abs() <= 1.0, "output {k}: {o} vs float {f}");
        }
    }

    /// The same for the fully connected layer.
    #[test]
    fn integer_fully_connected_is_within_one_step_of_float(
        (batches, depth, units) in (1usize..4, 1usize..40, 1usize..6),
        (i, f, o) in (params(), params(), params()),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng(seed | 1);
        let typical = f64::from(i.scale) * f64::from(f.scale) * 55.0 * (depth as f64).sqrt();
        let output = QuantParams::new(typical as f32 * (0.5 + o.scale), o.zero_point).unwrap();
        let spec = FullyConnectedSpec {
            batches, depth, units, input: i, filter: f, output, activation: Activation::None,
        };
        let weights: Vec<u8> = (0..units * depth).map(|_| rng.next() as u8).collect();
        let bias: Vec<i32> = (0..units).map(|_| (rng.below(2001) as i32) - 1000).collect();
        let x: Vec<u8> = (0..batches * depth).map(|_| rng.next() as u8).collect();
        let fc = FullyConnected::new(&spec, &weights, Some(&bias)).unwrap();
        let mut out = vec![0u8; batches * units];
        fc.run(&x, &mut out).unwrap();
        for b in 0..batches {
            for u in 0..units {
                let mut acc = f64::from(bias[u]) * f64::from(i.scale) * f64::from(f.scale);
                for d in 0..depth {
                    acc += f64::from(i.scale) * (f64::from(x[b * depth + d]) - f64::from(i.zero_point))
                        * f64::from(f.scale) * (f64::from(weights[u * depth + d]) - f64::from(f.zero_point));
                }
                let q = ((acc / f64::from(output.scale)).round() + f64::from(output.zero_point)).clamp(0.0, 255.0);
                let got = f64::from(out[b * units + u]);
                prop_assert!((got - q).abs() <= 1.0, "row {b} unit {u}: {got} vs float {q}");
            }
        }
    }
}
