//! The partition stage (paper Algorithm 1, lines 11–16: the final partition for the experts): score every training
//! row with the frozen scorer (prefix M) and split the training split into E equal expert row
//! sets with the balanced assignment, chunk by chunk, so memory stays O(chunk).
//!
//! Files in the partition folder:
//! - `stage.json`, `.lock` — ownership, inputs (dataset, routers) and settings; see
//!   `smalltalk_stage::folder`.
//! - `config.toml` — the effective `[partition]` settings.
//! - `chunks/chunk-NNNNNN.json` — each finished chunk's assignment and statistics, written
//!   atomically; a rerun skips finished chunks (removed once the manifest is written).
//! - `expert-NN.rows` — the row indices (u32 little-endian, ascending) of expert `NN`.
//! - `partition.json` — [`PartitionManifest`], written last: its presence means done.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use smalltalk_partition::{argmax_assign, part_sizes, ChunkedBalancer, ScoreMatrix};
use smalltalk_stage::atomic::write_file;
use smalltalk_stage::checksum::hash_bytes;
use smalltalk_stage::folder::{Identity, SettingsPolicy, StageFolder};
use smalltalk_stage::Progress;

use crate::error::{Result, RoutingError};
use crate::manifest::{ExpertRows, PartitionManifest, MANIFEST_FILE, PARTITION_FORMAT};
use crate::metrics::{best_nll_sum, domain_mix, purity};
use crate::scorer::PrefixScorer;
use crate::training_rows::TrainingRows;

/// How to partition (`[partition]` in the TOML config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PartitionSettings {
    /// Prefix M scored per row; 0 means the routers' training prefix.
    pub prefix_len: usize,
    /// Rows balanced together (and scored between two resumable saves).
    pub chunk_sequences: usize,
    /// Rows per scoring call.
    pub score_batch: usize,
}

impl Default for PartitionSettings {
    fn default() -> Self {
        PartitionSettings {
            prefix_len: 0,
            chunk_sequences: 1 << 18,
            score_batch: 1_024,
        }
    }
}

impl PartitionSettings {
    /// Check the settings (before anything is written).
    pub fn validate(&self) -> Result<()> {
        if self.chunk_sequences == 0 || self.score_batch == 0 {
            return Err(RoutingError::Config(
                "[partition] `chunk_sequences` and `score_batch` must be positive".into(),
            ));
        }
        if self.prefix_len == 1 {
            return Err(RoutingError::Config(
                "[partition] `prefix_len` must be 0 (the routers' prefix) or at least 2".into(),
            ));
        }
        Ok(())
    }
}

/// What [`partition_stage`] did.
#[derive(Debug, Clone)]
pub struct PartitionOutcome {
    /// The partition.
    pub manifest: PartitionManifest,
    /// `true` when it was already complete (nothing redone).
    pub skipped: bool,
}

impl PartitionOutcome {
    /// The outcome for scripts: the folder, whether it was skipped, rows per expert, argmax
    /// load, purity and each expert's domain mix.
    pub fn to_json(&self, dir: &Path) -> serde_json::Value {
        let m = &self.manifest;
        let sizes: Vec<usize> = m.expert_rows.iter().map(|s| s.sequences).collect();
        serde_json::json!({
            "stage": "partition", "dir": dir, "skipped": self.skipped,
            "experts": m.experts, "rows": m.rows, "expert_rows": sizes,
            "argmax_load": m.argmax_load, "purity": m.purity, "domains": m.domains,
            "domain_mix": m.domain_mix,
        })
    }

    /// The outcome for people: sizes, purity and each expert's domain mix.
    pub fn describe(&self, dir: &Path) -> String {
        let m = &self.manifest;
        let sizes: Vec<usize> = m.expert_rows.iter().map(|s| s.sequences).collect();
        let verb = if self.skipped {
            "already partitioned"
        } else {
            "partitioned"
        };
        let purity = m
            .purity
            .map_or(String::new(), |p| format!(", domain purity {p:.3}"));
        let mut s = format!(
            "{verb} {} rows among {} experts in {}: sizes {sizes:?}{purity}",
            m.rows,
            m.experts,
            dir.display()
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
    }
}

const LEGACY_FILES: [&str; 2] = [MANIFEST_FILE, "chunks"];

fn chunk_path(dir: &Path, c: usize) -> PathBuf {
    dir.join("chunks").join(format!("chunk-{c:06}.json"))
}

/// A finished chunk: its assignment and the statistics the manifest needs.
#[derive(Debug, Serialize, Deserialize)]
struct ChunkResult {
    assignment: Vec<u32>,
    argmax_sizes: Vec<usize>,
    best_nll_sum: f64,
}

/// A finished chunk, if it was saved with the expected length.
fn load_chunk(path: &Path, len: usize, experts: usize) -> Result<Option<ChunkResult>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RoutingError::state(path, e.to_string())),
    };
    let bad = || RoutingError::state(path, "chunk file does not match this partition");
    let c: ChunkResult = serde_json::from_str(&text).map_err(|_| bad())?;
    if c.assignment.len() != len
        || c.argmax_sizes.len() != experts
        || c.assignment.iter().any(|&e| e as usize >= experts)
    {
        return Err(bad());
    }
    Ok(Some(c))
}

/// Remove the chunk files this stage wrote (only names it writes; anything else stays).
fn remove_chunks(dir: &Path, chunks: usize) {
    for c in 0..chunks {
        let _ = std::fs::remove_file(chunk_path(dir, c));
    }
    let _ = std::fs::remove_dir(dir.join("chunks"));
}

/// Partition the training split of the dataset in `data_dir` into `scorer.experts()` equal
/// expert row sets in `out` (see the module docs). Refuses a scorer trained with another
/// tokenizer, a folder made from other inputs or settings, and a folder it did not write.
/// A complete partition is verified and returned with `skipped = true`.
pub fn partition_stage(
    scorer: &dyn PrefixScorer,
    data_dir: &Path,
    out: &Path,
    settings: &PartitionSettings,
    progress: &mut dyn Progress,
) -> Result<PartitionOutcome> {
    settings.validate()?;
    let data = TrainingRows::open(data_dir)?;
    let source = &data.reader;
    let experts = scorer.experts();
    let m = match settings.prefix_len {
        0 => scorer.trained_prefix(),
        m => m,
    };
    if m < 2 || m > source.row_len() {
        return Err(RoutingError::Config(format!(
            "[partition] `prefix_len`: must be in 2..={} (the row length), not {m}",
            source.row_len()
        )));
    }
    let n = source.len();
    if n > u32::MAX as usize {
        return Err(RoutingError::Config(format!(
            "{n} rows exceed the u32 row index"
        )));
    }
    if scorer.tokenizer_hash() != data.tokenizer_hash() {
        return Err(RoutingError::Config(format!(
            "the routers read tokenizer {} but the dataset {} was built with {}: they cannot route it",
            scorer.tokenizer_hash(),
            data_dir.display(),
            data.tokenizer_hash()
        )));
    }
    let effective = PartitionSettings {
        prefix_len: m,
        ..settings.clone()
    };
    let identity = Identity::new("partition", &effective)
        .input("dataset", data.identity())
        .input("routers", scorer.fingerprint());
    let folder = StageFolder::claim(out, &identity, &LEGACY_FILES, SettingsPolicy::Same)?;
    let dir = folder.dir();
    let chunks = n.div_ceil(settings.chunk_sequences);
    if dir.join(MANIFEST_FILE).exists() {
        let old = PartitionManifest::load(dir)?;
        if old.prefix_len != m
            || old.chunk_sequences != settings.chunk_sequences
            || old.rows != n
            || old.routers_fingerprint != scorer.fingerprint()
            || old.data_identity != data.identity()
        {
            return Err(RoutingError::state(
                dir.join(MANIFEST_FILE),
                "a partition with other settings, routers or data exists here; use a new folder",
            ));
        }
        old.verify(dir)?;
        remove_chunks(dir, chunks); // a run killed after the manifest left them
        return Ok(PartitionOutcome {
            manifest: old,
            skipped: true,
        });
    }
    #[derive(Serialize)]
    struct PartitionOnly<'a> {
        partition: &'a PartitionSettings,
    }
    let toml = toml::to_string_pretty(&PartitionOnly {
        partition: &effective,
    })
    .expect("settings serialise");
    write_file(&dir.join("config.toml"), toml.as_bytes())?;
    std::fs::create_dir_all(dir.join("chunks"))
        .map_err(|e| RoutingError::state(dir.join("chunks"), e.to_string()))?;

    if let Some(groups) = scorer.domain_groups() {
        let names = &data.dataset.manifest().domains;
        let assignment = groups.route_labels(&data.labels, names)?;
        progress.start("partition", n as u64, n as u64);
        progress.finish();
        let sizes = part_sizes(&assignment, experts)?;
        let loads = sizes.iter().map(|&s| s as f64 / n.max(1) as f64).collect();
        let done = Assigned {
            assignment,
            argmax_load: loads,
            mean_best_nll: 0.0,
        };
        return write_partition(dir, scorer, &data, (m, settings), done);
    }
    let mut balancer = ChunkedBalancer::new(experts)?;
    let mut assignment = Vec::with_capacity(n);
    let (mut best_sum, mut argmax_sizes) = (0f64, vec![0usize; experts]);
    let rows: Vec<usize> = (0..n).collect();
    let mut buf = vec![0u32; source.row_len()];
    progress.start("partition", 0, n as u64);
    for (c, chunk) in rows.chunks(settings.chunk_sequences).enumerate() {
        let path = chunk_path(dir, c);
        let done = match load_chunk(&path, chunk.len(), experts)? {
            Some(done) => {
                if part_sizes(&done.assignment, experts)? != balancer.capacities_for(chunk.len()) {
                    return Err(RoutingError::state(
                        &path,
                        "chunk sizes do not match the balance",
                    ));
                }
                balancer.skip_chunk(chunk.len());
                done
            }
            None => {
                if smalltalk_stage::stop::requested() {
                    return Err(RoutingError::Stopped);
                }
                let mut scores = Vec::with_capacity(chunk.len() * experts);
                for batch in chunk.chunks(settings.score_batch) {
                    let mut tokens = Vec::with_capacity(batch.len() * m);
                    for &r in batch {
                        source.read_into(r, &mut buf);
                        tokens.extend_from_slice(&buf[..m]);
                    }
                    let s = scorer
                        .score(&tokens, m, Some(source.pad_id()))
                        .map_err(RoutingError::Scorer)?;
                    scores.extend(s);
                    let at = batch[batch.len() - 1] + 1;
                    progress.update(at as u64, &format!("chunk {}/{chunks}", c + 1));
                }
                let matrix = ScoreMatrix::new(&scores, experts)?;
                let done = ChunkResult {
                    assignment: balancer.assign(&matrix)?,
                    argmax_sizes: part_sizes(&argmax_assign(&matrix), experts)?,
                    best_nll_sum: best_nll_sum(&matrix),
                };
                let json = serde_json::to_vec(&done).expect("chunk serialises");
                write_file(&path, &json)?;
                done
            }
        };
        for (e, s) in argmax_sizes.iter_mut().zip(&done.argmax_sizes) {
            *e += s;
        }
        best_sum += done.best_nll_sum;
        assignment.extend(done.assignment);
        progress.update((chunk[0] + chunk.len()) as u64, "");
    }
    progress.finish();
    let done = Assigned {
        assignment,
        argmax_load: argmax_sizes
            .iter()
            .map(|&s| s as f64 / n.max(1) as f64)
            .collect(),
        mean_best_nll: best_sum / (n.max(1) as f64 * (m - 1) as f64),
    };
    let outcome = write_partition(dir, scorer, &data, (m, settings), done)?;
    remove_chunks(dir, chunks);
    Ok(outcome)
}

/// A finished assignment of every training row.
struct Assigned {
    /// The expert of every row.
    assignment: Vec<u32>,
    /// Share of rows each expert wins by argmax.
    argmax_load: Vec<f64>,
    /// Mean best prefix NLL per predicted token (0 for label routing).
    mean_best_nll: f64,
}

/// Write the expert row files and, last, `partition.json`.
fn write_partition(
    dir: &Path,
    scorer: &dyn PrefixScorer,
    data: &TrainingRows,
    (m, settings): (usize, &PartitionSettings),
    done: Assigned,
) -> Result<PartitionOutcome> {
    let Assigned {
        assignment,
        argmax_load,
        mean_best_nll,
    } = done;
    let (n, experts) = (assignment.len(), scorer.experts());
    let rows: Vec<usize> = (0..n).collect();
    let mut expert_rows = Vec::with_capacity(experts);
    for e in 0..experts {
        let bytes: Vec<u8> = assignment
            .iter()
            .enumerate()
            .filter(|(_, &a)| a as usize == e)
            .flat_map(|(r, _)| (r as u32).to_le_bytes())
            .collect();
        let file = format!("expert-{e:02}.rows");
        write_file(&dir.join(&file), &bytes)?;
        expert_rows.push(ExpertRows {
            file,
            sequences: bytes.len() / 4,
            checksum: hash_bytes(&bytes),
        });
    }
    let domains = data.domains();
    let mix = domains
        .as_ref()
        .map(|d| domain_mix(&assignment, &rows, experts, d));
    let manifest = PartitionManifest {
        format: PARTITION_FORMAT.into(),
        experts,
        prefix_len: m,
        chunk_sequences: settings.chunk_sequences,
        rows: n,
        routers_fingerprint: scorer.fingerprint(),
        data_identity: data.identity(),
        expert_rows,
        argmax_load,
        mean_best_nll,
        domains: domains.as_ref().map(|d| d.names.to_vec()),
        purity: mix.as_deref().and_then(purity),
        domain_mix: mix,
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    write_file(&dir.join(MANIFEST_FILE), &json)?;
    Ok(PartitionOutcome {
        manifest,
        skipped: false,
    })
}
