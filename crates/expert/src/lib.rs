//! # smalltalk-expert
//!
//! Trains one expert LM on one shard of the partitioned corpus, from scratch and with no
//! communication with the other experts (each expert is an independent job that needs only the
//! dataset folder, the partition folder and its index), and the dense baseline on all the data
//! with the same total number of training tokens.
//!
//! - [`ExpertConfig`]: model preset + overrides and the expert recipe (SPEC §6: AdamW, warm-up
//!   then cosine), plus how the dense baseline is scaled ([`DenseScaling`]).
//! - [`expert_index`]: the expert of this job, from `--expert` or the job-array environment
//!   (`SLURM_ARRAY_TASK_ID`, Kubernetes `JOB_COMPLETION_INDEX`).
//! - [`train_expert`] / [`train_dense`]: resumable runs in `experts/expert-NN` and `dense`
//!   (see `smalltalk_lm::Trainer`); rerunning a finished one does nothing.
//! - [`evaluate`] / [`aggregate`]: routed evaluation (mixture vs dense vs random routing vs
//!   oracle, per-expert segments, load, purity, prefix sweep).
//!
//! Depends on `smalltalk-lm` (model, trainer), `smalltalk-router` (the partition manifest and
//! shard indices) and `smalltalk-data` (dataset rows).

pub mod config;
pub mod error;
pub mod eval;
pub mod job;
pub mod train;

pub use config::{DenseScaling, ExpertConfig};
pub use error::{ExpertError, Result};
pub use eval::{aggregate, evaluate, EvalInputs, EvalReport, PrefixResult, Segment};
pub use job::expert_index;
pub use train::{dense_dir, expert_dir, train_dense, train_expert};
