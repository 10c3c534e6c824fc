//! Streaming: balance a corpus chunk by chunk when its scores do not fit in memory [App A.4].

use crate::capacity::equal_capacities;
use crate::error::{PartitionError, Result};
use crate::greedy::balanced_assign;
use crate::matrix::ScoreMatrix;

/// Balances a stream of chunks so that, across all chunks seen so far, the experts' row totals
/// never differ by more than one.
///
/// Each chunk of `n` rows is split by [`balanced_assign`] under capacities that give every expert
/// `n / E` rows and the `n % E` remainder rows, one each, to the experts with the smallest running
/// totals (ties: lower expert index). Because of that tie rule the running totals after `S` rows
/// are always exactly [`equal_capacities`]`(S, E)`, whatever the chunk sizes. So the final shards
/// come out exactly as one global balance would size them, and the corpus size need not be known
/// in advance. Balancing itself happens inside each chunk; a single chunk gives exactly
/// `balanced_assign(chunk, equal_capacities(n, E))`.
#[derive(Debug, Clone)]
pub struct ChunkedBalancer {
    totals: Vec<usize>,
    rows: usize,
}

impl ChunkedBalancer {
    /// A balancer for `experts` experts with nothing assigned yet.
    ///
    /// Errors: [`PartitionError::NoExperts`] when `experts == 0`, [`PartitionError::TooLarge`]
    /// when it exceeds `u32::MAX`.
    pub fn new(experts: usize) -> Result<Self> {
        if experts == 0 {
            return Err(PartitionError::NoExperts);
        }
        if experts > u32::MAX as usize {
            return Err(PartitionError::TooLarge { rows: 0, experts });
        }
        Ok(Self {
            totals: vec![0; experts],
            rows: 0,
        })
    }

    /// Number of experts.
    pub fn experts(&self) -> usize {
        self.totals.len()
    }

    /// Rows assigned to each expert so far, over all chunks.
    pub fn totals(&self) -> &[usize] {
        &self.totals
    }

    /// Rows assigned so far, over all chunks.
    pub fn rows_seen(&self) -> usize {
        self.rows
    }

    /// The capacities the next chunk would get if it had `rows` rows; they sum to `rows`.
    pub fn capacities_for(&self, rows: usize) -> Vec<usize> {
        let after = equal_capacities(self.rows + rows, self.experts());
        after
            .iter()
            .zip(&self.totals)
            .map(|(&a, &t)| a - t)
            .collect()
    }

    /// Account for a chunk of `rows` rows that this balancer assigned in an earlier process (a
    /// resumed stream): the totals advance exactly as [`assign`](Self::assign) advanced them,
    /// so later chunks are balanced as in an uninterrupted run. The caller checks that the
    /// saved chunk's shard sizes are [`capacities_for`](Self::capacities_for)`(rows)`.
    pub fn skip_chunk(&mut self, rows: usize) {
        let capacities = self.capacities_for(rows);
        for (t, c) in self.totals.iter_mut().zip(&capacities) {
            *t += c;
        }
        self.rows += rows;
    }

    /// Assign one chunk's rows (indices in the result are relative to the chunk) and add them to
    /// the running totals. On error the totals are unchanged.
    ///
    /// Errors: [`PartitionError::ChunkExperts`] when the chunk's expert count differs from the
    /// balancer's.
    pub fn assign(&mut self, chunk: &ScoreMatrix) -> Result<Vec<u32>> {
        if chunk.experts() != self.experts() {
            return Err(PartitionError::ChunkExperts {
                got: chunk.experts(),
                expected: self.experts(),
            });
        }
        let capacities = self.capacities_for(chunk.rows());
        let assignment = balanced_assign(chunk, &capacities)?;
        for (t, c) in self.totals.iter_mut().zip(&capacities) {
            *t += c;
        }
        self.rows += chunk.rows();
        Ok(assignment)
    }
}
