//! `smalltalk data …`: train a tokenizer, build a dataset folder, inspect one.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;
use smalltalk_data::{
    data_stage, train_tokenizer, DataSettings, Dataset, PackingMode, TokenizerSource, Verify,
};

use crate::progress::{BarProgress, BarStyle};
use crate::report::Output;
use smalltalk_report::RunConfig;

/// The data stage.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Train a byte-level BPE tokenizer on the training split of a corpus and save tokenizer.json.
    ///
    /// Held-out documents (by the same document hash as `data build`) never shape the vocabulary.
    Tokenizer(TokenizerArgs),
    /// Tokenize a corpus and write packed, checksummed token shards plus manifest.json.
    ///
    /// Reads plain-text files, folders of them and JSON lines (text in `data.format.text_field`,
    /// default `text`), optionally .gz or .zst. Writes DIR/{manifest.json, tokenizer.json,
    /// config.toml (the effective [data] table), <split>-NNNNN.tokens, <split>-NNNNN.meta}. The
    /// folder appears only when complete; rerunning with the same inputs and settings does
    /// nothing.
    Build(BuildArgs),
    /// Summarize a dataset folder and verify its checksums.
    Inspect(InspectArgs),
}

/// Settings shared by the data commands.
#[derive(Debug, Args)]
pub struct CorpusArgs {
    /// Corpus inputs: files (text, .jsonl, optionally .gz/.zst) or folders of them.
    #[arg(long = "corpus", required = true, num_args = 1..)]
    corpus: Vec<PathBuf>,
    /// TOML config; its [data] table sets every data option (flags below override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Field of JSON-lines records that holds the text [config: data.format.text_field].
    #[arg(long)]
    text_field: Option<String>,
    /// BPE vocabulary size, special tokens included [config: data.tokenizer.vocab_size; default 32000].
    #[arg(long)]
    vocab_size: Option<usize>,
}

impl CorpusArgs {
    /// The `[data]` settings of the config file (or the defaults) with the flags applied.
    fn settings(&self) -> Result<DataSettings> {
        let mut data = RunConfig::load_or_default(self.config.as_deref())?.data;
        data.format.text_field = self.text_field.clone().unwrap_or(data.format.text_field);
        data.tokenizer.vocab_size = self.vocab_size.unwrap_or(data.tokenizer.vocab_size);
        Ok(data)
    }
}

/// `data tokenizer` flags.
#[derive(Debug, Args)]
pub struct TokenizerArgs {
    #[command(flatten)]
    corpus: CorpusArgs,
    /// Where to write tokenizer.json.
    #[arg(long)]
    out: PathBuf,
}

/// `data build` flags.
#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    corpus: CorpusArgs,
    /// Output dataset folder.
    #[arg(long)]
    out: PathBuf,
    /// An existing Hugging Face tokenizer.json; without it a BPE is trained on the corpus first.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// End-of-document token of a loaded tokenizer (default: <|endoftext|>, </s>, <eos>, ...).
    #[arg(long)]
    eos_token: Option<String>,
    /// Context length; rows hold seq_len + 1 tokens [config: data.seq_len; default 1024].
    #[arg(long)]
    seq_len: Option<usize>,
    /// concat (documents end to end) or doc-start (every document starts a row) [config: data.packing].
    #[arg(long)]
    packing: Option<PackingMode>,
}

/// `data inspect` flags.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Dataset folder.
    dir: PathBuf,
    /// Only check file sizes, not checksums.
    #[arg(long)]
    no_verify: bool,
}

/// Run a data command.
pub fn run(cmd: DataCommand, out: &Output) -> Result<()> {
    let mut progress = BarProgress::new(out.is_json(), BarStyle::Bytes);
    let start = Instant::now();
    match cmd {
        DataCommand::Tokenizer(args) => {
            let tok =
                train_tokenizer(&args.corpus.corpus, &args.corpus.settings()?, &mut progress)?;
            tok.save(&args.out)?;
            let seconds = start.elapsed().as_secs_f64();
            out.result(&tok.summary_json(&args.out, seconds)?, || {
                format!(
                    "wrote {} (vocabulary {}) in {seconds:.1}s",
                    args.out.display(),
                    tok.vocab_size()
                )
            });
        }
        DataCommand::Build(args) => {
            let mut settings = args.corpus.settings()?;
            settings.seq_len = args.seq_len.unwrap_or(settings.seq_len);
            settings.packing = args.packing.unwrap_or(settings.packing);
            let tokenizer =
                args.tokenizer
                    .map_or(TokenizerSource::Train, |path| TokenizerSource::File {
                        path,
                        eos_token: args.eos_token,
                    });
            let outcome = data_stage(
                &args.corpus.corpus,
                &tokenizer,
                &args.out,
                &settings,
                &mut progress,
            )?;
            drop(progress);
            let seconds = start.elapsed().as_secs_f64();
            out.result(&outcome.to_json(&args.out, seconds), || {
                outcome.describe(&args.out, seconds)
            });
        }
        DataCommand::Inspect(args) => {
            let dataset = Dataset::open(&args.dir)?;
            let (verify, checked) = match args.no_verify {
                true => (Verify::SizesOnly, "sizes ok"),
                false => (Verify::Checksums, "checksums ok"),
            };
            dataset.verify(verify)?;
            let m = dataset.manifest();
            out.result(
                &json!({"event": "inspect", "dir": args.dir, "verified": !args.no_verify, "manifest": m.summary_json()}),
                || format!("{}: {checked}\n{}", args.dir.display(), m.describe()),
            );
        }
    }
    Ok(())
}
