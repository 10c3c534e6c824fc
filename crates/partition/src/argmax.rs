//! The inference rule: each sequence goes to its single best expert, with no capacity limit.

use crate::matrix::ScoreMatrix;

/// The best expert of one row and its score. Ties go to the lowest expert index (a later expert
/// must be strictly better to win; `-0.0` and `0.0` compare equal).
#[inline]
pub(crate) fn row_argmax(row: &[f32]) -> (u32, f32) {
    let mut best = row[0];
    let mut arg = 0u32;
    for (e, &x) in row.iter().enumerate().skip(1) {
        if x > best {
            best = x;
            arg = e as u32;
        }
    }
    (arg, best)
}

/// Assign every row to its highest-scoring expert (the paper's routing rule at inference).
///
/// Ties go to the lowest expert index. The result has one `u32` expert index per row, each below
/// `scores.experts()`. Capacities play no part: see [`crate::balanced_assign`] for training.
pub fn argmax_assign(scores: &ScoreMatrix) -> Vec<u32> {
    scores.iter_rows().map(|row| row_argmax(row).0).collect()
}
