//! Training hyper-parameters.

use serde::{Deserialize, Serialize};

use crate::error::{LmError, Result};
use crate::precision::Precision;

/// Learning-rate shape after the linear warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// Stay at the peak (routers: only the relative scores of the routers matter).
    Constant,
    /// Half-cosine from the peak to `final_lr_ratio · lr` at the end of the schedule
    /// (`schedule_steps`, by default `total_steps`; experts).
    Cosine,
}

/// Everything that controls a training run except the model shape and the data. Every field
/// has a default (the paper's expert recipe), so a TOML/JSON table may name only what
/// it changes; see [`TrainConfig::router_paper`] for the router recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimizer steps in the whole run (use [`TrainConfig::steps_for_tokens`] for a token
    /// budget). A rerun whose checkpoint is at this step does nothing; a rerun with another
    /// value is refused (see `Trainer::new_extended` to train longer).
    pub total_steps: usize,
    /// Steps the warm-up + cosine schedule spans; `None` (the default) means `total_steps`.
    /// Past it the learning rate stays at the schedule's final value. Set by
    /// `Trainer::new_extended` to the original budget of an extended run, so the extra steps
    /// continue its schedule instead of stretching it (which would make the LR jump back up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_steps: Option<usize>,
    /// Sequences per optimizer step.
    pub batch_size: usize,
    /// Sequences per forward/backward pass (gradient accumulation); 0 means `batch_size`.
    /// Must divide `batch_size`. Results do not depend on it beyond float rounding.
    pub micro_batch_size: usize,
    /// Train only on the first `M` tokens of each row (`M − 1` next-token predictions, the
    /// routing objective: the log-likelihood of a sequence's first `M` tokens); `None` trains
    /// on whole rows.
    pub prefix_len: Option<usize>,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps from `lr / warmup_steps` to `lr`.
    pub warmup_steps: usize,
    /// What follows the warm-up.
    pub schedule: LrSchedule,
    /// Final LR of the cosine schedule as a fraction of `lr` (the paper does not give it).
    pub final_lr_ratio: f64,
    /// AdamW β1.
    pub beta1: f64,
    /// AdamW β2.
    pub beta2: f64,
    /// AdamW ε (the paper does not give it; PyTorch's default).
    pub adam_eps: f64,
    /// Decoupled weight decay, applied to matrices only (embedding, projections, untied
    /// head), not to norm gains.
    pub weight_decay: f64,
    /// Clip the *global* gradient norm to this value; 0 disables clipping.
    pub grad_clip: f64,
    /// Seed of the model init and of the data order.
    pub seed: u64,
    /// Write a checkpoint every this many steps (and always at the end); 0 = only at the end.
    pub checkpoint_every: usize,
    /// How many checkpoints to keep on disk (at least 1).
    pub keep_checkpoints: usize,
    /// Compute precision (`"full"` = the parameters' dtype, or `"bf16"`: bf16 matrix
    /// products over f32 master weights, for GPU backends; see [`Precision`]).
    pub precision: Precision,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self::expert_paper()
    }
}

impl TrainConfig {
    /// Experts (the paper's recipe): 256k steps × 128 sequences, peak 5e-4 after 3,000 warm-up steps,
    /// cosine to 10 % of the peak, AdamW (0.9, 0.99, wd 0.1), global clip 0.1.
    pub fn expert_paper() -> Self {
        TrainConfig {
            total_steps: 256_000,
            schedule_steps: None,
            batch_size: 128,
            micro_batch_size: 0,
            prefix_len: None,
            lr: 5e-4,
            warmup_steps: 3_000,
            schedule: LrSchedule::Cosine,
            final_lr_ratio: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            adam_eps: 1e-8,
            weight_decay: 0.1,
            grad_clip: 0.1,
            seed: 0,
            checkpoint_every: 1_000,
            keep_checkpoints: 2,
            precision: Precision::Full,
        }
    }

    /// Routers (the paper's recipe): 128k steps × 32 sequences, prefix M = 256, constant 1e-4 after a
    /// 1,000-step warm-up; same AdamW and clipping.
    pub fn router_paper() -> Self {
        TrainConfig {
            total_steps: 128_000,
            batch_size: 32,
            prefix_len: Some(256),
            lr: 1e-4,
            warmup_steps: 1_000,
            schedule: LrSchedule::Constant,
            ..Self::expert_paper()
        }
    }

    /// A named recipe: `expert` ([`expert_paper`](Self::expert_paper)) or `router`
    /// ([`router_paper`](Self::router_paper)).
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "expert" => Ok(Self::expert_paper()),
            "router" => Ok(Self::router_paper()),
            _ => Err(LmError::InvalidConfig(format!(
                "unknown train preset `{name}`; known: expert, router"
            ))),
        }
    }

    /// This config with the keys of a TOML table replacing its fields (unknown keys are
    /// errors), validated. `prefix_len = 256` sets the prefix; it cannot be unset from TOML,
    /// start from the `expert` preset instead.
    pub fn with_overrides(&self, overrides: &toml::Table) -> Result<Self> {
        let cfg = crate::config::apply_overrides(self, overrides, "train")?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Sequences per forward/backward pass (`micro_batch_size`, or `batch_size` when 0).
    pub fn micro_batch(&self) -> usize {
        if self.micro_batch_size == 0 {
            self.batch_size
        } else {
            self.micro_batch_size
        }
    }

    /// Steps needed to see `tokens` training tokens with rows of `row_len` tokens (the
    /// predicted positions per row are `prefix_len.unwrap_or(row_len) − 1`), rounded up.
    pub fn steps_for_tokens(&self, tokens: u64, row_len: usize) -> usize {
        let per_row = self.prefix_len.unwrap_or(row_len).saturating_sub(1).max(1) as u64;
        tokens.div_ceil(per_row * self.batch_size.max(1) as u64) as usize
    }

    /// Steps the learning-rate schedule spans (`schedule_steps`, or `total_steps`).
    pub fn schedule_len(&self) -> usize {
        self.schedule_steps.unwrap_or(self.total_steps)
    }

    /// The learning rate of the step with 0-based index `step`: linear warm-up, then constant
    /// or half-cosine to the end of the schedule ([`schedule_len`](Self::schedule_len)), then
    /// the schedule's final value.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.schedule {
            LrSchedule::Constant => self.lr,
            LrSchedule::Cosine => {
                let span = self.schedule_len().saturating_sub(self.warmup_steps).max(1) as f64;
                let progress = ((step - self.warmup_steps) as f64 / span).clamp(0.0, 1.0);
                let final_lr = self.lr * self.final_lr_ratio;
                final_lr
                    + 0.5 * (self.lr - final_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }

    /// Check the fields fit together.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(LmError::InvalidConfig(m));
        if self.total_steps == 0 || self.batch_size == 0 {
            return bad("total_steps and batch_size must be positive".into());
        }
        if let Some(s) = self.schedule_steps {
            if s == 0 || s > self.total_steps {
                return bad(format!(
                    "schedule_steps {s} must be between 1 and total_steps {}",
                    self.total_steps
                ));
            }
        }
        if !self.batch_size.is_multiple_of(self.micro_batch()) {
            return bad(format!(
                "micro_batch_size {} does not divide batch_size {}",
                self.micro_batch_size, self.batch_size
            ));
        }
        if let Some(m) = self.prefix_len {
            if m < 2 {
                return bad(format!(
                    "prefix_len {m} leaves nothing to predict (need ≥ 2)"
                ));
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0 && (0.0..=1.0).contains(&self.final_lr_ratio)) {
            return bad("lr must be positive and final_lr_ratio in [0, 1]".into());
        }
        if !(0.0..1.0).contains(&self.beta1)
            || !(0.0..1.0).contains(&self.beta2)
            || self.adam_eps <= 0.0
        {
            return bad("betas must be in [0, 1) and adam_eps positive".into());
        }
        if self.weight_decay < 0.0 || self.grad_clip.is_nan() || self.grad_clip < 0.0 {
            return bad("weight_decay and grad_clip must be ≥ 0".into());
        }
        if self.keep_checkpoints == 0 {
            return bad("keep_checkpoints must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_then_constant() {
        let c = TrainConfig {
            total_steps: 110,
            warmup_steps: 10,
            lr: 1.0,
            final_lr_ratio: 0.1,
            ..Default::default()
        };
        assert!((c.lr_at(0) - 0.1).abs() < 1e-12);
        assert!((c.lr_at(9) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(10) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(60) - 0.55).abs() < 1e-12);
        assert!((c.lr_at(110) - 0.1).abs() < 1e-12);
        let r = TrainConfig {
            schedule: LrSchedule::Constant,
            ..c
        };
        assert_eq!(r.lr_at(100), 1.0);
    }

    #[test]
    fn an_extended_schedule_holds_its_final_rate() {
        let c = TrainConfig {
            total_steps: 110,
            warmup_steps: 10,
            lr: 1.0,
            final_lr_ratio: 0.1,
            ..Default::default()
        };
        let extended = TrainConfig {
            total_steps: 200,
            schedule_steps: Some(110),
            ..c.clone()
        };
        for step in 0..=110 {
            assert_eq!(extended.lr_at(step), c.lr_at(step), "step {step}");
        }
        for step in 110..200 {
            assert!((extended.lr_at(step) - 0.1).abs() < 1e-12, "step {step}");
        }
        // `None` is not written, so existing JSON/TOML files stay as they were.
        let json = serde_json::to_value(&c).unwrap();
        assert!(json.get("schedule_steps").is_none());
        assert!(!toml::to_string(&c).unwrap().contains("schedule_steps"));
        let back: TrainConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
        let json = serde_json::to_value(&extended).unwrap();
        assert_eq!(json["schedule_steps"], 110);
        let bad = TrainConfig {
            schedule_steps: Some(201),
            ..extended
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn validation_and_budget() {
        TrainConfig::default().validate().unwrap();
        TrainConfig::router_paper().validate().unwrap();
        let t: toml::Table = toml::from_str("total_steps = 10\nlr = 1\ngrad_clip = 0").unwrap();
        let c = TrainConfig::preset("router")
            .unwrap()
            .with_overrides(&t)
            .unwrap();
        assert_eq!(
            (c.total_steps, c.lr, c.grad_clip, c.prefix_len),
            (10, 1.0, 0.0, Some(256))
        );
        let t: toml::Table = toml::from_str("step = 10").unwrap();
        assert!(TrainConfig::default().with_overrides(&t).is_err());
        assert!(TrainConfig {
            batch_size: 6,
            micro_batch_size: 4,
            ..Default::default()
        }
        .validate()
        .is_err());
        // Router: 4B tokens at 32 × 1024-token rows = 122,071 steps (the paper's 128k counts
        // S · B = 32,768 tokens per step).
        let r = TrainConfig {
            prefix_len: None,
            ..TrainConfig::router_paper()
        };
        assert_eq!(r.steps_for_tokens(32 * 1023 * 10, 1024), 10);
    }
}
