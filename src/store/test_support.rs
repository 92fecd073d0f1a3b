//! Test data shared by the store's unit tests: a small stream
//! configuration (its model builds and steps in microseconds, and the store
//! does not depend on a model's size) and hourly samples.

use crate::store::stream::Sample;
use crate::store::stream_config::{StreamConfig, DEFAULT_THRESHOLD};

/// The default preset with a 100-bit encoder, 64 columns and 8 cells per
/// column.
pub fn small() -> StreamConfig {
    StreamConfig {
        overrides: r#"{"value_encoder":{"size":100,"active_bits":7},"sp":{"column_dimensions":[64],"num_active_columns_per_inh_area":4},"tm":{"cells_per_column":8}}"#.into(),
        ..StreamConfig::with_preset("default", DEFAULT_THRESHOLD)
    }
}

/// Samples `from..from + n`: sample `h` at hour `h` after 2026-11-27T00:00,
/// its value on a sine wave.
pub fn hourly(from: u32, n: u32) -> Vec<Sample> {
    let t = chrono::NaiveDate::from_ymd_opt(2026, 11, 27)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    (from..from + n)
        .map(|h| Sample {
            timestamp: t + chrono::Duration::hours(h.into()),
            value: (f64::from(h) * 0.7).sin() * 10.0,
            learn: None,
        })
        .collect()
}
