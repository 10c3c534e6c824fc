//! Properties on random matrices. Scores come from a small integer range (many ties) unless a
//! property needs distinct scores.

use proptest::prelude::*;

use super::{brute_force_best, check_valid, reference_greedy, tolerance};
use crate::{
    argmax_assign, balanced_assign, equal_capacities, exact_balanced_assign, part_sizes,
    random_balanced_assign, total_score, ChunkedBalancer, ScoreMatrix,
};

/// (experts, scores) with up to `max_rows` rows and `max_experts` experts; scores are small
/// integers, so ties are common.
fn tied_matrix(max_rows: usize, max_experts: usize) -> impl Strategy<Value = (usize, Vec<f32>)> {
    (1..=max_experts, 0..=max_rows).prop_flat_map(|(e, n)| {
        (
            Just(e),
            prop::collection::vec((-12i32..=0).prop_map(|x| x as f32), n * e),
        )
    })
}

/// Like [`tied_matrix`], with all scores distinct (and realistic log-likelihood magnitudes).
fn distinct_matrix(
    max_rows: usize,
    max_experts: usize,
) -> impl Strategy<Value = (usize, Vec<f32>)> {
    (1..=max_experts, 0..=max_rows).prop_flat_map(|(e, n)| {
        (
            Just(e),
            prop::collection::btree_set(-1_000_000i32..0, n * e)
                .prop_map(|s| s.into_iter().map(|x| x as f32 / 1000.0).collect::<Vec<_>>())
                .prop_shuffle(),
        )
    })
}

/// Capacities for `n` rows and `e` experts that sum to at least `n`: random raw values, with
/// any deficit added to one random expert.
fn capacities(n: usize, e: usize) -> impl Strategy<Value = Vec<usize>> {
    (prop::collection::vec(0..=n + 1, e), 0..e).prop_map(move |(mut c, pick)| {
        let sum: usize = c.iter().sum();
        if sum < n {
            c[pick] += n - sum;
        }
        c
    })
}

/// A matrix with tied scores and random (sufficient) capacities.
fn tied_with_capacities(
    max_rows: usize,
    max_experts: usize,
) -> impl Strategy<Value = (usize, Vec<f32>, Vec<usize>)> {
    tied_matrix(max_rows, max_experts).prop_flat_map(|(e, s)| {
        let n = s.len() / e;
        (Just(e), Just(s), capacities(n, e))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn balanced_is_valid_and_fills_equal_capacities((e, s) in tied_matrix(60, 6)) {
        let m = ScoreMatrix::new(&s, e).unwrap();
        let caps = equal_capacities(m.rows(), e);
        let a = balanced_assign(&m, &caps).unwrap();
        prop_assert_eq!(check_valid(&a, m.rows(), &caps), caps);
    }

    /// Ties included: the fast implementation follows the written rule exactly. Up to 300 rows
    /// and large capacities, so several placing blocks run, with and without staged rows.
    #[test]
    fn balanced_matches_the_written_rule((e, s, caps) in tied_with_capacities(300, 6)) {
        let m = ScoreMatrix::new(&s, e).unwrap();
        prop_assert_eq!(balanced_assign(&m, &caps).unwrap(), reference_greedy(&m, &caps));
        let caps = equal_capacities(m.rows(), e);
        prop_assert_eq!(balanced_assign(&m, &caps).unwrap(), reference_greedy(&m, &caps));
    }

    #[test]
    fn balanced_respects_any_capacities((e, s, caps) in tied_with_capacities(40, 5)) {
        let m = ScoreMatrix::new(&s, e).unwrap();
        let a = balanced_assign(&m, &caps).unwrap();
        let sizes = check_valid(&a, m.rows(), &caps);
        if caps.iter().sum::<usize>() == m.rows() {
            prop_assert_eq!(sizes, caps);
        }
    }

    #[test]
    fn loose_capacities_give_argmax((e, s) in tied_matrix(40, 5), slack in 0usize..3) {
        let m = ScoreMatrix::new(&s, e).unwrap();
        let caps = vec![m.rows() + slack; e];
        prop_assert_eq!(balanced_assign(&m, &caps).unwrap(), argmax_assign(&m));
    }

    /// With distinct scores, the result does not depend on row order. (With ties it can: rows
    /// with equal best scores are placed in row-index order.)
    #[test]
    fn permuting_rows_permutes_the_assignment(
        ((e, s), perm) in distinct_matrix(40, 5).prop_flat_map(|(e, s)| {
            let n = s.len() / e;
            (Just((e, s)), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
        }),
        tight in any::<bool>(),
    ) {
        let m = ScoreMatrix::new(&s, e).unwrap();
        let n = m.rows();
        let caps = if tight { equal_capacities(n, e) } else { equal_capacities(n + e, e) };
        let permuted: Vec<f32> = perm.iter().flat_map(|&i| m.row(i).to_vec()).collect();
        let p = ScoreMatrix::new(&permuted, e).unwrap();
        let a = balanced_assign(&m, &caps).unwrap();
        let b = balanced_assign(&p, &caps).unwrap();
        for (j, &i) in perm.iter().enumerate() {
            prop_assert_eq!(b[j], a[i]);
        }
    }

    #[test]
    fn greedy_and_random_never_beat_exact((e, s, caps) in tied_with_capacities(40, 5)) {
        let m = ScoreMatrix::new(&s, e).unwrap();
        let exact = exact_balanced_assign(&m, &caps).unwrap();
        check_valid(&exact, m.rows(), &caps);
        let best = total_score(&m, &exact).unwrap();
        let tol = tolerance(m.rows(), 12.0);
        let greedy = total_score(&m, &balanced_assign(&m, &caps).unwrap()).unwrap();
        prop_assert!(greedy <= best + tol, "greedy {} > exact {}", greedy, best);
        // Unconstrained argmax is an upper bound of every constrained assignment.
        let free = total_score(&m, &argmax_assign(&m)).unwrap();
        prop_assert!(best <= free + tol, "exact {} > argmax {}", best, free);
    }

    #[test]
    fn exact_beats_every_random_balanced((e, s) in distinct_matrix(40, 5), seed in any::<u64>()) {
        let m = ScoreMatrix::new(&s, e).unwrap();
        let caps = equal_capacities(m.rows(), e);
        let exact = exact_balanced_assign(&m, &caps).unwrap();
        prop_assert_eq!(check_valid(&exact, m.rows(), &caps), caps.clone());
        let best = total_score(&m, &exact).unwrap();
        for k in 0..8 {
            let r = random_balanced_assign(m.rows(), e, seed.wrapping_add(k)).unwrap();
            let t = total_score(&m, &r).unwrap();
            prop_assert!(t <= best + tolerance(m.rows(), 1000.0), "random {} > exact {}", t, best);
        }
    }

    #[test]
    fn exact_equals_brute_force((e, s, caps) in tied_with_capacities(6, 3), fine in any::<bool>()) {
        // Also with non-integer scores, where ties are rare.
        let s: Vec<f32> = if fine {
            s.iter().enumerate().map(|(k, x)| x + (k as f32 * 0.37).sin()).collect()
        } else {
            s
        };
        let m = ScoreMatrix::new(&s, e).unwrap();
        let exact = exact_balanced_assign(&m, &caps).unwrap();
        check_valid(&exact, m.rows(), &caps);
        let got = total_score(&m, &exact).unwrap();
        let want = brute_force_best(&m, &caps);
        prop_assert!((got - want).abs() <= tolerance(m.rows(), 12.0), "exact {} vs brute force {}", got, want);
    }

    #[test]
    fn chunked_keeps_totals_within_one(
        (e, s) in tied_matrix(80, 6),
        cuts in prop::collection::vec(0usize..30, 0..8),
    ) {
        let m = ScoreMatrix::new(&s, e).unwrap();
        let n = m.rows();
        let mut bounds: Vec<usize> = cuts.into_iter().map(|c| c.min(n)).collect();
        bounds.extend([0, n]);
        bounds.sort_unstable();
        let mut b = ChunkedBalancer::new(e).unwrap();
        let mut all = Vec::new();
        for w in bounds.windows(2) {
            let chunk = ScoreMatrix::new(&s[w[0] * e..w[1] * e], e).unwrap();
            let before = b.totals().to_vec();
            let caps = b.capacities_for(chunk.rows());
            prop_assert_eq!(&caps, &literal_remainder_rule(&before, chunk.rows()));
            let a = b.assign(&chunk).unwrap();
            prop_assert_eq!(check_valid(&a, chunk.rows(), &caps), caps);
            let t = b.totals();
            prop_assert!(t.iter().max().unwrap() - t.iter().min().unwrap() <= 1, "{:?}", t);
            prop_assert_eq!(t, &equal_capacities(b.rows_seen(), e)[..]);
            all.extend(a);
        }
        prop_assert_eq!(b.rows_seen(), n);
        prop_assert_eq!(part_sizes(&all, e).unwrap(), equal_capacities(n, e));
    }

    #[test]
    fn one_chunk_equals_balanced_assign((e, s) in tied_matrix(60, 6)) {
        let m = ScoreMatrix::new(&s, e).unwrap();
        let mut b = ChunkedBalancer::new(e).unwrap();
        let want = balanced_assign(&m, &equal_capacities(m.rows(), e)).unwrap();
        prop_assert_eq!(b.assign(&m).unwrap(), want);
    }

    #[test]
    fn random_balanced_has_exact_capacities_and_is_seeded(
        n in 0usize..200, e in 1usize..9, seed in any::<u64>(),
    ) {
        let a = random_balanced_assign(n, e, seed).unwrap();
        prop_assert_eq!(check_valid(&a, n, &equal_capacities(n, e)), equal_capacities(n, e));
        prop_assert_eq!(&a, &random_balanced_assign(n, e, seed).unwrap());
        if n >= 50 && e >= 2 {
            // Two seeds give the same arrangement with negligible probability.
            prop_assert_ne!(a, random_balanced_assign(n, e, seed ^ 1).unwrap());
        }
    }
}

/// The chunk rule as the docs state it: `rows / E` each, then one remainder slot each to the
/// experts with the smallest running totals, ties to the lower index.
fn literal_remainder_rule(totals: &[usize], rows: usize) -> Vec<usize> {
    let e = totals.len();
    let mut caps = vec![rows / e; e];
    let mut order: Vec<usize> = (0..e).collect();
    order.sort_by_key(|&x| (totals[x], x));
    for &x in order.iter().take(rows % e) {
        caps[x] += 1;
    }
    caps
}
