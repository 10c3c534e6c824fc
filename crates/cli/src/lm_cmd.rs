//! `smalltalk lm …`: the decoder language model on its own. Today: `lm bench`, the training and
//! scoring throughput of a preset on random tokens (what `cargo xtask bench lm` and
//! `bench/gpu.sh` drive next to PyTorch).

use anyhow::{Context, Result};
use clap::Subcommand;
use smalltalk_lm::backend::BackendKind;
use smalltalk_lm::BenchOptions;

use crate::backends::on_backend;
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
    Bench(BenchOptions),
    /// The next-token logits of a weights file at every position of a text or token ids
    /// (for checking another implementation, e.g. transformers on an exported model).
    Logits(crate::hf_cmd::LogitsArgs),
}

/// Run an `lm` command on `backend`.
pub fn run(cmd: LmCommand, backend: BackendKind, out: &Output) -> Result<()> {
    let opts = match cmd {
        LmCommand::Bench(opts) => opts,
        LmCommand::Logits(args) => return crate::hf_cmd::logits(args, backend, out),
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
        value["cpu_isa"] = smalltalk_lm::fused::isa::Isa::active().name().into();
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
        let LmCommand::Bench(opts) = Cli::parse_from(["lm", "bench"]).lm else {
            panic!("lm bench parses as Bench")
        };
        assert_eq!(opts, BenchOptions::default());
        let LmCommand::Bench(opts) =
            Cli::parse_from(["lm", "bench", "--cases", "score", "--precision", "f32"]).lm
        else {
            panic!("lm bench parses as Bench")
        };
        assert_eq!(opts.cases, [smalltalk_lm::BenchCase::Score]);
        assert_eq!(opts.precision, smalltalk_lm::Precision::Full);
    }
}
