//! Atomic training checkpoints.
//!
//! A run directory holds `checkpoints/step-00001000/`, each with
//!
//! - `model.safetensors`: the weights (names as in [`crate::model`], config in the metadata),
//! - `optimizer.safetensors`: AdamW moments `exp_avg.<param>` / `exp_avg_sq.<param>`, step count,
//! - `state.json`: [`CheckpointState`] (model and train config, step, sampler position, seed).
//!
//! A checkpoint is written into a hidden temporary directory, every file is fsynced, and the
//! directory is renamed into place and its parent fsynced, so a `step-*` directory is always
//! complete. The newest one is the one to resume from; older ones beyond `keep_checkpoints`
//! are deleted after a new one is in place.

use std::fs;
use std::path::{Path, PathBuf};

use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};

use crate::atomic::{sync_parent, sync_path, write_bytes_atomic};
use crate::config::LmConfig;
use crate::error::{LmError, Result};
use crate::model::Lm;
use crate::train::config::TrainConfig;
use crate::train::optimizer::{AdamW, AdamWConfig};
use crate::train::sampler::SamplerPosition;

/// Train-config fields that may change between a checkpoint and its resumption.
pub const RESUMABLE_CHANGES: [&str; 3] = ["total_steps", "checkpoint_every", "keep_checkpoints"];

/// Version of the checkpoint layout.
pub const CHECKPOINT_FORMAT: u32 = 1;
const MODEL_FILE: &str = "model.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const STATE_FILE: &str = "state.json";

/// Identity of the data a run trains on (checked on resume).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataIdentity {
    /// Rows in the source.
    pub num_sequences: usize,
    /// Tokens per row.
    pub row_len: usize,
}

/// Everything besides tensors that a resumed run needs (`state.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// [`CHECKPOINT_FORMAT`] at writing time.
    pub format: u32,
    /// Optimizer steps completed.
    pub step: usize,
    /// Next rows of the data order. Together with `train.seed` this is the whole RNG state:
    /// training itself draws no random numbers (no dropout).
    pub sampler: SamplerPosition,
    /// Non-pad targets trained on so far.
    pub tokens_seen: u64,
    /// Data the run was trained on, if any step ran.
    pub data: Option<DataIdentity>,
    /// Model shape.
    pub model: LmConfig,
    /// Training hyper-parameters.
    pub train: TrainConfig,
}

/// A checkpoint directory on disk and its parsed `state.json`.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The `step-*` directory.
    pub dir: PathBuf,
    /// Its state.
    pub state: CheckpointState,
}

fn step_dir_name(step: usize) -> String {
    format!("step-{step:08}")
}

fn parse_step_dir(name: &str) -> Option<usize> {
    name.strip_prefix("step-")?.parse().ok()
}

impl Checkpoint {
    /// Write a checkpoint of `model` and `optimizer` under `checkpoints_dir` (created if
    /// needed), atomically, then delete all but the newest `keep` checkpoints.
    pub fn save<B: AutodiffBackend>(
        checkpoints_dir: &Path,
        state: &CheckpointState,
        model: &Lm<B>,
        optimizer: &AdamW<B>,
        keep: usize,
    ) -> Result<Checkpoint> {
        fs::create_dir_all(checkpoints_dir).map_err(|e| LmError::io(checkpoints_dir, e))?;
        let name = step_dir_name(state.step);
        let tmp = checkpoints_dir.join(format!(".tmp-{name}-{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| LmError::io(&tmp, e))?;
        }
        fs::create_dir(&tmp).map_err(|e| LmError::io(&tmp, e))?;
        model.save_safetensors(tmp.join(MODEL_FILE))?;
        optimizer.save(&tmp.join(OPTIMIZER_FILE))?;
        let json = serde_json::to_vec_pretty(state).map_err(|e| LmError::Json {
            path: tmp.join(STATE_FILE),
            source: e,
        })?;
        write_bytes_atomic(&tmp.join(STATE_FILE), &json)?;
        sync_path(&tmp)?;
        let dir = checkpoints_dir.join(&name);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| LmError::io(&dir, e))?;
        }
        fs::rename(&tmp, &dir).map_err(|e| LmError::io(&dir, e))?;
        sync_parent(&dir)?;
        Self::prune(checkpoints_dir, keep.max(1))?;
        Ok(Checkpoint {
            dir,
            state: state.clone(),
        })
    }

    /// Read the checkpoint in `dir` (its `state.json`; tensors are loaded on demand).
    pub fn load(dir: impl AsRef<Path>) -> Result<Checkpoint> {
        let dir = dir.as_ref().to_path_buf();
        let path = dir.join(STATE_FILE);
        let bytes = fs::read(&path).map_err(|e| LmError::io(&path, e))?;
        let state: CheckpointState = serde_json::from_slice(&bytes).map_err(|e| LmError::Json {
            path: path.clone(),
            source: e,
        })?;
        if state.format != CHECKPOINT_FORMAT {
            return Err(LmError::CheckpointMismatch {
                path,
                message: format!(
                    "format {} (this build reads {CHECKPOINT_FORMAT})",
                    state.format
                ),
            });
        }
        Ok(Checkpoint { dir, state })
    }

    /// The completed checkpoints under `checkpoints_dir`, oldest first.
    pub fn list(checkpoints_dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
        if !checkpoints_dir.exists() {
            return Ok(Vec::new());
        }
        let mut found = Vec::new();
        for entry in fs::read_dir(checkpoints_dir).map_err(|e| LmError::io(checkpoints_dir, e))? {
            let entry = entry.map_err(|e| LmError::io(checkpoints_dir, e))?;
            if let Some(step) = entry.file_name().to_str().and_then(parse_step_dir) {
                found.push((step, entry.path()));
            }
        }
        found.sort();
        Ok(found)
    }

    /// The newest checkpoint under `checkpoints_dir`, if any.
    pub fn latest(checkpoints_dir: &Path) -> Result<Option<Checkpoint>> {
        match Self::list(checkpoints_dir)?.pop() {
            Some((_, dir)) => Self::load(dir).map(Some),
            None => Ok(None),
        }
    }

    fn prune(checkpoints_dir: &Path, keep: usize) -> Result<()> {
        let all = Self::list(checkpoints_dir)?;
        for (_, dir) in all.iter().take(all.len().saturating_sub(keep)) {
            fs::remove_dir_all(dir).map_err(|e| LmError::io(dir, e))?;
        }
        // Leftovers of writers that crashed mid-checkpoint.
        for entry in fs::read_dir(checkpoints_dir)
            .map_err(|e| LmError::io(checkpoints_dir, e))?
            .flatten()
        {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with(".tmp-") {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    }

    /// Check that a run with `config` and `train` may resume from this checkpoint: the model
    /// config must be equal, and so must every train field except [`RESUMABLE_CHANGES`].
    pub fn check_resumable(&self, config: &LmConfig, train: &TrainConfig) -> Result<()> {
        let mismatch = |message: String| LmError::CheckpointMismatch {
            path: self.dir.clone(),
            message,
        };
        if self.state.model != *config {
            return Err(mismatch(format!(
                "model config differs: checkpoint has {:?}, this run asks for {config:?}",
                self.state.model
            )));
        }
        let saved = serde_json::to_value(&self.state.train).expect("serializable");
        let asked = serde_json::to_value(train).expect("serializable");
        if let (Some(saved), Some(asked)) = (saved.as_object(), asked.as_object()) {
            for (key, value) in asked {
                if !RESUMABLE_CHANGES.contains(&key.as_str()) && saved.get(key) != Some(value) {
                    return Err(mismatch(format!(
                        "train config field `{key}` differs: checkpoint has {}, this run asks for {value}",
                        saved.get(key).map_or("nothing".into(), |v| v.to_string())
                    )));
                }
            }
        }
        Ok(())
    }

    /// Path of the weights file.
    pub fn model_path(&self) -> PathBuf {
        self.dir.join(MODEL_FILE)
    }

    /// Path of the optimizer state file.
    pub fn optimizer_path(&self) -> PathBuf {
        self.dir.join(OPTIMIZER_FILE)
    }

    /// Load the model on any backend (e.g. the inner one, for scoring).
    pub fn load_model<B: Backend>(&self, device: &B::Device) -> Result<Lm<B>> {
        Lm::from_safetensors(&self.state.model, self.model_path(), device)
    }

    /// Load the optimizer state for `model` (which must already hold this checkpoint's weights).
    pub fn load_optimizer<B: AutodiffBackend>(&self, model: &Lm<B>) -> Result<AdamW<B>> {
        AdamW::load(
            adamw_config(&self.state.train),
            &self.optimizer_path(),
            model,
        )
    }
}

/// The AdamW hyper-parameters of a training config.
pub fn adamw_config(train: &TrainConfig) -> AdamWConfig {
    AdamWConfig {
        beta1: train.beta1,
        beta2: train.beta2,
        eps: train.adam_eps,
        weight_decay: train.weight_decay,
    }
}
