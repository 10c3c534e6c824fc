//! `smalltalk expert train` (one expert on its shard: a job-array task) and `smalltalk dense
//! train` (the dense baseline with the mixture's total tokens).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use smalltalk_data::{Dataset, Split, Verify};
use smalltalk_expert::{dense_dir, expert_dir, expert_index, train_dense, train_expert};
use smalltalk_lm::backend::BackendKind;
use smalltalk_lm::burn::tensor::backend::AutodiffBackend;
use smalltalk_lm::train::TrainSummary;
use smalltalk_lm::{NoopObserver, ProgressBarObserver, TrainObserver};
use smalltalk_router::PartitionManifest;

use crate::backends::{dispatch, BackendJob};
use crate::config::Config;
use crate::report::Output;

/// The expert stage.
#[derive(Debug, Subcommand)]
pub enum ExpertCommand {
    /// Train one expert from scratch on its shard, with no communication with the others.
    ///
    /// Needs only the dataset folder, the partition folder and the config: run it once per
    /// expert, anywhere. Without --expert the index comes from SLURM_ARRAY_TASK_ID or
    /// JOB_COMPLETION_INDEX, so the same command is a Slurm array / Kubernetes Indexed Job task.
    /// Writes OUT/expert-NN/{checkpoints/, metrics.jsonl}. Rerunning resumes an interrupted
    /// expert and does nothing for a finished one.
    Train(ExpertArgs),
}

/// The dense baseline.
#[derive(Debug, Subcommand)]
pub enum DenseCommand {
    /// Train the dense baseline: the experts' architecture on all training rows, with as many
    /// training tokens as all E experts together ([experts] dense_scaling: E× batch, or E×
    /// steps). Writes OUT/dense/; resumable like an expert.
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
}

/// Run an `expert` command.
pub fn run_expert(cmd: ExpertCommand, backend: BackendKind, out: &Output) -> Result<()> {
    let ExpertCommand::Train(args) = cmd;
    dispatch(
        backend,
        Job {
            common: &args.common,
            what: What::Expert(&args),
            out,
        },
    )
}

/// Run a `dense` command.
pub fn run_dense(cmd: DenseCommand, backend: BackendKind, out: &Output) -> Result<()> {
    let DenseCommand::Train(args) = cmd;
    dispatch(
        backend,
        Job {
            common: &args.common,
            what: What::Dense(args.experts),
            out,
        },
    )
}

enum What<'a> {
    Expert(&'a ExpertArgs),
    Dense(usize),
}

struct Job<'a> {
    common: &'a CommonArgs,
    what: What<'a>,
    out: &'a Output,
}

impl BackendJob for Job<'_> {
    type Output = ();
    fn run<AB: AutodiffBackend>(self, name: &'static str) -> Result<()> {
        let c = self.common;
        let mut config = Config::load_or_default(c.config.as_deref())?;
        if let Some(s) = c.steps {
            config.experts.train.total_steps = s;
        }
        let dataset =
            Dataset::open(&c.data).with_context(|| format!("dataset {}", c.data.display()))?;
        let rows = dataset.reader(Split::Train, Verify::Checksums)?;
        let vocab = dataset.manifest().tokenizer.vocab_size;
        let mut bar = ProgressBarObserver::new();
        let mut quiet = NoopObserver;
        let observer: &mut dyn TrainObserver = if self.out.is_json() {
            &mut quiet
        } else {
            &mut bar
        };
        let device = Default::default();
        let (label, dir, summary): (String, PathBuf, TrainSummary) = match self.what {
            What::Expert(args) => {
                let manifest = PartitionManifest::load(&args.partition)
                    .with_context(|| format!("partition {}", args.partition.display()))?;
                let e = expert_index(args.expert, manifest.experts, |k| std::env::var(k).ok())?;
                let part = (&manifest, args.partition.as_path());
                let s = train_expert::<AB>(
                    &config.experts,
                    &rows,
                    vocab,
                    part,
                    e,
                    &c.out,
                    &device,
                    observer,
                )
                .with_context(|| format!("training expert {e}"))?;
                (format!("expert {e}"), expert_dir(&c.out, e), s)
            }
            What::Dense(experts) => {
                let s = train_dense::<AB>(
                    &config.experts,
                    &rows,
                    vocab,
                    experts,
                    &c.out,
                    &device,
                    observer,
                )
                .context("training the dense baseline")?;
                ("dense baseline".into(), dense_dir(&c.out), s)
            }
        };
        write_config(&dir, &config)?;
        let skipped = summary.start_step == summary.end_step && summary.finished;
        self.out.result(
            &json!({
                "stage": label, "backend": name, "dir": dir, "skipped": skipped,
                "start_step": summary.start_step, "end_step": summary.end_step,
                "finished": summary.finished, "last_loss": summary.last_loss,
            }),
            || match (skipped, summary.last_loss) {
                (true, _) => format!("{label} in {} is already trained (skipped)", dir.display()),
                (false, Some(l)) => format!(
                    "{label}: steps {}..{} in {}, last loss {l:.4}{}",
                    summary.start_step,
                    summary.end_step,
                    dir.display(),
                    if summary.finished {
                        ""
                    } else {
                        " (stopped before the end)"
                    }
                ),
                (false, None) => format!("{label}: nothing to do"),
            },
        );
        Ok(())
    }
}

/// The effective `[experts]` settings beside the run.
fn write_config(dir: &Path, config: &Config) -> Result<()> {
    #[derive(serde::Serialize)]
    struct ExpertsOnly<'a> {
        experts: &'a smalltalk_expert::ExpertConfig,
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = toml::to_string_pretty(&ExpertsOnly {
        experts: &config.experts,
    })
    .expect("config serialises");
    smalltalk_data::atomic::write_file(&dir.join("config.toml"), text.as_bytes())?;
    Ok(())
}
