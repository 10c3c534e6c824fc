//! Lane-block arithmetic of the attention kernel's row blocks: [`ROWS`] query rows, each a
//! row of [`LANES`]-wide accumulators, updated together (`attention_block`). The row loops come
//! in two forms, one per instruction set that runs them fastest ([`unroll_rows`]); both do the
//! same operations in the same order, so they give the same bits.

use super::isa::{Isa, LANES};

/// Query rows per block.
pub const ROWS: usize = 4;

/// Whether the block passes should write their row loops out (`UNROLL`) when compiled for
/// `isa` (capped at the CPU's level, as the kernels run): for AVX-512 only, see
/// [`mul_add_rows`].
pub fn unroll_rows(isa: Isa) -> bool {
    isa.min(Isa::detected()) == Isa::Avx512
}

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

// The three row helpers below come in two forms, chosen by `UNROLL` at compile time. As loops
// over the rows, LLVM's AVX2 build vectorises the lanes (the fast form there); its AVX-512 build
// instead vectorises the loop over the rows, four at a time, with gathers and scatters on the
// stacked accumulators (three times slower than AVX2). Written out row by row (`UNROLL`), no
// loop over rows is left to vectorise, which is the fast form for AVX-512 and about 20% slower
// than the loops for AVX2 (`bench/isa-compare.sh`). Same arithmetic in the same order: same bits.

/// `acc[r] += a[r]·b` for every row of a block.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
pub(super) fn mul_add_rows<const UNROLL: bool>(
    acc: &mut [[f32; LANES]; ROWS],
    a: &[f32; ROWS],
    b: &[f32; LANES],
) {
    if UNROLL {
        let [a0, a1, a2, a3] = acc;
        mul_add(a0, a[0], b);
        mul_add(a1, a[1], b);
        mul_add(a2, a[2], b);
        mul_add(a3, a[3], b);
    } else {
        for r in 0..ROWS {
            mul_add(&mut acc[r], a[r], b);
        }
    }
}

/// `acc[r] += a[r] ⊙ b` for every row of a block.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
pub(super) fn mul_add_lanes_rows<const UNROLL: bool>(
    acc: &mut [[f32; LANES]; ROWS],
    a: &[[f32; LANES]; ROWS],
    b: &[f32; LANES],
) {
    if UNROLL {
        let [a0, a1, a2, a3] = acc;
        mul_add_lanes(a0, &a[0], b);
        mul_add_lanes(a1, &a[1], b);
        mul_add_lanes(a2, &a[2], b);
        mul_add_lanes(a3, &a[3], b);
    } else {
        for r in 0..ROWS {
            mul_add_lanes(&mut acc[r], &a[r], b);
        }
    }
}

/// `acc += Σ_r a[r]·b[r]`, rows added in order.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
pub(super) fn mul_add_sum_rows<const UNROLL: bool>(
    acc: &mut [f32; LANES],
    a: &[f32; ROWS],
    b: &[[f32; LANES]; ROWS],
) {
    if UNROLL {
        mul_add(acc, a[0], &b[0]);
        mul_add(acc, a[1], &b[1]);
        mul_add(acc, a[2], &b[2]);
        mul_add(acc, a[3], &b[3]);
    } else {
        for r in 0..ROWS {
            mul_add(acc, a[r], &b[r]);
        }
    }
}

/// The lane block of `x` at `at`.
#[inline(always)]
pub(super) fn lanes(x: &[f32], at: usize) -> &[f32; LANES] {
    x[at..at + LANES].try_into().expect("a lane block")
}
