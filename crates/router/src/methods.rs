//! The baseline routing methods as routers folders (`tfidf`, `random`, `domain`; see
//! [`RouterMethod`]), and [`load_scorer`]: any routers folder as a `PrefixScorer`.

use std::path::Path;

use smalltalk_data::TextTokenizer;
use smalltalk_lm::burn::tensor::backend::Backend;
use smalltalk_routing::tfidf::TfidfRouter;
use smalltalk_routing::{DomainGroups, PrefixScorer, RandomScorer, ScorerError, TrainingRows};
use smalltalk_stage::checksum::hash_file;

use crate::config::{EmConfig, RouterMethod};
use crate::error::{Result, RouterError};
use crate::manifest::{RouterSet, RoutersManifest, MANIFEST_FORMAT, TOKENIZER_FILE};

/// Fit the baseline method `cfg.method` on the training rows into the routers folder `dir`
/// (which already holds the tokenizer) and write `routers.json`. A folder whose
/// `routers.json` exists is returned as it is.
pub fn fit_baseline(cfg: &EmConfig, rows: &TrainingRows, dir: &Path) -> Result<RoutersManifest> {
    if RoutersManifest::path(dir).exists() {
        return RoutersManifest::load(dir);
    }
    let mut manifest = RoutersManifest {
        format: MANIFEST_FORMAT.into(),
        method: cfg.method,
        domains: None,
        experts: cfg.experts,
        prefix_len: cfg.prefix_len,
        iterations: 0,
        model: cfg.model_config()?,
        steps: vec![],
        fingerprint: String::new(),
    };
    match cfg.method {
        RouterMethod::Em => unreachable!("EM routers are trained by run_em"),
        RouterMethod::Random => {
            manifest.fingerprint = format!("random:{}:{}", cfg.experts, cfg.seed);
        }
        RouterMethod::Domain => {
            let names = &rows.dataset.manifest().domains;
            let mut counts = vec![0u64; names.len()];
            for &l in &rows.labels {
                if let Some(c) = counts.get_mut(l as usize) {
                    *c += 1;
                }
            }
            let groups = DomainGroups::fit(names, &counts, cfg.experts)?;
            manifest.fingerprint = smalltalk_stage::checksum::hash_bytes(
                serde_json::to_string(&groups)
                    .expect("serialises")
                    .as_bytes(),
            );
            manifest.domains = Some(groups);
        }
        RouterMethod::Tfidf => {
            let tokenizer = TextTokenizer::load(&dir.join(TOKENIZER_FILE), None)?;
            let (mut texts, mut buf) = (Vec::new(), vec![0u32; rows.reader.row_len()]);
            let pad = Some(rows.reader.pad_id());
            for r in 0..rows.reader.len() {
                rows.reader.read_into(r, &mut buf);
                // The same text the scorer sees for a prefix (no pad, no end-of-document).
                texts.push(TfidfRouter::text_of_tokens(&tokenizer, &buf, pad)?);
            }
            let settings = cfg.tfidf.clone().unwrap_or_default();
            let hash = rows.tokenizer_hash().to_string();
            let (router, _) = TfidfRouter::fit(
                &texts,
                cfg.experts,
                &settings,
                tokenizer,
                hash,
                cfg.prefix_len,
            )?;
            router.save(dir)?;
            manifest.fingerprint = router.fingerprint();
        }
    }
    manifest.save(dir)?;
    Ok(manifest)
}

/// The routers of folder `dir` as a scorer, whatever their method: router LMs on backend `B`,
/// TF-IDF clusters, random routing or domain labels.
pub fn load_scorer<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<Box<dyn PrefixScorer + Send + Sync>> {
    let manifest = RoutersManifest::load(dir)?;
    if manifest.method == RouterMethod::Em {
        return Ok(Box::new(RouterSet::<B>::load(dir, device)?));
    }
    let tokenizer = dir.join(TOKENIZER_FILE);
    let tokenizer_hash = hash_file(&tokenizer)?;
    Ok(match manifest.method {
        RouterMethod::Em => unreachable!("loaded above"),
        RouterMethod::Random => Box::new(RandomScorer {
            experts: manifest.experts,
            seed: seed_of(&manifest)?,
            prefix_len: manifest.prefix_len,
            tokenizer_hash,
        }),
        RouterMethod::Domain => Box::new(DomainScorer {
            groups: manifest.domains.clone().ok_or_else(|| {
                RouterError::state(
                    RoutersManifest::path(dir),
                    "`domain` routers without domains",
                )
            })?,
            manifest,
            tokenizer_hash,
        }),
        RouterMethod::Tfidf => {
            let tok = TextTokenizer::load(&tokenizer, None)?;
            Box::new(TfidfRouter::load(dir, tok)?)
        }
    })
}

fn seed_of(m: &RoutersManifest) -> Result<u64> {
    m.fingerprint
        .rsplit(':')
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            RouterError::Config(format!("bad random router fingerprint {}", m.fingerprint))
        })
}

/// Routing by domain label (the `domain` method): scores cannot come from text.
struct DomainScorer {
    groups: DomainGroups,
    manifest: RoutersManifest,
    tokenizer_hash: String,
}

impl PrefixScorer for DomainScorer {
    fn experts(&self) -> usize {
        self.groups.experts
    }
    fn trained_prefix(&self) -> usize {
        self.manifest.prefix_len
    }
    fn fingerprint(&self) -> String {
        self.manifest.fingerprint.clone()
    }
    fn tokenizer_hash(&self) -> String {
        self.tokenizer_hash.clone()
    }
    fn score(
        &self,
        _: &[u32],
        _: usize,
        _: Option<u32>,
    ) -> std::result::Result<Vec<f32>, ScorerError> {
        Err(
            "the `domain` method routes by a row's domain label, not its text: use labelled data"
                .into(),
        )
    }
    fn domain_groups(&self) -> Option<&DomainGroups> {
        Some(&self.groups)
    }
}
