//! Writing tokenized documents of all three splits into one dataset folder's shards.

use std::collections::BTreeMap;
use std::path::Path;

use crate::build::DataSettings;
use crate::error::Result;
use crate::manifest::{IdWidth, SplitInfo};
use crate::pack::Packer;
use crate::shard::ShardWriter;
use crate::split::Split;

/// Per-split writing state.
struct SplitState {
    packer: Packer,
    writer: ShardWriter,
    documents: u64,
    tokens: u64,
}

/// Packs tokenized documents of all three splits into shard files in one folder.
///
/// [`build_dataset`](crate::build_dataset) drives it from a corpus and a tokenizer; it is
/// public so that token streams from elsewhere can be written as a dataset too.
pub struct DatasetWriter {
    states: BTreeMap<Split, SplitState>,
}

impl DatasetWriter {
    /// Write into `dir` with the packing of `settings`, ids stored at `width`.
    pub fn new(
        dir: &Path,
        settings: &DataSettings,
        width: IdWidth,
        eos_id: u32,
        pad_id: u32,
    ) -> Self {
        let states = Split::ALL
            .into_iter()
            .map(|s| {
                let packer = Packer::new(settings.packing, settings.seq_len, eos_id, pad_id);
                let writer = ShardWriter::new(
                    dir,
                    s,
                    width,
                    settings.seq_len + 1,
                    settings.sequences_per_shard,
                );
                (
                    s,
                    SplitState {
                        packer,
                        writer,
                        documents: 0,
                        tokens: 0,
                    },
                )
            })
            .collect();
        Self { states }
    }

    /// Add one document (`ordinal` in reading order, `domain` index or [`NO_DOMAIN`](crate::NO_DOMAIN)).
    pub fn push(&mut self, split: Split, ordinal: u64, domain: u32, ids: &[u32]) -> Result<()> {
        let state = self
            .states
            .get_mut(&split)
            .expect("every split has a state");
        state.documents += 1;
        state.tokens += ids.len() as u64 + 1;
        let SplitState { packer, writer, .. } = state;
        packer.push(ordinal, domain, ids, &mut |row, meta| {
            writer.write_row(row, meta)
        })
    }

    /// Flush the last rows and close every shard; `domains` names the domain indices.
    pub fn finish(self, domains: &[String]) -> Result<BTreeMap<Split, SplitInfo>> {
        let mut splits = BTreeMap::new();
        for (split, mut state) in self.states {
            let SplitState { packer, writer, .. } = &mut state;
            packer.finish(&mut |row, meta| writer.write_row(row, meta))?;
            splits.insert(
                split,
                state
                    .writer
                    .finish(state.documents, state.tokens, domains)?,
            );
        }
        Ok(splits)
    }
}
