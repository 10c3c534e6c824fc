//! `cargo xtask pipeline`: the stages on the embedded corpus, through the `smalltalk` binary.
//!
//! Each stage writes into the run folder and is skipped when its output is complete, so an
//! interrupted pipeline resumes where it stopped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use smalltalk_launch::{RunSpec, StageName};
use smalltalk_stage::layout::StageSeconds;

use crate::jobs::{Job, Runner};
use crate::util::{build_cli, run_shown, workspace_root};

/// Pipeline options.
#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// Run folder (created; reused on rerun).
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Corpus (default: the embedded demo corpus).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// TOML config holding every stage's settings (default: the --preset's file).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Settings preset: `cpu` (configs/pipeline-cpu.toml, about 10 minutes on 2 cores) or
    /// `paper` (configs/pipeline-paper-gpu.toml: the paper's shapes and steps, for GPUs).
    #[arg(long, default_value = "cpu")]
    preset: String,
    /// Compute backend for the model stages (flex, cuda, wgpu); non-default ones are compiled in.
    #[arg(long, default_value = "flex")]
    backend: String,
    /// Number of routers / experts E.
    #[arg(long, default_value_t = 4)]
    experts: usize,
    /// Training jobs run at once (experts and dense baselines; they share the 2 cores).
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Also branch-train (BTM, c-BTM): the same experts and the paper's dense model started
    /// from this weights file (`[experts] init`; e.g. `smalltalk import hf`'s output) into
    /// OUT/experts-branched/, evaluated on validation into OUT/eval-branched.json; the report
    /// shows them next to the from-scratch ones.
    #[arg(long)]
    branch_from: Option<PathBuf>,
    /// A `smalltalk` binary to run instead of building the release one (CI passes the test
    /// build's).
    #[arg(long)]
    bin: Option<PathBuf>,
}

impl PipelineArgs {
    /// The pipeline of `corpus` with `config` and `experts` experts into `out` (2 jobs, flex),
    /// run by `bin`.
    pub fn new(out: &Path, corpus: &Path, config: &Path, experts: usize, bin: &Path) -> Self {
        Self {
            out: out.into(),
            corpus: Some(corpus.into()),
            config: Some(config.into()),
            preset: "cpu".into(),
            backend: "flex".into(),
            experts,
            jobs: 2,
            branch_from: None,
            bin: Some(bin.into()),
        }
    }
}

/// Run the pipeline.
pub fn run(args: PipelineArgs) -> Result<()> {
    let root = workspace_root();
    let corpus = args
        .corpus
        .unwrap_or_else(|| root.join("corpus/mix-small.jsonl.gz"));
    let preset_file = match args.preset.as_str() {
        "cpu" => "configs/pipeline-cpu.toml",
        "paper" => "configs/pipeline-paper-gpu.toml",
        other => anyhow::bail!("unknown --preset {other}: use cpu or paper"),
    };
    let config = args.config.unwrap_or_else(|| root.join(preset_file));
    let features: Vec<&str> = match args.backend.as_str() {
        "flex" => vec![],
        other => vec![other],
    };
    println!(
        "pipeline: corpus {}, run folder {}, backend {}",
        corpus.display(),
        args.out.display(),
        args.backend
    );
    println!(
        "stages: tokenizer, data, routers (EM), partition, experts, dense baselines (E× batch, E× steps), eval (validation, test), report"
    );
    println!("expected time on 2 cores with the default config, after the build: about 10 minutes (data 0.2, routers 4.7, partition 0.8, experts + dense 2, eval 2.5)");
    let bin = match &args.bin {
        Some(bin) => bin.clone(),
        None => build_cli(&features)?,
    };
    std::fs::create_dir_all(&args.out)?;
    // The same stages and commands as `smalltalk launch slurm` / `k8s`: one run folder layout.
    let spec = RunSpec {
        run: args.out.clone(),
        corpus: vec![corpus],
        config: config.clone(),
        experts: args.experts,
        backend: args.backend.clone(),
    };
    let run = spec.layout();
    let command = |argv: &[String]| {
        let mut cmd = Command::new(&bin);
        cmd.args(argv);
        cmd
    };
    let t = Instant::now();
    let data = spec.stage(StageName::Data).commands;
    if run.tokenizer().exists() {
        println!(
            "[1/10] tokenizer: {} exists, skipped",
            run.tokenizer().display()
        );
    } else {
        println!("[1/10] tokenizer: training byte-level BPE");
        run_shown(&mut command(&data[0]))?;
    }
    println!("[2/10] data: tokenize, pack and shard");
    run_shown(&mut command(&data[1]))?;
    let mut times = vec![StageSeconds {
        stage: "tokenizer + data".into(),
        seconds: t.elapsed().as_secs_f64(),
    }];
    for (n, name, what) in [
        (
            3,
            StageName::Routers,
            "E routers ([routers] method: EM by default)",
        ),
        (
            4,
            StageName::Partition,
            "the training rows into E equal expert parts",
        ),
    ] {
        let headline = format!("[{n}/10] {name}: {what}");
        let cmd = command(&spec.stage(name).commands[0]);
        run_stage(&mut times, name.as_str(), &headline, cmd)?;
    }
    // The experts and both dense baselines are independent jobs: two at a time, one core
    // each (faster than one at a time on two cores for small models), logs in OUT/logs/.
    let started = Instant::now();
    println!(
        "[5/10] experts and dense baselines, {} at a time (logs in {}):",
        args.jobs,
        args.out.join("logs").display()
    );
    let mut jobs = Vec::new();
    let job = |label: String, mut cmd: Command, cost: f64| {
        cmd.arg("--json");
        Job {
            label,
            cmd,
            cost,
            capture: None,
        }
    };
    let expert = &spec.stage(StageName::Experts).commands[0];
    for i in 0..args.experts {
        let mut cmd = command(expert);
        cmd.args(["--expert", &i.to_string()]);
        jobs.push(job(format!("expert-{i:02}"), cmd, 1.0));
    }
    for name in [StageName::Dense, StageName::DenseSteps] {
        let cmd = command(&spec.stage(name).commands[0]);
        jobs.push(job(name.as_str().into(), cmd, args.experts as f64));
    }
    jobs.sort_by(|a, b| b.cost.total_cmp(&a.cost));
    let total = jobs.iter().map(|j| j.cost).sum();
    let mut runner = Runner::new(args.jobs, 2, args.out.join("logs"), total)?;
    runner.phase(
        "experts (one independent job each) and dense baselines (E× batch, E× steps)",
        jobs,
    )?;
    times.push(StageSeconds {
        stage: "experts + dense".into(),
        seconds: started.elapsed().as_secs_f64(),
    });
    if let Some(init) = &args.branch_from {
        let started = Instant::now();
        branch_train(&spec, &bin, init, &mut runner)?;
        times.push(StageSeconds {
            stage: "branch-trained experts + dense, eval".into(),
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    let evals = spec.stage(StageName::Eval).commands;
    // The mixture's manifest (cheap: it reads records and hashes the weights) is written
    // every time, so that it describes the models that are there now.
    let headline = "[7/10] mixture: write mixture.json (members, checksums, routing, tokenizer)";
    run_stage(&mut times, "mixture", headline, command(&evals[0]))?;
    for ((n, name, split, eval_json), argv) in [
        (8, "eval", "validation", run.eval_json()),
        (9, "eval-test", "test", run.eval_test_json()),
    ]
    .into_iter()
    .zip(&evals[1..])
    {
        if eval_json.exists() {
            println!(
                "[{n}/10] eval: {} exists, skipped (delete it to evaluate again)",
                eval_json.display()
            );
            continue;
        }
        let headline = format!("[{n}/10] {name}: routed evaluation on the {split} split");
        run_stage(&mut times, name, &headline, command(argv))?;
    }
    smalltalk_stage::atomic::write_file(
        &run.stage_seconds(),
        serde_json::to_string_pretty(&times)?.as_bytes(),
    )?;
    println!("[10/10] report");
    run_shown(&mut command(&spec.stage(StageName::Report).commands[0]))?;
    println!(
        "pipeline done in {:.1}s; report in {}",
        t.elapsed().as_secs_f64(),
        run.report_md().display()
    );
    Ok(())
}

/// The experts and the paper's dense model again, started from `init`, into
/// `experts-branched/` with a config that says so (`config-branched.toml`), and their
/// evaluation on validation (`eval-branched.json`).
fn branch_train(spec: &RunSpec, bin: &Path, init: &Path, runner: &mut Runner) -> Result<()> {
    let run = spec.layout();
    let mut cfg: toml::Table = toml::from_str(&std::fs::read_to_string(&spec.config)?)?;
    let experts = cfg
        .entry("experts")
        .or_insert_with(|| toml::Value::Table(Default::default()));
    let init = std::path::absolute(init)?;
    experts
        .as_table_mut()
        .context("[experts] must be a table")?
        .insert("init".into(), init.display().to_string().into());
    let config = run.root().join("config-branched.toml");
    smalltalk_stage::atomic::write_file(&config, toml::to_string(&cfg)?.as_bytes())?;
    let branched = RunSpec {
        config,
        ..spec.clone()
    };
    // The stage commands with their experts folder (and the mixture's manifest) moved to
    // experts-branched/.
    let moved = |argv: Vec<String>| -> Command {
        let show = |p: PathBuf| p.display().to_string();
        let swaps = [
            (show(run.experts()), show(run.experts_branched())),
            (
                show(run.mixture()),
                show(run.experts_branched().join("mixture.json")),
            ),
        ];
        let mut cmd = Command::new(bin);
        cmd.args(argv.into_iter().map(|a| {
            swaps
                .iter()
                .find(|(from, _)| *from == a)
                .map_or(a, |(_, to)| to.clone())
        }));
        cmd
    };
    let mut jobs = Vec::new();
    for i in 0..spec.experts {
        let mut cmd = moved(branched.stage(StageName::Experts).commands.remove(0));
        cmd.args(["--expert", &i.to_string(), "--json"]);
        jobs.push(Job {
            label: format!("branched-expert-{i:02}"),
            cmd,
            cost: 1.0,
            capture: None,
        });
    }
    let mut cmd = moved(branched.stage(StageName::Dense).commands.remove(0));
    cmd.arg("--json");
    jobs.push(Job {
        label: "branched-dense".into(),
        cmd,
        cost: spec.experts as f64,
        capture: None,
    });
    jobs.sort_by(|a, b| b.cost.total_cmp(&a.cost));
    runner.phase(
        "branch-trained experts and dense (from [experts] init)",
        jobs,
    )?;
    if !run.eval_branched_json().exists() {
        let mut evals = branched.stage(StageName::Eval).commands;
        run_shown(&mut moved(evals.remove(0)))?;
        let mut eval = evals.remove(0);
        let out = eval.len() - 1;
        eval[out] = run.eval_branched_json().display().to_string();
        println!("      routed evaluation of the branch-trained mixture on validation");
        run_shown(&mut moved(eval))?;
    }
    Ok(())
}

/// Run one stage's command with its output shown, print and record its wall time.
fn run_stage(
    times: &mut Vec<StageSeconds>,
    name: &str,
    headline: &str,
    mut cmd: Command,
) -> Result<()> {
    let started = Instant::now();
    println!("{headline}");
    run_shown(&mut cmd)?;
    let seconds = started.elapsed().as_secs_f64();
    println!("      {name} took {seconds:.1}s");
    times.push(StageSeconds {
        stage: name.into(),
        seconds,
    });
    Ok(())
}
