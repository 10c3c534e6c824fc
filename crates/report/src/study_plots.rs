//! The study's plots: perplexity against tokens per parameter (one plot per split, the
//! crossover marked), routing purity against prefix length, and the per-domain gap at the
//! largest budget.

use std::path::Path;

use plotters::coord::combinators::IntoLogRange;
use plotters::coord::ranged1d::{IntoSegmentedCoord, SegmentValue};
use plotters::prelude::*;

use crate::error::Result;
use crate::plots::{color, padded_range, tick, titled, write_svg, Area, Drawn, Key, MARK};
use crate::study::{mean, Crossover, Study};

/// A named line of points, drawn with its points; `dots` are extra points (e.g. each seed).
struct Line {
    name: String,
    points: Vec<(f64, f64)>,
    dots: Vec<(f64, f64)>,
}

/// Write every plot into `dir`; returns the file names.
pub(crate) fn draw_all(dir: &Path, study: &Study) -> Result<Vec<String>> {
    let mut written = Vec::new();
    for split in ["validation", "test"] {
        let name = format!("perplexity_{split}.svg");
        write_svg(&dir.join(&name), &|a: &Area| perplexity(a, study, split))?;
        written.push(name);
    }
    if !study.routing.is_empty() {
        write_svg(&dir.join("purity.svg"), &|a: &Area| purity(a, study))?;
        written.push("purity.svg".into());
    }
    write_svg(&dir.join("domains.svg"), &|a: &Area| domains(a, study))?;
    written.push("domains.svg".into());
    Ok(written)
}

/// Lines on a log-x chart; `rule` marks one x value.
fn log_x_lines(
    area: &Area,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    lines: &[Line],
    rule: Option<(String, f64)>,
) -> Drawn {
    let mut entries: Vec<(String, Key)> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| (l.name.clone(), Key::Line(color(i))))
        .collect();
    if let Some((name, _)) = &rule {
        entries.push((name.clone(), Key::Rule));
    }
    let area = titled(area, title, &entries)?;
    let all = || lines.iter().flat_map(|l| l.points.iter().chain(&l.dots));
    let xs = padded_range(all().map(|p| p.0.ln()));
    let y = padded_range(all().map(|p| p.1));
    let mut chart = ChartBuilder::on(&area)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((xs.start.exp()..xs.end.exp()).log_scale(), y.clone())?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .draw()?;
    if let Some((_, x)) = rule {
        chart.draw_series(LineSeries::new(
            vec![(x, y.start), (x, y.end)],
            MARK.stroke_width(2),
        ))?;
    }
    for (i, l) in lines.iter().enumerate() {
        let c = color(i);
        chart.draw_series(LineSeries::new(l.points.clone(), c.stroke_width(2)))?;
        chart.draw_series(l.points.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
        chart.draw_series(l.dots.iter().map(|&p| Circle::new(p, 4, c.stroke_width(1))))?;
    }
    Ok(())
}

/// Perplexity against tokens/param: one line per (kind, variant), the mean over seeds, each
/// seed as a ring; the EM mixture's crossover with the paper's dense marked.
fn perplexity(area: &Area, study: &Study, split: &str) -> Drawn {
    let mut keys: Vec<(String, String)> = Vec::new();
    for s in study.budgets.iter().flat_map(|b| &b.series) {
        let key = (s.kind.clone(), s.variant.clone());
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let lines: Vec<Line> = keys
        .iter()
        .map(|(kind, variant)| {
            let mut line = Line {
                name: match kind.as_str() {
                    "dense" => format!("dense, E× {variant}"),
                    _ => format!("mixture, {variant}"),
                },
                points: Vec::new(),
                dots: Vec::new(),
            };
            for b in &study.budgets {
                let x = b.tokens_per_param();
                let ys: Vec<f64> = b
                    .find(kind, variant)
                    .iter()
                    .filter_map(|s| s.ppl(split))
                    .collect();
                if ys.len() > 1 {
                    line.dots.extend(ys.iter().map(|&y| (x, y)));
                }
                if !ys.is_empty() {
                    line.points.push((x, mean(&ys)));
                }
            }
            line
        })
        .collect();
    let rule = match study.crossover(split, "batch") {
        Crossover::Between { at, .. } => {
            Some((format!("crossover vs E×-batch dense ≈ {at:.1}"), at))
        }
        _ => None,
    };
    log_x_lines(
        area,
        &format!("perplexity on {split} against training tokens per parameter"),
        ("dense tokens per parameter (log scale)", "perplexity"),
        &lines,
        rule,
    )
}

/// Routing purity against prefix length, every routers folder on the test split.
fn purity(area: &Area, study: &Study) -> Drawn {
    let lines: Vec<Line> = study
        .routing
        .iter()
        .filter(|c| c.split == "test")
        .map(|c| Line {
            name: format!("{} routers, E = {}", c.method, c.experts),
            points: c.purity.iter().map(|&(m, p)| (m as f64, p)).collect(),
            dots: Vec::new(),
        })
        .collect();
    log_x_lines(
        area,
        "routing purity on test (unseen files) against prefix length",
        ("routing prefix in tokens (log scale)", "purity"),
        &lines,
        None,
    )
}

/// The EM mixture's gap to the paper's dense per domain at the largest budget (seed 0): one
/// bar per split.
fn domains(area: &Area, study: &Study) -> Drawn {
    let splits = ["validation", "test"];
    let entries: Vec<(String, Key)> = splits
        .iter()
        .enumerate()
        .map(|(i, s)| (s.to_string(), Key::Bar(color(i))))
        .collect();
    let area = titled(
        area,
        "mixture vs paper's dense per domain, largest budget (negative: mixture wins)",
        &entries,
    )?;
    let gaps: Vec<(String, [f64; 2])> = study
        .budgets
        .last()
        .and_then(|b| {
            let (m, d) = (b.find("mixture", "em"), b.find("dense", "batch"));
            let (m, d) = (*m.first()?, *d.first()?);
            let names: Vec<String> = m
                .split("validation")?
                .domains
                .iter()
                .map(|x| x.0.clone())
                .collect();
            let gap = |split: &str, name: &str| -> f64 {
                let get = |s: &crate::study::SeriesResult| {
                    s.split(split)?
                        .domains
                        .iter()
                        .find(|x| x.0 == name)
                        .map(|x| x.1)
                };
                match (get(m), get(d)) {
                    (Some(a), Some(b)) => 100.0 * (a / b - 1.0),
                    _ => f64::NAN,
                }
            };
            Some(
                names
                    .iter()
                    .map(|n| (n.clone(), [gap("validation", n), gap("test", n)]))
                    .collect(),
            )
        })
        .unwrap_or_default();
    let n = gaps.len().max(1) as i32;
    let y = padded_range(gaps.iter().flat_map(|g| g.1).chain([0.0]));
    let mut chart = ChartBuilder::on(&area)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((0..n - 1).into_segmented(), y)?;
    let names: Vec<String> = gaps.iter().map(|g| g.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(names.len().max(1))
        .y_desc("perplexity gap (%)")
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                names.get(*i as usize).cloned().unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .y_label_formatter(&tick)
        .draw()?;
    for (s, _) in splits.iter().enumerate() {
        let c = color(s);
        let bars = gaps
            .iter()
            .enumerate()
            .filter(|(_, g)| g.1[s].is_finite())
            .map(|(i, g)| {
                let i = i as i32;
                let right = if i + 1 < n {
                    SegmentValue::Exact(i + 1)
                } else {
                    SegmentValue::Last
                };
                let mut bar =
                    Rectangle::new([(SegmentValue::Exact(i), 0.0), (right, g.1[s])], c.filled());
                // Two bars side by side in each domain's slot.
                let (l, r) = if s == 0 { (6, 40) } else { (40, 6) };
                bar.set_margin(0, 0, l, r);
                bar
            });
        chart.draw_series(bars)?;
    }
    Ok(())
}
