//! Training: overfitting, bit-identical resume, finished runs, NaN handling.

use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};

use smalltalk_lm::train::{Checkpoint, LrSchedule};
use smalltalk_lm::{
    LmError, NoopObserver, StepMetrics, TrainConfig, TrainObserver, Trainer, VecSource,
};

use crate::lm_util::{dev, quick_train, random_tokens, tiny, AB};

/// Records losses; breaks (graceful stop) or panics (crash) at a given step.
#[derive(Default)]
struct Probe {
    losses: Vec<f64>,
    stop_at: Option<usize>,
    panic_at: Option<usize>,
}

impl TrainObserver for Probe {
    fn on_step(&mut self, m: &StepMetrics) -> ControlFlow<()> {
        assert!(m.loss.is_finite() && m.grad_norm.is_finite() && m.tokens > 0);
        self.losses.push(m.loss);
        if self.panic_at == Some(m.step) {
            panic!("simulated crash at step {}", m.step);
        }
        if self.stop_at == Some(m.step) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

fn data(rows: usize, row_len: usize, vocab: usize) -> VecSource {
    VecSource::new(random_tokens(99, rows * row_len, vocab), row_len, None)
}

#[test]
fn tiny_model_overfits_a_small_batch() {
    let cfg = tiny(32);
    let source = data(4, 17, 32);
    let train = TrainConfig {
        lr: 1e-2,
        warmup_steps: 5,
        schedule: LrSchedule::Constant,
        ..quick_train(150, 4)
    };
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::<AB>::new(&cfg, train, dir.path(), &dev()).unwrap();
    let mut probe = Probe::default();
    let summary = trainer.run(&source, &mut probe).unwrap();
    assert!(summary.finished);
    let (first, last) = (probe.losses[0], *probe.losses.last().unwrap());
    assert!((first - 32f64.ln()).abs() < 0.2, "initial loss {first}");
    assert!(last < 0.3, "loss only fell from {first} to {last}");
}

fn weights(trainer: &Trainer<AB>) -> Vec<(String, smalltalk_lm::HostTensor)> {
    trainer.model().named_tensors()
}

fn resume_config() -> TrainConfig {
    // Micro-batches of 2 exercise gradient accumulation; 24 rows / batch 4 crosses no epoch in
    // 6 steps, 10 rows would: use 10 to also cross epochs.
    TrainConfig {
        micro_batch_size: 2,
        prefix_len: Some(13),
        ..quick_train(6, 4)
    }
}

#[test]
fn resumed_training_is_bit_identical_to_uninterrupted() {
    let cfg = tiny(48);
    let source = data(10, 17, 48);
    let straight_dir = tempfile::tempdir().unwrap();
    let mut straight =
        Trainer::<AB>::new(&cfg, resume_config(), straight_dir.path(), &dev()).unwrap();
    straight.run(&source, &mut NoopObserver).unwrap();
    assert_eq!(straight.step(), 6);
    let reference = weights(&straight);

    // Graceful stop at step 3 (checkpoint written), then a new trainer resumes to 6.
    let dir = tempfile::tempdir().unwrap();
    let mut first = Trainer::<AB>::new(&cfg, resume_config(), dir.path(), &dev()).unwrap();
    let s = first
        .run(
            &source,
            &mut Probe {
                stop_at: Some(3),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(s.stopped && !s.finished && s.end_step == 3);
    drop(first);
    let mut second = Trainer::<AB>::new(&cfg, resume_config(), dir.path(), &dev()).unwrap();
    assert_eq!(second.resumed_from(), Some(3));
    second.run(&source, &mut NoopObserver).unwrap();
    assert_eq!(second.step(), 6);
    assert!(
        weights(&second) == reference,
        "resumed weights differ from the uninterrupted run"
    );

    // Crash at step 5 with checkpoints every 2 steps: resume from 4, redo 5 and 6.
    let dir = tempfile::tempdir().unwrap();
    let train = TrainConfig {
        checkpoint_every: 2,
        ..resume_config()
    };
    let mut crashing = Trainer::<AB>::new(&cfg, train.clone(), dir.path(), &dev()).unwrap();
    let crashed = catch_unwind(AssertUnwindSafe(|| {
        crashing.run(
            &source,
            &mut Probe {
                panic_at: Some(5),
                ..Default::default()
            },
        )
    }));
    assert!(crashed.is_err());
    drop(crashing);
    let mut resumed = Trainer::<AB>::new(&cfg, train, dir.path(), &dev()).unwrap();
    assert_eq!(resumed.resumed_from(), Some(4));
    resumed.run(&source, &mut NoopObserver).unwrap();
    assert!(
        weights(&resumed) == reference,
        "weights after crash + resume differ"
    );
    let steps: Vec<u64> = std::fs::read_to_string(dir.path().join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        steps,
        vec![1, 2, 3, 4, 5, 6],
        "metrics rows of the crashed steps are replaced"
    );
    // keep_checkpoints = 2: steps 4 and 6 remain.
    let kept: Vec<usize> = Checkpoint::list(&dir.path().join("checkpoints"))
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(kept, vec![4, 6]);
}

#[test]
fn finished_run_is_skipped_and_mismatches_are_refused() {
    let cfg = tiny(24);
    let source = data(6, 9, 24);
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::<AB>::new(&cfg, quick_train(2, 2), dir.path(), &dev()).unwrap();
    t.run(&source, &mut NoopObserver).unwrap();
    let before = weights(&t);
    drop(t);

    let mut again = Trainer::<AB>::new(&cfg, quick_train(2, 2), dir.path(), &dev()).unwrap();
    assert!(again.is_finished());
    let mut probe = Probe::default();
    let s = again.run(&source, &mut probe).unwrap();
    assert!(s.finished && s.start_step == 2 && s.end_step == 2 && probe.losses.is_empty());
    assert!(weights(&again) == before);

    // Extending the run is allowed when asked for (total_steps may grow) ...
    let mut longer =
        Trainer::<AB>::new_extended(&cfg, quick_train(3, 2), dir.path(), &dev()).unwrap();
    longer.run(&source, &mut NoopObserver).unwrap();
    assert_eq!(longer.step(), 3);
    // ... but a different model or data order is not.
    let other = tiny(25);
    let err = Trainer::<AB>::new(&other, quick_train(3, 2), dir.path(), &dev())
        .err()
        .unwrap();
    assert!(matches!(err, LmError::CheckpointMismatch { .. }), "{err}");
    let err = Trainer::<AB>::new(
        &cfg,
        TrainConfig {
            seed: 12,
            ..quick_train(3, 2)
        },
        dir.path(),
        &dev(),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("seed"), "{err}");
    // A different data source is refused too.
    let mut t = Trainer::<AB>::new_extended(&cfg, quick_train(5, 2), dir.path(), &dev()).unwrap();
    let err = t.run(&data(7, 9, 24), &mut NoopObserver).unwrap_err();
    assert!(matches!(err, LmError::CheckpointMismatch { .. }), "{err}");
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_good_checkpoint() {
    let cfg = tiny(16);
    let source = data(4, 9, 16);
    // An absurd LR makes the weights overflow after the first update.
    let train = TrainConfig {
        lr: 1e30,
        warmup_steps: 0,
        weight_decay: 0.0,
        schedule: LrSchedule::Constant,
        checkpoint_every: 1,
        ..quick_train(5, 4)
    };
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::<AB>::new(&cfg, train.clone(), dir.path(), &dev()).unwrap();
    let err = t.run(&source, &mut NoopObserver).unwrap_err();
    let LmError::NonFinite {
        step,
        last_checkpoint,
        ..
    } = &err
    else {
        panic!("unexpected error {err}")
    };
    assert!(*step >= 2, "{err}");
    let last = last_checkpoint
        .clone()
        .expect("a checkpoint before the blow-up");
    let ckpt = Checkpoint::load(&last).unwrap();
    assert_eq!(ckpt.state.step, step - 1);
    assert!(err.to_string().contains("non-finite"), "{err}");
    // The checkpoint is still loadable.
    ckpt.load_model::<crate::lm_util::B>(&dev()).unwrap();
}
