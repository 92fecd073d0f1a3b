//! End-to-end tests of the NAB runner: data and labels written to a temp
//! directory, `nab::run` over them, results files checked, and the results
//! re-scored from disk. Tests on the real NAB files (in `shared/nab`) run
//! when that folder is found beside the repository, or at `$NAB_DIR`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use htm_stream::nab::{self, Mode, NabArgs, NabError};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// `n` rows every 5 minutes from 2014-04-01 00:00:00, value `f(i)`.
fn series(n: usize, f: impl Fn(usize) -> f64) -> (String, Vec<String>) {
    let start = chrono::NaiveDate::from_ymd_opt(2014, 4, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let mut csv = String::from("timestamp,value\n");
    let mut stamps = Vec::new();
    for i in 0..n {
        let t = start + chrono::Duration::minutes(5 * i as i64);
        let t = t.format("%Y-%m-%d %H:%M:%S").to_string();
        writeln!(csv, "{t},{}", f(i)).unwrap();
        stamps.push(t);
    }
    (csv, stamps)
}

fn args(root: &Path, mode: Mode) -> NabArgs {
    NabArgs {
        data: root.join("data"),
        labels: root.join("labels"),
        out: root.join("results"),
        detector: "det".into(),
        preset: "nab".into(),
        mode,
        jobs: Some(2),
        no_progress: true,
        set: Vec::new(),
        per_file: false,
    }
}

/// Three small files in two categories, one without windows, and a label
/// entry for a file that does not exist.
fn synthetic_corpus(root: &Path) {
    let (a, ta) = series(600, |i| {
        let base = 10.0 + (i as f64 * 0.3).sin();
        if (400..405).contains(&i) {
            base + 25.0
        } else {
            base
        }
    });
    let (b, tb) = series(400, |i| (i % 12) as f64 * 1.5);
    let (c, _) = series(300, |i| 0.25 * (i % 5) as f64);
    write(&root.join("data/catA/a.csv"), &a);
    write(&root.join("data/catB/b.csv"), &b);
    write(&root.join("data/catB/c.csv"), &c);
    let windows = format!(
        r#"{{
  "catA/a.csv": [["{}.000000", "{}.000000"]],
  "catB/b.csv": [["{}.000000", "{}.000000"], ["{}.000000", "{}.000000"]],
  "catB/c.csv": [],
  "catC/missing.csv": [["2014-04-01 00:00:00.000000", "2014-04-01 01:00:00.000000"]]
}}"#,
        ta[380], ta[430], tb[100], tb[130], tb[300], tb[340]
    );
    write(&root.join("labels/combined_windows.json"), &windows);
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn synthetic_corpus_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    synthetic_corpus(root);
    let report = nab::run(&args(root, Mode::Conformant)).unwrap();

    // NAB's layout, NAB's columns first, same rows and text as the data.
    for (data, results) in [
        ("catA/a.csv", "catA/det_a.csv"),
        ("catB/b.csv", "catB/det_b.csv"),
        ("catB/c.csv", "catB/det_c.csv"),
    ] {
        let data = read_lines(&root.join("data").join(data));
        let out = read_lines(&root.join("results/det").join(results));
        assert_eq!(
            out[0],
            "timestamp,value,anomaly_score,raw_score,likelihood,prediction"
        );
        assert_eq!(out.len(), data.len(), "{results}");
        for (d, o) in data.iter().zip(&out).skip(1) {
            let fields: Vec<&str> = o.split(',').collect();
            assert_eq!(fields.len(), 6, "{o}");
            assert_eq!(format!("{},{}", fields[0], fields[1]), *d);
            let score: f64 = fields[2].parse().unwrap();
            assert!((0.0..=1.0).contains(&score), "{o}");
            assert!(!fields[2].contains(['e', 'E']), "plain decimal: {o}");
        }
    }
    assert!(!root.join("results/det/catC").exists());

    assert_eq!(report.rows, 1300);
    assert_eq!(report.score.files, 3);
    assert_eq!(report.score.rows, 1300);
    assert_eq!(report.score.windows, 3);
    assert_eq!(report.warnings.len(), 1);
    assert!(report.warnings[0].contains("catC/missing.csv"));
    for p in &report.score.profiles {
        assert!(p.normalized.is_finite() && p.normalized <= 100.0, "{p:?}");
        assert_eq!(p.perfect_raw, 3.0);
        assert_eq!(p.null_raw, -3.0 * p.profile.fn_);
        assert_eq!(p.files.len(), 3);
    }

    let text = report.to_string();
    let last = text.lines().last().unwrap();
    assert!(last.starts_with("NAB standard="), "{text}");
    assert!(
        last.contains(" low_fp=") && last.contains(" low_fn="),
        "{text}"
    );
    assert!(text.contains("rows/s"), "{text}");
    assert!(text.contains("reward_low_FN_rate"), "{text}");
    assert!(text.contains("warning: "), "{text}");

    // Scoring the written files gives exactly the in-memory score.
    let rescored =
        nab::score_results_dir(&root.join("results"), "det", &root.join("labels")).unwrap();
    assert_eq!(rescored.score, report.score);
    assert!(rescored
        .to_string()
        .lines()
        .last()
        .unwrap()
        .starts_with("NAB standard="));

    // Streaming mode runs over the same files and overwrites them.
    let streaming = nab::run(&args(root, Mode::Streaming)).unwrap();
    assert_eq!(streaming.rows, 1300);
    assert_eq!(
        read_lines(&root.join("results/det/catA/det_a.csv")).len(),
        601
    );
}

#[test]
fn scorer_reads_other_detectors_results() {
    // A hand-written results file in NAB's layout (with NAB's own extra
    // columns and a scores summary file that must be skipped).
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (_, stamps) = series(1000, |_| 0.0);
    let mut results = String::from("timestamp,value,anomaly_score,raw_score,label\n");
    for (i, t) in stamps.iter().enumerate() {
        let score = if i == 400 { "1.0" } else { "0.0" };
        writeln!(results, "{t},1,{score},0.5,0").unwrap();
    }
    write(&root.join("results/other/cat/other_x.csv"), &results);
    write(
        &root.join("results/other/other_standard_scores.csv"),
        "Detector,Profile,File,Threshold,Score\n",
    );
    write(
        &root.join("labels.json"),
        &format!(
            r#"{{"cat/x.csv": [["{}", "{}"]]}}"#,
            stamps[400], stamps[499]
        ),
    );
    let report =
        nab::score_results_dir(&root.join("results"), "other", &root.join("labels.json")).unwrap();
    assert_eq!(report.score.files, 1);
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    for p in &report.score.profiles {
        assert_eq!(p.threshold, 1.0);
        assert_eq!(p.raw, 1.0);
        assert_eq!(p.normalized, 100.0);
    }
}

#[test]
fn unlabelled_data_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    synthetic_corpus(root);
    let (extra, _) = series(50, |i| i as f64);
    write(&root.join("data/catB/extra.csv"), &extra);
    let err = nab::run(&args(root, Mode::Conformant)).unwrap_err();
    assert!(matches!(err, NabError::Unlabelled { .. }), "{err}");
    assert!(err.to_string().contains("catB/extra.csv"), "{err}");
    assert!(
        !root.join("results").exists(),
        "nothing runs before the check"
    );
}

#[test]
fn non_finite_value_is_an_error_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    synthetic_corpus(root);
    let path = root.join("data/catB/c.csv");
    let mut lines = read_lines(&path);
    let ts = lines[4].split(',').next().unwrap().to_string();
    lines[4] = format!("{ts},inf");
    write(&path, &(lines.join("\n") + "\n"));
    let err = nab::run(&args(root, Mode::Conformant))
        .unwrap_err()
        .to_string();
    assert!(err.contains("c.csv:5:"), "{err}");
    assert!(err.contains("not finite"), "{err}");

    lines[4] = format!("{ts},twelve");
    write(&path, &(lines.join("\n") + "\n"));
    let err = nab::run(&args(root, Mode::Conformant))
        .unwrap_err()
        .to_string();
    assert!(err.contains("c.csv:5:") && err.contains("twelve"), "{err}");
}

#[test]
fn window_edge_missing_from_the_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    synthetic_corpus(root);
    write(
        &root.join("labels/combined_windows.json"),
        r#"{"catA/a.csv": [["2014-04-02 10:00:00.000000", "2099-01-01 00:00:00.000000"]],
            "catB/b.csv": [], "catB/c.csv": []}"#,
    );
    let err = nab::run(&args(root, Mode::Conformant))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("catA/a.csv") && err.contains("end timestamp"),
        "{err}"
    );
    assert!(
        !root.join("results").exists(),
        "nothing runs before the check"
    );
}

#[test]
fn bad_arguments_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    synthetic_corpus(root);
    let mut a = args(root, Mode::Conformant);
    a.preset = "no-such-preset".into();
    assert!(nab::run(&a)
        .unwrap_err()
        .to_string()
        .contains("no-such-preset"));
    let mut a = args(root, Mode::Conformant);
    a.jobs = Some(0);
    assert!(matches!(nab::run(&a), Err(NabError::Argument(_))));
    let mut a = args(root, Mode::Conformant);
    a.detector = "../x".into();
    assert!(matches!(nab::run(&a), Err(NabError::Argument(_))));
    let mut a = args(root, Mode::Conformant);
    a.data = root.join("labels");
    assert!(matches!(nab::run(&a), Err(NabError::NoDataFiles(_))));
}

/// `shared/nab` beside the repository (CI and the main checkout), beside
/// the worktree folder, or `$NAB_DIR`.
fn shared_nab() -> Option<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::var_os("NAB_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            manifest.join("../shared/nab"),
            manifest.join("../../shared/nab"),
        ])
        .find(|p| p.join("labels/combined_windows.json").is_file())
}

/// Truncated copies of real NAB files, with the real windows that fit.
#[test]
fn real_nab_files_truncated_end_to_end() {
    let Some(nab_dir) = shared_nab() else {
        eprintln!("shared/nab not found: skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let labels: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(nab_dir.join("labels/combined_windows.json")).unwrap(),
    )
    .unwrap();
    let mut kept = serde_json::Map::new();
    let mut windows = 0;
    for (name, rows) in [
        ("realAdExchange/exchange-3_cpc_results.csv", 700),
        ("realKnownCause/rogue_agent_key_hold.csv", 800),
        ("artificialNoAnomaly/art_noisy.csv", 500),
    ] {
        let lines = read_lines(&nab_dir.join("data").join(name));
        let lines = &lines[..=rows];
        write(&root.join("data").join(name), &(lines.join("\n") + "\n"));
        let last = lines[rows].split(',').next().unwrap().to_string();
        let fits: Vec<serde_json::Value> = labels[name]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w[1].as_str().unwrap()[..19] <= last[..])
            .cloned()
            .collect();
        windows += fits.len();
        kept.insert(name.into(), fits.into());
    }
    assert_eq!(
        windows, 3,
        "exchange-3_cpc: 2 windows, rogue_agent_key_hold: 1"
    );
    write(
        &root.join("labels/combined_windows.json"),
        &serde_json::Value::Object(kept).to_string(),
    );
    let report = nab::run(&args(root, Mode::Conformant)).unwrap();
    assert_eq!(report.rows, 2000);
    assert_eq!(report.score.windows, 3);
    assert_eq!(report.score.scorable_windows, 3);
    for p in &report.score.profiles {
        assert!(p.normalized.is_finite() && p.normalized <= 100.0, "{p:?}");
    }
    let out = read_lines(&root.join("results/det/realKnownCause/det_rogue_agent_key_hold.csv"));
    assert_eq!(out.len(), 801);
}

/// The real labels fit the real data: 83 windows on 39 files, every one
/// scorable, so the null detector scores -83 (standard) and -166 (low FN).
#[test]
fn real_nab_labels_fit_the_real_data() {
    let Some(nab_dir) = shared_nab() else {
        eprintln!("shared/nab not found: skipped");
        return;
    };
    let labels = nab::corpus::read_labels(&nab_dir.join("labels")).unwrap();
    let refs = nab::corpus::find_data_files(&nab_dir.join("data")).unwrap();
    assert_eq!(refs.len(), 39);
    let files: Vec<nab::ScoredFile> = refs
        .iter()
        .map(|r| {
            let data = nab::corpus::read_data_file(r).unwrap();
            nab::ScoredFile {
                name: r.name.clone(),
                scores: vec![0.5; data.len()],
                timestamps: data.timestamps,
                windows: labels.windows[&r.name].clone(),
            }
        })
        .collect();
    let score = nab::score_files(&files).unwrap();
    assert_eq!(score.rows, 243_922);
    assert_eq!(score.windows, 83);
    assert_eq!(score.scorable_windows, 83);
    let std = score.profile("standard").unwrap();
    assert_eq!(
        (std.null_raw, std.perfect_raw, std.normalized),
        (-83.0, 83.0, 0.0)
    );
    assert_eq!(score.profile("low_fn").unwrap().null_raw, -166.0);
}
