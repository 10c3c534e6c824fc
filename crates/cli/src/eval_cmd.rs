//! `smalltalk eval`: routed evaluation of the mixture against the dense baseline.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use smalltalk_data::{CorpusFormat, CorpusReader, Dataset, Split, TextTokenizer, Verify};
use smalltalk_expert::{dense_dir, evaluate, expert_dir, EvalReport};
use smalltalk_lm::backend::BackendKind;
use smalltalk_lm::burn::tensor::backend::{AutodiffBackend, Backend};
use smalltalk_lm::{Checkpoint, Lm, SequenceSource, VecSource};
use smalltalk_router::RouterSet;

use crate::backends::{dispatch, BackendJob};
use crate::report::Output;

/// `eval` flags.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// What to evaluate: a dataset folder (its --split), or any held-out file (JSON lines with
    /// `text`, or plain text; .gz/.zst) tokenized with the run's tokenizer (the routers folder's
    /// tokenizer.json): each document's first tokens, up to the experts' training row length,
    /// form one row (shorter ones are padded).
    #[arg(long)]
    data: PathBuf,
    /// Routers folder (`smalltalk routers train`).
    #[arg(long)]
    routers: PathBuf,
    /// Folder holding expert-NN/ and dense/ (`smalltalk expert train`, `smalltalk dense train`).
    #[arg(long)]
    experts: PathBuf,
    /// Which split of --data to evaluate when no --file is given.
    #[arg(long, default_value = "validation")]
    split: String,
    /// Routing prefix M̂ in tokens (argmax over routers, no balancing).
    #[arg(long, default_value_t = 32)]
    prefix: usize,
    /// More routing prefixes to report in the same run, e.g. 8,16,32,64,128,256.
    #[arg(long, value_delimiter = ',')]
    prefix_sweep: Vec<usize>,
    /// Seed of the random-routing baseline.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the report as JSON to this file (what `smalltalk report` reads as eval.json).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Run `smalltalk eval`.
pub fn run(args: EvalArgs, backend: BackendKind, out: &Output) -> Result<()> {
    dispatch(backend, Job { args: &args, out })
}

struct Job<'a> {
    args: &'a EvalArgs,
    out: &'a Output,
}

impl BackendJob for Job<'_> {
    type Output = ();
    fn run<AB: AutodiffBackend>(self, name: &'static str) -> Result<()> {
        let report = eval::<AB::InnerBackend>(self.args)?;
        let mut value = serde_json::to_value(&report).expect("report serialises");
        value["backend"] = name.into();
        if let Some(path) = &self.args.out {
            let text = serde_json::to_string_pretty(&value).expect("report serialises");
            smalltalk_data::atomic::write_file(path, text.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        self.out.result(&value, || human(&report));
        Ok(())
    }
}

fn load_model<B: Backend>(run: &Path) -> Result<Lm<B>> {
    let ckpts = run.join("checkpoints");
    let ckpt = Checkpoint::latest(&ckpts)?
        .with_context(|| format!("no checkpoint in {} (train it first)", ckpts.display()))?;
    Ok(ckpt.load_model::<B>(&Default::default())?)
}

/// Rows of a held-out `file`: each document's first `row_len` tokens (its tokens and the
/// end-of-document token), padded with the tokenizer's pad id.
fn file_rows(tokenizer_path: &Path, file: &Path, row_len: usize) -> Result<VecSource> {
    let tokenizer = TextTokenizer::load(tokenizer_path, None)
        .with_context(|| format!("tokenizer {}", tokenizer_path.display()))?;
    let pad = tokenizer.pad_id;
    let mut tokens = Vec::new();
    for doc in CorpusReader::open(&[file.to_path_buf()], CorpusFormat::default())? {
        let doc = doc?;
        let mut ids = tokenizer.encode(&doc.text)?;
        ids.push(tokenizer.eos_id);
        ids.resize(row_len, pad);
        tokens.extend_from_slice(&ids[..row_len]);
    }
    if tokens.is_empty() {
        bail!("{}: no documents to evaluate", file.display());
    }
    Ok(VecSource::new(tokens, row_len, Some(pad)))
}

/// The row length the experts were trained on (from expert 0's newest checkpoint).
fn expert_row_len(experts: &Path) -> Result<usize> {
    let ckpts = expert_dir(experts, 0).join("checkpoints");
    let ckpt = Checkpoint::latest(&ckpts)?.with_context(|| {
        format!(
            "no checkpoint in {} (train the experts first)",
            ckpts.display()
        )
    })?;
    ckpt.state
        .data
        .map(|d| d.row_len)
        .with_context(|| format!("{}: the expert has not trained yet", ckpt.dir.display()))
}

fn eval<B: Backend>(args: &EvalArgs) -> Result<EvalReport> {
    let routers = RouterSet::<B>::load(&args.routers, &Default::default())
        .with_context(|| format!("routers in {}", args.routers.display()))?;
    let experts = (0..routers.experts())
        .map(|e| load_model::<B>(&expert_dir(&args.experts, e)))
        .collect::<Result<Vec<_>>>()?;
    let dense = load_model::<B>(&dense_dir(&args.experts))?;
    let mut prefixes = vec![args.prefix];
    prefixes.extend(args.prefix_sweep.iter().filter(|&&m| m != args.prefix));
    if args.data.is_file() {
        let row_len = expert_row_len(&args.experts)?;
        let rows = file_rows(&args.routers.join("tokenizer.json"), &args.data, row_len)?;
        return Ok(evaluate(
            &routers, &experts, &dense, &rows, None, &prefixes, args.seed,
        )?);
    }
    let dataset =
        Dataset::open(&args.data).with_context(|| format!("dataset {}", args.data.display()))?;
    let split: Split = args
        .split
        .parse()
        .map_err(|e| anyhow::anyhow!("--split: {e}"))?;
    let rows = dataset.reader(split, Verify::Checksums)?;
    let labels: Vec<u32> = (0..rows.len()).map(|i| rows.meta(i).domain).collect();
    let names = dataset.manifest().domains.clone();
    let domains = (!names.is_empty()).then(|| (labels, names));
    let source: &dyn SequenceSource = &rows;
    Ok(evaluate(
        &routers, &experts, &dense, source, domains, &prefixes, args.seed,
    )?)
}

fn human(r: &EvalReport) -> String {
    let mut s = format!(
        "{} experts, {} sequences ({} tokens), routed on {} tokens\n\
         | model | ppl | ppl after the prefix |\n|---|---|---|\n\
         | mixture (router argmax) | {:.3} | {:.3} |\n| dense | {:.3} | {:.3} |\n\
         | random routing | {:.3} | |\n| oracle routing | {:.3} | |\n",
        r.experts,
        r.sequences,
        r.tokens,
        r.prefix_tokens,
        r.mixture_ppl,
        r.mixture_ppl_excl_prefix,
        r.dense_ppl,
        r.dense_ppl_excl_prefix,
        r.random_ppl,
        r.oracle_ppl,
    );
    s.push_str("expert load: ");
    s.push_str(
        &r.expert_load
            .iter()
            .map(|l| format!("{l:.2}"))
            .collect::<Vec<_>>()
            .join(" / "),
    );
    if let Some(p) = r.routing_purity {
        s.push_str(&format!("; routing purity {p:.3}"));
    }
    for seg in &r.segments {
        s.push_str(&format!(
            "\n  expert {}: {} sequences, expert ppl {:.3} vs dense {:.3}",
            seg.expert, seg.sequences, seg.expert_ppl, seg.dense_ppl
        ));
    }
    for p in r.prefix_sweep.iter().skip(1) {
        s.push_str(&format!(
            "\n  prefix {:>4}: mixture ppl {:.3} (after prefix {:.3} vs dense {:.3})",
            p.prefix_tokens, p.mixture_ppl, p.mixture_ppl_excl_prefix, p.dense_ppl_excl_prefix
        ));
    }
    s
}
