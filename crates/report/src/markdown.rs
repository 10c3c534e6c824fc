//! `report.md`: the sections of the run report, from the typed inputs.

use std::fmt::Write as _;

use crate::config::EffectiveConfig;
use crate::inputs::{EvalReport, Inputs};
use crate::plots::{DOMAIN_MIX, EM_NLL, EM_PURITY, PREFIX_SWEEP};
use crate::Report;

/// A config file given to `smalltalk report`, quoted in the report.
pub(crate) struct QuotedConfig {
    /// Its file name (without the folder).
    pub name: String,
    /// Its text.
    pub text: String,
}

/// A number with three decimals (`NaN`, `inf` as they are).
fn num(x: f64) -> String {
    format!("{x:.3}")
}

/// An optional number: `n/a` when absent.
fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".into(), num)
}

/// A list of numbers: `[0.500, 0.500]`.
fn list(xs: &[f64]) -> String {
    let items: Vec<String> = xs.iter().map(|&x| num(x)).collect();
    format!("[{}]", items.join(", "))
}

/// The headline perplexity table (markdown) of the validation evaluation.
pub(crate) fn headline(r: &Report) -> String {
    table(&r.eval)
}

/// How the mixture of `ev` routes, for the table's first row.
fn routing(ev: &EvalReport) -> String {
    let m = ev.prefix_tokens;
    match ev.routing.as_deref() {
        Some("domain") => "by the rows' domain labels: an oracle, not a router".into(),
        Some("tfidf") => format!("TF-IDF nearest centroid on {m} tokens"),
        Some("random") => "a random partition, routed at random".into(),
        _ => format!("router argmax on {m} tokens"),
    }
}

/// The perplexity table of one evaluation: the mixture, each dense protocol, random and
/// oracle routing.
fn table(ev: &EvalReport) -> String {
    let (m, e) = (ev.prefix_tokens, ev.experts);
    let routing = routing(ev);
    let steps = ev.dense_steps_ppl.map_or(String::new(), |p| {
        format!(
            "| dense, E× the steps at the experts' batch (same total tokens) | {} | |\n",
            num(p)
        )
    });
    format!(
        "| model | perplexity | after the {m}-token prefix |\n|---|---|---|\n\
         | mixture of {e} experts ({routing}) | {} | {} |\n\
         | dense, E× the experts' batch, same steps (the paper's protocol; same total tokens) | {} | {} |\n\
         {steps}| random routing (same experts) | {} | |\n\
         | oracle routing (best expert per sequence) | {} | |\n",
        num(ev.mixture_ppl),
        num(ev.mixture_ppl_excl_prefix),
        num(ev.dense_ppl),
        num(ev.dense_ppl_excl_prefix),
        num(ev.random_ppl),
        num(ev.oracle_ppl),
    )
}

/// One line per dense protocol: the mixture's perplexity relative to it, and which is lower.
fn margins(ev: &EvalReport) -> String {
    let line = |name: &str, dense: f64| {
        let gap = 100.0 * (ev.mixture_ppl / dense - 1.0);
        let verdict = if gap < 0.0 { "lower" } else { "NOT lower" };
        format!("- against the {name}: {gap:+.1}% (the mixture's perplexity is **{verdict}**)\n")
    };
    let mut out = line("paper's dense (E× batch)", ev.dense_ppl);
    if let Some(p) = ev.dense_steps_ppl {
        out += &line("E×-steps dense", p);
    }
    out
}

/// The whole `report.md`.
pub(crate) fn render(
    r: &Report,
    i: &Inputs,
    plots: &[&str],
    config: &EffectiveConfig,
    quoted: Option<&QuotedConfig>,
) -> String {
    let plot = |name: &str, alt: &str| {
        if plots.contains(&name) {
            format!("![{alt}]({name})\n\n")
        } else {
            String::new()
        }
    };
    let ev = &r.eval;
    let mut md = String::from("# SmallTalk pipeline report\n\n");
    let backend = r
        .backend
        .as_deref()
        .map_or(String::new(), |b| format!(" Evaluated on the {b} backend."));
    let _ = writeln!(
        md,
        "Held-out: {} sequences, {} tokens.{backend} Produced by `smalltalk report` (run by \
         `cargo xtask pipeline`).\n\n## Perplexity\n\n{}",
        ev.sequences,
        ev.tokens,
        headline(r)
    );
    let _ = writeln!(md, "The mixture on validation:\n\n{}", margins(ev));
    if let Some(test) = &r.test {
        let _ = writeln!(
            md,
            "## Test split: text from files the training never saw\n\n{} sequences, {} tokens \
             (when the dataset's `[data.split]` holds out whole groups for test; validation \
             then holds single documents of the training's own files, which flatters models \
             that learned those files).\n\n{}\nThe mixture on test:\n\n{}",
            test.sequences,
            test.tokens,
            table(test),
            margins(test)
        );
    }
    if let Some(b) = &r.branched {
        let change = |x: f64, y: f64| format!("{:+.1}%", 100.0 * (x / y - 1.0));
        let _ = writeln!(
            md,
            "## Branch-trained: experts and dense from the same pretrained weights\n\n\
             The run also trained every expert and the paper's dense model from `[experts] \
             init` (`experts-branched/`, as BTM and c-BTM do), with the same routers, data and \
             steps. On validation:\n\n\
             | model | from scratch | branch-trained | change |\n|---|---|---|---|\n\
             | mixture (router argmax on {m} tokens) | {} | {} | {} |\n\
             | dense, E× the experts' batch (the paper's) | {} | {} | {} |\n\n\
             The branch-trained mixture against its dense model: {}.\n",
            num(ev.mixture_ppl),
            num(b.mixture_ppl),
            change(b.mixture_ppl, ev.mixture_ppl),
            num(ev.dense_ppl),
            num(b.dense_ppl),
            change(b.dense_ppl, ev.dense_ppl),
            change(b.mixture_ppl, b.dense_ppl),
            m = b.prefix_tokens,
        );
    }
    crate::budget::section(&mut md, &r.models);

    md.push_str(
        "## Per-expert segments (rows routed to each expert)\n\n\
         | expert | sequences | expert ppl | dense ppl on the same rows |\n|---|---|---|---|\n",
    );
    for s in &ev.segments {
        let (e, n) = (s.expert, s.sequences);
        let _ = writeln!(
            md,
            "| {e} | {n} | {} | {} |",
            num(s.expert_ppl),
            num(s.dense_ppl)
        );
    }
    let _ = writeln!(
        md,
        "\nExpert load (held-out): {}; routing purity: {}.\n",
        list(&ev.expert_load),
        opt(ev.routing_purity)
    );

    md.push_str(
        "## Routing prefix sweep\n\n| prefix | mixture ppl | mixture ppl after prefix | \
         dense ppl after prefix | purity |\n|---|---|---|---|---|\n",
    );
    for p in &ev.prefix_sweep {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            p.prefix_tokens,
            num(p.mixture_ppl),
            num(p.mixture_ppl_excl_prefix),
            num(p.dense_ppl_excl_prefix),
            opt(p.routing_purity)
        );
    }
    md.push('\n');
    md.push_str(&plot(PREFIX_SWEEP, "prefix sweep"));

    md.push_str("## Router EM\n\n");
    if i.em.is_empty() {
        let method = ev.routing.as_deref().unwrap_or("em");
        let _ = writeln!(
            md,
            "None: this run routes by `{method}` (`[routers] method`), not by router LMs \
             trained by EM.\n"
        );
    } else {
        md.push_str(
            "| iteration | train loss per router | best prefix NLL/token | argmax load | \
             changed | purity | seconds |\n|---|---|---|---|---|---|---|\n",
        );
    }
    for m in &i.em {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {:.1} |",
            m.iteration,
            list(&m.train_loss),
            num(m.mean_best_nll),
            list(&m.argmax_load),
            opt(m.changed_fraction),
            opt(m.purity),
            m.seconds
        );
    }
    md.push('\n');
    md.push_str(&plot(EM_NLL, "EM NLL"));
    md.push_str(&plot(EM_PURITY, "EM purity"));

    expert_rows(&mut md, i);
    md.push_str(&plot(DOMAIN_MIX, "domain mix"));
    dataset(&mut md, i);

    md.push_str("## Wall time per stage\n\n| stage | seconds |\n|---|---|\n");
    for t in &r.stage_seconds {
        let _ = writeln!(md, "| {} | {:.1} |", t.stage, t.seconds);
    }
    if !r.stage_seconds.is_empty() {
        let total: f64 = r.stage_seconds.iter().map(|t| t.seconds).sum();
        let _ = writeln!(md, "| total | {total:.1} |");
    }

    md.push_str("\n## Configuration\n\n");
    if config.sources.is_empty() {
        md.push_str("No stage wrote a `config.toml` into its folder.\n");
    } else {
        let _ = writeln!(
            md,
            "Each stage's effective settings, defaults included (also in `config.toml` beside \
             this report), from {}:\n\n```toml\n{}```",
            config
                .sources
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", "),
            config.text
        );
    }
    if let Some(q) = quoted {
        let text = q.text.trim_end();
        let _ = writeln!(
            md,
            "\nThe config file given to the run, `{}`:\n\n```toml\n{text}\n```",
            q.name
        );
    }
    md
}

/// `## Expert rows`: rows and domain mix of each expert's part of the partition.
fn expert_rows(md: &mut String, i: &Inputs) {
    let p = &i.partition;
    let names = p.domains.as_deref().unwrap_or_default();
    md.push_str("## Expert rows\n\n");
    let _ = writeln!(
        md,
        "| expert | sequences |{}\n|---|---|{}",
        names.iter().map(|n| format!(" {n} |")).collect::<String>(),
        "---|".repeat(names.len())
    );
    for (e, s) in p.expert_rows.iter().enumerate() {
        let row = p
            .domain_mix
            .as_ref()
            .and_then(|mix| mix.get(e))
            .map(|r| r.iter().map(|c| format!(" {c} |")).collect::<String>())
            .unwrap_or_else(|| " |".repeat(names.len()));
        let _ = writeln!(md, "| {e} | {} |{row}", s.sequences);
    }
    let _ = writeln!(
        md,
        "\nPartition of {} rows with a {}-token prefix: purity {}, argmax load {}, best \
         router's prefix NLL per token {}.\n",
        p.rows,
        p.prefix_len,
        opt(p.purity),
        list(&p.argmax_load),
        num(p.mean_best_nll)
    );
}

/// `## Dataset`: documents, rows and tokens per split; the tokenizer and packing.
fn dataset(md: &mut String, i: &Inputs) {
    let m = &i.manifest;
    md.push_str("## Dataset\n\n| split | documents | sequences | tokens |\n|---|---|---|---|\n");
    for (split, s) in &m.splits {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            split.name(),
            s.documents,
            s.sequences,
            s.tokens
        );
    }
    let packing = serde_json::to_value(m.packing)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| format!("{:?}", m.packing));
    let domains = if m.domains.is_empty() {
        "none".to_string()
    } else {
        m.domains.join(", ")
    };
    let _ = writeln!(
        md,
        "\nVocabulary {}, sequence length {}, packing {packing}; domains: {domains}.\n",
        m.tokenizer.vocab_size, m.seq_len
    );
}
