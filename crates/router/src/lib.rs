//! # smalltalk-router
//!
//! The E small router LMs of SmallTalk and their hard-EM training (paper §2.2, Algorithm 1):
//! start from a random equal split, train each router on the M-token prefixes of its part,
//! score a fresh chunk with every router, reassign it with the balanced assignment of
//! `smalltalk-partition`, repeat.
//!
//! - [`train_routers`]: the routers stage — reads a dataset folder, writes a complete routers
//!   folder (effective `config.toml`, the tokenizer, every router's checkpoints, the EM state
//!   and metrics, `routers.json`); resumable, one writer at a time.
//! - [`run_em`]: the EM loop itself on any row source (what the stage calls).
//! - [`RouterSet`]: the trained routers of a folder, loaded for scoring; it is a
//!   `smalltalk_routing::PrefixScorer`, so partitioning, evaluation and generation route
//!   through `smalltalk_routing::route`.
//!
//! Depends on `smalltalk-data`, `smalltalk-lm` (the decoder, trainer and prefix scoring),
//! `smalltalk-partition` (assignments), `smalltalk-routing` (the scorer trait and domain
//! metrics) and `smalltalk-stage`. Generic over burn backends: training takes an
//! `AutodiffBackend`, scoring any `Backend`.

pub mod config;
pub mod em;
pub mod error;
pub mod manifest;
pub mod methods;
pub mod metrics;
pub mod scoring;
pub mod stage;
pub mod state;

pub use config::{EmConfig, RouterMethod};
pub use em::{run_em, EmData, EmSummary};
pub use error::{Result, RouterError};
pub use manifest::{RouterSet, RoutersManifest};
pub use methods::{fit_baseline, load_scorer};
pub use metrics::IterationMetrics;
pub use scoring::score_rows;
pub use stage::train_routers;
