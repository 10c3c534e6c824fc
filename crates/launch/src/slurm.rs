//! The run as Slurm batch scripts: one per stage, the experts as a job array
//! (`--array`, each task's index in `SLURM_ARRAY_TASK_ID`), chained with
//! `--dependency=afterok`. Each command runs as a job step (`srun`), so `--signal` and
//! `scancel --signal=TERM` reach it: it checkpoints and exits with 143, and the script requeues
//! the task, which resumes from the checkpoint. Submitting again submits only what is missing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cluster::ClusterConfig;
use crate::error::{LaunchError, Result};
use crate::plan::{RunSpec, Stage, StageName};
pub use crate::safe::shell_quote;
use crate::status::{log_pattern, stage_done, unfinished_experts, UnitStatus};

/// The exit status of a `smalltalk` stage stopped on request after writing a checkpoint.
pub const STOPPED_STATUS: i32 = 143;

/// One batch script of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchScript {
    /// Its stage.
    pub stage: StageName,
    /// Where it is written (`RUN/slurm/<stage>.sbatch`).
    pub path: PathBuf,
    /// The script.
    pub text: String,
    /// The stages (of this submission) it waits for.
    pub after: Vec<StageName>,
}

/// A submitted script.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Submitted {
    /// The stage.
    pub stage: String,
    /// Slurm's job id.
    pub job_id: String,
    /// The `sbatch` command line.
    pub command: String,
}

impl Submitted {
    /// The submission for people: the stage, job id and script (with `dry_run`, the script
    /// and the `sbatch` line).
    pub fn describe(&self, script: &BatchScript, dry_run: bool) -> String {
        match dry_run {
            true => format!(
                "# {}\n{}\n{}",
                script.path.display(),
                script.text,
                self.command
            ),
            false => format!(
                "{:<12} job {:<10} {}",
                self.stage,
                self.job_id,
                script.path.display()
            ),
        }
    }
}

/// The scripts of the stages of `spec` that are not done yet, with the `smalltalk` binary
/// at `bin`. An expert array holds only the unfinished experts.
pub fn batch_scripts(spec: &RunSpec, cluster: &ClusterConfig, bin: &Path) -> Vec<BatchScript> {
    let todo: Vec<Stage> = spec
        .stages()
        .into_iter()
        .filter(|s| !stage_done(&spec.run, s.name, spec.experts))
        .collect();
    let names: Vec<StageName> = todo.iter().map(|s| s.name).collect();
    todo.iter()
        .map(|stage| {
            let array = stage
                .array
                .map(|_| unfinished_experts(&spec.run, spec.experts));
            BatchScript {
                stage: stage.name,
                path: spec.run.join(format!("slurm/{}.sbatch", stage.name)),
                text: script(spec, cluster, bin, stage, array.as_deref()),
                after: stage
                    .name
                    .after()
                    .iter()
                    .copied()
                    .filter(|d| names.contains(d))
                    .collect(),
            }
        })
        .collect()
}

/// The job name of a stage of the run: `smalltalk-<run folder name>-<stage>`, every
/// character of the folder name other than ASCII letters, digits, `_`, `-` and `.` written as
/// `_` (the name is an `#SBATCH` value and a `squeue --name` list item).
pub fn job_name(spec: &RunSpec, stage: StageName) -> String {
    let run: String = spec
        .run
        .file_name()
        .map_or("run".into(), |n| n.to_string_lossy().into_owned())
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() || "_-.".contains(c) {
            true => c,
            false => '_',
        })
        .collect();
    format!("smalltalk-{run}-{stage}")
}

fn script(
    spec: &RunSpec,
    cluster: &ClusterConfig,
    bin: &Path,
    stage: &Stage,
    array: Option<&[usize]>,
) -> String {
    let r = cluster.resources(stage.name);
    let logs = spec.run.join("slurm/logs");
    let mut s = String::from("#!/bin/bash\n");
    let mut line = |l: String| {
        let _ = writeln!(s, "#SBATCH {l}");
    };
    line(format!("--job-name={}", job_name(spec, stage.name)));
    line(format!(
        "--output={}",
        sbatch_quote(&logs.join(log_pattern(stage.name)).display().to_string())
    ));
    line("--ntasks=1".into());
    line(format!("--cpus-per-task={}", r.cpus.unwrap_or(1)));
    if let Some(g) = r.gpus.filter(|&g| g > 0) {
        line(format!("--gres=gpu:{g}"));
    }
    for (key, value) in [
        ("partition", &r.partition),
        ("mem", &r.memory),
        ("time", &r.time),
        ("account", &cluster.account),
    ] {
        if let Some(v) = value {
            line(format!("--{key}={v}"));
        }
    }
    // A requeued task appends to its log instead of truncating it.
    line("--open-mode=append".into());
    line("--requeue".into());
    line(format!("--signal=TERM@{}", cluster.stop_seconds));
    if let Some(tasks) = array {
        let list: Vec<String> = tasks.iter().map(|t| t.to_string()).collect();
        line(format!("--array={}", list.join(",")));
    }
    for extra in &cluster.extra {
        let _ = writeln!(s, "{extra}");
    }
    let _ = writeln!(
        s,
        "# {stage}: written by `smalltalk launch slurm`; submitting again submits only what is \
         missing.\nset -u\nexport RAYON_NUM_THREADS=\"${{SLURM_CPUS_PER_TASK:-1}}\"\n\
         # A stage stopped by SIGTERM (preemption, --signal before the time limit, scancel \
         --signal=TERM)\n# checkpoints and exits {STOPPED_STATUS}: requeue the task; it resumes \
         from the checkpoint.\nstep() {{\n  srun --ntasks=1 \"$@\"\n  status=$?\n  if [ \
         \"$status\" -eq {STOPPED_STATUS} ]; then\n    echo \"stopped on request: requeueing job \
         $SLURM_JOB_ID\"\n    scontrol requeue \"$SLURM_JOB_ID\"\n    exit 0\n  fi\n  \
         [ \"$status\" -eq 0 ] || exit \"$status\"\n}}",
        stage = stage.name
    );
    for command in &stage.commands {
        let args: Vec<String> = command.iter().map(|a| shell_quote(a)).collect();
        let _ = writeln!(
            s,
            "step {} {}",
            shell_quote(&bin.display().to_string()),
            args.join(" ")
        );
    }
    s
}

/// A value for an `#SBATCH` line that sbatch reads as one argument: as it is when it holds
/// only safe characters, else in double quotes (sbatch's own quoting). The values are checked
/// first ([`crate::safe`]): no line breaks, `"`, `\\` or `%` reach here.
fn sbatch_quote(value: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c);
    debug_assert!(!value.contains(|c: char| c.is_control() || c == '"' || c == '\\'));
    if !value.is_empty() && value.chars().all(plain) {
        value.into()
    } else {
        format!("\"{value}\"")
    }
}

/// Write the scripts (atomically) and, unless `dry_run`, submit them in order with `sbatch`,
/// each with `--dependency=afterok:` on the jobs of the stages it reads. Refuses while jobs
/// of this run are still queued.
pub fn launch(scripts: &[BatchScript], spec: &RunSpec, dry_run: bool) -> Result<Vec<Submitted>> {
    let logs = spec.run.join("slurm/logs");
    std::fs::create_dir_all(&logs).map_err(|source| LaunchError::Io { path: logs, source })?;
    for s in scripts {
        smalltalk_stage::atomic::write_file(&s.path, s.text.as_bytes())?;
    }
    if !dry_run {
        let queued = queue(spec)?;
        if !queued.is_empty() {
            let jobs: Vec<String> = queued
                .iter()
                .map(|(id, (name, _))| format!("{id} {name}"))
                .collect();
            return Err(LaunchError::StillQueued {
                count: queued.len(),
                jobs: jobs.join(", "),
            });
        }
    }
    let mut ids: BTreeMap<StageName, String> = BTreeMap::new();
    let mut out = Vec::new();
    for s in scripts {
        let mut args = vec!["--parsable".to_string()];
        let deps: Vec<String> = s
            .after
            .iter()
            .map(|d| ids.get(d).cloned().unwrap_or_else(|| format!("<{d}>")))
            .collect();
        if !deps.is_empty() {
            args.push(format!("--dependency=afterok:{}", deps.join(":")));
        }
        args.push(s.path.display().to_string());
        let command = format!("sbatch {}", args.join(" "));
        let job_id = if dry_run {
            format!("<{}>", s.stage)
        } else {
            let out = run("sbatch", &args)?;
            out.trim().split(';').next().unwrap_or_default().to_string()
        };
        ids.insert(s.stage, job_id.clone());
        out.push(Submitted {
            stage: s.stage.as_str().into(),
            job_id,
            command,
        });
    }
    Ok(out)
}

/// Jobs of this run in Slurm's queue: job id → (name, state), from `squeue`.
pub fn queue(spec: &RunSpec) -> Result<BTreeMap<String, (String, String)>> {
    let names: Vec<String> = StageName::ALL.iter().map(|&s| job_name(spec, s)).collect();
    let text = run(
        "squeue",
        &[
            "--noheader".into(),
            "--format=%i|%j|%T".into(),
            format!("--name={}", names.join(",")),
        ],
    )?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut parts = l.trim().splitn(3, '|');
            let (id, name, state) = (parts.next()?, parts.next()?, parts.next()?);
            Some((id.to_string(), (name.to_string(), state.to_string())))
        })
        .collect())
}

/// Add the queue's view to status rows (when `squeue` is there): each row's job id and state.
pub fn add_queue(rows: &mut [UnitStatus], spec: &RunSpec) {
    let Ok(queued) = queue(spec) else { return };
    for row in rows.iter_mut() {
        let Some(stage) = StageName::ALL.iter().find(|s| s.as_str() == row.stage) else {
            continue;
        };
        let name = job_name(spec, *stage);
        for (id, (n, state)) in &queued {
            // Array tasks show as `<array id>_<task>` (or `_[1,3]` while pending).
            let task_matches = match row.task {
                None => true,
                Some(t) => id.ends_with(&format!("_{t}")) || id.contains('['),
            };
            if *n == name && task_matches {
                row.queue = Some(format!("{id} {state}"));
            }
        }
    }
}

/// Run a scheduler command; its stdout, or an error with its stderr.
fn run(program: &str, args: &[String]) -> Result<String> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| LaunchError::Scheduler {
            command: command.clone(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(LaunchError::Scheduler {
            command,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(run: &Path) -> RunSpec {
        RunSpec {
            run: run.into(),
            corpus: vec!["/data/c.jsonl".into()],
            config: "/cfg/run.toml".into(),
            experts: 3,
            backend: "flex".into(),
        }
    }

    /// A finished training run of `steps` steps in `dir`.
    fn finished(dir: &Path, steps: u64) {
        std::fs::create_dir_all(dir.join(format!("checkpoints/step-{steps:08}"))).unwrap();
        let line = format!("{{\"step\":{steps},\"total_steps\":{steps}}}\n");
        std::fs::write(dir.join("metrics.jsonl"), line).unwrap();
    }

    #[test]
    fn a_new_run_gets_every_stage_chained_and_the_experts_as_an_array() {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = ClusterConfig {
            gpus: 1,
            time: Some("2:00:00".into()),
            ..Default::default()
        };
        cluster.extra.push("#SBATCH --qos=high".into());
        let scripts = batch_scripts(
            &spec(&dir.path().join("r")),
            &cluster,
            Path::new("/bin/smalltalk"),
        );
        let names: Vec<StageName> = scripts.iter().map(|s| s.stage).collect();
        assert_eq!(names, StageName::ALL);
        let experts = &scripts[3];
        assert!(
            experts.text.contains("#SBATCH --array=0,1,2\n"),
            "{}",
            experts.text
        );
        assert!(experts
            .text
            .contains("#SBATCH --gres=gpu:1\n#SBATCH --time=2:00:00\n"));
        assert!(experts.text.contains("#SBATCH --qos=high\n"));
        assert!(experts.text.contains("#SBATCH --signal=TERM@120\n"));
        assert!(experts
            .text
            .contains("step /bin/smalltalk --backend flex expert train --data"));
        assert!(experts.text.contains("scontrol requeue"));
        assert_eq!(experts.after, [StageName::Partition]);
        assert_eq!(scripts[7].after, [StageName::Eval]);
        assert_eq!(
            scripts[6].after,
            [StageName::Experts, StageName::Dense, StageName::DenseSteps]
        );
        // The dry run writes the scripts and names the dependencies by stage.
        let sub = launch(&scripts, &spec(&dir.path().join("r")), true).unwrap();
        assert_eq!(
            sub[6].command.split(' ').nth(2),
            Some("--dependency=afterok:<experts>:<dense>:<dense-steps>")
        );
        assert!(scripts.iter().all(|s| s.path.exists()));
    }

    #[test]
    fn a_partly_finished_run_submits_only_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("r");
        let layout = smalltalk_stage::RunLayout::new(&run);
        std::fs::create_dir_all(layout.data()).unwrap();
        std::fs::write(layout.data_manifest(), "{}").unwrap();
        std::fs::create_dir_all(layout.routers()).unwrap();
        std::fs::write(layout.routers().join("routers.json"), "{}").unwrap();
        std::fs::create_dir_all(layout.partition()).unwrap();
        std::fs::write(layout.partition_manifest(), "{}").unwrap();
        finished(&layout.expert(0), 40);
        finished(&layout.expert(2), 40);
        finished(&layout.dense(), 40);
        // Expert 1 stopped halfway: it is resubmitted (and resumes).
        std::fs::create_dir_all(layout.expert(1).join("checkpoints/step-00000020")).unwrap();
        std::fs::write(
            layout.expert(1).join("metrics.jsonl"),
            "{\"step\":20,\"total_steps\":40}\n",
        )
        .unwrap();
        let scripts = batch_scripts(
            &spec(&run),
            &ClusterConfig::default(),
            Path::new("smalltalk"),
        );
        let names: Vec<StageName> = scripts.iter().map(|s| s.stage).collect();
        assert_eq!(
            names,
            [
                StageName::Experts,
                StageName::DenseSteps,
                StageName::Eval,
                StageName::Report
            ]
        );
        assert!(scripts[0].text.contains("#SBATCH --array=1\n"));
        assert!(scripts[0].after.is_empty() && scripts[1].after.is_empty());
        assert_eq!(
            scripts[2].after,
            [StageName::Experts, StageName::DenseSteps]
        );
        let rows = crate::status::run_status(&run, 3);
        let expert1 = rows.iter().find(|r| r.task == Some(1)).unwrap();
        assert!(matches!(
            expert1.state,
            crate::status::State::Started {
                step: 20,
                total: 40,
                ..
            }
        ));
    }

    #[test]
    fn arguments_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("runs/a-b_c.toml"), "runs/a-b_c.toml");
        assert_eq!(shell_quote("my run"), "'my run'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
