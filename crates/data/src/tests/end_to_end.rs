//! Corpus text → dataset folder → text again, and what a rerun does.

use smalltalk_stage::NoProgress;

use crate::{build_dataset, BuildOutcome, DataError, Dataset, PackingMode, Split, Verify};

use super::{build_sample, listing, read_rows, sample_docs, sample_tokenizer, tiny_settings};

#[test]
fn text_round_trips_through_shards_in_doc_start_mode() {
    let dir = tempfile::tempdir().unwrap();
    let settings = tiny_settings(PackingMode::DocStart);
    let (corpus, tok) = sample_tokenizer(dir.path(), &settings);
    let out = dir.path().join("data");
    let outcome = build_dataset(&[corpus], &tok, &out, &settings, &mut NoProgress).unwrap();
    let manifest = outcome.manifest().clone();
    assert!(matches!(outcome, BuildOutcome::Built(_)));

    let dataset = Dataset::open(&out).unwrap();
    let tok = dataset.tokenizer().unwrap();
    let docs = sample_docs();
    let mut seen_docs = std::collections::BTreeMap::new();
    for split in Split::ALL {
        let reader = dataset.reader(split, Verify::Checksums).unwrap();
        let rows: Vec<_> = (0..reader.len())
            .map(|i| (reader.tokens(i), reader.meta(i)))
            .collect();
        let streams = crate::unpack(PackingMode::DocStart, &rows);
        let starts: Vec<_> = rows
            .iter()
            .filter(|(_, m)| m.offset == 0)
            .map(|(_, m)| *m)
            .collect();
        assert_eq!(streams.len(), starts.len());
        for (stream, meta) in streams.iter().zip(&starts) {
            let (domain, text) = &docs[meta.doc as usize];
            assert_eq!(stream.last(), Some(&tok.eos_id));
            assert_eq!(
                &tok.decode(&stream[..stream.len() - 1]).unwrap(),
                text,
                "doc {}",
                meta.doc
            );
            assert_eq!(&manifest.domains[meta.domain as usize], domain);
            // Each document is in exactly one split.
            assert!(
                seen_docs.insert(meta.doc, split).is_none(),
                "doc {} in two splits",
                meta.doc
            );
        }
        assert_eq!(manifest.split(split).documents as usize, starts.len());
    }
    assert_eq!(seen_docs.len(), docs.len());
    assert!(
        manifest.split(Split::Validation).documents > 0
            && manifest.split(Split::Test).documents > 0
    );
    assert!(
        manifest.split(Split::Train).shards.len() > 1,
        "several shards are exercised"
    );
}

#[test]
fn concat_mode_decodes_to_documents_joined_by_eos() {
    let dir = tempfile::tempdir().unwrap();
    let settings = tiny_settings(PackingMode::Concat);
    let (tok, out) = build_sample(dir.path(), &settings);
    let dataset = Dataset::open(&out).unwrap();
    let reader = dataset.reader(Split::Train, Verify::Checksums).unwrap();
    let rows = read_rows(&reader);
    let stream = crate::unpack(PackingMode::Concat, &rows).remove(0);
    let expected: Vec<u32> = sample_docs()
        .iter()
        .filter(|(_, t)| settings.split.split_of(t) == Split::Train)
        .flat_map(|(_, t)| tok.encode(t).unwrap().into_iter().chain([tok.eos_id]))
        .collect();
    assert_eq!(stream, expected);
    assert_eq!(
        dataset.manifest().split(Split::Train).tokens as usize,
        expected.len()
    );
}

#[test]
fn rerun_skips_and_other_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let settings = tiny_settings(PackingMode::Concat);
    let (corpus, tok) = sample_tokenizer(dir.path(), &settings);
    let out = dir.path().join("data");
    let first = build_dataset(
        std::slice::from_ref(&corpus),
        &tok,
        &out,
        &settings,
        &mut NoProgress,
    )
    .unwrap();
    let before = listing(&out);
    let second = build_dataset(
        std::slice::from_ref(&corpus),
        &tok,
        &out,
        &settings,
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(second, BuildOutcome::Skipped(first.manifest().clone()));
    assert_eq!(listing(&out), before);

    let mut other = settings.clone();
    other.seq_len = 32;
    let err = build_dataset(&[corpus], &tok, &out, &other, &mut NoProgress).unwrap_err();
    assert!(matches!(err, DataError::Conflict { .. }), "{err}");
    assert_eq!(listing(&out), before);
}

#[test]
fn checksum_mismatch_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let settings = tiny_settings(PackingMode::Concat);
    let (_, out) = build_sample(dir.path(), &settings);
    let shard = out.join("train-00000.tokens");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[3] ^= 0x40;
    std::fs::write(&shard, &bytes).unwrap();
    let dataset = Dataset::open(&out).unwrap();
    let err = dataset.reader(Split::Train, Verify::Checksums).unwrap_err();
    match &err {
        DataError::Checksum { path, .. } => assert_eq!(path, &shard),
        other => panic!("expected a checksum error, got {other}"),
    }
    assert!(err.to_string().contains("train-00000.tokens"));
    // Other splits are intact; a truncated shard is caught even without checksums.
    dataset
        .reader(Split::Validation, Verify::Checksums)
        .unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 2]).unwrap();
    let err = dataset.reader(Split::Train, Verify::SizesOnly).unwrap_err();
    assert!(matches!(err, DataError::Manifest { .. }), "{err}");
    // A tampered tokenizer is refused too.
    let tok_path = out.join("tokenizer.json");
    let text = std::fs::read_to_string(&tok_path).unwrap();
    std::fs::write(&tok_path, text.replacen("<|pad|>", "<|pqd|>", 1)).unwrap();
    assert!(matches!(
        dataset.tokenizer().unwrap_err(),
        DataError::Checksum { .. }
    ));
}

#[test]
fn compressed_and_plain_text_inputs_are_read() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let line = "{\"text\": \"hello compressed world\", \"domain\": \"x\"}\n";
    let gz = dir.path().join("a.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(line.as_bytes()).unwrap();
    enc.finish().unwrap();
    let zst = dir.path().join("b.jsonl.zst");
    std::fs::write(
        &zst,
        ruzstd::encoding::compress_to_vec(
            line.as_bytes(),
            ruzstd::encoding::CompressionLevel::Fastest,
        ),
    )
    .unwrap();
    let folder = dir.path().join("texts");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("z.txt"), "plain file, one document").unwrap();
    std::fs::write(folder.join("a.md"), "another\nplain document").unwrap();
    let docs: Vec<_> = crate::CorpusReader::open(&[gz, zst, folder.clone()], Default::default())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "hello compressed world",
            "hello compressed world",
            "another\nplain document",
            "plain file, one document"
        ]
    );
    assert_eq!(docs[0].domain.as_deref(), Some("x"));
    assert!(docs[0].id.ends_with("a.jsonl.gz:1"), "{}", docs[0].id);
    assert_eq!(docs[2].id, folder.join("a.md").display().to_string());
}

#[test]
fn an_existing_folder_that_is_not_a_dataset_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let settings = tiny_settings(PackingMode::Concat);
    let (corpus, tok) = sample_tokenizer(dir.path(), &settings);
    let out = dir.path().join("precious");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "keep me").unwrap();
    let err = build_dataset(
        std::slice::from_ref(&corpus),
        &tok,
        &out,
        &settings,
        &mut NoProgress,
    )
    .unwrap_err();
    assert!(matches!(err, DataError::Conflict { .. }), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "keep me"
    );
    // An empty folder is fine to fill.
    std::fs::remove_file(out.join("notes.txt")).unwrap();
    build_dataset(&[corpus], &tok, &out, &settings, &mut NoProgress).unwrap();
    assert!(out.join("manifest.json").exists());
}

#[test]
fn max_documents_reads_only_the_first_documents() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = tiny_settings(PackingMode::DocStart);
    let (corpus, tok) = sample_tokenizer(dir.path(), &settings);
    let all = build_dataset(
        std::slice::from_ref(&corpus),
        &tok,
        &dir.path().join("all"),
        &settings,
        &mut NoProgress,
    )
    .unwrap();
    settings.max_documents = 5;
    let first = build_dataset(
        &[corpus],
        &tok,
        &dir.path().join("first"),
        &settings,
        &mut NoProgress,
    )
    .unwrap();
    assert!(all.manifest().documents_read > 5);
    assert_eq!(first.manifest().documents_read, 5);
    let docs: u64 = Split::ALL
        .iter()
        .map(|&s| first.manifest().split(s).documents)
        .sum();
    assert_eq!(docs, 5);
    // Those five are the corpus's first: their training rows equal the full build's rows
    // of documents 0..5.
    let dir_path = |name: &str| dir.path().join(name);
    let (a, b) = (
        {
            let d = Dataset::open(&dir_path("all")).unwrap();
            let r = d.reader(Split::Train, Verify::Checksums).unwrap();
            (0..r.len())
                .filter(|&i| r.meta(i).doc < 5)
                .map(|i| r.tokens(i).to_vec())
                .collect::<Vec<_>>()
        },
        {
            let d = Dataset::open(&dir_path("first")).unwrap();
            let r = d.reader(Split::Train, Verify::Checksums).unwrap();
            (0..r.len())
                .map(|i| r.tokens(i).to_vec())
                .collect::<Vec<_>>()
        },
    );
    assert!(
        !a.is_empty(),
        "some of the first five documents are training documents"
    );
    assert_eq!(a, b);
}
