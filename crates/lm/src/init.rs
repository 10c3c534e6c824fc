//! Deterministic parameter initialisation.
//!
//! Every parameter draws from its own random stream, keyed by the model seed and the
//! parameter's name (`layers.3.mlp.up_proj.weight`), so init does not depend on construction
//! order, on the backend, or on burn's global RNG.

use burn::module::Param;
use burn::tensor::{backend::Backend, Tensor, TensorData};

use crate::rng::SplitMix64;

/// How a model's parameters are filled at construction.
#[derive(Debug, Clone, Copy)]
pub struct Init {
    /// Model seed.
    pub seed: u64,
    /// `false` fills everything with zeros (cheap; used before loading weights from a file).
    pub random: bool,
}

impl Init {
    /// A parameter of the given shape drawn from N(0, std²) on the stream of `name`.
    pub fn normal<B: Backend, const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        std: f64,
        device: &B::Device,
    ) -> Param<Tensor<B, D>> {
        if !self.random {
            return Param::from_tensor(Tensor::zeros(shape, device));
        }
        let n = shape.iter().product();
        let mut values = vec![0f32; n];
        SplitMix64::for_stream(self.seed, name).fill_normal(&mut values, std);
        Param::from_data(TensorData::new(values, shape), device)
    }

    /// A parameter filled with ones (norm gains).
    pub fn ones<B: Backend, const D: usize>(
        &self,
        shape: [usize; D],
        device: &B::Device,
    ) -> Param<Tensor<B, D>> {
        Param::from_tensor(Tensor::ones(shape, device))
    }
}
