//! Token embedding table.

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Int, Tensor};

use crate::init::Init;

/// Lookup table `[vocab, d]` (HF `model.embed_tokens.weight`). With tied embeddings it is also
/// the LM head: `logits = h · weightᵀ`.
#[derive(Module, Debug)]
pub struct Embedding<B: Backend> {
    /// The table, `[vocab, d]`.
    pub weight: Param<Tensor<B, 2>>,
}

impl<B: Backend> Embedding<B> {
    /// A table of `vocab` rows of width `d`, drawn from N(0, std²).
    pub fn new(vocab: usize, d: usize, std: f64, init: &Init, device: &B::Device) -> Self {
        Embedding {
            weight: init.normal("embed_tokens.weight", [vocab, d], std, device),
        }
    }

    /// Look up `tokens: [batch, seq]`, returning the flattened `[batch·seq, d]`.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let [b, s] = tokens.dims();
        self.weight.val().select(0, tokens.reshape([b * s]))
    }
}
