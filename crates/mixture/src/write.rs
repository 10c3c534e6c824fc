//! Writing `mixture.json` from a run's folders: the routers folder, the partition the routers
//! made (paper §2.3) and the experts trained on its parts. Everything that would make the
//! pieces not one mixture is refused here, naming the member, the file and both values.

use std::path::{Component, Path, PathBuf};

use smalltalk_lm::Checkpoint;
use smalltalk_router::manifest::TOKENIZER_FILE;
use smalltalk_router::{RouterMethod, RoutersManifest};
use smalltalk_routing::PartitionManifest;
use smalltalk_stage::checksum::hash_file;
use smalltalk_stage::folder::Identity;
use smalltalk_stage::layout::{dense_dir, dense_steps_dir};
use smalltalk_stage::RunLayout;

use crate::error::{MixtureError, Result};
use crate::manifest::{
    Member, MixtureManifest, ModelRecord, NamedModel, PartitionRecord, Routing, TokenizerRecord,
    TrainedOn, MIXTURE_FORMAT,
};

/// The folders a mixture is made of.
#[derive(Debug, Clone)]
pub struct MixtureSources {
    /// The routers folder (`smalltalk routers train`).
    pub routers: PathBuf,
    /// The partition folder the routers made (`smalltalk partition`).
    pub partition: PathBuf,
    /// The folder holding one run per expert part (and `dense/`, `dense-steps/` when trained).
    pub experts: PathBuf,
}

impl MixtureSources {
    /// The folders of the run folder `run` ([`RunLayout`]).
    pub fn of_run(run: &RunLayout) -> Self {
        MixtureSources {
            routers: run.routers(),
            partition: run.partition(),
            experts: run.experts(),
        }
    }
}

/// How to write a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOptions {
    /// The routing prefix M̂ recorded for readers (route, generate, eval's default).
    pub prefix: usize,
    /// Accept experts (and dense models) that stopped before the end of their schedule;
    /// each is recorded with `allow_unfinished`.
    pub allow_unfinished: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            prefix: 32,
            allow_unfinished: false,
        }
    }
}

/// Build the manifest of `sources` for a manifest file at `file` (paths relative to its
/// folder), checking that the pieces belong together, and write it atomically.
pub fn write_manifest(
    sources: &MixtureSources,
    file: &Path,
    options: &WriteOptions,
) -> Result<MixtureManifest> {
    let manifest = build_manifest(sources, file, options)?;
    manifest.save(file)?;
    Ok(manifest)
}

/// [`write_manifest`] for the run folder `run`: `RUN/mixture.json` ([`RunLayout::mixture`]).
pub fn write_run_manifest(run: &RunLayout, options: &WriteOptions) -> Result<MixtureManifest> {
    write_manifest(&MixtureSources::of_run(run), &run.mixture(), options)
}

/// The manifest [`write_manifest`] would write, without writing it.
pub fn build_manifest(
    sources: &MixtureSources,
    file: &Path,
    options: &WriteOptions,
) -> Result<MixtureManifest> {
    if options.prefix < 2 {
        return Err(MixtureError::Config(format!(
            "the routing prefix must be at least 2 tokens (the first token is not scored), not {}",
            options.prefix
        )));
    }
    let root = absolute(file.parent().unwrap_or(Path::new(".")))?;
    let rel = |p: &Path| -> Result<String> { Ok(relative(&root, &absolute(p)?)) };
    let routers = RoutersManifest::load(&sources.routers)?;
    let tok_file = sources.routers.join(TOKENIZER_FILE);
    if !tok_file.is_file() {
        return Err(MixtureError::missing("routers", tok_file));
    }
    let tok_hash = hash_file(&tok_file)?;
    check_input(&sources.routers, "routers", "tokenizer", &tok_hash)?;
    let partition = PartitionManifest::load(&sources.partition)?;
    let part_file = sources
        .partition
        .join(smalltalk_routing::manifest::MANIFEST_FILE);
    if partition.routers_fingerprint != routers.fingerprint {
        return Err(MixtureError::mismatch(
            "partition",
            part_file,
            "routers fingerprint (the routers that made the partition)",
            &routers.fingerprint,
            &partition.routers_fingerprint,
        ));
    }
    if partition.experts != routers.experts {
        return Err(MixtureError::mismatch(
            "partition",
            part_file,
            "number of experts",
            routers.experts,
            partition.experts,
        ));
    }
    let part_fp = partition.fingerprint();
    let em = routers.method == RouterMethod::Em;
    let mut members = Vec::with_capacity(partition.expert_rows.len());
    for (e, rows) in partition.expert_rows.iter().enumerate() {
        let name = rows.file.trim_end_matches(".rows").to_string();
        let dir = sources.experts.join(&name);
        if !dir.is_dir() {
            return Err(MixtureError::Missing {
                member: name,
                file: dir,
                hint: " (train it: `smalltalk expert train`)".into(),
            });
        }
        check_input(&dir, &name, "tokenizer", &tok_hash)?;
        check_input(&dir, &name, "partition", &part_fp)?;
        let rows_file = sources.partition.join(&rows.file);
        let data = TrainedOn {
            partition: Some(part_fp.clone()),
            rows: Some(rel(&rows_file)?),
            rows_checksum: Some(rows.checksum.clone()),
            dataset: recorded(&dir, "dataset")?,
            ..TrainedOn::default()
        };
        let expert = model_record(&name, &dir, data, options.allow_unfinished, &rel)?;
        let router = match em {
            true => {
                let dir = smalltalk_router::em::router_dir(&sources.routers, e);
                let data = TrainedOn {
                    routers: Some(routers.fingerprint.clone()),
                    ..TrainedOn::default()
                };
                let mut r = model_record(&name, &dir, data, true, &rel)?;
                // A router's schedule is the EM run's: finished when `routers.json` names
                // the step its weights are from.
                let want = routers.steps.get(e).copied().unwrap_or(usize::MAX);
                if r.step != want {
                    return Err(MixtureError::mismatch(
                        &name,
                        resolve_rel(&root, &r.weights),
                        "router step (routers.json)",
                        want,
                        r.step,
                    ));
                }
                r.steps = want;
                r.finished = true;
                r.allow_unfinished = false;
                Some(r)
            }
            false => None,
        };
        members.push(Member {
            name,
            score_offset: 0.0,
            router,
            expert,
        });
    }
    let mut dense = Vec::new();
    for dir in [
        dense_dir(&sources.experts),
        dense_steps_dir(&sources.experts),
    ] {
        if !dir.join("checkpoints").is_dir() {
            continue;
        }
        let name = dir
            .file_name()
            .expect("named")
            .to_string_lossy()
            .to_string();
        check_input(&dir, &name, "tokenizer", &tok_hash)?;
        let data = TrainedOn {
            dataset: recorded(&dir, "dataset")?,
            ..TrainedOn::default()
        };
        let model = model_record(&name, &dir, data, options.allow_unfinished, &rel)?;
        dense.push(NamedModel { name, model });
    }
    Ok(MixtureManifest {
        format: MIXTURE_FORMAT.into(),
        routing: Routing {
            method: routers.method.name().to_string(),
            routers: rel(&sources.routers)?,
            fingerprint: routers.fingerprint.clone(),
            prefix: options.prefix,
            trained_prefix: routers.prefix_len,
        },
        tokenizer: TokenizerRecord {
            file: rel(&tok_file)?,
            hash: tok_hash,
        },
        partition: PartitionRecord {
            dir: rel(&sources.partition)?,
            fingerprint: part_fp,
        },
        members,
        dense,
    })
}

/// The record of the newest checkpoint of the training run `dir` (member `member`),
/// refusing an unfinished one unless `allow_unfinished`.
fn model_record(
    member: &str,
    dir: &Path,
    data: TrainedOn,
    allow_unfinished: bool,
    rel: &impl Fn(&Path) -> Result<String>,
) -> Result<ModelRecord> {
    let ckpts = dir.join("checkpoints");
    let ckpt = Checkpoint::latest(&ckpts)?.ok_or_else(|| MixtureError::Missing {
        member: member.into(),
        file: ckpts.clone(),
        hint: " (no checkpoint: train it first)".into(),
    })?;
    let weights = ckpt.model_path();
    if !weights.is_file() {
        return Err(MixtureError::missing(member, weights));
    }
    let (step, steps) = (ckpt.state.step, ckpt.state.train.total_steps);
    let finished = step >= steps;
    if !finished && !allow_unfinished {
        return Err(MixtureError::Unfinished {
            member: member.into(),
            file: weights,
            step,
            steps,
        });
    }
    Ok(ModelRecord {
        dir: rel(dir)?,
        weights: rel(&weights)?,
        checksum: hash_file(&weights)?,
        parameters: ckpt.state.model.num_params(),
        data,
        step,
        steps,
        finished,
        allow_unfinished: !finished,
    })
}

/// The input `name` recorded in the stage folder `dir` (`stage.json`), if any.
fn recorded(dir: &Path, name: &str) -> Result<Option<String>> {
    Ok(Identity::read(dir)?.and_then(|id| id.inputs.get(name).cloned()))
}

/// Refuse the stage folder `dir` of `member` when its `stage.json` records input `name` as
/// something else than `expected`. Public to the crate: [`crate::check`] reads it too.
pub(crate) fn check_input(dir: &Path, member: &str, name: &str, expected: &str) -> Result<()> {
    match recorded(dir, name)? {
        Some(actual) if actual != expected => Err(MixtureError::mismatch(
            member,
            dir.join(smalltalk_stage::folder::MARKER_FILE),
            &format!("recorded input `{name}`"),
            expected,
            actual,
        )),
        _ => Ok(()),
    }
}

fn resolve_rel(root: &Path, rel: &str) -> PathBuf {
    crate::manifest::resolve(root, rel)
}

/// `path` made absolute and cleaned of `.` and `..` (lexically: links are kept as named).
pub(crate) fn absolute(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path).map_err(|source| MixtureError::Io {
        path: path.into(),
        source,
    })?;
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    Ok(out)
}

/// `to` relative to the folder `from` (both absolute and clean), `/`-separated.
pub(crate) fn relative(from: &Path, to: &Path) -> String {
    let (a, b): (Vec<_>, Vec<_>) = (from.components().collect(), to.components().collect());
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = vec!["..".into(); a.len() - common];
    parts.extend(
        b[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().to_string()),
    );
    match parts.is_empty() {
        true => ".".into(),
        false => parts.join("/"),
    }
}
