//! The decoder-only language model shared by routers and experts.
//!
//! # Weight layout
//!
//! Parameter names are the module paths, chosen to match Hugging Face `LlamaForCausalLM`
//! after adding the `model.` prefix to everything except `lm_head`:
//!
//! | our name | shape | HF name |
//! |---|---|---|
//! | `embed_tokens.weight` | `[vocab, d]` | `model.embed_tokens.weight` |
//! | `layers.N.input_layernorm.weight` | `[d]` | `model.layers.N.input_layernorm.weight` |
//! | `layers.N.self_attn.{q,k,v,o}_proj.weight` | `[d, d]` | `model.layers.N.self_attn.{q,k,v,o}_proj.weight` |
//! | `layers.N.post_attention_layernorm.weight` | `[d]` | `model.layers.N.post_attention_layernorm.weight` |
//! | `layers.N.mlp.{gate,up}_proj.weight` | `[d_ff, d]` | `model.layers.N.mlp.{gate,up}_proj.weight` |
//! | `layers.N.mlp.down_proj.weight` | `[d, d_ff]` | `model.layers.N.mlp.down_proj.weight` |
//! | `norm.weight` | `[d]` | `model.norm.weight` |
//! | `lm_head.weight` (untied only) | `[vocab, d]` | `lm_head.weight` (tied: a copy of the embedding) |
//!
//! Linear weights are `[d_out, d_in]` like `torch.nn.Linear`, and RoPE is the HF
//! `rotate_half` form, so the export is a pure rename (HF config: `hidden_act = "silu"`,
//! `num_key_value_heads = n_heads`, `rms_norm_eps = norm_eps`, `rope_theta`,
//! `tie_word_embeddings`, no biases).

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{backend::Backend, FloatDType, Int, Tensor};

use crate::attention::attend_rows;
use crate::block::{block_forward, DecoderLayer};
use crate::config::LmConfig;
use crate::embedding::Embedding;
use crate::error::Result;
use crate::fused::{head_logprobs, head_nll, Kernel};
use crate::init::Init;
use crate::linear::Linear;
use crate::norm::RmsNorm;
use crate::precision::Precision;
use crate::rope::Rope;

/// How a forward pass runs: which implementation of the fused ops, which compute precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ForwardOptions {
    /// Fused kernels where available, or the reference ops.
    pub kernel: Kernel,
    /// Compute dtype of the matrix products ([`Precision`]).
    pub precision: Precision,
}

/// A decoder-only transformer LM (Llama recipe): embedding, pre-RMSNorm blocks with causal
/// RoPE attention and SwiGLU MLPs, final RMSNorm, LM head (optionally tied to the embedding).
#[derive(Module, Debug)]
pub struct Lm<B: Backend> {
    /// Token embedding `[vocab, d]`.
    pub embed_tokens: Embedding<B>,
    /// Decoder blocks.
    pub layers: Vec<DecoderLayer<B>>,
    /// Final norm.
    pub norm: RmsNorm<B>,
    /// Output projection `[vocab, d]`; `None` when the head is tied to `embed_tokens`.
    pub lm_head: Option<Linear<B>>,
    /// RoPE tables (constants).
    pub rope: Rope<B>,
    /// The config the model was built from.
    #[module(skip)]
    pub config: LmConfig,
}

impl LmConfig {
    /// Build a freshly initialised model (see [`Lm::new`]); panics on an invalid config.
    pub fn init<B: Backend>(&self, seed: u64, device: &B::Device) -> Lm<B> {
        Lm::new(self, seed, device).expect("invalid LmConfig")
    }
}

impl<B: Backend> Lm<B> {
    /// A model with random weights: every matrix N(0, `init_std`²), except the residual output
    /// projections (`o_proj`, `down_proj`) with std `init_std / sqrt(2·n_layers)`; norm gains 1.
    /// The weights depend only on `(config, seed)`, not on the backend's RNG.
    pub fn new(config: &LmConfig, seed: u64, device: &B::Device) -> Result<Self> {
        Self::build(config, Init { seed, random: true }, device)
    }

    /// A model whose parameters are all zero, to be overwritten by a weights file.
    pub(crate) fn zeros(config: &LmConfig, device: &B::Device) -> Result<Self> {
        Self::build(
            config,
            Init {
                seed: 0,
                random: false,
            },
            device,
        )
    }

    fn build(config: &LmConfig, init: Init, device: &B::Device) -> Result<Self> {
        config.validate()?;
        let (v, d) = (config.vocab_size, config.d_model);
        Ok(Lm {
            embed_tokens: Embedding::new(v, d, config.init_std, &init, device),
            layers: (0..config.n_layers)
                .map(|i| DecoderLayer::new(config, i, &init, device))
                .collect(),
            norm: RmsNorm::new(d, config.norm_eps, &init, device),
            lm_head: (!config.tie_embeddings)
                .then(|| Linear::new(d, v, config.init_std, &init, "lm_head", device)),
            rope: Rope::new(
                config.head_dim(),
                config.max_seq_len,
                config.rope_theta,
                device,
            ),
            config: config.clone(),
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &LmConfig {
        &self.config
    }

    /// Number of parameters (equals [`LmConfig::num_params`]).
    pub fn num_params(&self) -> usize {
        Module::num_params(self)
    }

    /// The device the weights live on.
    pub fn device(&self) -> B::Device {
        self.embed_tokens.weight.val().device()
    }

    /// Final hidden states (after the last norm) for `tokens: [batch, seq]`, flattened to
    /// `[batch·seq, d]`, with the fused ops where available ([`Kernel::Auto`]). Panics if
    /// `seq > max_seq_len`.
    pub fn forward_hidden(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        self.forward_hidden_with(tokens, ForwardOptions::default())
    }

    /// [`Lm::forward_hidden`] with explicit [`ForwardOptions`] (fused or reference ops,
    /// compute precision). The result is in the parameters' dtype.
    pub fn forward_hidden_with(
        &self,
        tokens: Tensor<B, 2, Int>,
        options: ForwardOptions,
    ) -> Tensor<B, 2> {
        let [batch, seq] = tokens.dims();
        self.config.assert_fits(seq);
        let heads = self.config.n_heads;
        let mut x = self.embed_tokens.forward(tokens);
        for layer in &self.layers {
            x = block_forward(layer, x, options.precision, |q, k, v| {
                attend_rows((q, k, v), &self.rope, batch, seq, heads, options.kernel)
            });
        }
        self.norm.forward(x)
    }

    /// LM head on flattened hidden states: `[N, d] → [N, vocab]` logits.
    pub fn head(&self, hidden: Tensor<B, 2>) -> Tensor<B, 2> {
        crate::fused::linear(hidden, self.head_weight())
    }

    /// The head matrix `[vocab, d]`: `lm_head.weight`, or the embedding table when tied.
    pub fn head_weight(&self) -> Tensor<B, 2> {
        match &self.lm_head {
            Some(head) => head.weight.val(),
            None => self.embed_tokens.weight.val(),
        }
    }

    /// Training loss from flattened hidden states `[N, d]`: `Σ_i w_i·(−log p(t_i)) / denom`
    /// (`weights` 0 for ignored targets), as a one-element tensor; the logits are computed in
    /// the compute dtype of `options.precision`, the loss from them in f32 or wider. With
    /// [`Kernel::Auto`] on CPU `flex` this is the fused head + cross-entropy op (no
    /// `[N, vocab]` tensor); [`Kernel::Reference`] is [`Lm::head`] + [`nll_sum`] op for op.
    ///
    /// [`nll_sum`]: crate::loss::nll_sum
    pub fn head_nll(
        &self,
        hidden: Tensor<B, 2>,
        targets: Tensor<B, 1, Int>,
        weights: Tensor<B, 1>,
        denom: f64,
        options: ForwardOptions,
    ) -> Tensor<B, 1> {
        let p = options.precision;
        let (h, e) = (p.compute(hidden), p.compute(self.head_weight()));
        head_nll(h, e, targets, weights, denom, options.kernel)
    }

    /// `log p(t_i)` of each row of flattened hidden states `[N, d]`, `[N]`; fused on `flex`
    /// (one chunk of logits at a time), reference ops elsewhere; the logits in the compute
    /// dtype of `precision`, the log-probs in f32 or wider. Not for training.
    pub fn head_logprobs(
        &self,
        hidden: Tensor<B, 2>,
        targets: Tensor<B, 1, Int>,
        precision: Precision,
    ) -> Tensor<B, 1> {
        let (h, e) = (
            precision.compute(hidden),
            precision.compute(self.head_weight()),
        );
        head_logprobs(h, e, targets, Kernel::Auto)
    }

    /// Next-token logits `[batch, seq, vocab]`: row `t` predicts token `t + 1`.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [batch, seq] = tokens.dims();
        let logits = self.head(self.forward_hidden(tokens));
        logits.reshape([batch, seq, self.config.vocab_size])
    }

    /// Check that token ids are below `vocab_size` (the embedding lookup would fail otherwise).
    pub fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        self.config.check_tokens(tokens)
    }

    /// The same model with every parameter and table cast to `dtype` (e.g. `F64` for a
    /// finite-difference gradient check). Parameters that required gradients still do.
    pub fn to_float_dtype(self, dtype: FloatDType) -> Self {
        struct Cast(FloatDType);
        impl<B: Backend> ModuleMapper<B> for Cast {
            fn map_float<const D: usize>(
                &mut self,
                param: Param<Tensor<B, D>>,
            ) -> Param<Tensor<B, D>> {
                let (id, tensor, mapper) = param.consume();
                let grad = tensor.is_require_grad();
                let mut cast = tensor.cast(self.0).detach();
                if grad {
                    cast = cast.require_grad();
                }
                Param::from_mapped_value(id, cast, mapper)
            }
        }
        let mut model = self.map(&mut Cast(dtype));
        model.rope = Rope {
            cos: model.rope.cos.cast(dtype),
            sin: model.rope.sin.cast(dtype),
        };
        model
    }
}
