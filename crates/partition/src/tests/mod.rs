//! Tests of the whole crate: hand-made cases with written-out answers (`cases`), and properties
//! checked on random matrices (`properties`). Shared references and strategies live here.

mod cases;
mod properties;

use crate::capacity::part_sizes;
use crate::matrix::ScoreMatrix;

/// The best total score over all assignments that respect `caps`, by enumeration (E^N of them).
fn brute_force_best(m: &ScoreMatrix, caps: &[usize]) -> f64 {
    let (n, e) = (m.rows(), m.experts());
    let mut best = f64::NEG_INFINITY;
    let mut a = vec![0u32; n];
    loop {
        let sizes = part_sizes(&a, e).unwrap();
        if sizes.iter().zip(caps).all(|(s, c)| s <= c) {
            best = best.max(crate::total_score(m, &a).unwrap());
        }
        // Next assignment in base-E counting.
        let mut i = 0;
        loop {
            if i == n {
                return best;
            }
            a[i] += 1;
            if (a[i] as usize) < e {
                break;
            }
            a[i] = 0;
            i += 1;
        }
    }
}

/// The paper's greedy written as plainly as possible (the reference for `balanced_assign`): rows
/// sorted by best score descending, then row index; each to the first expert with room in its
/// preference list (score descending, then expert index).
fn reference_greedy(m: &ScoreMatrix, caps: &[usize]) -> Vec<u32> {
    let best = |i: usize| m.row(i).iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut order: Vec<usize> = (0..m.rows()).collect();
    order.sort_by(|&a, &b| best(b).partial_cmp(&best(a)).unwrap().then(a.cmp(&b)));
    let mut room = caps.to_vec();
    let mut out = vec![u32::MAX; m.rows()];
    for i in order {
        let row = m.row(i);
        let mut prefs: Vec<usize> = (0..row.len()).collect();
        prefs.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).unwrap().then(a.cmp(&b)));
        let e = *prefs.iter().find(|&&e| room[e] > 0).unwrap();
        room[e] -= 1;
        out[i] = e as u32;
    }
    out
}

/// The naive rule of Fig 1a: rows in corpus order, each to its best expert with room.
fn naive_sequential(m: &ScoreMatrix, caps: &[usize]) -> Vec<u32> {
    let mut room = caps.to_vec();
    m.iter_rows()
        .map(|row| {
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            let e = *order.iter().find(|&&e| room[e] > 0).unwrap();
            room[e] -= 1;
            e as u32
        })
        .collect()
}

/// Every row assigned to a valid expert, and no expert over its capacity. Returns the sizes.
fn check_valid(assignment: &[u32], rows: usize, caps: &[usize]) -> Vec<usize> {
    assert_eq!(assignment.len(), rows);
    let sizes = part_sizes(assignment, caps.len()).expect("expert out of range");
    for (e, (s, c)) in sizes.iter().zip(caps).enumerate() {
        assert!(s <= c, "expert {e} got {s} rows, capacity {c}");
    }
    sizes
}

/// Tolerance for comparing f64 totals of `rows` f32 scores of magnitude up to `scale`.
fn tolerance(rows: usize, scale: f64) -> f64 {
    1e-9 * (rows as f64 + 1.0) * (scale + 1.0)
}
