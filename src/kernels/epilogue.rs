//! The fused epilogue every float kernel applies to its accumulators:
//! `y = clamp(acc + bias[c], min, max)`.
//!
//! Described as data (not as a closure) so that each ISA implementation can
//! apply it in registers before the single store, as XNNPACK and tract do.
//! Batch norm is folded into the weights and bias beforehand, and ReLU /
//! ReLU6 / identity become the clamp bounds.

/// Clamp bounds applied after the bias add.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Epilogue {
    /// Lower bound (`0.0` for ReLU and ReLU6, `-inf` for none).
    pub min: f32,
    /// Upper bound (`6.0` for ReLU6, `+inf` for ReLU and none).
    pub max: f32,
}

impl Epilogue {
    /// No clamp: `y = acc + bias`.
    pub const IDENTITY: Epilogue = Epilogue {
        min: f32::NEG_INFINITY,
        max: f32::INFINITY,
    };
    /// `y = max(acc + bias, 0)`.
    pub const RELU: Epilogue = Epilogue {
        min: 0.0,
        max: f32::INFINITY,
    };
    /// `y = min(max(acc + bias, 0), 6)`.
    pub const RELU6: Epilogue = Epilogue { min: 0.0, max: 6.0 };

    /// Applies the clamp to one value (after the bias has been added).
    #[inline(always)]
    pub fn apply(&self, v: f32) -> f32 {
        v.max(self.min).min(self.max)
    }
}

impl Default for Epilogue {
    fn default() -> Self {
        Epilogue::IDENTITY
    }
}
