//! [`ScoreMatrix`]: a validated, borrowed view of the N × E scores, and [`total_score`].

use crate::error::{PartitionError, Result};

/// A borrowed, row-major matrix of scores: row `i` holds the `E` scores of sequence `i`, one per
/// expert (log-likelihoods of the sequence's prefix under each router: higher is better).
///
/// Construction checks that the length is a whole number of rows, that there is at least one
/// expert, that rows and experts fit `u32` indices, and that every score is finite, so the
/// assignment functions never see NaN or infinities.
#[derive(Debug, Clone, Copy)]
pub struct ScoreMatrix<'a> {
    scores: &'a [f32],
    experts: usize,
}

impl<'a> ScoreMatrix<'a> {
    /// View `scores` (row-major, `experts` per row) as a matrix.
    ///
    /// Errors: [`PartitionError::NoExperts`] when `experts == 0`, [`PartitionError::Length`] when
    /// `scores.len()` is not a multiple of `experts`, [`PartitionError::TooLarge`] when rows or
    /// experts exceed `u32::MAX`, and [`PartitionError::NonFinite`] naming the row and expert of
    /// the first NaN or infinite score.
    pub fn new(scores: &'a [f32], experts: usize) -> Result<Self> {
        if experts == 0 {
            return Err(PartitionError::NoExperts);
        }
        if !scores.len().is_multiple_of(experts) {
            return Err(PartitionError::Length {
                len: scores.len(),
                experts,
            });
        }
        let rows = scores.len() / experts;
        if rows > u32::MAX as usize || experts > u32::MAX as usize {
            return Err(PartitionError::TooLarge { rows, experts });
        }
        if let Some(at) = first_non_finite(scores) {
            return Err(PartitionError::NonFinite {
                row: at / experts,
                expert: at % experts,
                value: scores[at],
            });
        }
        Ok(Self { scores, experts })
    }

    /// Number of rows (sequences), N.
    pub fn rows(&self) -> usize {
        self.scores.len() / self.experts
    }

    /// Number of experts per row, E (at least 1).
    pub fn experts(&self) -> usize {
        self.experts
    }

    /// The `E` scores of row `i`.
    ///
    /// # Panics
    /// When `i >= self.rows()`.
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.scores[i * self.experts..(i + 1) * self.experts]
    }

    /// The whole row-major score slice.
    pub fn as_slice(&self) -> &'a [f32] {
        self.scores
    }

    /// Iterator over the rows, in order.
    pub fn iter_rows(&self) -> std::slice::ChunksExact<'a, f32> {
        self.scores.chunks_exact(self.experts)
    }
}

/// Index of the first non-finite value, if any. Scans blocks with a branch-free fold (which the
/// compiler vectorises) and only locates the culprit inside a block that has one.
fn first_non_finite(xs: &[f32]) -> Option<usize> {
    const BLOCK: usize = 4096;
    for (b, block) in xs.chunks(BLOCK).enumerate() {
        let bad = block.iter().fold(false, |acc, x| {
            acc | ((x.to_bits() & 0x7fff_ffff) >= 0x7f80_0000)
        });
        if bad {
            let j = block.iter().position(|x| !x.is_finite())?;
            return Some(b * BLOCK + j);
        }
    }
    None
}

/// Sum, in `f64`, of each row's score under its assigned expert: the objective that the balanced
/// assignments maximise.
///
/// Errors: [`PartitionError::AssignmentLength`] when `assignment` does not have one entry per
/// row, [`PartitionError::ExpertOutOfRange`] when an entry is not below `scores.experts()`.
pub fn total_score(scores: &ScoreMatrix, assignment: &[u32]) -> Result<f64> {
    if assignment.len() != scores.rows() {
        return Err(PartitionError::AssignmentLength {
            got: assignment.len(),
            rows: scores.rows(),
        });
    }
    let experts = scores.experts();
    let mut total = 0.0f64;
    for (row, (values, &e)) in scores.iter_rows().zip(assignment).enumerate() {
        let s = values
            .get(e as usize)
            .ok_or(PartitionError::ExpertOutOfRange {
                row,
                expert: e,
                experts,
            })?;
        total += f64::from(*s);
    }
    Ok(total)
}
