//! # smalltalk-report
//!
//! The report of a pipeline run. [`write_report`] reads the run folder ([`RunLayout`]) through
//! typed inputs ([`inputs`]: the dataset manifest, router EM's metrics, the partition manifest,
//! the evaluation, the stage wall times) and writes, atomically, into the same folder:
//!
//! - `report.md`: perplexity tables and the verdict, per-expert segments, expert load and
//!   routing purity, the routing prefix sweep, router EM per iteration, the shards and their
//!   domain mix, the dataset, wall time per stage and the configuration;
//! - the SVG plots it shows (drawn with plotters);
//! - `report.json`: the [`Report`], for scripts;
//! - `config.toml`: every stage's effective settings, collected from the `config.toml` each
//!   stage wrote into its folder.
//!
//! A missing file, a missing key or a line that is not JSON is an error naming the file (and
//! the line, column and key). [`check_finite`] refuses a report holding a NaN or an infinity.

mod budget;
pub mod error;
pub mod inputs;

mod config;
mod finite;
mod markdown;
mod plots;
pub mod run_config;
pub mod study;
mod study_plots;
mod study_tables;

use std::path::Path;

use serde::{Deserialize, Serialize};
pub use smalltalk_stage::RunLayout;

pub use error::{ReportError, Result};
use inputs::{EvalReport, Inputs, IterationMetrics, StageSeconds};
pub use run_config::RunConfig;

/// What `report.json` holds: the evaluation's keys (as in `eval.json`) and the run's stage
/// wall times, router EM records and shard sizes.
///
/// Every number is a plain `f64` or an `Option<f64>`, so reading back a `report.json` in which
/// a NaN was written as `null` fails on the key (see [`Report::load`]); [`check_finite`] finds
/// non-finite numbers in the typed value, optional ones included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The evaluation (its keys at the top level of `report.json`).
    #[serde(flatten)]
    pub eval: EvalReport,
    /// The compute backend the evaluation ran on, when `eval.json` records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Wall time of each stage (empty without `stage_seconds.json`).
    pub stage_seconds: Vec<StageSeconds>,
    /// Router EM, one record per iteration.
    pub router_em: Vec<IterationMetrics>,
    /// Rows of each expert's shard.
    pub shard_sizes: Vec<usize>,
    /// Training budget of every expert and dense model.
    #[serde(default)]
    pub models: Vec<budget::ModelBudget>,
    /// The evaluation of the test split (`eval-test.json`), when the run made one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<EvalReport>,
    /// The branch-trained mixture and dense model on validation (`eval-branched.json`), when
    /// the run trained them next to the from-scratch ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branched: Option<EvalReport>,
}

impl Report {
    /// The markdown headline table: mixture, dense, random and oracle perplexities, over all
    /// tokens and after the routing prefix.
    pub fn headline(&self) -> String {
        markdown::headline(self)
    }

    /// Read a `report.json` back; a `null` where a number belongs (a NaN or an infinity when
    /// it was written) is an error naming the file, line and column.
    pub fn load(path: &Path) -> Result<Self> {
        // The evaluation's keys and the others are read in two passes rather than through
        // `#[serde(flatten)]`, whose errors lose the key and the position.
        #[derive(Deserialize)]
        struct Rest {
            #[serde(default)]
            backend: Option<String>,
            stage_seconds: Vec<StageSeconds>,
            router_em: Vec<IterationMetrics>,
            shard_sizes: Vec<usize>,
            #[serde(default)]
            models: Vec<budget::ModelBudget>,
            #[serde(default)]
            test: Option<EvalReport>,
            #[serde(default)]
            branched: Option<EvalReport>,
        }
        let text = inputs::read_text(path)?;
        let eval = inputs::parse_json(path, 1, &text)?;
        let rest: Rest = inputs::parse_json(path, 1, &text)?;
        Ok(Report {
            eval,
            backend: rest.backend,
            stage_seconds: rest.stage_seconds,
            router_em: rest.router_em,
            shard_sizes: rest.shard_sizes,
            models: rest.models,
            test: rest.test,
            branched: rest.branched,
        })
    }
}

/// Fails on the first NaN or ±inf anywhere in `report` (optional numbers included), naming
/// its key, e.g. `prefix_sweep[1].mixture_ppl`.
pub fn check_finite(report: &Report) -> Result<()> {
    match finite::first_non_finite(report) {
        None => Ok(()),
        Some((key, value)) => Err(ReportError::NotFinite { key, value }),
    }
}

/// Read the run folder `layout` and write `report.md`, `report.json`, the plots and the
/// effective `config.toml` into it; `config_file`, the config file the run was given, is
/// quoted in the report. Returns what `report.json` holds.
///
/// The inputs are JSON, which has no NaN or infinity: a `null` where an input's number belongs
/// is an error naming the file and key, so a report read from files holds finite numbers
/// (an optional number written as `null` reads as absent).
pub fn write_report(layout: &RunLayout, config_file: Option<&Path>) -> Result<Report> {
    let inputs = Inputs::read(layout)?;
    let effective = config::collect(layout)?;
    let quoted = config_file
        .map(|path| {
            Ok::<_, ReportError>(markdown::QuotedConfig {
                name: path.file_name().map_or_else(
                    || path.display().to_string(),
                    |n| n.to_string_lossy().into(),
                ),
                text: inputs::read_text(path)?,
            })
        })
        .transpose()?;
    let report = Report {
        eval: inputs.eval.report.clone(),
        backend: inputs.eval.backend.clone(),
        stage_seconds: inputs.stage_seconds.clone(),
        router_em: inputs.em.clone(),
        shard_sizes: inputs
            .partition
            .expert_rows
            .iter()
            .map(|s| s.sequences)
            .collect(),
        models: budget::read_models(layout, &inputs.partition, &inputs.manifest)?,
        test: inputs.eval_test.as_ref().map(|e| e.report.clone()),
        branched: inputs.eval_branched.as_ref().map(|e| e.report.clone()),
    };
    let write = write_clean;
    write(&layout.config(), effective.text.as_bytes())?;
    let plots = plots::draw_all(layout, &inputs)?;
    let md = markdown::render(&report, &inputs, &plots, &effective, quoted.as_ref());
    write(&layout.report_md(), md.as_bytes())?;
    let json = serde_json::to_string_pretty(&report).expect("the report serializes to JSON");
    write(&layout.report_json(), json.as_bytes())?;
    Ok(report)
}

/// Write `path` atomically, then remove the temporaries of `path` that killed writers left
/// (`<name>.tmp-<pid>-<n>` of processes no longer running): a successful rerun leaves none.
pub(crate) fn write_clean(path: &Path, bytes: &[u8]) -> Result<()> {
    smalltalk_stage::atomic::write_file(path, bytes)?;
    smalltalk_stage::atomic::remove_stale_temps(path)?;
    Ok(())
}

#[cfg(test)]
mod tests;
