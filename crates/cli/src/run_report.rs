//! `smalltalk report`: the run report. `report.md` (configuration, dataset, router EM curve,
//! shards and their domain mix, perplexity tables, per-expert segments, prefix sweep, wall
//! times), SVG plots beside it, and `report.json` (the evaluation keys plus the rest) for
//! scripts. Every number comes from a file a stage wrote into the run folder:
//! `data/manifest.json`, `routers/em/metrics.jsonl`, `partition/partition.json`, `eval.json`
//! (`smalltalk eval --out`) and optionally `stage_seconds.json` (`[{"stage", "seconds"}]`).
//! It also writes `config.toml`: every stage's effective settings, defaults included.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};

/// `report` flags.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The run folder: data/, routers/, partition/, eval.json (and stage_seconds.json).
    #[arg(long)]
    run: std::path::PathBuf,
    /// The config file the run used (copied into the report).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
}

/// Run `smalltalk report`: write the report and print the headline table.
pub fn run(args: ReportArgs, out: &crate::report::Output) -> Result<()> {
    let eval = read_json(&args.run.join("eval.json"))?;
    let times: Vec<(String, f64)> = match read_json(&args.run.join("stage_seconds.json")) {
        Ok(v) => v
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    t["stage"].as_str().unwrap_or("?").to_string(),
                    f(&t["seconds"]),
                )
            })
            .collect(),
        Err(_) => vec![],
    };
    // Every stage's effective settings, defaults included, in one file beside the report.
    let config = crate::config::Config::load_or_default(args.config.as_deref())?;
    let effective = args.run.join("config.toml");
    smalltalk_data::atomic::write_file(&effective, config.to_toml().as_bytes())?;
    let inputs = ReportInputs {
        run: &args.run,
        config: args.config.as_deref(),
        eval: &eval,
        times: &times,
    };
    let headline = write_report(&inputs)?;
    let report = read_json(&args.run.join("report.json"))?;
    out.result(&report, || {
        format!(
            "{headline}
report: {}",
            args.run.join("report.md").display()
        )
    });
    Ok(())
}

/// What the report is made of.
pub struct ReportInputs<'a> {
    /// The run folder (data/, routers/, partition/).
    pub run: &'a Path,
    /// The config file the run used.
    pub config: Option<&'a Path>,
    /// `smalltalk eval` output.
    pub eval: &'a Value,
    /// Wall time of each stage, seconds.
    pub times: &'a [(String, f64)],
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

const COLORS: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

/// A line chart of `series` (name, points) as an SVG document.
fn line_chart(title: &str, x_label: &str, series: &[(&str, Vec<(f64, f64)>)]) -> String {
    let (w, h, pad) = (560.0, 300.0, 48.0);
    let pts = series
        .iter()
        .flat_map(|(_, p)| p.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let sx = |x: f64| pad + (x - x0) / (x1 - x0) * (w - 2.0 * pad);
    let sy = |y: f64| h - pad - (y - y0) / (y1 - y0) * (h - 2.0 * pad);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/><text x=\"{pad}\" y=\"16\" font-size=\"13\">{title}</text>\
         <line x1=\"{pad}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/><line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{b}\" stroke=\"black\"/>\
         <text x=\"{r}\" y=\"{lx}\" text-anchor=\"end\">{x_label}</text>\
         <text x=\"4\" y=\"{yt}\">{y1:.3}</text><text x=\"4\" y=\"{b}\">{y0:.3}</text>\
         <text x=\"{pad}\" y=\"{lx}\">{x0}</text>",
        b = h - pad,
        r = w - pad,
        lx = h - pad + 16.0,
        yt = pad + 4.0,
    );
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\
             <text x=\"{}\" y=\"{}\" fill=\"{color}\">{name}</text>",
            path.join(" "),
            w - pad - 150.0,
            pad + 14.0 * i as f64,
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Stacked bars: one bar per expert, one segment per domain (`mix[expert][domain]`).
fn stacked_bars(title: &str, names: &[String], mix: &[Vec<f64>]) -> String {
    let (w, h, pad) = (560.0, 300.0, 48.0);
    let bar = (w - 2.0 * pad - 160.0) / mix.len().max(1) as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/><text x=\"{pad}\" y=\"16\" font-size=\"13\">{title}</text>"
    );
    for (e, row) in mix.iter().enumerate() {
        let total: f64 = row.iter().sum::<f64>().max(1.0);
        let mut y = h - pad;
        let x = pad + e as f64 * bar;
        for (d, &c) in row.iter().enumerate() {
            let hh = c / total * (h - 2.0 * pad);
            y -= hh;
            let _ = write!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{hh:.1}\" fill=\"{}\"/>",
                bar * 0.8,
                COLORS[d % COLORS.len()]
            );
        }
        let _ = write!(
            svg,
            "<text x=\"{x:.1}\" y=\"{}\">expert {e}</text>",
            h - pad + 14.0
        );
    }
    for (d, name) in names.iter().enumerate() {
        let _ = write!(
            svg,
            "<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{name}</text>",
            w - pad - 140.0,
            pad + 14.0 * d as f64,
            COLORS[d % COLORS.len()],
            w - pad - 125.0,
            pad + 14.0 * d as f64 + 9.0,
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Write report.md, report.json and the plots into the run folder; returns the headline table.
pub fn write_report(i: &ReportInputs<'_>) -> Result<String> {
    let run = i.run;
    let manifest = read_json(&run.join("data/manifest.json"))?;
    let partition = read_json(&run.join("partition/partition.json"))?;
    let em_text = std::fs::read_to_string(run.join("routers/em/metrics.jsonl"))
        .context("routers/em/metrics.jsonl")?;
    let em: Vec<Value> = em_text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let ev = i.eval;
    let mut md = String::from("# SmallTalk pipeline report\n\n");
    let headline = format!(
        "| model | perplexity | after the {m}-token prefix |\n|---|---|---|\n\
         | mixture of {e} experts (router argmax on {m} tokens) | {:.3} | {:.3} |\n\
         | dense baseline (same size, same total tokens) | {:.3} | {:.3} |\n\
         | random routing (same experts) | {:.3} | |\n| oracle routing (best expert per sequence) | {:.3} | |\n",
        f(&ev["mixture_ppl"]), f(&ev["mixture_ppl_excl_prefix"]), f(&ev["dense_ppl"]),
        f(&ev["dense_ppl_excl_prefix"]), f(&ev["random_ppl"]), f(&ev["oracle_ppl"]),
        m = ev["prefix_tokens"], e = ev["experts"],
    );
    let _ = writeln!(
        md,
        "Held-out: {} sequences, {} tokens. Produced by `smalltalk report` (run by `cargo xtask pipeline`).\n\n## Perplexity\n\n{headline}",
        ev["sequences"], ev["tokens"]
    );
    let verdict = if f(&ev["mixture_ppl"]) < f(&ev["dense_ppl"]) {
        "lower"
    } else {
        "NOT lower"
    };
    let _ = writeln!(
        md,
        "The mixture's perplexity is **{verdict}** than the dense model's on this run.\n"
    );
    md.push_str("## Per-expert segments (rows routed to each expert)\n\n| expert | sequences | expert ppl | dense ppl on the same rows |\n|---|---|---|---|\n");
    for s in ev["segments"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | {} | {:.3} | {:.3} |",
            s["expert"],
            s["sequences"],
            f(&s["expert_ppl"]),
            f(&s["dense_ppl"])
        );
    }
    let _ = writeln!(
        md,
        "\nExpert load (held-out): {}; routing purity: {}.\n",
        ev["expert_load"], ev["routing_purity"]
    );
    md.push_str("## Routing prefix sweep\n\n| prefix | mixture ppl | mixture ppl after prefix | dense ppl after prefix | purity |\n|---|---|---|---|---|\n");
    let mut sweep = Vec::new();
    for p in ev["prefix_sweep"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | {:.3} | {:.3} | {:.3} | {} |",
            p["prefix_tokens"],
            f(&p["mixture_ppl"]),
            f(&p["mixture_ppl_excl_prefix"]),
            f(&p["dense_ppl_excl_prefix"]),
            p["routing_purity"]
        );
        sweep.push((f(&p["prefix_tokens"]), f(&p["mixture_ppl"])));
    }
    sweep.sort_by(|a, b| a.0.total_cmp(&b.0));
    std::fs::write(
        run.join("prefix_sweep.svg"),
        line_chart(
            "mixture perplexity vs routing prefix",
            "prefix tokens",
            &[("mixture ppl", sweep)],
        ),
    )?;
    md.push_str("\n![prefix sweep](prefix_sweep.svg)\n\n## Router EM\n\n| iteration | train loss per router | best prefix NLL/token | argmax load | changed | purity |\n|---|---|---|---|---|---|\n");
    let mut nll = Vec::new();
    let mut purity = Vec::new();
    for m in &em {
        let it = f(&m["iteration"]);
        let _ = writeln!(
            md,
            "| {} | {} | {:.3} | {} | {} | {} |",
            m["iteration"],
            m["train_loss"],
            f(&m["mean_best_nll"]),
            m["argmax_load"],
            m["changed_fraction"],
            m["purity"]
        );
        nll.push((it, f(&m["mean_best_nll"])));
        purity.push((it, f(&m["purity"])));
    }
    std::fs::write(
        run.join("em_nll.svg"),
        line_chart(
            "router EM: best prefix NLL per token",
            "iteration",
            &[("best NLL", nll)],
        ),
    )?;
    std::fs::write(
        run.join("em_purity.svg"),
        line_chart(
            "router EM: domain purity of the next chunk",
            "iteration",
            &[("purity", purity)],
        ),
    )?;
    md.push_str("\n![EM NLL](em_nll.svg) ![EM purity](em_purity.svg)\n\n## Shards\n\n");
    let names: Vec<String> = partition["domains"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let mix: Vec<Vec<f64>> = partition["domain_mix"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| row.as_array().into_iter().flatten().map(f).collect())
        .collect();
    let _ = writeln!(
        md,
        "| expert | sequences | {} |\n|---|---|{}",
        names.join(" | "),
        "---|".repeat(names.len())
    );
    for (e, s) in partition["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let row = mix
            .get(e)
            .map(|r| {
                r.iter()
                    .map(|c| format!("{c}"))
                    .collect::<Vec<_>>()
                    .join(" | ")
            })
            .unwrap_or_default();
        let _ = writeln!(md, "| {e} | {} | {row} |", s["sequences"]);
    }
    let _ = writeln!(
        md,
        "\nPartition purity {}, argmax load {}.\n",
        partition["purity"], partition["argmax_load"]
    );
    if !mix.is_empty() {
        std::fs::write(
            run.join("domain_mix.svg"),
            stacked_bars("domain mix of each expert's shard", &names, &mix),
        )?;
        md.push_str("![domain mix](domain_mix.svg)\n\n");
    }
    md.push_str("## Dataset\n\n| split | documents | sequences | tokens |\n|---|---|---|---|\n");
    if let Some(splits) = manifest["splits"].as_object() {
        for (name, s) in splits {
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} |",
                s["documents"], s["sequences"], s["tokens"]
            );
        }
    }
    let _ = writeln!(
        md,
        "\nVocabulary {}, sequence length {}, packing {}.\n",
        manifest["tokenizer"]["vocab_size"], manifest["seq_len"], manifest["packing"]
    );
    md.push_str("## Wall time per stage\n\n| stage | seconds |\n|---|---|\n");
    for (name, secs) in i.times {
        let _ = writeln!(md, "| {name} | {secs:.1} |");
    }
    if let Some(path) = i.config {
        let config =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let _ = writeln!(
            md,
            "\n## Configuration\n\n`{}`:\n\n```toml\n{}```",
            path.file_name().map_or(path.display().to_string(), |n| n
                .to_string_lossy()
                .into_owned()),
            config
        );
    }
    std::fs::write(run.join("report.md"), md)?;
    let mut report = ev.clone();
    report["stage_seconds"] = json!(i
        .times
        .iter()
        .map(|(n, s)| json!({"stage": n, "seconds": s}))
        .collect::<Vec<_>>());
    report["router_em"] = json!(em);
    report["shard_sizes"] = json!(partition["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["sequences"].clone())
        .collect::<Vec<_>>());
    std::fs::write(
        run.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(headline)
}
