//! Causal multi-head self-attention with RoPE, as in Llama (no biases, no GQA).

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

use crate::fused::{causal_attention, AttentionShape};

use crate::init::Init;
use crate::linear::Linear;
use crate::model::ForwardOptions;
use crate::precision::cast_like;
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
    /// Position `t` of a row only sees positions `≤ t` of the same row. `options` pick the
    /// fused attention op or the reference ops ([`causal_attention`]) and the compute dtype
    /// (the dtype of the result).
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        batch: usize,
        seq: usize,
        rope: &Rope<B>,
        options: ForwardOptions,
    ) -> Tensor<B, 2> {
        let p = options.precision;
        let [_, d] = x.dims();
        let shape = AttentionShape {
            batch,
            seq,
            heads: self.n_heads,
            head_dim: d / self.n_heads,
        };
        let q = self.q_proj.forward(x.clone(), p);
        let k = self.k_proj.forward(x.clone(), p);
        let v = self.v_proj.forward(x, p);
        let (cos, sin) = rope.tables(seq);
        let rope = (cast_like(cos, &q), cast_like(sin, &q));
        let out = causal_attention(q, k, v, rope, shape, options.kernel);
        self.o_proj.forward(out, p)
    }
}
