//! What `smalltalk launch` and `smalltalk status` do, as library calls.

use std::path::{Path, PathBuf};

use crate::cluster::ClusterConfig;
use crate::error::{LaunchError, Result};
use crate::plan::RunSpec;
use crate::safe;
use crate::slurm::{BatchScript, Submitted};
use crate::status::UnitStatus;

/// A run to launch: its folder, inputs, E, backend, and overrides of the config's
/// `[cluster]` defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LaunchRequest {
    /// The run folder.
    pub run: PathBuf,
    /// The TOML config of every stage (with its `[cluster]` table).
    pub config: PathBuf,
    /// The corpus inputs.
    pub corpus: Vec<PathBuf>,
    /// Number of experts E.
    pub experts: usize,
    /// Compute backend.
    pub backend: String,
    /// Override of `[cluster] partition`.
    pub partition: Option<String>,
    /// Override of `[cluster] cpus`.
    pub cpus: Option<u32>,
    /// Override of `[cluster] gpus`.
    pub gpus: Option<u32>,
    /// Override of `[cluster] time`.
    pub time: Option<String>,
}

impl LaunchRequest {
    /// The run's spec (absolute paths: the jobs run elsewhere) and its cluster settings.
    pub fn resolve(&self) -> Result<(RunSpec, ClusterConfig)> {
        let mut cluster = ClusterConfig::load(&self.config)?;
        cluster.partition = self.partition.clone().or(cluster.partition);
        cluster.cpus = self.cpus.unwrap_or(cluster.cpus);
        cluster.gpus = self.gpus.unwrap_or(cluster.gpus);
        cluster.time = self.time.clone().or(cluster.time);
        let absolute = |p: &Path| {
            std::path::absolute(p).map_err(|source| LaunchError::Io {
                path: p.into(),
                source,
            })
        };
        let spec = RunSpec {
            run: absolute(&self.run)?,
            corpus: self
                .corpus
                .iter()
                .map(|c| absolute(c))
                .collect::<Result<_>>()?,
            config: absolute(&self.config)?,
            experts: self.experts,
            backend: self.backend.clone(),
        };
        // Every path and word of the stages' commands is quoted into the scripts: it must be
        // text a program can be given.
        safe::check_path("--config", &spec.config)?;
        for c in &spec.corpus {
            safe::check_path("--corpus", c)?;
        }
        safe::check_arg("--backend", &spec.backend)?;
        Ok((spec, cluster))
    }

    /// Write the run's batch scripts and, unless `dry_run`, submit what is missing with the
    /// `smalltalk` binary at `bin` (see [`crate::slurm`]).
    /// Every value is checked first ([`crate::safe`]): one Slurm would not accept, or that could
    /// change what a script runs, is refused naming its flag, config key or path, before
    /// anything is written.
    pub fn slurm(&self, bin: &Path, dry_run: bool) -> Result<Vec<(Submitted, BatchScript)>> {
        if let Some(p) = &self.partition {
            safe::check_partition("--partition", p)?;
        }
        if let Some(t) = &self.time {
            safe::check_time("--time", t)?;
        }
        let (spec, cluster) = self.resolve()?;
        safe::check_slurm_run("RUN", &spec.run)?;
        safe::check_path("--bin", bin)?;
        cluster.check_slurm()?;
        let scripts = crate::slurm::batch_scripts(&spec, &cluster, bin);
        spec.save()?;
        let submitted = crate::slurm::launch(&scripts, &spec, dry_run)?;
        Ok(submitted.into_iter().zip(scripts).collect())
    }

    /// Write the run's Kubernetes Jobs (the image's binary is `bin`); the files written.
    /// Every value is checked first, as for [`LaunchRequest::slurm`].
    pub fn k8s(&self, bin: &str) -> Result<Vec<PathBuf>> {
        let (spec, cluster) = self.resolve()?;
        safe::check_path("RUN", &spec.run)?;
        safe::check_arg("--bin", bin)?;
        cluster.check_k8s()?;
        let jobs = crate::k8s::jobs(&spec, &cluster, bin);
        spec.save()?;
        crate::k8s::write_manifests(&spec, &jobs)
    }
}

/// Where the run in `run` stands: every stage and expert from its files, plus Slurm's queue
/// when the run was launched there. E is `experts`, else the launch spec's, else the routers'.
pub fn run_status(run: &Path, experts: Option<usize>) -> Result<Vec<UnitStatus>> {
    let spec = RunSpec::load(run)?;
    let experts = experts
        .or(spec.as_ref().map(|s| s.experts))
        .or_else(|| crate::status::experts_of(run))
        .unwrap_or(0);
    let mut rows = crate::status::run_status(run, experts);
    if let Some(spec) = &spec {
        crate::slurm::add_queue(&mut rows, spec);
    }
    Ok(rows)
}
