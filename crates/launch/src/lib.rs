//! # smalltalk-launch
//!
//! SmallTalk on a cluster. The method is made for schedulers: after the routers, the E experts
//! train with no communication (paper §2.3), so the expert stage is a job array. This crate
//! turns a run into
//! - Slurm batch scripts ([`slurm`]): one per stage, the experts as `--array`, chained with
//!   `--dependency=afterok`, submitted with the real `sbatch`; only what is missing is
//!   submitted again;
//! - Kubernetes Jobs ([`k8s`]): the experts as an Indexed Job, typed by `k8s-openapi`;
//! - a status table ([`status`]) from the run folder's own files, plus `squeue`'s view.
//!
//! The stages and their commands ([`plan`]) are the ones `cargo xtask pipeline` runs on one
//! machine, so every way of running writes the same run folder. Resources come from the
//! `[cluster]` table of the run's config ([`cluster`]). Every value that reaches a generated
//! script is validated for the scheduler or quoted for the shell ([`safe`]).

pub mod cluster;
pub mod error;
pub mod k8s;
mod launch;
pub mod plan;
pub mod safe;
pub mod slurm;
pub mod status;

#[cfg(test)]
mod hostile_tests;

pub use cluster::{ClusterConfig, Resources};
pub use error::{LaunchError, Result};
pub use launch::{run_status, LaunchRequest};
pub use plan::{RunSpec, Stage, StageName};
