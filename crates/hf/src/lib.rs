//! # smalltalk-hf
//!
//! A trained mixture as Hugging Face Llama checkpoints (`LlamaForCausalLM`), the format
//! lm-eval-harness, vLLM, llama.cpp and model hubs read. [`export_run`] writes one complete HF
//! folder per router, expert and dense model of a run, the run's tokenizer in each, and a
//! `mixture.json` (the run's manifest projected onto the exported folders) + `README.md`
//! saying how to route: score the first M̂ tokens of a text with
//! every router and run the expert of the highest log-likelihood (paper §2.4, Eq. 7).
//! [`import_model`] reads an HF Llama folder into our weights format. The tensor conversion
//! itself is [`smalltalk_lm::hf`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use smalltalk_data::TextTokenizer;
use smalltalk_lm::hf::{export_weights, import_weights, SpecialIds};
use smalltalk_lm::{LmConfig, LmError};
use smalltalk_mixture::manifest::resolve;
use smalltalk_mixture::{MixtureManifest, ModelRecord};

/// What can go wrong exporting or importing.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    /// Reading or writing weights, or an HF checkpoint we cannot represent.
    #[error(transparent)]
    Lm(#[from] LmError),
    /// The tokenizer.
    #[error(transparent)]
    Data(#[from] smalltalk_data::DataError),
    /// The mixture's manifest, or a member it names (boxed: the error is large).
    #[error(transparent)]
    Mixture(Box<smalltalk_mixture::MixtureError>),
    /// A file could not be written or a run folder lacks a part.
    #[error("{}: {message}", path.display())]
    Run {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl From<smalltalk_mixture::MixtureError> for HfError {
    fn from(e: smalltalk_mixture::MixtureError) -> Self {
        HfError::Mixture(Box::new(e))
    }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, HfError>;

/// Version of the exported card: a projection of the run's manifest (`smalltalk-mixture/2`)
/// onto the exported folders.
pub const CARD_FORMAT: &str = "smalltalk-mixture-hf/2";

/// `mixture.json` of an export: how the exported folders make one mixture, projected from the
/// run's manifest (`smalltalk_mixture::MixtureManifest`) with the exported folders' paths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixtureCard {
    /// [`CARD_FORMAT`].
    pub format: String,
    /// Number of experts E.
    pub experts: usize,
    /// Routing prefix M̂ in tokens (the manifest's).
    pub prefix_tokens: usize,
    /// The routing rule, in words.
    pub rule: String,
    /// Router folder of each member: router `i` scores for expert `i`.
    pub routers: Vec<String>,
    /// Expert folders, in member order.
    pub expert_models: Vec<String>,
    /// Dense baselines (`dense`: E× batch; `dense-steps`: E× steps), when the run has them.
    pub dense: Vec<String>,
    /// The members as the run's manifest lists them, with their exported folders.
    pub members: Vec<CardMember>,
    /// The checksum of the tokenizer every member reads (the manifest's).
    pub tokenizer_hash: String,
}

/// One member of an exported mixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardMember {
    /// The member's name (`expert-00`).
    pub name: String,
    /// Added to its router's score before the argmax.
    pub score_offset: f64,
    /// Its exported router folder.
    pub router: String,
    /// Its exported expert folder.
    pub expert: String,
    /// Checksum of the expert weights the export was made from (the manifest's).
    pub source_checksum: String,
    /// Step of those weights, and the steps their schedule asked for.
    pub step: usize,
    /// The steps the expert's schedule asked for.
    pub steps: usize,
}

/// Export every model of the mixture of `run` (a run folder or a `mixture.json`; its manifest
/// verified first: every checksum and tokenizer hash) into `out` (see the crate docs). Only
/// EM routers are language models: a mixture routed by TF-IDF, random or domain labels is
/// refused.
pub fn export_run(run: &Path, out: &Path) -> Result<MixtureCard> {
    smalltalk_mixture::check(run, false)?;
    let (manifest, file) = MixtureManifest::load(run)?;
    let root = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    if !manifest.has_router_lms() {
        return Err(HfError::Run {
            path: file,
            message: format!(
                "routers of method `{}` are not language models; only EM routers can be exported",
                manifest.routing.method
            ),
        });
    }
    let tokenizer_file = resolve(&root, &manifest.tokenizer.file);
    let tokenizer = TextTokenizer::load(&tokenizer_file, None)?;
    let ids = SpecialIds {
        bos: tokenizer.eos_id,
        eos: tokenizer.eos_id,
        pad: tokenizer.pad_id,
    };
    let m = manifest.routing.prefix;
    let mut card = MixtureCard {
        format: CARD_FORMAT.into(),
        experts: manifest.members.len(),
        prefix_tokens: m,
        rule: format!(
            "route a text to the member i whose router i gives its first {m} tokens the highest \
             log-likelihood plus the member's score_offset, the log-likelihood being the sum of \
             log p(x_t | x_<t) over t = 2..{m} (the first token is not scored; no BOS is \
             prepended); run only that member's expert"
        ),
        routers: Vec::new(),
        expert_models: Vec::new(),
        dense: Vec::new(),
        members: Vec::new(),
        tokenizer_hash: manifest.tokenizer.hash.clone(),
    };
    let export = |model: &ModelRecord, name: String| -> Result<String> {
        let weights = resolve(&root, &model.weights);
        export_model(&weights, &out.join(&name), ids, &tokenizer, &tokenizer_file)?;
        Ok(name)
    };
    for member in &manifest.members {
        let router = member
            .router
            .as_ref()
            .expect("checked: em members have routers");
        let folder = router.dir.rsplit('/').next().unwrap_or(&member.name);
        let router = export(router, format!("routers/{folder}"))?;
        let expert = export(&member.expert, format!("experts/{}", member.name))?;
        card.routers.push(router.clone());
        card.expert_models.push(expert.clone());
        card.members.push(CardMember {
            name: member.name.clone(),
            score_offset: member.score_offset,
            router,
            expert,
            source_checksum: member.expert.checksum.clone(),
            step: member.expert.step,
            steps: member.expert.steps,
        });
    }
    for dense in &manifest.dense {
        card.dense.push(export(&dense.model, dense.name.clone())?);
    }
    write(
        &out.join("mixture.json"),
        &serde_json::to_string_pretty(&card).expect("card serialises"),
    )?;
    write(&out.join("README.md"), &readme(&card))?;
    Ok(card)
}

/// Export the weights file `weights` (a checkpoint's `model.safetensors`) as a complete HF
/// folder `out`.
fn export_model(
    weights: &Path,
    out: &Path,
    ids: SpecialIds,
    tokenizer: &TextTokenizer,
    tokenizer_file: &Path,
) -> Result<LmConfig> {
    let config = export_weights(weights, out, ids)?;
    let copy = std::fs::read(tokenizer_file).map_err(|e| io(tokenizer_file, e))?;
    write_bytes(&out.join("tokenizer.json"), &copy)?;
    let name = |id: u32| tokenizer.inner().id_to_token(id).unwrap_or_default();
    let (eos, pad) = (name(ids.eos), name(ids.pad));
    let tokenizer_config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": eos, "eos_token": eos, "pad_token": pad,
        "add_bos_token": false, "add_eos_token": false,
        "model_max_length": config.max_seq_len,
        "clean_up_tokenization_spaces": false,
    });
    write(
        &out.join("tokenizer_config.json"),
        &serde_json::to_string_pretty(&tokenizer_config).expect("JSON"),
    )?;
    let special = serde_json::json!({"bos_token": eos, "eos_token": eos, "pad_token": pad});
    write(
        &out.join("special_tokens_map.json"),
        &serde_json::to_string_pretty(&special).expect("JSON"),
    )?;
    Ok(config)
}

/// Import the HF Llama folder `hf_dir` as our weights file `out` (a model any stage can load:
/// `Lm::from_safetensors`). Returns its config.
pub fn import_model(hf_dir: &Path, out: &Path) -> Result<LmConfig> {
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    }
    Ok(import_weights(hf_dir, out)?)
}

fn readme(card: &MixtureCard) -> String {
    format!(
        "# A SmallTalk mixture of {e} experts\n\nExported by `smalltalk export hf`. Every folder \
         is a Hugging Face `LlamaForCausalLM` checkpoint with its tokenizer: `routers/router-NN` \
         (the routers), `experts/expert-NN` (the experts){dense}. `mixture.json` says how they \
         fit together.\n\nRouting (paper \"No Need to Talk\", §2.4): {rule}.\n\n```python\n\
         import torch\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n\
         tok = AutoTokenizer.from_pretrained(\"routers/router-00\")\n\
         routers = [AutoModelForCausalLM.from_pretrained(f\"routers/router-{{i:02d}}\") for i in range({e})]\n\
         experts = [AutoModelForCausalLM.from_pretrained(f\"experts/expert-{{i:02d}}\") for i in range({e})]\n\n\
         def route(text):\n    ids = tok(text, add_special_tokens=False, return_tensors=\"pt\").input_ids[:, :{m}]\n\
         \x20   with torch.no_grad():\n        scores = []\n        for r in routers:\n\
         \x20           logp = torch.log_softmax(r(ids).logits[0, :-1].double(), -1)\n\
         \x20           scores.append(logp.gather(1, ids[0, 1:, None]).sum().item())\n\
         \x20   return max(range({e}), key=scores.__getitem__)\n\n\
         text = \"def main():\"\nexpert = experts[route(text)]\n\
         out = expert.generate(**tok(text, add_special_tokens=False, return_tensors=\"pt\"), max_new_tokens=32, do_sample=False)\n\
         print(tok.decode(out[0]))\n```\n",
        e = card.experts,
        m = card.prefix_tokens,
        rule = card.rule,
        dense = if card.dense.is_empty() { String::new() } else { format!(", and the dense baselines `{}`", card.dense.join("`, `")) },
    )
}

fn io(path: &Path, e: std::io::Error) -> HfError {
    HfError::Run {
        path: path.into(),
        message: e.to_string(),
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    write_bytes(path, text.as_bytes())
}

fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    }
    smalltalk_stage::atomic::write_file(path, bytes).map_err(|e| HfError::Run {
        path: path.into(),
        message: e.to_string(),
    })
}

/// The logits of a model on one token sequence, for checking another implementation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogits {
    /// The token ids scored.
    pub ids: Vec<u32>,
    /// `[position][vocabulary]` logits of the next token after each position.
    pub logits: Vec<Vec<f32>>,
}

/// The logits of our weights file `weights` on `ids` (one forward pass, f32).
pub fn logits<B: smalltalk_lm::burn::tensor::backend::Backend>(
    weights: &Path,
    ids: &[u32],
    device: &B::Device,
) -> Result<TokenLogits> {
    use smalltalk_lm::burn::tensor::{Int, Tensor, TensorData};
    let config = smalltalk_lm::Lm::<B>::config_of_file(weights)?;
    let model = smalltalk_lm::Lm::<B>::from_safetensors(&config, weights, device)?;
    model.check_tokens(ids)?;
    let data = TensorData::new(
        ids.iter().map(|&i| i as i64).collect::<Vec<_>>(),
        [1, ids.len()],
    );
    let tokens = Tensor::<B, 2, Int>::from_data(data, device);
    let out = model.forward(tokens).into_data().convert::<f32>();
    let values = out.into_vec::<f32>().expect("f32 logits");
    let vocab = config.vocab_size;
    Ok(TokenLogits {
        ids: ids.to_vec(),
        logits: values.chunks(vocab).map(<[f32]>::to_vec).collect(),
    })
}
