mod branch_train;
mod data_to_lm;
mod lm_attention;
mod lm_checkpoint;
mod lm_fused;
mod lm_grad;
mod lm_model;
mod lm_precision;
mod lm_run_control;
mod lm_tiled;
mod lm_train;
mod lm_util;
mod pipeline_api;
mod reliability;
mod router_em;
mod routing_methods;
#[cfg(feature = "wgpu")]
mod wgpu_backend;
