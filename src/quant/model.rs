//! A uint8 TFLite graph as a list of prepared ops, run in file order, and a
//! pipeline of such graphs where each one's output feeds the next (the
//! official 1.0_224 MobileNet ships as an embedding extractor plus a head).

use std::path::Path;
use std::time::{Duration, Instant};

use super::conv::Conv2d;
use super::fully_connected::FullyConnected;
use super::pool::AveragePool;
use super::requantize::QuantParams;
use super::softmax::Softmax;
use crate::error::{Error, Result};

/// Name, shape and quantization of a uint8 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    /// The tensor's name in the file.
    pub name: String,
    /// Its shape (NHWC for images).
    pub shape: Vec<usize>,
    /// Its quantization.
    pub params: QuantParams,
}

impl TensorSpec {
    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A uint8 tensor with its spec.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantTensor {
    /// Name, shape, quantization.
    pub spec: TensorSpec,
    /// The codes, row-major.
    pub data: Vec<u8>,
}

impl QuantTensor {
    /// The real values `scale * (q - zero_point)`.
    ///
    /// ```
    /// use mobilenet::quant::{QuantParams, QuantTensor, TensorSpec};
    /// let t = QuantTensor {
    ///     spec: TensorSpec {
    ///         name: "probs".into(),
    ///         shape: vec![1, 2],
    ///         params: QuantParams::new(1.0 / 256.0, 0)?,
    ///     },
    ///     data: vec![64, 192],
    /// };
    /// assert_eq!(t.dequantize(), [0.25, 0.75]);
    /// # Ok::<(), mobilenet::Error>(())
    /// ```
    pub fn dequantize(&self) -> Vec<f32> {
        self.data
            .iter()
            .map(|&q| self.spec.params.dequantize(q))
            .collect()
    }
}

/// One prepared op.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Conv(Conv2d),
    FullyConnected(FullyConnected),
    AveragePool(AveragePool),
    Softmax(Softmax),
    /// `RESHAPE` / `SQUEEZE`: the same bytes under another shape.
    Reshape,
}

/// An op in the graph: what it reads (a value slot: 0 is the graph input,
/// `k + 1` the output of node `k`) and what it writes.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub op: Op,
    /// The TFLite operator name (`CONV_2D`, ...).
    pub kind: &'static str,
    pub input: usize,
    pub output: TensorSpec,
}

/// A uint8 TFLite model executed exactly as LiteRT's reference kernels:
/// every output byte, and every intermediate tensor, equals theirs (checked
/// on the official quantized MobileNet v1 files).
///
/// Built from a `.tflite` file with [`QuantizedTflite::from_bytes`]: the
/// operators of the (single) subgraph in file order, each reading the model
/// input or an earlier operator's output. Supported operators: `CONV_2D`,
/// `DEPTHWISE_CONV_2D`, `FULLY_CONNECTED`, `AVERAGE_POOL_2D`, `SOFTMAX`,
/// `RESHAPE`, `SQUEEZE`, all on uint8 tensors with per-tensor quantization
/// (what the official quantized MobileNet v1 files use).
///
/// ```no_run
/// use mobilenet::quant::QuantizedTflite;
/// let model = QuantizedTflite::read("mobilenet_v1_0.25_128_quant.tflite")?;
/// let input = vec![128u8; model.input().numel()]; // NHWC uint8
/// let probs = model.run(&input)?;
/// println!("{:?} {:?}", probs.spec.shape, &probs.data[..5]);
/// # Ok::<(), mobilenet::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct QuantizedTflite {
    pub(crate) input: TensorSpec,
    pub(crate) nodes: Vec<Node>,
    /// The value slot of the model output.
    pub(crate) output: usize,
}

impl QuantizedTflite {
    /// Parses and prepares a uint8 `.tflite` model.
    ///
    /// Fails with [`Error::Format`] for a damaged file or anything outside
    /// what is supported (naming the operator or tensor), and
    /// [`Error::TooLarge`] for tensors or work beyond sensible limits. Never
    /// panics, whatever the bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<QuantizedTflite> {
        super::load::load(bytes)
    }

    /// Reads and prepares a uint8 `.tflite` file ([`Error::Io`] if it
    /// cannot be read).
    pub fn read(path: impl AsRef<Path>) -> Result<QuantizedTflite> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        QuantizedTflite::from_bytes(&bytes)
    }

    /// The model input.
    pub fn input(&self) -> &TensorSpec {
        &self.input
    }

    /// The model output.
    pub fn output(&self) -> &TensorSpec {
        self.spec_of(self.output)
    }

    /// The operators in execution order: TFLite name and output tensor.
    pub fn ops(&self) -> impl Iterator<Item = (&'static str, &TensorSpec)> {
        self.nodes.iter().map(|n| (n.kind, &n.output))
    }

    /// The multiply-adds of each operator, in the order of
    /// [`QuantizedTflite::ops`]: convolutions and fully connected layers
    /// count one per weight use, the other operators none (as the paper
    /// counts).
    pub fn mult_adds(&self) -> impl Iterator<Item = u64> + '_ {
        self.nodes.iter().map(|n| match &n.op {
            Op::Conv(conv) => conv.mult_adds(),
            Op::FullyConnected(fc) => {
                let ((batches, depth), (_, units)) = (fc.input_dims(), fc.output_dims());
                (batches as u64) * (depth as u64) * (units as u64)
            }
            Op::AveragePool(_) | Op::Softmax(_) | Op::Reshape => 0,
        })
    }

    /// The value slot the final softmax reads, if the model ends in one.
    fn logits_slot(&self) -> Option<usize> {
        let node = self.output.checked_sub(1).and_then(|k| self.nodes.get(k))?;
        matches!(node.op, Op::Softmax(_)).then_some(node.input)
    }

    fn spec_of(&self, slot: usize) -> &TensorSpec {
        match slot.checked_sub(1).and_then(|k| self.nodes.get(k)) {
            Some(node) => &node.output,
            None => &self.input,
        }
    }

    /// Runs every op; returns the value of every slot.
    fn execute(&self, input: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.execute_timed(input, None)
    }

    /// [`QuantizedTflite::execute`], adding each op's time to `times[k]`
    /// when given (one entry per op).
    fn execute_timed(
        &self,
        input: &[u8],
        mut times: Option<&mut [Duration]>,
    ) -> Result<Vec<Vec<u8>>> {
        if input.len() != self.input.numel() {
            return Err(Error::Shape(format!(
                "the model input {:?} takes {} bytes, got {}",
                self.input.shape,
                self.input.numel(),
                input.len()
            )));
        }
        let mut values: Vec<Vec<u8>> = Vec::with_capacity(self.nodes.len() + 1);
        values.push(input.to_vec());
        for (k, node) in self.nodes.iter().enumerate() {
            let start = Instant::now();
            let src = values.get(node.input).ok_or_else(|| {
                Error::Shape(format!("{} reads a value not yet computed", node.kind))
            })?;
            let mut out = vec![0u8; node.output.numel()];
            match &node.op {
                Op::Conv(conv) => conv.run(src, &mut out)?,
                Op::FullyConnected(fc) => fc.run(src, &mut out)?,
                Op::AveragePool(pool) => pool.run(src, &mut out)?,
                Op::Softmax(softmax) => softmax.run(src, &mut out)?,
                Op::Reshape => {
                    if src.len() != out.len() {
                        return Err(Error::Shape(format!(
                            "{} of {} bytes to {:?}",
                            node.kind,
                            src.len(),
                            node.output.shape
                        )));
                    }
                    out.copy_from_slice(src);
                }
            }
            if let Some(t) = times.as_deref_mut().and_then(|t| t.get_mut(k)) {
                *t += start.elapsed();
            }
            values.push(out);
        }
        Ok(values)
    }

    /// Runs the model on one NHWC uint8 input of [`QuantizedTflite::input`]'s
    /// shape; returns the output tensor.
    ///
    /// Fails with [`Error::Shape`] if the input has the wrong length.
    pub fn run(&self, input: &[u8]) -> Result<QuantTensor> {
        let mut values = self.execute(input)?;
        let data = values.swap_remove(self.output.min(values.len() - 1));
        Ok(QuantTensor {
            spec: self.output().clone(),
            data,
        })
    }

    /// Like [`QuantizedTflite::run`], but returns every operator's output in
    /// execution order (the last one need not be the model output).
    pub fn run_traced(&self, input: &[u8]) -> Result<Vec<QuantTensor>> {
        let values = self.execute(input)?;
        Ok(self
            .nodes
            .iter()
            .zip(values.into_iter().skip(1))
            .map(|(node, data)| QuantTensor {
                spec: node.output.clone(),
                data,
            })
            .collect())
    }
}

/// Several uint8 graphs run one after the other, each one's output the
/// next one's input, e.g. Coral's 1.0_224 MobileNet embedding extractor and
/// its head.
///
/// ```no_run
/// use mobilenet::quant::{QuantizedPipeline, QuantizedTflite};
/// let pipeline = QuantizedPipeline::new(vec![
///     QuantizedTflite::read("mobilenet_v1_1.0_224_quant_embedding_extractor.tflite")?,
///     QuantizedTflite::read("mobilenet_quant_v1_224_head_layers.tflite")?,
/// ])?;
/// let probs = pipeline.run(&vec![128u8; pipeline.input().numel()])?;
/// assert_eq!(probs.spec.shape, [1, 1001]);
/// # Ok::<(), mobilenet::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct QuantizedPipeline {
    stages: Vec<QuantizedTflite>,
}

impl QuantizedPipeline {
    /// Chains `stages`. Each stage's input must have the previous stage's
    /// output shape and exactly its quantization, so that feeding the codes
    /// on is exact.
    ///
    /// Fails with [`Error::Format`] if they do not fit or there are none.
    pub fn new(stages: Vec<QuantizedTflite>) -> Result<QuantizedPipeline> {
        if stages.is_empty() {
            return Err(Error::Format("a pipeline needs at least one model".into()));
        }
        for (k, pair) in stages.windows(2).enumerate() {
            let (out, next) = (pair[0].output(), pair[1].input());
            if out.shape != next.shape || out.params != next.params {
                return Err(Error::Format(format!(
                    "model {} of the pipeline takes '{}' {:?} {:?}, but model {k} gives '{}' {:?} \
                     {:?}",
                    k + 1,
                    next.name,
                    next.shape,
                    next.params,
                    out.name,
                    out.shape,
                    out.params
                )));
            }
        }
        Ok(QuantizedPipeline { stages })
    }

    /// The models, in order.
    pub fn stages(&self) -> &[QuantizedTflite] {
        &self.stages
    }

    /// The first model's input.
    pub fn input(&self) -> &TensorSpec {
        self.stages[0].input()
    }

    /// The last model's output.
    pub fn output(&self) -> &TensorSpec {
        self.stages[self.stages.len() - 1].output()
    }

    /// Runs every model in turn on one input; returns the last output.
    pub fn run(&self, input: &[u8]) -> Result<QuantTensor> {
        let mut current = self.stages[0].run(input)?;
        for stage in &self.stages[1..] {
            current = stage.run(&current.data)?;
        }
        Ok(current)
    }

    /// The pre-softmax tensor: the input of the last model's final
    /// softmax, or `None` if it does not end in one.
    pub fn logits(&self) -> Option<&TensorSpec> {
        let last = &self.stages[self.stages.len() - 1];
        last.logits_slot().map(|slot| last.spec_of(slot))
    }

    /// Like [`QuantizedPipeline::run`], also returning the pre-softmax
    /// tensor (see [`QuantizedPipeline::logits`]), which classifiers
    /// report beside the probabilities.
    pub fn run_with_logits(&self, input: &[u8]) -> Result<(QuantTensor, Option<QuantTensor>)> {
        self.run_stages(input, None)
    }

    /// Like [`QuantizedPipeline::run`], adding each operator's time to
    /// `times` (one entry per operator of every model, in execution order;
    /// extra entries are left alone).
    pub fn run_profiled(&self, input: &[u8], times: &mut [Duration]) -> Result<QuantTensor> {
        Ok(self.run_stages(input, Some(times))?.0)
    }

    /// Runs every stage; returns the output and the last stage's logits.
    fn run_stages(
        &self,
        input: &[u8],
        mut times: Option<&mut [Duration]>,
    ) -> Result<(QuantTensor, Option<QuantTensor>)> {
        let mut current = input.to_vec();
        let mut first_op = 0;
        let mut logits = None;
        for (k, stage) in self.stages.iter().enumerate() {
            let stage_times = times
                .as_deref_mut()
                .map(|t| t.get_mut(first_op.min(t.len())..).unwrap_or_default());
            let mut values = stage.execute_timed(&current, stage_times)?;
            first_op += stage.nodes.len();
            if k + 1 == self.stages.len() {
                logits = stage.logits_slot().and_then(|slot| {
                    Some(QuantTensor {
                        spec: stage.spec_of(slot).clone(),
                        data: values.get(slot)?.clone(),
                    })
                });
            }
            if stage.output >= values.len() {
                return Err(Error::Shape("the model output was not computed".into()));
            }
            current = values.swap_remove(stage.output);
        }
        let output = QuantTensor {
            spec: self.output().clone(),
            data: current,
        };
        Ok((output, logits))
    }

    /// Every operator's output of every model, in execution order.
    pub fn run_traced(&self, input: &[u8]) -> Result<Vec<QuantTensor>> {
        let mut trace = Vec::new();
        let mut current = input.to_vec();
        for stage in &self.stages {
            let values = stage.execute(&current)?;
            current = values
                .get(stage.output)
                .cloned()
                .ok_or_else(|| Error::Shape("the model output was not computed".into()))?;
            trace.extend(
                stage
                    .nodes
                    .iter()
                    .zip(values.into_iter().skip(1))
                    .map(|(node, data)| QuantTensor {
                        spec: node.output.clone(),
                        data,
                    }),
            );
        }
        Ok(trace)
    }
}
