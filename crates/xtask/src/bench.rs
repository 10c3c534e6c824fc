//! `cargo xtask bench …`: speed measured next to the reference implementation in the same run.
//! Benchmarks are not tests: they report numbers (min and median of several runs), never fail on
//! a goal.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use smalltalk_stage::stats::min_median;

use crate::util::{build_cli, last_json, run_capture, workspace_root};

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchTask {
    /// Tokenization + sharding throughput (MB/s) and peak memory, next to the Python `tokenizers`
    /// package on the same file with the same tokenizer.json.
    Data(DataBenchArgs),
    /// Decoder-LM training tokens/s and scoring sequences/s (router and a small expert) next to
    /// the PyTorch reference `bench/lm_torch.py` on the same shape.
    Lm(crate::bench_lm::LmBenchArgs),
    /// Matrix-product GFLOP/s at each preset's training shapes (the roofline of `bench lm`) next
    /// to `F.linear` at the same shapes (`bench/matmul_torch.py`).
    Matmul(crate::bench_matmul::MatmulBenchArgs),
    /// KV-cached greedy generation (prefill and decode tokens/s at batch 1 and 8, the pipeline's
    /// expert and expert-335m) next to `transformers` `generate` on the same weights
    /// (`bench/generate_hf.py`), the copy-bandwidth roofline and the routing overhead.
    Generate(crate::bench_generate::GenerateBenchArgs),
    /// Balanced greedy assignment on a 10M x 32 score matrix (one thread, in process) and its
    /// gap to the exact optimum on smaller matrices.
    Partition(crate::bench_partition::PartitionBenchArgs),
}

/// `bench data` options.
#[derive(Debug, Args)]
pub struct DataBenchArgs {
    /// Corpus to measure on (JSON lines, .gz allowed).
    #[arg(long, default_value = "../shared/corpus/mix-large.jsonl.gz")]
    corpus: PathBuf,
    /// A smaller corpus run once to show that memory does not grow with corpus size.
    #[arg(long, default_value = "corpus/mix-small.jsonl.gz")]
    small_corpus: PathBuf,
    /// Runs of each side (report min and median).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Vocabulary of the BPE trained for the benchmark (on the small corpus).
    #[arg(long, default_value_t = 32_000)]
    vocab_size: usize,
    /// Python interpreter with the `tokenizers` package (reference side).
    #[arg(long, env = "SMALLTALK_BENCH_PYTHON", default_value = "python3")]
    python: String,
    /// Print one JSON object per measured case.
    #[arg(long)]
    json: bool,
}

/// Run a benchmark.
pub fn run(task: BenchTask) -> Result<()> {
    match task {
        BenchTask::Data(args) => bench_data(args),
        BenchTask::Lm(args) => crate::bench_lm::run(args),
        BenchTask::Matmul(args) => crate::bench_matmul::run(args),
        BenchTask::Generate(args) => crate::bench_generate::run(args),
        BenchTask::Partition(args) => crate::bench_partition::run(args),
    }
}

fn uncompressed_bytes(path: &Path) -> Result<u64> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    Ok(std::io::copy(&mut reader, &mut std::io::sink())?)
}

struct Measured {
    seconds: Vec<f64>,
    peak_rss: Vec<f64>,
}

fn bench_data(args: DataBenchArgs) -> Result<()> {
    let root = workspace_root();
    let abs = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            root.join(p)
        }
    };
    let (corpus, small) = (abs(&args.corpus), abs(&args.small_corpus));
    let bin = build_cli(&[])?;
    let work = tempdir_in(&root.join("target"))?;
    let tokenizer = work.join("tokenizer.json");
    eprintln!(
        "training the benchmark tokenizer (vocabulary {}) on {}",
        args.vocab_size,
        small.display()
    );
    run_capture(
        Command::new(&bin)
            .args(["--json", "data", "tokenizer", "--corpus"])
            .arg(&small)
            .arg("--vocab-size")
            .arg(args.vocab_size.to_string())
            .arg("--out")
            .arg(&tokenizer),
    )?;
    let mb = uncompressed_bytes(&corpus)? as f64 / 1e6;

    let ours = |input: &Path, runs: usize| -> Result<Measured> {
        let mut m = Measured {
            seconds: vec![],
            peak_rss: vec![],
        };
        for i in 0..runs {
            let out = work.join(format!("data-{i}"));
            let _ = std::fs::remove_dir_all(&out);
            let stdout = run_capture(
                Command::new(&bin)
                    .args(["--json", "data", "build", "--corpus"])
                    .arg(input)
                    .arg("--tokenizer")
                    .arg(&tokenizer)
                    .arg("--out")
                    .arg(&out),
            )?;
            let v = last_json(&stdout)?;
            m.seconds.push(v["seconds"].as_f64().context("seconds")?);
            m.peak_rss
                .push(v["peak_rss_bytes"].as_f64().context("peak_rss_bytes")?);
            std::fs::remove_dir_all(&out)?;
        }
        Ok(m)
    };
    let script = root.join("bench/data_tokenizers.py");
    let python_ok = Command::new(&args.python)
        .args(["-c", "import tokenizers"])
        .output()
        .is_ok_and(|o| o.status.success());
    let theirs = |runs: usize| -> Result<Measured> {
        let mut m = Measured {
            seconds: vec![],
            peak_rss: vec![],
        };
        for _ in 0..runs {
            let stdout = run_capture(
                Command::new(&args.python)
                    .arg(&script)
                    .arg(&corpus)
                    .arg(&tokenizer)
                    .arg(work.join("py.tokens")),
            )?;
            let v = last_json(&stdout)?;
            m.seconds.push(v["seconds"].as_f64().context("seconds")?);
            m.peak_rss
                .push(v["peak_rss_bytes"].as_f64().context("peak_rss_bytes")?);
        }
        Ok(m)
    };

    // Interleave so that machine noise hits both sides alike.
    let (mut ours_all, mut theirs_all) = (
        Measured {
            seconds: vec![],
            peak_rss: vec![],
        },
        Measured {
            seconds: vec![],
            peak_rss: vec![],
        },
    );
    for _ in 0..args.runs {
        let o = ours(&corpus, 1)?;
        ours_all.seconds.extend(o.seconds);
        ours_all.peak_rss.extend(o.peak_rss);
        if python_ok {
            let t = theirs(1)?;
            theirs_all.seconds.extend(t.seconds);
            theirs_all.peak_rss.extend(t.peak_rss);
        }
    }
    let small_run = ours(&small, 1)?;
    let (o_min, o_med) = min_median(&ours_all.seconds);
    let mbps = |s: f64| mb / s;
    let ours_rss = ours_all.peak_rss.iter().cloned().fold(0.0, f64::max);
    let mut case = serde_json::json!({
        "case": "data-build", "corpus": args.corpus, "corpus_mb": mb, "runs": args.runs, "vocab_size": args.vocab_size,
        "mb_per_s_best": mbps(o_min), "mb_per_s_median": mbps(o_med), "peak_rss_mb": ours_rss / 1e6,
        "small_corpus_peak_rss_mb": small_run.peak_rss[0] / 1e6,
    });
    if python_ok {
        let (p_min, p_med) = min_median(&theirs_all.seconds);
        let p_rss = theirs_all.peak_rss.iter().cloned().fold(0.0, f64::max);
        case["python_mb_per_s_best"] = serde_json::json!(mbps(p_min));
        case["python_mb_per_s_median"] = serde_json::json!(mbps(p_med));
        case["python_peak_rss_mb"] = serde_json::json!(p_rss / 1e6);
        case["ratio_best"] = serde_json::json!(p_min / o_min);
        case["ratio_median"] = serde_json::json!(p_med / o_med);
    } else {
        case["python"] = serde_json::json!(format!(
            "`{}` cannot import tokenizers: reference not measured",
            args.python
        ));
    }
    let _ = std::fs::remove_dir_all(&work);
    if args.json {
        println!("{case}");
        return Ok(());
    }
    println!(
        "data stage on {} ({mb:.1} MB uncompressed), {} runs each, vocabulary {}",
        args.corpus.display(),
        args.runs,
        args.vocab_size
    );
    println!("| side | MB/s best | MB/s median | peak RSS |");
    println!("|---|---|---|---|");
    println!(
        "| smalltalk data build | {:.2} | {:.2} | {:.0} MB |",
        mbps(o_min),
        mbps(o_med),
        ours_rss / 1e6
    );
    if python_ok {
        println!(
            "| Python tokenizers | {:.2} | {:.2} | {:.0} MB |",
            case["python_mb_per_s_best"].as_f64().unwrap_or(0.0),
            case["python_mb_per_s_median"].as_f64().unwrap_or(0.0),
            case["python_peak_rss_mb"].as_f64().unwrap_or(0.0)
        );
        println!(
            "ratio (ours / Python): best {:.2}x, median {:.2}x",
            case["ratio_best"].as_f64().unwrap_or(0.0),
            case["ratio_median"].as_f64().unwrap_or(0.0)
        );
    } else {
        println!("Python reference not measured: {}", case["python"]);
    }
    println!(
        "peak RSS on the small corpus ({}): {:.0} MB",
        args.small_corpus.display(),
        small_run.peak_rss[0] / 1e6
    );
    Ok(())
}

fn tempdir_in(parent: &Path) -> Result<PathBuf> {
    let dir = parent.join(format!("bench-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
