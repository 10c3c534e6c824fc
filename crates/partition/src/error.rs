//! The partition crate's error type: every variant says exactly which input is at fault.

/// Errors of the partition crate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PartitionError {
    /// A score matrix (or an assignment task) was given zero experts.
    #[error("at least one expert is needed, got 0")]
    NoExperts,
    /// The score slice is not a whole number of rows.
    #[error("{len} scores is not a whole number of rows of {experts} experts")]
    Length {
        /// Number of scores given.
        len: usize,
        /// Experts per row.
        experts: usize,
    },
    /// The matrix is too large for `u32` row or expert indices.
    #[error("{rows} rows x {experts} experts: rows and experts must each be at most {max}", max = u32::MAX)]
    TooLarge {
        /// Rows of the matrix.
        rows: usize,
        /// Experts per row.
        experts: usize,
    },
    /// A score is NaN or infinite.
    #[error("score of row {row}, expert {expert} is {value} (scores must be finite)")]
    NonFinite {
        /// 0-based row (sequence) index.
        row: usize,
        /// 0-based expert index.
        expert: usize,
        /// The offending value.
        value: f32,
    },
    /// The capacity list does not have one entry per expert.
    #[error("{got} capacities given for {experts} experts")]
    CapacityCount {
        /// Number of capacities given.
        got: usize,
        /// Experts of the score matrix.
        experts: usize,
    },
    /// The capacities cannot hold every row.
    #[error("capacities sum to {total} < {rows} rows")]
    CapacityTooSmall {
        /// Sum of the capacities (saturated at `usize::MAX`).
        total: usize,
        /// Rows to assign.
        rows: usize,
    },
    /// An assignment does not have one entry per row.
    #[error("assignment has {got} entries for {rows} rows")]
    AssignmentLength {
        /// Entries in the assignment.
        got: usize,
        /// Rows of the score matrix.
        rows: usize,
    },
    /// An assignment names an expert that does not exist.
    #[error("row {row} is assigned to expert {expert}, but there are only {experts} experts")]
    ExpertOutOfRange {
        /// 0-based row index.
        row: usize,
        /// The expert it names.
        expert: u32,
        /// Number of experts.
        experts: usize,
    },
    /// A chunk's score matrix has a different number of experts than the balancer.
    #[error("chunk has {got} experts, the balancer was created for {expected}")]
    ChunkExperts {
        /// Experts in the chunk.
        got: usize,
        /// Experts of the balancer.
        expected: usize,
    },
}

/// Result alias of the partition crate.
pub type Result<T, E = PartitionError> = std::result::Result<T, E>;
