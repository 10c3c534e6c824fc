//! Two builders of one folder: one runs, the other is refused at once naming the holder's PID;
//! temporaries that live processes are writing are never removed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use smalltalk_stage::{NoProgress, Progress, StageError};

use crate::{build_dataset, BuildOutcome, DataError, Dataset, PackingMode, Split, Verify};

use super::{listing, sample_tokenizer, tiny_settings};

/// Holds the build at its first progress phase (the lock is held and the temporary folder
/// exists by then) until released.
struct Gate {
    started: mpsc::Sender<()>,
    release: mpsc::Receiver<()>,
}

impl Progress for Gate {
    fn start(&mut self, _what: &str, _done: u64, _total: u64) {
        let _ = self.started.send(());
        let _ = self.release.recv();
    }
}

/// The temporaries of `name` in `dir`.
fn temporaries(dir: &Path, name: &str) -> Vec<PathBuf> {
    let prefix = format!("{name}.tmp-");
    listing(dir)
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .map(|n| dir.join(n))
        .collect()
}

/// A live process other than this one (killed when the test is done with it).
fn live_process() -> Child {
    Command::new("sleep")
        .arg("120")
        .spawn()
        .expect("spawn `sleep`")
}

#[test]
fn a_second_build_into_one_folder_is_refused_at_once_and_the_first_completes() {
    let dir = tempfile::tempdir().unwrap();
    let settings = tiny_settings(PackingMode::Concat);
    let (corpus, tok) = sample_tokenizer(dir.path(), &settings);
    let out = dir.path().join("data");
    let inputs = std::slice::from_ref(&corpus);
    std::thread::scope(|s| {
        // Owned by this closure: a failed assertion drops `release` and lets the first go.
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let first = s.spawn(|| {
            let mut gate = Gate {
                started: started_tx,
                release: release_rx,
            };
            build_dataset(inputs, &tok, &out, &settings, &mut gate)
        });
        started
            .recv()
            .expect("the first build reaches its first phase");
        let live = temporaries(dir.path(), "data");
        assert_eq!(live.len(), 1, "{:?}", listing(dir.path()));

        let t0 = Instant::now();
        let err = build_dataset(inputs, &tok, &out, &settings, &mut NoProgress).unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(5), "not refused at once");
        let msg = err.to_string();
        assert!(
            matches!(err, DataError::Stage(StageError::Locked { .. })),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("PID {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains(&out.display().to_string()), "{msg}");
        // The refused builder touched nothing of the first one's.
        assert_eq!(temporaries(dir.path(), "data"), live);
        assert!(!out.exists());

        release.send(()).unwrap();
        let outcome = first.join().unwrap().unwrap();
        assert!(matches!(outcome, BuildOutcome::Built(_)));
    });
    let dataset = Dataset::open(&out).unwrap();
    for split in Split::ALL {
        dataset.reader(split, Verify::Checksums).unwrap();
    }
    dataset.tokenizer().unwrap();
    // No temporary and no lock file is left; the next build finds the dataset done.
    assert_eq!(listing(dir.path()), ["corpus.jsonl", "data"]);
    let again = build_dataset(inputs, &tok, &out, &settings, &mut NoProgress).unwrap();
    assert!(matches!(again, BuildOutcome::Skipped(_)));
}

#[test]
fn a_live_process_temporary_survives_a_build_and_a_dead_one_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let settings = tiny_settings(PackingMode::Concat);
    let (corpus, tok) = sample_tokenizer(dir.path(), &settings);
    let out = dir.path().join("data");
    let mut other = live_process();
    let live = dir.path().join(format!("data.tmp-{}-0", other.id()));
    std::fs::create_dir(&live).unwrap();
    std::fs::write(live.join("train-00000.tokens"), b"being written").unwrap();
    let dead = dir.path().join(format!("data.tmp-{}-7", u32::MAX - 1));
    std::fs::create_dir(&dead).unwrap();

    build_dataset(&[corpus], &tok, &out, &settings, &mut NoProgress).unwrap();
    let kept = std::fs::read(live.join("train-00000.tokens"));
    let _ = other.kill();
    let _ = other.wait();
    assert_eq!(kept.unwrap(), b"being written");
    assert!(!dead.exists());
    Dataset::open(&out).unwrap();
}

#[test]
fn concurrent_tokenizer_saves_are_atomic_and_leave_others_temporaries() {
    let dir = tempfile::tempdir().unwrap();
    let settings = tiny_settings(PackingMode::Concat);
    let (_, tok) = sample_tokenizer(dir.path(), &settings);
    let folder = dir.path().join("run");
    std::fs::create_dir(&folder).unwrap();
    let path = folder.join("tokenizer.json");
    let mut other = live_process();
    let foreign = folder.join(format!("tokenizer.json.tmp-{}-0", other.id()));
    std::fs::write(&foreign, b"another writer's half file").unwrap();

    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..10 {
                    tok.save(&path).unwrap();
                }
            });
        }
    });
    let kept = std::fs::read(&foreign);
    let _ = other.kill();
    let _ = other.wait();
    assert_eq!(kept.unwrap(), b"another writer's half file");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        tok.to_json().unwrap()
    );
    assert_eq!(listing(&folder).len(), 2, "{:?}", listing(&folder));
    // A save creates the folder it writes into.
    let nested = dir.path().join("a/b/tokenizer.json");
    tok.save(&nested).unwrap();
    assert_eq!(
        crate::TextTokenizer::load(&nested, None)
            .unwrap()
            .vocab_size(),
        tok.vocab_size()
    );
}
