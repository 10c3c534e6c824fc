//! Named weights and their safetensors files.
//!
//! A model's parameters are addressed by their module path (`layers.0.self_attn.q_proj.weight`,
//! see [`crate::model`] for the full table). Files are plain safetensors, all tensors `F32`
//! little-endian, plus metadata: the model config as JSON under [`CONFIG_KEY`] and an xxh3
//! checksum of every tensor's bytes under `xxh3.<name>`, so bit flips in the data (which the
//! safetensors header cannot see) are caught on load. Files without checksums (written by other
//! tools) load without that check. Writes are atomic (`smalltalk_stage::atomic`) and
//! byte-reproducible: equal weights give byte-equal files (sorted header keys).

mod file;

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Tensor, TensorData};

use crate::config::LmConfig;
use crate::error::{LmError, Result};
use crate::model::Lm;

pub(crate) use file::{read_safetensors, write_bytes, write_safetensors};

/// Metadata key holding the model config (JSON) in a weights file.
pub const CONFIG_KEY: &str = "smalltalk_lm.config";

/// A tensor copied to host memory: row-major `f32` values and a shape.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Values in row-major order.
    pub values: Vec<f32>,
}

impl HostTensor {
    /// Copy a burn tensor to the host (converting to f32).
    pub fn from_tensor<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Self {
        let data = tensor.into_data().convert::<f32>();
        let shape = data.shape.to_vec();
        let values = data.into_vec::<f32>().expect("converted to f32");
        HostTensor { shape, values }
    }

    /// Upload to `device` in the float dtype of `like`.
    pub fn to_tensor<B: Backend, const D: usize>(self, like: &Tensor<B, D>) -> Tensor<B, D> {
        let data = TensorData::new(self.values, self.shape);
        Tensor::from_data(data, (&like.device(), like.dtype()))
    }
}

/// Collects `(path, tensor)` for every float parameter of a module.
struct Collect {
    path: Vec<String>,
    out: Vec<(String, HostTensor)>,
}

impl<B: Backend> ModuleVisitor<B> for Collect {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.out
            .push((self.path.join("."), HostTensor::from_tensor(param.val())));
    }
}

/// Replaces every float parameter by the tensor of the same name, checking shapes. The first
/// problem is kept in `error` (a mapper cannot return errors).
struct Apply<'a> {
    path: Vec<String>,
    file: &'a Path,
    tensors: BTreeMap<String, HostTensor>,
    error: Option<LmError>,
}

impl<B: Backend> ModuleMapper<B> for Apply<'_> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let name = self.path.join(".");
        let (id, tensor, mapper) = param.consume();
        let expected = tensor.dims().to_vec();
        let loaded = match self.tensors.remove(&name) {
            None => Err(LmError::MissingTensor {
                path: self.file.into(),
                name,
            }),
            Some(t) if t.shape != expected => Err(LmError::ShapeMismatch {
                path: self.file.into(),
                name,
                expected,
                found: t.shape,
            }),
            Some(t) => Ok(t),
        };
        let tensor = match loaded {
            Ok(t) => {
                let grad = tensor.is_require_grad();
                let new = t.to_tensor(&tensor);
                if grad {
                    new.require_grad()
                } else {
                    new
                }
            }
            Err(e) => {
                self.error.get_or_insert(e);
                tensor
            }
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// Overwrite a module's parameters with named tensors; every parameter must be present with
/// its exact shape and no tensor may be left over. `file` is only used in error messages.
pub(crate) fn apply_named<B: Backend, M: Module<B>>(
    module: M,
    tensors: BTreeMap<String, HostTensor>,
    file: &Path,
) -> Result<M> {
    let mut apply = Apply {
        path: Vec::new(),
        file,
        tensors,
        error: None,
    };
    let module = module.map(&mut apply);
    if let Some(e) = apply.error {
        return Err(e);
    }
    if let Some(name) = apply.tensors.keys().next() {
        return Err(LmError::UnexpectedTensor {
            path: file.into(),
            name: name.clone(),
        });
    }
    Ok(module)
}

/// `(path, tensor)` of every float parameter of a module, in visiting order.
pub(crate) fn collect_named<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, HostTensor)> {
    let mut collect = Collect {
        path: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut collect);
    collect.out
}

impl<B: Backend> Lm<B> {
    /// Every parameter, copied to host memory, named by module path (see [`crate::model`]).
    pub fn named_tensors(&self) -> Vec<(String, HostTensor)> {
        collect_named(self)
    }

    /// Save the weights as a safetensors file (atomically), with the config in its metadata.
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let config = serde_json::to_string(&self.config).map_err(|e| LmError::Json {
            path: path.into(),
            source: e,
        })?;
        let metadata = BTreeMap::from([(CONFIG_KEY.to_string(), config)]);
        write_safetensors(path, &self.named_tensors(), metadata)
    }

    /// Replace this model's weights by those of a safetensors file. Fails, naming the file and
    /// tensor, on a missing, extra or wrongly shaped tensor, a checksum mismatch, a corrupt
    /// file, or a config in the file's metadata that differs from this model's.
    pub fn load_safetensors(self, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (tensors, metadata) = read_safetensors(path)?;
        if let Some(json) = metadata.get(CONFIG_KEY) {
            let saved: LmConfig = serde_json::from_str(json).map_err(|e| LmError::Json {
                path: path.into(),
                source: e,
            })?;
            if saved != self.config {
                return Err(LmError::CheckpointMismatch {
                    path: path.into(),
                    message: format!(
                        "weights were saved for model config {saved:?}, not {:?}",
                        self.config
                    ),
                });
            }
        }
        apply_named(self, tensors, path)
    }

    /// Build a model of `config` on `device` from a safetensors file (see
    /// [`load_safetensors`](Self::load_safetensors)).
    pub fn from_safetensors(
        config: &LmConfig,
        path: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<Self> {
        Lm::zeros(config, device)?.load_safetensors(path)
    }

    /// Read the model config stored in a weights file's metadata.
    /// Only the header is read.
    pub fn config_of_file(path: impl AsRef<Path>) -> Result<LmConfig> {
        use std::io::Read;
        let path = path.as_ref();
        let corrupt = |message: String| LmError::CorruptFile {
            path: path.into(),
            message,
        };
        let mut file = std::fs::File::open(path).map_err(|e| LmError::io(path, e))?;
        let mut len = [0u8; 8];
        file.read_exact(&mut len)
            .map_err(|e| corrupt(format!("cannot read the header length: {e}")))?;
        let len = u64::from_le_bytes(len);
        if len > 100_000_000 {
            return Err(corrupt(format!("header length {len} is implausible")));
        }
        let mut header = vec![0u8; len as usize];
        file.read_exact(&mut header)
            .map_err(|e| corrupt(format!("cannot read the header: {e}")))?;
        let header: serde_json::Value = serde_json::from_slice(&header)
            .map_err(|e| corrupt(format!("invalid JSON header: {e}")))?;
        let json = header
            .get("__metadata__")
            .and_then(|m| m.get(CONFIG_KEY))
            .and_then(|c| c.as_str())
            .ok_or_else(|| {
                corrupt(format!(
                    "no `{CONFIG_KEY}` metadata (not written by smalltalk-lm)"
                ))
            })?;
        serde_json::from_str(json).map_err(|e| LmError::Json {
            path: path.into(),
            source: e,
        })
    }
}
