//! Every input of the report, read through its own type: the dataset manifest, router EM's
//! per-iteration metrics, the partition manifest, the evaluation and the stage wall times.
//!
//! The stage crates' types are imported here and nowhere else in this crate, so moving one of
//! them to another crate changes this module only.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use smalltalk_stage::RunLayout;

pub use smalltalk_data::Manifest;
pub use smalltalk_eval::{EvalReport, PrefixResult, Segment};
pub use smalltalk_router::IterationMetrics;
pub use smalltalk_routing::PartitionManifest;
pub use smalltalk_stage::layout::StageSeconds;

use crate::error::{ReportError, Result};

/// `eval.json` (`smalltalk eval --out`): the evaluation and the backend that computed it.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalFile {
    /// The evaluation.
    pub report: EvalReport,
    /// The compute backend the evaluation ran on (`flex`, `cuda`, ...), when recorded.
    pub backend: Option<String>,
}

/// The key `eval.json` holds beside the evaluation's.
#[derive(Deserialize)]
struct Backend {
    #[serde(default)]
    backend: Option<String>,
}

impl EvalFile {
    /// Read `eval.json`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = read_text(path)?;
        let report = parse_json(path, 1, &text)?;
        let Backend { backend } = parse_json(path, 1, &text)?;
        Ok(EvalFile { report, backend })
    }
}

/// Everything the report reads from a run folder, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    /// `eval.json`.
    pub eval: EvalFile,
    /// `eval-test.json`, when the run evaluated its test split too.
    pub eval_test: Option<EvalFile>,
    /// `eval-branched.json`, when the run also branch-trained a mixture.
    pub eval_branched: Option<EvalFile>,
    /// `data/manifest.json`.
    pub manifest: Manifest,
    /// `partition/partition.json`.
    pub partition: PartitionManifest,
    /// `routers/em/metrics.jsonl`, one record per EM iteration (empty when `eval.json` names
    /// another routing method than `em`).
    pub em: Vec<IterationMetrics>,
    /// `stage_seconds.json` (empty when the file does not exist).
    pub stage_seconds: Vec<StageSeconds>,
}

impl Inputs {
    /// Read every input of the run folder; a missing or malformed file is an error naming it
    /// (only `stage_seconds.json` may be absent, and the EM record of routers that are not
    /// EM router LMs).
    pub fn read(layout: &RunLayout) -> Result<Self> {
        let stage_seconds = match read_text(&layout.stage_seconds()) {
            Err(ReportError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Vec::new()
            }
            other => parse_json(&layout.stage_seconds(), 1, &other?)?,
        };
        let eval = EvalFile::read(&layout.eval_json())?;
        // Routing by a baseline method (TF-IDF, random, domain labels) has no EM record.
        let em = match eval.report.routing.as_deref() {
            Some(method) if method != "em" => Vec::new(),
            _ => read_json_lines(&layout.em_metrics())?,
        };
        Ok(Inputs {
            eval,
            eval_test: match layout.eval_test_json().exists() {
                true => Some(EvalFile::read(&layout.eval_test_json())?),
                false => None,
            },
            eval_branched: match layout.eval_branched_json().exists() {
                true => Some(EvalFile::read(&layout.eval_branched_json())?),
                false => None,
            },
            manifest: read_json(&layout.data_manifest())?,
            partition: read_json(&layout.partition_manifest())?,
            em,
            stage_seconds,
        })
    }
}

/// The text of `path`.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| ReportError::io(path, e))
}

/// `path` parsed as one JSON value of type `T`.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    parse_json(path, 1, &read_text(path)?)
}

/// `text`, read from `path` from line `first_line` on, parsed as a `T`; an error names the
/// line, column and key.
pub(crate) fn parse_json<T: DeserializeOwned>(
    path: &Path,
    first_line: usize,
    text: &str,
) -> Result<T> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| ReportError::json(path, first_line, e.path().to_string(), e.inner()))?;
    de.end()
        .map_err(|e| ReportError::json(path, first_line, String::new(), &e))?;
    Ok(value)
}

/// `path` parsed as JSON lines, one `T` a line; blank lines are skipped. An error names the
/// file's line.
pub fn read_json_lines<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    read_text(path)?
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| parse_json(path, i + 1, line))
        .collect()
}

/// A small hand-made run folder built by serializing the real input types.
#[cfg(test)]
pub(crate) mod fixture {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use serde::Serialize;
    use smalltalk_data::manifest::{BuildSettings, IdWidth, ShardInfo, SplitInfo, TokenizerInfo};
    use smalltalk_data::{CorpusFormat, PackingMode, Split, SplitSettings};
    use smalltalk_routing::ExpertRows;
    use smalltalk_stage::layout::stage_config;
    use smalltalk_stage::RunLayout;

    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn json(value: &impl Serialize) -> String {
        serde_json::to_string_pretty(value).unwrap()
    }

    /// The evaluation of the fixture (two experts, headline prefix 32).
    pub fn eval() -> EvalReport {
        let sweep = |m: usize, ppl: f64| PrefixResult {
            prefix_tokens: m,
            mixture_ppl: ppl,
            mixture_ppl_excl_prefix: ppl - 1.0,
            dense_ppl_excl_prefix: 14.0,
            expert_load: vec![0.5, 0.5],
            routing_purity: Some(0.75),
        };
        let segment = |e: usize| Segment {
            expert: e,
            sequences: 5,
            expert_ppl: 11.0 + e as f64,
            dense_ppl: 13.0,
        };
        EvalReport {
            routing: None,
            experts: 2,
            members: vec!["expert-00".into(), "expert-01".into()],
            unfinished: Vec::new(),
            prefix_tokens: 32,
            sequences: 10,
            tokens: 1_000,
            mixture_ppl: 12.0,
            mixture_ppl_excl_prefix: 11.5,
            dense_ppl: 13.5,
            dense_steps_ppl: None,
            dense_ppl_excl_prefix: 13.25,
            random_ppl: 15.0,
            oracle_ppl: 10.0,
            expert_load: vec![0.5, 0.5],
            routing_purity: Some(0.8),
            segments: vec![segment(0), segment(1)],
            prefix_sweep: vec![
                sweep(32, 12.0),
                sweep(8, 12.75),
                sweep(16, 12.5),
                sweep(64, 11.75),
                sweep(128, 11.5),
                sweep(256, 11.25),
            ],
            domains: Vec::new(),
            skipped_documents: 0,
            prefix_sweep_left_out: Vec::new(),
        }
    }

    fn manifest() -> Manifest {
        let split = |sequences: u64| SplitInfo {
            documents: sequences / 2,
            sequences,
            tokens: sequences * 17,
            padding_tokens: 3,
            sequences_per_shard: 64,
            domain_sequences: BTreeMap::from([("d0".into(), sequences / 2)]),
            shards: vec![ShardInfo {
                tokens_file: "train-00000.tokens".into(),
                meta_file: "train-00000.meta".into(),
                sequences,
                tokens_checksum: "xxh3:0".into(),
                meta_checksum: "xxh3:0".into(),
            }],
        };
        Manifest {
            format: smalltalk_data::manifest::FORMAT.into(),
            tokenizer: TokenizerInfo {
                file: "tokenizer.json".into(),
                hash: "xxh3:0".into(),
                vocab_size: 300,
                eos_id: 0,
                pad_id: 1,
            },
            seq_len: 16,
            row_len: 17,
            packing: PackingMode::DocStart,
            id_width: IdWidth::U16,
            domains: vec!["d0".into(), "d1".into()],
            documents_read: 40,
            documents_skipped_empty: 0,
            splits: BTreeMap::from([(Split::Train, split(40)), (Split::Validation, split(10))]),
            build: BuildSettings {
                inputs: vec![(PathBuf::from("corpus.jsonl"), 4_000)],
                format: CorpusFormat::default(),
                split: SplitSettings::default(),
                seq_len: 16,
                packing: PackingMode::DocStart,
                sequences_per_shard: 64,
            },
        }
    }

    /// EM iteration `i` of the fixture.
    pub fn iteration(i: usize) -> IterationMetrics {
        IterationMetrics {
            iteration: i,
            router_steps: 3 * i,
            train_loss: vec![5.0 - i as f64 * 0.5, 5.1 - i as f64 * 0.5],
            scored: 16,
            part_sizes: vec![8, 8],
            argmax_load: vec![0.5, 0.5],
            mean_best_nll: 5.0 - i as f64 * 0.25,
            changed_fraction: (i > 1).then_some(0.25),
            domain_mix: Some(vec![vec![6, 2], vec![1, 7]]),
            purity: Some(0.5 + 0.1 * i as f64),
            seconds: 1.5,
        }
    }

    fn partition() -> PartitionManifest {
        let shard = |e: usize| ExpertRows {
            file: format!("expert-{e:02}.rows"),
            sequences: 20,
            checksum: "xxh3:0".into(),
        };
        PartitionManifest {
            format: smalltalk_routing::PARTITION_FORMAT.into(),
            experts: 2,
            prefix_len: 8,
            chunk_sequences: 16,
            rows: 40,
            routers_fingerprint: "f".into(),
            data_identity: "d".into(),
            expert_rows: vec![shard(0), shard(1)],
            argmax_load: vec![0.55, 0.45],
            mean_best_nll: 4.2,
            domains: Some(vec!["d0".into(), "d1".into()]),
            domain_mix: Some(vec![vec![15, 5], vec![3, 17]]),
            purity: Some(0.8),
        }
    }

    /// Write the fixture's run folder under `root` (every input, stage configs included).
    pub fn write_run(root: &Path) -> RunLayout {
        let layout = RunLayout::new(root);
        let mut eval = serde_json::to_value(eval()).unwrap();
        eval["backend"] = "flex".into();
        write(&layout.eval_json(), &json(&eval));
        write(&layout.data_manifest(), &json(&manifest()));
        write(&layout.partition_manifest(), &json(&partition()));
        let lines: Vec<String> = (1..=3)
            .map(|i| serde_json::to_string(&iteration(i)).unwrap())
            .collect();
        write(&layout.em_metrics(), &(lines.join("\n") + "\n"));
        let seconds =
            [("routers", 12.5), ("partition", 3.0), ("expert", 20.0)].map(|(stage, seconds)| {
                StageSeconds {
                    stage: stage.into(),
                    seconds,
                }
            });
        write(&layout.stage_seconds(), &json(&seconds));
        // The data stage writes every stage's table; the report keeps only its own.
        let data =
            "[data]\nseq_len = 16\n\n[data.split]\nvalidation = 0.1\n\n[routers]\nexperts = 9\n";
        write(&stage_config(&layout.data()), data);
        write(
            &stage_config(&layout.routers()),
            "[routers]\nexperts = 2\nprefix_len = 8\n",
        );
        let experts = "[experts]\npreset = \"tiny\"\n\n[experts.train]\ntotal_steps = 4\n";
        write(&stage_config(&layout.expert(0)), experts);
        write(&stage_config(&layout.dense()), experts);
        layout
    }
}
