//! Router EM on synthetic data with clearly different sources: EM recovers the sources, and
//! resumes bit-identically after a crash at any point — between iterations, or while a later
//! router of an iteration trains (an earlier router's checkpoint of that iteration must then
//! be rolled back, and no metrics line may come from an interrupted router).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use smalltalk_lm::rng::SplitMix64;
use smalltalk_lm::train::LrSchedule;
use smalltalk_lm::{TrainConfig, VecSource};
use smalltalk_router::{EmConfig, EmData, EmSummary, IterationMetrics};
use smalltalk_routing::DomainLabels;
use smalltalk_stage::{NoProgress, Progress};

use crate::lm_util::AB;

const BLOCK: usize = 32;
const VOCAB: usize = 3 * BLOCK;
const ROW_LEN: usize = 17;

/// `rows_per_source` rows from each of `sources` first-order Markov chains over disjoint token
/// blocks of 32 ids (each token has 4 successors in its block with probabilities
/// 0.4/0.3/0.2/0.1), interleaved, with the source index as the row's domain label. Together
/// the chains' transition tables have rank above the `tiny` model's width, so a router that
/// specialises predicts its source better: the signal EM amplifies.
fn synthetic(sources: usize, rows_per_source: usize) -> (VecSource, Vec<u32>, Vec<String>) {
    let mut rng = SplitMix64::new(7);
    let successors: Vec<[usize; 4]> = (0..sources * BLOCK)
        .map(|_| std::array::from_fn(|_| rng.below(BLOCK as u64) as usize))
        .collect();
    let (mut tokens, mut labels) = (Vec::new(), Vec::new());
    for r in 0..sources * rows_per_source {
        let d = r % sources;
        let mut t = d * BLOCK + rng.below(BLOCK as u64) as usize;
        for _ in 0..ROW_LEN {
            tokens.push(t as u32);
            let u = rng.below(10);
            let pick = [0, 0, 0, 0, 1, 1, 1, 2, 2, 3][u as usize];
            t = d * BLOCK + successors[t][pick];
        }
        labels.push(d as u32);
    }
    let names = (0..sources).map(|d| format!("source-{d}")).collect();
    (VecSource::new(tokens, ROW_LEN, None), labels, names)
}

fn em_config(experts: usize, iterations: usize) -> EmConfig {
    let mut overrides = toml::Table::new();
    overrides.insert("vocab_size".into(), toml::Value::Integer(VOCAB as i64));
    EmConfig {
        experts,
        preset: "tiny".into(),
        model: overrides,
        prefix_len: ROW_LEN,
        iterations,
        steps_per_iteration: 12,
        chunk_sequences: 0, // E × K × batch, capped at the rows
        score_batch: 64,
        seed: 3,
        train: TrainConfig {
            batch_size: 8,
            lr: 1e-2,
            warmup_steps: 3,
            schedule: LrSchedule::Constant,
            ..TrainConfig::router_paper()
        },
        ..EmConfig::default()
    }
}

fn run_em(
    cfg: &EmConfig,
    data: &EmData<'_>,
    dir: &Path,
    progress: &mut dyn Progress,
) -> smalltalk_router::Result<EmSummary> {
    smalltalk_router::run_em::<AB>(cfg, data, dir, &Default::default(), progress)
}

fn data<'a>(source: &'a VecSource, labels: &'a [u32], names: &'a [String]) -> EmData<'a> {
    EmData {
        source,
        domains: Some(DomainLabels { labels, names }),
        identity: "synthetic".into(),
    }
}

#[test]
fn em_recovers_distinct_sources() {
    for sources in [2usize, 3] {
        let (source, labels, names) = synthetic(sources, 1100); // fresh chunks every iteration
        let dir = tempfile::tempdir().unwrap();
        let cfg = em_config(sources, 10);
        let summary = run_em(
            &cfg,
            &data(&source, &labels, &names),
            dir.path(),
            &mut NoProgress,
        )
        .unwrap();
        let last = summary.metrics.last().unwrap();
        let purity = last.purity.unwrap();
        assert!(
            purity >= 0.9,
            "{sources} sources: purity {purity} after EM ({:?})",
            last.domain_mix
        );
        assert_eq!(summary.metrics.len(), 10);
        assert!(
            last.mean_best_nll < summary.metrics[0].mean_best_nll,
            "routers did not improve"
        );
    }
}

/// Panics (a simulated crash) right after iteration `at` has been saved.
struct CrashAfter(usize);

impl Progress for CrashAfter {
    fn record(&mut self, value: &serde_json::Value) {
        if value["iteration"] == self.0 {
            panic!("simulated crash after iteration {}", self.0);
        }
    }
}

/// Panics (a simulated kill) when the progress count of router steps reaches `at`: with E × K
/// steps per iteration, a count inside router 1's K steps kills it while router 0's
/// checkpoint of the same iteration is already on disk.
struct CrashAtStep(u64);

impl Progress for CrashAtStep {
    fn update(&mut self, done: u64, _message: &str) {
        if done == self.0 {
            panic!("simulated kill at router step {done}");
        }
    }
}

fn state_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("em").join("state.json")).unwrap()
}

fn without_time(mut m: Vec<IterationMetrics>) -> Vec<IterationMetrics> {
    m.iter_mut().for_each(|m| m.seconds = 0.0);
    m
}

#[test]
fn em_resumes_after_a_crash_between_iterations() {
    let (source, labels, names) = synthetic(2, 40);
    let data = data(&source, &labels, &names);
    let cfg = em_config(2, 3);
    let straight = tempfile::tempdir().unwrap();
    let want = run_em(&cfg, &data, straight.path(), &mut NoProgress).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let crash = catch_unwind(AssertUnwindSafe(|| {
        run_em(&cfg, &data, dir.path(), &mut CrashAfter(1))
    }));
    assert!(crash.is_err(), "the observer should have crashed the run");
    let got = run_em(&cfg, &data, dir.path(), &mut NoProgress).unwrap();
    assert_eq!(got.resumed_from, 1);
    assert_eq!(
        state_bytes(dir.path()),
        state_bytes(straight.path()),
        "final EM state differs"
    );
    assert_eq!(without_time(got.metrics), without_time(want.metrics));
    assert_eq!(got.manifest, want.manifest);

    // A finished run is skipped; other settings are refused.
    let again = run_em(&cfg, &data, dir.path(), &mut NoProgress).unwrap();
    assert_eq!(again.resumed_from, 3);
    let other = EmConfig { seed: 4, ..cfg };
    let err = run_em(&other, &data, dir.path(), &mut NoProgress).unwrap_err();
    assert!(err.to_string().contains("other settings"), "{err}");
}

#[test]
fn em_killed_while_a_later_router_trains_resumes_bit_identically() {
    let (source, labels, names) = synthetic(2, 40);
    let data = data(&source, &labels, &names);
    let cfg = em_config(2, 3);
    let k = cfg.steps_per_iteration as u64;
    let straight = tempfile::tempdir().unwrap();
    let want = run_em(&cfg, &data, straight.path(), &mut NoProgress).unwrap();
    // Iteration 2 (the second), router 1, its second step: E × K + K + 2.
    for at in [k + 2, 2 * k + k + 2] {
        let dir = tempfile::tempdir().unwrap();
        let crash = catch_unwind(AssertUnwindSafe(|| {
            run_em(&cfg, &data, dir.path(), &mut CrashAtStep(at))
        }));
        assert!(crash.is_err(), "the kill at step {at} did not happen");
        let got = run_em(&cfg, &data, dir.path(), &mut NoProgress).unwrap();
        for m in &got.metrics {
            assert!(
                m.train_loss.iter().all(|l| l.is_finite()),
                "iteration {}: train loss {:?}",
                m.iteration,
                m.train_loss
            );
        }
        assert_eq!(
            without_time(got.metrics),
            without_time(want.metrics.clone())
        );
        assert_eq!(state_bytes(dir.path()), state_bytes(straight.path()));
        assert_eq!(got.manifest, want.manifest);
        // A second rerun reads the metrics back (no `null` in them).
        let again = run_em(&cfg, &data, dir.path(), &mut NoProgress).unwrap();
        assert_eq!(again.metrics.len(), 3);
    }
}
