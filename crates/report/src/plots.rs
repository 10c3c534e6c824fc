//! The report's plots, drawn with plotters' SVG backend (text is left to the viewer's fonts, so
//! no font is read here): mixture perplexity against the routing prefix, router EM's best
//! prefix NLL and domain purity per iteration, and each expert shard's domain mix.
//!
//! Each plot is a title, a legend strip under it, and the chart with its axes and ticks.

use std::error::Error;
use std::ops::Range;

use plotters::coord::combinators::{BindKeyPoints, IntoLogRange};
use plotters::coord::ranged1d::{IntoSegmentedCoord, SegmentValue};
use plotters::coord::Shift;
use plotters::prelude::*;
use smalltalk_stage::RunLayout;

use crate::error::{ReportError, Result};
use crate::inputs::{EvalReport, Inputs, IterationMetrics};

/// Mixture perplexity against the routing prefix.
pub(crate) const PREFIX_SWEEP: &str = "prefix_sweep.svg";
/// Router EM: best prefix NLL per token, per iteration.
pub(crate) const EM_NLL: &str = "em_nll.svg";
/// Router EM: domain purity of the next chunk, per iteration.
pub(crate) const EM_PURITY: &str = "em_purity.svg";
/// Domain mix of each expert's shard.
pub(crate) const DOMAIN_MIX: &str = "domain_mix.svg";

pub(crate) const SIZE: (u32, u32) = (720, 420);
pub(crate) const FONT: &str = "sans-serif";
const COLORS: [RGBColor; 10] = [
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xed, 0xc9, 0x48),
    RGBColor(0xb0, 0x7a, 0xa1),
    RGBColor(0xff, 0x9d, 0xa7),
    RGBColor(0x9c, 0x75, 0x5f),
    RGBColor(0xba, 0xb0, 0xac),
];
pub(crate) const MARK: RGBColor = RGBColor(0x55, 0x55, 0x55);

pub(crate) type Drawn = std::result::Result<(), Box<dyn Error>>;
pub(crate) type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
pub(crate) type Plot<'a> = Box<dyn Fn(&Area) -> Drawn + 'a>;

/// How a legend entry is drawn.
#[derive(Clone, Copy)]
pub(crate) enum Key {
    /// A line with a dot: a data series.
    Line(RGBColor),
    /// A filled square: a bar segment.
    Bar(RGBColor),
    /// A short vertical rule: a marked x value.
    Rule,
}

/// Draw every plot the inputs allow into the run folder; returns the files written (a plot
/// without data, such as purity without domain labels, is left out).
pub(crate) fn draw_all(layout: &RunLayout, inputs: &Inputs) -> Result<Vec<&'static str>> {
    let eval = &inputs.eval.report;
    let iterations = |f: fn(&IterationMetrics) -> Option<f64>| -> Vec<(i32, f64)> {
        let points = inputs.em.iter();
        points
            .filter_map(|m| f(m).map(|y| (m.iteration as i32, y)))
            .collect()
    };
    let nll = iterations(|m| Some(m.mean_best_nll));
    let purity = iterations(|m| m.purity);
    let names = inputs.partition.domains.clone().unwrap_or_default();
    let mix = inputs.partition.domain_mix.clone().unwrap_or_default();
    let mut plots: Vec<(&'static str, Plot)> = Vec::new();
    if !eval.prefix_sweep.is_empty() {
        plots.push((PREFIX_SWEEP, Box::new(|a: &Area| prefix_sweep(a, eval))));
    }
    if !nll.is_empty() {
        let title = "router EM: best router's prefix NLL per token";
        let series = ("mean over the next chunk", nll);
        let draw = move |a: &Area| per_iteration(a, title, "NLL per token", &series, None);
        plots.push((EM_NLL, Box::new(draw)));
    }
    if !purity.is_empty() {
        let title = "router EM: domain purity of the next chunk";
        let series = (
            "share of labelled rows in their part's majority domain",
            purity,
        );
        let draw = move |a: &Area| per_iteration(a, title, "purity", &series, Some(0.0..1.0));
        plots.push((EM_PURITY, Box::new(draw)));
    }
    if !mix.is_empty() && !names.is_empty() {
        plots.push((
            DOMAIN_MIX,
            Box::new(move |a: &Area| domain_mix(a, &names, &mix)),
        ));
    }
    let mut written = Vec::new();
    for (name, draw) in plots {
        write_svg(&layout.report_file(name), draw.as_ref())?;
        written.push(name);
    }
    Ok(written)
}

/// Draw `draw` into an SVG file at `path` (atomically).
pub(crate) fn write_svg(path: &std::path::Path, draw: &dyn Fn(&Area) -> Drawn) -> Result<()> {
    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw(&area)
            .and_then(|()| Ok(area.present()?))
            .map_err(|e| ReportError::Plot {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
    }
    crate::write_clean(path, svg.as_bytes())
}

/// The white area under `title` with the legend `entries` in a strip below it; returns the
/// area left for the chart.
pub(crate) fn titled<'a>(
    area: &Area<'a>,
    title: &str,
    entries: &[(String, Key)],
) -> Result<Area<'a>, Box<dyn Error>> {
    area.fill(&WHITE)?;
    let area = area.titled(title, (FONT, 20))?;
    let width = area.dim_in_pixel().0 as i32;
    // Lay the entries out left to right, wrapping; the text width is estimated.
    let mut at = Vec::new();
    let (mut x, mut y) = (70, 4);
    for (label, _) in entries {
        let w = 34 + 7 * label.chars().count() as i32 + 18;
        if x + w > width && x > 70 {
            (x, y) = (70, y + 20);
        }
        at.push((x, y));
        x += w;
    }
    let (strip, chart) = area.split_vertically(y as u32 + 22);
    for ((label, key), &(x, y)) in entries.iter().zip(&at) {
        let mid = y + 8;
        match *key {
            Key::Line(c) => {
                strip.draw(&PathElement::new(
                    vec![(x, mid), (x + 26, mid)],
                    c.stroke_width(2),
                ))?;
                strip.draw(&Circle::new((x + 13, mid), 3, c.filled()))?;
            }
            Key::Bar(c) => strip.draw(&Rectangle::new(
                [(x + 6, y + 1), (x + 20, y + 15)],
                c.filled(),
            ))?,
            Key::Rule => strip.draw(&PathElement::new(
                vec![(x + 13, y), (x + 13, y + 16)],
                MARK.stroke_width(2),
            ))?,
        }
        strip.draw(&Text::new(label.clone(), (x + 34, y + 2), (FONT, 13)))?;
    }
    Ok(chart)
}

/// `lo..hi` around the finite values, a little wider so no point sits on the frame.
pub(crate) fn padded_range(values: impl Iterator<Item = f64>) -> Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return 0.0..1.0;
    }
    let pad = if hi > lo {
        (hi - lo) * 0.08
    } else {
        lo.abs().max(1.0) * 0.05
    };
    lo - pad..hi + pad
}

/// Tick label of a value: no decimals for whole numbers, else up to three.
pub(crate) fn tick(v: &f64) -> String {
    let text = format!("{v:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

pub(crate) fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// Perplexities against the routing prefix on a log2 axis, the headline prefix marked.
fn prefix_sweep(area: &Area, eval: &EvalReport) -> Drawn {
    let mut sweep: Vec<_> = eval
        .prefix_sweep
        .iter()
        .filter(|p| p.prefix_tokens > 0)
        .collect();
    sweep.sort_by_key(|p| p.prefix_tokens);
    // Powers of two from 8 (or below the smallest prefix) to 256 (or above the largest).
    let lo = sweep.first().map_or(8, |p| p.prefix_tokens).min(8);
    let lo = 1usize << lo.ilog2();
    let hi = sweep
        .last()
        .map_or(256, |p| p.prefix_tokens)
        .max(256)
        .next_power_of_two();
    let ticks: Vec<f64> = std::iter::successors(Some(lo as f64), |t| Some(t * 2.0))
        .take_while(|t| *t <= hi as f64)
        .collect();
    let x = (lo as f64 * 0.85..hi as f64 * 1.15).log_scale().base(2.0);
    let line = |f: fn(&crate::inputs::PrefixResult) -> f64| -> Vec<(f64, f64)> {
        let points = sweep.iter().map(|p| (p.prefix_tokens as f64, f(p)));
        points.filter(|(_, y)| y.is_finite()).collect()
    };
    let series = [
        ("mixture, all tokens", line(|p| p.mixture_ppl)),
        (
            "mixture, tokens after the prefix",
            line(|p| p.mixture_ppl_excl_prefix),
        ),
        (
            "dense, tokens after the prefix",
            line(|p| p.dense_ppl_excl_prefix),
        ),
    ];
    let mut entries: Vec<(String, Key)> = series
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (name.to_string(), Key::Line(color(i))))
        .collect();
    entries.push((
        format!("headline prefix ({} tokens)", eval.prefix_tokens),
        Key::Rule,
    ));
    let area = titled(area, "mixture perplexity vs routing prefix", &entries)?;
    let y = padded_range(series.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y)));
    let mut chart = ChartBuilder::on(&area)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x.with_key_points(ticks), y.clone())?;
    chart
        .configure_mesh()
        .x_desc("routing prefix (tokens, log scale)")
        .y_desc("perplexity")
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .draw()?;
    let m = eval.prefix_tokens as f64;
    chart.draw_series(LineSeries::new(
        vec![(m, y.start), (m, y.end)],
        MARK.stroke_width(2),
    ))?;
    for (i, (_, points)) in series.iter().enumerate() {
        let c = color(i);
        chart.draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))?;
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
    }
    if eval.mixture_ppl.is_finite() {
        chart.draw_series([Circle::new((m, eval.mixture_ppl), 6, BLACK.stroke_width(2))])?;
    }
    Ok(())
}

/// One series over EM iterations (integer ticks on x).
fn per_iteration(
    area: &Area,
    title: &str,
    y_desc: &str,
    (name, points): &(&str, Vec<(i32, f64)>),
    y: Option<Range<f64>>,
) -> Drawn {
    let points: Vec<(i32, f64)> = points
        .iter()
        .copied()
        .filter(|(_, y)| y.is_finite())
        .collect();
    let last = points.iter().map(|(x, _)| *x).max().unwrap_or(1).max(1);
    let ticks: Vec<i32> = (1..=last).step_by((last as usize).div_ceil(10)).collect();
    let y = y.unwrap_or_else(|| padded_range(points.iter().map(|(_, y)| *y)));
    let c = color(0);
    let area = titled(area, title, &[(name.to_string(), Key::Line(c))])?;
    let mut chart = ChartBuilder::on(&area)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((0..last + 1).with_key_points(ticks), y)?;
    chart
        .configure_mesh()
        .x_desc("EM iteration")
        .y_desc(y_desc)
        .y_label_formatter(&tick)
        .draw()?;
    chart.draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))?;
    chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
    Ok(())
}

/// One stacked bar per expert: the share of each domain in its shard (`mix[expert][domain]`).
fn domain_mix(area: &Area, names: &[String], mix: &[Vec<u64>]) -> Drawn {
    let entries: Vec<(String, Key)> = names
        .iter()
        .enumerate()
        .map(|(d, n)| (n.clone(), Key::Bar(color(d))))
        .collect();
    let area = titled(area, "domain mix of each expert's shard", &entries)?;
    let experts = mix.len() as i32;
    let mut chart = ChartBuilder::on(&area)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((0..experts - 1).into_segmented(), 0.0..1.0)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(mix.len().min(16))
        .x_desc("expert")
        .y_desc("share of the shard's labelled rows")
        .x_label_formatter(&|e| match e {
            SegmentValue::CenterOf(e) | SegmentValue::Exact(e) => format!("expert {e}"),
            SegmentValue::Last => String::new(),
        })
        .y_label_formatter(&|y| format!("{:.0}%", y * 100.0))
        .draw()?;
    for d in 0..names.len() {
        let c = color(d);
        let bars = mix.iter().enumerate().filter_map(|(e, row)| {
            let total = row.iter().sum::<u64>().max(1) as f64;
            let below = row.iter().take(d).sum::<u64>() as f64 / total;
            let share = row.get(d).copied().unwrap_or(0) as f64 / total;
            let e = e as i32;
            let right = if e + 1 < experts {
                SegmentValue::Exact(e + 1)
            } else {
                SegmentValue::Last
            };
            let left = SegmentValue::Exact(e);
            (share > 0.0).then(|| {
                let mut bar = Rectangle::new([(left, below), (right, below + share)], c.filled());
                bar.set_margin(0, 0, 12, 12);
                bar
            })
        });
        chart.draw_series(bars)?;
    }
    Ok(())
}
