//! `smalltalk lm …`: the decoder language model on its own. Today: `lm bench`, the training and
//! scoring throughput of a preset on random tokens (what `cargo xtask bench lm` and
//! `bench/gpu.sh` drive next to PyTorch).

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use smalltalk_lm::backend::BackendKind;
use smalltalk_lm::{BenchCase, BenchOptions, Precision};

use crate::backends::on_backend;
use crate::config::from_name;
use crate::progress::{BarProgress, BarStyle};
use crate::report::Output;

/// The LM commands.
#[derive(Debug, Subcommand)]
pub enum LmCommand {
    /// Measure training tokens/s and scoring sequences/s of a preset on random tokens.
    ///
    /// Training runs the real trainer (forward, backward, AdamW, global-norm clipping) for
    /// `--steps` steps after one warm-up step that is not counted; scoring runs `score_prefix`
    /// (no autodiff) on `--score-batch` rows of `--score-prefix` tokens, `--score-reps` times
    /// after one warm-up. One result per case (`--json`: one object per line).
    Bench(BenchArgs),
    /// The next-token logits of a weights file at every position of a text or token ids
    /// (for checking another implementation, e.g. transformers on an exported model).
    Logits(crate::hf_cmd::LogitsArgs),
}

/// `lm bench` flags.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Model preset (tiny, cpu-small, router-4.4m, router-110m, expert-335m, expert-1.3b).
    #[arg(long, default_value = "router-4.4m")]
    preset: String,
    /// Override the preset's vocabulary size.
    #[arg(long)]
    vocab: Option<usize>,
    /// Training sequences per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Training sequence length (predicted positions per row).
    #[arg(long, default_value_t = 256)]
    seq: usize,
    /// Measured training steps (one more warm-up step runs first).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Rows scored per `score_prefix` call.
    #[arg(long, default_value_t = 1024)]
    score_batch: usize,
    /// Tokens per scored row (the routing prefix M).
    #[arg(long, default_value_t = 32)]
    score_prefix: usize,
    /// Measured scoring calls (one more warm-up call runs first).
    #[arg(long, default_value_t = 3)]
    score_reps: usize,
    /// Cases to run: train (training targets per second), score (scored sequences per second).
    #[arg(long, value_parser = from_name::<BenchCase>, value_delimiter = ',', default_value = "train,score")]
    cases: Vec<BenchCase>,
    /// Compute precision: full (f32), or bf16 (bf16 matrix products and attention over f32
    /// master weights; for GPU backends, runs on flex too, slowly, through f32 conversions).
    #[arg(long, value_parser = from_name::<Precision>, default_value = "full")]
    precision: Precision,
}

/// Run an `lm` command on `backend`.
pub fn run(cmd: LmCommand, backend: BackendKind, out: &Output) -> Result<()> {
    let args = match cmd {
        LmCommand::Bench(args) => args,
        LmCommand::Logits(args) => return crate::hf_cmd::logits(args, backend, out),
    };
    let opts = BenchOptions {
        cases: args.cases,
        precision: args.precision,
        preset: args.preset,
        vocab: args.vocab,
        batch: args.batch,
        seq: args.seq,
        steps: args.steps,
        score_batch: args.score_batch,
        score_prefix: args.score_prefix,
        score_reps: args.score_reps,
    };
    let mut progress = BarProgress::new(out.is_json(), BarStyle::Steps);
    let (results, name) = on_backend!(backend, AB, name => {
        (smalltalk_lm::bench_cases::<AB>(&opts, &Default::default(), &mut progress), name)
    });
    let results = results.with_context(|| format!("benchmarking preset {}", opts.preset))?;
    for result in results {
        let mut value = serde_json::to_value(&result)?;
        value["backend"] = name.into();
        value["mallopt"] = smalltalk_lm::alloc_tuning::applied().into();
        out.result(&value, || result.describe(name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        lm: LmCommand,
    }

    #[cfg(feature = "flex")]
    #[test]
    fn tiny_bench_runs_both_cases_from_flags() {
        let cli = Cli::parse_from([
            "lm",
            "bench",
            "--preset",
            "tiny",
            "--batch",
            "2",
            "--seq",
            "8",
            "--steps",
            "1",
            "--score-batch",
            "4",
            "--score-prefix",
            "4",
            "--score-reps",
            "1",
        ]);
        run(cli.lm, BackendKind::Flex, &Output::new(true)).unwrap();
    }

    #[test]
    fn flags_default_to_the_library_defaults() {
        let LmCommand::Bench(args) = Cli::parse_from(["lm", "bench"]).lm else {
            panic!("lm bench parses as Bench")
        };
        let d = BenchOptions::default();
        assert_eq!(
            (args.preset, args.batch, args.seq, args.steps),
            (d.preset, d.batch, d.seq, d.steps)
        );
        assert_eq!(
            (args.score_batch, args.score_prefix, args.score_reps),
            (d.score_batch, d.score_prefix, d.score_reps)
        );
        assert_eq!(args.cases, [BenchCase::Train, BenchCase::Score]);
        assert_eq!(args.precision, Precision::Full);
    }
}
