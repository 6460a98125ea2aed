//! One training step against PyTorch: the fixture in
//! tests/fixtures/train_step/ (made by make_fixture.py beside it) holds a
//! tiny MobileNet's weights, a batch, and PyTorch's loss, gradients,
//! updated weights and running statistics after one SGD step. We must agree
//! on all of them within 1e-4, relative to each tensor's largest value.

use std::collections::HashMap;

use mobilenet::Tensor;
use mobilenet::layers::{Activation, BatchNorm, PaddingMode};
use mobilenet::model::network::{BN_EPSILON, Classifier, ConvBn};
use mobilenet::model::{Architecture, MobileNet, MobileNetConfig};
use mobilenet::train::network::{StepOptions, TrainNet};
use safetensors::SafeTensors;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/train_step/step.safetensors"
);

struct Fixture {
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    labels: Vec<usize>,
    meta: HashMap<String, String>,
}

impl Fixture {
    fn load() -> Fixture {
        let bytes = std::fs::read(FIXTURE).unwrap();
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = header.metadata().clone().unwrap_or_default();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut tensors = HashMap::new();
        let mut labels = Vec::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            if name == "labels" {
                labels = data
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize)
                    .collect();
                continue;
            }
            let values = data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            tensors.insert(name.to_string(), (view.shape().to_vec(), values));
        }
        Fixture {
            tensors,
            labels,
            meta,
        }
    }

    fn get(&self, name: &str) -> &[f32] {
        &self
            .tensors
            .get(name)
            .unwrap_or_else(|| panic!("fixture has no {name}"))
            .1
    }

    fn tensor(&self, name: &str) -> Tensor {
        let (shape, data) = &self.tensors[name];
        Tensor::new(shape.clone(), data.clone()).unwrap()
    }

    fn meta_f32(&self, key: &str) -> f32 {
        self.meta[key].parse().unwrap()
    }

    /// The network before the step, as PyTorch had it.
    fn model(&self) -> MobileNet {
        let config = MobileNetConfig {
            alpha: 0.25,
            resolution: 32,
            classes: 10,
            activation: Activation::Relu6,
            padding: PaddingMode::Symmetric,
            dropout: 0.0,
            strides: [1, 2, 2, 2, 2],
            ..Default::default()
        };
        let arch = Architecture::new(&config).unwrap();
        let convs = arch
            .layers()
            .iter()
            .filter(|l| l.kind.has_batch_norm())
            .map(|l| {
                let p = |s: &str| self.get(&format!("init/{}.{s}", l.name)).to_vec();
                ConvBn {
                    weight: self.tensor(&format!("init/{}.weight", l.name)),
                    bn: BatchNorm {
                        gamma: p("bn.gamma"),
                        beta: p("bn.beta"),
                        mean: p("bn.running_mean"),
                        var: p("bn.running_var"),
                        eps: BN_EPSILON,
                    },
                }
            })
            .collect();
        let classifier = Classifier {
            weight: self.tensor("init/fc.weight"),
            bias: self.tensor("init/fc.bias"),
        };
        MobileNet::from_parts(arch, convs, classifier).unwrap()
    }
}

/// max |a - b| / max |b|.
fn relative_error(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(f32::MIN_POSITIVE, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

fn step(fixture: &Fixture) -> (TrainNet, f32) {
    let mut net = TrainNet::new(&fixture.model()).unwrap();
    let options = StepOptions {
        label_smoothing: fixture.meta_f32("label_smoothing"),
        bn_momentum: 0.1,
        ..Default::default()
    };
    let stats = net
        .forward_backward(fixture.get("input"), &fixture.labels, &options)
        .unwrap();
    (net, stats.loss)
}

#[test]
fn loss_matches_pytorch() {
    let fixture = Fixture::load();
    let (_, loss) = step(&fixture);
    for key in ["loss", "loss64"] {
        let want = fixture.meta_f32(key);
        assert!(
            ((loss - want) / want).abs() < 1e-4,
            "loss {loss} vs PyTorch's {key} {want}"
        );
    }
}

/// Every gradient within 1e-4 of PyTorch's float64 step (the exact answer
/// up to f64 rounding), relative to the tensor's largest value — the bar
/// PyTorch's own float32 step meets too — and so within 2e-4 of PyTorch's
/// float32 gradients (two float32 computations, each 1e-4 from exact).
#[test]
fn every_gradient_matches_pytorch() {
    let fixture = Fixture::load();
    let (net, _) = step(&fixture);
    // [ours vs float64, PyTorch float32 vs float64, ours vs PyTorch float32]
    let mut worst = [0.0f32; 3];
    for (spec, grad) in net.param_specs().iter().zip(net.grads()) {
        let exact = fixture.get(&format!("grad64/{}", spec.name));
        let torch = fixture.get(&format!("grad/{}", spec.name));
        let errors = [
            relative_error(grad, exact),
            relative_error(torch, exact),
            relative_error(grad, torch),
        ];
        assert!(
            errors[0] < 1e-4 && errors[2] < 2e-4,
            "gradient of {}: {:.2e} from exact, {:.2e} from PyTorch float32",
            spec.name,
            errors[0],
            errors[2]
        );
        for (w, e) in worst.iter_mut().zip(errors) {
            *w = w.max(e);
        }
    }
    println!(
        "largest gradient error from PyTorch float64: ours {:.2e}, PyTorch float32 {:.2e}; \
         ours vs PyTorch float32 {:.2e}",
        worst[0], worst[1], worst[2]
    );
}

#[test]
fn running_statistics_match_pytorch() {
    let fixture = Fixture::load();
    let (net, _) = step(&fixture);
    for (name, mean, var) in net.running_stats() {
        let m = relative_error(
            mean,
            fixture.get(&format!("updated/{name}.bn.running_mean")),
        );
        let v = relative_error(var, fixture.get(&format!("updated/{name}.bn.running_var")));
        assert!(m < 1e-4 && v < 1e-4, "{name}: mean {m:.2e}, var {v:.2e}");
    }
}

/// The SGD update (momentum 0.9, weight decay on conv/FC weights only) gives
/// PyTorch's updated weights, and the parameter names and decay groups are
/// the ones the fixture script assigned.
#[test]
fn updated_weights_match_pytorch() {
    use mobilenet::train::optim::{Optimizer, OptimizerConfig, ParamGroup, SgdConfig, WeightDecay};
    let fixture = Fixture::load();
    let (mut net, _) = step(&fixture);
    let groups: Vec<(String, String)> = serde_json::from_str(&fixture.meta["params"]).unwrap();
    for (spec, (name, group)) in net.param_specs().iter().zip(&groups) {
        assert_eq!(&spec.name, name);
        let want = match group.as_str() {
            "w" => ParamGroup::Weights,
            "dw" => ParamGroup::DepthwiseWeights,
            "bn" => ParamGroup::BatchNorm,
            _ => ParamGroup::Bias,
        };
        assert_eq!(spec.group, want, "{name}");
    }
    let config = OptimizerConfig {
        weight_decay: WeightDecay::new(fixture.meta_f32("weight_decay")),
        ..OptimizerConfig::sgd(SgdConfig {
            momentum: fixture.meta_f32("momentum"),
            ..Default::default()
        })
    };
    let specs = net.param_specs().to_vec();
    let mut optimizer = Optimizer::new(config, &specs).unwrap();
    let lr = fixture.meta_f32("lr");
    for (i, (param, grad)) in net.params_and_grads().enumerate() {
        optimizer.step(i, param, grad, lr).unwrap();
    }
    for (spec, param) in specs.iter().zip(net.params()) {
        let want = fixture.get(&format!("updated/{}", spec.name));
        let err = relative_error(param, want);
        assert!(
            err < 1e-4,
            "{}: updated weights differ by {err:.2e}",
            spec.name
        );
    }
}
