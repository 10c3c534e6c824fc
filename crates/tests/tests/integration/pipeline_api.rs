//! The whole line through the library API alone (no binary) on the tiny two-domain corpus:
//! data → routers → partition → experts + dense → eval → report; `route` and `generate` load
//! what it wrote and return what they must (the expert of a text's domain, the scores' order,
//! a seeded generation's exact tokens).

use std::path::Path;
use std::sync::OnceLock;

use smalltalk_data::Split;
use smalltalk_eval::{eval_run, EvalData, EvalOptions};
use smalltalk_expert::{
    train_dense, train_expert, DenseScaling, ExpertConfig, ExpertJob, StepBudget,
};
use smalltalk_lm::burn::tensor::backend::AutodiffBackend;
use smalltalk_lm::{generate, generate_reference, SamplingOptions};
use smalltalk_mixture::{write_run_manifest, GenerateOptions, Mixture, WriteOptions};
use smalltalk_router::{train_routers, RouterSet};
use smalltalk_routing::{partition_stage, PartitionManifest};
use smalltalk_stage::{NoProgress, RunLayout};
use smalltalk_tests::{build_tiny_dataset, domain_text, tiny_settings, write_two_domain_corpus};

use crate::lm_util::{AB, B};

/// A finished tiny run, shared by the tests that only read it.
pub struct TinyRun {
    _tmp: tempfile::TempDir,
    /// Its folders.
    pub layout: RunLayout,
}

/// Routers strong enough to separate the two domains: more EM than the CLI's smoke config.
pub fn strong_routers() -> smalltalk_router::EmConfig {
    let mut cfg = tiny_settings().routers;
    cfg.iterations = 4;
    cfg.steps_per_iteration = 12;
    cfg
}

/// Build the dataset, train routers, partition, two experts and the dense model in `layout`.
pub fn train_tiny_run(layout: &RunLayout) {
    train_tiny_run_on::<AB>(layout, &strong_routers(), &Default::default());
}

/// [`train_tiny_run`] on the training backend `A` (its device `device`) with routers `em`.
pub fn train_tiny_run_on<A: AutodiffBackend>(
    layout: &RunLayout,
    em: &smalltalk_router::EmConfig,
    device: &A::Device,
) {
    let s = tiny_settings();
    let corpus = write_two_domain_corpus(layout.root());
    build_tiny_dataset(&corpus, &layout.data());
    let em = train_routers::<A>(
        &layout.data(),
        &layout.routers(),
        em,
        device,
        &mut NoProgress,
    )
    .unwrap();
    assert!(!em.stopped && em.manifest.is_some());
    let routers = RouterSet::<A::InnerBackend>::load(&layout.routers(), device).unwrap();
    partition_stage(
        &routers,
        &layout.data(),
        &layout.partition(),
        &s.partition,
        &mut NoProgress,
    )
    .unwrap();
    for e in 0..2 {
        let job = ExpertJob {
            data: &layout.data(),
            partition: &layout.partition(),
            experts: &layout.experts(),
            expert: e,
            budget: StepBudget::Fixed,
        };
        train_expert::<A>(&job, &s.experts, device, &mut NoProgress).unwrap();
    }
    train_dense::<A>(
        &layout.data(),
        &layout.experts(),
        &s.experts,
        2,
        StepBudget::Fixed,
        device,
        &mut NoProgress,
    )
    .unwrap();
    // The other dense protocol (E× steps at the experts' batch) goes beside it.
    let steps = ExpertConfig {
        dense_scaling: DenseScaling::Steps,
        ..s.experts.clone()
    };
    let out = train_dense::<A>(
        &layout.data(),
        &layout.experts(),
        &steps,
        2,
        StepBudget::Fixed,
        device,
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(out.dir, layout.dense_steps());
    // The mixture's manifest, as the pipeline writes it after the experts.
    write_run_manifest(layout, &WriteOptions::default()).unwrap();
}

/// The shared finished run.
pub fn tiny_run() -> &'static TinyRun {
    static RUN: OnceLock<TinyRun> = OnceLock::new();
    RUN.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let layout = RunLayout::new(tmp.path());
        train_tiny_run(&layout);
        TinyRun { _tmp: tmp, layout }
    })
}

/// The expert whose part of the partition holds most rows of domain `d`.
fn expert_of_domain(partition: &Path, d: usize) -> usize {
    let m = PartitionManifest::load(partition).unwrap();
    let mix = m.domain_mix.unwrap();
    (0..mix.len()).max_by_key(|&e| mix[e][d]).unwrap()
}

#[test]
fn the_line_runs_through_the_library_and_route_and_generate_use_it() {
    let run = tiny_run();
    let layout = &run.layout;

    // The partition: every row once, equal parts, the domains separated.
    let m = PartitionManifest::load(&layout.partition()).unwrap();
    let sizes: Vec<usize> = m.expert_rows.iter().map(|r| r.sequences).collect();
    assert_eq!(sizes.iter().sum::<usize>(), m.rows);
    assert!(sizes[0].abs_diff(sizes[1]) <= 1, "unequal parts {sizes:?}");
    // Equal parts cap the purity (the code documents are longer, so they fill more rows than
    // one part holds): the best possible is every prose row with every code row it can get.
    let mix = m.domain_mix.clone().unwrap();
    let counts: Vec<u64> = (0..2).map(|d| mix[0][d] + mix[1][d]).collect();
    let cap = sizes[0].max(sizes[1]) as u64;
    let best = (counts[0].min(cap) + counts[1].min(cap)) as f64 / m.rows as f64;
    let purity = m.purity.unwrap();
    assert!(
        purity >= best - 0.02,
        "routers did not separate the domains: {m:?}"
    );
    assert_ne!(
        expert_of_domain(&layout.partition(), 0),
        expert_of_domain(&layout.partition(), 1)
    );

    // Eval on the validation split, then the report from the run folder.
    // 64 is longer than the tiny rows (33 tokens): the sweep leaves it out.
    let options = EvalOptions {
        prefixes: vec![4, 2, 8, 16, 64],
        seed: 0,
        allow_unfinished: false,
    };
    let data = EvalData::Split {
        dataset: &layout.data(),
        split: Split::Validation,
    };
    let report = eval_run::<B>(layout.root(), &data, &options, &Default::default()).unwrap();
    assert_eq!((report.experts, report.prefix_tokens), (2, 4));
    assert_eq!(report.members, ["expert-00", "expert-01"]);
    assert!(report.unfinished.is_empty());
    assert_eq!(report.prefix_sweep.len(), 4);
    for v in [
        report.mixture_ppl,
        report.dense_ppl,
        report.random_ppl,
        report.oracle_ppl,
    ] {
        assert!(v.is_finite() && v > 1.0, "{report:?}");
    }
    assert!(report.oracle_ppl <= report.mixture_ppl + 1e-9);
    assert!((report.expert_load.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    std::fs::write(
        layout.eval_json(),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    assert!(report
        .dense_steps_ppl
        .is_some_and(|p| p.is_finite() && p > 1.0));
    let written = smalltalk_report::write_report(layout, None).unwrap();
    smalltalk_report::check_finite(&written).unwrap();
    assert!(layout.report_md().exists());
    // The training budget of every model, from its checkpoint: the two dense protocols see
    // the same tokens, one with E× the batch, the other with E× the steps.
    let names: Vec<&str> = written.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["expert-00", "expert-01", "dense", "dense-steps"]);
    let (dense, steps) = (&written.models[2], &written.models[3]);
    assert_eq!(
        (dense.steps * 2, dense.batch_size),
        (steps.steps, steps.batch_size * 2)
    );
    assert!(dense.tokens > 0 && dense.params == steps.params);
    let md = std::fs::read_to_string(layout.report_md()).unwrap();
    assert!(md.contains("## Training budget") && md.contains("against the E×-steps dense"));

    // Route: a text of each domain goes to the expert that holds that domain; the chosen
    // expert has the highest score.
    let mixture =
        Mixture::<B>::open(layout.root(), &Default::default(), &Default::default()).unwrap();
    for d in 0..2 {
        // Routed on the routers' training prefix (8 tokens in the tiny config).
        let r = mixture.route(&domain_text(d, 1000), Some(8)).unwrap();
        assert_eq!(r.index, expert_of_domain(&layout.partition(), d), "{r:?}");
        assert_eq!(r.member, format!("expert-{:02}", r.index));
        assert_eq!(r.scores.len(), 2);
        let other = 1 - r.index;
        assert!(r.scores[r.index].score > r.scores[other].score, "{r:?}");
        assert_eq!(r.prefix_tokens, 8);
        assert!(r.seconds > 0.0);
    }
    assert!(
        mixture.route("", Some(32)).is_err(),
        "an empty text cannot be routed"
    );

    // Generate through the mixture: a seeded generation is the chosen expert's own
    // generation (`smalltalk_lm::generate` on that expert's newest checkpoint), token for token.
    let prompt = "the cat sat on the mat";
    let options = GenerateOptions {
        prefix: Some(8),
        max_tokens: 6,
        sampling: SamplingOptions {
            temperature: 0.8,
            top_k: 50,
            top_p: 0.95,
            seed: 3,
        },
    };
    let mut streamed = String::new();
    let g = mixture
        .generate(prompt, &options, |piece| streamed.push_str(piece))
        .unwrap();
    assert_eq!(g.routing.index, expert_of_domain(&layout.partition(), 0));
    assert_eq!(streamed, g.completion);
    let expert =
        smalltalk_eval::latest_model::<B>(&layout.expert(g.routing.index), &Default::default())
            .unwrap();
    let ids = mixture.tokenizer().encode(prompt).unwrap();
    let eos = mixture.tokenizer().eos_id;
    let direct = generate(&expert, &ids, 6, &[eos], &options.sampling, |_| {}).unwrap();
    assert_eq!(
        g.tokens, direct,
        "the mixture used another expert or other settings"
    );
    assert!(!g.tokens.is_empty());
    // Greedy through the mixture (KV-cached) is token for token the recomputing reference
    // decode, the path `smalltalk generate` took before the cache.
    let greedy = GenerateOptions {
        max_tokens: 40,
        sampling: SamplingOptions {
            temperature: 0.0,
            ..options.sampling
        },
        ..options.clone()
    };
    let cached = mixture.generate(prompt, &greedy, |_| {}).unwrap();
    let reference =
        generate_reference(&expert, &ids, 40, &[eos], &greedy.sampling, |_| {}).unwrap();
    assert_eq!(cached.tokens, reference);
    let t = &g.timing;
    assert_eq!((t.prompt_tokens, t.new_tokens), (ids.len(), g.tokens.len()));
    assert!(t.routing_seconds > 0.0 && t.prefill_seconds > 0.0 && t.load_seconds > 0.0);

    // Bad sampling values are refused before anything loads.
    for (t, p) in [
        (-1.0, 0.9),
        (f64::NAN, 0.9),
        (0.8, -0.5),
        (0.8, 2.0),
        (0.8, 0.0),
    ] {
        let bad = GenerateOptions {
            sampling: SamplingOptions {
                temperature: t,
                top_p: p,
                ..options.sampling
            },
            ..options.clone()
        };
        assert!(
            bad.validate().is_err(),
            "temperature {t}, top-p {p} accepted"
        );
    }
    let greedy = GenerateOptions {
        sampling: SamplingOptions {
            temperature: 0.0,
            ..options.sampling
        },
        ..options.clone()
    };
    assert!(greedy.validate().is_ok());
    assert!(GenerateOptions {
        prefix: Some(0),
        ..options.clone()
    }
    .validate()
    .is_err());
}

#[test]
fn router_scores_at_several_prefix_lengths_come_from_one_pass() {
    use smalltalk_routing::PrefixScorer;
    let routers = RouterSet::<B>::load(&tiny_run().layout.routers(), &Default::default()).unwrap();
    let (row_len, lens) = (16, [2, 5, 16, 9]);
    let rows = crate::lm_util::random_tokens(5, 7 * row_len, 300);
    let by_length = routers
        .score_lengths(&rows, row_len, &lens, Some(3))
        .unwrap();
    for (&m, got) in lens.iter().zip(&by_length) {
        let prefixes: Vec<u32> = rows
            .chunks(row_len)
            .flat_map(|r| &r[..m])
            .copied()
            .collect();
        let want = routers.score(&prefixes, m, Some(3)).unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                "M = {m}: {g} vs {w}"
            );
        }
    }
}
