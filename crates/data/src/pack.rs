//! Packing token streams into fixed-length training rows.
//!
//! A row holds `seq_len + 1` tokens: `seq_len` inputs plus the next-token target of the last one.
//! Consecutive rows of one stream overlap by one token (row `k` starts at token `k * seq_len`), so
//! every token but the first of a stream is a target exactly once and nothing is lost at row
//! boundaries. The unused tail of the last row is filled with the padding token and its length
//! recorded in [`SequenceMeta::valid`].
//!
//! Two modes ([`PackingMode`]):
//! - `concat`: documents are joined end to end with the end-of-document token after each, and the
//!   one stream is cut into rows. No padding except at the very end; a row may start mid-document.
//! - `doc-start`: every document (followed by the end-of-document token) is its own stream, so
//!   every document starts a row: the first row of each document has a clean routing prefix.
//!   Long documents continue in the following rows; short ones (and the tail of long ones) are
//!   padded, never packed with the next document. The padding share is recorded in the manifest.

use serde::{Deserialize, Serialize};

/// How documents are laid into rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PackingMode {
    /// Documents joined end to end, cut every `seq_len` tokens.
    #[default]
    Concat,
    /// Every document starts a new row; tails are padded.
    DocStart,
}

impl std::str::FromStr for PackingMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "concat" => Ok(Self::Concat),
            "doc-start" => Ok(Self::DocStart),
            _ => Err(format!(
                "unknown packing mode `{s}` (expected concat or doc-start)"
            )),
        }
    }
}

/// Domain index meaning "the document had no domain label".
pub const NO_DOMAIN: u32 = u32::MAX;

/// What is known about one row, stored beside it in the shard's `.meta` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SequenceMeta {
    /// Ordinal of the document holding the row's first token, counting the non-empty documents
    /// of the corpus (all splits) in reading order.
    pub doc: u64,
    /// Position of the row's first token within that document (0: the row starts the document).
    pub offset: u32,
    /// Number of real tokens in the row (the rest is padding).
    pub valid: u32,
    /// Index of the document's domain in the manifest's domain table, or [`NO_DOMAIN`].
    pub domain: u32,
}

impl SequenceMeta {
    /// Size of one record in a `.meta` file.
    pub const BYTES: usize = 20;

    /// Little-endian record.
    pub fn to_bytes(&self) -> [u8; Self::BYTES] {
        let mut b = [0u8; Self::BYTES];
        b[0..8].copy_from_slice(&self.doc.to_le_bytes());
        b[8..12].copy_from_slice(&self.offset.to_le_bytes());
        b[12..16].copy_from_slice(&self.valid.to_le_bytes());
        b[16..20].copy_from_slice(&self.domain.to_le_bytes());
        b
    }

    /// Parse a little-endian record.
    pub fn from_bytes(b: &[u8]) -> Self {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Self {
            doc: u64::from_le_bytes(b[0..8].try_into().expect("8 bytes")),
            offset: u32_at(8),
            valid: u32_at(12),
            domain: u32_at(16),
        }
    }
}

/// A document's tokens start at `start` in the pending buffer (negative once partly emitted).
struct Segment {
    start: i64,
    doc: u64,
    domain: u32,
}

/// Streams documents into rows of `seq_len + 1` tokens; see the module docs.
pub struct Packer {
    mode: PackingMode,
    seq_len: usize,
    eos_id: u32,
    pad_id: u32,
    pending: Vec<u32>,
    segments: Vec<Segment>,
    row: Vec<u32>,
}

impl Packer {
    /// A packer for rows of `seq_len + 1` tokens (`seq_len >= 1`).
    pub fn new(mode: PackingMode, seq_len: usize, eos_id: u32, pad_id: u32) -> Self {
        assert!(seq_len >= 1, "seq_len must be at least 1");
        Self {
            mode,
            seq_len,
            eos_id,
            pad_id,
            pending: Vec::new(),
            segments: Vec::new(),
            row: Vec::new(),
        }
    }

    /// Tokens per row.
    pub fn row_len(&self) -> usize {
        self.seq_len + 1
    }

    /// Add one document's tokens (the end-of-document token is appended here); `emit` receives
    /// every row that is complete.
    pub fn push<E>(
        &mut self,
        doc: u64,
        domain: u32,
        tokens: &[u32],
        emit: &mut impl FnMut(&[u32], SequenceMeta) -> Result<(), E>,
    ) -> Result<(), E> {
        match self.mode {
            PackingMode::Concat => {
                self.segments.push(Segment {
                    start: self.pending.len() as i64,
                    doc,
                    domain,
                });
                self.pending.extend_from_slice(tokens);
                self.pending.push(self.eos_id);
                while self.pending.len() >= self.row_len() {
                    self.emit_pending_row(emit)?;
                    self.pending.drain(..self.seq_len);
                    self.shift_segments();
                }
                Ok(())
            }
            PackingMode::DocStart => {
                self.pending.clear();
                self.pending.extend_from_slice(tokens);
                self.pending.push(self.eos_id);
                let n = self.pending.len();
                let mut offset = 0;
                while n - offset >= 2 {
                    let end = (offset + self.row_len()).min(n);
                    let meta = SequenceMeta {
                        doc,
                        offset: offset as u32,
                        valid: (end - offset) as u32,
                        domain,
                    };
                    self.fill_row(offset, end);
                    emit(&self.row, meta)?;
                    if end == n {
                        break;
                    }
                    offset += self.seq_len;
                }
                self.pending.clear();
                Ok(())
            }
        }
    }

    /// Emit the last, padded row of a `concat` stream (nothing to do in `doc-start` mode).
    pub fn finish<E>(
        &mut self,
        emit: &mut impl FnMut(&[u32], SequenceMeta) -> Result<(), E>,
    ) -> Result<(), E> {
        // One pending token is the overlap with the previous row: it is no new target.
        if self.mode == PackingMode::Concat && self.pending.len() >= 2 {
            self.emit_pending_row(emit)?;
        }
        self.pending.clear();
        self.segments.clear();
        Ok(())
    }

    fn fill_row(&mut self, start: usize, end: usize) {
        self.row.clear();
        self.row.extend_from_slice(&self.pending[start..end]);
        self.row.resize(self.seq_len + 1, self.pad_id);
    }

    fn emit_pending_row<E>(
        &mut self,
        emit: &mut impl FnMut(&[u32], SequenceMeta) -> Result<(), E>,
    ) -> Result<(), E> {
        let first = self
            .segments
            .iter()
            .rev()
            .find(|s| s.start <= 0)
            .expect("a segment covers position 0");
        let valid = self.pending.len().min(self.row_len());
        let meta = SequenceMeta {
            doc: first.doc,
            offset: (-first.start) as u32,
            valid: valid as u32,
            domain: first.domain,
        };
        self.fill_row(0, valid);
        emit(&self.row, meta)
    }

    fn shift_segments(&mut self) {
        for s in &mut self.segments {
            s.start -= self.seq_len as i64;
        }
        // Keep only the segment covering position 0 and those after it.
        let covering = self
            .segments
            .iter()
            .rposition(|s| s.start <= 0)
            .unwrap_or(0);
        self.segments.drain(..covering);
    }
}

/// Rebuild the token streams from rows: undo the one-token overlap and drop padding. In `concat`
/// mode there is one stream (documents joined by end-of-document tokens); in `doc-start` mode one
/// stream per document (rows whose `offset` is 0 start a new one).
pub fn unpack(mode: PackingMode, rows: &[(Vec<u32>, SequenceMeta)]) -> Vec<Vec<u32>> {
    let mut streams: Vec<Vec<u32>> = Vec::new();
    for (i, (row, meta)) in rows.iter().enumerate() {
        let valid = &row[..meta.valid as usize];
        let new_stream = match mode {
            PackingMode::Concat => i == 0,
            PackingMode::DocStart => meta.offset == 0,
        };
        if new_stream {
            streams.push(valid.to_vec());
        } else {
            streams
                .last_mut()
                .expect("a stream was started")
                .extend_from_slice(&valid[1..]);
        }
    }
    streams
}
