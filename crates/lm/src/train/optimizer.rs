//! AdamW with decoupled weight decay (Loshchilov & Hutter 2019), PyTorch semantics.
//!
//! Written out here rather than using `burn::optim::AdamW` so that (a) weight decay applies to
//! matrices only (rank ≥ 2: embedding, projections, untied head) and not to norm gains, the
//! usual GPT/Llama choice; (b) the state is keyed by parameter *name*, so it saves to and loads
//! from a safetensors file next to the weights and survives a restart (burn keys it by random
//! `ParamId`s); (c) the step count is one global number. The update, for gradient `g` at step
//! `t` (from 1):
//!
//! ```text
//! m ← β1·m + (1−β1)·g          v ← β2·v + (1−β2)·g²
//! p ← p·(1 − lr·wd) − lr · (m / (1−β1ᵗ)) / (sqrt(v / (1−β2ᵗ)) + ε)
//! ```
//!
//! State lives on the inner (non-autodiff) backend, in its float type (f32 on CPU).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::{AutodiffModule, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::tensor::{backend::AutodiffBackend, Tensor};

use crate::error::{LmError, Result};
use crate::weights::{read_safetensors, write_safetensors, HostTensor};

/// First and second moments of one parameter, flattened.
#[derive(Debug, Clone)]
struct Moments<B: AutodiffBackend> {
    exp_avg: Tensor<B::InnerBackend, 1>,
    exp_avg_sq: Tensor<B::InnerBackend, 1>,
}

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay for matrices.
    pub weight_decay: f64,
}

/// AdamW state for one model: step count and per-parameter moments, by parameter name.
#[derive(Debug, Clone)]
pub struct AdamW<B: AutodiffBackend> {
    config: AdamWConfig,
    step: u64,
    state: HashMap<String, Moments<B>>,
}

impl<B: AutodiffBackend> AdamW<B> {
    /// A fresh optimizer (no state yet; moments start at zero).
    pub fn new(config: AdamWConfig) -> Self {
        AdamW {
            config,
            step: 0,
            state: HashMap::new(),
        }
    }

    /// Updates applied so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// One update of every parameter of `module` that has a gradient in `grads`.
    pub fn step<M: AutodiffModule<B>>(
        &mut self,
        lr: f64,
        module: M,
        mut grads: GradientsParams,
    ) -> M {
        self.step += 1;
        let mut mapper = Update {
            optim: self,
            grads: &mut grads,
            lr,
            path: Vec::new(),
        };
        module.map(&mut mapper)
    }

    /// The state as named host tensors: `exp_avg.<param>` and `exp_avg_sq.<param>` (flat).
    pub fn state_tensors(&self) -> Vec<(String, HostTensor)> {
        let sorted: BTreeMap<_, _> = self.state.iter().collect();
        let mut out = Vec::with_capacity(2 * sorted.len());
        for (name, m) in sorted {
            out.push((
                format!("exp_avg.{name}"),
                HostTensor::from_tensor(m.exp_avg.clone()),
            ));
            out.push((
                format!("exp_avg_sq.{name}"),
                HostTensor::from_tensor(m.exp_avg_sq.clone()),
            ));
        }
        out
    }

    /// Save the state (atomically) as a safetensors file; the step count goes in the metadata.
    pub fn save(&self, path: &Path) -> Result<()> {
        let metadata = BTreeMap::from([("step".to_string(), self.step.to_string())]);
        write_safetensors(path, &self.state_tensors(), metadata)
    }

    /// Load state saved by [`save`](Self::save) for `module`: every entry must name one of the
    /// module's parameters and have its number of elements. Parameters without state (never
    /// updated) are fine.
    pub fn load<M: AutodiffModule<B>>(
        config: AdamWConfig,
        path: &Path,
        module: &M,
    ) -> Result<Self> {
        let (mut tensors, metadata) = read_safetensors(path)?;
        let step = metadata
            .get("step")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| LmError::CorruptFile {
                path: path.into(),
                message: "missing or invalid `step` metadata".into(),
            })?;
        let device = module
            .devices()
            .into_iter()
            .next()
            .expect("module has a device");
        let params = crate::weights::collect_named(&module.valid());
        let mut state = HashMap::new();
        for (name, p) in params {
            let numel = p.values.len();
            let mut take = |kind: &str| -> Result<Option<Tensor<B::InnerBackend, 1>>> {
                let key = format!("{kind}.{name}");
                match tensors.remove(&key) {
                    None => Ok(None),
                    Some(t) if t.values.len() != numel => Err(LmError::ShapeMismatch {
                        path: path.into(),
                        name: key,
                        expected: vec![numel],
                        found: t.shape,
                    }),
                    Some(t) => Ok(Some(Tensor::from_data(
                        burn::tensor::TensorData::new(t.values, [numel]),
                        &device,
                    ))),
                }
            };
            match (take("exp_avg")?, take("exp_avg_sq")?) {
                (Some(exp_avg), Some(exp_avg_sq)) => {
                    state.insert(
                        name,
                        Moments {
                            exp_avg,
                            exp_avg_sq,
                        },
                    );
                }
                (None, None) => {}
                _ => {
                    return Err(LmError::MissingTensor {
                        path: path.into(),
                        name: format!("exp_avg*.{name}"),
                    })
                }
            }
        }
        if let Some(name) = tensors.keys().next() {
            return Err(LmError::UnexpectedTensor {
                path: path.into(),
                name: name.clone(),
            });
        }
        Ok(AdamW {
            config,
            step,
            state,
        })
    }
}

/// The module mapper that applies one AdamW update per parameter.
struct Update<'a, B: AutodiffBackend> {
    optim: &'a mut AdamW<B>,
    grads: &'a mut GradientsParams,
    lr: f64,
    path: Vec<String>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Update<'_, B> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<B::InnerBackend, D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let c = self.optim.config;
        let t = self.optim.step as i32;
        let shape = tensor.shape();
        let n = shape.num_elements();
        let g = grad.reshape([n]);
        let name = self.path.join(".");
        let (exp_avg, exp_avg_sq) = match self.optim.state.remove(&name) {
            Some(m) => (m.exp_avg, m.exp_avg_sq),
            None => (g.zeros_like(), g.zeros_like()),
        };
        let exp_avg = exp_avg.mul_scalar(c.beta1) + g.clone().mul_scalar(1.0 - c.beta1);
        let exp_avg_sq = exp_avg_sq.mul_scalar(c.beta2) + g.square().mul_scalar(1.0 - c.beta2);
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2 = 1.0 - c.beta2.powi(t);
        let denom = exp_avg_sq
            .clone()
            .div_scalar(bias2)
            .sqrt()
            .add_scalar(c.eps);
        let update = exp_avg.clone().div_scalar(bias1) / denom;
        let decay = if D >= 2 { c.weight_decay } else { 0.0 };
        let p = tensor.inner().reshape([n]);
        let p = if decay > 0.0 {
            p.mul_scalar(1.0 - self.lr * decay)
        } else {
            p
        };
        let p = (p - update.mul_scalar(self.lr)).reshape(shape);
        self.optim.state.insert(
            name,
            Moments {
                exp_avg,
                exp_avg_sq,
            },
        );
        Param::from_mapped_value(id, Tensor::from_inner(p).require_grad(), mapper)
    }
}
