//! # smalltalk-router
//!
//! The E small router LMs of SmallTalk and their hard-EM training (SPEC §3): start from a
//! random equal split, train each router on the M-token prefixes of its part, score a fresh
//! chunk with every router, reassign it with the balanced assignment of
//! `smalltalk-partition`, repeat ([`train_routers`]). Then split a whole training split into
//! E expert shards with the frozen routers ([`partition_split`]), and route single texts
//! ([`RouterSet`], [`score_rows`]).
//!
//! Depends on `smalltalk-data` (dataset rows, atomic writes), `smalltalk-lm` (the decoder,
//! trainer and prefix scoring) and `smalltalk-partition` (assignments). Generic over burn
//! backends: training takes an `AutodiffBackend`, scoring any `Backend`.

pub mod config;
pub mod em;
pub mod error;
pub mod manifest;
pub mod metrics;
pub mod scoring;
pub mod shards;
pub mod state;

pub use config::EmConfig;
pub use em::{train_routers, EmData, EmObserver, EmSummary, NoEmObserver};
pub use error::{Result, RouterError};
pub use manifest::{RouterSet, RoutersManifest};
pub use metrics::{DomainLabels, IterationMetrics};
pub use scoring::score_rows;
pub use shards::{partition_split, PartitionManifest, PartitionSettings};
