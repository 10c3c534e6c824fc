//! The run as a list of stages, each one or more `smalltalk` commands, with what it waits for.
//! The same list drives `cargo xtask pipeline` (one machine), the Slurm scripts and the
//! Kubernetes Jobs, so every way of running gives the same run folder.

use std::path::{Path, PathBuf};

use smalltalk_stage::RunLayout;

/// Which stage of the run (paper §2: routers by EM, partition, independent experts; plus the
/// data before and the dense baselines, evaluation and report after).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StageName {
    /// Train the tokenizer and build the dataset.
    Data,
    /// E routers by hard EM.
    Routers,
    /// The training rows into E equal parts.
    Partition,
    /// One expert per part: a job array of E tasks.
    Experts,
    /// The paper's dense baseline (E× batch, same steps).
    Dense,
    /// The E×-steps dense baseline (same batch).
    DenseSteps,
    /// The mixture's manifest (`mixture.json`), then routed evaluation on validation and test.
    Eval,
    /// report.md, report.json and plots.
    Report,
}

impl StageName {
    /// Every stage in pipeline order.
    pub const ALL: [StageName; 8] = [
        StageName::Data,
        StageName::Routers,
        StageName::Partition,
        StageName::Experts,
        StageName::Dense,
        StageName::DenseSteps,
        StageName::Eval,
        StageName::Report,
    ];

    /// The stage's name in file and job names (`dense-steps`).
    pub fn as_str(self) -> &'static str {
        match self {
            StageName::Data => "data",
            StageName::Routers => "routers",
            StageName::Partition => "partition",
            StageName::Experts => "experts",
            StageName::Dense => "dense",
            StageName::DenseSteps => "dense-steps",
            StageName::Eval => "eval",
            StageName::Report => "report",
        }
    }

    /// The stages this one reads the output of.
    pub fn after(self) -> &'static [StageName] {
        use StageName::*;
        match self {
            Data => &[],
            Routers => &[Data],
            Partition => &[Routers],
            Experts => &[Partition],
            Dense | DenseSteps => &[Data],
            Eval => &[Experts, Dense, DenseSteps],
            Report => &[Eval],
        }
    }
}

impl std::fmt::Display for StageName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a run is made of: where it lives, what it reads and how many experts it has. The
/// launchers save it as `RUN/launch.json`, where `smalltalk status` finds it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunSpec {
    /// The run folder.
    pub run: PathBuf,
    /// The corpus inputs of the data stage.
    pub corpus: Vec<PathBuf>,
    /// The TOML config of every stage.
    pub config: PathBuf,
    /// Number of experts E.
    pub experts: usize,
    /// Compute backend (`flex`, `cuda`, `wgpu`).
    pub backend: String,
}

/// One stage: its commands (arguments of the `smalltalk` binary), run one after the other.
/// An array stage's command has no `--expert`: each task takes its index from
/// `SLURM_ARRAY_TASK_ID` or `JOB_COMPLETION_INDEX`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// Which stage.
    pub name: StageName,
    /// The commands, in order.
    pub commands: Vec<Vec<String>>,
    /// `Some(E)` for the expert array.
    pub array: Option<usize>,
}

/// Prefix lengths every evaluation reports next to M̂ = 32.
pub const EVAL_PREFIX_SWEEP: &str = "8,16,64,128,256";

impl RunSpec {
    /// Where a launcher saves the spec of the run in `run`.
    pub fn file(run: &Path) -> PathBuf {
        run.join("launch.json")
    }

    /// Save the spec into its run folder (atomically).
    pub fn save(&self) -> crate::Result<()> {
        std::fs::create_dir_all(&self.run).map_err(|source| crate::LaunchError::Io {
            path: self.run.clone(),
            source,
        })?;
        let text = serde_json::to_string_pretty(self).expect("a spec serialises");
        Ok(smalltalk_stage::atomic::write_file(
            &Self::file(&self.run),
            text.as_bytes(),
        )?)
    }

    /// The spec a launcher saved in `run`, if any.
    pub fn load(run: &Path) -> crate::Result<Option<Self>> {
        let path = Self::file(run);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| crate::LaunchError::Config {
                path,
                message: e.to_string(),
            })
    }

    /// The run folder's layout.
    pub fn layout(&self) -> RunLayout {
        RunLayout::new(&self.run)
    }

    /// Every stage of the run, in pipeline order.
    pub fn stages(&self) -> Vec<Stage> {
        StageName::ALL.iter().map(|&n| self.stage(n)).collect()
    }

    /// The commands of stage `name`.
    pub fn stage(&self, name: StageName) -> Stage {
        let run = self.layout();
        let p = |p: &Path| p.display().to_string();
        let cmd = |args: &[&str]| -> Vec<String> {
            let mut v = vec!["--backend".to_string(), self.backend.clone()];
            v.extend(args.iter().map(|s| s.to_string()));
            v
        };
        let (data, config, e) = (p(&run.data()), p(&self.config), self.experts.to_string());
        let train = |what: &[&str]| {
            let mut c = cmd(what);
            c.extend([
                "--data".into(),
                data.clone(),
                "--config".into(),
                config.clone(),
            ]);
            c.extend(["--out".into(), p(&run.experts())]);
            c
        };
        let commands = match name {
            StageName::Data => {
                let mut corpus = vec!["--corpus".to_string()];
                corpus.extend(self.corpus.iter().map(|c| p(c)));
                let mut tokenizer = cmd(&["data", "tokenizer"]);
                tokenizer.extend(corpus.clone());
                tokenizer.extend(["--config".into(), config.clone()]);
                tokenizer.extend(["--out".into(), p(&run.tokenizer())]);
                let mut build = cmd(&["data", "build"]);
                build.extend(corpus);
                build.extend(["--config".into(), config.clone()]);
                build.extend(["--tokenizer".into(), p(&run.tokenizer())]);
                build.extend(["--out".into(), data.clone()]);
                vec![tokenizer, build]
            }
            StageName::Routers => vec![cmd(&[
                "routers",
                "train",
                "--data",
                &data,
                "--config",
                &config,
                "--experts",
                &e,
                "--out",
                &p(&run.routers()),
            ])],
            StageName::Partition => vec![cmd(&[
                "partition",
                "--data",
                &data,
                "--routers",
                &p(&run.routers()),
                "--config",
                &config,
                "--out",
                &p(&run.partition()),
            ])],
            StageName::Experts => {
                let mut c = train(&["expert", "train"]);
                c.extend(["--partition".into(), p(&run.partition())]);
                vec![c]
            }
            StageName::Dense => vec![train(&[
                "dense",
                "train",
                "--experts",
                &e,
                "--scaling",
                "batch",
            ])],
            StageName::DenseSteps => {
                vec![train(&[
                    "dense",
                    "train",
                    "--experts",
                    &e,
                    "--scaling",
                    "steps",
                ])]
            }
            StageName::Eval => {
                // The mixture's manifest first (every member checked: same partition, same
                // tokenizer, finished), then both evaluations read it.
                let mut commands = vec![cmd(&[
                    "mixture",
                    "write",
                    "--routers",
                    &p(&run.routers()),
                    "--partition",
                    &p(&run.partition()),
                    "--experts",
                    &p(&run.experts()),
                    "--out",
                    &p(&run.mixture()),
                ])];
                commands.extend(
                    [
                        ("validation", run.eval_json()),
                        ("test", run.eval_test_json()),
                    ]
                    .iter()
                    .map(|(split, out)| {
                        cmd(&[
                            "eval",
                            "--data",
                            &data,
                            "--mixture",
                            &p(&run.mixture()),
                            "--split",
                            split,
                            "--prefix",
                            "32",
                            "--prefix-sweep",
                            EVAL_PREFIX_SWEEP,
                            "--out",
                            &p(out),
                        ])
                    }),
                );
                commands
            }
            StageName::Report => vec![vec![
                "report".into(),
                "--run".into(),
                p(&self.run),
                "--config".into(),
                config.clone(),
            ]],
        };
        Stage {
            name,
            commands,
            array: (name == StageName::Experts).then_some(self.experts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RunSpec {
        RunSpec {
            run: "runs/a".into(),
            corpus: vec!["c.jsonl".into()],
            config: "cfg.toml".into(),
            experts: 3,
            backend: "flex".into(),
        }
    }

    #[test]
    fn every_stage_runs_after_the_stages_it_reads() {
        let order: Vec<StageName> = spec().stages().iter().map(|s| s.name).collect();
        assert_eq!(order, StageName::ALL);
        for (i, s) in order.iter().enumerate() {
            for dep in s.after() {
                assert!(order[..i].contains(dep), "{s} before {dep}");
            }
        }
    }

    #[test]
    fn the_expert_array_takes_its_index_from_the_scheduler() {
        let experts = spec().stage(StageName::Experts);
        assert_eq!(experts.array, Some(3));
        let c = &experts.commands[0];
        assert!(!c.contains(&"--expert".to_string()), "{c:?}");
        assert_eq!(c[..4], ["--backend", "flex", "expert", "train"]);
        let eval = spec().stage(StageName::Eval);
        assert_eq!(eval.commands.len(), 3);
        let write = eval.commands[0].join(" ");
        assert!(write.contains("mixture write"), "{write}");
        assert!(write.ends_with("--out runs/a/mixture.json"), "{write}");
        assert!(eval.commands[2].join(" ").contains("--split test"));
        assert!(eval.commands[2]
            .join(" ")
            .contains("--mixture runs/a/mixture.json"));
        assert!(eval.commands[2]
            .join(" ")
            .ends_with("--out runs/a/eval-test.json"));
    }
}
