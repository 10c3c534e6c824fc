//! Shared helpers for the `lm_*` tests: backends, tiny configs, random tokens.

use smalltalk_lm::burn::backend::{Autodiff, Flex};
use smalltalk_lm::burn::tensor::{backend::Backend, ops::Device, Tensor};
use smalltalk_lm::rng::SplitMix64;
use smalltalk_lm::{LmConfig, TrainConfig};

/// Inference backend.
pub type B = Flex;
/// Training backend.
pub type AB = Autodiff<Flex>;

/// The CPU device.
pub fn dev() -> Device<B> {
    Default::default()
}

/// The `tiny` preset with a small vocabulary.
pub fn tiny(vocab: usize) -> LmConfig {
    LmConfig {
        vocab_size: vocab,
        ..LmConfig::preset("tiny").unwrap()
    }
}

/// `n` uniform token ids below `vocab`.
pub fn random_tokens(seed: u64, n: usize, vocab: usize) -> Vec<u32> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| rng.below(vocab as u64) as u32).collect()
}

/// A float tensor as a flat f32 vector.
pub fn to_vec<const D: usize, BB: Backend>(t: Tensor<BB, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

/// A small, fast training config (no clipping surprises, checkpoint only at the end).
pub fn quick_train(total_steps: usize, batch: usize) -> TrainConfig {
    TrainConfig {
        total_steps,
        batch_size: batch,
        micro_batch_size: 0,
        prefix_len: None,
        lr: 3e-3,
        warmup_steps: 2,
        checkpoint_every: 0,
        seed: 11,
        ..TrainConfig::expert_paper()
    }
}

/// Inputs (each row but its last token) and next-token targets (each row but its first) of
/// rows of `row_len` tokens, flattened.
pub fn inputs_and_targets(toks: &[u32], row_len: usize) -> (Vec<u32>, Vec<u32>) {
    let inputs = toks
        .chunks(row_len)
        .flat_map(|r| &r[..row_len - 1])
        .copied()
        .collect();
    let targets = toks
        .chunks(row_len)
        .flat_map(|r| &r[1..])
        .copied()
        .collect();
    (inputs, targets)
}
