//! `smalltalk routers train`: flags → `smalltalk_router::train_routers`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use smalltalk_lm::backend::BackendKind;

use crate::backends::on_backend;
use crate::progress::{BarProgress, BarStyle};
use crate::report::Output;
use smalltalk_report::RunConfig;

/// The router stage.
#[derive(Debug, Subcommand)]
pub enum RoutersCommand {
    /// Train E router LMs by hard EM on the training split of a dataset (or fit a baseline
    /// routing method, `--method`).
    ///
    /// Starts from a random equal split of a first chunk; each iteration trains every router
    /// for K steps on the first M tokens of its part, scores a fresh chunk with all routers and
    /// reassigns it with the balanced assignment. Writes OUT/{stage.json, config.toml,
    /// tokenizer.json, router-NN/ (checkpoints, metrics.jsonl), em/state.json,
    /// em/metrics.jsonl, routers.json}. Resumable: rerun the same command after an
    /// interruption (SIGTERM stops cleanly); a finished run is skipped; other data or
    /// settings in an existing folder are refused.
    Train(TrainArgs),
}

/// `routers train` flags.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Dataset folder written by `smalltalk data build`.
    #[arg(long)]
    data: PathBuf,
    /// Output folder for the routers (created; an existing one must be a routers folder).
    #[arg(long)]
    out: PathBuf,
    /// TOML config; its [routers] table sets every EM option (flags below override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Number of routers / experts E [config: routers.experts; default 4].
    #[arg(long)]
    experts: Option<usize>,
    /// EM iterations T [config: routers.iterations; default 94].
    #[arg(long)]
    iterations: Option<usize>,
    /// Router steps per iteration K [config: routers.steps_per_iteration; default 1373].
    #[arg(long)]
    steps: Option<usize>,
    /// Routing prefix M in tokens [config: routers.prefix_len; default 256].
    #[arg(long)]
    prefix: Option<usize>,
    /// How to route: em (the paper's router LMs), or a baseline: tfidf (c-BTM's TF-IDF
    /// clusters), random, domain (the corpus's labels) [config: routers.method; default em].
    #[arg(long)]
    method: Option<smalltalk_router::RouterMethod>,
}

/// Run a `routers` command.
pub fn run(cmd: RoutersCommand, backend: BackendKind, out: &Output) -> Result<()> {
    let RoutersCommand::Train(args) = cmd;
    let mut config = RunConfig::load_or_default(args.config.as_deref())?;
    let cfg = &mut config.routers;
    cfg.experts = args.experts.unwrap_or(cfg.experts);
    cfg.iterations = args.iterations.unwrap_or(cfg.iterations);
    cfg.steps_per_iteration = args.steps.unwrap_or(cfg.steps_per_iteration);
    cfg.prefix_len = args.prefix.unwrap_or(cfg.prefix_len);
    cfg.method = args.method.unwrap_or(cfg.method);
    let mut progress = BarProgress::new(out.is_json(), BarStyle::Steps);
    let (summary, name) = on_backend!(backend, AB, name => {
        let s = smalltalk_router::train_routers::<AB>(
            &args.data, &args.out, cfg, &Default::default(), &mut progress,
        );
        (s, name)
    });
    let summary = summary.with_context(|| format!("training routers in {}", args.out.display()))?;
    smalltalk_stage::stop::check(summary.stopped, "routers", &args.out)?;
    let mut value = summary.to_json(&args.out, cfg);
    value["backend"] = name.into();
    out.result(&value, || summary.describe(&args.out));
    Ok(())
}
