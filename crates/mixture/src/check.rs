//! Verifying a manifest against the files it names: every file present, every checksum and
//! tokenizer hash as recorded, every member trained on the partition the routers made (paper
//! §2.3) and finished. Errors name the member, the file and both values.

use std::path::Path;

use serde::Serialize;
use smalltalk_lm::Checkpoint;
use smalltalk_router::RoutersManifest;
use smalltalk_stage::checksum::hash_file;

use crate::error::{MixtureError, Result};
use crate::manifest::{resolve, MixtureManifest, ModelRecord};
use crate::write::check_input;

/// What to verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verify {
    /// Hash every weights file (experts and dense models; routers are always hashed).
    pub expert_checksums: bool,
    /// Hash every expert's rows file.
    pub rows: bool,
    /// Accept members that stopped before the end of their schedule.
    pub allow_unfinished: bool,
}

/// What [`check`] verified.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    /// The manifest file.
    pub manifest: String,
    /// Members checked.
    pub members: usize,
    /// Dense baselines checked.
    pub dense: usize,
    /// Files whose checksum was verified.
    pub checksums: usize,
    /// Members accepted although unfinished (recorded `allow_unfinished`).
    pub unfinished: Vec<String>,
}

/// Verify the manifest of `path` (a run folder or a manifest file) completely: every file,
/// every checksum, every tokenizer hash. Unfinished members pass only when the manifest
/// records them as accepted, or with `allow_unfinished`.
pub fn check(path: &Path, allow_unfinished: bool) -> Result<CheckReport> {
    let (manifest, file) = MixtureManifest::load(path)?;
    let root = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let verify = Verify {
        expert_checksums: true,
        rows: true,
        allow_unfinished,
    };
    let checksums = verify_manifest(&manifest, &root, &verify, true)?;
    Ok(CheckReport {
        manifest: file.display().to_string(),
        members: manifest.members.len(),
        dense: manifest.dense.len(),
        checksums,
        unfinished: manifest
            .members
            .iter()
            .filter(|m| !m.expert.finished)
            .map(|m| m.name.clone())
            .collect(),
    })
}

/// Verify `manifest` (its folder `root`) as `verify` asks; `recorded_allowance` lets a
/// member recorded with `allow_unfinished` pass. Returns the number of checksums verified.
pub(crate) fn verify_manifest(
    manifest: &MixtureManifest,
    root: &Path,
    verify: &Verify,
    recorded_allowance: bool,
) -> Result<usize> {
    let mut hashed = 0;
    let tok = resolve(root, &manifest.tokenizer.file);
    if !tok.is_file() {
        return Err(MixtureError::missing("routers", tok));
    }
    let actual = hash_file(&tok)?;
    hashed += 1;
    if actual != manifest.tokenizer.hash {
        return Err(MixtureError::mismatch(
            "routers",
            tok,
            "tokenizer checksum",
            &manifest.tokenizer.hash,
            actual,
        ));
    }
    let routers_dir = resolve(root, &manifest.routing.routers);
    let routers_file = RoutersManifest::path(&routers_dir);
    if !routers_file.is_file() {
        return Err(MixtureError::missing("routers", routers_file));
    }
    let routers = RoutersManifest::load(&routers_dir)?;
    if routers.fingerprint != manifest.routing.fingerprint {
        return Err(MixtureError::mismatch(
            "routers",
            routers_file,
            "routers fingerprint",
            &manifest.routing.fingerprint,
            &routers.fingerprint,
        ));
    }
    if routers.method.name() != manifest.routing.method {
        return Err(MixtureError::mismatch(
            "routers",
            routers_file,
            "routing method",
            &manifest.routing.method,
            routers.method.name(),
        ));
    }
    for m in &manifest.members {
        let allow = verify.allow_unfinished || (recorded_allowance && m.expert.allow_unfinished);
        let dir = resolve(root, &m.expert.dir);
        if !dir.is_dir() {
            return Err(MixtureError::missing(&m.name, dir));
        }
        check_input(&dir, &m.name, "tokenizer", &manifest.tokenizer.hash)?;
        check_input(&dir, &m.name, "partition", &manifest.partition.fingerprint)?;
        if let Some(p) = &m.expert.data.partition {
            if *p != manifest.partition.fingerprint {
                return Err(MixtureError::mismatch(
                    &m.name,
                    resolve(root, &m.expert.weights),
                    "partition the expert was trained on",
                    &manifest.partition.fingerprint,
                    p,
                ));
            }
        }
        hashed += verify_model(&m.name, &m.expert, root, verify.expert_checksums, allow)?;
        if verify.rows {
            if let (Some(rows), Some(sum)) = (&m.expert.data.rows, &m.expert.data.rows_checksum) {
                let rows = resolve(root, rows);
                if !rows.is_file() {
                    return Err(MixtureError::missing(&m.name, rows));
                }
                let actual = hash_file(&rows)?;
                hashed += 1;
                if actual != *sum {
                    return Err(MixtureError::mismatch(
                        &m.name, rows, "checksum", sum, actual,
                    ));
                }
            }
        }
        match (&m.router, manifest.has_router_lms()) {
            (Some(r), true) => {
                if r.data.routers.as_deref() != Some(manifest.routing.fingerprint.as_str()) {
                    return Err(MixtureError::mismatch(
                        &m.name,
                        resolve(root, &r.weights),
                        "routers the router belongs to",
                        &manifest.routing.fingerprint,
                        r.data.routers.as_deref().unwrap_or("nothing"),
                    ));
                }
                // A router finished when `routers.json` named its step (checked above through the step).
                hashed += verify_model(&m.name, r, root, true, true)?;
            }
            (None, true) => {
                return Err(MixtureError::Manifest {
                    path: root.join(crate::manifest::MIXTURE_FILE),
                    message: format!("member `{}` has no router, but routing is `em`", m.name),
                })
            }
            _ => {}
        }
    }
    for d in &manifest.dense {
        let allow = verify.allow_unfinished || (recorded_allowance && d.model.allow_unfinished);
        check_input(
            &resolve(root, &d.model.dir),
            &d.name,
            "tokenizer",
            &manifest.tokenizer.hash,
        )?;
        hashed += verify_model(&d.name, &d.model, root, verify.expert_checksums, allow)?;
    }
    Ok(hashed)
}

/// Verify one model's weights file: present, its checkpoint's step as recorded and finished
/// (unless `allow_unfinished`), and its checksum when `hash`. Returns the checksums verified.
pub(crate) fn verify_model(
    member: &str,
    model: &ModelRecord,
    root: &Path,
    hash: bool,
    allow_unfinished: bool,
) -> Result<usize> {
    let weights = resolve(root, &model.weights);
    if !weights.is_file() {
        return Err(MixtureError::missing(member, weights));
    }
    if let Some(dir) = weights.parent() {
        let state = Checkpoint::load(dir)?.state;
        if state.step != model.step {
            return Err(MixtureError::mismatch(
                member, &weights, "step", model.step, state.step,
            ));
        }
        let steps = state.train.total_steps.max(model.steps);
        if (state.step < steps || !model.finished) && !allow_unfinished {
            return Err(MixtureError::Unfinished {
                member: member.into(),
                file: weights,
                step: state.step,
                steps,
            });
        }
    }
    if !hash {
        return Ok(0);
    }
    verify_checksum(member, model, &weights)?;
    Ok(1)
}

/// Refuse `weights` (of `member`) when its checksum is not `model.checksum`.
pub(crate) fn verify_checksum(member: &str, model: &ModelRecord, weights: &Path) -> Result<()> {
    let actual = hash_file(weights)?;
    if actual != model.checksum {
        return Err(MixtureError::mismatch(
            member,
            weights,
            "checksum",
            &model.checksum,
            actual,
        ));
    }
    Ok(())
}

/// The checkpoint `model`'s weights file belongs to (its `state.json`: step, tokens seen,
/// model and training settings), under the manifest's folder `root`.
pub fn checkpoint_of(root: &Path, model: &ModelRecord) -> Result<Checkpoint> {
    let weights = resolve(root, &model.weights);
    let dir = weights.parent().unwrap_or(root);
    Ok(Checkpoint::load(dir)?)
}
