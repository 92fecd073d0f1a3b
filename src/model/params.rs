//! `ModelParams`: every parameter of one stream's pipeline, and the named
//! presets.
//!
//! Presets:
//! - `hotgym` — htm.core's hot-gym example (reference §8.1) with fixed seeds
//!   (RDSE 42, SP 1, TM 42), so a run can be compared with htm.core's.
//! - `nab` — NuPIC's NAB detector (reference §8.3) mapped onto this engine,
//!   plus one alert per event and the flat-line rule; see `docs/presets.md`
//!   for every choice.
//! - `default` — what the service gives a new stream; see `docs/presets.md`.

use serde::{Deserialize, Serialize};

use crate::htm::anomaly_likelihood::AnomalyLikelihoodParams;
use crate::htm::date_encoder::DateEncoderParams;
use crate::htm::rdse::RdseParams;
use crate::htm::spatial_pooler::SpatialPoolerParams;
use crate::htm::temporal_memory::TemporalMemoryParams;

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

impl ParamsError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The value encoder: an RDSE whose bucket width is given, derived from an
/// expected range, or calibrated online from the first samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValueEncoderParams {
    /// Output width in bits.
    pub size: u32,
    /// Hash draws per value (≈ active bits).
    pub active_bits: u32,
    /// Hash seed (never 0: models must be reproducible).
    pub seed: u32,
    /// Bucket width. `None`: calibrated online (see `calibration_samples`).
    pub resolution: Option<f64>,
    /// Buckets spanning the (padded) range when the resolution comes from a
    /// range: NuPIC's NAB rule uses 130.
    pub range_buckets: f64,
    /// Padding added on each side of a range, as a fraction of it (NuPIC: 0.2).
    pub range_padding: f64,
    /// Smallest resolution a range may give (NuPIC: 0.001).
    pub min_resolution: f64,
    /// Online calibration: samples gathered before the resolution is fixed
    /// from their range (they are then learned in order, nothing is lost).
    pub calibration_samples: u32,
}

impl Default for ValueEncoderParams {
    fn default() -> Self {
        Self {
            size: 400,
            active_bits: 21,
            seed: 42,
            resolution: None,
            range_buckets: 130.0,
            range_padding: 0.2,
            min_resolution: 0.001,
            calibration_samples: 100,
        }
    }
}

impl ValueEncoderParams {
    /// The RDSE these parameters describe, at bucket width `resolution`.
    pub fn rdse_params(&self, resolution: f64) -> RdseParams {
        RdseParams {
            size: self.size,
            active_bits: self.active_bits,
            sparsity: 0.0,
            radius: 0.0,
            resolution: resolution as f32,
            category: false,
            seed: self.seed,
        }
    }

    /// The bucket width NuPIC's NAB detector derives from a value range.
    pub fn resolution_for_range(&self, min: f64, max: f64) -> f64 {
        let span = (max - min).abs() * (1.0 + 2.0 * self.range_padding);
        (span / self.range_buckets).max(self.min_resolution)
    }
}

/// The next-value predictor (multi-step SDR classifier).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PredictorParams {
    /// Horizons in samples; the model reports the first one.
    pub steps: Vec<u32>,
    /// Learning rate.
    pub alpha: f64,
    /// Bucket width of predicted values; `None` = the value encoder's.
    pub resolution: Option<f64>,
}

impl Default for PredictorParams {
    fn default() -> Self {
        Self {
            steps: vec![1],
            alpha: 0.1,
            resolution: None,
        }
    }
}

/// NAB's "spatial anomaly" rule: a value outside the range seen so far,
/// widened by `tolerance` of that range on both sides, scores 1.0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpatialAnomalyParams {
    pub enabled: bool,
    pub tolerance: f64,
}

impl Default for SpatialAnomalyParams {
    fn default() -> Self {
        Self {
            enabled: true,
            tolerance: 0.05,
        }
    }
}

/// Quieting repeated alerts: once the score reaches `threshold`, the
/// scores of the next `rows` samples are multiplied by `factor`, so one
/// event raises one alert instead of a burst of them (the "rest period" of
/// CAD OSE and ARTime's masking, see `docs/nab.md`). `rows = 0` turns it off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSuppressionParams {
    pub threshold: f64,
    pub rows: u32,
    pub factor: f64,
}

impl Default for AlertSuppressionParams {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            rows: 0,
            factor: 0.5,
        }
    }
}

/// The flat-line (stuck sensor) rule: a run of `min_run` identical
/// consecutive values scores 1.0 at the sample that completes it, once per
/// run, if the stream has varied and no other run of `min_run` or more ended
/// in the `quiet_rows` samples before this one started (see `flat_line.rs`).
/// `min_run = 0` turns it off; otherwise it must be at least 2.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlatLineParams {
    pub min_run: u32,
    pub quiet_rows: u32,
}

/// All parameters of a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelParams {
    pub value_encoder: ValueEncoderParams,
    pub date_encoder: DateEncoderParams,
    pub sp: SpatialPoolerParams,
    pub tm: TemporalMemoryParams,
    pub likelihood: AnomalyLikelihoodParams,
    pub predictor: PredictorParams,
    pub spatial_anomaly: SpatialAnomalyParams,
    pub alert_suppression: AlertSuppressionParams,
    /// Off when absent, so parameters saved before the rule existed keep
    /// behaving as they did (the other groups default to the `default`
    /// preset's values).
    #[serde(default)]
    pub flat_line: FlatLineParams,
}

impl Default for ModelParams {
    fn default() -> Self {
        Self::default_preset()
    }
}

impl ModelParams {
    /// Names accepted by [`ModelParams::preset`].
    pub const PRESETS: &'static [&'static str] = &["default", "nab", "hotgym"];

    /// The named preset, or `None` for an unknown name.
    pub fn preset(name: &str) -> Option<ModelParams> {
        match name {
            "default" => Some(Self::default_preset()),
            "nab" => Some(Self::nab()),
            "hotgym" => Some(Self::hotgym()),
            _ => None,
        }
    }

    /// htm.core's hot-gym example (reference §8.1), seeds fixed.
    pub fn hotgym() -> ModelParams {
        let input_width = 700 + 720 + 42;
        ModelParams {
            value_encoder: ValueEncoderParams {
                size: 700,
                active_bits: 14, // sparsity 0.02 of 700
                seed: 42,
                resolution: Some(0.88),
                ..ValueEncoderParams::default()
            },
            date_encoder: DateEncoderParams {
                time_of_day_width: 30,
                time_of_day_radius: 1.0,
                weekend_width: 21,
                ..DateEncoderParams::default()
            },
            sp: SpatialPoolerParams {
                column_dimensions: vec![1638],
                potential_radius: input_width,
                potential_pct: 0.85,
                global_inhibition: true,
                local_area_density: 0.043_956_045, // 72 / 1638 as f32 (htm.core: 0.04395604395604396)
                num_active_columns_per_inh_area: 0,
                stimulus_threshold: 0,
                syn_perm_inactive_dec: 0.006,
                syn_perm_active_inc: 0.04,
                syn_perm_connected: 0.14,
                min_pct_overlap_duty_cycles: 0.001,
                duty_cycle_period: 1000,
                boost_strength: 3.0,
                seed: 1,
                wrap_around: true,
            },
            tm: TemporalMemoryParams {
                cells_per_column: 13,
                activation_threshold: 17,
                initial_permanence: 0.21,
                connected_permanence: 0.14,
                min_threshold: 10,
                max_new_synapse_count: 32,
                permanence_increment: 0.1,
                permanence_decrement: 0.1,
                predicted_segment_decrement: 0.0,
                seed: 42,
                max_segments_per_cell: 128,
                max_synapses_per_segment: 64,
                first_order_fallback: 0.0,
            },
            likelihood: AnomalyLikelihoodParams::default(),
            predictor: PredictorParams {
                steps: vec![1, 5],
                alpha: 0.1,
                resolution: Some(1.0),
            },
            spatial_anomaly: SpatialAnomalyParams::default(),
            alert_suppression: AlertSuppressionParams::default(),
            flat_line: FlatLineParams::default(),
        }
    }

    /// NuPIC's NAB detector (reference §8.3) on this engine.
    pub fn nab() -> ModelParams {
        let input_width = 400 + 54;
        ModelParams {
            value_encoder: ValueEncoderParams::default(),
            date_encoder: DateEncoderParams {
                time_of_day_width: 21,
                time_of_day_radius: 9.49,
                ..DateEncoderParams::default()
            },
            sp: SpatialPoolerParams {
                column_dimensions: vec![2048],
                potential_radius: input_width,
                potential_pct: 0.8,
                global_inhibition: true,
                local_area_density: 0.0,
                num_active_columns_per_inh_area: 40,
                stimulus_threshold: 0,
                syn_perm_inactive_dec: 0.0005,
                syn_perm_active_inc: 0.003,
                syn_perm_connected: 0.2,
                min_pct_overlap_duty_cycles: 0.001,
                duty_cycle_period: 1000,
                boost_strength: 0.0,
                seed: 1956,
                wrap_around: true,
            },
            tm: TemporalMemoryParams {
                cells_per_column: 32,
                activation_threshold: 13,
                initial_permanence: 0.21,
                connected_permanence: 0.5,
                min_threshold: 10,
                max_new_synapse_count: 20,
                permanence_increment: 0.1,
                permanence_decrement: 0.1,
                predicted_segment_decrement: 0.0,
                seed: 1960,
                max_segments_per_cell: 128,
                max_synapses_per_segment: 32,
                first_order_fallback: 0.0,
            },
            likelihood: AnomalyLikelihoodParams::for_probationary_period(750),
            predictor: PredictorParams {
                steps: vec![1],
                alpha: 0.035_828_933_612_158,
                resolution: None,
            },
            spatial_anomaly: SpatialAnomalyParams::default(),
            // One alert per event (not NuPIC's): `docs/nab.md`.
            alert_suppression: AlertSuppressionParams {
                rows: 50,
                ..AlertSuppressionParams::default()
            },
            // Stuck sensors (not NuPIC's): `docs/nab.md`.
            flat_line: FlatLineParams {
                min_run: 12,
                quiet_rows: 2000,
            },
        }
    }

    /// The service's preset for a new stream: the `nab` pipeline (one alert
    /// per event, the flat-line rule) with 8 cells per column (a quarter of
    /// the Temporal Memory of 32; with the fallback next, as good on NAB as
    /// 16 or 32), the raw anomaly scored against the first-order prediction
    /// when the Temporal Memory's own covers less than half an input (a
    /// narrow context's dead end), 200 instead of 130 value buckets over
    /// the range, the value range calibrated online from the first 300
    /// samples, and a likelihood that learns for 200 + 200 samples.
    /// Measurements behind each choice: `docs/nab.md`.
    pub fn default_preset() -> ModelParams {
        let mut params = ModelParams::nab();
        params.tm.cells_per_column = 8;
        params.tm.first_order_fallback = 0.5;
        params.value_encoder.range_buckets = 200.0;
        params.value_encoder.calibration_samples = 300;
        params.set_probationary_period(400);
        params
    }

    /// Derive the value encoder's resolution from the expected value range
    /// (NuPIC's NAB rule: the range padded by `range_padding` on each side,
    /// split into `range_buckets` buckets, at least `min_resolution`).
    pub fn set_value_range(&mut self, min: f64, max: f64) {
        self.value_encoder.resolution = Some(self.value_encoder.resolution_for_range(min, max));
    }

    /// Let the anomaly likelihood learn for `rows` samples before it scores
    /// (NAB's probationary period: learning `rows/2`, estimation the rest).
    pub fn set_probationary_period(&mut self, rows: u32) {
        self.likelihood = AnomalyLikelihoodParams {
            historic_window_size: self.likelihood.historic_window_size,
            reestimation_period: self.likelihood.reestimation_period,
            averaging_window: self.likelihood.averaging_window,
            ..AnomalyLikelihoodParams::for_probationary_period(rows)
        };
    }

    /// Check every parameter by building the model's parts; the error names
    /// the first bad field.
    pub fn validate(&self) -> Result<(), ParamsError> {
        super::Model::new(self.clone()).map(|_| ())
    }
}

impl ModelParams {
    /// These parameters with `overrides` (a JSON object shaped like
    /// `ModelParams`, any subset of fields) merged in. An unknown field or a
    /// value of the wrong type is an error naming it; values are checked by
    /// [`ModelParams::validate`] (or `Model::new`), not here.
    pub fn with_overrides(
        &self,
        overrides: &serde_json::Value,
    ) -> Result<ModelParams, ParamsError> {
        if !overrides.is_object() {
            return Err(ParamsError::new("", "overrides must be a JSON object"));
        }
        let mut merged = serde_json::to_value(self).expect("parameters serialize");
        merge_json(&mut merged, overrides, "")?;
        serde_path_to_error::deserialize(merged).map_err(|e| {
            let path = e.path().to_string();
            ParamsError::new(
                if path == "." { String::new() } else { path },
                e.into_inner().to_string(),
            )
        })
    }

    /// Apply `key=value` assignments such as `tm.activation_threshold=12`
    /// or `predictor.steps=[1,5]` (values are JSON; bare words are strings).
    pub fn with_assignments(&self, assignments: &[String]) -> Result<ModelParams, ParamsError> {
        let mut overrides = serde_json::Value::Object(Default::default());
        for assignment in assignments {
            let (path, value) = assignment.split_once('=').ok_or_else(|| {
                ParamsError::new(assignment.clone(), "expected KEY=VALUE, e.g. tm.seed=7")
            })?;
            let value: serde_json::Value = serde_json::from_str(value)
                .unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
            let mut node = &mut overrides;
            let parts: Vec<&str> = path.split('.').collect();
            for (i, part) in parts.iter().enumerate() {
                let object = node.as_object_mut().expect("built as objects");
                if i + 1 == parts.len() {
                    object.insert((*part).to_owned(), value.clone());
                    break;
                }
                node = object
                    .entry((*part).to_owned())
                    .or_insert_with(|| serde_json::Value::Object(Default::default()));
                if !node.is_object() {
                    return Err(ParamsError::new(
                        path,
                        "is set twice, as a value and as a group",
                    ));
                }
            }
        }
        self.with_overrides(&overrides)
    }
}

/// Deep-merge `patch` into `base`; objects merge key by key, anything else
/// replaces. A key the base does not have is an unknown parameter.
fn merge_json(
    base: &mut serde_json::Value,
    patch: &serde_json::Value,
    path: &str,
) -> Result<(), ParamsError> {
    let Some(patch_map) = patch.as_object() else {
        *base = patch.clone();
        return Ok(());
    };
    let Some(base_map) = base.as_object_mut() else {
        return Err(ParamsError::new(
            path,
            "is a value, not a group of parameters",
        ));
    };
    for (key, value) in patch_map {
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        match base_map.get_mut(key) {
            Some(slot) if slot.is_object() && value.is_object() => merge_json(slot, value, &here)?,
            Some(slot) => *slot = value.clone(),
            None => return Err(ParamsError::new(here, "unknown parameter")),
        }
    }
    Ok(())
}
