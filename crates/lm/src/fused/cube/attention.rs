//! Causal attention as CubeCL kernels, FlashAttention-style (Dao et al. 2022; the backward
//! pass of FlashAttention-2, Dao 2023, Algorithm 2): one unit per score row, an online
//! softmax over the keys the row may see, the row's log-sum-exp saved, and the backward pass
//! recomputing each probability from it. Nothing of size `seq²` is stored.
//!
//! Inputs are `[batch, heads, seq, head_dim]` contiguous with RoPE already applied (burn
//! tensor ops, which fusion merges); `head_dim` is a compile-time constant of each kernel.
//! Three kernels: the forward pass, `∂q` (one unit per query row, over keys `0..=i`) and
//! `∂k, ∂v` (one unit per key row, over queries `j..seq`), so no unit writes where another
//! does and no atomics are needed.

use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

/// Units per cube.
const UNITS: u32 = 64;

/// A sentinel below every score (WGSL has no `-inf` literal); `exp(SENTINEL − x)` is 0.
const SENTINEL: f32 = -1.0e30;

/// `Σ_c a[c]·b[offset + c]` over `head_dim` values.
#[cube]
fn dot<F: Float>(a: &Array<F>, b: &Tensor<F>, offset: usize, #[comptime] head_dim: usize) -> F {
    let mut acc = F::new(0.0);
    for c in 0..head_dim {
        acc += a[c] * b[offset + c];
    }
    acc
}

/// Row `offset..offset + head_dim` of `x`, times `scale`, into a register array.
#[cube]
fn load_row<F: Float>(
    x: &Tensor<F>,
    offset: usize,
    scale: F,
    #[comptime] head_dim: usize,
) -> Array<F> {
    let mut row = Array::<F>::new(head_dim);
    for c in 0..head_dim {
        row[c] = x[offset + c] * scale;
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

/// Forward pass: `out[i] = Σ_{j≤i} softmax_j(scale·q_i·k_j)·v_j` and
/// `lse[i] = logsumexp_{j≤i}(scale·q_i·k_j)`, with a running max `m`, a sum `s` and an
/// accumulator rescaled whenever `m` grows.
#[cube(launch)]
fn forward_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<F>,
    seq: u32,
    scale: f32,
    #[comptime] head_dim: usize,
    #[define(F)] _dtype: StorageType,
) {
    let row = ABSOLUTE_POS;
    if row >= lse.len() {
        terminate!();
    }
    let i = row % (seq as usize);
    let first = row - i;
    let qi = load_row::<F>(q, row * head_dim, F::cast_from(scale), head_dim);
    let mut acc = zero_row::<F>(head_dim);
    let mut m = F::new(SENTINEL);
    let mut s = F::new(0.0);
    for j in 0..i + 1 {
        let kj = (first + j) * head_dim;
        let x = dot::<F>(&qi, k, kj, head_dim);
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
        out[row * head_dim + c] = acc[c] / s;
    }
    lse[row] = m + s.ln();
}

/// `∂q_i = scale·Σ_{j≤i} p_ij·(∂o_i·v_j − D_i)·k_j` with `p_ij = exp(scale·q_i·k_j − lse_i)`
/// and `D_i = rowsum(∂o_i ∘ o_i)`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn grad_q_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    lse: &Tensor<F>,
    dout: &Tensor<F>,
    rowsum: &Tensor<F>,
    dq: &mut Tensor<F>,
    seq: u32,
    scale: f32,
    #[comptime] head_dim: usize,
    #[define(F)] _dtype: StorageType,
) {
    let row = ABSOLUTE_POS;
    if row >= lse.len() {
        terminate!();
    }
    let i = row % (seq as usize);
    let first = row - i;
    let scale = F::cast_from(scale);
    let qi = load_row::<F>(q, row * head_dim, scale, head_dim);
    let doi = load_row::<F>(dout, row * head_dim, F::new(1.0), head_dim);
    let mut acc = zero_row::<F>(head_dim);
    let (l, d) = (lse[row], rowsum[row]);
    for j in 0..i + 1 {
        let kj = (first + j) * head_dim;
        let p = (dot::<F>(&qi, k, kj, head_dim) - l).exp();
        let ds = p * (dot::<F>(&doi, v, kj, head_dim) - d);
        for c in 0..head_dim {
            acc[c] += ds * k[kj + c];
        }
    }
    for c in 0..head_dim {
        dq[row * head_dim + c] = acc[c] * scale;
    }
}

/// `∂v_j = Σ_{i≥j} p_ij·∂o_i` and `∂k_j = scale·Σ_{i≥j} p_ij·(∂o_i·v_j − D_i)·q_i`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn grad_kv_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    lse: &Tensor<F>,
    dout: &Tensor<F>,
    rowsum: &Tensor<F>,
    dk: &mut Tensor<F>,
    dv: &mut Tensor<F>,
    seq: u32,
    scale: f32,
    #[comptime] head_dim: usize,
    #[define(F)] _dtype: StorageType,
) {
    let row = ABSOLUTE_POS;
    if row >= lse.len() {
        terminate!();
    }
    let seq = seq as usize;
    let j = row % seq;
    let first = row - j;
    let scale = F::cast_from(scale);
    let kj = load_row::<F>(k, row * head_dim, scale, head_dim);
    let vj = load_row::<F>(v, row * head_dim, F::new(1.0), head_dim);
    let mut dk_acc = zero_row::<F>(head_dim);
    let mut dv_acc = zero_row::<F>(head_dim);
    for i in j..seq {
        let qi = (first + i) * head_dim;
        let p = (dot::<F>(&kj, q, qi, head_dim) - lse[first + i]).exp();
        let ds = p * (dot::<F>(&vj, dout, qi, head_dim) - rowsum[first + i]);
        for c in 0..head_dim {
            dv_acc[c] += p * dout[qi + c];
            dk_acc[c] += ds * q[qi + c];
        }
    }
    for c in 0..head_dim {
        dk[row * head_dim + c] = dk_acc[c] * scale;
        dv[row * head_dim + c] = dv_acc[c];
    }
}

/// An uninitialised contiguous tensor of `shape` with `like`'s device and dtype.
pub(super) fn empty_like<R: CubeRuntime>(like: &CubeTensor<R>, shape: &[usize]) -> CubeTensor<R> {
    empty_device_contiguous_dtype(
        like.client.clone(),
        like.device.clone(),
        shape.into(),
        like.dtype,
    )
}

/// One unit per row: the cube count and size for `rows` rows.
pub(super) fn launch_size<R: CubeRuntime>(
    client: &ComputeClient<R>,
    rows: usize,
) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new_1d(UNITS);
    (
        cubecl::calculate_cube_count_elemwise(client, rows, dim),
        dim,
    )
}

/// The forward pass on `[batch, heads, seq, head_dim]` `q` (rotated), `k` (rotated), `v`:
/// `(out` in the same layout, `lse [batch·heads·seq])`.
pub fn forward<R: CubeRuntime>(
    [q, k, v]: [CubeTensor<R>; 3],
    scale: f64,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let (q, k, v) = (into_contiguous(q), into_contiguous(k), into_contiguous(v));
    let dims = q.meta.shape().to_vec();
    let (seq, head_dim) = (dims[2], dims[3]);
    let rows = dims[0] * dims[1] * seq;
    let out = empty_like(&q, &dims);
    let lse = empty_like(&q, &[rows]);
    let (count, dim) = launch_size(&q.client, rows);
    let dtype = q.dtype;
    forward_kernel::launch::<R>(
        &q.client.clone(),
        count,
        dim,
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        seq as u32,
        scale as f32,
        head_dim,
        dtype.into(),
    );
    (out, lse)
}

/// The backward pass: `(∂q, ∂k, ∂v)` in the `[batch, heads, seq, head_dim]` layout (before
/// RoPE's inverse rotation of `∂q` and `∂k`), from the rotated `q`, `k`, `v`, the saved `lse`,
/// the upstream gradient `dout` and `rowsum(∂O∘O)` (`[batch·heads·seq]` elements each).
pub fn backward<R: CubeRuntime>(
    [q, k, v]: [CubeTensor<R>; 3],
    [lse, dout, rowsum]: [CubeTensor<R>; 3],
    scale: f64,
) -> [CubeTensor<R>; 3] {
    let [q, k, v, lse, dout, rowsum] = [q, k, v, lse, dout, rowsum].map(into_contiguous);
    let dims = q.meta.shape().to_vec();
    let (seq, head_dim) = (dims[2], dims[3]);
    let rows = dims[0] * dims[1] * seq;
    let [dq, dk, dv] = [(); 3].map(|_| empty_like(&q, &dims));
    let (count, dim) = launch_size(&q.client, rows);
    let (client, dtype) = (q.client.clone(), q.dtype);
    grad_q_kernel::launch::<R>(
        &client,
        count.clone(),
        dim,
        q.clone().into_tensor_arg(),
        k.clone().into_tensor_arg(),
        v.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        dout.clone().into_tensor_arg(),
        rowsum.clone().into_tensor_arg(),
        dq.clone().into_tensor_arg(),
        seq as u32,
        scale as f32,
        head_dim,
        dtype.into(),
    );
    grad_kv_kernel::launch::<R>(
        &client,
        count,
        dim,
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        lse.into_tensor_arg(),
        dout.into_tensor_arg(),
        rowsum.into_tensor_arg(),
        dk.clone().into_tensor_arg(),
        dv.clone().into_tensor_arg(),
        seq as u32,
        scale as f32,
        head_dim,
        dtype.into(),
    );
    [dq, dk, dv]
}
