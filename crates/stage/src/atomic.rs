//! Crash-safe writes: write a temporary sibling, fsync it, rename it into place, fsync the
//! folder. A reader sees either the old file or the complete new one, never a torn one.
//!
//! Temporaries are named `<name>.tmp-<pid>-<n>` (this process's id and a counter), so two
//! processes (or threads) never share one, and [`remove_stale_temps`] removes only those of
//! processes that are no longer running: one process never deletes another's live temporary.
//! Within this process, temporaries that [`write_with`] or a [`TempDir`] is still writing are
//! kept too; only this process's abandoned ones are removed.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::error::{IoContext, Result, StageError};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// File names of this process's temporaries that are being written now (names are unique in
/// the process: they hold its id and a counter).
fn live() -> std::sync::MutexGuard<'static, HashSet<OsString>> {
    static LIVE: OnceLock<Mutex<HashSet<OsString>>> = OnceLock::new();
    LIVE.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Marks a temporary as being written until dropped.
struct LiveTemp(Option<OsString>);

impl LiveTemp {
    fn new(tmp: &Path) -> Self {
        let name = tmp.file_name().map(|n| n.to_os_string());
        if let Some(n) = &name {
            live().insert(n.clone());
        }
        LiveTemp(name)
    }
}

impl Drop for LiveTemp {
    fn drop(&mut self) {
        if let Some(n) = &self.0 {
            live().remove(n);
        }
    }
}

/// A fresh temporary sibling of `path` owned by this process (`<name>.tmp-<pid>-<n>`).
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    name.push(format!(".tmp-{}-{n}", std::process::id()));
    path.with_file_name(name)
}

/// Write `bytes` to `path` atomically.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |tmp| {
        let mut file = File::create(tmp).at(tmp)?;
        file.write_all(bytes).at(tmp)?;
        Ok(())
    })
}

/// Write `path` atomically: `write` fills the temporary path it is given, then the file is
/// synced and renamed over `path`. On error the temporary file is removed and `path` is left
/// as it was.
pub fn write_with<E>(
    path: &Path,
    write: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> std::result::Result<(), E>
where
    E: From<StageError>,
{
    let tmp = temp_path(path);
    let _live = LiveTemp::new(&tmp);
    let result = write(&tmp).and_then(|()| {
        sync_file(&tmp)?;
        fs::rename(&tmp, path).at(path)?;
        Ok(())
    });
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

/// Whether process `pid` is running (Linux `/proc`; elsewhere every process counts as
/// running, so nothing is removed by mistake).
pub fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

/// The process id in a temporary name `<name>.tmp-<pid>[-<n>]`, if `file` is one of `name`'s.
fn temp_owner(file: &str, name: &str) -> Option<u32> {
    let rest = file.strip_prefix(name)?.strip_prefix(".tmp-")?;
    rest.split('-').next()?.parse().ok()
}

/// Remove leftovers of interrupted writes of `path` (`path.tmp-<pid>-*` siblings) whose
/// process is no longer running, and this process's own that nothing is writing any more.
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
    let name = name.to_string_lossy();
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = temp_owner(&file, &name) else {
            continue;
        };
        let mine = pid == std::process::id();
        if (!mine && process_alive(pid)) || (mine && live().contains(&entry.file_name())) {
            continue;
        }
        remove_leftover(&entry.path())?;
    }
    Ok(())
}

/// Remove a leftover temporary file or folder (gone already is fine: its writer renamed or
/// removed it since the listing).
fn remove_leftover(p: &Path) -> Result<()> {
    let removed = if p.is_dir() {
        fs::remove_dir_all(p)
    } else {
        fs::remove_file(p)
    };
    match removed {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other.at(p),
    }
}

/// The process id in a temporary's name (`<name>.tmp-<pid>-<n>`), if `file` is one.
pub fn temp_owner_of(file: &str) -> Option<u32> {
    file.rsplit_once(".tmp-")
        .filter(|(name, _)| !name.is_empty())
        .and_then(|(_, rest)| rest.split('-').next()?.parse::<u32>().ok())
}

/// Remove, anywhere under the folder `dir`, the temporaries (`<name>.tmp-<pid>-<n>`) of
/// processes that are no longer running: what a killed writer left behind. Called by a stage
/// that holds the folder's lock, so no live writer of that folder is touched.
pub fn remove_stale_temps_under(dir: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let p = entry.path();
        match temp_owner_of(&file) {
            Some(pid) if pid != std::process::id() && !process_alive(pid) => remove_leftover(&p)?,
            None if p.is_dir() => remove_stale_temps_under(&p)?,
            _ => {}
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
    _live: LiveTemp,
}

impl TempDir {
    /// Start building the folder that will become `target` (stale temporaries of dead
    /// processes are removed first).
    pub fn new(target: &Path) -> Result<Self> {
        remove_stale_temps(target)?;
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).at(parent)?;
        }
        let path = temp_path(target);
        let live = LiveTemp::new(&path);
        fs::create_dir_all(&path).at(&path)?;
        Ok(Self {
            path,
            target: target.to_path_buf(),
            committed: false,
            _live: live,
        })
    }

    /// Where to write the folder's files meanwhile.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Move the finished folder to `target`. An existing `target` must be an empty folder
    /// (callers check what they may replace); it is replaced.
    pub fn commit(mut self) -> Result<()> {
        if self.target.exists() {
            fs::remove_dir(&self.target).at(&self.target)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporaries_are_unique_and_only_dead_owners_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        assert_ne!(temp_path(&target), temp_path(&target));
        // A live process's temporary (this one's, and PID 1's) stays; a dead one's goes.
        let mine = temp_path(&target);
        std::fs::create_dir(&mine).unwrap();
        let init = dir.path().join("out.tmp-1-0");
        std::fs::write(&init, b"x").unwrap();
        let dead = dir.path().join(format!("out.tmp-{}-3", u32::MAX - 1));
        std::fs::write(&dead, b"x").unwrap();
        let other = dir.path().join("outer.tmp-99999999-0");
        std::fs::write(&other, b"x").unwrap();
        remove_stale_temps(&target).unwrap();
        assert!(init.exists() && other.exists());
        assert!(!dead.exists());
        // This process's own leftovers are stale for itself (it is not writing them now).
        assert!(!mine.exists());
    }

    #[test]
    fn a_temporary_being_written_by_this_process_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        let building = TempDir::new(&target).unwrap();
        std::fs::write(building.path().join("part"), b"x").unwrap();
        // Another thread (or a second builder in this process) starting on the same target.
        let other = std::thread::scope(|s| s.spawn(|| TempDir::new(&target)).join().unwrap());
        let other = other.unwrap();
        assert!(building.path().join("part").exists());
        drop(other);
        building.commit().unwrap();
        assert!(target.join("part").exists());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn concurrent_writes_of_one_file_never_share_a_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..20 {
                        write_file(path, &[t; 4096]).unwrap();
                        remove_stale_temps(path).unwrap();
                    }
                });
            }
        });
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() == 4096 && bytes.iter().all(|&b| b == bytes[0]));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_file(&path, b"old").unwrap();
        let r: Result<()> = write_with(&path, |tmp| {
            std::fs::write(tmp, b"half").at(tmp)?;
            Err(StageError::Corrupt {
                path: tmp.into(),
                message: "boom".into(),
            })
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
