//! The data stage as one call: choose the tokenizer, then build the dataset folder.
//!
//! [`data_stage`] takes the tokenizer from a given `tokenizer.json`, from the dataset folder
//! itself on a rerun (so a finished build is recognised and skipped), or trains a byte-level
//! BPE on the corpus, and hands it to [`build_dataset`]. The effective settings travel with the
//! dataset as `config.toml`, holding only the `[data]` table ([`DataSettings::to_config_toml`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use smalltalk_stage::Progress;

use crate::build::{build_dataset, train_tokenizer, BuildOutcome, DataSettings};
use crate::error::{DataError, Result};
use crate::manifest::MANIFEST_FILE;
use crate::reader::Dataset;
use crate::tokenizer::TextTokenizer;

/// Where the tokenizer of a dataset build comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TokenizerSource {
    /// A Hugging Face `tokenizer.json`; `eos_token` names its end-of-document token (by default
    /// the first of `<|endoftext|>`, `</s>`, `<eos>`, ... that it has).
    File {
        /// The tokenizer file.
        path: PathBuf,
        /// The end-of-document token, when not one of the usual names.
        eos_token: Option<String>,
    },
    /// The dataset's own tokenizer when the output folder already holds a dataset (a rerun);
    /// otherwise a byte-level BPE trained on the corpus with the settings' `[data.tokenizer]`.
    #[default]
    Train,
}

/// The data stage: pick the tokenizer by `tokenizer`, then [`build_dataset`] `inputs` into
/// `out`. A rerun without a tokenizer file reuses the dataset's own tokenizer, so a finished
/// build with the same inputs and settings is [`BuildOutcome::Skipped`].
///
/// `progress` gets the phase `tokenizer` when a BPE is trained, then `data`.
pub fn data_stage(
    inputs: &[PathBuf],
    tokenizer: &TokenizerSource,
    out: &Path,
    settings: &DataSettings,
    progress: &mut dyn Progress,
) -> Result<BuildOutcome> {
    let tokenizer = match tokenizer {
        TokenizerSource::File { path, eos_token } => {
            TextTokenizer::load(path, eos_token.as_deref())?
        }
        TokenizerSource::Train if out.join(MANIFEST_FILE).exists() => {
            Dataset::open(out)?.tokenizer()?
        }
        TokenizerSource::Train => train_tokenizer(inputs, settings, progress)?,
    };
    build_dataset(inputs, &tokenizer, out, settings, progress)
}

/// A config file's `[data]` table alone.
#[derive(Serialize, Deserialize)]
struct DataOnly<T> {
    data: T,
}

impl DataSettings {
    /// The settings as a SmallTalk config holding only the `[data]` table (every key, defaults
    /// included): the `config.toml` of a dataset folder.
    pub fn to_config_toml(&self) -> Result<String> {
        toml::to_string_pretty(&DataOnly { data: self }).map_err(|e| DataError::Config {
            key: "data".into(),
            message: format!("cannot be written as TOML: {e}"),
        })
    }

    /// The `[data]` table of a SmallTalk config's text (defaults for absent keys; other tables
    /// are ignored, unknown keys of `[data]` are errors).
    pub fn from_config_toml(text: &str) -> Result<Self> {
        #[derive(Deserialize)]
        struct Data {
            #[serde(default)]
            data: DataSettings,
        }
        toml::from_str::<Data>(text)
            .map(|c| c.data)
            .map_err(|e| DataError::Config {
                key: "data".into(),
                message: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use smalltalk_stage::NoProgress;

    use super::*;
    use crate::manifest::CONFIG_FILE;
    use crate::tests::{sample_tokenizer, tiny_settings};
    use crate::{PackingMode, Verify};

    #[test]
    fn the_dataset_holds_its_data_settings_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = tiny_settings(PackingMode::DocStart);
        settings.split.seed = 7;
        let (corpus, _) = sample_tokenizer(dir.path(), &settings);
        let out = dir.path().join("data");
        let source = TokenizerSource::Train;
        data_stage(&[corpus], &source, &out, &settings, &mut NoProgress).unwrap();
        let text = std::fs::read_to_string(out.join(CONFIG_FILE)).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(table.keys().collect::<Vec<_>>(), ["data"], "{text}");
        assert_eq!(DataSettings::from_config_toml(&text).unwrap(), settings);
    }

    #[test]
    fn a_rerun_without_a_tokenizer_reuses_the_datasets_and_skips() {
        let dir = tempfile::tempdir().unwrap();
        let settings = tiny_settings(PackingMode::Concat);
        let (corpus, _) = sample_tokenizer(dir.path(), &settings);
        let inputs = [corpus];
        let out = dir.path().join("data");
        let first = data_stage(
            &inputs,
            &TokenizerSource::Train,
            &out,
            &settings,
            &mut NoProgress,
        )
        .unwrap();
        assert!(matches!(first, BuildOutcome::Built(_)));
        let before = std::fs::read(out.join(CONFIG_FILE)).unwrap();
        // Another vocabulary size would train another tokenizer: the rerun must not train.
        let mut other = settings.clone();
        other.tokenizer.vocab_size = 300;
        let second = data_stage(
            &inputs,
            &TokenizerSource::Train,
            &out,
            &other,
            &mut NoProgress,
        )
        .unwrap();
        assert_eq!(second, BuildOutcome::Skipped(first.manifest().clone()));
        assert_eq!(std::fs::read(out.join(CONFIG_FILE)).unwrap(), before);
    }

    #[test]
    fn the_manifest_summaries_name_every_split() {
        let dir = tempfile::tempdir().unwrap();
        let settings = tiny_settings(PackingMode::Concat);
        let (_, out) = crate::tests::build_sample(dir.path(), &settings);
        let dataset = Dataset::open(&out).unwrap();
        dataset.verify(Verify::Checksums).unwrap();
        let m = dataset.manifest().clone();
        let v = m.summary_json();
        assert_eq!(v["vocab_size"], m.tokenizer.vocab_size);
        assert_eq!(v["packing"], "concat");
        assert_eq!(v["id_width"], "u16");
        let train = &v["splits"]["train"];
        assert_eq!(train["shards"], m.split(crate::Split::Train).shards.len());
        assert!(train["domain_sequences"]["prose"].as_u64().unwrap() > 0);
        let text = m.describe();
        assert!(
            text.starts_with(&format!(
                "vocabulary {}, seq_len 16, packing concat, ids u16",
                m.tokenizer.vocab_size
            )),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1 + m.splits.len(), "{text}");
        assert!(text.contains("  train "), "{text}");
        let shard = out.join(&m.split(crate::Split::Train).shards[0].meta_file);
        let mut bytes = std::fs::read(&shard).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&shard, bytes).unwrap();
        dataset.verify(Verify::SizesOnly).unwrap();
        let err = dataset.verify(Verify::Checksums).unwrap_err();
        assert!(matches!(err, DataError::Checksum { .. }), "{err}");
    }

    #[test]
    fn a_tokenizer_file_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let settings = tiny_settings(PackingMode::Concat);
        let (corpus, tok) = sample_tokenizer(dir.path(), &settings);
        let path = dir.path().join("tokenizer.json");
        tok.save(&path).unwrap();
        let source = TokenizerSource::File {
            path,
            eos_token: None,
        };
        let out = dir.path().join("data");
        let built = data_stage(&[corpus], &source, &out, &settings, &mut NoProgress).unwrap();
        assert_eq!(built.manifest().tokenizer.hash, tok.hash().unwrap());
    }

    #[test]
    fn settings_round_trip_through_config_toml() {
        let settings = tiny_settings(PackingMode::DocStart);
        let text = settings.to_config_toml().unwrap();
        assert!(text.contains("[data]"), "{text}");
        assert_eq!(DataSettings::from_config_toml(&text).unwrap(), settings);
        assert_eq!(
            DataSettings::from_config_toml("[routers]\nexperts = 2\n").unwrap(),
            DataSettings::default()
        );
        let err = DataSettings::from_config_toml("[data]\nbogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}
