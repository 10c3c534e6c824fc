//! Choosing a burn backend at run time among the ones compiled in.
//!
//! Model code is generic over `B: Backend`; only the binary picks a concrete type. This module
//! names the choices (`flex`, `cuda`, `wgpu`), knows which were compiled in (cargo features of
//! this crate, forwarded by the `cli` crate), and refuses a missing one with a message that names
//! the feature to enable.

use std::fmt;
use std::str::FromStr;

/// A burn backend SmallTalk can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// burn-flex: pure-Rust CPU backend (the default).
    Flex,
    /// CUDA through CubeCL (NVIDIA GPUs; f32 tensors, bf16 compute with `Precision::Bf16`).
    Cuda,
    /// wgpu (Vulkan / Metal / DX12 GPUs).
    Wgpu,
}

/// Errors of backend selection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackendError {
    /// The name is not a backend SmallTalk knows.
    #[error("unknown backend `{0}`: expected one of flex, cuda, wgpu")]
    Unknown(String),
    /// The backend exists but this binary was built without it.
    #[error(
        "backend `{kind}` is not compiled into this binary; rebuild with `--features {kind}` \
         (for example `cargo build --release -p smalltalk-cli --features {kind}`); compiled in: {compiled}"
    )]
    NotCompiled {
        /// The backend that was asked for.
        kind: BackendKind,
        /// Comma-separated list of the backends that are available.
        compiled: String,
    },
    /// The wgpu backend is compiled in but finds no device to run on.
    #[error(
        "backend `wgpu` found no usable GPU adapter (cubecl: {0}): install a Vulkan driver for this \
         machine's GPU, or on a machine without one Mesa's lavapipe (Debian: \
         `apt-get install mesa-vulkan-drivers libvulkan1`), or use `--backend flex`"
    )]
    NoWgpuAdapter(String),
}

impl BackendKind {
    /// Every backend SmallTalk knows, compiled in or not.
    pub const ALL: [BackendKind; 3] = [BackendKind::Flex, BackendKind::Cuda, BackendKind::Wgpu];

    /// The backend's name, which is also the cargo feature that compiles it in.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Flex => "flex",
            BackendKind::Cuda => "cuda",
            BackendKind::Wgpu => "wgpu",
        }
    }

    /// Whether this binary was built with the backend's feature.
    pub fn is_compiled(self) -> bool {
        match self {
            BackendKind::Flex => cfg!(feature = "flex"),
            BackendKind::Cuda => cfg!(feature = "cuda"),
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
        }
    }

    /// The backends compiled into this binary, in preference order (CPU first).
    pub fn compiled() -> Vec<BackendKind> {
        Self::ALL.into_iter().filter(|k| k.is_compiled()).collect()
    }

    /// The compiled-in backends' names, comma-separated (`none` when there is none).
    pub fn compiled_names() -> String {
        let compiled: Vec<&str> = Self::compiled().into_iter().map(Self::name).collect();
        if compiled.is_empty() {
            "none".into()
        } else {
            compiled.join(", ")
        }
    }

    /// What `smalltalk backends` reports for scripts: the selected, compiled and known backends.
    pub fn listing_json(selected: BackendKind) -> serde_json::Value {
        let names =
            |kinds: Vec<BackendKind>| -> Vec<&str> { kinds.into_iter().map(Self::name).collect() };
        serde_json::json!({
            "selected": selected.name(),
            "compiled": names(Self::compiled()),
            "known": names(Self::ALL.to_vec()),
        })
    }

    /// `Ok(self)` when compiled in, else an error naming the feature to enable.
    pub fn ensure_compiled(self) -> Result<Self, BackendError> {
        if self.is_compiled() {
            return Ok(self);
        }
        Err(BackendError::NotCompiled {
            kind: self,
            compiled: Self::compiled_names(),
        })
    }

    /// Parse a name and check that the backend is compiled in.
    pub fn select(name: &str) -> Result<Self, BackendError> {
        name.parse::<Self>()?.ensure_compiled()
    }
}

/// Check that the wgpu backend can open its default device, turning cubecl's panic when no
/// adapter exists ("No possible adapter available") into [`BackendError::NoWgpuAdapter`].
/// Call it once before the first wgpu tensor; the device is then ready for use.
#[cfg(feature = "wgpu")]
pub fn probe_wgpu() -> Result<(), BackendError> {
    use burn::tensor::Tensor;
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let opened = std::panic::catch_unwind(|| {
        let device = burn::backend::wgpu::WgpuDevice::default();
        Tensor::<burn::backend::Wgpu, 1>::zeros([1], &device).into_data()
    });
    std::panic::set_hook(quiet);
    opened.map(drop).map_err(|panic| {
        let message = (panic.downcast_ref::<String>().map(String::as_str))
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("cubecl panicked while opening the device");
        BackendError::NoWgpuAdapter(message.trim().to_string())
    })
}

/// Bytes reserved by the memory pools of a CubeCL device (`wgpu`, `cuda`) at the time of the
/// call; `None` for other devices (`flex` lives in the process's resident set). The pools grow
/// to the largest demand and keep their pages, so after a training step this is that step's
/// peak, rounded up to the pools' page sizes.
pub fn device_reserved_bytes<D: std::any::Any>(device: &D) -> Option<u64> {
    let _device: &dyn std::any::Any = device;
    #[cfg(feature = "wgpu")]
    if let Some(d) = _device.downcast_ref::<burn::backend::wgpu::WgpuDevice>() {
        use burn::backend::wgpu::WgpuRuntime;
        use cubecl::Runtime;
        return WgpuRuntime::client(d)
            .memory_usage()
            .ok()
            .map(|m| m.bytes_reserved);
    }
    #[cfg(feature = "cuda")]
    if let Some(d) = _device.downcast_ref::<burn::backend::cuda::CudaDevice>() {
        use cubecl::Runtime;
        let client = cubecl::cuda::CudaRuntime::client(d);
        return client.memory_usage().ok().map(|m| m.bytes_reserved);
    }
    None
}

impl FromStr for BackendKind {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| BackendError::Unknown(s.to_string()))
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in BackendKind::ALL {
            assert_eq!(k.name().parse::<BackendKind>(), Ok(k));
            assert_eq!(k.to_string(), k.name());
        }
        assert_eq!("FLEX".parse::<BackendKind>(), Ok(BackendKind::Flex));
        assert_eq!(
            "tpu".parse::<BackendKind>(),
            Err(BackendError::Unknown("tpu".into()))
        );
    }

    #[test]
    fn missing_backend_names_its_feature() {
        for k in BackendKind::ALL {
            match BackendKind::select(k.name()) {
                Ok(sel) => assert!(sel.is_compiled()),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.contains(&format!("--features {}", k.name())), "{msg}");
                    assert!(!k.is_compiled());
                }
            }
        }
    }
}
