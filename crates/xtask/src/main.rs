//! # xtask
//!
//! Developer tasks run with `cargo xtask …` (alias in `.cargo/config.toml`):
//! - `cargo xtask pipeline`: every implemented stage on the embedded corpus, through the real
//!   `smalltalk` binary, resumable (finished stages are skipped).
//! - `cargo xtask crash-test`: every long stage killed (SIGKILL, SIGTERM) at seeded instants
//!   on the tiny config, rerun and compared file by file with an uninterrupted run.
//! - `cargo xtask bench data`: data-stage throughput and memory next to the Python `tokenizers`
//!   package in the same run.
//! - `cargo xtask bench lm`: decoder-LM training/scoring throughput next to PyTorch
//!   (`bench/lm_torch.py`) in the same run.
//! - `cargo xtask bench matmul`: matrix-product GFLOP/s at each preset's training shapes next to
//!   `F.linear` (`bench/matmul_torch.py`): the roofline of `bench lm`.
//! - `cargo xtask bench generate`: KV-cached generation (prefill / decode tokens/s, the
//!   copy-bandwidth roofline, routing overhead) next to `transformers` `generate`
//!   (`bench/generate_hf.py`) on the same weights.
//! - `cargo xtask cluster-check`: `smalltalk launch slurm` against a live Slurm (TERM, requeue,
//!   resume, resubmit) and the Kubernetes expert Job's command, compared with the pipeline.
//! - `cargo xtask study`: the regime study (mixtures under every routing method and both dense
//!   protocols over budgets; `results/study-cpu/`).
//! - `cargo xtask bench partition`: the balanced greedy assignment on a 10M × 32 score matrix
//!   (in process, one thread) and its gap to the exact optimum.
//!
//! Depends only on `anyhow`, `clap`, `serde_json`, `toml`, `flate2`, `libc`, `tempfile`,
//! `smalltalk-partition` (for the in-process partition benchmark), `smalltalk-launch` (the run's
//! stages and commands, the cluster check), `smalltalk-report` (the
//! study's typed results and plots) and `smalltalk-tests` (the crash test's tiny fixtures);
//! otherwise it drives the CLI as a user would.

mod bench;
mod bench_generate;
mod bench_lm;
mod bench_matmul;
mod bench_partition;
mod cluster_check;
mod crash_test;
mod jobs;
mod pipeline;
mod study;
mod tree_compare;
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
    /// Run the pipeline on the embedded corpus: every stage, both dense protocols, evaluation on
    /// validation and test, the report.
    Pipeline(pipeline::PipelineArgs),
    /// Kill every long stage at seeded instants, rerun it, compare with an uninterrupted run.
    ///
    /// On the tiny config and corpus of `smalltalk-tests`, for each stage in order (`data
    /// build`, `routers train`, `partition`, `expert train --expert 0`, `dense train --experts
    /// 2`; inputs are the earlier stages' reference outputs): run it uninterrupted into a
    /// reference folder (wall time T) and once more as a control; then, at N seeded instants
    /// (one uniformly random instant in each of N equal slices of [0.05·T, T]), start it into a
    /// fresh folder, SIGKILL it, rerun it to completion and compare. Stages that checkpoint on a
    /// stop (routers, partition, expert, dense) also get SIGTERM (exit status 143) at
    /// --term-instants instants. A comparison needs the same relative paths and equal files:
    /// `.lock` files are skipped, JSON and JSON lines are compared without their timing keys
    /// (`seconds`, `elapsed_s`, `tokens_per_s`, `eta_s`), and a leftover temporary (`*.tmp-*`)
    /// is a difference. Prints a table and a summary; fails naming the first differing file
    /// and line. Uses the dev-profile `smalltalk` binary; about 30 s on 2 cores after the build.
    CrashTest(crash_test::CrashTestArgs),
    /// The launchers against real schedulers on the tiny config: the Kubernetes expert Job's
    /// command with JOB_COMPLETION_INDEX set, and a live Slurm (start one with
    /// .ci/slurm-up.sh): submit, TERM an expert task mid-training, requeue and resume, compare
    /// with `cargo xtask pipeline`, resubmit. Fails when Slurm is not running.
    ClusterCheck(cluster_check::ClusterCheckArgs),
    /// The regime study: mixtures under every routing method and both dense protocols over
    /// budgets, on a labelled corpus; writes study.json, report.md and plots (see
    /// configs/study-cpu.toml; about 1.5 hours on 2 cores).
    Study(study::StudyArgs),
    /// Benchmarks (not tests): measured against the reference implementation in the same run.
    #[command(subcommand)]
    Bench(bench::BenchTask),
}

fn main() -> Result<()> {
    match Xtask::parse().task {
        Task::Pipeline(args) => pipeline::run(args),
        Task::CrashTest(args) => crash_test::run(args),
        Task::Study(args) => study::run(args),
        Task::ClusterCheck(args) => cluster_check::run(args),
        Task::Bench(task) => bench::run(task),
    }
}
