//! `smalltalk launch …` and `smalltalk status`: flags → `smalltalk_launch`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use smalltalk_launch::{status, LaunchRequest};
use smalltalk_report::RunConfig;

use crate::report::Output;

/// The launchers.
#[derive(Debug, Subcommand)]
pub enum LaunchCommand {
    /// Write the run as Slurm batch scripts into RUN/slurm/ and submit them with sbatch.
    ///
    /// One script per stage; the experts are a job array, chained with --dependency=afterok.
    /// Resources come from the config's [cluster] table (flags override its defaults). Tasks
    /// get SIGTERM `stop_seconds` before the time limit, checkpoint and requeue themselves.
    /// Submitting again submits only what is missing (a half-trained expert resumes); it
    /// refuses while jobs of the run are still queued.
    Slurm(LaunchArgs),
    /// Write the run as Kubernetes Jobs into RUN/k8s/ (NN-<stage>.json and apply.sh).
    ///
    /// The experts are an Indexed Job (index in JOB_COMPLETION_INDEX); the run folder, config
    /// and corpus must be on the [cluster] volume claim, mounted at the same path as here.
    K8s(LaunchArgs),
}

/// Flags of both launchers.
#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// The run folder (created).
    run: PathBuf,
    /// TOML config of every stage; its [cluster] table sets the resources.
    #[arg(long)]
    config: PathBuf,
    /// Corpus inputs of the data stage.
    #[arg(long, required = true, num_args = 1..)]
    corpus: Vec<PathBuf>,
    /// Number of experts E [config: routers.experts].
    #[arg(long)]
    experts: Option<usize>,
    /// The `smalltalk` binary the jobs run [default: this one; k8s: `smalltalk` on the PATH].
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Write (and print) the scripts without submitting them.
    #[arg(long)]
    dry_run: bool,
    /// Slurm partition [config: cluster.partition].
    #[arg(long)]
    partition: Option<String>,
    /// CPUs per task [config: cluster.cpus].
    #[arg(long)]
    cpus: Option<u32>,
    /// GPUs per task [config: cluster.gpus].
    #[arg(long)]
    gpus: Option<u32>,
    /// Time limit per task [config: cluster.time].
    #[arg(long)]
    time: Option<String>,
}

/// Run a `launch` command.
pub fn run(cmd: LaunchCommand, backend: &str, out: &Output) -> Result<()> {
    let (LaunchCommand::Slurm(a) | LaunchCommand::K8s(a)) = &cmd;
    let request = LaunchRequest {
        run: a.run.clone(),
        config: a.config.clone(),
        corpus: a.corpus.clone(),
        experts: a
            .experts
            .unwrap_or(RunConfig::load(&a.config)?.routers.experts),
        backend: backend.into(),
        partition: a.partition.clone(),
        cpus: a.cpus,
        gpus: a.gpus,
        time: a.time.clone(),
    };
    if let LaunchCommand::K8s(_) = cmd {
        let bin = a
            .bin
            .as_ref()
            .map_or("smalltalk".into(), |b| b.display().to_string());
        for file in request.k8s(&bin)? {
            out.result(&serde_json::json!({"file": file}), || {
                format!("wrote {}", file.display())
            });
        }
        return Ok(());
    }
    let bin = a.bin.clone().map_or_else(std::env::current_exe, Ok)?;
    let submitted = request.slurm(&bin, a.dry_run)?;
    for (s, script) in &submitted {
        out.result(s, || s.describe(script, a.dry_run));
    }
    if submitted.is_empty() {
        out.result(&serde_json::json!({"submitted": 0}), || {
            "every stage is done".into()
        });
    }
    Ok(())
}

/// `status` flags.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The run folder.
    run: PathBuf,
    /// Number of experts E [default: from RUN/launch.json, else RUN/routers/routers.json].
    #[arg(long)]
    experts: Option<usize>,
}

/// Run `smalltalk status`.
pub fn status(args: StatusArgs, out: &Output) -> Result<()> {
    let rows = smalltalk_launch::run_status(&args.run, args.experts)?;
    out.result(&rows, || status::describe(&rows));
    Ok(())
}
