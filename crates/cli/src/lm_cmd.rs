//! `smalltalk lm …`: the decoder language model on its own. Today: `lm bench`, the training and
//! scoring throughput of a preset on random tokens (what `cargo xtask bench lm` and
//! `bench/gpu.sh` drive next to PyTorch).

use std::ops::ControlFlow;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};
use smalltalk_lm::backend::BackendKind;
use smalltalk_lm::burn::tensor::backend::AutodiffBackend;
use smalltalk_lm::rng::SplitMix64;
use smalltalk_lm::{
    score_prefix, Lm, LmConfig, Precision, ScoreOptions, StepMetrics, TrainConfig, TrainObserver,
    Trainer, VecSource,
};

use crate::progress::{BarProgress, BarStyle};
use crate::report::{peak_rss_bytes, Output};
use smalltalk_stage::stats::min_median;
use smalltalk_stage::Progress;

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
}

/// Which measurements `lm bench` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchCase {
    /// Training throughput (targets per second).
    Train,
    /// Scoring throughput (sequences per second).
    Score,
}

/// Compute precision (parameters and optimizer state are f32 either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// Compute in f32.
    #[value(alias = "f32")]
    Full,
    /// bf16 matrix products and attention over f32 master weights (GPU backends; runs on
    /// flex too, slowly, through f32 conversions).
    Bf16,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::Full => Precision::Full,
            PrecisionArg::Bf16 => Precision::Bf16,
        }
    }
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
    /// Cases to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [BenchCase::Train, BenchCase::Score])]
    cases: Vec<BenchCase>,
    /// Compute precision.
    #[arg(long, value_enum, default_value_t = PrecisionArg::Full)]
    precision: PrecisionArg,
}

/// Run an `lm` command on `backend`.
pub fn run(cmd: LmCommand, backend: BackendKind, out: &Output) -> Result<()> {
    match cmd {
        LmCommand::Bench(args) => bench(args, backend, out),
    }
}

fn bench(args: BenchArgs, backend: BackendKind, out: &Output) -> Result<()> {
    let mut overrides = toml::Table::new();
    if let Some(v) = args.vocab {
        overrides.insert("vocab_size".into(), toml::Value::Integer(v as i64));
    }
    let needed = args.seq.max(args.score_prefix);
    let base = LmConfig::preset(&args.preset).with_context(|| format!("preset {}", args.preset))?;
    if base.max_seq_len < needed {
        overrides.insert("max_seq_len".into(), toml::Value::Integer(needed as i64));
    }
    let cfg =
        LmConfig::from_preset_with_overrides(&args.preset, &overrides).context("model config")?;
    let results = match backend {
        #[cfg(feature = "flex")]
        BackendKind::Flex => run_cases::<smalltalk_lm::CpuTrainBackend>(&args, &cfg, "flex", out)?,
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => run_cases::<
            smalltalk_lm::burn::backend::Autodiff<smalltalk_lm::CudaF32>,
        >(&args, &cfg, "cuda", out)?,
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => run_cases::<
            smalltalk_lm::burn::backend::Autodiff<smalltalk_lm::burn::backend::Wgpu>,
        >(&args, &cfg, "wgpu", out)?,
        #[allow(unreachable_patterns)]
        other => bail!("backend {other} is not compiled into this binary"),
    };
    for (value, human) in results {
        out.result(&value, || human);
    }
    Ok(())
}

/// Random token ids below `vocab`, `n` of them, from a fixed seed.
fn random_tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| rng.below(vocab as u64) as u32).collect()
}


/// Records the wall time of each training step.
struct StepTimer {
    last: Instant,
    seconds: Vec<f64>,
    tokens: u64,
    loss: f64,
}

impl TrainObserver for StepTimer {
    fn on_start(&mut self, _start_step: usize, _total_steps: usize) {
        self.last = Instant::now();
    }

    fn on_step(&mut self, m: &StepMetrics) -> ControlFlow<()> {
        let now = Instant::now();
        self.seconds
            .push(now.duration_since(self.last).as_secs_f64());
        self.last = now;
        self.tokens = m.tokens;
        self.loss = m.loss;
        ControlFlow::Continue(())
    }
}

type Case = (Value, String);

fn run_cases<AB: AutodiffBackend>(
    args: &BenchArgs,
    cfg: &LmConfig,
    backend: &str,
    out: &Output,
) -> Result<Vec<Case>> {
    let device = AB::Device::default();
    let mut results = Vec::new();
    for case in &args.cases {
        let result = match case {
            BenchCase::Train => bench_train::<AB>(args, cfg, backend, &device, out)?,
            BenchCase::Score => bench_score::<AB::InnerBackend>(args, cfg, backend, &device, out)?,
        };
        results.push(result);
    }
    Ok(results)
}

fn bench_train<AB: AutodiffBackend>(
    args: &BenchArgs,
    cfg: &LmConfig,
    backend: &str,
    device: &AB::Device,
    out: &Output,
) -> Result<Case> {
    if args.steps == 0 || args.batch == 0 {
        bail!("--steps and --batch must be positive");
    }
    let row_len = args.seq + 1;
    let total_steps = args.steps + 1;
    let tokens = random_tokens(args.batch * total_steps * row_len, cfg.vocab_size, 1);
    let source = VecSource::new(tokens, row_len, None);
    let train = TrainConfig {
        total_steps,
        batch_size: args.batch,
        micro_batch_size: 0,
        prefix_len: None,
        warmup_steps: 1,
        checkpoint_every: 0,
        keep_checkpoints: 1,
        precision: args.precision.into(),
        ..TrainConfig::router_paper()
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir =
        std::env::temp_dir().join(format!("smalltalk-lm-bench-{}-{nanos}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut spinner = BarProgress::new(out.is_json(), BarStyle::Steps);
    spinner.start("train", 0, 0);
    spinner.update(
        0,
        &format!("{} x {} tokens, {} steps + 1 warm-up", args.batch, args.seq, args.steps),
    );
    let mut trainer =
        Trainer::<AB>::new(cfg, train, &dir, device).context("creating the trainer")?;
    let mut timer = StepTimer {
        last: Instant::now(),
        seconds: vec![],
        tokens: 0,
        loss: f64::NAN,
    };
    let run = trainer.run(&source, &mut timer);
    spinner.finish();
    let _ = std::fs::remove_dir_all(&dir);
    run.context("training")?;
    let measured = &timer.seconds[1..];
    let (best, median) = min_median(measured);
    let per_step = timer.tokens as f64;
    let value = json!({
        "case": "train", "backend": backend, "precision": Precision::from(args.precision).name(), "preset": args.preset, "vocab": cfg.vocab_size,
        "params": cfg.num_params(), "d_model": cfg.d_model, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "d_ff": cfg.d_ff,
        "batch": args.batch, "seq": args.seq, "steps": args.steps,
        "step_seconds": measured, "tokens_per_s": per_step * measured.len() as f64 / measured.iter().sum::<f64>(),
        "tokens_per_s_best": per_step / best, "tokens_per_s_median": per_step / median,
        "warmup_seconds": timer.seconds[0], "last_loss": timer.loss, "peak_rss_bytes": peak_rss_bytes(),
        "mallopt": crate::alloc_tuning::applied(),
    });
    let human = format!(
        "train {} on {backend}: batch {} x seq {}, {} steps: {:.0} tokens/s best, {:.0} median ({:.2} s/step median; warm-up {:.2} s)",
        args.preset, args.batch, args.seq, args.steps, per_step / best, per_step / median, median, timer.seconds[0]
    );
    Ok((value, human))
}

fn bench_score<B: smalltalk_lm::burn::tensor::backend::Backend>(
    args: &BenchArgs,
    cfg: &LmConfig,
    backend: &str,
    device: &B::Device,
    out: &Output,
) -> Result<Case> {
    if args.score_reps == 0 || args.score_batch == 0 || args.score_prefix < 2 {
        bail!("--score-reps and --score-batch must be positive and --score-prefix at least 2");
    }
    let model = Lm::<B>::new(cfg, 0, device).context("building the model")?;
    let (rows, m) = (args.score_batch, args.score_prefix);
    let tokens = random_tokens(rows * m, cfg.vocab_size, 2);
    let options = ScoreOptions {
        precision: args.precision.into(),
        ..ScoreOptions::default()
    };
    let mut spinner = BarProgress::new(out.is_json(), BarStyle::Steps);
    spinner.start("score", 0, 0);
    spinner.update(0, &format!(
        "{rows} rows x {m} tokens, {} reps + 1 warm-up",
        args.score_reps
    ));
    let mut seconds = Vec::with_capacity(args.score_reps + 1);
    for _ in 0..=args.score_reps {
        let t = Instant::now();
        let scores = score_prefix(&model, &tokens, m, m, &options).context("scoring")?;
        seconds.push(t.elapsed().as_secs_f64());
        if scores.len() != rows || !scores.iter().all(|s| s.is_finite()) {
            bail!(
                "scoring returned {} scores, or a non-finite one",
                scores.len()
            );
        }
    }
    spinner.finish();
    let measured = &seconds[1..];
    let (best, median) = min_median(measured);
    let n = rows as f64;
    let value = json!({
        "case": "score", "backend": backend, "precision": Precision::from(args.precision).name(), "preset": args.preset, "vocab": cfg.vocab_size,
        "params": cfg.num_params(), "d_model": cfg.d_model, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "d_ff": cfg.d_ff,
        "batch": rows, "seq": m, "prefix_len": m, "reps": args.score_reps,
        "call_seconds": measured, "sequences_per_s": n * measured.len() as f64 / measured.iter().sum::<f64>(),
        "sequences_per_s_best": n / best, "sequences_per_s_median": n / median,
        "warmup_seconds": seconds[0], "peak_rss_bytes": peak_rss_bytes(),
        "mallopt": crate::alloc_tuning::applied(),
    });
    let human = format!(
        "score {} on {backend}: {rows} rows x prefix {m}, {} reps: {:.0} sequences/s best, {:.0} median",
        args.preset, args.score_reps, n / best, n / median
    );
    Ok((value, human))
}

#[cfg(test)]
mod tests {
    use super::*;


    #[cfg(feature = "flex")]
    #[test]
    fn tiny_bench_reports_both_cases() {
        let args = BenchArgs {
            preset: "tiny".into(),
            vocab: None,
            batch: 2,
            seq: 8,
            steps: 1,
            score_batch: 4,
            score_prefix: 4,
            score_reps: 1,
            cases: vec![BenchCase::Train, BenchCase::Score],
            precision: PrecisionArg::Full,
        };
        let cfg = LmConfig::preset("tiny").unwrap();
        let out = Output::new(true);
        let cases = run_cases::<smalltalk_lm::CpuTrainBackend>(&args, &cfg, "flex", &out).unwrap();
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[0].0["case"], "train");
        assert!(cases[0].0["tokens_per_s"].as_f64().unwrap() > 0.0);
        assert_eq!(cases[1].0["case"], "score");
        assert!(cases[1].0["sequences_per_s"].as_f64().unwrap() > 0.0);
    }
}
