//! The folders and files of a pipeline run, named once: `cargo xtask pipeline` writes them,
//! `smalltalk report` reads them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A run folder: `data/`, `routers/`, `partition/`, `experts/` (`expert-NN/`, `dense/`),
/// `eval.json`, `stage_seconds.json`, `tokenizer.json`, and the report's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLayout {
    root: PathBuf,
}

impl RunLayout {
    /// The layout under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunLayout { root: root.into() }
    }
    /// The run folder.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The tokenizer trained for the run (`tokenizer.json`).
    pub fn tokenizer(&self) -> PathBuf {
        self.root.join("tokenizer.json")
    }
    /// The dataset folder (`data/`).
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    /// The routers folder (`routers/`).
    pub fn routers(&self) -> PathBuf {
        self.root.join("routers")
    }
    /// The partition folder (`partition/`).
    pub fn partition(&self) -> PathBuf {
        self.root.join("partition")
    }
    /// The folder holding `expert-NN/` and `dense/` (`experts/`).
    pub fn experts(&self) -> PathBuf {
        self.root.join("experts")
    }
    /// Expert `e`'s training run (`experts/expert-NN/`).
    pub fn expert(&self, e: usize) -> PathBuf {
        expert_dir(&self.experts(), e)
    }
    /// The dense baseline's training run (`experts/dense/`).
    pub fn dense(&self) -> PathBuf {
        dense_dir(&self.experts())
    }
    /// The E×-steps dense baseline's training run (`experts/dense-steps/`).
    pub fn dense_steps(&self) -> PathBuf {
        dense_steps_dir(&self.experts())
    }
    /// The branch-trained experts and dense model (`experts-branched/`), next to the
    /// from-scratch ones when a run compares the two (`[experts] init`).
    pub fn experts_branched(&self) -> PathBuf {
        self.root.join("experts-branched")
    }
    /// The evaluation of the branch-trained mixture on validation (`eval-branched.json`).
    pub fn eval_branched_json(&self) -> PathBuf {
        self.root.join("eval-branched.json")
    }
    /// The evaluation of the test split (`eval-test.json`; text from files the training
    /// never saw when the dataset's test split holds out whole files).
    pub fn eval_test_json(&self) -> PathBuf {
        self.root.join("eval-test.json")
    }
    /// The dataset manifest (`data/manifest.json`).
    pub fn data_manifest(&self) -> PathBuf {
        self.data().join("manifest.json")
    }
    /// Router EM's record of each iteration, one JSON object a line (`routers/em/metrics.jsonl`).
    pub fn em_metrics(&self) -> PathBuf {
        self.routers().join("em").join("metrics.jsonl")
    }
    /// The partition manifest (`partition/partition.json`).
    pub fn partition_manifest(&self) -> PathBuf {
        self.partition().join("partition.json")
    }
    /// The mixture's manifest (`mixture.json`, written by `smalltalk mixture write` after
    /// the experts): every member's router and expert with checksums, the routing, the
    /// tokenizer; what `eval`, `route`, `generate`, `export hf` and `report` read.
    pub fn mixture(&self) -> PathBuf {
        self.root.join("mixture.json")
    }
    /// The evaluation written by `smalltalk eval --out` (`eval.json`).
    pub fn eval_json(&self) -> PathBuf {
        self.root.join("eval.json")
    }
    /// Wall time per stage (`stage_seconds.json`).
    pub fn stage_seconds(&self) -> PathBuf {
        self.root.join("stage_seconds.json")
    }
    /// Every stage's effective settings (`config.toml`).
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// The report (`report.md`).
    pub fn report_md(&self) -> PathBuf {
        self.root.join("report.md")
    }
    /// The report for scripts (`report.json`).
    pub fn report_json(&self) -> PathBuf {
        self.root.join("report.json")
    }
    /// A file of the report beside `report.md`, such as a plot (`NAME`).
    pub fn report_file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

/// The effective settings a stage writes into its folder `dir` (`dir/config.toml`).
pub fn stage_config(dir: &Path) -> PathBuf {
    dir.join("config.toml")
}

/// A stage's wall time: `stage_seconds.json` holds a JSON array of these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSeconds {
    /// The stage's name (`routers`, `partition`, `expert`, ...).
    pub stage: String,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Expert `e`'s run folder under an experts folder (`expert-NN`).
pub fn expert_dir(experts: &Path, e: usize) -> PathBuf {
    experts.join(format!("expert-{e:02}"))
}

/// The dense baseline's run folder under an experts folder: `dense` for the paper's protocol
/// (E× the experts' batch, the same steps), `dense-steps` for E× the steps at the experts'
/// batch. A run may hold both.
pub fn dense_dir(experts: &Path) -> PathBuf {
    experts.join("dense")
}

/// The E×-steps dense baseline's run folder under an experts folder (`dense-steps`; see
/// [`dense_dir`]).
pub fn dense_steps_dir(experts: &Path) -> PathBuf {
    experts.join("dense-steps")
}
