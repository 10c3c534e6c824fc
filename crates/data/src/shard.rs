//! Writing the rows of one split into checksummed shard files.
//!
//! Shard `k` of split `s` is `s-0000k.tokens` (rows of `row_len` little-endian ids, u16 or u32)
//! plus `s-0000k.meta` (one [`SequenceMeta`] record per row). Checksums are computed while
//! writing; files are fsynced when closed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use smalltalk_stage::checksum::RunningChecksum;

use crate::error::{DataError, IoContext, Result};
use crate::manifest::{IdWidth, ShardInfo, SplitInfo};
use crate::pack::{SequenceMeta, NO_DOMAIN};
use crate::split::Split;

struct OpenFile {
    path: PathBuf,
    writer: BufWriter<File>,
    checksum: RunningChecksum,
}

impl OpenFile {
    fn create(path: PathBuf) -> Result<Self> {
        let file = File::create(&path).at(&path)?;
        Ok(Self {
            path,
            writer: BufWriter::with_capacity(1 << 20, file),
            checksum: RunningChecksum::default(),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.checksum.update(bytes);
        self.writer.write_all(bytes).at(&self.path)
    }

    fn close(self) -> Result<String> {
        let file = self
            .writer
            .into_inner()
            .map_err(|e| DataError::io(&self.path, e.into_error()))?;
        file.sync_all().at(&self.path)?;
        Ok(self.checksum.finish())
    }
}

/// Writes one split's rows, starting a new shard every `sequences_per_shard` rows.
pub struct ShardWriter {
    dir: PathBuf,
    split: Split,
    width: IdWidth,
    row_len: usize,
    current: Option<(OpenFile, OpenFile, u64)>,
    info: SplitInfo,
    domains_seen: BTreeMap<u32, u64>,
    bytes: Vec<u8>,
}

impl ShardWriter {
    /// A writer for `split` into `dir`.
    pub fn new(
        dir: &Path,
        split: Split,
        width: IdWidth,
        row_len: usize,
        sequences_per_shard: u64,
    ) -> Self {
        assert!(
            sequences_per_shard > 0,
            "sequences_per_shard must be positive"
        );
        Self {
            dir: dir.to_path_buf(),
            split,
            width,
            row_len,
            current: None,
            info: SplitInfo {
                sequences_per_shard,
                ..Default::default()
            },
            domains_seen: BTreeMap::new(),
            bytes: Vec::new(),
        }
    }

    /// Append one row (exactly `row_len` ids) and its metadata.
    pub fn write_row(&mut self, row: &[u32], meta: SequenceMeta) -> Result<()> {
        debug_assert_eq!(row.len(), self.row_len);
        if self.current.is_none() {
            let stem = format!("{}-{:05}", self.split.name(), self.info.shards.len());
            let tokens = OpenFile::create(self.dir.join(format!("{stem}.tokens")))?;
            let meta = OpenFile::create(self.dir.join(format!("{stem}.meta")))?;
            self.current = Some((tokens, meta, 0));
        }
        self.bytes.clear();
        match self.width {
            IdWidth::U16 => row
                .iter()
                .for_each(|&t| self.bytes.extend_from_slice(&(t as u16).to_le_bytes())),
            IdWidth::U32 => row
                .iter()
                .for_each(|&t| self.bytes.extend_from_slice(&t.to_le_bytes())),
        }
        let (tokens, metas, rows) = self.current.as_mut().expect("open shard");
        tokens.write(&self.bytes)?;
        metas.write(&meta.to_bytes())?;
        *rows += 1;
        self.info.sequences += 1;
        self.info.padding_tokens += (self.row_len - meta.valid as usize) as u64;
        if meta.domain != NO_DOMAIN {
            *self.domains_seen.entry(meta.domain).or_default() += 1;
        }
        if *rows == self.info.sequences_per_shard {
            self.close_shard()?;
        }
        Ok(())
    }

    fn close_shard(&mut self) -> Result<()> {
        if let Some((tokens, metas, rows)) = self.current.take() {
            let file_name = |p: &Path| {
                p.file_name()
                    .expect("file name")
                    .to_string_lossy()
                    .into_owned()
            };
            let (tokens_file, meta_file) = (file_name(&tokens.path), file_name(&metas.path));
            self.info.shards.push(ShardInfo {
                tokens_file,
                meta_file,
                sequences: rows,
                tokens_checksum: tokens.close()?,
                meta_checksum: metas.close()?,
            });
        }
        Ok(())
    }

    /// Close the last shard and return the split's info, with the document and token counts
    /// the caller kept and the domain table to name the domain counts.
    pub fn finish(
        mut self,
        documents: u64,
        tokens: u64,
        domain_names: &[String],
    ) -> Result<SplitInfo> {
        self.close_shard()?;
        self.info.documents = documents;
        self.info.tokens = tokens;
        self.info.domain_sequences = self
            .domains_seen
            .iter()
            .map(|(&d, &n)| (domain_names[d as usize].clone(), n))
            .collect();
        Ok(self.info)
    }
}
