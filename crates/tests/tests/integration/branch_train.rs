//! Branch-train (`[experts] init`): experts and the dense baseline start from pretrained
//! weights, here the tiny run's dense model exported to Hugging Face and imported back.

use smalltalk_expert::{train_dense, train_expert, ExpertConfig, ExpertJob, StepBudget};
use smalltalk_lm::{Checkpoint, Lm};
use smalltalk_stage::{NoProgress, RunLayout};

use crate::lm_util::{AB, B};
use crate::pipeline_api::tiny_run;

/// The weights of the newest checkpoint of a training run.
fn weights(run: &std::path::Path) -> Vec<(String, smalltalk_lm::HostTensor)> {
    let ckpt = Checkpoint::latest(&run.join("checkpoints"))
        .unwrap()
        .unwrap();
    ckpt.load_model::<B>(&Default::default())
        .unwrap()
        .named_tensors()
}

#[test]
fn experts_and_dense_branch_from_an_imported_checkpoint_and_a_wrong_vocabulary_is_refused() {
    let run = &tiny_run().layout;
    let tmp = tempfile::tempdir().unwrap();
    // The tiny run's dense model, through the HF format and back: the pretrained seed.
    let card = smalltalk_hf::export_run(run.root(), &tmp.path().join("hf")).unwrap();
    assert_eq!(card.dense, ["dense", "dense-steps"]);
    let init = tmp.path().join("init.safetensors");
    smalltalk_hf::import_model(&tmp.path().join("hf/dense"), &init).unwrap();
    let seed = Lm::<B>::from_safetensors(
        &Lm::<B>::config_of_file(&init).unwrap(),
        &init,
        &Default::default(),
    )
    .unwrap()
    .named_tensors();
    assert_eq!(
        seed,
        weights(&run.dense()),
        "export → import changed the weights"
    );

    // One step at a learning rate too small to move an f32 weight: the result is the seed.
    let mut cfg: ExpertConfig = smalltalk_tests::tiny_settings().experts;
    cfg.init = Some(init.clone());
    cfg.train.total_steps = 1;
    cfg.train.warmup_steps = 0;
    cfg.train.lr = 1e-30;
    let branched = RunLayout::new(tmp.path().join("branched"));
    let job = ExpertJob {
        data: &run.data(),
        partition: &run.partition(),
        experts: &branched.experts(),
        expert: 1,
        budget: StepBudget::Fixed,
    };
    train_expert::<AB>(&job, &cfg, &Default::default(), &mut NoProgress).unwrap();
    train_dense::<AB>(
        &run.data(),
        &branched.experts(),
        &cfg,
        2,
        StepBudget::Fixed,
        &Default::default(),
        &mut NoProgress,
    )
    .unwrap();
    for dir in [branched.expert(1), branched.dense()] {
        let got = weights(&dir);
        assert_eq!(got.len(), seed.len());
        for ((name, a), (_, b)) in got.iter().zip(&seed) {
            let diff = a
                .values
                .iter()
                .zip(&b.values)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                diff < 1e-6,
                "{}: {name} moved by {diff} from the init",
                dir.display()
            );
        }
    }
    // From scratch the same run starts elsewhere.
    let mut scratch = cfg.clone();
    scratch.init = None;
    let fresh = RunLayout::new(tmp.path().join("scratch"));
    train_dense::<AB>(
        &run.data(),
        &fresh.experts(),
        &scratch,
        2,
        StepBudget::Fixed,
        &Default::default(),
        &mut NoProgress,
    )
    .unwrap();
    assert_ne!(weights(&fresh.dense()), seed);

    // A checkpoint of another vocabulary is refused, naming both sizes; a folder too.
    let mut other = smalltalk_lm::LmConfig::preset("tiny").unwrap();
    other.vocab_size += 7;
    let wrong = tmp.path().join("wrong.safetensors");
    other
        .init::<B>(0, &Default::default())
        .save_safetensors(&wrong)
        .unwrap();
    cfg.init = Some(wrong);
    let refused = |cfg: &ExpertConfig, out: &str| {
        train_dense::<AB>(
            &run.data(),
            &tmp.path().join(out),
            cfg,
            2,
            StepBudget::Fixed,
            &Default::default(),
            &mut NoProgress,
        )
        .unwrap_err()
        .to_string()
    };
    let err = refused(&cfg, "x");
    assert!(
        err.contains("vocabulary") && err.contains(&other.vocab_size.to_string()),
        "{err}"
    );
    cfg.init = Some(tmp.path().join("hf/dense"));
    let err = refused(&cfg, "y");
    assert!(err.contains("smalltalk import hf"), "{err}");
}
