//! # smalltalk-routing
//!
//! Sending sequences to experts (paper §2.2, Algorithm 1). A [`PrefixScorer`] gives, for a batch
//! of prefixes, one score per expert: the E router LMs' prefix log-likelihoods (they implement
//! the trait in `smalltalk-router`), or a baseline's — [`RandomScorer`] (random routing),
//! [`DomainGroups`] (the corpus's own labels, an oracle), TF-IDF clusters. Everything else here
//! is independent of how scores are made:
//!
//! - [`route()`] / [`route_batch`]: the one routing path — argmax of the prefix scores (paper
//!   Eqs. 4–7), used by evaluation, generation and `smalltalk route`.
//! - [`partition_stage`]: the partition stage — score every training row, assign rows chunk by
//!   chunk with the balanced rule under equal capacities (paper §2.2, "Balancing the
//!   Assignments"), write the partition folder ([`PartitionManifest`] and one row-index file
//!   per expert).
//! - [`metrics`]: domain mix, purity and mean best prefix NLL of an assignment.
//! - [`TrainingRows`]: a dataset's training split with its labels and fingerprints.
//!
//! Depends on `smalltalk-data`, `smalltalk-partition` (the assignment algorithms) and
//! `smalltalk-stage` (folder claims, atomic writes, progress).

pub mod domain;
pub mod error;
pub mod manifest;
pub mod metrics;
pub mod random;
pub mod route;
pub mod scorer;
pub mod stage;
pub mod tfidf;
pub mod training_rows;

pub use domain::DomainGroups;
pub use error::{Result, RoutingError};
pub use manifest::{ExpertRows, PartitionManifest, PARTITION_FORMAT};
pub use metrics::{best_nll_sum, domain_mix, purity, DomainLabels};
pub use random::RandomScorer;
pub use route::{route, route_batch, Routed};
pub use scorer::{PrefixScorer, ScorerError};
pub use stage::{partition_stage, PartitionOutcome, PartitionSettings};
pub use tfidf::{TfidfRouter, TfidfSettings};
pub use training_rows::TrainingRows;
