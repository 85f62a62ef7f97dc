//! `benchplot`: SVG charts of benchmark results for `docs/benchmarks.md`.
//!
//! - `benchplot latency --input FILE.jsonl --out FILE.svg --title T [--log-y]`: one line per
//!   input line `{"path": "...", "percentiles": [[p, us], ...]}` (latbench's `percentiles` with the
//!   path added). The x axis is the percentile on a log scale of `1/(1-p)`, labelled 50, 90,
//!   99, 99.9, 99.99 (p = 100, the maximum, has no place on it and is left out); the y axis
//!   is the latency in milliseconds (`--log-y`: on a log scale, ticks at 1, 2, 5 per decade).
//! - `benchplot rss --input FILE.jsonl --out FILE.svg --title T`: one line per input line
//!   `{"path": "...", "samples": [[connections, rss_kib], ...]}` (connbench's `samples`):
//!   resident memory in MiB against open connections.
//!
//! Either kind of line may carry `"label"`, appended to the legend entry (`path (label)`);
//! other fields are ignored, so a tool's whole JSON line can be used with `path` added.
//!
//! The charts are 800×450 SVG. Plotters is built without a font feature: its SVG backend
//! writes text as `<text>` elements that the viewer renders with its own sans-serif font,
//! and without a font library plotters only estimates text widths for the layout, which is
//! close enough for axis labels and a legend. So there is no font file and no font crate.

use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use plotters::coord::ranged1d::{AsRangedCoord, DefaultFormatting, KeyPointHint, ValueFormatter};
use plotters::prelude::*;
use serde::Deserialize;

/// SVG charts of benchmark results.
#[derive(Parser, Debug)]
#[command(name = "benchplot", version)]
struct Args {
    #[command(subcommand)]
    chart: Chart,
}

#[derive(Subcommand, Debug)]
enum Chart {
    /// Latency percentiles, one line per path.
    Latency {
        #[command(flatten)]
        files: Files,
        /// Latency on a log scale, so that medians stay readable beside long tails.
        #[arg(long)]
        log_y: bool,
    },
    /// Resident memory against open connections, one line per path.
    Rss(Files),
}

#[derive(clap::Args, Debug)]
struct Files {
    /// JSON lines, one per path.
    #[arg(long)]
    input: PathBuf,
    /// The SVG to write.
    #[arg(long)]
    out: PathBuf,
    /// The chart's title.
    #[arg(long)]
    title: String,
}

/// One line of `benchplot latency`'s input.
#[derive(Deserialize, Debug, PartialEq)]
struct LatencyLine {
    path: String,
    #[serde(default)]
    label: Option<String>,
    /// `[percentile, microseconds]`; a `null` latency (no sample) is skipped.
    percentiles: Vec<(f64, Option<f64>)>,
}

/// One line of `benchplot rss`'s input.
#[derive(Deserialize, Debug, PartialEq)]
struct RssLine {
    path: String,
    #[serde(default)]
    label: Option<String>,
    /// `[open connections, rss KiB]`.
    samples: Vec<(f64, f64)>,
}

/// A line to draw: its legend entry and its points in chart units.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

fn legend(path: &str, label: Option<&str>) -> String {
    match label {
        Some(label) if !label.is_empty() => format!("{path} ({label})"),
        _ => path.to_owned(),
    }
}

/// Parses JSON lines (blank lines skipped); errors name the line.
fn parse_lines<T: for<'de> Deserialize<'de>>(text: &str) -> anyhow::Result<Vec<T>> {
    let mut lines = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        lines.push(serde_json::from_str(line).with_context(|| format!("line {}", number + 1))?);
    }
    if lines.is_empty() {
        bail!("no data lines");
    }
    Ok(lines)
}

/// The x position of percentile `p`: `log10(1 / (1 - p/100))`, the number of nines
/// (90 → 1, 99 → 2, 99.9 → 3). `None` for 100 and beyond, which the scale cannot place.
fn nines(p: f64) -> Option<f64> {
    (p < 100.0).then(|| -(1.0 - p / 100.0).log10())
}

/// Percentile `p` written as people do: `50`, `99.9`, `99.99`.
fn percentile_label(p: f64) -> String {
    trim_zeros(format!("{p:.5}"))
}

fn latency_series(lines: Vec<LatencyLine>) -> Vec<Series> {
    lines
        .into_iter()
        .map(|line| Series {
            name: legend(&line.path, line.label.as_deref()),
            points: line
                .percentiles
                .iter()
                .filter_map(|&(p, us)| Some((nines(p)?, us? / 1000.0)))
                .collect(),
        })
        .collect()
}

fn rss_series(lines: Vec<RssLine>) -> Vec<Series> {
    lines
        .into_iter()
        .map(|line| Series {
            name: legend(&line.path, line.label.as_deref()),
            points: line
                .samples
                .iter()
                .map(|&(connections, kib)| (connections, kib / 1024.0))
                .collect(),
        })
        .collect()
}

/// From 0 to a little above the largest value (1 when there is nothing above 0).
fn value_range(series: &[Series], axis: fn(&(f64, f64)) -> f64) -> Range<f64> {
    let max = series
        .iter()
        .flat_map(|s| s.points.iter().map(axis))
        .fold(0.0_f64, f64::max);
    0.0..if max > 0.0 { max * 1.08 } else { 1.0 }
}

/// A tick value with three significant digits at most and no trailing zeros: `0.05`,
/// `0.25`, `7`, `62.5`, `1200`.
fn number_label(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return "0".to_owned();
    }
    let decimals = (2 - value.abs().log10().floor() as i32).clamp(0, 4) as usize;
    trim_zeros(format!("{value:.decimals$}"))
}

/// `99.900` → `99.9`, `50.000` → `50`.
fn trim_zeros(text: String) -> String {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// Tableau 10: distinct on screen and in print.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

const SIZE: (u32, u32) = (800, 450);

/// How one chart's axes look.
struct Axes<'a> {
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    /// The text of an x tick.
    x_label: fn(f64) -> String,
    /// Where the legend goes: where the lines usually are not.
    legend: SeriesLabelPosition,
}

/// Draws `series` on a chart with the coordinates `x` and `y`.
fn draw<X, Y>(out: &Path, axes: &Axes<'_>, x: X, y: Y, series: &[Series]) -> anyhow::Result<()>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let x_format = |v: &f64| (axes.x_label)(*v);
    let root = SVGBackend::new(out, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(axes.title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(axes.x_desc)
        .y_desc(axes.y_desc)
        .axis_desc_style(("sans-serif", 16))
        .label_style(("sans-serif", 14))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(220, 220, 220))
        .x_label_formatter(&x_format)
        .y_label_formatter(&|v| number_label(*v))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(s.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(2))
            });
        chart.draw_series(
            s.points
                .iter()
                .map(|&point| Circle::new(point, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(axes.legend.clone())
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(190, 190, 190))
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// An axis with ticks (and grid lines) exactly at `ticks`, linear or logarithmic. (Plotters'
/// own `with_key_points` wrapper loses the number formatting its mesh needs, and its log
/// scale puts ticks at powers of ten only.)
struct TickedAxis {
    range: Range<f64>,
    ticks: Vec<f64>,
    log: bool,
}

impl TickedAxis {
    /// A log axis over `range` (positive) with ticks at 1, 2, 5 times powers of ten.
    fn log(range: Range<f64>) -> TickedAxis {
        let mut ticks = Vec::new();
        let mut decade = 10f64.powf(range.start.log10().floor());
        while decade <= range.end {
            for step in [1.0, 2.0, 5.0] {
                let tick = decade * step;
                if range.contains(&tick) {
                    ticks.push(tick);
                }
            }
            decade *= 10.0;
        }
        TickedAxis {
            range,
            ticks,
            log: true,
        }
    }

    fn scale(&self, value: f64) -> f64 {
        if self.log {
            value.max(f64::MIN_POSITIVE).log10()
        } else {
            value
        }
    }
}

impl Ranged for TickedAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let start = self.scale(self.range.start);
        let span = self.scale(self.range.end) - start;
        let share = if span > 0.0 {
            (self.scale(*value) - start) / span
        } else {
            0.0
        };
        limit.0 + (share * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

/// The percentile at x position `v` (the inverse of [`nines`]), as tick text.
fn percentile_tick(v: f64) -> String {
    percentile_label(100.0 * (1.0 - 10f64.powf(-v)))
}

fn latency(files: &Files, log_y: bool) -> anyhow::Result<()> {
    let text = read(&files.input)?;
    let lines: Vec<LatencyLine> =
        parse_lines(&text).with_context(|| format!("reading {}", files.input.display()))?;
    let series = latency_series(lines);
    let max_nines = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(4.0_f64, f64::max);
    // Ticks at 50, 90, 99, … up to the highest percentile given (at least 99.99).
    let mut ticks = vec![nines(50.0).unwrap_or(0.0)];
    ticks.extend((1..=max_nines.ceil() as i32).map(f64::from));
    let x = TickedAxis {
        range: ticks[0]..max_nines.ceil(),
        ticks,
        log: false,
    };
    let axes = Axes {
        title: &files.title,
        x_desc: "percentile (%)",
        y_desc: "latency (ms)",
        x_label: percentile_tick,
        legend: SeriesLabelPosition::UpperLeft,
    };
    if log_y {
        // From a little below the smallest latency to a little above the largest.
        let (min, max) = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .filter(|&ms| ms > 0.0)
            .fold((f64::INFINITY, 0.0_f64), |(lo, hi), ms| {
                (lo.min(ms), hi.max(ms))
            });
        let y = if min.is_finite() {
            min / 1.25..max * 1.25
        } else {
            0.001..1.0
        };
        draw(&files.out, &axes, x, TickedAxis::log(y), &series)
    } else {
        let y = value_range(&series, |p| p.1);
        draw(&files.out, &axes, x, y, &series)
    }
}

fn rss(files: &Files) -> anyhow::Result<()> {
    let text = read(&files.input)?;
    let lines: Vec<RssLine> =
        parse_lines(&text).with_context(|| format!("reading {}", files.input.display()))?;
    let series = rss_series(lines);
    let x = value_range(&series, |p| p.0);
    let axes = Axes {
        title: &files.title,
        x_desc: "open connections",
        y_desc: "resident memory (MiB)",
        x_label: |v| format!("{v:.0}"),
        // RSS starts well above 0 and grows to the right: the lower right stays empty.
        legend: SeriesLabelPosition::LowerRight,
    };
    let y = value_range(&series, |p| p.1);
    draw(&files.out, &axes, x, y, &series)
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn main() {
    let outcome = match Args::parse().chart {
        Chart::Latency { files, log_y } => latency(&files, log_y),
        Chart::Rss(files) => rss(&files),
    };
    if let Err(e) = outcome {
        // One line with the causes (which line of which file), without a backtrace.
        eprintln!("benchplot: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Latency lines parse with extra fields ignored, a label kept and null latencies
    /// skipped; p = 100 has no place on the axis.
    #[test]
    fn latency_lines_parse() {
        let text = r#"
{"path": "portico", "percentiles": [[50.0, 80.5], [99.9, 1200.0], [100.0, 9000.0]], "x": 1}

{"path": "nginx", "label": "1 worker", "percentiles": [[50.0, null], [90.0, 100.0]]}
"#;
        let lines: Vec<LatencyLine> = parse_lines(text).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].label.as_deref(), Some("1 worker"));
        let series = latency_series(lines);
        assert_eq!(series[0].name, "portico");
        assert_eq!(series[1].name, "nginx (1 worker)");
        let points = &series[0].points;
        assert_eq!(points.len(), 2);
        assert!(
            (points[0].0 - std::f64::consts::LOG10_2).abs() < 1e-9
                && (points[0].1 - 0.0805).abs() < 1e-9
        );
        assert!((points[1].0 - 3.0).abs() < 1e-9 && (points[1].1 - 1.2).abs() < 1e-9);
        assert_eq!(series[1].points, [(1.0, 0.1)]);
    }

    /// RSS lines turn KiB into MiB.
    #[test]
    fn rss_lines_parse() {
        let text = r#"{"path": "direct", "samples": [[0, 1024], [1000, 5120]], "mode": "http"}"#;
        let series = rss_series(parse_lines(text).unwrap());
        assert_eq!(series[0].points, [(0.0, 1.0), (1000.0, 5.0)]);
    }

    /// A bad line is named; an empty file is refused.
    #[test]
    fn bad_input_is_refused() {
        let err =
            parse_lines::<RssLine>("{\"path\": \"a\", \"samples\": []}\n{oops}\n").unwrap_err();
        assert!(format!("{err:#}").starts_with("line 2"), "{err:#}");
        assert!(parse_lines::<RssLine>("\n\n").is_err());
        assert!(parse_lines::<RssLine>(r#"{"samples": []}"#).is_err());
    }

    /// The percentile axis places 90, 99, 99.9 at 1, 2, 3 and labels its ticks back.
    #[test]
    fn percentile_axis() {
        assert!((nines(99.9).unwrap() - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), None);
        let labels: Vec<String> = [nines(50.0).unwrap(), 1.0, 2.0, 3.0, 4.0]
            .into_iter()
            .map(percentile_tick)
            .collect();
        assert_eq!(labels, ["50", "90", "99", "99.9", "99.99"]);
    }

    /// Log ticks go 1, 2, 5 per decade within the range.
    #[test]
    fn log_ticks() {
        let axis = TickedAxis::log(0.04..3.0);
        assert_eq!(axis.ticks.len(), 6);
        let labels: Vec<String> = axis.ticks.into_iter().map(number_label).collect();
        assert_eq!(labels, ["0.05", "0.1", "0.2", "0.5", "1", "2"]);
    }

    /// Tick values keep three significant digits and drop trailing zeros.
    #[test]
    fn numbers_are_short() {
        let labels: Vec<String> = [0.0, 0.05, 0.25, 7.0, 62.5, 1200.0, 0.123456]
            .into_iter()
            .map(number_label)
            .collect();
        assert_eq!(labels, ["0", "0.05", "0.25", "7", "62.5", "1200", "0.123"]);
    }
}
