//! Matrix products on f32 slices through the `gemm` crate (the one burn-flex uses), for the
//! fused LM head and the flex linear layers. [`matmul_new`] writes a fresh output without
//! zero-filling it first: burn-flex's own matmul zero-fills every output (`FlexTensor::empty`)
//! before `gemm` overwrites it, which costs 10–40% at the thin shapes of our layers
//! (`cargo xtask bench matmul`).

use gemm::{gemm, Parallelism};

/// Strides of one operand, `(column stride, row stride)` in elements (`(1, cols)` for a
/// row-major matrix, `(rows, 1)` for the transpose of one).
pub type Strides = (isize, isize);

/// All threads from `192³` multiply-adds up, as burn-flex does for its own matmuls.
fn par(m: usize, n: usize, k: usize) -> Parallelism {
    if m * n * k >= 192 * 192 * 192 {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    }
}

/// Panics unless every element of the `rows × cols` operand lies inside `x`.
fn check_reach(x: &[f32], (cs, rs): Strides, rows: usize, cols: usize) {
    assert!(cs >= 0 && rs >= 0, "negative strides");
    if rows > 0 && cols > 0 {
        let last = (rows - 1) * rs as usize + (cols - 1) * cs as usize;
        assert!(
            last < x.len(),
            "operand of {rows} x {cols} outside its slice"
        );
    }
}

/// Rows at most this many make a product *thin* (decoding: one row per sequence).
const THIN_ROWS: usize = 8;

/// A thin product (`m ≤` [`THIN_ROWS`]) with at least this many multiply-adds is split by
/// output columns over the rayon threads: gemm runs those as one single-threaded
/// matrix-vector pass, which on its own cannot draw all the memory bandwidth of the cores
/// (decoding reads every weight once per token).
const THIN_SPLIT_MIN: usize = 1 << 16;

/// A pointer that may cross threads: each task writes its own columns.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to hand disjoint column ranges of one destination to rayon tasks.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer `offset` elements on (a method, so closures capture the whole `SendPtr`).
    ///
    /// # Safety
    /// As [`pointer::add`].
    unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: the caller's contract.
        unsafe { self.0.add(offset) }
    }
}

/// `dst[m, n] = lhs · rhs` (or `+=` when `accumulate`) through `gemm`, `dst` row-major; thin
/// products split by columns over the threads (each column computed as gemm computes it alone).
///
/// # Safety
/// As [`gemm_one`].
unsafe fn gemm_to(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    accumulate: bool,
    (lhs, lhs_strides): (&[f32], Strides),
    (rhs, rhs_strides): (&[f32], Strides),
) {
    let threads = rayon::current_num_threads();
    if m > THIN_ROWS || m * n * k < THIN_SPLIT_MIN || threads < 2 || n < 2 * threads {
        // SAFETY: the caller's contract.
        return unsafe {
            gemm_one(
                (m, n, k),
                dst,
                accumulate,
                (lhs, lhs_strides),
                (rhs, rhs_strides),
            )
        };
    }
    check_reach(rhs, rhs_strides, k, n);
    // Whole 16-column blocks per task, so the kernels' vector lanes stay full.
    let per_task = n.div_ceil(threads).div_ceil(16) * 16;
    let out = SendPtr(dst);
    use rayon::prelude::*;
    (0..n.div_ceil(per_task)).into_par_iter().for_each(|t| {
        let (j0, j1) = (t * per_task, ((t + 1) * per_task).min(n));
        let offset = j0 * rhs_strides.0 as usize;
        // SAFETY: task `t` writes only columns `j0..j1` of the caller's destination (row
        // stride `n`); the operand slice starts at column `j0` and still reaches every element
        // of its `k × (j1 − j0)` block (checked above for the whole operand).
        unsafe {
            gemm_strided(
                (m, j1 - j0, k),
                (out.at(j0), n),
                accumulate,
                (lhs, lhs_strides),
                (&rhs[offset..], rhs_strides),
            )
        }
    });
}

/// [`gemm_to`] on one thread (or gemm's own split of large products).
///
/// # Safety
/// `dst` must be valid for writes of `m·n` elements (and initialised, for reads, when
/// `accumulate`) and must not overlap the operands. With `accumulate` false and `k > 0`, gemm
/// writes every element without reading any.
unsafe fn gemm_one(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    accumulate: bool,
    (lhs, lhs_strides): (&[f32], Strides),
    (rhs, rhs_strides): (&[f32], Strides),
) {
    // SAFETY: the caller's contract, with the destination's row stride `n`.
    unsafe {
        gemm_strided(
            (m, n, k),
            (dst, n),
            accumulate,
            (lhs, lhs_strides),
            (rhs, rhs_strides),
        )
    }
}

/// `dst[m, n] = lhs · rhs` into a row-major destination whose rows are `dst_row_stride`
/// elements apart.
///
/// # Safety
/// `dst` must be valid for writes of the `m × n` block (rows `dst_row_stride` apart; and
/// initialised, for reads, when `accumulate`) and must not overlap the operands.
unsafe fn gemm_strided(
    (m, n, k): (usize, usize, usize),
    (dst, dst_row_stride): (*mut f32, usize),
    accumulate: bool,
    (lhs, lhs_strides): (&[f32], Strides),
    (rhs, rhs_strides): (&[f32], Strides),
) {
    check_reach(lhs, lhs_strides, m, k);
    check_reach(rhs, rhs_strides, k, n);
    // SAFETY: every operand index gemm touches lies inside its slice (checked above); the
    // destination is the caller's to vouch for.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_row_stride as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_strides.0,
            lhs_strides.1,
            rhs.as_ptr(),
            rhs_strides.0,
            rhs_strides.1,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            par(m, n, k),
        );
    }
}

/// `dst[m, n] = lhs · rhs` (or `+=` when `accumulate`), `dst` row-major; `lhs` is `[m, k]` and
/// `rhs` `[k, n]` with the given strides.
pub fn matmul_into(
    mnk: (usize, usize, usize),
    dst: &mut [f32],
    accumulate: bool,
    lhs: (&[f32], Strides),
    rhs: (&[f32], Strides),
) {
    assert!(dst.len() >= mnk.0 * mnk.1, "gemm destination too small");
    // SAFETY: `dst` is an initialised slice of at least `m·n` elements, a distinct borrow
    // from the operands.
    unsafe { gemm_to(mnk, dst.as_mut_ptr(), accumulate, lhs, rhs) }
}

/// `lhs · rhs` as a new row-major `[m, n]` vector (`lhs` `[m, k]`, `rhs` `[k, n]` with the given
/// strides), written by gemm without a zero fill first.
pub fn matmul_new(
    mnk: (usize, usize, usize),
    lhs: (&[f32], Strides),
    rhs: (&[f32], Strides),
) -> Vec<f32> {
    matmul_new_grouped(1, mnk, (lhs.0, lhs.1, 0), (rhs.0, rhs.1, 0))
}

/// `groups` products side by side as one new row-major `[groups·m, n]` vector: rows
/// `g·m..(g+1)·m` are `lhs_g · rhs_g`, where operand `g` starts `g·step` elements into its
/// slice (`(slice, strides, step)`), each `lhs_g` `[m, k]` and `rhs_g` `[k, n]` with the given
/// strides. Each product is the one [`matmul_new`] computes alone (same bits); written without
/// a zero fill first.
pub fn matmul_new_grouped(
    groups: usize,
    (m, n, k): (usize, usize, usize),
    (lhs, lhs_strides, lhs_step): (&[f32], Strides, usize),
    (rhs, rhs_strides, rhs_step): (&[f32], Strides, usize),
) -> Vec<f32> {
    if k == 0 || m == 0 || n == 0 {
        return vec![0.0; groups * m * n];
    }
    let mut dst: Vec<f32> = Vec::with_capacity(groups * m * n);
    for g in 0..groups {
        let (a, b) = (&lhs[g * lhs_step..], &rhs[g * rhs_step..]);
        // SAFETY: group `g`'s destination is the `m·n` elements of the capacity from
        // `g·m·n`; with `accumulate` false and `k > 0` gemm writes every one of them without
        // reading any, so all `groups·m·n` are initialised when the length is set.
        unsafe {
            let out = dst.as_mut_ptr().add(g * m * n);
            gemm_to((m, n, k), out, false, (a, lhs_strides), (b, rhs_strides));
        }
    }
    // SAFETY: see above; every group's block was written.
    unsafe { dst.set_len(groups * m * n) };
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[rows, cols]` row-major values that are exact in f32 products and sums.
    fn grid(rows: usize, cols: usize, salt: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| ((i * 7 + salt * 3) % 11) as f32 - 5.0)
            .collect()
    }

    fn naive(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        sa: Strides,
        b: &[f32],
        sb: Strides,
    ) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    let x = a[i * sa.1 as usize + p * sa.0 as usize];
                    let y = b[p * sb.1 as usize + j * sb.0 as usize];
                    c[i * n + j] += x * y;
                }
            }
        }
        c
    }

    #[test]
    fn fresh_and_accumulated_products_equal_the_naive_loop() {
        // Small and above the parallel threshold; plain and transposed operands.
        for (m, n, k) in [(3, 5, 7), (1, 1, 1), (200, 210, 190)] {
            let a = grid(m, k, 1);
            let at = grid(k, m, 2);
            let b = grid(k, n, 3);
            let bt = grid(n, k, 4);
            for (lhs, sa) in [(&a, (1, k as isize)), (&at, (m as isize, 1))] {
                for (rhs, sb) in [(&b, (1, n as isize)), (&bt, (k as isize, 1))] {
                    let want = naive(m, n, k, lhs, sa, rhs, sb);
                    let got = matmul_new((m, n, k), (lhs, sa), (rhs, sb));
                    assert_eq!(got, want, "{m}x{n}x{k} new");
                    let mut acc = vec![1f32; m * n];
                    matmul_into((m, n, k), &mut acc, true, (lhs, sa), (rhs, sb));
                    let plus_one: Vec<f32> = want.iter().map(|x| x + 1.0).collect();
                    assert_eq!(acc, plus_one, "{m}x{n}x{k} accumulated");
                }
            }
        }
        assert_eq!(
            matmul_new((2, 3, 0), (&[], (1, 0)), (&[], (1, 3))),
            vec![0.0; 6]
        );
    }

    #[test]
    fn thin_products_split_over_threads_equal_the_naive_loop() {
        // Above the split threshold with one to eight rows; three threads, so the column
        // ranges have a ragged last one. Plain and transposed right operands.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(|| {
            for (m, n, k) in [(1, 300, 400), (4, 257, 130), (8, 97, 700)] {
                let a = grid(m, k, 1);
                let b = grid(k, n, 3);
                let bt = grid(n, k, 4);
                for (rhs, sb) in [(&b, (1, n as isize)), (&bt, (k as isize, 1))] {
                    let want = naive(m, n, k, &a, (1, k as isize), rhs, sb);
                    let got = matmul_new((m, n, k), (&a, (1, k as isize)), (rhs, sb));
                    assert_eq!(got, want, "{m}x{n}x{k}");
                }
            }
        });
    }

    #[test]
    fn grouped_products_are_the_products_one_by_one() {
        let (groups, m, n, k) = (3, 5, 4, 6);
        let a = grid(groups * m, k, 5);
        let bt = grid(groups * n, k, 6);
        let got = matmul_new_grouped(
            groups,
            (m, n, k),
            (&a, (1, k as isize), m * k),
            (&bt, (k as isize, 1), n * k),
        );
        for g in 0..groups {
            let want = naive(
                m,
                n,
                k,
                &a[g * m * k..],
                (1, k as isize),
                &bt[g * n * k..],
                (k as isize, 1),
            );
            assert_eq!(got[g * m * n..(g + 1) * m * n], want[..], "group {g}");
        }
    }

    #[test]
    #[should_panic(expected = "outside its slice")]
    fn an_operand_past_its_slice_is_refused() {
        matmul_new((2, 2, 2), (&[1.0; 3], (1, 2)), (&[1.0; 4], (1, 2)));
    }
}
