//! Training: configuration, data access, sampling, optimizer, clipping, checkpoints and the
//! loop that ties them together ([`Trainer`]).

pub mod checkpoint;
pub mod clip;
pub mod config;
pub mod observer;
pub mod optimizer;
pub mod sampler;
pub mod source;
pub mod trainer;

pub use checkpoint::{Checkpoint, CheckpointState, DataIdentity};
pub use clip::{clip_global_norm, global_grad_norm};
pub use config::{LrSchedule, TrainConfig};
pub use observer::{JsonlMetrics, NoopObserver, ProgressObserver, StepMetrics, TrainObserver};
pub use optimizer::{AdamW, AdamWConfig};
pub use sampler::{Sampler, SamplerPosition};
pub use source::{SequenceSource, SubsetSource, VecSource};
pub use trainer::{TrainSummary, Trainer};
