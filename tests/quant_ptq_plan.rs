//! The fast int8 plan (`Int8Plan`, packed integer kernels) against the
//! exact executor (`Int8MobileNet::run_codes`): bit-equal logits for every
//! supported ISA, several widths, resolutions (tiny and odd ones), stride
//! patterns, paddings and variants, batches and thread counts; and clear
//! errors for bad input.

use mobilenet::engine::Parallelism;
use mobilenet::formats::ModelMetadata;
use mobilenet::kernels::int8::IntIsa;
use mobilenet::layers::{Activation, PaddingMode};
use mobilenet::model::{MobileNet, MobileNetConfig, Variant};
use mobilenet::quant::plan::QuantizedPlanOptions;
use mobilenet::quant::ptq::plan::Int8Plan;
use mobilenet::quant::ptq::{CalibrationMethod, Int8MobileNet, QuantizeOptions};
use mobilenet::{Error, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random_images(n: usize, r: usize, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Tensor::from_fn(vec![n, r, r, 3], |_| rng.random_range(-1.0f32..=1.0)).unwrap()
}

/// A random float network of `config`, quantized with a small calibration
/// batch.
fn quantized(config: &MobileNetConfig, seed: u64) -> Int8MobileNet {
    let net = MobileNet::random(config, seed).unwrap();
    let calibration = [random_images(3, config.resolution, seed + 1)];
    Int8MobileNet::quantize(
        &net,
        &ModelMetadata {
            source_format: "test".into(),
            ..Default::default()
        },
        &calibration,
        &QuantizeOptions {
            method: CalibrationMethod::MinMax,
        },
    )
    .unwrap()
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// The exact executor's logits, image by image.
fn reference(model: &Int8MobileNet, images: &[f32]) -> Vec<u32> {
    let classes = model.classes();
    let mut all = Vec::new();
    for image in images.chunks_exact(model.input_len()) {
        let mut logits = vec![0.0; classes];
        model
            .run_codes(&model.quantize_input(image), |_, _| {}, &mut logits)
            .unwrap();
        all.extend(bits(&logits));
    }
    all
}

/// The plan's logits of `images` in one run on `threads` threads.
fn planned(plan: &Int8Plan, images: &[f32], threads: usize) -> Vec<u32> {
    let par = Parallelism::new(threads).unwrap();
    let mut ws = plan.workspace(&par);
    let mut codes = vec![0u8; images.len()];
    plan.quantize_input(images, &mut codes).unwrap();
    let n = images.len() / plan.input_len();
    let mut logits = vec![0.0; n * plan.classes()];
    plan.run(&codes, n, &mut logits, &mut ws, &par).unwrap();
    // A second run on the same workspace gives the same.
    let first = bits(&logits);
    plan.run(&codes, n, &mut logits, &mut ws, &par).unwrap();
    assert_eq!(first, bits(&logits), "a rerun differs");
    first
}

/// Every supported ISA, one and two threads (each step split across them
/// for one image, images split for three), batches of 3 and of 1.
fn plan_matches_reference(config: MobileNetConfig, seed: u64) {
    let model = quantized(&config, seed);
    let images = random_images(3, config.resolution, seed + 7);
    let expected = reference(&model, images.data());
    let classes = model.classes();
    for isa in IntIsa::supported() {
        let options = QuantizedPlanOptions {
            isa: Some(isa),
            // Split even the smallest step across threads.
            min_parallel_mult_adds: 0,
        };
        let plan = Int8Plan::compile(&model, &options).unwrap();
        assert_eq!(plan.isa(), isa);
        assert_eq!(plan.steps().len(), model.convs.len() + 1);
        for threads in [1, 2] {
            let what = format!("{} {isa} threads {threads}", config.name());
            assert_eq!(
                planned(&plan, images.data(), threads),
                expected,
                "{what}: batch of 3"
            );
            for (i, image) in images.data().chunks_exact(plan.input_len()).enumerate() {
                assert_eq!(
                    planned(&plan, image, threads),
                    expected[i * classes..(i + 1) * classes],
                    "{what}: image {i} alone"
                );
            }
        }
    }
}

fn config(alpha: f64, resolution: usize) -> MobileNetConfig {
    MobileNetConfig {
        alpha,
        resolution,
        classes: 10,
        ..Default::default()
    }
}

#[test]
fn alpha_0_25_at_32_pixels() {
    plan_matches_reference(config(0.25, 32), 1);
}

#[test]
fn alpha_0_5_at_64_pixels() {
    plan_matches_reference(config(0.5, 64), 2);
}

#[test]
fn alpha_0_25_at_28_pixels_with_small_strides() {
    plan_matches_reference(
        MobileNetConfig {
            strides: [1, 2, 2, 2, 2],
            ..config(0.25, 28)
        },
        3,
    );
}

#[test]
fn alpha_0_25_at_97_pixels() {
    plan_matches_reference(config(0.25, 97), 4);
}

#[test]
fn symmetric_padding_relu_at_odd_size() {
    plan_matches_reference(
        MobileNetConfig {
            padding: PaddingMode::Symmetric,
            activation: Activation::Relu,
            ..config(0.5, 35)
        },
        5,
    );
}

#[test]
fn full_convolutions_of_the_conv_variant() {
    plan_matches_reference(
        MobileNetConfig {
            variant: Variant::Conv,
            ..config(0.25, 32)
        },
        6,
    );
}

#[test]
fn bad_input_gives_errors_not_panics() {
    let model = quantized(&config(0.25, 32), 9);
    let plan = Int8Plan::compile(&model, &QuantizedPlanOptions::default()).unwrap();
    let par = Parallelism::new(1).unwrap();
    let mut ws = plan.workspace(&par);
    let len = plan.input_len();
    let codes = vec![128u8; 2 * len];
    let mut logits = vec![0.0; 2 * plan.classes()];
    let shape = |r: mobilenet::Result<()>| matches!(r, Err(Error::Shape(_)));
    assert!(shape(plan.run(&codes, 0, &mut [], &mut ws, &par)));
    assert!(shape(plan.run(&codes[1..], 2, &mut logits, &mut ws, &par)));
    assert!(shape(plan.run(&codes, 2, &mut logits[1..], &mut ws, &par)));
    assert!(shape(plan.run(&codes, 3, &mut logits, &mut ws, &par)));
    let mut times = vec![std::time::Duration::ZERO; 2];
    assert!(shape(plan.run_profiled(
        &codes,
        2,
        &mut logits,
        &mut ws,
        &par,
        &mut times
    )));
    let mut times = vec![std::time::Duration::ZERO; plan.steps().len()];
    plan.run_profiled(&codes, 2, &mut logits, &mut ws, &par, &mut times)
        .unwrap();
    assert!(shape(plan.quantize_input(&[0.0; 5], &mut [0; 4])));

    // A workspace of another plan.
    let other = Int8Plan::compile(
        &quantized(&config(0.5, 32), 10),
        &QuantizedPlanOptions::default(),
    )
    .unwrap();
    let mut other_ws = other.workspace(&par);
    assert!(shape(plan.run(&codes, 2, &mut logits, &mut other_ws, &par)));

    // An instruction set this CPU lacks.
    for isa in IntIsa::ALL.into_iter().filter(|i| !i.is_supported()) {
        let options = QuantizedPlanOptions {
            isa: Some(isa),
            ..Default::default()
        };
        assert!(matches!(
            Int8Plan::compile(&model, &options),
            Err(Error::InvalidConfig(_))
        ));
    }

    // Layers edited into inconsistency (the fields are public).
    let compile = |m: &Int8MobileNet| Int8Plan::compile(m, &QuantizedPlanOptions::default());
    let mut short = model.clone();
    short.convs[2].weight.pop();
    assert!(matches!(compile(&short), Err(Error::InvalidConfig(_))));
    let mut short = model.clone();
    short.convs[1].requant.pop();
    assert!(matches!(compile(&short), Err(Error::InvalidConfig(_))));
    let mut short = model.clone();
    short.classifier.bias.pop();
    assert!(compile(&short).is_err());
    let mut none = model.clone();
    none.convs.clear();
    assert!(compile(&none).is_err());
    let mut swapped = model.clone();
    swapped.convs.swap(1, 2);
    assert!(compile(&swapped).is_err());

    // A multiplier above 1 on a huge bias: the kernels would wrap where the
    // reference saturates, so the plan refuses the layer.
    let mut huge = model.clone();
    huge.convs[2].requant[0] = (i32::MAX, 4);
    huge.convs[2].bias[0] = 1 << 28;
    match compile(&huge) {
        Err(Error::Format(m)) => assert!(m.contains("conv_pw_1"), "{m}"),
        other => panic!("not refused: {:?}", other.map(|_| ())),
    }
}
