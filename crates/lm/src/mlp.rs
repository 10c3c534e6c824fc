//! SwiGLU feed-forward block (Shazeer 2020), as in Llama.

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

use crate::fused::silu_mul;
use crate::init::Init;
use crate::linear::Linear;
use crate::precision::Precision;

/// `down(silu(gate(x)) ⊙ up(x))`, no biases.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `d → d_ff`, through SiLU.
    pub gate_proj: Linear<B>,
    /// `d → d_ff`, linear.
    pub up_proj: Linear<B>,
    /// `d_ff → d`, writes to the residual stream.
    pub down_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// A SwiGLU MLP; `out_std` is the init std of `down_proj` (a residual output).
    pub fn new(
        d: usize,
        d_ff: usize,
        std: f64,
        out_std: f64,
        init: &Init,
        name: &str,
        device: &B::Device,
    ) -> Self {
        Mlp {
            gate_proj: Linear::new(d, d_ff, std, init, &format!("{name}.gate_proj"), device),
            up_proj: Linear::new(d, d_ff, std, init, &format!("{name}.up_proj"), device),
            down_proj: Linear::new(d_ff, d, out_std, init, &format!("{name}.down_proj"), device),
        }
    }

    /// Apply to `[N, d]`; the result is in the compute dtype of `precision`.
    pub fn forward(&self, x: Tensor<B, 2>, precision: Precision) -> Tensor<B, 2> {
        let gate = self.gate_proj.forward(x.clone(), precision);
        let up = self.up_proj.forward(x, precision);
        self.down_proj.forward(silu_mul(gate, up), precision)
    }
}
