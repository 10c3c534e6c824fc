//! The report on a small hand-made run folder, and its errors.

use std::path::Path;

use crate::inputs::fixture;
use crate::*;

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn a_full_report_from_typed_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = fixture::write_run(tmp.path());
    let given = tmp.path().join("given.toml");
    std::fs::write(&given, "[routers]\nexperts = 2\n").unwrap();
    // The test split, with the E×-steps dense baseline too: the mixture loses to it.
    let test = EvalReport {
        dense_steps_ppl: Some(11.0),
        routing: Some("domain".into()),
        ..fixture::eval()
    };
    let text = serde_json::to_string(&test).unwrap();
    std::fs::write(layout.eval_test_json(), text).unwrap();
    // A branch-trained mixture and dense model next to the from-scratch ones.
    let branched = EvalReport {
        mixture_ppl: 6.0,
        dense_ppl: 8.0,
        ..fixture::eval()
    };
    std::fs::write(
        layout.eval_branched_json(),
        serde_json::to_string(&branched).unwrap(),
    )
    .unwrap();
    let report = write_report(&layout, Some(&given)).unwrap();
    assert_eq!(report.test.as_ref(), Some(&test));
    assert_eq!(report.branched.as_ref(), Some(&branched));
    assert_eq!(Report::load(&layout.report_json()).unwrap(), report);
    check_finite(&report).unwrap();
    assert_eq!(report.eval, fixture::eval());
    assert_eq!(report.backend.as_deref(), Some("flex"));
    assert_eq!(report.shard_sizes, vec![20, 20]);
    assert_eq!(report.router_em.len(), 3);
    assert_eq!(report.router_em[1], fixture::iteration(2));
    assert_eq!(report.stage_seconds[0].stage, "routers");

    let md = read(layout.report_md());
    for section in [
        "# SmallTalk pipeline report",
        "## Perplexity",
        "- against the paper's dense (E× batch): -11.1% (the mixture's perplexity is **lower**)",
        "## Test split: text from files the training never saw",
        "| mixture of 2 experts (by the rows' domain labels: an oracle, not a router) | 12.000 |",
        "## Branch-trained: experts and dense from the same pretrained weights",
        "| mixture (router argmax on 32 tokens) | 12.000 | 6.000 | -50.0% |",
        "| dense, E× the experts' batch (the paper's) | 13.500 | 8.000 | -40.7% |",
        "The branch-trained mixture against its dense model: -25.0%.",
        "| dense, E× the steps at the experts' batch (same total tokens) | 11.000 | |",
        "- against the E×-steps dense: +9.1% (the mixture's perplexity is **NOT lower**)",
        "## Per-expert segments",
        "Expert load (held-out): [0.500, 0.500]; routing purity: 0.800.",
        "## Routing prefix sweep",
        "| 256 | 11.250 | 10.250 | 14.000 | 0.750 |",
        "## Router EM",
        "| 2 | [4.000, 4.100] | 4.500 | [0.500, 0.500] | 0.250 | 0.700 | 1.5 |",
        "## Expert rows",
        "| expert | sequences | d0 | d1 |",
        "| 1 | 20 | 3 | 17 |",
        "## Dataset",
        "| validation | 5 | 10 | 170 |",
        "packing doc-start",
        "## Wall time per stage",
        "| total | 35.5 |",
        "## Configuration",
        "`given.toml`",
        "Evaluated on the flex backend.",
    ] {
        assert!(md.contains(section), "report.md lacks {section:?}:\n{md}");
    }
    assert!(md.contains(&report.headline()), "headline in report.md");
    assert!(report
        .headline()
        .contains("| mixture of 2 experts (router argmax on 32 tokens) | 12.000 | 11.500 |"));

    for (plot, labels) in [
        (
            "prefix_sweep.svg",
            &[
                "8",
                "32",
                "256",
                "12",
                "routing prefix (tokens, log scale)",
                "headline prefix (32 tokens)",
            ][..],
        ),
        (
            "em_nll.svg",
            &["1", "3", "4.5", "EM iteration", "NLL per token"][..],
        ),
        ("em_purity.svg", &["0.5", "1", "EM iteration", "purity"][..]),
        (
            "domain_mix.svg",
            &["expert 0", "expert 1", "50%", "d0", "d1"][..],
        ),
    ] {
        assert!(md.contains(&format!("]({plot})")), "report.md shows {plot}");
        let svg = read(layout.report_file(plot));
        assert!(svg.starts_with("<svg"), "{plot}");
        let texts = svg_texts(&svg);
        for label in labels {
            assert!(
                texts.iter().any(|t| t == label),
                "{plot} lacks the label {label:?}: {texts:?}"
            );
        }
    }

    let reloaded = Report::load(&layout.report_json()).unwrap();
    assert_eq!(reloaded, report);
    let json: serde_json::Value = serde_json::from_str(&read(layout.report_json())).unwrap();
    assert_eq!(json["mixture_ppl"], 12.0, "eval keys at the top level");
    assert_eq!(json["backend"], "flex");

    // Each stage's own table, once: data's copy of [routers] and dense's equal [experts]
    // are left out.
    let config = read(layout.config());
    let table: toml::Table = config.parse().unwrap();
    assert_eq!(table["routers"]["experts"].as_integer(), Some(2));
    assert_eq!(table["data"]["split"]["validation"].as_float(), Some(0.1));
    assert_eq!(
        table["experts"]["train"]["total_steps"].as_integer(),
        Some(4)
    );
    assert!(config.contains("experts/dense/config.toml: the same [experts] table"));
    assert!(md.contains(config.trim_end()), "config.toml in the report");
}

/// The text of every `<text>` element of an SVG document.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = &t[t.find('>')? + 1..];
            Some(body[..body.find("</text>")?].trim().to_string())
        })
        .collect()
}

#[test]
fn a_nan_anywhere_fails_the_check_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = fixture::write_run(tmp.path());
    let report = write_report(&layout, None).unwrap();

    let mut bad = report.clone();
    bad.eval.prefix_sweep[1].mixture_ppl = f64::NAN;
    let err = check_finite(&bad).unwrap_err().to_string();
    assert!(err.contains("prefix_sweep[1].mixture_ppl"), "{err}");

    let mut bad = report.clone();
    bad.eval.dense_ppl = f64::INFINITY;
    let err = check_finite(&bad).unwrap_err().to_string();
    assert!(err.contains("`dense_ppl`") && err.contains("inf"), "{err}");

    let mut bad = report.clone();
    bad.router_em[2].purity = Some(f64::NAN); // would read back as None from JSON
    let err = check_finite(&bad).unwrap_err().to_string();
    assert!(err.contains("router_em[2].purity"), "{err}");

    // A NaN written to report.json (as null) does not read back as a Report.
    let mut json: serde_json::Value = serde_json::to_value(&report).unwrap();
    json["oracle_ppl"] = serde_json::Value::Null;
    std::fs::write(layout.report_json(), json.to_string()).unwrap();
    let err = Report::load(&layout.report_json()).unwrap_err().to_string();
    assert!(
        err.contains("report.json") && err.contains("`oracle_ppl`: invalid type: null"),
        "{err}"
    );

    // So does one written to eval.json: the report refuses it, naming the key.
    let mut eval = serde_json::to_value(fixture::eval()).unwrap();
    eval["prefix_sweep"][2]["dense_ppl_excl_prefix"] = serde_json::Value::Null;
    std::fs::write(
        layout.eval_json(),
        serde_json::to_string_pretty(&eval).unwrap(),
    )
    .unwrap();
    let err = write_report(&layout, None).unwrap_err().to_string();
    let key = "`prefix_sweep[2].dense_ppl_excl_prefix`: invalid type: null, expected f64";
    assert!(
        err.contains("eval.json: line ") && err.contains(key),
        "{err}"
    );
}

#[test]
fn an_empty_eval_json_fails_naming_the_file_and_a_missing_key() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = fixture::write_run(tmp.path());
    std::fs::write(layout.eval_json(), "{}").unwrap();
    let err = write_report(&layout, None).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("eval.json") && text.contains("missing field"),
        "{text}"
    );
    assert!(matches!(err, ReportError::Json { line: 1, .. }), "{err:?}");
    assert!(!layout.report_md().exists(), "no report from a bad input");
}

#[test]
fn a_garbage_metrics_line_fails_naming_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = fixture::write_run(tmp.path());
    let mut text = read(layout.em_metrics());
    text.push_str("{\"iteration\": 4, oops\n");
    std::fs::write(layout.em_metrics(), text).unwrap();
    let err = write_report(&layout, None).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("metrics.jsonl") && text.contains("line 4"),
        "{text}"
    );

    std::fs::write(layout.em_metrics(), "{\"iteration\": 1}\n").unwrap();
    let text = write_report(&layout, None).unwrap_err().to_string();
    assert!(
        text.contains("line 1") && text.contains("missing field"),
        "{text}"
    );
}

#[test]
fn optional_inputs_may_be_absent_but_not_malformed() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = fixture::write_run(tmp.path());
    std::fs::remove_file(layout.stage_seconds()).unwrap();
    std::fs::remove_file(smalltalk_stage::layout::stage_config(&layout.dense())).unwrap();
    let report = write_report(&layout, None).unwrap();
    assert!(report.stage_seconds.is_empty());

    std::fs::write(layout.stage_seconds(), "[{\"stage\": \"x\"}]").unwrap();
    let text = write_report(&layout, None).unwrap_err().to_string();
    assert!(
        text.contains("stage_seconds.json") && text.contains("`seconds`"),
        "{text}"
    );

    std::fs::remove_file(layout.stage_seconds()).unwrap();
    let routers = smalltalk_stage::layout::stage_config(&layout.routers());
    std::fs::write(&routers, "[experts]\n").unwrap();
    let text = write_report(&layout, None).unwrap_err().to_string();
    assert!(
        text.contains("routers/config.toml") && text.contains("[routers]"),
        "{text}"
    );
}

#[test]
fn routers_of_a_baseline_method_have_no_em_record_but_em_routers_must() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = fixture::write_run(tmp.path());
    std::fs::remove_file(layout.em_metrics()).unwrap();
    // EM routers (the fixture's eval.json names no method: EM) without their record: refused.
    let text = write_report(&layout, None).unwrap_err().to_string();
    assert!(text.contains("routers/em/metrics.jsonl"), "{text}");
    // Domain-label routing has no EM: the report says so and labels the mixture an oracle.
    let mut eval = serde_json::to_value(fixture::eval()).unwrap();
    eval["routing"] = "domain".into();
    std::fs::write(layout.eval_json(), eval.to_string()).unwrap();
    let report = write_report(&layout, None).unwrap();
    assert!(report.router_em.is_empty());
    let md = read(layout.report_md());
    for line in [
        "None: this run routes by `domain` (`[routers] method`), not by router LMs trained by EM.",
        "| mixture of 2 experts (by the rows' domain labels: an oracle, not a router) | 12.000 |",
    ] {
        assert!(md.contains(line), "report.md lacks {line:?}:\n{md}");
    }
    assert!(!layout.report_file("em_nll.svg").exists());
}

#[test]
fn sparse_inputs_make_a_report_without_the_plots_they_lack() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = fixture::write_run(tmp.path());
    let write = |path: &Path, value: &dyn erased::Json| std::fs::write(path, value.json()).unwrap();
    // One expert, no domain labels, one EM iteration, a short sweep, a mixture that loses.
    let mut eval = fixture::eval();
    eval.mixture_ppl = 20.0;
    eval.routing_purity = None;
    eval.prefix_sweep.truncate(1);
    eval.prefix_sweep[0].prefix_tokens = 4;
    eval.prefix_sweep.push(eval.prefix_sweep[0].clone());
    eval.prefix_sweep[1].prefix_tokens = 2;
    eval.prefix_tokens = 4;
    write(&layout.eval_json(), &eval);
    let mut partition: inputs::PartitionManifest =
        inputs::read_json(&layout.partition_manifest()).unwrap();
    partition.experts = 1;
    partition.expert_rows.truncate(1);
    (partition.domains, partition.domain_mix, partition.purity) = (None, None, None);
    write(&layout.partition_manifest(), &partition);
    let mut first = fixture::iteration(1);
    first.purity = None;
    std::fs::write(layout.em_metrics(), serde_json::to_string(&first).unwrap()).unwrap();
    for stale in ["em_purity.svg", "domain_mix.svg"] {
        assert!(!layout.report_file(stale).exists());
    }

    let report = write_report(&layout, None).unwrap();
    check_finite(&report).unwrap();
    let md = read(layout.report_md());
    assert!(md.contains("perplexity is **NOT lower**"), "{md}");
    assert!(md.contains("routing purity: n/a") && md.contains("| expert | sequences |\n"));
    let sweep = svg_texts(&read(layout.report_file("prefix_sweep.svg")));
    for label in ["2", "4", "8", "256", "headline prefix (4 tokens)"] {
        assert!(sweep.iter().any(|t| t == label), "{label}: {sweep:?}");
    }
    assert!(svg_texts(&read(layout.report_file("em_nll.svg"))).contains(&"1".to_string()));
    for absent in ["em_purity.svg", "domain_mix.svg"] {
        assert!(
            !layout.report_file(absent).exists(),
            "{absent} without data"
        );
        assert!(!md.contains(absent), "report.md shows {absent}");
    }
}

/// Inputs of different types written as JSON.
mod erased {
    pub trait Json {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_string_pretty(self).unwrap()
        }
    }
}

#[test]
fn one_expert_gets_one_bar() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = fixture::write_run(tmp.path());
    let mut partition: inputs::PartitionManifest =
        inputs::read_json(&layout.partition_manifest()).unwrap();
    partition.experts = 1;
    partition.expert_rows.truncate(1);
    partition.domain_mix = Some(vec![vec![15, 5]]);
    std::fs::write(
        layout.partition_manifest(),
        serde_json::to_string(&partition).unwrap(),
    )
    .unwrap();
    write_report(&layout, None).unwrap();
    let texts = svg_texts(&read(layout.report_file("domain_mix.svg")));
    assert!(texts.contains(&"expert 0".to_string()), "{texts:?}");
    assert!(!texts.contains(&"expert 1".to_string()), "{texts:?}");
}
