//! The Numenta Anomaly Benchmark (NAB): run a detector over NAB's labelled
//! files, write NAB's results layout, and score the results exactly as NAB's
//! reference scorer does.
//!
//! # Layout
//!
//! - [`corpus`] — find and read data files, `combined_windows.json` and
//!   results files.
//! - [`scorer`] — the NAB score (windows, sigmoid, probation, threshold
//!   sweep, normalization); no I/O.
//! - [`runner`] — one fresh [`crate::model::Model`] per file, files in
//!   parallel, results files written, then scored ([`run`]); or score an
//!   existing results directory ([`score_results_dir`]).
//! - [`report`] — what a run or a scoring returns, printable.
//! - [`args`] — the clap arguments of `nab` and `nab-score`.
//!
//! The algorithm is specified in `shared/nab/README.md` (appendix "Exact
//! scoring algorithm"), including worked examples that the scorer's tests
//! reproduce.

use std::path::PathBuf;

pub mod args;
pub mod corpus;
pub mod report;
pub mod runner;
pub mod scorer;

pub use args::{Mode, NabArgs, NabScoreArgs};
pub use report::{NabReport, ScoreReport};
pub use runner::{run, score, score_results_dir};
pub use scorer::{score_files, CorpusScore, Profile, ProfileScore, ScoredFile, Window};

/// Anything that stops a NAB run or scoring; each names the file (and line)
/// at fault.
#[derive(Debug, thiserror::Error)]
pub enum NabError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A CSV file is malformed.
    #[error("{path}: {source}")]
    Csv { path: PathBuf, source: csv::Error },
    /// A row (or the header, line 1) of a CSV file is invalid.
    #[error("{path}:{line}: {message}")]
    Row {
        path: PathBuf,
        line: u64,
        message: String,
    },
    /// The labels file is not valid JSON of NAB's windows format.
    #[error("{path}: not a NAB windows file: {source}")]
    LabelsJson {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// An entry of the labels file is invalid.
    #[error("{path}: entry `{file}`: {message}")]
    Label {
        path: PathBuf,
        file: String,
        message: String,
    },
    /// A data file has no entry in the labels.
    #[error("data file `{file}` has no entry in {labels}")]
    Unlabelled { file: String, labels: PathBuf },
    /// The data directory holds no `*.csv` file.
    #[error("no data files (*.csv) under {0}")]
    NoDataFiles(PathBuf),
    /// No results file of the detector under the results directory.
    #[error("no results files `{detector}_*.csv` under {dir}")]
    NoResultsFiles { detector: String, dir: PathBuf },
    /// An argument is unusable.
    #[error("invalid argument: {0}")]
    Argument(String),
    /// The model rejected its parameters for this file.
    #[error("{file}: {source}")]
    Params {
        file: String,
        source: crate::model::ParamsError,
    },
    /// The model produced an anomaly score NAB cannot score.
    #[error("{path}:{line}: model anomaly_score {score} is not in [0, 1]")]
    BadScore {
        path: PathBuf,
        line: u64,
        score: f64,
    },
    /// The scorer rejected a file (windows that do not fit its rows, ...).
    #[error(transparent)]
    Score(#[from] scorer::ScoreError),
    /// The worker thread pool could not be built.
    #[error("thread pool: {0}")]
    ThreadPool(#[from] rayon::ThreadPoolBuildError),
}
