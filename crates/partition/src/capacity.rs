//! Capacities: how many rows each expert may take, their validation, and shard sizes.

use crate::error::{PartitionError, Result};

/// Equal capacities for `n` rows over `experts` experts: `n / experts` each, and the remainder
/// `n % experts` spread deterministically, one more to each of the first `n % experts` experts.
/// The result sums to exactly `n`.
///
/// # Panics
/// When `experts == 0`.
pub fn equal_capacities(n: usize, experts: usize) -> Vec<usize> {
    assert!(experts > 0, "equal_capacities needs at least one expert");
    let (base, extra) = (n / experts, n % experts);
    (0..experts)
        .map(|e| base + usize::from(e < extra))
        .collect()
}

/// Check that `capacities` has one entry per expert and can hold `rows` rows.
pub(crate) fn check_capacities(capacities: &[usize], experts: usize, rows: usize) -> Result<()> {
    if capacities.len() != experts {
        return Err(PartitionError::CapacityCount {
            got: capacities.len(),
            experts,
        });
    }
    let total = capacities
        .iter()
        .fold(0usize, |acc, &c| acc.saturating_add(c));
    if total < rows {
        return Err(PartitionError::CapacityTooSmall { total, rows });
    }
    Ok(())
}

/// How many rows `assignment` gives to each of `experts` experts (the part sizes).
///
/// Errors: [`PartitionError::ExpertOutOfRange`] naming the first row whose expert is not below
/// `experts`.
pub fn part_sizes(assignment: &[u32], experts: usize) -> Result<Vec<usize>> {
    let mut sizes = vec![0usize; experts];
    for (row, &e) in assignment.iter().enumerate() {
        *sizes
            .get_mut(e as usize)
            .ok_or(PartitionError::ExpertOutOfRange {
                row,
                expert: e,
                experts,
            })? += 1;
    }
    Ok(sizes)
}
