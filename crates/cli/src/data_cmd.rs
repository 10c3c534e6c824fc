//! `smalltalk data …`: train a tokenizer, build a dataset folder, inspect one.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::{Args, Subcommand};
use smalltalk_data::{
    build_dataset, train_tokenizer, BuildOutcome, Dataset, PackingMode, Split, TextTokenizer,
    Verify,
};
use smalltalk_stage::atomic;

use crate::config::Config;
use crate::progress::{BarProgress, BarStyle};
use crate::report::{peak_rss_bytes, Output};

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
    /// config.toml, <split>-NNNNN.tokens, <split>-NNNNN.meta}. The folder appears only when
    /// complete; rerunning with the same inputs and settings does nothing.
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
    fn config(&self) -> Result<Config> {
        let mut config = Config::load_or_default(self.config.as_deref())?;
        if let Some(f) = &self.text_field {
            config.data.format.text_field = f.clone();
        }
        if let Some(v) = self.vocab_size {
            config.data.tokenizer.vocab_size = v;
        }
        Ok(config)
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
    match cmd {
        DataCommand::Tokenizer(args) => tokenizer(args, out),
        DataCommand::Build(args) => build(args, out),
        DataCommand::Inspect(args) => inspect(args, out),
    }
}

fn train(corpus: &[PathBuf], config: &Config, out: &Output) -> Result<TextTokenizer> {
    let mut progress = BarProgress::new(out.is_json(), BarStyle::Bytes);
    Ok(train_tokenizer(corpus, &config.data, &mut progress)?)
}

fn tokenizer(args: TokenizerArgs, out: &Output) -> Result<()> {
    let config = args.corpus.config()?;
    let start = Instant::now();
    let tok = train(&args.corpus.corpus, &config, out)?;
    tok.save(&args.out)?;
    out.result(
        &serde_json::json!({"event": "tokenizer", "path": args.out, "vocab_size": tok.vocab_size(),
            "eos_id": tok.eos_id, "pad_id": tok.pad_id, "hash": tok.hash()?, "seconds": start.elapsed().as_secs_f64()}),
        || format!("wrote {} (vocabulary {}) in {:.1}s", args.out.display(), tok.vocab_size(), start.elapsed().as_secs_f64()),
    );
    Ok(())
}

fn build(args: BuildArgs, out: &Output) -> Result<()> {
    let mut config = args.corpus.config()?;
    if let Some(n) = args.seq_len {
        config.data.seq_len = n;
    }
    if let Some(p) = args.packing {
        config.data.packing = p;
    }
    let start = Instant::now();
    let tok = match &args.tokenizer {
        Some(path) => TextTokenizer::load(path, args.eos_token.as_deref())?,
        None if args
            .out
            .join(smalltalk_data::manifest::MANIFEST_FILE)
            .exists() =>
        {
            // Rerun: reuse the dataset's own tokenizer so a finished build is recognised.
            Dataset::open(&args.out)?.tokenizer()?
        }
        None => train(&args.corpus.corpus, &config, out)?,
    };
    let mut progress = BarProgress::new(out.is_json(), BarStyle::Bytes);
    let outcome = build_dataset(
        &args.corpus.corpus,
        &tok,
        &args.out,
        &config.data,
        &mut progress,
    )?;
    drop(progress);
    if matches!(outcome, BuildOutcome::Built(_)) {
        atomic::write_file(&args.out.join("config.toml"), config.to_toml().as_bytes())?;
    }
    let m = outcome.manifest();
    let skipped = matches!(outcome, BuildOutcome::Skipped(_));
    let seconds = start.elapsed().as_secs_f64();
    let input_bytes: u64 = m.build.inputs.iter().map(|(_, n)| n).sum();
    out.result(
        &serde_json::json!({"event": "data", "dir": args.out, "skipped": skipped, "seconds": seconds,
            "input_bytes": input_bytes, "peak_rss_bytes": peak_rss_bytes(), "manifest": summary(m)}),
        || {
            let verb = if skipped { "already complete, skipped" } else { "built" };
            format!("{} {verb} in {seconds:.1}s\n{}", args.out.display(), human_summary(m))
        },
    );
    Ok(())
}

fn inspect(args: InspectArgs, out: &Output) -> Result<()> {
    let dataset = Dataset::open(&args.dir)?;
    let verify = if args.no_verify {
        Verify::SizesOnly
    } else {
        Verify::Checksums
    };
    for split in Split::ALL {
        dataset.reader(split, verify)?;
    }
    let m = dataset.manifest();
    out.result(&serde_json::json!({"event": "inspect", "dir": args.dir, "verified": !args.no_verify, "manifest": summary(m)}), || {
        format!("{}: {}\n{}", args.dir.display(), if args.no_verify { "sizes ok" } else { "checksums ok" }, human_summary(m))
    });
    Ok(())
}

fn summary(m: &smalltalk_data::Manifest) -> serde_json::Value {
    let splits: serde_json::Map<String, serde_json::Value> = m
        .splits
        .iter()
        .map(|(s, i)| {
            let v = serde_json::json!({"documents": i.documents, "sequences": i.sequences, "tokens": i.tokens,
                "padding_tokens": i.padding_tokens, "shards": i.shards.len(), "domain_sequences": i.domain_sequences});
            (s.name().to_string(), v)
        })
        .collect();
    serde_json::json!({"vocab_size": m.tokenizer.vocab_size, "seq_len": m.seq_len, "packing": m.packing,
        "id_width": m.id_width, "domains": m.domains, "documents_read": m.documents_read, "splits": splits})
}

fn human_summary(m: &smalltalk_data::Manifest) -> String {
    let mut lines = vec![format!(
        "vocabulary {}, seq_len {}, packing {}, ids {}, {} documents read",
        m.tokenizer.vocab_size,
        m.seq_len,
        serde_json::to_value(m.packing)
            .unwrap_or_default()
            .as_str()
            .unwrap_or("?"),
        serde_json::to_value(m.id_width)
            .unwrap_or_default()
            .as_str()
            .unwrap_or("?"),
        m.documents_read
    )];
    for (split, i) in &m.splits {
        lines.push(format!(
            "  {:<10} {:>7} docs {:>9} sequences {:>12} tokens ({:.1}% padding) in {} shard(s)",
            split.name(),
            i.documents,
            i.sequences,
            i.tokens,
            100.0 * i.padding_tokens as f64 / (i.sequences.max(1) * m.row_len as u64) as f64,
            i.shards.len()
        ));
    }
    lines.join("\n")
}
