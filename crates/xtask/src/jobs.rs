//! Run independent commands a few at a time (the study's models, the pipeline's experts and
//! dense baselines), each with its share of the cores, its output in a log file, and an ETA
//! over all phases from the work done so far.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util::last_json;

/// One command.
pub struct Job {
    /// Short name, also the log file's name.
    pub label: String,
    /// The command (run with `--json`; its output goes to the log).
    pub cmd: Command,
    /// Estimated work in token-steps (training tokens; a forward pass counts a third).
    pub cost: f64,
    /// Where to save the last JSON line of its output, if anywhere.
    pub capture: Option<PathBuf>,
}

/// Runs phases of independent jobs, `parallel` at a time.
pub struct Runner {
    parallel: usize,
    threads: usize,
    logs: PathBuf,
    started: Instant,
    done: f64,
    total: f64,
}

impl Runner {
    /// A runner for jobs whose costs sum to `total`; logs go to `logs`; `parallel` jobs at once
    /// share `cores` cores.
    pub fn new(parallel: usize, cores: usize, logs: PathBuf, total: f64) -> Result<Self> {
        std::fs::create_dir_all(&logs)?;
        Ok(Self {
            parallel: parallel.max(1),
            threads: (cores / parallel.max(1)).max(1),
            logs,
            started: Instant::now(),
            done: 0.0,
            total,
        })
    }

    /// Run every job of a phase; fails (after the running ones end) when one fails.
    pub fn phase(&mut self, name: &str, jobs: Vec<Job>) -> Result<()> {
        println!("== {name}: {} jobs", jobs.len());
        let mut queue = jobs.into_iter();
        let mut running: Vec<(Job, Child, Instant)> = Vec::new();
        let mut failed: Option<String> = None;
        loop {
            while failed.is_none() && running.len() < self.parallel {
                let Some(mut job) = queue.next() else { break };
                let log = self.log(&job.label);
                let file = std::fs::File::create(&log)
                    .with_context(|| format!("creating {}", log.display()))?;
                job.cmd
                    .env("RAYON_NUM_THREADS", self.threads.to_string())
                    .stdout(Stdio::from(file.try_clone()?))
                    .stderr(Stdio::from(file));
                let child = job
                    .cmd
                    .spawn()
                    .with_context(|| format!("starting {:?}", job.cmd))?;
                running.push((job, child, Instant::now()));
            }
            if running.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            let mut i = 0;
            while i < running.len() {
                match running[i].1.try_wait()? {
                    None => i += 1,
                    Some(status) => {
                        let (job, _, t) = running.swap_remove(i);
                        if status.success() {
                            self.finished(&job, t.elapsed())?;
                        } else {
                            let log = self.log(&job.label);
                            eprintln!("{} failed ({status}); log: {}", job.label, log.display());
                            failed.get_or_insert(job.label);
                        }
                    }
                }
            }
        }
        if let Some(label) = failed {
            bail!("{label} failed; see {}", self.log(&label).display());
        }
        Ok(())
    }

    fn log(&self, label: &str) -> PathBuf {
        self.logs.join(format!("{}.log", label.replace('/', "_")))
    }

    fn finished(&mut self, job: &Job, took: Duration) -> Result<()> {
        if let Some(path) = &job.capture {
            let out = std::fs::read_to_string(self.log(&job.label))?;
            let value = last_json(&out).with_context(|| format!("output of {}", job.label))?;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            smalltalk_stage::atomic::write_file(
                path,
                serde_json::to_string_pretty(&value)?.as_bytes(),
            )?;
        }
        // A job that was already done (rerun of a resumed study) says nothing about speed.
        if took < Duration::from_secs(2) {
            self.total -= job.cost;
        } else {
            self.done += job.cost;
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta = if self.done > 0.0 {
            elapsed * (self.total - self.done).max(0.0) / self.done
        } else {
            f64::NAN
        };
        println!(
            "   {:<40} {:>7.1}s   {:>5.1}% done, elapsed {}, ETA {}",
            job.label,
            took.as_secs_f64(),
            100.0 * self.done / self.total.max(1.0),
            minutes(elapsed),
            minutes(eta)
        );
        Ok(())
    }
}

/// `12m05s`.
pub fn minutes(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "?".into();
    }
    let s = seconds.round() as u64;
    format!("{}m{:02}s", s / 60, s % 60)
}
