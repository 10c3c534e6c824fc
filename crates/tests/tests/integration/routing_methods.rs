//! The routing methods as peers (`[routers] method`): the paper's EM routers and the baselines
//! `tfidf` (c-BTM), `random` and `domain` each make a routers folder that the partition, eval
//! and route stages use unchanged.

use smalltalk_data::Split;
use smalltalk_eval::{eval_run, routing_quality, EvalData, EvalOptions, TextRouter};
use smalltalk_mixture::MixtureManifest;
use smalltalk_router::{load_scorer, train_routers, RouterMethod, RoutersManifest};
use smalltalk_routing::{partition_stage, PartitionManifest};
use smalltalk_stage::{NoProgress, RunLayout};
use smalltalk_tests::{build_tiny_dataset, domain_text, tiny_settings};

use crate::lm_util::{AB, B};
use crate::pipeline_api::tiny_run;

#[test]
fn every_method_partitions_every_row_once_and_evaluates() {
    let run = tiny_run();
    let tmp = tempfile::tempdir().unwrap();
    let s = tiny_settings();
    for method in [
        RouterMethod::Random,
        RouterMethod::Domain,
        RouterMethod::Tfidf,
    ] {
        let name = method.name();
        let routers = tmp.path().join(format!("routers-{name}"));
        let mut cfg = s.routers.clone();
        cfg.method = method;
        train_routers::<AB>(
            &run.layout.data(),
            &routers,
            &cfg,
            &Default::default(),
            &mut NoProgress,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let scorer = load_scorer::<B>(&routers, &Default::default()).unwrap();
        let part = tmp.path().join(format!("partition-{name}"));
        let out = partition_stage(
            scorer.as_ref(),
            &run.layout.data(),
            &part,
            &s.partition,
            &mut NoProgress,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let m = PartitionManifest::load(&part).unwrap();
        assert_eq!(out.manifest, m);
        let mut seen = vec![0u32; m.rows];
        for e in 0..2 {
            for r in m.read_rows(&part, e).unwrap() {
                seen[r] += 1;
            }
        }
        assert!(
            seen.iter().all(|&c| c == 1),
            "{name}: every row exactly once"
        );
        let sizes: Vec<usize> = m.expert_rows.iter().map(|r| r.sequences).collect();
        match method {
            // Two domains, two experts: each domain is one expert's part; purity is 1.
            RouterMethod::Domain => assert_eq!(m.purity, Some(1.0), "{name}: {m:?}"),
            _ => assert!(sizes[0].abs_diff(sizes[1]) <= 1, "{name}: sizes {sizes:?}"),
        }
        if method == RouterMethod::Tfidf {
            // TF-IDF separates prose from code as the routers do (up to the equal-size cap).
            assert!(m.purity.unwrap() > 0.8, "{name}: {m:?}");
        }
        // Eval routes held-out rows with the same method (against the run's experts).
        let options = EvalOptions {
            prefixes: vec![8],
            seed: 0,
            allow_unfinished: false,
        };
        // A mixture routed by this method over the run's experts: the run's manifest moved
        // beside these routers, its routing replaced (members carry no router LM).
        let (mut mixture, _) = MixtureManifest::load(run.layout.root()).unwrap();
        mixture.rebase(run.layout.root(), tmp.path()).unwrap();
        mixture.routing.method = name.into();
        mixture.routing.routers = format!("routers-{name}");
        mixture.routing.fingerprint = RoutersManifest::load(&routers).unwrap().fingerprint;
        for m in &mut mixture.members {
            m.router = None;
        }
        let manifest = tmp.path().join(format!("mixture-{name}.json"));
        mixture.save(&manifest).unwrap();
        let data = EvalData::Split {
            dataset: &run.layout.data(),
            split: Split::Validation,
        };
        let report = eval_run::<B>(&manifest, &data, &options, &Default::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(report.mixture_ppl.is_finite(), "{name}");
        assert_eq!(
            report.routing.as_deref(),
            Some(name),
            "the report names its routing"
        );
        if method == RouterMethod::Domain {
            assert_eq!(report.routing_purity, Some(1.0));
        }
        // Routing alone (no experts) sends the rows where the full evaluation does.
        let quality = routing_quality::<B>(&routers, &data, &[4, 8], &Default::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(quality.sequences, report.sequences, "{name}");
        let at8 = &quality.prefixes[1];
        assert_eq!(at8.prefix_tokens, 8);
        assert_eq!(at8.routing_purity, report.routing_purity, "{name}");
        assert_eq!(at8.expert_load, report.expert_load, "{name}");
        assert!((quality.prefixes[0].expert_load.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        // A labelled text file (`smalltalk eval --data FILE`) gets a routing purity too; its
        // labels are matched by name (the file lists d1 first, the corpus d0).
        let file = tmp.path().join(format!("held-{name}.jsonl"));
        let lines: String = (0..12)
            .map(|i| {
                let d = 1 - i % 2;
                format!(
                    "{{\"text\": {:?}, \"domain\": \"d{d}\"}}\n",
                    domain_text(d, 100 + i)
                )
            })
            .collect();
        std::fs::write(&file, lines).unwrap();
        let on_file = eval_run::<B>(
            &manifest,
            &EvalData::File(&file),
            &options,
            &Default::default(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(on_file.sequences, 12, "{name}");
        let purity = on_file.routing_purity.expect("labelled file: purity");
        if method == RouterMethod::Domain {
            assert_eq!(purity, 1.0, "{name}: labels matched by name");
        }
        // Route: text methods route a text; the domain method needs labels and says so.
        let router = TextRouter::load::<B>(&routers, &Default::default()).unwrap();
        let routed = router.route(&domain_text(1, 7), 8);
        match method {
            RouterMethod::Domain => {
                let err = routed.unwrap_err().to_string();
                assert!(err.contains("domain label"), "{err}");
            }
            _ => assert!(routed.unwrap().expert < 2),
        }
    }
}

#[test]
fn the_domain_method_refuses_a_corpus_without_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("plain.jsonl");
    let lines: String = (0..40)
        .map(|i| format!("{{\"text\": {:?}}}\n", domain_text(i % 2, i)))
        .collect();
    std::fs::write(&corpus, lines).unwrap();
    let layout = RunLayout::new(tmp.path());
    build_tiny_dataset(&corpus, &layout.data());
    let mut cfg = tiny_settings().routers;
    cfg.method = RouterMethod::Domain;
    let err = train_routers::<AB>(
        &layout.data(),
        &layout.routers(),
        &cfg,
        &Default::default(),
        &mut NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("needs domain labels"), "{err}");
    assert!(!layout.routers().exists(), "a refused method left a folder");
}
