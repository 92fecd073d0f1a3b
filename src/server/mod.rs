//! The service behind `htm-stream serve`: one model per named stream behind
//! HTTP and WebSocket, an anomaly feed, Prometheus metrics and checkpoints.
//!
//! # Layout
//!
//! - [`config`] — `ServeArgs`, every flag and `HTM_*` variable.
//! - [`routes`] — builds the router (the only file that does) and its layers.
//! - [`ingest`], [`ws`], [`streams`], [`feed`], [`health`],
//!   [`checkpointer`] — the handlers, one concern each; [`sample`] is the
//!   wire form of samples and results.
//! - [`ordered`] — how work reaches a stream: limits, FIFO turn, blocking
//!   pool.
//! - [`connections`] — the accept loop: header deadline, connection limit;
//!   [`body_deadline`] — the time allowed for a request body.
//! - [`error`] — `ApiError` and the JSON error body.
//! - [`metrics`] — every metric name; [`auth`] — bearer token;
//!   [`shutdown`] — signals.
//!
//! [`run`] serves on a given listener until a given future resolves (tests
//! call it on `127.0.0.1:0`); [`serve`] binds `--listen` and uses SIGTERM /
//! SIGINT.

pub mod auth;
pub mod between_requests;
pub mod body_deadline;
pub mod checkpointer;
pub mod config;
pub mod connections;
pub mod error;
pub mod feed;
pub mod health;
pub mod ingest;
pub mod metrics;
pub mod ordered;
pub mod routes;
pub mod sample;
pub mod shutdown;
pub mod streams;
pub mod workers;
pub mod ws;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Durability, LogFormat, ServeArgs};
pub use error::ApiError;

use crate::store::{CheckpointError, DataDir, Registry, Residency, ResidencyLimits, Wal, WalError};
use feed::Feed;
use metrics::Metrics;
use workers::Workers;

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A setting is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Binding or serving the socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The data directory could not be opened or read.
    #[error("checkpoint error: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// Metrics could not be registered.
    #[error("metrics error: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The write-ahead log could not be read or opened.
    #[error("write-ahead log error: {0}")]
    Wal(#[from] WalError),
    /// Some checkpoints could not be written at shutdown.
    #[error("{0} checkpoint(s) could not be written at shutdown")]
    FinalCheckpoint(usize),
}

/// State shared by every handler.
#[derive(Debug)]
pub struct AppState {
    /// Settings (limits, defaults, token).
    pub args: ServeArgs,
    /// Every stream by id.
    pub registry: Registry,
    /// Where checkpoints live.
    pub data_dir: DataDir,
    /// Prometheus metrics of this server.
    pub metrics: Metrics,
    /// The anomaly feed's publishing side.
    pub feed: Feed,
    /// Operations on streams in progress, bounded by `--max-inflight`; full
    /// means 503 at once rather than an unbounded queue.
    pub inflight: Arc<Semaphore>,
    /// The threads that run operations on streams' state, one per core.
    pub workers: Workers,
    /// Set once checkpoints are loaded; until then stream endpoints answer 503.
    ready: AtomicBool,
    /// The write-ahead log, set once it is replayed (before `ready`).
    wal: OnceLock<Wal>,
    /// Cancelled when shutdown starts: stops accepting, closes WebSockets,
    /// stops the periodic checkpointer.
    pub shutdown: CancellationToken,
    /// WebSocket sessions and model steps in flight; shutdown waits for
    /// them before the final checkpoint.
    pub tasks: TaskTracker,
}

impl AppState {
    /// Build the shared state from settings.
    pub fn new(args: ServeArgs) -> Result<AppState, ServerError> {
        args.validate().map_err(ServerError::Config)?;
        let metrics = Metrics::new(args.per_stream_metrics)?;
        let limits = ResidencyLimits {
            max_resident: args.max_resident_streams,
            budget_bytes: args.memory_budget_bytes,
        };
        let tasks = TaskTracker::new();
        Ok(AppState {
            registry: Registry::with_residency(
                args.max_streams,
                Residency::new(limits, Arc::new(metrics.clone())),
            ),
            data_dir: DataDir::open(&args.data_dir)?,
            metrics,
            feed: Feed::new(args.feed_capacity, args.max_feed_subscribers),
            inflight: Arc::new(Semaphore::new(args.max_inflight)),
            workers: Workers::start(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
                "htm-worker",
                tasks.clone(),
            )?,
            ready: AtomicBool::new(false),
            wal: OnceLock::new(),
            shutdown: CancellationToken::new(),
            tasks,
            args,
        })
    }

    /// Whether checkpoints are loaded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The write-ahead log; 503 until it is replayed.
    pub fn wal(&self) -> Result<&Wal, ApiError> {
        self.wal.get().ok_or_else(ApiError::not_ready)
    }

    /// Wait until the log record `lsn` is as durable as `--durability`
    /// requires before a change is answered.
    pub async fn acknowledge(&self, lsn: u64) -> Result<(), ApiError> {
        match self.args.durability {
            Durability::None => Ok(()),
            Durability::Fsync | Durability::Group => Ok(self.wal()?.wait_durable(lsn).await?),
        }
    }

    /// 503 unless checkpoints are loaded.
    pub fn ensure_ready(&self) -> Result<(), ApiError> {
        if self.is_ready() {
            Ok(())
        } else {
            Err(ApiError::not_ready())
        }
    }
}

/// Serve on `listener` until `shutdown` resolves, then stop accepting,
/// finish requests in flight, close WebSockets, write every changed
/// checkpoint and return.
pub async fn run(
    args: ServeArgs,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let state = Arc::new(AppState::new(args)?);
    let addr = listener.local_addr()?;

    let token = state.shutdown.clone();
    tokio::spawn(async move {
        shutdown.await;
        token.cancel();
    });

    let loader_state = Arc::clone(&state);
    let loader = tokio::task::spawn_blocking(move || {
        let result = checkpointer::load(&loader_state);
        if result.is_ok() {
            loader_state.ready.store(true, Ordering::Release);
            loader_state.metrics.set_ready();
        }
        result
    });

    let periodic = (state.args.checkpoint_interval_secs > 0).then(|| {
        tokio::spawn(checkpointer::periodic(
            Arc::clone(&state),
            Duration::from_secs(state.args.checkpoint_interval_secs),
        ))
    });

    tracing::info!(%addr, data_dir = %state.args.data_dir.display(), "serving");
    let app = routes::router(Arc::clone(&state));
    connections::serve(Arc::clone(&state), listener, app).await;
    tracing::info!("no longer accepting; finishing WebSockets and steps in flight");
    state.tasks.close();
    state.tasks.wait().await;
    if let Some(p) = periodic {
        let _ = p.await;
    }
    let loaded = loader
        .await
        .map_err(|e| ServerError::Io(std::io::Error::other(e)))?;
    loaded?;

    let worker = Arc::clone(&state);
    let summary = tokio::task::spawn_blocking(move || {
        let summary = checkpointer::save_changed(&worker);
        if let Some(wal) = worker.wal.get() {
            if let Err(e) = wal.sync() {
                tracing::error!(error = %e, "final fsync of the write-ahead log failed");
            }
            // Every checkpoint written: the whole log is covered, so a
            // restart need not replay it (nor decode the streams it names).
            if summary.failed.is_empty() {
                match wal.seal() {
                    Ok(()) => checkpointer::trim_wal(&worker),
                    Err(e) => tracing::error!(error = %e, "write-ahead log not sealed"),
                }
            }
        }
        summary
    })
    .await
    .map_err(|e| ServerError::Io(std::io::Error::other(e)))?;
    tracing::info!(
        written = summary.written,
        failed = summary.failed.len(),
        "final checkpoints written; stopped"
    );
    if summary.failed.is_empty() {
        Ok(())
    } else {
        Err(ServerError::FinalCheckpoint(summary.failed.len()))
    }
}

/// Bind `--listen`, install logging and SIGTERM/SIGINT handling, and
/// [`run`] until a signal arrives.
pub async fn serve(args: ServeArgs) -> Result<(), ServerError> {
    config::init_tracing(args.log_format);
    let listener = TcpListener::bind(args.listen).await?;
    run(args, listener, shutdown::signal()).await
}
