//! The eval stage: load a mixture from its manifest (`mixture.json`, every part verified) and
//! evaluate it on a dataset split or on any text file.

use std::path::Path;

use smalltalk_data::{CorpusFormat, CorpusReader, Dataset, Split, TextTokenizer, Verify};
use smalltalk_lm::burn::tensor::backend::Backend;
use smalltalk_lm::{SequenceSource, VecSource};
use smalltalk_mixture::{Mixture, OpenOptions};

use crate::error::{EvalError, Result};
use crate::evaluate::{evaluate, Domains, EvalReport, Models};

/// What to evaluate on.
#[derive(Debug, Clone)]
pub enum EvalData<'a> {
    /// A split of a dataset folder (built with the routers' tokenizer).
    Split {
        /// The dataset folder.
        dataset: &'a Path,
        /// Which split.
        split: Split,
    },
    /// A held-out file (JSON lines with `text` and optionally `domain`, or plain text;
    /// `.gz`/`.zst`), tokenized with the routers' tokenizer: each document's first tokens, up
    /// to the experts' training row length, form one row (shorter ones are padded).
    File(&'a Path),
}

impl<'a> EvalData<'a> {
    /// `path` as a dataset folder's `split`, or as a held-out file when it is a file.
    pub fn at(path: &'a Path, split: Split) -> Self {
        match path.is_file() {
            true => EvalData::File(path),
            false => EvalData::Split {
                dataset: path,
                split,
            },
        }
    }
}

impl EvalOptions {
    /// The headline prefix `prefix` followed by the sweep's other prefixes.
    pub fn new(prefix: usize, sweep: &[usize], seed: u64) -> Self {
        let mut prefixes = vec![prefix];
        prefixes.extend(sweep.iter().filter(|&&m| m != prefix));
        EvalOptions {
            prefixes,
            seed,
            allow_unfinished: false,
        }
    }
}

/// How to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    /// Routing prefixes M̂ in tokens; the first is the headline, the rest form the sweep
    /// (sweep prefixes longer than the rows are left out: a short-row dataset takes the
    /// standard sweep).
    pub prefixes: Vec<usize>,
    /// Seed of the random-routing baseline.
    pub seed: u64,
    /// Evaluate members that stopped before the end of their schedule (the report names
    /// them in `unfinished`).
    pub allow_unfinished: bool,
}

/// Evaluate the mixture of the manifest `mixture` (a run folder or a `mixture.json`; see
/// `smalltalk_mixture`) on `data`: its members' routers and experts and its dense baselines
/// (`dense` required, `dense-steps` when listed), every file verified against the manifest.
/// Refuses unfinished members unless [`EvalOptions::allow_unfinished`] (then the report
/// names them), and a dataset made with another tokenizer than the mixture's.
pub fn eval_run<B: Backend>(
    mixture: &Path,
    data: &EvalData<'_>,
    options: &EvalOptions,
    device: &B::Device,
) -> Result<EvalReport> {
    if options.prefixes.is_empty() || options.prefixes.iter().any(|&m| m < 2) {
        return Err(EvalError::Config(format!(
            "routing prefixes must be at least 2 tokens each (the first token is not scored), not {:?}",
            options.prefixes
        )));
    }
    let open = OpenOptions {
        allow_unfinished: options.allow_unfinished,
        ..OpenOptions::default()
    };
    let mix = Mixture::<B>::open(mixture, &open, device)?;
    let manifest = mix.manifest();
    let experts = manifest
        .members
        .iter()
        .map(|m| Ok((*mix.expert(&m.name)?).clone()))
        .collect::<Result<Vec<_>>>()?;
    let dense = mix.dense(DENSE)?.ok_or_else(|| {
        EvalError::Config(format!(
            "{} lists no dense baseline `{DENSE}` (train it with `smalltalk dense train`, then \
             write the manifest again with `smalltalk mixture write`)",
            mix.file().display()
        ))
    })?;
    // The E×-steps dense baseline, when the run trained one too.
    let dense_steps = mix.dense(DENSE_STEPS)?;
    let mut prefixes = options.prefixes.clone();
    prefixes.dedup();
    let first = manifest.members[0].name.clone();
    let file_row_len = || Ok(mix.trained_row_len(&first)?);
    let EvalRows {
        rows,
        domains,
        skipped_documents,
    } = eval_rows(
        mix.tokenizer(),
        &manifest.tokenizer.hash,
        data,
        file_row_len,
    )?;
    let row_len = rows.row_len();
    // One rule for every prefix: it must fit in the rows (2..=row length). The headline is the
    // result, so one that does not fit is refused (by `evaluate`); a sweep entry that does not
    // fit is left out and named in the report (`prefix_sweep_left_out`).
    let (prefixes, left_out) = fit_prefixes(&prefixes, row_len);
    let report = evaluate(
        mix.scorer(),
        &Models {
            experts,
            dense,
            dense_steps,
        },
        rows.as_ref(),
        domains,
        &prefixes,
        options.seed,
    )?;
    let unfinished = manifest
        .members
        .iter()
        .map(|m| (&m.name, &m.expert))
        .chain(manifest.dense.iter().map(|d| (&d.name, &d.model)))
        .filter(|(_, r)| !r.finished)
        .map(|(name, r)| format!("{name} (step {} of {})", r.step, r.steps))
        .collect();
    Ok(EvalReport {
        routing: Some(manifest.routing.method.clone()),
        members: manifest.names(),
        unfinished,
        skipped_documents,
        prefix_sweep_left_out: left_out,
        ..report
    })
}

/// The prefixes that fit in rows of `row_len` tokens (the first, the headline, is always kept:
/// the caller refuses it when it does not fit) and the sweep entries left out.
pub(crate) fn fit_prefixes(prefixes: &[usize], row_len: usize) -> (Vec<usize>, Vec<usize>) {
    let mut kept = Vec::new();
    let mut left_out = Vec::new();
    for (i, &m) in prefixes.iter().enumerate() {
        match i == 0 || m <= row_len {
            true => kept.push(m),
            false => left_out.push(m),
        }
    }
    (kept, left_out)
}

/// The dense baseline's name in the manifest (E× the experts' batch, the paper's protocol).
const DENSE: &str = "dense";
/// The E×-steps dense baseline's name in the manifest.
const DENSE_STEPS: &str = "dense-steps";

/// The rows to evaluate.
pub(crate) struct EvalRows {
    /// The rows.
    pub rows: Box<dyn SequenceSource>,
    /// Their domain labels, when every row has one.
    pub domains: Option<Domains>,
    /// Documents of a file skipped because they hold no token to score.
    pub skipped_documents: usize,
}

/// The rows of `data` and their domain labels (when every row has one): a dataset split
/// (refused when built with another tokenizer than the router's), or a file's documents cut
/// to `file_row_len()` tokens each (empty documents skipped and counted).
pub(crate) fn eval_rows(
    tokenizer: &TextTokenizer,
    tokenizer_hash: &str,
    data: &EvalData<'_>,
    file_row_len: impl FnOnce() -> Result<usize>,
) -> Result<EvalRows> {
    match data {
        EvalData::Split { dataset, split } => {
            let dataset = Dataset::open(dataset)?;
            let m = dataset.manifest();
            if m.tokenizer.hash != tokenizer_hash {
                return Err(EvalError::Config(format!(
                    "the dataset {} was built with tokenizer {}, but the routers read {}",
                    dataset.dir().display(),
                    m.tokenizer.hash,
                    tokenizer_hash
                )));
            }
            let rows = dataset.reader(*split, Verify::Checksums)?;
            let labels: Vec<u32> = (0..rows.len()).map(|i| rows.meta(i).domain).collect();
            let domains = (!m.domains.is_empty()).then(|| (labels, m.domains.clone()));
            Ok(EvalRows {
                rows: Box::new(rows),
                domains,
                skipped_documents: 0,
            })
        }
        EvalData::File(file) => {
            let (rows, domains, skipped_documents) = file_rows(tokenizer, file, file_row_len()?)?;
            Ok(EvalRows {
                rows: Box::new(rows),
                domains,
                skipped_documents,
            })
        }
    }
}

/// Rows of a held-out `file`: each document's first `row_len` tokens (its tokens and the
/// end-of-document token), padded with the tokenizer's pad id; the documents' domain labels
/// when every document has one; and how many documents were skipped because their text
/// gives no token (an empty row has no target to score: averaged in, it would make every
/// perplexity NaN).
fn file_rows(
    tokenizer: &TextTokenizer,
    file: &Path,
    row_len: usize,
) -> Result<(VecSource, Option<Domains>, usize)> {
    let pad = tokenizer.pad_id;
    let mut tokens = Vec::new();
    let (mut labels, mut names): (Vec<Option<u32>>, Vec<String>) = (Vec::new(), Vec::new());
    let mut skipped = 0;
    for doc in CorpusReader::open(&[file.to_path_buf()], CorpusFormat::default())? {
        let doc = doc?;
        let mut ids = tokenizer.encode(&doc.text)?;
        if ids.is_empty() {
            skipped += 1;
            continue;
        }
        ids.push(tokenizer.eos_id);
        ids.resize(row_len, pad);
        tokens.extend_from_slice(&ids[..row_len]);
        labels.push(
            doc.domain
                .map(|d| match names.iter().position(|n| *n == d) {
                    Some(i) => i as u32,
                    None => {
                        names.push(d);
                        (names.len() - 1) as u32
                    }
                }),
        );
    }
    if tokens.is_empty() {
        return Err(EvalError::Config(format!(
            "{}: no document to evaluate ({skipped} empty documents skipped)",
            file.display()
        )));
    }
    let domains = labels
        .iter()
        .all(Option::is_some)
        .then(|| (labels.into_iter().flatten().collect(), names))
        .filter(|(_, names): &(Vec<u32>, Vec<String>)| !names.is_empty());
    Ok((VecSource::new(tokens, row_len, Some(pad)), domains, skipped))
}
