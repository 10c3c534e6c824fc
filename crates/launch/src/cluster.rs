//! The `[cluster]` table of the run's TOML config: what each stage asks the scheduler for.
//!
//! ```toml
//! [cluster]
//! partition = "gpu"          # Slurm partition (Kubernetes: ignored)
//! account = "my-project"     # Slurm account
//! cpus = 8                   # per task
//! gpus = 1                   # per task (Slurm --gres=gpu:N; Kubernetes nvidia.com/gpu)
//! memory = "64G"             # Slurm --mem; Kubernetes takes "64Gi" style values
//! time = "24:00:00"          # Slurm time limit
//! stop_seconds = 120         # SIGTERM this long before the time limit: checkpoint, requeue
//! extra = ["#SBATCH --qos=high"]
//! image = "ghcr.io/you/smalltalk:latest"  # Kubernetes container image
//! volume_claim = "smalltalk-runs"         # Kubernetes PVC holding the run folder
//! mount = "/runs"                         # where the claim is mounted
//! namespace = "default"
//! backoff_limit = 6
//!
//! [cluster.stage.experts]    # per stage: data, routers, partition, experts, dense,
//! gpus = 4                   # dense-steps, eval, report; unset keys take the table above
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{LaunchError, Result};
use crate::plan::StageName;

/// What one task of a stage asks for; unset fields take the `[cluster]` defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Resources {
    /// Slurm partition.
    pub partition: Option<String>,
    /// CPUs per task.
    pub cpus: Option<u32>,
    /// GPUs per task.
    pub gpus: Option<u32>,
    /// Memory per task (`64G`; Kubernetes: `64Gi`).
    pub memory: Option<String>,
    /// Time limit (`HH:MM:SS` or `D-HH:MM:SS`).
    pub time: Option<String>,
}

/// The `[cluster]` table (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Slurm partition of every stage.
    pub partition: Option<String>,
    /// CPUs per task.
    pub cpus: u32,
    /// GPUs per task.
    pub gpus: u32,
    /// Memory per task.
    pub memory: Option<String>,
    /// Time limit per task.
    pub time: Option<String>,
    /// Slurm account.
    pub account: Option<String>,
    /// Seconds before the time limit at which tasks get SIGTERM (Slurm `--signal`;
    /// Kubernetes `terminationGracePeriodSeconds`).
    pub stop_seconds: u32,
    /// Extra lines copied into every batch script's header.
    pub extra: Vec<String>,
    /// Kubernetes: the container image holding the `smalltalk` binary.
    pub image: String,
    /// Kubernetes: the PersistentVolumeClaim holding the run folder, corpus and config.
    pub volume_claim: String,
    /// Kubernetes: where the claim is mounted in the container.
    pub mount: String,
    /// Kubernetes: the namespace of the Jobs.
    pub namespace: String,
    /// Kubernetes: retries of a failed task (a preempted task counts once).
    pub backoff_limit: i32,
    /// Per-stage overrides, by stage name (`[cluster.stage.experts]`).
    pub stage: BTreeMap<String, Resources>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            partition: None,
            cpus: 1,
            gpus: 0,
            memory: None,
            time: None,
            account: None,
            stop_seconds: 120,
            extra: Vec::new(),
            image: "smalltalk:latest".into(),
            volume_claim: "smalltalk-runs".into(),
            mount: "/runs".into(),
            namespace: "default".into(),
            backoff_limit: 6,
            stage: BTreeMap::new(),
        }
    }
}

impl ClusterConfig {
    /// The `[cluster]` table of the config file at `path` (the defaults when it has none);
    /// unknown keys and stage names are errors naming the file and key.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| LaunchError::Io {
            path: path.into(),
            source,
        })?;
        let bad = |message: String| LaunchError::Config {
            path: path.into(),
            message,
        };
        let table: toml::Table = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let config: ClusterConfig = match table.get("cluster") {
            None => Self::default(),
            Some(v) => v
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| bad(format!("[cluster]: {e}")))?,
        };
        for name in config.stage.keys() {
            if !StageName::ALL.iter().any(|s| s.as_str() == name) {
                let known: Vec<&str> = StageName::ALL.iter().map(|s| s.as_str()).collect();
                return Err(bad(format!(
                    "[cluster.stage.{name}]: no such stage (stages: {})",
                    known.join(", ")
                )));
            }
        }
        Ok(config)
    }

    /// What one task of `stage` asks for: its `[cluster.stage.<name>]` over the defaults.
    pub fn resources(&self, stage: StageName) -> Resources {
        let own = self.stage.get(stage.as_str()).cloned().unwrap_or_default();
        Resources {
            partition: own.partition.or(self.partition.clone()),
            cpus: own.cpus.or(Some(self.cpus)),
            gpus: own.gpus.or(Some(self.gpus)),
            memory: own.memory.or(self.memory.clone()),
            time: own.time.or(self.time.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<ClusterConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        std::fs::write(&path, text).unwrap();
        ClusterConfig::load(&path)
    }

    #[test]
    fn stage_tables_override_the_defaults_and_typos_are_named() {
        let c = load("[data]\nseq_len = 8\n[cluster]\ncpus = 4\ntime = \"1:00:00\"\n[cluster.stage.experts]\ngpus = 2\n").unwrap();
        let e = c.resources(StageName::Experts);
        assert_eq!(
            (e.cpus, e.gpus, e.time.as_deref()),
            (Some(4), Some(2), Some("1:00:00"))
        );
        assert_eq!(c.resources(StageName::Eval).gpus, Some(0));
        assert_eq!(load("").unwrap(), ClusterConfig::default());
        let err = load("[cluster]\ngpu = 1\n").unwrap_err().to_string();
        assert!(err.contains("run.toml") && err.contains("gpu"), "{err}");
        let err = load("[cluster.stage.expert]\ngpus = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cluster.stage.expert") && err.contains("experts"),
            "{err}"
        );
    }
}
