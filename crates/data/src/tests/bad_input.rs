//! Bad input gets an error naming the file and line, and leaves nothing behind.

use std::path::{Path, PathBuf};

use smalltalk_stage::{NoProgress, StageError};

use crate::{build_dataset, train_tokenizer, BpeSettings, DataError, Dataset, PackingMode};

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
        &mut NoProgress,
    )
    .unwrap_err();
    assert_eq!(
        listing(dir),
        before,
        "no file or folder may be left behind after: {err}"
    );
    // Training a tokenizer on the same corpus fails the same way.
    let again = train_tokenizer(&[corpus], &settings, &mut NoProgress).unwrap_err();
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
        matches!(&err, DataError::Stage(StageError::Io { path, .. }) if path == &missing),
        "{err}"
    );

    let corrupt = dir.path().join("corrupt.jsonl.gz");
    std::fs::write(&corrupt, b"this is not gzip data at all").unwrap();
    let err = build_error(dir.path(), corrupt.clone());
    assert!(
        matches!(&err, DataError::Stage(StageError::Io { path, .. }) if path == &corrupt),
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

#[test]
fn a_vocabulary_without_room_for_the_bytes_and_special_tokens_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = tiny_settings(PackingMode::Concat);
    // Refused before the corpus is read: a corpus that does not exist is never looked at.
    let unread = dir.path().join("never-read.jsonl");
    for size in [0, 1, 256, 257] {
        settings.tokenizer.vocab_size = size;
        let err =
            train_tokenizer(std::slice::from_ref(&unread), &settings, &mut NoProgress).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::Config { .. }), "{msg}");
        assert!(msg.contains("tokenizer.vocab_size"), "{msg}");
        assert!(
            msg.contains(&format!("{size} is below the minimum 258")),
            "{msg}"
        );
    }
    // The smallest valid size: the 256 bytes and the two special tokens, no merges.
    assert_eq!(BpeSettings::MIN_VOCAB_SIZE, 258);
    settings.tokenizer.vocab_size = 258;
    let (_, tok) = sample_tokenizer(dir.path(), &settings);
    assert_eq!(tok.vocab_size(), 258);
    let text = "Ünïcödé ✓ fn f(x) -> u32";
    let ids = tok.encode(text).unwrap();
    assert_eq!(ids.len(), text.len(), "one token per byte");
    assert_eq!(tok.decode(&ids).unwrap(), text);
    // One above it has exactly one merge.
    settings.tokenizer.vocab_size = 259;
    let (_, tok) = sample_tokenizer(dir.path(), &settings);
    assert_eq!(tok.vocab_size(), 259);

    settings.tokenizer.max_training_bytes = 0;
    let err = train_tokenizer(&[unread], &settings, &mut NoProgress).unwrap_err();
    assert!(
        err.to_string()
            .contains("data.tokenizer.max_training_bytes"),
        "{err}"
    );
}

/// The message as a chain-printing reporter (`anyhow`'s `{:#}`) shows it: the error, then each
/// source after ": ".
fn full_message(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        text.push_str(&format!(": {e}"));
        next = e.source();
    }
    text
}

/// `err`'s full message names `path` once and holds one OS error.
fn names_once(err: &DataError, path: &Path) {
    let msg = full_message(err);
    assert_eq!(msg.matches("os error").count(), 1, "{msg}");
    assert_eq!(msg.matches(&path.display().to_string()).count(), 1, "{msg}");
}

#[test]
fn io_errors_name_the_file_and_the_os_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let settings = tiny_settings(PackingMode::Concat);
    let (corpus, tok) = sample_tokenizer(dir.path(), &settings);

    let missing = dir.path().join("missing.jsonl");
    let err =
        train_tokenizer(std::slice::from_ref(&missing), &settings, &mut NoProgress).unwrap_err();
    names_once(&err, &missing);
    let out = dir.path().join("data");
    let err = build_dataset(
        std::slice::from_ref(&missing),
        &tok,
        &out,
        &settings,
        &mut NoProgress,
    )
    .unwrap_err();
    names_once(&err, &missing);

    let no_tokenizer = dir.path().join("no-tokenizer.json");
    let err = crate::TextTokenizer::load(&no_tokenizer, None).unwrap_err();
    names_once(&err, &no_tokenizer);
    let err = Dataset::open(&out).unwrap_err();
    names_once(&err, &out.join("manifest.json"));

    // An output that cannot be written: a file stands where its folder should be.
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let err = build_dataset(
        std::slice::from_ref(&corpus),
        &tok,
        &blocker.join("data"),
        &settings,
        &mut NoProgress,
    )
    .unwrap_err();
    names_once(&err, &blocker);
    let err = tok.save(&blocker.join("tokenizer.json")).unwrap_err();
    names_once(&err, &blocker);
    assert_eq!(listing(dir.path()), ["a-file", "corpus.jsonl"]);
}
