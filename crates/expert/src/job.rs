//! Which expert this job trains: `--expert`, or the index a job array gives each task.

use crate::error::{ExpertError, Result};

/// Environment variables that carry a job-array task index, in the order they are read.
pub const INDEX_VARIABLES: [&str; 2] = ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"];

/// The expert index: `explicit` when given, else the first of [`INDEX_VARIABLES`] that is set
/// (`lookup` reads a variable; pass `|k| std::env::var(k).ok()`). Checked against `experts`.
pub fn expert_index(
    explicit: Option<usize>,
    experts: usize,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<usize> {
    let index = match explicit {
        Some(i) => i,
        None => {
            let (name, value) = INDEX_VARIABLES
                .iter()
                .find_map(|&k| lookup(k).map(|v| (k, v)))
                .ok_or_else(|| {
                    ExpertError::Config(format!(
                        "no expert given: pass --expert or run as a job-array task ({} set)",
                        INDEX_VARIABLES.join(" or ")
                    ))
                })?;
            value.trim().parse().map_err(|_| {
                ExpertError::Config(format!("{name}={value:?} is not an expert index"))
            })?
        }
    };
    if index >= experts {
        return Err(ExpertError::Config(format!(
            "expert {index} does not exist: the partition has {experts} (0..{experts})"
        )));
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_then_slurm_then_kubernetes() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            expert_index(Some(2), 4, env(&[("SLURM_ARRAY_TASK_ID", "1")])).unwrap(),
            2
        );
        assert_eq!(
            expert_index(None, 4, env(&[("SLURM_ARRAY_TASK_ID", "1")])).unwrap(),
            1
        );
        assert_eq!(
            expert_index(None, 4, env(&[("JOB_COMPLETION_INDEX", "3")])).unwrap(),
            3
        );
        let both = env(&[("JOB_COMPLETION_INDEX", "3"), ("SLURM_ARRAY_TASK_ID", "0")]);
        assert_eq!(expert_index(None, 4, both).unwrap(), 0);
        let err = expert_index(None, 4, env(&[])).unwrap_err().to_string();
        assert!(err.contains("SLURM_ARRAY_TASK_ID"), "{err}");
        let err = expert_index(None, 4, env(&[("SLURM_ARRAY_TASK_ID", "x")])).unwrap_err();
        assert!(
            err.to_string().contains("SLURM_ARRAY_TASK_ID=\"x\""),
            "{err}"
        );
        assert!(expert_index(Some(4), 4, env(&[])).is_err());
    }
}
