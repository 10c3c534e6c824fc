//! Balanced spherical k-means, the clustering step of c-BTM (Gururangan et al. 2023, "Scaling
//! Expert Language Models with Unsupervised Domain Discovery"): k-means++ seeding, then
//! alternate a balanced assignment (every cluster gets the same number of points, within one)
//! and centroid updates. Points and centroids are unit vectors; a point's score for a cluster is
//! their cosine similarity.
//!
//! The balanced step is the partition crate's greedy ([`balanced_assign`] under
//! [`equal_capacities`]), the rule SmallTalk's own partition uses, in place of the linear
//! assignment c-BTM solves.

use smalltalk_partition::{balanced_assign, equal_capacities, ScoreMatrix};

use super::svd::SplitMix64;
use crate::error::Result;

/// The cosine similarities of the unit vector `point` to each of the unit `centroids`
/// (row-major `[k, point.len()]`), appended to `out`.
pub(crate) fn cosines(point: &[f32], centroids: &[f32], out: &mut Vec<f32>) {
    for c in centroids.chunks_exact(point.len()) {
        out.push(point.iter().zip(c).map(|(a, b)| a * b).sum());
    }
}

/// Scale `v` to unit length (a zero vector stays zero).
pub(crate) fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if norm > 0.0 {
        for x in v {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
}

/// Cluster the `n` unit vectors in `points` (row-major `[n, dims]`) into `k` clusters of equal
/// size (within one). Returns the unit centroids (row-major `[k, dims]`) and each point's
/// cluster. Stops after `iterations` assignments, or earlier when an assignment repeats. The
/// same input and seed give the same result. Needs `1 ≤ k ≤ n`.
pub(crate) fn balanced_kmeans(
    points: &[f32],
    dims: usize,
    k: usize,
    iterations: usize,
    seed: u64,
) -> Result<(Vec<f32>, Vec<u32>)> {
    let n = points.len() / dims;
    debug_assert!(k >= 1 && k <= n && dims > 0 && iterations > 0);
    let mut centroids = kmeans_plus_plus(points, dims, k, seed);
    let capacities = equal_capacities(n, k);
    let mut assignment: Vec<u32> = Vec::new();
    let mut scores = Vec::with_capacity(n * k);
    for _ in 0..iterations {
        scores.clear();
        for p in points.chunks_exact(dims) {
            cosines(p, &centroids, &mut scores);
        }
        let next = balanced_assign(&ScoreMatrix::new(&scores, k)?, &capacities)?;
        if next == assignment {
            break;
        }
        assignment = next;
        centroids = update_centroids(points, dims, &assignment, centroids);
    }
    Ok((centroids, assignment))
}

/// The normalised mean of each cluster's points (a cluster whose mean is zero keeps its old
/// centroid).
fn update_centroids(points: &[f32], dims: usize, assignment: &[u32], old: Vec<f32>) -> Vec<f32> {
    let mut sums = vec![0f64; old.len()];
    for (p, &c) in points.chunks_exact(dims).zip(assignment) {
        let s = &mut sums[c as usize * dims..(c as usize + 1) * dims];
        for (acc, &x) in s.iter_mut().zip(p) {
            *acc += f64::from(x);
        }
    }
    let mut out: Vec<f32> = sums.iter().map(|&x| x as f32).collect();
    for (new, old) in out.chunks_exact_mut(dims).zip(old.chunks_exact(dims)) {
        normalize(new);
        if new.iter().all(|&x| x == 0.0) {
            new.copy_from_slice(old);
        }
    }
    out
}

/// k-means++ seeding (Arthur & Vassilvitskii 2007): the first centre uniformly at random, each
/// next one with probability proportional to its squared distance to the nearest centre so far
/// (`2 − 2·cos` for unit vectors). When every remaining point coincides with a centre, the next
/// centre is a uniformly random point.
fn kmeans_plus_plus(points: &[f32], dims: usize, k: usize, seed: u64) -> Vec<f32> {
    let n = points.len() / dims;
    let mut rng = SplitMix64(seed);
    let point = |i: usize| &points[i * dims..(i + 1) * dims];
    let mut first = (rng.uniform() * n as f64) as usize;
    first = first.min(n - 1);
    let mut centroids = point(first).to_vec();
    let mut nearest = vec![f64::INFINITY; n];
    let mut last = first;
    while centroids.len() < k * dims {
        let c = point(last);
        for (i, d) in nearest.iter_mut().enumerate() {
            let cos: f32 = point(i).iter().zip(c).map(|(a, b)| a * b).sum();
            *d = d.min((2.0 - 2.0 * f64::from(cos)).max(0.0));
        }
        let total: f64 = nearest.iter().sum();
        last = if total > 0.0 {
            let mut target = rng.uniform() * total;
            let mut pick = n - 1;
            for (i, &d) in nearest.iter().enumerate() {
                if d > 0.0 && target <= d {
                    pick = i;
                    break;
                }
                target -= d;
            }
            pick
        } else {
            ((rng.uniform() * n as f64) as usize).min(n - 1)
        };
        centroids.extend_from_slice(point(last));
    }
    centroids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separated_groups_are_found_with_equal_sizes() {
        // Three tight groups around the axes of R³, 10 points each.
        let mut rng = SplitMix64(9);
        let mut points = Vec::new();
        for g in 0..3 {
            for _ in 0..10 {
                let mut p: Vec<f32> = (0..3).map(|_| 0.1 * rng.gaussian() as f32).collect();
                p[g] += 1.0;
                normalize(&mut p);
                points.extend(p);
            }
        }
        let (centroids, assignment) = balanced_kmeans(&points, 3, 3, 10, 1).unwrap();
        assert_eq!(centroids.len(), 9);
        for g in 0..3 {
            let first = assignment[g * 10];
            assert!(assignment[g * 10..(g + 1) * 10].iter().all(|&c| c == first));
        }
        let mut seen = assignment.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, vec![0, 1, 2]);
        assert_eq!(
            balanced_kmeans(&points, 3, 3, 10, 1).unwrap(),
            (centroids, assignment)
        );
    }
}
