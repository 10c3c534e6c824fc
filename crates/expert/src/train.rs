//! Training one expert on its shard, or the dense baseline on all the rows.
//!
//! Run folders (under the output folder given to the commands):
//! - `expert-NN/` — expert `NN`: `checkpoints/`, `metrics.jsonl` (see `smalltalk_lm::Trainer`).
//! - `dense/` — the dense baseline, same layout.
//!
//! Every run resumes from its newest checkpoint when rerun and returns at once when finished.

use std::path::{Path, PathBuf};

use smalltalk_lm::burn::tensor::backend::AutodiffBackend;
use smalltalk_lm::train::TrainSummary;
use smalltalk_lm::{SequenceSource, SubsetSource, TrainObserver, Trainer};
use smalltalk_router::PartitionManifest;

use crate::config::ExpertConfig;
use crate::error::{ExpertError, Result};

/// Expert `e`'s run folder under `out`.
pub fn expert_dir(out: &Path, e: usize) -> PathBuf {
    out.join(format!("expert-{e:02}"))
}

/// The dense baseline's run folder under `out`.
pub fn dense_dir(out: &Path) -> PathBuf {
    out.join("dense")
}

/// Train expert `expert` from scratch on its shard (rows `partition.read_rows(expert)` of the
/// training split `rows`) into `expert_dir(out, expert)`. Independent of every other expert:
/// nothing but the dataset rows, the partition folder and the settings is read.
#[allow(clippy::too_many_arguments)]
pub fn train_expert<AB: AutodiffBackend>(
    cfg: &ExpertConfig,
    rows: &dyn SequenceSource,
    vocab_size: usize,
    (partition, partition_dir): (&PartitionManifest, &Path),
    expert: usize,
    out: &Path,
    device: &AB::Device,
    observer: &mut dyn TrainObserver,
) -> Result<TrainSummary> {
    if partition.rows != rows.num_sequences() {
        return Err(ExpertError::Config(format!(
            "the partition covers {} rows but the training split has {}: wrong dataset?",
            partition.rows,
            rows.num_sequences()
        )));
    }
    let shard = partition.read_rows(partition_dir, expert)?;
    let model = cfg.model_config(vocab_size)?;
    let train = cfg.train.clone();
    let mut trainer = Trainer::<AB>::new(&model, train, expert_dir(out, expert), device)?;
    Ok(trainer.run(&SubsetSource::new(rows, shard), observer)?)
}

/// Train the dense baseline on all of `rows` into `dense_dir(out)`, with the same total tokens
/// as `experts` experts ([`ExpertConfig::dense_train`]).
pub fn train_dense<AB: AutodiffBackend>(
    cfg: &ExpertConfig,
    rows: &dyn SequenceSource,
    vocab_size: usize,
    experts: usize,
    out: &Path,
    device: &AB::Device,
    observer: &mut dyn TrainObserver,
) -> Result<TrainSummary> {
    let model = cfg.model_config(vocab_size)?;
    let train = cfg.dense_train(experts)?;
    let mut trainer = Trainer::<AB>::new(&model, train, dense_dir(out), device)?;
    Ok(trainer.run(rows, observer)?)
}
