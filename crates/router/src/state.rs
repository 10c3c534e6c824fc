//! The EM state between iterations (`em/state.json`), written atomically after every
//! iteration once all routers have their checkpoints: a rerun resumes from it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, RouterError};

/// Version of the state layout.
pub const STATE_FORMAT: u32 = 1;
/// Marks a row that no E-step has assigned yet in [`EmState::last_expert`].
pub const UNASSIGNED: u16 = u16::MAX;

/// Where EM stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmState {
    /// [`STATE_FORMAT`] at writing time.
    pub format: u32,
    /// Hash of the settings and data this run belongs to (a rerun with others is refused).
    pub fingerprint: String,
    /// Iterations completed (0: only the random start exists).
    pub iterations_done: usize,
    /// Assignment of chunk `iterations_done` (the data of the next M-step), one expert per
    /// row of that chunk.
    pub assignment: Vec<u16>,
    /// The last expert each training row was assigned to by an E-step ([`UNASSIGNED`] if
    /// none yet); used for the `changed_fraction` metric.
    pub last_expert: Vec<u16>,
}

impl EmState {
    /// `em/state.json` under a routers directory.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("em").join("state.json")
    }

    /// Load the state of `dir`, or `None` when EM has not started there.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = Self::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(RouterError::io(path, e)),
        };
        let state: EmState = serde_json::from_str(&text)
            .map_err(|e| RouterError::state(&path, format!("unreadable EM state: {e}")))?;
        if state.format != STATE_FORMAT {
            return Err(RouterError::state(
                &path,
                format!(
                    "state format {} (this build reads {STATE_FORMAT})",
                    state.format
                ),
            ));
        }
        Ok(Some(state))
    }

    /// Write the state atomically (temporary file, fsync, rename).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = Self::path(dir);
        let parent = path.parent().expect("state path has a parent");
        std::fs::create_dir_all(parent).map_err(|e| RouterError::io(parent, e))?;
        let json = serde_json::to_vec(self).expect("EM state serialises");
        smalltalk_stage::atomic::write_file(&path, &json)?;
        Ok(())
    }
}
