//! The regime study's results (`cargo xtask study`): when does a mixture of E experts beat a
//! dense model of the same inference cost trained on as many tokens (paper §4, Tab 2)? Typed
//! results, their crossover, and the study's `study.json`, `report.md` and plots.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::study_plots;

/// Perplexities of one series on one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitPpl {
    /// `validation` (documents of the training's own files) or `test` (unseen files).
    pub split: String,
    /// Perplexity.
    pub ppl: f64,
    /// Per domain: (domain, perplexity).
    pub domains: Vec<(String, f64)>,
}

/// One trained series at one budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesResult {
    /// `mixture` or `dense`.
    pub kind: String,
    /// Routing method (`em`, `tfidf`, `random`, `domain`) of a mixture, or dense protocol
    /// (`batch`: E× the batch, the same steps, the paper's; `steps`: E× the steps).
    pub variant: String,
    /// Seed of initialisation and data order.
    pub seed: u64,
    /// Real training tokens (all experts together for a mixture).
    pub tokens: u64,
    /// `tokens` per parameter of one model.
    pub tokens_per_param: f64,
    /// Passes over its training rows (the largest over the experts of a mixture).
    pub epochs: f64,
    /// Perplexities on the held-out splits.
    pub splits: Vec<SplitPpl>,
}

impl SeriesResult {
    /// Perplexity on `split`.
    pub fn ppl(&self, split: &str) -> Option<f64> {
        self.split(split).map(|s| s.ppl)
    }

    /// Results on `split`.
    pub fn split(&self, split: &str) -> Option<&SplitPpl> {
        self.splits.iter().find(|s| s.split == split)
    }

    /// Legend name, e.g. `mixture em (seed 1)` or `dense E× batch (seed 0)`.
    pub fn label(&self) -> String {
        match self.kind.as_str() {
            "dense" => format!("dense E× {} (seed {})", self.variant, self.seed),
            _ => format!("mixture {} (seed {})", self.variant, self.seed),
        }
    }
}

/// Every series of one budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetResult {
    /// Steps of each expert.
    pub expert_steps: usize,
    /// The series.
    pub series: Vec<SeriesResult>,
}

impl BudgetResult {
    /// The series of `kind` and `variant`, every seed.
    pub fn find(&self, kind: &str, variant: &str) -> Vec<&SeriesResult> {
        let same = |s: &&SeriesResult| s.kind == kind && s.variant == variant;
        self.series.iter().filter(same).collect()
    }

    /// Dense tokens per parameter of this budget (the paper's dense, seed 0).
    pub fn tokens_per_param(&self) -> f64 {
        self.find("dense", "batch")
            .first()
            .map_or(f64::NAN, |s| s.tokens_per_param)
    }

    /// The EM mixture's relative gap to a dense protocol on `split`, per seed, in percent
    /// (negative: the mixture wins). Seeds pair up against the paper's dense; the E×-steps
    /// dense has one seed, compared with each mixture seed.
    pub fn gaps(&self, split: &str, protocol: &str) -> Vec<f64> {
        let dense = self.find("dense", protocol);
        self.find("mixture", "em")
            .iter()
            .filter_map(|m| {
                let d = dense.iter().find(|d| d.seed == m.seed).or(dense.first())?;
                Some(100.0 * (m.ppl(split)? / d.ppl(split)? - 1.0))
            })
            .collect()
    }
}

/// Routing purity against prefix length of one routers folder on one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingCurve {
    /// `em` or `tfidf`.
    pub method: String,
    /// Routers.
    pub experts: usize,
    /// Split routed.
    pub split: String,
    /// (prefix tokens, purity).
    pub purity: Vec<(usize, f64)>,
}

/// The whole study (`study.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Study {
    /// The command that made it.
    pub command: String,
    /// The machine it ran on (CPU model, cores, instruction sets).
    pub machine: String,
    /// Parameters of each expert and of the dense model.
    pub params: usize,
    /// Experts per mixture.
    pub experts: usize,
    /// Rows per optimizer step of each expert (the paper's dense takes E× this, the E×-steps
    /// dense this). 0 in studies written before it was recorded.
    #[serde(default)]
    pub batch: usize,
    /// Tokens per row.
    #[serde(default)]
    pub seq_len: usize,
    /// EM router training: iterations × steps per iteration.
    #[serde(default)]
    pub router_em: [usize; 2],
    /// The dataset: documents, rows and tokens per split.
    pub data: serde_json::Value,
    /// Each budget, smallest first.
    pub budgets: Vec<BudgetResult>,
    /// Purity curves.
    pub routing: Vec<RoutingCurve>,
}

/// Where the EM mixture starts to beat a dense protocol on a split.
#[derive(Debug, Clone, PartialEq)]
pub enum Crossover {
    /// It wins at every budget.
    Always,
    /// It wins at no budget.
    Never,
    /// It loses up to `below` tokens/param and wins from `above` on (and at every larger
    /// budget); `at` interpolates the zero of the gap on a log scale.
    Between {
        /// The largest losing budget's tokens/param.
        below: f64,
        /// The smallest winning budget's tokens/param.
        above: f64,
        /// Interpolated crossover.
        at: f64,
    },
}

impl Study {
    /// The crossover of the EM mixture (mean gap over seeds) against `protocol` on `split`.
    pub fn crossover(&self, split: &str, protocol: &str) -> Crossover {
        let points: Vec<(f64, f64)> = self
            .budgets
            .iter()
            .filter_map(|b| {
                let g = b.gaps(split, protocol);
                (!g.is_empty()).then(|| (b.tokens_per_param(), mean(&g)))
            })
            .collect();
        let first_win = (0..points.len()).find(|&i| points[i..].iter().all(|p| p.1 < 0.0));
        match first_win {
            None => Crossover::Never,
            Some(0) => Crossover::Always,
            Some(i) => {
                let ((x0, g0), (x1, g1)) = (points[i - 1], points[i]);
                let t = g0 / (g0 - g1);
                let at = (x0.ln() + t * (x1.ln() - x0.ln())).exp();
                Crossover::Between {
                    below: x0,
                    above: x1,
                    at,
                }
            }
        }
    }

    /// Write `study.json`, `report.md` and the plots into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| crate::ReportError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let json = serde_json::to_string_pretty(self).expect("the study serialises");
        smalltalk_stage::atomic::write_file(&dir.join("study.json"), json.as_bytes())?;
        let plots = study_plots::draw_all(dir, self)?;
        smalltalk_stage::atomic::write_file(
            &dir.join("report.md"),
            self.markdown(&plots).as_bytes(),
        )?;
        Ok(())
    }

    /// One sentence on the crossover of `split` against `protocol`.
    pub fn crossover_sentence(&self, split: &str, protocol: &str) -> String {
        let name = protocol_name(protocol);
        let gap_at = |i: usize| {
            let b = &self.budgets[i];
            format!(
                "{} at {:.1} tokens/param",
                gap_text(&b.gaps(split, protocol)),
                b.tokens_per_param()
            )
        };
        let last = self.budgets.len().saturating_sub(1);
        match self.crossover(split, protocol) {
            Crossover::Always => format!(
                "On {split}, the EM mixture beats the {name} at every budget ({} … {}).",
                gap_at(0),
                gap_at(last)
            ),
            Crossover::Never => format!(
                "On {split}, the EM mixture does not beat the {name} at the largest budget, so \
                 there is no crossover within the budgets ({} … {}).",
                gap_at(0),
                gap_at(last)
            ),
            Crossover::Between { below, above, at } => format!(
                "On {split}, the EM mixture loses to the {name} up to {below:.1} tokens/param and \
                 wins from {above:.1} on (crossover ≈ {at:.1} tokens/param; {} … {}).",
                gap_at(0),
                gap_at(last)
            ),
        }
    }

    fn markdown(&self, plots: &[String]) -> String {
        let mut md = String::new();
        let w = &mut md;
        let _ = writeln!(w, "# Regime study: when does the mixture beat dense?\n");
        let _ = writeln!(w, "Made by `{}` on {}.\n", self.command, self.machine);
        let _ = writeln!(
            w,
            "Every model (each of the E = {} experts, every dense baseline) has {} parameters, \
             so the mixture and the dense model cost the same at inference. \"Tokens/param\" \
             is the real training tokens of the dense model (= of all experts together) per \
             parameter of one model. Validation holds single documents of files the training \
             also saw; test holds whole files that no training row comes from (the split \
             groups documents by `source`). Perplexities are per token of a {}-token vocabulary.\n",
            self.experts, self.params, self.data["vocab_size"]
        );
        if self.batch > 0 {
            let _ = writeln!(
                w,
                "Each expert takes optimizer steps of {b} × {l} tokens; the paper's dense model \
                 takes the same steps at {e}× the batch ({eb} × {l}), the E×-steps dense {e}× \
                 the steps at the experts' batch. EM routers: {} iterations × {} steps.\n",
                self.router_em[0],
                self.router_em[1],
                b = self.batch,
                l = self.seq_len,
                e = self.experts,
                eb = self.batch * self.experts,
            );
        }
        let _ = writeln!(w, "Data: `{}`\n", self.data);
        let _ = writeln!(w, "## Crossover\n");
        for split in ["validation", "test"] {
            for protocol in ["batch", "steps"] {
                let _ = writeln!(w, "- {}", self.crossover_sentence(split, protocol));
            }
        }
        for split in ["validation", "test"] {
            crate::study_tables::perplexity_table(w, self, split);
        }
        crate::study_tables::routing_table(w, self);
        crate::study_tables::domain_table(w, self);
        crate::study_tables::epochs_table(w, self);
        let _ = writeln!(w, "## Plots\n");
        for p in plots {
            let _ = writeln!(w, "![{p}]({p})\n");
        }
        md
    }
}

/// `dense E× batch (the paper's)` or `dense E× steps`.
pub fn protocol_name(protocol: &str) -> &'static str {
    match protocol {
        "batch" => "paper's dense (E× batch, same steps)",
        _ => "E×-steps dense (same batch)",
    }
}

/// Mean of `v` (NaN when empty).
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// `-3.1% (seeds -2.5%, -3.7%)`, or one number.
pub fn gap_text(gaps: &[f64]) -> String {
    match gaps {
        [] => "n/a".into(),
        [g] => format!("{g:+.1}%"),
        _ => format!(
            "{:+.1}% (seeds {})",
            mean(gaps),
            gaps.iter()
                .map(|g| format!("{g:+.1}%"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
