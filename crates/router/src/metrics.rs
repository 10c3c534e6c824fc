//! What each EM iteration reports: shard sizes, how confident and how stable the routing is,
//! and, when documents carry domain labels, the domain mix of each shard and its purity.

use serde::{Deserialize, Serialize};
use smalltalk_partition::ScoreMatrix;

/// Domain labels of rows: `labels[i]` indexes `names`, or is `u32::MAX` for "no label".
#[derive(Debug, Clone, Copy)]
pub struct DomainLabels<'a> {
    /// Label of every row of the source.
    pub labels: &'a [u32],
    /// Domain names, indexed by label.
    pub names: &'a [String],
}

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
    /// Sequences per expert after the balanced assignment of the next chunk.
    pub shard_sizes: Vec<usize>,
    /// Fraction of the next chunk each router would win by plain argmax (no balancing): how
    /// unbalanced the routers are on their own.
    pub argmax_load: Vec<f64>,
    /// Mean over the chunk of the best router's prefix NLL per predicted token.
    pub mean_best_nll: f64,
    /// Of the chunk's sequences that were assigned in an earlier iteration (chunks revisit
    /// rows once the split is used up), the fraction now assigned to a different expert.
    /// `None` when none of them was seen before.
    pub changed_fraction: Option<f64>,
    /// Domain histogram of each shard (`[expert][domain]`), when rows carry labels.
    pub domain_mix: Option<Vec<Vec<u64>>>,
    /// Σ_e max_d mix[e][d] / labelled rows: 1.0 when every shard holds a single domain.
    pub purity: Option<f64>,
    /// Wall time of the iteration (training + scoring), seconds.
    pub seconds: f64,
}

/// `[expert][domain]` counts of `assignment` (rows `rows` of the labelled source); rows
/// without a label are not counted.
pub fn domain_mix(
    assignment: &[u32],
    rows: &[usize],
    experts: usize,
    domains: &DomainLabels<'_>,
) -> Vec<Vec<u64>> {
    let mut mix = vec![vec![0u64; domains.names.len()]; experts];
    for (&e, &r) in assignment.iter().zip(rows) {
        let d = domains.labels[r];
        if (d as usize) < domains.names.len() {
            mix[e as usize][d as usize] += 1;
        }
    }
    mix
}

/// Σ over rows of the best router's prefix NLL (`−max_e score`), for a mean over rows.
pub fn best_nll_sum(matrix: &ScoreMatrix<'_>) -> f64 {
    matrix
        .iter_rows()
        .map(|row| -(row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64))
        .sum()
}

/// Purity of a domain mix: the share of labelled rows that sit in their shard's majority
/// domain (`None` when no row is labelled).
pub fn purity(mix: &[Vec<u64>]) -> Option<f64> {
    let total: u64 = mix.iter().flatten().sum();
    let majority: u64 = mix
        .iter()
        .map(|row| row.iter().copied().max().unwrap_or(0))
        .sum();
    (total > 0).then(|| majority as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purity_counts_majority_domains() {
        let names = vec!["a".to_string(), "b".to_string()];
        let labels = [0, 0, 1, 1, u32::MAX, 0];
        let domains = DomainLabels {
            labels: &labels,
            names: &names,
        };
        let rows = [0, 1, 2, 3, 4, 5];
        let assignment = [0, 0, 1, 1, 1, 1];
        let mix = domain_mix(&assignment, &rows, 2, &domains);
        assert_eq!(mix, vec![vec![2, 0], vec![1, 2]]);
        assert_eq!(purity(&mix), Some(4.0 / 5.0));
        assert_eq!(purity(&[vec![0, 0]]), None);
    }
}
