//! What `nab` and `nab-score` return, and how it prints: one line per
//! profile (threshold, raw and normalized score, windows hit and missed,
//! false-positive rows), ending with `NAB standard=S low_fp=L low_fn=F`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::args::Mode;
use super::scorer::CorpusScore;

/// The outcome of [`super::run`]: the run's numbers and the corpus score.
#[derive(Clone, Debug)]
pub struct NabReport {
    pub detector: String,
    pub preset: String,
    pub mode: Mode,
    /// `<out>/<detector>`, where the results files were written.
    pub results_dir: PathBuf,
    /// Rows run through models, over all files.
    pub rows: u64,
    /// Wall-clock time of the model runs (reading, stepping and writing).
    pub elapsed: Duration,
    /// Label entries without a data file, and similar non-fatal notes.
    pub warnings: Vec<String>,
    pub score: CorpusScore,
}

impl NabReport {
    /// Rows per second over the whole run (all threads together).
    pub fn rows_per_second(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for NabReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        writeln!(
            f,
            "{} (preset {}, {}): {} files, {} rows in {:.1} s = {:.0} rows/s; results in {}",
            self.detector,
            self.preset,
            self.mode,
            self.score.files,
            self.rows,
            self.elapsed.as_secs_f64(),
            self.rows_per_second(),
            self.results_dir.display()
        )?;
        write_scores(f, &self.score)
    }
}

/// The outcome of [`super::score_results_dir`].
#[derive(Clone, Debug)]
pub struct ScoreReport {
    pub detector: String,
    /// The directory whose results files were scored.
    pub results_dir: PathBuf,
    pub warnings: Vec<String>,
    pub score: CorpusScore,
}

impl fmt::Display for ScoreReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        writeln!(
            f,
            "{}: {} files, {} rows in {}",
            self.detector,
            self.score.files,
            self.score.rows,
            self.results_dir.display()
        )?;
        write_scores(f, &self.score)
    }
}

impl fmt::Display for CorpusScore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_scores(f, self)
    }
}

/// The per-profile table and the final `NAB ...` line.
fn write_scores(f: &mut fmt::Formatter<'_>, score: &CorpusScore) -> fmt::Result {
    writeln!(
        f,
        "{} windows ({} scorable); TP/FN count windows, FP counts detected rows outside windows",
        score.windows, score.scorable_windows
    )?;
    writeln!(
        f,
        "{:<20} {:>20} {:>12} {:>9} {:>5} {:>5} {:>6}",
        "profile", "threshold", "raw", "score", "TP", "FN", "FP"
    )?;
    for p in &score.profiles {
        writeln!(
            f,
            "{:<20} {:>20} {:>12.6} {:>9.4} {:>5} {:>5} {:>6}",
            p.profile.name,
            p.threshold,
            p.raw,
            p.normalized,
            p.counts.windows_hit,
            p.counts.windows_missed,
            p.counts.fp_rows
        )?;
    }
    write!(f, "NAB")?;
    for p in &score.profiles {
        write!(f, " {}={:.2}", p.profile.short, p.normalized)?;
    }
    writeln!(f)
}

impl CorpusScore {
    /// Per-file table for one profile: windows hit/missed, false-positive
    /// rows, raw score, and the normalized points the file loses against a
    /// perfect detector (the per-file parts add up to `100 - score`).
    pub fn per_file_table(&self, profile: &str) -> String {
        let Some(p) = self.profile(profile) else {
            return format!("no profile `{profile}`\n");
        };
        let span = p.perfect_raw - p.null_raw;
        let mut out = format!(
            "{:<55} {:>4} {:>4} {:>5} {:>9} {:>7}\n",
            "file", "hit", "miss", "FP", "raw", "lost"
        );
        for file in &p.files {
            let windows = (file.counts.windows_hit + file.counts.windows_missed) as f64;
            let lost = 100.0 * (windows * p.profile.tp - file.score) / span;
            out.push_str(&format!(
                "{:<55} {:>4} {:>4} {:>5} {:>9.4} {:>7.2}\n",
                file.name,
                file.counts.windows_hit,
                file.counts.windows_missed,
                file.counts.fp_rows,
                file.score,
                lost
            ));
        }
        out
    }
}
