//! The data stage end to end: corpus → tokenizer → packed, checksummed shards + manifest.
//!
//! The dataset folder is built under a temporary name and renamed into place only when complete,
//! so an error or a kill leaves nothing half-written. Rerunning with the same inputs and settings
//! finds the finished folder and skips the work; other settings are refused, not overwritten.
//! A build holds the lock `.<name>.lock` beside the folder from start to end: a second build
//! into the same folder is refused at once with the holder's PID, and never touches the first
//! one's temporary folder.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use smalltalk_stage::atomic::{self, TempDir};
use smalltalk_stage::folder::{lock_output, OutputLock};
use smalltalk_stage::Progress;

use crate::corpus::{corpus_files, CorpusFormat, CorpusReader, Document};
use crate::error::{DataError, IoContext, Result};
use crate::manifest::{
    BuildSettings, IdWidth, Manifest, TokenizerInfo, CONFIG_FILE, FORMAT, MANIFEST_FILE,
    TOKENIZER_FILE,
};
use crate::pack::{PackingMode, NO_DOMAIN};
use crate::reader::{Dataset, Verify};
use crate::split::{Split, SplitSettings};
use crate::tokenizer::{BpeSettings, TextTokenizer};
pub use crate::writer::DatasetWriter;

/// How often progress is reported while a tokenizer trains.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// Settings of the data stage (the `[data]` table of a SmallTalk config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSettings {
    /// Context length: rows hold `seq_len + 1` tokens (paper: 1024).
    pub seq_len: usize,
    /// How documents are laid into rows.
    pub packing: PackingMode,
    /// Rows per shard file.
    pub sequences_per_shard: u64,
    /// Field names of JSON-lines records.
    pub format: CorpusFormat,
    /// Held-out fractions and seed.
    pub split: SplitSettings,
    /// BPE training, when no tokenizer file is given.
    pub tokenizer: BpeSettings,
    /// Bytes of text tokenized per parallel batch (bounds memory).
    pub batch_bytes: usize,
    /// Read only the corpus's first N documents (before the split; 0 = all). A sample of a
    /// large corpus for a study: the corpus files are shuffled, so the first N are a fair one.
    #[serde(skip_serializing_if = "is_zero")]
    pub max_documents: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Default for DataSettings {
    fn default() -> Self {
        Self {
            seq_len: 1024,
            packing: PackingMode::Concat,
            sequences_per_shard: 8192,
            format: CorpusFormat::default(),
            split: SplitSettings::default(),
            tokenizer: BpeSettings::default(),
            batch_bytes: 8 << 20,
            max_documents: 0,
        }
    }
}

impl DataSettings {
    /// Check ranges; errors name the setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, message: &str| {
            Err(DataError::Config {
                key: key.into(),
                message: message.into(),
            })
        };
        if self.seq_len == 0 || self.seq_len > u32::MAX as usize - 1 {
            return bad("data.seq_len", "must be at least 1");
        }
        if self.sequences_per_shard == 0 {
            return bad("data.sequences_per_shard", "must be at least 1");
        }
        if self.batch_bytes == 0 {
            return bad("data.batch_bytes", "must be at least 1");
        }
        self.split.validate()
    }
}

/// Whether [`build_dataset`] did the work or found it done.
#[derive(Debug, Clone, PartialEq)]
pub enum BuildOutcome {
    /// The dataset was written.
    Built(Manifest),
    /// An identical dataset was already complete; nothing was written.
    Skipped(Manifest),
}

impl BuildOutcome {
    /// The dataset's manifest either way.
    pub fn manifest(&self) -> &Manifest {
        match self {
            BuildOutcome::Built(m) | BuildOutcome::Skipped(m) => m,
        }
    }

    /// The outcome for scripts: the folder, whether it was skipped, the seconds taken, the
    /// corpus bytes, the process's peak memory and the manifest's summary.
    pub fn to_json(&self, dir: &Path, seconds: f64) -> serde_json::Value {
        let m = self.manifest();
        serde_json::json!({
            "event": "data", "dir": dir, "skipped": matches!(self, BuildOutcome::Skipped(_)),
            "seconds": seconds, "input_bytes": m.build.inputs.iter().map(|(_, n)| n).sum::<u64>(),
            "peak_rss_bytes": smalltalk_stage::stats::peak_rss_bytes(),
            "manifest": m.summary_json(),
        })
    }

    /// The outcome for people.
    pub fn describe(&self, dir: &Path, seconds: f64) -> String {
        let verb = match self {
            BuildOutcome::Built(_) => "built",
            BuildOutcome::Skipped(_) => "already complete, skipped",
        };
        let m = self.manifest().describe();
        format!("{} {verb} in {seconds:.1}s\n{m}", dir.display())
    }
}

/// Train a byte-level BPE on the training split of a corpus (held-out documents never shape the
/// vocabulary). Streams the corpus; stops at the first bad record with its error. The settings
/// (vocabulary size included) are checked before anything is read. `progress` gets one phase,
/// `tokenizer`, counting the corpus bytes read.
pub fn train_tokenizer(
    inputs: &[PathBuf],
    settings: &DataSettings,
    progress: &mut dyn Progress,
) -> Result<TextTokenizer> {
    settings.validate()?;
    settings.tokenizer.validate()?;
    let reader = CorpusReader::open(inputs, settings.format.clone())?;
    let counter = reader.consumed_counter();
    let message = format!(
        "training byte-level BPE, vocabulary {}",
        settings.tokenizer.vocab_size
    );
    progress.start("tokenizer", 0, reader.total_bytes());
    let first_error: Mutex<Option<DataError>> = Mutex::new(None);
    let any = AtomicBool::new(false);
    let source = inputs.first().cloned().unwrap_or_default();
    // Training runs on a scoped thread so that `progress` (not `Send`) is called from this one.
    let tokenizer = std::thread::scope(|scope| {
        let (done, finished) = mpsc::channel::<()>();
        let trainer = scope.spawn(|| {
            let _done = done;
            let limit = match settings.max_documents {
                0 => usize::MAX,
                n => n as usize,
            };
            let texts = reader
                .take(limit)
                .map_while(|doc| match doc {
                    Ok(doc) => Some(doc),
                    Err(e) => {
                        *first_error.lock().expect("lock") = Some(e);
                        None
                    }
                })
                .filter(|doc| {
                    !doc.text.is_empty() && settings.split.split_of_document(doc) == Split::Train
                })
                .inspect(|_| any.store(true, Ordering::Relaxed))
                .map(|doc| doc.text);
            TextTokenizer::train_bpe(texts, &settings.tokenizer, &source)
        });
        // The channel disconnects when the trainer returns (or panics).
        while let Err(mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(PROGRESS_INTERVAL) {
            progress.update(counter.load(Ordering::Relaxed), &message);
        }
        trainer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    progress.update(counter.load(Ordering::Relaxed), &message);
    progress.finish();
    if let Some(e) = first_error.into_inner().expect("lock") {
        return Err(e);
    }
    let tokenizer = tokenizer?;
    if !any.into_inner() {
        return Err(DataError::EmptyCorpus {
            paths: inputs.to_vec(),
        });
    }
    Ok(tokenizer)
}

/// The lock file of the dataset folder `out`: its hidden sibling `.<name>.lock`.
fn lock_path(out: &Path) -> Result<PathBuf> {
    match out.file_name() {
        Some(name) => Ok(out.with_file_name(format!(".{}.lock", name.to_string_lossy()))),
        None => Err(DataError::Config {
            key: "out".into(),
            message: format!(
                "`{}` does not name a folder (give a name such as `data`)",
                out.display()
            ),
        }),
    }
}

/// Take the build lock of `out`; a second builder is refused at once, naming this PID.
fn lock_build(out: &Path) -> Result<OutputLock> {
    Ok(lock_output(&lock_path(out)?, out)?)
}

fn build_settings(inputs: &[PathBuf], settings: &DataSettings) -> Result<BuildSettings> {
    let inputs = corpus_files(inputs)?
        .into_iter()
        .map(|p| {
            let len = std::fs::metadata(&p).at(&p)?.len();
            Ok((p, len))
        })
        .collect::<Result<_>>()?;
    Ok(BuildSettings {
        inputs,
        format: settings.format.clone(),
        split: settings.split.clone(),
        seq_len: settings.seq_len,
        packing: settings.packing,
        sequences_per_shard: settings.sequences_per_shard,
    })
}

/// Tokenize `inputs`, pack and shard them into `out` (a dataset folder), with `tokenizer` saved
/// beside the shards and the effective `settings` as `config.toml` (only the `[data]` table).
/// Every file is written under a temporary name that is renamed into place when complete.
/// Skips the work when `out` already holds the same dataset.
///
/// Holds the lock `.<name>.lock` beside `out` for the whole build: a concurrent build into the
/// same folder fails at once with [`smalltalk_stage::StageError::Locked`] naming this PID.
/// `progress` gets one phase, `data`, counting the corpus bytes read (none when skipped).
pub fn build_dataset(
    inputs: &[PathBuf],
    tokenizer: &TextTokenizer,
    out: &Path,
    settings: &DataSettings,
    progress: &mut dyn Progress,
) -> Result<BuildOutcome> {
    settings.validate()?;
    let build = build_settings(inputs, settings)?;
    let _lock = lock_build(out)?;
    let tokenizer_json = tokenizer.to_json()?;
    let tokenizer_info = TokenizerInfo {
        file: TOKENIZER_FILE.into(),
        hash: smalltalk_stage::checksum::hash_bytes(tokenizer_json.as_bytes()),
        vocab_size: tokenizer.vocab_size(),
        eos_id: tokenizer.eos_id,
        pad_id: tokenizer.pad_id,
    };
    if out.join(MANIFEST_FILE).exists() {
        let existing = Dataset::open(out)?;
        let m = existing.manifest();
        let differs = if m.build != build {
            Some("corpus files or data settings")
        } else if m.tokenizer != tokenizer_info {
            Some("tokenizer")
        } else {
            None
        };
        if let Some(what) = differs {
            return Err(DataError::Conflict {
                path: out.into(),
                message: format!("it holds a dataset built with different {what}"),
            });
        }
        for split in Split::ALL {
            existing.reader(split, Verify::SizesOnly)?;
        }
        return Ok(BuildOutcome::Skipped(m.clone()));
    }

    if out.exists() && !is_empty_dir(out) {
        return Err(DataError::Conflict {
            path: out.into(),
            message: "it exists and holds no dataset manifest".into(),
        });
    }
    let config = settings.to_config_toml()?;
    let temp = TempDir::new(out)?;
    atomic::write_file(&temp.path().join(TOKENIZER_FILE), tokenizer_json.as_bytes())?;
    atomic::write_file(&temp.path().join(CONFIG_FILE), config.as_bytes())?;
    let manifest = write_shards(
        inputs,
        tokenizer,
        tokenizer_info,
        temp.path(),
        settings,
        build,
        progress,
    )?;
    let json = serde_json::to_string_pretty(&manifest).expect("manifest serializes");
    atomic::write_file(&temp.path().join(MANIFEST_FILE), json.as_bytes())?;
    temp.commit()?;
    Ok(BuildOutcome::Built(manifest))
}

fn write_shards(
    inputs: &[PathBuf],
    tokenizer: &TextTokenizer,
    tokenizer_info: TokenizerInfo,
    dir: &Path,
    settings: &DataSettings,
    build: BuildSettings,
    progress: &mut dyn Progress,
) -> Result<Manifest> {
    let width = IdWidth::for_vocab(tokenizer.vocab_size());
    let mut writer = DatasetWriter::new(dir, settings, width, tokenizer.eos_id, tokenizer.pad_id);
    let mut domains: Vec<String> = Vec::new();
    let (mut read, mut skipped) = (0u64, 0u64);
    let mut reader = CorpusReader::open(inputs, settings.format.clone())?;
    progress.start("data", 0, reader.total_bytes());
    let mut batch: Vec<Document> = Vec::new();
    loop {
        let mut batch_bytes = 0;
        batch.clear();
        let limit = match settings.max_documents {
            0 => u64::MAX,
            n => n,
        };
        while read < limit {
            let Some(doc) = reader.next() else { break };
            let doc = doc?;
            read += 1;
            if doc.text.is_empty() {
                skipped += 1;
                continue;
            }
            batch_bytes += doc.text.len();
            batch.push(doc);
            if batch_bytes >= settings.batch_bytes {
                break;
            }
        }
        if batch.is_empty() {
            break;
        }
        let texts: Vec<&str> = batch.iter().map(|d| d.text.as_str()).collect();
        let encoded = tokenizer.encode_batch(&texts)?;
        let first_ordinal = read - skipped - batch.len() as u64;
        for (i, (doc, ids)) in batch.iter().zip(&encoded).enumerate() {
            let domain = match &doc.domain {
                Some(name) => domain_index(&mut domains, name),
                None => NO_DOMAIN,
            };
            writer.push(
                settings.split.split_of_document(doc),
                first_ordinal + i as u64,
                domain,
                ids,
            )?;
        }
        progress.update(reader.bytes_consumed(), &format!("{read} documents"));
    }
    if read == skipped {
        return Err(DataError::EmptyCorpus {
            paths: inputs.to_vec(),
        });
    }
    let splits = writer.finish(&domains)?;
    progress.finish();
    Ok(Manifest {
        format: FORMAT.into(),
        tokenizer: tokenizer_info,
        seq_len: settings.seq_len,
        row_len: settings.seq_len + 1,
        packing: settings.packing,
        id_width: width,
        domains,
        documents_read: read,
        documents_skipped_empty: skipped,
        splits,
        build,
    })
}

fn is_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none())
}

fn domain_index(domains: &mut Vec<String>, name: &str) -> u32 {
    match domains.iter().position(|d| d == name) {
        Some(i) => i as u32,
        None => {
            domains.push(name.to_string());
            (domains.len() - 1) as u32
        }
    }
}
