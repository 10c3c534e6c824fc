//! Atomic training checkpoints.
//!
//! A run directory holds `checkpoints/step-00001000/`, each with
//!
//! - `model.safetensors`: the weights (names as in [`crate::model`], config in the metadata),
//! - `optimizer.safetensors`: AdamW moments `exp_avg.<param>` / `exp_avg_sq.<param>`, step count,
//! - `state.json`: [`CheckpointState`] (model and train config, step, sampler position, seed).
//!
//! A checkpoint is written into a temporary sibling folder (`step-….tmp-<pid>-<n>`, see
//! `smalltalk_stage::atomic::TempDir`), every file is fsynced, and the folder is renamed into
//! place and its parent fsynced, so a `step-*` directory is always complete. Folders are
//! deleted by renaming them to a temporary name first, so a crash mid-delete never leaves a
//! half-deleted `step-*`. The newest one is the one to resume from; older ones beyond
//! `keep_checkpoints` are deleted after a new one is in place.
//!
//! The files are byte-reproducible: equal weights, optimizer state and run state give
//! byte-equal files (the safetensors headers are written with sorted keys), so two identical
//! runs can be compared with `sha256sum`.

use std::fs;
use std::path::{Path, PathBuf};

use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};

use smalltalk_stage::atomic::{process_alive, remove_stale_temps, sync_file, sync_parent};
use smalltalk_stage::atomic::{temp_path, TempDir};

use crate::config::LmConfig;
use crate::error::{LmError, Result};
use crate::model::Lm;
use crate::train::config::TrainConfig;
use crate::train::optimizer::{AdamW, AdamWConfig};
use crate::train::sampler::SamplerPosition;
use crate::weights::write_bytes;

/// Train-config fields that may change freely between a checkpoint and its resumption.
/// `total_steps` is not one of them: it shapes the learning-rate schedule, so a different
/// value is refused unless the run is extended on purpose (`Trainer::new_extended`).
pub const RESUMABLE_CHANGES: [&str; 2] = ["checkpoint_every", "keep_checkpoints"];

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
    /// Written because the run was stopped between scheduled checkpoints: removed as soon as
    /// a newer checkpoint is in place, so a stopped-and-resumed run keeps the same checkpoints
    /// as an uninterrupted one. (Absent, i.e. `false`, in scheduled checkpoints.)
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
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
    /// needed), atomically, then delete all but the newest `keep` checkpoints. An existing
    /// checkpoint of the same step is replaced.
    pub fn save<B: AutodiffBackend>(
        checkpoints_dir: &Path,
        state: &CheckpointState,
        model: &Lm<B>,
        optimizer: &AdamW<B>,
        keep: usize,
    ) -> Result<Checkpoint> {
        fs::create_dir_all(checkpoints_dir).map_err(|e| LmError::io(checkpoints_dir, e))?;
        let dir = checkpoints_dir.join(step_dir_name(state.step));
        let temp = TempDir::new(&dir).map_err(LmError::from_stage)?;
        model.save_safetensors(temp.path().join(MODEL_FILE))?;
        optimizer.save(&temp.path().join(OPTIMIZER_FILE))?;
        let json = serde_json::to_vec_pretty(state).map_err(|e| LmError::Json {
            path: dir.join(STATE_FILE),
            source: e,
        })?;
        write_bytes(&temp.path().join(STATE_FILE), &json)?;
        sync_file(temp.path()).map_err(LmError::from_stage)?;
        if dir.exists() {
            remove_checkpoint_dir(&dir)?;
        }
        temp.commit().map_err(LmError::from_stage)?;
        Self::prune(checkpoints_dir, keep.max(1))?;
        Ok(Checkpoint {
            dir,
            state: state.clone(),
        })
    }

    /// Delete every checkpoint under `checkpoints_dir` with a step greater than `step`, newest
    /// first, so a [`Trainer`](crate::Trainer) created afterwards resumes from the checkpoint
    /// at `step` (the commit point of, e.g., an EM iteration). The run's `metrics.jsonl` rows
    /// past `step` are dropped by the next training call. When no checkpoint at `step`
    /// exists (pruned by `keep_checkpoints`, or `step` 0), the newest one before it is what
    /// remains.
    pub fn discard_after(checkpoints_dir: &Path, step: usize) -> Result<()> {
        for (s, dir) in Self::list(checkpoints_dir)?.into_iter().rev() {
            if s > step {
                remove_checkpoint_dir(&dir)?;
            }
        }
        Ok(())
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
            remove_checkpoint_dir(dir)?;
        }
        // Leftovers of writers that crashed mid-checkpoint (only of processes that are gone).
        for entry in fs::read_dir(checkpoints_dir)
            .map_err(|e| LmError::io(checkpoints_dir, e))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some((base, _)) = name.split_once(".tmp-") {
                if !base.is_empty() {
                    remove_stale_temps(&checkpoints_dir.join(base)).map_err(LmError::from_stage)?;
                } else if legacy_temp_owner(&name).is_some_and(|pid| !process_alive(pid)) {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(())
    }

    /// Check that a run with `config` and `train` may resume from this checkpoint: the model
    /// config must be equal, and so must every train field except [`RESUMABLE_CHANGES`]
    /// (`total_steps` and `schedule_steps` included; see `Trainer::new_extended` for a larger
    /// budget).
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
        let (saved_total, asked_total) = (self.state.train.total_steps, train.total_steps);
        if saved_total != asked_total {
            let how = if asked_total > saved_total {
                "; changing it would reshape the learning-rate schedule mid-run. To train longer \
                 on the original schedule (its final learning rate holds for the added steps), \
                 extend the run explicitly (`Trainer::new_extended`), or start a new run folder"
            } else {
                "; a run cannot be shortened (use the budget it was started with, or a new run \
                 folder)"
            };
            return Err(mismatch(format!(
                "total_steps differs: the run was started with total_steps = {saved_total}, this \
                 run asks for {asked_total}{how}"
            )));
        }
        let saved = serde_json::to_value(&self.state.train).expect("serializable");
        let asked = serde_json::to_value(train).expect("serializable");
        let empty = serde_json::Map::new();
        let saved = saved.as_object().unwrap_or(&empty);
        let asked = asked.as_object().unwrap_or(&empty);
        let mut keys: Vec<&String> = saved.keys().chain(asked.keys()).collect();
        keys.sort();
        keys.dedup();
        let show = |v: Option<&serde_json::Value>| v.map_or("nothing".into(), |v| v.to_string());
        for key in keys {
            if !RESUMABLE_CHANGES.contains(&key.as_str()) && saved.get(key) != asked.get(key) {
                return Err(mismatch(format!(
                    "train config field `{key}` differs: checkpoint has {}, this run asks for {}",
                    show(saved.get(key)),
                    show(asked.get(key))
                )));
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

/// Delete a checkpoint folder: renamed to a temporary name first (atomic), then removed.
pub(crate) fn remove_checkpoint_dir(dir: &Path) -> Result<()> {
    let doomed = temp_path(dir);
    fs::rename(dir, &doomed).map_err(|e| LmError::io(dir, e))?;
    sync_parent(dir);
    fs::remove_dir_all(&doomed).map_err(|e| LmError::io(&doomed, e))
}

/// The process id in a temporary folder name of the previous layout (`.tmp-step-N-<pid>`).
fn legacy_temp_owner(name: &str) -> Option<u32> {
    name.strip_prefix(".tmp-step-")?
        .rsplit('-')
        .next()?
        .parse()
        .ok()
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
