//! # smalltalk-expert
//!
//! Trains one expert LM on its part of the partitioned corpus, from scratch and with no
//! communication with the other experts (paper §2.3: each expert is an independent job that
//! needs only the dataset folder, the partition folder and its index), and the dense baseline
//! on all the data with the same total number of training tokens.
//!
//! - [`ExpertConfig`]: model preset + overrides and the expert recipe (paper §3.1: AdamW,
//!   warm-up then cosine), plus how the dense baseline is scaled ([`DenseScaling`]).
//! - [`expert_index`]: the expert of this job, from `--expert` or the job-array environment
//!   (`SLURM_ARRAY_TASK_ID`, Kubernetes `JOB_COMPLETION_INDEX`).
//! - [`train_expert`] / [`train_dense`]: the stages — resumable runs in `expert-NN/` and
//!   `dense/` under an experts folder, each recording what it was made from (dataset,
//!   tokenizer, partition, settings) and refusing to resume or skip on anything else.
//!
//! Depends on `smalltalk-lm` (model, trainer), `smalltalk-routing` (the partition manifest and
//! expert row files), `smalltalk-data` and `smalltalk-stage`.

pub mod config;
pub mod error;
pub mod job;
pub mod train;

pub use config::{DenseScaling, ExpertConfig};
pub use error::{ExpertError, Result};
pub use job::expert_index;
pub use smalltalk_stage::layout::{dense_dir, dense_steps_dir, expert_dir};
pub use train::{train_dense, train_expert, ExpertJob, RunOutcome, StepBudget};
