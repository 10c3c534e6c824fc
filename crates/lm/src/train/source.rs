//! Where training sequences come from.

/// Fixed-length token rows, addressable by index. A split of a dataset folder
/// ([`smalltalk_data::SequenceReader`], memory-mapped shards) is one; [`VecSource`] holds rows in
/// memory.
pub trait SequenceSource: Send + Sync {
    /// Number of rows.
    fn num_sequences(&self) -> usize;
    /// Tokens per row (`seq_len + 1`: a row of `L` tokens gives `L − 1` next-token targets).
    fn row_len(&self) -> usize;
    /// Copy row `index` into `out` (`out.len() == row_len()`).
    fn read_sequence(&self, index: usize, out: &mut [u32]);
    /// Padding id; targets equal to it are left out of the loss.
    fn pad_id(&self) -> Option<u32>;
}

/// The first `used` tokens of each of `rows`, concatenated (`rows.len() × used` ids).
pub fn read_rows(source: &dyn SequenceSource, rows: &[usize], used: usize) -> Vec<u32> {
    let mut row = vec![0u32; source.row_len()];
    let mut out = Vec::with_capacity(rows.len() * used);
    for &r in rows {
        source.read_sequence(r, &mut row);
        out.extend_from_slice(&row[..used]);
    }
    out
}

/// An in-memory [`SequenceSource`] (tests, small demos).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VecSource {
    tokens: Vec<u32>,
    row_len: usize,
    pad_id: Option<u32>,
}

impl VecSource {
    /// Rows of `row_len` tokens taken from a flat vector (`tokens.len()` must be a multiple).
    pub fn new(tokens: Vec<u32>, row_len: usize, pad_id: Option<u32>) -> Self {
        assert!(
            row_len > 0 && tokens.len().is_multiple_of(row_len),
            "tokens do not split into rows of {row_len}"
        );
        VecSource {
            tokens,
            row_len,
            pad_id,
        }
    }

    /// Build from separate rows (all of the same length).
    pub fn from_rows(rows: &[Vec<u32>], pad_id: Option<u32>) -> Self {
        let row_len = rows.first().map_or(1, Vec::len);
        assert!(
            rows.iter().all(|r| r.len() == row_len),
            "rows differ in length"
        );
        VecSource::new(rows.concat(), row_len, pad_id)
    }
}

impl SequenceSource for VecSource {
    fn num_sequences(&self) -> usize {
        self.tokens.len() / self.row_len
    }
    fn row_len(&self) -> usize {
        self.row_len
    }
    fn read_sequence(&self, index: usize, out: &mut [u32]) {
        out.copy_from_slice(&self.tokens[index * self.row_len..(index + 1) * self.row_len]);
    }
    fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }
}

/// A split of a dataset folder written by `smalltalk data build`: rows of `seq_len + 1` ids
/// read from memory-mapped shards; the dataset's pad id is left out of the loss.
impl SequenceSource for smalltalk_data::SequenceReader {
    fn num_sequences(&self) -> usize {
        self.len()
    }
    fn row_len(&self) -> usize {
        smalltalk_data::SequenceReader::row_len(self)
    }
    fn read_sequence(&self, index: usize, out: &mut [u32]) {
        self.read_into(index, out);
    }
    fn pad_id(&self) -> Option<u32> {
        Some(smalltalk_data::SequenceReader::pad_id(self))
    }
}

/// The rows `rows` of another source, in that order (an expert's shard of a split, a
/// router's part of an EM chunk). Row `i` of the subset is row `rows[i]` of `inner`.
pub struct SubsetSource<'a> {
    inner: &'a dyn SequenceSource,
    rows: Vec<usize>,
}

impl<'a> SubsetSource<'a> {
    /// A view of `rows` of `inner` (every index must be below `inner.num_sequences()`).
    pub fn new(inner: &'a dyn SequenceSource, rows: Vec<usize>) -> Self {
        let n = inner.num_sequences();
        if let Some(bad) = rows.iter().find(|&&r| r >= n) {
            panic!("row {bad} is out of range for a source of {n} rows");
        }
        SubsetSource { inner, rows }
    }
}

impl SequenceSource for SubsetSource<'_> {
    fn num_sequences(&self) -> usize {
        self.rows.len()
    }
    fn row_len(&self) -> usize {
        self.inner.row_len()
    }
    fn read_sequence(&self, index: usize, out: &mut [u32]) {
        self.inner.read_sequence(self.rows[index], out);
    }
    fn pad_id(&self) -> Option<u32> {
        self.inner.pad_id()
    }
}
