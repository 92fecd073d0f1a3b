//! When checkpoints are written and read: loading every stream at start,
//! writing changed streams every `--checkpoint-interval-secs`, on
//! `POST /checkpoint` and at shutdown — always on blocking threads, never
//! on the request path. The file format is `store::checkpoint`'s business.
//!
//! After checkpoints are written, write-ahead-log segments that every
//! stream's checkpoint covers are deleted ([`trim_wal`]); at start, the log
//! is replayed over the loaded checkpoints (`store::recovery`) before the
//! server reports ready.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use crate::server::config::Durability;
use crate::server::error::ApiError;
use crate::server::{AppState, ServerError};
use crate::store::data_dir::broken_stream;
use crate::store::recovery;
use crate::store::wal::WalOptions;
use crate::store::{CheckpointError, Evicted, Saved, Slot, StorageFault, Stream};

/// What one round of checkpointing did.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Checkpoint files written.
    pub written: usize,
    /// Bytes written.
    pub bytes: usize,
    /// Streams whose checkpoint could not be written, with the error.
    pub failed: Vec<(String, String)>,
    /// The storage fault of the first failure that was one.
    #[serde(skip)]
    pub fault: Option<StorageFault>,
}

/// Write the checkpoint of every stream that changed since its last one.
/// Blocking: call from a blocking thread.
pub fn save_changed(state: &AppState) -> Summary {
    let mut summary = Summary::default();
    for stream in state.registry.snapshot() {
        if !stream.is_dirty() {
            continue;
        }
        let start = Instant::now();
        match state.data_dir.save(&stream) {
            Ok(Saved::Written(n)) => {
                state.metrics.checkpoint_written(start.elapsed());
                summary.written += 1;
                summary.bytes += n;
            }
            Ok(Saved::Nothing) => {}
            Err(e) => {
                state.metrics.checkpoint_failed();
                if let CheckpointError::Io { source, .. } = &e {
                    let fault = StorageFault::of(source);
                    state.metrics.storage_error("checkpoint", fault);
                    summary.fault = summary.fault.or(Some(fault));
                }
                tracing::error!(stream = %stream.id(), error = %e, "checkpoint write failed");
                summary
                    .failed
                    .push((stream.id().to_string(), e.to_string()));
            }
        }
    }
    trim_wal(state);
    if summary.written > 0 || !summary.failed.is_empty() {
        tracing::debug!(
            written = summary.written,
            bytes = summary.bytes,
            failed = summary.failed.len(),
            "checkpoints written"
        );
    }
    summary
}

/// The oldest log record some stream still needs: one past its
/// checkpoint's LSN, for every stream whose state (or a logged change
/// waiting to be applied) is ahead of its checkpoint. Blocking (locks each
/// stream briefly).
pub fn oldest_needed_lsn(state: &AppState) -> Option<u64> {
    let wal = state.wal.get()?;
    // Read first: a record appended after this has an LSN at least this
    // large, whichever stream it is for.
    let mut needed = wal.next_lsn();
    for stream in state.registry.snapshot() {
        let checkpoint = stream.checkpoint_lsn();
        if let Slot::Ready(st) = &*stream.lock() {
            if st.wal_lsn > checkpoint || stream.unapplied_lsn() > checkpoint {
                needed = needed.min(checkpoint + 1);
            }
        }
    }
    Some(needed)
}

/// Delete write-ahead-log segments that every checkpoint covers. Blocking.
pub fn trim_wal(state: &AppState) {
    let (Some(wal), Some(needed)) = (state.wal.get(), oldest_needed_lsn(state)) else {
        return;
    };
    match wal.delete_segments_before(needed) {
        Ok(0) => {}
        Ok(n) => tracing::debug!(deleted = n, needed, "write-ahead-log segments deleted"),
        Err(e) => tracing::error!(error = %e, "write-ahead-log segments not deleted"),
    }
}

/// Register every checkpoint of the data directory in the registry, then
/// replay the write-ahead log over them and open it for appends.
/// Checkpoints are decoded while the resident set has room (so on a small
/// server an unreadable file is found at start); the rest are registered
/// from their file names as evicted and decoded on first use. Unreadable
/// checkpoints are logged by name, counted, moved aside, and their streams
/// answer 503 until deleted or recreated. Blocking.
pub fn load(state: &AppState) -> Result<(), ServerError> {
    let start = Instant::now();
    let scan = state.data_dir.scan()?;
    for (path, why) in &scan.ignored {
        tracing::warn!(file = %path.display(), reason = %why, "ignored file in data dir");
    }
    let residency = state.registry.residency();
    let (mut loaded, mut lazy, mut unreadable) = (0usize, 0usize, 0usize);
    for id in scan.ids {
        let entry = if !residency.has_room() {
            lazy += 1;
            Stream::new(id.clone(), Slot::Evicted(Evicted::default()), true)
        } else {
            match state.data_dir.load_one(&id) {
                Ok(st) => {
                    loaded += 1;
                    Stream::new(id.clone(), Slot::Ready(Box::new(st)), true)
                }
                Err(failure) => {
                    unreadable += 1;
                    tracing::error!(
                        stream = %failure.id,
                        file = %failure.file.display(),
                        moved_to = %failure.moved_to.display(),
                        error = %failure.error,
                        "checkpoint unreadable; moved aside, stream answers 503 until deleted or recreated"
                    );
                    state.metrics.checkpoint_unreadable(&failure.id);
                    broken_stream(&failure)
                }
            }
        };
        match state.registry.get_or_create(&id, || entry) {
            Ok((stream, _)) => residency.touch(&stream, &stream.lock()),
            Err(e) => {
                tracing::error!(stream = %id, error = %e, "checkpoint not loaded: stream limit reached")
            }
        }
    }
    tracing::info!(
        loaded,
        registered_evicted = lazy,
        unreadable,
        took_ms = start.elapsed().as_millis() as u64,
        dir = %state.data_dir.root().display(),
        "checkpoints loaded"
    );

    let options = WalOptions {
        dir: state.data_dir.root().join("wal"),
        segment_bytes: state.args.wal_segment_bytes,
        group_delay: match state.args.durability {
            Durability::Group => Duration::from_millis(state.args.group_commit_ms),
            Durability::Fsync | Durability::None => Duration::ZERO,
        },
    };
    let start = Instant::now();
    let recovered = recovery::recover(
        &state.registry,
        &state.data_dir,
        options,
        Arc::new(state.metrics.clone()),
    )?;
    for note in recovered.log.notes.iter().chain(&recovered.replay.notes) {
        tracing::warn!(note = %note, "write-ahead log");
    }
    state
        .metrics
        .wal_recovered(recovered.log.records, recovered.log.torn);
    tracing::info!(
        records = recovered.log.records,
        applied = recovered.replay.applied,
        covered = recovered.replay.covered,
        skipped = recovered.replay.skipped,
        samples = recovered.replay.samples,
        torn = recovered.log.torn,
        next_lsn = recovered.log.next_lsn,
        took_ms = start.elapsed().as_millis() as u64,
        "write-ahead log replayed"
    );
    let _ = state.wal.set(recovered.wal);
    Ok(())
}

/// Write changed checkpoints every `interval` until shutdown.
pub async fn periodic(state: Arc<AppState>, interval: Duration) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if !state.is_ready() {
            continue;
        }
        let worker = Arc::clone(&state);
        if let Err(e) = tokio::task::spawn_blocking(move || save_changed(&worker)).await {
            tracing::error!(error = %e, "periodic checkpoint task failed");
        }
    }
}

/// `POST /checkpoint`: write every changed checkpoint now.
pub async fn post(State(state): State<Arc<AppState>>) -> Result<Json<Summary>, ApiError> {
    state.ensure_ready()?;
    let worker = Arc::clone(&state);
    let summary = tokio::task::spawn_blocking(move || save_changed(&worker))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if summary.failed.is_empty() {
        return Ok(Json(summary));
    }
    let message = format!(
        "{} checkpoint(s) could not be written (the previous ones are intact): {}",
        summary.failed.len(),
        summary
            .failed
            .iter()
            .map(|(id, e)| format!("{id}: {e}"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    Err(match summary.fault {
        Some(StorageFault::NoSpace) => ApiError::InsufficientStorage(message),
        Some(StorageFault::ReadOnly) => ApiError::Unavailable {
            code: "storage_unavailable",
            message,
        },
        Some(StorageFault::Io) | None => ApiError::Internal(message),
    })
}
