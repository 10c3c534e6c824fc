//! The optimal capacity-constrained assignment, to measure how far the greedy is from optimal.
//!
//! A transportation problem: N rows with supply 1, E experts with capacities, profit
//! `scores[i][e]`. Solved as a min-cost flow (cost = −score) by successive shortest paths,
//! adding one row at a time: the optimal flow for rows `0..k` plus a shortest augmenting path
//! from row `k` is optimal for rows `0..=k`.
//!
//! The residual graph is compressed onto the experts. A path enters the experts through row
//! `k`'s own edge (cost `−scores[k][e]`). It may then move an already assigned row `i` from
//! expert `a` to `b` (cost `scores[i][a] − scores[i][b]`; only the cheapest such row per pair
//! matters). It ends at an expert with room. Dijkstra runs on the E experts with potentials
//! (reduced costs ≥ 0), and the per-pair cheapest moves are kept up to date incrementally.
//!
//! Complexity: O(E²) per row for Dijkstra, plus O(|a|·E) to rescan the rows of an expert `a`
//! whose cheapest move left it. Worst case O(N·E² + N²·E), typically close to O(N·E²); memory
//! O(N + E²). Costs are accumulated in `f64`.

use crate::capacity::check_capacities;
use crate::error::Result;
use crate::matrix::ScoreMatrix;

const NONE: usize = usize::MAX;

/// An assignment that maximises the total score (see [`crate::total_score`]) subject to expert
/// `e` getting at most `capacities[e]` rows.
///
/// Meant for measuring the greedy's gap on moderate sizes (N up to a few thousand, E up to ~32):
/// see the module docs for the algorithm and its O(N·E² + N²·E) worst case. Among several optimal
/// assignments it returns a deterministic one, not specified further. Optimality is exact up to
/// `f64` rounding of the summed scores.
///
/// Errors: as [`crate::balanced_assign`].
pub fn exact_balanced_assign(scores: &ScoreMatrix, capacities: &[usize]) -> Result<Vec<u32>> {
    let (n, m) = (scores.rows(), scores.experts());
    check_capacities(capacities, m, n)?;
    let mut state = Flow::new(*scores, capacities);
    for k in 0..n {
        state.add_row(k);
    }
    Ok(state.assignment)
}

/// The current optimal flow for the rows added so far, and the compressed residual graph.
struct Flow<'a> {
    scores: ScoreMatrix<'a>,
    experts: usize,
    assignment: Vec<u32>,
    /// Rows currently assigned to each expert, and each row's position in its expert's list.
    members: Vec<Vec<u32>>,
    position: Vec<usize>,
    room: Vec<usize>,
    /// `cost[a * E + b]`: cheapest move of a row of `a` to `b` (∞ when `a` is empty), by row
    /// `via[a * E + b]`.
    cost: Vec<f64>,
    via: Vec<usize>,
    potential: Vec<f64>,
    dist: Vec<f64>,
    pred: Vec<usize>,
    done: Vec<bool>,
}

impl<'a> Flow<'a> {
    fn new(scores: ScoreMatrix<'a>, capacities: &[usize]) -> Self {
        let (n, m) = (scores.rows(), scores.experts());
        Self {
            scores,
            experts: m,
            assignment: vec![u32::MAX; n],
            members: vec![Vec::new(); m],
            position: vec![0; n],
            room: capacities.to_vec(),
            cost: vec![f64::INFINITY; m * m],
            via: vec![NONE; m * m],
            potential: vec![0.0; m],
            dist: vec![0.0; m],
            pred: vec![NONE; m],
            done: vec![false; m],
        }
    }

    fn score(&self, row: usize, expert: usize) -> f64 {
        f64::from(self.scores.row(row)[expert])
    }

    /// Route row `k` along a shortest augmenting path.
    fn add_row(&mut self, k: usize) {
        let m = self.experts;
        // Dijkstra from row k over the experts, on reduced costs. Only the edges out of row k
        // may be negative, and they are all relaxed before the first expert is settled.
        for e in 0..m {
            self.dist[e] = -self.score(k, e) - self.potential[e];
            self.pred[e] = NONE;
            self.done[e] = false;
        }
        for _ in 0..m {
            let mut a = NONE;
            for e in 0..m {
                if !self.done[e] && (a == NONE || self.dist[e] < self.dist[a]) {
                    a = e;
                }
            }
            self.done[a] = true;
            for b in 0..m {
                let c = self.cost[a * m + b];
                if self.done[b] || c == f64::INFINITY {
                    continue;
                }
                // Exactly ≥ 0 in theory; clamp the rounding noise.
                let reduced = (c + self.potential[a] - self.potential[b]).max(0.0);
                if self.dist[a] + reduced < self.dist[b] {
                    self.dist[b] = self.dist[a] + reduced;
                    self.pred[b] = a;
                }
            }
        }
        // The path ends at the expert with room whose true distance is smallest.
        let mut end = NONE;
        for e in 0..m {
            if self.room[e] > 0
                && (end == NONE
                    || self.dist[e] + self.potential[e] < self.dist[end] + self.potential[end])
            {
                end = e;
            }
        }
        assert!(end != NONE, "capacities were checked to hold every row");
        for e in 0..m {
            self.potential[e] += self.dist[e];
        }

        // Augment, walking back from the end: each step moves the cheapest row of `a` to `b`.
        // Path experts are distinct and a row leaves `a` before any row enters it, so the `via`
        // rows read here are still in place.
        self.room[end] -= 1;
        let mut lost: Vec<(usize, usize)> = Vec::new();
        let mut gained: Vec<(usize, usize)> = Vec::new();
        let mut b = end;
        while self.pred[b] != NONE {
            let a = self.pred[b];
            let i = self.via[a * m + b];
            self.remove(a, i);
            self.insert(b, i);
            lost.push((a, i));
            gained.push((b, i));
            b = a;
        }
        self.insert(b, k);
        gained.push((b, k));

        // Refresh the cheapest moves: rescan an expert whose cheapest move just left it, then
        // fold in the rows that arrived.
        let mut rescanned = vec![false; m];
        for &(a, i) in &lost {
            if self.via[a * m..(a + 1) * m].contains(&i) {
                self.rescan(a);
                rescanned[a] = true;
            }
        }
        for &(b, i) in &gained {
            if !rescanned[b] {
                self.offer(b, i);
            }
        }
    }

    fn remove(&mut self, expert: usize, row: usize) {
        let p = self.position[row];
        let list = &mut self.members[expert];
        list.swap_remove(p);
        if let Some(&moved) = list.get(p) {
            self.position[moved as usize] = p;
        }
    }

    fn insert(&mut self, expert: usize, row: usize) {
        self.position[row] = self.members[expert].len();
        self.members[expert].push(row as u32);
        self.assignment[row] = expert as u32;
    }

    /// Fold row `i` (now in expert `a`) into `a`'s cheapest moves.
    fn offer(&mut self, a: usize, i: usize) {
        let m = self.experts;
        let row = self.scores.row(i);
        let here = f64::from(row[a]);
        for (b, &s) in row.iter().enumerate() {
            let c = here - f64::from(s);
            if b != a && c < self.cost[a * m + b] {
                self.cost[a * m + b] = c;
                self.via[a * m + b] = i;
            }
        }
    }

    /// Recompute expert `a`'s cheapest moves from its rows.
    fn rescan(&mut self, a: usize) {
        let m = self.experts;
        self.cost[a * m..(a + 1) * m].fill(f64::INFINITY);
        self.via[a * m..(a + 1) * m].fill(NONE);
        for j in 0..self.members[a].len() {
            let i = self.members[a][j] as usize;
            self.offer(a, i);
        }
    }
}
