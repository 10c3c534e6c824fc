//! The step-based training loop.
//!
//! One step: read `batch_size` rows in the sampler's order, cut them to the prefix, run
//! forward/backward in micro-batches (the loss of each is its target-NLL sum divided by the
//! step's total number of non-pad targets, so accumulated gradients equal the full-batch
//! mean-loss gradient), clip by the global norm, AdamW update at `lr_at(step)`, log, and
//! checkpoint every `checkpoint_every` steps and at the end. Creating a [`Trainer`] on a run
//! directory that holds a checkpoint resumes from it; on CPU (flex) the resumed run ends with
//! bit-identical weights to an uninterrupted one.
//!
//! A run stops early, after a checkpoint, when an observer breaks or when its stop flag is
//! set (by default the process-wide `smalltalk_stage::stop` flag, which the binary sets on
//! SIGTERM). Its step budget is fixed when it starts: a rerun with another `total_steps` is
//! refused, unless extended on purpose with [`Trainer::new_extended`].

mod step;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;

use crate::config::LmConfig;
use crate::error::{LmError, Result};
use crate::fused::Kernel;
use crate::model::Lm;
use crate::train::checkpoint::{
    adamw_config, remove_checkpoint_dir, Checkpoint, CheckpointState, DataIdentity,
    CHECKPOINT_FORMAT,
};
use crate::train::config::TrainConfig;
use crate::train::observer::{JsonlMetrics, StepMetrics, TrainObserver};
use crate::train::optimizer::AdamW;
use crate::train::sampler::{Sampler, SamplerPosition};
use crate::train::source::SequenceSource;

/// How a call to [`Trainer::run`] / [`Trainer::run_until`] ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TrainSummary {
    /// Step the call started at.
    pub start_step: usize,
    /// Step the call ended at.
    pub end_step: usize,
    /// `true` when the run has reached `total_steps`.
    pub finished: bool,
    /// `true` when the run stopped early: an observer broke, or the stop flag was set
    /// ([`Trainer::set_stop_flag`]).
    pub stopped: bool,
    /// Mean loss of the last step run by this call.
    pub last_loss: Option<f64>,
    /// Newest checkpoint on disk.
    pub checkpoint: Option<PathBuf>,
    /// Parameters of the model (for tokens per parameter).
    pub params: usize,
}

/// Trains one [`Lm`] in a run directory (`checkpoints/`, `metrics.jsonl`).
pub struct Trainer<B: AutodiffBackend> {
    model: Option<Lm<B>>,
    optimizer: AdamW<B>,
    train: TrainConfig,
    run_dir: PathBuf,
    step: usize,
    position: SamplerPosition,
    tokens_seen: u64,
    data: Option<DataIdentity>,
    resumed_from: Option<usize>,
    last_checkpoint: Option<PathBuf>,
    kernel: Kernel,
    stop: Arc<AtomicBool>,
}

impl<B: AutodiffBackend> Trainer<B> {
    /// A trainer for a model of `config` in `run_dir`: resumes from the newest checkpoint
    /// there, or starts from weights initialised with `train.seed`.
    ///
    /// A checkpoint is resumed only with the settings it was made with (see
    /// [`Checkpoint::check_resumable`]), `total_steps` included: a different budget is refused
    /// with both values in the message (use [`new_extended`](Self::new_extended) to train
    /// longer). A `schedule_steps` left unset takes the checkpoint's, so an extended run
    /// resumes on its original schedule.
    pub fn new(
        config: &LmConfig,
        train: TrainConfig,
        run_dir: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<Self> {
        Self::open(config, train, run_dir.as_ref(), device, false)
    }

    /// Like [`new`](Self::new), but a started or finished run may be extended to a *larger*
    /// `total_steps`: the run continues the learning-rate schedule it was started with
    /// (`schedule_steps` is set to the checkpoint's schedule length, replacing any value in
    /// `train`), so the LR of the added steps stays at the schedule's final value instead of
    /// jumping back up a stretched cosine. Every other setting must match as for `new`, and a
    /// smaller `total_steps` is refused. Without a checkpoint this is `new`.
    pub fn new_extended(
        config: &LmConfig,
        train: TrainConfig,
        run_dir: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<Self> {
        Self::open(config, train, run_dir.as_ref(), device, true)
    }

    fn open(
        config: &LmConfig,
        train: TrainConfig,
        run_dir: &Path,
        device: &B::Device,
        extend: bool,
    ) -> Result<Self> {
        train.validate()?;
        config.validate()?;
        match Checkpoint::latest(&run_dir.join("checkpoints"))? {
            Some(ckpt) => Self::resume(ckpt, config, train, run_dir, device, extend),
            None => Ok(Self::fresh(
                Lm::new(config, train.seed, device)?,
                train,
                run_dir,
            )),
        }
    }

    /// Like [`new`](Self::new), but a fresh run starts from `model`'s weights (e.g. a router
    /// carried over from a previous EM iteration).
    pub fn from_model(model: Lm<B>, train: TrainConfig, run_dir: impl AsRef<Path>) -> Result<Self> {
        let run_dir = run_dir.as_ref();
        train.validate()?;
        match Checkpoint::latest(&run_dir.join("checkpoints"))? {
            Some(ckpt) => {
                let device = model.device();
                let config = model.config.clone();
                Self::resume(ckpt, &config, train, run_dir, &device, false)
            }
            None => Ok(Self::fresh(model, train, run_dir)),
        }
    }

    fn fresh(model: Lm<B>, train: TrainConfig, run_dir: &Path) -> Self {
        Trainer {
            model: Some(model),
            optimizer: AdamW::new(adamw_config(&train)),
            train,
            run_dir: run_dir.to_path_buf(),
            step: 0,
            position: SamplerPosition::default(),
            tokens_seen: 0,
            data: None,
            resumed_from: None,
            last_checkpoint: None,
            kernel: Kernel::default(),
            stop: smalltalk_stage::stop::handle(),
        }
    }

    fn resume(
        ckpt: Checkpoint,
        config: &LmConfig,
        train: TrainConfig,
        run_dir: &Path,
        device: &B::Device,
        extend: bool,
    ) -> Result<Self> {
        let train = resumed_config(&ckpt, config, train, extend)?;
        let model = ckpt.load_model::<B>(device)?;
        let optimizer = ckpt.load_optimizer(&model)?;
        let s = &ckpt.state;
        Ok(Trainer {
            model: Some(model),
            optimizer,
            train,
            run_dir: run_dir.to_path_buf(),
            step: s.step,
            position: s.sampler,
            tokens_seen: s.tokens_seen,
            data: s.data,
            resumed_from: Some(s.step),
            last_checkpoint: Some(ckpt.dir.clone()),
            kernel: Kernel::default(),
            stop: smalltalk_stage::stop::handle(),
        })
    }

    /// Steps completed.
    pub fn step(&self) -> usize {
        self.step
    }

    /// Choose the fused ops or the reference ops (default [`Kernel::Auto`]: fused on CPU
    /// `flex`). Both give the same loss and gradients up to float rounding; a run must keep
    /// one choice to stay bit-exact across resumes.
    pub fn set_kernel(&mut self, kernel: Kernel) {
        self.kernel = kernel;
    }

    /// The implementation of the fused ops in use.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Stop after the current step (writing a checkpoint) once `flag` is true. By default the
    /// trainer watches the process-wide `smalltalk_stage::stop` flag; tests and callers that
    /// stop one run among several give each its own.
    pub fn set_stop_flag(&mut self, flag: Arc<AtomicBool>) {
        self.stop = flag;
    }

    fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The step this trainer resumed from, if it found a checkpoint.
    pub fn resumed_from(&self) -> Option<usize> {
        self.resumed_from
    }

    /// Whether `total_steps` has been reached.
    pub fn is_finished(&self) -> bool {
        self.step >= self.train.total_steps
    }

    /// The training config.
    pub fn train_config(&self) -> &TrainConfig {
        &self.train
    }

    /// The model being trained.
    pub fn model(&self) -> &Lm<B> {
        self.model.as_ref().expect("model present between steps")
    }

    /// The model without autodiff (for scoring).
    pub fn valid_model(&self) -> Lm<B::InnerBackend> {
        self.model().valid()
    }

    /// Take the trained model.
    pub fn into_model(self) -> Lm<B> {
        self.model.expect("model present between steps")
    }

    /// The run directory's checkpoint folder.
    pub fn checkpoints_dir(&self) -> PathBuf {
        self.run_dir.join("checkpoints")
    }

    /// Forget the data position so the next run starts a new source at its first shuffled
    /// row (e.g. a new EM chunk); weights, optimizer state and step count are kept.
    pub fn start_new_data(&mut self) {
        self.position = SamplerPosition::default();
        self.data = None;
    }

    /// Write a checkpoint of the current state now.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf> {
        self.save_checkpoint_marked(false)
    }

    /// Write a checkpoint; `stopped` marks one written off schedule because of a stop. Older
    /// checkpoints so marked are removed first.
    fn save_checkpoint_marked(&mut self, stopped: bool) -> Result<PathBuf> {
        let older_stops: Vec<PathBuf> = Checkpoint::list(&self.checkpoints_dir())?
            .into_iter()
            .filter(|(step, _)| *step < self.step)
            .filter(|(_, dir)| Checkpoint::load(dir).is_ok_and(|c| c.state.stopped))
            .map(|(_, dir)| dir)
            .collect();
        // Before the save, so that retention counts scheduled checkpoints only (a kill in
        // between costs the steps since the last scheduled checkpoint, nothing else).
        for dir in older_stops {
            remove_checkpoint_dir(&dir)?;
        }
        let state = CheckpointState {
            format: CHECKPOINT_FORMAT,
            step: self.step,
            sampler: self.position,
            tokens_seen: self.tokens_seen,
            data: self.data,
            model: self.model().config.clone(),
            train: self.train.clone(),
            stopped,
        };
        let ckpt = Checkpoint::save(
            &self.checkpoints_dir(),
            &state,
            self.model(),
            &self.optimizer,
            self.train.keep_checkpoints,
        )?;
        self.last_checkpoint = Some(ckpt.dir.clone());
        Ok(ckpt.dir)
    }

    /// Train to `total_steps` (see [`run_until`](Self::run_until)).
    pub fn run(
        &mut self,
        source: &dyn SequenceSource,
        observer: &mut dyn TrainObserver,
    ) -> Result<TrainSummary> {
        self.run_until(self.train.total_steps, source, observer)
    }

    /// Train until `stop_step` (capped at `total_steps`), until an observer breaks or until the
    /// stop flag is set ([`set_stop_flag`](Self::set_stop_flag)), then write a checkpoint. A
    /// run already at `stop_step` returns at once, and so does one whose stop flag is already
    /// set (with `stopped`). Metrics go to
    /// `run_dir/metrics.jsonl` and to `observer`. A NaN/Inf loss or gradient norm stops with
    /// [`LmError::NonFinite`] before the update, leaving the last checkpoint as it was.
    pub fn run_until(
        &mut self,
        stop_step: usize,
        source: &dyn SequenceSource,
        observer: &mut dyn TrainObserver,
    ) -> Result<TrainSummary> {
        let total = self.train.total_steps;
        let stop = stop_step.min(total);
        let start_step = self.step;
        observer.on_start(start_step, total);
        let mut summary = TrainSummary {
            start_step,
            end_step: start_step,
            finished: self.is_finished(),
            stopped: false,
            last_loss: None,
            checkpoint: self.last_checkpoint.clone(),
            params: self.model.as_ref().map_or(0, |m| m.num_params()),
        };
        if self.step >= stop || self.stop_requested() {
            summary.stopped = self.step < stop;
            observer.on_finish(self.step);
            return Ok(summary);
        }
        let identity = self.check_source(source)?;
        let mut sampler = Sampler::new(self.train.seed, identity.num_sequences, self.position);
        std::fs::create_dir_all(&self.run_dir).map_err(|e| LmError::io(&self.run_dir, e))?;
        let mut log = JsonlMetrics::open(self.run_dir.join("metrics.jsonl"), self.step)?;
        let started = Instant::now();
        let mut tokens_this_run = 0u64;
        while self.step < stop {
            let (loss, grad_norm, lr, tokens) = self.train_step(source, &mut sampler, identity)?;
            tokens_this_run += tokens;
            let elapsed = started.elapsed().as_secs_f64();
            let per_step = elapsed / (self.step - start_step) as f64;
            let metrics = StepMetrics {
                step: self.step,
                total_steps: total,
                loss,
                lr,
                grad_norm,
                tokens,
                tokens_seen: self.tokens_seen,
                tokens_per_s: tokens_this_run as f64 / elapsed.max(1e-9),
                elapsed_s: elapsed,
                eta_s: per_step * (total - self.step) as f64,
            };
            log.write(&metrics)?;
            let flow = observer.on_step(&metrics);
            summary.last_loss = Some(loss);
            let halt = flow.is_break() || self.stop_requested();
            let every = self.train.checkpoint_every;
            let scheduled = self.step == stop || (every > 0 && self.step.is_multiple_of(every));
            if halt || scheduled {
                let dir = self.save_checkpoint_marked(!scheduled)?;
                observer.on_checkpoint(self.step, &dir);
            }
            if halt {
                summary.stopped = true;
                break;
            }
        }
        summary.end_step = self.step;
        summary.finished = self.is_finished();
        summary.checkpoint = self.last_checkpoint.clone();
        observer.on_finish(self.step);
        Ok(summary)
    }
}

/// The train config a resumed run uses, checked against the checkpoint: an unset
/// `schedule_steps` takes the checkpoint's; with `extend`, a larger `total_steps` continues
/// the checkpoint's schedule.
fn resumed_config(
    ckpt: &Checkpoint,
    config: &LmConfig,
    mut train: TrainConfig,
    extend: bool,
) -> Result<TrainConfig> {
    let saved = &ckpt.state.train;
    if extend && train.total_steps > saved.total_steps {
        let same_budget = TrainConfig {
            total_steps: saved.total_steps,
            schedule_steps: saved.schedule_steps,
            ..train.clone()
        };
        ckpt.check_resumable(config, &same_budget)?;
        train.schedule_steps = Some(saved.schedule_len());
        train.validate()?;
    } else {
        if train.schedule_steps.is_none() && train.total_steps == saved.total_steps {
            train.schedule_steps = saved.schedule_steps;
        }
        ckpt.check_resumable(config, &train)?;
    }
    Ok(train)
}
