//! Nothing can corrupt or silently mix a run: inputs are tied to what they were made from, a
//! second writer is refused at once, foreign folders are never written into, invalid settings
//! write nothing, and leftovers of a kill are cleaned by the rerun.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use smalltalk_expert::{train_expert, ExpertJob, StepBudget};
use smalltalk_mixture::{build_manifest, MixtureSources, WriteOptions};
use smalltalk_router::{train_routers, RouterSet};
use smalltalk_routing::{partition_stage, PartitionManifest};
use smalltalk_stage::{NoProgress, Progress, RunLayout};
use smalltalk_tests::{tiny, tiny_settings, write_two_domain_corpus};

use crate::lm_util::{AB, B};
use crate::pipeline_api::tiny_run;

/// Copy a folder tree (no `.lock` files).
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst);
        } else if entry.file_name() != ".lock" {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

fn err_text<T, E: std::fmt::Display>(r: Result<T, E>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn expert(
    layout: &RunLayout,
    partition: &Path,
    steps: usize,
    budget: StepBudget,
    progress: &mut dyn Progress,
) -> smalltalk_expert::Result<smalltalk_expert::RunOutcome> {
    let mut cfg = tiny_settings().experts;
    cfg.train.total_steps = steps;
    cfg.train.checkpoint_every = 2;
    let job = ExpertJob {
        data: &layout.data(),
        partition,
        experts: &layout.experts(),
        expert: 0,
        budget,
    };
    train_expert::<AB>(&job, &cfg, &Default::default(), progress)
}

/// A partition of the same rows with the two experts' rows swapped (valid, but not the one
/// the experts were trained on).
fn swapped_partition(from: &Path, to: &Path) {
    copy_dir(from, to);
    let mut m = PartitionManifest::load(to).unwrap();
    m.expert_rows.swap(0, 1);
    std::fs::write(
        to.join("partition.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
}

/// Panics (a simulated kill) at a given progress count.
struct KillAt(u64);

impl Progress for KillAt {
    fn update(&mut self, done: u64, _message: &str) {
        if done == self.0 {
            panic!("simulated kill at {done}");
        }
    }
}

#[test]
fn experts_are_tied_to_their_partition_data_and_step_budget() {
    let run = tiny_run();
    let tmp = tempfile::tempdir().unwrap();
    let layout = RunLayout::new(tmp.path());
    copy_dir(&run.layout.data(), &layout.data());
    copy_dir(&run.layout.partition(), &layout.partition());
    let other = tmp.path().join("other-partition");
    swapped_partition(&layout.partition(), &other);

    // An interrupted expert does not resume on another partition's rows.
    let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        expert(
            &layout,
            &layout.partition(),
            4,
            StepBudget::Fixed,
            &mut KillAt(3),
        )
    }));
    assert!(killed.is_err());
    let err = err_text(expert(
        &layout,
        &other,
        4,
        StepBudget::Fixed,
        &mut NoProgress,
    ));
    assert!(err.contains("input `partition`"), "{err}");
    let done = expert(
        &layout,
        &layout.partition(),
        4,
        StepBudget::Fixed,
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!((done.summary.start_step, done.summary.end_step), (2, 4));

    // A finished expert is not "skipped" against another partition either.
    let err = err_text(expert(
        &layout,
        &other,
        4,
        StepBudget::Fixed,
        &mut NoProgress,
    ));
    assert!(err.contains("input `partition`"), "{err}");
    assert!(expert(
        &layout,
        &layout.partition(),
        4,
        StepBudget::Fixed,
        &mut NoProgress
    )
    .unwrap()
    .skipped());

    // A larger budget is refused unless extended; extended, the schedule does not jump.
    let err = err_text(expert(
        &layout,
        &layout.partition(),
        6,
        StepBudget::Fixed,
        &mut NoProgress,
    ));
    assert!(
        err.contains("total_steps") && err.contains('4') && err.contains('6'),
        "{err}"
    );
    let more = expert(
        &layout,
        &layout.partition(),
        6,
        StepBudget::Extend,
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!((more.summary.start_step, more.summary.end_step), (4, 6));
    let lrs: Vec<f64> = std::fs::read_to_string(more.dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["lr"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(lrs.len(), 6);
    assert!(
        lrs[4] <= lrs[3] + 1e-12 && lrs[5] <= lrs[3] + 1e-12,
        "LR jumped: {lrs:?}"
    );

    // A partition of other training rows is refused before any training.
    let data2 = tmp.path().join("data2");
    let corpus_dir = tmp.path().join("c2");
    std::fs::create_dir_all(&corpus_dir).unwrap();
    let corpus = write_two_domain_corpus(&corpus_dir);
    std::fs::write(&corpus, std::fs::read_to_string(&corpus).unwrap().repeat(2)).unwrap();
    smalltalk_tests::build_tiny_dataset(&corpus, &data2);
    let job = ExpertJob {
        data: &data2,
        partition: &layout.partition(),
        experts: &tmp.path().join("e2"),
        expert: 0,
        budget: StepBudget::Fixed,
    };
    let err = err_text(train_expert::<AB>(
        &job,
        &tiny_settings().experts,
        &Default::default(),
        &mut NoProgress,
    ));
    assert!(err.contains("other training rows"), "{err}");
}

/// Blocks at its first training step until told to go on, after saying it got there.
struct Hold {
    at_step: mpsc::Sender<()>,
    go: mpsc::Receiver<()>,
    held: bool,
}

impl Progress for Hold {
    fn update(&mut self, _done: u64, _message: &str) {
        if !self.held {
            self.held = true;
            self.at_step.send(()).unwrap();
            self.go.recv().unwrap();
        }
    }
}

#[test]
fn a_second_writer_is_refused_at_once() {
    let run = tiny_run();
    let tmp = tempfile::tempdir().unwrap();
    let layout = RunLayout::new(tmp.path());
    copy_dir(&run.layout.data(), &layout.data());
    copy_dir(&run.layout.partition(), &layout.partition());
    let (at_step, reached) = mpsc::channel();
    let (release, go) = mpsc::channel();
    std::thread::scope(|s| {
        let first = s.spawn(|| {
            let mut hold = Hold {
                at_step,
                go,
                held: false,
            };
            expert(
                &layout,
                &layout.partition(),
                4,
                StepBudget::Fixed,
                &mut hold,
            )
        });
        reached.recv().unwrap();
        let started = Instant::now();
        let err = err_text(expert(
            &layout,
            &layout.partition(),
            4,
            StepBudget::Fixed,
            &mut NoProgress,
        ));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not refused at once"
        );
        assert!(
            err.contains(&format!("PID {}", std::process::id())),
            "{err}"
        );
        release.send(()).unwrap();
        let done = first.join().unwrap().unwrap();
        assert!(done.summary.finished);
    });
    // The lock died with its holder: a rerun finds the run finished.
    assert!(expert(
        &layout,
        &layout.partition(),
        4,
        StepBudget::Fixed,
        &mut NoProgress
    )
    .unwrap()
    .skipped());
}

#[test]
fn routers_of_another_tokenizer_are_refused_everywhere() {
    let run = tiny_run();
    let tmp = tempfile::tempdir().unwrap();
    // Same corpus and vocabulary size, a different tokenizer (trained on a different corpus).
    let corpus_dir = tmp.path().join("c");
    std::fs::create_dir_all(&corpus_dir).unwrap();
    let corpus = write_two_domain_corpus(&corpus_dir);
    let text = std::fs::read_to_string(&corpus)
        .unwrap()
        .replace("cat", "dog");
    std::fs::write(&corpus, text).unwrap();
    let data2 = tmp.path().join("data");
    smalltalk_tests::build_tiny_dataset(&corpus, &data2);
    let routers2 = tmp.path().join("routers");
    train_routers::<AB>(
        &data2,
        &routers2,
        &tiny_settings().routers,
        &Default::default(),
        &mut NoProgress,
    )
    .unwrap();
    let l = &run.layout;
    let routers = RouterSet::<B>::load(&routers2, &Default::default()).unwrap();
    let err = err_text(partition_stage(
        &routers,
        &l.data(),
        &tmp.path().join("p"),
        &tiny("partition"),
        &mut NoProgress,
    ));
    assert!(err.contains("tokenizer"), "{err}");
    assert!(
        !tmp.path().join("p").exists(),
        "a refused partition wrote a folder"
    );
    // Routers of another tokenizer do not make one mixture with these experts: the manifest
    // (which eval, route and generate read) is refused, naming the partition and both
    // routers' fingerprints.
    let sources = MixtureSources {
        routers: routers2.clone(),
        partition: l.partition(),
        experts: l.experts(),
    };
    let file = tmp.path().join("mixture.json");
    let err = err_text(build_manifest(&sources, &file, &WriteOptions::default()));
    assert!(
        err.contains("partition") && err.contains("routers fingerprint"),
        "{err}"
    );
    assert!(!file.exists());
}

#[test]
fn foreign_folders_are_never_written_and_bad_settings_write_nothing() {
    let run = tiny_run();
    let tmp = tempfile::tempdir().unwrap();
    let mine = tmp.path().join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    for f in ["config.toml", "tokenizer.json", "routers.json.bak"] {
        std::fs::write(mine.join(f), b"the user's").unwrap();
    }
    let cfg = tiny_settings().routers;
    let err = err_text(train_routers::<AB>(
        &run.layout.data(),
        &mine,
        &cfg,
        &Default::default(),
        &mut NoProgress,
    ));
    assert!(err.contains("refusing to write"), "{err}");
    for f in ["config.toml", "tokenizer.json", "routers.json.bak"] {
        assert_eq!(
            std::fs::read(mine.join(f)).unwrap(),
            b"the user's",
            "{f} touched"
        );
    }
    assert_eq!(std::fs::read_dir(&mine).unwrap().count(), 3);

    // Invalid settings are refused before anything is written; the corrected rerun runs.
    let out = tmp.path().join("routers");
    for bad in [
        smalltalk_router::EmConfig {
            prefix_len: 99,
            ..cfg.clone()
        },
        smalltalk_router::EmConfig {
            experts: 1,
            ..cfg.clone()
        },
    ] {
        let err = err_text(train_routers::<AB>(
            &run.layout.data(),
            &out,
            &bad,
            &Default::default(),
            &mut NoProgress,
        ));
        assert!(
            err.contains("prefix_len") || err.contains("experts"),
            "{err}"
        );
        assert!(!out.exists(), "a refused config left {}", out.display());
    }
    let mut small_model = cfg.clone();
    small_model
        .model
        .insert("max_seq_len".into(), toml::Value::Integer(4));
    assert!(train_routers::<AB>(
        &run.layout.data(),
        &out,
        &small_model,
        &Default::default(),
        &mut NoProgress
    )
    .is_err());
    assert!(!out.exists(), "a refused model shape left files");

    // A partition killed after partition.json left chunks/: the rerun removes its own chunk
    // files (and nothing else).
    let part = tmp.path().join("partition");
    copy_dir(&run.layout.partition(), &part);
    std::fs::create_dir_all(part.join("chunks")).unwrap();
    std::fs::write(part.join("chunks/chunk-000000.json"), b"{}").unwrap();
    let routers = RouterSet::<B>::load(&run.layout.routers(), &Default::default()).unwrap();
    let again = partition_stage(
        &routers,
        &run.layout.data(),
        &part,
        &tiny("partition"),
        &mut NoProgress,
    )
    .unwrap();
    assert!(again.skipped);
    assert!(!part.join("chunks").exists(), "stale chunks left");
    std::fs::create_dir_all(part.join("chunks")).unwrap();
    std::fs::write(part.join("chunks/notes.txt"), b"user").unwrap();
    partition_stage(
        &routers,
        &run.layout.data(),
        &part,
        &tiny("partition"),
        &mut NoProgress,
    )
    .unwrap();
    assert!(
        part.join("chunks/notes.txt").exists(),
        "a user's file was deleted"
    );

    // A garbage line in the EM metrics is an error naming the file and the line.
    let routers_copy = tmp.path().join("routers-copy");
    copy_dir(&run.layout.routers(), &routers_copy);
    let metrics = routers_copy.join("em/metrics.jsonl");
    let mut text = std::fs::read_to_string(&metrics).unwrap();
    text.insert_str(0, "garbage\n");
    std::fs::write(&metrics, text).unwrap();
    let strong = crate::pipeline_api::strong_routers();
    let err = err_text(train_routers::<AB>(
        &run.layout.data(),
        &routers_copy,
        &strong,
        &Default::default(),
        &mut NoProgress,
    ));
    assert!(
        err.contains("metrics.jsonl") && err.contains("line 1"),
        "{err}"
    );
}
