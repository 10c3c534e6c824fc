//! `cargo xtask bench generate`: KV-cached greedy generation of the release `smalltalk` (`lm
//! bench-generate`) next to Hugging Face `transformers` `generate` (`bench/generate_hf.py`) on the
//! same weights and prompts, interleaved run by run; plus the machine's copy bandwidth (the
//! roofline of batch-1 decoding) and the time to route a prompt against generating with one
//! expert.
//!
//! Shapes: `pipeline` (the expert of `configs/pipeline-cpu.toml`: `[experts]` preset with
//! `[experts.model]`, the tokenizer's vocabulary, context = `[data] seq_len`) and `expert-335m`
//! (the paper's expert preset). Each shape is written once by `smalltalk lm bench-generate
//! prepare` (random weights, their HF export as `smalltalk export hf` writes a model, random
//! prompts) into `target/bench-generate/<shape>`. Each run is one fresh process per side; both
//! time the first token (prefill) and every later step, and this task computes every rate from
//! those raw timings, alike for both sides. Best = the fastest run, median over runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use smalltalk_stage::stats::min_median;

use crate::util::{build_cli, machine, run_capture, workspace_root};

/// A model shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shape {
    /// The pipeline's expert (`configs/pipeline-cpu.toml`).
    Pipeline,
    /// The paper's `expert-335m` preset (random weights).
    #[value(name = "expert-335m")]
    Expert335m,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Pipeline => "pipeline",
            Shape::Expert335m => "expert-335m",
        }
    }
}

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GenCase {
    /// Prefill and decode tokens/s at each `--batch`, both sides.
    Decode,
    /// Routing time against generation time (ours; the pipeline's router and expert shapes).
    Routing,
}

/// `bench generate` options.
#[derive(Debug, Args)]
pub struct GenerateBenchArgs {
    /// Runs of each side (fresh processes, interleaved ours / transformers).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Shapes to measure.
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = [Shape::Pipeline, Shape::Expert335m])]
    shapes: Vec<Shape>,
    /// Cases to measure.
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = [GenCase::Decode, GenCase::Routing])]
    cases: Vec<GenCase>,
    /// Batch sizes of the decode case.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    batch: Vec<usize>,
    /// Prompt tokens.
    #[arg(long, default_value_t = 32)]
    prompt_len: usize,
    /// New tokens per sequence.
    #[arg(long, default_value_t = 224)]
    new_tokens: usize,
    /// Numbers of routers of the routing case.
    #[arg(long, value_delimiter = ',', default_value = "4,32")]
    routers: Vec<usize>,
    /// Tokens the expert generates in the routing case.
    #[arg(long, default_value_t = 64)]
    route_tokens: usize,
    /// Pipeline configuration that gives the `pipeline` shape and the routers' shape.
    #[arg(long, default_value = "configs/pipeline-cpu.toml")]
    config: PathBuf,
    /// Python interpreter with `torch` and `transformers` (reference side).
    #[arg(long, env = "SMALLTALK_BENCH_PYTHON", default_value = "python3")]
    python: String,
    /// Print one JSON object per result.
    #[arg(long)]
    json: bool,
}

/// Position ranges whose decode rates show whether a token's cost grows with its position.
const EARLY: (usize, usize) = (32, 96);
const LATE: (usize, usize) = (192, 256);
/// The paper's bound on routing: "< 10% extra inference FLOPs".
const ROUTING_BOUND: f64 = 0.10;

/// One run of one side at one shape and batch: the raw timings.
#[derive(Debug, Clone, PartialEq)]
struct Timing {
    prompt_len: usize,
    first_token_s: f64,
    step_s: Vec<f64>,
    tokens: Vec<u64>,
}

impl Timing {
    fn from_json(v: &Value) -> Result<Self> {
        let floats = |k: &str| -> Result<Vec<f64>> {
            Ok(v[k]
                .as_array()
                .with_context(|| format!("`{k}` missing in a decode result"))?
                .iter()
                .filter_map(Value::as_f64)
                .collect())
        };
        Ok(Timing {
            prompt_len: v["prompt_len"].as_u64().context("prompt_len")? as usize,
            first_token_s: v["first_token_s"].as_f64().context("first_token_s")?,
            step_s: floats("step_s")?,
            tokens: v["tokens"]
                .as_array()
                .context("tokens")?
                .iter()
                .filter_map(Value::as_u64)
                .collect(),
        })
    }
}

/// Prefill tokens/s: prompt tokens × batch ÷ time to the first token.
fn prefill_rate(t: &Timing, batch: usize) -> f64 {
    (t.prompt_len * batch) as f64 / t.first_token_s
}

/// Decode tokens/s over `step_s` (each step one token of every sequence).
fn rate(step_s: &[f64], batch: usize) -> f64 {
    (step_s.len() * batch) as f64 / step_s.iter().sum::<f64>()
}

/// Decode tokens/s after the first token: (new tokens − 1) × batch ÷ the time after it.
fn decode_rate(t: &Timing, batch: usize) -> f64 {
    rate(&t.step_s, batch)
}

/// Decode tokens/s over the steps feeding positions `from..to`: step `j` feeds position
/// `prompt_len + j`. `None` when no step does.
fn position_rate(t: &Timing, batch: usize, (from, to): (usize, usize)) -> Option<f64> {
    let n = t.step_s.len();
    let lo = from.saturating_sub(t.prompt_len).min(n);
    let hi = to.saturating_sub(t.prompt_len).min(n);
    (hi > lo).then(|| rate(&t.step_s[lo..hi], batch))
}

/// Highest and median of rates (best = the fastest run).
fn best_median(rates: &[f64]) -> (f64, f64) {
    let inverse: Vec<f64> = rates.iter().map(|r| -r).collect();
    let (neg_best, _) = min_median(&inverse);
    let (_, median) = min_median(rates);
    (-neg_best, median)
}

/// Leading tokens on which two greedy continuations agree.
fn agreeing_prefix(a: &[u64], b: &[u64]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The first three fields of /proc/loadavg (1, 5, 15 minutes): other work on the machine
/// during a run shows here.
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Every line of `stdout` that parses as a JSON object.
fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect()
}

/// `--set KEY=VALUE` flags from a TOML table of config fields.
fn set_flags(flag: &str, table: Option<&toml::Table>, extra: &[(&str, i64)]) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in table.into_iter().flatten() {
        out.extend([flag.to_string(), format!("{k}={v}")]);
    }
    for (k, v) in extra {
        out.extend([flag.to_string(), format!("{k}={v}")]);
    }
    out
}

/// The pipeline config's expert and router shapes as `prepare` / `route` flags.
struct PipelineShapes {
    expert: Vec<String>,
    router: Vec<String>,
    prefix: usize,
}

fn pipeline_shapes(path: &Path) -> Result<PipelineShapes> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let t: toml::Table = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
    let table = |k: &str| t.get(k).and_then(toml::Value::as_table);
    let sub = |k: &str, s: &str| {
        table(k)
            .and_then(|x| x.get(s))
            .and_then(toml::Value::as_table)
    };
    let int = |k: &str, s: &str| {
        table(k)
            .and_then(|x| x.get(s))
            .and_then(toml::Value::as_integer)
    };
    let vocab = sub("data", "tokenizer")
        .and_then(|x| x.get("vocab_size"))
        .and_then(toml::Value::as_integer)
        .context("[data.tokenizer] vocab_size")?;
    let context = int("data", "seq_len").context("[data] seq_len")?;
    let preset = |k: &str| {
        table(k)
            .and_then(|x| x.get("preset"))
            .and_then(toml::Value::as_str)
            .map(str::to_string)
            .with_context(|| format!("[{k}] preset"))
    };
    let extra = [("vocab_size", vocab), ("max_seq_len", context)];
    let mut expert = vec!["--preset".to_string(), preset("experts")?];
    expert.extend(set_flags("--set", sub("experts", "model"), &extra));
    let mut router = vec!["--router-preset".to_string(), preset("routers")?];
    router.extend(set_flags("--router-set", sub("routers", "model"), &extra));
    let prefix = int("routers", "prefix_len").unwrap_or(32) as usize;
    Ok(PipelineShapes {
        expert,
        router,
        prefix,
    })
}

/// Run the benchmark.
pub fn run(args: GenerateBenchArgs) -> Result<()> {
    if args.runs == 0 || args.batch.is_empty() || args.new_tokens < 2 {
        bail!("--runs and --batch must be given and --new-tokens at least 2");
    }
    let root = workspace_root();
    let load_before = load_average();
    let config = if args.config.is_absolute() {
        args.config.clone()
    } else {
        root.join(&args.config)
    };
    let pipeline = pipeline_shapes(&config)?;
    let bin = build_cli(&[])?;
    let ours = |a: &[String]| -> Result<Vec<Value>> {
        let mut cmd = Command::new(&bin);
        cmd.args(["--json", "--backend", "flex", "lm", "bench-generate"])
            .args(a);
        Ok(json_lines(&run_capture(&mut cmd)?))
    };
    let check = Command::new(&args.python)
        .args([
            "-c",
            "import torch, transformers; print(torch.__version__, transformers.__version__)",
        ])
        .output();
    let versions = match check {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).trim().to_string()),
        _ => {
            eprintln!(
                "`{}` cannot import torch and transformers (set SMALLTALK_BENCH_PYTHON to a python \
                 with both): the transformers reference is not measured, ours only",
                args.python
            );
            None
        }
    };

    // Prepare every shape once (weights, HF export, prompts), reused while the flags match.
    let work = root.join("target/bench-generate");
    let largest = args.batch.iter().copied().max().unwrap_or(1);
    let prepare = |shape: Shape| -> Result<(PathBuf, Value)> {
        let dir = work.join(shape.name());
        let mut flags = match shape {
            Shape::Pipeline => pipeline.expert.clone(),
            Shape::Expert335m => vec!["--preset".into(), "expert-335m".into()],
        };
        flags.extend([
            "--prompts".into(),
            largest.to_string(),
            "--prompt-len".into(),
            args.prompt_len.to_string(),
        ]);
        let stamp = dir.join("prepared-with.json");
        let key = json!(flags).to_string();
        if let Ok(text) = std::fs::read_to_string(&stamp) {
            if let Some(v) = json_lines(&text).pop().filter(|v| v["flags"] == key) {
                return Ok((dir, v));
            }
        }
        eprintln!("preparing {} in {}", shape.name(), dir.display());
        let _ = std::fs::remove_dir_all(&dir);
        let mut a = vec!["prepare".to_string(), "--out".into()];
        a.push(dir.display().to_string());
        a.extend(flags.iter().cloned());
        let mut v = ours(&a)?.pop().context("prepare printed no result")?;
        v["flags"] = key.into();
        std::fs::write(&stamp, v.to_string())?;
        Ok((dir, v))
    };
    let (mut dirs, mut prepared) = (Vec::new(), Vec::new());
    for &shape in &args.shapes {
        let (dir, meta) = prepare(shape)?;
        dirs.push(dir);
        prepared.push(meta);
    }
    // Routing generates with the pipeline's expert, whichever shapes are measured.
    let route_dir = if args.cases.contains(&GenCase::Routing) {
        Some(prepare(Shape::Pipeline)?.0)
    } else {
        None
    };

    let decode = args.cases.contains(&GenCase::Decode);
    let routing = args.cases.contains(&GenCase::Routing);
    let batches = args
        .batch
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    // [shape][batch] -> timings of each run, per side.
    let mut our_runs = vec![vec![Vec::<Timing>::new(); args.batch.len()]; args.shapes.len()];
    let mut hf_runs = our_runs.clone();
    let mut hf_meta = Value::Null;
    let mut threads = 0u64;
    let mut bandwidth = Vec::new();
    let mut isa = Value::Null;
    let mut route_runs: Vec<Vec<Value>> = vec![Vec::new(); args.routers.len()];
    for run in 0..args.runs {
        if decode {
            eprintln!("run {}/{}: copy bandwidth", run + 1, args.runs);
            let v = ours(&["bandwidth".into()])?;
            let v = v.first().context("bandwidth printed no result")?;
            bandwidth.push(v["gb_per_s_best"].as_f64().context("gb_per_s_best")?);
            threads = v["threads"].as_u64().context("threads")?;
            isa = v["cpu_isa"].clone();
        }
        for (s, &shape) in args.shapes.iter().enumerate() {
            if !decode {
                break;
            }
            let dir = dirs[s].display().to_string();
            eprintln!(
                "run {}/{}: {} (smalltalk)",
                run + 1,
                args.runs,
                shape.name()
            );
            let results = ours(&[
                "decode".into(),
                "--dir".into(),
                dir.clone(),
                "--batch".into(),
                batches.clone(),
                "--new-tokens".into(),
                args.new_tokens.to_string(),
            ])?;
            if results.len() != args.batch.len() {
                bail!(
                    "expected {} decode results, got {results:?}",
                    args.batch.len()
                );
            }
            for (b, v) in results.iter().enumerate() {
                threads = v["threads"].as_u64().unwrap_or(threads);
                our_runs[s][b].push(Timing::from_json(v)?);
            }
            if versions.is_none() {
                continue;
            }
            eprintln!(
                "run {}/{}: {} (transformers)",
                run + 1,
                args.runs,
                shape.name()
            );
            let mut cmd = Command::new(&args.python);
            cmd.arg(root.join("bench/generate_hf.py"))
                .arg("--model")
                .arg(dirs[s].join("hf"))
                .arg("--prompts")
                .arg(dirs[s].join("prompts.json"))
                .args(["--batch", &batches])
                .args(["--new-tokens", &args.new_tokens.to_string()])
                .args(["--threads", &threads.to_string()]);
            let v = json_lines(&run_capture(&mut cmd)?)
                .pop()
                .context("generate_hf.py printed no JSON")?;
            for (b, c) in v["cases"].as_array().context("cases")?.iter().enumerate() {
                hf_runs[s][b].push(Timing::from_json(c)?);
            }
            hf_meta = v;
        }
        if let Some(route_dir) = &route_dir {
            eprintln!("run {}/{}: routing", run + 1, args.runs);
            let mut a = vec![
                "route".to_string(),
                "--dir".into(),
                route_dir.display().to_string(),
            ];
            a.extend(pipeline.router.iter().cloned());
            a.extend([
                "--routers".into(),
                args.routers
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                "--prefix".into(),
                pipeline.prefix.to_string(),
                "--new-tokens".into(),
                args.route_tokens.to_string(),
            ]);
            for (e, v) in ours(&a)?.into_iter().enumerate() {
                route_runs[e].push(v);
            }
        }
    }

    let mut rows = Vec::new();
    let bw_best = bandwidth.iter().cloned().fold(f64::NAN, f64::max);
    if decode {
        rows.push(json!({
            "result": "bandwidth", "gb_per_s_best": bw_best, "gb_per_s_runs": bandwidth,
            "threads": threads, "buffer_mib": 1024, "counts": "bytes read + bytes written",
        }));
        for (s, &shape) in args.shapes.iter().enumerate() {
            for (b, &batch) in args.batch.iter().enumerate() {
                rows.push(summarize_decode(
                    shape,
                    batch,
                    &prepared[s],
                    &our_runs[s][b],
                    &hf_runs[s][b],
                    bw_best,
                ));
            }
        }
    }
    for (e, &routers) in args.routers.iter().enumerate() {
        if routing {
            rows.push(summarize_routing(routers, &route_runs[e])?);
        }
    }
    rows.extend(targets(&rows));
    let header = json!({
        "result": "header", "machine": machine(), "runs": args.runs, "threads": threads,
        "load_average_before": load_before, "load_average_after": load_average(),
        "cpu_isa": isa, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
        "python": versions, "transformers_side": hf_meta.get("attn_implementation").map(|a| json!({
            "torch": hf_meta["torch"], "transformers": hf_meta["transformers"],
            "threads": hf_meta["threads"], "cpu_capability": hf_meta["cpu_capability"],
            "attn_implementation": a,
        })),
    });
    if args.json {
        println!("{header}");
        for r in &rows {
            println!("{r}");
        }
        return Ok(());
    }
    print_report(&args, &header, &rows);
    Ok(())
}

fn summarize_decode(
    shape: Shape,
    batch: usize,
    prepared: &Value,
    ours: &[Timing],
    hf: &[Timing],
    bandwidth: f64,
) -> Value {
    let side = |runs: &[Timing]| -> Value {
        if runs.is_empty() {
            return Value::Null;
        }
        let rates =
            |f: &dyn Fn(&Timing) -> f64| best_median(&runs.iter().map(f).collect::<Vec<_>>());
        let (pb, pm) = rates(&|t| prefill_rate(t, batch));
        let (db, dm) = rates(&|t| decode_rate(t, batch));
        let pos = |range| {
            let r: Vec<f64> = runs
                .iter()
                .filter_map(|t| position_rate(t, batch, range))
                .collect();
            (!r.is_empty()).then(|| best_median(&r).1)
        };
        json!({
            "prefill_tokens_per_s_best": pb, "prefill_tokens_per_s_median": pm,
            "decode_tokens_per_s_best": db, "decode_tokens_per_s_median": dm,
            "decode_early_tokens_per_s_median": pos(EARLY), "decode_late_tokens_per_s_median": pos(LATE),
            "runs": runs.len(),
        })
    };
    let weight_bytes = prepared["weight_bytes"].as_f64().unwrap_or(f64::NAN);
    let mut v = json!({
        "result": "decode", "shape": shape.name(), "batch": batch,
        "params": prepared["params"], "weight_bytes": prepared["weight_bytes"],
        "vocab": prepared["config"]["vocab_size"], "d_model": prepared["config"]["d_model"],
        "n_layers": prepared["config"]["n_layers"], "n_heads": prepared["config"]["n_heads"],
        "d_ff": prepared["config"]["d_ff"], "context": prepared["config"]["max_seq_len"],
        "ours": side(ours), "transformers": side(hf),
        "early_positions": [EARLY.0, EARLY.1], "late_positions": [LATE.0, LATE.1],
    });
    // Batch-1 roofline: every weight read once per token at the measured copy bandwidth.
    let roofline = bandwidth * 1e9 / weight_bytes;
    if batch == 1 {
        v["roofline_tokens_per_s"] = json!(roofline);
        if let Some(dm) = v["ours"]["decode_tokens_per_s_median"].as_f64() {
            v["roofline_fraction"] = json!(dm / roofline);
        }
    }
    for (out, k) in [
        ("decode_ratio_median", "decode_tokens_per_s_median"),
        ("decode_ratio_best", "decode_tokens_per_s_best"),
        ("prefill_ratio_median", "prefill_tokens_per_s_median"),
    ] {
        let ratio = v["ours"][k].as_f64().zip(v["transformers"][k].as_f64());
        v[out] = json!(ratio.map(|(o, t)| o / t));
    }
    if let (Some(o), Some(t)) = (ours.first(), hf.first()) {
        v["greedy_tokens_agreeing"] = json!(agreeing_prefix(&o.tokens, &t.tokens));
    }
    v
}

fn summarize_routing(routers: usize, runs: &[Value]) -> Result<Value> {
    let pooled = |k: &str| -> Vec<f64> {
        runs.iter()
            .filter_map(|v| v[k].as_array())
            .flatten()
            .filter_map(Value::as_f64)
            .collect()
    };
    let (route, generate) = (pooled("route_s"), pooled("generate_s"));
    let first = runs.first().context("no routing result")?;
    let (rb, rm) = min_median(&route);
    let (gb, gm) = min_median(&generate);
    Ok(json!({
        "result": "routing", "routers": routers, "prefix": first["prefix"],
        "new_tokens": first["new_tokens"], "router_params": first["router_params"],
        "expert_params": first["expert_params"], "stacked": first["stacked"],
        "route_ms_best": rb * 1e3, "route_ms_median": rm * 1e3,
        "generate_ms_best": gb * 1e3, "generate_ms_median": gm * 1e3,
        "share_median": rm / (rm + gm), "flop_share": first["flop_share"],
        "paper_flop_share": paper_flop_share(routers, first),
        "samples": route.len(),
    }))
}

/// Parameters of a tied Llama decoder (as `LmConfig::num_params`): vocabulary `v`, width `d`,
/// `l` blocks, SwiGLU width `f`.
fn tied_params(v: f64, d: f64, l: f64, f: f64) -> f64 {
    v * d + l * (4.0 * d * d + 3.0 * d * f + 2.0 * d) + d
}

/// The FLOP share of routing at the paper's sizes: E `router-4.4m` routers (vocab 32000, d 96,
/// 12 layers, SwiGLU 256) over the same prefix against one `expert-335m` (d 1024, 24 layers,
/// SwiGLU 2752) over the same positions (weight products only, 2 · params · tokens).
fn paper_flop_share(routers: usize, routing: &Value) -> f64 {
    let router = tied_params(32_000.0, 96.0, 12.0, 256.0);
    let expert = tied_params(32_000.0, 1024.0, 24.0, 2752.0);
    let prefix = routing["prefix"].as_f64().unwrap_or(32.0);
    let positions = prefix + routing["new_tokens"].as_f64().unwrap_or(64.0);
    let route = routers as f64 * router * prefix;
    route / (route + expert * positions)
}

/// The ratio of decode rates at the late positions to the early ones that a KV cache gives when
/// time follows FLOPs: a token at position `p` costs its weight products (`params` multiply-adds)
/// plus attention over `p` cached positions (`2 · n_layers · d_model · p`), at the middle of each
/// range. Recomputation would cost `p` times the weights instead.
fn flat_prediction(row: &Value) -> Option<f64> {
    let params = row["params"].as_f64()?;
    let per_position = 2.0 * row["n_layers"].as_f64()? * row["d_model"].as_f64()?;
    let cost = |(from, to): (usize, usize)| params + per_position * (from + to) as f64 / 2.0;
    Some(cost(EARLY) / cost(LATE))
}

/// The targets, each with its measured value and pass / fail.
fn targets(rows: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    let mut target = |name: String, value: Option<f64>, goal: f64, unit: &str| {
        out.push(json!({
            "result": "target", "target": name, "value": value, "goal": goal, "unit": unit,
            "pass": value.map(|v| v >= goal),
        }));
    };
    for r in rows.iter().filter(|r| r["result"] == "decode") {
        let (shape, batch) = (r["shape"].as_str().unwrap_or(""), &r["batch"]);
        let goal = if shape == "pipeline" { 3.0 } else { 1.2 };
        target(
            format!("decode at {shape}, batch {batch}: ours / transformers (median)"),
            r["decode_ratio_median"].as_f64(),
            goal,
            "x",
        );
        if shape == "expert-335m" && r["batch"] == 1 {
            target(
                format!("decode at {shape}, batch 1: share of the copy-bandwidth roofline"),
                r["roofline_fraction"].as_f64(),
                0.6,
                "fraction",
            );
        }
        let measured = r["ours"]["decode_late_tokens_per_s_median"]
            .as_f64()
            .zip(r["ours"]["decode_early_tokens_per_s_median"].as_f64())
            .map(|(late, early)| late / early);
        let predicted = flat_prediction(r);
        target(
            format!(
                "flat cost per token at {shape}, batch {batch}: ours, tokens/s at positions \
                 {}-{} ÷ at {}-{} = {}, ÷ the {} the FLOPs predict (weights + attention over \
                 the cache)",
                LATE.0,
                LATE.1,
                EARLY.0,
                EARLY.1,
                measured.map_or("-".into(), |m| format!("{m:.3}")),
                predicted.map_or("-".into(), |p| format!("{p:.3}")),
            ),
            measured.zip(predicted).map(|(m, p)| m / p),
            0.9,
            "fraction",
        );
    }
    for r in rows.iter().filter(|r| r["result"] == "routing") {
        // "< 10% extra": the routing share of the time must stay below the bound.
        let share = r["share_median"].as_f64();
        out.push(json!({
            "result": "target",
            "target": format!("routing share of time with E = {} routers (median)", r["routers"]),
            "value": share, "goal": ROUTING_BOUND, "unit": "fraction, at most",
            "pass": share.map(|s| s < ROUTING_BOUND),
        }));
    }
    out
}

fn fmt(v: &Value, digits: usize) -> String {
    v.as_f64().map_or("-".into(), |x| format!("{x:.digits$}"))
}

fn print_report(args: &GenerateBenchArgs, header: &Value, rows: &[Value]) {
    println!(
        "machine: {}; load average (1, 5, 15 min) before {}, after {}",
        header["machine"].as_str().unwrap_or("?"),
        header["load_average_before"].as_str().unwrap_or("?"),
        header["load_average_after"].as_str().unwrap_or("?"),
    );
    println!(
        "greedy generation on flex, {} runs per side (fresh processes, interleaved), prompt {} + \
         {} new tokens; ours: {} threads, ISA {}; transformers: {}",
        args.runs,
        args.prompt_len,
        args.new_tokens,
        header["threads"],
        header["cpu_isa"].as_str().unwrap_or("-"),
        header["transformers_side"]
            .as_object()
            .map_or("not measured".to_string(), |t| format!(
                "torch {} + transformers {}, {} threads, {}, attention {}, KV cache on",
                t["torch"].as_str().unwrap_or("?"),
                t["transformers"].as_str().unwrap_or("?"),
                t["threads"],
                t["cpu_capability"].as_str().unwrap_or("?"),
                t["attn_implementation"].as_str().unwrap_or("?")
            )),
    );
    for r in rows.iter().filter(|r| r["result"] == "bandwidth") {
        println!(
            "copy bandwidth: {} GB/s (read + written, 1 GiB buffer, {} threads, best of 5 copies \
             per run, best run; runs: {})",
            fmt(&r["gb_per_s_best"], 2),
            r["threads"],
            r["gb_per_s_runs"]
                .as_array()
                .map(|a| a.iter().map(|x| fmt(x, 2)).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        );
    }
    let decode: Vec<&Value> = rows.iter().filter(|r| r["result"] == "decode").collect();
    if !decode.is_empty() {
        println!();
        println!(
            "| shape | params | batch | side | prefill tok/s best | prefill median | decode tok/s \
             best | decode median | decode {}-{} | decode {}-{} |",
            EARLY.0, EARLY.1, LATE.0, LATE.1
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for r in &decode {
            for (side, name) in [("ours", "smalltalk"), ("transformers", "transformers")] {
                let s = &r[side];
                if s.is_null() {
                    continue;
                }
                println!(
                    "| {} | {} | {} | {name} | {} | {} | {} | {} | {} | {} |",
                    r["shape"].as_str().unwrap_or(""),
                    r["params"],
                    r["batch"],
                    fmt(&s["prefill_tokens_per_s_best"], 0),
                    fmt(&s["prefill_tokens_per_s_median"], 0),
                    fmt(&s["decode_tokens_per_s_best"], 1),
                    fmt(&s["decode_tokens_per_s_median"], 1),
                    fmt(&s["decode_early_tokens_per_s_median"], 1),
                    fmt(&s["decode_late_tokens_per_s_median"], 1),
                );
            }
        }
        println!();
        println!(
            "| shape | batch | decode ours/transformers (median) | best | prefill ours/transformers \
             (median) | roofline tok/s (batch 1) | ours / roofline | greedy tokens agreeing |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for r in &decode {
            let batch1 = r["batch"] == 1;
            println!(
                "| {} | {} | {}x | {}x | {}x | {} | {} | {} |",
                r["shape"].as_str().unwrap_or(""),
                r["batch"],
                fmt(&r["decode_ratio_median"], 2),
                fmt(&r["decode_ratio_best"], 2),
                fmt(&r["prefill_ratio_median"], 2),
                if batch1 {
                    fmt(&r["roofline_tokens_per_s"], 1)
                } else {
                    "-".into()
                },
                if batch1 {
                    fmt(&r["roofline_fraction"], 2)
                } else {
                    "-".into()
                },
                r.get("greedy_tokens_agreeing")
                    .map_or("-".into(), |n| format!("{n} of {}", args.new_tokens)),
            );
        }
    }
    let routing: Vec<&Value> = rows.iter().filter(|r| r["result"] == "routing").collect();
    if !routing.is_empty() {
        println!();
        println!(
            "routing: E routers of the pipeline's router shape score the {}-token prefix \
             (ModelSet), then one pipeline-shape expert generates {} tokens from the prompt",
            routing[0]["prefix"], routing[0]["new_tokens"]
        );
        println!(
            "| E | router params | expert params | stacked | route ms best | route ms median | \
             generate ms median | routing share (time, median) | FLOP share | FLOP share at the \
             paper's sizes (router-4.4m, expert-335m) |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for r in &routing {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {:.1}% | {:.1}% | {:.1}% |",
                r["routers"],
                r["router_params"],
                r["expert_params"],
                r["stacked"],
                fmt(&r["route_ms_best"], 2),
                fmt(&r["route_ms_median"], 2),
                fmt(&r["generate_ms_median"], 1),
                100.0 * r["share_median"].as_f64().unwrap_or(f64::NAN),
                100.0 * r["flop_share"].as_f64().unwrap_or(f64::NAN),
                100.0 * r["paper_flop_share"].as_f64().unwrap_or(f64::NAN),
            );
        }
    }
    println!();
    println!("targets:");
    for t in rows.iter().filter(|r| r["result"] == "target") {
        let verdict = match t["pass"].as_bool() {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "not measured",
        };
        let at_most = t["unit"].as_str().is_some_and(|u| u.ends_with("at most"));
        println!(
            "  [{verdict}] {}: {} ({} {})",
            t["target"].as_str().unwrap_or(""),
            fmt(&t["value"], 3),
            if at_most { "goal <" } else { "goal ≥" },
            fmt(&t["goal"], 2),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(step_s: Vec<f64>) -> Timing {
        Timing {
            prompt_len: 4,
            first_token_s: 0.5,
            step_s,
            tokens: vec![],
        }
    }

    #[test]
    fn rates_count_every_sequence_and_skip_the_first_token() {
        let t = timing(vec![0.5, 0.25, 0.25]);
        assert_eq!(prefill_rate(&t, 8), 64.0);
        assert_eq!(decode_rate(&t, 2), 6.0);
    }

    #[test]
    fn position_ranges_map_to_the_steps_that_feed_them() {
        // Step j feeds position 4 + j.
        let t = timing(vec![1.0, 1.0, 0.5, 0.5, 0.25]);
        assert_eq!(position_rate(&t, 1, (4, 6)), Some(1.0));
        assert_eq!(position_rate(&t, 1, (6, 8)), Some(2.0));
        assert_eq!(position_rate(&t, 2, (8, 100)), Some(8.0));
        assert_eq!(position_rate(&t, 1, (0, 4)), None);
        assert_eq!(position_rate(&t, 1, (9, 12)), None);
    }

    #[test]
    fn paper_sizes_count_as_the_presets() {
        assert_eq!(tied_params(32_000.0, 96.0, 12.0, 256.0), 4_401_504.0);
        let share = paper_flop_share(4, &json!({"prefix": 32, "new_tokens": 64}));
        assert!(share > 0.0 && share < 0.1, "{share}");
    }

    #[test]
    fn best_is_the_fastest_run_and_agreement_counts_leading_tokens() {
        assert_eq!(best_median(&[3.0, 1.0, 2.0]), (3.0, 2.0));
        assert_eq!(agreeing_prefix(&[1, 2, 3], &[1, 2, 4]), 2);
        assert_eq!(agreeing_prefix(&[1, 2], &[1, 2, 4]), 2);
    }

    #[test]
    fn the_pipeline_config_gives_both_shapes() {
        let s = pipeline_shapes(&workspace_root().join("configs/pipeline-cpu.toml")).unwrap();
        let e = s.expert.join(" ");
        assert!(e.starts_with("--preset "), "{e}");
        for want in [
            "--set d_model=",
            "--set vocab_size=1024",
            "--set max_seq_len=256",
        ] {
            assert!(e.contains(want), "{e} lacks {want}");
        }
        assert!(s.router.join(" ").contains("--router-set n_layers="));
        assert_eq!(s.prefix, 32);
    }

    #[test]
    fn targets_pass_and_fail_on_the_measured_values() {
        let rows = [
            json!({"result": "decode", "shape": "pipeline", "batch": 1, "decode_ratio_median": 3.5,
                   "params": 1000, "n_layers": 1, "d_model": 1,
                   "ours": {"decode_early_tokens_per_s_median": 100.0,
                            "decode_late_tokens_per_s_median": 95.0}}),
            json!({"result": "decode", "shape": "expert-335m", "batch": 1, "decode_ratio_median": 1.1,
                   "roofline_fraction": 0.7, "ours": {}}),
            json!({"result": "routing", "routers": 4, "share_median": 0.2}),
        ];
        let t = targets(&rows);
        let pass: Vec<Option<bool>> = t.iter().map(|x| x["pass"].as_bool()).collect();
        assert_eq!(
            pass,
            [
                Some(true),
                Some(true),
                Some(false),
                Some(true),
                None,
                Some(false)
            ]
        );
    }
}
