//! Optimizers: SGD (PyTorch semantics) and RMSprop (TensorFlow semantics, the
//! paper's optimizer), with a per-group weight-decay policy.
//!
//! Parameters are addressed by index. The caller registers every trainable
//! tensor once as a [`ParamSpec`]; [`Optimizer::new`] allocates all state up
//! front so that [`Optimizer::step`] never allocates. The paper trains with
//! "RMSprop with asynchronous gradient descent similar to Inception V3" and
//! "very little or no weight decay (l2 regularization) on the depthwise
//! filters since there are so few parameters in them": [`WeightDecay`] decides
//! per [`ParamGroup`] and by default decays only full conv and FC weights.
//!
//! Weight decay is an L2 term added to the gradient, `g += wd·p`, before the
//! update: PyTorch's `weight_decay` argument, and the gradient of TF-slim's
//! `l2_regularizer(wd)` (`wd·Σp²/2`) added to the loss.
//!
//! SGD follows `torch.optim.SGD` operation for operation, including where
//! ATen rounds once (a fused multiply-add for `add(.., alpha=..)`), to be
//! reproducible against PyTorch on CPU; no PyTorch fixture checks that yet.
//! The RMSprop flavours follow their framework's order of operations but
//! may differ in the last bit where the framework's compiler fuses.
//!
//! ```
//! use mobilenet::train::optim::{Optimizer, OptimizerConfig, ParamGroup, ParamSpec};
//!
//! let specs = [
//!     ParamSpec::new("conv0.weight", 4, ParamGroup::Weights),
//!     ParamSpec::new("conv0.bn.gamma", 2, ParamGroup::BatchNorm),
//! ];
//! let mut opt = Optimizer::new(OptimizerConfig::rmsprop_tf(), &specs)?;
//! let mut weight = vec![0.5f32; 4];
//! opt.step(0, &mut weight, &[0.1; 4], 0.045)?;
//! assert!(weight[0] < 0.5);
//! assert!(opt.step(1, &mut weight, &[0.1; 4], 0.045).is_err()); // 4 values for a 2-value slot
//! # Ok::<(), mobilenet::Error>(())
//! ```

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};

/// What kind of tensor a parameter is, for the weight-decay policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamGroup {
    /// Full (stem and pointwise) convolution and fully connected weights.
    Weights,
    /// Depthwise convolution filters (few parameters; the paper decays them
    /// little or not at all).
    DepthwiseWeights,
    /// Batch-norm scale γ and shift β.
    BatchNorm,
    /// Biases (the classifier's).
    Bias,
}

/// One trainable tensor, registered once with [`Optimizer::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    /// A unique name; state slots are called `"{name}.{slot}"`.
    pub name: String,
    /// The number of values in the tensor.
    pub len: usize,
    /// Its kind, for the weight-decay policy.
    pub group: ParamGroup,
}

impl ParamSpec {
    /// Shorthand for the struct literal.
    pub fn new(name: impl Into<String>, len: usize, group: ParamGroup) -> ParamSpec {
        ParamSpec {
            name: name.into(),
            len,
            group,
        }
    }
}

/// Which groups get L2 weight decay, and how much.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WeightDecay {
    /// The L2 coefficient `wd` in `g += wd·p`. 0 disables decay.
    pub rate: f32,
    /// Also decay depthwise filters (off by default, as in the paper).
    pub depthwise: bool,
}

impl WeightDecay {
    /// No weight decay on any group.
    pub const NONE: WeightDecay = WeightDecay {
        rate: 0.0,
        depthwise: false,
    };

    /// `rate` on conv/FC weights only.
    pub fn new(rate: f32) -> WeightDecay {
        WeightDecay {
            rate,
            depthwise: false,
        }
    }

    /// The coefficient applied to a parameter of `group`: `rate` for
    /// [`ParamGroup::Weights`] (and [`ParamGroup::DepthwiseWeights`] when
    /// `depthwise` is set), 0 for batch norm and biases.
    ///
    /// ```
    /// use mobilenet::train::optim::{ParamGroup, WeightDecay};
    /// let wd = WeightDecay::new(4e-5);
    /// assert_eq!(wd.rate_for(ParamGroup::Weights), 4e-5);
    /// assert_eq!(wd.rate_for(ParamGroup::DepthwiseWeights), 0.0);
    /// assert_eq!(wd.rate_for(ParamGroup::BatchNorm), 0.0);
    /// ```
    pub fn rate_for(&self, group: ParamGroup) -> f32 {
        match group {
            ParamGroup::Weights => self.rate,
            ParamGroup::DepthwiseWeights if self.depthwise => self.rate,
            _ => 0.0,
        }
    }
}

impl Default for WeightDecay {
    /// TF-slim's MobileNet v1 training default: 4e-5 on conv/FC weights,
    /// none on depthwise filters, batch norm or biases.
    fn default() -> WeightDecay {
        WeightDecay::new(4e-5)
    }
}

/// SGD with momentum, exactly `torch.optim.SGD`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Momentum `m`; 0 is plain SGD (no state kept).
    pub momentum: f32,
    /// Dampening `d`: the new gradient enters the buffer scaled by `1 - d`.
    pub dampening: f32,
    /// Nesterov momentum (needs `momentum > 0` and `dampening == 0`, as in
    /// PyTorch).
    pub nesterov: bool,
}

impl Default for SgdConfig {
    /// Momentum 0.9, no dampening, no Nesterov.
    fn default() -> SgdConfig {
        SgdConfig {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
        }
    }
}

/// Whose RMSprop update rule to follow. They differ enough that a model
/// trained with one does not reproduce with the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RmsPropFlavour {
    /// `tf.compat.v1.train.RMSPropOptimizer` (what the paper and TF-slim
    /// used): the mean square starts at 1, ε is inside the square root and
    /// the learning rate goes into the momentum buffer:
    /// `ms += (g² - ms)(1 - ρ); mom = μ·mom + lr·g/sqrt(ms + ε); p -= mom`.
    TensorFlow,
    /// `torch.optim.RMSprop` (not centered): the mean square starts at 0, ε
    /// is added after the square root and the learning rate multiplies the
    /// buffer: `ms = ρ·ms + (1 - ρ)g²; buf = μ·buf + g/(sqrt(ms) + ε);
    /// p -= lr·buf` (with `μ = 0`: `p -= lr·g/(sqrt(ms) + ε)`). PyTorch's
    /// defaults are ρ = 0.99, μ = 0, ε = 1e-8: set them explicitly.
    PyTorch,
}

/// RMSprop hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsPropConfig {
    /// Decay ρ of the mean square.
    pub decay: f32,
    /// Momentum μ.
    pub momentum: f32,
    /// ε (see [`RmsPropFlavour`] for where it is added).
    pub epsilon: f32,
    /// TensorFlow or PyTorch update rule.
    pub flavour: RmsPropFlavour,
}

impl Default for RmsPropConfig {
    /// TF-slim's `train_image_classifier.py` defaults: ρ = 0.9, μ = 0.9,
    /// ε = 1.0, TensorFlow flavour.
    fn default() -> RmsPropConfig {
        RmsPropConfig {
            decay: 0.9,
            momentum: 0.9,
            epsilon: 1.0,
            flavour: RmsPropFlavour::TensorFlow,
        }
    }
}

/// The update rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Algorithm {
    /// SGD with momentum.
    Sgd(SgdConfig),
    /// RMSprop.
    RmsProp(RmsPropConfig),
}

/// Everything [`Optimizer::new`] needs besides the parameter list.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimizerConfig {
    /// The update rule.
    pub algorithm: Algorithm,
    /// The weight-decay policy.
    pub weight_decay: WeightDecay,
}

impl OptimizerConfig {
    /// The paper's setup as in TF-slim: TensorFlow RMSprop with its
    /// defaults and the default [`WeightDecay`].
    pub fn rmsprop_tf() -> OptimizerConfig {
        OptimizerConfig {
            algorithm: Algorithm::RmsProp(RmsPropConfig::default()),
            weight_decay: WeightDecay::default(),
        }
    }

    /// SGD with the given settings and no weight decay.
    pub fn sgd(sgd: SgdConfig) -> OptimizerConfig {
        OptimizerConfig {
            algorithm: Algorithm::Sgd(sgd),
            weight_decay: WeightDecay::NONE,
        }
    }

    /// Rejects values outside the ranges the update rules are meant for.
    pub fn validate(&self) -> Result<()> {
        let wd = self.weight_decay.rate;
        if !(wd.is_finite() && wd >= 0.0) {
            return invalid(format!("weight decay must be finite and >= 0, got {wd}"));
        }
        match self.algorithm {
            Algorithm::Sgd(s) => {
                unit_interval("SGD momentum", s.momentum)?;
                if !(s.dampening.is_finite() && (0.0..=1.0).contains(&s.dampening)) {
                    return invalid(format!(
                        "SGD dampening must be in [0, 1], got {}",
                        s.dampening
                    ));
                }
                if s.nesterov && (s.momentum <= 0.0 || s.dampening != 0.0) {
                    return invalid("Nesterov momentum needs momentum > 0 and zero dampening");
                }
            }
            Algorithm::RmsProp(r) => {
                unit_interval("RMSprop decay", r.decay)?;
                unit_interval("RMSprop momentum", r.momentum)?;
                if !(r.epsilon.is_finite() && r.epsilon > 0.0) {
                    return invalid(format!(
                        "RMSprop epsilon must be finite and > 0, got {}",
                        r.epsilon
                    ));
                }
            }
        }
        Ok(())
    }
}

fn invalid<T>(message: impl Into<String>) -> Result<T> {
    Err(Error::InvalidConfig(message.into()))
}

fn unit_interval(what: &str, value: f32) -> Result<()> {
    if value.is_finite() && (0.0..1.0).contains(&value) {
        Ok(())
    } else {
        invalid(format!("{what} must be in [0, 1), got {value}"))
    }
}

/// Per-parameter state; which buffers are used depends on the algorithm.
#[derive(Clone, Debug)]
struct Slots {
    /// SGD momentum buffer / RMSprop momentum (empty for plain SGD).
    momentum: Vec<f32>,
    /// RMSprop mean square (empty for SGD).
    mean_square: Vec<f32>,
    /// Updates applied so far to this parameter.
    steps: u64,
}

/// An optimizer over a fixed list of parameters, with all state allocated.
#[derive(Clone, Debug)]
pub struct Optimizer {
    config: OptimizerConfig,
    specs: Vec<ParamSpec>,
    slots: Vec<Slots>,
}

impl Optimizer {
    /// Validates `config`, checks that names are unique and non-empty, and
    /// allocates every state buffer (TF RMSprop's mean square at 1.0, all
    /// others at 0).
    pub fn new(config: OptimizerConfig, specs: &[ParamSpec]) -> Result<Optimizer> {
        config.validate()?;
        let mut names = HashSet::new();
        for spec in specs {
            if spec.name.is_empty() {
                return invalid("optimizer parameter names must not be empty");
            }
            if !names.insert(spec.name.as_str()) {
                return invalid(format!(
                    "optimizer parameter {:?} registered twice",
                    spec.name
                ));
            }
        }
        let slots = specs
            .iter()
            .map(|spec| {
                let (momentum, mean_square) = match config.algorithm {
                    Algorithm::Sgd(s) if s.momentum == 0.0 => (Vec::new(), Vec::new()),
                    Algorithm::Sgd(_) => (vec![0.0; spec.len], Vec::new()),
                    Algorithm::RmsProp(r) => {
                        let init = match r.flavour {
                            RmsPropFlavour::TensorFlow => 1.0,
                            RmsPropFlavour::PyTorch => 0.0,
                        };
                        (vec![0.0; spec.len], vec![init; spec.len])
                    }
                };
                Slots {
                    momentum,
                    mean_square,
                    steps: 0,
                }
            })
            .collect();
        Ok(Optimizer {
            config,
            specs: specs.to_vec(),
            slots,
        })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// The registered parameters, in index order.
    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// The index of the parameter called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.specs.iter().position(|s| s.name == name)
    }

    /// The largest number of updates applied to any parameter: the number
    /// of training steps when every parameter is updated once per step.
    pub fn step_count(&self) -> u64 {
        self.slots.iter().map(|s| s.steps).max().unwrap_or(0)
    }

    /// Updates parameter `index` in place from its gradient with learning
    /// rate `lr`. Errors (and changes nothing) if the index is unknown, the
    /// lengths differ from the registered one, or `lr` is negative or not
    /// finite. A long parameter is updated in pieces on the rayon pool this
    /// runs in (call it inside [`crate::engine::Parallelism::install`]).
    pub fn step(&mut self, index: usize, param: &mut [f32], grad: &[f32], lr: f32) -> Result<()> {
        let Some(spec) = self.specs.get(index) else {
            return invalid(format!(
                "optimizer parameter index {index} out of range ({} registered)",
                self.specs.len()
            ));
        };
        if param.len() != spec.len || grad.len() != spec.len {
            return Err(Error::Shape(format!(
                "optimizer parameter {:?} has {} values, got a parameter of {} and a gradient of {}",
                spec.name,
                spec.len,
                param.len(),
                grad.len()
            )));
        }
        if !(lr.is_finite() && lr >= 0.0) {
            return invalid(format!("learning rate must be finite and >= 0, got {lr}"));
        }
        let wd = self.config.weight_decay.rate_for(spec.group);
        let slots = &mut self.slots[index];
        let first = slots.steps == 0;
        let algorithm = self.config.algorithm;
        let update = |p: &mut [f32], g: &[f32], momentum: &mut [f32], mean_square: &mut [f32]| {
            match algorithm {
                Algorithm::Sgd(s) => sgd_step(s, first, p, g, momentum, wd, lr),
                Algorithm::RmsProp(r) => match r.flavour {
                    RmsPropFlavour::TensorFlow => {
                        rmsprop_tf_step(r, p, g, momentum, mean_square, wd, lr)
                    }
                    RmsPropFlavour::PyTorch => {
                        rmsprop_torch_step(r, p, g, momentum, mean_square, wd, lr)
                    }
                },
            }
        };
        in_pieces(
            param,
            grad,
            &mut slots.momentum,
            &mut slots.mean_square,
            &update,
        );
        slots.steps += 1;
        Ok(())
    }

    /// Every state buffer as `("{param}.{slot}", values)`, in parameter
    /// order: `momentum` (SGD with momentum, RMSprop) and `mean_square`
    /// (RMSprop). Save it with [`Optimizer::step_count`] to resume exactly.
    pub fn state(&self) -> Vec<(String, Vec<f32>)> {
        let mut out = Vec::new();
        for (spec, slots) in self.specs.iter().zip(&self.slots) {
            for (slot, values) in slots.buffers() {
                out.push((format!("{}.{}", spec.name, slot.name()), values.clone()));
            }
        }
        out
    }

    /// Restores what [`Optimizer::state`] and [`Optimizer::step_count`]
    /// returned: the slot names must be exactly the expected ones (any
    /// order) with the registered lengths; on error nothing changes.
    ///
    /// Every parameter's update count is set to `step_count`. This matters
    /// only for SGD with dampening, whose first update of a parameter copies
    /// the gradient undamped: a parameter never updated before the save
    /// (frozen) is then treated as already started.
    ///
    /// ```
    /// use mobilenet::train::optim::{Optimizer, OptimizerConfig, ParamGroup, ParamSpec};
    ///
    /// let specs = [ParamSpec::new("fc.weight", 2, ParamGroup::Weights)];
    /// let mut opt = Optimizer::new(OptimizerConfig::rmsprop_tf(), &specs)?;
    /// opt.step(0, &mut [1.0, 2.0], &[0.5, -0.5], 0.01)?;
    /// let (saved, steps) = (opt.state(), opt.step_count());
    ///
    /// let mut resumed = Optimizer::new(OptimizerConfig::rmsprop_tf(), &specs)?;
    /// resumed.load_state(&saved, steps)?;
    /// assert_eq!(resumed.state(), saved);
    /// assert!(resumed.load_state(&saved[..1], steps).is_err()); // a slot is missing
    /// # Ok::<(), mobilenet::Error>(())
    /// ```
    pub fn load_state(&mut self, state: &[(String, Vec<f32>)], step_count: u64) -> Result<()> {
        // Slot name -> (parameter index, slot, length, seen).
        let mut expected: HashMap<String, (usize, Slot, usize, bool)> = HashMap::new();
        for (index, (spec, slots)) in self.specs.iter().zip(&self.slots).enumerate() {
            for (slot, values) in slots.buffers() {
                let name = format!("{}.{}", spec.name, slot.name());
                expected.insert(name, (index, slot, values.len(), false));
            }
        }
        for (name, values) in state {
            let Some((_, _, len, seen)) = expected.get_mut(name) else {
                return invalid(format!("optimizer state has an unknown slot {name:?}"));
            };
            if *seen {
                return invalid(format!("optimizer state has slot {name:?} twice"));
            }
            *seen = true;
            if values.len() != *len {
                return Err(Error::Shape(format!(
                    "optimizer state slot {name:?} has {} values, expected {len}",
                    values.len()
                )));
            }
        }
        if let Some(name) = expected.iter().find(|e| !e.1.3).map(|e| e.0) {
            return invalid(format!("optimizer state lacks slot {name:?}"));
        }
        for (name, values) in state {
            let (index, slot, _, _) = expected[name];
            let slots = &mut self.slots[index];
            let target = match slot {
                Slot::Momentum => &mut slots.momentum,
                Slot::MeanSquare => &mut slots.mean_square,
            };
            target.copy_from_slice(values);
        }
        for slots in &mut self.slots {
            slots.steps = step_count;
        }
        Ok(())
    }
}

/// The state buffers a parameter can have.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Momentum,
    MeanSquare,
}

impl Slot {
    fn name(self) -> &'static str {
        match self {
            Slot::Momentum => "momentum",
            Slot::MeanSquare => "mean_square",
        }
    }
}

impl Slots {
    /// The buffers in use (non-empty), in a fixed order.
    fn buffers(&self) -> impl Iterator<Item = (Slot, &Vec<f32>)> {
        [
            (Slot::Momentum, &self.momentum),
            (Slot::MeanSquare, &self.mean_square),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
    }
}

/// Elements per piece of a parameter updated as one rayon task.
const PIECE: usize = 16 * 1024;

/// Runs `update` on pieces of at most [`PIECE`] elements of a parameter,
/// its gradient and its state buffers (empty ones stay empty), in parallel
/// in the rayon pool this runs in. The updates are element-wise, so the
/// pieces give the same bits as one call.
fn in_pieces<F>(p: &mut [f32], g: &[f32], momentum: &mut [f32], mean_square: &mut [f32], update: &F)
where
    F: Fn(&mut [f32], &[f32], &mut [f32], &mut [f32]) + Sync,
{
    if p.len() <= PIECE {
        return update(p, g, momentum, mean_square);
    }
    let mid = (p.len() / 2).next_multiple_of(64);
    let (p0, p1) = p.split_at_mut(mid);
    let (g0, g1) = g.split_at(mid.min(g.len()));
    let (m0, m1) = momentum.split_at_mut(mid.min(momentum.len()));
    let (s0, s1) = mean_square.split_at_mut(mid.min(mean_square.len()));
    rayon::join(
        || in_pieces(p0, g0, m0, s0, update),
        || in_pieces(p1, g1, m1, s1, update),
    );
}

/// `torch.optim.SGD`, single-tensor path, operation for operation.
///
/// Every PyTorch `x.add(y, alpha=a)` is one fused multiply-add here, as in
/// ATen's CPU kernel (`vec::fmadd(y, a, x)`, a true FMA on AVX2 and NEON):
/// `f32::mul_add` rounds once on every platform, so the result does not
/// depend on the CPU.
fn sgd_step(
    s: SgdConfig,
    first: bool,
    param: &mut [f32],
    grad: &[f32],
    momentum: &mut [f32],
    wd: f32,
    lr: f32,
) {
    let neg_lr = -lr;
    if s.momentum == 0.0 {
        for (p, &g) in param.iter_mut().zip(grad) {
            let d = if wd != 0.0 { p.mul_add(wd, g) } else { g };
            *p = d.mul_add(neg_lr, *p);
        }
        return;
    }
    // PyTorch computes `1 - dampening` in double and rounds it once.
    let keep = (1.0 - f64::from(s.dampening)) as f32;
    for ((p, &g), buf) in param.iter_mut().zip(grad).zip(momentum) {
        let d = if wd != 0.0 { p.mul_add(wd, g) } else { g };
        *buf = if first {
            d
        } else {
            d.mul_add(keep, *buf * s.momentum)
        };
        let update = if s.nesterov {
            buf.mul_add(s.momentum, d)
        } else {
            *buf
        };
        *p = update.mul_add(neg_lr, *p);
    }
}

/// TensorFlow's `ApplyRMSProp` CPU kernel, in its order of operations.
fn rmsprop_tf_step(
    r: RmsPropConfig,
    param: &mut [f32],
    grad: &[f32],
    momentum: &mut [f32],
    mean_square: &mut [f32],
    wd: f32,
    lr: f32,
) {
    let one_minus_rho = 1.0 - r.decay;
    let iter = param
        .iter_mut()
        .zip(grad)
        .zip(mean_square.iter_mut().zip(momentum));
    for ((p, &g), (ms, mom)) in iter {
        let g = if wd != 0.0 { g + wd * *p } else { g };
        *ms += (g * g - *ms) * one_minus_rho;
        *mom = *mom * r.momentum + (1.0 / (*ms + r.epsilon).sqrt()) * lr * g;
        *p -= *mom;
    }
}

/// `torch.optim.RMSprop` (not centered), single-tensor path, in ATen's
/// order of operations: `addcmul`/`addcdiv` compute `x + (v·a)·b` and
/// `x + (v·a)/b`, `add(alpha)` is a fused multiply-add (see [`sgd_step`]).
fn rmsprop_torch_step(
    r: RmsPropConfig,
    param: &mut [f32],
    grad: &[f32],
    momentum: &mut [f32],
    mean_square: &mut [f32],
    wd: f32,
    lr: f32,
) {
    // PyTorch computes `1 - alpha` in double and rounds it once.
    let one_minus_rho = (1.0 - f64::from(r.decay)) as f32;
    let neg_lr = -lr;
    let iter = param
        .iter_mut()
        .zip(grad)
        .zip(mean_square.iter_mut().zip(momentum));
    for ((p, &g), (ms, buf)) in iter {
        let g = if wd != 0.0 { p.mul_add(wd, g) } else { g };
        *ms = *ms * r.decay + one_minus_rho * g * g;
        let avg = ms.sqrt() + r.epsilon;
        if r.momentum > 0.0 {
            *buf = *buf * r.momentum + g / avg;
            *p = buf.mul_add(neg_lr, *p);
        } else {
            *p += neg_lr * g / avg;
        }
    }
}
