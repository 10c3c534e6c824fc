//! Routing alone, without experts: where the routers send held-out rows at each prefix
//! length, how evenly (load) and how cleanly by domain (purity). The paper routes by a short
//! prefix (§3: M̂ = 32 tokens at inference); this shows what each prefix length buys.

use std::path::Path;

use serde::{Deserialize, Serialize};
use smalltalk_lm::burn::tensor::backend::Backend;

use crate::error::{EvalError, Result};
use crate::evaluate::{router_scores, routes_load_purity};
use crate::stage::{eval_rows, EvalData};
use crate::text_router::TextRouter;

/// Routing at one prefix length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingAtPrefix {
    /// Prefix length M̂ in tokens.
    pub prefix_tokens: usize,
    /// Share of rows routed to each expert.
    pub expert_load: Vec<f64>,
    /// Share of labelled rows that sit in their expert's majority domain (`None` without
    /// labels).
    pub routing_purity: Option<f64>,
}

/// Routing of a held-out set at several prefix lengths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingQuality {
    /// Number of routers E.
    pub experts: usize,
    /// Rows routed.
    pub sequences: usize,
    /// One entry per prefix, in the order asked.
    pub prefixes: Vec<RoutingAtPrefix>,
    /// Sweep prefixes left out because they are longer than the rows (the first prefix is
    /// refused instead), as in the full evaluation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix_sweep_left_out: Vec<usize>,
}

impl RoutingQuality {
    /// Human-readable lines.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "routing of {} rows by {} routers\n",
            self.sequences, self.experts
        );
        for p in &self.prefixes {
            let purity = p
                .routing_purity
                .map_or("n/a (no domain labels)".to_string(), |x| format!("{x:.3}"));
            let max_load = p.expert_load.iter().copied().fold(0.0, f64::max);
            out += &format!(
                "  prefix {:>4}: purity {purity}, largest expert load {max_load:.3}\n",
                p.prefix_tokens
            );
        }
        if !self.prefix_sweep_left_out.is_empty() {
            let left: Vec<String> = self
                .prefix_sweep_left_out
                .iter()
                .map(|m| m.to_string())
                .collect();
            out += &format!(
                "prefix sweep: left out {} (longer than the rows)\n",
                left.join(", ")
            );
        }
        out
    }
}

/// Route every row of `data` with the routers folder `routers_dir` at each of `prefixes`
/// (rows of a file are each document's first `max(prefixes)` tokens).
pub fn routing_quality<B: Backend>(
    routers_dir: &Path,
    data: &EvalData<'_>,
    prefixes: &[usize],
    device: &B::Device,
) -> Result<RoutingQuality> {
    let longest = prefixes.iter().copied().max().unwrap_or(0);
    if prefixes.iter().any(|&m| m < 2) || prefixes.is_empty() {
        return Err(EvalError::Config(format!(
            "routing prefixes must be at least 2 tokens each, not {prefixes:?}"
        )));
    }
    let router = TextRouter::load::<B>(routers_dir, device)?;
    let crate::stage::EvalRows { rows, domains, .. } =
        eval_rows(&router.tokenizer, router.tokenizer_hash(), data, || {
            Ok(longest)
        })?;
    let (n, row_len) = (rows.num_sequences(), rows.row_len());
    // The rule of the full evaluation: the first prefix must fit in the rows; a sweep entry
    // that does not is left out and named.
    if prefixes[0] > row_len {
        return Err(EvalError::Config(format!(
            "routing prefix {} is longer than the rows ({row_len} tokens)",
            prefixes[0]
        )));
    }
    let (prefixes, left_out) = crate::stage::fit_prefixes(prefixes, row_len);
    let prefixes = prefixes.as_slice();
    let mut tokens = vec![0u32; n * row_len];
    for (r, row) in tokens.chunks_mut(row_len).enumerate() {
        rows.read_sequence(r, row);
    }
    let scorer = router.scorer.as_ref();
    let scores = router_scores(
        scorer,
        &tokens,
        row_len,
        rows.pad_id(),
        domains.as_ref(),
        prefixes,
    )?;
    let prefixes = scores
        .iter()
        .map(|(m, scores)| {
            let (_, load, purity) = routes_load_purity(scores, scorer.experts(), domains.as_ref())?;
            Ok(RoutingAtPrefix {
                prefix_tokens: *m,
                expert_load: load,
                routing_purity: purity,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RoutingQuality {
        experts: scorer.experts(),
        sequences: n,
        prefixes,
        prefix_sweep_left_out: left_out,
    })
}
