//! Tests of the throughput benchmark on the CPU backend.

use smalltalk_stage::NoProgress;

use super::*;

fn tiny() -> BenchOptions {
    BenchOptions {
        preset: "tiny".into(),
        batch: 2,
        seq: 8,
        steps: 1,
        score_batch: 4,
        score_prefix: 4,
        score_reps: 1,
        ..BenchOptions::default()
    }
}

#[test]
fn tiny_bench_reports_both_cases() {
    let device = Default::default();
    let results = bench_cases::<crate::CpuTrainBackend>(&tiny(), &device, &mut NoProgress).unwrap();
    assert_eq!(results.len(), 2);
    let train = serde_json::to_value(&results[0]).unwrap();
    assert_eq!(train["case"], "train");
    assert!(train["tokens_per_s"].as_f64().unwrap() > 0.0);
    let score = serde_json::to_value(&results[1]).unwrap();
    assert_eq!(score["case"], "score");
    assert!(score["sequences_per_s"].as_f64().unwrap() > 0.0);
    assert!(results[0]
        .describe("flex")
        .starts_with("train tiny on flex: batch 2 x seq 8"));
    assert!(results[1]
        .describe("flex")
        .starts_with("score tiny on flex: 4 rows x prefix 4"));
}

#[test]
fn results_carry_the_keys_of_lm_bench_json() {
    let mut opts = tiny();
    opts.cases = vec![BenchCase::Score];
    opts.precision = Precision::Full;
    let device = Default::default();
    let results = bench_cases::<crate::CpuTrainBackend>(&opts, &device, &mut NoProgress).unwrap();
    let v = serde_json::to_value(&results[0]).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    let expected = [
        "batch",
        "call_seconds",
        "case",
        "d_ff",
        "d_model",
        "device_reserved_bytes",
        "kernel",
        "n_heads",
        "n_layers",
        "params",
        "peak_rss_bytes",
        "precision",
        "prefix_len",
        "preset",
        "reps",
        "seq",
        "sequences_per_s",
        "sequences_per_s_best",
        "sequences_per_s_median",
        "vocab",
        "warmup_seconds",
    ];
    assert_eq!(keys, expected);
    assert_eq!(
        v["device_reserved_bytes"],
        serde_json::Value::Null,
        "flex has no device pools"
    );
    assert_eq!(
        (&v["precision"], &v["kernel"]),
        (&"full".into(), &"auto".into())
    );
    assert_eq!(v["call_seconds"].as_array().unwrap().len(), 1);
}

#[test]
fn bad_sizes_and_presets_are_refused() {
    let device = Default::default();
    let mut opts = tiny();
    opts.steps = 0;
    let err = bench_cases::<crate::CpuTrainBackend>(&opts, &device, &mut NoProgress).unwrap_err();
    assert!(err.to_string().contains("--steps"), "{err}");
    opts = tiny();
    opts.cases = vec![BenchCase::Score];
    opts.score_prefix = 1;
    let err = bench_cases::<crate::CpuTrainBackend>(&opts, &device, &mut NoProgress).unwrap_err();
    assert!(err.to_string().contains("--score-prefix"), "{err}");
    opts.preset = "no-such-preset".into();
    assert!(matches!(
        opts.model_config(),
        Err(LmError::UnknownPreset { .. })
    ));
}

#[test]
fn the_model_grows_to_fit_the_lengths() {
    let opts = BenchOptions {
        vocab: Some(300),
        seq: 4096,
        ..tiny()
    };
    let cfg = opts.model_config().unwrap();
    assert_eq!((cfg.vocab_size, cfg.max_seq_len), (300, 4096));
}

#[test]
fn matmul_case_times_the_model_shapes() {
    let mut opts = tiny();
    opts.cases = vec![BenchCase::Matmul];
    opts.steps = 2;
    let cfg = opts.model_config().unwrap();
    let shapes = matmul_shapes(&cfg, 16);
    // tiny: d 32, d_ff 64, vocab 256; 2 x 8 = 16 rows.
    let dims: Vec<(&str, usize, usize, usize)> =
        shapes.iter().map(|s| (s.name, s.m, s.k, s.n)).collect();
    assert_eq!(
        dims,
        [
            ("proj", 16, 32, 32),
            ("mlp-up", 16, 32, 64),
            ("mlp-down", 16, 64, 32),
            ("head", 16, 32, 256),
            ("square", 1024, 1024, 1024),
        ]
    );
    assert_eq!(shapes[0].flops(), 2.0 * 16.0 * 32.0 * 32.0);
    let device = Default::default();
    let results = bench_cases::<crate::CpuTrainBackend>(&opts, &device, &mut NoProgress).unwrap();
    let v = serde_json::to_value(&results[0]).unwrap();
    assert_eq!(v["case"], "matmul");
    assert_eq!(v["tokens"], 16);
    let timed = v["shapes"].as_array().unwrap();
    assert_eq!(timed.len(), shapes.len());
    for (t, s) in timed.iter().zip(&shapes) {
        assert_eq!(
            (t["name"].as_str().unwrap(), t["m"].as_u64().unwrap()),
            (s.name, s.m as u64)
        );
        assert_eq!(t["seconds"].as_array().unwrap().len(), 2);
        assert!(t["gflops_best"].as_f64().unwrap() >= t["gflops_median"].as_f64().unwrap());
        assert!(t["gflops_median"].as_f64().unwrap() > 0.0);
    }
    assert!(results[0]
        .describe("flex")
        .starts_with("matmul at the shapes of tiny on flex (16 rows):"));
}
