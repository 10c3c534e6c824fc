//! `routers.json`: the finished routers of an EM run; [`RouterSet`]: those routers loaded for
//! scoring, the `PrefixScorer` that partitioning, evaluation and generation route with.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use smalltalk_lm::burn::tensor::backend::{AutodiffBackend, Backend};
use smalltalk_lm::{Checkpoint, LmConfig, ModelSet, Trainer};

use smalltalk_routing::{DomainGroups, PrefixScorer, ScorerError};

use crate::config::{EmConfig, RouterMethod};
use crate::em::router_dir;
use crate::error::{Result, RouterError};
use crate::scoring::{score_prefix_lengths_all, score_prefixes};

/// Version of the manifest layout.
pub const MANIFEST_FORMAT: &str = "smalltalk-routers/1";
const FILE: &str = "routers.json";

/// The trained routers of a directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutersManifest {
    /// [`MANIFEST_FORMAT`].
    pub format: String,
    /// How the folder routes (`em` in files written before methods existed).
    #[serde(default)]
    pub method: RouterMethod,
    /// The `domain` method's grouping of domains into experts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domains: Option<DomainGroups>,
    /// Number of routers, E.
    pub experts: usize,
    /// Prefix M the routers were trained on.
    pub prefix_len: usize,
    /// EM iterations run.
    pub iterations: usize,
    /// Router model shape.
    pub model: LmConfig,
    /// Final optimizer step of every router (its checkpoint `router-NN/checkpoints/step-…`).
    pub steps: Vec<usize>,
    /// The EM run's settings-and-data fingerprint.
    pub fingerprint: String,
}

impl RoutersManifest {
    /// The manifest of finished `trainers`.
    pub fn new<AB: AutodiffBackend>(
        cfg: &EmConfig,
        model: LmConfig,
        trainers: &[Trainer<AB>],
        fingerprint: String,
    ) -> Self {
        RoutersManifest {
            format: MANIFEST_FORMAT.into(),
            method: RouterMethod::Em,
            domains: None,
            experts: cfg.experts,
            prefix_len: cfg.prefix_len,
            iterations: cfg.iterations,
            model,
            steps: trainers.iter().map(Trainer::step).collect(),
            fingerprint,
        }
    }

    /// `dir/routers.json`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }

    /// Read `dir/routers.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = Self::path(dir);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (train the routers first: `smalltalk routers train`)"
            } else {
                ""
            };
            RouterError::io(&path, std::io::Error::new(e.kind(), format!("{e}{hint}")))
        })?;
        let m: RoutersManifest = serde_json::from_str(&text)
            .map_err(|e| RouterError::state(&path, format!("unreadable routers manifest: {e}")))?;
        if m.format != MANIFEST_FORMAT {
            return Err(RouterError::state(
                &path,
                format!("format `{}`, expected `{MANIFEST_FORMAT}`", m.format),
            ));
        }
        if m.method == RouterMethod::Em && m.steps.len() != m.experts {
            return Err(RouterError::state(&path, "one step per router expected"));
        }
        Ok(m)
    }

    /// Write `dir/routers.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("manifest serialises");
        smalltalk_stage::atomic::write_file(&Self::path(dir), &json)?;
        Ok(())
    }
}

/// The tokenizer copy in a routers folder.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// The E trained routers, loaded for scoring (no autodiff).
pub struct RouterSet<B: Backend> {
    /// The manifest they were loaded from.
    pub manifest: RoutersManifest,
    /// The routers (router `e` is model `e`), stacked where that pays on `B`.
    pub models: ModelSet<B>,
    /// Checksum of the folder's `tokenizer.json` (the ids the routers read).
    pub tokenizer_hash: String,
}

impl<B: Backend> RouterSet<B> {
    /// Load the routers of a finished routers folder (checks each router's checkpoint step
    /// and that the folder holds its tokenizer).
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        let manifest = RoutersManifest::load(dir)?;
        if manifest.method != RouterMethod::Em {
            return Err(RouterError::state(
                RoutersManifest::path(dir),
                format!(
                    "these are `{}` routers, not router LMs (load them with `load_scorer`)",
                    manifest.method.name()
                ),
            ));
        }
        let tokenizer = dir.join(TOKENIZER_FILE);
        if !tokenizer.exists() {
            return Err(RouterError::state(
                &tokenizer,
                "missing: a routers folder holds the tokenizer its routers read",
            ));
        }
        let tokenizer_hash = smalltalk_stage::checksum::hash_file(&tokenizer)?;
        let mut models = Vec::with_capacity(manifest.experts);
        for (e, &step) in manifest.steps.iter().enumerate() {
            let ckpts = router_dir(dir, e).join("checkpoints");
            let ckpt = Checkpoint::latest(&ckpts)?
                .ok_or_else(|| RouterError::state(&ckpts, "no checkpoint for this router"))?;
            if ckpt.state.step != step {
                return Err(RouterError::state(
                    &ckpt.dir,
                    format!(
                        "router {e} is at step {}, the manifest says {step}",
                        ckpt.state.step
                    ),
                ));
            }
            models.push(ckpt.load_model::<B>(device)?);
        }
        Ok(RouterSet {
            models: ModelSet::new(models),
            manifest,
            tokenizer_hash,
        })
    }

    /// Number of routers.
    pub fn experts(&self) -> usize {
        self.models.len()
    }
}

impl<B: Backend> PrefixScorer for RouterSet<B> {
    fn experts(&self) -> usize {
        self.models.len()
    }

    fn trained_prefix(&self) -> usize {
        self.manifest.prefix_len
    }

    fn fingerprint(&self) -> String {
        self.manifest.fingerprint.clone()
    }

    fn tokenizer_hash(&self) -> String {
        self.tokenizer_hash.clone()
    }

    fn score(
        &self,
        prefixes: &[u32],
        prefix_len: usize,
        pad: Option<u32>,
    ) -> std::result::Result<Vec<f32>, ScorerError> {
        Ok(score_prefixes(&self.models, prefixes, prefix_len, pad)?)
    }

    fn score_lengths(
        &self,
        rows: &[u32],
        row_len: usize,
        prefix_lens: &[usize],
        pad: Option<u32>,
    ) -> std::result::Result<Vec<Vec<f32>>, ScorerError> {
        Ok(score_prefix_lengths_all(
            &self.models,
            rows,
            row_len,
            prefix_lens,
            pad,
        )?)
    }
}
