//! The sparse TF-IDF matrix and its randomized truncated SVD (Halko, Martinsson & Tropp 2011,
//! "Finding Structure with Randomness", Algorithms 4.3/4.4 and 5.1): what c-BTM's
//! `TruncatedSVD` step computes, without forming the dense documents × words matrix.
//!
//! With `X` the `n × V` sparse matrix, `k` components and `l = k + p` sampled directions:
//! `Y = X·Ω` for a seeded Gaussian `Ω` (`V × l`), `Q = orth(Y)`, a few power iterations
//! (`Q = orth(X·orth(Xᵀ·Q))`, which sharpen a slowly decaying spectrum), `B = Qᵀ·X` (`l × V`),
//! then the exact SVD of the small `B`: its top `k` right singular vectors are the components.
//!
//! Only the sparse products are written here. The orthonormalizations and the SVD of `B` go
//! through `l × l` Gram matrices (nalgebra's symmetric eigendecomposition) and dense products
//! (nalgebra's, which call the optimised `matrixmultiply` kernels even in unoptimised builds):
//! `orth(Y) = Y·W·Λ^(-1/2)` for `YᵀY = W·Λ·Wᵀ`, done twice so the basis is orthonormal to
//! working precision, and `B`'s right singular vectors `Bᵀ·w / σ` for `B·Bᵀ = W·diag(σ²)·Wᵀ`.
//! Directions with `σ < 10⁻⁶·σ₁` are dropped as numerically zero.

use nalgebra::DMatrix;

/// Extra sampled directions beyond the `k` wanted (the oversampling `p`).
pub(crate) const OVERSAMPLING: usize = 10;
/// Power iterations of the range finder.
pub(crate) const POWER_ITERATIONS: usize = 4;

/// A sparse matrix in compressed sparse row form: row `i`'s entries are
/// `indices[indptr[i]..indptr[i + 1]]` (column, ascending) with `values` alongside.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Csr {
    /// Number of columns.
    pub cols: usize,
    /// Row starts in `indices` / `values`, `rows + 1` entries.
    pub indptr: Vec<usize>,
    /// Column of each stored entry.
    pub indices: Vec<u32>,
    /// Value of each stored entry.
    pub values: Vec<f32>,
}

impl Csr {
    /// An empty matrix with `cols` columns; rows are added with [`Csr::push_row`].
    pub fn new(cols: usize) -> Self {
        Csr {
            cols,
            indptr: vec![0],
            indices: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Append a row given as `(column, value)` entries with ascending columns below `cols`.
    pub fn push_row(&mut self, entries: &[(u32, f32)]) {
        for &(j, v) in entries {
            debug_assert!((j as usize) < self.cols);
            self.indices.push(j);
            self.values.push(v);
        }
        self.indptr.push(self.indices.len());
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.indptr.len() - 1
    }

    /// The entries of row `i`.
    fn row(&self, i: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
        let r = self.indptr[i]..self.indptr[i + 1];
        self.indices[r.clone()]
            .iter()
            .zip(&self.values[r])
            .map(|(&j, &v)| (j as usize, f64::from(v)))
    }

    /// `(X·M)ᵀ` for `Mt = Mᵀ` (`l × cols`, so each column of `Mt` is one row of `M`): `l × rows`.
    /// Working on transposes keeps every inner loop on contiguous memory (nalgebra is
    /// column-major).
    fn mul_t(&self, mt: &DMatrix<f64>) -> DMatrix<f64> {
        let l = mt.nrows();
        let mut out = DMatrix::<f64>::zeros(l, self.rows());
        let src = mt.as_slice();
        for (i, dst) in out.as_mut_slice().chunks_exact_mut(l.max(1)).enumerate() {
            for (j, v) in self.row(i) {
                axpy(v, &src[j * l..(j + 1) * l], dst);
            }
        }
        out
    }

    /// `(Xᵀ·M)ᵀ` for `Mt = Mᵀ` (`l × rows`): `l × cols`.
    fn tmul_t(&self, mt: &DMatrix<f64>) -> DMatrix<f64> {
        let l = mt.nrows();
        let mut out = DMatrix::<f64>::zeros(l, self.cols);
        let (src, dst) = (mt.as_slice(), out.as_mut_slice());
        for i in 0..self.rows() {
            let m_i = &src[i * l..(i + 1) * l];
            for (j, v) in self.row(i) {
                axpy(v, m_i, &mut dst[j * l..(j + 1) * l]);
            }
        }
        out
    }
}

/// `y += a·x`.
fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// The top singular values and right singular vectors of a matrix.
#[derive(Debug, Clone)]
pub(crate) struct TruncatedSvd {
    /// Singular values, largest first.
    pub singular_values: Vec<f64>,
    /// Right singular vectors, row-major `[singular_values.len(), cols]`.
    pub components: Vec<f32>,
}

/// The randomized truncated SVD of `x` with `k` components (fewer when `x` has fewer rows or
/// columns), seeded by `seed`: the same input and seed give the same output.
pub(crate) fn randomized_svd(x: &Csr, k: usize, seed: u64) -> TruncatedSvd {
    let k = k.min(x.rows()).min(x.cols);
    let l = (k + OVERSAMPLING).min(x.rows()).min(x.cols);
    if k == 0 || x.values.iter().all(|&v| v == 0.0) {
        return TruncatedSvd {
            singular_values: Vec::new(),
            components: Vec::new(),
        };
    }
    let mut rng = SplitMix64(seed);
    // Ωᵀ, l × V, filled column by column (word by word).
    let omega_t = DMatrix::<f64>::from_fn(l, x.cols, |_, _| rng.gaussian());
    let mut q_t = orth_t(x.mul_t(&omega_t));
    for _ in 0..POWER_ITERATIONS {
        let z_t = orth_t(x.tmul_t(&q_t));
        q_t = orth_t(x.mul_t(&z_t));
    }
    // B = Qᵀ·X (m × V). With B·Bᵀ = W·diag(σ²)·Wᵀ, B's right singular vectors are Bᵀ·w / σ.
    let b = x.tmul_t(&q_t);
    let (w, lambda) = gram_eigen(&b);
    let k = k.min(lambda.len());
    let scale = DMatrix::from_fn(k, w.nrows(), |c, r| w[(r, c)] / lambda[c].sqrt());
    let vt = scale * &b;
    let mut components = Vec::with_capacity(k * x.cols);
    for c in 0..k {
        let mut row: Vec<f64> = vt.row(c).iter().copied().collect();
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        // Fix the sign (largest-magnitude entry positive), as scikit-learn's `svd_flip`.
        let pivot = (0..row.len()).fold(0, |p, j| if row[j].abs() > row[p].abs() { j } else { p });
        let scale = if row[pivot] < 0.0 { -norm } else { norm };
        row.iter_mut().for_each(|v| *v /= scale);
        components.extend(row.iter().map(|&v| v as f32));
    }
    TruncatedSvd {
        singular_values: lambda[..k].iter().map(|l| l.sqrt()).collect(),
        components,
    }
}

/// For `yt` (`l × n`), the eigenvectors `W` (as columns) and eigenvalues of `yt·ytᵀ`, largest
/// first, without the numerically zero ones (below `10⁻¹²` of the largest).
fn gram_eigen(yt: &DMatrix<f64>) -> (DMatrix<f64>, Vec<f64>) {
    let gram = yt * yt.transpose();
    let eigen = gram.symmetric_eigen();
    let mut order: Vec<usize> = (0..eigen.eigenvalues.len()).collect();
    order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
    let largest = order.first().map_or(0.0, |&i| eigen.eigenvalues[i]);
    order.retain(|&i| eigen.eigenvalues[i] > largest * 1e-12 && eigen.eigenvalues[i] > 0.0);
    let w = DMatrix::from_fn(yt.nrows(), order.len(), |r, c| {
        eigen.eigenvectors[(r, order[c])]
    });
    (w, order.iter().map(|&i| eigen.eigenvalues[i]).collect())
}

/// An orthonormal basis of the span of `yt`'s rows, as rows: `orth(Y)ᵀ` for `yt = Yᵀ`
/// (`Λ^(-1/2)·Wᵀ·Yᵀ`, twice).
fn orth_t(mut yt: DMatrix<f64>) -> DMatrix<f64> {
    for _ in 0..2 {
        let (w, lambda) = gram_eigen(&yt);
        let scale = DMatrix::from_fn(w.ncols(), w.nrows(), |c, r| w[(r, c)] / lambda[c].sqrt());
        yt = scale * &yt;
    }
    yt
}

/// SplitMix64 (Steele, Lea & Flood 2014): a seeded generator whose output is fixed forever
/// (unlike a library's default generator), so a fit is reproducible across versions.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform number in `(0, 1]`.
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A standard normal number (Box–Muller, one of the pair).
    pub fn gaussian(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dense `rows × cols` matrix of rank `rank` with singular values 10, 5, 2.5, … and a
    /// little noise, and its CSR form.
    fn low_rank(rows: usize, cols: usize, rank: usize, seed: u64) -> (DMatrix<f64>, Csr) {
        let mut rng = SplitMix64(seed);
        let a = orth_t(DMatrix::from_fn(rank, rows, |_, _| rng.gaussian())).transpose();
        let b = orth_t(DMatrix::from_fn(rank, cols, |_, _| rng.gaussian()));
        let s = DMatrix::from_diagonal(&nalgebra::DVector::from_fn(rank, |i, _| {
            10.0 / (1u64 << i) as f64
        }));
        // Round through f32, as the CSR stores it, so both sides see the same matrix.
        let m = (a * s * b).map(|v| f64::from(v as f32));
        let mut csr = Csr::new(cols);
        for i in 0..rows {
            let row: Vec<(u32, f32)> = (0..cols)
                .filter(|&j| m[(i, j)] != 0.0)
                .map(|j| (j as u32, m[(i, j)] as f32))
                .collect();
            csr.push_row(&row);
        }
        (m, csr)
    }

    #[test]
    fn randomized_svd_recovers_the_singular_values_of_a_low_rank_matrix() {
        let (m, csr) = low_rank(120, 300, 6, 7);
        let exact = m.clone().svd(false, true);
        let mut exact_values: Vec<f64> = exact.singular_values.iter().copied().collect();
        exact_values.sort_by(|a, b| b.total_cmp(a));
        let got = randomized_svd(&csr, 5, 42);
        assert_eq!(got.singular_values.len(), 5);
        for (g, e) in got.singular_values.iter().zip(&exact_values) {
            assert!((g - e).abs() < 1e-4 * e.max(1.0), "{g} vs {e}");
        }
        // The components are unit vectors spanning the same space as the exact ones: each has
        // |cos| ≈ 1 with the exact right singular vector of the same rank.
        let vt = exact.v_t.unwrap();
        let order = {
            let s = &exact.singular_values;
            let mut o: Vec<usize> = (0..s.len()).collect();
            o.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
            o
        };
        for c in 0..5 {
            let comp = &got.components[c * 300..(c + 1) * 300];
            let dot: f64 = (0..300)
                .map(|j| f64::from(comp[j]) * vt[(order[c], j)])
                .sum();
            assert!((dot.abs() - 1.0).abs() < 1e-4, "component {c}: {dot}");
        }
        // Asking for more than the rank gives near-zero trailing values; the same seed gives
        // the same result.
        // (the numerically zero ones are dropped).
        let more = randomized_svd(&csr, 8, 1);
        assert!(
            more.singular_values.len() >= 6,
            "{:?}",
            more.singular_values
        );
        assert!(more.singular_values[6..].iter().all(|&s| s < 1e-4));
        assert_eq!(randomized_svd(&csr, 5, 42).components, got.components);
    }

    #[test]
    fn sparse_products_match_dense_ones() {
        let (m, csr) = low_rank(9, 13, 3, 3);
        let mut rng = SplitMix64(5);
        let w = DMatrix::<f64>::from_fn(13, 4, |_, _| rng.gaussian());
        let v = DMatrix::<f64>::from_fn(9, 4, |_, _| rng.gaussian());
        assert!((csr.mul_t(&w.transpose()) - (&m * &w).transpose()).amax() < 1e-12);
        assert!((csr.tmul_t(&v.transpose()) - (m.transpose() * &v).transpose()).amax() < 1e-12);
        assert_eq!(csr.rows(), 9);
    }
}
