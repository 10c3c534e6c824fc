//! `cargo xtask bench partition`: speed of the balanced greedy assignment on a 10M × 32 score
//! matrix (single thread, in process), and how far the greedy is from the optimum on smaller
//! matrices.
//!
//! The scores imitate router log-likelihoods: a per-row base (how predictable the prefix is), a
//! per-expert popularity bias (so the unconstrained argmax is unbalanced and the greedy has to
//! fall back), and per-score noise. Generation is deterministic for `--seed`.

use std::hint::black_box;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use smalltalk_partition::{
    argmax_assign, balanced_assign, equal_capacities, exact_balanced_assign, part_sizes,
    random_balanced_assign, total_score, ScoreMatrix,
};

use smalltalk_stage::stats::min_median;

/// `bench partition` options.
#[derive(Debug, Args)]
pub struct PartitionBenchArgs {
    /// Rows (sequences) of the speed case.
    #[arg(long, default_value_t = 10_000_000)]
    rows: usize,
    /// Experts of the speed case.
    #[arg(long, default_value_t = 32)]
    experts: usize,
    /// Timed runs of each function (report min and median).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Shapes `ROWSxEXPERTS` of the greedy/exact gap cases.
    #[arg(long, value_delimiter = ',', default_values_t = ["2000x8".to_string(), "1000x32".to_string()])]
    gap: Vec<String>,
    /// Seed of the generated scores.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object per measured case.
    #[arg(long)]
    json: bool,
}

/// Run the benchmark.
pub fn run(args: PartitionBenchArgs) -> Result<()> {
    if args.runs == 0 || args.rows == 0 || args.experts == 0 {
        bail!("--runs, --rows and --experts must be positive");
    }
    let mut cases = vec![speed_case(&args)?];
    for shape in &args.gap {
        let (n, e) = shape
            .split_once('x')
            .and_then(|(n, e)| Some((n.parse().ok()?, e.parse().ok()?)))
            .with_context(|| format!("--gap shape `{shape}` is not ROWSxEXPERTS"))?;
        cases.push(gap_case(n, e, args.seed)?);
    }
    for case in &cases {
        if args.json {
            println!("{case}");
        } else {
            print_case(case);
        }
    }
    Ok(())
}

fn speed_case(args: &PartitionBenchArgs) -> Result<Value> {
    let (n, e) = (args.rows, args.experts);
    eprintln!("generating {n} x {e} scores");
    let t = Instant::now();
    let scores = generate(n, e, args.seed);
    let generate_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let m = ScoreMatrix::new(&scores, e)?;
    let validate_s = t.elapsed().as_secs_f64();
    let caps = equal_capacities(n, e);

    let (mut greedy_s, mut argmax_s) = (Vec::new(), Vec::new());
    let (mut greedy, mut argmax) = (Vec::new(), Vec::new());
    for run in 0..args.runs {
        eprintln!("run {}/{}", run + 1, args.runs);
        drop(std::mem::take(&mut greedy));
        let t = Instant::now();
        greedy = black_box(balanced_assign(black_box(&m), &caps)?);
        greedy_s.push(t.elapsed().as_secs_f64());
        drop(std::mem::take(&mut argmax));
        let t = Instant::now();
        argmax = black_box(argmax_assign(black_box(&m)));
        argmax_s.push(t.elapsed().as_secs_f64());
    }
    if part_sizes(&greedy, e)? != caps {
        bail!("balanced_assign missed the equal capacities");
    }
    let fallbacks = greedy.iter().zip(&argmax).filter(|(g, a)| g != a).count();
    let argmax_sizes = part_sizes(&argmax, e)?;
    let (g_min, g_med) = min_median(&greedy_s);
    let (a_min, a_med) = min_median(&argmax_s);
    Ok(json!({
        "case": "balanced-speed", "rows": n, "experts": e, "runs": args.runs, "threads": 1,
        "seconds_min": g_min, "seconds_median": g_med,
        "argmax_seconds_min": a_min, "argmax_seconds_median": a_med,
        "validate_seconds": validate_s, "generate_seconds": generate_s,
        "fallback_fraction": fallbacks as f64 / n as f64,
        "argmax_largest_shard_over_mean": *argmax_sizes.iter().max().unwrap_or(&0) as f64 * e as f64 / n as f64,
        "scores_mb": (n * e * 4) as f64 / 1e6,
        "peak_rss_mb": peak_rss_mb(),
    }))
}

fn gap_case(n: usize, e: usize, seed: u64) -> Result<Value> {
    eprintln!("gap case {n} x {e}");
    let scores = generate(n, e, seed ^ 0x9e37_79b9);
    let m = ScoreMatrix::new(&scores, e)?;
    let caps = equal_capacities(n, e);
    let per_seq = |a: &[u32]| -> Result<f64> { Ok(total_score(&m, a)? / n as f64) };
    let greedy = per_seq(&balanced_assign(&m, &caps)?)?;
    let t = Instant::now();
    let exact_a = exact_balanced_assign(&m, &caps)?;
    let exact_s = t.elapsed().as_secs_f64();
    let exact = per_seq(&exact_a)?;
    let random = per_seq(&random_balanced_assign(n, e, seed)?)?;
    let naive = per_seq(&naive_in_corpus_order(&m, &caps))?;
    let argmax = per_seq(&argmax_assign(&m))?;
    Ok(json!({
        "case": "greedy-gap", "rows": n, "experts": e,
        "greedy_per_seq": greedy, "exact_per_seq": exact, "gap_per_seq": exact - greedy,
        "naive_per_seq": naive, "random_per_seq": random, "argmax_unbalanced_per_seq": argmax,
        "greedy_share_of_random_to_exact": (greedy - random) / (exact - random),
        "exact_seconds": exact_s,
    }))
}

fn print_case(v: &Value) {
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    if v["case"] == "balanced-speed" {
        println!(
            "balanced_assign {} x {} (1 thread, {} runs): min {:.3} s, median {:.3} s; argmax min {:.3} s, median {:.3} s",
            v["rows"], v["experts"], v["runs"], f("seconds_min"), f("seconds_median"),
            f("argmax_seconds_min"), f("argmax_seconds_median"),
        );
        println!(
            "  validation {:.3} s, generation {:.1} s, {:.1}% of rows fell back, argmax largest shard {:.2}x the mean, scores {:.0} MB, peak RSS {:.0} MB",
            f("validate_seconds"), f("generate_seconds"), 100.0 * f("fallback_fraction"),
            f("argmax_largest_shard_over_mean"), f("scores_mb"), f("peak_rss_mb"),
        );
    } else {
        println!(
            "gap {} x {} (mean score per sequence): exact {:.4}, greedy {:.4} (gap {:.4}), corpus-order {:.4}, random {:.4}, unbalanced argmax {:.4}; greedy gets {:.2}% of the random-to-exact gain; exact took {:.3} s",
            v["rows"], v["experts"], f("exact_per_seq"), f("greedy_per_seq"), f("gap_per_seq"),
            f("naive_per_seq"), f("random_per_seq"), f("argmax_unbalanced_per_seq"),
            100.0 * f("greedy_share_of_random_to_exact"), f("exact_seconds"),
        );
    }
}

/// Log-likelihood-like scores: row base in [-500, -300], expert bias in [0, 3] growing with the
/// index, noise ≈ normal with standard deviation 2 (sum of four uniforms).
fn generate(n: usize, e: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let bias: Vec<f32> = (0..e)
        .map(|x| 3.0 * x as f32 / (e.max(2) - 1) as f32)
        .collect();
    let mut scores = Vec::with_capacity(n * e);
    for _ in 0..n {
        let base = -300.0 - 200.0 * (next() >> 40) as f32 / (1u64 << 24) as f32;
        for &b in &bias {
            let r = next();
            let sum: u32 = (0..4).map(|k| ((r >> (16 * k)) & 0xffff) as u32).sum();
            // Sum of four U(0,1) has mean 2 and variance 1/3; scale to standard deviation 2.
            let noise = (sum as f32 / 65536.0 - 2.0) * 2.0 * 3f32.sqrt();
            scores.push(base + b + noise);
        }
    }
    scores
}

/// Fig 1a's naive rule, for comparison: rows in corpus order, each to its best expert with room.
fn naive_in_corpus_order(m: &ScoreMatrix, caps: &[usize]) -> Vec<u32> {
    let mut room = caps.to_vec();
    m.iter_rows()
        .map(|row| {
            let mut arg = usize::MAX;
            for (x, &s) in row.iter().enumerate() {
                if room[x] > 0 && (arg == usize::MAX || s > row[arg]) {
                    arg = x;
                }
            }
            room[arg] -= 1;
            arg as u32
        })
        .collect()
}

/// Peak resident memory of this process (Linux `VmHWM`), in MB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1e3)
}
