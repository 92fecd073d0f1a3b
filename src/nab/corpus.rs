//! NAB corpus files: finding the data files under a data directory, reading
//! them (`timestamp,value`), reading the windows of `combined_windows.json`,
//! and reading detectors' results files (`timestamp,...,anomaly_score,...`).
//!
//! Formats: `shared/nab/README.md` ("File format", "Labels"). Files are named
//! by their path relative to the data directory with `/` separators
//! (`realTweets/Twitter_volume_FB.csv`), which is how the labels name them.
//! Rows are kept in file order: timestamps may repeat.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;

use super::scorer::Window;
use super::NabError;

/// File name of the windows inside a labels directory.
pub const WINDOWS_FILE: &str = "combined_windows.json";

/// Accepted timestamp format: data rows use `YYYY-MM-DD HH:MM:SS`, window
/// edges the same with `.ffffff`; `%.f` accepts both.
const TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.f";

/// Parse a NAB timestamp (`2014-04-01 00:00:00`, optionally with fractional
/// seconds).
pub fn parse_timestamp(text: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text.trim(), TIMESTAMP_FORMAT).ok()
}

/// A data file found under the data directory.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DataFileRef {
    /// Relative name with `/` separators, e.g. `realTraffic/speed_6005.csv`.
    pub name: String,
    /// Path on disk.
    pub path: PathBuf,
}

/// Every `*.csv` file under `dir` (recursively), sorted by name.
pub fn find_data_files(dir: &Path) -> Result<Vec<DataFileRef>, NabError> {
    let mut found = Vec::new();
    walk(dir, dir, &mut found)?;
    found.sort();
    Ok(found)
}

fn walk(root: &Path, dir: &Path, found: &mut Vec<DataFileRef>) -> Result<(), NabError> {
    let io = |source| NabError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            walk(root, &path, found)?;
        } else if path.extension().is_some_and(|e| e == "csv") {
            found.push(DataFileRef {
                name: relative_name(root, &path),
                path,
            });
        }
    }
    Ok(())
}

/// `path` relative to `root`, components joined with `/`.
pub fn relative_name(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// A data file's rows, in file order. The original text of each timestamp and
/// value is kept so results files repeat it unchanged.
#[derive(Clone, Debug, PartialEq)]
pub struct DataFile {
    pub name: String,
    pub path: PathBuf,
    pub timestamps: Vec<NaiveDateTime>,
    pub values: Vec<f64>,
    /// The `timestamp` field as written in the file.
    pub timestamp_text: Vec<String>,
    /// The `value` field as written in the file.
    pub value_text: Vec<String>,
}

impl DataFile {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the file has no rows.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Smallest and largest value (`None` for an empty file).
    pub fn value_range(&self) -> Option<(f64, f64)> {
        let first = *self.values.first()?;
        Some(
            self.values
                .iter()
                .fold((first, first), |(lo, hi), &v| (lo.min(v), hi.max(v))),
        )
    }
}

/// Read a data file: a CSV with columns `timestamp` and `value` (others are
/// ignored). Every value must be a finite number; the error names the line.
pub fn read_data_file(file: &DataFileRef) -> Result<DataFile, NabError> {
    let mut reader = open_csv(&file.path)?;
    let ts_col = column(&mut reader, &file.path, "timestamp")?;
    let value_col = column(&mut reader, &file.path, "value")?;
    let mut out = DataFile {
        name: file.name.clone(),
        path: file.path.clone(),
        timestamps: Vec::new(),
        values: Vec::new(),
        timestamp_text: Vec::new(),
        value_text: Vec::new(),
    };
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line() + 1;
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(source) => return Err(csv_error(&file.path, source)),
        }
        let line = record.position().map_or(line, |p| p.line());
        let (ts_text, timestamp) = timestamp_field(&record, ts_col, &file.path, line)?;
        let value_text = record.get(value_col).unwrap_or("").trim();
        let value: f64 = value_text.parse().map_err(|_| NabError::Row {
            path: file.path.clone(),
            line,
            message: format!("value `{value_text}` is not a number"),
        })?;
        if !value.is_finite() {
            return Err(NabError::Row {
                path: file.path.clone(),
                line,
                message: format!("value `{value_text}` is not finite"),
            });
        }
        out.timestamps.push(timestamp);
        out.values.push(value);
        out.timestamp_text.push(ts_text.to_string());
        out.value_text.push(value_text.to_string());
    }
    Ok(out)
}

/// A detector's results file, as read for scoring.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultsFile {
    pub timestamps: Vec<NaiveDateTime>,
    pub scores: Vec<f64>,
}

/// Read the `timestamp` and `anomaly_score` columns of a results file
/// (NAB layout; other columns are ignored). Scores must be finite.
pub fn read_results_file(path: &Path) -> Result<ResultsFile, NabError> {
    let mut reader = open_csv(path)?;
    let ts_col = column(&mut reader, path, "timestamp")?;
    let score_col = column(&mut reader, path, "anomaly_score")?;
    let mut out = ResultsFile {
        timestamps: Vec::new(),
        scores: Vec::new(),
    };
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line() + 1;
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(source) => return Err(csv_error(path, source)),
        }
        let line = record.position().map_or(line, |p| p.line());
        let (_, timestamp) = timestamp_field(&record, ts_col, path, line)?;
        let text = record.get(score_col).unwrap_or("").trim();
        let score = text
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite())
            .ok_or_else(|| NabError::Row {
                path: path.to_path_buf(),
                line,
                message: format!("anomaly_score `{text}` is not a finite number"),
            })?;
        out.timestamps.push(timestamp);
        out.scores.push(score);
    }
    Ok(out)
}

fn open_csv(path: &Path) -> Result<csv::Reader<std::fs::File>, NabError> {
    let file = std::fs::File::open(path).map_err(|source| NabError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(file))
}

fn csv_error(path: &Path, source: csv::Error) -> NabError {
    NabError::Csv {
        path: path.to_path_buf(),
        source,
    }
}

fn column(
    reader: &mut csv::Reader<std::fs::File>,
    path: &Path,
    name: &str,
) -> Result<usize, NabError> {
    let headers = reader.headers().map_err(|e| csv_error(path, e))?;
    headers
        .iter()
        .position(|h| h.trim() == name)
        .ok_or_else(|| NabError::Row {
            path: path.to_path_buf(),
            line: 1,
            message: format!("no `{name}` column in the header"),
        })
}

fn timestamp_field<'r>(
    record: &'r csv::StringRecord,
    col: usize,
    path: &Path,
    line: u64,
) -> Result<(&'r str, NaiveDateTime), NabError> {
    let text = record.get(col).unwrap_or("").trim();
    let timestamp = parse_timestamp(text).ok_or_else(|| NabError::Row {
        path: path.to_path_buf(),
        line,
        message: format!("timestamp `{text}` is not `YYYY-MM-DD HH:MM:SS`"),
    })?;
    Ok((text, timestamp))
}

/// The anomaly windows of every labelled file.
#[derive(Clone, Debug, PartialEq)]
pub struct Labels {
    /// The JSON file they were read from.
    pub path: PathBuf,
    /// Windows per relative file name, in the order listed.
    pub windows: BTreeMap<String, Vec<Window>>,
}

/// Read `combined_windows.json`; `path` is the file itself or a directory
/// holding it.
pub fn read_labels(path: &Path) -> Result<Labels, NabError> {
    let path = if path.is_dir() {
        path.join(WINDOWS_FILE)
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&path).map_err(|source| NabError::Io {
        path: path.clone(),
        source,
    })?;
    let raw: BTreeMap<String, Vec<(String, String)>> =
        serde_json::from_str(&text).map_err(|source| NabError::LabelsJson {
            path: path.clone(),
            source,
        })?;
    let mut windows = BTreeMap::new();
    for (file, list) in raw {
        let mut parsed = Vec::with_capacity(list.len());
        for (start, end) in &list {
            let edge = |text: &str| {
                parse_timestamp(text).ok_or_else(|| NabError::Label {
                    path: path.clone(),
                    file: file.clone(),
                    message: format!("window edge `{text}` is not a timestamp"),
                })
            };
            parsed.push(Window {
                start: edge(start)?,
                end: edge(end)?,
            });
        }
        windows.insert(file, parsed);
    }
    Ok(Labels { path, windows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_with_and_without_fraction_are_equal() {
        let a = parse_timestamp("2014-11-01 19:00:00").unwrap();
        let b = parse_timestamp("2014-11-01 19:00:00.000000").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, parse_timestamp("2014-11-01 19:00:01").unwrap());
        assert!(parse_timestamp("2014-11-01T19:00:00Z").is_none());
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn relative_names_use_forward_slashes() {
        let root = Path::new("/data");
        let path = Path::new("/data/realTweets/Twitter_volume_FB.csv");
        assert_eq!(
            relative_name(root, path),
            "realTweets/Twitter_volume_FB.csv"
        );
    }

    #[test]
    fn value_range_spans_all_values() {
        let f = DataFile {
            name: "x.csv".into(),
            path: "x.csv".into(),
            timestamps: vec![],
            values: vec![3.0, -1.5, 7.25, 0.0],
            timestamp_text: vec![],
            value_text: vec![],
        };
        assert_eq!(f.value_range(), Some((-1.5, 7.25)));
        let empty = DataFile {
            values: vec![],
            ..f
        };
        assert_eq!(empty.value_range(), None);
    }
}
