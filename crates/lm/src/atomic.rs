//! Crash-safe file writes: write a temporary sibling, fsync it, rename it into place, fsync
//! the directory. A reader sees either the old file or the complete new one, never a torn one.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::error::{LmError, Result};

/// The temporary sibling used while `path` is being written (`name.tmp-<pid>`).
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{name}.tmp-{}", std::process::id()))
}

/// fsync a file or directory by path.
pub fn sync_path(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| LmError::io(path, e))
}

/// fsync the directory that contains `path` (makes a rename durable).
pub fn sync_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_path(dir),
        _ => sync_path(Path::new(".")),
    }
}

/// Write `path` atomically: `write` fills the temporary path it is given, then the file is
/// synced and renamed over `path`. On error the temporary file is removed.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_path(path);
    let result = write(&tmp)
        .and_then(|()| sync_path(&tmp))
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| LmError::io(path, e)))
        .and_then(|()| sync_parent(path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Write bytes to `path` atomically.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |tmp| {
        fs::write(tmp, bytes).map_err(|e| LmError::io(tmp, e))
    })
}
