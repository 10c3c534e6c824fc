//! Bias-free linear projection stored in the PyTorch / Hugging Face layout.

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};

use crate::init::Init;
use crate::precision::Precision;

/// `y = x · Wᵀ` with `W` of shape `[d_out, d_in]` (the layout of `torch.nn.Linear.weight`, so
/// exporting to HF is a rename). A transposed operand costs nothing in the matmul.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// Weight, `[d_out, d_in]`.
    pub weight: Param<Tensor<B, 2>>,
}

impl<B: Backend> Linear<B> {
    /// A projection `d_in → d_out` with N(0, std²) weights on the stream of `name`.
    pub fn new(
        d_in: usize,
        d_out: usize,
        std: f64,
        init: &Init,
        name: &str,
        device: &B::Device,
    ) -> Self {
        Linear {
            weight: init.normal(&format!("{name}.weight"), [d_out, d_in], std, device),
        }
    }

    /// Apply to a flattened batch `[N, d_in] → [N, d_out]` (one 2-D gemm over all `N` rows). Input and weight are cast to the compute dtype of
    /// `precision`, which is the dtype of the output.
    pub fn forward(&self, x: Tensor<B, 2>, precision: Precision) -> Tensor<B, 2> {
        let w = precision.compute(self.weight.val());
        crate::fused::linear(precision.compute(x), w)
    }
}
