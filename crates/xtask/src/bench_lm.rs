//! `cargo xtask bench lm`: decoder-LM training tokens/s and scoring sequences/s of the release
//! `smalltalk lm bench`, next to the PyTorch reference `bench/lm_torch.py` on the identical
//! shape, interleaved run by run so that machine noise hits both sides alike.
//!
//! Cases: `router-train` / `router-score` (the paper's 4.4M router, `router-4.4m`) and
//! `expert-train` / `expert-score` (a small expert-shaped model, `cpu-small` by default: the
//! paper's experts do not fit a CPU benchmark). Each run of a case is one fresh process per
//! side; the measured steps (or scoring calls) of all runs are pooled, and the best (min time)
//! and median are reported. `ratio` is ours / PyTorch at the median, from the same run.

use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use smalltalk_stage::stats::min_median;

use crate::util::{build_cli, last_json, run_capture, workspace_root};

/// One measured case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LmCase {
    /// Router training (router-4.4m).
    RouterTrain,
    /// Router scoring with `score_prefix`.
    RouterScore,
    /// Small-expert training (`--expert-preset`).
    ExpertTrain,
    /// Small-expert scoring.
    ExpertScore,
    /// Training at the regime study's small shape (`study-small`: d 96, 4 layers, vocab 4096),
    /// where per-op overhead rather than matrix products sets the speed.
    SmallTrain,
    /// Scoring at the small shape.
    SmallScore,
}

impl LmCase {
    fn name(self) -> &'static str {
        match self {
            LmCase::RouterTrain => "router-train",
            LmCase::RouterScore => "router-score",
            LmCase::ExpertTrain => "expert-train",
            LmCase::ExpertScore => "expert-score",
            LmCase::SmallTrain => "small-train",
            LmCase::SmallScore => "small-score",
        }
    }

    fn is_train(self) -> bool {
        matches!(
            self,
            LmCase::RouterTrain | LmCase::ExpertTrain | LmCase::SmallTrain
        )
    }
}

/// `bench lm` options.
#[derive(Debug, Args)]
pub struct LmBenchArgs {
    /// Runs of each side per case (fresh processes, interleaved ours/PyTorch).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Measured training steps per run (one warm-up step more runs first on each side).
    #[arg(long, default_value_t = 2)]
    steps: usize,
    /// Cases to measure.
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = [LmCase::RouterTrain, LmCase::RouterScore, LmCase::ExpertTrain,
                              LmCase::ExpertScore, LmCase::SmallTrain, LmCase::SmallScore])]
    cases: Vec<LmCase>,
    /// Preset of the expert cases.
    #[arg(long, default_value = "cpu-small")]
    expert_preset: String,
    /// Training sequences per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Training sequence length.
    #[arg(long, default_value_t = 256)]
    seq: usize,
    /// Rows per scoring call.
    #[arg(long, default_value_t = 1024)]
    score_batch: usize,
    /// Tokens per scored row (the routing prefix).
    #[arg(long, default_value_t = 32)]
    score_prefix: usize,
    /// Measured scoring calls per run.
    #[arg(long, default_value_t = 3)]
    score_reps: usize,
    /// PyTorch intra-op threads (set it to the number of free cores).
    #[arg(long, default_value_t = 2)]
    torch_threads: usize,
    /// Python interpreter with `torch` (reference side).
    #[arg(long, env = "SMALLTALK_BENCH_PYTHON", default_value = "python3")]
    python: String,
    /// Cap both sides' CPU instruction set: ours through `SMALLTALK_CPU_ISA` (the fused
    /// kernels; burn's matmuls keep gemm's own choice), PyTorch's through `ATEN_CPU_CAPABILITY`,
    /// `ONEDNN_MAX_CPU_ISA` and `MKL_ENABLE_INSTRUCTIONS`. Unset: each side's best.
    #[arg(long, value_parser = ["avx512", "avx2", "baseline"])]
    isa: Option<String>,
    /// Print one JSON object per measured case.
    #[arg(long)]
    json: bool,
}

/// The environment that caps PyTorch (ATen kernels, oneDNN, MKL) at our `level`.
fn torch_isa_env(level: &str) -> &'static [(&'static str, &'static str)] {
    match level {
        "avx512" => &[("ATEN_CPU_CAPABILITY", "avx512")],
        "avx2" => &[
            ("ATEN_CPU_CAPABILITY", "avx2"),
            ("ONEDNN_MAX_CPU_ISA", "AVX2"),
            ("MKL_ENABLE_INSTRUCTIONS", "AVX2"),
        ],
        _ => &[
            ("ATEN_CPU_CAPABILITY", "default"),
            ("ONEDNN_MAX_CPU_ISA", "SSE41"),
            ("MKL_ENABLE_INSTRUCTIONS", "SSE4_2"),
        ],
    }
}

/// Pooled seconds of one side of a case.
#[derive(Default)]
struct Side {
    seconds: Vec<f64>,
    params: Option<u64>,
    /// The instruction set the side reported (`cpu_isa` / `cpu_capability`).
    isa: Option<String>,
}

impl Side {
    fn extend(&mut self, v: &Value, key: &str) -> Result<()> {
        let xs = v[key]
            .as_array()
            .with_context(|| format!("`{key}` missing in {v}"))?;
        self.seconds.extend(xs.iter().filter_map(Value::as_f64));
        self.params = v["params"].as_u64();
        let isa = v.get("cpu_isa").or(v.get("cpu_capability"));
        self.isa = isa.and_then(Value::as_str).map(str::to_string);
        Ok(())
    }
}

/// Run the benchmark.
pub fn run(args: LmBenchArgs) -> Result<()> {
    if args.runs == 0 || args.steps == 0 {
        bail!("--runs and --steps must be positive");
    }
    let root = workspace_root();
    let bin = build_cli(&[])?;
    let script = root.join("bench/lm_torch.py");
    let torch = Command::new(&args.python)
        .args(["-c", "import torch; print(torch.__version__)"])
        .output();
    let torch_version = match torch {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).trim().to_string()),
        _ => {
            eprintln!(
                "`{}` cannot import torch: the PyTorch reference is not measured, ours only",
                args.python
            );
            None
        }
    };
    let mut ours: Vec<Side> = args.cases.iter().map(|_| Side::default()).collect();
    let mut theirs: Vec<Side> = args.cases.iter().map(|_| Side::default()).collect();
    let mut shapes: Vec<Value> = vec![Value::Null; args.cases.len()];
    for run in 0..args.runs {
        for (i, &case) in args.cases.iter().enumerate() {
            eprintln!("run {}/{}: {} (smalltalk)", run + 1, args.runs, case.name());
            let v = run_ours(&bin, &args, case)?;
            ours[i].extend(
                &v,
                if case.is_train() {
                    "step_seconds"
                } else {
                    "call_seconds"
                },
            )?;
            shapes[i] = v.clone();
            if torch_version.is_some() {
                eprintln!("run {}/{}: {} (PyTorch)", run + 1, args.runs, case.name());
                let t = run_torch(&args, &script, case, &v)?;
                theirs[i].extend(
                    &t,
                    if case.is_train() {
                        "step_seconds"
                    } else {
                        "score_seconds"
                    },
                )?;
            }
        }
    }
    let mut rows = Vec::new();
    for (i, &case) in args.cases.iter().enumerate() {
        rows.push(summarize(
            &args,
            case,
            &shapes[i],
            &ours[i],
            torch_version.as_ref().map(|_| &theirs[i]),
        ));
    }
    if args.json {
        for r in &rows {
            println!("{r}");
        }
        return Ok(());
    }
    print_table(&args, &rows, torch_version.as_deref());
    Ok(())
}

fn preset(args: &LmBenchArgs, case: LmCase) -> &str {
    match case {
        LmCase::RouterTrain | LmCase::RouterScore => "router-4.4m",
        LmCase::ExpertTrain | LmCase::ExpertScore => &args.expert_preset,
        LmCase::SmallTrain | LmCase::SmallScore => "study-small",
    }
}

fn run_ours(bin: &std::path::Path, args: &LmBenchArgs, case: LmCase) -> Result<Value> {
    let mut cmd = Command::new(bin);
    if let Some(level) = &args.isa {
        cmd.env("SMALLTALK_CPU_ISA", level);
    }
    cmd.args([
        "--json",
        "--backend",
        "flex",
        "lm",
        "bench",
        "--preset",
        preset(args, case),
    ]);
    if case.is_train() {
        cmd.args([
            "--cases",
            "train",
            "--batch",
            &args.batch.to_string(),
            "--seq",
            &args.seq.to_string(),
        ]);
        cmd.args(["--steps", &args.steps.to_string()]);
    } else {
        cmd.args([
            "--cases",
            "score",
            "--score-batch",
            &args.score_batch.to_string(),
        ]);
        cmd.args(score_shape_args(args));
    }
    last_json(&run_capture(&mut cmd)?)
}

/// `--score-prefix M --score-reps R`: flags both sides take under the same names.
fn score_shape_args(args: &LmBenchArgs) -> [String; 4] {
    [
        "--score-prefix".into(),
        args.score_prefix.to_string(),
        "--score-reps".into(),
        args.score_reps.to_string(),
    ]
}

/// The PyTorch script on the shape `ours` reported (its `d_model`, `n_layers`, ... fields).
fn run_torch(
    args: &LmBenchArgs,
    script: &std::path::Path,
    case: LmCase,
    ours: &Value,
) -> Result<Value> {
    let field = |k: &str| {
        ours[k]
            .as_u64()
            .map(|x| x.to_string())
            .with_context(|| format!("`{k}` missing in {ours}"))
    };
    let mut cmd = Command::new(&args.python);
    if let Some(level) = &args.isa {
        cmd.envs(torch_isa_env(level).iter().copied());
    }
    cmd.arg(script);
    for (flag, key) in [
        ("--vocab", "vocab"),
        ("--d-model", "d_model"),
        ("--layers", "n_layers"),
        ("--heads", "n_heads"),
        ("--d-ff", "d_ff"),
    ] {
        cmd.args([flag, &field(key)?]);
    }
    cmd.args(["--threads", &args.torch_threads.to_string()]);
    if case.is_train() {
        cmd.args([
            "--batch",
            &args.batch.to_string(),
            "--seq",
            &args.seq.to_string(),
            "--steps",
            &args.steps.to_string(),
        ]);
        cmd.args(["--score-batch", "0"]);
    } else {
        cmd.args([
            "--steps",
            "0",
            "--score-batch",
            &args.score_batch.to_string(),
        ]);
        cmd.args(score_shape_args(args));
    }
    last_json(&run_capture(&mut cmd)?)
}

fn summarize(
    args: &LmBenchArgs,
    case: LmCase,
    shape: &Value,
    ours: &Side,
    theirs: Option<&Side>,
) -> Value {
    // Work per measured unit: targets per training step, or rows per scoring call.
    let (unit, key) = if case.is_train() {
        ((args.batch * args.seq) as f64, "tokens_per_s")
    } else {
        (args.score_batch as f64, "sequences_per_s")
    };
    let (o_best, o_med) = min_median(&ours.seconds);
    let mut v = json!({
        "case": case.name(), "backend": "flex", "preset": preset(args, case), "params": ours.params,
        "batch": shape["batch"], "seq": shape["seq"], "runs": args.runs, "samples": ours.seconds.len(),
        "cpu_isa": ours.isa, "cpu_isa_cap": args.isa, key: unit / o_med, format!("{key}_best"): unit / o_best, format!("{key}_median"): unit / o_med,
    });
    match theirs {
        Some(t) if !t.seconds.is_empty() => {
            let (t_best, t_med) = min_median(&t.seconds);
            v[format!("torch_{key}")] = json!(unit / t_med);
            v[format!("torch_{key}_best")] = json!(unit / t_best);
            v["torch_params"] = json!(t.params);
            v["torch_threads"] = json!(args.torch_threads);
            v["torch_cpu_capability"] = json!(t.isa);
            v["ratio"] = json!(t_med / o_med);
            v["ratio_best"] = json!(t_best / o_best);
        }
        _ => v["torch"] = json!("not measured (torch not importable)"),
    }
    v
}

fn print_table(args: &LmBenchArgs, rows: &[Value], torch: Option<&str>) {
    println!(
        "decoder LM on flex, {} runs per side (interleaved), training batch {} x seq {} ({} measured steps per run), \
         scoring {} rows x prefix {}; PyTorch {} with {} threads",
        args.runs, args.batch, args.seq, args.steps, args.score_batch, args.score_prefix,
        torch.unwrap_or("not available"), args.torch_threads
    );
    if let Some(r) = rows.first() {
        println!(
            "instruction sets: ours {} (cap {}; burn's matmuls: gemm's own choice), PyTorch {}",
            r["cpu_isa"].as_str().unwrap_or("?"),
            args.isa.as_deref().unwrap_or("none"),
            r["torch_cpu_capability"].as_str().unwrap_or("-"),
        );
    }
    println!("| case | preset | params | ours best | ours median | PyTorch best | PyTorch median | ratio (median) |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        let key = if r["case"].as_str().is_some_and(|c| c.ends_with("train")) {
            "tokens_per_s"
        } else {
            "sequences_per_s"
        };
        let unit = if key == "tokens_per_s" {
            "tok/s"
        } else {
            "seq/s"
        };
        let num = |k: String| {
            r[&k]
                .as_f64()
                .map_or("-".to_string(), |x| format!("{x:.0} {unit}"))
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r["case"].as_str().unwrap_or(""),
            r["preset"].as_str().unwrap_or(""),
            r["params"],
            num(format!("{key}_best")),
            num(format!("{key}_median")),
            num(format!("torch_{key}_best")),
            num(format!("torch_{key}")),
            r["ratio"]
                .as_f64()
                .map_or("-".to_string(), |x| format!("{x:.2}x")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LmBenchArgs,
    }

    #[test]
    fn ratio_is_ours_over_torch_at_the_median() {
        let args = Cli::parse_from([
            "x",
            "--batch",
            "2",
            "--seq",
            "5",
            "--cases",
            "router-train,expert-score",
            "--isa",
            "avx2",
        ])
        .args;
        assert_eq!(args.cases, [LmCase::RouterTrain, LmCase::ExpertScore]);
        let ours = Side {
            seconds: vec![1.0, 2.0, 3.0],
            params: Some(7),
            isa: Some("avx2".into()),
        };
        let theirs = Side {
            seconds: vec![0.5, 1.0, 4.0],
            params: Some(7),
            isa: Some("AVX2".into()),
        };
        let v = summarize(
            &args,
            LmCase::RouterTrain,
            &json!({"batch": 2, "seq": 5}),
            &ours,
            Some(&theirs),
        );
        assert_eq!(v["tokens_per_s"], 5.0);
        assert_eq!(v["tokens_per_s_best"], 10.0);
        assert_eq!(v["torch_tokens_per_s"], 10.0);
        assert_eq!(v["ratio"], 0.5);
        assert_eq!(v["cpu_isa"], "avx2");
        assert_eq!(v["cpu_isa_cap"], "avx2");
        assert_eq!(v["torch_cpu_capability"], "AVX2");
        assert_eq!(torch_isa_env("avx2")[0], ("ATEN_CPU_CAPABILITY", "avx2"));
        let v = summarize(&args, LmCase::ExpertScore, &json!({}), &ours, None);
        assert!(v["sequences_per_s"].is_number() && v["ratio"].is_null() && v["torch"].is_string());
    }
}
