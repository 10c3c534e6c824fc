//! Model configuration: sizes, named presets, TOML overrides and the analytic parameter count.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{LmError, Result};

/// Shape and numerics of a decoder LM (Llama recipe). Every field has a default: the default
/// config is the paper's 4.4M router (`router-4.4m`), so a TOML table or JSON object may name
/// only the fields it changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LmConfig {
    /// Vocabulary size (rows of the embedding). Set it to the tokenizer's size.
    pub vocab_size: usize,
    /// Hidden width `d`.
    pub d_model: usize,
    /// Number of decoder blocks.
    pub n_layers: usize,
    /// Attention heads; `d_model` must be a multiple, and the head dim must be even (RoPE).
    pub n_heads: usize,
    /// Hidden width of the SwiGLU MLP (each of gate/up/down has `d_model * d_ff` weights).
    pub d_ff: usize,
    /// Longest sequence the RoPE tables cover.
    pub max_seq_len: usize,
    /// RoPE base θ.
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    pub norm_eps: f64,
    /// Share the embedding matrix with the LM head (no separate `lm_head` weight).
    pub tie_embeddings: bool,
    /// Standard deviation of the normal init of every weight matrix (output projections of
    /// each block get `init_std / sqrt(2 * n_layers)`, as in GPT-2).
    pub init_std: f64,
}

impl Default for LmConfig {
    fn default() -> Self {
        Self::router_4_4m()
    }
}

/// Names accepted by [`LmConfig::preset`], in the order they are listed in errors.
pub const PRESET_NAMES: [&str; 7] = [
    "tiny",
    "cpu-small",
    "study-small",
    "router-4.4m",
    "router-110m",
    "expert-335m",
    "expert-1.3b",
];

/// SwiGLU width for a 4d two-matrix-FFN parameter budget: `8d/3`, rounded up to a multiple of
/// 64 unless it is already an integer (96 → 256, 768 → 2048, 1024 → 2752, 2048 → 5504).
fn swiglu_width(d: usize) -> usize {
    if (8 * d).is_multiple_of(3) {
        8 * d / 3
    } else {
        (8 * d / 3).div_ceil(64) * 64
    }
}

/// `base` with the keys of a TOML table replacing its fields. Unknown keys and wrong types
/// are [`LmError::ConfigOverride`] errors naming the key; `what` names the config in messages.
pub fn apply_overrides<T: Serialize + DeserializeOwned>(
    base: &T,
    overrides: &toml::Table,
    what: &str,
) -> Result<T> {
    let mut table = toml::Table::try_from(base)
        .map_err(|e| LmError::ConfigOverride(format!("cannot serialize the {what} config: {e}")))?;
    for (key, value) in overrides {
        // Fields that are `None` are absent from the serialized table but still valid keys.
        let value = match (table.get(key), value) {
            // TOML integers are i64; let a float field accept an integer literal (`lr = 1`).
            (Some(toml::Value::Float(_)), toml::Value::Integer(i)) => toml::Value::Float(*i as f64),
            _ => value.clone(),
        };
        table.insert(key.clone(), value);
    }
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| {
            LmError::ConfigOverride(format!("{what} config: {}", e.message()))
        })
}

impl LmConfig {
    /// Check that token ids are below `vocab_size` (the embedding lookup would fail otherwise).
    pub fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        match tokens.iter().find(|&&t| t as usize >= self.vocab_size) {
            Some(t) => Err(LmError::Data(format!(
                "token id {t} is out of range for vocab_size {}",
                self.vocab_size
            ))),
            None => Ok(()),
        }
    }

    /// Panics unless a sequence of `seq` positions fits the model (`seq ≤ max_seq_len`).
    pub(crate) fn assert_fits(&self, seq: usize) {
        assert!(
            seq <= self.max_seq_len,
            "sequence length {seq} exceeds max_seq_len {}",
            self.max_seq_len
        );
    }

    fn base(vocab_size: usize, d_model: usize, n_layers: usize, n_heads: usize) -> Self {
        LmConfig {
            vocab_size,
            d_model,
            n_layers,
            n_heads,
            d_ff: swiglu_width(d_model),
            max_seq_len: 1024,
            rope_theta: 10_000.0,
            norm_eps: 1e-5,
            tie_embeddings: true,
            init_std: 0.02,
        }
    }

    /// The paper's default router: d 96, 12 layers, 12 heads, SwiGLU 256, tied, vocab 32000.
    /// Exactly 4,401,504 parameters including the norms.
    pub fn router_4_4m() -> Self {
        Self::base(32_000, 96, 12, 12)
    }

    /// A named preset. Paper sizes (all tied, vocab 32000, sequence 1024, SwiGLU `8d/3`):
    /// `router-4.4m` (96/12/12), `router-110m` (768/12/12), `expert-335m` (1024/24/16),
    /// `expert-1.3b` (2048/24/16). CPU sizes: `tiny` (d 32, 2 layers, 4 heads, d_ff 64,
    /// vocab 256, sequence 64; for tests) and `cpu-small` (d 128, 4 layers, 4 heads, d_ff 352,
    /// vocab 32000; for demos) and `study-small` (d 96, 4 layers, 4 heads, vocab 4096: the
    /// size of the regime study's models, for benchmarks). Override `vocab_size` with the
    /// tokenizer's size.
    pub fn preset(name: &str) -> Result<Self> {
        let cfg = match name {
            "tiny" => LmConfig {
                d_ff: 64,
                max_seq_len: 64,
                ..Self::base(256, 32, 2, 4)
            },
            "cpu-small" => Self::base(32_000, 128, 4, 4),
            "study-small" => Self::base(4_096, 96, 4, 4),
            "router-4.4m" => Self::router_4_4m(),
            "router-110m" => Self::base(32_000, 768, 12, 12),
            "expert-335m" => Self::base(32_000, 1024, 24, 16),
            "expert-1.3b" => Self::base(32_000, 2048, 24, 16),
            _ => {
                return Err(LmError::UnknownPreset {
                    name: name.to_string(),
                    known: PRESET_NAMES.join(", "),
                })
            }
        };
        Ok(cfg)
    }

    /// A preset with some fields replaced by the keys of a TOML table, e.g.
    /// `vocab_size = 4096` or `tie_embeddings = false`. Unknown keys and wrong types are
    /// errors. The result is validated.
    pub fn from_preset_with_overrides(name: &str, overrides: &toml::Table) -> Result<Self> {
        Self::preset(name)?.with_overrides(overrides)
    }

    /// This config with the keys of a TOML table replacing its fields (see
    /// [`from_preset_with_overrides`](Self::from_preset_with_overrides)).
    pub fn with_overrides(&self, overrides: &toml::Table) -> Result<Self> {
        let cfg = apply_overrides(self, overrides, "model")?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check that the sizes fit together.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(LmError::InvalidConfig(msg));
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("d_ff", self.d_ff),
            ("max_seq_len", self.max_seq_len),
        ] {
            if v == 0 {
                return bad(format!("{name} must be positive"));
            }
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return bad(format!(
                "d_model {} is not a multiple of n_heads {}",
                self.d_model, self.n_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!(
                "head dim {} must be even for RoPE",
                self.head_dim()
            ));
        }
        if self.vocab_size > i32::MAX as usize {
            return bad(format!(
                "vocab_size {} does not fit token ids in i32",
                self.vocab_size
            ));
        }
        for (name, v) in [
            ("rope_theta", self.rope_theta),
            ("norm_eps", self.norm_eps),
            ("init_std", self.init_std),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("{name} must be positive and finite, got {v}"));
            }
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }

    /// Number of parameters, counted from the sizes alone (equals
    /// [`Lm::num_params`](crate::Lm::num_params)):
    /// `V·d` (embedding) `+ V·d` if untied `+ L·(4d² + 3·d·d_ff + 2d) + d` (final norm).
    pub fn num_params(&self) -> usize {
        let (v, d, f) = (self.vocab_size, self.d_model, self.d_ff);
        let embed = v * d;
        let head = if self.tie_embeddings { 0 } else { v * d };
        let block = 4 * d * d + 3 * d * f + 2 * d;
        embed + head + self.n_layers * block + d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_has_the_papers_size() {
        assert_eq!(
            LmConfig::preset("router-4.4m").unwrap().num_params(),
            4_401_504
        );
        assert_eq!(LmConfig::default(), LmConfig::router_4_4m());
    }

    #[test]
    fn all_presets_are_valid() {
        for name in PRESET_NAMES {
            LmConfig::preset(name).unwrap().validate().unwrap();
        }
        assert_eq!(LmConfig::preset("expert-335m").unwrap().d_ff, 2752);
        assert_eq!(LmConfig::preset("expert-1.3b").unwrap().d_ff, 5504);
        assert_eq!(LmConfig::preset("router-110m").unwrap().d_ff, 2048);
        let err = LmConfig::preset("router-64m").unwrap_err().to_string();
        assert!(err.contains("router-4.4m"), "{err}");
    }

    #[test]
    fn overrides_replace_fields_and_reject_unknown_keys() {
        let t: toml::Table =
            toml::from_str("vocab_size = 4096\nrope_theta = 500000\ntie_embeddings = false")
                .unwrap();
        let c = LmConfig::from_preset_with_overrides("router-4.4m", &t).unwrap();
        assert_eq!(
            (c.vocab_size, c.rope_theta, c.tie_embeddings),
            (4096, 500000.0, false)
        );
        assert_eq!(c.d_model, 96);
        let t: toml::Table = toml::from_str("d_modle = 4").unwrap();
        assert!(matches!(
            LmConfig::from_preset_with_overrides("tiny", &t),
            Err(LmError::ConfigOverride(_))
        ));
        let t: toml::Table = toml::from_str("n_heads = 5").unwrap();
        assert!(matches!(
            LmConfig::from_preset_with_overrides("tiny", &t),
            Err(LmError::InvalidConfig(_))
        ));
    }

    #[test]
    fn partial_json_uses_defaults() {
        let c: LmConfig = serde_json::from_str(r#"{"d_model": 64, "n_heads": 4}"#).unwrap();
        assert_eq!(c.n_layers, 12);
        assert_eq!(c.d_model, 64);
    }
}
