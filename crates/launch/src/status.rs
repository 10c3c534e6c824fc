//! Where a run stands, from its own files: each stage (and each expert) done, in progress
//! (step, total and ETA from its `metrics.jsonl`), failed (the last `error:` line of its
//! scheduler log) or missing. The scheduler's view is added by [`crate::slurm`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use smalltalk_stage::layout::{dense_dir, dense_steps_dir, expert_dir};
use smalltalk_stage::RunLayout;

use crate::plan::StageName;

/// The state of one unit of work (a stage, or one expert of the expert array).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Its output is complete.
    Done,
    /// Started and not finished: running, or interrupted (it resumes when run again).
    Started {
        /// Steps (EM iterations for routers) done.
        step: u64,
        /// Steps planned.
        total: u64,
        /// Expected seconds to the end at the last recorded rate, when known.
        eta_s: Option<f64>,
        /// Seconds since its progress was last written.
        idle_s: f64,
    },
    /// Its last scheduler log ends in an error and its output is not complete.
    Failed {
        /// The error line.
        error: String,
    },
    /// Not started.
    Missing,
}

/// One row of the status table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitStatus {
    /// The stage.
    pub stage: String,
    /// The expert index, for the expert array.
    pub task: Option<usize>,
    /// Where it stands.
    #[serde(flatten)]
    pub state: State,
    /// The scheduler's job id and state (`squeue`), when it is queued or running there.
    pub queue: Option<String>,
}

/// Where every stage of a run with `experts` experts stands.
pub fn run_status(run: &Path, experts: usize) -> Vec<UnitStatus> {
    let layout = RunLayout::new(run);
    let logs = run.join("slurm/logs");
    let mut rows = Vec::new();
    for stage in StageName::ALL {
        let tasks: Vec<Option<usize>> = match stage {
            StageName::Experts => (0..experts).map(Some).collect(),
            _ => vec![None],
        };
        for task in tasks {
            let mut state = unit_state(&layout, stage, task);
            if !matches!(state, State::Done | State::Failed { .. }) {
                if let Some(error) = last_error(&logs, stage, task) {
                    state = State::Failed { error };
                }
            }
            rows.push(UnitStatus {
                stage: stage.as_str().into(),
                task,
                state,
                queue: None,
            });
        }
    }
    rows
}

/// The number of experts of a run without a launch spec: its routers' (or partition's) count.
pub fn experts_of(run: &Path) -> Option<usize> {
    let layout = RunLayout::new(run);
    [
        layout.routers().join("routers.json"),
        layout.partition_manifest(),
    ]
    .iter()
    .find_map(|p| {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
        v.get("experts")?.as_u64().map(|e| e as usize)
    })
}

/// Whether every unit of `stage` is done.
pub fn stage_done(run: &Path, stage: StageName, experts: usize) -> bool {
    let layout = RunLayout::new(run);
    match stage {
        StageName::Experts => {
            (0..experts).all(|e| unit_state(&layout, stage, Some(e)) == State::Done)
        }
        _ => unit_state(&layout, stage, None) == State::Done,
    }
}

/// The experts whose training is not finished.
pub fn unfinished_experts(run: &Path, experts: usize) -> Vec<usize> {
    let layout = RunLayout::new(run);
    (0..experts)
        .filter(|&e| unit_state(&layout, StageName::Experts, Some(e)) != State::Done)
        .collect()
}

/// The stage folder of a unit, for the units that own one (eval and report write files).
fn unit_folder(run: &RunLayout, stage: StageName, task: Option<usize>) -> Option<PathBuf> {
    Some(match stage {
        StageName::Data => run.data(),
        StageName::Routers => run.routers(),
        StageName::Partition => run.partition(),
        StageName::Experts => expert_dir(&run.experts(), task.unwrap_or(0)),
        StageName::Dense => dense_dir(&run.experts()),
        StageName::DenseSteps => dense_steps_dir(&run.experts()),
        StageName::Eval | StageName::Report => return None,
    })
}

/// Where a unit stands. A stage folder whose ownership marker (`stage.json`) exists but
/// cannot be read is never done: the stage itself refuses to resume from it, so it is
/// `Failed` with the marker's error, whatever its other files say.
fn unit_state(run: &RunLayout, stage: StageName, task: Option<usize>) -> State {
    if let Some(dir) = unit_folder(run, stage, task) {
        if let Err(e) = smalltalk_stage::Identity::read(&dir) {
            return State::Failed {
                error: format!("error: {e}"),
            };
        }
    }
    let done = |paths: &[PathBuf]| paths.iter().all(|p| p.exists());
    match stage {
        StageName::Data => state_of(done(&[run.data_manifest()]), None),
        StageName::Routers => {
            let mut em = progress(&run.em_metrics(), "iteration", None);
            if let Some(State::Started { total, .. }) = &mut em {
                *total = planned_iterations(&run.routers()).unwrap_or(0);
            }
            state_of(done(&[run.routers().join("routers.json")]), em)
        }
        StageName::Partition => state_of(done(&[run.partition_manifest()]), None),
        StageName::Experts | StageName::Dense | StageName::DenseSteps => {
            let dir = match (stage, task) {
                (StageName::Dense, _) => dense_dir(&run.experts()),
                (StageName::DenseSteps, _) => dense_steps_dir(&run.experts()),
                (_, e) => expert_dir(&run.experts(), e.unwrap_or(0)),
            };
            training_state(&dir)
        }
        StageName::Eval => state_of(done(&[run.eval_json(), run.eval_test_json()]), None),
        StageName::Report => state_of(done(&[run.report_md()]), None),
    }
}

/// The EM iterations the routers stage plans (`[routers] iterations` of its `config.toml`).
fn planned_iterations(routers: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(smalltalk_stage::layout::stage_config(routers)).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    table
        .get("routers")?
        .get("iterations")?
        .as_integer()
        .map(|i| i as u64)
}

fn state_of(done: bool, started: Option<State>) -> State {
    match (done, started) {
        (true, _) => State::Done,
        (false, Some(s)) => s,
        (false, None) => State::Missing,
    }
}

/// A training run (expert or dense): done when its last metrics line reached the planned
/// steps and that step's checkpoint exists.
fn training_state(dir: &Path) -> State {
    let metrics = dir.join("metrics.jsonl");
    match progress(&metrics, "step", Some("total_steps")) {
        Some(State::Started { step, total, .. })
            if step == total && dir.join(format!("checkpoints/step-{step:08}")).is_dir() =>
        {
            State::Done
        }
        Some(s) => s,
        None if dir.join("checkpoints").is_dir() => State::Started {
            step: 0,
            total: 0,
            eta_s: None,
            idle_s: 0.0,
        },
        None => State::Missing,
    }
}

/// `Started` from the last line of a JSON-lines metrics file (`step_key` done of
/// `total_key`, its `eta_s`), or `None` without one.
fn progress(path: &Path, step_key: &str, total_key: Option<&str>) -> Option<State> {
    let text = std::fs::read_to_string(path).ok()?;
    let last: serde_json::Value = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())?;
    let idle_s = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map_or(0.0, |d| d.as_secs_f64());
    let step = last.get(step_key)?.as_u64()?;
    Some(State::Started {
        step,
        total: total_key
            .and_then(|k| last.get(k))
            .and_then(|v| v.as_u64())
            .unwrap_or(0),
        eta_s: last.get("eta_s").and_then(|v| v.as_f64()),
        idle_s,
    })
}

/// The scheduler log file name of a stage (`%j`: the job id) or of an expert task.
pub fn log_pattern(stage: StageName) -> String {
    match stage {
        StageName::Experts => "experts-%a-%A.out".into(),
        _ => format!("{}-%j.out", stage.as_str()),
    }
}

/// The last `error:` line of the newest scheduler log of the unit, if that log has one.
fn last_error(logs: &Path, stage: StageName, task: Option<usize>) -> Option<String> {
    let prefix = match task {
        Some(e) => format!("experts-{e}-"),
        None => format!("{}-", stage.as_str()),
    };
    let newest = std::fs::read_dir(logs)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&prefix)
                && name[prefix.len()..].starts_with(|c: char| c.is_ascii_digit())
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())?;
    let text = std::fs::read_to_string(newest.path()).ok()?;
    text.lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .map(str::to_string)
}

/// The status table for people.
pub fn describe(rows: &[UnitStatus]) -> String {
    let mut out = format!(
        "{:<12} {:>4}  {:<44} {}\n",
        "stage", "task", "state", "queue"
    );
    for r in rows {
        let state = match &r.state {
            State::Done => "done".to_string(),
            State::Missing => "missing".to_string(),
            State::Failed { error } => format!("failed: {error}"),
            State::Started {
                step,
                total,
                eta_s,
                idle_s,
            } => {
                let eta = eta_s.map_or(String::new(), |s| format!(", ETA {:.0}s", s));
                format!("started: {step}/{total}{eta}, updated {idle_s:.0}s ago")
            }
        };
        let task = r.task.map_or("-".into(), |t| t.to_string());
        let queue = r.queue.as_deref().unwrap_or("-");
        out.push_str(&format!(
            "{:<12} {:>4}  {:<44} {}\n",
            r.stage, task, state, queue
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_task_shows_the_last_error_of_its_newest_log_and_a_done_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        let logs = run.join("slurm/logs");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(
            logs.join("routers-7.out"),
            "iteration 1\nerror: routers: out of memory\n",
        )
        .unwrap();
        std::fs::write(logs.join("experts-1-9.out"), "error: expert 1: disk full\n").unwrap();
        std::fs::write(logs.join("experts-10-9.out"), "error: not expert 1's\n").unwrap();
        let rows = run_status(run, 2);
        let find = |stage: &str, task| {
            rows.iter()
                .find(|r| r.stage == stage && r.task == task)
                .unwrap()
        };
        assert_eq!(
            find("routers", None).state,
            State::Failed {
                error: "error: routers: out of memory".into()
            }
        );
        assert_eq!(
            find("experts", Some(1)).state,
            State::Failed {
                error: "error: expert 1: disk full".into()
            }
        );
        assert_eq!(find("experts", Some(0)).state, State::Missing);
        // Once its output is complete, an old failure no longer shows.
        std::fs::create_dir_all(run.join("routers")).unwrap();
        std::fs::write(run.join("routers/routers.json"), "{\"experts\": 2}").unwrap();
        let rows = run_status(run, 2);
        assert_eq!(
            rows.iter().find(|r| r.stage == "routers").unwrap().state,
            State::Done
        );
        assert_eq!(experts_of(run), Some(2));
        let table = describe(&rows);
        assert!(
            table.contains("failed: error: expert 1: disk full"),
            "{table}"
        );
    }

    #[test]
    fn a_finished_expert_with_a_garbage_stage_marker_is_not_done() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        let layout = RunLayout::new(run);
        for e in 0..2 {
            let expert = layout.expert(e);
            std::fs::create_dir_all(expert.join("checkpoints/step-00000040")).unwrap();
            std::fs::write(
                expert.join("metrics.jsonl"),
                "{\"step\":40,\"total_steps\":40}\n",
            )
            .unwrap();
            let marker = serde_json::json!({
                "format": smalltalk_stage::folder::MARKER_FORMAT,
                "kind": "expert",
                "inputs": {},
                "settings": {},
            });
            std::fs::write(expert.join("stage.json"), marker.to_string()).unwrap();
        }
        assert!(stage_done(run, StageName::Experts, 2));
        std::fs::write(layout.expert(1).join("stage.json"), "\u{0}garbage{").unwrap();
        let rows = run_status(run, 2);
        let expert = |e| rows.iter().find(|r| r.task == Some(e)).unwrap();
        assert_eq!(expert(0).state, State::Done);
        let State::Failed { error } = &expert(1).state else {
            panic!("{:?}", expert(1).state);
        };
        assert!(error.contains("stage.json"), "{error}");
        assert!(!stage_done(run, StageName::Experts, 2));
        assert_eq!(unfinished_experts(run, 2), [1]);
        // A marker of another format is not done either.
        std::fs::write(
            layout.expert(1).join("stage.json"),
            "{\"format\":\"other/9\",\"kind\":\"expert\",\"inputs\":{},\"settings\":{}}",
        )
        .unwrap();
        assert!(!stage_done(run, StageName::Experts, 2));
        let table = describe(&run_status(run, 2));
        assert!(
            table.contains("failed: error: ") && table.contains("other/9"),
            "{table}"
        );
    }
}
