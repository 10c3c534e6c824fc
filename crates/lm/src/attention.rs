//! Causal multi-head self-attention with RoPE, as in Llama (no biases, no GQA): its weights.
//! The computation is `crate::block::block_forward` with causal attention over whole rows
//! ([`crate::fused::causal_attention`]) or over a KV cache ([`crate::kv_cache`]).

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

use crate::fused::{causal_attention, AttentionShape, Kernel};
use crate::init::Init;
use crate::linear::Linear;
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
}

/// Causal attention over whole rows: `q`, `k`, `v: [batch·seq, d]` projections of `batch`
/// sequences at positions `0..seq`, rotated by RoPE and attended causally in `heads` heads
/// ([`causal_attention`]: the fused op of `kernel`); `[batch·seq, d]`, in `q`'s dtype.
pub(crate) fn attend_rows<B: Backend>(
    (q, k, v): (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>),
    rope: &Rope<B>,
    batch: usize,
    seq: usize,
    heads: usize,
    kernel: Kernel,
) -> Tensor<B, 2> {
    let [_, d] = q.dims();
    let shape = AttentionShape {
        batch,
        seq,
        heads,
        head_dim: d / heads,
    };
    let (cos, sin) = rope.tables(seq);
    let tables = (cast_like(cos, &q), cast_like(sin, &q));
    causal_attention(q, k, v, tables, shape, kernel)
}
