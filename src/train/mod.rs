//! Training: the network in training form (batch norm on batch statistics,
//! a backward pass), optimizers, learning-rate schedules, the metrics log,
//! crash-safe file writes and a plot of the training curves.

pub mod atomic;
pub mod evaluate;
pub mod metrics;
pub mod network;
pub mod optim;
pub mod plot;
pub mod schedule;
pub mod trainer;
