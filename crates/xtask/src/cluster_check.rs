//! `cargo xtask cluster-check`: the launchers against real schedulers, on the tiny config.
//!
//! 1. A reference run: `cargo xtask pipeline` (the same stages and commands, one machine).
//! 2. Kubernetes: the expert Indexed Job's container command, run here with
//!    `JOB_COMPLETION_INDEX=1`, trains expert 1 (and nothing else) to the reference's bytes.
//! 3. Slurm (a live slurmctld, e.g. from `.ci/slurm-up.sh`): `smalltalk launch slurm` submits
//!    the run with the real `sbatch`; expert 1 gets `scancel --signal=TERM` mid-training,
//!    checkpoints, requeues itself and resumes; the run ends with eval files equal to the
//!    reference and every expert's weights equal bit for bit. Submitting again submits
//!    nothing; with the evaluations removed, it submits exactly eval and report.
//!
//! Fails loudly when Slurm is not running: it never passes without checking.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use smalltalk_launch::{k8s, status, RunSpec, StageName};

use crate::pipeline::PipelineArgs;
use crate::util::{build_debug_cli, run_capture};

/// Cluster check options.
#[derive(Debug, Args)]
pub struct ClusterCheckArgs {
    /// Work folder (default: a temporary one, removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Steps of each expert: enough for a TERM to land mid-training.
    #[arg(long, default_value_t = 150)]
    expert_steps: i64,
    /// Give up waiting for the queue after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
}

/// Run the check.
pub fn run(args: ClusterCheckArgs) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let dir = std::path::absolute(&dir)?;
    let bin = std::path::absolute(build_debug_cli()?)?;
    let corpus = smalltalk_tests::write_two_domain_corpus(&dir);
    let config = write_config(&dir, args.expert_steps)?;
    println!("== reference run (cargo xtask pipeline)");
    let reference = dir.join("reference");
    crate::pipeline::run(PipelineArgs::new(&reference, &corpus, &config, 2, &bin))?;

    println!("== Kubernetes: the expert Indexed Job's command with JOB_COMPLETION_INDEX=1");
    check_k8s(&bin, &dir, &reference, &corpus, &config)?;

    println!("== Slurm: launch, TERM one expert task mid-training, compare with the reference");
    let sinfo = Command::new("sinfo").arg("--noheader").output();
    match sinfo {
        Ok(o) if o.status.success() && !o.stdout.is_empty() => {}
        _ => bail!("Slurm is not running here (sinfo failed): start it with .ci/slurm-up.sh"),
    }
    check_slurm(&bin, &dir, &reference, &corpus, &config, &args)?;
    println!("cluster check passed");
    Ok(())
}

/// The tiny config with long experts, frequent checkpoints and a `[cluster]` table that gives
/// the training tasks one core each and the other stages both, as the pipeline does.
fn write_config(dir: &Path, expert_steps: i64) -> Result<PathBuf> {
    let mut cfg: toml::Table = toml::from_str(smalltalk_tests::TINY_CONFIG)?;
    // The pipeline routes on M̂ = 32 and reports the tokens after it: full rows longer than 32.
    let data = cfg["data"].as_table_mut().context("data")?;
    data.insert("seq_len".into(), 64.into());
    data.insert("packing".into(), "concat".into());
    // The pipeline evaluates the test split too.
    let split = cfg["data"]["split"]
        .as_table()
        .context("data.split")?
        .clone();
    let mut split = split;
    split.insert("test".into(), 0.1.into());
    cfg["data"]
        .as_table_mut()
        .context("data")?
        .insert("split".into(), split.into());
    let train = cfg["experts"]["train"]
        .as_table()
        .context("experts.train")?
        .clone();
    let mut train = train;
    train.insert("total_steps".into(), expert_steps.into());
    train.insert("checkpoint_every".into(), 50.into());
    cfg["experts"]
        .as_table_mut()
        .context("experts")?
        .insert("train".into(), train.into());
    let cluster: toml::Table = toml::from_str(
        "cpus = 2\nstop_seconds = 30\n[stage.experts]\ncpus = 1\n[stage.dense]\ncpus = 1\n\
         [stage.dense-steps]\ncpus = 1\n",
    )?;
    cfg.insert("cluster".into(), cluster.into());
    let path = dir.join("run.toml");
    std::fs::write(&path, toml::to_string(&cfg)?)?;
    Ok(path)
}

fn check_k8s(bin: &Path, dir: &Path, reference: &Path, corpus: &Path, config: &Path) -> Result<()> {
    let run = dir.join("k8s-run");
    std::fs::create_dir_all(&run)?;
    for part in ["tokenizer.json", "data", "routers", "partition"] {
        run_capture(
            Command::new("cp")
                .arg("-r")
                .arg(reference.join(part))
                .arg(&run),
        )?;
    }
    run_capture(&mut launch_command(bin, "k8s", &run, config, corpus))?;
    let text = std::fs::read_to_string(run.join("k8s/03-experts.json"))?;
    let job: k8s::Job = serde_json::from_str(&text).context("03-experts.json")?;
    let script = k8s::container_script(&job).context("the experts Job has no command")?;
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .env("JOB_COMPLETION_INDEX", "1")
        .output()?;
    ensure!(
        out.status.success(),
        "the expert Job's command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        !run.join("experts/expert-00").exists(),
        "index 1 must train expert 1 only"
    );
    same_weights(
        &reference.join("experts/expert-01"),
        &run.join("experts/expert-01"),
    )?;
    println!("   expert 1 trained from JOB_COMPLETION_INDEX=1, identical to the reference");
    Ok(())
}

fn check_slurm(
    bin: &Path,
    dir: &Path,
    reference: &Path,
    corpus: &Path,
    config: &Path,
    args: &ClusterCheckArgs,
) -> Result<()> {
    let run = dir.join("slurm-run");
    let launch = || -> Result<Vec<serde_json::Value>> {
        let out = run_capture(launch_command(bin, "slurm", &run, config, corpus).arg("--json"))?;
        Ok(out
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    };
    let submitted = launch()?;
    let stages: Vec<&str> = submitted
        .iter()
        .filter_map(|s| s["stage"].as_str())
        .collect();
    ensure!(stages.len() == StageName::ALL.len(), "submitted {stages:?}");
    let array = submitted
        .iter()
        .find(|s| s["stage"] == "experts")
        .and_then(|s| s["job_id"].as_str())
        .context("no experts job")?
        .to_string();
    println!("   submitted {} jobs; experts array {array}", stages.len());
    // TERM expert 1 once it is a third of the way through.
    let metrics = run.join("experts/expert-01/metrics.jsonl");
    let started = Instant::now();
    loop {
        ensure!(
            started.elapsed().as_secs() < args.timeout,
            "expert 1 never started"
        );
        let step = last_step(&metrics);
        if step >= (args.expert_steps as u64) / 3 {
            ensure!(
                step < args.expert_steps as u64,
                "expert 1 finished before the TERM: raise --expert-steps"
            );
            run_capture(
                Command::new("scancel")
                    .arg("--signal=TERM")
                    .arg(format!("{array}_1")),
            )?;
            println!("   sent TERM to task {array}_1 at step {step}");
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for_queue(&run, args.timeout)?;
    let log = logs_of(&run, "experts-1-")?;
    ensure!(
        log.contains("stopped on request: requeueing"),
        "expert 1 did not requeue:\n{log}"
    );
    // The resumed attempt prints `expert 1: steps <first>..<last> in …`.
    let resumed = log
        .lines()
        .filter_map(|l| {
            l.strip_prefix("expert 1: steps ")?
                .split("..")
                .next()?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(1)
        - 1;
    ensure!(
        resumed > 0,
        "expert 1 did not resume from a checkpoint:\n{log}"
    );
    println!("   expert 1 requeued and resumed from step {resumed}");
    compare_runs(reference, &run)?;
    println!("   eval.json, eval-test.json and every expert equal the reference; report written");

    ensure!(
        launch()?.iter().all(|s| s["submitted"] == 0),
        "a finished run submitted jobs again"
    );
    for f in ["eval.json", "eval-test.json", "report.md"] {
        std::fs::remove_file(run.join(f))?;
    }
    let again = launch()?;
    let stages: Vec<&str> = again.iter().filter_map(|s| s["stage"].as_str()).collect();
    ensure!(
        stages == ["eval", "report"],
        "resubmitted {stages:?}, not just eval and report"
    );
    wait_for_queue(&run, args.timeout)?;
    compare_runs(reference, &run)?;
    println!("   resubmitting submitted only eval and report; results equal again");
    Ok(())
}

/// `smalltalk launch <kind> RUN --config … --corpus … --bin <bin>`.
fn launch_command(bin: &Path, kind: &str, run: &Path, config: &Path, corpus: &Path) -> Command {
    let mut c = Command::new(bin);
    c.args(["launch", kind])
        .arg(run)
        .arg("--config")
        .arg(config);
    c.arg("--corpus").arg(corpus).arg("--bin").arg(bin);
    c
}

fn last_step(metrics: &Path) -> u64 {
    std::fs::read_to_string(metrics)
        .unwrap_or_default()
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v["step"].as_u64())
        .unwrap_or(0)
}

/// Wait until no job of the run is queued, then fail if a unit is not done.
fn wait_for_queue(run: &Path, timeout: u64) -> Result<()> {
    let spec = RunSpec::load(run)?.context("no launch.json")?;
    let started = Instant::now();
    while !smalltalk_launch::slurm::queue(&spec)?.is_empty() {
        ensure!(
            started.elapsed().as_secs() < timeout,
            "the run's jobs did not finish in {timeout} s"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let rows = status::run_status(run, spec.experts);
    let open: Vec<_> = rows
        .iter()
        .filter(|r| r.state != status::State::Done)
        .collect();
    ensure!(
        open.is_empty(),
        "not done after the queue emptied:\n{}",
        status::describe(&rows)
    );
    Ok(())
}

/// Every scheduler log of the run whose name starts with `prefix`, concatenated.
fn logs_of(run: &Path, prefix: &str) -> Result<String> {
    let mut text = String::new();
    for e in std::fs::read_dir(run.join("slurm/logs"))? {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with(prefix) {
            text.push_str(&std::fs::read_to_string(e.path())?);
        }
    }
    Ok(text)
}

fn compare_runs(reference: &Path, run: &Path) -> Result<()> {
    for f in ["eval.json", "eval-test.json"] {
        let a: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(reference.join(f))?)?;
        let b: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join(f))?)?;
        ensure!(a == b, "{f} differs from the reference's");
    }
    ensure!(run.join("report.md").exists(), "no report.md");
    for e in 0..2 {
        let d = format!("experts/expert-{e:02}");
        same_weights(&reference.join(&d), &run.join(&d))?;
    }
    Ok(())
}

/// The final checkpoints' weights of two training runs are equal byte for byte.
fn same_weights(a: &Path, b: &Path) -> Result<()> {
    let last = |d: &Path| -> Result<PathBuf> {
        let mut steps: Vec<PathBuf> = std::fs::read_dir(d.join("checkpoints"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        steps.sort();
        Ok(steps
            .pop()
            .context("no checkpoint")?
            .join("model.safetensors"))
    };
    let (x, y) = (std::fs::read(last(a)?)?, std::fs::read(last(b)?)?);
    ensure!(x == y, "{} and {} differ", a.display(), b.display());
    Ok(())
}
