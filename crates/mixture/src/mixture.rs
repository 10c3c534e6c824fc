//! [`Mixture`]: a mixture loaded for use (paper §2.4). The tokenizer and the routers stay
//! resident; an expert is loaded the first time a text is routed to it and kept in a bounded
//! cache, so that serving costs what one expert costs plus the routers. Shared across
//! threads (`Mixture<B>: Send + Sync`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use smalltalk_data::TextTokenizer;
use smalltalk_lm::burn::tensor::backend::Backend;
use smalltalk_lm::{token_logprobs, Lm, ModelSet, ScoreOptions};
use smalltalk_routing::{route, PrefixScorer};

use crate::cache::{CacheLimits, CacheStats, ExpertCache};
use crate::check::{checkpoint_of, verify_checksum, verify_manifest, Verify};
use crate::error::{MixtureError, Result};
use crate::generate::{check_prompt, GenerateOptions, Generation, TextStream, Timing};
use crate::manifest::{resolve, MixtureManifest, ModelRecord};
use crate::route::{MemberScore, RoutingDecision};
use crate::scorer::OffsetScorer;
use smalltalk_router::{RouterSet, RoutersManifest};

/// How to open a mixture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenOptions {
    /// Bounds of the expert cache.
    pub cache: CacheLimits,
    /// Accept members that stopped before the end of their schedule.
    pub allow_unfinished: bool,
}

/// The mixture's log-likelihood of one text: routed, then scored by the chosen expert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextScore {
    /// The routing decision.
    pub routing: RoutingDecision,
    /// Targets scored (the text's tokens but the first, within the expert's context).
    pub targets: usize,
    /// Sum of the targets' log-probabilities under the chosen expert (natural log).
    pub logprob: f64,
}

/// A mixture loaded from its manifest.
pub struct Mixture<B: Backend> {
    manifest: MixtureManifest,
    file: PathBuf,
    root: PathBuf,
    tokenizer: TextTokenizer,
    scorer: OffsetScorer,
    cache: ExpertCache<B>,
    device: B::Device,
}

impl<B: Backend> std::fmt::Debug for Mixture<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mixture")
            .field("file", &self.file)
            .field("members", &self.manifest.names())
            .field("routing", &self.manifest.routing.method)
            .field("cache", &self.cache.stats())
            .finish()
    }
}

impl<B: Backend> Mixture<B> {
    /// Open the mixture of `path` (a run folder or a `mixture.json`) on `device`: verify the
    /// manifest against its files (tokenizer hash, routers' record, every member's stage
    /// record, every file present, routers' checksums; experts' checksums are verified as
    /// each is loaded), load the tokenizer and the routers.
    pub fn open(path: &Path, options: &OpenOptions, device: &B::Device) -> Result<Self> {
        let (manifest, file) = MixtureManifest::load(path)?;
        let root = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        let verify = Verify {
            expert_checksums: false,
            rows: false,
            allow_unfinished: options.allow_unfinished,
        };
        verify_manifest(&manifest, &root, &verify, false)?;
        let tokenizer = TextTokenizer::load(&resolve(&root, &manifest.tokenizer.file), None)?;
        let inner: Box<dyn PrefixScorer + Send + Sync> = if manifest.has_router_lms() {
            let models = manifest
                .members
                .iter()
                .map(|m| {
                    let r = m.router.as_ref().expect("checked: em members have routers");
                    load_weights::<B>(&root, r, device)
                })
                .collect::<Result<Vec<_>>>()?;
            let routers = resolve(&root, &manifest.routing.routers);
            Box::new(RouterSet {
                manifest: RoutersManifest::load(&routers)?,
                models: ModelSet::new(models),
                tokenizer_hash: manifest.tokenizer.hash.clone(),
            })
        } else {
            let dir = resolve(&root, &manifest.routing.routers);
            smalltalk_router::load_scorer::<B>(&dir, device)?
        };
        if inner.experts() != manifest.members.len() {
            return Err(MixtureError::mismatch(
                "routers",
                resolve(&root, &manifest.routing.routers),
                "number of routers (members)",
                manifest.members.len(),
                inner.experts(),
            ));
        }
        let offsets = manifest
            .members
            .iter()
            .map(|m| m.score_offset as f32)
            .collect();
        Ok(Mixture {
            scorer: OffsetScorer { inner, offsets },
            cache: ExpertCache::new(options.cache),
            tokenizer,
            manifest,
            file,
            root,
            device: device.clone(),
        })
    }

    /// The manifest it was opened from.
    pub fn manifest(&self) -> &MixtureManifest {
        &self.manifest
    }

    /// The manifest file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The mixture's tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The routers with the members' score offsets, member `i` as expert `i`.
    pub fn scorer(&self) -> &dyn PrefixScorer {
        &self.scorer
    }

    /// The expert cache's counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Route `text` by its first M̂ tokens (the manifest's M̂, or `prefix`).
    pub fn route(&self, text: &str, prefix: Option<usize>) -> Result<RoutingDecision> {
        let t = Instant::now();
        let ids = self.tokenizer.encode(text)?;
        self.route_ids(&ids, prefix, t)
    }

    fn route_ids(&self, ids: &[u32], prefix: Option<usize>, t: Instant) -> Result<RoutingDecision> {
        let prefix = prefix.unwrap_or(self.manifest.routing.prefix);
        let routed = route(&self.scorer, ids, prefix)?;
        let m = &self.manifest.members[routed.expert];
        Ok(RoutingDecision {
            member: m.name.clone(),
            index: routed.expert,
            prefix_tokens: routed.prefix_tokens,
            scores: self
                .manifest
                .members
                .iter()
                .zip(&routed.scores)
                .map(|(m, &s)| MemberScore {
                    name: m.name.clone(),
                    score: s as f64,
                })
                .collect(),
            seconds: t.elapsed().as_secs_f64(),
        })
    }

    /// The expert of member `name`, from the cache or loaded (its checksum verified).
    pub fn expert(&self, name: &str) -> Result<Arc<Lm<B>>> {
        Ok(self.expert_timed(name)?.0)
    }

    fn expert_timed(&self, name: &str) -> Result<(Arc<Lm<B>>, f64)> {
        let member = self.manifest.member(name).ok_or_else(|| {
            MixtureError::Config(format!(
                "no member `{name}` in {} (members: {})",
                self.file.display(),
                self.manifest.names().join(", ")
            ))
        })?;
        let t = Instant::now();
        let (model, loaded) = self.cache.get_or_load(name, || {
            let weights = resolve(&self.root, &member.expert.weights);
            if !weights.is_file() {
                return Err(MixtureError::missing(name, weights));
            }
            verify_checksum(name, &member.expert, &weights)?;
            load_weights::<B>(&self.root, &member.expert, &self.device)
        })?;
        Ok((
            model,
            if loaded {
                t.elapsed().as_secs_f64()
            } else {
                0.0
            },
        ))
    }

    /// The dense baseline `name` (`dense`, `dense-steps`), loaded (not cached), its checksum
    /// verified; `None` when the manifest lists none of that name.
    pub fn dense(&self, name: &str) -> Result<Option<Lm<B>>> {
        let Some(d) = self.manifest.dense_model(name) else {
            return Ok(None);
        };
        verify_checksum(name, &d.model, &resolve(&self.root, &d.model.weights))?;
        Ok(Some(load_weights::<B>(&self.root, &d.model, &self.device)?))
    }

    /// The row length member `name`'s expert trained on (from its checkpoint).
    pub fn trained_row_len(&self, name: &str) -> Result<usize> {
        let m = self
            .manifest
            .member(name)
            .ok_or_else(|| MixtureError::Config(format!("no member `{name}`")))?;
        checkpoint_of(&self.root, &m.expert)?
            .state
            .data
            .map(|d| d.row_len)
            .ok_or_else(|| MixtureError::Config(format!("member `{name}` has not trained yet")))
    }

    /// The mixture's log-likelihood of each text: routed by its prefix, then scored by the
    /// chosen expert only (texts longer than the expert's context are cut to it).
    pub fn score(&self, texts: &[&str]) -> Result<Vec<TextScore>> {
        texts
            .iter()
            .map(|text| {
                let t = Instant::now();
                let ids = self.tokenizer.encode(text)?;
                let routing = self.route_ids(&ids, None, t)?;
                let model = self.expert(&routing.member)?;
                let ids = &ids[..ids.len().min(model.config().max_seq_len + 1)];
                let lp = token_logprobs(&*model, ids, ids.len(), &ScoreOptions::default())?;
                Ok(TextScore {
                    routing,
                    targets: lp.len(),
                    logprob: lp.iter().map(|&x| x as f64).sum(),
                })
            })
            .collect()
    }

    /// Route `prompt`, load only the chosen expert, and sample a continuation; `on_text`
    /// receives the completion as it grows, in pieces that decode cleanly.
    pub fn generate(
        &self,
        prompt: &str,
        options: &GenerateOptions,
        mut on_text: impl FnMut(&str),
    ) -> Result<Generation> {
        let mut out = self.generate_batch(&[prompt], options, |_, piece| on_text(piece))?;
        Ok(out.remove(0))
    }

    /// [`Mixture::generate`] for several prompts: each routed on its own, the prompts grouped
    /// by chosen expert and each group decoded together with its expert loaded once;
    /// `on_text(prompt index, piece)` streams every completion.
    pub fn generate_batch(
        &self,
        prompts: &[&str],
        options: &GenerateOptions,
        mut on_text: impl FnMut(usize, &str),
    ) -> Result<Vec<Generation>> {
        options.validate()?;
        let mut routed = Vec::with_capacity(prompts.len());
        for prompt in prompts {
            if prompt.is_empty() {
                return Err(MixtureError::Config("the prompt is empty".into()));
            }
            let t = Instant::now();
            let ids = self.tokenizer.encode(prompt)?;
            let decision = self.route_ids(&ids, options.prefix, t)?;
            routed.push((ids, decision));
        }
        let mut results: Vec<Option<Generation>> = vec![None; prompts.len()];
        for (index, member) in self.manifest.members.iter().enumerate() {
            let group: Vec<usize> = (0..prompts.len())
                .filter(|&i| routed[i].1.index == index)
                .collect();
            if group.is_empty() {
                continue;
            }
            let (model, load_seconds) = self.expert_timed(&member.name)?;
            for &i in &group {
                check_prompt(prompts[i], &routed[i].0, &model)?;
            }
            let ids: Vec<Vec<u32>> = group.iter().map(|&i| routed[i].0.clone()).collect();
            let mut streams: Vec<TextStream> = group
                .iter()
                .map(|_| TextStream::new(&self.tokenizer))
                .collect();
            let eos = self.tokenizer.eos_id;
            let started = Instant::now();
            let mut first: Option<f64> = None;
            let tokens = smalltalk_lm::generate_batch(
                &model,
                &ids,
                options.max_tokens,
                &[eos],
                &options.sampling,
                |g, t| {
                    first.get_or_insert_with(|| started.elapsed().as_secs_f64());
                    if let Some(piece) = streams[g].push(t) {
                        on_text(group[g], &piece);
                    }
                },
            )?;
            let total = started.elapsed().as_secs_f64();
            let prefill = first.unwrap_or(total);
            for (&i, (tokens, stream)) in group.iter().zip(tokens.into_iter().zip(streams)) {
                let (completion, rest) = stream.finish()?;
                if let Some(rest) = rest {
                    on_text(i, &rest);
                }
                let routing = routed[i].1.clone();
                results[i] = Some(Generation {
                    timing: Timing {
                        routing_seconds: routing.seconds,
                        load_seconds,
                        prefill_seconds: prefill,
                        decode_seconds: total - prefill,
                        prompt_tokens: routed[i].0.len(),
                        new_tokens: tokens.len(),
                    },
                    routing,
                    tokens,
                    completion,
                });
            }
        }
        Ok(results
            .into_iter()
            .map(|g| g.expect("every prompt went to a member"))
            .collect())
    }
}

/// The model of a weights file (its config from the file's metadata).
fn load_weights<B: Backend>(root: &Path, model: &ModelRecord, device: &B::Device) -> Result<Lm<B>> {
    let weights = resolve(root, &model.weights);
    let config = Lm::<B>::config_of_file(&weights)?;
    Ok(Lm::from_safetensors(&config, &weights, device)?)
}
