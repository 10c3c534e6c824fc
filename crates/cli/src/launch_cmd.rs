//! `smalltalk launch …` and `smalltalk status`: flags → `smalltalk_launch`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use smalltalk_launch::{k8s, slurm, status, ClusterConfig, RunSpec};
use smalltalk_report::RunConfig;

use crate::report::Output;

/// The launchers.
#[derive(Debug, Subcommand)]
pub enum LaunchCommand {
    /// Write the run as Slurm batch scripts into RUN/slurm/ and submit them with sbatch.
    ///
    /// One script per stage (data, routers, partition, experts, dense, dense-steps, eval,
    /// report); the experts are a job array (--array, one task per expert), chained with
    /// --dependency=afterok. Resources come from the config's [cluster] table (flags override
    /// its defaults). Tasks get SIGTERM `stop_seconds` before the time limit, checkpoint and
    /// requeue themselves. Submitting again submits only what is missing: finished stages and
    /// experts are left out, a half-trained expert resumes; it refuses while jobs of the run
    /// are still queued.
    Slurm(LaunchArgs),
    /// Write the run as Kubernetes Jobs into RUN/k8s/ (NN-<stage>.json and apply.sh).
    ///
    /// The experts are an Indexed Job (each pod's index in JOB_COMPLETION_INDEX); the run
    /// folder, config and corpus must be on the [cluster] volume claim, mounted at the same
    /// path as here. `sh RUN/k8s/apply.sh` applies the stages in order.
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
    /// The `smalltalk` binary the jobs run (default: this one; for k8s: `smalltalk`, on the
    /// image's PATH).
    #[arg(long)]
    bin: Option<String>,
    /// Write (and print) the scripts without submitting them.
    #[arg(long)]
    dry_run: bool,
    /// Slurm partition of every stage [config: cluster.partition].
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

impl LaunchArgs {
    fn spec(&self, backend: &str) -> Result<(RunSpec, ClusterConfig)> {
        let config = RunConfig::load(&self.config)?;
        let mut cluster = ClusterConfig::load(&self.config)?;
        cluster.partition = self.partition.clone().or(cluster.partition);
        cluster.cpus = self.cpus.unwrap_or(cluster.cpus);
        cluster.gpus = self.gpus.unwrap_or(cluster.gpus);
        cluster.time = self.time.clone().or(cluster.time);
        let absolute =
            |p: &PathBuf| std::path::absolute(p).with_context(|| p.display().to_string());
        let spec = RunSpec {
            run: absolute(&self.run)?,
            corpus: self.corpus.iter().map(absolute).collect::<Result<_>>()?,
            config: absolute(&self.config)?,
            experts: self.experts.unwrap_or(config.routers.experts),
            backend: backend.into(),
        };
        Ok((spec, cluster))
    }
}

/// Run a `launch` command.
pub fn run(cmd: LaunchCommand, backend: &str, out: &Output) -> Result<()> {
    match cmd {
        LaunchCommand::Slurm(args) => {
            let (spec, cluster) = args.spec(backend)?;
            let bin = match &args.bin {
                Some(b) => PathBuf::from(b),
                None => std::env::current_exe()?,
            };
            let scripts = slurm::batch_scripts(&spec, &cluster, &bin);
            spec.save()?;
            let submitted = slurm::launch(&scripts, &spec, args.dry_run)?;
            for (s, script) in submitted.iter().zip(&scripts) {
                out.result(s, || match args.dry_run {
                    true => format!(
                        "# {}\n{}\n{}",
                        script.path.display(),
                        script.text,
                        s.command
                    ),
                    false => format!(
                        "{:<12} job {:<10} {}",
                        s.stage,
                        s.job_id,
                        script.path.display()
                    ),
                });
            }
            if submitted.is_empty() {
                out.result(&serde_json::json!({"submitted": 0}), || {
                    "every stage is done".into()
                });
            }
        }
        LaunchCommand::K8s(args) => {
            let (spec, cluster) = args.spec(backend)?;
            let jobs = k8s::jobs(&spec, &cluster, args.bin.as_deref().unwrap_or("smalltalk"));
            spec.save()?;
            for file in k8s::write_manifests(&spec, &jobs)? {
                out.result(&serde_json::json!({"file": file}), || {
                    format!("wrote {}", file.display())
                });
            }
        }
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
    let spec = RunSpec::load(&args.run)?;
    let experts = args
        .experts
        .or(spec.as_ref().map(|s| s.experts))
        .or_else(|| status::experts_of(&args.run))
        .unwrap_or(0);
    let mut rows = status::run_status(&args.run, experts);
    if let Some(spec) = &spec {
        slurm::add_queue(&mut rows, spec);
    }
    out.result(&rows, || status::describe(&rows));
    Ok(())
}
