//! One pre-norm decoder block: attention and MLP, each behind an RMSNorm and a residual add.
//!
//! The block's arithmetic is written once, in [`block_forward`], over any [`BlockWeights`]: one
//! model's layer ([`DecoderLayer`]) or the same layer of `E` models stacked for scoring
//! (`crate::stack`). How the block attends is the caller's: causal attention over whole rows
//! (training, scoring) or attention over a KV cache (decoding, `crate::kv_cache`).

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

use crate::attention::SelfAttention;
use crate::config::LmConfig;
use crate::fused::silu_mul;
use crate::init::Init;
use crate::mlp::Mlp;
use crate::norm::RmsNorm;
use crate::precision::{cast_like, Precision};

/// `h = x + attn(norm₁(x)); y = h + mlp(norm₂(h))` (field names follow HF `LlamaDecoderLayer`).
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// Norm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Causal self-attention.
    pub self_attn: SelfAttention<B>,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm<B>,
    /// SwiGLU MLP.
    pub mlp: Mlp<B>,
}

impl<B: Backend> DecoderLayer<B> {
    /// Block number `index` of a model with config `cfg`.
    pub fn new(cfg: &LmConfig, index: usize, init: &Init, device: &B::Device) -> Self {
        let name = format!("layers.{index}");
        let std = cfg.init_std;
        let out_std = cfg.init_std / (2.0 * cfg.n_layers as f64).sqrt();
        DecoderLayer {
            input_layernorm: RmsNorm::new(cfg.d_model, cfg.norm_eps, init, device),
            self_attn: SelfAttention::new(
                cfg.d_model,
                cfg.n_heads,
                std,
                out_std,
                init,
                &format!("{name}.self_attn"),
                device,
            ),
            post_attention_layernorm: RmsNorm::new(cfg.d_model, cfg.norm_eps, init, device),
            mlp: Mlp::new(
                cfg.d_model,
                cfg.d_ff,
                std,
                out_std,
                init,
                &format!("{name}.mlp"),
                device,
            ),
        }
    }
}

/// The two norms of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Norm {
    /// Before attention (`input_layernorm`).
    Input,
    /// Before the MLP (`post_attention_layernorm`).
    Post,
}

/// The seven projections of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proj {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

/// The weights of one block as [`block_forward`] reads them.
pub(crate) trait BlockWeights<B: Backend> {
    /// RMSNorm of the residual stream `[N, d]` (in the stream's dtype).
    fn norm(&self, which: Norm, x: Tensor<B, 2>) -> Tensor<B, 2>;
    /// A projection `[N, in] → [N, out]` in the compute dtype of `precision`.
    fn project(&self, which: Proj, x: Tensor<B, 2>, precision: Precision) -> Tensor<B, 2>;
}

impl<B: Backend> BlockWeights<B> for DecoderLayer<B> {
    fn norm(&self, which: Norm, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match which {
            Norm::Input => self.input_layernorm.forward(x),
            Norm::Post => self.post_attention_layernorm.forward(x),
        }
    }

    fn project(&self, which: Proj, x: Tensor<B, 2>, precision: Precision) -> Tensor<B, 2> {
        let (a, m) = (&self.self_attn, &self.mlp);
        let linear = match which {
            Proj::Q => &a.q_proj,
            Proj::K => &a.k_proj,
            Proj::V => &a.v_proj,
            Proj::O => &a.o_proj,
            Proj::Gate => &m.gate_proj,
            Proj::Up => &m.up_proj,
            Proj::Down => &m.down_proj,
        };
        linear.forward(x, precision)
    }
}

/// The block applied to the residual stream `x: [N, d]`. `attend(q, k, v)` maps the query, key
/// and value projections (`[N, d]`, unrotated) to the attention output `[N, d]`: causal over
/// whole rows, or over a KV cache. The stream and the norms keep the stream's dtype; attention
/// and MLP run in the compute dtype of `precision` and are cast back before the residual adds.
pub(crate) fn block_forward<B: Backend>(
    w: &impl BlockWeights<B>,
    x: Tensor<B, 2>,
    precision: Precision,
    attend: impl FnOnce(Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>) -> Tensor<B, 2>,
) -> Tensor<B, 2> {
    let p = precision;
    let normed = w.norm(Norm::Input, x.clone());
    let q = w.project(Proj::Q, normed.clone(), p);
    let k = w.project(Proj::K, normed.clone(), p);
    let v = w.project(Proj::V, normed, p);
    let attn = w.project(Proj::O, attend(q, k, v), p);
    let h = x.clone() + cast_like(attn, &x);
    let normed = w.norm(Norm::Post, h.clone());
    let gate = w.project(Proj::Gate, normed.clone(), p);
    let up = w.project(Proj::Up, normed, p);
    let mlp = w.project(Proj::Down, silu_mul(gate, up), p);
    h.clone() + cast_like(mlp, &h)
}
