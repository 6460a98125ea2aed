//! The MobileNet v1 network: its configuration (α, ρ, classes, ...), the
//! layer-by-layer architecture it implies (paper Table 1), and a network
//! with weights that runs forward on the reference layers.

pub mod architecture;
pub mod config;
pub mod network;

pub use architecture::{Architecture, LayerKind, LayerSpec};
pub use config::{MobileNetConfig, Variant};
pub use network::MobileNet;
