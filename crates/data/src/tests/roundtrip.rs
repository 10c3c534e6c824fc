//! encode → pack → write → read gives back exactly the original token streams.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::manifest::{BuildSettings, Manifest, TokenizerInfo, FORMAT, MANIFEST_FILE};
use crate::{
    unpack, DataSettings, Dataset, DatasetWriter, IdWidth, PackingMode, Split, SplitSettings,
    Verify,
};

const EOS: u32 = 1;
const PAD: u32 = 0;

/// Write `docs` (split, tokens) as a dataset and read every split back as (row, meta) pairs.
fn write_and_read(
    docs: &[(Split, Vec<u32>)],
    packing: PackingMode,
    seq_len: usize,
    per_shard: u64,
    width: IdWidth,
) -> BTreeMap<Split, Vec<(Vec<u32>, crate::SequenceMeta)>> {
    let dir = tempfile::tempdir().unwrap();
    let settings = DataSettings {
        seq_len,
        packing,
        sequences_per_shard: per_shard,
        ..Default::default()
    };
    let mut writer = DatasetWriter::new(dir.path(), &settings, width, EOS, PAD);
    for (i, (split, ids)) in docs.iter().enumerate() {
        writer.push(*split, i as u64, (i % 3) as u32, ids).unwrap();
    }
    let domains = vec!["a".to_string(), "b".into(), "c".into()];
    let splits = writer.finish(&domains).unwrap();
    let manifest = Manifest {
        format: FORMAT.into(),
        tokenizer: TokenizerInfo {
            file: "tokenizer.json".into(),
            hash: "unused".into(),
            vocab_size: if width == IdWidth::U16 {
                1 << 16
            } else {
                1 << 20
            },
            eos_id: EOS,
            pad_id: PAD,
        },
        seq_len,
        row_len: seq_len + 1,
        packing,
        id_width: width,
        domains,
        documents_read: docs.len() as u64,
        documents_skipped_empty: 0,
        splits,
        build: BuildSettings {
            inputs: vec![],
            format: Default::default(),
            split: SplitSettings::default(),
            seq_len,
            packing,
            sequences_per_shard: per_shard,
        },
    };
    std::fs::write(
        dir.path().join(MANIFEST_FILE),
        serde_json::to_string(&manifest).unwrap(),
    )
    .unwrap();
    let dataset = Dataset::open(dir.path()).unwrap();
    Split::ALL
        .into_iter()
        .map(|split| {
            let reader = dataset.reader(split, Verify::Checksums).unwrap();
            let rows = (0..reader.len())
                .map(|i| (reader.tokens(i), reader.meta(i)))
                .collect();
            (split, rows)
        })
        .collect()
}

fn split_strategy() -> impl Strategy<Value = Split> {
    prop_oneof![
        Just(Split::Train),
        Just(Split::Validation),
        Just(Split::Test)
    ]
}

fn docs_strategy(max_id: u32) -> impl Strategy<Value = Vec<(Split, Vec<u32>)>> {
    proptest::collection::vec(
        (
            split_strategy(),
            proptest::collection::vec(2..max_id, 1..40),
        ),
        1..25,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn concat_round_trip(docs in docs_strategy(70_000), seq_len in 1usize..12, per_shard in 1u64..7, wide in any::<bool>()) {
        let width = if wide { IdWidth::U32 } else { IdWidth::U16 };
        let docs: Vec<_> = docs.into_iter().map(|(s, ids)| (s, ids.into_iter().map(|t| if wide { t } else { t % 65_536 }).collect::<Vec<u32>>())).collect();
        let read = write_and_read(&docs, PackingMode::Concat, seq_len, per_shard, width);
        for split in Split::ALL {
            let expected: Vec<u32> = docs.iter().filter(|(s, _)| *s == split).flat_map(|(_, ids)| ids.iter().copied().chain([EOS])).collect();
            let rows = &read[&split];
            let streams = unpack(PackingMode::Concat, rows);
            if expected.is_empty() {
                prop_assert!(rows.is_empty());
            } else {
                prop_assert_eq!(streams, vec![expected]);
            }
            for (row, meta) in rows {
                prop_assert_eq!(row.len(), seq_len + 1);
                prop_assert!(row[meta.valid as usize..].iter().all(|&t| t == PAD));
            }
        }
    }

    #[test]
    fn doc_start_round_trip(docs in docs_strategy(70_000), seq_len in 1usize..12, per_shard in 1u64..7, wide in any::<bool>()) {
        let width = if wide { IdWidth::U32 } else { IdWidth::U16 };
        let docs: Vec<_> = docs.into_iter().map(|(s, ids)| (s, ids.into_iter().map(|t| if wide { t } else { t % 65_536 }).collect::<Vec<u32>>())).collect();
        let read = write_and_read(&docs, PackingMode::DocStart, seq_len, per_shard, width);
        for split in Split::ALL {
            let expected: Vec<Vec<u32>> = docs.iter().filter(|(s, _)| *s == split).map(|(_, ids)| ids.iter().copied().chain([EOS]).collect()).collect();
            let rows = &read[&split];
            // Every document starts a row, and that row's metadata names it.
            let starts: Vec<u64> = rows.iter().filter(|(_, m)| m.offset == 0).map(|(_, m)| m.doc).collect();
            let expected_docs: Vec<u64> = docs.iter().enumerate().filter(|(_, (s, _))| *s == split).map(|(i, _)| i as u64).collect();
            prop_assert_eq!(starts, expected_docs);
            prop_assert_eq!(unpack(PackingMode::DocStart, rows), expected);
        }
    }

    #[test]
    fn split_is_deterministic(texts in proptest::collection::vec(".{0,40}", 1..50), seed in any::<u64>()) {
        let s = SplitSettings {
            validation: 0.3,
            test: 0.3,
            seed,
            ..SplitSettings::default()
        };
        for t in &texts {
            prop_assert_eq!(s.split_of(t), s.split_of(t));
        }
    }
}

#[test]
fn split_fractions_are_close_to_settings() {
    let s = SplitSettings {
        validation: 0.1,
        test: 0.2,
        seed: 7,
        ..SplitSettings::default()
    };
    let mut counts = BTreeMap::new();
    for i in 0..20_000 {
        *counts
            .entry(s.split_of(&format!("document number {i}")))
            .or_insert(0usize) += 1;
    }
    let frac = |k| counts[&k] as f64 / 20_000.0;
    assert!((frac(Split::Validation) - 0.1).abs() < 0.01, "{counts:?}");
    assert!((frac(Split::Test) - 0.2).abs() < 0.01, "{counts:?}");
    // A different seed moves documents between splits.
    let other = SplitSettings {
        seed: 8,
        ..s.clone()
    };
    assert!((0..200).any(|i| s.split_of(&i.to_string()) != other.split_of(&i.to_string())));
}

#[test]
fn long_document_rows_overlap_by_one_token() {
    let ids: Vec<u32> = (10..30).collect();
    let read = write_and_read(
        &[(Split::Train, ids)],
        PackingMode::DocStart,
        8,
        100,
        IdWidth::U16,
    );
    let rows = &read[&Split::Train];
    // 21 tokens (20 + EOS), stride 8: rows start at 0, 8, 16.
    assert_eq!(
        rows.iter().map(|(_, m)| m.offset).collect::<Vec<_>>(),
        vec![0, 8, 16]
    );
    assert_eq!(rows[0].0[8], rows[1].0[0]);
    assert_eq!(rows[2].1.valid, 5);
    assert_eq!(&rows[2].0[5..], &[PAD; 4]);
}
