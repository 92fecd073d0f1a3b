//! Reading a metric series from CSV: the NAB format and NuPIC's three-header
//! format (the hot-gym data), told apart automatically.
//!
//! - NAB: header `timestamp,value`, timestamps `YYYY-MM-DD HH:MM:SS`
//!   (fractional seconds and an ISO `T` separator are accepted too).
//! - NuPIC: three header rows (names, types `datetime,float`, flags), then
//!   `m/d/y H:M` timestamps, e.g. `7/2/10 0:00,21.2`.
//!
//! Every row must parse, carry a finite value, and not go back in time
//! (equal timestamps are allowed: NAB files repeat a few). Errors name the
//! file and the 1-based line.

use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;

/// One sample of a series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// 1-based line number in the file, for error messages.
    pub line: usize,
    /// Wall-clock time as written in the file (no time zone).
    pub timestamp: NaiveDateTime,
    /// The metric value (finite).
    pub value: f64,
}

/// The CSV dialects [`read_series`] understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SeriesFormat {
    /// Decide from the header.
    Auto,
    /// `timestamp,value` with `YYYY-MM-DD HH:MM:SS`.
    Nab,
    /// NuPIC's three header rows, then `m/d/y H:M` (hot-gym).
    Nupic,
}

/// Why a series could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Row {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: no data rows")]
    Empty { path: PathBuf },
}

/// Read a whole series file.
pub fn read_series(path: &Path, format: SeriesFormat) -> Result<Vec<Sample>, SeriesError> {
    let text = std::fs::read_to_string(path).map_err(|source| SeriesError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_series(&text, format)
        .map_err(|(line, message)| SeriesError::Row {
            path: path.to_owned(),
            line,
            message,
        })
        .and_then(|samples| {
            if samples.is_empty() {
                Err(SeriesError::Empty {
                    path: path.to_owned(),
                })
            } else {
                Ok(samples)
            }
        })
}

/// Parse series text; errors are `(line, message)`.
pub fn parse_series(text: &str, format: SeriesFormat) -> Result<Vec<Sample>, (usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let format = match format {
        SeriesFormat::Auto => detect(&lines),
        other => other,
    };
    let header_rows = match format {
        SeriesFormat::Nupic => 3,
        _ => 1,
    };
    if lines.len() < header_rows {
        return Err((lines.len().max(1), "missing header".into()));
    }
    let mut samples: Vec<Sample> = Vec::with_capacity(lines.len().saturating_sub(header_rows));
    for (i, raw) in lines.iter().enumerate().skip(header_rows) {
        let line = i + 1;
        let row = raw.trim_end_matches('\r');
        if row.trim().is_empty() {
            continue;
        }
        let (ts_text, value_text) = row
            .split_once(',')
            .ok_or_else(|| (line, format!("expected `timestamp,value`, got `{row}`")))?;
        let value_text = value_text.split(',').next().unwrap_or("").trim();
        let timestamp = parse_timestamp(ts_text.trim(), format)
            .ok_or_else(|| (line, format!("unparsable timestamp `{}`", ts_text.trim())))?;
        let value: f64 = value_text
            .parse()
            .map_err(|_| (line, format!("unparsable value `{value_text}`")))?;
        if !value.is_finite() {
            return Err((line, format!("value `{value_text}` is not a finite number")));
        }
        if let Some(prev) = samples.last() {
            if timestamp < prev.timestamp {
                return Err((
                    line,
                    format!(
                        "timestamp {timestamp} goes back in time (previous row: {})",
                        prev.timestamp
                    ),
                ));
            }
        }
        samples.push(Sample {
            line,
            timestamp,
            value,
        });
    }
    Ok(samples)
}

fn detect(lines: &[&str]) -> SeriesFormat {
    let second = lines.get(1).map(|l| l.to_ascii_lowercase());
    match second {
        Some(l) if l.starts_with("datetime") => SeriesFormat::Nupic,
        _ => SeriesFormat::Nab,
    }
}

fn parse_timestamp(text: &str, format: SeriesFormat) -> Option<NaiveDateTime> {
    match format {
        SeriesFormat::Nupic => NaiveDateTime::parse_from_str(text, "%m/%d/%y %H:%M").ok(),
        _ => [
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M",
        ]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_nab_format() {
        let s = parse_series(
            "timestamp,value\n2014-07-01 00:00:00,10844\n2014-07-01 00:30:00,8127.5\n",
            SeriesFormat::Auto,
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].value, 8127.5);
        assert_eq!(s[1].line, 3);
        assert_eq!(s[0].timestamp.to_string(), "2014-07-01 00:00:00");
    }

    #[test]
    fn reads_the_nupic_format() {
        let s = parse_series(
            "c0,c1\ndatetime,float\nT,\n7/2/10 0:00,21.2\n7/2/10 13:00,16.4\n",
            SeriesFormat::Auto,
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].timestamp.to_string(), "2010-07-02 13:00:00");
        assert_eq!(s[0].line, 4);
    }

    #[test]
    fn rejects_bad_rows_naming_the_line() {
        let bad = [
            (
                "timestamp,value\n2014-07-01 00:00:00,1\nnot a date,2\n",
                3,
                "timestamp",
            ),
            ("timestamp,value\n2014-07-01 00:00:00,abc\n", 2, "value"),
            ("timestamp,value\n2014-07-01 00:00:00,NaN\n", 2, "finite"),
            ("timestamp,value\n2014-07-01 00:00:00,inf\n", 2, "finite"),
            ("timestamp,value\n2014-07-01 00:00:00\n", 2, "expected"),
            (
                "timestamp,value\n2014-07-01 01:00:00,1\n2014-07-01 00:00:00,2\n",
                3,
                "back in time",
            ),
        ];
        for (text, line, what) in bad {
            let (got_line, message) = parse_series(text, SeriesFormat::Auto).unwrap_err();
            assert_eq!(got_line, line, "{text}");
            assert!(message.contains(what), "{message}");
        }
    }

    #[test]
    fn equal_timestamps_are_allowed() {
        let s = parse_series(
            "timestamp,value\n2014-03-09 03:00:00,1\n2014-03-09 03:00:00,2\n",
            SeriesFormat::Auto,
        )
        .unwrap();
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn missing_file_and_empty_file_are_errors() {
        let err = read_series(Path::new("/nonexistent/x.csv"), SeriesFormat::Auto).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.csv"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty.csv");
        std::fs::write(&p, "timestamp,value\n").unwrap();
        assert!(matches!(
            read_series(&p, SeriesFormat::Auto),
            Err(SeriesError::Empty { .. })
        ));
    }

    #[test]
    fn reads_the_shared_hotgym_file() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/hotgym.csv");
        // The shared folder lives beside the repository, in development and in CI.
        let s = read_series(&path, SeriesFormat::Auto).unwrap();
        assert_eq!(s.len(), 4391);
        assert_eq!(s[0].value, 21.2);
    }
}
