//! Mixed precision: parameters stay in their own dtype (f32 master weights), matrix products
//! run in a lower compute dtype, as `torch.autocast` does.
//!
//! With [`Precision::Bf16`] every `Linear` (and the LM head) casts its input and its weight to
//! bf16, so projections, attention and the MLP run in bf16, while the residual stream, the
//! RMSNorms and the loss stay in the parameters' dtype. Casts are autodiff ops, so gradients
//! reach the f32 parameters in f32 and the optimizer state stays f32 (the paper's recipe:
//! bf16 compute, fp32 master weights). [`Precision::Full`] computes in the parameters' dtype.

use burn::tensor::{backend::Backend, DType, FloatDType, Tensor};
use serde::{Deserialize, Serialize};

/// The compute dtype of the matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Compute in the parameters' dtype (f32 on CPU; f64 in the gradient checks).
    #[default]
    #[serde(alias = "f32")]
    #[cfg_attr(feature = "clap", value(alias = "f32"))]
    Full,
    /// bf16 matrix products and attention over f32 parameters (GPU training).
    Bf16,
}

impl Precision {
    /// `x` in the compute dtype (no-op for [`Precision::Full`] or when already there).
    pub fn compute<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Precision::Full => x,
            Precision::Bf16 => cast_to(x, FloatDType::BF16),
        }
    }

    /// Name as written in configs and reports (`full`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            Precision::Full => "full",
            Precision::Bf16 => "bf16",
        }
    }
}

/// `x` cast to `dtype` unless it already has it (no autodiff node then).
pub fn cast_to<B: Backend, const D: usize>(x: Tensor<B, D>, dtype: FloatDType) -> Tensor<B, D> {
    if x.dtype() == DType::from(dtype) {
        x
    } else {
        x.cast(dtype)
    }
}

/// `x` in the dtype of `like` (results of a low-precision branch rejoining the residual).
pub fn cast_like<B: Backend, const D: usize, const E: usize>(
    x: Tensor<B, D>,
    like: &Tensor<B, E>,
) -> Tensor<B, D> {
    match like.dtype() {
        DType::F64 => cast_to(x, FloatDType::F64),
        DType::F32 => cast_to(x, FloatDType::F32),
        DType::F16 => cast_to(x, FloatDType::F16),
        DType::BF16 => cast_to(x, FloatDType::BF16),
        other => panic!("not a float dtype: {other:?}"),
    }
}

/// Half-precision `x` (bf16, f16) upcast to f32 for a numerically sensitive reduction (the
/// loss); other dtypes unchanged.
pub fn upcast_half<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    match x.dtype() {
        DType::BF16 | DType::F16 => x.cast(FloatDType::F32),
        _ => x,
    }
}
