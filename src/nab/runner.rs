//! Runs one fresh model per NAB data file, files in parallel, writes NAB's
//! results layout and scores it.
//!
//! Every row is scored before it is learned (`Model::step` does both, in
//! that order) and a file's model sees nothing of the file ahead of the
//! current row, except in [`Mode::Conformant`] the file's min and max and
//! its probationary period length, which NAB hands to every detector.
//!
//! Results files: `<out>/<detector>/<category>/<detector>_<file>.csv` with
//! `timestamp,value,anomaly_score` (NAB's columns, NAB's scorer reads them
//! unchanged) followed by `raw_score,likelihood,prediction`. Timestamps and
//! values are copied from the data file as written; numbers are printed as
//! plain decimals that parse back to the same `f64`, so scoring the written
//! files gives the same result as scoring in memory.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::args::{Mode, NabArgs, NabScoreArgs};
use super::corpus::{
    find_data_files, read_data_file, read_labels, read_results_file, relative_name, DataFile,
    DataFileRef, Labels,
};
use super::report::{NabReport, ScoreReport};
use super::scorer::{probationary_period, score_files, FileGeometry, ScoredFile, Window};
use super::NabError;
use crate::model::{Model, ModelParams};

/// Header of the results files we write.
pub const RESULTS_HEADER: [&str; 6] = [
    "timestamp",
    "value",
    "anomaly_score",
    "raw_score",
    "likelihood",
    "prediction",
];

/// Progress bar updates every this many rows (per file).
const PROGRESS_STEP: u64 = 512;

/// Run `args.detector` over every data file, write the results and score
/// them. Files and their windows are read and checked first, so a bad file
/// or label fails the run before any model runs.
pub fn run(args: &NabArgs) -> Result<NabReport, NabError> {
    check_detector_name(&args.detector)?;
    let params = ModelParams::preset(&args.preset)
        .ok_or_else(|| {
            NabError::Argument(format!(
                "unknown preset `{}` (known: {})",
                args.preset,
                ModelParams::PRESETS.join(", ")
            ))
        })?
        .with_assignments(&args.set)
        .map_err(|e| NabError::Argument(e.to_string()))?;
    let jobs = match args.jobs {
        Some(0) => return Err(NabError::Argument("--jobs must be at least 1".into())),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let labels = read_labels(&args.labels)?;
    let refs = find_data_files(&args.data)?;
    if refs.is_empty() {
        return Err(NabError::NoDataFiles(args.data.clone()));
    }
    let names: Vec<&str> = refs.iter().map(|r| r.name.as_str()).collect();
    let (windows, warnings) = match_labels(&names, &labels)?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(jobs).build()?;
    let results_dir = args.out.join(&args.detector);

    let start = Instant::now();
    let data: Vec<DataFile> = in_pool(&pool, &refs, |_, r: &DataFileRef| read_data_file(r))?;
    // Windows that do not fit their file fail the run before models run.
    for (file, windows) in data.iter().zip(&windows) {
        FileGeometry::new(&file.name, &file.timestamps, windows)?;
    }
    let rows: u64 = data.iter().map(|f| f.len() as u64).sum();
    let bar = progress_bar(rows, args.no_progress);
    // Largest files first, so the last file to finish is a short one.
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(data[i].len()));
    let by_size: Vec<&DataFile> = order.iter().map(|&i| &data[i]).collect();
    let scores_by_size = in_pool(&pool, &by_size, |_, file: &&DataFile| {
        let path = results_path(&results_dir, &args.detector, &file.name);
        run_file(file, &params, args.mode, &path, &bar)
    })?;
    bar.finish_and_clear();
    let elapsed = start.elapsed();

    let mut scores: Vec<Vec<f64>> = vec![Vec::new(); data.len()];
    for (&i, s) in order.iter().zip(scores_by_size) {
        scores[i] = s;
    }
    let files: Vec<ScoredFile> = data
        .into_iter()
        .zip(scores)
        .zip(windows)
        .map(|((file, scores), windows)| ScoredFile {
            name: file.name,
            timestamps: file.timestamps,
            scores,
            windows,
        })
        .collect();
    let score = score_files(&files)?;
    Ok(NabReport {
        detector: args.detector.clone(),
        preset: args.preset.clone(),
        mode: args.mode,
        results_dir,
        rows,
        elapsed,
        warnings,
        score,
    })
}

/// [`score_results_dir`] with the arguments of `nab-score`.
pub fn score(args: &NabScoreArgs) -> Result<ScoreReport, NabError> {
    score_results_dir(&args.results, &args.detector, &args.labels)
}

/// Score the results files of `detector` under `results/<detector>/` (NAB's
/// layout, any detector's files) against the windows in `labels`. Results
/// files whose name has no label entry (such as NAB's own
/// `<detector>_<profile>_scores.csv`) are skipped with a warning.
pub fn score_results_dir(
    results: &Path,
    detector: &str,
    labels: &Path,
) -> Result<ScoreReport, NabError> {
    check_detector_name(detector)?;
    let labels = read_labels(labels)?;
    let dir = results.join(detector);
    let mut warnings = Vec::new();
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    for r in find_data_files(&dir)? {
        match data_name_of_results(&dir, detector, &r.path) {
            Some(name) if labels.windows.contains_key(&name) => found.push((name, r.path)),
            _ => warnings.push(format!(
                "{}: not a labelled results file of `{detector}`; skipped",
                r.path.display()
            )),
        }
    }
    if found.is_empty() {
        return Err(NabError::NoResultsFiles {
            detector: detector.to_string(),
            dir,
        });
    }
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    let (windows, more) = match_labels(&names, &labels)?;
    warnings.extend(more);
    let mut files = Vec::with_capacity(found.len());
    for ((name, path), windows) in found.iter().zip(windows) {
        let r = read_results_file(path)?;
        files.push(ScoredFile {
            name: name.clone(),
            timestamps: r.timestamps,
            scores: r.scores,
            windows,
        });
    }
    Ok(ScoreReport {
        detector: detector.to_string(),
        results_dir: dir,
        warnings,
        score: score_files(&files)?,
    })
}

/// The windows of each named file, in order; a file without a label entry
/// is an error, a label entry without a file a warning.
fn match_labels(
    names: &[&str],
    labels: &Labels,
) -> Result<(Vec<Vec<Window>>, Vec<String>), NabError> {
    let windows = names
        .iter()
        .map(|&name| {
            labels
                .windows
                .get(name)
                .cloned()
                .ok_or_else(|| NabError::Unlabelled {
                    file: name.to_string(),
                    labels: labels.path.clone(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let present: std::collections::BTreeSet<&str> = names.iter().copied().collect();
    let warnings = labels
        .windows
        .keys()
        .filter(|k| !present.contains(k.as_str()))
        .map(|k| format!("{}: `{k}` has no data file; ignored", labels.path.display()))
        .collect();
    Ok((windows, warnings))
}

/// The detector name becomes a directory and a file-name prefix.
fn check_detector_name(name: &str) -> Result<(), NabError> {
    let ok = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0']);
    if ok {
        Ok(())
    } else {
        Err(NabError::Argument(format!(
            "detector name `{name}` must be a plain file name"
        )))
    }
}

/// `<results_dir>/<category>/<detector>_<file>.csv` for data file `name`.
pub fn results_path(results_dir: &Path, detector: &str, name: &str) -> PathBuf {
    let (parent, base) = name.rsplit_once('/').unwrap_or(("", name));
    let mut path = results_dir.to_path_buf();
    for part in parent.split('/').filter(|p| !p.is_empty()) {
        path.push(part);
    }
    path.push(format!("{detector}_{base}"));
    path
}

/// Apply `f` to every item on `pool`, one item per task, items started in
/// order; results in item order, or the first error in item order.
fn in_pool<T: Sync, R: Send>(
    pool: &rayon::ThreadPool,
    items: &[T],
    f: impl Fn(usize, &T) -> Result<R, NabError> + Sync,
) -> Result<Vec<R>, NabError> {
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Result<R, NabError>>>> =
        items.iter().map(|_| Mutex::new(None)).collect();
    pool.scope(|s| {
        for _ in 0..pool.current_num_threads().min(items.len()) {
            s.spawn(|_| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(i, item);
                *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            });
        }
    });
    slots
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every item was processed")
        })
        .collect()
}

fn progress_bar(rows: u64, disabled: bool) -> ProgressBar {
    if disabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(rows), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "nab {bar:40} {human_pos}/{human_len} rows  {elapsed_precise}  eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Run a fresh model over `file` and write its results to `path`; returns
/// the anomaly scores.
fn run_file(
    file: &DataFile,
    base: &ModelParams,
    mode: Mode,
    path: &Path,
    bar: &ProgressBar,
) -> Result<Vec<f64>, NabError> {
    let mut params = base.clone();
    if mode == Mode::Conformant {
        if let Some((min, max)) = file.value_range() {
            params.set_value_range(min, max);
        }
        params.set_probationary_period(probationary_period(file.len()) as u32);
    }
    let mut model = Model::new(params).map_err(|source| NabError::Params {
        file: file.name.clone(),
        source,
    })?;

    let io = |source| NabError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("csv.tmp");
    let out = std::fs::File::create(&tmp).map_err(|source| NabError::Io {
        path: tmp.clone(),
        source,
    })?;
    let csv_err = |source| NabError::Csv {
        path: tmp.clone(),
        source,
    };
    let mut writer = csv::Writer::from_writer(std::io::BufWriter::new(out));
    writer.write_record(RESULTS_HEADER).map_err(csv_err)?;

    let mut scores = Vec::with_capacity(file.len());
    let mut fields: [String; 4] = Default::default();
    let mut pending = 0;
    for i in 0..file.len() {
        let out = model.step(file.timestamps[i], file.values[i], true);
        let score = out.anomaly_score;
        if !(0.0..=1.0).contains(&score) {
            return Err(NabError::BadScore {
                path: file.path.clone(),
                line: i as u64 + 2,
                score,
            });
        }
        scores.push(score);
        for f in &mut fields {
            f.clear();
        }
        let [s, raw, likelihood, prediction] = &mut fields;
        // Writing into a String cannot fail.
        let _ = write!(s, "{score}");
        let _ = write!(raw, "{}", out.raw_anomaly);
        let _ = write!(likelihood, "{}", out.likelihood);
        if let Some(p) = out.prediction {
            let _ = write!(prediction, "{}", p.value);
        }
        writer
            .write_record([
                file.timestamp_text[i].as_str(),
                file.value_text[i].as_str(),
                s,
                raw,
                likelihood,
                prediction,
            ])
            .map_err(csv_err)?;
        pending += 1;
        if pending == PROGRESS_STEP {
            bar.inc(pending);
            pending = 0;
        }
    }
    bar.inc(pending);
    let buffered = writer.into_inner().map_err(|e| NabError::Io {
        path: tmp.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let out = buffered.into_inner().map_err(|e| NabError::Io {
        path: tmp.clone(),
        source: e.into_error(),
    })?;
    out.sync_all().map_err(|source| NabError::Io {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(scores)
}

/// Relative name of a results file under `<out>/<detector>` mapped back to
/// its data file name (`cat/det_x.csv` -> `cat/x.csv`), if it has the
/// detector's prefix.
pub fn data_name_of_results(results_dir: &Path, detector: &str, path: &Path) -> Option<String> {
    let name = relative_name(results_dir, path);
    let (parent, base) = match name.rsplit_once('/') {
        Some((p, b)) => (format!("{p}/"), b.to_string()),
        None => (String::new(), name),
    };
    let rest = base.strip_prefix(&format!("{detector}_"))?.to_string();
    Some(format!("{parent}{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_path_follows_nab_layout() {
        let p = results_path(
            Path::new("out/det"),
            "det",
            "realTweets/Twitter_volume_FB.csv",
        );
        assert_eq!(
            p,
            PathBuf::from("out/det/realTweets/det_Twitter_volume_FB.csv")
        );
        let flat = results_path(Path::new("out/det"), "det", "x.csv");
        assert_eq!(flat, PathBuf::from("out/det/det_x.csv"));
        assert_eq!(
            data_name_of_results(Path::new("out/det"), "det", &p).as_deref(),
            Some("realTweets/Twitter_volume_FB.csv")
        );
        assert_eq!(
            data_name_of_results(Path::new("out/det"), "other", &p),
            None
        );
    }

    #[test]
    fn detector_names_must_be_plain() {
        assert!(check_detector_name("htmstream").is_ok());
        for bad in ["", ".", "..", "a/b", "a\\b"] {
            assert!(check_detector_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pool_keeps_item_order_and_reports_first_error() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let items: Vec<u32> = (0..20).collect();
        let out = in_pool(&pool, &items, |i, &x| Ok((i, x * 2))).unwrap();
        assert_eq!(
            out,
            (0..20).map(|x| (x as usize, x * 2)).collect::<Vec<_>>()
        );
        let err = in_pool(&pool, &items, |_, &x| {
            if x % 7 == 3 {
                Err(NabError::Argument(format!("item {x}")))
            } else {
                Ok(x)
            }
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "invalid argument: item 3");
    }

    #[test]
    fn labels_are_matched_by_name() {
        let labels = Labels {
            path: "w.json".into(),
            windows: [
                ("a/x.csv".to_string(), vec![]),
                ("a/y.csv".to_string(), vec![]),
            ]
            .into_iter()
            .collect(),
        };
        let (w, warnings) = match_labels(&["a/x.csv"], &labels).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("a/y.csv"), "{warnings:?}");
        let err = match_labels(&["a/z.csv"], &labels).unwrap_err();
        assert!(err.to_string().contains("a/z.csv"), "{err}");
    }
}
