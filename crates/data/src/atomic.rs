//! Atomic file and folder writes: write under a temporary name, fsync, rename.
//!
//! A reader (or a rerun after a crash) sees either the old state or the complete new one,
//! never a half-written file.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// The temporary sibling used while `path` is being written (`name.tmp-<pid>`).
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Write `bytes` to `path` atomically.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = File::create(&tmp).at(&tmp)?;
        file.write_all(bytes).at(&tmp)?;
        file.sync_all().at(&tmp)?;
        fs::rename(&tmp, path).at(path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_parent(path);
    Ok(())
}

/// fsync a file that was written by other means.
pub fn sync_file(path: &Path) -> Result<()> {
    File::open(path).at(path)?.sync_all().at(path)
}

/// fsync the folder holding `path` so a rename in it is durable (best effort).
pub fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(dir) = File::open(parent) {
            let _ = dir.sync_all();
        }
    }
}

/// Remove leftovers of earlier interrupted writes of `path` (`path.tmp-*` siblings).
pub fn remove_stale_temps(path: &Path) -> Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let Ok(entries) = fs::read_dir(parent) else {
        return Ok(());
    };
    let prefix = format!("{}.tmp-", name.to_string_lossy());
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let p = entry.path();
            if p.is_dir() {
                fs::remove_dir_all(&p).at(&p)?
            } else {
                fs::remove_file(&p).at(&p)?
            }
        }
    }
    Ok(())
}

/// A folder built under a temporary name and renamed into place by [`TempDir::commit`].
/// Dropped without commit, it is removed.
pub struct TempDir {
    path: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl TempDir {
    /// Start building the folder that will become `target`.
    pub fn new(target: &Path) -> Result<Self> {
        remove_stale_temps(target)?;
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).at(parent)?;
        }
        let path = temp_path(target);
        fs::create_dir_all(&path).at(&path)?;
        Ok(Self {
            path,
            target: target.to_path_buf(),
            committed: false,
        })
    }

    /// Where to write the folder's files meanwhile.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replace `target` with the finished folder.
    pub fn commit(mut self) -> Result<()> {
        if self.target.exists() {
            fs::remove_dir_all(&self.target).at(&self.target)?;
        }
        fs::rename(&self.path, &self.target).at(&self.target)?;
        sync_parent(&self.target);
        self.committed = true;
        Ok(())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}
