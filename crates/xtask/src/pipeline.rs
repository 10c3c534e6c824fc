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
    /// Number of experts (used by the router and expert stages once they exist).
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
    println!("stages available in this release: tokenizer, data (routers, partition, experts, evaluation: not yet implemented)");
    println!("expected time on 2 cores: about 1 minute after the build (the data stage is seconds; building the binary dominates)");
    let bin = build_cli(&features)?;
    std::fs::create_dir_all(&args.out)?;
    let data_dir = args.out.join("data");
    let tokenizer = args.out.join("tokenizer.json");
    let common = |cmd: &mut Command| {
        cmd.arg("--backend").arg(&args.backend);
    };

    let t = Instant::now();
    if tokenizer.exists() {
        println!("[1/2] tokenizer: {} exists, skipped", tokenizer.display());
    } else {
        println!("[1/2] tokenizer: training byte-level BPE");
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
    println!("[2/2] data: tokenize, pack and shard");
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
    println!(
        "pipeline done in {:.1}s; dataset in {} (experts planned: {})",
        t.elapsed().as_secs_f64(),
        data_dir.display(),
        args.experts
    );
    Ok(())
}
