//! `cargo xtask pipeline`: the stages on the embedded corpus, through the `smalltalk` binary.
//!
//! Each stage writes into the run folder and is skipped when its output is complete, so an
//! interrupted pipeline resumes where it stopped.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::Result;
use clap::Args;

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
    /// TOML config holding every stage's settings (default: configs/pipeline-cpu.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Compute backend for the model stages (flex, cuda, wgpu); non-default ones are compiled in.
    #[arg(long, default_value = "flex")]
    backend: String,
    /// Number of routers / experts E.
    #[arg(long, default_value_t = 4)]
    experts: usize,
}

/// Run the pipeline.
pub fn run(args: PipelineArgs) -> Result<()> {
    let root = workspace_root();
    let corpus = args
        .corpus
        .unwrap_or_else(|| root.join("corpus/mix-small.jsonl.gz"));
    let config = args
        .config
        .unwrap_or_else(|| root.join("configs/pipeline-cpu.toml"));
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
    println!("stages in this release: tokenizer, data, routers (EM), partition (experts and evaluation: not yet implemented)");
    println!("expected time on 2 cores after the build: about 1 minute for tokenizer + data, then the router EM and the partition (the default config prints their sizes; see configs/pipeline-cpu.toml)");
    let bin = build_cli(&features)?;
    std::fs::create_dir_all(&args.out)?;
    let data_dir = args.out.join("data");
    let tokenizer = args.out.join("tokenizer.json");
    let common = |cmd: &mut Command| {
        cmd.arg("--backend").arg(&args.backend);
    };

    let t = Instant::now();
    if tokenizer.exists() {
        println!("[1/4] tokenizer: {} exists, skipped", tokenizer.display());
    } else {
        println!("[1/4] tokenizer: training byte-level BPE");
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
    println!("[2/4] data: tokenize, pack and shard");
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
    let stage_time = |name: &str, started: Instant| {
        println!("      {name} took {:.1}s", started.elapsed().as_secs_f64())
    };

    let routers_dir = args.out.join("routers");
    let started = Instant::now();
    println!("[3/4] routers: {} routers by hard EM", args.experts);
    let mut cmd = Command::new(&bin);
    common(&mut cmd);
    cmd.args(["routers", "train", "--data"])
        .arg(&data_dir)
        .arg("--config")
        .arg(&config)
        .arg("--experts")
        .arg(args.experts.to_string())
        .arg("--out")
        .arg(&routers_dir);
    run_shown(&mut cmd)?;
    stage_time("routers", started);

    let partition_dir = args.out.join("partition");
    let started = Instant::now();
    println!(
        "[4/4] partition: the training rows into {} expert shards",
        args.experts
    );
    let mut cmd = Command::new(&bin);
    common(&mut cmd);
    cmd.args(["partition", "--data"])
        .arg(&data_dir)
        .arg("--routers")
        .arg(&routers_dir)
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&partition_dir);
    run_shown(&mut cmd)?;
    stage_time("partition", started);
    println!(
        "pipeline done in {:.1}s; dataset in {}, routers in {}, shards in {}",
        t.elapsed().as_secs_f64(),
        data_dir.display(),
        routers_dir.display(),
        partition_dir.display(),
    );
    Ok(())
}
