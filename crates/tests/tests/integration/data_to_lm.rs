//! The hand-off between stages: a corpus built into a dataset folder by `smalltalk-data` is
//! trained on and scored by `smalltalk-lm` through `SequenceSource`.

use smalltalk_data::{
    build_dataset, train_tokenizer, DataSettings, Dataset, PackingMode, Split, Verify,
};
use smalltalk_lm::train::LrSchedule;
use smalltalk_lm::{
    score_prefix, LmConfig, NoopObserver, ScoreOptions, SequenceSource, TrainConfig, Trainer,
};
use smalltalk_stage::NoProgress;

use crate::lm_util::{dev, quick_train, AB};

fn corpus(dir: &std::path::Path) -> std::path::PathBuf {
    let mut lines = String::new();
    for i in 0..60 {
        let text = if i % 2 == 0 {
            format!("the cat sat on the mat number {i}. the cat sat on the mat again.")
        } else {
            format!("fn main() {{ let x = {i}; println!(\"{{}}\", x + 1); }}")
        };
        lines.push_str(&format!(
            "{{\"text\": {:?}, \"domain\": \"d{}\"}}\n",
            text,
            i % 2
        ));
    }
    let path = dir.join("corpus.jsonl");
    std::fs::write(&path, lines).unwrap();
    path
}

#[test]
fn a_model_trains_and_scores_on_a_built_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path());
    let mut settings = DataSettings {
        seq_len: 16,
        packing: PackingMode::DocStart,
        ..Default::default()
    };
    settings.tokenizer.vocab_size = 300;
    settings.tokenizer.min_frequency = 1;
    settings.split.validation = 0.2;
    settings.split.test = 0.0;
    let tok = train_tokenizer(std::slice::from_ref(&corpus), &settings, &mut NoProgress).unwrap();
    let out = dir.path().join("data");
    build_dataset(&[corpus], &tok, &out, &settings, &mut NoProgress).unwrap();
    let dataset = Dataset::open(&out).unwrap();
    let train = dataset.reader(Split::Train, Verify::Checksums).unwrap();
    let valid = dataset
        .reader(Split::Validation, Verify::Checksums)
        .unwrap();
    assert_eq!(SequenceSource::row_len(&train), 17);
    assert_eq!(SequenceSource::pad_id(&train), Some(tok.pad_id));
    assert!(train.num_sequences() > 0 && valid.num_sequences() > 0);

    let cfg = LmConfig {
        vocab_size: dataset.manifest().tokenizer.vocab_size,
        max_seq_len: 16,
        ..LmConfig::preset("tiny").unwrap()
    };
    let train_cfg = TrainConfig {
        lr: 1e-2,
        warmup_steps: 2,
        schedule: LrSchedule::Constant,
        ..quick_train(40, 8)
    };
    let run = dir.path().join("run");
    let mut trainer = Trainer::<AB>::new(&cfg, train_cfg, &run, &dev()).unwrap();
    let before = validation_nll(&trainer.valid_model(), &valid);
    let summary = trainer.run(&train, &mut NoopObserver).unwrap();
    assert!(summary.finished);
    let after = validation_nll(&trainer.valid_model(), &valid);
    // The corpus is highly repetitive: 40 steps must cut held-out loss well below chance.
    assert!(
        after < 0.6 * before,
        "validation NLL per token {before} -> {after}"
    );
}

/// Mean per-token NLL of the validation rows (first tokens of each row, no padding involved).
fn validation_nll(
    model: &smalltalk_lm::Lm<crate::lm_util::B>,
    valid: &smalltalk_data::SequenceReader,
) -> f64 {
    let prefix = 8;
    let rows: Vec<usize> = (0..valid.num_sequences())
        .filter(|&i| valid.meta(i).valid as usize >= prefix)
        .collect();
    let tokens: Vec<u32> = rows.iter().flat_map(|&i| valid.tokens(i)).collect();
    let options = ScoreOptions {
        pad_id: Some(valid.pad_id()),
        ..ScoreOptions::default()
    };
    let scores = score_prefix(model, &tokens, valid.row_len(), prefix, &options).unwrap();
    assert!(scores.iter().all(|s| s.is_finite() && *s <= 0.0));
    -scores.iter().sum::<f64>() / (rows.len() * (prefix - 1)) as f64
}
