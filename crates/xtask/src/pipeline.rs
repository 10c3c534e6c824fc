//! `cargo xtask pipeline`: the stages on the embedded corpus, through the `smalltalk` binary.
//!
//! Each stage writes into the run folder and is skipped when its output is complete, so an
//! interrupted pipeline resumes where it stopped.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use smalltalk_stage::layout::StageSeconds;
use smalltalk_stage::RunLayout;

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
    /// Settings preset: `cpu` (configs/pipeline-cpu.toml, about 7 minutes on 2 cores) or
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
    println!("expected time on 2 cores with the default config, after the build: about 7 minutes (data 0.1, routers 2, partition 0.6, experts + dense 2, eval 2.5)");
    let bin = build_cli(&features)?;
    std::fs::create_dir_all(&args.out)?;
    let run = RunLayout::new(&args.out);
    let data_dir = run.data();
    let tokenizer = run.tokenizer();
    let common = |cmd: &mut Command| {
        cmd.arg("--backend").arg(&args.backend);
    };

    let t = Instant::now();
    if tokenizer.exists() {
        println!("[1/10] tokenizer: {} exists, skipped", tokenizer.display());
    } else {
        println!("[1/10] tokenizer: training byte-level BPE");
        let mut cmd = Command::new(&bin);
        common(&mut cmd);
        cmd.args(["data", "tokenizer", "--corpus"])
            .arg(&corpus)
            .arg("--config")
            .arg(&config)
            .arg("--out")
            .arg(&tokenizer);
        run_shown(&mut cmd)?;
    }
    println!("[2/10] data: tokenize, pack and shard");
    let mut cmd = Command::new(&bin);
    common(&mut cmd);
    cmd.args(["data", "build", "--corpus"])
        .arg(&corpus)
        .arg("--config")
        .arg(&config);
    cmd.arg("--tokenizer")
        .arg(&tokenizer)
        .arg("--out")
        .arg(&data_dir);
    run_shown(&mut cmd)?;
    let routers_dir = run.routers();
    let mut times = vec![StageSeconds {
        stage: "tokenizer + data".into(),
        seconds: t.elapsed().as_secs_f64(),
    }];
    let stage_cmd = |build: &dyn Fn(&mut Command)| {
        let mut cmd = Command::new(&bin);
        common(&mut cmd);
        build(&mut cmd);
        cmd
    };
    let e = args.experts.to_string();
    let stage = |times: &mut Vec<StageSeconds>, name: &str, n: usize, what: &str, cmd: Command| {
        run_stage(times, name, &format!("[{n}/10] {name}: {what}"), cmd)
    };
    stage(
        &mut times,
        "routers",
        3,
        "E routers by hard EM",
        stage_cmd(&|cmd| {
            cmd.args(["routers", "train", "--data"])
                .arg(&data_dir)
                .arg("--config")
                .arg(&config);
            cmd.args(["--experts", &e, "--out"]).arg(&routers_dir);
        }),
    )?;
    let partition_dir = run.partition();
    stage(
        &mut times,
        "partition",
        4,
        "the training rows into E equal expert parts",
        stage_cmd(&|cmd| {
            cmd.args(["partition", "--data"])
                .arg(&data_dir)
                .arg("--routers")
                .arg(&routers_dir);
            cmd.arg("--config")
                .arg(&config)
                .arg("--out")
                .arg(&partition_dir);
        }),
    )?;
    // The experts and both dense baselines are independent jobs: two at a time, one core
    // each (faster than one at a time on two cores for small models), logs in OUT/logs/.
    let experts_dir = run.experts();
    let started = Instant::now();
    println!(
        "[5/10] experts and dense baselines, {} at a time (logs in {}):",
        args.jobs,
        args.out.join("logs").display()
    );
    let mut jobs = Vec::new();
    let train = |args: &[&str]| {
        let mut cmd = Command::new(&bin);
        common(&mut cmd);
        cmd.arg("--json").args(args).arg("--data").arg(&data_dir);
        cmd.arg("--config")
            .arg(&config)
            .arg("--out")
            .arg(&experts_dir);
        cmd
    };
    for i in 0..args.experts {
        let mut cmd = train(&["expert", "train", "--expert", &i.to_string()]);
        cmd.arg("--partition").arg(&partition_dir);
        jobs.push(Job {
            label: format!("expert-{i:02}"),
            cmd,
            cost: 1.0,
            capture: None,
        });
    }
    for (label, scaling) in [("dense", "batch"), ("dense-steps", "steps")] {
        let cmd = train(&["dense", "train", "--experts", &e, "--scaling", scaling]);
        let cost = args.experts as f64;
        jobs.push(Job {
            label: label.into(),
            cmd,
            cost,
            capture: None,
        });
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
    for (n, split, eval_json) in [
        (8, "validation", run.eval_json()),
        (9, "test", run.eval_test_json()),
    ] {
        if eval_json.exists() {
            println!(
                "[{n}/10] eval: {} exists, skipped (delete it to evaluate again)",
                eval_json.display()
            );
            continue;
        }
        let what = format!("routed evaluation on the {split} split");
        let name = if split == "test" { "eval-test" } else { "eval" };
        stage(
            &mut times,
            name,
            n,
            &what,
            stage_cmd(&|cmd| {
                cmd.args(["eval", "--data"]).arg(&data_dir);
                cmd.arg("--routers")
                    .arg(&routers_dir)
                    .arg("--experts")
                    .arg(&experts_dir);
                cmd.args(["--split", split, "--prefix", "32", "--prefix-sweep"]);
                cmd.args(["8,16,64,128,256", "--out"]).arg(&eval_json);
            }),
        )?;
    }
    smalltalk_stage::atomic::write_file(
        &run.stage_seconds(),
        serde_json::to_string_pretty(&times)?.as_bytes(),
    )?;
    println!("[10/10] report");
    let mut cmd = Command::new(&bin);
    cmd.args(["report", "--run"])
        .arg(&args.out)
        .arg("--config")
        .arg(&config);
    run_shown(&mut cmd)?;
    println!(
        "pipeline done in {:.1}s; report in {}",
        t.elapsed().as_secs_f64(),
        run.report_md().display()
    );
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
