//! EM settings: how many routers, how long, on which prefix, with which model and optimizer.

use serde::{Deserialize, Serialize};
use smalltalk_lm::{LmConfig, TrainConfig};
use smalltalk_routing::tfidf::TfidfSettings;

use crate::error::{Result, RouterError};

/// Everything that controls router training by hard EM (paper §2.2). Every field has a default
/// (the paper's values, scaled where it depends on E), so a TOML table may name only what it
/// changes. Effective values are written into the run directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmConfig {
    /// How the routing is made (default `em`, the paper's routers); the baselines `tfidf`,
    /// `random` and `domain` produce a routers folder that partition, eval, route and generate
    /// use the same way. Left out of the saved settings when `em`, so the fingerprints of runs
    /// made before methods existed stay valid.
    #[serde(skip_serializing_if = "RouterMethod::is_em")]
    pub method: RouterMethod,
    /// Settings of the `tfidf` method (defaults when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tfidf: Option<TfidfSettings>,
    /// Number of routers (= experts), E.
    pub experts: usize,
    /// Model preset of every router (`router-4.4m` in the paper); `model` overrides fields.
    pub preset: String,
    /// Overrides of the preset's fields (e.g. `vocab_size`, which must match the tokenizer).
    pub model: toml::Table,
    /// Routing prefix M in tokens: routers train on, and score, the first M tokens of each
    /// row (paper Eq. 9; 256 in the paper). Capped by nothing: must be ≤ the dataset's row length.
    pub prefix_len: usize,
    /// EM iterations T (paper ≈ 94).
    pub iterations: usize,
    /// Optimizer steps per router per iteration, K (paper ≈ 1,373 = 45M tokens / (32 × 1024)).
    pub steps_per_iteration: usize,
    /// Sequences per EM chunk, N. 0 means `E × K × batch`: one pass over each router's part
    /// per iteration, as in the paper (≈ E × 43,945). Capped at the training rows.
    pub chunk_sequences: usize,
    /// Rows per scoring call (memory: one call holds its prefix activations).
    pub score_batch: usize,
    /// Seed of the random start, the chunk order and the routers' inits (router `e` uses
    /// `seed + e`).
    pub seed: u64,
    /// Optimizer and schedule of each router (paper: AdamW, constant LR 1e-4 after 1,000
    /// warm-up steps, batch 32, clip 0.1). `total_steps`, `prefix_len`, `seed` and
    /// `checkpoint_every` are set by EM.
    pub train: TrainConfig,
}

/// How a routers folder routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouterMethod {
    /// E router LMs trained by hard EM (paper §2.2, Algorithm 1).
    #[default]
    Em,
    /// c-BTM's baseline (Gururangan et al. 2023): TF-IDF of the text, truncated SVD, balanced
    /// k-means; a prefix goes to the nearest centroid.
    Tfidf,
    /// Random routing: a seeded hash of the prefix (the paper's random-partition ablation).
    Random,
    /// The corpus's own domain labels grouped into E parts (an oracle, as in DEMix).
    Domain,
}

impl RouterMethod {
    /// Whether this is the default, [`RouterMethod::Em`].
    pub fn is_em(&self) -> bool {
        *self == RouterMethod::Em
    }

    /// The method's name in configs and manifests.
    pub fn name(self) -> &'static str {
        match self {
            RouterMethod::Em => "em",
            RouterMethod::Tfidf => "tfidf",
            RouterMethod::Random => "random",
            RouterMethod::Domain => "domain",
        }
    }
}

impl std::str::FromStr for RouterMethod {
    type Err = RouterError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "em" => Ok(RouterMethod::Em),
            "tfidf" => Ok(RouterMethod::Tfidf),
            "random" => Ok(RouterMethod::Random),
            "domain" => Ok(RouterMethod::Domain),
            other => Err(RouterError::Config(format!(
                "unknown routing method `{other}`: use em, tfidf, random or domain"
            ))),
        }
    }
}

impl Default for EmConfig {
    fn default() -> Self {
        EmConfig {
            method: RouterMethod::Em,
            tfidf: None,
            experts: 4,
            preset: "router-4.4m".into(),
            model: toml::Table::new(),
            prefix_len: 256,
            iterations: 94,
            steps_per_iteration: 1_373,
            chunk_sequences: 0,
            score_batch: 1_024,
            seed: 0,
            train: TrainConfig::router_paper(),
        }
    }
}

impl EmConfig {
    /// Check the settings against each other and the dataset's `row_len` (tokens per row).
    pub fn validate(&self, row_len: usize) -> Result<()> {
        let bad = |key: &str, why: String| Err(RouterError::Config(format!("`{key}`: {why}")));
        if self.experts < 2 || self.experts > u16::MAX as usize {
            return bad(
                "experts",
                format!("must be in 2..=65535, not {}", self.experts),
            );
        }
        if self.prefix_len < 2 || self.prefix_len > row_len {
            return bad(
                "prefix_len",
                format!(
                    "must be in 2..={row_len} (the dataset's row length), not {}",
                    self.prefix_len
                ),
            );
        }
        if self.iterations == 0 {
            return bad("iterations", "must be at least 1".into());
        }
        if self.steps_per_iteration == 0 {
            return bad("steps_per_iteration", "must be at least 1".into());
        }
        if self.score_batch == 0 {
            return bad("score_batch", "must be at least 1".into());
        }
        self.router_train(0).validate()?;
        let model = self.model_config()?;
        model.validate()?;
        if self.prefix_len - 1 > model.max_seq_len {
            return bad(
                "model.max_seq_len",
                format!(
                    "{} positions are too few for the {}-token prefix (needs {})",
                    model.max_seq_len,
                    self.prefix_len,
                    self.prefix_len - 1
                ),
            );
        }
        Ok(())
    }

    /// The router model shape: the preset with [`EmConfig::model`] applied.
    pub fn model_config(&self) -> Result<LmConfig> {
        Ok(LmConfig::from_preset_with_overrides(
            &self.preset,
            &self.model,
        )?)
    }

    /// Sequences per chunk for a split of `rows` training rows.
    pub fn chunk_len(&self, rows: usize) -> usize {
        let n = match self.chunk_sequences {
            0 => self.experts * self.steps_per_iteration * self.train.batch_size,
            n => n,
        };
        n.min(rows)
    }

    /// Router `e`'s training config: `T × K` steps on the first M tokens of its rows, seeded
    /// with `seed + e` (distinct inits break the symmetry of the random start), checkpointed
    /// at the end of every iteration by EM itself, keeping at least two checkpoints (the
    /// committed iteration's survives while the next one is written).
    pub fn router_train(&self, e: usize) -> TrainConfig {
        TrainConfig {
            total_steps: self.iterations * self.steps_per_iteration,
            prefix_len: Some(self.prefix_len),
            checkpoint_every: 0,
            keep_checkpoints: self.train.keep_checkpoints.max(2),
            seed: self.seed.wrapping_add(e as u64),
            ..self.train.clone()
        }
    }
}
