//! Per-row softmax arithmetic of the fused head: max, a vectorisable `exp`, log-sum-exp and
//! the cross-entropy gradient row, written over fixed [`LANES`]-lane blocks so LLVM emits SIMD
//! code for the caller's instruction set ([`super::isa`]) and the reduction order never depends
//! on threads or on the instruction set (bit-for-bit deterministic).

use super::isa::LANES;

/// `e^x` for `x ≤ 0` (inputs are `logit − row max`), a branch-free Cephes-style polynomial
/// after `x = n·ln2 + r`: relative error ≈ 1e-7 on `[-87, 0]`, and 0-ish (≈ 1e-38) below.
/// Plain `f32` arithmetic and bit casts, so loops over it auto-vectorise (libm `expf` does not).
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer
    let x = if x < -87.0 { -87.0 } else { x };
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // n is an integer in [-126, 0]; build 2ⁿ from its exponent bits.
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    y * f32::from_bits(((ni + 127) as u32) << 23)
}

/// `σ(g) = 1 / (1 + e^(−g))` from [`fast_exp`] of `−|g|` (so its argument is never positive).
#[inline(always)]
fn sigmoid(g: f32) -> f32 {
    let e = fast_exp(-g.abs());
    if g >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    }
}

/// `out = silu(gate) ⊙ up` with `silu(g) = g·σ(g)` (`σ` as in `sigmoid`): the SwiGLU product of the
/// MLP without libm `expf`.
#[inline(always)]
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g * sigmoid(g) * u;
    }
}

/// `1 / sqrt(mean(x²) + eps)` of one row, the sum of squares over [`LANES`] lanes in a fixed
/// order.
#[inline(always)]
fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let blocks = x.chunks_exact(LANES);
    let tail: f32 = blocks.remainder().iter().map(|v| v * v).sum();
    for b in blocks {
        for (l, v) in lanes.iter_mut().zip(b) {
            *l += v * v;
        }
    }
    let mean = (lanes.iter().sum::<f32>() + tail) / x.len() as f32;
    1.0 / (mean + eps).sqrt()
}

/// RMSNorm of consecutive rows of `w.len()` features: `y = x · w / sqrt(mean(x²) + eps)` row by
/// row.
#[inline(always)]
pub fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    let d = w.len();
    for (x, y) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let inv = inv_rms(x, eps);
        for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
            *y = x * inv * w;
        }
    }
}

/// Gradients of [`rms_norm_rows`] for the upstream `dy`: with `g = dy ⊙ w` and `inv` the row's
/// `1 / rms`, `dx = inv·g − x·inv³·(Σ g⊙x)/d` per row, and `Σ_rows dy⊙x·inv` added to `dw`.
#[inline(always)]
pub fn rms_norm_rows_grads(
    x: &[f32],
    w: &[f32],
    eps: f32,
    dy: &[f32],
    dx: &mut [f32],
    dw: &mut [f32],
) {
    let d = w.len();
    for ((x, dy), dx) in x
        .chunks_exact(d)
        .zip(dy.chunks_exact(d))
        .zip(dx.chunks_exact_mut(d))
    {
        let inv = inv_rms(x, eps);
        let mut lanes = [0f32; LANES];
        let (xb, yb, wb) = (
            x.chunks_exact(LANES),
            dy.chunks_exact(LANES),
            w.chunks_exact(LANES),
        );
        let tail: f32 = (xb
            .remainder()
            .iter()
            .zip(yb.remainder())
            .zip(wb.remainder()))
        .map(|((x, y), w)| y * w * x)
        .sum();
        for ((x, y), w) in xb.zip(yb).zip(wb) {
            for l in 0..LANES {
                lanes[l] += y[l] * w[l] * x[l];
            }
        }
        let c = (lanes.iter().sum::<f32>() + tail) * inv * inv * inv / d as f32;
        for (((dx, dw), &x), (&y, &w)) in dx
            .iter_mut()
            .zip(dw.iter_mut())
            .zip(x)
            .zip(dy.iter().zip(w))
        {
            *dx = inv * y * w - x * c;
            *dw += y * x * inv;
        }
    }
}

/// Gradients of [`silu_mul`] for the upstream gradient `dout`: `∂gate = dout·up·σ(g)·(1 +
/// g·(1 − σ(g)))`, `∂up = dout·g·σ(g)`, with the same `σ` as the forward pass.
#[inline(always)]
pub fn silu_mul_grads(gate: &[f32], up: &[f32], dout: &[f32], dgate: &mut [f32], dup: &mut [f32]) {
    for ((((dg, du), &g), &u), &d) in dgate
        .iter_mut()
        .zip(dup.iter_mut())
        .zip(gate)
        .zip(up)
        .zip(dout)
    {
        let s = sigmoid(g);
        *du = d * g * s;
        *dg = d * u * s * (1.0 + g * (1.0 - s));
    }
}

/// Largest element of a non-empty row.
#[inline(always)]
pub fn row_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let blocks = row.chunks_exact(LANES);
    let tail = blocks.remainder();
    for b in blocks {
        for (l, &x) in lanes.iter_mut().zip(b) {
            *l = if x > *l { x } else { *l };
        }
    }
    let mut m = tail
        .iter()
        .fold(f32::NEG_INFINITY, |a, &x| if x > a { x } else { a });
    for l in lanes {
        m = if l > m { l } else { m };
    }
    m
}

/// Replace every `x` by `e^(x − m)` and return their sum ([`LANES`] lanes, fixed order).
#[inline(always)]
pub fn exp_sub_in_place(row: &mut [f32], m: f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let mut blocks = row.chunks_exact_mut(LANES);
    for b in &mut blocks {
        for (l, x) in lanes.iter_mut().zip(b.iter_mut()) {
            *x = fast_exp(*x - m);
            *l += *x;
        }
    }
    let mut s = 0f32;
    for x in blocks.into_remainder() {
        *x = fast_exp(*x - m);
        s += *x;
    }
    lanes.iter().sum::<f32>() + s
}

/// Turn a logits row into the cross-entropy gradient row `w·(softmax − onehot(t))` in place
/// and return `−log p(t)` (computed before the row is overwritten). `w = 0` zeroes the row.
#[inline(always)]
pub fn ce_grad_row(row: &mut [f32], target: usize, w: f32) -> f64 {
    if w == 0.0 {
        row.fill(0.0);
        return 0.0;
    }
    let x_t = row[target];
    let m = row_max(row);
    let s = exp_sub_in_place(row, m);
    let c = w / s;
    for x in row.iter_mut() {
        *x *= c;
    }
    row[target] -= w;
    (m as f64 + (s as f64).ln()) - x_t as f64
}

/// `Σ e^(x − m)` over a row, the row left as it is: the sum [`exp_sub_in_place`] returns, in
/// the same order (so the same bits), without its stores.
#[inline(always)]
pub fn sum_exp_sub(row: &[f32], m: f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let blocks = row.chunks_exact(LANES);
    let tail: f32 = blocks.remainder().iter().map(|&x| fast_exp(x - m)).sum();
    for b in blocks {
        for (l, &x) in lanes.iter_mut().zip(b) {
            *l += fast_exp(x - m);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `log p(t)` of a logits row.
#[inline(always)]
pub fn logprob_row(row: &[f32], target: usize) -> f32 {
    let x_t = row[target];
    let m = row_max(row);
    let s = sum_exp_sub(row, m);
    ((x_t as f64 - m as f64) - (s as f64).ln()) as f32
}

crate::multiversion!(
    /// [`silu_mul`] compiled for `isa`.
    pub fn silu_mul_on(gate: &[f32], up: &[f32], out: &mut [f32]) => silu_mul
);

crate::multiversion!(
    /// [`silu_mul_grads`] compiled for `isa`.
    pub fn silu_mul_grads_on(
        gate: &[f32],
        up: &[f32],
        dout: &[f32],
        dgate: &mut [f32],
        dup: &mut [f32],
    ) => silu_mul_grads
);

crate::multiversion!(
    /// [`rms_norm_rows`] compiled for `isa`.
    pub fn rms_norm_rows_on(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) => rms_norm_rows
);

crate::multiversion!(
    /// [`rms_norm_rows_grads`] compiled for `isa`.
    pub fn rms_norm_rows_grads_on(
        x: &[f32],
        w: &[f32],
        eps: f32,
        dy: &[f32],
        dx: &mut [f32],
        dw: &mut [f32],
    ) => rms_norm_rows_grads
);

crate::multiversion!(
    /// [`ce_grad_row`] compiled for `isa`.
    pub fn ce_grad_row_on(row: &mut [f32], target: usize, w: f32) -> f64 => ce_grad_row
);

crate::multiversion!(
    /// [`logprob_row`] compiled for `isa`.
    pub fn logprob_row_on(row: &[f32], target: usize) -> f32 => logprob_row
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let want = (x as f64).exp();
            let got = fast_exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(fast_exp(0.0), 1.0);
        assert!(fast_exp(-1e4) < 1e-37);
        assert!(fast_exp(f32::NEG_INFINITY) < 1e-37);
    }

    #[test]
    fn silu_mul_matches_naive() {
        let gate: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.037).collect();
        let up: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 13) as f32 * 0.3 - 2.0)
            .collect();
        let mut out = vec![0f32; 1000];
        silu_mul(&gate, &up, &mut out);
        for ((&g, &u), &o) in gate.iter().zip(&up).zip(&out) {
            let want = (g as f64) / (1.0 + (-(g as f64)).exp()) * u as f64;
            assert!(
                (o as f64 - want).abs() <= 1e-6 * want.abs().max(1e-3),
                "{g}: {o} vs {want}"
            );
        }
    }

    #[test]
    fn rows_match_naive() {
        let row: Vec<f32> = (0..37)
            .map(|i| ((i * 7919) % 23) as f32 * 0.37 - 3.0)
            .collect();
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(row_max(&row), m);
        let lse = m as f64
            + row
                .iter()
                .map(|&x| ((x - m) as f64).exp())
                .sum::<f64>()
                .ln();
        let lp = logprob_row(&row, 5);
        assert!((lp as f64 - (row[5] as f64 - lse)).abs() < 1e-5);
        // The sum without stores is the in-place pass's sum, bit for bit, at every tail length.
        for len in [1, 15, 16, 17, 37] {
            let mut scratch = row[..len].to_vec();
            let want = exp_sub_in_place(&mut scratch, m);
            assert_eq!(
                sum_exp_sub(&row[..len], m).to_bits(),
                want.to_bits(),
                "{len}"
            );
        }
        let mut g = row.clone();
        let nll = ce_grad_row(&mut g, 5, 0.5);
        assert!((nll - (lse - row[5] as f64)).abs() < 1e-5);
        for (j, (&gj, &x)) in g.iter().zip(&row).enumerate() {
            let want = 0.5 * (((x as f64) - lse).exp() - if j == 5 { 1.0 } else { 0.0 });
            assert!((gj as f64 - want).abs() < 1e-6, "{j}: {gj} vs {want}");
        }
    }
}
