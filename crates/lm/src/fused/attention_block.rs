//! The forward pass of the flex attention kernel for a block of [`ROWS`] query rows at a time:
//! their score rows share every key load and their outputs every value load, with
//! `ROWS × LANES` independent accumulators, so the products run near the speed of a matrix
//! product instead of one dependent reduction per score.
//!
//! Query rows `i0 .. i0 + ROWS` of a head see keys `0 ..= i`; the block computes scores up to
//! the last row's key and zeroes each row's probabilities past its own. Sums over the head
//! dimension run in order `c = 0, 1, …` and sums over keys over [`LANES`] lanes then the tail,
//! the same for every instruction set.

use super::isa::LANES;
use super::rows::{exp_sub_in_place, row_max};

/// Query rows per block.
pub const ROWS: usize = 4;

/// `acc += a·b` lane by lane.
#[inline(always)]
fn mul_add(acc: &mut [f32; LANES], a: f32, b: &[f32; LANES]) {
    for l in 0..LANES {
        acc[l] += a * b[l];
    }
}

/// `acc += a ⊙ b` lane by lane.
#[inline(always)]
fn mul_add_lanes(acc: &mut [f32; LANES], a: &[f32; LANES], b: &[f32; LANES]) {
    for l in 0..LANES {
        acc[l] += a[l] * b[l];
    }
}

/// The lane block of `x` at `at`.
#[inline(always)]
fn lanes(x: &[f32], at: usize) -> &[f32; LANES] {
    x[at..at + LANES].try_into().expect("a lane block")
}

/// Scores `p[r·seq + j] = Σ_c qt[c·ROWS + r]·kt[c·seq + j]` for `r < ROWS`, `j < keys`
/// (`qt`: the block's queries transposed, `[hd, ROWS]`, missing rows zero; `kt`: `[hd, seq]`).
#[inline(always)]
fn block_scores(qt: &[f32], kt: &[f32], seq: usize, keys: usize, p: &mut [f32]) {
    let hd = qt.len() / ROWS;
    let full = keys / LANES * LANES;
    for j in (0..full).step_by(LANES) {
        let mut acc = [[0f32; LANES]; ROWS];
        for c in 0..hd {
            let k = lanes(kt, c * seq + j);
            let q: &[f32; ROWS] = qt[c * ROWS..(c + 1) * ROWS]
                .try_into()
                .expect("a row block");
            for r in 0..ROWS {
                mul_add(&mut acc[r], q[r], k);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            p[r * seq + j..][..LANES].copy_from_slice(acc);
        }
    }
    for j in full..keys {
        for r in 0..ROWS {
            let mut s = 0f32;
            for c in 0..hd {
                s += qt[c * ROWS + r] * kt[c * seq + j];
            }
            p[r * seq + j] = s;
        }
    }
}

/// `out[r·hd + c] = inv[r]·Σ_{j<keys} p[r·seq + j]·vt[c·seq + j]` for the block's rows.
// Indexed loops over the rows: in this form LLVM keeps every accumulator in a register.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn block_values(
    p: &[f32],
    vt: &[f32],
    seq: usize,
    keys: usize,
    inv: &[f32; ROWS],
    out: &mut [f32],
) {
    let hd = vt.len() / seq;
    let rows = out.len() / hd;
    let full = keys / LANES * LANES;
    for c in 0..hd {
        let v = &vt[c * seq..][..keys];
        let mut acc = [[0f32; LANES]; ROWS];
        for j in (0..full).step_by(LANES) {
            let vb = lanes(v, j);
            for r in 0..ROWS {
                mul_add_lanes(&mut acc[r], lanes(p, r * seq + j), vb);
            }
        }
        for (r, acc) in acc.iter().enumerate().take(rows) {
            let tail: f32 = (full..keys).map(|j| p[r * seq + j] * v[j]).sum();
            out[r * hd + c] = (acc.iter().sum::<f32>() + tail) * inv[r];
        }
    }
}

/// Causal attention of one head: `q` `[seq, hd]` (rotated, scaled), `kt`, `vt` `[hd, seq]`
/// (rotated keys, values) into `out` `[seq, hd]` and the log-sum-exp of every score row.
#[inline(always)]
pub fn forward(q: &[f32], kt: &[f32], vt: &[f32], out: &mut [f32], lse: &mut [f32]) {
    let seq = lse.len();
    let hd = q.len() / seq.max(1);
    let mut p = vec![0f32; ROWS * seq];
    let mut qt = vec![0f32; hd * ROWS];
    for i0 in (0..seq).step_by(ROWS) {
        let rows = ROWS.min(seq - i0);
        let keys = i0 + rows;
        qt.fill(0.0);
        for (r, q) in q[i0 * hd..][..rows * hd].chunks_exact(hd).enumerate() {
            for (c, &x) in q.iter().enumerate() {
                qt[c * ROWS + r] = x;
            }
        }
        block_scores(&qt, kt, seq, keys, &mut p);
        let mut inv = [0f32; ROWS];
        for r in 0..rows {
            let row = &mut p[r * seq..][..keys];
            let seen = i0 + r + 1;
            let m = row_max(&row[..seen]);
            let sum = exp_sub_in_place(&mut row[..seen], m);
            row[seen..].fill(0.0);
            inv[r] = 1.0 / sum;
            lse[i0 + r] = m + sum.ln();
        }
        block_values(&p, vt, seq, keys, &inv, &mut out[i0 * hd..][..rows * hd]);
    }
}
