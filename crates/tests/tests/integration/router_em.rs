//! Router EM, the partition stage and expert training on synthetic data with clearly different
//! sources: EM recovers the sources, resumes exactly after a crash between iterations, the
//! partition covers every row once with equal shards, and an expert resumes exactly.

use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use smalltalk_expert::{expert_dir, train_expert, ExpertConfig};
use smalltalk_lm::rng::SplitMix64;
use smalltalk_lm::train::LrSchedule;
use smalltalk_lm::{Checkpoint, NoopObserver, StepMetrics, TrainConfig, TrainObserver, VecSource};
use smalltalk_router::{
    partition_split, train_routers, DomainLabels, EmConfig, EmData, EmObserver, EmSummary,
    IterationMetrics, NoEmObserver, PartitionManifest, PartitionSettings, RouterSet,
};

use crate::lm_util::{AB, B};

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
    }
}

fn run_em(
    cfg: &EmConfig,
    data: &EmData<'_>,
    dir: &Path,
    observer: &mut dyn EmObserver,
) -> smalltalk_router::Result<EmSummary> {
    train_routers::<AB>(cfg, data, dir, &Default::default(), observer)
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
            &mut NoEmObserver,
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

impl EmObserver for CrashAfter {
    fn on_iteration(&mut self, m: &IterationMetrics) {
        if m.iteration == self.0 {
            panic!("simulated crash after iteration {}", m.iteration);
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
    let want = run_em(&cfg, &data, straight.path(), &mut NoEmObserver).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let crash = catch_unwind(AssertUnwindSafe(|| {
        run_em(&cfg, &data, dir.path(), &mut CrashAfter(1))
    }));
    assert!(crash.is_err(), "the observer should have crashed the run");
    let got = run_em(&cfg, &data, dir.path(), &mut NoEmObserver).unwrap();
    assert_eq!(got.resumed_from, 1);
    assert_eq!(
        state_bytes(dir.path()),
        state_bytes(straight.path()),
        "final EM state differs"
    );
    assert_eq!(without_time(got.metrics), without_time(want.metrics));
    assert_eq!(got.manifest, want.manifest);

    // A finished run is skipped; other settings are refused.
    let again = run_em(&cfg, &data, dir.path(), &mut NoEmObserver).unwrap();
    assert_eq!(again.resumed_from, 3);
    let other = EmConfig { seed: 4, ..cfg };
    let err = run_em(&other, &data, dir.path(), &mut NoEmObserver).unwrap_err();
    assert!(err.to_string().contains("other settings"), "{err}");
}

#[test]
fn partition_covers_every_row_once_with_equal_shards() {
    let (source, labels, names) = synthetic(2, 500); // 1,000 rows: EM chunks stay fresh
    let data = data(&source, &labels, &names);
    let cfg = em_config(2, 5);
    let routers_dir = tempfile::tempdir().unwrap();
    run_em(&cfg, &data, routers_dir.path(), &mut NoEmObserver).unwrap();
    let routers = RouterSet::<B>::load(routers_dir.path(), &Default::default()).unwrap();
    let settings = PartitionSettings {
        chunk_sequences: 300, // 4 chunks: 300, 300, 300, 100
        score_batch: 16,
        ..PartitionSettings::default()
    };

    // Interrupt after the second chunk, then rerun: same result as a straight run.
    let straight = tempfile::tempdir().unwrap();
    let (want, skipped) =
        partition_split(&routers, &data, straight.path(), &settings, |_, _| {}).unwrap();
    assert!(!skipped);
    let dir = tempfile::tempdir().unwrap();
    let crash = catch_unwind(AssertUnwindSafe(|| {
        partition_split(&routers, &data, dir.path(), &settings, |done, _| {
            if done > 600 {
                panic!("simulated crash after two chunks");
            }
        })
    }));
    assert!(crash.is_err());
    assert!(dir.path().join("chunks").join("chunk-000001.json").exists());
    let (got, _) = partition_split(&routers, &data, dir.path(), &settings, |_, _| {}).unwrap();
    assert_eq!(got, want);

    let mut seen = vec![0u32; source_len(&data)];
    for e in 0..2 {
        let rows = got.read_rows(dir.path(), e).unwrap();
        assert_eq!(rows.len(), 500, "shard {e} size");
        assert!(rows.windows(2).all(|w| w[0] < w[1]), "rows are sorted");
        for r in rows {
            seen[r] += 1;
        }
    }
    assert!(seen.iter().all(|&c| c == 1), "every row exactly once");
    let mix = got
        .domain_mix
        .as_ref()
        .expect("labelled rows give a domain mix");
    let per_shard: Vec<u64> = mix.iter().map(|row| row.iter().sum()).collect();
    assert_eq!(per_shard, vec![500, 500]);
    assert!(
        got.purity.unwrap() > 0.5,
        "routers learned nothing: {mix:?}"
    );

    let (_, skipped) = partition_split(&routers, &data, dir.path(), &settings, |_, _| {}).unwrap();
    assert!(skipped, "a finished partition is skipped");
    assert_eq!(PartitionManifest::load(dir.path()).unwrap(), want);

    // Expert 0 on its shard: interrupted at step 3 and rerun == uninterrupted; a finished
    // expert is not retrained.
    let cfg = ExpertConfig {
        preset: "tiny".into(),
        train: TrainConfig {
            total_steps: 6,
            batch_size: 4,
            warmup_steps: 1,
            ..TrainConfig::default()
        },
        ..ExpertConfig::default()
    };
    let part = (&got, dir.path());
    let expert = |out: &Path, observer: &mut dyn TrainObserver| {
        train_expert::<AB>(
            &cfg,
            &source,
            VOCAB,
            part,
            0,
            out,
            &Default::default(),
            observer,
        )
        .unwrap()
    };
    let straight = tempfile::tempdir().unwrap();
    expert(straight.path(), &mut NoopObserver);
    let out = tempfile::tempdir().unwrap();
    let first = expert(out.path(), &mut StopAt(3));
    assert_eq!((first.end_step, first.finished), (3, false));
    let rest = expert(out.path(), &mut NoopObserver);
    assert_eq!((rest.start_step, rest.end_step), (3, 6));
    let again = expert(out.path(), &mut NoopObserver);
    assert_eq!(
        (again.start_step, again.end_step),
        (6, 6),
        "a finished expert is skipped"
    );
    let weights = |dir: &Path| {
        let ckpt = Checkpoint::latest(&expert_dir(dir, 0).join("checkpoints"))
            .unwrap()
            .unwrap();
        ckpt.load_model::<B>(&Default::default()).unwrap().named_tensors()
    };
    assert_eq!(
        weights(out.path()),
        weights(straight.path()),
        "resumed expert differs"
    );
}

/// Stops training (gracefully: a checkpoint is written) after step `0`.
struct StopAt(usize);

impl TrainObserver for StopAt {
    fn on_step(&mut self, m: &StepMetrics) -> ControlFlow<()> {
        if m.step == self.0 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

fn source_len(data: &EmData<'_>) -> usize {
    data.source.num_sequences()
}
