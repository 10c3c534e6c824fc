//! Rotary position embedding (Su et al. 2021) in the Llama / Hugging Face "rotate_half" form.
//!
//! For a head vector `x` of even width `h` at position `p`, with `x₁ = x[..h/2]`,
//! `x₂ = x[h/2..]` and frequencies `f_i = θ^(-2i/h)` (`i < h/2`):
//! `rope(x) = x · cos(p·f) + rotate_half(x) · sin(p·f)`, where `rotate_half(x) = [-x₂, x₁]`
//! and `cos`/`sin` repeat the `h/2` frequencies twice. This is what HF `LlamaRotaryEmbedding`
//! computes, so `q_proj`/`k_proj` weights export without the Meta-to-HF permutation.

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor, TensorData};

/// Precomputed `cos` / `sin` tables, `[max_seq_len, head_dim]` (constants, not parameters).
#[derive(Module, Debug)]
pub struct Rope<B: Backend> {
    /// `cos(p · f_i)` with the frequencies repeated twice along the last dimension.
    pub cos: Tensor<B, 2>,
    /// `sin(p · f_i)`, same layout.
    pub sin: Tensor<B, 2>,
}

impl<B: Backend> Rope<B> {
    /// Tables for positions `0..max_seq_len` and heads of width `head_dim` (even), base `theta`.
    /// Angles are computed in f64, then stored in the device's float type.
    pub fn new(head_dim: usize, max_seq_len: usize, theta: f64, device: &B::Device) -> Self {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(max_seq_len * head_dim);
        let mut sin = Vec::with_capacity(max_seq_len * head_dim);
        for p in 0..max_seq_len {
            for _copy in 0..2 {
                for i in 0..half {
                    let freq = theta.powf(-2.0 * i as f64 / head_dim as f64);
                    let angle = p as f64 * freq;
                    cos.push(angle.cos() as f32);
                    sin.push(angle.sin() as f32);
                }
            }
        }
        let shape = [max_seq_len, head_dim];
        Rope {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin: Tensor::from_data(TensorData::new(sin, shape), device),
        }
    }

    /// The tables for positions `0..seq`: `(cos, sin)`, `[seq, head_dim]` each.
    pub fn tables(&self, seq: usize) -> (Tensor<B, 2>, Tensor<B, 2>) {
        (
            self.cos.clone().narrow(0, 0, seq),
            self.sin.clone().narrow(0, 0, seq),
        )
    }

    /// Rotate `x` of shape `[batch, seq, heads, head_dim]` by the positions `0..seq`.
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let (cos, sin) = self.tables(x.dims()[1]);
        rotate_half(x, cos, sin)
    }
}

/// `x · cos + rotate_half(x) · sin` for `x: [batch, seq, heads, head_dim]` and tables
/// `cos`, `sin: [seq, head_dim]`. With `−sin` this is the inverse (= transposed) rotation.
pub fn rotate_half<B: Backend>(
    x: Tensor<B, 4>,
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
) -> Tensor<B, 4> {
    let [_, seq, _, head_dim] = x.dims();
    let cos = cos.reshape([1, seq, 1, head_dim]);
    let sin = sin.reshape([1, seq, 1, head_dim]);
    let half = head_dim / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos + rotated * sin
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn apply_at(rope: &Rope<Flex>, x: [f32; 4], pos: usize) -> Vec<f32> {
        // One row whose positions 0..=pos all hold x; read back position `pos`.
        let dev = Default::default();
        let rows: Vec<f32> = (0..=pos).flat_map(|_| x).collect();
        let t = Tensor::<Flex, 4>::from_data(TensorData::new(rows, [1, pos + 1, 1, 4]), &dev);
        let out = rope.apply(t).into_data().into_vec::<f32>().unwrap();
        out[pos * 4..].to_vec()
    }

    #[test]
    fn matches_the_hf_rotate_half_formula() {
        let rope = Rope::<Flex>::new(4, 16, 10_000.0, &Default::default());
        let x = [1.0f32, 2.0, 3.0, 4.0];
        for p in [0usize, 1, 7] {
            let (a0, a1) = (p as f64, p as f64 * 0.01); // f_i = 10000^(-2i/4)
            let (c, s) = (
                [a0.cos(), a1.cos(), a0.cos(), a1.cos()],
                [a0.sin(), a1.sin(), a0.sin(), a1.sin()],
            );
            let rot = [-3.0, -4.0, 1.0, 2.0];
            let got = apply_at(&rope, x, p);
            for i in 0..4 {
                let want = x[i] as f64 * c[i] + rot[i] * s[i];
                assert!(
                    (got[i] as f64 - want).abs() < 1e-5,
                    "p={p} i={i}: {} vs {want}",
                    got[i]
                );
            }
        }
    }

    #[test]
    fn dot_products_depend_only_on_relative_position() {
        let rope = Rope::<Flex>::new(4, 32, 100.0, &Default::default());
        let (q, k) = ([0.3f32, -1.0, 0.5, 2.0], [1.5f32, 0.2, -0.7, 0.4]);
        let dot = |pq: usize, pk: usize| -> f32 {
            apply_at(&rope, q, pq)
                .iter()
                .zip(apply_at(&rope, k, pk))
                .map(|(a, b)| a * b)
                .sum()
        };
        assert!((dot(5, 2) - dot(20, 17)).abs() < 1e-4);
        assert!((dot(5, 2) - dot(5, 4)).abs() > 1e-3);
    }
}
