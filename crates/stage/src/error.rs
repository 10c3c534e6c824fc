//! Errors of the stage plumbing: each names the file or folder at fault.
//!
//! An I/O error's cause is part of the message (`path: No such file or directory (os error 2)`)
//! and is not also returned by [`std::error::Error::source`]: a reporter that prints the whole
//! chain (`anyhow`'s `{:#}`) would otherwise print the OS error twice.

use std::fmt;
use std::path::PathBuf;

/// What can go wrong claiming, locking or writing a stage folder.
#[derive(Debug)]
pub enum StageError {
    /// A file or folder could not be read or written.
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause (shown in the message, not chained as a source).
        source: std::io::Error,
    },
    /// Another process holds the folder's lock.
    Locked {
        /// The folder.
        path: PathBuf,
        /// The holder's process id, when it could be read.
        holder: Option<u32>,
    },
    /// The folder exists and was not written by this stage; nothing in it is touched.
    Foreign {
        /// The folder.
        path: PathBuf,
        /// What was found there.
        message: String,
    },
    /// The folder was made from other inputs or settings than the ones given now.
    Mismatch {
        /// The folder (or its record).
        path: PathBuf,
        /// Which input or setting.
        what: String,
        /// The recorded value.
        recorded: String,
        /// The value given now.
        given: String,
        /// What to do about it (may be empty).
        hint: &'static str,
    },
    /// A record file is malformed.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl fmt::Display for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StageError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            StageError::Locked { path, holder } => {
                write!(f, "{} is in use by another process", path.display())?;
                if let Some(pid) = holder {
                    write!(f, " (PID {pid})")?;
                }
                write!(f, " (wait for it, or stop it)")
            }
            StageError::Foreign { path, message } => write!(
                f,
                "{}: {message}; refusing to write into it (choose another folder)",
                path.display()
            ),
            StageError::Mismatch {
                path,
                what,
                recorded,
                given,
                hint,
            } => write!(
                f,
                "{}: {what} differs: the folder was made with {recorded}, this run has {given}{hint}",
                path.display()
            ),
            StageError::Corrupt { path, message } => write!(f, "{}: {message}", path.display()),
        }
    }
}

impl std::error::Error for StageError {}

impl StageError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StageError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result with [`StageError`].
pub type Result<T> = std::result::Result<T, StageError>;

/// Attach a path to an I/O result.
pub trait IoContext<T> {
    /// Turn an `io::Error` into [`StageError::Io`] naming `path`.
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| StageError::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message as a chain-printing reporter shows it (each source appended after ": ").
    fn chain(err: &dyn std::error::Error) -> String {
        let mut text = err.to_string();
        let mut next = err.source();
        while let Some(e) = next {
            text.push_str(&format!(": {e}"));
            next = e.source();
        }
        text
    }

    #[test]
    fn an_io_error_names_the_path_and_the_os_error_once() {
        let missing = std::path::Path::new("no-such-dir-here/file");
        let err = std::fs::read(missing).at(missing).unwrap_err();
        let text = chain(&err);
        assert!(text.starts_with("no-such-dir-here/file: "), "{text}");
        assert_eq!(text.matches("os error").count(), 1, "{text}");
        let locked = StageError::Locked {
            path: "out".into(),
            holder: Some(42),
        };
        assert_eq!(
            locked.to_string(),
            "out is in use by another process (PID 42) (wait for it, or stop it)"
        );
    }
}
