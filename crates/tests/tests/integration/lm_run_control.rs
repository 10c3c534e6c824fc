//! Controlling a training run from outside: stop requests, step budgets (refused changes,
//! explicit extension on the original schedule) and rolling back to a commit point.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use smalltalk_lm::train::Checkpoint;
use smalltalk_lm::{
    HostTensor, LmError, NoopObserver, StepMetrics, TrainConfig, TrainObserver, Trainer, VecSource,
};

use crate::lm_util::{dev, quick_train, random_tokens, tiny, AB};

/// Records every step's metrics; sets a stop flag at a given step.
#[derive(Default)]
struct Recorder {
    steps: Vec<StepMetrics>,
    flag_at: Option<(usize, Arc<AtomicBool>)>,
}

impl TrainObserver for Recorder {
    fn on_step(&mut self, m: &StepMetrics) -> ControlFlow<()> {
        self.steps.push(m.clone());
        if let Some((step, flag)) = &self.flag_at {
            if *step == m.step {
                flag.store(true, Ordering::SeqCst);
            }
        }
        ControlFlow::Continue(())
    }
}

fn source() -> VecSource {
    VecSource::new(random_tokens(7, 10 * 13, 40), 13, None)
}

fn train(total_steps: usize) -> TrainConfig {
    TrainConfig {
        micro_batch_size: 2,
        warmup_steps: 2,
        ..quick_train(total_steps, 4)
    }
}

/// A trainer that watches its own flag (the process-wide one is shared by every test).
fn trainer(train: TrainConfig, dir: &Path) -> Trainer<AB> {
    let mut t = Trainer::<AB>::new(&tiny(40), train, dir, &dev()).unwrap();
    t.set_stop_flag(Arc::new(AtomicBool::new(false)));
    t
}

fn weights(t: &Trainer<AB>) -> Vec<(String, HostTensor)> {
    t.model().named_tensors()
}

fn steps_in_checkpoints(dir: &Path) -> Vec<usize> {
    Checkpoint::list(&dir.join("checkpoints"))
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect()
}

fn metric_steps(dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn lm_stop_flag_checkpoints_and_the_rerun_is_bit_identical() {
    let straight_dir = tempfile::tempdir().unwrap();
    let mut straight = trainer(train(6), straight_dir.path());
    straight.run(&source(), &mut NoopObserver).unwrap();
    let reference = weights(&straight);

    let dir = tempfile::tempdir().unwrap();
    let mut first = trainer(train(6), dir.path());
    let flag = Arc::new(AtomicBool::new(false));
    first.set_stop_flag(flag.clone());
    let mut recorder = Recorder {
        flag_at: Some((3, flag.clone())),
        ..Default::default()
    };
    let s = first.run(&source(), &mut recorder).unwrap();
    assert!(s.stopped && !s.finished && s.end_step == 3, "{s:?}");
    assert_eq!(recorder.steps.len(), 3);
    assert_eq!(steps_in_checkpoints(dir.path()), vec![3]);
    assert_eq!(
        s.checkpoint.as_deref(),
        Some(&*dir.path().join("checkpoints/step-00000003"))
    );
    // Still set: a further call returns at once, without training.
    let s = first.run(&source(), &mut recorder).unwrap();
    assert!(s.stopped && s.start_step == 3 && s.end_step == 3 && recorder.steps.len() == 3);
    drop(first);

    let mut second = trainer(train(6), dir.path());
    assert_eq!(second.resumed_from(), Some(3));
    let s = second.run(&source(), &mut NoopObserver).unwrap();
    assert!(s.finished && !s.stopped);
    assert!(
        weights(&second) == reference,
        "stopped + resumed run differs"
    );
    assert_eq!(metric_steps(dir.path()), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(
        steps_in_checkpoints(dir.path()),
        steps_in_checkpoints(straight_dir.path()),
        "a stop checkpoint outlived the resumed run"
    );
}

#[test]
fn lm_stop_checkpoints_do_not_count_toward_retention() {
    // Scheduled checkpoints every 2 steps, two kept: an uninterrupted run keeps 4 and 6.
    let cfg = TrainConfig {
        checkpoint_every: 2,
        keep_checkpoints: 2,
        ..train(6)
    };
    let straight = tempfile::tempdir().unwrap();
    trainer(cfg.clone(), straight.path())
        .run(&source(), &mut NoopObserver)
        .unwrap();
    assert_eq!(steps_in_checkpoints(straight.path()), vec![4, 6]);
    for stop_at in [1, 3, 5] {
        let dir = tempfile::tempdir().unwrap();
        let mut first = trainer(cfg.clone(), dir.path());
        let flag = Arc::new(AtomicBool::new(false));
        first.set_stop_flag(flag.clone());
        let mut recorder = Recorder {
            flag_at: Some((stop_at, flag)),
            ..Default::default()
        };
        first.run(&source(), &mut recorder).unwrap();
        drop(first);
        trainer(cfg.clone(), dir.path())
            .run(&source(), &mut NoopObserver)
            .unwrap();
        assert_eq!(
            steps_in_checkpoints(dir.path()),
            vec![4, 6],
            "stopped at {stop_at}"
        );
    }
}

#[test]
fn lm_a_changed_step_budget_is_refused_naming_both_values() {
    let dir = tempfile::tempdir().unwrap();
    trainer(train(8), dir.path())
        .run(&source(), &mut NoopObserver)
        .unwrap();
    let cfg = tiny(40);
    let err = Trainer::<AB>::new(&cfg, train(12), dir.path(), &dev())
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(matches!(err, LmError::CheckpointMismatch { .. }), "{msg}");
    assert!(
        msg.contains("total_steps = 8") && msg.contains("12"),
        "{msg}"
    );
    assert!(msg.contains("new_extended"), "{msg}");
    // A smaller budget is refused by both constructors.
    for extend in [false, true] {
        let r = if extend {
            Trainer::<AB>::new_extended(&cfg, train(6), dir.path(), &dev())
        } else {
            Trainer::<AB>::new(&cfg, train(6), dir.path(), &dev())
        };
        let msg = r.err().unwrap().to_string();
        assert!(
            msg.contains("total_steps = 8") && msg.contains("asks for 6"),
            "{msg}"
        );
    }
    // Other settings still have to match when extending.
    let other = TrainConfig {
        seed: 5,
        ..train(12)
    };
    let msg = Trainer::<AB>::new_extended(&cfg, other, dir.path(), &dev())
        .err()
        .unwrap();
    assert!(msg.to_string().contains("seed"), "{msg}");
}

#[test]
fn lm_an_extended_run_continues_the_original_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let mut old = Recorder::default();
    trainer(train(8), dir.path())
        .run(&source(), &mut old)
        .unwrap();
    let cfg = tiny(40);
    let mut longer = Trainer::<AB>::new_extended(&cfg, train(12), dir.path(), &dev()).unwrap();
    longer.set_stop_flag(Arc::new(AtomicBool::new(false)));
    assert_eq!(longer.resumed_from(), Some(8));
    assert_eq!(longer.train_config().schedule_steps, Some(8));
    let mut new = Recorder::default();
    let s = longer.run(&source(), &mut new).unwrap();
    assert!(s.finished && s.end_step == 12, "{s:?}");
    // The first new step uses the LR at the end of the original schedule, and it holds: no
    // jump back up a stretched cosine.
    let end_of_schedule = train(8).lr_at(8);
    let t = train(8);
    assert!((end_of_schedule - t.lr * t.final_lr_ratio).abs() < 1e-15);
    let last_old = old.steps.last().unwrap().lr;
    let lrs: Vec<f64> = new.steps.iter().map(|m| m.lr).collect();
    assert_eq!(new.steps[0].step, 9);
    assert!(lrs.iter().all(|&lr| lr == end_of_schedule), "{lrs:?}");
    assert!(lrs[0] <= last_old, "{} after {last_old}", lrs[0]);
    assert!(new.steps.iter().all(|m| m.loss.is_finite()));
    // The extension is recorded: a plain rerun with the new budget resumes it as finished.
    let ckpt = Checkpoint::latest(&dir.path().join("checkpoints"))
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            ckpt.state.train.total_steps,
            ckpt.state.train.schedule_steps
        ),
        (12, Some(8))
    );
    let again = Trainer::<AB>::new(&cfg, train(12), dir.path(), &dev()).unwrap();
    assert!(again.is_finished());
    assert_eq!(metric_steps(dir.path()), (1..=12).collect::<Vec<u64>>());
}

#[test]
fn lm_discard_after_rolls_back_to_the_commit_point() {
    let run = TrainConfig {
        checkpoint_every: 2,
        keep_checkpoints: 10,
        ..train(6)
    };
    let straight_dir = tempfile::tempdir().unwrap();
    let mut straight = trainer(run.clone(), straight_dir.path());
    straight.run(&source(), &mut NoopObserver).unwrap();
    let reference = weights(&straight);

    let dir = tempfile::tempdir().unwrap();
    trainer(run.clone(), dir.path())
        .run(&source(), &mut NoopObserver)
        .unwrap();
    assert_eq!(steps_in_checkpoints(dir.path()), vec![2, 4, 6]);
    Checkpoint::discard_after(&dir.path().join("checkpoints"), 2).unwrap();
    assert_eq!(steps_in_checkpoints(dir.path()), vec![2]);
    // Only the checkpoint folders are left (no temporaries).
    assert_eq!(
        std::fs::read_dir(dir.path().join("checkpoints"))
            .unwrap()
            .count(),
        1
    );

    let mut rolled = trainer(run.clone(), dir.path());
    assert_eq!(rolled.resumed_from(), Some(2));
    rolled.run_until(4, &source(), &mut NoopObserver).unwrap();
    assert_eq!(metric_steps(dir.path()), vec![1, 2, 3, 4]);
    assert_eq!(steps_in_checkpoints(dir.path()), vec![2, 4]);
    rolled.run(&source(), &mut NoopObserver).unwrap();
    assert!(weights(&rolled) == reference, "rolled-back run differs");
    assert_eq!(metric_steps(dir.path()), vec![1, 2, 3, 4, 5, 6]);
    // Discarding past the newest checkpoint, or everything, is fine too.
    Checkpoint::discard_after(&dir.path().join("checkpoints"), 6).unwrap();
    assert_eq!(steps_in_checkpoints(dir.path()), vec![2, 4, 6]);
    Checkpoint::discard_after(&dir.path().join("checkpoints"), 0).unwrap();
    assert!(steps_in_checkpoints(dir.path()).is_empty());
    assert_eq!(trainer(run, dir.path()).resumed_from(), None);
}
