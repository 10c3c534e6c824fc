//! # smalltalk
//!
//! The command-line interface of SmallTalk, a Rust implementation of the asynchronous mixture of
//! language models ("No Need to Talk", Filippova et al., ICLR 2025). A thin layer over the
//! library crates: each subcommand parses flags and a TOML config, calls one stage, and reports
//! (a progress bar for people, `--json` for scripts).

mod alloc_tuning;
mod config;
mod data_cmd;
mod lm_cmd;
mod report;

use anyhow::Result;
use clap::{Parser, Subcommand};
use smalltalk_lm::backend::BackendKind;

/// SmallTalk: train a mixture of language models that never talk to each other.
///
/// Stages, in order: `data` (tokenize and shard a corpus). Routers, partition, experts and
/// evaluation arrive with later releases.
#[derive(Debug, Parser)]
#[command(name = "smalltalk", version, propagate_version = true)]
struct Cli {
    /// Compute backend: flex (CPU, default), cuda or wgpu. Must be compiled in (cargo features).
    #[arg(long, global = true, env = "SMALLTALK_BACKEND", default_value = "flex")]
    backend: String,

    /// Print machine-readable JSON (one object per line) instead of human output.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The data stage: train a tokenizer, build packed token shards, inspect a dataset.
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// The decoder language model on its own (today: `lm bench`, training/scoring throughput).
    #[command(subcommand)]
    Lm(lm_cmd::LmCommand),
    /// List the compute backends compiled into this binary.
    Backends,
}

fn main() {
    alloc_tuning::apply();
    let cli = Cli::parse();
    if let Err(err) = run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let backend = BackendKind::select(&cli.backend)?;
    let out = report::Output::new(cli.json);
    match cli.command {
        Command::Data(cmd) => data_cmd::run(cmd, &out),
        Command::Lm(cmd) => lm_cmd::run(cmd, backend, &out),
        Command::Backends => {
            let compiled: Vec<&str> = BackendKind::compiled()
                .into_iter()
                .map(BackendKind::name)
                .collect();
            let all: Vec<&str> = BackendKind::ALL
                .into_iter()
                .map(BackendKind::name)
                .collect();
            out.result(
                &serde_json::json!({"selected": backend.name(), "compiled": compiled, "known": all}),
                || format!("compiled backends: {} (selected: {backend})", compiled.join(", ")),
            );
            Ok(())
        }
    }
}
