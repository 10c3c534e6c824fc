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

    /// Normalise each row of `[N, d]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let inv_rms = x
            .clone()
            .square()
            .mean_dim(1)
            .add_scalar(self.eps)
            .sqrt()
            .recip();
        x * inv_rms * self.weight.val().unsqueeze_dim(0)
    }
}
