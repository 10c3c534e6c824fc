//! How good an assignment is: the domain mix of each expert's rows and its purity (when rows
//! carry domain labels), and the best scorer's mean prefix NLL.

use smalltalk_partition::ScoreMatrix;

/// Domain labels of rows: `labels[i]` indexes `names`, or is `u32::MAX` for "no label".
#[derive(Debug, Clone, Copy)]
pub struct DomainLabels<'a> {
    /// Label of every row of the source.
    pub labels: &'a [u32],
    /// Domain names, indexed by label.
    pub names: &'a [String],
}

/// `[expert][domain]` counts of `assignment` (of rows `rows` of the labelled source); rows
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

/// Σ over rows of the best scorer's prefix NLL (`−max_e score`), for a mean over rows.
pub fn best_nll_sum(matrix: &ScoreMatrix<'_>) -> f64 {
    matrix
        .iter_rows()
        .map(|row| -(row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64))
        .sum()
}

/// Purity of a domain mix: the share of labelled rows that sit in their expert's majority
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

    #[test]
    fn best_nll_is_minus_the_row_maximum() {
        let scores = [-3.0f32, -1.0, -2.0, -5.0];
        let m = ScoreMatrix::new(&scores, 2).unwrap();
        assert_eq!(best_nll_sum(&m), 1.0 + 2.0);
    }
}
