//! `partition.json` and the expert row files: which training rows each expert trains on.
//!
//! Format `smalltalk-partition/2` (this build also reads `/1`, whose `shards` key is now
//! `expert_rows` and whose checksums lacked the `xxh3:` prefix).

use std::path::Path;

use serde::{Deserialize, Serialize};
use smalltalk_stage::checksum::{fingerprint, hash_bytes};

use crate::error::{Result, RoutingError};

/// Version of the partition layout.
pub const PARTITION_FORMAT: &str = "smalltalk-partition/2";
const LEGACY_FORMAT: &str = "smalltalk-partition/1";
/// The manifest's file name; its presence means the partition is complete.
pub const MANIFEST_FILE: &str = "partition.json";

/// One expert's rows: a file of row indices into the training split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpertRows {
    /// File name of the row index (`expert-NN.rows`, u32 little-endian, ascending), relative
    /// to the partition folder.
    pub file: String,
    /// Rows in it.
    pub sequences: usize,
    /// Checksum of the file (`xxh3:…`).
    pub checksum: String,
}

/// `partition.json`: the E expert row sets and how they were made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionManifest {
    /// [`PARTITION_FORMAT`].
    pub format: String,
    /// Number of experts, E.
    pub experts: usize,
    /// Prefix scored per row.
    pub prefix_len: usize,
    /// Rows balanced together.
    pub chunk_sequences: usize,
    /// Rows partitioned (the whole training split).
    pub rows: usize,
    /// The scorer's (routers') fingerprint.
    pub routers_fingerprint: String,
    /// Identity of the training rows ([`crate::TrainingRows::identity`]).
    pub data_identity: String,
    /// One entry per expert.
    #[serde(alias = "shards")]
    pub expert_rows: Vec<ExpertRows>,
    /// Fraction of rows each expert wins by plain argmax (what routing at inference does).
    pub argmax_load: Vec<f64>,
    /// Mean best-router prefix NLL per predicted token (for the baseline methods, whose scores
    /// are not log-likelihoods, minus their best score per token; 0 for `domain`).
    pub mean_best_nll: f64,
    /// Domain names, when rows carry labels.
    pub domains: Option<Vec<String>>,
    /// `[expert][domain]` row counts, when rows carry labels.
    pub domain_mix: Option<Vec<Vec<u64>>>,
    /// Share of labelled rows in their expert's majority domain.
    pub purity: Option<f64>,
}

impl PartitionManifest {
    /// Read `dir/partition.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (run `smalltalk partition` first)"
            } else {
                ""
            };
            RoutingError::state(&path, format!("{e}{hint}"))
        })?;
        let m: PartitionManifest = serde_json::from_str(&text).map_err(|e| {
            RoutingError::state(&path, format!("unreadable partition manifest: {e}"))
        })?;
        if (m.format != PARTITION_FORMAT && m.format != LEGACY_FORMAT)
            || m.expert_rows.len() != m.experts
        {
            return Err(RoutingError::state(
                &path,
                format!(
                    "format `{}` with {} expert row files for {} experts: not a partition this build reads",
                    m.format,
                    m.expert_rows.len(),
                    m.experts
                ),
            ));
        }
        Ok(m)
    }

    /// What identifies this partition (for the stages that read it): the routers, the data
    /// and every expert row file's checksum.
    pub fn fingerprint(&self) -> String {
        let rows: Vec<&str> = self
            .expert_rows
            .iter()
            .map(|s| s.checksum.trim_start_matches("xxh3:"))
            .collect();
        let rows = rows.join(",");
        fingerprint([
            ("routers", self.routers_fingerprint.as_str()),
            ("data", self.data_identity.as_str()),
            ("rows", rows.as_str()),
        ])
    }

    /// The row indices of expert `e`, checked against the manifest's size and checksum.
    pub fn read_rows(&self, dir: &Path, e: usize) -> Result<Vec<usize>> {
        let entry = self.expert_rows.get(e).ok_or_else(|| {
            RoutingError::Config(format!(
                "expert {e} does not exist (the partition has {})",
                self.experts
            ))
        })?;
        let path = dir.join(&entry.file);
        let bytes =
            std::fs::read(&path).map_err(|err| RoutingError::state(&path, err.to_string()))?;
        let sum = hash_bytes(&bytes);
        if bytes.len() != entry.sequences * 4
            || sum.trim_start_matches("xxh3:") != entry.checksum.trim_start_matches("xxh3:")
        {
            return Err(RoutingError::state(
                &path,
                "size or checksum does not match partition.json",
            ));
        }
        Ok(bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .collect())
    }

    /// Check every expert row file (after a skip: the folder may have been tampered with).
    pub fn verify(&self, dir: &Path) -> Result<()> {
        for e in 0..self.experts {
            self.read_rows(dir, e)?;
        }
        Ok(())
    }
}
