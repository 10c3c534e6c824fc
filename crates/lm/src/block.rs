//! One pre-norm decoder block: attention and MLP, each behind an RMSNorm and a residual add.

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

use crate::attention::SelfAttention;
use crate::config::LmConfig;
use crate::init::Init;
use crate::mlp::Mlp;
use crate::model::ForwardOptions;
use crate::norm::RmsNorm;
use crate::precision::cast_like;
use crate::rope::Rope;

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

    /// Apply to the residual stream `[batch·seq, d]`. The stream and the norms keep the
    /// stream's dtype; attention and MLP run in the compute dtype of `options.precision` and
    /// are cast back before the residual adds.
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        batch: usize,
        seq: usize,
        rope: &Rope<B>,
        options: ForwardOptions,
    ) -> Tensor<B, 2> {
        let normed = self.input_layernorm.forward(x.clone());
        let attn = self.self_attn.forward(normed, batch, seq, rope, options);
        let h = x.clone() + cast_like(attn, &x);
        let mlp = self.mlp.forward(
            self.post_attention_layernorm.forward(h.clone()),
            options.precision,
        );
        h.clone() + cast_like(mlp, &h)
    }
}
