//! The LM head + cross-entropy over vocabulary chunks with CubeCL kernels: burn's matmul (a
//! CubeCL kernel too) makes one chunk's logits `[N, VOCAB_CHUNK]`, and one kernel per chunk
//! folds them into each row's running softmax statistics (forward) or turns them in place
//! into the chunk's share of the gradient (backward), so the largest tensor is one chunk of
//! logits, never `[N, vocab]`.
//!
//! - [`chunk_stats_kernel`]: one cube per row; its units stride over the chunk's columns and
//!   reduce the max and then the sum of `exp(x − max)` in shared memory, and unit 0 merges
//!   them into the running `(max, sum)` (rescaling the sum when the max grows) and picks the
//!   row's target logit when the target falls in the chunk.
//! - [`chunk_grad_kernel`]: one unit per logit, `g = w·(exp(x − lse) − [v = t])`.

use burn::tensor::{self as bt, backend::Backend};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

use super::{empty_like, launch_size, SENTINEL};
use crate::fused::tiled::{chunk_logits, tiles, VOCAB_CHUNK};
use crate::fused::{float, prim};

/// Units per cube of the row reduction (a power of two).
const ROW_UNITS: usize = 128;

/// Folds chunk `logits: [N, C]` (vocabulary ids `offset..offset + C`) into `max`, `sum` and
/// `target_logit` (`[N]` each); `first = 1` starts them.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn chunk_stats_kernel<F: Float, I: Numeric>(
    logits: &Tensor<F>,
    targets: &Tensor<I>,
    max_logit: &mut Tensor<F>,
    sum_exp: &mut Tensor<F>,
    target_logit: &mut Tensor<F>,
    offset: u32,
    first: u32,
    #[comptime] units: usize,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let row = CUBE_POS;
    if row >= max_logit.len() {
        terminate!();
    }
    let cols = logits.shape(1);
    let base = row * cols;
    let unit = UNIT_POS as usize;
    let mut shared = SharedMemory::<F>::new(units);

    let mut m = F::new(SENTINEL);
    let mut c = unit;
    while c < cols {
        m = max(m, logits[base + c]);
        c += units;
    }
    shared[unit] = m;
    sync_cube();
    // Halving strides from a runtime value (the cube size is `units`).
    let mut stride = CUBE_DIM as usize / 2;
    while stride > 0 {
        if unit < stride {
            shared[unit] = max(shared[unit], shared[unit + stride]);
        }
        sync_cube();
        stride /= 2;
    }
    let m_chunk = shared[0];
    sync_cube();

    let mut s = F::new(0.0);
    c = unit;
    while c < cols {
        s += (logits[base + c] - m_chunk).exp();
        c += units;
    }
    shared[unit] = s;
    sync_cube();
    stride = CUBE_DIM as usize / 2;
    while stride > 0 {
        if unit < stride {
            let other = shared[unit + stride];
            shared[unit] += other;
        }
        sync_cube();
        stride /= 2;
    }

    if unit == 0 {
        let s_chunk = shared[0];
        if first == 1 {
            max_logit[row] = m_chunk;
            sum_exp[row] = s_chunk;
        } else {
            let m_old = max_logit[row];
            let m_new = max(m_old, m_chunk);
            sum_exp[row] = sum_exp[row] * (m_old - m_new).exp() + s_chunk * (m_chunk - m_new).exp();
            max_logit[row] = m_new;
        }
        let t = u32::cast_from(targets[row]) as usize;
        let offset = offset as usize;
        if t >= offset && t < offset + cols {
            target_logit[row] = logits[base + t - offset];
        }
    }
}

/// `logits[i, c] ← w_i·(exp(logits[i, c] − lse_i) − [offset + c = t_i])` in place.
#[cube(launch)]
fn chunk_grad_kernel<F: Float, I: Numeric>(
    logits: &mut Tensor<F>,
    targets: &Tensor<I>,
    lse: &Tensor<F>,
    weights: &Tensor<F>,
    offset: u32,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let pos = ABSOLUTE_POS;
    if pos >= logits.len() {
        terminate!();
    }
    let cols = logits.shape(1);
    let row = pos / cols;
    let mut g = (logits[pos] - lse[row]).exp();
    if u32::cast_from(targets[row]) as usize == offset as usize + pos % cols {
        g -= F::new(1.0);
    }
    logits[pos] = g * weights[row];
}

/// A backend whose float tensors are [`CubeTensor`]s of runtime `R` (`CubeBackend<R, ..>`).
pub trait CubeTensors<R: CubeRuntime>:
    Backend<FloatTensorPrimitive = CubeTensor<R>, IntTensorPrimitive = CubeTensor<R>>
{
}

impl<R: CubeRuntime, B> CubeTensors<R> for B where
    B: Backend<FloatTensorPrimitive = CubeTensor<R>, IntTensorPrimitive = CubeTensor<R>>
{
}

/// One cube per row for `n` rows (a second grid axis past the first one's limit).
fn row_cubes(n: usize) -> CubeCount {
    const MAX_X: usize = 65_535;
    CubeCount::new_2d(n.min(MAX_X) as u32, n.div_ceil(MAX_X) as u32)
}

/// Each row's log-sum-exp over the vocabulary and its target logit, `([N], [N])`.
pub fn lse_and_target<R: CubeRuntime, B: CubeTensors<R>>(
    h: &bt::Tensor<B, 2>,
    e: &bt::Tensor<B, 2>,
    targets: CubeTensor<R>,
) -> (bt::Tensor<B, 1>, bt::Tensor<B, 1>) {
    let [n, _] = h.dims();
    let [v, _] = e.dims();
    let targets = into_contiguous(targets);
    let mut stats: Option<[CubeTensor<R>; 3]> = None;
    for (a, b) in tiles(v, VOCAB_CHUNK) {
        let logits = into_contiguous(prim(chunk_logits(h, e, (a, b))));
        let [m, s, t] = stats
            .take()
            .unwrap_or_else(|| [(); 3].map(|_| empty_like(&logits, &[n])));
        let (units, client, dtypes) = (
            ROW_UNITS,
            logits.client.clone(),
            [logits.dtype, targets.dtype],
        );
        chunk_stats_kernel::launch::<R>(
            &client,
            row_cubes(n),
            CubeDim::new_1d(units as u32),
            logits.into_tensor_arg(),
            targets.clone().into_tensor_arg(),
            m.clone().into_tensor_arg(),
            s.clone().into_tensor_arg(),
            t.clone().into_tensor_arg(),
            a as u32,
            u32::from(a == 0),
            units,
            dtypes.map(Into::into),
        );
        stats = Some([m, s, t]);
    }
    let [m, s, t] = stats.expect("a vocabulary of at least one token");
    let lse = float::<B, 1>(m) + float::<B, 1>(s).log();
    (lse, float(t))
}

/// `(∂h, ∂e)` of `Σ w·(lse − x_t)` (`w` already divided by the denominator): each chunk's
/// logits recomputed, turned into `G` in place by [`chunk_grad_kernel`], then `∂h += G·E_c`
/// and `∂E_c = Gᵀ·h`.
pub fn grads<R: CubeRuntime, B: CubeTensors<R>>(
    h: &bt::Tensor<B, 2>,
    e: &bt::Tensor<B, 2>,
    targets: CubeTensor<R>,
    lse: bt::Tensor<B, 1>,
    w: bt::Tensor<B, 1>,
) -> (bt::Tensor<B, 2>, bt::Tensor<B, 2>) {
    let [n, d] = h.dims();
    let [v, _] = e.dims();
    let targets = into_contiguous(targets);
    let (lse, w) = (into_contiguous(prim(lse)), into_contiguous(prim(w)));
    let mut dh = bt::Tensor::<B, 2>::zeros([n, d], &h.device());
    let mut de_chunks = Vec::new();
    for (a, b) in tiles(v, VOCAB_CHUNK) {
        let g = into_contiguous(prim(chunk_logits(h, e, (a, b))));
        let (count, dim) = launch_size(&g.client, n * (b - a));
        let dtypes = [g.dtype, targets.dtype];
        chunk_grad_kernel::launch::<R>(
            &g.client.clone(),
            count,
            dim,
            g.clone().into_tensor_arg(),
            targets.clone().into_tensor_arg(),
            lse.clone().into_tensor_arg(),
            w.clone().into_tensor_arg(),
            a as u32,
            dtypes.map(Into::into),
        );
        let g = float::<B, 2>(g);
        dh = dh + g.clone().matmul(e.clone().slice([a..b, 0..d]));
        de_chunks.push(g.transpose().matmul(h.clone()));
    }
    (dh, bt::Tensor::cat(de_chunks, 0))
}
