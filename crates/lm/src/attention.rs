//! Causal multi-head self-attention with RoPE, as in Llama (no biases, no GQA).

use burn::module::Module;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{backend::Backend, Tensor};

use crate::init::Init;
use crate::linear::Linear;
use crate::rope::Rope;

/// Multi-head causal self-attention. Heads are contiguous slices of the projections:
/// head `j` uses rows `j·head_dim .. (j+1)·head_dim` of `q_proj`/`k_proj`/`v_proj` (HF layout).
#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    /// Query projection `d → d`.
    pub q_proj: Linear<B>,
    /// Key projection `d → d`.
    pub k_proj: Linear<B>,
    /// Value projection `d → d`.
    pub v_proj: Linear<B>,
    /// Output projection `d → d` (writes to the residual stream).
    pub o_proj: Linear<B>,
    /// Number of heads.
    pub n_heads: usize,
}

impl<B: Backend> SelfAttention<B> {
    /// Attention over `d` features in `n_heads` heads; `out_std` is the init std of `o_proj`.
    pub fn new(
        d: usize,
        n_heads: usize,
        std: f64,
        out_std: f64,
        init: &Init,
        name: &str,
        device: &B::Device,
    ) -> Self {
        let proj =
            |what: &str, s: f64| Linear::new(d, d, s, init, &format!("{name}.{what}"), device);
        SelfAttention {
            q_proj: proj("q_proj", std),
            k_proj: proj("k_proj", std),
            v_proj: proj("v_proj", std),
            o_proj: proj("o_proj", out_std),
            n_heads,
        }
    }

    /// Apply to a flattened batch `x: [batch·seq, d]`; returns `[batch·seq, d]`.
    /// Position `t` of a row only sees positions `≤ t` of the same row.
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        batch: usize,
        seq: usize,
        rope: &Rope<B>,
    ) -> Tensor<B, 2> {
        let [n, d] = x.dims();
        let (h, hd) = (self.n_heads, d / self.n_heads);
        let split = |t: Tensor<B, 2>| t.reshape([batch, seq, h, hd]);
        let q = rope
            .apply(split(self.q_proj.forward(x.clone())))
            .swap_dims(1, 2);
        let k = rope
            .apply(split(self.k_proj.forward(x.clone())))
            .swap_dims(1, 2);
        let v = split(self.v_proj.forward(x)).swap_dims(1, 2);
        let options = AttentionModuleOptions {
            is_causal: true,
            ..Default::default()
        };
        let out = attention(q, k, v, None, None, options); // [batch, heads, seq, head_dim]
        self.o_proj.forward(out.swap_dims(1, 2).reshape([n, d]))
    }
}
