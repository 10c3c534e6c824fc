//! Routed evaluation (paper §3.1–3.4): route each held-out sequence by its first M̂ tokens to the
//! router with the highest prefix log-likelihood (plain argmax, no balancing), score the whole
//! sequence with that expert only, and compare with the dense model, random routing and an
//! oracle that picks each sequence's best expert by its own likelihood.
//!
//! [`evaluate`] runs the models once ([`EvalInputs`]: per-token log-probs of every expert and of
//! the dense model, router prefix scores for every prefix length asked for) and [`aggregate`]
//! turns those numbers into an [`EvalReport`]; the aggregation is a pure function, so it can be
//! checked by hand.

use serde::{Deserialize, Serialize};
use smalltalk_lm::burn::tensor::backend::Backend;
use smalltalk_lm::rng::SplitMix64;
use smalltalk_lm::{token_logprobs, Lm, ModelSet, ScoreOptions, SequenceSource};
use smalltalk_routing::route::argmax;
use smalltalk_routing::{domain_mix, purity, DomainGroups, DomainLabels, PrefixScorer};

use crate::error::{EvalError, Result};

/// Domain label of each row (`u32::MAX`: none) and the domain names.
pub type Domains = (Vec<u32>, Vec<String>);

/// What the models say about the held-out rows.
#[derive(Debug, Clone)]
pub struct EvalInputs {
    /// Number of experts, E.
    pub experts: usize,
    /// Targets per row (`row_len − 1`).
    pub targets: usize,
    /// `expert_logprobs[e][r · targets + t]`: log p(x_{t+1} | x_{0..=t}) of row `r` under
    /// expert `e`.
    pub expert_logprobs: Vec<Vec<f32>>,
    /// The same under the dense model.
    pub dense_logprobs: Vec<f32>,
    /// Same for the E×-steps dense baseline, when the run has one.
    pub dense_steps_logprobs: Option<Vec<f32>>,
    /// `valid[r · targets + t]`: whether that target counts (not padding).
    pub valid: Vec<bool>,
    /// For each routing prefix M̂: `(M̂, router scores [rows × E])`.
    pub router_scores: Vec<(usize, Vec<f32>)>,
    /// Domain label of each row and the names, when known.
    pub domains: Option<Domains>,
}

/// Perplexities of one routing prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrefixResult {
    /// Routing prefix M̂ in tokens.
    pub prefix_tokens: usize,
    /// Mixture perplexity over all targets.
    pub mixture_ppl: f64,
    /// Mixture perplexity over the targets after the prefix (tokens M̂+1…).
    pub mixture_ppl_excl_prefix: f64,
    /// Dense perplexity over the targets after the prefix.
    pub dense_ppl_excl_prefix: f64,
    /// Fraction of rows routed to each expert.
    pub expert_load: Vec<f64>,
    /// Share of labelled rows routed to their expert's majority domain.
    pub routing_purity: Option<f64>,
}

/// One expert's routed segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Expert index.
    pub expert: usize,
    /// Rows routed to it.
    pub sequences: usize,
    /// Its perplexity on them.
    pub expert_ppl: f64,
    /// The dense model's perplexity on the same rows.
    pub dense_ppl: f64,
}

/// Perplexities on the rows of one labelled domain, at the headline prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainResult {
    /// Domain label.
    pub domain: String,
    /// Rows of the domain.
    pub sequences: usize,
    /// Mixture perplexity on them (routed as everywhere else).
    pub mixture_ppl: f64,
    /// The dense model's perplexity on them.
    pub dense_ppl: f64,
    /// The E×-steps dense model's perplexity on them, when the run has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dense_steps_ppl: Option<f64>,
}

/// The evaluation, for the first prefix in [`EvalInputs::router_scores`] (the headline) and
/// every prefix of the sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// How the mixture routes: the routers folder's method (`em`, `tfidf`, `random`,
    /// `domain`), when the evaluation read one (`smalltalk eval` does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<String>,
    /// Number of experts.
    pub experts: usize,
    /// The members' names (`mixture.json`), in routing order: expert `i` is `members[i]`
    /// (empty in reports written before manifests existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// Members (and dense baselines) evaluated although they stopped before the end of their
    /// schedule (`--allow-unfinished`), as `name (step S of T)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unfinished: Vec<String>,
    /// Headline routing prefix M̂.
    pub prefix_tokens: usize,
    /// Held-out rows.
    pub sequences: usize,
    /// Targets counted (non-pad).
    pub tokens: usize,
    /// Mixture perplexity (router argmax on M̂ tokens).
    pub mixture_ppl: f64,
    /// Mixture perplexity after the prefix.
    pub mixture_ppl_excl_prefix: f64,
    /// Dense perplexity (the paper's protocol: E× the experts' batch, the same steps).
    pub dense_ppl: f64,
    /// Perplexity of the dense baseline trained with E× the steps at the experts' batch, when
    /// the run has one (`dense-steps/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dense_steps_ppl: Option<f64>,
    /// Dense perplexity after the prefix.
    pub dense_ppl_excl_prefix: f64,
    /// Perplexity with a uniformly random expert per row (same experts).
    pub random_ppl: f64,
    /// Perplexity with each row's best expert by its own likelihood (an upper bound).
    pub oracle_ppl: f64,
    /// Fraction of rows routed to each expert.
    pub expert_load: Vec<f64>,
    /// Domain purity of the routing, when rows carry labels.
    pub routing_purity: Option<f64>,
    /// Per-expert segments at the headline prefix.
    pub segments: Vec<Segment>,
    /// Every prefix evaluated (the headline first).
    pub prefix_sweep: Vec<PrefixResult>,
    /// Per labelled domain with rows here, in label order (empty when rows carry no labels).
    #[serde(default)]
    pub domains: Vec<DomainResult>,
    /// Documents of a held-out file that were skipped because they hold no token to score
    /// (empty text): counted here, never averaged in.
    #[serde(default)]
    pub skipped_documents: usize,
    /// Sweep prefixes left out because they are longer than the rows (the headline prefix is
    /// refused instead).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix_sweep_left_out: Vec<usize>,
}

/// Sum of −log p and count of valid targets of row `r` under `lp`, from target `from` on.
fn row_nll(lp: &[f32], valid: &[bool], targets: usize, r: usize, from: usize) -> (f64, usize) {
    let (lp, valid) = (
        &lp[r * targets..][..targets],
        &valid[r * targets..][..targets],
    );
    let mut sum = 0.0;
    let mut n = 0;
    for t in from..targets {
        if valid[t] {
            sum -= lp[t] as f64;
            n += 1;
        }
    }
    (sum, n)
}

fn ppl((sum, n): (f64, usize)) -> f64 {
    if n == 0 {
        f64::NAN
    } else {
        (sum / n as f64).exp()
    }
}

/// Perplexity of routing `choice[r]` (expert per row; `None` = the dense model), over rows
/// `rows`, from target `from` on.
fn routed_ppl(
    inp: &EvalInputs,
    choice: &dyn Fn(usize) -> Option<usize>,
    rows: &[usize],
    from: usize,
) -> f64 {
    rows_ppl(
        inp,
        &|r| match choice(r) {
            Some(e) => &inp.expert_logprobs[e],
            None => &inp.dense_logprobs,
        },
        rows,
        from,
    )
}

/// Perplexity over rows `rows`, from target `from` on, with row `r` scored by the log-probs
/// `lp_of(r)`.
fn rows_ppl<'a>(
    inp: &EvalInputs,
    lp_of: &dyn Fn(usize) -> &'a [f32],
    rows: &[usize],
    from: usize,
) -> f64 {
    let mut total = (0.0, 0usize);
    for &r in rows {
        let (s, n) = row_nll(lp_of(r), &inp.valid, inp.targets, r, from);
        total = (total.0 + s, total.1 + n);
    }
    ppl(total)
}

/// The report from the models' numbers (see the module docs). Random routing uses `seed`.
pub fn aggregate(inp: &EvalInputs, seed: u64) -> Result<EvalReport> {
    let e_count = inp.experts;
    let rows = inp.valid.len() / inp.targets.max(1);
    if inp.router_scores.is_empty() || e_count == 0 || rows == 0 {
        return Err(EvalError::Config(
            "nothing to evaluate (no rows, experts or prefixes)".into(),
        ));
    }
    let all: Vec<usize> = (0..rows).collect();
    let mut sweep = Vec::new();
    let mut headline_routes = Vec::new();
    for (i, (m, scores)) in inp.router_scores.iter().enumerate() {
        let (routes, load, purity) = routes_load_purity(scores, e_count, inp.domains.as_ref())?;
        let from = m.saturating_sub(1);
        sweep.push(PrefixResult {
            prefix_tokens: *m,
            mixture_ppl: routed_ppl(inp, &|r| Some(routes[r]), &all, 0),
            mixture_ppl_excl_prefix: routed_ppl(inp, &|r| Some(routes[r]), &all, from),
            dense_ppl_excl_prefix: routed_ppl(inp, &|_| None, &all, from),
            expert_load: load,
            routing_purity: purity,
        });
        if i == 0 {
            headline_routes = routes;
        }
    }
    let mut rng = SplitMix64::new(seed);
    let random: Vec<usize> = (0..rows)
        .map(|_| rng.below(e_count as u64) as usize)
        .collect();
    let oracle: Vec<usize> = (0..rows)
        .map(|r| {
            let nll = |e: usize| row_nll(&inp.expert_logprobs[e], &inp.valid, inp.targets, r, 0).0;
            (0..e_count).fold(0, |best, e| if nll(e) < nll(best) { e } else { best })
        })
        .collect();
    let segments = (0..e_count)
        .map(|e| {
            let mine: Vec<usize> = (0..rows).filter(|&r| headline_routes[r] == e).collect();
            Segment {
                expert: e,
                sequences: mine.len(),
                expert_ppl: routed_ppl(inp, &|_| Some(e), &mine, 0),
                dense_ppl: routed_ppl(inp, &|_| None, &mine, 0),
            }
        })
        .collect();
    let steps_ppl = |rows: &[usize]| {
        inp.dense_steps_logprobs
            .as_ref()
            .map(|lp| rows_ppl(inp, &|_| lp.as_slice(), rows, 0))
    };
    let domains = match &inp.domains {
        Some((labels, names)) => names
            .iter()
            .enumerate()
            .filter_map(|(d, name)| {
                let mine: Vec<usize> = (0..rows).filter(|&r| labels[r] as usize == d).collect();
                // A domain without rows in this split has no perplexity: left out.
                (!mine.is_empty()).then(|| DomainResult {
                    domain: name.clone(),
                    sequences: mine.len(),
                    mixture_ppl: routed_ppl(inp, &|r| Some(headline_routes[r]), &mine, 0),
                    dense_ppl: routed_ppl(inp, &|_| None, &mine, 0),
                    dense_steps_ppl: steps_ppl(&mine),
                })
            })
            .collect(),
        None => Vec::new(),
    };
    let head = &sweep[0];
    Ok(EvalReport {
        routing: None,
        experts: e_count,
        members: Vec::new(),
        unfinished: Vec::new(),
        prefix_tokens: head.prefix_tokens,
        sequences: rows,
        tokens: inp.valid.iter().filter(|&&v| v).count(),
        mixture_ppl: head.mixture_ppl,
        mixture_ppl_excl_prefix: head.mixture_ppl_excl_prefix,
        dense_ppl: routed_ppl(inp, &|_| None, &all, 0),
        dense_steps_ppl: steps_ppl(&all),
        dense_ppl_excl_prefix: head.dense_ppl_excl_prefix,
        random_ppl: routed_ppl(inp, &|r| Some(random[r]), &all, 0),
        oracle_ppl: routed_ppl(inp, &|r| Some(oracle[r]), &all, 0),
        expert_load: head.expert_load.clone(),
        routing_purity: head.routing_purity,
        segments,
        prefix_sweep: sweep,
        domains,
        skipped_documents: 0,
        prefix_sweep_left_out: Vec::new(),
    })
}

/// Router scores of the `domain` method: one-hot on each row's labelled domain's expert, the
/// same for every prefix.
fn label_scores(
    groups: &DomainGroups,
    domains: Option<&Domains>,
    prefixes: &[usize],
) -> Result<Vec<(usize, Vec<f32>)>> {
    let (labels, names) = domains.ok_or_else(|| {
        EvalError::Config(
            "the `domain` routers route by domain label, and these rows have none".into(),
        )
    })?;
    let experts = groups.route_labels(labels, names)?;
    let mut scores = vec![0f32; experts.len() * groups.experts];
    for (r, &e) in experts.iter().enumerate() {
        scores[r * groups.experts + e as usize] = 1.0;
    }
    Ok(prefixes.iter().map(|&m| (m, scores.clone())).collect())
}

/// The models of a run: its experts and its dense baselines.
pub struct Models<B: Backend> {
    /// Expert `e` at index `e`.
    pub experts: Vec<Lm<B>>,
    /// The paper's dense baseline (E× the experts' batch, the same steps).
    pub dense: Lm<B>,
    /// The dense baseline with E× the steps at the experts' batch, when the run has one.
    pub dense_steps: Option<Lm<B>>,
}

/// Rows routed per scoring call.
const ROUTE_BATCH: usize = 256;

/// Run the models on `rows` (each row scored whole by every expert and the dense model; routed
/// on each of `prefixes`, the first being the headline) and aggregate.
pub fn evaluate<B: Backend>(
    routers: &dyn PrefixScorer,
    models: &Models<B>,
    rows: &dyn SequenceSource,
    domains: Option<Domains>,
    prefixes: &[usize],
    seed: u64,
) -> Result<EvalReport> {
    let (n, row_len) = (rows.num_sequences(), rows.row_len());
    let experts = &models.experts;
    if experts.len() != routers.experts() {
        return Err(EvalError::Config(format!(
            "{} experts for {} routers",
            experts.len(),
            routers.experts()
        )));
    }
    if let Some(&bad) = prefixes.iter().find(|&&m| m < 2 || m > row_len) {
        return Err(EvalError::Config(format!(
            "routing prefix {bad} must be in 2..={row_len} (the row length)"
        )));
    }
    let mut tokens = vec![0u32; n * row_len];
    for (r, row) in tokens.chunks_mut(row_len).enumerate() {
        rows.read_sequence(r, row);
    }
    let pad = rows.pad_id();
    let options = ScoreOptions {
        pad_id: pad,
        ..ScoreOptions::default()
    };
    let valid: Vec<bool> = tokens
        .chunks(row_len)
        .flat_map(|row| row[1..].iter().map(|&t| Some(t) != pad))
        .collect();
    // Every expert scores every row once (stacked where that pays on `B`); the mixture and
    // the oracle both read these log-probs.
    let expert_logprobs =
        ModelSet::new(experts.clone()).token_logprobs(&tokens, row_len, &options)?;
    let dense_logprobs = token_logprobs(&models.dense, &tokens, row_len, &options)?;
    let dense_steps_logprobs = models
        .dense_steps
        .as_ref()
        .map(|m| token_logprobs(m, &tokens, row_len, &options))
        .transpose()?;
    let router_scores = router_scores(routers, &tokens, row_len, pad, domains.as_ref(), prefixes)?;
    let inputs = EvalInputs {
        experts: experts.len(),
        targets: row_len - 1,
        expert_logprobs,
        dense_logprobs,
        dense_steps_logprobs,
        valid,
        router_scores,
        domains,
    };
    aggregate(&inputs, seed)
}

/// The routers' scores of every row (`row_len` tokens each in `tokens`) at each prefix, row
/// by row (`[row][expert]`); label-based methods score from `domains`.
pub(crate) fn router_scores(
    routers: &dyn PrefixScorer,
    tokens: &[u32],
    row_len: usize,
    pad: Option<u32>,
    domains: Option<&Domains>,
    prefixes: &[usize],
) -> Result<Vec<(usize, Vec<f32>)>> {
    if let Some(groups) = routers.domain_groups() {
        return label_scores(groups, domains, prefixes);
    }
    let n = tokens.len() / row_len;
    // Each batch's rows are scored once, at the longest prefix; shorter ones are read from
    // the same pass (`PrefixScorer::score_lengths`).
    let longest = prefixes.iter().copied().max().unwrap_or(0);
    let mut scores = vec![Vec::with_capacity(n * routers.experts()); prefixes.len()];
    for batch in tokens.chunks(ROUTE_BATCH * row_len) {
        let rows: Vec<u32> = batch
            .chunks(row_len)
            .flat_map(|r| &r[..longest])
            .copied()
            .collect();
        let by_length = routers
            .score_lengths(&rows, longest, prefixes, pad)
            .map_err(smalltalk_routing::RoutingError::Scorer)?;
        for (all, s) in scores.iter_mut().zip(by_length) {
            all.extend(s);
        }
    }
    Ok(prefixes.iter().copied().zip(scores).collect())
}

/// The expert of every row (argmax of `scores`, `[row][expert]`), the share of rows each
/// expert gets, and the routing's domain purity when rows carry labels.
pub(crate) fn routes_load_purity(
    scores: &[f32],
    experts: usize,
    domains: Option<&Domains>,
) -> Result<(Vec<usize>, Vec<f64>, Option<f64>)> {
    let routes: Vec<usize> = argmax(scores, experts)?
        .into_iter()
        .map(|e| e as usize)
        .collect();
    let rows = routes.len();
    let mut load = vec![0usize; experts];
    routes.iter().for_each(|&e| load[e] += 1);
    let purity = domains.and_then(|(labels, names)| {
        let assignment: Vec<u32> = routes.iter().map(|&e| e as u32).collect();
        let d = DomainLabels { labels, names };
        let all: Vec<usize> = (0..rows).collect();
        purity(&domain_mix(&assignment, &all, experts, &d))
    });
    let load = load
        .iter()
        .map(|&c| c as f64 / rows.max(1) as f64)
        .collect();
    Ok((routes, load, purity))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two experts, two rows of three targets, known numbers.
    #[test]
    fn aggregation_matches_a_hand_computation() {
        let (a, b, c) = (-0.5f32, -1.0f32, -2.0f32);
        let inputs = EvalInputs {
            experts: 2,
            targets: 3,
            // Row 0 is easy for expert 0, row 1 for expert 1.
            expert_logprobs: vec![vec![a, a, a, c, c, c], vec![c, c, c, a, a, b]],
            dense_logprobs: vec![b, b, b, b, b, b],
            dense_steps_logprobs: Some(vec![a, a, a, c, c, c]),
            valid: vec![true, true, true, true, true, false], // row 1's last target is padding
            // Prefix 2: the routers send row 0 to expert 0 and row 1 to expert 1.
            router_scores: vec![
                (2, vec![-1.0, -3.0, -4.0, -2.0]),
                (3, vec![-3.0, -1.0, -4.0, -2.0]),
            ],
            // Domain z has no rows here: it gets no per-domain line (no NaN).
            domains: Some((vec![0, 1], vec!["x".into(), "y".into(), "z".into()])),
        };
        let r = aggregate(&inputs, 1).unwrap();
        let close = |x: f64, want: f64| assert!((x - want).abs() < 1e-9, "{x} vs {want}");
        // Mixture: targets a,a,a (row 0, expert 0) + a,a (row 1, expert 1; 3rd is padding).
        close(r.mixture_ppl, (0.5f64 * 5.0 / 5.0).exp());
        // Excluding the prefix of 2 tokens: targets 1.. of each row.
        close(r.mixture_ppl_excl_prefix, 0.5f64.exp());
        close(r.dense_ppl, 1.0f64.exp());
        // The E×-steps dense: a,a,a on row 0, c,c on row 1's two valid targets.
        close(
            r.dense_steps_ppl.unwrap(),
            ((0.5f64 * 3.0 + 2.0 * 2.0) / 5.0).exp(),
        );
        close(r.domains[1].dense_steps_ppl.unwrap(), 2.0f64.exp());
        close(r.oracle_ppl, 0.5f64.exp());
        assert_eq!(r.expert_load, vec![0.5, 0.5]);
        assert_eq!(r.routing_purity, Some(1.0));
        assert_eq!(r.tokens, 5);
        assert_eq!(
            r.segments[0],
            Segment {
                expert: 0,
                sequences: 1,
                expert_ppl: 0.5f64.exp(),
                dense_ppl: 1.0f64.exp()
            }
        );
        // Per domain: row 0 is domain x (expert 0), row 1 domain y (expert 1).
        assert_eq!(r.domains.len(), 2);
        assert_eq!(
            (r.domains[0].domain.as_str(), r.domains[0].sequences),
            ("x", 1)
        );
        close(r.domains[0].mixture_ppl, 0.5f64.exp());
        close(r.domains[1].dense_ppl, 1.0f64.exp());
        // Prefix 3 routes both rows to expert 1: row 0 costs c,c,c, row 1 a,a.
        let p3 = &r.prefix_sweep[1];
        close(p3.mixture_ppl, ((2.0f64 * 3.0 + 0.5 * 2.0) / 5.0).exp());
        assert_eq!(p3.expert_load, vec![0.0, 1.0]);
        assert_eq!(p3.routing_purity, Some(0.5));
        // Random routing lies between the oracle and the worst assignment (e^2).
        assert!(r.random_ppl >= r.oracle_ppl - 1e-12 && r.random_ppl <= 2.0f64.exp() + 1e-9);
    }
}
