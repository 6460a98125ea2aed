//! tfjs (being written).
