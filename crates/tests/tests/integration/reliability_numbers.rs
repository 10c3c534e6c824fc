//! Numbers that must not be produced (issue 32): an empty document of a held-out file is
//! skipped and counted, never averaged in as NaN; prefixes longer than the rows follow one
//! stated rule (the headline `--prefix` is refused, a `--prefix-sweep` entry is left out and
//! named in the report).

use smalltalk_data::Split;
use smalltalk_eval::{eval_run, routing_quality, EvalData, EvalOptions};

use crate::lm_util::B;
use crate::pipeline_api::tiny_run;

fn options(prefixes: &[usize]) -> EvalOptions {
    EvalOptions {
        prefixes: prefixes.to_vec(),
        seed: 0,
        allow_unfinished: false,
    }
}

/// Every number of a serialised report is finite (no `null` from a NaN).
fn assert_all_finite(value: &serde_json::Value, at: &str) {
    match value {
        serde_json::Value::Null => panic!("{at} is null"),
        serde_json::Value::Number(n) => {
            assert!(n.as_f64().is_some_and(f64::is_finite), "{at} = {n}")
        }
        serde_json::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                assert_all_finite(v, &format!("{at}[{i}]"));
            }
        }
        serde_json::Value::Object(o) => {
            for (k, v) in o {
                // Optional fields the run does not have are absent, not null.
                assert_all_finite(v, &format!("{at}.{k}"));
            }
        }
        _ => {}
    }
}

#[test]
fn empty_documents_are_skipped_and_counted_never_averaged_in() {
    let run = tiny_run();
    let tmp = tempfile::tempdir().unwrap();
    let docs = [
        r#"{"text": "the cat sat on the mat and the dog sat on the log", "domain": "prose"}"#,
        r#"{"text": "", "domain": "prose"}"#,
        r#"{"text": "fn main() { let x = 1; println!(\"{x}\"); }", "domain": "code"}"#,
        r#"{"text": "", "domain": "code"}"#,
    ];
    let with_empty = tmp.path().join("with-empty.jsonl");
    std::fs::write(&with_empty, docs.join("\n")).unwrap();
    let without = tmp.path().join("without.jsonl");
    std::fs::write(&without, [docs[0], docs[2]].join("\n")).unwrap();

    let eval = |file: &std::path::Path| {
        eval_run::<B>(
            run.layout.root(),
            &EvalData::File(file),
            &options(&[4, 2, 8]),
            &Default::default(),
        )
        .map_err(|e| e.to_string())
    };
    let report = eval(&with_empty).unwrap();
    let clean = eval(&without).unwrap();
    assert_eq!(report.skipped_documents, 2, "{report:?}");
    assert_eq!(clean.skipped_documents, 0);
    assert_eq!(report.sequences, 2);
    // The empty documents change nothing: the same rows, the same numbers.
    assert_eq!(
        (report.mixture_ppl, report.dense_ppl, report.oracle_ppl),
        (clean.mixture_ppl, clean.dense_ppl, clean.oracle_ppl)
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["skipped_documents"], 2);
    assert_all_finite(&json, "eval.json");
    let summary = report.describe();
    assert!(
        summary.contains("2 documents skipped (empty: no token to score)"),
        "{summary}"
    );
    assert!(!summary.contains("NaN"), "{summary}");

    // Only empty documents: refused, saying why.
    let only_empty = tmp.path().join("only-empty.jsonl");
    std::fs::write(&only_empty, [docs[1], docs[3]].join("\n")).unwrap();
    let err = eval(&only_empty).unwrap_err();
    assert!(
        err.contains("no document to evaluate") && err.contains("2 empty documents skipped"),
        "{err}"
    );
}

#[test]
fn prefixes_longer_than_the_rows_follow_one_stated_rule() {
    let run = tiny_run();
    let data = run.layout.data();
    let data = EvalData::Split {
        dataset: &data,
        split: Split::Validation,
    };
    let eval = |prefixes: &[usize]| {
        eval_run::<B>(
            run.layout.root(),
            &data,
            &options(prefixes),
            &Default::default(),
        )
        .map_err(|e| e.to_string())
    };
    // The tiny rows hold 33 tokens. A sweep entry longer than that is left out and named.
    let report = eval(&[4, 8, 99, 33, 40]).unwrap();
    let swept: Vec<usize> = report
        .prefix_sweep
        .iter()
        .map(|p| p.prefix_tokens)
        .collect();
    assert_eq!(swept, [4, 8, 33]);
    assert_eq!(report.prefix_sweep_left_out, [99, 40]);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["prefix_sweep_left_out"], serde_json::json!([99, 40]));
    let summary = report.describe();
    assert!(
        summary.contains("prefix sweep: left out 99, 40 (longer than the rows)"),
        "{summary}"
    );
    // A sweep that fits notes nothing.
    let fits = eval(&[4, 8]).unwrap();
    assert!(fits.prefix_sweep_left_out.is_empty());
    assert!(serde_json::to_value(&fits).unwrap()["prefix_sweep_left_out"].is_null());
    // The headline prefix is the result: longer than the rows, it is refused.
    let err = eval(&[99, 8]).unwrap_err();
    assert!(err.contains("routing prefix 99"), "{err}");
    // The routing alone follows the same rule.
    let routers = run.layout.routers();
    let quality = |prefixes: &[usize]| {
        routing_quality::<B>(&routers, &data, prefixes, &Default::default())
            .map_err(|e| e.to_string())
    };
    let q = quality(&[4, 99, 8]).unwrap();
    let at: Vec<usize> = q.prefixes.iter().map(|p| p.prefix_tokens).collect();
    assert_eq!(
        (at, q.prefix_sweep_left_out.clone()),
        (vec![4, 8], vec![99])
    );
    assert!(
        q.describe()
            .contains("prefix sweep: left out 99 (longer than the rows)"),
        "{}",
        q.describe()
    );
    let err = quality(&[99, 8]).unwrap_err();
    assert!(err.contains("routing prefix 99"), "{err}");
}
