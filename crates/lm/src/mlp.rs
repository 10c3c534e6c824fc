//! SwiGLU feed-forward block (Shazeer 2020), as in Llama: its weights (the computation is
//! `crate::block::block_forward`).

use burn::module::Module;
use burn::tensor::backend::Backend;

use crate::init::Init;
use crate::linear::Linear;

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
}
