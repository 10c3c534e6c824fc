//! Several models of one config run as one, for scoring: the E-step and the partition score
//! every row under every router, and evaluation every held-out row under every expert ("No
//! Need to Talk", §2.2 and §3). Their weights are stacked so that each op of the forward pass
//! runs once for all `E` models instead of `E` times: one embedding lookup, one grouped matrix
//! product per projection ([`grouped_linear`]: one gemm per model on `flex`, a batched matmul
//! elsewhere), one attention over `E·batch` rows, one SwiGLU, one norm, and the head per model.
//!
//! Rows of every activation are model-major: model `m`'s copy of the batch is rows
//! `m·N..(m+1)·N` (`N = batch·seq`). Each model's log-probs are the bits [`Lm`] computes alone
//! on `flex` (the same kernels on the same rows, in the same order).

use burn::tensor::{backend::Backend, Int, Tensor};

use crate::attention::attend_rows;
use crate::block::{block_forward, BlockWeights, Norm, Proj};
use crate::config::LmConfig;
use crate::error::{LmError, Result};
use crate::fused::{grouped_linear, head_logprobs, rms_norm_grouped, Kernel};
use crate::model::{ForwardOptions, Lm};
use crate::precision::Precision;
use crate::rope::Rope;

/// One decoder block of every model: gains `[E, d]`, projections stacked along their output
/// rows (`[E·out, in]`).
#[derive(Debug, Clone)]
struct StackedLayer<B: Backend> {
    input_norm: Tensor<B, 2>,
    q: Tensor<B, 2>,
    k: Tensor<B, 2>,
    v: Tensor<B, 2>,
    o: Tensor<B, 2>,
    post_norm: Tensor<B, 2>,
    gate: Tensor<B, 2>,
    up: Tensor<B, 2>,
    down: Tensor<B, 2>,
    /// The norms' epsilon.
    eps: f64,
}

/// `E` models of one [`LmConfig`] with their weights stacked, run as one for inference.
#[derive(Debug, Clone)]
pub struct LmStack<B: Backend> {
    config: LmConfig,
    models: usize,
    /// The embedding tables one after another, `[E·vocab, d]`.
    embed: Tensor<B, 2>,
    layers: Vec<StackedLayer<B>>,
    /// Final norm gains, `[E, d]`.
    norm: Tensor<B, 2>,
    /// Each model's head matrix `[vocab, d]`.
    heads: Vec<Tensor<B, 2>>,
    rope: Rope<B>,
}

impl<B: Backend> LmStack<B> {
    /// The stack of `models` (copies of their weights); an error when there are none or their
    /// configs differ.
    pub fn new(models: &[&Lm<B>]) -> Result<Self> {
        let first = models
            .first()
            .ok_or_else(|| LmError::InvalidConfig("a stack of no models".into()))?;
        let config = first.config().clone();
        if let Some(i) = models.iter().position(|m| m.config() != &config) {
            return Err(LmError::InvalidConfig(format!(
                "model {i} of the stack has another config than model 0"
            )));
        }
        let cat = |f: &dyn Fn(&Lm<B>) -> Tensor<B, 2>| {
            Tensor::cat(models.iter().map(|m| f(m)).collect(), 0)
        };
        let gains = |f: &dyn Fn(&Lm<B>) -> Tensor<B, 1>| {
            Tensor::stack::<2>(models.iter().map(|m| f(m)).collect(), 0)
        };
        let layers = (0..config.n_layers)
            .map(|l| StackedLayer {
                input_norm: gains(&|m| m.layers[l].input_layernorm.weight.val()),
                q: cat(&|m| m.layers[l].self_attn.q_proj.weight.val()),
                k: cat(&|m| m.layers[l].self_attn.k_proj.weight.val()),
                v: cat(&|m| m.layers[l].self_attn.v_proj.weight.val()),
                o: cat(&|m| m.layers[l].self_attn.o_proj.weight.val()),
                post_norm: gains(&|m| m.layers[l].post_attention_layernorm.weight.val()),
                gate: cat(&|m| m.layers[l].mlp.gate_proj.weight.val()),
                up: cat(&|m| m.layers[l].mlp.up_proj.weight.val()),
                down: cat(&|m| m.layers[l].mlp.down_proj.weight.val()),
                eps: config.norm_eps,
            })
            .collect();
        Ok(LmStack {
            models: models.len(),
            embed: cat(&|m| m.embed_tokens.weight.val()),
            layers,
            norm: gains(&|m| m.norm.weight.val()),
            heads: models.iter().map(|m| m.head_weight()).collect(),
            rope: first.rope.clone(),
            config,
        })
    }

    /// Number of models in the stack.
    pub fn models(&self) -> usize {
        self.models
    }

    /// The config every model of the stack shares.
    pub fn config(&self) -> &LmConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> B::Device {
        self.embed.device()
    }

    /// Final hidden states of every model for `tokens: [batch, seq]`: `[E·batch·seq, d]`,
    /// model-major ([`Lm::forward_hidden_with`] of each model, one after another).
    pub fn forward_hidden(
        &self,
        tokens: Tensor<B, 2, Int>,
        options: ForwardOptions,
    ) -> Tensor<B, 2> {
        let [batch, seq] = tokens.dims();
        self.config.assert_fits(seq);
        let (e, n) = (self.models, batch * seq);
        let offsets = Tensor::<B, 1, Int>::arange(0..e as i64, &tokens.device())
            .mul_scalar(self.config.vocab_size as i64)
            .reshape([e, 1]);
        let ids = (tokens.reshape([1, n]) + offsets).reshape([e * n]);
        let heads = self.config.n_heads;
        let mut x = self.embed.clone().select(0, ids);
        for layer in &self.layers {
            let stacked = (layer, self.models);
            x = block_forward(&stacked, x, options.precision, |q, k, v| {
                attend_rows((q, k, v), &self.rope, e * batch, seq, heads, options.kernel)
            });
        }
        rms_norm_grouped(x, self.norm.clone(), self.config.norm_eps, e)
    }

    /// `log p(t_i)` of each row under each model: `hidden` from [`LmStack::forward_hidden`],
    /// `targets: [N]` shared by the models; one `[N]` tensor per model.
    pub fn head_logprobs(
        &self,
        hidden: Tensor<B, 2>,
        targets: Tensor<B, 1, Int>,
        precision: Precision,
    ) -> Vec<Tensor<B, 1>> {
        let [n] = targets.dims();
        self.heads
            .iter()
            .enumerate()
            .map(|(m, head)| {
                let h = precision.compute(hidden.clone().narrow(0, m * n, n));
                let e = precision.compute(head.clone());
                head_logprobs(h, e, targets.clone(), Kernel::Auto)
            })
            .collect()
    }
}

/// One layer of the stack with the number of models: gains `[E, d]` and projections
/// `[E·out, in]` applied group by group to the model-major rows.
impl<B: Backend> BlockWeights<B> for (&StackedLayer<B>, usize) {
    fn norm(&self, which: Norm, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let (layer, models) = *self;
        let gains = match which {
            Norm::Input => &layer.input_norm,
            Norm::Post => &layer.post_norm,
        };
        rms_norm_grouped(x, gains.clone(), layer.eps, models)
    }

    fn project(&self, which: Proj, x: Tensor<B, 2>, precision: Precision) -> Tensor<B, 2> {
        let (layer, models) = *self;
        let w = match which {
            Proj::Q => &layer.q,
            Proj::K => &layer.k,
            Proj::V => &layer.v,
            Proj::O => &layer.o,
            Proj::Gate => &layer.gate,
            Proj::Up => &layer.up,
            Proj::Down => &layer.down,
        };
        grouped_linear(precision.compute(x), precision.compute(w.clone()), models)
    }
}
