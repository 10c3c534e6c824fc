//! Gradient clipping by the *global* L2 norm (PyTorch's `clip_grad_norm_`).
//!
//! burn's `GradientClippingConfig::Norm` clips each parameter tensor by its own norm,
//! which is not what the paper's "max norm 0.1" means. Here the norm is taken
//! over all gradients together, and all of them are scaled by the same factor.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{backend::AutodiffBackend, Tensor};

/// Sums the squares of every gradient into one scalar tensor.
struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            // Row sums first, then the sum of the row sums: flex sums a flat tensor of ≥ 4M
            // elements with rayon in an order that can vary between runs, which would break
            // bit-identical resumes; row-wise reductions are deterministic.
            let dims = g.dims();
            let last = dims[D - 1].max(1);
            let rows = dims.iter().product::<usize>() / last;
            let s = g.square().reshape([rows, last]).sum_dim(1).sum();
            self.total = Some(match self.total.take() {
                Some(t) => t + s,
                None => s,
            });
        }
    }
}

/// Multiplies every gradient by `factor`.
struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads
                .register::<B::InnerBackend, D>(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// The global L2 norm `sqrt(Σ_p ‖g_p‖²)` of the gradients of `module`'s parameters (one device
/// sync). Squares are summed in the gradients' float type.
pub fn global_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> f64 {
    let mut visitor = SquaredNorm::<B> { grads, total: None };
    module.visit(&mut visitor);
    visitor.total.map_or(0.0, |t| {
        let sq: f64 = t.into_scalar().elem();
        sq.sqrt()
    })
}

/// Clip the gradients in place so that their global norm is at most `max_norm`, scaling all
/// of them by `max_norm / (norm + 1e-6)` when the norm is larger (PyTorch's formula). Returns
/// the norm *before* clipping (log it). A non-finite norm is returned as is, with nothing
/// scaled.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let norm = global_grad_norm(module, grads);
    if norm.is_finite() && norm > max_norm {
        module.visit(&mut Scale {
            grads,
            factor: max_norm / (norm + 1e-6),
        });
    }
    norm
}

use burn::tensor::ElementConversion as _;
