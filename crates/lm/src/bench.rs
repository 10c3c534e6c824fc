//! Throughput of a model preset on random tokens (`smalltalk lm bench`, which
//! `cargo xtask bench lm` and `bench/gpu.sh` run next to PyTorch): training targets per second
//! through the real [`Trainer`] ([`bench_train`]) and scoring sequences per second through
//! [`score_prefix`] ([`bench_score`]), each after one untimed warm-up. Rates are given over all
//! timed samples, the best one and the median one; [`bench_matmul`] times the model's linear op
//! at its forward shapes (the roofline of both). Results serialize to the objects
//! `lm bench --json` prints (the binary adds the backend name and its allocator setting).

use std::ops::ControlFlow;
use std::time::Instant;

use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};
use smalltalk_stage::stats::{min_median, peak_rss_bytes};
use smalltalk_stage::Progress;

use crate::config::LmConfig;
use crate::error::{LmError, Result};
use crate::fused::Kernel;
use crate::model::Lm;
use crate::precision::Precision;
use crate::rng::SplitMix64;
use crate::score::{score_prefix, ScoreOptions};
use crate::train::{StepMetrics, TrainConfig, TrainObserver, Trainer, VecSource};

pub mod generate;
mod matmul;
pub use matmul::{bench_matmul, matmul_shapes, MatmulBench, MatmulShape, MatmulTiming, HEAD_ROWS};

/// A measurement [`bench_cases`] can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum BenchCase {
    /// Training throughput (targets per second), [`bench_train`].
    Train,
    /// Scoring throughput (sequences per second), [`bench_score`].
    Score,
    /// GFLOP/s of the model's linear op at its forward shapes, [`bench_matmul`].
    Matmul,
}

/// What to benchmark and how long; with the `clap` feature, also the flags of
/// `smalltalk lm bench` (defaults as in [`Default`]).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct BenchOptions {
    /// Model preset (tiny, cpu-small, router-4.4m, router-110m, expert-335m, expert-1.3b).
    #[cfg_attr(feature = "clap", arg(long, default_value = "router-4.4m"))]
    pub preset: String,
    /// Override of the preset's vocabulary size.
    #[cfg_attr(feature = "clap", arg(long))]
    pub vocab: Option<usize>,
    /// Training sequences per step.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 32))]
    pub batch: usize,
    /// Training sequence length (predicted positions per row).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 256))]
    pub seq: usize,
    /// Timed training steps (one more warm-up step runs first).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 3))]
    pub steps: usize,
    /// Rows scored per `score_prefix` call.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1024))]
    pub score_batch: usize,
    /// Tokens per scored row (the routing prefix M).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 32))]
    pub score_prefix: usize,
    /// Timed scoring calls (one more warm-up call runs first).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 3))]
    pub score_reps: usize,
    /// Cases to run: train (training targets per second), score (scored sequences per second),
    /// matmul (GFLOP/s of the model's linear op, `x·wᵀ`, at its forward shapes for
    /// `--batch · --seq` rows, `--steps` timed products each).
    #[cfg_attr(
        feature = "clap",
        arg(long, value_enum, value_delimiter = ',', default_value = "train,score")
    )]
    pub cases: Vec<BenchCase>,
    /// Compute precision: full (f32), or bf16 (bf16 matrix products and attention over f32
    /// master weights; for GPU backends, runs on flex too, slowly, through f32 conversions).
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value = "full"))]
    pub precision: Precision,
    /// Training ops: auto (the backend's LmBackend ops: fused CPU kernels on flex, the tiled
    /// ops on wgpu and cuda) or reference (burn's ops: full logits, `[seq, seq]` scores).
    #[cfg_attr(feature = "clap", arg(long, value_enum, default_value = "auto"))]
    pub kernel: Kernel,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            preset: "router-4.4m".into(),
            vocab: None,
            batch: 32,
            seq: 256,
            steps: 3,
            score_batch: 1024,
            score_prefix: 32,
            score_reps: 3,
            cases: vec![BenchCase::Train, BenchCase::Score],
            precision: Precision::Full,
            kernel: Kernel::Auto,
        }
    }
}

impl BenchOptions {
    /// The model: the preset with [`vocab`](Self::vocab) applied and `max_seq_len` raised to
    /// fit the training and scoring lengths.
    pub fn model_config(&self) -> Result<LmConfig> {
        let mut overrides = toml::Table::new();
        if let Some(v) = self.vocab {
            overrides.insert("vocab_size".into(), toml::Value::Integer(v as i64));
        }
        let needed = self.seq.max(self.score_prefix);
        if LmConfig::preset(&self.preset)?.max_seq_len < needed {
            overrides.insert("max_seq_len".into(), toml::Value::Integer(needed as i64));
        }
        LmConfig::from_preset_with_overrides(&self.preset, &overrides)
    }
}

/// The model a measurement ran (flattened into each result).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchModel {
    /// Preset name.
    pub preset: String,
    /// Compute precision.
    pub precision: Precision,
    /// Training ops (auto or reference).
    pub kernel: Kernel,
    /// Vocabulary size.
    pub vocab: usize,
    /// Parameter count.
    pub params: usize,
    /// Model width.
    pub d_model: usize,
    /// Decoder blocks.
    pub n_layers: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// MLP width.
    pub d_ff: usize,
}

impl BenchModel {
    fn new(opts: &BenchOptions, cfg: &LmConfig) -> Self {
        BenchModel {
            preset: opts.preset.clone(),
            precision: opts.precision,
            kernel: opts.kernel,
            vocab: cfg.vocab_size,
            params: cfg.num_params(),
            d_model: cfg.d_model,
            n_layers: cfg.n_layers,
            n_heads: cfg.n_heads,
            d_ff: cfg.d_ff,
        }
    }
}

/// Training throughput.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainBench {
    /// The model.
    #[serde(flatten)]
    pub model: BenchModel,
    /// Sequences per step.
    pub batch: usize,
    /// Sequence length.
    pub seq: usize,
    /// Timed steps.
    pub steps: usize,
    /// Wall time of each timed step.
    pub step_seconds: Vec<f64>,
    /// Targets per second over all timed steps.
    pub tokens_per_s: f64,
    /// Targets per second of the fastest step.
    pub tokens_per_s_best: f64,
    /// Targets per second of the median step.
    pub tokens_per_s_median: f64,
    /// Wall time of the warm-up step.
    pub warmup_seconds: f64,
    /// Loss of the last step.
    pub last_loss: f64,
    /// Peak resident memory of the process after the measurement.
    pub peak_rss_bytes: u64,
    /// Memory reserved on a CubeCL device after the measurement (its peak; see
    /// [`crate::backend::device_reserved_bytes`]); `null` on `flex`.
    pub device_reserved_bytes: Option<u64>,
}

/// Scoring throughput.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreBench {
    /// The model.
    #[serde(flatten)]
    pub model: BenchModel,
    /// Rows per call.
    pub batch: usize,
    /// Tokens per row.
    pub seq: usize,
    /// Scored prefix (the whole row).
    pub prefix_len: usize,
    /// Timed calls.
    pub reps: usize,
    /// Wall time of each timed call.
    pub call_seconds: Vec<f64>,
    /// Sequences per second over all timed calls.
    pub sequences_per_s: f64,
    /// Sequences per second of the fastest call.
    pub sequences_per_s_best: f64,
    /// Sequences per second of the median call.
    pub sequences_per_s_median: f64,
    /// Wall time of the warm-up call.
    pub warmup_seconds: f64,
    /// Peak resident memory of the process after the measurement.
    pub peak_rss_bytes: u64,
    /// Memory reserved on a CubeCL device after the measurement (its peak; see
    /// [`crate::backend::device_reserved_bytes`]); `null` on `flex`.
    pub device_reserved_bytes: Option<u64>,
}

/// One measurement; serializes with its kind under `case` (`train`, `score` or `matmul`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "case", rename_all = "lowercase")]
pub enum BenchResult {
    /// [`bench_train`].
    Train(TrainBench),
    /// [`bench_score`].
    Score(ScoreBench),
    /// [`bench_matmul`].
    Matmul(MatmulBench),
}

impl BenchResult {
    /// One line for people; `backend` names the backend it ran on.
    pub fn describe(&self, backend: &str) -> String {
        match self {
            BenchResult::Train(t) => {
                let (_, median) = min_median(&t.step_seconds);
                format!(
                    "train {} on {backend}: batch {} x seq {}, {} steps: {:.0} tokens/s best, \
                     {:.0} median ({median:.2} s/step median; warm-up {:.2} s)",
                    t.model.preset,
                    t.batch,
                    t.seq,
                    t.steps,
                    t.tokens_per_s_best,
                    t.tokens_per_s_median,
                    t.warmup_seconds
                )
            }
            BenchResult::Score(s) => format!(
                "score {} on {backend}: {} rows x prefix {}, {} reps: {:.0} sequences/s best, \
                 {:.0} median",
                s.model.preset,
                s.batch,
                s.prefix_len,
                s.reps,
                s.sequences_per_s_best,
                s.sequences_per_s_median
            ),
            BenchResult::Matmul(m) => m.describe(backend),
        }
    }
}

/// Run every case of `opts` in order on `device` (scoring on the inner backend).
pub fn bench_cases<AB: AutodiffBackend>(
    opts: &BenchOptions,
    device: &AB::Device,
    progress: &mut dyn Progress,
) -> Result<Vec<BenchResult>> {
    let cfg = opts.model_config()?;
    opts.cases
        .iter()
        .map(|case| match case {
            BenchCase::Train => {
                bench_train::<AB>(opts, &cfg, device, progress).map(BenchResult::Train)
            }
            BenchCase::Score => bench_score::<AB::InnerBackend>(opts, &cfg, device, progress)
                .map(BenchResult::Score),
            BenchCase::Matmul => bench_matmul::<AB::InnerBackend>(opts, &cfg, device, progress)
                .map(BenchResult::Matmul),
        })
        .collect()
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
        self.seconds.push((now - self.last).as_secs_f64());
        self.last = now;
        self.tokens = m.tokens;
        self.loss = m.loss;
        ControlFlow::Continue(())
    }
}

/// Train `cfg` on random tokens for one warm-up and `opts.steps` timed steps of `opts.batch`
/// rows of `opts.seq` targets (checkpoints go to a temporary folder, removed afterwards).
/// `progress` gets the phase `train`.
pub fn bench_train<AB: AutodiffBackend>(
    opts: &BenchOptions,
    cfg: &LmConfig,
    device: &AB::Device,
    progress: &mut dyn Progress,
) -> Result<TrainBench> {
    if opts.steps == 0 || opts.batch == 0 {
        return Err(LmError::InvalidConfig(
            "--steps and --batch must be positive".into(),
        ));
    }
    let (row_len, total_steps) = (opts.seq + 1, opts.steps + 1);
    let tokens = random_tokens(opts.batch * total_steps * row_len, cfg.vocab_size, 1);
    let source = VecSource::new(tokens, row_len, None);
    let train = TrainConfig {
        total_steps,
        batch_size: opts.batch,
        micro_batch_size: 0,
        prefix_len: None,
        warmup_steps: 1,
        checkpoint_every: 0,
        keep_checkpoints: 1,
        precision: opts.precision,
        ..TrainConfig::router_paper()
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir =
        std::env::temp_dir().join(format!("smalltalk-lm-bench-{}-{nanos}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    progress.start("train", 0, 0);
    let (batch, seq, steps) = (opts.batch, opts.seq, opts.steps);
    progress.update(
        0,
        &format!("{batch} x {seq} tokens, {steps} steps + 1 warm-up"),
    );
    let mut timer = StepTimer {
        last: Instant::now(),
        seconds: vec![],
        tokens: 0,
        loss: f64::NAN,
    };
    let run = Trainer::<AB>::new(cfg, train, &dir, device).and_then(|mut trainer| {
        trainer.set_kernel(opts.kernel);
        trainer.run(&source, &mut timer)
    });
    progress.finish();
    let _ = std::fs::remove_dir_all(&dir);
    run?;
    let measured = timer.seconds[1..].to_vec();
    let (best, median) = min_median(&measured);
    let per_step = timer.tokens as f64;
    Ok(TrainBench {
        model: BenchModel::new(opts, cfg),
        batch,
        seq,
        steps,
        tokens_per_s: per_step * measured.len() as f64 / measured.iter().sum::<f64>(),
        tokens_per_s_best: per_step / best,
        tokens_per_s_median: per_step / median,
        step_seconds: measured,
        warmup_seconds: timer.seconds[0],
        last_loss: timer.loss,
        peak_rss_bytes: peak_rss_bytes(),
        device_reserved_bytes: crate::backend::device_reserved_bytes(device),
    })
}

/// Score `opts.score_batch` random rows of `opts.score_prefix` tokens with a fresh `cfg`
/// model, one warm-up and `opts.score_reps` timed calls. `progress` gets the phase `score`.
pub fn bench_score<B: Backend>(
    opts: &BenchOptions,
    cfg: &LmConfig,
    device: &B::Device,
    progress: &mut dyn Progress,
) -> Result<ScoreBench> {
    let (rows, m, reps) = (opts.score_batch, opts.score_prefix, opts.score_reps);
    if reps == 0 || rows == 0 || m < 2 {
        return Err(LmError::InvalidConfig(
            "--score-reps and --score-batch must be positive and --score-prefix at least 2".into(),
        ));
    }
    let model = Lm::<B>::new(cfg, 0, device)?;
    let tokens = random_tokens(rows * m, cfg.vocab_size, 2);
    let options = ScoreOptions {
        precision: opts.precision,
        ..ScoreOptions::default()
    };
    progress.start("score", 0, 0);
    progress.update(
        0,
        &format!("{rows} rows x {m} tokens, {reps} reps + 1 warm-up"),
    );
    let mut seconds = Vec::with_capacity(reps + 1);
    for _ in 0..=reps {
        let t = Instant::now();
        let scores = score_prefix(&model, &tokens, m, m, &options)?;
        seconds.push(t.elapsed().as_secs_f64());
        if scores.len() != rows || !scores.iter().all(|s| s.is_finite()) {
            return Err(LmError::Data(format!(
                "scoring returned {} scores, or a non-finite one",
                scores.len()
            )));
        }
    }
    progress.finish();
    let measured = seconds[1..].to_vec();
    let (best, median) = min_median(&measured);
    let n = rows as f64;
    Ok(ScoreBench {
        model: BenchModel::new(opts, cfg),
        batch: rows,
        seq: m,
        prefix_len: m,
        reps,
        sequences_per_s: n * measured.len() as f64 / measured.iter().sum::<f64>(),
        sequences_per_s_best: n / best,
        sequences_per_s_median: n / median,
        call_seconds: measured,
        warmup_seconds: seconds[0],
        peak_rss_bytes: peak_rss_bytes(),
        device_reserved_bytes: crate::backend::device_reserved_bytes(device),
    })
}

#[cfg(all(test, feature = "flex"))]
mod tests;
