//! What each EM iteration reports: the size of each router's part, how confident and how
//! stable the routing is, and, when documents carry domain labels, the domain mix of each
//! part and its purity (computed with `smalltalk_routing::metrics`); and `em/metrics.jsonl`,
//! where the committed iterations are kept, one line each.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, RouterError};

/// One EM iteration's record (a line of `em/metrics.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterationMetrics {
    /// Iteration number, from 1.
    pub iteration: usize,
    /// Router optimizer steps done so far (each router).
    pub router_steps: usize,
    /// Mean training loss of each router over this iteration's steps (per token).
    pub train_loss: Vec<f64>,
    /// Sequences scored in this iteration's E-step (the next chunk).
    pub scored: usize,
    /// Sequences per router after the balanced assignment of the next chunk (its part of
    /// the next M-step; key `shard_sizes` in files written before this name).
    #[serde(alias = "shard_sizes")]
    pub part_sizes: Vec<usize>,
    /// Fraction of the next chunk each router would win by plain argmax (no balancing): how
    /// unbalanced the routers are on their own.
    pub argmax_load: Vec<f64>,
    /// Mean over the chunk of the best router's prefix NLL per predicted token.
    pub mean_best_nll: f64,
    /// Of the chunk's sequences that were assigned in an earlier iteration (chunks revisit
    /// rows once the split is used up), the fraction now assigned to a different expert.
    /// `None` when none of them was seen before.
    pub changed_fraction: Option<f64>,
    /// Domain histogram of each router's part (`[expert][domain]`), when rows carry labels.
    pub domain_mix: Option<Vec<Vec<u64>>>,
    /// `Σ_e max_d mix[e][d]` / labelled rows: 1.0 when every part holds a single domain.
    pub purity: Option<f64>,
    /// Wall time of the iteration (training + scoring), seconds.
    pub seconds: f64,
}

/// `em/metrics.jsonl` under a routers folder.
pub(crate) fn metrics_path(dir: &Path) -> PathBuf {
    dir.join("em").join("metrics.jsonl")
}

pub(crate) fn load_metrics(dir: &Path, done: usize) -> Result<Vec<IterationMetrics>> {
    let path = metrics_path(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(RouterError::io(path, e)),
    };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let m: IterationMetrics = serde_json::from_str(line)
            .map_err(|e| RouterError::state(&path, format!("line {}: {e}", n + 1)))?;
        if m.iteration <= done {
            out.push(m);
        }
    }
    Ok(out)
}

pub(crate) fn save_metrics(dir: &Path, metrics: &[IterationMetrics]) -> Result<()> {
    let mut text = String::new();
    for m in metrics {
        text.push_str(&serde_json::to_string(m).expect("metrics serialise"));
        text.push('\n');
    }
    smalltalk_stage::atomic::write_file(&metrics_path(dir), text.as_bytes())?;
    Ok(())
}

/// One line per iteration for people.
pub(crate) fn iteration_line(m: &IterationMetrics) -> String {
    let list = |v: &[f64], digits: usize| {
        v.iter()
            .map(|x| format!("{x:.digits$}"))
            .collect::<Vec<_>>()
            .join("/")
    };
    format!(
        "iteration {:>3}: train loss {}  best prefix NLL {:.3}  argmax load {}  changed {}  purity {}",
        m.iteration,
        list(&m.train_loss, 3),
        m.mean_best_nll,
        list(&m.argmax_load, 2),
        m.changed_fraction.map_or("-".into(), |c| format!("{c:.3}")),
        m.purity.map_or("-".into(), |p| format!("{p:.3}")),
    )
}
