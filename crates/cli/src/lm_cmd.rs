//! `smalltalk lm …`: the decoder language model on its own. `lm bench`, the training and
//! scoring throughput of a preset on random tokens (what `cargo xtask bench lm` and
//! `bench/gpu.sh` drive next to PyTorch); `lm bench-generate`, KV-cached generation speed, copy
//! bandwidth and routing time (what `cargo xtask bench generate` drives next to `transformers`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use smalltalk_lm::backend::BackendKind;
use smalltalk_lm::bench::generate as gen;
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
    /// Generation speed pieces that `cargo xtask bench generate` puts next to `transformers`:
    /// write a random model with its HF export, time KV-cached greedy decoding, measure the
    /// copy bandwidth, time routing against generation.
    #[command(subcommand)]
    BenchGenerate(GenerateBenchCommand),
}

/// `lm bench-generate` steps.
#[derive(Debug, Subcommand)]
pub enum GenerateBenchCommand {
    /// Write OUT/model.safetensors (random weights), OUT/hf (its `LlamaForCausalLM` export, as
    /// `smalltalk export hf` writes a model) and OUT/prompts.json (random prompts).
    Prepare(PrepareArgs),
    /// Greedy KV-cached decoding of a prepared folder's model and prompts, one timestamp per
    /// step: the time to the first token (prefill) and of every later step. One result per batch.
    Decode(DecodeArgs),
    /// Memory-copy bandwidth with the decoding threads (the roofline of batch-1 decoding).
    Bandwidth(BandwidthArgs),
    /// Route a prompt with E fresh router models over the routing prefix, then generate with a
    /// prepared folder's model (the expert). One result per E.
    Route(RouteArgs),
}

/// A model shape: a preset and `KEY=VALUE` overrides of its config fields.
#[derive(Debug, Args)]
pub struct ShapeArgs {
    /// Model preset.
    #[arg(long, default_value = "cpu-small")]
    preset: String,
    /// A config field, `KEY=VALUE` (TOML value), e.g. `d_model=48`; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

impl ShapeArgs {
    fn config(&self) -> Result<smalltalk_lm::LmConfig> {
        let mut table = toml::Table::new();
        for kv in &self.set {
            let parsed: toml::Table = toml::from_str(kv.replacen('=', " = ", 1).as_str())
                .with_context(|| format!("--set {kv}: expected KEY=VALUE with a TOML value"))?;
            table.extend(parsed);
        }
        Ok(smalltalk_lm::LmConfig::from_preset_with_overrides(
            &self.preset,
            &table,
        )?)
    }
}

/// `lm bench-generate prepare` flags.
#[derive(Debug, Args)]
pub struct PrepareArgs {
    #[command(flatten)]
    shape: ShapeArgs,
    /// Seed of the weights and prompts.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of prompts (the largest batch).
    #[arg(long, default_value_t = 8)]
    prompts: usize,
    /// Tokens per prompt.
    #[arg(long, default_value_t = 32)]
    prompt_len: usize,
    /// Folder to write.
    #[arg(long)]
    out: PathBuf,
}

/// `lm bench-generate decode` flags.
#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// A folder written by `prepare`.
    #[arg(long)]
    dir: PathBuf,
    /// Batch sizes (the first N prompts decode together).
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    batch: Vec<usize>,
    /// Tokens generated per sequence.
    #[arg(long, default_value_t = 224)]
    new_tokens: usize,
    /// Tokens of the untimed warm-up call before each timed one.
    #[arg(long, default_value_t = 2)]
    warmup_tokens: usize,
}

/// `lm bench-generate bandwidth` flags.
#[derive(Debug, Args)]
pub struct BandwidthArgs {
    /// Buffer size in MiB.
    #[arg(long, default_value_t = 1024)]
    mib: usize,
    /// Timed copies (the best counts).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Copying threads (default: the threads the CPU backend computes with).
    #[arg(long)]
    threads: Option<usize>,
}

/// `lm bench-generate route` flags.
#[derive(Debug, Args)]
pub struct RouteArgs {
    /// A folder written by `prepare`: its model is the expert, its first prompt the prompt.
    #[arg(long)]
    dir: PathBuf,
    /// The routers' preset.
    #[arg(long, default_value = "router-4.4m")]
    router_preset: String,
    /// A router config field, `KEY=VALUE` (TOML value); repeatable.
    #[arg(long = "router-set", value_name = "KEY=VALUE")]
    router_set: Vec<String>,
    /// Numbers of routers E.
    #[arg(long, value_delimiter = ',', default_value = "4,32")]
    routers: Vec<usize>,
    /// Routing prefix M̂ (tokens every router scores).
    #[arg(long, default_value_t = 32)]
    prefix: usize,
    /// Tokens the expert generates.
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    /// Timed reps (one warm-up more).
    #[arg(long, default_value_t = 5)]
    reps: usize,
}

/// Run an `lm` command on `backend`.
pub fn run(cmd: LmCommand, backend: BackendKind, out: &Output) -> Result<()> {
    let opts = match cmd {
        LmCommand::Bench(opts) => opts,
        LmCommand::Logits(args) => return crate::hf_cmd::logits(args, backend, out),
        LmCommand::BenchGenerate(cmd) => return bench_generate(cmd, backend, out),
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

/// Fields every `bench-generate` result carries: the backend, instruction set and threads.
fn stamp(value: &mut serde_json::Value, step: &str, backend: &str) {
    value["step"] = step.into();
    value["backend"] = backend.into();
    value["cpu_isa"] = smalltalk_lm::fused::isa::Isa::active().name().into();
    value["threads"] = gen::compute_threads().into();
    value["mallopt"] = smalltalk_lm::alloc_tuning::applied().into();
}

/// Run `lm bench-generate` on `backend` (its inference backend).
fn bench_generate(cmd: GenerateBenchCommand, backend: BackendKind, out: &Output) -> Result<()> {
    use smalltalk_lm::burn::tensor::backend::AutodiffBackend;
    on_backend!(backend, AB, name => {
        type B = <AB as AutodiffBackend>::InnerBackend;
        let device = Default::default();
        match cmd {
            GenerateBenchCommand::Prepare(args) => {
                let cfg = args.shape.config()?;
                let p = gen::prepare_generate_bench::<B>(
                    &cfg, args.seed, args.prompts, args.prompt_len, &args.out, &device,
                )
                .with_context(|| format!("preparing {}", args.out.display()))?;
                let mut v = serde_json::to_value(&p)?;
                stamp(&mut v, "prepare", name);
                out.result(&v, || {
                    format!(
                        "{}: {} parameters ({} bytes in f32), {} prompts of {} tokens, HF export in {}",
                        p.dir.display(), p.params, p.weight_bytes, p.prompts, p.prompt_len,
                        p.dir.join(gen::HF_DIR).display()
                    )
                });
            }
            GenerateBenchCommand::Decode(args) => {
                let (model, prompts) = gen::load_prepared::<B>(&args.dir, &device)
                    .with_context(|| format!("loading {}", args.dir.display()))?;
                for &batch in &args.batch {
                    let t = gen::bench_decode(
                        &model, &prompts, batch, args.new_tokens, args.warmup_tokens,
                    )?;
                    let mut v = serde_json::to_value(&t)?;
                    stamp(&mut v, "decode", name);
                    v["params"] = model.num_params().into();
                    v["prefill_tokens_per_s"] = t.prefill_tokens_per_s().into();
                    v["decode_tokens_per_s"] = t.decode_tokens_per_s().into();
                    out.result(&v, || {
                        format!(
                            "decode on {name}: batch {batch}, {} + {} tokens: prefill {:.0} tokens/s, \
                             decode {:.1} tokens/s",
                            t.prompt_len, t.new_tokens, t.prefill_tokens_per_s(),
                            t.decode_tokens_per_s()
                        )
                    });
                }
            }
            GenerateBenchCommand::Bandwidth(args) => {
                let threads = args.threads.unwrap_or_else(gen::compute_threads);
                let b = gen::copy_bandwidth(args.mib << 20, args.reps, threads);
                let mut v = serde_json::to_value(&b)?;
                stamp(&mut v, "bandwidth", name);
                out.result(&v, || {
                    format!(
                        "copy bandwidth: {:.2} GB/s (read + written, best of {}, {} MiB, {} threads)",
                        b.gb_per_s_best, args.reps, args.mib, b.threads
                    )
                });
            }
            GenerateBenchCommand::Route(args) => {
                let (expert, prompts) = gen::load_prepared::<B>(&args.dir, &device)
                    .with_context(|| format!("loading {}", args.dir.display()))?;
                let router = ShapeArgs { preset: args.router_preset.clone(), set: args.router_set.clone() }
                    .config()?;
                for &e in &args.routers {
                    let r = gen::bench_routing(
                        &expert, &router, e, &prompts[0], args.prefix, args.new_tokens, args.reps,
                    )?;
                    let mut v = serde_json::to_value(&r)?;
                    stamp(&mut v, "route", name);
                    out.result(&v, || {
                        let (_, route) = smalltalk_stage::stats::min_median(&r.route_s);
                        let (_, generate) = smalltalk_stage::stats::min_median(&r.generate_s);
                        format!(
                            "route with {e} routers over {} tokens: {:.2} ms; generate {} tokens: \
                             {:.2} ms; routing share {:.1}% (FLOPs {:.1}%)",
                            r.prefix, route * 1e3, r.new_tokens, generate * 1e3,
                            100.0 * route / (route + generate), 100.0 * r.flop_share
                        )
                    });
                }
            }
        }
        Ok::<(), anyhow::Error>(())
    })
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
