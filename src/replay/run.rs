//! Running a series through one model: per-step records, per-pass
//! summaries, timing, and the `--out` / `--trace` CSV files.

use std::io::Write;
use std::time::Instant;

use serde::Serialize;

use super::series::Sample;
use crate::model::{Model, ModelParams, Output, ParamsError};

/// How the value range and the likelihood's learning period are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RangeMode {
    /// Use the file's min/max and NAB's probationary period (what NAB hands
    /// every detector).
    #[default]
    Conformant,
    /// Know nothing in advance: the model calibrates online.
    Streaming,
}

/// What to replay and how.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// Model parameters (a preset, possibly adjusted).
    pub params: ModelParams,
    /// Conformant or streaming.
    pub mode: RangeMode,
    /// Times the file is run through the same model.
    pub passes: u32,
    /// Stop learning after this many steps (counted over all passes).
    pub no_learn_after: Option<u64>,
}

/// One step of a replay.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepRecord {
    /// 0-based step over all passes.
    pub step: u64,
    /// 0-based pass.
    pub pass: u32,
    /// Index of the row in the file.
    pub row: usize,
    pub timestamp: chrono::NaiveDateTime,
    pub value: f64,
    /// The 1-step forecast of this value, made at the previous step.
    pub predicted: Option<f64>,
    pub output: Output,
    /// Fraction of active columns that burst (were not predicted); `None`
    /// while the model calibrates.
    pub bursting_fraction: Option<f64>,
    /// Trace fields (after the step).
    #[serde(skip)]
    pub input_bits: Vec<u32>,
    #[serde(skip)]
    pub sp_active: Vec<u32>,
    pub tm_segments: usize,
    pub tm_synapses: usize,
    /// Wall time of `Model::step`, in nanoseconds.
    pub step_nanos: u64,
}

/// Figures of one pass.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PassSummary {
    pub pass: u32,
    pub steps: u64,
    pub mean_raw_anomaly: f64,
    /// Root mean square error of the 1-step forecast (rows with a forecast).
    pub rmse_1step: f64,
    /// Mean absolute error of the 1-step forecast.
    pub mae_1step: f64,
    /// Mean fraction of bursting columns.
    pub mean_bursting_fraction: f64,
}

/// Figures of a whole replay.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplaySummary {
    pub steps: u64,
    /// Median wall time of one `Model::step`, µs.
    pub median_us_per_step: f64,
    pub mean_us_per_step: f64,
    pub p99_us_per_step: f64,
    /// Model memory at the end, MB (10^6 bytes).
    pub model_mb: f64,
    pub mean_raw_anomaly: f64,
    pub rmse_1step: f64,
    pub passes: Vec<PassSummary>,
}

impl std::fmt::Display for ReplaySummary {
    /// The one-line summary the CLI prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "summary steps={} us_per_step={:.2} model_mb={:.3} mean_raw_anomaly={:.4} rmse_1step={:.4}",
            self.steps, self.median_us_per_step, self.model_mb, self.mean_raw_anomaly, self.rmse_1step
        )
    }
}

/// NAB's probationary period for a file of `rows` rows.
pub fn probationary_period(rows: usize) -> u32 {
    ((0.15 * rows as f64).floor() as u32).min(750)
}

/// Replay `samples` through a fresh model; `on_step` sees every record (the
/// progress bar and the CSV writers hang here). Returns the summary.
pub fn replay(
    samples: &[Sample],
    options: &ReplayOptions,
    mut on_step: impl FnMut(&StepRecord),
) -> Result<ReplaySummary, ParamsError> {
    let mut params = options.params.clone();
    if options.mode == RangeMode::Conformant && params.value_encoder.resolution.is_none() {
        let (min, max) = samples
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), s| {
                (lo.min(s.value), hi.max(s.value))
            });
        params.set_value_range(min, max);
    }
    if options.mode == RangeMode::Conformant {
        params.set_probationary_period(probationary_period(samples.len()));
    }
    let mut model = Model::new(params)?;
    let mut nanos: Vec<u64> = Vec::with_capacity(samples.len() * options.passes as usize);
    let mut passes = Vec::new();
    let mut step: u64 = 0;
    let mut forecast: Option<f64> = None;
    let mut all_raw = 0.0;
    let (mut all_sq, mut all_n) = (0.0, 0u64);
    for pass in 0..options.passes {
        let (mut raw_sum, mut sq, mut abs, mut n_err, mut burst_sum, mut n_burst) =
            (0.0, 0.0, 0.0, 0u64, 0.0, 0u64);
        for (row, sample) in samples.iter().enumerate() {
            let learn = options.no_learn_after.is_none_or(|k| step < k);
            let start = Instant::now();
            let output = model.step(sample.timestamp, sample.value, learn);
            let elapsed = start.elapsed().as_nanos() as u64;
            nanos.push(elapsed);
            let internals = model.internals();
            let bursting_fraction = internals.and_then(|i| {
                (i.active_columns.count() > 0)
                    .then(|| i.bursting_columns as f64 / i.active_columns.count() as f64)
            });
            if let Some(b) = bursting_fraction {
                burst_sum += b;
                n_burst += 1;
            }
            if let Some(p) = forecast {
                let e = p - sample.value;
                sq += e * e;
                abs += e.abs();
                n_err += 1;
            }
            raw_sum += output.raw_anomaly;
            let record = StepRecord {
                step,
                pass,
                row,
                timestamp: sample.timestamp,
                value: sample.value,
                predicted: forecast,
                bursting_fraction,
                input_bits: internals.map_or_else(Vec::new, |i| i.input.indices().to_vec()),
                sp_active: internals.map_or_else(Vec::new, |i| i.active_columns.indices().to_vec()),
                tm_segments: internals.map_or(0, |i| i.segments),
                tm_synapses: internals.map_or(0, |i| i.synapses),
                step_nanos: elapsed,
                output,
            };
            forecast = record.output.prediction.map(|p| p.value);
            on_step(&record);
            step += 1;
        }
        let n = samples.len() as f64;
        passes.push(PassSummary {
            pass,
            steps: samples.len() as u64,
            mean_raw_anomaly: raw_sum / n,
            rmse_1step: (sq / n_err.max(1) as f64).sqrt(),
            mae_1step: abs / n_err.max(1) as f64,
            mean_bursting_fraction: burst_sum / n_burst.max(1) as f64,
        });
        all_raw += raw_sum;
        all_sq += sq;
        all_n += n_err;
    }
    let mut sorted = nanos.clone();
    sorted.sort_unstable();
    let pick = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize] as f64 / 1e3;
    Ok(ReplaySummary {
        steps: step,
        median_us_per_step: pick(0.5),
        mean_us_per_step: nanos.iter().sum::<u64>() as f64 / nanos.len() as f64 / 1e3,
        p99_us_per_step: pick(0.99),
        model_mb: model.memory_bytes() as f64 / 1e6,
        mean_raw_anomaly: all_raw / step as f64,
        rmse_1step: (all_sq / all_n.max(1) as f64).sqrt(),
        passes,
    })
}

fn join(indices: &[u32]) -> String {
    let mut s = String::with_capacity(indices.len() * 5);
    for (k, i) in indices.iter().enumerate() {
        if k > 0 {
            s.push(' ');
        }
        s.push_str(&i.to_string());
    }
    s
}

/// Header of the `--out` CSV.
pub const OUT_HEADER: &str =
    "timestamp,value,prediction,raw_anomaly,likelihood,log_likelihood,anomaly_score,pass";

/// One `--out` row: the forecast is the one made before this value arrived.
pub fn write_out_row(w: &mut impl Write, r: &StepRecord) -> std::io::Result<()> {
    let prediction = r.predicted.map_or(String::new(), |p| p.to_string());
    writeln!(
        w,
        "{},{},{},{},{},{},{},{}",
        r.timestamp.format("%Y-%m-%d %H:%M:%S"),
        r.value,
        prediction,
        r.output.raw_anomaly,
        r.output.likelihood,
        r.output.log_likelihood,
        r.output.anomaly_score,
        r.pass
    )
}

/// Header of the `--trace` CSV.
pub const TRACE_HEADER: &str = "step,input_bits,sp_active,raw_anomaly,tm_segments,tm_synapses";

/// One `--trace` row (index lists sorted, space-separated; counts after the step).
pub fn write_trace_row(w: &mut impl Write, r: &StepRecord) -> std::io::Result<()> {
    writeln!(
        w,
        "{},{},{},{},{},{}",
        r.step,
        join(&r.input_bits),
        join(&r.sp_active),
        r.output.raw_anomaly,
        r.tm_segments,
        r.tm_synapses
    )
}
