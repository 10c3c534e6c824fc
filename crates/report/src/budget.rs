//! The training budget of every model of a run: steps, tokens, parameters, tokens per
//! parameter and passes over its rows, read from each run's newest checkpoint. Whether a
//! mixture beats a dense model of the same size depends on this budget (paper §4 trains far
//! past it: 256k steps of 128 × 1024 tokens for 335M parameters).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use smalltalk_mixture::check::checkpoint_of;
use smalltalk_mixture::{MixtureError, MixtureManifest, ModelRecord};
use smalltalk_stage::RunLayout;

use crate::error::Result;
use crate::inputs::{Manifest, PartitionManifest};

/// One trained model's budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelBudget {
    /// Its name in the mixture's manifest (`expert-00`, `dense`, `dense-steps`).
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

/// The budget of every member and dense model of the run's mixture (`mixture.json`); none
/// when the run has no trained model yet (e.g. a report test's fixture). A run with trained
/// models but no manifest is refused, naming the command that writes it.
pub(crate) fn read_models(
    layout: &RunLayout,
    partition: &PartitionManifest,
    manifest: &Manifest,
) -> Result<Vec<ModelBudget>> {
    let train_rows = manifest
        .splits
        .get(&smalltalk_data::Split::Train)
        .map_or(0, |s| s.sequences) as f64;
    let mixture = match MixtureManifest::load(layout.root()) {
        Ok((m, _)) => m,
        Err(MixtureError::NoManifest { .. }) if !any_checkpoint(&layout.experts()) => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e.into()),
    };
    let root = layout.root();
    // An expert's rows: its part of the partition (the member's rows file).
    let rows_of = |name: &str| {
        partition
            .expert_rows
            .iter()
            .find(|p| p.file.trim_end_matches(".rows") == name)
            .map_or(0.0, |p| p.sequences as f64)
    };
    let mut runs: Vec<(String, &ModelRecord, f64)> = mixture
        .members
        .iter()
        .map(|m| (m.name.clone(), &m.expert, rows_of(&m.name)))
        .collect();
    runs.extend(
        mixture
            .dense
            .iter()
            .map(|d| (d.name.clone(), &d.model, train_rows)),
    );
    runs.into_iter()
        .map(|(name, model, rows)| {
            let state = checkpoint_of(root, model)?.state;
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

/// Whether any training run under `experts` has a checkpoint folder.
fn any_checkpoint(experts: &std::path::Path) -> bool {
    std::fs::read_dir(experts).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.path().join("checkpoints").is_dir())
    })
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
