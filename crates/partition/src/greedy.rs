//! The paper's balanced greedy assignment [§2.2 "Balancing the Assignments", Fig 1].
//!
//! Sequences are visited once, most confident first: sorted by their best score, highest first.
//! Each goes to its best expert that still has room, falling back to the next best. Visiting
//! sequences in corpus order instead lets an expert fill up early with lukewarm sequences, so
//! later sequences that fit it best land elsewhere (Fig 1a); sorting fixes that (Fig 1b).
//!
//! Cost: one sequential pass over the matrix (argmax and best score per row), one sort of N
//! packed `u64` keys, then one pass in sorted order that reads a row's scores again only when its
//! best expert may be full: O(N·E + N log N) time, 8 bytes per row of scratch besides the result.
//! On one core, 10M × 32 takes 2.5–3 s; most of it is the random reads of the rows that fall
//! back (`cargo xtask bench partition`).

use crate::argmax::row_argmax;
use crate::capacity::check_capacities;
use crate::error::Result;
use crate::matrix::ScoreMatrix;

/// Keys placed per block of the placing loop.
const BLOCK: usize = 64;

/// Assign each row to one expert so that expert `e` gets at most `capacities[e]` rows, with the
/// paper's greedy rule.
///
/// The rule, with every tie broken deterministically:
/// 1. Order rows by their best score `max_e scores[i][e]`, highest first; rows with equal best
///    scores go in increasing row index.
/// 2. In that order, give each row to the first expert with room in its preference list: experts
///    by score, highest first, equal scores in increasing expert index. (The first choice is the
///    [`crate::argmax_assign`] expert; the list is only consulted when that expert is full.)
///
/// Scores are compared as numbers, so `-0.0` and `0.0` tie. When the capacities sum to exactly
/// N (e.g. [`crate::equal_capacities`]) every expert ends with exactly its capacity; when every
/// capacity is at least N the result equals [`crate::argmax_assign`].
///
/// Errors: [`crate::PartitionError::CapacityCount`] when `capacities.len()` differs from the
/// number of experts, [`crate::PartitionError::CapacityTooSmall`] when the capacities sum to less
/// than N.
pub fn balanced_assign(scores: &ScoreMatrix, capacities: &[usize]) -> Result<Vec<u32>> {
    check_capacities(capacities, scores.experts(), scores.rows())?;
    let mut assignment = Vec::with_capacity(scores.rows());
    let mut keys = Vec::with_capacity(scores.rows());

    // Pass 1 (sequential): each row's best expert, written into the result for now, and its
    // sort key: the best score mapped to a u32 that *decreases* as the score grows, above the row
    // index. Sorting these u64 ascending gives "best score descending, then row index ascending".
    for (i, row) in scores.iter_rows().enumerate() {
        let (arg, best) = row_argmax(row);
        assignment.push(arg);
        keys.push((u64::from(descending_key(best)) << 32) | i as u64);
    }
    keys.sort_unstable();

    // Turn each key, in place, into (row << 32 | best expert). A branch-free gather: its random
    // reads overlap, where the placing loop would wait for each one.
    for key in keys.iter_mut() {
        let i = *key as u32;
        *key = (u64::from(i) << 32) | u64::from(assignment[i as usize]);
    }

    place(scores, capacities, &mut keys);

    // Scatter the decisions (row << 32 | expert) back to row order, branch-free again.
    for key in keys {
        assignment[(key >> 32) as usize] = key as u32;
    }
    Ok(assignment)
}

/// Pass 2: walk `keys` (row << 32 | best expert, in placing order), keep the best expert when it
/// has room, else replace it by [`best_with_room`].
///
/// Blocks of [`BLOCK`] keys first copy the rows that may fall back (their best expert has less
/// room than the block has keys, a superset of the actual fallbacks) into a buffer, in a loop
/// whose random reads overlap; the placing loop then never waits on memory.
fn place(scores: &ScoreMatrix, capacities: &[usize], keys: &mut [u64]) {
    let experts = scores.experts();
    let mut room = capacities.to_vec();
    let mut staged = vec![0f32; BLOCK * experts];
    let mut slot = [0usize; BLOCK];
    for block in keys.chunks_mut(BLOCK) {
        let mut next = 0;
        for (k, &key) in block.iter().enumerate() {
            if room[key as u32 as usize] < block.len() {
                let row = scores.row((key >> 32) as usize);
                staged[next * experts..(next + 1) * experts].copy_from_slice(row);
                slot[k] = next;
                next += 1;
            }
        }
        for (k, key) in block.iter_mut().enumerate() {
            let best = *key as u32 as usize;
            if room[best] > 0 {
                room[best] -= 1;
            } else {
                let row = &staged[slot[k] * experts..(slot[k] + 1) * experts];
                let e = best_with_room(row, &room);
                room[e] -= 1;
                *key = (*key & !u64::from(u32::MAX)) | e as u64;
            }
        }
    }
}

/// The highest-scoring expert that still has room (ties: lowest index), i.e. the first expert with
/// room in the row's preference list. One exists: the capacities hold every row still to place.
#[inline]
fn best_with_room(row: &[f32], room: &[usize]) -> usize {
    let mut arg = usize::MAX;
    let mut best = f32::NEG_INFINITY;
    for (e, (&x, &r)) in row.iter().zip(room).enumerate() {
        if r > 0 && (arg == usize::MAX || x > best) {
            arg = e;
            best = x;
        }
    }
    debug_assert!(
        arg != usize::MAX,
        "capacities were checked to hold every row"
    );
    arg
}

/// Map a finite `f32` to a `u32` whose unsigned order is the *reverse* of the numeric order
/// (`-0.0` and `0.0` map to the same key).
#[inline]
fn descending_key(x: f32) -> u32 {
    let bits = (x + 0.0).to_bits(); // -0.0 + 0.0 == +0.0
    let ascending = if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    };
    !ascending
}

#[cfg(test)]
mod tests {
    use super::descending_key;

    #[test]
    fn descending_key_reverses_numeric_order() {
        let xs = [
            f32::MIN,
            -1e30,
            -2.5,
            -1.0,
            -f32::MIN_POSITIVE,
            -1e-45,
            0.0,
            1e-45,
            f32::MIN_POSITIVE,
            1.0,
            2.5,
            1e30,
            f32::MAX,
        ];
        for w in xs.windows(2) {
            assert!(descending_key(w[0]) > descending_key(w[1]), "{w:?}");
        }
        assert_eq!(descending_key(-0.0), descending_key(0.0));
    }
}
