//! `cargo xtask bench matmul`: the matrix-product roofline of each preset — GFLOP/s of the
//! model's linear op (`fused::linear`) on flex at the forward products of a training step
//! (`smalltalk lm bench --cases matmul`) next to `F.linear` at the same shapes
//! (`bench/matmul_torch.py`), interleaved run by run. Outside the fused kernels a step is these
//! products, so their rates bound the tokens/s of `bench lm` on both sides: the table says how
//! far each side is from the machine's peak (the `square` row) and which side is faster at which
//! shape.

use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};

use smalltalk_stage::stats::min_median;

use crate::util::{build_cli, last_json, machine, run_capture, workspace_root};

/// `bench matmul` options.
#[derive(Debug, Args)]
pub struct MatmulBenchArgs {
    /// Presets whose shapes are measured.
    #[arg(long, value_delimiter = ',', default_values_t = ["router-4.4m".to_string(),
          "cpu-small".to_string(), "study-small".to_string()])]
    presets: Vec<String>,
    /// Runs of each side (fresh processes, interleaved ours/PyTorch).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Timed products per shape and run (one warm-up product more runs first).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Training sequences per step (the shapes' rows are batch · seq).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Training sequence length.
    #[arg(long, default_value_t = 256)]
    seq: usize,
    /// PyTorch intra-op threads (set it to the number of free cores).
    #[arg(long, default_value_t = 2)]
    torch_threads: usize,
    /// Python interpreter with `torch` (reference side).
    #[arg(long, env = "SMALLTALK_BENCH_PYTHON", default_value = "python3")]
    python: String,
    /// Print one JSON object per preset and shape.
    #[arg(long)]
    json: bool,
}

/// Pooled seconds of every shape of one side of a preset, in shape order.
#[derive(Default)]
struct Pooled {
    seconds: Vec<Vec<f64>>,
}

impl Pooled {
    fn extend(&mut self, v: &Value) -> Result<()> {
        let shapes = v["shapes"]
            .as_array()
            .with_context(|| format!("`shapes` missing in {v}"))?;
        self.seconds.resize(shapes.len(), vec![]);
        for (pool, s) in self.seconds.iter_mut().zip(shapes) {
            let xs = s["seconds"].as_array().context("`seconds` missing")?;
            pool.extend(xs.iter().filter_map(Value::as_f64));
        }
        Ok(())
    }
}

/// One row of the table: a shape with both sides' GFLOP/s (best, median) and their ratio.
fn summarize(preset: &str, shape: &Value, ours: &[f64], theirs: Option<&[f64]>) -> Value {
    let dims = |k: &str| shape[k].as_u64().unwrap_or(0) as f64;
    let flops = 2.0 * dims("m") * dims("k") * dims("n");
    let (o_best, o_med) = min_median(ours);
    let mut v = json!({
        "preset": preset, "shape": shape["name"], "m": shape["m"], "k": shape["k"], "n": shape["n"],
        "gflops_best": flops / o_best / 1e9, "gflops_median": flops / o_med / 1e9,
    });
    if let Some(t) = theirs.filter(|t| !t.is_empty()) {
        let (t_best, t_med) = min_median(t);
        v["torch_gflops_best"] = json!(flops / t_best / 1e9);
        v["torch_gflops_median"] = json!(flops / t_med / 1e9);
        v["ratio"] = json!(t_med / o_med);
    }
    v
}

/// Run the benchmark.
pub fn run(args: MatmulBenchArgs) -> Result<()> {
    if args.runs == 0 || args.reps == 0 {
        bail!("--runs and --reps must be positive");
    }
    let bin = build_cli(&[])?;
    let script = workspace_root().join("bench/matmul_torch.py");
    let torch_ok = Command::new(&args.python)
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !torch_ok {
        eprintln!("`{}` cannot import torch: ours only", args.python);
    }
    let mut rows = Vec::new();
    let mut torch_version = None;
    for preset in &args.presets {
        let (mut ours, mut theirs) = (Pooled::default(), Pooled::default());
        let mut shapes = Value::Null;
        for run in 0..args.runs {
            eprintln!("run {}/{}: {preset} (smalltalk)", run + 1, args.runs);
            let mut cmd = Command::new(&bin);
            cmd.args([
                "--json", "lm", "bench", "--cases", "matmul", "--preset", preset,
            ])
            .args([
                "--batch",
                &args.batch.to_string(),
                "--seq",
                &args.seq.to_string(),
            ])
            .args(["--steps", &args.reps.to_string()]);
            let v = last_json(&run_capture(&mut cmd)?)?;
            ours.extend(&v)?;
            shapes = v["shapes"].clone();
            if torch_ok {
                eprintln!("run {}/{}: {preset} (PyTorch)", run + 1, args.runs);
                let list: Vec<String> = shapes
                    .as_array()
                    .context("`shapes` missing")?
                    .iter()
                    .map(|s| format!("{}x{}x{}", s["m"], s["k"], s["n"]))
                    .collect();
                let mut cmd = Command::new(&args.python);
                cmd.arg(&script)
                    .args(["--shapes", &list.join(",")])
                    .args(["--reps", &args.reps.to_string()])
                    .args(["--threads", &args.torch_threads.to_string()]);
                let t = last_json(&run_capture(&mut cmd)?)?;
                torch_version = t["torch"].as_str().map(str::to_string);
                theirs.extend(&t)?;
            }
        }
        for (i, shape) in shapes.as_array().into_iter().flatten().enumerate() {
            let t = theirs.seconds.get(i).map(Vec::as_slice);
            rows.push(summarize(preset, shape, &ours.seconds[i], t));
        }
    }
    if args.json {
        for r in &rows {
            println!("{r}");
        }
        return Ok(());
    }
    println!(
        "matmul at each preset's training shapes ({} x {} rows), flex vs F.linear, {} runs x {} \
         products per side (interleaved); PyTorch {} with {} threads; {}",
        args.batch,
        args.seq,
        args.runs,
        args.reps,
        torch_version.as_deref().unwrap_or("not available"),
        args.torch_threads,
        machine()
    );
    println!("| preset | shape | m x k x n | ours GFLOP/s best | median | PyTorch best | median | ratio (median) |");
    println!("|---|---|---|---|---|---|---|---|");
    let num = |x: &Value| x.as_f64().map_or("-".to_string(), |x| format!("{x:.1}"));
    for r in &rows {
        println!(
            "| {} | {} | {} x {} x {} | {} | {} | {} | {} | {} |",
            r["preset"].as_str().unwrap_or(""),
            r["shape"].as_str().unwrap_or(""),
            r["m"],
            r["k"],
            r["n"],
            num(&r["gflops_best"]),
            num(&r["gflops_median"]),
            num(&r["torch_gflops_best"]),
            num(&r["torch_gflops_median"]),
            r["ratio"]
                .as_f64()
                .map_or("-".to_string(), |x| format!("{x:.2}x")),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gflops_and_ratio_come_from_the_pooled_seconds() {
        let shape = json!({"name": "proj", "m": 1000, "k": 10, "n": 50});
        // 2·1000·10·50 = 1e6 flops.
        let v = summarize("p", &shape, &[1e-3, 2e-3, 4e-3], Some(&[4e-3, 8e-3, 1e-3]));
        assert_eq!(v["gflops_best"], 1.0);
        assert_eq!(v["gflops_median"], 0.5);
        assert_eq!(v["torch_gflops_best"], 1.0);
        assert_eq!(v["torch_gflops_median"], 0.25);
        assert_eq!(v["ratio"], 2.0);
        let v = summarize("p", &shape, &[1e-3], None);
        assert!(v["ratio"].is_null() && v["torch_gflops_median"].is_null());
        let mut pooled = Pooled::default();
        pooled
            .extend(&json!({"shapes": [{"seconds": [1.0]}, {"seconds": [2.0, 3.0]}]}))
            .unwrap();
        pooled
            .extend(&json!({"shapes": [{"seconds": [4.0]}, {"seconds": []}]}))
            .unwrap();
        assert_eq!(pooled.seconds, [vec![1.0, 4.0], vec![2.0, 3.0]]);
        assert!(pooled.extend(&json!({})).is_err());
    }
}
