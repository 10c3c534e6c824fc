//! Tokenizers: train a byte-level BPE with the `tokenizers` crate, or load any Hugging Face
//! `tokenizer.json`; find the end-of-document and padding tokens; hash the file.
//!
//! Byte-level BPE has no normalizer and no unknown token, so `decode(encode(text)) == text` for
//! every UTF-8 string: the shards lose nothing of the corpus.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{DataError, IoContext, Result};

/// The end-of-document token SmallTalk adds to the tokenizers it trains.
pub const EOS_TOKEN: &str = "<|endoftext|>";
/// The padding token SmallTalk adds (to trained tokenizers, and to loaded ones that lack one).
pub const PAD_TOKEN: &str = "<|pad|>";
/// End-of-document tokens looked for, in order, in a loaded tokenizer.
const EOS_CANDIDATES: [&str; 4] = [EOS_TOKEN, "</s>", "<eos>", "<|end_of_text|>"];
/// Padding tokens looked for, in order, in a loaded tokenizer.
const PAD_CANDIDATES: [&str; 3] = [PAD_TOKEN, "<pad>", "[PAD]"];

/// Settings of BPE training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BpeSettings {
    /// Vocabulary size including the special tokens (paper: 32,000).
    pub vocab_size: usize,
    /// Minimum pair frequency for a merge.
    pub min_frequency: u64,
    /// Train on at most this many bytes of text (the first documents of the train split).
    pub max_training_bytes: u64,
}

impl BpeSettings {
    /// The smallest vocabulary a trained byte-level BPE can have: the 256 byte tokens plus the
    /// end-of-document and padding tokens (a BPE of exactly this size has no merges: one token
    /// per byte). A smaller request could not be honoured: the trainer never drops a byte.
    pub const MIN_VOCAB_SIZE: usize = 256 + 2;

    /// Check ranges before any text is read; errors name the setting, the value and the bound.
    pub fn validate(&self) -> Result<()> {
        if self.vocab_size < Self::MIN_VOCAB_SIZE {
            return Err(DataError::Config {
                key: "data.tokenizer.vocab_size".into(),
                message: format!(
                    "{} is below the minimum {} (256 byte tokens + {EOS_TOKEN} + {PAD_TOKEN})",
                    self.vocab_size,
                    Self::MIN_VOCAB_SIZE
                ),
            });
        }
        if self.max_training_bytes == 0 {
            return Err(DataError::Config {
                key: "data.tokenizer.max_training_bytes".into(),
                message: "0 leaves no text to train on; it must be at least 1".into(),
            });
        }
        Ok(())
    }
}

impl Default for BpeSettings {
    fn default() -> Self {
        Self {
            vocab_size: 32_000,
            min_frequency: 2,
            max_training_bytes: 1 << 30,
        }
    }
}

/// A tokenizer plus the ids SmallTalk needs from it.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// Token placed after every document.
    pub eos_id: u32,
    /// Token that fills the unused tail of a sequence (its targets are ignored).
    pub pad_id: u32,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

fn tokenizer_error(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Tokenizer {
        path: path.into(),
        message: e.to_string(),
    }
}

impl TextTokenizer {
    /// Train a byte-level BPE on `texts` (streamed; memory grows with the number of distinct
    /// words, not with the corpus). `source` names the corpus in error messages.
    pub fn train_bpe<I, S>(texts: I, settings: &BpeSettings, source: &Path) -> Result<Self>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        settings.validate()?;
        let specials = vec![
            AddedToken::from(EOS_TOKEN, true),
            AddedToken::from(PAD_TOKEN, true),
        ];
        let trainer = BpeTrainerBuilder::new()
            .show_progress(false)
            .vocab_size(settings.vocab_size)
            .min_frequency(settings.min_frequency)
            .special_tokens(specials)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut inner = Tokenizer::new(BPE::default());
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevel::new(false, true, true)));
        let mut budget = settings.max_training_bytes;
        let texts = texts.take_while(move |t| {
            let fits = budget > 0;
            budget = budget.saturating_sub(t.as_ref().len() as u64);
            fits
        });
        inner
            .train(&mut TrainerWrapper::BpeTrainer(trainer), texts)
            .map_err(|e| tokenizer_error(source, e))?;
        Self::from_tokenizer(inner, None, source)
    }

    /// Load a Hugging Face `tokenizer.json`. The end-of-document token is `eos_token` when given,
    /// else the first of `<|endoftext|>`, `</s>`, `<eos>`, `<|end_of_text|>` it knows. A padding
    /// token is added when the tokenizer has none.
    pub fn load(path: &Path, eos_token: Option<&str>) -> Result<Self> {
        let inner = Tokenizer::from_file(path).map_err(|e| tokenizer_error(path, e))?;
        Self::from_tokenizer(inner, eos_token, path)
    }

    fn from_tokenizer(
        mut inner: Tokenizer,
        eos_token: Option<&str>,
        source: &Path,
    ) -> Result<Self> {
        let eos_id = match eos_token {
            Some(tok) => inner.token_to_id(tok).ok_or_else(|| {
                tokenizer_error(source, format!("end-of-document token `{tok}` is not in the vocabulary"))
            })?,
            None => EOS_CANDIDATES.iter().find_map(|t| inner.token_to_id(t)).ok_or_else(|| {
                tokenizer_error(
                    source,
                    format!("no end-of-document token among {EOS_CANDIDATES:?}; name one with --eos-token"),
                )
            })?,
        };
        let pad_id = match PAD_CANDIDATES.iter().find_map(|t| inner.token_to_id(t)) {
            Some(id) => id,
            None => {
                inner
                    .add_special_tokens([AddedToken::from(PAD_TOKEN, true)])
                    .map_err(|e| tokenizer_error(source, e))?;
                inner
                    .token_to_id(PAD_TOKEN)
                    .expect("pad token was just added")
            }
        };
        Ok(Self {
            inner,
            eos_id,
            pad_id,
        })
    }

    /// Number of token ids (model vocabulary plus added tokens): every id is below it.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of one text, without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| tokenizer_error(Path::new("<memory>"), e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of many texts, encoded in parallel (rayon).
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encs = self
            .inner
            .encode_batch_fast(texts.to_vec(), false)
            .map_err(|e| tokenizer_error(Path::new("<memory>"), e))?;
        Ok(encs.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Text of token ids (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| tokenizer_error(Path::new("<memory>"), e))
    }

    /// The tokenizer as `tokenizer.json` text (stable for a given tokenizer).
    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(false)
            .map_err(|e| tokenizer_error(Path::new("<memory>"), e))
    }

    /// Content hash of the `tokenizer.json` text (`xxh3:` + 32 hex digits).
    pub fn hash(&self) -> Result<String> {
        Ok(smalltalk_stage::checksum::hash_bytes(
            self.to_json()?.as_bytes(),
        ))
    }

    /// Write the tokenizer to `path` as `tokenizer.json`, creating its folder. The write is
    /// atomic: a temporary sibling owned by this call (`<name>.tmp-<pid>-<n>`) is renamed into
    /// place, so a reader never sees half a file and concurrent writers never share a temporary.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self.to_json()?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).at(parent)?;
        }
        smalltalk_stage::atomic::write_file(path, json.as_bytes())?;
        Ok(())
    }

    /// What `smalltalk data tokenizer` reports for scripts after saving to `path`.
    pub fn summary_json(&self, path: &Path, seconds: f64) -> Result<serde_json::Value> {
        Ok(serde_json::json!({
            "event": "tokenizer", "path": path, "vocab_size": self.vocab_size(),
            "eos_id": self.eos_id, "pad_id": self.pad_id, "hash": self.hash()?, "seconds": seconds,
        }))
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}
