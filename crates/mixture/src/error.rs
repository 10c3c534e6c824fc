//! Errors of writing, checking and using a mixture. Every disagreement names the member, the
//! file and both values, so that a reader can tell which piece does not belong.

use std::path::PathBuf;

/// Everything that can go wrong with a mixture manifest or a loaded mixture.
#[derive(Debug, thiserror::Error)]
pub enum MixtureError {
    /// A recorded value and the value found on disk (or in another record) differ.
    #[error("{0}")]
    Mismatch(Box<Mismatch>),
    /// A file a member needs is not there.
    #[error("member `{member}`: {file} is missing{hint}")]
    Missing {
        /// The member.
        member: String,
        /// The missing file or folder.
        file: PathBuf,
        /// What to do about it (may be empty).
        hint: String,
    },
    /// A member stopped before the end of its schedule (e.g. a SIGTERM checkpoint).
    #[error(
        "member `{member}`: {file} is at step {step} of the {steps} its schedule asked for \
         (unfinished); finish its training, or accept it explicitly (`--allow-unfinished`)"
    )]
    Unfinished {
        /// The member.
        member: String,
        /// Its weights file.
        file: PathBuf,
        /// The step it stopped at.
        step: usize,
        /// The steps its schedule asked for.
        steps: usize,
    },
    /// No manifest where one was expected (a run folder written before manifests existed).
    #[error("no mixture manifest at {path}: write it with `smalltalk mixture write --run {run}`")]
    NoManifest {
        /// Where the manifest was looked for.
        path: PathBuf,
        /// The run folder to name in the command.
        run: PathBuf,
    },
    /// A manifest that cannot be read as one.
    #[error("{path}: {message}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A setting or an input (prompt, option) does not fit; the message names it.
    #[error("{0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A model could not be loaded or run.
    #[error(transparent)]
    Lm(#[from] smalltalk_lm::LmError),
    /// A routers folder could not be read.
    #[error(transparent)]
    Router(#[from] smalltalk_router::RouterError),
    /// Routing failed or a partition could not be read.
    #[error(transparent)]
    Routing(#[from] smalltalk_routing::RoutingError),
    /// A tokenizer could not be read or used.
    #[error(transparent)]
    Data(#[from] smalltalk_data::DataError),
    /// A stage record could not be read, or a file not written.
    #[error(transparent)]
    Stage(#[from] smalltalk_stage::StageError),
}

/// The details of a [`MixtureError::Mismatch`].
#[derive(Debug)]
pub struct Mismatch {
    /// The member (`expert-01`, `dense`, `routers`, `partition`).
    pub member: String,
    /// The file whose value was checked.
    pub file: PathBuf,
    /// What was compared (`checksum`, `recorded input \`tokenizer\``, …).
    pub what: String,
    /// The value the manifest (or the routers) recorded.
    pub expected: String,
    /// The value found.
    pub actual: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "member `{}`: {} of {}: expected {}, found {}",
            self.member,
            self.what,
            self.file.display(),
            self.expected,
            self.actual
        )
    }
}

impl MixtureError {
    /// A [`MixtureError::Mismatch`].
    pub fn mismatch(
        member: &str,
        file: impl Into<PathBuf>,
        what: &str,
        expected: impl std::fmt::Display,
        actual: impl std::fmt::Display,
    ) -> Self {
        MixtureError::Mismatch(Box::new(Mismatch {
            member: member.into(),
            file: file.into(),
            what: what.into(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        }))
    }

    /// A [`MixtureError::Missing`] with no hint.
    pub fn missing(member: &str, file: impl Into<PathBuf>) -> Self {
        MixtureError::Missing {
            member: member.into(),
            file: file.into(),
            hint: String::new(),
        }
    }
}

/// Result with [`MixtureError`].
pub type Result<T> = std::result::Result<T, MixtureError>;
