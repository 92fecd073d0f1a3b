//! What the server tests feed a stream: a small configuration and hourly
//! samples whose values are exact in decimal, so a reference model in the
//! test sees the very `f64` the server parsed.

use chrono::{NaiveDate, NaiveDateTime};
use htm_stream::server::sample::parse_timestamp;
use htm_stream::store::{Sample, StreamConfig, ValueRange, DEFAULT_THRESHOLD};
use serde_json::{json, Value};

/// The default preset with a small model (100-bit encoder, 64 columns, 8
/// cells per column; the server's code does not depend on a model's size,
/// and tests run in seconds), values 0..100 (no calibration), threshold
/// 0.5.
pub fn small_config() -> StreamConfig {
    StreamConfig {
        value_range: Some(ValueRange {
            min: 0.0,
            max: 100.0,
        }),
        overrides: json!({
            "value_encoder": {"size": 100, "active_bits": 7},
            "sp": {"column_dimensions": [64], "num_active_columns_per_inh_area": 4},
            "tm": {"cells_per_column": 8}
        })
        .to_string(),
        threshold: 0.5,
        ..StreamConfig::with_preset("default", DEFAULT_THRESHOLD)
    }
}

/// The `PUT /streams/{id}` body that configures a stream as `config`.
pub fn put_body(config: &StreamConfig) -> Value {
    json!({
        "preset": config.preset,
        "value_range": config.value_range,
        "resolution": config.resolution,
        "overrides": serde_json::from_str::<Value>(&config.overrides).unwrap(),
        "threshold": config.threshold,
        "learn": config.learn,
    })
}

/// 2026-11-27T00:00:00, the time of sample 0.
pub fn t0() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2026, 11, 27)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
}

/// Sample `h`: at hour `h` after [`t0`], on a daily sine wave between 10
/// and 90 shifted by `phase` radians, rounded to 1/64.
pub fn sample(h: u64, phase: f64) -> Sample {
    let v = 50.0 + 40.0 * (h as f64 * std::f64::consts::TAU / 24.0 + phase).sin();
    Sample {
        timestamp: t0() + chrono::Duration::hours(h as i64),
        value: (v * 64.0).round() / 64.0,
        learn: None,
    }
}

/// `t` as an RFC 3339 UTC timestamp.
pub fn utc_text(t: NaiveDateTime) -> String {
    format!("{}Z", t.format("%Y-%m-%dT%H:%M:%S"))
}

/// A sample as a client sends it (UTC timestamp, no `learn`).
pub fn wire(s: &Sample) -> Value {
    json!({ "value": s.value, "timestamp": utc_text(s.timestamp) })
}

/// A sample as the server reads it from its wire form.
pub fn from_wire(v: &Value) -> Sample {
    Sample {
        timestamp: parse_timestamp(&v["timestamp"]).unwrap(),
        value: v["value"].as_f64().unwrap(),
        learn: None,
    }
}
