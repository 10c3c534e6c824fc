//! The study report's Markdown tables.

use std::fmt::Write as _;

use crate::study::{gap_text, BudgetResult, Study};

fn cell(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.2}"))
}

/// Perplexity of every series at every budget on `split`, with the EM mixture's gaps.
pub(crate) fn perplexity_table(w: &mut String, study: &Study, split: &str) {
    let _ = writeln!(w, "\n## Perplexity on {split}\n");
    let Some(first) = study.budgets.first() else {
        return;
    };
    let labels: Vec<String> = first.series.iter().map(|s| s.label()).collect();
    let _ = writeln!(
        w,
        "| expert steps | tokens/param | {} | EM vs E×-batch dense | EM vs E×-steps dense |",
        labels.join(" | ")
    );
    let _ = writeln!(w, "|{}", "---|".repeat(labels.len() + 4));
    for b in &study.budgets {
        let ppls: Vec<String> = b.series.iter().map(|s| cell(s.ppl(split))).collect();
        let _ = writeln!(
            w,
            "| {} | {:.1} | {} | {} | {} |",
            b.expert_steps,
            b.tokens_per_param(),
            ppls.join(" | "),
            gap_text(&b.gaps(split, "batch")),
            gap_text(&b.gaps(split, "steps"))
        );
    }
}

/// Routing purity against prefix length, EM routers and TF-IDF, every split.
pub(crate) fn routing_table(w: &mut String, study: &Study) {
    let _ = writeln!(w, "\n## Routing purity against prefix length\n");
    let _ = writeln!(
        w,
        "Share of held-out rows routed to an expert whose majority domain is theirs. With 8 \
         domains and E = 4, each expert holds about two domains, so purity stays near 0.5 even \
         for a clean split; at E = 8 a perfect split scores 1.\n"
    );
    let mut prefixes: Vec<usize> = study
        .routing
        .iter()
        .flat_map(|c| c.purity.iter().map(|p| p.0))
        .collect();
    prefixes.sort_unstable();
    prefixes.dedup();
    let heads: Vec<String> = prefixes.iter().map(|m| format!("M̂ = {m}")).collect();
    let _ = writeln!(w, "| routers | E | split | {} |", heads.join(" | "));
    let _ = writeln!(w, "|{}", "---|".repeat(prefixes.len() + 3));
    for c in &study.routing {
        let at = |m: usize| cell(c.purity.iter().find(|p| p.0 == m).map(|p| p.1));
        let cells: Vec<String> = prefixes.iter().map(|&m| at(m)).collect();
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} |",
            c.method,
            c.experts,
            c.split,
            cells.join(" | ")
        );
    }
}

/// Per-domain perplexity of the EM mixture and the paper's dense at the largest budget.
pub(crate) fn domain_table(w: &mut String, study: &Study) {
    let Some(b) = study.budgets.last() else {
        return;
    };
    let (mix, dense) = (b.find("mixture", "em"), b.find("dense", "batch"));
    let (Some(mix), Some(dense)) = (mix.first(), dense.first()) else {
        return;
    };
    let _ = writeln!(
        w,
        "\n## Per domain at the largest budget ({} expert steps, {:.1} tokens/param, seed 0)\n",
        b.expert_steps,
        b.tokens_per_param()
    );
    let _ = writeln!(
        w,
        "| domain | validation: mixture | dense E× batch | gap | test: mixture | dense E× batch | gap |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|");
    let domains: Vec<String> = mix
        .splits
        .iter()
        .flat_map(|s| s.domains.iter().map(|d| d.0.clone()))
        .fold(Vec::new(), |mut v, d| {
            if !v.contains(&d) {
                v.push(d);
            }
            v
        });
    for d in domains {
        let get = |s: &crate::study::SeriesResult, split: &str| {
            s.split(split)
                .and_then(|x| x.domains.iter().find(|(n, _)| *n == d).map(|x| x.1))
        };
        let mut row = format!("| {d} |");
        for split in ["validation", "test"] {
            let (m, de) = (get(mix, split), get(dense, split));
            let gap = match (m, de) {
                (Some(m), Some(de)) => format!("{:+.1}%", 100.0 * (m / de - 1.0)),
                _ => "n/a".into(),
            };
            let _ = write!(row, " {} | {} | {gap} |", cell(m), cell(de));
        }
        let _ = writeln!(w, "{row}");
    }
}

/// Passes over the training rows of every series (repetition is a different regime from the
/// paper's, which never repeats data).
pub(crate) fn epochs_table(w: &mut String, study: &Study) {
    let _ = writeln!(w, "\n## Epochs over each model's training rows\n");
    let Some(first) = study.budgets.first() else {
        return;
    };
    let labels: Vec<String> = first.series.iter().map(|s| s.label()).collect();
    let _ = writeln!(w, "| expert steps | {} |", labels.join(" | "));
    let _ = writeln!(w, "|{}", "---|".repeat(labels.len() + 1));
    let row = |b: &BudgetResult| -> Vec<String> {
        b.series
            .iter()
            .map(|s| format!("{:.2}", s.epochs))
            .collect()
    };
    for b in &study.budgets {
        let _ = writeln!(w, "| {} | {} |", b.expert_steps, row(b).join(" | "));
    }
    let _ = writeln!(
        w,
        "\nA mixture's number is its most repeated expert (the largest epochs over the E parts).\n"
    );
}
