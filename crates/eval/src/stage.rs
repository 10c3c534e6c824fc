//! The eval stage: load a mixture from its folders, check that its parts belong together, and
//! evaluate it on a dataset split or on any text file.

use std::path::Path;

use smalltalk_data::{CorpusFormat, CorpusReader, Dataset, Split, TextTokenizer, Verify};
use smalltalk_lm::burn::tensor::backend::Backend;
use smalltalk_lm::{SequenceSource, VecSource};
use smalltalk_stage::layout::{dense_dir, dense_steps_dir, expert_dir};

use crate::error::{EvalError, Result};
use crate::evaluate::{evaluate, Domains, EvalReport, Models};
use crate::models::{check_tokenizer, latest_model, trained_row_len};
use crate::text_router::TextRouter;

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
        EvalOptions { prefixes, seed }
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
}

/// Evaluate the mixture of the routers folder `routers_dir` and the experts folder
/// `experts_dir` (`expert-NN/`, `dense/`) on `data`. Refuses experts, a dense model or a
/// dataset made with another tokenizer than the routers'.
pub fn eval_run<B: Backend>(
    routers_dir: &Path,
    experts_dir: &Path,
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
    let router = TextRouter::load::<B>(routers_dir, device)?;
    let tokenizer_hash = router.tokenizer_hash().to_string();
    let runs: Vec<_> = (0..router.scorer.experts())
        .map(|e| expert_dir(experts_dir, e))
        .chain([dense_dir(experts_dir)])
        .collect();
    for run in &runs {
        check_tokenizer(run, &tokenizer_hash)?;
    }
    let mut experts = runs
        .iter()
        .map(|run| latest_model::<B>(run, device))
        .collect::<Result<Vec<_>>>()?;
    let dense = experts.pop().expect("the dense run is listed");
    // The E×-steps dense baseline, when the run trained one too.
    let steps_dir = dense_steps_dir(experts_dir);
    let dense_steps = match steps_dir.is_dir() {
        true => {
            check_tokenizer(&steps_dir, &tokenizer_hash)?;
            Some(latest_model::<B>(&steps_dir, device)?)
        }
        false => None,
    };
    let mut prefixes = options.prefixes.clone();
    prefixes.dedup();
    let file_row_len = || trained_row_len(&expert_dir(experts_dir, 0));
    let (rows, domains) = eval_rows(&router, data, file_row_len)?;
    let row_len = rows.row_len();
    let prefixes: Vec<usize> = prefixes
        .iter()
        .enumerate()
        .filter(|&(i, &m)| i == 0 || m <= row_len)
        .map(|(_, &m)| m)
        .collect();
    let report = evaluate(
        router.scorer.as_ref(),
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
    Ok(EvalReport {
        routing: Some(router.method.name().to_string()),
        ..report
    })
}

/// The rows of `data` and their domain labels (when every row has one): a dataset split
/// (refused when built with another tokenizer than the router's), or a file's documents cut
/// to `file_row_len()` tokens each.
pub(crate) fn eval_rows(
    router: &TextRouter,
    data: &EvalData<'_>,
    file_row_len: impl FnOnce() -> Result<usize>,
) -> Result<(Box<dyn SequenceSource>, Option<Domains>)> {
    match data {
        EvalData::Split { dataset, split } => {
            let dataset = Dataset::open(dataset)?;
            let m = dataset.manifest();
            if m.tokenizer.hash != router.tokenizer_hash() {
                return Err(EvalError::Config(format!(
                    "the dataset {} was built with tokenizer {}, but the routers read {}",
                    dataset.dir().display(),
                    m.tokenizer.hash,
                    router.tokenizer_hash()
                )));
            }
            let rows = dataset.reader(*split, Verify::Checksums)?;
            let labels: Vec<u32> = (0..rows.len()).map(|i| rows.meta(i).domain).collect();
            let domains = (!m.domains.is_empty()).then(|| (labels, m.domains.clone()));
            Ok((Box::new(rows), domains))
        }
        EvalData::File(file) => {
            let (rows, domains) = file_rows(&router.tokenizer, file, file_row_len()?)?;
            Ok((Box::new(rows), domains))
        }
    }
}

/// Rows of a held-out `file`: each document's first `row_len` tokens (its tokens and the
/// end-of-document token), padded with the tokenizer's pad id; and the documents' domain
/// labels when every document has one.
fn file_rows(
    tokenizer: &TextTokenizer,
    file: &Path,
    row_len: usize,
) -> Result<(VecSource, Option<Domains>)> {
    let pad = tokenizer.pad_id;
    let mut tokens = Vec::new();
    let (mut labels, mut names): (Vec<Option<u32>>, Vec<String>) = (Vec::new(), Vec::new());
    for doc in CorpusReader::open(&[file.to_path_buf()], CorpusFormat::default())? {
        let doc = doc?;
        let mut ids = tokenizer.encode(&doc.text)?;
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
            "{}: no documents to evaluate",
            file.display()
        )));
    }
    let domains = labels
        .iter()
        .all(Option::is_some)
        .then(|| (labels.into_iter().flatten().collect(), names))
        .filter(|(_, names): &(Vec<u32>, Vec<String>)| !names.is_empty());
    Ok((VecSource::new(tokens, row_len, Some(pad)), domains))
}
