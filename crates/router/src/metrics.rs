//! What each EM iteration reports: the size of each router's part, how confident and how
//! stable the routing is, and, when documents carry domain labels, the domain mix of each
//! part and its purity (computed with `smalltalk_routing::metrics`).

use serde::{Deserialize, Serialize};

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
