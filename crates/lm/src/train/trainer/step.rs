//! One optimizer step of [`Trainer`] and the data checks before the first one.

use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ElementConversion;

use super::Trainer;
use crate::error::{LmError, Result};
use crate::loss::{targets_and_weights, token_tensor};
use crate::model::{ForwardOptions, Lm};
use crate::train::checkpoint::DataIdentity;
use crate::train::clip::{clip_global_norm, global_grad_norm};
use crate::train::sampler::Sampler;
use crate::train::source::{read_rows, SequenceSource};

impl<B: AutodiffBackend> Trainer<B> {
    /// The source's identity, checked against the run: rows long enough for the prefix and
    /// `max_seq_len`, and the data the checkpoint was trained on.
    pub(super) fn check_source(&self, source: &dyn SequenceSource) -> Result<DataIdentity> {
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
    pub(super) fn train_step(
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
