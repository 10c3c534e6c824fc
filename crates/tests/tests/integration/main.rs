mod data_to_lm;
mod lm_attention;
mod lm_checkpoint;
mod lm_fused;
mod lm_grad;
mod lm_model;
mod lm_train;
mod lm_util;
