//! Loading trained models from their run folders.

use std::path::Path;

use smalltalk_lm::burn::tensor::backend::Backend;
use smalltalk_lm::{Checkpoint, Lm};
use smalltalk_stage::Identity;

use crate::error::{EvalError, Result};

/// The model of the newest checkpoint of the training run in `run` (`run/checkpoints/`).
pub fn latest_model<B: Backend>(run: &Path, device: &B::Device) -> Result<Lm<B>> {
    Ok(latest_checkpoint(run)?.load_model::<B>(device)?)
}

/// The newest checkpoint of the training run in `run`.
pub fn latest_checkpoint(run: &Path) -> Result<Checkpoint> {
    let ckpts = run.join("checkpoints");
    Checkpoint::latest(&ckpts)?.ok_or_else(|| {
        EvalError::Config(format!(
            "no checkpoint in {} (train it first)",
            ckpts.display()
        ))
    })
}

/// The row length the run in `run` trained on (from its newest checkpoint).
pub fn trained_row_len(run: &Path) -> Result<usize> {
    let ckpt = latest_checkpoint(run)?;
    ckpt.state.data.map(|d| d.row_len).ok_or_else(|| {
        EvalError::Config(format!(
            "{}: the run has not trained yet",
            ckpt.dir.display()
        ))
    })
}

/// The tokenizer checksum a stage folder recorded as its input (`None` for folders written
/// before stage records existed).
pub fn recorded_tokenizer(dir: &Path) -> Result<Option<String>> {
    Ok(Identity::read(dir)?.and_then(|id| id.inputs.get("tokenizer").cloned()))
}

/// Refuse a run folder whose recorded tokenizer is not `expected` (the routers').
pub fn check_tokenizer(dir: &Path, expected: &str) -> Result<()> {
    match recorded_tokenizer(dir)? {
        Some(t) if t != expected => Err(EvalError::Config(format!(
            "{} was trained with tokenizer {t}, but the routers read {expected}: they do not belong to one mixture",
            dir.display()
        ))),
        _ => Ok(()),
    }
}
