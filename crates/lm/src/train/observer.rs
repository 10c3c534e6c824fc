//! Watching a training run: per-step metrics, progress reporting through
//! [`smalltalk_stage::Progress`] and a JSONL log.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde::Serialize;
use smalltalk_stage::Progress;

use crate::error::{LmError, Result};
use crate::weights::write_bytes;

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

/// Forwards a run's progress to a [`Progress`] (the binary draws it; library crates draw
/// nothing): `start("train", start_step, total_steps)`, one `update(step, "loss …, lr …,
/// tok/s …")` per step, and `finish()` when the run returns.
pub struct ProgressObserver<'a> {
    progress: &'a mut dyn Progress,
}

impl<'a> ProgressObserver<'a> {
    /// An observer reporting to `progress`.
    pub fn new(progress: &'a mut dyn Progress) -> Self {
        ProgressObserver { progress }
    }
}

impl std::fmt::Debug for ProgressObserver<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressObserver").finish_non_exhaustive()
    }
}

impl TrainObserver for ProgressObserver<'_> {
    fn on_start(&mut self, start: usize, total: usize) {
        self.progress.start("train", start as u64, total as u64);
    }
    fn on_step(&mut self, m: &StepMetrics) -> ControlFlow<()> {
        let message = format!(
            "loss {:.4}, lr {:.2e}, {:.0} tok/s",
            m.loss, m.lr, m.tokens_per_s
        );
        self.progress.update(m.step as u64, &message);
        ControlFlow::Continue(())
    }
    fn on_finish(&mut self, _step: usize) {
        self.progress.finish();
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
    /// an interrupted run, or by checkpoints removed with `Checkpoint::discard_after`) and
    /// unreadable rows (a line torn by a crash) are dropped first, so every step appears once.
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
            write_bytes(&path, kept.as_bytes())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Log(Vec<String>);

    impl Progress for Log {
        fn start(&mut self, what: &str, done: u64, total: u64) {
            self.0.push(format!("start {what} {done}/{total}"));
        }
        fn update(&mut self, done: u64, message: &str) {
            self.0.push(format!("update {done} {message}"));
        }
        fn finish(&mut self) {
            self.0.push("finish".into());
        }
    }

    #[test]
    fn progress_observer_forwards_start_steps_and_finish() {
        let mut log = Log::default();
        let mut observer = ProgressObserver::new(&mut log);
        observer.on_start(3, 10);
        let m = StepMetrics {
            step: 4,
            total_steps: 10,
            loss: 2.5,
            lr: 1e-4,
            grad_norm: 0.5,
            tokens: 100,
            tokens_seen: 400,
            tokens_per_s: 1234.4,
            elapsed_s: 1.0,
            eta_s: 6.0,
        };
        assert!(observer.on_step(&m).is_continue());
        observer.on_checkpoint(4, Path::new("x"));
        observer.on_finish(4);
        assert_eq!(
            log.0,
            [
                "start train 3/10",
                "update 4 loss 2.5000, lr 1.00e-4, 1234 tok/s",
                "finish"
            ]
        );
    }
}
