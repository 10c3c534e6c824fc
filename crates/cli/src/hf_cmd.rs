//! `smalltalk export hf`, `smalltalk import hf`, `smalltalk lm logits`: flags → `smalltalk_hf`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use smalltalk_lm::backend::BackendKind;
use smalltalk_lm::burn::tensor::backend::AutodiffBackend;

use crate::backends::on_backend;
use crate::report::Output;

/// Export commands.
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Write every router, expert and dense model of a run as a Hugging Face Llama checkpoint
    /// (config.json, model.safetensors, tokenizer files, generation_config.json) into
    /// OUT/{routers/router-NN, experts/expert-NN, dense, dense-steps}, with OUT/mixture.json
    /// and OUT/README.md saying how to route by hand with transformers.
    Hf {
        /// The run folder (routers/, experts/).
        run: PathBuf,
        /// The output folder.
        out: PathBuf,
    },
}

/// Import commands.
#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Read a Hugging Face Llama checkpoint folder (config.json, model.safetensors) into one of
    /// our weights files; refuses, naming the field, what the model cannot represent (biases,
    /// other activations, grouped-query attention, RoPE scaling, sliding windows).
    Hf {
        /// The HF folder.
        hf: PathBuf,
        /// Our weights file to write (`.safetensors`).
        out: PathBuf,
    },
}

/// `lm logits` flags.
#[derive(Debug, Args)]
pub struct LogitsArgs {
    /// Our weights file (a checkpoint's model.safetensors, or `import hf`'s output).
    #[arg(long)]
    weights: PathBuf,
    /// Token ids, comma-separated.
    #[arg(long, value_delimiter = ',', conflicts_with = "text")]
    tokens: Vec<u32>,
    /// A text, tokenized with --tokenizer.
    #[arg(long, requires = "tokenizer")]
    text: Option<String>,
    /// The tokenizer.json of --text.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

/// Run an `export` command.
pub fn export(cmd: ExportCommand, out: &Output) -> Result<()> {
    let ExportCommand::Hf { run, out: dir } = cmd;
    let card = smalltalk_hf::export_run(&run, &dir)?;
    out.result(&card, || {
        format!(
            "exported {} experts, their routers and {:?} into {}",
            card.experts,
            card.dense,
            dir.display()
        )
    });
    Ok(())
}

/// Run an `import` command.
pub fn import(cmd: ImportCommand, out: &Output) -> Result<()> {
    let ImportCommand::Hf { hf, out: file } = cmd;
    let config = smalltalk_hf::import_model(&hf, &file)?;
    out.result(&config, || format!("wrote {} ({config:?})", file.display()));
    Ok(())
}

/// Run `lm logits`: the next-token logits at every position (`--json`: ids and logits).
pub fn logits(args: LogitsArgs, backend: BackendKind, out: &Output) -> Result<()> {
    let ids = match (&args.text, &args.tokenizer) {
        (Some(text), Some(tok)) => smalltalk_data::TextTokenizer::load(tok, None)?.encode(text)?,
        _ if !args.tokens.is_empty() => args.tokens.clone(),
        _ => bail!("give --tokens, or --text with --tokenizer"),
    };
    let logits = on_backend!(backend, AB, _name => {
        type B = <AB as AutodiffBackend>::InnerBackend;
        smalltalk_hf::logits::<B>(&args.weights, &ids, &Default::default())?
    });
    out.result(&logits, || {
        format!(
            "{} positions of {} logits; ids {:?}",
            logits.ids.len(),
            logits.logits.first().map_or(0, Vec::len),
            logits.ids
        )
    });
    Ok(())
}
