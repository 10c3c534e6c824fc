//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in `smalltalk-lm`.
///
/// File errors always name the file, and tensor errors name the tensor, so a failed load can be
/// diagnosed from the message alone.
#[derive(Debug, thiserror::Error)]
pub enum LmError {
    /// A preset name that [`LmConfig::preset`](crate::LmConfig::preset) does not know.
    #[error("unknown model preset `{name}`; known presets: {known}")]
    UnknownPreset {
        /// The name asked for.
        name: String,
        /// Comma-separated list of the known presets.
        known: String,
    },
    /// A model or training configuration that cannot work (zero sizes, bad divisibility, ...).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A TOML override table that does not fit the configuration struct.
    #[error("invalid configuration override: {0}")]
    ConfigOverride(String),
    /// An I/O error on a file or directory.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file that cannot be parsed or written.
    #[error("JSON error in {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A safetensors file whose header or layout is corrupt or truncated.
    #[error("corrupt or truncated safetensors file {path}: {message}")]
    CorruptFile {
        /// The file.
        path: PathBuf,
        /// What the safetensors reader reported.
        message: String,
    },
    /// A tensor whose bytes do not match the checksum stored beside it.
    #[error("checksum mismatch for tensor `{name}` in {path}: the file is corrupt")]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
    },
    /// A tensor the model needs is not in the file.
    #[error("tensor `{name}` is missing from {path}")]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
    },
    /// The file holds a tensor the model does not have (usually: a different config).
    #[error("unexpected tensor `{name}` in {path} (saved with a different model config?)")]
    UnexpectedTensor {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
    },
    /// A tensor whose shape differs from the model's parameter.
    #[error("tensor `{name}` in {path} has shape {found:?}, the model expects {expected:?}")]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// The model's shape.
        expected: Vec<usize>,
        /// The file's shape.
        found: Vec<usize>,
    },
    /// A tensor stored with a dtype we cannot read (we read F32, F16, BF16, F64).
    #[error("tensor `{name}` in {path} has unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// The dtype as safetensors names it.
        dtype: String,
    },
    /// A checkpoint that does not belong to the run being resumed.
    #[error("checkpoint {path} does not match this run: {message}")]
    CheckpointMismatch {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// What differs.
        message: String,
    },
    /// The training loss (or gradient norm) became NaN or infinite. Weights are not updated
    /// and no checkpoint is written, so the last checkpoint on disk is the last good state.
    #[error(
        "non-finite {what} ({value}) at step {step}; training stopped, last good checkpoint: {}",
        last_checkpoint.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "none".into())
    )]
    NonFinite {
        /// `"loss"` or `"gradient norm"`.
        what: &'static str,
        /// The offending value.
        value: f64,
        /// The step (1-based) that produced it.
        step: usize,
        /// The newest checkpoint on disk, if any.
        last_checkpoint: Option<PathBuf>,
    },
    /// A data source that does not fit the run (too short rows, no sequences, bad ids).
    #[error("data error: {0}")]
    Data(String),
    /// An error of the shared stage plumbing (crash-safe writes, temporary folders).
    #[error(transparent)]
    Stage(#[from] smalltalk_stage::StageError),
}

/// Shorthand for `Result<T, LmError>`.
pub type Result<T> = std::result::Result<T, LmError>;

impl LmError {
    /// Wrap an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LmError::Io {
            path: path.into(),
            source,
        }
    }

    /// A stage-plumbing error as an `LmError`: I/O failures become [`LmError::Io`] (naming the
    /// file), anything else [`LmError::Stage`].
    pub fn from_stage(error: smalltalk_stage::StageError) -> Self {
        match error {
            smalltalk_stage::StageError::Io { path, source } => LmError::Io { path, source },
            other => LmError::Stage(other),
        }
    }
}
