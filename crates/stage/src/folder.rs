//! Claiming a stage's output folder: ownership, one writer at a time, and the identity of what
//! the folder was made from.
//!
//! A stage writes only inside a folder it created or recognises as its own. The folder holds:
//! - `stage.json` — the ownership marker and [`Identity`]: the stage kind, the fingerprints of
//!   its inputs (dataset, routers, partition…) and its effective settings. Written when the
//!   folder is claimed, before any output.
//! - `.lock` — an advisory lock (`flock`) held for the stage's life, with the holder's PID in
//!   it. A second writer is refused at once naming that PID; the kernel drops the lock when
//!   the holder exits or is killed, so a stale lock never blocks a rerun. The file is never
//!   deleted (deleting a lock file while another process opens it would let two writers in).
//!
//! A rerun whose inputs or settings differ from the recorded ones is refused with both values
//! in the message.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result, StageError};
use crate::lock::lock_file;
pub use crate::lock::{lock_output, OutputLock};

/// The ownership marker's file name.
pub const MARKER_FILE: &str = "stage.json";
/// The lock file's name.
pub const LOCK_FILE: &str = ".lock";
/// Version of the marker layout.
pub const MARKER_FORMAT: &str = "smalltalk-stage/1";

/// What a stage folder was made from: recorded in `stage.json` and checked on every rerun.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// [`MARKER_FORMAT`].
    pub format: String,
    /// The stage (`routers`, `partition`, `expert`, `dense`, …).
    pub kind: String,
    /// Fingerprint of every input, by name (e.g. `dataset` → `xxh3:…`).
    pub inputs: BTreeMap<String, String>,
    /// The stage's effective settings.
    pub settings: serde_json::Value,
}

impl Identity {
    /// An identity of stage `kind` with no inputs yet.
    pub fn new(kind: &str, settings: &impl Serialize) -> Self {
        Identity {
            format: MARKER_FORMAT.into(),
            kind: kind.into(),
            inputs: BTreeMap::new(),
            settings: serde_json::to_value(settings).expect("settings serialise"),
        }
    }

    /// Add an input's fingerprint.
    pub fn input(mut self, name: &str, fingerprint: impl Into<String>) -> Self {
        self.inputs.insert(name.into(), fingerprint.into());
        self
    }

    /// The identity recorded in `dir`, if the folder has a marker.
    pub fn read(dir: &Path) -> Result<Option<Identity>> {
        let path = dir.join(MARKER_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StageError::io(path, e)),
        };
        let id: Identity = serde_json::from_str(&text).map_err(|e| StageError::Corrupt {
            path: path.clone(),
            message: format!("unreadable stage marker: {e}"),
        })?;
        if id.format != MARKER_FORMAT {
            return Err(StageError::Corrupt {
                path,
                message: format!("marker format `{}`, expected `{MARKER_FORMAT}`", id.format),
            });
        }
        Ok(Some(id))
    }

    fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("identity serialises");
        crate::atomic::write_file(&dir.join(MARKER_FILE), &json)
    }

    /// The first difference from `given`, as (what, recorded, given).
    fn difference(&self, given: &Identity) -> Option<(String, String, String)> {
        if self.kind != given.kind {
            return Some(("stage".into(), self.kind.clone(), given.kind.clone()));
        }
        let names: std::collections::BTreeSet<&String> =
            self.inputs.keys().chain(given.inputs.keys()).collect();
        for name in names {
            let (a, b) = (self.inputs.get(name), given.inputs.get(name));
            if a != b {
                let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "nothing".into());
                return Some((format!("input `{name}`"), show(a), show(b)));
            }
        }
        settings_difference(&self.settings, &given.settings, "")
    }
}

/// The first differing setting (a dotted key path) between two JSON values.
fn settings_difference(
    a: &serde_json::Value,
    b: &serde_json::Value,
    at: &str,
) -> Option<(String, String, String)> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                settings_difference(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &path,
                )
            })
        }
        _ if a == b => None,
        _ => Some((format!("setting `{at}`"), a.to_string(), b.to_string())),
    }
}

/// How [`StageFolder::claim`] treats recorded settings that differ from the given ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingsPolicy {
    /// Refuse any difference (the default for every stage).
    Same,
    /// Record the new settings (inputs must still match): an explicit, documented change such
    /// as extending a finished run's step budget.
    Update,
}

/// A claimed stage folder: this process holds its lock until the value is dropped.
#[derive(Debug)]
pub struct StageFolder {
    dir: PathBuf,
    _lock: File,
    identity: Identity,
    created: bool,
    recorded: Option<Identity>,
}

impl StageFolder {
    /// Claim `dir` for the stage `identity.kind` (see the module docs): create it, or accept
    /// it when it is empty, holds this stage's marker, or (folders written before markers
    /// existed) holds one of `legacy_files`; take the lock; check the recorded identity
    /// against `identity` under `policy`; record it. Anything else is refused and left as
    /// it is.
    pub fn claim(
        dir: &Path,
        identity: &Identity,
        legacy_files: &[&str],
        policy: SettingsPolicy,
    ) -> Result<StageFolder> {
        let created = !dir.exists();
        if created {
            fs::create_dir_all(dir).at(dir)?;
        } else if !dir.is_dir() {
            return Err(StageError::Foreign {
                path: dir.into(),
                message: "it is not a folder".into(),
            });
        }
        let recorded = Identity::read(dir)?;
        if recorded.is_none() && !created {
            let own = legacy_files.iter().any(|f| dir.join(f).exists());
            if !own && !holds_only_leftovers(dir)? {
                return Err(StageError::Foreign {
                    path: dir.into(),
                    message: format!(
                        "it holds files but no {MARKER_FILE} of a `{}` stage",
                        identity.kind
                    ),
                });
            }
        }
        if let Some(r) = &recorded {
            if r.kind != identity.kind {
                return Err(StageError::Foreign {
                    path: dir.into(),
                    message: format!(
                        "it is the output of a `{}` stage, not `{}`",
                        r.kind, identity.kind
                    ),
                });
            }
        }
        let lock = lock(dir)?;
        if let Some(r) = &recorded {
            if let Some((what, old, new)) = r.difference(identity) {
                let settings_only = what.starts_with("setting");
                if !(settings_only && policy == SettingsPolicy::Update) {
                    return Err(StageError::Mismatch {
                        path: dir.join(MARKER_FILE),
                        what,
                        recorded: old,
                        given: new,
                        hint: if settings_only {
                            "; use a new folder, or the settings it was made with"
                        } else {
                            "; use a new folder for other inputs"
                        },
                    });
                }
            }
        }
        crate::atomic::remove_stale_temps_under(dir)?;
        if recorded.as_ref() != Some(identity) {
            identity.write(dir)?;
        }
        Ok(StageFolder {
            dir: dir.to_path_buf(),
            _lock: lock,
            identity: identity.clone(),
            created,
            recorded,
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The identity recorded now.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The identity recorded before this claim (`None` for a new folder).
    pub fn previous(&self) -> Option<&Identity> {
        self.recorded.as_ref()
    }

    /// Whether this claim created the folder.
    pub fn created(&self) -> bool {
        self.created
    }

    /// Give the folder up after a failure before any output: a folder this claim created is
    /// removed (so nothing half-made is left); an existing one is kept.
    pub fn abandon(self) {
        if self.created {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Whether `dir` is empty but for what a claim killed before writing `stage.json` leaves: the
/// lock file and temporaries of processes that are gone.
fn holds_only_leftovers(dir: &Path) -> Result<bool> {
    for entry in fs::read_dir(dir).at(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let dead_temp = crate::atomic::temp_owner_of(&name)
            .is_some_and(|pid| pid != std::process::id() && !crate::atomic::process_alive(pid));
        if name != LOCK_FILE && !dead_temp {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Take `dir/.lock` without waiting; on success the file holds this process's id.
fn lock(dir: &Path) -> Result<File> {
    lock_file(&dir.join(LOCK_FILE), dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(kind: &str, data: &str, steps: u32) -> Identity {
        Identity::new(kind, &serde_json::json!({"train": {"steps": steps}})).input("dataset", data)
    }

    #[test]
    fn a_second_writer_is_refused_naming_the_holder_and_the_lock_dies_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let first =
            StageFolder::claim(&out, &id("expert", "a", 1), &[], SettingsPolicy::Same).unwrap();
        assert!(first.created());
        let err =
            StageFolder::claim(&out, &id("expert", "a", 1), &[], SettingsPolicy::Same).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("PID {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        let again =
            StageFolder::claim(&out, &id("expert", "a", 1), &[], SettingsPolicy::Same).unwrap();
        assert!(!again.created());
        assert_eq!(again.previous(), Some(&id("expert", "a", 1)));
    }

    #[test]
    fn other_inputs_settings_or_stages_are_refused_naming_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        drop(StageFolder::claim(&out, &id("expert", "a", 1), &[], SettingsPolicy::Same).unwrap());
        let err = StageFolder::claim(&out, &id("expert", "b", 1), &[], SettingsPolicy::Update)
            .unwrap_err()
            .to_string();
        assert!(err.contains("input `dataset`"), "{err}");
        assert!(
            err.contains("made with a,") && err.contains("has b"),
            "{err}"
        );
        let err = StageFolder::claim(&out, &id("expert", "a", 2), &[], SettingsPolicy::Same)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("setting `train.steps`") && err.contains("with 1"),
            "{err}"
        );
        let err = StageFolder::claim(&out, &id("dense", "a", 1), &[], SettingsPolicy::Same)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`expert` stage"), "{err}");
        // An explicit update records the new settings.
        drop(StageFolder::claim(&out, &id("expert", "a", 2), &[], SettingsPolicy::Update).unwrap());
        assert_eq!(Identity::read(&out).unwrap(), Some(id("expert", "a", 2)));
    }

    #[test]
    fn foreign_folders_are_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("mine");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("config.toml"), b"user's file").unwrap();
        let err = StageFolder::claim(&out, &id("routers", "a", 1), &[], SettingsPolicy::Same)
            .unwrap_err();
        assert!(matches!(err, StageError::Foreign { .. }), "{err}");
        let names: Vec<_> = std::fs::read_dir(&out).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
        assert_eq!(
            std::fs::read(out.join("config.toml")).unwrap(),
            b"user's file"
        );
        // A folder written before markers existed is recognised by its files.
        std::fs::write(out.join("routers.json"), b"{}").unwrap();
        StageFolder::claim(
            &out,
            &id("routers", "a", 1),
            &["routers.json"],
            SettingsPolicy::Same,
        )
        .unwrap();
        // An empty folder is fine; a failed first claim can be abandoned.
        let fresh = dir.path().join("fresh");
        StageFolder::claim(&fresh, &id("routers", "a", 1), &[], SettingsPolicy::Same)
            .unwrap()
            .abandon();
        assert!(!fresh.exists());
    }

    #[test]
    fn a_claim_removes_what_killed_writers_left_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        drop(StageFolder::claim(&out, &id("expert", "a", 1), &[], SettingsPolicy::Same).unwrap());
        let sub = out.join("checkpoints");
        std::fs::create_dir_all(sub.join(format!("step-2.tmp-{}-0", u32::MAX - 1))).unwrap();
        let dead = sub.join(format!("state.json.tmp-{}-7", u32::MAX - 1));
        let live = sub.join("model.safetensors.tmp-1-0"); // PID 1 is running
        let user = sub.join("notes.tmp-x");
        for f in [&dead, &live, &user] {
            std::fs::write(f, b"x").unwrap();
        }
        drop(StageFolder::claim(&out, &id("expert", "a", 1), &[], SettingsPolicy::Same).unwrap());
        let mut left: Vec<String> = std::fs::read_dir(&sub)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["model.safetensors.tmp-1-0", "notes.tmp-x"]);
    }

    #[test]
    fn a_claim_killed_before_its_marker_does_not_block_the_rerun() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join(LOCK_FILE), b"").unwrap();
        std::fs::write(out.join(format!("stage.json.tmp-{}-0", u32::MAX - 1)), b"{").unwrap();
        let f =
            StageFolder::claim(&out, &id("partition", "a", 1), &[], SettingsPolicy::Same).unwrap();
        drop(f);
        let mut left: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".lock", "stage.json"]);
    }
}
