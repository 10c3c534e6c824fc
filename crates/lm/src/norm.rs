//! RMSNorm (Zhang & Sennrich 2019), as in Llama.

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};

use crate::init::Init;

/// `y = x / sqrt(mean(x²) + eps) · weight`, over the last dimension. No bias, no centring.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// Gain, `[d]`, initialised to ones (HF: `*.weight`).
    pub weight: Param<Tensor<B, 1>>,
    /// Added to the mean square before the square root.
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// A norm over `d` features.
    pub fn new(d: usize, eps: f64, init: &Init, device: &B::Device) -> Self {
        RmsNorm {
            weight: init.ones([d], device),
            eps,
        }
    }

    /// Normalise each row of `[N, d]` ([`crate::fused::rms_norm`]: one pass per row on flex
    /// inference, burn's ops elsewhere).
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        crate::fused::rms_norm(x, self.weight.val(), self.eps)
    }
}
