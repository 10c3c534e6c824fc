//! # smalltalk
//!
//! The command-line interface of SmallTalk, a Rust implementation of the asynchronous mixture of
//! language models ("No Need to Talk", Filippova et al., ICLR 2025). A thin layer over the
//! library crates: each subcommand parses flags and a TOML config, calls one stage, and reports
//! (a progress bar for people, `--json` for scripts).

mod backends;
mod config;
mod data_cmd;
mod eval_cmd;
mod expert_cmd;
mod generate_cmd;
mod hf_cmd;
mod launch_cmd;
mod lm_cmd;
mod mixture_cmd;
mod partition_cmd;
mod progress;
mod report;
mod route_cmd;
mod routers_cmd;
mod run_report;
#[cfg(all(test, feature = "flex"))]
mod stage_tests;

use anyhow::Result;
use clap::{Parser, Subcommand};
use smalltalk_lm::backend::BackendKind;

/// SmallTalk: train a mixture of language models that never talk to each other.
///
/// Stages, in order: `data` (tokenize and shard a corpus), `routers train` (E router LMs by
/// hard EM), `partition` (split the training rows among E experts in equal parts), `expert train`
/// (one independent job per expert) and `dense train` (the baseline), `eval` (routed
/// evaluation), `report`. `mixture write` records a trained mixture in mixture.json; `route` and
/// `generate` use it.
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
    /// The router stage: train E router LMs by hard EM.
    #[command(subcommand)]
    Routers(routers_cmd::RoutersCommand),
    /// Split the training split among E experts in equal parts with trained routers.
    ///
    /// Scores the first M tokens of every training row with every router and applies the
    /// balanced assignment (capacity N/E, most confident rows first, next-best router with room)
    /// chunk by chunk. Writes OUT/{stage.json, config.toml, expert-NN.rows, partition.json};
    /// resumable by chunk.
    Partition(partition_cmd::PartitionArgs),
    /// Show which expert a text is routed to (argmax of the routers' prefix scores) and why.
    Route(route_cmd::RouteArgs),
    /// The expert stage: one expert per part of the partition (a job-array task each).
    #[command(subcommand)]
    Expert(expert_cmd::ExpertCommand),
    /// The dense baseline: same architecture, all the data, the mixture's total tokens.
    #[command(subcommand)]
    Dense(expert_cmd::DenseCommand),
    /// Routed evaluation: the mixture (argmax routing on the first M̂ tokens) against the dense
    /// baseline, random routing and oracle routing; per-expert segments, load, purity and an
    /// optional prefix sweep. `--json` prints the report as one object.
    Eval(eval_cmd::EvalArgs),
    /// Route a prompt by its prefix, load only the chosen expert and stream a sampled
    /// continuation (temperature, top-k, top-p, seed); says which expert answered and why.
    Generate(generate_cmd::GenerateArgs),
    /// The mixture's manifest (mixture.json): write it from a run's folders, show it, check
    /// every file, checksum and tokenizer hash it records.
    #[command(subcommand)]
    Mixture(mixture_cmd::MixtureCommand),
    /// Write the run report (report.md with tables and SVG plots, report.json) from the files
    /// the stages wrote into a run folder, and print the headline table.
    Report(run_report::ReportArgs),
    /// Run on a cluster: the stages as Slurm batch scripts (experts as a job array) or
    /// Kubernetes Jobs (experts as an Indexed Job).
    #[command(subcommand)]
    Launch(launch_cmd::LaunchCommand),
    /// Where a run stands: every stage and expert done, started (step, ETA), failed (last
    /// error) or missing, from the run folder's files plus Slurm's queue.
    Status(launch_cmd::StatusArgs),
    /// Export a run's models as Hugging Face Llama checkpoints.
    #[command(subcommand)]
    Export(hf_cmd::ExportCommand),
    /// Import a Hugging Face Llama checkpoint as one of our weights files.
    #[command(subcommand)]
    Import(hf_cmd::ImportCommand),
    /// List the compute backends compiled into this binary.
    Backends,
}

fn main() {
    smalltalk_lm::alloc_tuning::apply();
    let cli = Cli::parse();
    if cli.command.checkpoints_on_stop() {
        smalltalk_stage::stop::on_signals();
    }
    if let Err(err) = run(cli) {
        eprintln!("error: {}", error_text(&err));
        let stopped = err
            .downcast_ref::<smalltalk_stage::stop::Stopped>()
            .is_some();
        std::process::exit(if stopped { 143 } else { 1 });
    }
}

/// An error and its causes, joined by `: `, each cause shown only when the text before it
/// does not hold it already (many errors show their cause in their own message, e.g.
/// `path: No such file or directory (os error 2)`, and chain it as their source too: printed
/// with `{:#}` the OS error would appear twice).
fn error_text(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

impl Command {
    /// Whether the command's stage checkpoints and returns on a stop request (the others keep
    /// the default: SIGTERM ends them at once, which their atomic writes make safe).
    fn checkpoints_on_stop(&self) -> bool {
        matches!(
            self,
            Command::Routers(_) | Command::Expert(_) | Command::Dense(_) | Command::Partition(_)
        )
    }
}

fn run(cli: Cli) -> Result<()> {
    // A bad instruction-set cap or stacking choice is an error here rather than a panic
    // inside a kernel or a scoring pass.
    smalltalk_lm::fused::isa::Isa::from_env()?;
    smalltalk_lm::model_set::stacking_from_env()?;
    let backend = BackendKind::select(&cli.backend)?;
    let out = report::Output::new(cli.json);
    match cli.command {
        Command::Data(cmd) => data_cmd::run(cmd, &out),
        Command::Lm(cmd) => lm_cmd::run(cmd, backend, &out),
        Command::Routers(cmd) => routers_cmd::run(cmd, backend, &out),
        Command::Partition(args) => partition_cmd::run(args, backend, &out),
        Command::Route(args) => route_cmd::run(args, backend, &out),
        Command::Generate(args) => generate_cmd::run(args, backend, &out),
        Command::Mixture(cmd) => mixture_cmd::run(cmd, &out),
        Command::Report(args) => run_report::run(args, &out),
        Command::Launch(cmd) => launch_cmd::run(cmd, backend.name(), &out),
        Command::Status(args) => launch_cmd::status(args, &out),
        Command::Export(cmd) => hf_cmd::export(cmd, &out),
        Command::Import(cmd) => hf_cmd::import(cmd, &out),
        Command::Eval(args) => eval_cmd::run(args, backend, &out),
        Command::Expert(cmd) => expert_cmd::run_expert(cmd, backend, &out),
        Command::Dense(cmd) => expert_cmd::run_dense(cmd, backend, &out),
        Command::Backends => {
            out.result(&BackendKind::listing_json(backend), || {
                format!(
                    "compiled backends: {} (selected: {backend})",
                    BackendKind::compiled_names()
                )
            });
            Ok(())
        }
    }
}
