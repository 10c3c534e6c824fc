//! The training split of a dataset folder as the router, partition and expert stages read it.

use std::path::Path;

use smalltalk_data::{Dataset, SequenceReader, Split, Verify};

use crate::error::Result;
use crate::metrics::DomainLabels;

/// The training split of a dataset, its rows' domain labels and what identifies it.
pub struct TrainingRows {
    /// The opened dataset.
    pub dataset: Dataset,
    /// Its training split (checksums verified on open).
    pub reader: SequenceReader,
    /// Domain label of every row (`u32::MAX`: none).
    pub labels: Vec<u32>,
}

impl TrainingRows {
    /// Open the training split of the dataset in `dir` (checksums verified).
    pub fn open(dir: &Path) -> Result<Self> {
        let dataset = Dataset::open(dir)?;
        let reader = dataset.reader(Split::Train, Verify::Checksums)?;
        let labels = (0..reader.len()).map(|i| reader.meta(i).domain).collect();
        Ok(TrainingRows {
            dataset,
            reader,
            labels,
        })
    }

    /// What identifies the training rows: the tokenizer's checksum and every training
    /// shard's checksum (`<tokenizer hash>:<shard checksums, comma-separated>`). Stages that
    /// read the rows record it, and refuse to resume or skip on other data.
    pub fn identity(&self) -> String {
        let m = self.dataset.manifest();
        let train = m.split(Split::Train);
        let shards: Vec<&str> = train
            .shards
            .iter()
            .map(|s| s.tokens_checksum.as_str())
            .collect();
        format!("{}:{}", m.tokenizer.hash, shards.join(","))
    }

    /// The checksum of the dataset's tokenizer.
    pub fn tokenizer_hash(&self) -> &str {
        &self.dataset.manifest().tokenizer.hash
    }

    /// The domain labels, when the corpus has any.
    pub fn domains(&self) -> Option<DomainLabels<'_>> {
        let names = &self.dataset.manifest().domains;
        (!names.is_empty()).then(|| DomainLabels {
            labels: &self.labels,
            names,
        })
    }

    /// Vocabulary size of the dataset's tokenizer.
    pub fn vocab_size(&self) -> usize {
        self.dataset.manifest().tokenizer.vocab_size
    }
}
