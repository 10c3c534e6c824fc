//! Errors of the report: each names the file at fault and, for JSON, where in it and what.

use std::path::{Path, PathBuf};

/// What can go wrong reading a run folder or writing its report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A JSON file (or one line of a JSON-lines file) does not hold what the report expects:
    /// not JSON, a missing key (``missing field `mixture_ppl` ``), a `null` where a number
    /// belongs (a NaN or an infinity when it was written).
    #[error("{}: line {line}, column {column}: {}{message}", path.display(), at(key))]
    Json {
        /// The file.
        path: PathBuf,
        /// Line in the file, from 1.
        line: usize,
        /// Column in the line, from 1.
        column: usize,
        /// Where in the document the error is, e.g. `prefix_sweep[1].mixture_ppl` (empty at
        /// the top level; a missing key is named in the message).
        key: String,
        /// What is wrong, e.g. "missing field `experts`".
        message: String,
    },
    /// The mixture's manifest (`mixture.json`) could not be read, or a run has trained
    /// experts but no manifest.
    #[error(transparent)]
    Mixture(Box<smalltalk_mixture::MixtureError>),
    /// A stage's `config.toml` is not TOML or lacks the stage's table.
    #[error("{}: {message}", path.display())]
    Toml {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A number of the report is NaN or infinite (written to JSON as `null`).
    #[error("report: `{key}` is {value}, not a finite number")]
    NotFinite {
        /// Where the number is, e.g. `prefix_sweep[1].mixture_ppl`.
        key: String,
        /// The number.
        value: f64,
    },
    /// A plot could not be drawn.
    #[error("{}: drawing the plot failed: {message}", path.display())]
    Plot {
        /// The plot's file.
        path: PathBuf,
        /// What the plotting library said.
        message: String,
    },
    /// A report file could not be written.
    #[error(transparent)]
    Write(#[from] smalltalk_stage::StageError),
    /// A model's checkpoint could not be read.
    #[error(transparent)]
    Model(Box<smalltalk_eval::EvalError>),
}

impl From<smalltalk_mixture::MixtureError> for ReportError {
    fn from(e: smalltalk_mixture::MixtureError) -> Self {
        ReportError::Mixture(Box::new(e))
    }
}

impl From<smalltalk_eval::EvalError> for ReportError {
    fn from(e: smalltalk_eval::EvalError) -> Self {
        ReportError::Model(Box::new(e))
    }
}

impl ReportError {
    /// A read error of `path`.
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        ReportError::Io {
            path: path.into(),
            source,
        }
    }

    /// A JSON error of `path` at `key`; `first_line` is the file line the parsed text starts
    /// at (1 for a whole file, the line number for one line of a JSON-lines file).
    pub(crate) fn json(path: &Path, first_line: usize, key: String, e: &serde_json::Error) -> Self {
        let (line, column) = (e.line(), e.column());
        let text = e.to_string();
        let suffix = format!(" at line {line} column {column}");
        let message = text.strip_suffix(&suffix).unwrap_or(&text).to_string();
        ReportError::Json {
            path: path.into(),
            line: first_line + line.max(1) - 1,
            column,
            key: if key == "." { String::new() } else { key },
            message,
        }
    }
}

/// `` `key`: `` before a message, or nothing at the top level.
fn at(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("`{key}`: ")
    }
}

/// The report's result type.
pub type Result<T, E = ReportError> = std::result::Result<T, E>;
