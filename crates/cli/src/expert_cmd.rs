//! `smalltalk expert train` and `smalltalk dense train`: flags → `smalltalk_expert`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use smalltalk_expert::{
    expert_index, train_dense, train_expert, DenseScaling, ExpertJob, RunOutcome, StepBudget,
};
use smalltalk_lm::backend::BackendKind;
use smalltalk_routing::PartitionManifest;

use crate::backends::on_backend;
use crate::config::from_name;
use crate::progress::{BarProgress, BarStyle};
use crate::report::Output;
use smalltalk_report::RunConfig;

/// The expert stage.
#[derive(Debug, Subcommand)]
pub enum ExpertCommand {
    /// Train one expert from scratch on its part of the partition, with no communication
    /// with the others.
    ///
    /// Needs only the dataset folder, the partition folder and the config: run it once per
    /// expert, anywhere. Without --expert the index comes from SLURM_ARRAY_TASK_ID or
    /// JOB_COMPLETION_INDEX, so the same command is a Slurm array / Kubernetes Indexed Job task.
    /// Writes OUT/expert-NN/{stage.json, config.toml, checkpoints/, metrics.jsonl}. Rerunning
    /// resumes an interrupted expert (SIGTERM checkpoints) and does nothing for a finished
    /// one; another partition, dataset or settings in an existing run folder are refused.
    Train(ExpertArgs),
}

/// The dense baseline.
#[derive(Debug, Subcommand)]
pub enum DenseCommand {
    /// Train the dense baseline: the experts' architecture on all training rows, with as many
    /// training tokens as all E experts together (--scaling: E× batch, the paper's, into
    /// OUT/dense/; or E× steps, into OUT/dense-steps/); resumable like an expert.
    Train(DenseArgs),
}

/// Flags shared by expert and dense training.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Dataset folder (its training split).
    #[arg(long)]
    data: PathBuf,
    /// Output folder (experts go to OUT/expert-NN, the dense model to OUT/dense).
    #[arg(long)]
    out: PathBuf,
    /// TOML config; its [experts] table sets the model and the recipe.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override the steps of each expert [config: experts.train.total_steps].
    #[arg(long)]
    steps: Option<usize>,
    /// Let --steps (or the config) grow the budget of a started or finished run: it continues
    /// on its original learning-rate schedule, whose final rate holds for the added steps.
    #[arg(long)]
    extend: bool,
}

/// `expert train` flags.
#[derive(Debug, Args)]
pub struct ExpertArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Partition folder written by `smalltalk partition`.
    #[arg(long)]
    partition: PathBuf,
    /// Expert index (default: from SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX).
    #[arg(long)]
    expert: Option<usize>,
}

/// `dense train` flags.
#[derive(Debug, Args)]
pub struct DenseArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Number of experts of the mixture the baseline is matched to.
    #[arg(long)]
    experts: usize,
    /// Dense protocol: batch (E× the experts' batch, the same steps; the paper's; into
    /// OUT/dense) or steps (E× the steps at the experts' batch; into OUT/dense-steps)
    /// [config: experts.dense_scaling].
    #[arg(long, value_parser = from_name::<DenseScaling>)]
    scaling: Option<DenseScaling>,
}

impl CommonArgs {
    fn config(&self) -> Result<smalltalk_expert::ExpertConfig> {
        let mut config = RunConfig::load_or_default(self.config.as_deref())?.experts;
        config.train.total_steps = self.steps.unwrap_or(config.train.total_steps);
        Ok(config)
    }

    fn budget(&self) -> StepBudget {
        if self.extend {
            StepBudget::Extend
        } else {
            StepBudget::Fixed
        }
    }
}

/// Run an `expert` command.
pub fn run_expert(cmd: ExpertCommand, backend: BackendKind, out: &Output) -> Result<()> {
    let ExpertCommand::Train(args) = cmd;
    let c = &args.common;
    let cfg = c.config()?;
    let experts = PartitionManifest::load(&args.partition)?.experts;
    let e = expert_index(args.expert, experts, |k| std::env::var(k).ok())?;
    let mut progress = BarProgress::new(out.is_json(), BarStyle::Steps);
    let (outcome, name) = on_backend!(backend, AB, name => {
        let job = ExpertJob {
            data: &c.data,
            partition: &args.partition,
            experts: &c.out,
            expert: e,
            budget: c.budget(),
        };
        (train_expert::<AB>(&job, &cfg, &Default::default(), &mut progress), name)
    });
    let outcome = outcome.with_context(|| format!("training expert {e}"))?;
    report(&format!("expert {e}"), name, &outcome, out)
}

/// Run a `dense` command.
pub fn run_dense(cmd: DenseCommand, backend: BackendKind, out: &Output) -> Result<()> {
    let DenseCommand::Train(args) = cmd;
    let c = &args.common;
    let mut cfg = c.config()?;
    cfg.dense_scaling = args.scaling.unwrap_or(cfg.dense_scaling);
    let mut progress = BarProgress::new(out.is_json(), BarStyle::Steps);
    let (outcome, name) = on_backend!(backend, AB, name => {
        (train_dense::<AB>(&c.data, &c.out, &cfg, args.experts, c.budget(),
                           &Default::default(), &mut progress), name)
    });
    let outcome = outcome.context("training the dense baseline")?;
    report("dense baseline", name, &outcome, out)
}

fn report(label: &str, backend: &str, o: &RunOutcome, out: &Output) -> Result<()> {
    smalltalk_stage::stop::check(o.summary.stopped, label, &o.dir)?;
    let mut value = serde_json::to_value(o)?;
    value["stage"] = label.into();
    value["backend"] = backend.into();
    value["skipped"] = o.skipped().into();
    out.result(&value, || o.describe(label));
    Ok(())
}
