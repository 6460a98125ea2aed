//! Optimized compute kernels for inference and training.
//!
//! Kernels know slices, strides and packed panels, never models or layers:
//! nothing here imports from the graph code. Each kernel family has a plain
//! reference implementation and a per-ISA implementation chosen once at
//! plan time from [`Isa`].

pub mod aligned;
pub mod batch_norm;
pub mod columns;
pub mod conv_grad;
pub mod depthwise;
pub mod epilogue;
pub mod gemm;
pub mod int8;
pub mod isa;
pub mod pointwise;
pub mod stem;

pub use aligned::AlignedBuf;
pub use columns::ColumnsMut;
pub use epilogue::Epilogue;
pub use isa::Isa;
