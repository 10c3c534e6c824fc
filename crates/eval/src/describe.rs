//! Reports for people.

use crate::evaluate::EvalReport;

impl EvalReport {
    /// The report for people: the perplexity table, load, purity, segments and the sweep.
    pub fn describe(&self) -> String {
        let r = self;
        let mut s = format!(
            "{} experts, {} sequences ({} tokens), routed on {} tokens\n\
             | model | ppl | ppl after the prefix |\n|---|---|---|\n\
             | mixture (router argmax) | {:.3} | {:.3} |\n| dense | {:.3} | {:.3} |\n\
             | random routing | {:.3} | |\n| oracle routing | {:.3} | |\n",
            r.experts,
            r.sequences,
            r.tokens,
            r.prefix_tokens,
            r.mixture_ppl,
            r.mixture_ppl_excl_prefix,
            r.dense_ppl,
            r.dense_ppl_excl_prefix,
            r.random_ppl,
            r.oracle_ppl,
        );
        let load: Vec<String> = r.expert_load.iter().map(|l| format!("{l:.2}")).collect();
        s.push_str(&format!("expert load: {}", load.join(" / ")));
        if let Some(p) = r.routing_purity {
            s.push_str(&format!("; routing purity {p:.3}"));
        }
        for seg in &r.segments {
            s.push_str(&format!(
                "\n  expert {}: {} sequences, expert ppl {:.3} vs dense {:.3}",
                seg.expert, seg.sequences, seg.expert_ppl, seg.dense_ppl
            ));
        }
        for p in r.prefix_sweep.iter().skip(1) {
            s.push_str(&format!(
                "\n  prefix {:>4}: mixture ppl {:.3} (after prefix {:.3} vs dense {:.3})",
                p.prefix_tokens, p.mixture_ppl, p.mixture_ppl_excl_prefix, p.dense_ppl_excl_prefix
            ));
        }
        if !r.prefix_sweep_left_out.is_empty() {
            let left: Vec<String> = r
                .prefix_sweep_left_out
                .iter()
                .map(|m| m.to_string())
                .collect();
            s.push_str(&format!(
                "\nprefix sweep: left out {} (longer than the rows)",
                left.join(", ")
            ));
        }
        if r.skipped_documents > 0 {
            s.push_str(&format!(
                "\n{} documents skipped (empty: no token to score); not averaged in",
                r.skipped_documents
            ));
        }
        s
    }
}
