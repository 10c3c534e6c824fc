//! Hugging Face Llama checkpoints (`LlamaForCausalLM`): our weights under HF names and HF's
//! `config.json`. The layouts already agree (see [`crate::model`]: `[out, in]` linear weights,
//! RoPE in the `rotate_half` form), so converting is a rename of every tensor (`model.` in
//! front of everything but `lm_head`) plus the config. [`export_weights`] writes an HF folder's
//! `model.safetensors`, `config.json` and `generation_config.json` from one of our weights
//! files; [`import_weights`] reads an HF Llama folder into one, refusing (and naming the field)
//! what this model cannot represent: biases, another activation, grouped-query attention,
//! RoPE scaling, sliding windows, a head size other than `hidden_size / heads`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::{json, Value};

use crate::config::LmConfig;
use crate::error::{LmError, Result};
use crate::weights::{read_safetensors, write_bytes, write_safetensors, HostTensor, CONFIG_KEY};

/// Token ids HF's configs name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    /// Beginning of sequence (our documents start without one: the end-of-document id).
    pub bos: u32,
    /// End of document.
    pub eos: u32,
    /// Padding.
    pub pad: u32,
}

/// The HF name of one of our tensors.
pub fn hf_name(ours: &str) -> String {
    if ours.starts_with("lm_head.") {
        ours.to_string()
    } else {
        format!("model.{ours}")
    }
}

/// Our name of an HF tensor, `None` for names outside the Llama decoder.
pub fn our_name(hf: &str) -> Option<String> {
    if hf.starts_with("lm_head.") {
        return Some(hf.to_string());
    }
    hf.strip_prefix("model.").map(str::to_string)
}

/// HF `config.json` of a model of `config`.
pub fn hf_config(config: &LmConfig, ids: SpecialIds) -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.d_ff,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_heads,
        "head_dim": config.d_model / config.n_heads,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": null,
        "attention_bias": false,
        "attention_dropout": 0.0,
        "mlp_bias": false,
        "tie_word_embeddings": config.tie_embeddings,
        "initializer_range": config.init_std,
        "bos_token_id": ids.bos,
        "eos_token_id": ids.eos,
        "pad_token_id": ids.pad,
        "torch_dtype": "float32",
        "use_cache": true,
    })
}

/// Write `out_dir/{model.safetensors, config.json, generation_config.json}` from our weights
/// file `weights` (written by `Lm::save_safetensors` or a checkpoint). Returns its config.
pub fn export_weights(weights: &Path, out_dir: &Path, ids: SpecialIds) -> Result<LmConfig> {
    let (tensors, metadata) = read_safetensors(weights)?;
    let config = config_from_metadata(weights, &metadata)?;
    let renamed: Vec<(String, HostTensor)> =
        tensors.into_iter().map(|(n, t)| (hf_name(&n), t)).collect();
    std::fs::create_dir_all(out_dir).map_err(|e| LmError::io(out_dir, e))?;
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors(&out_dir.join("model.safetensors"), &renamed, meta)?;
    let pretty = |v: &Value| serde_json::to_string_pretty(v).expect("JSON serialises");
    write_bytes(
        &out_dir.join("config.json"),
        pretty(&hf_config(&config, ids)).as_bytes(),
    )?;
    let generation = json!({"bos_token_id": ids.bos, "eos_token_id": ids.eos,
        "pad_token_id": ids.pad, "do_sample": false});
    write_bytes(
        &out_dir.join("generation_config.json"),
        pretty(&generation).as_bytes(),
    )?;
    Ok(config)
}

/// Read the HF Llama folder `hf_dir` (`config.json`, `model.safetensors` in F32, F16 or BF16)
/// and write our weights file `out` (with the config in its metadata). Returns the config.
pub fn import_weights(hf_dir: &Path, out: &Path) -> Result<LmConfig> {
    let config_path = hf_dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| LmError::io(&config_path, e))?;
    let hf: Value = serde_json::from_str(&text).map_err(|e| LmError::Json {
        path: config_path.clone(),
        source: e,
    })?;
    let config = config_from_hf(&hf).map_err(|message| LmError::CheckpointMismatch {
        path: config_path.clone(),
        message,
    })?;
    let weights = hf_dir.join("model.safetensors");
    let (tensors, _) = read_safetensors(&weights)?;
    let mut ours = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        // A tied checkpoint may still carry `lm_head.weight` (a copy of the embedding).
        if config.tie_embeddings && name.starts_with("lm_head.") {
            continue;
        }
        let Some(n) = our_name(&name).filter(|n| !n.contains("rotary_emb")) else {
            return Err(LmError::CheckpointMismatch {
                path: weights.clone(),
                message: format!("tensor `{name}` is not part of a Llama decoder"),
            });
        };
        if n.ends_with(".bias") {
            return Err(LmError::CheckpointMismatch {
                path: weights.clone(),
                message: format!("tensor `{name}`: biases are not supported"),
            });
        }
        ours.push((n, t));
    }
    let json = serde_json::to_string(&config).expect("config serialises");
    write_safetensors(out, &ours, BTreeMap::from([(CONFIG_KEY.to_string(), json)]))?;
    Ok(config)
}

/// Our config from HF's `config.json`, or the field we cannot represent.
fn config_from_hf(hf: &Value) -> std::result::Result<LmConfig, String> {
    let usize_of = |key: &str| -> std::result::Result<usize, String> {
        hf.get(key)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| format!("`{key}` is missing or not a whole number"))
    };
    let f64_of = |key: &str, default: f64| hf.get(key).and_then(Value::as_f64).unwrap_or(default);
    let unsupported = |key: &str, why: &str| Err(format!("`{key}`: {why}"));
    if hf.get("model_type").and_then(Value::as_str) != Some("llama") {
        return unsupported("model_type", "only `llama` checkpoints can be imported");
    }
    let act = hf
        .get("hidden_act")
        .and_then(Value::as_str)
        .unwrap_or("silu");
    if act != "silu" {
        return unsupported(
            "hidden_act",
            &format!("`{act}` is not supported (SwiGLU uses silu)"),
        );
    }
    for key in ["attention_bias", "mlp_bias"] {
        if hf.get(key).and_then(Value::as_bool) == Some(true) {
            return unsupported(key, "biases are not supported");
        }
    }
    for key in ["rope_scaling", "sliding_window"] {
        if hf.get(key).is_some_and(|v| !v.is_null()) {
            return unsupported(key, "not supported");
        }
    }
    let (d, heads) = (usize_of("hidden_size")?, usize_of("num_attention_heads")?);
    let kv = hf
        .get("num_key_value_heads")
        .and_then(Value::as_u64)
        .unwrap_or(heads as u64);
    if kv as usize != heads {
        return unsupported(
            "num_key_value_heads",
            &format!("{kv} ≠ {heads} heads: grouped-query attention is not supported"),
        );
    }
    if let Some(h) = hf.get("head_dim").and_then(Value::as_u64) {
        if h as usize * heads != d {
            return unsupported(
                "head_dim",
                &format!("{h} × {heads} heads ≠ hidden_size {d}"),
            );
        }
    }
    let config = LmConfig {
        vocab_size: usize_of("vocab_size")?,
        d_model: d,
        n_layers: usize_of("num_hidden_layers")?,
        n_heads: heads,
        d_ff: usize_of("intermediate_size")?,
        max_seq_len: usize_of("max_position_embeddings")?,
        rope_theta: f64_of("rope_theta", 10_000.0),
        norm_eps: f64_of("rms_norm_eps", 1e-6),
        tie_embeddings: hf
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        init_std: f64_of("initializer_range", 0.02),
    };
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

fn config_from_metadata(path: &Path, metadata: &HashMap<String, String>) -> Result<LmConfig> {
    let json = metadata
        .get(CONFIG_KEY)
        .ok_or_else(|| LmError::CorruptFile {
            path: path.into(),
            message: format!("no `{CONFIG_KEY}` metadata (not written by smalltalk-lm)"),
        })?;
    serde_json::from_str(json).map_err(|e| LmError::Json {
        path: path.into(),
        source: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our weights file of a random 2-layer model (tensors by name and shape, no backend).
    fn our_file(path: &Path, tie: bool) -> (LmConfig, Vec<(String, HostTensor)>) {
        let mut config = LmConfig::preset("tiny").unwrap();
        config.tie_embeddings = tie;
        let (v, d, f) = (config.vocab_size, config.d_model, config.d_ff);
        let mut shapes = vec![
            ("embed_tokens.weight".to_string(), vec![v, d]),
            ("norm.weight".into(), vec![d]),
        ];
        for l in 0..config.n_layers {
            let p = format!("layers.{l}.");
            for (n, s) in [
                ("input_layernorm.weight", vec![d]),
                ("post_attention_layernorm.weight", vec![d]),
                ("self_attn.q_proj.weight", vec![d, d]),
                ("self_attn.k_proj.weight", vec![d, d]),
                ("self_attn.v_proj.weight", vec![d, d]),
                ("self_attn.o_proj.weight", vec![d, d]),
                ("mlp.gate_proj.weight", vec![f, d]),
                ("mlp.up_proj.weight", vec![f, d]),
                ("mlp.down_proj.weight", vec![d, f]),
            ] {
                shapes.push((format!("{p}{n}"), s));
            }
        }
        if !tie {
            shapes.push(("lm_head.weight".into(), vec![v, d]));
        }
        let tensors: Vec<(String, HostTensor)> = shapes
            .into_iter()
            .enumerate()
            .map(|(i, (n, shape))| {
                let len = shape.iter().product::<usize>();
                let values = (0..len)
                    .map(|j| ((i * 7919 + j) % 1013) as f32 / 1013.0 - 0.5)
                    .collect();
                (n, HostTensor { shape, values })
            })
            .collect();
        let json = serde_json::to_string(&config).unwrap();
        write_safetensors(
            path,
            &tensors,
            BTreeMap::from([(CONFIG_KEY.to_string(), json)]),
        )
        .unwrap();
        (config, tensors)
    }

    #[test]
    fn export_then_import_gives_the_same_config_and_bit_identical_weights() {
        let ids = SpecialIds {
            bos: 0,
            eos: 0,
            pad: 1,
        };
        for tie in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let (config, tensors) = our_file(&dir.path().join("ours.safetensors"), tie);
            export_weights(
                &dir.path().join("ours.safetensors"),
                &dir.path().join("hf"),
                ids,
            )
            .unwrap();
            let (hf, _) = read_safetensors(&dir.path().join("hf/model.safetensors")).unwrap();
            assert!(hf.contains_key("model.layers.1.mlp.down_proj.weight"));
            assert_eq!(hf.contains_key("lm_head.weight"), !tie);
            let cfg: Value = serde_json::from_str(
                &std::fs::read_to_string(dir.path().join("hf/config.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(cfg["tie_word_embeddings"], tie);
            assert_eq!(cfg["architectures"][0], "LlamaForCausalLM");
            let back = import_weights(&dir.path().join("hf"), &dir.path().join("back.safetensors"))
                .unwrap();
            assert_eq!(back, config);
            let (read, _) = read_safetensors(&dir.path().join("back.safetensors")).unwrap();
            assert_eq!(read.len(), tensors.len());
            for (name, t) in &tensors {
                assert_eq!(&read[name], t, "{name}");
            }
        }
    }

    #[test]
    fn import_names_the_field_it_cannot_represent() {
        let dir = tempfile::tempdir().unwrap();
        our_file(&dir.path().join("ours.safetensors"), true);
        let hf = dir.path().join("hf");
        export_weights(
            &dir.path().join("ours.safetensors"),
            &hf,
            SpecialIds {
                bos: 0,
                eos: 0,
                pad: 1,
            },
        )
        .unwrap();
        let good: Value =
            serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap())
                .unwrap();
        for (key, value, says) in [
            ("num_key_value_heads", json!(1), "grouped-query"),
            ("hidden_act", json!("gelu"), "hidden_act"),
            ("attention_bias", json!(true), "biases"),
            (
                "rope_scaling",
                json!({"type": "linear", "factor": 2.0}),
                "rope_scaling",
            ),
            ("sliding_window", json!(64), "sliding_window"),
            ("model_type", json!("mistral"), "model_type"),
        ] {
            let mut cfg = good.clone();
            cfg[key] = value;
            std::fs::write(hf.join("config.json"), cfg.to_string()).unwrap();
            let err = import_weights(&hf, &dir.path().join("x.safetensors"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(says) && err.contains("config.json"),
                "{key}: {err}"
            );
        }
    }
}
