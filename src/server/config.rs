//! `ServeArgs`: every setting of `htm-stream serve`, as command-line flags
//! with an `HTM_*` environment variable each (clap), and the logging setup
//! they select.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, ValueEnum};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// When an answer to a change (samples, put, reset, delete) is sent,
/// relative to its write-ahead-log record reaching the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    /// Answer after an fsync covering the record (concurrent requests share
    /// one): no acknowledged change is lost, even on power loss.
    Fsync,
    /// Answer after the next shared fsync, taken `--group-commit-ms` after
    /// the first waiting record: as safe as `fsync`, fewer fsyncs, longer
    /// answers.
    Group,
    /// Answer once the record is written to the operating system (not
    /// fsynced): survives a killed process, not a power loss or kernel crash.
    None,
}

/// Settings of the service. Defaults are safe for a single machine.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HTM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory of the checkpoint files (created if missing).
    #[arg(long, env = "HTM_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Bearer token required on every endpoint but /healthz and /readyz.
    /// No token: no authentication.
    #[arg(long, env = "HTM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Largest request body or WebSocket message, in bytes.
    #[arg(long, env = "HTM_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,

    /// Most samples in one batch (JSON array, NDJSON body or WebSocket frame).
    #[arg(long, env = "HTM_MAX_BATCH", default_value_t = 10_000)]
    pub max_batch: usize,

    /// Most streams known at once, resident or evicted (so also the most
    /// checkpoint files); creating one more answers 429.
    #[arg(long, env = "HTM_MAX_STREAMS", default_value_t = 10_000)]
    pub max_streams: usize,

    /// Most ingest requests in progress at once over all streams; past it
    /// the server answers 503 at once instead of queueing.
    #[arg(long, env = "HTM_MAX_INFLIGHT", default_value_t = 2_048)]
    pub max_inflight: usize,

    /// Most ingest requests queued for one stream; past it that stream
    /// answers 429, so a burst on one stream cannot starve the others.
    #[arg(long, env = "HTM_MAX_STREAM_QUEUE", default_value_t = 64)]
    pub max_stream_queue: usize,

    /// Answer 404 to samples for unknown streams instead of creating them
    /// (streams are then created with PUT only).
    #[arg(long, env = "HTM_NO_AUTO_CREATE")]
    pub no_auto_create: bool,

    /// Preset of streams created by their first sample.
    #[arg(long, env = "HTM_DEFAULT_PRESET", default_value = "default")]
    pub default_preset: String,

    /// Alert threshold (final score, log-likelihood scale) of streams
    /// created by their first sample.
    #[arg(long, env = "HTM_DEFAULT_THRESHOLD", default_value_t = crate::store::DEFAULT_THRESHOLD)]
    pub default_threshold: f64,

    /// Seconds between checkpoints of changed streams; 0 disables periodic
    /// checkpoints (shutdown and POST /checkpoint still write them).
    #[arg(long, env = "HTM_CHECKPOINT_INTERVAL_SECS", default_value_t = 60)]
    pub checkpoint_interval_secs: u64,

    /// Messages buffered for /feed subscribers; one that falls further
    /// behind loses messages and is told how many.
    #[arg(long, env = "HTM_FEED_CAPACITY", default_value_t = 1024)]
    pub feed_capacity: usize,

    /// Export per-stream sample and anomaly counters (label `stream`;
    /// cardinality bounded by --max-streams).
    #[arg(long, env = "HTM_PER_STREAM_METRICS")]
    pub per_stream_metrics: bool,

    /// When changes are answered relative to their write-ahead-log record
    /// reaching the disk.
    #[arg(long, env = "HTM_DURABILITY", value_enum, default_value_t = Durability::Fsync)]
    pub durability: Durability,

    /// With `--durability group`: milliseconds the shared fsync waits to
    /// gather more records.
    #[arg(long, env = "HTM_GROUP_COMMIT_MS", default_value_t = 2)]
    pub group_commit_ms: u64,

    /// Size at which a write-ahead-log segment is closed and a new one
    /// started (segments covered by checkpoints are deleted).
    #[arg(long, env = "HTM_WAL_SEGMENT_BYTES", default_value_t = 64 << 20)]
    pub wal_segment_bytes: u64,

    /// Log format.
    #[arg(long, env = "HTM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Most streams whose model is kept in memory; past it the least
    /// recently used idle streams are checkpointed and evicted, and
    /// reloaded on their next request. The default equals the default
    /// `--max-streams`, so by default only the memory budget evicts.
    #[arg(long, env = "HTM_MAX_RESIDENT_STREAMS", default_value_t = 10_000)]
    pub max_resident_streams: usize,

    /// Most bytes of models kept in memory (sum of each model's estimate,
    /// as `memory_bytes` in `GET /streams`); past it idle streams are
    /// evicted as with `--max-resident-streams`. The default, 8 GiB, is a
    /// third of a 24 GiB machine, leaving room for allocator overhead,
    /// decoding checkpoints and the page cache.
    #[arg(long, env = "HTM_MEMORY_BUDGET_BYTES", default_value_t = 8 << 30)]
    pub memory_budget_bytes: u64,

    /// Seconds a client has to send a request's headers, counted from the
    /// connection opening or from the previous answer on it; past it the
    /// connection is closed (slow clients, idle keep-alive connections).
    #[arg(long, env = "HTM_HEADER_TIMEOUT_SECS", default_value_t = 30)]
    pub header_timeout_secs: u64,

    /// Seconds a client has to send a whole request body once its headers
    /// arrived; past it the request answers 408 `request_timeout`.
    #[arg(long, env = "HTM_BODY_TIMEOUT_SECS", default_value_t = 30)]
    pub body_timeout_secs: u64,

    /// Most open client connections, WebSocket sessions included; one more
    /// is answered 503 `too_many_connections` and closed. Keep it below the
    /// process's open-file limit (`ulimit -n`) minus room for data files.
    #[arg(long, env = "HTM_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Seconds a WebSocket ingest session may stay without a frame from
    /// its client before the server closes it (code 1000).
    #[arg(long, env = "HTM_WS_IDLE_TIMEOUT_SECS", default_value_t = 300)]
    pub ws_idle_timeout_secs: u64,

    /// Seconds between pings to `/feed` subscribers; one that answers no
    /// ping for two intervals, or cannot take a message within two
    /// intervals, is disconnected.
    #[arg(long, env = "HTM_WS_PING_INTERVAL_SECS", default_value_t = 30)]
    pub ws_ping_interval_secs: u64,

    /// Most `/feed` subscribers at once; one more is answered 503
    /// `too_many_subscribers` before the upgrade.
    #[arg(long, env = "HTM_MAX_FEED_SUBSCRIBERS", default_value_t = 4_096)]
    pub max_feed_subscribers: usize,
}

#[derive(Parser)]
#[command(name = "serve")]
struct ServeCommand {
    #[command(flatten)]
    args: ServeArgs,
}

impl ServeArgs {
    /// Parse settings from an argument list (first item: program name),
    /// falling back to `HTM_*` variables and defaults. Used by tests and by
    /// callers that do not embed `ServeArgs` in their own parser.
    pub fn try_parse_from<I, T>(args: I) -> Result<ServeArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        ServeCommand::try_parse_from(args).map(|c| c.args)
    }

    /// Check values clap cannot check alone.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("--max-body-bytes", self.max_body_bytes),
            ("--max-batch", self.max_batch),
            ("--max-streams", self.max_streams),
            ("--max-inflight", self.max_inflight),
            ("--max-stream-queue", self.max_stream_queue),
            ("--feed-capacity", self.feed_capacity),
            ("--max-resident-streams", self.max_resident_streams),
            ("--max-connections", self.max_connections),
            ("--max-feed-subscribers", self.max_feed_subscribers),
        ];
        if let Some((flag, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{flag} must be at least 1"));
        }
        // A day at most: far beyond any useful timeout, and small enough that
        // `now + timeout` cannot overflow a clock.
        let timeouts = [
            ("--header-timeout-secs", self.header_timeout_secs),
            ("--body-timeout-secs", self.body_timeout_secs),
            ("--ws-idle-timeout-secs", self.ws_idle_timeout_secs),
            ("--ws-ping-interval-secs", self.ws_ping_interval_secs),
        ];
        if let Some((flag, _)) = timeouts.iter().find(|(_, v)| !(1..=86_400).contains(v)) {
            return Err(format!("{flag} must be between 1 and 86400 seconds"));
        }
        if crate::model::ModelParams::preset(&self.default_preset).is_none() {
            return Err(format!(
                "--default-preset {:?} is not one of {}",
                self.default_preset,
                crate::model::ModelParams::PRESETS.join(", ")
            ));
        }
        if !(0.0..=1.0).contains(&self.default_threshold) {
            return Err("--default-threshold must be in [0, 1]".into());
        }
        if self.memory_budget_bytes == 0 {
            return Err("--memory-budget-bytes must be at least 1".into());
        }
        if self.wal_segment_bytes < 1024 {
            return Err("--wal-segment-bytes must be at least 1024".into());
        }
        if self.token.as_deref() == Some("") {
            return Err("--token must not be empty".into());
        }
        Ok(())
    }
}

/// Install the global tracing subscriber (filter from `RUST_LOG`, default
/// `info`). Does nothing if one is already installed.
pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_the_two_script_flags() {
        let a = ServeArgs::try_parse_from(["serve"]).unwrap();
        assert!(a.validate().is_ok());
        let a = ServeArgs::try_parse_from([
            "serve",
            "--listen",
            "127.0.0.1:9999",
            "--data-dir",
            "/tmp/x",
        ])
        .unwrap();
        assert_eq!(a.listen.port(), 9999);
        assert_eq!(a.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn validate_rejects_zero_limits_and_unknown_preset() {
        let mut a = ServeArgs::try_parse_from(["serve", "--max-batch", "0"]).unwrap();
        assert!(a.validate().unwrap_err().contains("--max-batch"));
        a.max_batch = 1;
        a.default_preset = "nope".into();
        assert!(a.validate().unwrap_err().contains("--default-preset"));
    }

    #[test]
    fn validate_bounds_timeouts_and_connection_limits() {
        let a = ServeArgs::try_parse_from(["serve", "--header-timeout-secs", "0"]).unwrap();
        assert!(a.validate().unwrap_err().contains("--header-timeout-secs"));
        let a = ServeArgs::try_parse_from(["serve", "--body-timeout-secs", "86401"]).unwrap();
        assert!(a.validate().unwrap_err().contains("--body-timeout-secs"));
        let a = ServeArgs::try_parse_from(["serve", "--max-connections", "0"]).unwrap();
        assert!(a.validate().unwrap_err().contains("--max-connections"));
        let a = ServeArgs::try_parse_from(["serve", "--ws-ping-interval-secs", "86400"]).unwrap();
        assert!(a.validate().is_ok());
    }
}
