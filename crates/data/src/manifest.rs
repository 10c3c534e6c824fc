//! The dataset manifest (`manifest.json`): everything a later stage needs to trust and read the
//! shards of a dataset folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::corpus::CorpusFormat;
use crate::error::{DataError, IoContext, Result};
use crate::pack::PackingMode;
use crate::split::{Split, SplitSettings};

/// Format tag written into every manifest; a reader refuses other formats.
pub const FORMAT: &str = "smalltalk-shards/1";
/// File name of the manifest inside a dataset folder.
pub const MANIFEST_FILE: &str = "manifest.json";
/// File name of the tokenizer inside a dataset folder.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// File name of the effective settings (the `[data]` table) inside a dataset folder.
pub const CONFIG_FILE: &str = "config.toml";

/// Width of a stored token id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdWidth {
    /// 2 bytes, for vocabularies of at most 65,536 ids.
    U16,
    /// 4 bytes.
    U32,
}

impl IdWidth {
    /// The narrowest width that holds every id below `vocab_size`.
    pub fn for_vocab(vocab_size: usize) -> Self {
        if vocab_size <= 1 << 16 {
            IdWidth::U16
        } else {
            IdWidth::U32
        }
    }

    /// Bytes per id.
    pub fn bytes(self) -> usize {
        match self {
            IdWidth::U16 => 2,
            IdWidth::U32 => 4,
        }
    }
}

/// The tokenizer a dataset was built with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerInfo {
    /// File name inside the dataset folder.
    pub file: String,
    /// Content hash of that file.
    pub hash: String,
    /// Number of ids (every id is below it).
    pub vocab_size: usize,
    /// End-of-document token id.
    pub eos_id: u32,
    /// Padding token id.
    pub pad_id: u32,
}

/// One shard: a token file and a metadata file with the same number of rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Token file (rows of `row_len` ids, little-endian).
    pub tokens_file: String,
    /// Metadata file (one 20-byte `SequenceMeta` record per row).
    pub meta_file: String,
    /// Number of rows.
    pub sequences: u64,
    /// Checksum of the token file.
    pub tokens_checksum: String,
    /// Checksum of the metadata file.
    pub meta_checksum: String,
}

/// The shards and counts of one split.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SplitInfo {
    /// Documents in the split.
    pub documents: u64,
    /// Rows in the split.
    pub sequences: u64,
    /// Real tokens (including end-of-document tokens), counted once despite row overlaps.
    pub tokens: u64,
    /// Padding tokens stored.
    pub padding_tokens: u64,
    /// Rows per shard (every shard but the last is full).
    pub sequences_per_shard: u64,
    /// Rows per domain label (rows without a label are not counted).
    pub domain_sequences: BTreeMap<String, u64>,
    /// The shards, in order.
    pub shards: Vec<ShardInfo>,
}

/// What the dataset was built from and how: compared on rerun to skip or refuse a rebuild.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildSettings {
    /// Input files, in reading order, with their sizes in bytes.
    pub inputs: Vec<(PathBuf, u64)>,
    /// Field names of JSON-lines records.
    pub format: CorpusFormat,
    /// Split fractions and seed.
    pub split: SplitSettings,
    /// Context length: rows hold `seq_len + 1` tokens.
    pub seq_len: usize,
    /// Packing mode.
    pub packing: PackingMode,
    /// Rows per shard.
    pub sequences_per_shard: u64,
}

/// The manifest of a dataset folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// The tokenizer.
    pub tokenizer: TokenizerInfo,
    /// Context length: rows hold `seq_len + 1` tokens.
    pub seq_len: usize,
    /// Tokens per row (`seq_len + 1`).
    pub row_len: usize,
    /// Packing mode the rows were built with.
    pub packing: PackingMode,
    /// Stored id width.
    pub id_width: IdWidth,
    /// Domain labels; `SequenceMeta::domain` indexes this table.
    pub domains: Vec<String>,
    /// Documents read from the corpus (all splits), and empty ones skipped.
    pub documents_read: u64,
    /// Documents skipped because their text was empty.
    pub documents_skipped_empty: u64,
    /// Per split.
    pub splits: BTreeMap<Split, SplitInfo>,
    /// How the dataset was built.
    pub build: BuildSettings,
}

impl Manifest {
    /// Read and check a manifest (format tag and internal consistency; not the shard files).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).at(path)?;
        let bad = |message: String| DataError::Manifest {
            path: path.into(),
            message,
        };
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if manifest.format != FORMAT {
            return Err(bad(format!(
                "format `{}` is not `{FORMAT}`",
                manifest.format
            )));
        }
        if manifest.row_len != manifest.seq_len + 1 {
            return Err(bad(format!(
                "row_len {} != seq_len {} + 1",
                manifest.row_len, manifest.seq_len
            )));
        }
        if manifest.id_width == IdWidth::U16 && manifest.tokenizer.vocab_size > 1 << 16 {
            return Err(bad("u16 ids with a vocabulary above 65,536".into()));
        }
        for (split, info) in &manifest.splits {
            let total: u64 = info.shards.iter().map(|s| s.sequences).sum();
            if total != info.sequences {
                return Err(bad(format!(
                    "{}: shards hold {total} rows, split says {}",
                    split.name(),
                    info.sequences
                )));
            }
            let n = info.shards.len();
            let misplaced =
                info.shards
                    .iter()
                    .take(n.saturating_sub(1))
                    .any(|s| s.sequences != info.sequences_per_shard)
                    || info.shards.last().is_some_and(|s| {
                        s.sequences == 0 || s.sequences > info.sequences_per_shard
                    });
            if misplaced {
                return Err(bad(format!(
                    "{}: every shard but the last must hold {} rows",
                    split.name(),
                    info.sequences_per_shard
                )));
            }
        }
        Ok(manifest)
    }

    /// The split's info, or an empty one when the split has no rows.
    pub fn split(&self, split: Split) -> SplitInfo {
        self.splits.get(&split).cloned().unwrap_or_default()
    }

    /// A summary for scripts: vocabulary, shape, domains and per-split counts (the shard list
    /// reduced to its length).
    pub fn summary_json(&self) -> serde_json::Value {
        let splits: serde_json::Map<String, serde_json::Value> = self
            .splits
            .iter()
            .map(|(s, i)| {
                let v = serde_json::json!({"documents": i.documents, "sequences": i.sequences,
                    "tokens": i.tokens, "padding_tokens": i.padding_tokens,
                    "shards": i.shards.len(), "domain_sequences": i.domain_sequences});
                (s.name().to_string(), v)
            })
            .collect();
        serde_json::json!({"vocab_size": self.tokenizer.vocab_size, "seq_len": self.seq_len,
            "packing": self.packing, "id_width": self.id_width, "domains": self.domains,
            "documents_read": self.documents_read, "splits": splits})
    }

    /// A summary for people: one line on the vocabulary and shape, then one per split.
    pub fn describe(&self) -> String {
        let name = |v: serde_json::Value| v.as_str().unwrap_or("?").to_string();
        let mut lines = vec![format!(
            "vocabulary {}, seq_len {}, packing {}, ids {}, {} documents read",
            self.tokenizer.vocab_size,
            self.seq_len,
            name(serde_json::to_value(self.packing).unwrap_or_default()),
            name(serde_json::to_value(self.id_width).unwrap_or_default()),
            self.documents_read
        )];
        for (split, i) in &self.splits {
            let rows = (i.sequences.max(1) * self.row_len as u64) as f64;
            lines.push(format!(
                "  {:<10} {:>7} docs {:>9} sequences {:>12} tokens ({:.1}% padding) in {} shard(s)",
                split.name(),
                i.documents,
                i.sequences,
                i.tokens,
                100.0 * i.padding_tokens as f64 / rows,
                i.shards.len()
            ));
        }
        lines.join("\n")
    }
}
