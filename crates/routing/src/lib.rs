//! # smalltalk-routing
//!
//! Sending sequences to experts (paper §2.2, Algorithm 1). A [`PrefixScorer`] gives, for a batch
//! of prefixes, one log-likelihood per expert (the E router LMs are one; they implement the
//! trait in `smalltalk-router`). Everything else here is independent of how scores are made:
//!
//! - [`route`] / [`route_batch`]: the one routing path — argmax of the prefix scores (paper
//!   Eq. 4), used by evaluation, generation and `smalltalk route`.
//! - [`partition_stage`]: the partition stage — score every training row, assign rows chunk by
//!   chunk with the balanced rule under equal capacities (paper §2.2, "Balancing the Assignments"), write the partition
//!   folder ([`PartitionManifest`] and one row-index file per expert).
//! - [`metrics`]: domain mix, purity and mean best prefix NLL of an assignment.
//! - [`TrainingRows`]: a dataset's training split with its labels and fingerprints.
//!
//! Depends on `smalltalk-data`, `smalltalk-partition` (the assignment algorithms) and
//! `smalltalk-stage` (folder claims, atomic writes, progress).

pub mod error;
pub mod manifest;
pub mod metrics;
pub mod route;
pub mod scorer;
pub mod stage;
pub mod training_rows;

pub use error::{Result, RoutingError};
pub use manifest::{ExpertRows, PartitionManifest, PARTITION_FORMAT};
pub use metrics::{best_nll_sum, domain_mix, purity, DomainLabels};
pub use route::{route, route_batch, Routed};
pub use scorer::{PrefixScorer, ScorerError};
pub use stage::{partition_stage, PartitionOutcome, PartitionSettings};
pub use training_rows::TrainingRows;
