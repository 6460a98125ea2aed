//! Caller-owned scratch memory for [`Plan::run`](crate::engine::Plan::run):
//! everything a run writes besides its output, sized once so that running
//! allocates nothing. Every buffer starts on a cache line (see
//! [`AlignedBuf`]).

use crate::engine::{Parallelism, Plan};
use crate::kernels::AlignedBuf;

/// The buffers of one thread running whole images: two activations used in
/// turn (each layer reads one and writes the other) and the pooled features.
#[derive(Debug)]
pub(crate) struct Lane {
    pub ping: AlignedBuf,
    pub pong: AlignedBuf,
    pub pooled: AlignedBuf,
}

/// Scratch memory for running a [`Plan`] with a given [`Parallelism`].
#[derive(Debug)]
pub struct Workspace {
    pub(crate) lanes: Vec<Lane>,
    /// One band of depthwise output per thread (fused separable blocks).
    pub(crate) bands: Vec<AlignedBuf>,
    /// The plan sizes this workspace was made for, to refuse another plan.
    pub(crate) sizes: [usize; 3],
}

impl Workspace {
    /// Buffers for `plan` with as many lanes as `par` has threads.
    pub fn new(plan: &Plan, par: &Parallelism) -> Workspace {
        let sizes = plan.scratch_sizes();
        let [activation, band, pooled] = sizes;
        let lanes = (0..par.threads())
            .map(|_| Lane {
                ping: AlignedBuf::zeros(activation),
                pong: AlignedBuf::zeros(activation),
                pooled: AlignedBuf::zeros(pooled),
            })
            .collect();
        let bands = (0..par.threads())
            .map(|_| AlignedBuf::zeros(band))
            .collect();
        Workspace {
            lanes,
            bands,
            sizes,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        let [activation, band, pooled] = self.sizes;
        self.lanes.len() * (2 * activation + band + pooled) * 4
    }
}
