//! Shared helpers for the `lm_*` tests: backends, tiny configs, random tokens.

use smalltalk_lm::burn::backend::{Autodiff, Flex};
use smalltalk_lm::burn::tensor::{backend::Backend, ops::Device, Tensor, TensorData};
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

/// `n` pseudo-normal values (a sum of uniforms) with standard deviation ≈ `std`.
pub fn normal(seed: u64, n: usize, std: f32) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            // Sum of uniforms: close enough to normal for a test input.
            let s: f64 = (0..4)
                .map(|_| rng.below(1 << 24) as f64 / (1 << 24) as f64)
                .sum();
            ((s - 2.0) * 1.7) as f32 * std
        })
        .collect()
}

/// A 2-D float tensor from a flat vector.
pub fn tensor<BB: Backend>(v: &[f32], shape: [usize; 2]) -> Tensor<BB, 2> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), &Default::default())
}

/// Assert `got ≈ want` elementwise, within `rel` times the largest `|want|`.
pub fn close(name: &str, got: &[f32], want: &[f32], rel: f32) {
    close_with_floor(name, got, want, rel, 1e-12);
}

/// [`close`] with the scale at least `floor` (for values that should be 0 and carry the
/// rounding of O(`floor`) intermediates).
pub fn close_with_floor(name: &str, got: &[f32], want: &[f32], rel: f32, floor: f32) {
    assert_eq!(got.len(), want.len(), "{name}: lengths");
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(floor);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= rel * scale,
            "{name}[{i}]: {g} vs {w} (scale {scale})"
        );
    }
}
