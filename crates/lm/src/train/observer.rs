//! Watching a training run: per-step metrics, a progress bar and a JSONL log.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::atomic::write_bytes_atomic;
use crate::error::{LmError, Result};

/// What one optimizer step did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepMetrics {
    /// Steps completed, counting this one (1-based).
    pub step: usize,
    /// Steps in the whole run.
    pub total_steps: usize,
    /// Mean next-token loss (nats) over the step's non-pad targets.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Non-pad targets in this step.
    pub tokens: u64,
    /// Non-pad targets trained on since the start of the run (including resumed steps).
    pub tokens_seen: u64,
    /// Targets per second since this process started training.
    pub tokens_per_s: f64,
    /// Seconds since this process started training.
    pub elapsed_s: f64,
    /// Estimated seconds to `total_steps` at the current pace.
    pub eta_s: f64,
}

/// Receives training events. All methods have empty defaults. Returning
/// `ControlFlow::Break(())` from [`on_step`](Self::on_step) asks the trainer to stop after
/// that step: it writes a checkpoint and returns, and a rerun resumes from there.
pub trait TrainObserver {
    /// Training starts (or resumes) at `start_step` of `total_steps`.
    fn on_start(&mut self, _start_step: usize, _total_steps: usize) {}
    /// A step finished.
    fn on_step(&mut self, _metrics: &StepMetrics) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
    /// A checkpoint was written.
    fn on_checkpoint(&mut self, _step: usize, _dir: &Path) {}
    /// The run returned (finished or stopped) at `step`.
    fn on_finish(&mut self, _step: usize) {}
}

/// Ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl TrainObserver for NoopObserver {}

impl<A: TrainObserver, C: TrainObserver> TrainObserver for (A, C) {
    fn on_start(&mut self, start: usize, total: usize) {
        self.0.on_start(start, total);
        self.1.on_start(start, total);
    }
    fn on_step(&mut self, m: &StepMetrics) -> ControlFlow<()> {
        let a = self.0.on_step(m);
        let c = self.1.on_step(m);
        if a.is_break() || c.is_break() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
    fn on_checkpoint(&mut self, step: usize, dir: &Path) {
        self.0.on_checkpoint(step, dir);
        self.1.on_checkpoint(step, dir);
    }
    fn on_finish(&mut self, step: usize) {
        self.0.on_finish(step);
        self.1.on_finish(step);
    }
}

impl<T: TrainObserver + ?Sized> TrainObserver for &mut T {
    fn on_start(&mut self, start: usize, total: usize) {
        (**self).on_start(start, total)
    }
    fn on_step(&mut self, m: &StepMetrics) -> ControlFlow<()> {
        (**self).on_step(m)
    }
    fn on_checkpoint(&mut self, step: usize, dir: &Path) {
        (**self).on_checkpoint(step, dir)
    }
    fn on_finish(&mut self, step: usize) {
        (**self).on_finish(step)
    }
}

/// An `indicatif` progress bar on stderr with loss, LR, tokens/s and ETA (hidden when stderr
/// is not a terminal).
#[derive(Debug)]
pub struct ProgressBarObserver {
    bar: indicatif::ProgressBar,
}

impl Default for ProgressBarObserver {
    fn default() -> Self {
        Self::new()
    }
}

impl ProgressBarObserver {
    /// A bar that appears on the first `on_start`.
    pub fn new() -> Self {
        let bar = indicatif::ProgressBar::new(0);
        let style = indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  {msg}  elapsed {elapsed_precise}  ETA {eta_precise}",
        )
        .expect("valid template");
        bar.set_style(style);
        ProgressBarObserver { bar }
    }
}

impl TrainObserver for ProgressBarObserver {
    fn on_start(&mut self, start: usize, total: usize) {
        self.bar.set_length(total as u64);
        self.bar.set_position(start as u64);
        self.bar.reset_eta();
    }
    fn on_step(&mut self, m: &StepMetrics) -> ControlFlow<()> {
        self.bar.set_position(m.step as u64);
        self.bar.set_message(format!(
            "loss {:.4}  lr {:.2e}  |g| {:.3}  {:.0} tok/s",
            m.loss, m.lr, m.grad_norm, m.tokens_per_s
        ));
        ControlFlow::Continue(())
    }
    fn on_finish(&mut self, _step: usize) {
        self.bar.finish();
    }
}

/// Appends one JSON object per step (all [`StepMetrics`] fields) to a `.jsonl` file.
#[derive(Debug)]
pub struct JsonlMetrics {
    path: PathBuf,
    file: File,
}

impl JsonlMetrics {
    /// Open `path` for a run that continues after `start_step`: rows of later steps (left by
    /// an interrupted run) are dropped first, so every step appears once.
    pub fn open(path: impl Into<PathBuf>, start_step: usize) -> Result<Self> {
        let path = path.into();
        if path.exists() {
            let reader = BufReader::new(File::open(&path).map_err(|e| LmError::io(&path, e))?);
            let mut kept = String::new();
            for line in reader.lines() {
                let line = line.map_err(|e| LmError::io(&path, e))?;
                let step = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get("step").and_then(|s| s.as_u64()));
                if step.is_some_and(|s| s as usize <= start_step) {
                    kept.push_str(&line);
                    kept.push('\n');
                }
            }
            write_bytes_atomic(&path, kept.as_bytes())?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| LmError::io(&path, e))?;
        Ok(JsonlMetrics { path, file })
    }

    /// Write one row.
    pub fn write(&mut self, m: &StepMetrics) -> Result<()> {
        let mut line = serde_json::to_string(m).map_err(|e| LmError::Json {
            path: self.path.clone(),
            source: e,
        })?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| LmError::io(&self.path, e))
    }
}

impl TrainObserver for JsonlMetrics {
    fn on_step(&mut self, m: &StepMetrics) -> ControlFlow<()> {
        // A full disk should not kill training; the checkpoint write will report it.
        let _ = self.write(m);
        ControlFlow::Continue(())
    }
}
