//! The training budget of every model of a run: steps, tokens, parameters, tokens per
//! parameter and passes over its rows, read from each run's newest checkpoint. Whether a
//! mixture beats a dense model of the same size depends on this budget (paper §4 trains far
//! past it: 256k steps of 128 × 1024 tokens for 335M parameters).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use smalltalk_eval::models::latest_checkpoint;
use smalltalk_stage::layout::{dense_dir, dense_steps_dir, expert_dir};
use smalltalk_stage::RunLayout;

use crate::error::Result;
use crate::inputs::{Manifest, PartitionManifest};

/// One trained model's budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelBudget {
    /// Its folder under `experts/` (`expert-00`, `dense`, `dense-steps`).
    pub name: String,
    /// Optimizer steps.
    pub steps: usize,
    /// Sequences per step.
    pub batch_size: usize,
    /// Real (non-pad) training tokens.
    pub tokens: u64,
    /// Parameters.
    pub params: usize,
    /// `tokens / params`.
    pub tokens_per_param: f64,
    /// Passes over its training rows (an expert's part, or the whole training split).
    pub epochs: f64,
}

/// The budget of every expert and dense model of the run folder that has a checkpoint (a run
/// folder without trained models, e.g. a report test's fixture, has none).
pub(crate) fn read_models(
    layout: &RunLayout,
    partition: &PartitionManifest,
    manifest: &Manifest,
) -> Result<Vec<ModelBudget>> {
    let experts = layout.experts();
    let train_rows = manifest
        .splits
        .get(&smalltalk_data::Split::Train)
        .map_or(0, |s| s.sequences) as f64;
    let mut runs: Vec<(String, std::path::PathBuf, f64)> = partition
        .expert_rows
        .iter()
        .enumerate()
        .map(|(e, part)| {
            let dir = expert_dir(&experts, e);
            (format!("expert-{e:02}"), dir, part.sequences as f64)
        })
        .collect();
    runs.push(("dense".into(), dense_dir(&experts), train_rows));
    runs.push(("dense-steps".into(), dense_steps_dir(&experts), train_rows));
    runs.into_iter()
        .filter(|(_, dir, _)| dir.join("checkpoints").is_dir())
        .map(|(name, dir, rows)| {
            let state = latest_checkpoint(&dir)?.state;
            let params = state.model.num_params();
            Ok(ModelBudget {
                name,
                steps: state.step,
                batch_size: state.train.batch_size,
                tokens: state.tokens_seen,
                params,
                tokens_per_param: state.tokens_seen as f64 / params as f64,
                epochs: (state.step * state.train.batch_size) as f64 / rows,
            })
        })
        .collect()
}

/// `## Training budget`: one row per model, and the mixture's total next to the dense models.
pub(crate) fn section(md: &mut String, models: &[ModelBudget]) {
    md.push_str(
        "## Training budget\n\n| model | steps | batch | tokens | parameters | tokens/param | \
         epochs over its rows |\n|---|---|---|---|---|---|---|\n",
    );
    for m in models {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {:.2} | {:.2} |",
            m.name, m.steps, m.batch_size, m.tokens, m.params, m.tokens_per_param, m.epochs
        );
    }
    let experts: Vec<&ModelBudget> = models
        .iter()
        .filter(|m| m.name.starts_with("expert"))
        .collect();
    if let Some(first) = experts.first() {
        let total: u64 = experts.iter().map(|m| m.tokens).sum();
        let _ = writeln!(
            md,
            "\nThe {} experts together: {total} tokens, {:.2} tokens per parameter of one model \
             (the dense models' budget). Whether a mixture beats a dense model of the same size \
             depends on this number: see `results/study-cpu/report.md` for where the crossover \
             lies on our machines.\n",
            experts.len(),
            total as f64 / first.params as f64
        );
    }
}
