//! `smalltalk partition` (split the training split into E expert shards with the trained
//! routers) and `smalltalk route` (which expert a text goes to).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use smalltalk_data::{CorpusFormat, CorpusReader, TextTokenizer};
use smalltalk_lm::backend::BackendKind;
use smalltalk_lm::burn::tensor::backend::{AutodiffBackend, Backend};
use smalltalk_lm::VecSource;
use smalltalk_router::{partition_split, score_rows, RouterSet};

use crate::backends::{dispatch, BackendJob};
use crate::config::Config;
use crate::report::Output;
use crate::routers_cmd::TrainingRows;

/// `partition` flags.
#[derive(Debug, Args)]
pub struct PartitionArgs {
    /// Dataset folder (its training split is partitioned).
    #[arg(long)]
    data: PathBuf,
    /// Routers folder written by `smalltalk routers train`.
    #[arg(long)]
    routers: PathBuf,
    /// Output folder: expert-NN.rows (row indices of each shard) and partition.json.
    #[arg(long)]
    out: PathBuf,
    /// TOML config; its [partition] table sets the options (flags below override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Rows balanced together [config: partition.chunk_sequences; default 262144].
    #[arg(long)]
    chunk: Option<usize>,
    /// Prefix scored per row; 0 = the routers' training prefix [config: partition.prefix_len].
    #[arg(long)]
    prefix: Option<usize>,
}

/// `route` flags.
#[derive(Debug, Args)]
pub struct RouteArgs {
    /// Routers folder written by `smalltalk routers train` (holds the tokenizer too).
    #[arg(long)]
    routers: PathBuf,
    /// A text to route.
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    text: Option<String>,
    /// A file of texts: JSON lines (one text per line, field `text`) or a plain-text file (one
    /// text), optionally .gz/.zst.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Routing prefix M̂ in tokens (texts shorter than this are routed on what there is).
    #[arg(long, default_value_t = 32)]
    prefix: usize,
}

/// Run `smalltalk partition`.
pub fn partition(args: PartitionArgs, backend: BackendKind, out: &Output) -> Result<()> {
    let mut config = Config::load_or_default(args.config.as_deref())?;
    if let Some(c) = args.chunk {
        config.partition.chunk_sequences = c;
    }
    if let Some(m) = args.prefix {
        config.partition.prefix_len = m;
    }
    let rows = TrainingRows::open(&args.data)?;
    dispatch(
        backend,
        PartitionJob {
            args: &args,
            config: &config,
            rows: &rows,
            out,
        },
    )
}

struct PartitionJob<'a> {
    args: &'a PartitionArgs,
    config: &'a Config,
    rows: &'a TrainingRows,
    out: &'a Output,
}

impl BackendJob for PartitionJob<'_> {
    type Output = ();
    fn run<AB: AutodiffBackend>(self, name: &'static str) -> Result<()> {
        let routers = RouterSet::<AB::InnerBackend>::load(&self.args.routers, &Default::default())
            .with_context(|| format!("routers in {}", self.args.routers.display()))?;
        let bar = self.out.steps_bar("partition");
        let data = self.rows.em_data();
        let (m, skipped) = partition_split(
            &routers,
            &data,
            &self.args.out,
            &self.config.partition,
            |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            },
        )
        .with_context(|| format!("partitioning into {}", self.args.out.display()))?;
        bar.finish_and_clear();
        let sizes: Vec<usize> = m.shards.iter().map(|s| s.sequences).collect();
        self.out.result(
            &json!({
                "stage": "partition", "backend": name, "dir": self.args.out, "skipped": skipped,
                "experts": m.experts, "rows": m.rows, "shard_sizes": sizes,
                "argmax_load": m.argmax_load, "purity": m.purity, "domains": m.domains,
                "domain_mix": m.domain_mix,
            }),
            || {
                let mut s = format!(
                    "{} {} rows into {} shards in {}: sizes {:?}{}",
                    if skipped {
                        "already partitioned"
                    } else {
                        "partitioned"
                    },
                    m.rows,
                    m.experts,
                    self.args.out.display(),
                    sizes,
                    m.purity
                        .map_or(String::new(), |p| format!(", domain purity {p:.3}")),
                );
                if let (Some(names), Some(mix)) = (&m.domains, &m.domain_mix) {
                    for (e, row) in mix.iter().enumerate() {
                        let parts: Vec<String> = names
                            .iter()
                            .zip(row)
                            .map(|(n, c)| format!("{n} {c}"))
                            .collect();
                        s.push_str(&format!("\n  expert {e}: {}", parts.join(", ")));
                    }
                }
                s
            },
        );
        Ok(())
    }
}

/// Run `smalltalk route`.
pub fn route(args: RouteArgs, backend: BackendKind, out: &Output) -> Result<()> {
    if args.prefix < 2 {
        bail!("--prefix must be at least 2 (the first token is not scored)");
    }
    dispatch(backend, RouteJob { args: &args, out })
}

struct RouteJob<'a> {
    args: &'a RouteArgs,
    out: &'a Output,
}

impl BackendJob for RouteJob<'_> {
    type Output = ();
    fn run<AB: AutodiffBackend>(self, _name: &'static str) -> Result<()> {
        route_texts::<AB::InnerBackend>(self.args, self.out)
    }
}

fn texts(args: &RouteArgs) -> Result<Vec<String>> {
    if let Some(t) = &args.text {
        return Ok(vec![t.clone()]);
    }
    let path = args.file.as_ref().expect("clap requires --text or --file");
    let mut texts = Vec::new();
    for doc in CorpusReader::open(std::slice::from_ref(path), CorpusFormat::default())? {
        texts.push(doc?.text);
    }
    Ok(texts)
}

fn load_tokenizer(dir: &Path) -> Result<TextTokenizer> {
    let path = dir.join("tokenizer.json");
    TextTokenizer::load(&path, None).with_context(|| format!("tokenizer {}", path.display()))
}

fn route_texts<B: Backend>(args: &RouteArgs, out: &Output) -> Result<()> {
    let routers = RouterSet::<B>::load(&args.routers, &Default::default())
        .with_context(|| format!("routers in {}", args.routers.display()))?;
    let tokenizer = load_tokenizer(&args.routers)?;
    for (i, text) in texts(args)?.iter().enumerate() {
        let ids = tokenizer.encode(text)?;
        let m = ids.len().min(args.prefix);
        if m < 2 {
            let value = json!({"index": i, "tokens": ids.len(), "expert": null, "reason": "fewer than 2 tokens"});
            out.result(&value, || {
                format!("text {i}: fewer than 2 tokens, cannot be routed")
            });
            continue;
        }
        let source = VecSource::new(ids[..m].to_vec(), m, None);
        let scores = score_rows(&routers.model_refs(), &source, &[0], m, 1, |_, _| {})?;
        let expert = smalltalk_partition::argmax_assign(&smalltalk_partition::ScoreMatrix::new(
            &scores,
            routers.experts(),
        )?)[0];
        let value = json!({"index": i, "prefix_tokens": m, "expert": expert, "scores": scores});
        out.result(&value, || {
            let list: Vec<String> = scores
                .iter()
                .enumerate()
                .map(|(e, s)| format!("router {e}: {s:.2}"))
                .collect();
            format!(
                "text {i} ({m} prefix tokens) -> expert {expert}   [{}]",
                list.join(", ")
            )
        });
    }
    Ok(())
}
