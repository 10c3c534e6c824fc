//! The step-based training loop.
//!
//! One step: read `batch_size` rows in the sampler's order, cut them to the prefix, run
//! forward/backward in micro-batches (the loss of each is its target-NLL sum divided by the
//! step's total number of non-pad targets, so accumulated gradients equal the full-batch
//! mean-loss gradient), clip by the global norm, AdamW update at `lr_at(step)`, log, and
//! checkpoint every `checkpoint_every` steps and at the end. Creating a [`Trainer`] on a run
//! directory that holds a checkpoint resumes from it; on CPU (flex) the resumed run ends with
//! bit-identical weights to an uninterrupted one.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ElementConversion;

use crate::config::LmConfig;
use crate::error::{LmError, Result};
use crate::fused::Kernel;
use crate::loss::{targets_and_weights, token_tensor};
use crate::model::ForwardOptions;
use crate::model::Lm;
use crate::train::checkpoint::{
    adamw_config, Checkpoint, CheckpointState, DataIdentity, CHECKPOINT_FORMAT,
};
use crate::train::clip::{clip_global_norm, global_grad_norm};
use crate::train::config::TrainConfig;
use crate::train::observer::{JsonlMetrics, StepMetrics, TrainObserver};
use crate::train::optimizer::AdamW;
use crate::train::sampler::{Sampler, SamplerPosition};
use crate::train::source::{read_rows, SequenceSource};

/// How a call to [`Trainer::run`] / [`Trainer::run_until`] ended.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    /// Step the call started at.
    pub start_step: usize,
    /// Step the call ended at.
    pub end_step: usize,
    /// `true` when the run has reached `total_steps`.
    pub finished: bool,
    /// `true` when an observer asked to stop.
    pub stopped: bool,
    /// Mean loss of the last step run by this call.
    pub last_loss: Option<f64>,
    /// Newest checkpoint on disk.
    pub checkpoint: Option<PathBuf>,
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
}

impl<B: AutodiffBackend> Trainer<B> {
    /// A trainer for a model of `config` in `run_dir`: resumes from the newest checkpoint
    /// there, or starts from weights initialised with `train.seed`.
    pub fn new(
        config: &LmConfig,
        train: TrainConfig,
        run_dir: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<Self> {
        let run_dir = run_dir.as_ref();
        train.validate()?;
        config.validate()?;
        match Checkpoint::latest(&run_dir.join("checkpoints"))? {
            Some(ckpt) => Self::resume(ckpt, config, train, run_dir, device),
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
                Self::resume(ckpt, &config, train, run_dir, &device)
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
        }
    }

    fn resume(
        ckpt: Checkpoint,
        config: &LmConfig,
        train: TrainConfig,
        run_dir: &Path,
        device: &B::Device,
    ) -> Result<Self> {
        ckpt.check_resumable(config, &train)?;
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
        let state = CheckpointState {
            format: CHECKPOINT_FORMAT,
            step: self.step,
            sampler: self.position,
            tokens_seen: self.tokens_seen,
            data: self.data,
            model: self.model().config.clone(),
            train: self.train.clone(),
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

    /// Train until `stop_step` (capped at `total_steps`) or until an observer breaks, then
    /// write a checkpoint. A run already at `total_steps` returns at once. Metrics go to
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
        };
        if self.step >= stop {
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
            let every = self.train.checkpoint_every;
            if flow.is_break()
                || self.step == stop
                || (every > 0 && self.step.is_multiple_of(every))
            {
                let dir = self.save_checkpoint()?;
                observer.on_checkpoint(self.step, &dir);
            }
            if let ControlFlow::Break(()) = flow {
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

    fn check_source(&self, source: &dyn SequenceSource) -> Result<DataIdentity> {
        let identity = DataIdentity {
            num_sequences: source.num_sequences(),
            row_len: source.row_len(),
        };
        if identity.num_sequences == 0 || identity.row_len < 2 {
            return Err(LmError::Data(format!(
                "the source has {} rows of {} tokens; need at least one row of 2 tokens",
                identity.num_sequences, identity.row_len
            )));
        }
        let used = self.train.prefix_len.unwrap_or(identity.row_len);
        if used > identity.row_len {
            return Err(LmError::Data(format!(
                "prefix_len {used} exceeds the row length {}",
                identity.row_len
            )));
        }
        let max = self.model().config.max_seq_len;
        if used - 1 > max {
            return Err(LmError::Data(format!(
                "training on {} positions exceeds max_seq_len {max}",
                used - 1
            )));
        }
        if let Some(saved) = self.data {
            if saved != identity {
                return Err(LmError::CheckpointMismatch {
                    path: self.last_checkpoint.clone().unwrap_or_default(),
                    message: format!(
                        "the run was trained on {saved:?}, this source is {identity:?} \
                         (call `start_new_data` to switch data on purpose)"
                    ),
                });
            }
        }
        Ok(identity)
    }

    /// One optimizer step; returns (mean loss, pre-clip grad norm, lr, non-pad targets).
    fn train_step(
        &mut self,
        source: &dyn SequenceSource,
        sampler: &mut Sampler,
        identity: DataIdentity,
    ) -> Result<(f64, f64, f64, u64)> {
        let step_index = self.step;
        let lr = self.train.lr_at(step_index);
        let used = self.train.prefix_len.unwrap_or(identity.row_len);
        let time = used - 1;
        let pad = source.pad_id();

        let rows = sampler.next_batch(self.train.batch_size);
        let batch = read_rows(source, &rows, used);
        let model = self.model.take().expect("model present between steps");
        if let Err(e) = model.check_tokens(&batch) {
            self.model = Some(model);
            return Err(e);
        }
        let targets_in_step = batch
            .chunks(used)
            .flat_map(|r| &r[1..])
            .filter(|&&t| Some(t) != pad)
            .count() as u64;
        let denom = targets_in_step.max(1) as f64;

        let device = model.device();
        let mut accumulator = GradientsAccumulator::<Lm<B>>::new();
        let mut loss_sum = 0.0;
        for micro in batch.chunks(self.train.micro_batch() * used) {
            let n = micro.len() / used;
            let inputs: Vec<u32> = micro
                .chunks(used)
                .flat_map(|r| &r[..time])
                .copied()
                .collect();
            let targets: Vec<u32> = micro.chunks(used).flat_map(|r| &r[1..]).copied().collect();
            let tokens = token_tensor::<B>(&inputs, n, time, &device);
            let options = ForwardOptions {
                kernel: self.kernel,
                precision: self.train.precision,
            };
            let hidden = model.forward_hidden_with(tokens, options);
            let (targets, weights) = targets_and_weights(&targets, pad, &hidden);
            let loss = model.head_nll(hidden, targets, weights, denom, options);
            loss_sum += loss.clone().into_scalar().elem::<f64>();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            accumulator.accumulate(&model, grads);
        }
        let mut grads = accumulator.grads();
        let step = step_index + 1;
        let last_checkpoint = self.last_checkpoint.clone();
        let non_finite = |what, value| LmError::NonFinite {
            what,
            value,
            step,
            last_checkpoint: last_checkpoint.clone(),
        };
        if !loss_sum.is_finite() {
            self.model = Some(model);
            return Err(non_finite("loss", loss_sum));
        }
        let grad_norm = if self.train.grad_clip > 0.0 {
            clip_global_norm(&model, &mut grads, self.train.grad_clip)
        } else {
            global_grad_norm(&model, &grads)
        };
        if !grad_norm.is_finite() {
            self.model = Some(model);
            return Err(non_finite("gradient norm", grad_norm));
        }
        self.model = Some(self.optimizer.step(lr, model, grads));
        self.step = step;
        self.position = sampler.position();
        self.tokens_seen += targets_in_step;
        self.data = Some(identity);
        Ok((loss_sum, grad_norm, lr, targets_in_step))
    }
}
