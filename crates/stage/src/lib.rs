//! # smalltalk-stage
//!
//! The plumbing every SmallTalk stage shares, so each stage crate holds only its own idea:
//!
//! - [`atomic`]: crash-safe writes (temporary sibling named after this process, fsync,
//!   rename); a reader or a rerun after a crash sees the old file or the complete new one.
//! - [`checksum`]: the one checksum format of every manifest, `xxh3:<32 hex digits>`.
//! - [`folder`]: claiming a stage's output folder — an ownership marker (`stage.json`, which
//!   also records the identity of the stage's inputs and settings), an advisory lock held for
//!   the stage's life, and refusal of folders the stage did not write; [`folder::lock_output`]
//!   locks an output that is built under a temporary name and renamed into place.
//! - [`progress`]: the [`Progress`] trait stages report through (the binary draws bars).
//! - [`stop`]: a process-wide stop request (SIGTERM in the binary): long loops checkpoint
//!   and return.
//! - [`layout`]: the folders and files of a pipeline run, named once.
//! - [`stats`]: small summaries of repeated measurements.
//!
//! Depends on serde, serde_json and xxhash only.

pub mod atomic;
pub mod checksum;
pub mod error;
pub mod folder;
pub mod layout;
mod lock;
pub mod progress;
pub mod stats;
pub mod stop;

pub use error::{Result, StageError};
pub use folder::{Identity, StageFolder};
pub use layout::RunLayout;
pub use progress::{NoProgress, Progress};
