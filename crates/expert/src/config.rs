//! Expert and dense-baseline settings (`[experts]` in the TOML config).

use serde::{Deserialize, Serialize};
use smalltalk_lm::{LmConfig, TrainConfig};

use crate::error::{ExpertError, Result};

/// How the dense baseline sees as many training tokens as all E experts together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DenseScaling {
    /// E× the experts' batch, the same steps and schedule (the paper's 335M × 4 row of Tab 2:
    /// 512 vs 128 sequences per step, 256k steps each).
    #[default]
    Batch,
    /// The experts' batch, E× the steps (the schedule stretched over them).
    Steps,
}

/// Everything that controls expert training. Every field has a default, so a TOML table may
/// name only what it changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExpertConfig {
    /// Model preset of every expert and of the dense baseline (paper: `expert-335m`).
    pub preset: String,
    /// Overrides of the preset's fields (`vocab_size` is taken from the dataset when absent).
    pub model: toml::Table,
    /// Each expert's recipe (paper: 256k steps of 128 sequences, peak 5e-4 after 3,000 warm-up
    /// steps, cosine).
    pub train: TrainConfig,
    /// How the dense baseline matches the mixture's total tokens.
    pub dense_scaling: DenseScaling,
    /// Branch-train (as BTM and c-BTM do): start every expert and the dense baseline from
    /// these pretrained weights (one of our weights files: a checkpoint's `model.safetensors`,
    /// or `smalltalk import hf`'s output) instead of a random init. The model shape is the
    /// file's (`preset` and `[experts.model]` are not used); its vocabulary must be the
    /// dataset's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<std::path::PathBuf>,
}

impl Default for ExpertConfig {
    fn default() -> Self {
        ExpertConfig {
            preset: "expert-335m".into(),
            model: toml::Table::new(),
            train: TrainConfig::expert_paper(),
            dense_scaling: DenseScaling::Batch,
            init: None,
        }
    }
}

impl ExpertConfig {
    /// The model shape, with the vocabulary of the dataset unless overridden.
    pub fn model_config(&self, vocab_size: usize) -> Result<LmConfig> {
        let mut overrides = self.model.clone();
        if !overrides.contains_key("vocab_size") {
            overrides.insert("vocab_size".into(), toml::Value::Integer(vocab_size as i64));
        }
        Ok(LmConfig::from_preset_with_overrides(
            &self.preset,
            &overrides,
        )?)
    }

    /// The dense baseline's recipe for a mixture of `experts` experts: the same total tokens as
    /// all experts together (see [`DenseScaling`]).
    pub fn dense_train(&self, experts: usize) -> Result<TrainConfig> {
        if experts == 0 {
            return Err(ExpertError::Config(
                "the mixture needs at least one expert".into(),
            ));
        }
        let t = &self.train;
        Ok(match self.dense_scaling {
            DenseScaling::Batch => TrainConfig {
                batch_size: t.batch_size * experts,
                micro_batch_size: t.micro_batch_size,
                ..t.clone()
            },
            DenseScaling::Steps => TrainConfig {
                total_steps: t.total_steps * experts,
                warmup_steps: t.warmup_steps * experts,
                checkpoint_every: t.checkpoint_every * experts,
                ..t.clone()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_sees_the_mixtures_total_tokens() {
        let cfg = ExpertConfig {
            train: TrainConfig {
                total_steps: 10,
                batch_size: 8,
                warmup_steps: 2,
                ..TrainConfig::default()
            },
            ..ExpertConfig::default()
        };
        let tokens = |t: &TrainConfig| t.total_steps * t.batch_size;
        for scaling in [DenseScaling::Batch, DenseScaling::Steps] {
            let c = ExpertConfig {
                dense_scaling: scaling,
                ..cfg.clone()
            };
            let dense = c.dense_train(4).unwrap();
            assert_eq!(tokens(&dense), 4 * tokens(&cfg.train), "{scaling:?}");
            assert_eq!(dense.lr, cfg.train.lr);
        }
        assert!(cfg.dense_train(0).is_err());
    }
}
