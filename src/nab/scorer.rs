//! The NAB scorer: windows, scaled sigmoid, probationary period, threshold
//! sweep over the corpus and normalization against the null and perfect
//! detectors, reproducing NAB's reference scorer to the last bit where the
//! order of floating-point sums allows it.
//!
//! Spec: `shared/nab/README.md`, appendix "Exact scoring algorithm" (steps
//! 1–6 and the quirk checklist); the step numbers below refer to it. In
//! short:
//!
//! - every row gets a value `v_i` as if it were a detection (step 3): inside
//!   a window a reward `A_TP * S(y) / S(-1)`, after a window a penalty
//!   `A_FP * S(y)` that fades towards the window's right edge, elsewhere
//!   `-A_FP`;
//! - a window scores its best detected row or `-A_FN` when missed, every
//!   detection outside windows adds its `v_i` (step 4);
//! - the threshold of each profile is the one maximizing the raw corpus score
//!   over all distinct anomaly scores (step 5), the raw score is then
//!   normalized so that the null detector scores 0 and the perfect one 100
//!   (step 6).
//!
//! This module does no I/O: it takes timestamps, anomaly scores and windows.
//!
//! Deviations from NAB, all on inputs NAB itself refuses or crashes on:
//! window edges that match no row, windows out of order or overlapping, and
//! windows ending before they start are errors here; a one-row window
//! (`W = 1`) gives the false positives after it the full `-A_FP` (NAB divides
//! by zero); a file whose every score is below the threshold is simply fully
//! detected (NAB finds no threshold pair and crashes).

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

/// Threshold that detects nothing: NAB starts its sweep here (scores are in
/// [0, 1]).
pub const NO_DETECTION_THRESHOLD: f64 = 1.1;

/// Constant anomaly score of NAB's "null" detector.
pub const NULL_DETECTOR_SCORE: f64 = 0.5;

/// A scorer failure, naming the file (and row or window) at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScoreError {
    /// A file's timestamps and scores differ in length.
    #[error("{file}: {timestamps} timestamps but {scores} anomaly scores")]
    LengthMismatch {
        file: String,
        timestamps: usize,
        scores: usize,
    },
    /// An anomaly score is NaN or infinite (NAB cannot order those).
    #[error("{file}: row {row}: anomaly score {score} is not finite")]
    NonFiniteScore {
        file: String,
        row: usize,
        score: f64,
    },
    /// A window that cannot be placed on the file's rows.
    #[error("{file}: window [{start}, {end}]: {message}")]
    Window {
        file: String,
        start: NaiveDateTime,
        end: NaiveDateTime,
        message: String,
    },
}

/// An application profile: the weights of true positives, false positives
/// and false negatives (NAB `config/profiles.json`; `A_TN` is never used).
/// Serializable for reports; not deserializable (its names are static).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Profile {
    /// NAB's name of the profile.
    pub name: &'static str,
    /// Short name used in the summary line (`standard`, `low_fp`, `low_fn`).
    pub short: &'static str,
    /// `A_TP`: reward of a detection at a window's left edge.
    pub tp: f64,
    /// `A_FP`: penalty of a false positive far from any window.
    pub fp: f64,
    /// `A_FN`: penalty of a missed window.
    pub fn_: f64,
}

impl Profile {
    /// NAB's `standard` profile.
    pub const STANDARD: Profile = Profile {
        name: "standard",
        short: "standard",
        tp: 1.0,
        fp: 0.11,
        fn_: 1.0,
    };
    /// NAB's `reward_low_FP_rate` profile.
    pub const LOW_FP: Profile = Profile {
        name: "reward_low_FP_rate",
        short: "low_fp",
        tp: 1.0,
        fp: 0.22,
        fn_: 1.0,
    };
    /// NAB's `reward_low_FN_rate` profile.
    pub const LOW_FN: Profile = Profile {
        name: "reward_low_FN_rate",
        short: "low_fn",
        tp: 1.0,
        fp: 0.11,
        fn_: 2.0,
    };
    /// The three NAB profiles, in NAB's reporting order.
    pub const ALL: [Profile; 3] = [Profile::STANDARD, Profile::LOW_FP, Profile::LOW_FN];
}

/// An anomaly window as given in `combined_windows.json`: both edges are
/// timestamps of rows of the file and both rows belong to the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: NaiveDateTime,
    pub end: NaiveDateTime,
}

/// One file to score: its timestamps (file order), a detector's anomaly
/// score for every row, and its windows (in label order).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredFile {
    /// Relative name, e.g. `realTweets/Twitter_volume_FB.csv`.
    pub name: String,
    pub timestamps: Vec<NaiveDateTime>,
    pub scores: Vec<f64>,
    pub windows: Vec<Window>,
}

/// NAB's probationary period for a file of `rows` rows:
/// `min(floor(0.15 * rows), 0.15 * 5000)`, computed in `f64` as NAB does.
pub fn probationary_period(rows: usize) -> usize {
    (0.15 * rows as f64).floor().min(0.15 * 5000.0) as usize
}

/// NAB's scaled sigmoid (step 3): `2 / (1 + exp(5 y)) - 1`, and exactly -1
/// for `y > 3`.
pub fn scaled_sigmoid(y: f64) -> f64 {
    if y > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * y).exp()) - 1.0
    }
}

/// A window placed on a file's rows: `a` and `b` are the indices of its first
/// and last rows, `W = b - a + 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpan {
    pub a: u32,
    pub b: u32,
}

impl WindowSpan {
    /// Width in rows, both edges included.
    pub fn width(&self) -> u32 {
        self.b - self.a + 1
    }
}

/// Where a row lies relative to the windows (step 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Region {
    /// Outside every window and before the first one ends.
    BeforeAny,
    /// Inside window `k` (index in the file's window list).
    Inside(u32),
    /// Outside every window; window `k` is the most recently exited one.
    After(u32),
}

/// The profile-independent geometry of one file: its probationary period
/// and, for every row, which window it is in or follows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileGeometry {
    /// Relative name of the file.
    pub name: String,
    /// Number of rows.
    pub rows: usize,
    /// Rows `i < probation` are not scored.
    pub probation: usize,
    /// The windows, in order, on row indices.
    pub windows: Vec<WindowSpan>,
    region: Vec<Region>,
}

impl FileGeometry {
    /// Place `windows` on the rows of a file with these `timestamps`
    /// (step 1): a window's edges are the first rows whose timestamps equal
    /// its start and end. Windows must follow each other without overlap.
    pub fn new(
        name: &str,
        timestamps: &[NaiveDateTime],
        windows: &[Window],
    ) -> Result<FileGeometry, ScoreError> {
        let window_error = |w: &Window, message: String| ScoreError::Window {
            file: name.to_string(),
            start: w.start,
            end: w.end,
            message,
        };
        let first_row = |t: NaiveDateTime| timestamps.iter().position(|&x| x == t);
        let mut spans: Vec<WindowSpan> = Vec::with_capacity(windows.len());
        for w in windows {
            let a = first_row(w.start)
                .ok_or_else(|| window_error(w, "start timestamp matches no row".into()))?;
            let b = first_row(w.end)
                .ok_or_else(|| window_error(w, "end timestamp matches no row".into()))?;
            if b < a {
                return Err(window_error(
                    w,
                    format!("ends (row {b}) before it starts (row {a})"),
                ));
            }
            if let Some(prev) = spans.last() {
                if a as u32 <= prev.b {
                    return Err(window_error(
                        w,
                        format!(
                            "starts at row {a}, not after the previous window's end (row {})",
                            prev.b
                        ),
                    ));
                }
            }
            spans.push(WindowSpan {
                a: a as u32,
                b: b as u32,
            });
        }
        let mut region = Vec::with_capacity(timestamps.len());
        let mut current = Region::BeforeAny;
        let mut next = 0usize;
        for i in 0..timestamps.len() as u32 {
            if next < spans.len() && spans[next].a == i {
                current = Region::Inside(next as u32);
                next += 1;
            }
            region.push(current);
            if let Region::Inside(k) = current {
                if spans[k as usize].b == i {
                    current = Region::After(k);
                }
            }
        }
        Ok(FileGeometry {
            name: name.to_string(),
            rows: timestamps.len(),
            probation: probationary_period(timestamps.len()),
            windows: spans,
            region,
        })
    }

    /// Windows with at least one scored row (`i >= probation`); windows
    /// wholly inside the probationary period are neither hit nor missed.
    pub fn scorable_windows(&self) -> usize {
        self.windows
            .iter()
            .filter(|w| w.b as usize >= self.probation)
            .count()
    }

    /// The window row `i` lies in, if any.
    pub fn window_of(&self, i: usize) -> Option<usize> {
        match self.region[i] {
            Region::Inside(k) => Some(k as usize),
            _ => None,
        }
    }

    /// The value `v_i` row `i` would add if detected (step 3): positive
    /// inside a window, in `[-A_FP, 0)` outside.
    pub fn row_value(&self, i: usize, profile: &Profile) -> f64 {
        match self.region[i] {
            Region::Inside(k) => {
                let w = self.windows[k as usize];
                let y = -f64::from(w.b - i as u32 + 1) / f64::from(w.width());
                profile.tp * scaled_sigmoid(y) / scaled_sigmoid(-1.0)
            }
            Region::After(k) => {
                let w = self.windows[k as usize];
                // W - 1 = 0 for a one-row window: y = +inf, i.e. -A_FP.
                let y = f64::from(i as u32 - w.b) / f64::from(w.width() - 1);
                profile.fp * scaled_sigmoid(y)
            }
            Region::BeforeAny => -profile.fp,
        }
    }

    /// The file's score when every scored row with `score >= threshold` is a
    /// detection (step 4), with NAB-style row counts.
    pub fn score_at(&self, scores: &[f64], threshold: f64, profile: &Profile) -> FileScore {
        let mut best: Vec<Option<f64>> = vec![None; self.windows.len()];
        let mut fp_sum = 0.0;
        let mut counts = Counts::default();
        for (i, &s) in scores.iter().enumerate().skip(self.probation) {
            let detected = s >= threshold;
            match (self.region[i], detected) {
                (Region::Inside(k), true) => {
                    counts.tp_rows += 1;
                    let v = self.row_value(i, profile);
                    let b = &mut best[k as usize];
                    *b = Some(b.map_or(v, |old: f64| old.max(v)));
                }
                (Region::Inside(_), false) => counts.fn_rows += 1,
                (_, true) => {
                    counts.fp_rows += 1;
                    fp_sum += self.row_value(i, profile);
                }
                (_, false) => counts.tn_rows += 1,
            }
        }
        let mut tp_sum = 0.0;
        for (w, b) in self.windows.iter().zip(&best) {
            if w.b as usize >= self.probation {
                match b {
                    Some(v) => {
                        counts.windows_hit += 1;
                        tp_sum += v;
                    }
                    None => counts.windows_missed += 1,
                }
            }
        }
        FileScore {
            name: self.name.clone(),
            score: combine(tp_sum, fp_sum, counts.windows_missed, profile),
            counts,
        }
    }
}

/// Raw score from its parts, always summed in this order so that the sweep
/// and the per-file scoring agree bit for bit on simple cases:
/// `(rewards + false positives) - A_FN * missed`.
fn combine(tp_sum: f64, fp_sum: f64, missed: u64, profile: &Profile) -> f64 {
    (tp_sum + fp_sum) + -profile.fn_ * missed as f64
}

/// Detection counts at a threshold. Windows are counted among scorable
/// windows; rows (as in NAB's score CSVs) among scored rows only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Scorable windows with at least one detection.
    pub windows_hit: u64,
    /// Scorable windows without a detection.
    pub windows_missed: u64,
    /// Detected rows inside windows.
    pub tp_rows: u64,
    /// Detected rows outside windows (each one is penalized).
    pub fp_rows: u64,
    /// Undetected rows inside windows.
    pub fn_rows: u64,
    /// Undetected rows outside windows.
    pub tn_rows: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.windows_hit += o.windows_hit;
        self.windows_missed += o.windows_missed;
        self.tp_rows += o.tp_rows;
        self.fp_rows += o.fp_rows;
        self.fn_rows += o.fn_rows;
        self.tn_rows += o.tn_rows;
    }
}

/// One file's score at a profile's threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileScore {
    pub name: String,
    /// Raw score of the file (step 4).
    pub score: f64,
    pub counts: Counts,
}

/// A `(threshold, raw corpus score)` pair recorded by the sweep.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThresholdScore {
    pub threshold: f64,
    pub score: f64,
}

/// The threshold sweep (step 5) over several files at once: `1.1` (nothing
/// detected) followed by every distinct scored anomaly score in descending
/// order, each with the raw score of detecting all rows at or above it.
///
/// Panics if a file's scores and geometry differ in length (checked by
/// [`score_files`]).
pub fn sweep(files: &[(&FileGeometry, &[f64])], profile: &Profile) -> Vec<ThresholdScore> {
    let mut window_base = Vec::with_capacity(files.len());
    let mut total_windows = 0usize;
    let mut missed = 0u64;
    let mut rows = Vec::new();
    for (f, (geometry, scores)) in files.iter().enumerate() {
        assert_eq!(geometry.rows, scores.len(), "{}: scores", geometry.name);
        window_base.push(total_windows);
        total_windows += geometry.windows.len();
        missed += geometry.scorable_windows() as u64;
        for (i, &s) in scores.iter().enumerate().skip(geometry.probation) {
            rows.push((s, f as u32, i as u32));
        }
    }
    // Stable: rows sharing a score keep file order (any order is valid).
    rows.sort_by(|x, y| y.0.total_cmp(&x.0));

    let mut state = SweepState {
        best: vec![None; total_windows],
        tp_sum: 0.0,
        tp_dirty: false,
        fp_sum: 0.0,
        missed,
    };
    let mut threshold = NO_DETECTION_THRESHOLD;
    let mut pairs = Vec::new();
    for &(score, f, i) in &rows {
        if score != threshold {
            pairs.push(ThresholdScore {
                threshold,
                score: state.total(profile),
            });
            threshold = score;
        }
        let (geometry, _) = files[f as usize];
        let v = geometry.row_value(i as usize, profile);
        match geometry.window_of(i as usize) {
            Some(k) => state.detect_in_window(window_base[f as usize] + k, v),
            None => state.fp_sum += v,
        }
    }
    pairs.push(ThresholdScore {
        threshold,
        score: state.total(profile),
    });
    pairs
}

/// Running state of a sweep: the best reward of every window so far, the
/// false-positive sum and the number of scorable windows still missed.
struct SweepState {
    best: Vec<Option<f64>>,
    tp_sum: f64,
    /// A window's best reward changed since `tp_sum` was computed.
    tp_dirty: bool,
    fp_sum: f64,
    missed: u64,
}

impl SweepState {
    fn detect_in_window(&mut self, window: usize, v: f64) {
        match &mut self.best[window] {
            slot @ None => {
                *slot = Some(v);
                self.missed -= 1;
                self.tp_dirty = true;
            }
            Some(old) if v > *old => {
                *old = v;
                self.tp_dirty = true;
            }
            Some(_) => {}
        }
    }

    fn total(&mut self, profile: &Profile) -> f64 {
        if self.tp_dirty {
            // Re-summed in window order rather than updated by differences,
            // so each window's reward enters the sum exactly once.
            self.tp_sum = self.best.iter().flatten().sum();
            self.tp_dirty = false;
        }
        combine(self.tp_sum, self.fp_sum, self.missed, profile)
    }
}

/// The best pair of a sweep: the largest score, and among equal scores the
/// one recorded first (the highest threshold).
pub fn best_threshold(pairs: &[ThresholdScore]) -> ThresholdScore {
    let mut best = pairs[0];
    for p in &pairs[1..] {
        if p.score > best.score {
            best = *p;
        }
    }
    best
}

/// One profile's result over the corpus.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProfileScore {
    pub profile: Profile,
    /// Threshold chosen by the sweep (`1.1` = detect nothing).
    pub threshold: f64,
    /// Raw corpus score at that threshold: the sum of the file scores.
    pub raw: f64,
    /// Raw score of the null detector (constant 0.5), optimized the same way.
    pub null_raw: f64,
    /// `A_TP` times the number of windows of the files scored.
    pub perfect_raw: f64,
    /// `100 * (raw - null) / (perfect - null)`; NaN when the files have no
    /// window at all.
    pub normalized: f64,
    /// Totals over the files.
    pub counts: Counts,
    /// Per-file scores, in the order the files were given.
    pub files: Vec<FileScore>,
}

/// The scores of a corpus for every profile asked for.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CorpusScore {
    /// Number of files scored.
    pub files: usize,
    /// Rows over all files (probationary rows included).
    pub rows: usize,
    /// Windows over all files, scorable or not.
    pub windows: usize,
    /// Windows with at least one scored row.
    pub scorable_windows: usize,
    pub profiles: Vec<ProfileScore>,
}

impl CorpusScore {
    /// The result for the profile with NAB name or short name `name`.
    pub fn profile(&self, name: &str) -> Option<&ProfileScore> {
        self.profiles
            .iter()
            .find(|p| p.profile.name == name || p.profile.short == name)
    }
}

/// Score files for NAB's three profiles (see [`score_files_with`]).
pub fn score_files(files: &[ScoredFile]) -> Result<CorpusScore, ScoreError> {
    score_files_with(files, &Profile::ALL)
}

/// Score files as NAB does: per profile, sweep the threshold over the whole
/// corpus, score every file at the best one, sum, and normalize against the
/// null detector and the perfect score of these files' windows.
pub fn score_files_with(
    files: &[ScoredFile],
    profiles: &[Profile],
) -> Result<CorpusScore, ScoreError> {
    let mut geometries = Vec::with_capacity(files.len());
    for file in files {
        if file.timestamps.len() != file.scores.len() {
            return Err(ScoreError::LengthMismatch {
                file: file.name.clone(),
                timestamps: file.timestamps.len(),
                scores: file.scores.len(),
            });
        }
        if let Some((row, &score)) = file.scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
            return Err(ScoreError::NonFiniteScore {
                file: file.name.clone(),
                row,
                score,
            });
        }
        geometries.push(FileGeometry::new(
            &file.name,
            &file.timestamps,
            &file.windows,
        )?);
    }
    let detector: Vec<(&FileGeometry, &[f64])> = geometries
        .iter()
        .zip(files)
        .map(|(g, f)| (g, f.scores.as_slice()))
        .collect();
    let null_scores: Vec<Vec<f64>> = geometries
        .iter()
        .map(|g| vec![NULL_DETECTOR_SCORE; g.rows])
        .collect();
    let null: Vec<(&FileGeometry, &[f64])> = geometries
        .iter()
        .zip(&null_scores)
        .map(|(g, s)| (g, s.as_slice()))
        .collect();
    let windows: usize = geometries.iter().map(|g| g.windows.len()).sum();

    let profiles = profiles
        .iter()
        .map(|profile| {
            let (threshold, files, raw, counts) = optimize_and_score(&detector, profile);
            let (_, _, null_raw, _) = optimize_and_score(&null, profile);
            let perfect_raw = profile.tp * windows as f64;
            ProfileScore {
                profile: *profile,
                threshold,
                raw,
                null_raw,
                perfect_raw,
                normalized: 100.0 * (raw - null_raw) / (perfect_raw - null_raw),
                counts,
                files,
            }
        })
        .collect();
    Ok(CorpusScore {
        files: files.len(),
        rows: geometries.iter().map(|g| g.rows).sum(),
        windows,
        scorable_windows: geometries.iter().map(|g| g.scorable_windows()).sum(),
        profiles,
    })
}

/// Optimize the threshold over `files`, then score each file at it (step 6).
fn optimize_and_score(
    files: &[(&FileGeometry, &[f64])],
    profile: &Profile,
) -> (f64, Vec<FileScore>, f64, Counts) {
    let threshold = best_threshold(&sweep(files, profile)).threshold;
    let scores: Vec<FileScore> = files
        .iter()
        .map(|(g, s)| g.score_at(s, threshold, profile))
        .collect();
    let raw = scores.iter().map(|f| f.score).sum();
    let mut counts = Counts::default();
    for f in &scores {
        counts += f.counts;
    }
    (threshold, scores, raw, counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, NaiveDate};
    use proptest::prelude::*;

    const STD: Profile = Profile::STANDARD;
    const LFP: Profile = Profile::LOW_FP;
    const LFN: Profile = Profile::LOW_FN;

    /// Row `i`'s timestamp: every 5 minutes from 2020-01-01 00:00:00, as in
    /// the README's examples.
    fn ts(i: usize) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2020, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            + Duration::minutes(5 * i as i64)
    }

    fn file(
        name: &str,
        n: usize,
        windows: &[(usize, usize)],
        scores: &[(usize, f64)],
    ) -> ScoredFile {
        let mut s = vec![0.0; n];
        for &(i, v) in scores {
            s[i] = v;
        }
        ScoredFile {
            name: name.into(),
            timestamps: (0..n).map(ts).collect(),
            scores: s,
            windows: windows
                .iter()
                .map(|&(a, b)| Window {
                    start: ts(a),
                    end: ts(b),
                })
                .collect(),
        }
    }

    fn geometry(f: &ScoredFile) -> FileGeometry {
        FileGeometry::new(&f.name, &f.timestamps, &f.windows).unwrap()
    }

    /// The README's common setup: 1000 rows, one window on rows 400..=499.
    fn example_file(scores: &[(usize, f64)]) -> ScoredFile {
        file("A.csv", 1000, &[(400, 499)], scores)
    }

    /// Bit-exact comparison: every worked example of the appendix is
    /// reproduced exactly (NAB's arithmetic is plain `f64`).
    fn assert_exact(got: f64, want: f64) {
        assert_eq!(got.to_bits(), want.to_bits(), "got {got:?}, want {want:?}");
    }

    /// For sums whose order NAB leaves open (rows tied at one score).
    fn assert_close(got: f64, want: f64) {
        assert!(
            (got - want).abs() <= 1e-12,
            "got {got:?}, want {want:?} (diff {:e})",
            got - want
        );
    }

    #[test]
    fn example_setup_window_is_rows_400_to_499() {
        let f = example_file(&[]);
        assert_eq!(
            f.windows[0],
            Window {
                start: NaiveDate::from_ymd_opt(2020, 1, 2)
                    .unwrap()
                    .and_hms_opt(9, 20, 0)
                    .unwrap(),
                end: NaiveDate::from_ymd_opt(2020, 1, 2)
                    .unwrap()
                    .and_hms_opt(17, 35, 0)
                    .unwrap(),
            }
        );
        let g = geometry(&f);
        assert_eq!(g.windows, vec![WindowSpan { a: 400, b: 499 }]);
        assert_eq!(g.windows[0].width(), 100);
        assert_eq!(g.probation, 150);
    }

    #[test]
    fn probationary_period_matches_nab() {
        for (n, p) in [
            (0, 0),
            (6, 0),
            (7, 1),
            (100, 15),
            (500, 75),
            (1000, 150),
            (4999, 749),
            (5000, 750),
            (5001, 750),
            (22695, 750),
        ] {
            assert_eq!(probationary_period(n), p, "n = {n}");
        }
    }

    #[test]
    fn scaled_sigmoid_values() {
        assert_eq!(scaled_sigmoid(-1.0), 0.9866142981514305);
        assert_eq!(scaled_sigmoid(-0.5), 0.8482836399575131);
        assert_eq!(scaled_sigmoid(0.0), 0.0);
        assert_eq!(scaled_sigmoid(1.0), -0.9866142981514303);
        // y = 3 uses the formula; only y > 3 is capped.
        assert_eq!(scaled_sigmoid(3.0), -0.9999993881955461);
        assert_eq!(scaled_sigmoid(3.0 + 1e-15), -1.0);
    }

    /// Example 1: a single detection at threshold 1.0, all three profiles.
    #[test]
    fn example_1_single_detection() {
        let cases: [(Option<usize>, [f64; 3]); 10] = [
            (None, [-1.0, -1.0, -2.0]),
            (Some(400), [1.0, 1.0, 1.0]),
            (Some(450), [0.8597925669097837; 3]),
            (Some(499), [0.025333905068325228; 3]),
            (
                Some(500),
                [-1.0027771874746165, -1.005554374949233, -2.0027771874746163],
            ),
            (
                Some(520),
                [-1.0534173963918358, -1.106834792783672, -2.053417396391836],
            ),
            (Some(900), [-1.11, -1.22, -2.11]),
            (Some(200), [-1.11, -1.22, -2.11]),
            (Some(149), [-1.0, -1.0, -2.0]),
            (Some(150), [-1.11, -1.22, -2.11]),
        ];
        for (row, want) in cases {
            let f = example_file(&row.map(|r| vec![(r, 1.0)]).unwrap_or_default());
            let g = geometry(&f);
            for (profile, want) in [STD, LFP, LFN].iter().zip(want) {
                let got = g.score_at(&f.scores, 1.0, profile).score;
                assert_exact(got, want);
                // The sweep records the same value at threshold 1.0 (or
                // only 1.1 when nothing is detected).
                let sweep = sweep(&[(&g, &f.scores)], profile);
                let at_one = sweep.iter().find(|p| p.threshold == 1.0);
                match (row, at_one) {
                    (Some(r), Some(p)) if r >= 150 => assert_exact(p.score, want),
                    (Some(r), None) if r < 150 => {}
                    (None, None) => {}
                    other => panic!("unexpected sweep for {other:?}"),
                }
            }
        }
    }

    #[test]
    fn example_1_row_values() {
        let g = geometry(&example_file(&[]));
        for (row, want) in [
            (400, 1.0),
            (401, 0.9993092817905663),
            (450, 0.8597925669097837),
            (498, 0.05063617570866803),
            (499, 0.025333905068325228),
            (500, -0.002777187474616506),
            (501, -0.005550836740259524),
            (599, -0.1085996295196295),
            (796, -0.10999993270151008),
            (797, -0.11),
            (200, -0.11),
        ] {
            assert_exact(g.row_value(row, &STD), want);
        }
        // The left edge earns exactly A_TP, inside values are positive and
        // decrease through the window.
        assert_eq!(g.row_value(400, &STD), 1.0);
        for i in 400..499 {
            assert!(g.row_value(i, &STD) > g.row_value(i + 1, &STD));
            assert!(g.row_value(i + 1, &STD) > 0.0);
        }
    }

    /// Example 2: the recorded (threshold, score) pairs of the sweep.
    #[test]
    fn example_2_threshold_sweep() {
        let f = example_file(&[(900, 0.9), (450, 0.8), (400, 0.7), (100, 0.95)]);
        let g = geometry(&f);
        let cases: [(Profile, [f64; 5], (f64, f64)); 3] = [
            (
                STD,
                [-1.0, -1.11, 0.7497925669097837, 0.89, -78.53542069422245],
                (0.7, 0.89),
            ),
            (
                LFP,
                [-1.0, -1.22, 0.6397925669097837, 0.78, -158.0708413884449],
                (0.7, 0.78),
            ),
            (
                LFN,
                [-2.0, -2.11, 0.7497925669097837, 0.89, -78.53542069422245],
                (0.7, 0.89),
            ),
        ];
        for (profile, scores, best) in cases {
            let got = sweep(&[(&g, &f.scores)], &profile);
            let thresholds: Vec<f64> = got.iter().map(|p| p.threshold).collect();
            // 0.95 lies in the probationary period: not a candidate.
            assert_eq!(
                thresholds,
                vec![1.1, 0.9, 0.8, 0.7, 0.0],
                "{}",
                profile.name
            );
            for (p, want) in got.iter().zip(scores) {
                if p.threshold == 0.0 {
                    // Sum over ~850 tied rows: order left open by NAB.
                    assert_close(p.score, want);
                } else {
                    assert_exact(p.score, want);
                }
            }
            let b = best_threshold(&got);
            assert_eq!(b.threshold, best.0, "{}", profile.name);
            assert_exact(b.score, best.1);
        }
    }

    #[test]
    fn example_2_ties_keep_the_highest_threshold() {
        let f = example_file(&[(400, 0.8), (401, 0.6)]);
        let g = geometry(&f);
        let got = sweep(&[(&g, &f.scores)], &STD);
        let want = [
            (1.1, -1.0),
            (0.8, 1.0),
            (0.6, 1.0),
            (0.0, -78.53542069422245),
        ];
        assert_eq!(got.len(), want.len());
        for (p, (t, s)) in got.iter().zip(want) {
            assert_eq!(p.threshold, t);
            if t == 0.0 {
                assert_close(p.score, s);
            } else {
                assert_exact(p.score, s);
            }
        }
        assert_eq!(got[1].score, got[2].score, "an exact tie");
        assert_eq!(best_threshold(&got).threshold, 0.8);
    }

    /// Example 3: two files, optimization over both, normalization.
    #[test]
    fn example_3_two_file_corpus() {
        let a = example_file(&[(900, 0.9), (450, 0.8), (400, 0.7)]);
        let b = file("B.csv", 500, &[], &[(300, 0.75)]);
        assert_eq!(geometry(&b).probation, 75);
        let corpus = score_files(&[a, b]).unwrap();
        assert_eq!(corpus.files, 2);
        assert_eq!(corpus.rows, 1500);
        assert_eq!(corpus.windows, 1);
        assert_eq!(corpus.scorable_windows, 1);
        let cases: [(Profile, f64, f64, f64, f64, f64, f64); 3] = [
            // profile, threshold, A, B, raw, null, final
            (STD, 0.7, 0.89, -0.11, 0.78, -1.0, 89.0),
            (
                LFP,
                0.8,
                0.6397925669097837,
                0.0,
                0.6397925669097837,
                -1.0,
                81.98962834548918,
            ),
            (LFN, 0.7, 0.89, -0.11, 0.78, -2.0, 92.66666666666667),
        ];
        for (profile, threshold, fa, fb, raw, null, fin) in cases {
            let p = corpus.profile(profile.name).unwrap();
            assert_eq!(p.threshold, threshold, "{}", profile.name);
            assert_exact(p.files[0].score, fa);
            assert_exact(p.files[1].score, fb);
            assert_exact(p.raw, raw);
            assert_eq!(p.null_raw, null);
            assert_eq!(p.perfect_raw, 1.0);
            assert_exact(p.normalized, fin);
        }
        let std = corpus.profile("standard").unwrap();
        // Counts at the standard threshold 0.7: rows 400 and 450 hit the
        // window, rows 900 (A) and 300 (B) are false positives.
        assert_eq!(std.counts.windows_hit, 1);
        assert_eq!(std.counts.windows_missed, 0);
        assert_eq!(std.counts.tp_rows, 2);
        assert_eq!(std.counts.fp_rows, 2);
        assert_eq!(std.counts.fn_rows, 98);
        assert_eq!(std.counts.tn_rows, (850 - 100 - 1) + (425 - 1));
    }

    /// Example 4: preceding windows, windows in or across the probation.
    #[test]
    fn example_4_preceding_window_and_probation() {
        let g = geometry(&file("A.csv", 1000, &[(300, 349), (600, 699)], &[]));
        for (row, want) in [
            (350, -0.005607380251809202),
            (360, -0.055977392770141965),
            (500, -0.11),
            (599, -0.11),
            (700, -0.002777187474616506),
            (710, -0.029793183036839352),
        ] {
            assert_exact(g.row_value(row, &STD), want);
        }

        let early = file("A.csv", 1000, &[(50, 99)], &[]);
        let ge = geometry(&early);
        assert_eq!(ge.scorable_windows(), 0);
        assert_eq!(ge.score_at(&early.scores, 1.0, &STD).score, 0.0);
        assert_exact(ge.row_value(150, &STD), -0.10879790381049467);

        let straddling = file("A.csv", 1000, &[(140, 189)], &[(150, 1.0)]);
        let gs = geometry(&straddling);
        assert_eq!(gs.scorable_windows(), 1);
        assert_exact(
            gs.score_at(&straddling.scores, 1.0, &STD).score,
            0.9771068409226045,
        );
        let corpus = score_files(&[straddling]).unwrap();
        let p = corpus.profile("standard").unwrap();
        assert_eq!(p.threshold, 1.0);
        assert_exact(p.raw, 0.9771068409226045);
    }

    #[test]
    fn window_in_probation_is_perfect_but_never_scorable() {
        // NAB's perfect count includes every listed window, so a detector
        // cannot reach 100 when a window lies in the probationary period.
        let f = file("A.csv", 1000, &[(50, 99), (400, 499)], &[(400, 1.0)]);
        let c = score_files(&[f]).unwrap();
        let p = c.profile("standard").unwrap();
        assert_eq!(c.windows, 2);
        assert_eq!(c.scorable_windows, 1);
        assert_eq!(p.perfect_raw, 2.0);
        assert_eq!(p.null_raw, -1.0);
        assert_eq!(p.raw, 1.0);
        assert_close(p.normalized, 100.0 * 2.0 / 3.0);
    }

    #[test]
    fn only_the_best_detection_of_a_window_counts() {
        let f = example_file(&[(410, 1.0), (420, 1.0), (499, 1.0)]);
        let g = geometry(&f);
        let s = g.score_at(&f.scores, 1.0, &STD);
        assert_eq!(s.score, g.row_value(410, &STD));
        assert_eq!(s.counts.tp_rows, 3);
        assert_eq!(s.counts.windows_hit, 1);
    }

    #[test]
    fn files_without_windows_pay_a_fp_per_detection() {
        let f = file(
            "B.csv",
            200,
            &[],
            &[(50, 0.9), (100, 0.9), (150, 0.9), (10, 0.9)],
        );
        let g = geometry(&f);
        assert_eq!(g.probation, 30);
        // Row 10 is in probation; three detections at -A_FP each.
        assert_close(g.score_at(&f.scores, 0.9, &LFP).score, -0.66);
        assert_eq!(g.score_at(&f.scores, 0.95, &LFP).score, 0.0);
    }

    #[test]
    fn one_row_window_gives_full_penalty_after_it() {
        // NAB divides by zero here; we treat the distance as infinite.
        let g = geometry(&file("A.csv", 1000, &[(400, 400)], &[]));
        assert_eq!(g.windows[0].width(), 1);
        assert_eq!(g.row_value(400, &STD), 1.0);
        assert_eq!(g.row_value(401, &STD), -0.11);
    }

    #[test]
    fn duplicate_timestamps_use_first_row_and_are_harmless_elsewhere() {
        let mut f = example_file(&[]);
        f.timestamps[200] = f.timestamps[199];
        f.timestamps[410] = f.timestamps[409];
        let g = geometry(&f);
        assert_eq!(g.windows, vec![WindowSpan { a: 400, b: 499 }]);
        // A window starting at a repeated timestamp starts at its first row.
        f.windows[0].start = f.timestamps[199];
        f.windows[0].end = f.timestamps[250];
        let g = geometry(&f);
        assert_eq!(g.windows, vec![WindowSpan { a: 199, b: 250 }]);
    }

    #[test]
    fn bad_windows_are_errors_naming_the_file() {
        let base = example_file(&[]);
        let mut missing_start = base.clone();
        missing_start.windows[0].start = ts(400) + Duration::seconds(1);
        let mut missing_end = base.clone();
        missing_end.windows[0].end = ts(5000);
        let mut reversed = base.clone();
        reversed.windows[0] = Window {
            start: ts(499),
            end: ts(400),
        };
        let overlapping = file("A.csv", 1000, &[(400, 499), (450, 550)], &[]);
        let unordered = file("A.csv", 1000, &[(600, 650), (400, 499)], &[]);
        for (f, words) in [
            (missing_start, "start timestamp"),
            (missing_end, "end timestamp"),
            (reversed, "before it starts"),
            (overlapping, "previous window"),
            (unordered, "previous window"),
        ] {
            let err = score_files(&[f]).unwrap_err();
            assert!(matches!(err, ScoreError::Window { .. }));
            let msg = err.to_string();
            assert!(msg.starts_with("A.csv: window ["), "{msg}");
            assert!(msg.contains(words), "{msg}");
        }
    }

    #[test]
    fn non_finite_scores_and_length_mismatch_are_errors() {
        let mut f = example_file(&[]);
        f.scores[7] = f64::NAN;
        assert_eq!(
            score_files(&[f.clone()]).unwrap_err().to_string(),
            "A.csv: row 7: anomaly score NaN is not finite"
        );
        f.scores.pop();
        assert!(matches!(
            score_files(&[f]).unwrap_err(),
            ScoreError::LengthMismatch {
                timestamps: 1000,
                scores: 999,
                ..
            }
        ));
    }

    #[test]
    fn corpus_without_windows_has_no_normalized_score() {
        let f = file("B.csv", 300, &[], &[(200, 0.9)]);
        let c = score_files(&[f]).unwrap();
        for p in &c.profiles {
            assert_eq!(p.threshold, NO_DETECTION_THRESHOLD);
            assert_eq!((p.raw, p.null_raw, p.perfect_raw), (0.0, 0.0, 0.0));
            assert!(p.normalized.is_nan());
        }
        assert!(c
            .to_string()
            .ends_with("NAB standard=NaN low_fp=NaN low_fn=NaN\n"));
    }

    #[test]
    fn nothing_detected_scores_minus_fn_per_scorable_window() {
        let f = file("A.csv", 1000, &[(50, 99), (300, 349), (600, 699)], &[]);
        let g = geometry(&f);
        for p in Profile::ALL {
            let s = g.score_at(&f.scores, NO_DETECTION_THRESHOLD, &p);
            assert_eq!(s.score, -2.0 * p.fn_);
            assert_eq!(s.counts.windows_missed, 2);
        }
    }

    /// Files with random windows after the probation and random scores.
    fn arb_corpus() -> impl Strategy<Value = Vec<ScoredFile>> {
        let one = (
            200usize..600,
            prop::collection::vec((0usize..1000, 5usize..40), 0..4),
            any::<u64>(),
        )
            .prop_map(|(n, raw_windows, seed)| {
                let mut windows = Vec::new();
                let mut next_free = probationary_period(n);
                for (offset, width) in raw_windows {
                    let a = next_free + offset % 50;
                    let b = a + width - 1;
                    if b >= n {
                        break;
                    }
                    windows.push((a, b));
                    next_free = b + 1;
                }
                // A few distinct score levels so ties happen.
                let mut x = seed | 1;
                let scores: Vec<(usize, f64)> = (0..n)
                    .map(|i| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (i, (x % 11) as f64 / 10.0)
                    })
                    .collect();
                file("f.csv", n, &windows, &scores)
            });
        prop::collection::vec(one, 1..4)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Each recorded sweep pair equals scoring with that threshold.
        #[test]
        fn sweep_agrees_with_direct_scoring(files in arb_corpus()) {
            let geoms: Vec<FileGeometry> = files.iter().map(geometry).collect();
            let input: Vec<(&FileGeometry, &[f64])> =
                geoms.iter().zip(&files).map(|(g, f)| (g, f.scores.as_slice())).collect();
            for profile in Profile::ALL {
                let pairs = sweep(&input, &profile);
                prop_assert_eq!(pairs[0].threshold, NO_DETECTION_THRESHOLD);
                for w in pairs.windows(2) {
                    prop_assert!(w[0].threshold > w[1].threshold);
                }
                for p in &pairs {
                    let direct: f64 = input.iter().map(|(g, s)| g.score_at(s, p.threshold, &profile).score).sum();
                    prop_assert!((direct - p.score).abs() < 1e-9, "{:?} vs {}", p, direct);
                }
                let best = best_threshold(&pairs);
                prop_assert!(pairs.iter().all(|p| p.score <= best.score));
            }
        }

        /// A detector firing only at each window's left edge scores 100. A
        /// constant detector has two choices of threshold, never firing or
        /// firing on every row; the sweep must pick the better of the two
        /// (with wide windows, firing everywhere can beat the null detector).
        #[test]
        fn perfect_scores_100_and_constant_scores_0(files in arb_corpus()) {
            prop_assume!(files.iter().any(|f| !f.windows.is_empty()));
            let mut perfect = files.clone();
            let mut constant = files.clone();
            for (p, c) in perfect.iter_mut().zip(&mut constant) {
                let g = geometry(p);
                p.scores.iter_mut().for_each(|s| *s = 0.0);
                for w in &g.windows {
                    p.scores[w.a as usize] = 1.0;
                }
                c.scores.iter_mut().for_each(|s| *s = 0.3);
            }
            let ps = score_files(&perfect).unwrap();
            let cs = score_files(&constant).unwrap();
            for ((p, c), profile) in ps.profiles.iter().zip(&cs.profiles).zip(Profile::ALL) {
                prop_assert!((p.normalized - 100.0).abs() < 1e-9, "{}", p.normalized);
                let fire_everywhere: f64 = constant
                    .iter()
                    .map(|f| geometry(f).score_at(&f.scores, 0.3, &profile).score)
                    .sum();
                if fire_everywhere > c.null_raw + 1e-9 {
                    prop_assert_eq!(c.threshold, 0.3);
                    prop_assert!((c.raw - fire_everywhere).abs() < 1e-9);
                    prop_assert!(c.normalized > 0.0);
                } else {
                    prop_assert!((c.raw - c.null_raw).abs() < 1e-9);
                    prop_assert!(c.normalized.abs() < 1e-9);
                }
            }
        }
    }
}
