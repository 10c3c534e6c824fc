//! `cargo xtask crash-test`: every long stage survives being killed at any instant.
//!
//! On the tiny config and corpus of `smalltalk-tests`, each stage runs once uninterrupted into
//! a reference folder (wall time T) and once more as a control; then, at N seeded instants
//! (one uniformly random instant in each of N equal slices of [0.05·T, T]) it is started
//! afresh, killed (SIGKILL; also SIGTERM for the stages that checkpoint on a stop), rerun to
//! completion and its folder compared with the reference. Every run of a stage writes to the
//! same relative output path from the work folder, so files that name paths agree.

use std::fs::{self, File};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::tree_compare::compare;
use crate::util::build_debug_cli;

/// Crash-test options.
#[derive(Debug, Args)]
pub struct CrashTestArgs {
    /// SIGKILL instants per stage: one uniformly random instant in each of N equal slices of
    /// [0.05·T, T], T the stage's uninterrupted wall time.
    #[arg(long, default_value_t = 6)]
    instants: usize,
    /// SIGTERM instants per stage that checkpoints on a stop (all but data), stratified alike.
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

/// The stages under test, in order, each named by its first word: the arguments (paths
/// relative to the work folder) but `--config` and `--out`. All but `data` checkpoint and exit
/// with status 143 on SIGTERM.
const STAGES: [&str; 5] = [
    "data build --corpus corpus.jsonl --tokenizer ref/tokenizer.json",
    "routers train --data ref/data/out",
    "partition --data ref/data/out --routers ref/routers/out",
    "expert train --data ref/data/out --partition ref/partition/out --expert 0",
    "dense train --data ref/data/out --experts 2",
];

/// One run of the table: a stage, the signal (`none` for the control run) and when it was
/// sent, how the signalled run ended, and what differed after the rerun.
struct Row {
    stage: &'static str,
    signal: &'static str,
    at_ms: Option<u128>,
    status: String,
    interrupted: bool,
    difference: Option<String>,
}

/// Run the crash test.
pub fn run(args: CrashTestArgs) -> Result<()> {
    let started = Instant::now();
    let name_of = |stage: &'static str| stage.split(' ').next().unwrap_or_default();
    if let Some(name) = args
        .only
        .iter()
        .find(|n| !STAGES.map(name_of).contains(&n.as_str()))
    {
        bail!("--only {name}: not one of data, routers, partition, expert, dense");
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
    smalltalk_tests::write_two_domain_corpus(&work);
    fs::write(work.join("config.toml"), smalltalk_tests::TINY_CONFIG)?;
    let logs = work.join("logs");
    fs::create_dir_all(&logs)?;
    let smalltalk = |args: &str| {
        let mut cmd = Command::new(&bin);
        cmd.current_dir(&work).args(args.split_whitespace());
        cmd.args(["--config", "config.toml"]);
        cmd
    };
    let mut tokenizer = smalltalk("data tokenizer --corpus corpus.jsonl --out ref/tokenizer.json");
    run_ok(&mut tokenizer, &logs.join("tokenizer.log")).context("data tokenizer")?;
    println!(
        "crash test in {}: {} SIGKILL + {} SIGTERM instants per stage, seed {}",
        work.display(),
        args.instants,
        args.term_instants,
        args.seed
    );
    println!(
        "{:<10} {:<8} {:>10}  {:<10} result",
        "stage", "signal", "instant_ms", "killed run"
    );
    let mut rows = Vec::new();
    for (index, stage_args) in STAGES.into_iter().enumerate() {
        let name = name_of(stage_args);
        let (run_dir, reference) = (work.join("run").join(name), work.join("ref").join(name));
        let command = || {
            let mut cmd = smalltalk(stage_args);
            cmd.args(["--out", &format!("run/{name}/out")]);
            cmd
        };
        let log = |label: &str| logs.join(format!("{name}-{label}.log"));
        fs::create_dir_all(&run_dir)?;
        let t = Instant::now();
        run_ok(&mut command(), &log("reference")).with_context(|| format!("{name} reference"))?;
        let total = t.elapsed();
        fs::rename(&run_dir, &reference)?;
        println!("{name:<10} reference run: {} ms", total.as_millis());
        if !args.only.is_empty() && !args.only.iter().any(|s| s == name) {
            continue;
        }
        let mut rng = SplitMix(args.seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut trials = vec![("none", None)];
        trials.extend(instants(&mut rng, total, args.instants).map(|d| ("SIGKILL", Some(d))));
        if name != "data" {
            let term = instants(&mut rng, total, args.term_instants);
            trials.extend(term.map(|d| ("SIGTERM", Some(d))));
        }
        for (n, (signal, at)) in trials.into_iter().enumerate() {
            fs::create_dir_all(&run_dir)?;
            let label = format!("{n}-{}", signal.to_lowercase());
            let mut row = Row {
                stage: name,
                signal,
                at_ms: at.map(|d| d.as_millis()),
                status: "-".into(),
                interrupted: false,
                difference: None,
            };
            if let Some(at) = at {
                let sig = if signal == "SIGKILL" {
                    libc::SIGKILL
                } else {
                    libc::SIGTERM
                };
                let status = run_logged(&mut command(), &log(&label), Some((sig, at)))?;
                let expected = status.signal() == Some(sig)
                    || sig == libc::SIGTERM && status.code() == Some(143);
                row.status = describe(status);
                row.interrupted = status.code() != Some(0);
                if !expected && status.code() != Some(0) {
                    let why = format!("the {signal} run ended with {}: ", row.status);
                    row.difference = Some(why + &log_tail(&log(&label)));
                }
            }
            if row.difference.is_none() {
                row.difference = match run_ok(&mut command(), &log(&format!("{label}-rerun"))) {
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
                "{name:<10} {signal:<8} {at:>10}  {:<10} {result}",
                row.status
            );
            if row.difference.is_some() {
                fs::create_dir_all(work.join("failed"))?;
                fs::rename(
                    &run_dir,
                    work.join("failed").join(format!("{name}-{label}")),
                )?;
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
        let signalled = of().filter(|r| r.at_ms.is_some()).count();
        let killed = of().filter(|r| r.interrupted).count();
        let same = of().filter(|r| r.difference.is_none()).count();
        println!(
            "  {name:<10} {signalled} signalled runs ({killed} interrupted, {} had finished); \
             {same} of {} reruns and control same",
            signalled - killed,
            of().count()
        );
    }
    let failures: Vec<&Row> = rows.iter().filter(|r| r.difference.is_some()).collect();
    for r in &failures {
        let at = r.at_ms.map_or("-".into(), |ms| ms.to_string());
        let what = r.difference.as_deref().unwrap_or_default();
        println!(
            "\nDIFFERENT: {} {} at {at} ms (killed run: {}):",
            r.stage, r.signal, r.status
        );
        println!("  {}", what.replace('\n', "\n  "));
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
        0.95 * total.as_secs_f64() / n as f64,
    );
    let draws: Vec<f64> = (0..n).map(|i| i as f64 + rng.unit()).collect();
    draws
        .into_iter()
        .map(move |x| Duration::from_secs_f64(lo + x * width))
}

/// SplitMix64: a tiny seeded generator (the instants need no more).
struct SplitMix(u64);

impl SplitMix {
    /// A uniform draw in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Run `cmd` with its output in `log`; with `signal = Some((sig, at))`, send `sig` `at` after
/// the start unless it has finished by then.
fn run_logged(
    cmd: &mut Command,
    log: &Path,
    signal: Option<(i32, Duration)>,
) -> Result<ExitStatus> {
    let file = File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    if let Some((signal, at)) = signal {
        std::thread::sleep(at.saturating_sub(start.elapsed()));
        if child.try_wait()?.is_none() {
            // SAFETY: `kill` has no memory effects; the child is not reaped yet, so its id is
            // still its own.
            if unsafe { libc::kill(child.id() as libc::pid_t, signal) } != 0 {
                bail!("kill {}: {}", child.id(), std::io::Error::last_os_error());
            }
        }
    }
    Ok(child.wait()?)
}

/// Run `cmd` to completion; fail, with the end of its log, unless it exits with status 0.
fn run_ok(cmd: &mut Command, log: &Path) -> Result<()> {
    let status = run_logged(cmd, log, None)?;
    if !status.success() {
        bail!("exited with {}: {}", describe(status), log_tail(log));
    }
    Ok(())
}

/// An exit status as the table shows it: the code, or the signal that ended the process.
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => code.to_string(),
        (None, Some(libc::SIGKILL)) => "SIGKILL".into(),
        (None, Some(libc::SIGTERM)) => "SIGTERM".into(),
        (_, sig) => format!("signal {sig:?}"),
    }
}

/// The last non-empty line of a log, and where the log is.
fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let last = text.lines().rev().find(|l| !l.trim().is_empty());
    format!(
        "{} (log: {})",
        last.unwrap_or("(empty log)").trim(),
        log.display()
    )
}
