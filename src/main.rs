//! The `htm-stream` command line: thin wrappers over the library.
//!
//! - `serve`  — the HTTP/WebSocket service.
//! - `replay` — run a CSV series through one model; summary, CSVs, plot.
//! - `nab`    — run and score the Numenta Anomaly Benchmark.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use htm_stream::model::ModelParams;
use htm_stream::nab::corpus::read_labels;
use htm_stream::replay::plot::{self, PlotFormat, PlotOptions, PlotPoint, PlotSize};
use htm_stream::replay::run::{
    replay, write_out_row, write_trace_row, RangeMode, ReplayOptions, OUT_HEADER, TRACE_HEADER,
};
use htm_stream::replay::series::{read_series, SeriesFormat};

#[derive(Parser, Debug)]
#[command(
    name = "htm-stream",
    version,
    about = "Streaming anomaly detection with HTM"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the HTTP/WebSocket service.
    Serve(htm_stream::server::ServeArgs),
    /// Run a CSV series through one model and report how it learned.
    Replay(ReplayArgs),
    /// Run the detector over NAB data and score it as NAB does.
    Nab(htm_stream::nab::NabArgs),
    /// Score existing NAB results files (any detector's) against the labels.
    NabScore(htm_stream::nab::NabScoreArgs),
}

#[derive(clap::Args, Debug)]
struct ReplayArgs {
    /// The series: NAB format (`timestamp,value`) or NuPIC's three-header format.
    file: PathBuf,
    /// Parameter preset.
    #[arg(long, default_value = "nab")]
    preset: String,
    /// Seed for the RDSE, the Spatial Pooler and the Temporal Memory (default: the preset's).
    #[arg(long)]
    seed: Option<u32>,
    /// Times the file is replayed through the same model.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    passes: u32,
    /// Freeze learning after this many steps (counted over all passes).
    #[arg(long)]
    no_learn_after: Option<u64>,
    /// Value range: `conformant` takes the file's min/max (and NAB's probationary
    /// period for the likelihood), `streaming` calibrates online.
    #[arg(long, value_enum, default_value_t = RangeMode::Conformant)]
    mode: RangeMode,
    /// CSV dialect.
    #[arg(long, value_enum, default_value_t = SeriesFormat::Auto)]
    format: SeriesFormat,
    /// Write one row per step: timestamp,value,prediction,raw_anomaly,likelihood,log_likelihood,…
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write step,input_bits,sp_active,raw_anomaly,tm_segments,tm_synapses per step.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Print the per-pass figures as JSON after the summary line.
    #[arg(long)]
    json: bool,
    /// Hide the progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Override a model parameter of the preset, e.g. `--set tm.activation_threshold=12`
    /// (repeatable; values are JSON).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Draw the learning plot (value and forecast, anomaly and likelihood,
    /// learning curve) into this file: `.png` or `.svg`.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// NAB `combined_windows.json` (or its directory): shade this file's
    /// anomaly windows in the plot (key: the file's `<category>/<name>.csv`).
    #[arg(long, requires = "plot")]
    labels: Option<PathBuf>,
    /// Plot size in pixels.
    #[arg(long, default_value = "1600x900")]
    plot_size: PlotSize,
    /// Alert threshold on the log-likelihood, drawn in the plot.
    #[arg(long, default_value_t = 0.5)]
    threshold: f64,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(htm_stream::server::serve(args))?;
        }
        Command::Replay(args) => run_replay(args)?,
        Command::Nab(args) => {
            let report = htm_stream::nab::run(&args)?;
            if args.per_file {
                print!("{}", report.score.per_file_table("standard"));
            }
            print!("{report}");
        }
        Command::NabScore(args) => {
            let report = htm_stream::nab::score(&args)?;
            if args.per_file {
                print!("{}", report.score.per_file_table("standard"));
            }
            print!("{report}");
        }
    }
    Ok(())
}

fn create(path: &PathBuf) -> Result<BufWriter<File>> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(BufWriter::new(file))
}

fn run_replay(args: ReplayArgs) -> Result<()> {
    let Some(mut params) = ModelParams::preset(&args.preset) else {
        bail!(
            "unknown preset `{}` (known: {})",
            args.preset,
            ModelParams::PRESETS.join(", ")
        );
    };
    params = params.with_assignments(&args.set)?;
    if let Some(seed) = args.seed {
        params.value_encoder.seed = seed;
        params.sp.seed = seed;
        params.tm.seed = seed;
    }
    // Check the plot's file name and the labels before the (long) replay.
    if let Some(path) = &args.plot {
        PlotFormat::from_path(path)?;
    }
    let windows = match &args.labels {
        Some(path) => plot::windows_for(&read_labels(path)?, &args.file)?,
        None => Vec::new(),
    };
    let samples = read_series(&args.file, args.format)?;
    let mut out = args.out.as_ref().map(create).transpose()?;
    let mut trace = args.trace.as_ref().map(create).transpose()?;
    if let Some(w) = out.as_mut() {
        writeln!(w, "{OUT_HEADER}")?;
    }
    if let Some(w) = trace.as_mut() {
        writeln!(w, "{TRACE_HEADER}")?;
    }
    let total = samples.len() as u64 * u64::from(args.passes);
    let bar = if args.no_progress || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps, {per_sec}, eta {eta}")
            .expect("valid template"),
    );
    let options = ReplayOptions {
        params,
        mode: args.mode,
        passes: args.passes,
        no_learn_after: args.no_learn_after,
    };
    let mut io_error: Option<std::io::Error> = None;
    let mut points: Vec<PlotPoint> = Vec::with_capacity(total as usize);
    let summary = replay(&samples, &options, |record| {
        points.push(PlotPoint::from(record));
        if record.step % 256 == 0 {
            bar.set_position(record.step);
        }
        if io_error.is_some() {
            return;
        }
        let result = out
            .as_mut()
            .map_or(Ok(()), |w| write_out_row(w, record))
            .and_then(|()| {
                trace
                    .as_mut()
                    .map_or(Ok(()), |w| write_trace_row(w, record))
            });
        if let Err(e) = result {
            io_error = Some(e);
        }
    })?;
    bar.finish_and_clear();
    if let Some(e) = io_error {
        return Err(e).context("writing the output CSV");
    }
    for w in [out.as_mut(), trace.as_mut()].into_iter().flatten() {
        w.flush().context("writing the output CSV")?;
    }
    println!("{summary}");
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary.passes)?);
    } else {
        for p in &summary.passes {
            eprintln!(
                "pass {}: mean_raw_anomaly={:.4} rmse_1step={:.4} mae_1step={:.4} bursting={:.4}",
                p.pass + 1,
                p.mean_raw_anomaly,
                p.rmse_1step,
                p.mae_1step,
                p.mean_bursting_fraction
            );
        }
    }
    let curves = plot::LearningCurves::new(&points);
    for s in plot::settling(&points, &curves) {
        eprintln!("{s}");
    }
    if let Some(path) = &args.plot {
        let options = PlotOptions {
            size: args.plot_size,
            threshold: args.threshold,
            no_learn_after: args.no_learn_after,
            windows,
            title: plot_title(&args),
        };
        plot::draw(path, &points, &options)?;
        eprintln!("plot written to {}", path.display());
    }
    Ok(())
}

/// `file — preset P, N passes[, learning frozen after K steps]`.
fn plot_title(args: &ReplayArgs) -> String {
    let name = args.file.file_name().map_or_else(
        || args.file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut title = format!(
        "{name}: HTM learning online (preset {}, {} pass{})",
        args.preset,
        args.passes,
        if args.passes == 1 { "" } else { "es" }
    );
    if let Some(k) = args.no_learn_after {
        title.push_str(&format!(", learning frozen after {k} steps"));
    }
    title
}
