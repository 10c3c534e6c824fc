//! # smalltalk-mixture
//!
//! A trained mixture (paper §2: E routers by EM, one expert per router's part; at inference a
//! text's first M̂ tokens pick the one expert that runs, §2.4) as one object:
//!
//! - [`MixtureManifest`] (`mixture.json`, format `smalltalk-mixture/2`): the members (each a
//!   router and an expert: paths relative to the manifest, checksums, parameters, the data
//!   they were trained on by fingerprint, the step they finished at), the routing method and
//!   prefix M̂, the tokenizer, a per-member score offset, the dense baselines.
//! - [`write_manifest`] / [`write_run_manifest`]: the manifest of a run's folders, refusing
//!   pieces that do not belong together; [`check`]: every checksum and tokenizer hash.
//! - [`Mixture`]: the mixture loaded (tokenizer and routers resident, experts in a bounded LRU
//!   cache): [`Mixture::route`], [`Mixture::score`], [`Mixture::generate`],
//!   [`Mixture::generate_batch`]. `Send + Sync`.
//!
//! Errors ([`MixtureError`]) name the member, the file and both values.

pub mod cache;
pub mod check;
pub mod error;
pub mod generate;
pub mod manifest;
pub mod mixture;
pub mod route;
pub mod scorer;
pub mod write;

pub use cache::{CacheLimits, CacheStats};
pub use check::{check, CheckReport};
pub use error::{Mismatch, MixtureError, Result};
pub use generate::{GenerateOptions, Generation, TextStream, Timing, MAX_NEW_TOKENS};
pub use manifest::{
    Member, MixtureManifest, ModelRecord, NamedModel, PartitionRecord, Routing, TokenizerRecord,
    TrainedOn, MIXTURE_FILE, MIXTURE_FORMAT,
};
pub use mixture::{Mixture, OpenOptions, TextScore};
pub use route::{MemberScore, RoutingDecision};
pub use scorer::OffsetScorer;
pub use write::{build_manifest, write_manifest, write_run_manifest, MixtureSources, WriteOptions};

#[cfg(test)]
mod tests;
