//! Tests of the data stage: exact round trips (proptest), determinism of the split, bad input,
//! checksums, skipping a finished build, and concurrent builders.

mod bad_input;
mod concurrency;
mod end_to_end;
mod roundtrip;

use std::path::{Path, PathBuf};

use smalltalk_stage::NoProgress;

use crate::{CorpusFormat, DataSettings, PackingMode, TextTokenizer};

/// Write JSON-lines records `{"id", "text", "domain"}` to `path`.
pub(crate) fn write_jsonl(path: &Path, docs: &[(&str, &str)]) {
    let mut out = String::new();
    for (i, (domain, text)) in docs.iter().enumerate() {
        out.push_str(
            &serde_json::json!({"id": format!("doc-{i}"), "text": text, "domain": domain})
                .to_string(),
        );
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
}

/// Small settings for tests.
pub(crate) fn tiny_settings(packing: PackingMode) -> DataSettings {
    let mut s = DataSettings {
        seq_len: 16,
        packing,
        sequences_per_shard: 5,
        batch_bytes: 300,
        ..Default::default()
    };
    s.tokenizer.vocab_size = 400;
    s.tokenizer.min_frequency = 1;
    s.split.validation = 0.2;
    s.split.test = 0.2;
    s.format = CorpusFormat::default();
    s
}

/// A few documents from several "domains".
pub(crate) fn sample_docs() -> Vec<(&'static str, String)> {
    let mut docs = Vec::new();
    for i in 0..40 {
        docs.push((
            "prose",
            format!(
                "The quick brown fox {i} jumps over the lazy dog. Ünïcödé ✓ {}",
                "la ".repeat(i % 7)
            ),
        ));
        docs.push((
            "code",
            format!(
                "fn f{i}(x: u32) -> u32 {{\n    x * {i} + 1\n}}\n{}",
                "// c\n".repeat(i % 5)
            ),
        ));
    }
    docs
}

/// Train a tokenizer on the sample documents.
pub(crate) fn sample_tokenizer(dir: &Path, settings: &DataSettings) -> (PathBuf, TextTokenizer) {
    let corpus = dir.join("corpus.jsonl");
    let docs = sample_docs();
    let refs: Vec<(&str, &str)> = docs.iter().map(|(d, t)| (*d, t.as_str())).collect();
    write_jsonl(&corpus, &refs);
    let tok =
        crate::train_tokenizer(std::slice::from_ref(&corpus), settings, &mut NoProgress).unwrap();
    (corpus, tok)
}

/// Names of the entries of a folder, sorted.
pub(crate) fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Build the sample corpus into `<dir>/data` with `settings`; returns the tokenizer and the
/// dataset folder.
pub(crate) fn build_sample(dir: &Path, settings: &DataSettings) -> (TextTokenizer, PathBuf) {
    let (corpus, tok) = sample_tokenizer(dir, settings);
    let out = dir.join("data");
    crate::build_dataset(&[corpus], &tok, &out, settings, &mut NoProgress).unwrap();
    (tok, out)
}

/// Every row of a split with its metadata.
pub(crate) fn read_rows(reader: &crate::SequenceReader) -> Vec<(Vec<u32>, crate::SequenceMeta)> {
    (0..reader.len())
        .map(|i| (reader.tokens(i), reader.meta(i)))
        .collect()
}
