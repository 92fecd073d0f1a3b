//! Golden checkpoint: `tests/fixtures/golden-v4.ckpt` is a committed file in
//! checkpoint format version 4. Decoding it pins the header and the codec;
//! re-encoding the decoded state must give the same bytes. The version 3
//! file (`golden-v3.ckpt`, before the Temporal Memory's
//! `first_order_fallback`) is kept unchanged and must still be read, as the
//! model it was (fallback off). The version 1 file (`golden-v1.ckpt`, before
//! the write-ahead-log LSN was stored) and the version 2 file
//! (`golden-v2.ckpt`, before the classifier's weights were stored as `f32`)
//! are kept unchanged and must be refused with `UnknownVersion`.
//!
//! The payload holds a `Model`, so the file must be regenerated whenever the
//! model's serialized form changes (for instance when the real engine
//! replaces the placeholder):
//!
//! ```text
//! cargo test --test server_checkpoint_golden -- --ignored regenerate_golden
//! ```
//!
//! then review and commit the new file. A change of the *format* itself
//! (header, codec) needs a new `FORMAT_VERSION` and a new golden file, with
//! the old one kept and still read (or refused with `UnknownVersion`).

use std::path::PathBuf;

use chrono::{NaiveDate, NaiveDateTime};
use htm_stream::store::checkpoint::{self, CheckpointError, FORMAT_VERSION, HEADER_LEN};
use htm_stream::store::{Sample, StreamConfig, StreamId, StreamState, ValueRange};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden-v4.ckpt")
}

fn fixture_v3() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden-v3.ckpt")
}

fn fixture_v2() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden-v2.ckpt")
}

fn fixture_v1() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden-v1.ckpt")
}

fn t0() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2026, 11, 27)
        .unwrap()
        .and_hms_opt(10, 0, 0)
        .unwrap()
}

/// The state the golden file was made from: a configured stream fed 48
/// hourly samples of a daily sine wave.
fn golden_state() -> StreamState {
    golden_state_with(
        r#"{"value_encoder":{"size":100,"active_bits":7},"sp":{"column_dimensions":[64],"num_active_columns_per_inh_area":4},"tm":{"cells_per_column":16}}"#,
    )
}

/// The golden stream with the model parameter `overrides` (JSON).
fn golden_state_with(overrides: &str) -> StreamState {
    let config = StreamConfig {
        preset: "default".into(),
        value_range: Some(ValueRange {
            min: 0.0,
            max: 100.0,
        }),
        resolution: None,
        // A deliberately small model, so the committed file stays small.
        overrides: overrides.into(),
        threshold: 0.6,
        learn: true,
    };
    let mut st = StreamState::new(StreamId::new("golden.stream-1").unwrap(), config).unwrap();
    let samples: Vec<Sample> = (0..48)
        .map(|h| Sample {
            timestamp: t0() + chrono::Duration::hours(h),
            value: 50.0 + 40.0 * (h as f64 * std::f64::consts::TAU / 24.0).sin(),
            learn: None,
        })
        .collect();
    st.apply(&samples, &mut Vec::new()).unwrap();
    st.wal_lsn = 1234;
    st
}

#[test]
fn golden_checkpoint_decodes() {
    let bytes = std::fs::read(fixture()).expect("tests/fixtures/golden-v4.ckpt is committed");
    assert_eq!(&bytes[..8], b"HTMCKPT\0");
    assert_eq!(
        u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
        FORMAT_VERSION
    );
    let st: StreamState = checkpoint::decode(&bytes).expect("golden file decodes");
    assert_eq!(st.id.as_str(), "golden.stream-1");
    assert_eq!(st.config.preset, "default");
    assert_eq!(st.config.threshold, 0.6);
    assert_eq!(
        st.config.value_range,
        Some(ValueRange {
            min: 0.0,
            max: 100.0
        })
    );
    assert_eq!(st.model.params().tm.cells_per_column, 16);
    assert_eq!(st.model.params().tm.first_order_fallback, 0.5);
    assert_eq!(st.model.steps(), 48);
    assert_eq!(st.last_timestamp, Some(t0() + chrono::Duration::hours(47)));
    let last = 50.0 + 40.0 * (47.0 * std::f64::consts::TAU / 24.0).sin();
    assert_eq!(st.stats.last_value, Some(last));
    assert_eq!(st.wal_lsn, 1234);

    // The codec is stable: the decoded state encodes to the same bytes.
    assert_eq!(checkpoint::encode(&st).unwrap(), bytes);
}

#[test]
fn golden_matches_what_this_build_writes() {
    let bytes = std::fs::read(fixture()).unwrap();
    let fresh = checkpoint::encode(&golden_state()).unwrap();
    assert_eq!(
        fresh, bytes,
        "the serialized form changed; if intended, regenerate the golden file (see module doc)"
    );
}

#[test]
fn damaged_golden_copies_give_typed_errors() {
    let bytes = std::fs::read(fixture()).unwrap();
    assert!(matches!(
        checkpoint::decode::<StreamState>(&bytes[..bytes.len() - 1]),
        Err(CheckpointError::Truncated { .. })
    ));
    let mut b = bytes.clone();
    b[HEADER_LEN + 3] ^= 0xff;
    assert!(matches!(
        checkpoint::decode::<StreamState>(&b),
        Err(CheckpointError::ChecksumMismatch { .. })
    ));
    let mut b = bytes;
    b[8] = 99;
    assert!(matches!(
        checkpoint::decode::<StreamState>(&b),
        Err(CheckpointError::UnknownVersion { found: 99 })
    ));
}

/// The kept golden file of an older format `version` says so in its header
/// and is refused with `UnknownVersion`.
fn assert_old_golden_refused(path: PathBuf, version: u32) {
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{} is kept: {e}", path.display()));
    assert_eq!(
        u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
        version
    );
    let refused = checkpoint::decode::<StreamState>(&bytes);
    assert!(
        matches!(refused, Err(CheckpointError::UnknownVersion { found }) if found == version),
        "{refused:?}"
    );
}

/// A version 3 checkpoint (written before the Temporal Memory had
/// `first_order_fallback`) is read as the model it was: the fallback off,
/// everything else as saved. Its model is the one this build makes with the
/// fallback turned off, byte for byte, and it is saved as version 4.
#[test]
fn version_3_golden_is_read_with_the_fallback_off() {
    let bytes = std::fs::read(fixture_v3()).expect("tests/fixtures/golden-v3.ckpt is kept");
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 3);
    let old: StreamState = checkpoint::decode(&bytes).expect("version 3 is still read");
    assert_eq!(old.model.params().tm.first_order_fallback, 0.0);
    assert_eq!(old.model.steps(), 48);
    assert_eq!(old.wal_lsn, 1234);

    let off = golden_state_with(
        r#"{"value_encoder":{"size":100,"active_bits":7},"sp":{"column_dimensions":[64],"num_active_columns_per_inh_area":4},"tm":{"cells_per_column":16,"first_order_fallback":0.0}}"#,
    );
    assert_eq!(
        checkpoint::encode(&old.model).unwrap(),
        checkpoint::encode(&off.model).unwrap()
    );
    let resaved = checkpoint::encode(&old).unwrap();
    assert_eq!(
        u32::from_le_bytes(resaved[8..12].try_into().unwrap()),
        FORMAT_VERSION
    );
    let again: StreamState = checkpoint::decode(&resaved).unwrap();
    assert_eq!(
        checkpoint::encode(&again).unwrap(),
        resaved,
        "the migrated state round-trips in the current format"
    );
}

#[test]
fn version_1_golden_is_refused() {
    assert_old_golden_refused(fixture_v1(), 1);
}

#[test]
fn version_2_golden_is_refused() {
    assert_old_golden_refused(fixture_v2(), 2);
}

#[test]
#[ignore = "writes tests/fixtures/golden-v4.ckpt; run by hand when the model's serialized form changes"]
fn regenerate_golden() {
    checkpoint::save(&fixture(), &golden_state()).unwrap();
}
