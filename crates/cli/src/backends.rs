//! Running generic code on the backend picked by `--backend`: the backend type is a generic
//! parameter, so each compiled-in backend gets its own instantiation.

/// Evaluate `$body` with `$AB` bound to the training (autodiff) backend of `$kind` and
/// `$name` to its name; the inference backend is `<$AB as AutodiffBackend>::InnerBackend`.
/// A backend that is not compiled in is an error naming its cargo feature.
macro_rules! on_backend {
    ($kind:expr, $AB:ident, $name:ident => $body:expr) => {{
        #[allow(unused_imports)]
        use smalltalk_lm::backend::BackendKind;
        match $kind {
            #[cfg(feature = "flex")]
            BackendKind::Flex => {
                type $AB = smalltalk_lm::CpuTrainBackend;
                let $name: &'static str = "flex";
                $body
            }
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => {
                type $AB = smalltalk_lm::burn::backend::Autodiff<smalltalk_lm::CudaF32>;
                let $name: &'static str = "cuda";
                $body
            }
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => {
                smalltalk_lm::backend::probe_wgpu()?;
                type $AB =
                    smalltalk_lm::burn::backend::Autodiff<smalltalk_lm::burn::backend::Wgpu>;
                let $name: &'static str = "wgpu";
                $body
            }
            #[allow(unreachable_patterns)]
            other => anyhow::bail!(
                "backend {other} is not compiled into this binary (build with --features {other})"
            ),
        }
    }};
}

pub(crate) use on_backend;
