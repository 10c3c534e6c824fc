//! Causal attention with RoPE as CubeCL kernels, FlashAttention-style (Dao et al. 2022; the
//! backward pass of FlashAttention-2, Dao 2023, Algorithm 2): one unit per score row, an
//! online softmax over the keys the row may see, the row's log-sum-exp saved, and the backward
//! pass recomputing each probability from it. Nothing of size `seq²` is stored.
//!
//! The kernels read the projections in the model's `[batch·seq, heads·head_dim]` layout and
//! rotate queries and keys by RoPE as they load them (`x·cos + rotate_half(x)·sin`, Su et al.
//! 2021, with `rotate_half(x) = [−x₂, x₁]`); the gradients leave through the transposed
//! rotation. `head_dim` is a compile-time constant of each kernel. Three kernels: the forward
//! pass, `∂q` (one unit per query row, over keys `0..=i`) and `∂k, ∂v` (one unit per key row,
//! over queries `j..seq`), so no unit writes where another does and no atomics are needed.

use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

use super::{empty_like, launch_size, SENTINEL};
use crate::fused::AttentionShape;

/// Element `c` of row `x[offset..offset + head_dim]` rotated by RoPE at position `pos`.
#[cube]
fn rotated<F: Float>(
    x: &Tensor<F>,
    offset: usize,
    cos: &Tensor<F>,
    sin: &Tensor<F>,
    pos: usize,
    c: usize,
    #[comptime] head_dim: usize,
) -> F {
    let half = head_dim / 2;
    let mut other = F::new(0.0);
    if c < half {
        other -= x[offset + c + half];
    } else {
        other = x[offset + c - half];
    }
    let t = pos * head_dim + c;
    x[offset + c] * cos[t] + other * sin[t]
}

/// Row `x[offset..]` rotated at `pos` and times `scale`, into a register array.
#[cube]
fn load_rotated<F: Float>(
    x: &Tensor<F>,
    offset: usize,
    cos: &Tensor<F>,
    sin: &Tensor<F>,
    pos: usize,
    scale: F,
    #[comptime] head_dim: usize,
) -> Array<F> {
    let mut row = Array::<F>::new(head_dim);
    for c in 0..head_dim {
        row[c] = rotated::<F>(x, offset, cos, sin, pos, c, head_dim) * scale;
    }
    row
}

/// Row `x[offset..]` into a register array.
#[cube]
fn load_row<F: Float>(x: &Tensor<F>, offset: usize, #[comptime] head_dim: usize) -> Array<F> {
    let mut row = Array::<F>::new(head_dim);
    for c in 0..head_dim {
        row[c] = x[offset + c];
    }
    row
}

/// A zeroed register array of `head_dim` values.
#[cube]
fn zero_row<F: Float>(#[comptime] head_dim: usize) -> Array<F> {
    let mut row = Array::<F>::new(head_dim);
    for c in 0..head_dim {
        row[c] = F::new(0.0);
    }
    row
}

/// `Σ_c a[c]·x[offset + c]`.
#[cube]
fn dot<F: Float>(a: &Array<F>, x: &Tensor<F>, offset: usize, #[comptime] head_dim: usize) -> F {
    let mut acc = F::new(0.0);
    for c in 0..head_dim {
        acc += a[c] * x[offset + c];
    }
    acc
}

/// `Σ_c a[c]·(RoPE_pos x)[c]` for row `x[offset..]`.
#[cube]
fn dot_rotated<F: Float>(
    a: &Array<F>,
    x: &Tensor<F>,
    offset: usize,
    cos: &Tensor<F>,
    sin: &Tensor<F>,
    pos: usize,
    #[comptime] head_dim: usize,
) -> F {
    let mut acc = F::new(0.0);
    for c in 0..head_dim {
        acc += a[c] * rotated::<F>(x, offset, cos, sin, pos, c, head_dim);
    }
    acc
}

/// `out[offset..] = scale·RoPE_posᵀ g`: a gradient taken back through the rotation.
#[cube]
#[allow(clippy::too_many_arguments)]
fn store_unrotated<F: Float>(
    g: &Array<F>,
    out: &mut Tensor<F>,
    offset: usize,
    cos: &Tensor<F>,
    sin: &Tensor<F>,
    pos: usize,
    scale: F,
    #[comptime] head_dim: usize,
) {
    let half = head_dim / 2;
    let t = pos * head_dim;
    for c in 0..head_dim {
        let mut v = g[c] * cos[t + c];
        if c < half {
            v += g[c + half] * sin[t + c + half];
        } else {
            v -= g[c - half] * sin[t + c - half];
        }
        out[offset + c] = v * scale;
    }
}

/// Where score row `row` (ordered batch, head, position) reads and writes: `(position,
/// offset of (batch, position 0, head) in the [N, d] layout, stride between positions)`.
#[cube]
fn row_place(
    row: usize,
    seq: usize,
    heads: usize,
    #[comptime] head_dim: usize,
) -> (usize, usize, usize) {
    let i = row % seq;
    let bh = row / seq;
    let (b, h) = (bh / heads, bh % heads);
    let stride = heads * head_dim;
    (i, b * seq * stride + h * head_dim, stride)
}

/// Forward pass: `out[i] = Σ_{j≤i} softmax_j(scale·q̃_i·k̃_j)·v_j` and
/// `lse[i] = logsumexp_{j≤i}(scale·q̃_i·k̃_j)` (`q̃`, `k̃`: rotated), with a running max `m`, a
/// sum `s` and an accumulator rescaled whenever `m` grows.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn forward_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    cos: &Tensor<F>,
    sin: &Tensor<F>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<F>,
    seq: u32,
    heads: u32,
    scale: f32,
    #[comptime] head_dim: usize,
    #[define(F)] _dtype: StorageType,
) {
    let row = ABSOLUTE_POS;
    if row >= lse.len() {
        terminate!();
    }
    let (i, base, stride) = row_place(row, seq as usize, heads as usize, head_dim);
    let qi = load_rotated::<F>(
        q,
        base + i * stride,
        cos,
        sin,
        i,
        F::cast_from(scale),
        head_dim,
    );
    let mut acc = zero_row::<F>(head_dim);
    let mut m = F::new(SENTINEL);
    let mut s = F::new(0.0);
    for j in 0..i + 1 {
        let kj = base + j * stride;
        let x = dot_rotated::<F>(&qi, k, kj, cos, sin, j, head_dim);
        let m_new = max(m, x);
        let rescale = (m - m_new).exp();
        let p = (x - m_new).exp();
        s = s * rescale + p;
        for c in 0..head_dim {
            acc[c] = acc[c] * rescale + p * v[kj + c];
        }
        m = m_new;
    }
    for c in 0..head_dim {
        out[base + i * stride + c] = acc[c] / s;
    }
    lse[row] = m + s.ln();
}

/// `∂q_i = scale·R_iᵀ Σ_{j≤i} p_ij·(∂o_i·v_j − D_i)·k̃_j` with
/// `p_ij = exp(scale·q̃_i·k̃_j − lse_i)` and `D_i = rowsum(∂o_i ∘ o_i)` (`rowsum` ordered
/// batch, position, head).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn grad_q_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    cos: &Tensor<F>,
    sin: &Tensor<F>,
    lse: &Tensor<F>,
    dout: &Tensor<F>,
    rowsum: &Tensor<F>,
    dq: &mut Tensor<F>,
    seq: u32,
    heads: u32,
    scale: f32,
    #[comptime] head_dim: usize,
    #[define(F)] _dtype: StorageType,
) {
    let row = ABSOLUTE_POS;
    if row >= lse.len() {
        terminate!();
    }
    let (i, base, stride) = row_place(row, seq as usize, heads as usize, head_dim);
    let scale = F::cast_from(scale);
    let qi = load_rotated::<F>(q, base + i * stride, cos, sin, i, scale, head_dim);
    let doi = load_row::<F>(dout, base + i * stride, head_dim);
    let mut acc = zero_row::<F>(head_dim);
    let l = lse[row];
    let d = rowsum[(base + i * stride) / head_dim];
    for j in 0..i + 1 {
        let kj = base + j * stride;
        let p = (dot_rotated::<F>(&qi, k, kj, cos, sin, j, head_dim) - l).exp();
        let ds = p * (dot::<F>(&doi, v, kj, head_dim) - d);
        for c in 0..head_dim {
            acc[c] += ds * rotated::<F>(k, kj, cos, sin, j, c, head_dim);
        }
    }
    store_unrotated::<F>(&acc, dq, base + i * stride, cos, sin, i, scale, head_dim);
}

/// `∂v_j = Σ_{i≥j} p_ij·∂o_i` and `∂k_j = scale·R_jᵀ Σ_{i≥j} p_ij·(∂o_i·v_j − D_i)·q̃_i`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn grad_kv_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    cos: &Tensor<F>,
    sin: &Tensor<F>,
    lse: &Tensor<F>,
    dout: &Tensor<F>,
    rowsum: &Tensor<F>,
    dk: &mut Tensor<F>,
    dv: &mut Tensor<F>,
    seq: u32,
    heads: u32,
    scale: f32,
    #[comptime] head_dim: usize,
    #[define(F)] _dtype: StorageType,
) {
    let row = ABSOLUTE_POS;
    if row >= lse.len() {
        terminate!();
    }
    let seq = seq as usize;
    let (j, base, stride) = row_place(row, seq, heads as usize, head_dim);
    let first = row - j;
    let scale = F::cast_from(scale);
    let kj = load_rotated::<F>(k, base + j * stride, cos, sin, j, scale, head_dim);
    let vj = load_row::<F>(v, base + j * stride, head_dim);
    let mut dk_acc = zero_row::<F>(head_dim);
    let mut dv_acc = zero_row::<F>(head_dim);
    for i in j..seq {
        let qi = base + i * stride;
        let p = (dot_rotated::<F>(&kj, q, qi, cos, sin, i, head_dim) - lse[first + i]).exp();
        let ds = p * (dot::<F>(&vj, dout, qi, head_dim) - rowsum[qi / head_dim]);
        for c in 0..head_dim {
            dv_acc[c] += p * dout[qi + c];
            dk_acc[c] += ds * rotated::<F>(q, qi, cos, sin, i, c, head_dim);
        }
    }
    store_unrotated::<F>(&dk_acc, dk, base + j * stride, cos, sin, j, scale, head_dim);
    for c in 0..head_dim {
        dv[base + j * stride + c] = dv_acc[c];
    }
}

/// The forward pass on the `[N, d]` projections `q`, `k`, `v` and the `[seq, head_dim]` RoPE
/// tables: `(out [N, d], lse [batch·heads·seq])`.
pub fn forward<R: CubeRuntime>(
    qkv: [CubeTensor<R>; 3],
    rope: [CubeTensor<R>; 2],
    s: AttentionShape,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let [q, k, v] = qkv.map(into_contiguous);
    let [cos, sin] = rope.map(into_contiguous);
    let out = empty_like(&q, &[s.rows(), s.width()]);
    let lse = empty_like(&q, &[s.batch * s.heads * s.seq]);
    let (count, dim) = launch_size(&q.client, s.batch * s.heads * s.seq);
    let (client, dtype) = (q.client.clone(), q.dtype);
    forward_kernel::launch::<R>(
        &client,
        count,
        dim,
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        cos.into_tensor_arg(),
        sin.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        s.seq as u32,
        s.heads as u32,
        s.scale() as f32,
        s.head_dim,
        dtype.into(),
    );
    (out, lse)
}

/// The backward pass: `(∂q, ∂k, ∂v)`, `[N, d]` each, from the projections, the RoPE tables,
/// the saved `lse`, the upstream gradient `dout: [N, d]` and `rowsum(∂O∘O)` (`[N·heads]`,
/// ordered batch, position, head).
pub fn backward<R: CubeRuntime>(
    qkv: [CubeTensor<R>; 3],
    rope: [CubeTensor<R>; 2],
    [lse, dout, rowsum]: [CubeTensor<R>; 3],
    s: AttentionShape,
) -> [CubeTensor<R>; 3] {
    let [q, k, v] = qkv.map(into_contiguous);
    let [cos, sin] = rope.map(into_contiguous);
    let [lse, dout, rowsum] = [lse, dout, rowsum].map(into_contiguous);
    let [dq, dk, dv] = [(); 3].map(|_| empty_like(&q, &[s.rows(), s.width()]));
    let (count, dim) = launch_size(&q.client, s.batch * s.heads * s.seq);
    let (client, dtype) = (q.client.clone(), q.dtype);
    grad_q_kernel::launch::<R>(
        &client,
        count.clone(),
        dim,
        q.clone().into_tensor_arg(),
        k.clone().into_tensor_arg(),
        v.clone().into_tensor_arg(),
        cos.clone().into_tensor_arg(),
        sin.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        dout.clone().into_tensor_arg(),
        rowsum.clone().into_tensor_arg(),
        dq.clone().into_tensor_arg(),
        s.seq as u32,
        s.heads as u32,
        s.scale() as f32,
        s.head_dim,
        dtype.into(),
    );
    grad_kv_kernel::launch::<R>(
        &client,
        count,
        dim,
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        cos.into_tensor_arg(),
        sin.into_tensor_arg(),
        lse.into_tensor_arg(),
        dout.into_tensor_arg(),
        rowsum.into_tensor_arg(),
        dk.clone().into_tensor_arg(),
        dv.clone().into_tensor_arg(),
        s.seq as u32,
        s.heads as u32,
        s.scale() as f32,
        s.head_dim,
        dtype.into(),
    );
    [dq, dk, dv]
}
