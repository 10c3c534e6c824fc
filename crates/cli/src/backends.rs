//! Running a generic job on the backend picked by `--backend` (the backend type is a generic
//! parameter, so each compiled-in backend gets its own instantiation).

use anyhow::{bail, Result};
use smalltalk_lm::backend::BackendKind;
use smalltalk_lm::burn::tensor::backend::AutodiffBackend;

/// Work that needs a training backend (the inference backend is `AB::InnerBackend`).
pub trait BackendJob {
    /// What the job returns.
    type Output;
    /// Run on backend `AB` (its default device); `name` is the backend's name for reports.
    fn run<AB: AutodiffBackend>(self, name: &'static str) -> Result<Self::Output>;
}

/// Run `job` on the backend `kind` (f32 tensors; bf16 compute is a `Precision` setting).
pub fn dispatch<J: BackendJob>(kind: BackendKind, job: J) -> Result<J::Output> {
    #[allow(unused_imports)]
    use smalltalk_lm::burn::backend::Autodiff;
    let _ = &job;
    match kind {
        #[cfg(feature = "flex")]
        BackendKind::Flex => job.run::<smalltalk_lm::CpuTrainBackend>("flex"),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => job.run::<Autodiff<smalltalk_lm::CudaF32>>("cuda"),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => job.run::<Autodiff<smalltalk_lm::burn::backend::Wgpu>>("wgpu"),
        #[allow(unreachable_patterns)]
        other => bail!("backend {other} is not compiled into this binary"),
    }
}
