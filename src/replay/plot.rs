//! The learning plot of a replay (`replay --plot`): three panels on one
//! time axis that show an online model learning a stream.
//!
//! 1. the value and the 1-step forecast made before the value arrived;
//! 2. the raw anomaly score (points and a rolling mean) and the
//!    log-likelihood, with the alert threshold;
//! 3. the learning curve: rolling mean absolute error of the forecast and
//!    rolling fraction of active columns that burst (were not predicted).
//!
//! The x axis is the file's time; with several passes the passes are laid
//! end to end (each shifted by the file's span plus one sampling interval)
//! and each pass start is marked. Rolling means use one day of samples,
//! derived from the median sampling interval, so a daily cycle averages out.
//! NAB anomaly windows (`--labels`) are shaded in every panel.
//!
//! This module also computes the "settled after" figures the CLI prints:
//! the first row of a pass after which a day-rolling mean stays at or below
//! a level until the end of that pass.
//!
//! Drawing uses `plotters` with an embedded DejaVu Sans font, so neither a
//! system font nor an external program is needed. PNG or SVG is chosen by
//! the file extension.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Once;

use chrono::NaiveDateTime;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::run::StepRecord;
use crate::nab::corpus::Labels;
use crate::nab::Window;

/// Levels the day-rolling raw anomaly must hold at or below (for a week)
/// to count as settled.
pub const RAW_ANOMALY_SETTLED: [f64; 2] = [0.2, 0.1];

/// The rolling MAE counts as settled once it holds at or below this many
/// times the mean absolute error of the last pass (a relative level, since
/// the error has the units of the value).
pub const MAE_SETTLED_FACTOR: f64 = 1.5;

/// How long, in days, a rolling mean must stay at or below a level to count
/// as settled.
pub const SETTLED_HOLD_DAYS: usize = 7;

/// The fields of one replay step the plot needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlotPoint {
    /// 0-based step over all passes.
    pub step: u64,
    /// 0-based pass.
    pub pass: u32,
    /// Row of the file.
    pub row: usize,
    pub timestamp: NaiveDateTime,
    pub value: f64,
    /// The 1-step forecast of this value, made at the previous step.
    pub predicted: Option<f64>,
    pub raw_anomaly: f64,
    pub log_likelihood: f64,
    /// `None` while the model calibrates.
    pub bursting_fraction: Option<f64>,
}

impl From<&StepRecord> for PlotPoint {
    fn from(r: &StepRecord) -> Self {
        Self {
            step: r.step,
            pass: r.pass,
            row: r.row,
            timestamp: r.timestamp,
            value: r.value,
            predicted: r.predicted,
            raw_anomaly: r.output.raw_anomaly,
            log_likelihood: r.output.log_likelihood,
            bursting_fraction: r.bursting_fraction,
        }
    }
}

/// Why a plot could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("{path}: unsupported plot format (use a .png or .svg file name)")]
    UnsupportedFormat { path: PathBuf },
    #[error("invalid plot size `{0}`: expected WIDTHxHEIGHT, e.g. 1600x900, each 300..=10000")]
    BadSize(String),
    #[error("nothing to plot: the replay produced no steps")]
    Empty,
    #[error("no entry `{key}` for {file} in the labels file {labels}")]
    NoLabels {
        key: String,
        file: PathBuf,
        labels: PathBuf,
    },
    #[error("{path}: cannot draw the plot: {message}")]
    Draw { path: PathBuf, message: String },
}

/// The image formats the plot is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlotFormat {
    Png,
    Svg,
}

impl PlotFormat {
    /// The format named by the file extension (case-insensitive).
    pub fn from_path(path: &Path) -> Result<Self, PlotError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("png") => Ok(Self::Png),
            Some("svg") => Ok(Self::Svg),
            _ => Err(PlotError::UnsupportedFormat {
                path: path.to_owned(),
            }),
        }
    }
}

/// Image size in pixels, written `WIDTHxHEIGHT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlotSize {
    pub width: u32,
    pub height: u32,
}

impl Default for PlotSize {
    fn default() -> Self {
        Self {
            width: 1600,
            height: 900,
        }
    }
}

impl FromStr for PlotSize {
    type Err = PlotError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PlotError::BadSize(s.to_owned());
        let (w, h) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
        let parse = |t: &str| {
            t.trim()
                .parse::<u32>()
                .ok()
                .filter(|v| (300..=10_000).contains(v))
        };
        Ok(Self {
            width: parse(w).ok_or_else(bad)?,
            height: parse(h).ok_or_else(bad)?,
        })
    }
}

/// What to draw besides the steps.
#[derive(Clone, Debug)]
pub struct PlotOptions {
    pub size: PlotSize,
    /// The alert threshold on the log-likelihood (a horizontal line).
    pub threshold: f64,
    /// Step from which learning was frozen (a vertical line).
    pub no_learn_after: Option<u64>,
    /// Labelled anomaly windows of the file (shaded in every pass).
    pub windows: Vec<Window>,
    /// Title line (e.g. the file name and preset).
    pub title: String,
}

impl Default for PlotOptions {
    /// 1600×900, threshold 0.5, no freeze, no windows, no title.
    fn default() -> Self {
        Self {
            size: PlotSize::default(),
            threshold: 0.5,
            no_learn_after: None,
            windows: Vec::new(),
            title: String::new(),
        }
    }
}

/// The windows of `file` in NAB labels: the key is the file's last two path
/// components, `<category>/<file>.csv`.
pub fn windows_for(labels: &Labels, file: &Path) -> Result<Vec<Window>, PlotError> {
    let parts: Vec<String> = file
        .components()
        .rev()
        .take(2)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let key = parts.into_iter().rev().collect::<Vec<_>>().join("/");
    labels
        .windows
        .get(&key)
        .cloned()
        .ok_or_else(|| PlotError::NoLabels {
            key,
            file: file.to_owned(),
            labels: labels.path.clone(),
        })
}

/// Number of samples in one day at the median sampling interval of the
/// first pass (at least 1, at most the pass length). A series without time
/// steps (all timestamps equal) gets 1.
pub fn day_window(points: &[PlotPoint]) -> usize {
    let pass0: Vec<&PlotPoint> = points.iter().filter(|p| p.pass == 0).collect();
    let mut gaps: Vec<i64> = pass0
        .windows(2)
        .map(|w| (w[1].timestamp - w[0].timestamp).num_milliseconds())
        .filter(|&g| g > 0)
        .collect();
    if gaps.is_empty() {
        return 1;
    }
    let mid = gaps.len() / 2;
    let (_, median, _) = gaps.select_nth_unstable(mid);
    let per_day = (86_400_000.0 / *median as f64).round() as usize;
    per_day.clamp(1, pass0.len().max(1))
}

/// Trailing mean over the last `window` entries that are `Some`, at every
/// position; `None` until one value has been seen.
pub fn rolling_mean(values: &[Option<f64>], window: usize) -> Vec<Option<f64>> {
    let window = window.max(1);
    let mut out = Vec::with_capacity(values.len());
    let (mut sum, mut n) = (0.0, 0usize);
    for (i, v) in values.iter().enumerate() {
        if let Some(v) = v {
            sum += v;
            n += 1;
        }
        if i >= window {
            if let Some(old) = values[i - window] {
                sum -= old;
                n -= 1;
            }
        }
        out.push((n > 0).then(|| sum / n as f64));
    }
    out
}

/// The day-rolling curves drawn in panels 2 and 3.
#[derive(Clone, Debug, PartialEq)]
pub struct LearningCurves {
    /// Samples per rolling window (one day).
    pub window: usize,
    /// Rolling mean of the raw anomaly.
    pub raw_anomaly: Vec<Option<f64>>,
    /// Rolling mean absolute error of the 1-step forecast.
    pub mae: Vec<Option<f64>>,
    /// Rolling mean of the bursting fraction.
    pub bursting: Vec<Option<f64>>,
}

impl LearningCurves {
    /// Compute the curves over all steps (the windows run across pass
    /// boundaries: the model does not restart).
    pub fn new(points: &[PlotPoint]) -> Self {
        let window = day_window(points);
        let raw: Vec<Option<f64>> = points.iter().map(|p| Some(p.raw_anomaly)).collect();
        let err: Vec<Option<f64>> = points
            .iter()
            .map(|p| p.predicted.map(|f| (f - p.value).abs()))
            .collect();
        let burst: Vec<Option<f64>> = points.iter().map(|p| p.bursting_fraction).collect();
        Self {
            window,
            raw_anomaly: rolling_mean(&raw, window),
            mae: rolling_mean(&err, window),
            bursting: rolling_mean(&burst, window),
        }
    }
}

/// First index `i` from which `hold` consecutive entries of `series` are
/// `Some` and at or below `level` (`hold` is capped at the slice length);
/// `None` if there is no such run.
pub fn settled_from(series: &[Option<f64>], level: f64, hold: usize) -> Option<usize> {
    let hold = hold.clamp(1, series.len().max(1));
    let mut run = 0;
    for (i, v) in series.iter().enumerate() {
        match v {
            Some(v) if *v <= level => {
                run += 1;
                if run >= hold {
                    return Some(i + 1 - hold);
                }
            }
            _ => run = 0,
        }
    }
    None
}

/// When the curves of one pass settle: the first row from which a
/// day-rolling mean stays at or below a level for [`SETTLED_HOLD_DAYS`].
#[derive(Clone, Debug, PartialEq)]
pub struct Settling {
    /// 0-based pass.
    pub pass: u32,
    /// Samples per rolling window (one day).
    pub window: usize,
    /// For each level of [`RAW_ANOMALY_SETTLED`]: the row from which the
    /// rolling raw anomaly holds at or below it.
    pub raw_anomaly_rows: Vec<(f64, Option<usize>)>,
    /// The MAE level used: [`MAE_SETTLED_FACTOR`] × the last pass's MAE.
    pub mae_level: f64,
    /// The row from which the rolling MAE holds at or below `mae_level`.
    pub mae_row: Option<usize>,
}

impl std::fmt::Display for Settling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let row = |r: Option<usize>| r.map_or_else(|| "never".to_owned(), |r| r.to_string());
        write!(
            f,
            "pass {}: settled ({}-sample rolling mean held {} days):",
            self.pass + 1,
            self.window,
            SETTLED_HOLD_DAYS
        )?;
        for (level, r) in &self.raw_anomaly_rows {
            write!(f, " raw_anomaly<={level} from row {},", row(*r))?;
        }
        write!(
            f,
            " mae<={:.3} from row {}",
            self.mae_level,
            row(self.mae_row)
        )
    }
}

/// The settling rows of every pass.
pub fn settling(points: &[PlotPoint], curves: &LearningCurves) -> Vec<Settling> {
    let passes = points.last().map_or(0, |p| p.pass + 1);
    let last: Vec<f64> = points
        .iter()
        .filter(|p| p.pass + 1 == passes)
        .filter_map(|p| p.predicted.map(|f| (f - p.value).abs()))
        .collect();
    let mae_level = MAE_SETTLED_FACTOR * last.iter().sum::<f64>() / last.len().max(1) as f64;
    let hold = curves.window * SETTLED_HOLD_DAYS;
    (0..passes)
        .map(|pass| {
            let a = points.iter().position(|p| p.pass == pass).unwrap_or(0);
            let b = points
                .iter()
                .rposition(|p| p.pass == pass)
                .map_or(a, |i| i + 1);
            let row_of = |i: Option<usize>| i.map(|i| points[a + i].row);
            Settling {
                pass,
                window: curves.window,
                raw_anomaly_rows: RAW_ANOMALY_SETTLED
                    .iter()
                    .map(|&l| (l, row_of(settled_from(&curves.raw_anomaly[a..b], l, hold))))
                    .collect(),
                mae_level,
                mae_row: row_of(settled_from(&curves.mae[a..b], mae_level, hold)),
            }
        })
        .collect()
}

/// How steps map to the x axis: days since the first timestamp, with
/// passes laid end to end; or step numbers when time does not advance.
#[derive(Clone, Copy, Debug)]
struct TimeAxis {
    start: NaiveDateTime,
    /// Length of one pass on the axis, in days (0 when time does not move).
    pass_days: f64,
}

impl TimeAxis {
    fn new(points: &[PlotPoint]) -> Self {
        let start = points[0].timestamp;
        let end = points
            .iter()
            .filter(|p| p.pass == 0)
            .map(|p| p.timestamp)
            .max()
            .unwrap_or(start);
        let window = day_window(points) as f64;
        let span = days(end - start);
        // One sampling interval between the last row of a pass and the
        // first row of the next.
        let gap = if window > 0.0 && span > 0.0 {
            1.0 / window
        } else {
            0.0
        };
        Self {
            start,
            pass_days: span + gap,
        }
    }

    fn uses_time(&self) -> bool {
        self.pass_days > 0.0
    }

    fn x(&self, p: &PlotPoint) -> f64 {
        if self.uses_time() {
            self.at(p.timestamp, p.pass)
        } else {
            p.step as f64
        }
    }

    fn at(&self, t: NaiveDateTime, pass: u32) -> f64 {
        days(t - self.start) + f64::from(pass) * self.pass_days
    }

    fn label(&self, x: f64) -> String {
        if !self.uses_time() {
            return format!("{x:.0}");
        }
        let within = x.rem_euclid(self.pass_days);
        let t = self.start + chrono::Duration::milliseconds((within * 86_400_000.0) as i64);
        t.format("%Y-%m-%d").to_string()
    }
}

fn days(d: chrono::Duration) -> f64 {
    d.num_milliseconds() as f64 / 86_400_000.0
}

/// The embedded font, registered as `sans-serif` once per process.
fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
        // The bytes are a valid TrueType font, checked by the tests.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
    });
}

/// Draw the learning plot of `points` (one replay, all passes) into `path`,
/// PNG or SVG by extension.
pub fn draw(path: &Path, points: &[PlotPoint], options: &PlotOptions) -> Result<(), PlotError> {
    let format = PlotFormat::from_path(path)?;
    if points.is_empty() {
        return Err(PlotError::Empty);
    }
    register_font();
    let size = (options.size.width, options.size.height);
    let err = |message: String| PlotError::Draw {
        path: path.to_owned(),
        message,
    };
    match format {
        PlotFormat::Png => {
            let root = BitMapBackend::new(path, size).into_drawing_area();
            render(&root, points, options).map_err(|e| err(e.to_string()))?;
            root.present().map_err(|e| err(e.to_string()))
        }
        PlotFormat::Svg => {
            let root = SVGBackend::new(path, size).into_drawing_area();
            render(&root, points, options).map_err(|e| err(e.to_string()))?;
            root.present().map_err(|e| err(e.to_string()))
        }
    }
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

// Colours: value and forecast, anomaly, likelihood, learning curves, marks.
const VALUE: RGBColor = RGBColor(31, 119, 180);
const FORECAST: RGBColor = RGBColor(255, 127, 14);
const RAW: RGBColor = RGBColor(148, 103, 189);
const LIKELIHOOD: RGBColor = RGBColor(214, 39, 40);
const MAE: RGBColor = RGBColor(31, 119, 180);
const BURSTING: RGBColor = RGBColor(44, 160, 44);
const WINDOW: RGBColor = RGBColor(255, 215, 0);
const PASS: RGBColor = RGBColor(60, 60, 60);
const FROZEN: RGBColor = RGBColor(0, 0, 0);

/// One entry of a panel's legend.
enum Key {
    Line(&'static str, RGBColor),
    Dashed(&'static str, RGBColor),
    Dots(&'static str, RGBColor),
    Band(&'static str, RGBColor),
}

/// Pixel sizes of the layout, scaled with the image height.
struct Layout {
    font: u32,
    title: u32,
    y_label: u32,
    right_label: u32,
    x_label: u32,
    legend: u32,
}

impl Layout {
    fn new(width: u32, height: u32) -> Self {
        let s = (f64::from(height) / 900.0)
            .min(f64::from(width) / 1600.0)
            .max(0.4);
        let px = |v: f64| (v * s).round().max(1.0) as u32;
        Self {
            font: px(15.0).max(9),
            title: px(22.0).max(11),
            y_label: px(80.0),
            right_label: px(70.0),
            x_label: px(55.0),
            legend: px(290.0),
        }
    }
}

fn render<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    points: &[PlotPoint],
    options: &PlotOptions,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let (width, height) = root.dim_in_pixel();
    let layout = Layout::new(width, height);
    let axis = TimeAxis::new(points);
    let curves = LearningCurves::new(points);
    let xs: Vec<f64> = points.iter().map(|p| axis.x(p)).collect();
    let x_range = xs[0]..xs[xs.len() - 1].max(xs[0] + 1e-9);

    let title_h = layout.title * 2;
    let (title, body) = root.split_vertically(title_h);
    title.titled(
        &options.title,
        ("sans-serif", layout.title).into_font().color(&BLACK),
    )?;
    let panel_h = (height - title_h - layout.x_label) / 3;
    let (top, rest) = body.split_vertically(panel_h);
    let (mid, bottom) = rest.split_vertically(panel_h);

    let ctx = Ctx {
        points,
        options,
        layout: &layout,
        axis: &axis,
        xs: &xs,
        x_range,
        curves: &curves,
    };
    ctx.value_panel(&top)?;
    ctx.anomaly_panel(&mid)?;
    ctx.learning_panel(&bottom)?;
    Ok(())
}

/// Everything the panels share.
struct Ctx<'a> {
    points: &'a [PlotPoint],
    options: &'a PlotOptions,
    layout: &'a Layout,
    axis: &'a TimeAxis,
    xs: &'a [f64],
    x_range: std::ops::Range<f64>,
    curves: &'a LearningCurves,
}

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

impl Ctx<'_> {
    fn font(&self) -> TextStyle<'static> {
        ("sans-serif", self.layout.font).into_font().color(&BLACK)
    }

    /// Split off the legend strip and build a chart with the shared x axis.
    fn chart<'a, DB: DrawingBackend>(
        &self,
        area: &'a DrawingArea<DB, Shift>,
        caption: &str,
        y: std::ops::Range<f64>,
        bottom: bool,
        keys: &[Key],
    ) -> Result<Chart<'a, DB>, DrawingAreaErrorKind<DB::ErrorType>> {
        let (w, _) = area.dim_in_pixel();
        let (plot, legend) = area.split_horizontally(w.saturating_sub(self.layout.legend));
        self.legend(&legend, keys)?;
        let chart = ChartBuilder::on(&plot)
            .caption(caption, self.font())
            .margin_right(self.layout.right_label)
            .margin_left(8)
            .margin_top(4)
            .y_label_area_size(self.layout.y_label)
            .x_label_area_size(if bottom { self.layout.x_label } else { 0 })
            .build_cartesian_2d(self.x_range.clone(), y)?;
        Ok(chart)
    }

    /// Grid, axis labels and titles; the x labels only on the bottom panel.
    fn mesh<DB: DrawingBackend>(
        &self,
        chart: &mut Chart<'_, DB>,
        y_desc: &str,
        bottom: bool,
    ) -> DrawResult<DB> {
        let label = |x: &f64| self.axis.label(*x);
        let x_desc = if self.axis.uses_time() {
            "time (file timestamps; passes placed end to end)"
        } else {
            "step"
        };
        let mut mesh = chart.configure_mesh();
        mesh.x_labels(12)
            .y_labels(5)
            .x_label_formatter(&label)
            .y_label_formatter(&tick)
            .label_style(self.font())
            .axis_desc_style(self.font())
            .y_desc(y_desc)
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(BLACK.mix(0.08));
        if bottom {
            mesh.x_desc(x_desc);
        }
        mesh.draw()
    }

    /// Shade the labelled windows and mark pass starts and the freeze.
    fn marks<DB: DrawingBackend>(
        &self,
        chart: &mut Chart<'_, DB>,
        y: std::ops::Range<f64>,
        with_text: bool,
    ) -> DrawResult<DB> {
        let passes = self.points.last().map_or(1, |p| p.pass + 1);
        if self.axis.uses_time() {
            for pass in 0..passes {
                chart.draw_series(self.options.windows.iter().map(|w| {
                    Rectangle::new(
                        [
                            (self.axis.at(w.start, pass), y.start),
                            (self.axis.at(w.end, pass), y.end),
                        ],
                        WINDOW.mix(0.35).filled(),
                    )
                }))?;
            }
        }
        let text = self.font().color(&PASS);
        for pass in 0..passes {
            let Some(i) = self.points.iter().position(|p| p.pass == pass) else {
                continue;
            };
            let x = self.xs[i];
            if pass > 0 {
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(x, y.start), (x, y.end)],
                    PASS.stroke_width(2),
                )))?;
            }
            if with_text {
                chart.draw_series(std::iter::once(
                    EmptyElement::at((x, y.end))
                        + Text::new(format!("pass {}", pass + 1), (6, 4), text.clone()),
                ))?;
            }
        }
        if let Some(k) = self.options.no_learn_after {
            if let Some(i) = self.points.iter().position(|p| p.step == k) {
                let x = self.xs[i];
                chart.draw_series(DashedLineSeries::new(
                    vec![(x, y.start), (x, y.end)],
                    8,
                    5,
                    FROZEN.stroke_width(2),
                ))?;
                if with_text {
                    let dy = (self.layout.font as i32) + 8;
                    chart.draw_series(std::iter::once(
                        EmptyElement::at((x, y.end))
                            + Text::new("learning frozen", (6, dy), self.font()),
                    ))?;
                }
            }
        }
        Ok(())
    }

    /// A legend drawn beside the chart, so it never hides data.
    fn legend<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        keys: &[Key],
    ) -> DrawResult<DB> {
        let f = self.layout.font as i32;
        let mut y = 2 * f;
        let sample = 2 * f;
        for key in keys {
            let mid = y + f / 2;
            let name = match key {
                Key::Line(name, c) => {
                    area.draw(&PathElement::new(
                        vec![(4, mid), (4 + sample, mid)],
                        c.stroke_width(3),
                    ))?;
                    name
                }
                Key::Dashed(name, c) => {
                    area.draw(&PathElement::new(
                        vec![(4, mid), (4 + sample / 3, mid)],
                        c.stroke_width(2),
                    ))?;
                    area.draw(&PathElement::new(
                        vec![(4 + 2 * sample / 3, mid), (4 + sample, mid)],
                        c.stroke_width(2),
                    ))?;
                    name
                }
                Key::Dots(name, c) => {
                    for k in 0..3 {
                        area.draw(&Circle::new(
                            (4 + sample * k / 2, mid),
                            2,
                            c.mix(0.7).filled(),
                        ))?;
                    }
                    name
                }
                Key::Band(name, c) => {
                    area.draw(&Rectangle::new(
                        [(4, y), (4 + sample, y + f)],
                        c.mix(0.35).filled(),
                    ))?;
                    name
                }
            };
            area.draw(&Text::new(*name, (12 + sample, y), self.font()))?;
            y += f + f / 2 + 2;
        }
        Ok(())
    }

    fn keys_with_window(&self, mut keys: Vec<Key>) -> Vec<Key> {
        if !self.options.windows.is_empty() {
            keys.push(Key::Band("labelled anomaly window", WINDOW));
        }
        keys
    }

    fn value_panel<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let (lo, hi) = self
            .points
            .iter()
            .flat_map(|p| std::iter::once(p.value).chain(p.predicted))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        let pad = ((hi - lo) * 0.08).max(1e-9);
        // Room at the top for the pass labels (two rows with a freeze mark).
        let rows = if self.options.no_learn_after.is_some() {
            5.0
        } else {
            3.0
        };
        let y = (lo - pad)..(hi + rows * pad);
        let keys = self.keys_with_window(vec![
            Key::Line("value", VALUE),
            Key::Line("1-step forecast", FORECAST),
        ]);
        let mut chart = self.chart(
            area,
            "Value and the forecast made one step before",
            y.clone(),
            false,
            &keys,
        )?;
        self.mesh(&mut chart, "value (file units)", false)?;
        self.marks(&mut chart, y, true)?;
        chart.draw_series(LineSeries::new(
            self.xs.iter().zip(self.points).map(|(&x, p)| (x, p.value)),
            VALUE.stroke_width(1),
        ))?;
        for seg in segments(self.xs, self.points.iter().map(|p| p.predicted)) {
            chart.draw_series(LineSeries::new(seg, FORECAST.mix(0.85).stroke_width(1)))?;
        }
        Ok(())
    }

    fn anomaly_panel<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let y = 0.0..1.05;
        let keys = self.keys_with_window(vec![
            Key::Dots("raw anomaly (per step)", RAW),
            Key::Line("raw anomaly, 1-day mean", RAW),
            Key::Line("log-likelihood", LIKELIHOOD),
            Key::Dashed("alert threshold", BLACK),
        ]);
        let mut chart = self.chart(
            area,
            "Anomaly score and likelihood",
            y.clone(),
            false,
            &keys,
        )?;
        self.mesh(&mut chart, "score (0-1)", false)?;
        self.marks(&mut chart, y, false)?;
        chart.draw_series(
            self.xs
                .iter()
                .zip(self.points)
                .map(|(&x, p)| Circle::new((x, p.raw_anomaly), 1, RAW.mix(0.35).filled())),
        )?;
        for seg in segments(self.xs, self.curves.raw_anomaly.iter().copied()) {
            chart.draw_series(LineSeries::new(seg, RAW.stroke_width(2)))?;
        }
        chart.draw_series(LineSeries::new(
            self.xs
                .iter()
                .zip(self.points)
                .map(|(&x, p)| (x, p.log_likelihood)),
            LIKELIHOOD.stroke_width(1),
        ))?;
        chart.draw_series(DashedLineSeries::new(
            vec![
                (self.x_range.start, self.options.threshold),
                (self.x_range.end, self.options.threshold),
            ],
            10,
            6,
            BLACK.stroke_width(2),
        ))?;
        Ok(())
    }

    fn learning_panel<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let max_mae = self
            .curves
            .mae
            .iter()
            .flatten()
            .fold(0.0f64, |m, &v| m.max(v));
        let y_mae = 0.0..(max_mae * 1.1).max(1e-9);
        let keys = self.keys_with_window(vec![
            Key::Line("forecast MAE (left axis)", MAE),
            Key::Line("bursting fraction (right axis)", BURSTING),
        ]);
        let (w, _) = area.dim_in_pixel();
        let (plot, legend) = area.split_horizontally(w.saturating_sub(self.layout.legend));
        self.legend(&legend, &keys)?;
        let caption = format!(
            "Learning curve: rolling means over one day ({} samples)",
            self.curves.window
        );
        let mut chart = ChartBuilder::on(&plot)
            .caption(caption, self.font())
            .margin_left(8)
            .margin_top(4)
            .y_label_area_size(self.layout.y_label)
            .right_y_label_area_size(self.layout.right_label)
            .x_label_area_size(self.layout.x_label)
            .build_cartesian_2d(self.x_range.clone(), y_mae.clone())?
            .set_secondary_coord(self.x_range.clone(), 0.0..1.05);
        self.mesh(&mut chart, "MAE (file units)", true)?;
        chart
            .configure_secondary_axes()
            .y_labels(5)
            .label_style(self.font())
            .axis_desc_style(self.font())
            .y_label_formatter(&tick)
            .y_desc("bursting fraction")
            .draw()?;
        self.marks(&mut chart, y_mae, false)?;
        for seg in segments(self.xs, self.curves.mae.iter().copied()) {
            chart.draw_series(LineSeries::new(seg, MAE.stroke_width(1)))?;
        }
        for seg in segments(self.xs, self.curves.bursting.iter().copied()) {
            chart.draw_secondary_series(LineSeries::new(seg, BURSTING.stroke_width(1)))?;
        }
        Ok(())
    }
}

/// A y tick without a useless trailing `.0`.
fn tick(v: &f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Runs of consecutive `Some` values as `(x, y)` polylines.
fn segments(xs: &[f64], ys: impl Iterator<Item = Option<f64>>) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut open = false;
    for (&x, y) in xs.iter().zip(ys) {
        match y {
            Some(y) => {
                if !open {
                    out.push(Vec::new());
                    open = true;
                }
                if let Some(seg) = out.last_mut() {
                    seg.push((x, y));
                }
            }
            None => open = false,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(h: i64) -> NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(2010, 7, 2)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            + chrono::Duration::hours(h)
    }

    /// `rows` hourly points per pass, `passes` passes.
    fn points(rows: usize, passes: u32, raw: impl Fn(u64) -> f64) -> Vec<PlotPoint> {
        let mut out = Vec::new();
        for pass in 0..passes {
            for row in 0..rows {
                let step = u64::from(pass) * rows as u64 + row as u64;
                out.push(PlotPoint {
                    step,
                    pass,
                    row,
                    timestamp: t(row as i64),
                    value: row as f64,
                    predicted: (step > 0).then_some(row as f64 + 1.0),
                    raw_anomaly: raw(step),
                    log_likelihood: 0.1,
                    bursting_fraction: Some(raw(step)),
                });
            }
        }
        out
    }

    #[test]
    fn format_follows_the_extension() {
        assert_eq!(
            PlotFormat::from_path(Path::new("a/b.png")).unwrap(),
            PlotFormat::Png
        );
        assert_eq!(
            PlotFormat::from_path(Path::new("b.SVG")).unwrap(),
            PlotFormat::Svg
        );
        for bad in ["b.jpg", "b", "png", "b.png.txt"] {
            let err = PlotFormat::from_path(Path::new(bad)).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
            assert!(err.to_string().contains(".png or .svg"), "{err}");
        }
    }

    #[test]
    fn size_parses_width_x_height() {
        assert_eq!(
            "1600x900".parse::<PlotSize>().unwrap(),
            PlotSize {
                width: 1600,
                height: 900
            }
        );
        assert_eq!("800X600".parse::<PlotSize>().unwrap().height, 600);
        for bad in [
            "1600",
            "x900",
            "1600x",
            "0x900",
            "1600x20000",
            "axb",
            "-5x10",
        ] {
            assert!(bad.parse::<PlotSize>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_day_of_samples_comes_from_the_median_interval() {
        assert_eq!(day_window(&points(100, 1, |_| 0.0)), 24);
        // One long gap does not move the median.
        let mut p = points(100, 1, |_| 0.0);
        for q in p.iter_mut().skip(50) {
            q.timestamp += chrono::Duration::days(3);
        }
        assert_eq!(day_window(&p), 24);
        // Fewer rows than a day: the window is the whole pass.
        assert_eq!(day_window(&points(10, 2, |_| 0.0)), 10);
        // Time does not move: one sample.
        let mut p = points(10, 1, |_| 0.0);
        for q in &mut p {
            q.timestamp = t(0);
        }
        assert_eq!(day_window(&p), 1);
    }

    #[test]
    fn rolling_mean_skips_missing_values() {
        let v = [None, Some(1.0), Some(3.0), None, Some(5.0)];
        let r = rolling_mean(&v, 2);
        assert_eq!(r, vec![None, Some(1.0), Some(2.0), Some(3.0), Some(5.0)]);
    }

    #[test]
    fn settled_needs_a_full_hold_at_or_below_the_level() {
        let s: Vec<Option<f64>> = [0.9, 0.5, 0.1, 0.1, 0.6, 0.1, 0.1, 0.1]
            .iter()
            .map(|&v| Some(v))
            .collect();
        assert_eq!(settled_from(&s, 0.2, 3), Some(5));
        assert_eq!(settled_from(&s, 0.2, 2), Some(2));
        assert_eq!(settled_from(&s, 0.6, 3), Some(1));
        assert_eq!(settled_from(&s, 0.05, 1), None);
        // The hold is capped at the slice length.
        assert_eq!(settled_from(&s, 1.0, 100), Some(0));
        assert_eq!(settled_from(&[None, Some(0.0)], 0.1, 2), None);
    }

    #[test]
    fn settling_reports_rows_per_pass() {
        // Raw anomaly 1 for the first 60 steps, then 0.
        let p = points(24 * 14, 2, |s| if s < 60 { 1.0 } else { 0.0 });
        let curves = LearningCurves::new(&p);
        assert_eq!(curves.window, 24);
        let s = settling(&p, &curves);
        assert_eq!(s.len(), 2);
        // The day-mean drops to <= 0.2 once at most 4 of the last 24 are 1.
        assert_eq!(s[0].raw_anomaly_rows[0], (0.2, Some(60 + 24 - 4 - 1)));
        assert_eq!(s[1].raw_anomaly_rows[0].1, Some(0));
        // The forecast is always off by one: MAE 1, level 1.5.
        assert!((s[0].mae_level - 1.5).abs() < 1e-12);
        assert_eq!(s[0].mae_row, Some(1));
        assert!(s[0].to_string().starts_with("pass 1: settled (24-sample"));
    }

    #[test]
    fn passes_are_laid_end_to_end_on_the_time_axis() {
        let p = points(48, 3, |_| 0.0);
        let axis = TimeAxis::new(&p);
        // 47 hours of span plus one hour between passes: two days a pass.
        assert!((axis.pass_days - 2.0).abs() < 1e-9);
        let xs: Vec<f64> = p.iter().map(|q| axis.x(q)).collect();
        assert!(xs.windows(2).all(|w| w[1] > w[0]));
        assert_eq!(axis.label(axis.x(&p[48 + 24])), "2010-07-03");
        assert_eq!(axis.label(axis.x(&p[2 * 48])), "2010-07-02");
    }

    #[test]
    fn segments_break_at_missing_values() {
        let xs = [0.0, 1.0, 2.0, 3.0, 4.0];
        let segs = segments(
            &xs,
            [Some(1.0), Some(2.0), None, Some(4.0), None].into_iter(),
        );
        assert_eq!(segs, vec![vec![(0.0, 1.0), (1.0, 2.0)], vec![(3.0, 4.0)]]);
    }

    #[test]
    fn windows_are_found_by_category_and_file() {
        let w = Window {
            start: t(1),
            end: t(2),
        };
        let labels = Labels {
            path: PathBuf::from("labels/combined_windows.json"),
            windows: [("realTraffic/speed.csv".to_owned(), vec![w])].into(),
        };
        let got = windows_for(&labels, Path::new("/data/nab/realTraffic/speed.csv")).unwrap();
        assert_eq!(got, vec![w]);
        let err = windows_for(&labels, Path::new("other/speed.csv")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("other/speed.csv") && msg.contains("combined_windows.json"),
            "{msg}"
        );
    }

    #[test]
    fn the_embedded_font_is_valid() {
        let bytes: &'static [u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
        assert!(plotters::style::register_font("test-font", FontStyle::Normal, bytes).is_ok());
    }

    #[test]
    fn drawing_refuses_empty_input_and_unknown_formats() {
        let dir = tempfile::tempdir().unwrap();
        let opts = PlotOptions::default();
        assert!(matches!(
            draw(&dir.path().join("a.png"), &[], &opts),
            Err(PlotError::Empty)
        ));
        let p = points(10, 1, |_| 0.0);
        assert!(matches!(
            draw(&dir.path().join("a.gif"), &p, &opts),
            Err(PlotError::UnsupportedFormat { .. })
        ));
        assert!(!dir.path().join("a.gif").exists());
    }

    proptest! {
        #[test]
        fn rolling_mean_matches_the_definition(
            values in proptest::collection::vec(proptest::option::of(0.0f64..100.0), 0..60),
            window in 1usize..10,
        ) {
            let got = rolling_mean(&values, window);
            prop_assert_eq!(got.len(), values.len());
            for (i, g) in got.iter().enumerate() {
                let lo = (i + 1).saturating_sub(window);
                let seen: Vec<f64> = values[lo..=i].iter().flatten().copied().collect();
                match g {
                    None => prop_assert!(seen.is_empty()),
                    Some(m) => {
                        let want = seen.iter().sum::<f64>() / seen.len() as f64;
                        prop_assert!((m - want).abs() < 1e-9);
                    }
                }
            }
        }
    }
}
