//! `StreamConfig`: how one stream's model is built and judged.
//!
//! A configuration names a preset, optionally a value range or an encoder
//! resolution (without either the model finds its range online), overrides
//! of individual model parameters, the alert threshold and whether the
//! stream learns. [`StreamConfig::build_params`] turns it into
//! [`ModelParams`]: the preset as JSON, the overrides deep-merged into it,
//! deserialized back (an unknown field is an error naming it), then
//! validated (an invalid value is an error naming it).

use serde::{Deserialize, Serialize};

use crate::model::{ModelParams, ParamsError};

/// Default alert threshold on the final anomaly score (log-likelihood
/// scale): 0.5 corresponds to a likelihood of about 1 - 1e-5.
pub const DEFAULT_THRESHOLD: f64 = 0.5;

/// Expected range of a stream's values.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueRange {
    /// Smallest expected value.
    pub min: f64,
    /// Largest expected value.
    pub max: f64,
}

/// One stream's configuration, as stored in its checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamConfig {
    /// Name of the preset the parameters start from (see [`ModelParams::PRESETS`]).
    pub preset: String,
    /// Expected value range; sets the encoder resolution.
    pub value_range: Option<ValueRange>,
    /// Encoder bucket width; wins over `value_range`.
    pub resolution: Option<f64>,
    /// Parameter overrides as JSON text (an object; `{}` for none). Stored as
    /// text because the checkpoint codec cannot carry a self-describing value.
    pub overrides: String,
    /// A result is an anomaly when its final score is at least this.
    pub threshold: f64,
    /// Whether samples are learned from (a sample's own `learn` wins).
    pub learn: bool,
}

/// A configuration that cannot build a model; `field` is the dotted path of
/// the offending field as the client wrote it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid configuration field `{field}`: {message}")]
pub struct ConfigError {
    /// Dotted path of the offending field (e.g. `overrides.tm.cells_per_column`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl StreamConfig {
    /// The configuration of a stream created by its first sample.
    pub fn with_preset(preset: &str, threshold: f64) -> StreamConfig {
        StreamConfig {
            preset: preset.to_string(),
            value_range: None,
            resolution: None,
            overrides: "{}".to_string(),
            threshold,
            learn: true,
        }
    }

    /// Check the fields that do not depend on the model and build its parameters.
    pub fn build_params(&self) -> Result<ModelParams, ConfigError> {
        if !(self.threshold.is_finite() && (0.0..=1.0).contains(&self.threshold)) {
            return Err(ConfigError::new("threshold", "must be a number in [0, 1]"));
        }
        let mut params = ModelParams::preset(&self.preset).ok_or_else(|| {
            ConfigError::new(
                "preset",
                format!(
                    "unknown preset {:?}; known: {}",
                    self.preset,
                    ModelParams::PRESETS.join(", ")
                ),
            )
        })?;
        let overrides: serde_json::Value = serde_json::from_str(&self.overrides)
            .map_err(|e| ConfigError::new("overrides", e.to_string()))?;
        if !overrides.is_object() {
            return Err(ConfigError::new("overrides", "must be a JSON object"));
        }
        if overrides.as_object().is_some_and(|o| !o.is_empty()) {
            params = params.with_overrides(&overrides).map_err(|e| {
                let field = if e.field.is_empty() {
                    "overrides".to_owned()
                } else {
                    format!("overrides.{}", e.field)
                };
                ConfigError::new(field, e.message)
            })?;
        }
        if let Some(r) = self.value_range {
            if !(r.min.is_finite() && r.max.is_finite() && r.min < r.max) {
                return Err(ConfigError::new(
                    "value_range",
                    "min and max must be finite with min < max",
                ));
            }
            params.set_value_range(r.min, r.max);
        }
        if let Some(res) = self.resolution {
            if !(res.is_finite() && res > 0.0) {
                return Err(ConfigError::new(
                    "resolution",
                    "must be a positive finite number",
                ));
            }
            params.value_encoder.resolution = Some(res);
        }
        params
            .validate()
            .map_err(|ParamsError { field, message }| {
                ConfigError::new(format!("overrides.{field}"), message)
            })?;
        Ok(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(overrides: &str) -> StreamConfig {
        StreamConfig {
            overrides: overrides.into(),
            ..StreamConfig::with_preset("default", DEFAULT_THRESHOLD)
        }
    }

    #[test]
    fn no_overrides_is_the_preset() {
        assert_eq!(
            cfg("{}").build_params().unwrap(),
            ModelParams::preset("default").unwrap()
        );
    }

    #[test]
    fn overrides_merge_deeply_and_keep_siblings() {
        let p = cfg(r#"{"tm":{"cells_per_column":8}}"#)
            .build_params()
            .unwrap();
        let preset = ModelParams::preset("default").unwrap();
        assert_eq!(p.tm.cells_per_column, 8);
        assert_eq!(p.tm.activation_threshold, preset.tm.activation_threshold);
        assert_eq!(p.value_encoder, preset.value_encoder);
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = cfg(r#"{"tm":{"bogus":1}}"#).build_params().unwrap_err();
        assert_eq!(e.field, "overrides.tm.bogus");
        let e = cfg(r#"{"nope":{}}"#).build_params().unwrap_err();
        assert_eq!(e.field, "overrides.nope");
    }

    #[test]
    fn wrong_types_are_named() {
        let e = cfg(r#"{"tm":{"cells_per_column":"many"}}"#)
            .build_params()
            .unwrap_err();
        assert_eq!(e.field, "overrides.tm.cells_per_column");
        let e = cfg(r#"{"tm":3}"#).build_params().unwrap_err();
        assert_eq!(e.field, "overrides.tm");
        let e = cfg("[1]").build_params().unwrap_err();
        assert_eq!(e.field, "overrides");
    }

    #[test]
    fn invalid_values_are_named_by_validate() {
        let e = cfg(r#"{"tm":{"cells_per_column":0}}"#)
            .build_params()
            .unwrap_err();
        assert_eq!(e.field, "overrides.tm.cells_per_column");
    }

    #[test]
    fn preset_threshold_range_and_resolution_are_checked() {
        let mut c = cfg("{}");
        c.preset = "fast".into();
        assert_eq!(c.build_params().unwrap_err().field, "preset");
        let mut c = cfg("{}");
        c.threshold = 1.5;
        assert_eq!(c.build_params().unwrap_err().field, "threshold");
        let mut c = cfg("{}");
        c.value_range = Some(ValueRange { min: 5.0, max: 1.0 });
        assert_eq!(c.build_params().unwrap_err().field, "value_range");
        let mut c = cfg("{}");
        c.resolution = Some(-1.0);
        assert_eq!(c.build_params().unwrap_err().field, "resolution");
    }

    #[test]
    fn range_and_resolution_reach_the_params() {
        let mut c = cfg("{}");
        c.value_range = Some(ValueRange {
            min: 0.0,
            max: 130.0,
        });
        let mut expected = ModelParams::preset("default").unwrap();
        expected.set_value_range(0.0, 130.0);
        assert_eq!(c.build_params().unwrap(), expected);
        c.resolution = Some(0.25);
        assert_eq!(
            c.build_params().unwrap().value_encoder.resolution,
            Some(0.25)
        );
    }
}
