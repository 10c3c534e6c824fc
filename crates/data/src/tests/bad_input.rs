//! Bad input gets an error naming the file and line, and leaves nothing behind.

use std::path::{Path, PathBuf};

use crate::{build_dataset, train_tokenizer, DataError, PackingMode};

use super::{listing, sample_tokenizer, tiny_settings};

/// Build from `corpus` into `<dir>/data` and return the error; check that nothing was written.
fn build_error(dir: &Path, corpus: PathBuf) -> DataError {
    let settings = tiny_settings(PackingMode::Concat);
    let (_, tok) = sample_tokenizer(dir, &settings);
    let before = listing(dir);
    let err = build_dataset(
        std::slice::from_ref(&corpus),
        &tok,
        &dir.join("data"),
        &settings,
        &indicatif::ProgressBar::hidden(),
    )
    .unwrap_err();
    assert_eq!(
        listing(dir),
        before,
        "no file or folder may be left behind after: {err}"
    );
    // Training a tokenizer on the same corpus fails the same way.
    let again = train_tokenizer(&[corpus], &settings).unwrap_err();
    assert_eq!(again.to_string(), err.to_string());
    err
}

/// A corpus with enough good lines that shards are being written when the bad line comes.
fn corpus_with_bad_line(dir: &Path, bad: &[u8]) -> PathBuf {
    let path = dir.join("bad.jsonl");
    let mut bytes = Vec::new();
    for i in 0..30 {
        bytes.extend_from_slice(
            format!("{{\"text\": \"good document number {i} with some words\"}}\n").as_bytes(),
        );
    }
    bytes.extend_from_slice(bad);
    bytes.extend_from_slice(b"\n{\"text\": \"after\"}\n");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn malformed_json_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus_with_bad_line(dir.path(), b"{\"text\": \"unterminated}");
    match build_error(dir.path(), corpus.clone()) {
        DataError::Json { path, line, .. } => assert_eq!((path, line), (corpus, 31)),
        other => panic!("expected a JSON error, got {other}"),
    }
}

#[test]
fn non_object_json_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus_with_bad_line(dir.path(), b"[1, 2, 3]");
    let err = build_error(dir.path(), corpus);
    assert!(matches!(err, DataError::Json { line: 31, .. }), "{err}");
}

#[test]
fn missing_text_field_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus_with_bad_line(dir.path(), b"{\"body\": \"text under another key\"}");
    let err = build_error(dir.path(), corpus.clone());
    assert!(
        err.to_string().contains("bad.jsonl:31") && err.to_string().contains("`text`"),
        "{err}"
    );
    assert!(matches!(err, DataError::MissingField { line: 31, .. }));
}

#[test]
fn invalid_utf8_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus_with_bad_line(dir.path(), b"{\"text\": \"caf\xe9\"}");
    match build_error(dir.path(), corpus.clone()) {
        DataError::InvalidUtf8 { path, line, byte } => {
            assert_eq!((path, line, byte), (corpus, 31, 13))
        }
        other => panic!("expected a UTF-8 error, got {other}"),
    }
}

#[test]
fn empty_corpus_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("empty.jsonl");
    std::fs::write(&corpus, "\n{\"text\": \"\"}\n\n").unwrap();
    let err = build_error(dir.path(), corpus);
    assert!(matches!(err, DataError::EmptyCorpus { .. }), "{err}");
    assert!(err.to_string().contains("empty.jsonl"));
}

#[test]
fn unreadable_inputs_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("does-not-exist.jsonl");
    let err = build_error(dir.path(), missing.clone());
    assert!(
        matches!(&err, DataError::Io { path, .. } if path == &missing),
        "{err}"
    );

    let corrupt = dir.path().join("corrupt.jsonl.gz");
    std::fs::write(&corrupt, b"this is not gzip data at all").unwrap();
    let err = build_error(dir.path(), corrupt.clone());
    assert!(
        matches!(&err, DataError::Io { path, .. } if path == &corrupt),
        "{err}"
    );
}

#[test]
fn bad_settings_name_the_key() {
    let mut settings = tiny_settings(PackingMode::Concat);
    settings.seq_len = 0;
    let err = settings.validate().unwrap_err();
    assert!(err.to_string().contains("data.seq_len"), "{err}");
    settings.seq_len = 8;
    settings.split.validation = 0.7;
    settings.split.test = 0.4;
    assert!(settings
        .validate()
        .unwrap_err()
        .to_string()
        .contains("split"));
}
