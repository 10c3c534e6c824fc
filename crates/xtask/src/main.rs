//! # xtask
//!
//! Developer tasks run with `cargo xtask …` (alias in `.cargo/config.toml`):
//! - `cargo xtask pipeline`: every implemented stage on the embedded corpus, through the real
//!   `smalltalk` binary, resumable (finished stages are skipped).
//! - `cargo xtask bench data`: data-stage throughput and memory next to the Python `tokenizers`
//!   package in the same run.
//! - `cargo xtask bench lm`: decoder-LM training/scoring throughput next to PyTorch
//!   (`bench/lm_torch.py`) in the same run.
//! - `cargo xtask bench partition`: the balanced greedy assignment on a 10M × 32 score matrix
//!   (in process, one thread) and its gap to the exact optimum.
//!
//! Depends only on `anyhow`, `clap`, `serde_json`, `flate2` and `smalltalk-partition` (for the
//! in-process partition benchmark); otherwise it drives the CLI as a user would.

mod bench;
mod bench_lm;
mod bench_partition;
mod pipeline;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// SmallTalk developer tasks.
#[derive(Debug, Parser)]
#[command(name = "xtask")]
struct Xtask {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Run the pipeline on the embedded corpus (today: tokenizer + data stage).
    Pipeline(pipeline::PipelineArgs),
    /// Benchmarks (not tests): measured against the reference implementation in the same run.
    #[command(subcommand)]
    Bench(bench::BenchTask),
}

fn main() -> Result<()> {
    match Xtask::parse().task {
        Task::Pipeline(args) => pipeline::run(args),
        Task::Bench(task) => bench::run(task),
    }
}
