//! `Model`: one stream's whole HTM pipeline behind a single `step()`.
//!
//! PLACEHOLDER API (being replaced by the real engine in this same change
//! series): the types and method signatures below are the contract the
//! server, store, NAB runner and replay code program against. The bodies are
//! temporary until the engine modules land.

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

/// A parameter that failed validation, named by its dotted path
/// (e.g. `tm.cells_per_column`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid parameter `{field}`: {message}")]
pub struct ParamsError {
    /// Dotted path of the offending field, as it appears in the JSON form.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// Value encoder parameters (RDSE).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueEncoderParams {
    pub size: u32,
    pub active_bits: u32,
    /// Bucket width; `None` = found online from the samples.
    pub resolution: Option<f64>,
    pub seed: u32,
}

/// Temporal Memory parameters (subset in the placeholder).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TmParams {
    pub cells_per_column: u32,
    pub activation_threshold: u32,
}

/// All parameters of a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelParams {
    pub value_encoder: ValueEncoderParams,
    pub tm: TmParams,
}

impl ModelParams {
    /// Names accepted by [`ModelParams::preset`].
    pub const PRESETS: &'static [&'static str] = &["default", "nab", "hotgym"];

    /// The named preset, or `None` for an unknown name.
    pub fn preset(name: &str) -> Option<ModelParams> {
        Self::PRESETS.contains(&name).then_some(ModelParams {
            value_encoder: ValueEncoderParams {
                size: 400,
                active_bits: 21,
                resolution: None,
                seed: 42,
            },
            tm: TmParams {
                cells_per_column: 32,
                activation_threshold: 13,
            },
        })
    }

    /// Set the value encoder's resolution from the expected value range.
    pub fn set_value_range(&mut self, min: f64, max: f64) {
        self.value_encoder.resolution = Some(((max - min) / 130.0).max(0.001));
    }

    /// Let the anomaly likelihood learn for `rows` samples before it scores
    /// (NAB's probationary period: learning `rows/2`, estimation the rest).
    pub fn set_probationary_period(&mut self, rows: u32) {
        let _ = rows;
    }

    /// Check every parameter; the error names the first bad field.
    pub fn validate(&self) -> Result<(), ParamsError> {
        if self.tm.cells_per_column == 0 {
            return Err(ParamsError {
                field: "tm.cells_per_column".into(),
                message: "must be at least 1".into(),
            });
        }
        if let Some(r) = self.value_encoder.resolution {
            if !(r.is_finite() && r > 0.0) {
                return Err(ParamsError {
                    field: "value_encoder.resolution".into(),
                    message: "must be a positive finite number".into(),
                });
            }
        }
        Ok(())
    }
}

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
    /// Final score to alert on: max(log_likelihood, spatial anomaly).
    pub anomaly_score: f64,
    /// Forecast of the next sample, once the predictor has learned.
    pub prediction: Option<Prediction>,
    /// Whether this step learned.
    pub learned: bool,
}

/// One stream's HTM model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Model {
    params: ModelParams,
    steps: u64,
}

impl Model {
    /// Build a model; fails if a parameter is invalid.
    pub fn new(params: ModelParams) -> Result<Model, ParamsError> {
        params.validate()?;
        Ok(Model { params, steps: 0 })
    }

    /// Score the sample against what was predicted, then (if `learn`) learn
    /// from it. `value` must be finite (callers validate input).
    pub fn step(&mut self, _timestamp: NaiveDateTime, value: f64, learn: bool) -> Output {
        debug_assert!(value.is_finite());
        self.steps += 1;
        Output {
            step: self.steps,
            raw_anomaly: 0.0,
            likelihood: 0.5,
            log_likelihood: 0.0301,
            anomaly_score: 0.0301,
            prediction: Some(Prediction {
                value,
                probability: 1.0,
            }),
            learned: learn,
        }
    }

    /// Start of a new sequence: forget the previous sample's context.
    pub fn reset(&mut self) {}

    /// The parameters this model was built with.
    pub fn params(&self) -> &ModelParams {
        &self.params
    }

    /// Samples seen so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Approximate heap memory held by the model, in bytes.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}
