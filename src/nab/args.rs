//! Command-line arguments of `htm-stream nab` and `htm-stream nab-score`
//! (clap derive structs; `main.rs` flattens them into its subcommands).

use std::path::PathBuf;

/// What a detector may know about a stream besides its samples.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// As NAB runs every detector: the file's min and max (value encoder
    /// range) and the probationary period length are handed to the model.
    #[default]
    Conformant,
    /// Nothing about the stream beyond the samples seen so far.
    Streaming,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Conformant => "conformant",
            Mode::Streaming => "streaming",
        })
    }
}

/// Run a detector over NAB-format data files, write NAB results files and
/// score them.
#[derive(clap::Args, Debug, Clone)]
pub struct NabArgs {
    /// Data directory: `<category>/<file>.csv` files with `timestamp,value`.
    #[arg(long)]
    pub data: PathBuf,
    /// Labels: a directory holding `combined_windows.json`, or that file.
    #[arg(long)]
    pub labels: PathBuf,
    /// Results root: files go to `<out>/<detector>/<category>/<detector>_<file>.csv`.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Detector name used in the results layout.
    #[arg(long, default_value = "htmstream")]
    pub detector: String,
    /// Model parameter preset.
    #[arg(long, default_value = "nab")]
    pub preset: String,
    /// What the model may know about each file in advance.
    #[arg(long, value_enum, default_value_t = Mode::Conformant)]
    pub mode: Mode,
    /// Files run at once (default: available cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Do not show the progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Override a model parameter of the preset, e.g. `--set tm.activation_threshold=12`
    /// (repeatable; values are JSON).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Also print each file's windows hit/missed, false positives and points lost.
    #[arg(long)]
    pub per_file: bool,
}

/// Score existing NAB results files (ours or another detector's).
#[derive(clap::Args, Debug, Clone)]
pub struct NabScoreArgs {
    /// Results root holding `<detector>/<category>/<detector>_<file>.csv`.
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// Labels: a directory holding `combined_windows.json`, or that file.
    #[arg(long)]
    pub labels: PathBuf,
    /// Detector whose results are scored.
    #[arg(long, default_value = "htmstream")]
    pub detector: String,
    /// Also print each file's windows hit/missed, false positives and points lost.
    #[arg(long)]
    pub per_file: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        nab: NabArgs,
    }

    #[test]
    fn defaults_and_modes_parse() {
        let cli = Cli::try_parse_from(["x", "--data", "d", "--labels", "l"]).unwrap();
        assert_eq!(cli.nab.out, PathBuf::from("results"));
        assert_eq!(cli.nab.detector, "htmstream");
        assert_eq!(cli.nab.preset, "nab");
        assert_eq!(cli.nab.mode, Mode::Conformant);
        assert_eq!(cli.nab.jobs, None);
        assert!(!cli.nab.no_progress);
        let cli = Cli::try_parse_from([
            "x",
            "--data",
            "d",
            "--labels",
            "l",
            "--mode",
            "streaming",
            "--jobs",
            "3",
            "--no-progress",
        ])
        .unwrap();
        assert_eq!(cli.nab.mode, Mode::Streaming);
        assert_eq!(cli.nab.jobs, Some(3));
        assert!(cli.nab.no_progress);
        assert!(Cli::try_parse_from(["x", "--data", "d", "--labels", "l", "--mode", "x"]).is_err());
        assert!(Cli::try_parse_from(["x", "--data", "d"]).is_err());
    }
}
