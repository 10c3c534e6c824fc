//! Attention of new positions over a sequence's KV cache (decoding, `crate::kv_cache`): the
//! reference computation (burn tensor ops) and the flex kernel, one plain pass per head.
//!
//! Inputs: the new positions' queries `q: [n, heads·head_dim]` (RoPE applied), and the cache's
//! buffers `keys`, `values: [capacity, heads·head_dim]` (position-major, keys rotated) whose
//! first `len` rows are filled, the new positions' own keys and values last. New position `i`
//! sits at `len − n + i` and attends to cached positions `0..=len − n + i`; scale
//! `1/√head_dim`. Returns `[n, heads·head_dim]`, ready for `o_proj`.

use burn::tensor::activation::softmax;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{backend::Backend, Tensor};

#[allow(unused_imports)]
use super::{float, on_lm_backend, prim, LmBackend};
use crate::fused::attention::future_mask;

/// `buffer: [capacity, d]` with rows `start..start + n` replaced by `rows: [n, d]` (appending
/// new positions to a KV cache): [`LmBackend::cache_write`] on the backends that have it
/// (flex: in place when the buffer is not shared), burn's `slice_assign` elsewhere.
pub fn cache_write<B: Backend>(
    buffer: Tensor<B, 2>,
    rows: Tensor<B, 2>,
    start: usize,
) -> Tensor<B, 2> {
    #[allow(dead_code)] // unused when no backend feature is on
    type Args<X> = (Tensor<X, 2>, Tensor<X, 2>);
    let (buffer, rows) = on_lm_backend!(B, (buffer, rows), Args, |a: L| {
        float::<L, 2>(L::cache_write(prim(a.0), prim(a.1), start))
    });
    float(reference_cache_write::<B>(prim(buffer), prim(rows), start))
}

/// [`cache_write`] by burn's `slice_assign` (which copies the buffer on flex).
pub fn reference_cache_write<B: Backend>(
    buffer: FloatTensor<B>,
    rows: FloatTensor<B>,
    start: usize,
) -> FloatTensor<B> {
    let rows = float::<B, 2>(rows);
    let [n, d] = rows.dims();
    prim(float::<B, 2>(buffer).slice_assign([start..start + n, 0..d], rows))
}

/// Attention of `q`'s new positions over the first `len` cached positions (see the module
/// docs): [`LmBackend::cached_attention`] on the backends that have it (flex: the kernel of this
/// module), the reference ops elsewhere.
pub fn cached_attention<B: Backend>(
    q: Tensor<B, 2>,
    keys: Tensor<B, 2>,
    values: Tensor<B, 2>,
    len: usize,
    heads: usize,
) -> Tensor<B, 2> {
    #[allow(dead_code)] // unused when no backend feature is on
    type Args<X> = (Tensor<X, 2>, Tensor<X, 2>, Tensor<X, 2>);
    let (q, keys, values) = on_lm_backend!(B, (q, keys, values), Args, |a: L| {
        float::<L, 2>(L::cached_attention(
            prim(a.0),
            prim(a.1),
            prim(a.2),
            len,
            heads,
        ))
    });
    float(reference_cached_attention::<B>(
        prim(q),
        prim(keys),
        prim(values),
        len,
        heads,
    ))
}

/// [`cached_attention`] from burn tensor ops: per head, scores `q·kᵀ/√head_dim` over the first
/// `len` cached positions, future positions masked, softmax, times the values.
pub fn reference_cached_attention<B: Backend>(
    q: FloatTensor<B>,
    keys: FloatTensor<B>,
    values: FloatTensor<B>,
    len: usize,
    heads: usize,
) -> FloatTensor<B> {
    let q = float::<B, 2>(q);
    let [n, d] = q.dims();
    let head_dim = d / heads;
    let per_head =
        |x: Tensor<B, 2>, rows: usize| x.reshape([rows, heads, head_dim]).swap_dims(0, 1);
    let keys = per_head(float::<B, 2>(keys).narrow(0, 0, len), len);
    let values = per_head(float::<B, 2>(values).narrow(0, 0, len), len);
    let scale = 1.0 / (head_dim as f64).sqrt();
    if n == 1 {
        // One new position (decoding): products and sums, not a one-row matrix product
        // (burn's wgpu backend gave wrong values for those, see `fused::linear`).
        let q = q.reshape([heads, 1, head_dim]);
        let scores = (q * keys).sum_dim(2).mul_scalar(scale); // [heads, len, 1]
        let out = (softmax(scores, 1) * values).sum_dim(1); // [heads, 1, head_dim]
        return prim(out.reshape([1, d]));
    }
    let mask = future_mask::<B>(len - n, n, len, &q.device())
        .reshape([1, n, len])
        .expand([heads, n, len]);
    let scores = per_head(q, n)
        .matmul(keys.swap_dims(1, 2))
        .mul_scalar(scale)
        .mask_fill(mask, f64::NEG_INFINITY);
    let out = softmax(scores, 2).matmul(values);
    prim(out.swap_dims(0, 1).reshape([n, d]))
}

/// The flex kernel: `q: [n, d]`, `keys`, `values` with at least `len` rows of `d`; one task per
/// head when the cache is long enough to pay for the threads.
#[cfg(feature = "flex")]
pub(crate) fn cached_attention_kernel(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    (n, len, d, heads): (usize, usize, usize, usize),
) -> Vec<f32> {
    use rayon::prelude::*;
    assert!(n <= len && q.len() >= n * d && keys.len() >= len * d && values.len() >= len * d);
    let head_dim = d / heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    // New position `i`'s outputs `[d]`: every head at once, so each key and value row is read
    // once, contiguously.
    let one_position = |i: usize, out: &mut [f32]| {
        let seen = len - n + i + 1;
        let qi = &q[i * d..(i + 1) * d];
        let mut scores = vec![0f32; seen * heads]; // [position][head]
        let mut prod = vec![0f32; d];
        for (j, s) in scores.chunks_exact_mut(heads).enumerate() {
            let kj = &keys[j * d..(j + 1) * d];
            prod.iter_mut()
                .zip(qi.iter().zip(kj))
                .for_each(|(p, (a, b))| *p = a * b);
            for (s, block) in s.iter_mut().zip(prod.chunks_exact(head_dim)) {
                *s = block.iter().sum::<f32>() * scale;
            }
        }
        let mut max = vec![f32::NEG_INFINITY; heads];
        for s in scores.chunks_exact(heads) {
            max.iter_mut().zip(s).for_each(|(m, x)| *m = m.max(*x));
        }
        let mut sum = vec![0f32; heads];
        for s in scores.chunks_exact_mut(heads) {
            for ((x, m), total) in s.iter_mut().zip(&max).zip(&mut sum) {
                *x = (*x - m).exp();
                *total += *x;
            }
        }
        out.fill(0.0);
        for (j, p) in scores.chunks_exact(heads).enumerate() {
            let vj = &values[j * d..(j + 1) * d];
            for ((o, v), p) in out
                .chunks_exact_mut(head_dim)
                .zip(vj.chunks_exact(head_dim))
                .zip(p)
            {
                o.iter_mut().zip(v).for_each(|(o, v)| *o += p * v);
            }
        }
        for (o, total) in out.chunks_exact_mut(head_dim).zip(&sum) {
            o.iter_mut().for_each(|x| *x /= total);
        }
    };
    let mut out = vec![0f32; n * d];
    if n > 1 && len * d >= 1 << 15 {
        out.par_chunks_exact_mut(d)
            .enumerate()
            .for_each(|(i, o)| one_position(i, o));
    } else {
        out.chunks_exact_mut(d)
            .enumerate()
            .for_each(|(i, o)| one_position(i, o));
    }
    out
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    fn values(seed: usize, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 37 + seed * 11) % 23) as f32 - 11.0) / 7.0)
            .collect()
    }

    #[test]
    fn the_kernel_equals_the_reference_ops() {
        // One new position and several after a cached stretch; odd head width; spare rows
        // past `len` that must be ignored.
        for (n, len, heads, head_dim) in [(1, 1, 1, 4), (1, 9, 3, 6), (4, 11, 2, 10), (5, 5, 3, 2)]
        {
            let (d, capacity) = (heads * head_dim, len + 3);
            let dev = Default::default();
            let t = |v: Vec<f32>, rows: usize| {
                Tensor::<Flex, 2>::from_data(TensorData::new(v, [rows, d]), &dev)
            };
            let (q, k, v) = (
                values(1, n * d),
                values(2, capacity * d),
                values(3, capacity * d),
            );
            let got = cached_attention_kernel(&q, &k, &v, (n, len, d, heads));
            let want = float::<Flex, 2>(reference_cached_attention::<Flex>(
                prim(t(q, n)),
                prim(t(k, capacity)),
                prim(t(v, capacity)),
                len,
                heads,
            ));
            let want = want.into_data().into_vec::<f32>().unwrap();
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "n {n} len {len}: {a} vs {b}");
            }
        }
    }
}
