//! The partition stage (SPEC §4, "Final partition for the experts"): score every training row
//! with the frozen routers (prefix M) and split the split into E equal shards with the
//! balanced assignment, chunk by chunk, so memory stays O(chunk).
//!
//! Files in the partition directory:
//! - `chunks/chunk-NNNNNN.json` — each finished chunk's assignment and statistics, written
//!   atomically; a rerun skips finished chunks (removed once the manifest is written).
//! - `expert-NN.rows` — the row indices (u32 little-endian, ascending) of expert `NN`'s shard.
//! - `partition.json` — [`PartitionManifest`], written last: its presence means done.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use smalltalk_lm::burn::tensor::backend::Backend;
use smalltalk_partition::{argmax_assign, shard_sizes, ChunkedBalancer, ScoreMatrix};

use crate::em::EmData;
use crate::error::{Result, RouterError};
use crate::manifest::RouterSet;
use crate::metrics::{best_nll_sum, domain_mix, purity};
use crate::scoring::score_rows;

/// Version of the partition layout.
pub const PARTITION_FORMAT: &str = "smalltalk-partition/1";
const MANIFEST_FILE: &str = "partition.json";

/// How to partition.
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

/// One expert's shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// File name of the row index, relative to the partition directory.
    pub file: String,
    /// Rows in the shard.
    pub sequences: usize,
    /// xxh3-128 of the file.
    pub checksum: String,
}

/// `partition.json`: the E shards and how they were made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionManifest {
    /// [`PARTITION_FORMAT`].
    pub format: String,
    /// Number of shards, E.
    pub experts: usize,
    /// Prefix scored per row.
    pub prefix_len: usize,
    /// Rows balanced together.
    pub chunk_sequences: usize,
    /// Rows partitioned (the whole split).
    pub rows: usize,
    /// The routers' EM fingerprint.
    pub routers_fingerprint: String,
    /// Identity of the data (see [`EmData::identity`]).
    pub data_identity: String,
    /// One entry per expert.
    pub shards: Vec<ShardEntry>,
    /// Fraction of rows each router wins by plain argmax (what routing at inference does).
    pub argmax_load: Vec<f64>,
    /// Mean best-router prefix NLL per predicted token.
    pub mean_best_nll: f64,
    /// Domain names, when rows carry labels.
    pub domains: Option<Vec<String>>,
    /// `[expert][domain]` row counts, when rows carry labels.
    pub domain_mix: Option<Vec<Vec<u64>>>,
    /// Share of labelled rows in their shard's majority domain.
    pub purity: Option<f64>,
}

impl PartitionManifest {
    /// Read `dir/partition.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| RouterError::io(&path, e))?;
        let m: PartitionManifest = serde_json::from_str(&text).map_err(|e| {
            RouterError::state(&path, format!("unreadable partition manifest: {e}"))
        })?;
        if m.format != PARTITION_FORMAT || m.shards.len() != m.experts {
            return Err(RouterError::state(
                &path,
                "not a partition manifest of this version",
            ));
        }
        Ok(m)
    }

    /// The row indices of expert `e`'s shard, checked against the manifest's size and checksum.
    pub fn read_rows(&self, dir: &Path, e: usize) -> Result<Vec<usize>> {
        let entry = self.shards.get(e).ok_or_else(|| {
            RouterError::Config(format!(
                "expert {e} does not exist (the partition has {})",
                self.experts
            ))
        })?;
        let path = dir.join(&entry.file);
        let bytes = std::fs::read(&path).map_err(|e| RouterError::io(&path, e))?;
        if bytes.len() != entry.sequences * 4 || checksum(&bytes) != entry.checksum {
            return Err(RouterError::state(
                &path,
                "size or checksum does not match partition.json",
            ));
        }
        Ok(bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .collect())
    }
}

fn checksum(bytes: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(bytes))
}

fn chunk_path(dir: &Path, c: usize) -> PathBuf {
    dir.join("chunks").join(format!("chunk-{c:06}.json"))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| RouterError::io(parent, e))?;
    }
    smalltalk_data::atomic::write_file(path, bytes)?;
    Ok(())
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
        Err(e) => return Err(RouterError::io(path, e)),
    };
    let bad = || {
        RouterError::state(
            path,
            "chunk file does not match this partition; delete the directory",
        )
    };
    let c: ChunkResult = serde_json::from_str(&text).map_err(|_| bad())?;
    if c.assignment.len() != len
        || c.argmax_sizes.len() != experts
        || c.assignment.iter().any(|&e| e as usize >= experts)
    {
        return Err(bad());
    }
    Ok(Some(c))
}

/// Partition every row of `data.source` into `routers.experts()` equal shards in `dir` (see
/// the module docs). Returns the manifest and whether it already existed (nothing redone).
/// `progress(done, total)` counts rows.
pub fn partition_split<B: Backend>(
    routers: &RouterSet<B>,
    data: &EmData<'_>,
    dir: &Path,
    settings: &PartitionSettings,
    mut progress: impl FnMut(usize, usize),
) -> Result<(PartitionManifest, bool)> {
    let source = data.source;
    let experts = routers.experts();
    let m = match settings.prefix_len {
        0 => routers.manifest.prefix_len,
        m => m,
    };
    if m < 2 || m > source.row_len() {
        return Err(RouterError::Config(format!(
            "`prefix_len`: must be in 2..={} (the row length), not {m}",
            source.row_len()
        )));
    }
    if settings.chunk_sequences == 0 || settings.score_batch == 0 {
        return Err(RouterError::Config(
            "`chunk_sequences` and `score_batch` must be positive".into(),
        ));
    }
    let n = source.num_sequences();
    if n > u32::MAX as usize {
        return Err(RouterError::Config(format!(
            "{n} rows exceed the u32 row index"
        )));
    }
    if dir.join(MANIFEST_FILE).exists() {
        let old = PartitionManifest::load(dir)?;
        if old.prefix_len == m
            && old.chunk_sequences == settings.chunk_sequences
            && old.rows == n
            && old.routers_fingerprint == routers.manifest.fingerprint
            && old.data_identity == data.identity
        {
            return Ok((old, true));
        }
        return Err(RouterError::state(
            dir.join(MANIFEST_FILE),
            "a partition with other settings, routers or data exists here; use a new directory",
        ));
    }
    let models = routers.model_refs();
    let mut balancer = ChunkedBalancer::new(experts)?;
    let mut assignment = Vec::with_capacity(n);
    let (mut best_sum, mut argmax_sizes) = (0f64, vec![0usize; experts]);
    let rows: Vec<usize> = (0..n).collect();
    for (c, chunk) in rows.chunks(settings.chunk_sequences).enumerate() {
        let path = chunk_path(dir, c);
        let done = match load_chunk(&path, chunk.len(), experts)? {
            Some(done) => {
                if shard_sizes(&done.assignment, experts)? != balancer.capacities_for(chunk.len()) {
                    return Err(RouterError::state(
                        &path,
                        "chunk sizes do not match the balance; delete the directory",
                    ));
                }
                balancer.skip_chunk(chunk.len());
                done
            }
            None => {
                let scores =
                    score_rows(&models, source, chunk, m, settings.score_batch, |d, t| {
                        progress(chunk[0] + d * chunk.len() / t.max(1), n)
                    })?;
                let matrix = ScoreMatrix::new(&scores, experts)?;
                let done = ChunkResult {
                    assignment: balancer.assign(&matrix)?,
                    argmax_sizes: shard_sizes(&argmax_assign(&matrix), experts)?,
                    best_nll_sum: best_nll_sum(&matrix),
                };
                let json = serde_json::to_vec(&done).expect("chunk serialises");
                write_atomic(&path, &json)?;
                done
            }
        };
        for (e, s) in argmax_sizes.iter_mut().zip(&done.argmax_sizes) {
            *e += s;
        }
        best_sum += done.best_nll_sum;
        assignment.extend(done.assignment);
        progress(chunk[0] + chunk.len(), n);
    }
    let mut shards = Vec::with_capacity(experts);
    for e in 0..experts {
        let bytes: Vec<u8> = assignment
            .iter()
            .enumerate()
            .filter(|(_, &a)| a as usize == e)
            .flat_map(|(r, _)| (r as u32).to_le_bytes())
            .collect();
        let file = format!("expert-{e:02}.rows");
        write_atomic(&dir.join(&file), &bytes)?;
        shards.push(ShardEntry {
            file,
            sequences: bytes.len() / 4,
            checksum: checksum(&bytes),
        });
    }
    let mix = data
        .domains
        .as_ref()
        .map(|d| domain_mix(&assignment, &rows, experts, d));
    let manifest = PartitionManifest {
        format: PARTITION_FORMAT.into(),
        experts,
        prefix_len: m,
        chunk_sequences: settings.chunk_sequences,
        rows: n,
        routers_fingerprint: routers.manifest.fingerprint.clone(),
        data_identity: data.identity.clone(),
        shards,
        argmax_load: argmax_sizes
            .iter()
            .map(|&s| s as f64 / n.max(1) as f64)
            .collect(),
        mean_best_nll: best_sum / (n.max(1) as f64 * (m - 1) as f64),
        domains: data.domains.as_ref().map(|d| d.names.to_vec()),
        purity: mix.as_deref().and_then(purity),
        domain_mix: mix,
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    write_atomic(&dir.join(MANIFEST_FILE), &json)?;
    let _ = std::fs::remove_dir_all(dir.join("chunks"));
    Ok((manifest, false))
}
