//! Advisory locks (`flock`) that name their holder: the lock file holds the holder's PID, a
//! second taker is refused at once with that PID, and the kernel drops the lock when the holder
//! exits or is killed, so a stale lock never blocks a rerun.
//!
//! A lock file that is deleted while held could let two writers in (one still holding the old
//! file, one locking a new one). So a taker checks, once it holds the lock, that the path still
//! names the file it locked, and starts over if not; with that check an [`OutputLock`] can
//! remove its file when released (on Unix), leaving nothing behind in the user's folder.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{IoContext, Result, StageError};

/// How often a taker starts over after finding the lock file replaced under it.
const ATTEMPTS: usize = 100;

/// Take the lock file `path` without waiting; on success the file holds this process's id.
/// `owner` is what a refusal names (the folder or file the lock guards).
pub(crate) fn lock_file(path: &Path, owner: &Path) -> Result<File> {
    for _ in 0..ATTEMPTS {
        if let Some(file) = take(open(path)?, path, owner)? {
            return Ok(file);
        }
    }
    Err(StageError::Locked {
        path: owner.into(),
        holder: None,
    })
}

/// Open (or create) the lock file.
fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .at(path)
}

/// Lock the opened lock file and write this process's id into it; `None` when the file was
/// removed by its previous holder meanwhile (open the current one and try again).
fn take(mut file: File, path: &Path, owner: &Path) -> Result<Option<File>> {
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            return Err(StageError::Locked {
                path: owner.into(),
                holder: read_holder(&mut file),
            })
        }
        Err(fs::TryLockError::Error(e)) => return Err(StageError::io(path, e)),
    }
    if !still_linked(&file, path) {
        return Ok(None);
    }
    file.set_len(0).at(path)?;
    file.seek(SeekFrom::Start(0)).at(path)?;
    write!(file, "{}", std::process::id()).at(path)?;
    file.flush().at(path)?;
    Ok(Some(file))
}

/// The PID in a lock file held by another process. The holder writes it just after taking the
/// lock, so an empty file gets a moment before giving up.
fn read_holder(file: &mut File) -> Option<u32> {
    for _ in 0..20 {
        let mut text = String::new();
        if file.seek(SeekFrom::Start(0)).is_ok() && file.read_to_string(&mut text).is_ok() {
            if let Ok(pid) = text.trim().parse() {
                return Some(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Whether `path` still names the open `file` (not removed or replaced since it was opened).
#[cfg(unix)]
fn still_linked(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Whether `path` still names the open `file` (lock files are never removed off Unix).
#[cfg(not(unix))]
fn still_linked(_file: &File, _path: &Path) -> bool {
    true
}

/// An advisory lock on an output that is not a claimed folder (e.g. a folder built under a
/// temporary name and renamed into place, locked through a sibling file such as
/// `<parent>/.<name>.lock`). A second taker is refused at once with a
/// [`StageError::Locked`] naming `owner` and this process's id. The lock is held until the
/// returned [`OutputLock`] is dropped (or the process dies); the lock file is then removed
/// (on Unix; a killed holder's file stays and is reused by the next taker).
pub fn lock_output(lock_path: &Path, owner: &Path) -> Result<OutputLock> {
    if let Some(parent) = lock_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).at(parent)?;
    }
    Ok(OutputLock {
        file: Some(lock_file(lock_path, owner)?),
        path: lock_path.to_path_buf(),
    })
}

/// A held lock from [`lock_output`]; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct OutputLock {
    file: Option<File>,
    path: PathBuf,
}

impl OutputLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Remove the file while still holding the lock; a taker that opened it meanwhile finds
        // it unlinked once it gets the lock and starts over on a fresh one.
        if cfg!(unix) {
            let _ = fs::remove_file(&self.path);
        }
        drop(self.file.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_lock_refuses_a_second_taker_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (lock_path, out) = (dir.path().join(".data.lock"), dir.path().join("data"));
        let held = lock_output(&lock_path, &out).unwrap();
        assert_eq!(held.path(), lock_path);
        let err = lock_output(&lock_path, &out).unwrap_err().to_string();
        assert!(
            err.contains(&format!("PID {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("data"), "{err}");
        drop(held);
        if cfg!(unix) {
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        }
        drop(lock_output(&lock_path, &out).unwrap());
    }

    #[test]
    fn a_taker_that_opened_the_file_before_the_holder_let_go_does_not_lock_a_removed_file() {
        let dir = tempfile::tempdir().unwrap();
        let (lock_path, out) = (dir.path().join(".x.lock"), dir.path().join("x"));
        let first = lock_output(&lock_path, &out).unwrap();
        let late = open(&lock_path).unwrap();
        drop(first);
        let second = lock_output(&lock_path, &out).unwrap();
        // `late` now locks the removed file: it must see that and start over ...
        assert!(take(late, &lock_path, &out).unwrap().is_none());
        // ... and then be refused by the current holder.
        let err = lock_output(&lock_path, &out).unwrap_err().to_string();
        assert!(
            err.contains(&format!("PID {}", std::process::id())),
            "{err}"
        );
        drop(second);
    }

    #[test]
    fn takers_racing_a_releasing_holder_never_hold_the_lock_together() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let (lock_path, out) = (dir.path().join(".x.lock"), dir.path().join("x"));
        let holders = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..200 {
                        if let Ok(lock) = lock_output(&lock_path, &out) {
                            assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0);
                            std::thread::yield_now();
                            holders.fetch_sub(1, Ordering::SeqCst);
                            drop(lock);
                        }
                    }
                });
            }
        });
    }
}
