//! `Model`: one stream's whole HTM pipeline behind a single `step()`.
//!
//! Per sample, in the reference order (htm-reference §7):
//!
//! ```text
//! value ─► RDSE ─┐
//!                ├─► concat ─► Spatial Pooler ─► Temporal Memory ─► raw anomaly
//! time ─► Date ──┘                                    │                  │
//!                                   active cells ─► predictor      likelihood ─► log
//! ```
//!
//! Every sample is scored against the prediction made from the previous one
//! and then learned from, in the same step: there is no training phase.
//! The whole state, random generators included, serializes, so a restored
//! model continues bit for bit as if it had never stopped.

mod calibration;
mod flat_line;
mod params;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use crate::htm::anomaly_likelihood::{log_likelihood, AnomalyLikelihood, LikelihoodError};
use crate::htm::date_encoder::DateEncoder;
use crate::htm::predictor::Predictor;
use crate::htm::rdse::Rdse;
use crate::htm::sdr::Sdr;
use crate::htm::spatial_pooler::{SpatialPooler, SpatialPoolerError};
use crate::htm::temporal_memory::{TemporalMemory, TemporalMemoryError};

pub use calibration::Calibration;
pub use flat_line::FlatLine;
pub use params::{
    AlertSuppressionParams, FlatLineParams, ModelParams, ParamsError, PredictorParams,
    SpatialAnomalyParams, ValueEncoderParams,
};

/// The model's forecast of the next value.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Most likely next value (centre of the most probable bucket).
    pub value: f64,
    /// Its probability under the predictor.
    pub probability: f64,
}

/// What one `step()` reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// Samples seen, this one included.
    pub step: u64,
    /// Fraction of active columns that were not predicted, in [0, 1].
    pub raw_anomaly: f64,
    /// Anomaly likelihood in [0, 1] (0.5 while the likelihood is learning).
    pub likelihood: f64,
    /// `ln(1.0000000001 - likelihood) / ln(1e-10)`, in [0, 1].
    pub log_likelihood: f64,
    /// The score to alert on: `log_likelihood`, or 1.0 when the spatial rule
    /// fires (a value outside the range seen so far) or the flat-line rule
    /// does (the value stuck for `flat_line.min_run` samples), once the
    /// likelihood has finished learning; damped after an alert
    /// (`alert_suppression`).
    pub anomaly_score: f64,
    /// Forecast of the next sample, once the predictor has learned.
    pub prediction: Option<Prediction>,
    /// Whether the sample is learned from (while the value encoder
    /// calibrates, samples are held and learned once it is built).
    pub learned: bool,
}

/// Internals of the last step, for traces and plots.
#[derive(Clone, Copy, Debug)]
pub struct StepInternals<'a> {
    /// The encoder output (value bits then date bits).
    pub input: &'a Sdr,
    /// Spatial Pooler active columns.
    pub active_columns: &'a Sdr,
    /// Active columns that no cell predicted (they burst).
    pub bursting_columns: usize,
    /// Temporal Memory segments and synapses after the step.
    pub segments: usize,
    pub synapses: usize,
}

/// The HTM parts, built once the value encoder's resolution is known.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Pipeline {
    rdse: Rdse,
    date: DateEncoder,
    sp: SpatialPooler,
    tm: TemporalMemory,
    predictor: Predictor,
    /// Bucket width of the predictor's categories.
    bucket_width: f64,
    /// Category index → bucket key (`floor(value / bucket_width)`), in order
    /// of first appearance; categories must be small non-negative integers.
    bucket_keys: Vec<i64>,
    /// Scratch SDRs reused every step (no allocation in steady state).
    value_bits: Sdr,
    date_bits: Sdr,
    input: Sdr,
    active_columns: Sdr,
    /// Last bursting-column count, for diagnostics.
    bursting_columns: usize,
}

/// One stream's HTM model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Model {
    params: ModelParams,
    /// `None` until the value resolution is known (online calibration).
    pipeline: Option<Pipeline>,
    calibration: Calibration,
    likelihood: AnomalyLikelihood,
    /// Running extremes for the spatial-anomaly rule.
    seen_min: f64,
    seen_max: f64,
    /// Run of identical values, for the flat-line rule.
    flat_line: FlatLine,
    /// Samples left whose score is damped after the last alert.
    suppress_left: u32,
    steps: u64,
}

/// A component's validation error as a `ParamsError` whose field is the
/// dotted path of the parameter (`component.field` when the component names
/// the field, else the component).
fn prefixed<E: std::fmt::Display>(component: &str, field: Option<&str>, err: E) -> ParamsError {
    match field {
        Some(f) if !f.is_empty() => ParamsError::new(format!("{component}.{f}"), err.to_string()),
        _ => ParamsError::new(component, err.to_string()),
    }
}

fn sp_error(e: SpatialPoolerError) -> ParamsError {
    let field = match &e {
        SpatialPoolerError::InvalidParameter { field, .. } => Some(*field),
        SpatialPoolerError::CorruptState(_) => None,
    };
    prefixed("sp", field, e)
}

fn tm_error(e: TemporalMemoryError) -> ParamsError {
    let TemporalMemoryError::InvalidParameter { field, .. } = &e;
    let field = *field;
    prefixed("tm", Some(field), e)
}

fn likelihood_error(e: LikelihoodError) -> ParamsError {
    let LikelihoodError::ZeroParameter(field) = &e;
    let field = *field;
    prefixed("likelihood", Some(field), e)
}

impl Pipeline {
    fn build(params: &ModelParams, resolution: f64) -> Result<Pipeline, ParamsError> {
        let v = &params.value_encoder;
        if !(resolution.is_finite() && resolution > 0.0) {
            return Err(ParamsError::new(
                "value_encoder.resolution",
                "must be a positive finite number",
            ));
        }
        let rdse =
            Rdse::new(v.rdse_params(resolution)).map_err(|e| prefixed("value_encoder", None, e))?;
        let date = DateEncoder::new(params.date_encoder.clone())
            .map_err(|e| prefixed("date_encoder", None, e))?;
        let input_width = rdse.size() + date.size();
        let sp = SpatialPooler::new(&[input_width], params.sp.clone()).map_err(sp_error)?;
        let tm = TemporalMemory::new(sp.num_columns(), params.tm.clone()).map_err(tm_error)?;
        let predictor = Predictor::new(&params.predictor.steps, params.predictor.alpha)
            .map_err(|e| prefixed("predictor", None, e))?;
        let bucket_width = params.predictor.resolution.unwrap_or(resolution);
        if !(bucket_width.is_finite() && bucket_width > 0.0) {
            return Err(ParamsError::new(
                "predictor.resolution",
                "must be a positive finite number",
            ));
        }
        Ok(Pipeline {
            value_bits: Sdr::new(rdse.size()),
            date_bits: Sdr::new(date.size()),
            input: Sdr::new(input_width),
            active_columns: Sdr::new(sp.num_columns()),
            rdse,
            date,
            sp,
            tm,
            predictor,
            bucket_width,
            bucket_keys: Vec::new(),
            bursting_columns: 0,
        })
    }

    /// Check every part's parameters without building the large ones (the
    /// resolution is not known yet; a stand-in is used for the encoder).
    fn validate(params: &ModelParams) -> Result<(), ParamsError> {
        let v = &params.value_encoder;
        let rdse = Rdse::new(v.rdse_params(1.0)).map_err(|e| prefixed("value_encoder", None, e))?;
        let date = DateEncoder::new(params.date_encoder.clone())
            .map_err(|e| prefixed("date_encoder", None, e))?;
        let columns = params
            .sp
            .validate(&[rdse.size() + date.size()])
            .map_err(sp_error)?;
        params.tm.validate(columns).map_err(tm_error)?;
        Predictor::new(&params.predictor.steps, params.predictor.alpha)
            .map_err(|e| prefixed("predictor", None, e))?;
        if let Some(r) = params.predictor.resolution {
            if !(r.is_finite() && r > 0.0) {
                return Err(ParamsError::new(
                    "predictor.resolution",
                    "must be a positive finite number",
                ));
            }
        }
        Ok(())
    }

    /// Encode → SP → TM; returns the raw anomaly.
    fn compute(&mut self, timestamp: NaiveDateTime, value: f64, learn: bool) -> f64 {
        self.rdse.encode(value, &mut self.value_bits);
        self.date.encode(timestamp, &mut self.date_bits);
        self.input.concat_into(&[&self.value_bits, &self.date_bits]);
        self.sp
            .compute(&self.input, learn, &mut self.active_columns);
        self.tm.compute(&self.active_columns, learn);
        self.bursting_columns = self.tm.bursting_columns_of_last_compute();
        f64::from(self.tm.anomaly())
    }

    fn category_for(&mut self, value: f64) -> u32 {
        let key = (value / self.bucket_width).floor() as i64;
        match self.bucket_keys.iter().position(|&k| k == key) {
            Some(i) => i as u32,
            None => {
                self.bucket_keys.push(key);
                (self.bucket_keys.len() - 1) as u32
            }
        }
    }

    /// Forecast from the current active cells, then (if `learn`) teach the
    /// predictor that `value` followed the patterns of earlier steps.
    fn predict_and_learn(&mut self, record: u64, value: f64, learn: bool) -> Option<Prediction> {
        let first_step = self.predictor.steps()[0];
        let prediction = {
            self.predictor.infer(self.tm.active_cells()).for_each(drop);
            let pdf = self.predictor.pdf(first_step).unwrap_or(&[]);
            pdf.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
                .filter(|(_, &p)| p > 0.0)
                .map(|(category, &probability)| (category, probability))
        };
        let prediction = prediction.and_then(|(category, probability)| {
            self.bucket_keys.get(category).map(|&key| Prediction {
                value: (key as f64 + 0.5) * self.bucket_width,
                probability,
            })
        });
        if learn {
            let category = self.category_for(value);
            self.predictor
                .learn(record, self.tm.active_cells(), &[category])
                .expect("record numbers only increase");
        }
        prediction
    }

    fn memory_bytes(&self) -> usize {
        self.sp.memory_bytes()
            + self.tm.memory_bytes()
            + self.predictor.memory_bytes()
            + self.bucket_keys.capacity() * 8
            + (self.value_bits.count() + self.date_bits.count() + self.input.count()) * 4
    }
}

impl Model {
    /// Build a model; fails if a parameter is invalid, naming it.
    pub fn new(params: ModelParams) -> Result<Model, ParamsError> {
        let likelihood =
            AnomalyLikelihood::new(params.likelihood.clone()).map_err(likelihood_error)?;
        let calibration = Calibration::new(&params.value_encoder)?;
        let pipeline = match params.value_encoder.resolution {
            Some(resolution) => Some(Pipeline::build(&params, resolution)?),
            None => {
                // Validate every other part now, so a bad parameter is
                // reported at creation, not when calibration ends.
                Pipeline::validate(&params)?;
                None
            }
        };
        let spatial = &params.spatial_anomaly;
        if !(spatial.tolerance.is_finite() && spatial.tolerance >= 0.0) {
            return Err(ParamsError::new(
                "spatial_anomaly.tolerance",
                "must be a finite number >= 0",
            ));
        }
        let min_run = params.flat_line.min_run;
        if min_run == 1 {
            return Err(ParamsError::new(
                "flat_line.min_run",
                "must be 0 (off) or at least 2",
            ));
        }
        Ok(Model {
            params,
            pipeline,
            calibration,
            likelihood,
            seen_min: f64::INFINITY,
            seen_max: f64::NEG_INFINITY,
            flat_line: FlatLine::default(),
            suppress_left: 0,
            steps: 0,
        })
    }

    /// Score the sample against what was predicted, then (if `learn`) learn
    /// from it. `value` must be finite: callers validate input.
    pub fn step(&mut self, timestamp: NaiveDateTime, value: f64, learn: bool) -> Output {
        debug_assert!(value.is_finite(), "Model::step needs a finite value");
        self.steps += 1;
        let spatial = self.spatial_anomaly(value);
        let flat = self.flat_line.push(&self.params.flat_line, value);

        let (raw, prediction, learned) = if self.pipeline.is_some() {
            self.run_pipeline(timestamp, value, learn)
        } else {
            self.calibrate(timestamp, value, learn)
        };

        let likelihood = self.likelihood.compute(value, raw);
        let log_likelihood = log_likelihood(likelihood);
        let scoring = self.likelihood.iteration() > u64::from(self.likelihood_probation());
        let score = if (spatial || flat) && scoring {
            1.0
        } else {
            log_likelihood
        };
        let anomaly_score = self.suppress_repeats(score);
        Output {
            step: self.steps,
            raw_anomaly: raw,
            likelihood,
            log_likelihood,
            anomaly_score,
            prediction,
            learned,
        }
    }

    fn run_pipeline(
        &mut self,
        timestamp: NaiveDateTime,
        value: f64,
        learn: bool,
    ) -> (f64, Option<Prediction>, bool) {
        let pipeline = self.pipeline.as_mut().expect("pipeline built");
        let raw = pipeline.compute(timestamp, value, learn);
        let prediction = pipeline.predict_and_learn(self.steps, value, learn);
        (raw, prediction, learn)
    }

    /// Gather samples until the resolution can be fixed; then build the
    /// pipeline and feed it the gathered samples in order.
    fn calibrate(
        &mut self,
        timestamp: NaiveDateTime,
        value: f64,
        learn: bool,
    ) -> (f64, Option<Prediction>, bool) {
        let Some(resolution) = self.calibration.push(timestamp, value, learn) else {
            // Held, and learned (if asked) once the pipeline is built.
            return (0.0, None, learn);
        };
        let mut pipeline =
            Pipeline::build(&self.params, resolution).expect("parameters validated in new()");
        let gathered = self.calibration.take_samples();
        let first_record = self.steps + 1 - gathered.len() as u64;
        let mut last = (0.0, None);
        for (i, sample) in gathered.iter().enumerate() {
            let raw = pipeline.compute(sample.timestamp, sample.value, sample.learn);
            let prediction =
                pipeline.predict_and_learn(first_record + i as u64, sample.value, sample.learn);
            last = (raw, prediction);
        }
        self.pipeline = Some(pipeline);
        (last.0, last.1, learn)
    }

    /// Damp the scores that follow an alert (see `AlertSuppressionParams`).
    fn suppress_repeats(&mut self, score: f64) -> f64 {
        let rule = &self.params.alert_suppression;
        if self.suppress_left > 0 {
            self.suppress_left -= 1;
            return score * rule.factor;
        }
        if rule.rows > 0 && score >= rule.threshold {
            self.suppress_left = rule.rows;
        }
        score
    }

    /// NAB's spatial rule, checked before the extremes are updated.
    fn spatial_anomaly(&mut self, value: f64) -> bool {
        let rule = &self.params.spatial_anomaly;
        let mut fired = false;
        if rule.enabled && self.seen_min < self.seen_max {
            let margin = rule.tolerance * (self.seen_max - self.seen_min);
            fired = value > self.seen_max + margin || value < self.seen_min - margin;
        }
        self.seen_min = self.seen_min.min(value);
        self.seen_max = self.seen_max.max(value);
        fired
    }

    fn likelihood_probation(&self) -> u32 {
        self.params.likelihood.learning_period + self.params.likelihood.estimation_samples
    }

    /// Start of a new sequence: the next sample is not predicted from the
    /// previous one.
    pub fn reset(&mut self) {
        if let Some(p) = self.pipeline.as_mut() {
            p.tm.reset();
            p.predictor.reset();
        }
    }

    /// The parameters this model was built with.
    pub fn params(&self) -> &ModelParams {
        &self.params
    }

    /// Samples seen so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The value encoder's resolution, once known.
    pub fn resolution(&self) -> Option<f64> {
        self.pipeline
            .as_ref()
            .map(|p| f64::from(p.rdse.resolution()))
    }

    /// Internals of the last step (`None` while calibrating).
    pub fn internals(&self) -> Option<StepInternals<'_>> {
        self.pipeline.as_ref().map(|p| StepInternals {
            input: &p.input,
            active_columns: &p.active_columns,
            bursting_columns: p.bursting_columns,
            segments: p.tm.num_segments(),
            synapses: p.tm.num_synapses(),
        })
    }

    /// Approximate heap memory held by the model, in bytes.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.pipeline.as_ref().map_or(0, Pipeline::memory_bytes)
            + self.likelihood.memory_bytes()
            + self.calibration.memory_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, NaiveDate};

    fn t(step: i64) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 1, 5)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            + Duration::hours(step)
    }

    /// The `default` pipeline, scaled down so tests run fast in debug.
    fn small(resolution: Option<f64>) -> ModelParams {
        let mut p = ModelParams::default_preset()
            .with_assignments(&[
                "sp.column_dimensions=[512]".into(),
                "sp.num_active_columns_per_inh_area=20".into(),
                "tm.cells_per_column=8".into(),
            ])
            .unwrap();
        p.value_encoder.resolution = resolution;
        p.set_probationary_period(200);
        p
    }

    /// A repeating sequence of 8 well-separated values (hourly, so it lines
    /// up with the time-of-day encoding: 3 periods a day).
    fn periodic(step: i64) -> f64 {
        [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0][(step % 8) as usize]
    }

    #[test]
    fn a_learned_sequence_is_predicted_and_an_unseen_value_is_anomalous() {
        let mut m = Model::new(small(Some(1.0))).unwrap();
        let outputs: Vec<Output> = (0..800).map(|s| m.step(t(s), periodic(s), true)).collect();
        let first: f64 = outputs[..16].iter().map(|o| o.raw_anomaly).sum::<f64>() / 16.0;
        let recent: f64 = outputs[784..].iter().map(|o| o.raw_anomaly).sum::<f64>() / 16.0;
        assert!(first > 0.5, "nothing is predicted at first: {first}");
        assert!(recent < 0.1, "the sequence is predicted: {recent}");
        let last = &outputs[799];
        let p = last.prediction.expect("a forecast");
        assert!((p.value - periodic(800)).abs() <= 1.0, "forecast {p:?}");
        // 45 is inside the learned range but never seen: its columns burst.
        let out = m.step(t(800), 45.0, true);
        assert!(out.raw_anomaly >= 0.5, "raw {}", out.raw_anomaly);
    }

    #[test]
    fn a_constant_stream_has_likelihood_one_half() {
        let mut m = Model::new(small(Some(1.0))).unwrap();
        let mut out = None;
        for s in 0..600 {
            out = Some(m.step(t(s), 42.0, true));
        }
        let out = out.unwrap();
        assert!((out.likelihood - 0.5).abs() < 0.01, "{}", out.likelihood);
        assert!(out.anomaly_score < 0.1);
    }

    #[test]
    fn a_burst_of_unseen_values_after_a_stable_period_is_likely_anomalous() {
        // Resolution 0.1: values 3 apart share no bits.
        let mut m = Model::new(small(Some(0.1))).unwrap();
        for s in 0..1500 {
            m.step(t(s), periodic(s), true);
        }
        // Never-seen values inside the learned range (so the spatial rule
        // stays silent): 15, 25, …, 75, then 17, 27, …
        let unseen = |k: i64| 15.0 + 10.0 * (k % 7) as f64 + 2.0 * (k / 7) as f64;
        let highest = (0..15)
            .map(|k| m.step(t(1500 + k), unseen(k), true))
            .inspect(|o| assert!(o.anomaly_score < 1.0 || o.log_likelihood >= 0.5))
            .map(|o| o.likelihood)
            .fold(0.0, f64::max);
        assert!(highest > 0.99, "likelihood {highest}");
    }

    #[test]
    fn a_value_outside_the_seen_range_scores_one() {
        let mut m = Model::new(small(Some(1.0))).unwrap();
        for s in 0..500 {
            m.step(t(s), periodic(s), true);
        }
        assert_eq!(m.step(t(500), 500.0, true).anomaly_score, 1.0);
    }

    #[test]
    fn checkpoint_and_continue_equals_never_stopping() {
        let mut a = Model::new(small(None)).unwrap();
        for s in 0..350 {
            a.step(t(s), periodic(s) + (s % 5) as f64, true);
        }
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&a, config).unwrap();
        let (mut b, _): (Model, usize) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
        for s in 350..500 {
            let v = periodic(s) + (s % 5) as f64;
            assert_eq!(a.step(t(s), v, true), b.step(t(s), v, true), "step {s}");
        }
    }

    #[test]
    fn the_same_parameters_give_the_same_outputs() {
        let mut a = Model::new(small(Some(1.0))).unwrap();
        let mut b = Model::new(small(Some(1.0))).unwrap();
        for s in 0..300 {
            assert_eq!(
                a.step(t(s), periodic(s), true),
                b.step(t(s), periodic(s), true)
            );
        }
    }

    #[test]
    fn calibration_holds_samples_then_fixes_the_resolution_from_their_range() {
        let mut p = small(None);
        p.value_encoder.calibration_samples = 50;
        let mut m = Model::new(p.clone()).unwrap();
        for s in 0..49 {
            let out = m.step(t(s), periodic(s), true);
            assert!(out.prediction.is_none() && out.learned);
            assert_eq!(m.resolution(), None);
        }
        m.step(t(49), periodic(49), true);
        let expected = p.value_encoder.resolution_for_range(10.0, 80.0);
        assert_eq!(m.resolution(), Some(f64::from(expected as f32)));
        assert_eq!(m.steps(), 50);
    }

    #[test]
    fn a_flat_start_keeps_calibrating_until_the_first_change() {
        let mut p = small(None);
        p.value_encoder.calibration_samples = 20;
        let mut m = Model::new(p).unwrap();
        for s in 0..100 {
            m.step(t(s), 7.0, true);
        }
        assert_eq!(m.resolution(), None);
        m.step(t(100), 8.0, true);
        assert!(m.resolution().is_some());
    }

    /// `small()` with the flat-line rule (runs of 12 after varying input)
    /// and without alert suppression, which could damp the rule's 1.0.
    fn with_flat_line() -> ModelParams {
        let mut p = small(Some(1.0));
        p.alert_suppression.rows = 0;
        p.flat_line = FlatLineParams {
            min_run: 12,
            quiet_rows: 100,
        };
        p
    }

    /// Indices of the steps whose score is 1.0.
    fn alerts(outputs: &[Output]) -> Vec<usize> {
        (0..outputs.len())
            .filter(|&i| outputs[i].anomaly_score == 1.0)
            .collect()
    }

    #[test]
    fn a_stuck_value_after_varying_input_scores_one_once() {
        let mut m = Model::new(with_flat_line()).unwrap();
        let mut outputs: Vec<Output> = (0..600).map(|s| m.step(t(s), periodic(s), true)).collect();
        // Stuck at a familiar value: the run starts at 600, is 12 long at 611.
        outputs.extend((600..800).map(|s| m.step(t(s), 40.0, true)));
        assert_eq!(alerts(&outputs[300..]), vec![611 - 300]);
        // The raw anomaly alone would not have told: HTM learns the constant.
        assert!(outputs[700..].iter().all(|o| o.raw_anomaly < 0.5));
    }

    #[test]
    fn a_stream_constant_from_the_start_never_flags_a_flat_line() {
        let mut m = Model::new(with_flat_line()).unwrap();
        let outputs: Vec<Output> = (0..600).map(|s| m.step(t(s), 42.0, true)).collect();
        assert!(alerts(&outputs).is_empty());
    }

    #[test]
    fn short_repeats_do_not_flag_a_flat_line() {
        let mut m = Model::new(with_flat_line()).unwrap();
        // Each value of the learned sequence held for 11 samples.
        let outputs: Vec<Output> = (0..1200)
            .map(|s| m.step(t(s), periodic(s / 11), true))
            .collect();
        assert!(alerts(&outputs[300..]).is_empty());
    }

    #[test]
    fn checkpoint_inside_a_flat_run_continues_identically() {
        let mut a = Model::new(with_flat_line()).unwrap();
        for s in 0..600 {
            a.step(t(s), periodic(s), true);
        }
        // 5 samples into a flat run, then checkpoint and restore.
        for s in 600..605 {
            a.step(t(s), 40.0, true);
        }
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&a, config).unwrap();
        let (mut b, _): (Model, usize) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
        let mut fired = Vec::new();
        for s in 605..700 {
            let (x, y) = (a.step(t(s), 40.0, true), b.step(t(s), 40.0, true));
            assert_eq!(x, y, "step {s}");
            if y.anomaly_score == 1.0 {
                fired.push(s);
            }
        }
        assert_eq!(fired, vec![611]);
    }

    #[test]
    fn parameters_saved_without_the_flat_line_rule_turn_it_off() {
        let mut json = serde_json::to_value(ModelParams::default_preset()).unwrap();
        json.as_object_mut().unwrap().remove("flat_line");
        let params: ModelParams = serde_json::from_value(json).unwrap();
        assert_eq!(params.flat_line, FlatLineParams::default());
        assert_eq!(params.flat_line.min_run, 0);
    }

    #[test]
    fn bad_parameters_are_named() {
        let bad = [
            ("tm.cells_per_column=0", "tm.cells_per_column"),
            ("sp.potential_pct=2.0", "sp.potential_pct"),
            ("value_encoder.resolution=-1", "value_encoder.resolution"),
            (
                "likelihood.averaging_window=0",
                "likelihood.averaging_window",
            ),
            ("spatial_anomaly.tolerance=-1", "spatial_anomaly.tolerance"),
            ("flat_line.min_run=1", "flat_line.min_run"),
        ];
        for (assignment, field) in bad {
            let params = ModelParams::default_preset()
                .with_assignments(&[assignment.to_owned()])
                .unwrap();
            let err = Model::new(params).unwrap_err();
            assert_eq!(err.field, field, "{assignment}: {err}");
        }
        let err = ModelParams::default_preset()
            .with_assignments(&["tm.no_such_thing=1".into()])
            .unwrap_err();
        assert_eq!(err.field, "tm.no_such_thing");
    }
}
