//! Errors of the launcher: each names the file, key or command at fault.

use std::path::PathBuf;

/// What can go wrong writing, submitting or inspecting a run on a cluster.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The run's config is not TOML or its `[cluster]` table is wrong.
    #[error("{}: {message}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A scheduler command could not run or failed.
    #[error("`{command}` failed: {message}")]
    Scheduler {
        /// The command line.
        command: String,
        /// Its error output or the reason it could not start.
        message: String,
    },
    /// Jobs of this run are still queued or running: submitting again would run stages twice.
    #[error("{count} job(s) of this run are still in the queue ({jobs}); wait for them or cancel them (scancel) before submitting again")]
    StillQueued {
        /// How many.
        count: usize,
        /// Their ids and names.
        jobs: String,
    },
    /// A value that would reach a generated script is not one the scheduler accepts (or could
    /// change what the script runs).
    #[error("{key} = {value:?}: {rule}")]
    Unsafe {
        /// The flag, config key or path at fault (`--partition`, `[cluster] extra[0]`, `RUN`).
        key: String,
        /// The value refused.
        value: String,
        /// What is accepted.
        rule: String,
    },
    /// Writing a file failed.
    #[error(transparent)]
    Stage(#[from] smalltalk_stage::StageError),
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, LaunchError>;
