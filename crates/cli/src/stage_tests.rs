//! End to end through the command line: `data build`, `routers train`, `partition` and `route`
//! on a tiny two-domain corpus, parsed from argv exactly as a user types them.

use std::path::Path;

use clap::Parser;
use smalltalk_routing::PartitionManifest;
use smalltalk_tests::{write_two_domain_corpus, TINY_CONFIG};

use crate::{run, Cli};

fn smalltalk(args: &[&str]) -> anyhow::Result<()> {
    let mut argv = vec!["smalltalk", "--json"];
    argv.extend_from_slice(args);
    run(Cli::try_parse_from(argv)?)
}

/// An OS error is shown once, not once per error of the chain that holds it.
#[test]
fn error_texts_show_the_os_error_once() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.toml");
    let missing = missing.to_str().unwrap();
    for args in [
        vec![
            "launch",
            "k8s",
            "r",
            "--config",
            missing,
            "--corpus",
            "c.jsonl",
            "--experts",
            "2",
        ],
        vec!["status", missing, "--experts", "1"],
        vec!["mixture", "show", missing],
    ] {
        let Err(err) = smalltalk(&args) else { continue };
        let text = crate::error_text(&err);
        let os = "(os error";
        assert!(text.matches(os).count() <= 1, "{args:?}: {text}");
        if args[0] == "launch" {
            assert_eq!(text.matches(os).count(), 1, "{text}");
            assert!(text.contains("missing.toml"), "{text}");
            // `{:#}` alone would repeat it: the chain holds the I/O error twice.
            assert!(format!("{err:#}").matches(os).count() >= 2, "{err:#}");
        }
    }
}

#[test]
fn data_routers_partition_and_route_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let corpus = write_two_domain_corpus(tmp.path());
    let corpus = corpus.to_str().unwrap();
    std::fs::write(p("config.toml"), TINY_CONFIG).unwrap();
    let (cfg, data, routers, part) = (p("config.toml"), p("data"), p("routers"), p("partition"));

    smalltalk(&[
        "data", "build", "--corpus", corpus, "--config", &cfg, "--out", &data,
    ])
    .unwrap();
    let train = [
        "routers", "train", "--data", &data, "--config", &cfg, "--out", &routers,
    ];
    smalltalk(&train).unwrap();
    for file in [
        "routers.json",
        "config.toml",
        "tokenizer.json",
        "em/state.json",
        "em/metrics.jsonl",
    ] {
        assert!(
            Path::new(&routers).join(file).exists(),
            "routers/{file} missing"
        );
    }
    let metrics = std::fs::read_to_string(Path::new(&routers).join("em/metrics.jsonl")).unwrap();
    assert_eq!(
        metrics.lines().count(),
        2,
        "one metrics line per EM iteration"
    );
    smalltalk(&train).unwrap(); // finished: skipped

    let partition = [
        "partition",
        "--data",
        &data,
        "--routers",
        &routers,
        "--config",
        &cfg,
        "--out",
        &part,
    ];
    smalltalk(&partition).unwrap();
    let m = PartitionManifest::load(Path::new(&part)).unwrap();
    let sizes: Vec<usize> = m.expert_rows.iter().map(|s| s.sequences).collect();
    assert_eq!(sizes.iter().sum::<usize>(), m.rows);
    assert!(sizes[0].abs_diff(sizes[1]) <= 1, "unequal parts {sizes:?}");
    assert_eq!(
        m.domains.as_deref(),
        Some(&["d0".to_string(), "d1".to_string()][..])
    );
    smalltalk(&partition).unwrap(); // finished: skipped

    let experts = p("experts");
    for e in ["0", "1"] {
        let expert = [
            "expert",
            "train",
            "--data",
            &data,
            "--partition",
            &part,
            "--config",
            &cfg,
            "--out",
            &experts,
            "--expert",
            e,
        ];
        smalltalk(&expert).unwrap();
        let ckpt = Path::new(&experts).join(format!("expert-0{e}/checkpoints/step-00000004"));
        assert!(ckpt.exists(), "{} missing", ckpt.display());
        smalltalk(&expert).unwrap(); // finished: skipped
    }
    let dense = [
        "dense",
        "train",
        "--data",
        &data,
        "--config",
        &cfg,
        "--out",
        &experts,
        "--experts",
        "2",
    ];
    smalltalk(&dense).unwrap();
    assert!(Path::new(&experts)
        .join("dense/checkpoints/step-00000004")
        .exists());
    // The mixture's manifest: before it is written, readers name the command that writes it.
    let run = tmp.path().to_str().unwrap();
    let route = [
        "route",
        "--mixture",
        run,
        "--text",
        "the cat sat on the mat",
    ];
    let err = format!("{:#}", smalltalk(&route).unwrap_err());
    assert!(err.contains("smalltalk mixture write --run"), "{err}");
    smalltalk(&[
        "mixture",
        "write",
        "--routers",
        &routers,
        "--partition",
        &part,
        "--experts",
        &experts,
        "--out",
        &p("mixture.json"),
    ])
    .unwrap();
    smalltalk(&["mixture", "show", run]).unwrap();
    smalltalk(&["mixture", "check", &p("mixture.json")]).unwrap();
    smalltalk(&route).unwrap();
    let mixture = p("mixture.json");
    let eval = [
        "eval",
        "--data",
        &data,
        "--mixture",
        &mixture,
        "--prefix",
        "4",
        "--prefix-sweep",
        "2,8,16",
    ];
    let eval_json = p("eval.json");
    let mut to_file = eval.to_vec();
    to_file.extend(["--out", &eval_json]);
    // Temporaries a killed earlier `eval --out` / `report` left (their process is gone): a
    // successful rerun removes them.
    let dead = u32::MAX - 1;
    for name in [
        "eval.json",
        "report.md",
        "report.json",
        "config.toml",
        "prefix_sweep.svg",
    ] {
        std::fs::write(p(&format!("{name}.tmp-{dead}-0")), b"partial").unwrap();
    }
    smalltalk(&to_file).unwrap();
    smalltalk(&["report", "--run", run, "--config", &cfg]).unwrap();
    let left: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(left.is_empty(), "temporaries left: {left:?}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("report.json")).unwrap()).unwrap();
    for key in [
        "mixture_ppl",
        "mixture_ppl_excl_prefix",
        "dense_ppl",
        "dense_ppl_excl_prefix",
        "random_ppl",
        "oracle_ppl",
        "routing_purity",
    ] {
        let v = report[key].as_f64().unwrap_or(f64::NAN);
        assert!(
            v.is_finite() && v > 0.0,
            "report.json {key} = {}",
            report[key]
        );
    }
    assert_all_numbers_finite(Path::new(&p("report.json")));
    assert!(
        Path::new(&p("config.toml")).exists(),
        "effective config beside the report"
    );
    assert_eq!(report["experts"], 2);
    assert_eq!(report["prefix_tokens"], 4);
    let load: Vec<f64> = serde_json::from_value(report["expert_load"].clone()).unwrap();
    assert!(
        (load.iter().sum::<f64>() - 1.0).abs() < 1e-9,
        "load {load:?}"
    );
    assert_eq!(report["prefix_sweep"].as_array().unwrap().len(), 4);
    let md = std::fs::read_to_string(p("report.md")).unwrap();
    for section in [
        "## Perplexity",
        "## Router EM",
        "## Expert rows",
        "## Routing prefix sweep",
        "## Dataset",
    ] {
        assert!(md.contains(section), "report.md lacks {section}");
    }
    for plot in [
        "em_nll.svg",
        "em_purity.svg",
        "domain_mix.svg",
        "prefix_sweep.svg",
    ] {
        assert!(
            std::fs::read_to_string(p(plot))
                .unwrap()
                .starts_with("<svg"),
            "{plot}"
        );
    }
    let held_out = tmp.path().join("held-out.jsonl");
    std::fs::write(
        &held_out,
        "{\"text\": \"the cat sat on the mat\"}\n{\"text\": \"fn main() {}\"}\n",
    )
    .unwrap();
    let mut on_file = eval.to_vec();
    on_file[2] = held_out.to_str().unwrap(); // --data FILE: a held-out file instead of a dataset
    smalltalk(&on_file).unwrap();
    // A headline prefix longer than the rows is an error; a sweep prefix is left out.
    let mut too_long = eval.to_vec();
    too_long[6] = "99";
    let err = smalltalk(&too_long).unwrap_err();
    assert!(format!("{err:#}").contains("routing prefix 99"), "{err:#}");
    let mut sweep = eval.to_vec();
    sweep[8] = "2,99";
    let swept = p("swept.json");
    sweep.extend(["--out", &swept]);
    smalltalk(&sweep).unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&swept).unwrap()).unwrap();
    let prefixes: Vec<u64> = report["prefix_sweep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["prefix_tokens"].as_u64().unwrap())
        .collect();
    assert_eq!(prefixes, [4, 2], "{report}");

    let generate = [
        "generate",
        "--mixture",
        run,
        "--prompt",
        "the cat",
        "--max-tokens",
        "5",
        "--seed",
        "3",
    ];
    smalltalk(&generate).unwrap();
    // Values are checked at the edge, naming the option.
    for (flag, value, says) in [
        ("--temperature", "-1", "temperature"),
        ("--temperature", "NaN", "temperature"),
        ("--top-p", "-0.5", "top-p"),
        ("--top-p", "2", "top-p"),
        ("--prefix", "0", "prefix"),
        ("--max-tokens", "0", "max-tokens"),
        ("--max-tokens", "2000000", "max-tokens"),
    ] {
        let mut bad = generate.to_vec();
        bad.extend([flag, value]);
        let err = format!("{:#}", smalltalk(&bad).unwrap_err());
        assert!(err.contains(says), "{flag} {value}: {err}");
    }
    // An empty --text, or one too short to route, exits non-zero saying why.
    for (text, says) in [("", "--text is empty"), ("a", "--text cannot be routed")] {
        let err = format!(
            "{:#}",
            smalltalk(&["route", "--mixture", run, "--text", text]).unwrap_err()
        );
        assert!(err.contains(says), "{text:?}: {err}");
    }
    let empty = p("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let err = smalltalk(&["route", "--mixture", run, "--file", &empty]).unwrap_err();
    assert!(
        format!("{err:#}").contains("empty corpus: no document with text in")
            && format!("{err:#}").contains("empty.jsonl"),
        "{err:#}"
    );

    let no_index = [
        "expert",
        "train",
        "--data",
        &data,
        "--partition",
        &part,
        "--out",
        &experts,
    ];
    let err = smalltalk(&no_index).unwrap_err();
    assert!(
        format!("{err:#}").contains("SLURM_ARRAY_TASK_ID"),
        "{err:#}"
    );

    // Bad input names what is missing.
    let err = smalltalk(&[
        "partition",
        "--data",
        &data,
        "--routers",
        &p("nowhere"),
        "--out",
        &p("x"),
    ])
    .unwrap_err();
    assert!(format!("{err:#}").contains("routers train"), "{err:#}");
    let err = smalltalk(&[
        "routers",
        "train",
        "--data",
        &data,
        "--out",
        &p("r2"),
        "--prefix",
        "99",
    ])
    .unwrap_err();
    assert!(format!("{err:#}").contains("prefix_len"), "{err:#}");
}

/// `report.json` reads back as the typed report (a NaN or an infinity, written as `null`,
/// does not) and holds no NaN or infinity anywhere.
fn assert_all_numbers_finite(path: &Path) {
    let report = smalltalk_report::Report::load(path).unwrap_or_else(|e| panic!("{e}"));
    smalltalk_report::check_finite(&report).unwrap_or_else(|e| panic!("{e}"));
}
