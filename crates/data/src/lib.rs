//! # smalltalk-data
//!
//! The first stage of SmallTalk: raw text in, packed token shards out.
//!
//! ```text
//! corpus (text / JSON lines, .gz / .zst) ──► CorpusReader ──► TextTokenizer (byte-level BPE)
//!     ──► Packer (rows of seq_len + 1 tokens) ──► ShardWriter ──► dataset folder
//!                                                                 ├── manifest.json
//!                                                                 ├── tokenizer.json
//!                                                                 ├── config.toml ([data])
//!                                                                 └── {train,validation,test}-NNNNN.{tokens,meta}
//! ```
//!
//! [`data_stage`] is the whole stage in one call: it picks the tokenizer ([`TokenizerSource`]:
//! a given file, the dataset's own on a rerun, or a BPE trained on the corpus) and builds.
//!
//! Every later stage (routers, partition, experts, evaluation) reads a dataset folder through
//! [`Dataset`] and [`SequenceReader`]: O(1) memory-mapped access to row `i` of a split and its
//! [`SequenceMeta`] (source document, offset in it, real-token count, domain label).
//!
//! Guarantees:
//! - Exact: `unpack(rows)` gives back the token stream that was packed; byte-level BPE decodes
//!   back to the original text.
//! - Deterministic: the split depends only on a document's text and a seed; the document order is
//!   the input order (folders sorted).
//! - Safe to interrupt: the folder is written under a temporary name and renamed when complete;
//!   shards carry checksums that [`Dataset::reader`] verifies.
//! - One builder at a time: a build holds a lock beside its output folder (`.<name>.lock`); a
//!   second build into the same folder is refused at once, naming the holder's PID.
//! - Streaming: memory is bounded by one tokenization batch, not by corpus size.
//!
//! Crash-safe writes, checksums and locks come from `smalltalk-stage`; progress is reported
//! through [`smalltalk_stage::Progress`] (this crate draws nothing). Also depends on
//! `tokenizers` (no C code, no network), `serde`, `toml` (the effective config), `memmap2`,
//! `flate2`, `ruzstd`, `xxhash-rust`. No deep-learning dependency.

pub mod build;
pub mod corpus;
pub mod error;
pub mod manifest;
pub mod pack;
pub mod reader;
pub mod shard;
pub mod split;
pub mod stage;
pub mod tokenizer;
pub mod writer;

pub use build::{build_dataset, train_tokenizer, BuildOutcome, DataSettings, DatasetWriter};
pub use corpus::{CorpusFormat, CorpusReader, Document};
pub use error::{DataError, Result};
pub use manifest::{IdWidth, Manifest, SplitInfo};
pub use pack::{unpack, Packer, PackingMode, SequenceMeta, NO_DOMAIN};
pub use reader::{Dataset, SequenceReader, Verify};
pub use split::{GroupedSplits, Split, SplitSettings};
pub use stage::{data_stage, TokenizerSource};
pub use tokenizer::{BpeSettings, TextTokenizer};

#[cfg(test)]
mod tests;
