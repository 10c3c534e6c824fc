//! Reading a dataset folder: the manifest, the tokenizer, and O(1) random access to any row of a
//! split through memory-mapped shards.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use smalltalk_stage::checksum::hash_bytes;

use crate::error::{DataError, IoContext, Result};
use crate::manifest::{IdWidth, Manifest, MANIFEST_FILE};
use crate::pack::SequenceMeta;
use crate::split::Split;
use crate::tokenizer::TextTokenizer;

/// Whether to recompute shard checksums when opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Check every shard's checksum against the manifest (reads every byte once).
    Checksums,
    /// Check only file sizes (fast; for repeated opens of a trusted dataset).
    SizesOnly,
}

/// An opened dataset folder (`manifest.json`, `tokenizer.json`, shards).
#[derive(Debug)]
pub struct Dataset {
    dir: PathBuf,
    manifest: Manifest,
}

impl Dataset {
    /// Open a dataset folder and check its manifest (not yet the shards).
    pub fn open(dir: &Path) -> Result<Self> {
        let manifest = Manifest::load(&dir.join(MANIFEST_FILE))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Load the dataset's tokenizer, checking its hash against the manifest.
    pub fn tokenizer(&self) -> Result<TextTokenizer> {
        let info = &self.manifest.tokenizer;
        let path = self.dir.join(&info.file);
        let bytes = std::fs::read(&path).at(&path)?;
        let actual = hash_bytes(&bytes);
        if actual != info.hash {
            return Err(DataError::Checksum {
                path,
                expected: info.hash.clone(),
                actual,
            });
        }
        let mut tok = TextTokenizer::load(&path, None)?;
        tok.eos_id = info.eos_id;
        tok.pad_id = info.pad_id;
        Ok(tok)
    }

    /// Memory-map a split's shards, verifying them as asked.
    pub fn reader(&self, split: Split, verify: Verify) -> Result<SequenceReader> {
        let info = self.manifest.split(split);
        let row_bytes = self.manifest.row_len * self.manifest.id_width.bytes();
        let mut shards = Vec::with_capacity(info.shards.len());
        for shard in &info.shards {
            let tokens = map_checked(
                &self.dir.join(&shard.tokens_file),
                shard.sequences as usize * row_bytes,
                &shard.tokens_checksum,
                verify,
            )?;
            let meta = map_checked(
                &self.dir.join(&shard.meta_file),
                shard.sequences as usize * SequenceMeta::BYTES,
                &shard.meta_checksum,
                verify,
            )?;
            shards.push(MappedShard { tokens, meta });
        }
        Ok(SequenceReader {
            shards,
            len: info.sequences as usize,
            per_shard: info.sequences_per_shard.max(1) as usize,
            row_len: self.manifest.row_len,
            width: self.manifest.id_width,
            pad_id: self.manifest.tokenizer.pad_id,
        })
    }

    /// Check every split's shards as asked (sizes, or sizes and checksums): what
    /// `smalltalk data inspect` does.
    pub fn verify(&self, verify: Verify) -> Result<()> {
        Split::ALL
            .into_iter()
            .try_for_each(|split| self.reader(split, verify).map(drop))
    }
}

fn map_checked(path: &Path, expected_len: usize, checksum: &str, verify: Verify) -> Result<Mmap> {
    let file = File::open(path).at(path)?;
    let len = file.metadata().at(path)?.len() as usize;
    if len != expected_len {
        return Err(DataError::Manifest {
            path: path.into(),
            message: format!("shard has {len} bytes, the manifest implies {expected_len}"),
        });
    }
    // Safety: the shard files are written once (atomically) and never modified in place; a
    // concurrent writer would violate the dataset's contract, which checksums detect.
    let map = unsafe { Mmap::map(&file) }.at(path)?;
    if verify == Verify::Checksums {
        let actual = hash_bytes(&map);
        if actual != checksum {
            return Err(DataError::Checksum {
                path: path.into(),
                expected: checksum.into(),
                actual,
            });
        }
    }
    Ok(map)
}

#[derive(Debug)]
struct MappedShard {
    tokens: Mmap,
    meta: Mmap,
}

/// Random access to the rows of one split.
#[derive(Debug)]
pub struct SequenceReader {
    shards: Vec<MappedShard>,
    len: usize,
    per_shard: usize,
    row_len: usize,
    width: IdWidth,
    pad_id: u32,
}

impl SequenceReader {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the split has no rows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tokens per row (`seq_len + 1`).
    pub fn row_len(&self) -> usize {
        self.row_len
    }

    /// The padding id (targets equal to it are not trained on).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    fn locate(&self, index: usize) -> (&MappedShard, usize) {
        assert!(
            index < self.len,
            "row {index} out of range (split has {} rows)",
            self.len
        );
        (&self.shards[index / self.per_shard], index % self.per_shard)
    }

    /// Copy row `index` into `out` (length `row_len`). O(1).
    pub fn read_into(&self, index: usize, out: &mut [u32]) {
        assert_eq!(out.len(), self.row_len, "output buffer must hold one row");
        let (shard, local) = self.locate(index);
        let w = self.width.bytes();
        let bytes = &shard.tokens[local * self.row_len * w..(local + 1) * self.row_len * w];
        match self.width {
            IdWidth::U16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = u16::from_le_bytes([b[0], b[1]]) as u32;
                }
            }
            IdWidth::U32 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        }
    }

    /// Row `index` as a new vector.
    pub fn tokens(&self, index: usize) -> Vec<u32> {
        let mut out = vec![0; self.row_len];
        self.read_into(index, &mut out);
        out
    }

    /// Metadata of row `index`. O(1).
    pub fn meta(&self, index: usize) -> SequenceMeta {
        let (shard, local) = self.locate(index);
        SequenceMeta::from_bytes(
            &shard.meta[local * SequenceMeta::BYTES..(local + 1) * SequenceMeta::BYTES],
        )
    }
}
