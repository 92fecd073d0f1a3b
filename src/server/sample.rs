//! The wire form of samples and results.
//!
//! A sample is `{"value": 21.5, "timestamp": ..., "learn": false}`:
//! `value` is required and must be a finite JSON number; `timestamp` is
//! optional and is either
//! - an RFC 3339 string: the wall-clock time *as written* is used and the
//!   offset is dropped (`2026-11-27T10:00:00+01:00` is 10:00), because the
//!   model's date encoder learns daily and weekly rhythms in the sensor's
//!   local time; a string without offset (`2026-11-27T10:00:00` or
//!   `2026-11-27 10:00:00`) is taken as that wall-clock time too;
//! - a number: unix seconds (fractions allowed), converted to UTC;
//! - absent or `null`: the server's clock, UTC.
//!
//! A body is one sample (an object), a batch (an array), or NDJSON (one
//! sample per line). Results mirror it: an object, an array, NDJSON lines.

use chrono::{DateTime, NaiveDateTime};
use serde::Serialize;
use serde_json::Value;

use crate::model::Prediction;
use crate::server::error::ApiError;
use crate::store::{Applied, Sample, StreamId};

/// The shape a body came in, which the answer mirrors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One JSON object.
    One,
    /// A JSON array.
    Batch,
    /// Newline-delimited JSON.
    Ndjson,
}

/// Parse a JSON body (object or array) into samples.
pub fn parse_json(body: &[u8], max_batch: usize) -> Result<(Shape, Vec<Sample>), ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("bad_json", format!("body is not valid JSON: {e}")))?;
    match value {
        Value::Array(items) => {
            check_batch_len(items.len(), max_batch)?;
            let samples = items
                .iter()
                .enumerate()
                .map(|(i, v)| sample_from_json(v, Some(i)))
                .collect::<Result<_, _>>()?;
            Ok((Shape::Batch, samples))
        }
        other => Ok((Shape::One, vec![sample_from_json(&other, None)?])),
    }
}

/// Parse an NDJSON body (blank lines ignored) into samples.
pub fn parse_ndjson(body: &[u8], max_batch: usize) -> Result<Vec<Sample>, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("bad_json", "NDJSON body is not UTF-8"))?;
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        check_batch_len(samples.len() + 1, max_batch)?;
        let v: Value = serde_json::from_str(line).map_err(|e| {
            ApiError::bad_request("bad_json", format!("line {}: not valid JSON: {e}", i + 1))
        })?;
        samples.push(sample_from_json(&v, Some(samples.len()))?);
    }
    check_batch_len(samples.len(), max_batch)?;
    Ok(samples)
}

fn check_batch_len(len: usize, max_batch: usize) -> Result<(), ApiError> {
    if len == 0 {
        return Err(ApiError::bad_request(
            "empty_batch",
            "the batch holds no sample",
        ));
    }
    if len > max_batch {
        return Err(ApiError::TooLarge(format!(
            "batch of more than {max_batch} samples (the configured limit)"
        )));
    }
    Ok(())
}

/// Validate one sample object. `index` is its place in a batch, for messages.
pub fn sample_from_json(v: &Value, index: Option<usize>) -> Result<Sample, ApiError> {
    let at = |msg: String| match index {
        Some(i) => ApiError::bad_request("bad_sample", format!("sample {i}: {msg}")),
        None => ApiError::bad_request("bad_sample", msg),
    };
    let Value::Object(obj) = v else {
        return Err(at("a sample must be a JSON object".into()));
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "value" | "timestamp" | "learn"))
    {
        return Err(at(format!(
            "unknown field {k:?} (expected value, timestamp, learn)"
        )));
    }
    let value = match obj.get("value") {
        None | Some(Value::Null) => return Err(at("missing \"value\"".into())),
        Some(Value::Number(n)) => n.as_f64().filter(|x| x.is_finite()),
        Some(_) => None,
    }
    .ok_or_else(|| at("\"value\" must be a finite number".into()))?;
    let timestamp = match obj.get("timestamp") {
        None | Some(Value::Null) => chrono::Utc::now().naive_utc(),
        Some(t) => parse_timestamp(t).map_err(at)?,
    };
    let learn = match obj.get("learn") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(at("\"learn\" must be true or false".into())),
    };
    Ok(Sample {
        timestamp,
        value,
        learn,
    })
}

/// Parse a timestamp as documented in the module doc.
pub fn parse_timestamp(t: &Value) -> Result<NaiveDateTime, String> {
    match t {
        Value::String(s) => {
            if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
                return Ok(dt.naive_local());
            }
            for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
                if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
                    return Ok(dt);
                }
            }
            Err(format!(
                "\"timestamp\" {s:?} is not RFC 3339 (e.g. 2026-11-27T10:00:00Z)"
            ))
        }
        Value::Number(n) => {
            let secs = n.as_f64().filter(|x| x.is_finite()).unwrap_or(f64::NAN);
            let whole = secs.floor();
            let nanos = ((secs - whole) * 1e9).round().min(999_999_999.0) as u32;
            if !(-8.0e12..8.0e12).contains(&whole) {
                return Err("\"timestamp\" in unix seconds is out of range".into());
            }
            DateTime::from_timestamp(whole as i64, nanos)
                .map(|d| d.naive_utc())
                .ok_or_else(|| "\"timestamp\" in unix seconds is out of range".into())
        }
        _ => Err("\"timestamp\" must be an RFC 3339 string or unix seconds".into()),
    }
}

/// The result of one sample, as answered and as pushed to the feed.
#[derive(Debug, Clone, Serialize)]
pub struct SampleResult<'a> {
    /// Stream name.
    pub stream: &'a str,
    /// Timestamp the model saw (naive wall-clock time).
    pub timestamp: NaiveDateTime,
    /// The sample's value.
    pub value: f64,
    /// Raw anomaly: fraction of active columns not predicted.
    pub anomaly_score: f64,
    /// Anomaly likelihood in [0, 1].
    pub anomaly_likelihood: f64,
    /// Log-scaled likelihood in [0, 1].
    pub log_likelihood: f64,
    /// The final score compared with the stream's threshold.
    pub final_score: f64,
    /// `final_score >= threshold`.
    pub is_anomaly: bool,
    /// Forecast of the next value.
    pub prediction: Option<Prediction>,
    /// Samples seen by the stream, this one included.
    pub step: u64,
    /// Whether the model learned from this sample.
    pub learned: bool,
}

impl<'a> SampleResult<'a> {
    /// The wire form of `a`, a result of stream `id`.
    pub fn new(id: &'a StreamId, a: &Applied) -> SampleResult<'a> {
        SampleResult {
            stream: id.as_str(),
            timestamp: a.timestamp,
            value: a.value,
            anomaly_score: a.output.raw_anomaly,
            anomaly_likelihood: a.output.likelihood,
            log_likelihood: a.output.log_likelihood,
            final_score: a.output.anomaly_score,
            is_anomaly: a.is_anomaly,
            prediction: a.output.prediction,
            step: a.output.step,
            learned: a.output.learned,
        }
    }
}

/// The JSON text of one result.
pub fn result_json(id: &StreamId, a: &Applied) -> String {
    serde_json::to_string(&SampleResult::new(id, a)).expect("results serialize")
}

/// Join per-sample result texts into a body of `shape`.
pub fn join_results(parts: &[String], shape: Shape) -> String {
    match shape {
        Shape::One => parts.first().cloned().unwrap_or_default(),
        Shape::Batch => format!("[{}]", parts.join(",")),
        Shape::Ndjson => {
            let mut out = parts.join("\n");
            out.push('\n');
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").unwrap()
    }

    #[test]
    fn timestamps_keep_the_written_wall_clock() {
        assert_eq!(
            parse_timestamp(&json!("2026-11-27T10:00:00Z")).unwrap(),
            ts("2026-11-27T10:00:00")
        );
        assert_eq!(
            parse_timestamp(&json!("2026-11-27T10:00:00+05:30")).unwrap(),
            ts("2026-11-27T10:00:00")
        );
        assert_eq!(
            parse_timestamp(&json!("2026-11-27 10:00:00")).unwrap(),
            ts("2026-11-27T10:00:00")
        );
        assert_eq!(
            parse_timestamp(&json!(1_795_773_600)).unwrap(),
            ts("2026-11-27T10:00:00")
        );
        let frac = parse_timestamp(&json!(1.5)).unwrap();
        assert_eq!(frac.and_utc().timestamp_subsec_millis(), 500);
        assert!(parse_timestamp(&json!("yesterday")).is_err());
        assert!(parse_timestamp(&json!(true)).is_err());
        assert!(parse_timestamp(&json!(1e300)).is_err());
    }

    #[test]
    fn bad_samples_are_400_with_a_reason() {
        for (body, needle) in [
            (json!({}), "missing"),
            (json!({"value": null}), "missing"),
            (json!({"value": "NaN"}), "finite"),
            (json!({"value": "1.5"}), "finite"),
            (json!({"value": 1, "extra": 2}), "unknown field"),
            (json!({"value": 1, "learn": "yes"}), "learn"),
            (json!(3), "object"),
        ] {
            let e = sample_from_json(&body, None).unwrap_err();
            assert_eq!(e.status().as_u16(), 400, "{body}");
            assert!(e.to_string().contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn bodies_parse_in_their_shapes() {
        let (shape, s) = parse_json(br#"{"value": 2.5, "learn": false}"#, 10).unwrap();
        assert_eq!(shape, Shape::One);
        assert_eq!(s[0].value, 2.5);
        assert_eq!(s[0].learn, Some(false));
        let (shape, s) = parse_json(br#"[{"value": 1}, {"value": 2}]"#, 10).unwrap();
        assert_eq!((shape, s.len()), (Shape::Batch, 2));
        let s = parse_ndjson(b"{\"value\": 1}\n\n{\"value\": 2}\n", 10).unwrap();
        assert_eq!(s.iter().map(|x| x.value).collect::<Vec<_>>(), [1.0, 2.0]);
    }

    #[test]
    fn batch_limits_and_errors() {
        assert_eq!(
            parse_json(b"[{\"value\":1},{\"value\":2}]", 1)
                .unwrap_err()
                .status()
                .as_u16(),
            413
        );
        assert_eq!(
            parse_ndjson(b"{\"value\":1}\n{\"value\":2}", 1)
                .unwrap_err()
                .status()
                .as_u16(),
            413
        );
        assert_eq!(parse_json(b"[]", 5).unwrap_err().code(), "empty_batch");
        assert_eq!(parse_json(b"{nope", 5).unwrap_err().code(), "bad_json");
        assert_eq!(
            parse_json(b"{\"value\": 1e999}", 5).unwrap_err().code(),
            "bad_json"
        );
        let e = parse_json(b"[{\"value\":1},{\"valu\":2}]", 5).unwrap_err();
        assert!(e.to_string().starts_with("sample 1:"), "{e}");
    }

    /// A value is the `f64` nearest to its decimal text, as a client's own
    /// parser reads it: serde_json without `float_roundtrip` reads
    /// `117.63331139400017` one ulp low (serde-rs/json#604).
    #[test]
    fn values_are_the_nearest_f64_to_their_text() {
        for text in [
            "117.63331139400017",
            "98.88339545701953",
            "0.09144338512092887",
        ] {
            let exact: f64 = text.parse().unwrap();
            let body = format!(r#"{{"value": {text}}}"#);
            let (_, json) = parse_json(body.as_bytes(), 1).unwrap();
            let ndjson = parse_ndjson(body.as_bytes(), 1).unwrap();
            for got in [json[0].value, ndjson[0].value] {
                assert_eq!(got.to_bits(), exact.to_bits(), "{text} read as {got:?}");
            }
        }
    }

    proptest::proptest! {
        /// Every finite `f64`, written as the shortest text that reads back
        /// as itself (Rust's and serde_json's writers), is read back exactly.
        #[test]
        fn every_written_f64_reads_back_exactly(bits in proptest::num::u64::ANY) {
            let value = f64::from_bits(bits);
            proptest::prop_assume!(value.is_finite());
            for text in [format!("{value:?}"), json!(value).to_string()] {
                let body = format!(r#"{{"value": {text}}}"#);
                let (_, s) = parse_json(body.as_bytes(), 1).unwrap();
                proptest::prop_assert_eq!(s[0].value.to_bits(), bits, "{}", text);
            }
        }
    }
}
