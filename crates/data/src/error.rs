//! The data crate's error type: every variant names the file (and line, or setting) at fault,
//! once. I/O errors are [`StageError::Io`] (through [`DataError::Stage`]): the path and the OS
//! error appear once in the message and the OS error is not chained again as a source.

use std::path::PathBuf;

use smalltalk_stage::StageError;

/// Errors of the data stage.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder could not be read or written ([`StageError::Io`], naming the path), or
    /// the output is locked by another build ([`StageError::Locked`], naming its PID).
    #[error(transparent)]
    Stage(#[from] StageError),
    /// A JSON-lines record is not valid JSON (or not an object).
    #[error("{path}:{line}: malformed JSON: {message}")]
    Json {
        /// The corpus file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What the parser said.
        message: String,
    },
    /// A JSON-lines record has no string field holding the text.
    #[error("{path}:{line}: missing text field `{field}` (or it is not a string)")]
    MissingField {
        /// The corpus file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// The configured text field.
        field: String,
    },
    /// A line (or a plain-text file) is not valid UTF-8.
    #[error("{path}:{line}: invalid UTF-8 at byte {byte} of the line")]
    InvalidUtf8 {
        /// The corpus file.
        path: PathBuf,
        /// 1-based line number (1 for a whole plain-text file).
        line: u64,
        /// Offset of the first invalid byte within the line.
        byte: usize,
    },
    /// The corpus holds no document with text.
    #[error("empty corpus: no document with text in {}", display_paths(.paths))]
    EmptyCorpus {
        /// The inputs that were read.
        paths: Vec<PathBuf>,
    },
    /// The tokenizer could not be trained, loaded, saved or used.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The tokenizer file (or the corpus it was trained on).
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A manifest is unreadable or inconsistent with its shards.
    #[error("manifest {path}: {message}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A shard's content does not match the checksum recorded in the manifest.
    #[error("shard {path}: checksum mismatch (manifest says {expected}, file has {actual}); the shard is corrupt or was changed after the manifest was written")]
    Checksum {
        /// The shard file.
        path: PathBuf,
        /// Checksum recorded in the manifest.
        expected: String,
        /// Checksum of the file on disk.
        actual: String,
    },
    /// A setting is out of range.
    #[error("invalid setting `{key}`: {message}")]
    Config {
        /// The setting's name (as in the TOML config / CLI flag).
        key: String,
        /// Why it is invalid.
        message: String,
    },
    /// The output folder holds a dataset built with other settings, or something else.
    #[error("output {path}: {message}; remove it or choose another output")]
    Conflict {
        /// The output folder.
        path: PathBuf,
        /// Which setting differs.
        message: String,
    },
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Shorthand for the crate's results.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Stage(StageError::io(path, source))
    }
}

/// Attach a path to an I/O error.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| DataError::io(path, source))
    }
}
