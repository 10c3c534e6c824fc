//! Read the study folder's results into one typed record (`study.json`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use smalltalk_stage::layout::expert_dir;

use smalltalk_report::study::{BudgetResult, RoutingCurve, SeriesResult, SplitPpl, Study};

use super::plan::{Series, StudyLayout};
use super::SPLITS;

/// The sizes the study's cost estimates and epoch counts need, from its config.
#[derive(Debug, Clone)]
pub struct StudyShape {
    experts: usize,
    batch: f64,
    seq_len: f64,
    router: [f64; 4],
    train_rows: f64,
    eval_rows: f64,
}

impl StudyShape {
    /// The shape of `config` (a SmallTalk config) with `experts` experts.
    pub fn from_config(config: &toml::Table, experts: usize) -> Result<Self> {
        let get = |path: &[&str], default: f64| -> f64 {
            let mut v: Option<&toml::Value> = None;
            let mut t = Some(config);
            for key in path {
                v = t.and_then(|t| t.get(*key));
                t = v.and_then(|v| v.as_table());
            }
            v.and_then(|v| v.as_float().or(v.as_integer().map(|i| i as f64)))
                .unwrap_or(default)
        };
        let docs = get(&["data", "max_documents"], 0.0);
        if docs == 0.0 {
            bail!("the study config must set [data] max_documents (the study's sample size)");
        }
        let seq_len = get(&["data", "seq_len"], 1024.0);
        // About 2,800 tokens per document at a small vocabulary (mix-large, 6.3 kB each).
        let rows = docs * (2800.0 / seq_len).ceil();
        let held_out =
            get(&["data", "split", "validation"], 0.05) + get(&["data", "split", "test"], 0.05);
        Ok(Self {
            experts,
            batch: get(&["experts", "train", "batch_size"], 128.0),
            seq_len,
            router: [
                get(&["routers", "iterations"], 1.0),
                get(&["routers", "steps_per_iteration"], 1.0),
                get(&["routers", "train", "batch_size"], 32.0),
                get(&["routers", "prefix_len"], 256.0),
            ],
            train_rows: rows * (1.0 - held_out),
            eval_rows: rows * held_out / 2.0,
        })
    }

    /// Training work of `steps` steps at `scale`× the experts' batch.
    pub fn train_cost(&self, steps: usize, scale: usize) -> f64 {
        steps as f64 * self.batch * scale as f64 * self.seq_len
    }

    /// Work of training `n` routers of `method`.
    pub fn routers_cost(&self, method: &str, n: usize) -> f64 {
        let [iterations, steps, batch, prefix] = self.router;
        let n = n as f64;
        match method {
            // Train each router, then score a chunk of E·K·batch rows with every router.
            "em" => {
                iterations * (steps * batch * prefix * n + n * steps * batch * prefix * n / 3.0)
            }
            "tfidf" => self.train_rows * self.seq_len / 20.0,
            _ => 0.0,
        }
    }

    /// Work of partitioning the training rows with `method`'s routers.
    pub fn partition_cost(&self, method: &str) -> f64 {
        match method {
            "em" => self.train_rows * 32.0 * self.experts as f64 / 3.0,
            "tfidf" => self.train_rows * 32.0 / 10.0,
            _ => 0.0,
        }
    }

    /// Work of routing one held-out split at every purity prefix with `n` routers.
    pub fn routing_cost(&self, n: usize) -> f64 {
        self.eval_rows * 504.0 * n as f64 / 3.0
    }

    /// Work of evaluating E experts and a dense model on one held-out split.
    pub fn eval_cost(&self, _split: &str) -> f64 {
        self.eval_rows * self.seq_len * (self.experts + 1) as f64 / 3.0
    }
}

/// `path` as untyped JSON (errors name the file, line and key).
fn read_json(path: &Path) -> Result<Value> {
    Ok(smalltalk_report::inputs::read_json(path)?)
}

/// Real tokens a run trained on (its metrics' last `tokens_seen`).
fn tokens_seen(run: &Path) -> Result<u64> {
    let path = run.join("metrics.jsonl");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v["tokens_seen"].as_u64())
        .with_context(|| format!("{}: no tokens_seen", path.display()))
}

fn split_ppl(eval: &Value, split: &str, key: &str) -> Result<SplitPpl> {
    let ppl = eval[key]
        .as_f64()
        .with_context(|| format!("eval without {key}"))?;
    let domains = eval["domains"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| Some((d["domain"].as_str()?.to_string(), d[key].as_f64()?)))
        .collect();
    Ok(SplitPpl {
        split: split.into(),
        ppl,
        domains,
    })
}

/// Read every result of the study folder.
pub fn collect(
    layout: &StudyLayout,
    budgets: &[usize],
    experts: usize,
    purity_experts: &[usize],
    shape: &StudyShape,
    command: &str,
) -> Result<Study> {
    let params = read_json(
        &layout
            .models(budgets[0], &Series::all()[0])
            .join("expert-00.json"),
    )?["params"]
        .as_u64()
        .context("expert result without params")? as usize;
    let data_manifest = read_json(&layout.data().join("manifest.json"))?;
    let rows_of = |split: &str| {
        data_manifest["splits"][split]["sequences"]
            .as_f64()
            .unwrap_or(0.0)
    };
    let mut out = Vec::new();
    for &steps in budgets {
        let mut series = Vec::new();
        for s in Series::all() {
            let dir = layout.models(steps, &s);
            let evals: Vec<(String, Value)> = SPLITS
                .iter()
                .map(|&split| {
                    Ok((
                        split.to_string(),
                        read_json(&layout.eval(steps, &s, split))?,
                    ))
                })
                .collect::<Result<_>>()?;
            let ppls = |key: &str| -> Result<Vec<SplitPpl>> {
                evals
                    .iter()
                    .map(|(split, v)| split_ppl(v, split, key))
                    .collect()
            };
            let Series { method, seed } = s;
            let part = read_json(&layout.partition(method).join("partition.json"))?;
            let mut tokens = 0;
            let mut epochs: f64 = 0.0;
            for e in 0..experts {
                tokens += tokens_seen(&expert_dir(&dir, e))?;
                let rows = part["expert_rows"][e]["sequences"]
                    .as_f64()
                    .unwrap_or(f64::NAN);
                epochs = epochs.max(steps as f64 * shape.batch / rows);
            }
            series.push(SeriesResult {
                kind: "mixture".into(),
                variant: method.into(),
                seed,
                tokens,
                tokens_per_param: tokens as f64 / params as f64,
                epochs,
                splits: ppls("mixture_ppl")?,
            });
            if method != "em" {
                continue;
            }
            // EM folders hold their own dense models: E× batch, and E× steps for seed 0.
            let mut dense = vec![("batch", "dense", "dense_ppl")];
            if seed == 0 {
                dense.push(("steps", "dense-steps", "dense_steps_ppl"));
            }
            for (variant, folder, key) in dense {
                let tokens = tokens_seen(&dir.join(folder))?;
                series.push(SeriesResult {
                    kind: "dense".into(),
                    variant: variant.into(),
                    seed,
                    tokens,
                    tokens_per_param: tokens as f64 / params as f64,
                    epochs: steps as f64 * shape.batch * experts as f64 / rows_of("train"),
                    splits: ppls(key)?,
                });
            }
        }
        out.push(BudgetResult {
            expert_steps: steps,
            series,
        });
    }
    let mut routing = Vec::new();
    for method in ["em", "tfidf"] {
        for &n in purity_experts {
            for split in SPLITS {
                let v = read_json(&layout.routing(method, n, split))?;
                let purity = v["prefixes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| {
                        Some((
                            p["prefix_tokens"].as_u64()? as usize,
                            p["routing_purity"].as_f64()?,
                        ))
                    })
                    .collect();
                routing.push(RoutingCurve {
                    method: method.into(),
                    experts: n,
                    split: split.into(),
                    purity,
                });
            }
        }
    }
    let data = serde_json::json!({
        "documents_read": data_manifest["documents_read"],
        "vocab_size": data_manifest["tokenizer"]["vocab_size"],
        "splits": data_manifest["splits"].as_object().map(|m| m.iter().map(|(k, v)| {
            (k.clone(), serde_json::json!({
                "documents": v["documents"], "sequences": v["sequences"], "tokens": v["tokens"],
            }))
        }).collect::<serde_json::Map<_, _>>()),
    });
    Ok(Study {
        command: command.into(),
        machine: crate::util::machine(),
        params,
        experts,
        batch: shape.batch as usize,
        seq_len: shape.seq_len as usize,
        router_em: [shape.router[0] as usize, shape.router[1] as usize],
        data,
        budgets: out,
        routing,
    })
}
