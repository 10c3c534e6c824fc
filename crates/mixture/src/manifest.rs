//! `mixture.json`: a trained mixture as data. The members (each a router and the expert it
//! routes to, paper §2.2–2.3), how texts are routed (the routers' method and the prefix M̂,
//! §2.4), the tokenizer, and optionally the dense baselines the mixture is compared with
//! (§3). Every path is relative to the manifest's folder, every weights file carries its
//! checksum, and every model records what it was trained on and whether it finished.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{MixtureError, Result};

/// Version of the manifest layout (`smalltalk export hf`'s card was `smalltalk-mixture/1`).
pub const MIXTURE_FORMAT: &str = "smalltalk-mixture/2";
/// The manifest's file name.
pub const MIXTURE_FILE: &str = "mixture.json";

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixtureManifest {
    /// [`MIXTURE_FORMAT`].
    pub format: String,
    /// How texts are routed.
    pub routing: Routing,
    /// The tokenizer every member reads.
    pub tokenizer: TokenizerRecord,
    /// The partition the experts were trained on.
    pub partition: PartitionRecord,
    /// The members, in routing order: member `i`'s score is router `i`'s (plus its offset).
    pub members: Vec<Member>,
    /// The dense baselines (`dense`, `dense-steps`), for evaluation; not part of routing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dense: Vec<NamedModel>,
}

/// How a text is routed (paper §2.4: the expert whose router gives the prefix the highest
/// likelihood).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Routing {
    /// The routers' method: `em` (router LMs trained by EM, paper §2.2; each member carries
    /// its router) or a baseline (`tfidf`, `random`, `domain`; members carry no router LM and
    /// the routers folder holds the method's files).
    pub method: String,
    /// The routers folder (its `routers.json`, `tokenizer.json`, and the baseline's files).
    pub routers: String,
    /// The routers' fingerprint (`routers.json`: the EM run's settings and data).
    pub fingerprint: String,
    /// The routing prefix M̂ in tokens: a text's first M̂ tokens pick the expert.
    pub prefix: usize,
    /// The prefix M the routers were trained on.
    pub trained_prefix: usize,
}

/// The tokenizer of the mixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizerRecord {
    /// The tokenizer file (the routers folder's `tokenizer.json`).
    pub file: String,
    /// Its checksum (`xxh3:…`), the one every member's stage record names.
    pub hash: String,
}

/// The partition the experts were trained on (paper §2.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// The partition folder.
    pub dir: String,
    /// Its fingerprint (routers, data, every row file's checksum).
    pub fingerprint: String,
}

/// One member: an expert, the router that routes to it, and its score offset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The member's name (`expert-00`): its identity in every message and output.
    pub name: String,
    /// Added to this member's routing score before the argmax (0 by default).
    #[serde(default)]
    pub score_offset: f64,
    /// Its router LM (`None` when the routing method is a baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<ModelRecord>,
    /// Its expert LM.
    pub expert: ModelRecord,
}

/// A dense baseline: a named model outside the routing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedModel {
    /// `dense` (E× the experts' batch, the paper's protocol) or `dense-steps` (E× the steps).
    pub name: String,
    /// The model.
    #[serde(flatten)]
    pub model: ModelRecord,
}

/// One trained model: where its weights are, their checksum and what they were trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// The training run folder (holds `stage.json` for experts and dense models).
    pub dir: String,
    /// The weights file (the checkpoint's `model.safetensors`).
    pub weights: String,
    /// The weights file's checksum (`xxh3:…`).
    pub checksum: String,
    /// Parameters of the model.
    pub parameters: usize,
    /// What the model was trained on, by fingerprint.
    pub data: TrainedOn,
    /// The optimizer step the weights are from.
    pub step: usize,
    /// The steps its schedule asked for.
    pub steps: usize,
    /// Whether `step` reached `steps`.
    pub finished: bool,
    /// An unfinished model accepted explicitly when the manifest was written.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_unfinished: bool,
}

/// What a model was trained on, by fingerprint; the fields that apply to its kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainedOn {
    /// A router: the routers' EM fingerprint (settings and data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routers: Option<String>,
    /// An expert: the fingerprint of the partition its rows came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// An expert: its rows file (relative to the manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<String>,
    /// An expert: the rows file's checksum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_checksum: Option<String>,
    /// A dense model (and an expert): the dataset's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
}

impl MixtureManifest {
    /// Where the manifest of `path` is: `path` itself when it is a file (or ends in `.json`),
    /// else `path/mixture.json` (a run folder).
    pub fn locate(path: &Path) -> PathBuf {
        if path.is_file() || path.extension().is_some_and(|e| e == "json") {
            path.to_path_buf()
        } else {
            path.join(MIXTURE_FILE)
        }
    }

    /// Read the manifest of `path` (a run folder or a manifest file; see [`Self::locate`]).
    /// A missing one is [`MixtureError::NoManifest`], naming the command that writes it.
    pub fn load(path: &Path) -> Result<(Self, PathBuf)> {
        let file = Self::locate(path);
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let run = file.parent().unwrap_or(Path::new(".")).to_path_buf();
                return Err(MixtureError::NoManifest { path: file, run });
            }
            Err(source) => return Err(MixtureError::Io { path: file, source }),
        };
        let m = Self::from_json(&text).map_err(|message| MixtureError::Manifest {
            path: file.clone(),
            message,
        })?;
        Ok((m, file))
    }

    /// Parse a manifest (the error says what is wrong).
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let m: MixtureManifest =
            serde_json::from_str(text).map_err(|e| format!("unreadable mixture manifest: {e}"))?;
        if m.format != MIXTURE_FORMAT {
            return Err(format!(
                "format `{}`, expected `{MIXTURE_FORMAT}`",
                m.format
            ));
        }
        if m.members.is_empty() {
            return Err("a mixture needs at least one member".into());
        }
        let mut names: Vec<&str> = m.members.iter().map(|x| x.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("member `{}` is listed twice", w[0]));
        }
        if let Some(x) = m.members.iter().find(|x| !x.score_offset.is_finite()) {
            return Err(format!(
                "member `{}`: score_offset {} is not a finite number",
                x.name, x.score_offset
            ));
        }
        Ok(m)
    }

    /// The manifest as pretty JSON (what [`Self::save`] writes).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a manifest serialises")
    }

    /// Write the manifest to `file` atomically.
    pub fn save(&self, file: &Path) -> Result<()> {
        smalltalk_stage::atomic::write_file(file, self.to_json().as_bytes())?;
        Ok(())
    }

    /// The member called `name`.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// The dense baseline called `name` (`dense`, `dense-steps`).
    pub fn dense_model(&self, name: &str) -> Option<&NamedModel> {
        self.dense.iter().find(|m| m.name == name)
    }

    /// The members' names, in routing order.
    pub fn names(&self) -> Vec<String> {
        self.members.iter().map(|m| m.name.clone()).collect()
    }

    /// Rewrite every path for a manifest file in the folder `to` instead of `from` (the files
    /// stay where they are).
    pub fn rebase(&mut self, from: &Path, to: &Path) -> Result<()> {
        let (from, to) = (crate::write::absolute(from)?, crate::write::absolute(to)?);
        let move_path = |p: &mut String| -> Result<()> {
            let abs = crate::write::absolute(&resolve(&from, p))?;
            *p = crate::write::relative(&to, &abs);
            Ok(())
        };
        move_path(&mut self.routing.routers)?;
        move_path(&mut self.tokenizer.file)?;
        move_path(&mut self.partition.dir)?;
        let mut models: Vec<&mut ModelRecord> = Vec::new();
        for m in &mut self.members {
            models.push(&mut m.expert);
            if let Some(r) = &mut m.router {
                models.push(r);
            }
        }
        models.extend(self.dense.iter_mut().map(|d| &mut d.model));
        for r in models {
            move_path(&mut r.dir)?;
            move_path(&mut r.weights)?;
            if let Some(rows) = &mut r.data.rows {
                move_path(rows)?;
            }
        }
        Ok(())
    }

    /// Whether the members carry router LMs (`em` routing).
    pub fn has_router_lms(&self) -> bool {
        self.routing.method == "em"
    }
}

/// `rel` (a manifest path, `/`-separated) under the manifest's folder `root`.
pub fn resolve(root: &Path, rel: &str) -> PathBuf {
    rel.split('/')
        .filter(|p| !p.is_empty())
        .fold(root.to_path_buf(), |p, c| p.join(c))
}
