//! Hand-made cases with the expected answers written out, and bad input.

use super::{check_valid, naive_sequential};
use crate::{
    argmax_assign, balanced_assign, equal_capacities, exact_balanced_assign, part_sizes,
    random_balanced_assign, total_score, ChunkedBalancer, PartitionError, ScoreMatrix,
};

/// Six sequences, three experts, two slots each, in the spirit of the paper's Fig 1: rows 0 and
/// 1 like expert 0 only mildly, rows 2 and 5 like it a lot. In corpus order, rows 0 and 1 fill
/// expert 0 before rows 2 and 5 arrive; sorted by confidence, rows 5 and 2 get it.
#[rustfmt::skip]
const FIG1: [f32; 18] = [
    -3.0, -4.0, -5.0, // row 0: best expert 0 (-3.0)
    -2.5, -6.0, -4.0, // row 1: best expert 0 (-2.5)
    -1.0, -7.0, -3.0, // row 2: best expert 0 (-1.0)
    -6.0, -2.0, -3.5, // row 3: best expert 1 (-2.0)
    -5.0, -4.5, -1.5, // row 4: best expert 2 (-1.5)
    -0.5, -2.2, -8.0, // row 5: best expert 0 (-0.5)
];

#[test]
fn fig1_sorted_greedy_beats_corpus_order() {
    let m = ScoreMatrix::new(&FIG1, 3).unwrap();
    let caps = equal_capacities(6, 3);
    assert_eq!(caps, vec![2, 2, 2]);
    // Corpus order: 0→e0, 1→e0 (full), 2→e2, 3→e1, 4→e2 (full), 5→e1.
    let naive = naive_sequential(&m, &caps);
    assert_eq!(naive, vec![0, 0, 2, 1, 2, 1]);
    // Sorted by best score: 5→e0, 2→e0 (full), 4→e2, 3→e1, 1→e2 (e0 full; -4.0 > -6.0, e2
    // full), 0→e1.
    let greedy = balanced_assign(&m, &caps).unwrap();
    assert_eq!(greedy, vec![1, 2, 0, 1, 2, 0]);
    let (g, n) = (
        total_score(&m, &greedy).unwrap(),
        total_score(&m, &naive).unwrap(),
    );
    assert!((g - -13.0).abs() < 1e-6, "{g}");
    assert!((n - -14.2).abs() < 1e-5, "{n}");
    let exact = exact_balanced_assign(&m, &caps).unwrap();
    assert!(total_score(&m, &exact).unwrap() >= g - 1e-9);
    assert_eq!(argmax_assign(&m), vec![0, 0, 0, 1, 2, 0]);
}

#[test]
fn argmax_ties_go_to_the_lowest_expert() {
    let scores = [
        -1.0, -1.0, -2.0, /**/ -3.0, 0.0, -0.0, /**/ -0.0, 0.0, -5.0,
    ];
    let m = ScoreMatrix::new(&scores, 3).unwrap();
    assert_eq!(argmax_assign(&m), vec![0, 1, 0]);
}

#[test]
fn balanced_ties_between_rows_go_to_the_lower_row() {
    // Identical rows, one slot on the shared favourite: row 0 is placed first and gets it.
    let scores = [-1.0, -2.0, /**/ -1.0, -2.0];
    let m = ScoreMatrix::new(&scores, 2).unwrap();
    assert_eq!(balanced_assign(&m, &[1, 1]).unwrap(), vec![0, 1]);
    // Same with -0.0 against 0.0: they are equal scores.
    let scores = [-0.0, -2.0, /**/ 0.0, -2.0];
    let m = ScoreMatrix::new(&scores, 2).unwrap();
    assert_eq!(balanced_assign(&m, &[1, 1]).unwrap(), vec![0, 1]);
}

#[test]
fn balanced_fallback_ties_go_to_the_lower_expert() {
    // Row 0 (best -1) takes expert 0; row 1's runners-up e1 and e2 tie: e1 wins; row 2 then
    // falls back past full e0 and e1 to e2.
    let scores = [
        -1.0, -9.0, -9.0, /**/ -2.0, -3.0, -3.0, /**/ -2.5, -2.6, -2.7,
    ];
    let m = ScoreMatrix::new(&scores, 3).unwrap();
    assert_eq!(balanced_assign(&m, &[1, 1, 1]).unwrap(), vec![0, 1, 2]);
}

#[test]
fn zero_capacity_experts_are_skipped() {
    let scores = [-1.0, -2.0, -3.0, /**/ -1.0, -2.0, -3.0];
    let m = ScoreMatrix::new(&scores, 3).unwrap();
    assert_eq!(balanced_assign(&m, &[0, 0, 5]).unwrap(), vec![2, 2]);
    assert_eq!(exact_balanced_assign(&m, &[0, 0, 5]).unwrap(), vec![2, 2]);
}

#[test]
fn empty_matrix() {
    let m = ScoreMatrix::new(&[], 4).unwrap();
    assert_eq!(m.rows(), 0);
    assert!(argmax_assign(&m).is_empty());
    assert!(balanced_assign(&m, &[0; 4]).unwrap().is_empty());
    assert!(exact_balanced_assign(&m, &[0; 4]).unwrap().is_empty());
    assert_eq!(total_score(&m, &[]).unwrap(), 0.0);
    assert!(random_balanced_assign(0, 4, 1).unwrap().is_empty());
}

#[test]
fn equal_capacities_spread_the_remainder_first() {
    assert_eq!(equal_capacities(10, 3), vec![4, 3, 3]);
    assert_eq!(equal_capacities(11, 3), vec![4, 4, 3]);
    assert_eq!(equal_capacities(2, 3), vec![1, 1, 0]);
    assert_eq!(equal_capacities(0, 2), vec![0, 0]);
    assert_eq!(equal_capacities(7, 1), vec![7]);
}

#[test]
fn chunked_balancer_hand_made() {
    let mut b = ChunkedBalancer::new(3).unwrap();
    assert_eq!(b.capacities_for(2), vec![1, 1, 0]);
    let chunk = [-1.0, -2.0, -3.0, /**/ -1.5, -2.0, -3.0];
    let a = b.assign(&ScoreMatrix::new(&chunk, 3).unwrap()).unwrap();
    assert_eq!(a, vec![0, 1]);
    assert_eq!(b.totals(), &[1, 1, 0]);
    // Next chunk of 2: one slot to expert 2 (smallest total), then the lowest index, expert 0.
    assert_eq!(b.capacities_for(2), vec![1, 0, 1]);
    let a = b.assign(&ScoreMatrix::new(&chunk, 3).unwrap()).unwrap();
    assert_eq!(a, vec![0, 2]);
    assert_eq!(b.totals(), &[2, 1, 1]);
    assert_eq!(b.rows_seen(), 4);
    check_valid(&a, 2, &[1, 0, 1]);

    // A resumed stream skips the first chunk and balances the second exactly as before.
    let mut resumed = ChunkedBalancer::new(3).unwrap();
    resumed.skip_chunk(2);
    assert_eq!(resumed.totals(), &[1, 1, 0]);
    let again = resumed
        .assign(&ScoreMatrix::new(&chunk, 3).unwrap())
        .unwrap();
    assert_eq!(again, a);
    assert_eq!(resumed.totals(), b.totals());
}

#[test]
fn random_balanced_is_uniform_over_arrangements() {
    // 3 rows, 3 experts: the 6 permutations should come out about equally often.
    let mut counts = std::collections::BTreeMap::new();
    for seed in 0..6000 {
        *counts
            .entry(random_balanced_assign(3, 3, seed).unwrap())
            .or_insert(0usize) += 1;
    }
    assert_eq!(counts.len(), 6);
    for (a, c) in counts {
        assert!((850..1150).contains(&c), "{a:?} came {c} times in 6000");
    }
}

#[test]
fn bad_matrices_are_refused_naming_the_fault() {
    assert_eq!(
        ScoreMatrix::new(&[0.0; 7], 3).unwrap_err(),
        PartitionError::Length { len: 7, experts: 3 }
    );
    assert_eq!(
        ScoreMatrix::new(&[0.0; 6], 0).unwrap_err(),
        PartitionError::NoExperts
    );
    let mut scores = vec![-1.0f32; 5000 * 3];
    scores[4321 * 3 + 2] = f32::NAN;
    let err = ScoreMatrix::new(&scores, 3).unwrap_err();
    assert!(
        matches!(err, PartitionError::NonFinite { row: 4321, expert: 2, value } if value.is_nan()),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "score of row 4321, expert 2 is NaN (scores must be finite)"
    );
    scores[4321 * 3 + 2] = -1.0;
    scores[7 * 3 + 1] = f32::NEG_INFINITY;
    let err = ScoreMatrix::new(&scores, 3).unwrap_err();
    assert_eq!(
        err.to_string(),
        "score of row 7, expert 1 is -inf (scores must be finite)"
    );
    scores[7 * 3 + 1] = f32::INFINITY;
    assert!(matches!(
        ScoreMatrix::new(&scores, 3),
        Err(PartitionError::NonFinite {
            row: 7,
            expert: 1,
            ..
        })
    ));
}

#[test]
fn bad_capacities_are_refused() {
    let scores = [0.0f32; 10];
    let m = ScoreMatrix::new(&scores, 2).unwrap();
    let err = balanced_assign(&m, &[2, 1]).unwrap_err();
    assert_eq!(err, PartitionError::CapacityTooSmall { total: 3, rows: 5 });
    assert_eq!(err.to_string(), "capacities sum to 3 < 5 rows");
    assert_eq!(exact_balanced_assign(&m, &[2, 1]).unwrap_err(), err);
    let err = balanced_assign(&m, &[5, 5, 5]).unwrap_err();
    assert_eq!(err.to_string(), "3 capacities given for 2 experts");
    assert_eq!(
        exact_balanced_assign(&m, &[5]).unwrap_err(),
        PartitionError::CapacityCount { got: 1, experts: 2 }
    );
    // A sum that overflows usize is plenty.
    assert!(balanced_assign(&m, &[usize::MAX, usize::MAX]).is_ok());
}

#[test]
fn bad_assignments_and_chunks_are_refused() {
    let scores = [0.0f32; 6];
    let m = ScoreMatrix::new(&scores, 3).unwrap();
    assert_eq!(
        total_score(&m, &[0]).unwrap_err().to_string(),
        "assignment has 1 entries for 2 rows"
    );
    assert_eq!(
        total_score(&m, &[0, 3]).unwrap_err().to_string(),
        "row 1 is assigned to expert 3, but there are only 3 experts"
    );
    assert_eq!(
        part_sizes(&[0, 1, 5], 3).unwrap_err(),
        PartitionError::ExpertOutOfRange {
            row: 2,
            expert: 5,
            experts: 3
        }
    );
    let mut b = ChunkedBalancer::new(2).unwrap();
    assert_eq!(
        b.assign(&m).unwrap_err().to_string(),
        "chunk has 3 experts, the balancer was created for 2"
    );
    assert_eq!(b.totals(), &[0, 0]);
    assert_eq!(
        ChunkedBalancer::new(0).unwrap_err(),
        PartitionError::NoExperts
    );
    assert_eq!(
        random_balanced_assign(5, 0, 0).unwrap_err(),
        PartitionError::NoExperts
    );
}
