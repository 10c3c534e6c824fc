//! `cargo xtask crash-test`: every long stage survives being killed at any instant.
//!
//! On the tiny config of `smalltalk-tests`, each stage runs once uninterrupted into a reference
//! folder (wall time T), once more as a control, then at N seeded, stratified instants in
//! [0.05·T, T] it is started afresh, killed (SIGKILL; SIGTERM too for the stages that
//! checkpoint on a stop), rerun to completion and its folder compared with the reference.
//! Every run of a stage uses the same output path, so files that name their own folder agree.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;

use crate::util::workspace_root;

/// Crash-test options.
#[derive(Debug, Args)]
pub struct CrashTestArgs {
    /// SIGKILL instants per stage: one uniformly random instant in each of N equal slices of
    /// [0.05·T, T], T the stage's uninterrupted wall time.
    #[arg(long, default_value_t = 6)]
    instants: usize,
    /// SIGTERM instants per stage that checkpoints on a stop (routers, partition, expert,
    /// dense), stratified the same way.
    #[arg(long, default_value_t = 2)]
    term_instants: usize,
    /// Seed of the instants.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Work folder to keep (absent or empty); default: a temporary folder, removed after a
    /// clean run and kept when a comparison fails.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Crash-test only these stages (data, routers, partition, expert, dense); the earlier
    /// stages still run once for their reference outputs.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// The stages under test, in order.
const STAGES: [&str; 5] = ["data", "routers", "partition", "expert", "dense"];

/// Keys whose values are wall-clock measurements, removed from JSON before comparing.
const TIMING_KEYS: [&str; 4] = ["seconds", "elapsed_s", "tokens_per_s", "eta_s"];

/// One stage under test: its name, its arguments (all but `--out`), and whether it checkpoints
/// and exits with status 143 on SIGTERM.
struct Stage {
    name: &'static str,
    args: Vec<OsString>,
    term: bool,
}

/// One row of the table.
struct Row {
    stage: &'static str,
    signal: &'static str,
    at_ms: Option<u64>,
    status: String,
    difference: Option<String>,
    interrupted: bool,
}

/// Run the crash test.
pub fn run(args: CrashTestArgs) -> Result<()> {
    let started = Instant::now();
    if args.instants == 0 {
        bail!("--instants must be at least 1");
    }
    if let Some(name) = args.only.iter().find(|n| !STAGES.contains(&n.as_str())) {
        bail!("--only {name}: not a stage ({})", STAGES.join(", "));
    }
    let bin = build_debug_cli()?;
    let mut temp = None;
    let work = match &args.keep {
        Some(dir) => {
            fs::create_dir_all(dir)?;
            if fs::read_dir(dir)?.next().is_some() {
                bail!("--keep {}: the folder is not empty", dir.display());
            }
            dir.canonicalize()?
        }
        None => {
            let dir = tempfile::Builder::new().prefix("crash-test-").tempdir()?;
            temp.insert(dir).path().to_path_buf()
        }
    };
    let corpus = smalltalk_tests::write_two_domain_corpus(&work);
    let config = work.join("config.toml");
    fs::write(&config, smalltalk_tests::TINY_CONFIG)?;
    let (refs, logs) = (work.join("ref"), work.join("logs"));
    fs::create_dir_all(&refs)?;
    fs::create_dir_all(&logs)?;
    let tokenizer = refs.join("tokenizer.json");
    let mut cmd = Command::new(&bin);
    cmd.args(["data", "tokenizer", "--corpus"]).arg(&corpus);
    cmd.arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&tokenizer);
    run_logged(&mut cmd, &logs.join("tokenizer.log")).context("data tokenizer")?;

    let out_of = |stage: &str| refs.join(stage).join("out").into_os_string();
    let os = |s: &str| OsString::from(s);
    let cfg = config.clone().into_os_string();
    let stages = [
        Stage {
            name: "data",
            args: vec![
                os("data"),
                os("build"),
                os("--corpus"),
                corpus.into_os_string(),
            ]
            .into_iter()
            .chain([
                os("--config"),
                cfg.clone(),
                os("--tokenizer"),
                tokenizer.into(),
            ])
            .collect(),
            term: false,
        },
        Stage {
            name: "routers",
            args: vec![os("routers"), os("train"), os("--data"), out_of("data")],
            term: true,
        },
        Stage {
            name: "partition",
            args: vec![os("partition"), os("--data"), out_of("data")]
                .into_iter()
                .chain([os("--routers"), out_of("routers")])
                .collect(),
            term: true,
        },
        Stage {
            name: "expert",
            args: vec![os("expert"), os("train"), os("--data"), out_of("data")]
                .into_iter()
                .chain([
                    os("--partition"),
                    out_of("partition"),
                    os("--expert"),
                    os("0"),
                ])
                .collect(),
            term: true,
        },
        Stage {
            name: "dense",
            args: vec![os("dense"), os("train"), os("--data"), out_of("data")]
                .into_iter()
                .chain([os("--experts"), os("2")])
                .collect(),
            term: true,
        },
    ];
    println!(
        "crash test: work folder {}, {} SIGKILL + {} SIGTERM instants per stage, seed {}",
        work.display(),
        args.instants,
        args.term_instants,
        args.seed
    );
    println!(
        "{:<10} {:<8} {:>10}  {:<14} result",
        "stage", "signal", "instant_ms", "killed run"
    );
    let mut rows = Vec::new();
    let scratch = work.join("run");
    for (index, stage) in stages.iter().enumerate() {
        let command = |out: &Path| {
            let mut cmd = Command::new(&bin);
            cmd.args(&stage.args).arg("--config").arg(&config);
            cmd.arg("--out").arg(out);
            cmd
        };
        let (run_dir, out) = (
            scratch.join(stage.name),
            scratch.join(stage.name).join("out"),
        );
        let reference = refs.join(stage.name);
        let log = |label: &str| logs.join(format!("{}-{label}.log", stage.name));
        fs::create_dir_all(&run_dir)?;
        let t = Instant::now();
        run_logged(&mut command(&out), &log("reference"))
            .with_context(|| format!("reference run of {}", stage.name))?;
        let total = t.elapsed();
        fs::rename(&run_dir, &reference)?;
        println!(
            "{:<10} reference run took {} ms",
            stage.name,
            total.as_millis()
        );
        if !args.only.is_empty() && !args.only.iter().any(|s| s == stage.name) {
            continue;
        }
        let mut trials: Vec<(&'static str, Option<Duration>)> = vec![("none", None)];
        let mut rng = SplitMix(args.seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        trials.extend(instants(&mut rng, total, args.instants).map(|d| ("SIGKILL", Some(d))));
        if stage.term {
            trials.extend(
                instants(&mut rng, total, args.term_instants).map(|d| ("SIGTERM", Some(d))),
            );
        }
        for (n, (signal, at)) in trials.into_iter().enumerate() {
            fs::create_dir_all(&run_dir)?;
            let label = format!("{}-{n}", signal.to_lowercase());
            let mut row = Row {
                stage: stage.name,
                signal,
                at_ms: at.map(|d| d.as_millis() as u64),
                status: "-".into(),
                difference: None,
                interrupted: false,
            };
            if let Some(at) = at {
                let status = run_and_signal(&mut command(&out), &log(&label), at, signal)?;
                row.status = describe(status);
                row.interrupted = status.code() != Some(0);
                let expected = match signal {
                    "SIGKILL" => status.signal() == Some(libc::SIGKILL),
                    _ => status.code() == Some(143) || status.signal() == Some(libc::SIGTERM),
                };
                if !expected && status.code() != Some(0) {
                    row.difference = Some(format!(
                        "the {signal}ed run exited with {}: {}",
                        row.status,
                        log_tail(&log(&label))
                    ));
                }
            }
            if row.difference.is_none() {
                let rerun = log(&format!("{label}-rerun"));
                row.difference = match run_logged(&mut command(&out), &rerun) {
                    Err(e) => Some(format!("the rerun failed: {e:#}")),
                    Ok(()) => compare(&reference, &run_dir)?,
                };
            }
            let result = match &row.difference {
                None => "same".to_string(),
                Some(d) => format!("DIFFERENT: {}", d.lines().next().unwrap_or_default()),
            };
            let at = row.at_ms.map_or("-".into(), |ms| ms.to_string());
            println!(
                "{:<10} {:<8} {:>10}  {:<14} {result}",
                row.stage, row.signal, at, row.status
            );
            if row.difference.is_some() {
                let kept = work.join("failed").join(format!("{}-{label}", stage.name));
                fs::create_dir_all(kept.parent().unwrap())?;
                fs::rename(&run_dir, &kept)?;
            } else {
                fs::remove_dir_all(&run_dir)?;
            }
            rows.push(row);
        }
    }
    let failed = summarize(&rows, started.elapsed());
    if failed > 0 {
        if let Some(temp) = temp {
            println!("work folder kept for inspection: {}", temp.keep().display());
        }
        bail!(
            "{failed} of {} crash-test runs differ from their reference",
            rows.len()
        );
    }
    Ok(())
}

/// Print the per-stage summary and every difference; return the number of failed runs.
fn summarize(rows: &[Row], took: Duration) -> usize {
    println!("\nsummary:");
    let mut names: Vec<&str> = rows.iter().map(|r| r.stage).collect();
    names.dedup();
    for name in names {
        let of = || rows.iter().filter(move |r| r.stage == name);
        let killed = of().filter(|r| r.interrupted).count();
        let failed = of().filter(|r| r.difference.is_some()).count();
        let signalled = of().filter(|r| r.at_ms.is_some()).count();
        println!(
            "  {name:<10} {signalled} signalled runs ({killed} interrupted, {} finished first); {} of {} comparisons same",
            signalled - killed,
            of().count() - failed,
            of().count()
        );
    }
    let failures: Vec<&Row> = rows.iter().filter(|r| r.difference.is_some()).collect();
    for r in &failures {
        println!(
            "\nDIFFERENT: {} {} at {} ms (killed run: {}):\n  {}",
            r.stage,
            r.signal,
            r.at_ms.unwrap_or(0),
            r.status,
            r.difference
                .as_deref()
                .unwrap_or_default()
                .replace('\n', "\n  ")
        );
    }
    println!("\ncrash test took {:.1} s", took.as_secs_f64());
    if failures.is_empty() {
        println!("all {} runs match their reference", rows.len());
    }
    failures.len()
}

/// `n` instants, one uniformly random in each of `n` equal slices of [0.05·T, T].
fn instants(rng: &mut SplitMix, total: Duration, n: usize) -> impl Iterator<Item = Duration> {
    let (lo, width) = (
        0.05 * total.as_secs_f64(),
        0.95 * total.as_secs_f64() / n.max(1) as f64,
    );
    let draws: Vec<f64> = (0..n).map(|_| rng.unit()).collect();
    draws
        .into_iter()
        .enumerate()
        .map(move |(i, u)| Duration::from_secs_f64(lo + (i as f64 + u) * width))
}

/// SplitMix64: a tiny seeded generator (the instants need no more).
struct SplitMix(u64);

impl SplitMix {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Build the dev-profile `smalltalk` binary (the test builds' artifacts) and return its path.
fn build_debug_cli() -> Result<PathBuf> {
    let root = workspace_root();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&root)
        .args(["build", "-p", "smalltalk-cli", "--bin", "smalltalk"]);
    if !cmd.status().context("running cargo build")?.success() {
        bail!("cargo build of smalltalk-cli failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("debug").join("smalltalk"))
}

/// Spawn `cmd` with stdout and stderr into `log`.
fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<std::process::Child> {
    let file = File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    cmd.spawn().with_context(|| format!("starting {cmd:?}"))
}

/// Run `cmd` to completion; fail, with the end of its log, unless it exits with status 0.
fn run_logged(cmd: &mut Command, log: &Path) -> Result<()> {
    let status = spawn_logged(cmd, log)?.wait()?;
    if !status.success() {
        bail!("exited with {}: {}", describe(status), log_tail(log));
    }
    Ok(())
}

/// Start `cmd`, send `signal` (`SIGKILL` or `SIGTERM`) `at` after the start unless it has
/// finished by then, and return its exit status.
fn run_and_signal(cmd: &mut Command, log: &Path, at: Duration, signal: &str) -> Result<ExitStatus> {
    let start = Instant::now();
    let mut child = spawn_logged(cmd, log)?;
    std::thread::sleep(at.saturating_sub(start.elapsed()));
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    if signal == "SIGKILL" {
        child.kill()?;
    } else if unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) } != 0 {
        bail!(
            "kill -TERM {}: {}",
            child.id(),
            std::io::Error::last_os_error()
        );
    }
    Ok(child.wait()?)
}

/// An exit status as the table shows it: the code, or the signal that ended the process.
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => code.to_string(),
        (None, Some(libc::SIGKILL)) => "SIGKILL".into(),
        (None, Some(libc::SIGTERM)) => "SIGTERM".into(),
        (None, Some(sig)) => format!("signal {sig}"),
        (None, None) => "?".into(),
    }
}

/// The last non-empty line of a log.
fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let last = text.lines().rev().find(|l| !l.trim().is_empty());
    format!(
        "{} (log: {})",
        last.unwrap_or("(empty log)").trim(),
        log.display()
    )
}

/// Every path under `dir` (relative, `/`-separated; folders end with `/`), `.lock` files left
/// out.
fn listing(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let path = entry?.path();
            let rel = path.strip_prefix(dir)?.to_string_lossy().replace('\\', "/");
            if path.is_dir() {
                found.insert(format!("{rel}/"), path.clone());
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != ".lock") {
                found.insert(rel, path);
            }
        }
    }
    Ok(found)
}

/// The first difference between the reference folder and a rerun's folder, if any.
fn compare(reference: &Path, got: &Path) -> Result<Option<String>> {
    let (want, have) = (listing(reference)?, listing(got)?);
    for (side, list) in [("the reference", &want), ("the rerun's folder", &have)] {
        if let Some(tmp) = list.keys().find(|p| p.contains(".tmp-")) {
            return Ok(Some(format!("leftover temporary {tmp} in {side}")));
        }
    }
    if let Some(p) = want.keys().find(|p| !have.contains_key(*p)) {
        return Ok(Some(format!("{p}: missing after the crash and rerun")));
    }
    if let Some(p) = have.keys().find(|p| !want.contains_key(*p)) {
        return Ok(Some(format!("{p}: not in the reference")));
    }
    for (rel, path) in want.iter().filter(|(p, _)| !p.ends_with('/')) {
        if let Some(d) = file_difference(path, &have[rel])? {
            return Ok(Some(format!("{rel}: {d}")));
        }
    }
    Ok(None)
}

/// How two files differ: JSON and JSON lines without their timing keys, text by line, other
/// files by byte.
fn file_difference(a: &Path, b: &Path) -> Result<Option<String>> {
    let (x, y) = (fs::read(a)?, fs::read(b)?);
    if x == y {
        return Ok(None);
    }
    let ext = a.extension().and_then(|e| e.to_str()).unwrap_or_default();
    let (Ok(xs), Ok(ys)) = (std::str::from_utf8(&x), std::str::from_utf8(&y)) else {
        let at = x.iter().zip(&y).position(|(p, q)| p != q);
        let at = at.unwrap_or(x.len().min(y.len()));
        return Ok(Some(format!(
            "bytes differ from offset {at} ({} vs {} bytes)",
            x.len(),
            y.len()
        )));
    };
    let normal = |text: &str| -> Vec<String> {
        match ext {
            "json" => match serde_json::from_str::<Value>(text) {
                Ok(v) => serde_json::to_string_pretty(&strip(v))
                    .unwrap()
                    .lines()
                    .map(String::from)
                    .collect(),
                Err(_) => text.lines().map(String::from).collect(),
            },
            "jsonl" => text
                .lines()
                .map(|l| match serde_json::from_str::<Value>(l) {
                    Ok(v) => strip(v).to_string(),
                    Err(_) => l.to_string(),
                })
                .collect(),
            _ => text.lines().map(String::from).collect(),
        }
    };
    let (p, q) = (normal(xs), normal(ys));
    let n = p.len().max(q.len());
    let Some(i) = (0..n).find(|&i| p.get(i) != q.get(i)) else {
        return Ok(None);
    };
    let show = |l: Option<&String>| match l {
        None => "(no line)".to_string(),
        Some(l) if l.chars().count() > 240 => {
            format!("{}…", l.chars().take(240).collect::<String>())
        }
        Some(l) => l.clone(),
    };
    Ok(Some(format!(
        "first differing line {} ({} vs {} lines)\n  reference: {}\n  rerun:     {}",
        i + 1,
        p.len(),
        q.len(),
        show(p.get(i)),
        show(q.get(i))
    )))
}

/// `value` without the timing keys, at any depth.
fn strip(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| !TIMING_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k, strip(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(strip).collect()),
        other => other,
    }
}
