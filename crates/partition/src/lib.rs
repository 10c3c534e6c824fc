//! # smalltalk-partition
//!
//! Turns a score matrix (N sequences × E experts, log-likelihoods of each sequence's prefix under
//! each router; higher is better) into one expert per sequence:
//!
//! - [`argmax_assign`]: the inference rule, each sequence to its best expert;
//! - [`balanced_assign`]: the paper's balanced greedy under capacities (EM and the final
//!   partition for the experts) [§2.2, Fig 1], with [`equal_capacities`] for equal parts;
//! - [`ChunkedBalancer`]: the same, streamed chunk by chunk, running totals kept within one row;
//! - [`random_balanced_assign`]: a seeded uniformly random split in equal parts (the EM start
//!   and a baseline);
//! - [`exact_balanced_assign`]: the optimal assignment under the same capacities, to measure the
//!   greedy's gap ([`total_score`] is the objective).
//!
//! Expert indices are `u32` throughout (a row's entry is below [`ScoreMatrix::experts`]). Every
//! tie is broken deterministically: by lower expert index between experts, by lower row index
//! between rows; each function documents its rule. Inputs are validated once, by
//! [`ScoreMatrix::new`] (shape, finiteness); errors are [`PartitionError`]s that name the row,
//! expert or count at fault.
//!
//! Depends on nothing but `thiserror`, and is single-threaded: the greedy handles 10M × 32 in a
//! few seconds on one core (`cargo xtask bench partition`).
//!
//! ```
//! use smalltalk_partition::{balanced_assign, equal_capacities, ScoreMatrix};
//!
//! // Two sequences, two experts; both prefer expert 0, sequence 1 much more so.
//! let scores = [-5.0, -6.0, /* row 1: */ -1.0, -9.0];
//! let m = ScoreMatrix::new(&scores, 2)?;
//! let caps = equal_capacities(m.rows(), m.experts());
//! assert_eq!(balanced_assign(&m, &caps)?, vec![1, 0]);
//! # Ok::<(), smalltalk_partition::PartitionError>(())
//! ```

mod argmax;
mod capacity;
mod chunked;
mod error;
mod exact;
mod greedy;
mod matrix;
mod random;

#[cfg(test)]
mod tests;

pub use argmax::argmax_assign;
pub use capacity::{equal_capacities, part_sizes};
pub use chunked::ChunkedBalancer;
pub use error::{PartitionError, Result};
pub use exact::exact_balanced_assign;
pub use greedy::balanced_assign;
pub use matrix::{total_score, ScoreMatrix};
pub use random::random_balanced_assign;
