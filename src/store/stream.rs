//! One stream: its state (configuration, model, ordering, statistics), the
//! lock that orders its samples, and the bookkeeping that tells the
//! checkpointer whether it changed.
//!
//! [`StreamState::apply`] is the whole per-sample rule of the service: a
//! batch is checked completely (timestamps not earlier than the stream's
//! last one, in order) before the first sample is stepped, so a rejected
//! batch changes nothing.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use crate::model::{Model, Output};
use crate::store::stream_config::{ConfigError, StreamConfig};
use crate::store::stream_id::StreamId;

/// One validated sample: a finite value at a wall-clock time. Serialized
/// only into the write-ahead log.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When the value was measured (naive local wall-clock time).
    pub timestamp: NaiveDateTime,
    /// The measurement; finite.
    pub value: f64,
    /// Learn from this sample; `None` follows the stream's configuration.
    pub learn: Option<bool>,
}

/// What the stream made of one sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    /// The sample as applied.
    pub timestamp: NaiveDateTime,
    /// The sample's value.
    pub value: f64,
    /// The model's output.
    pub output: Output,
    /// `output.anomaly_score >= threshold`.
    pub is_anomaly: bool,
}

/// A sample that the stream refuses; nothing was changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejected {
    /// The sample is earlier than the last accepted one (or than an earlier
    /// sample of its batch).
    #[error(
        "sample {index} has timestamp {timestamp}, earlier than the stream's last timestamp {last}"
    )]
    OutOfOrder {
        /// Position in the batch.
        index: usize,
        /// The sample's timestamp.
        timestamp: NaiveDateTime,
        /// The latest timestamp it had to follow.
        last: NaiveDateTime,
    },
}

/// Summary statistics kept with the stream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamStats {
    /// Results flagged as anomalies since the stream was created.
    pub anomalies: u64,
    /// Final anomaly score of the last sample.
    pub last_score: Option<f64>,
    /// Log-likelihood of the last sample.
    pub last_log_likelihood: Option<f64>,
    /// Value of the last sample.
    pub last_value: Option<f64>,
}

/// Everything a checkpoint holds for one stream.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StreamState {
    /// The stream's name (checked against the file name on load).
    pub id: StreamId,
    /// How the model was built and how results are judged.
    pub config: StreamConfig,
    /// The HTM model, random generator included.
    pub model: Model,
    /// Timestamp of the last accepted sample; later samples may not be earlier.
    pub last_timestamp: Option<NaiveDateTime>,
    /// Counters and last result.
    pub stats: StreamStats,
    /// LSN of the last write-ahead-log record applied to this state (0:
    /// none yet); a checkpoint of the state covers the log up to here.
    pub wal_lsn: u64,
}

impl StreamState {
    /// A fresh stream with `config`.
    pub fn new(id: StreamId, config: StreamConfig) -> Result<StreamState, ConfigError> {
        let params = config.build_params()?;
        let model = Model::new(params).map_err(|e| ConfigError {
            field: format!("overrides.{}", e.field),
            message: e.message,
        })?;
        Ok(StreamState {
            id,
            config,
            model,
            last_timestamp: None,
            stats: StreamStats::default(),
            wal_lsn: 0,
        })
    }

    /// Check that `samples` may be applied (timestamps in order, none
    /// earlier than the stream's last one) without changing anything.
    pub fn check(&self, samples: &[Sample]) -> Result<(), Rejected> {
        let mut last = self.last_timestamp;
        for (index, s) in samples.iter().enumerate() {
            debug_assert!(s.value.is_finite());
            if let Some(l) = last {
                if s.timestamp < l {
                    return Err(Rejected::OutOfOrder {
                        index,
                        timestamp: s.timestamp,
                        last: l,
                    });
                }
            }
            last = Some(s.timestamp);
        }
        Ok(())
    }

    /// Check every sample, then step the model on each in order, appending
    /// to `out`. On `Err` nothing changed.
    pub fn apply(&mut self, samples: &[Sample], out: &mut Vec<Applied>) -> Result<(), Rejected> {
        self.check(samples)?;
        out.reserve(samples.len());
        for s in samples {
            let learn = s.learn.unwrap_or(self.config.learn);
            let output = self.model.step(s.timestamp, s.value, learn);
            let is_anomaly = output.anomaly_score >= self.config.threshold;
            self.stats.anomalies += u64::from(is_anomaly);
            self.stats.last_score = Some(output.anomaly_score);
            self.stats.last_log_likelihood = Some(output.log_likelihood);
            self.stats.last_value = Some(s.value);
            self.last_timestamp = Some(s.timestamp);
            out.push(Applied {
                timestamp: s.timestamp,
                value: s.value,
                output,
                is_anomaly,
            });
        }
        Ok(())
    }

    /// Start a new sequence: the model forgets the previous sample's context
    /// and the next timestamp may be earlier than the last one.
    pub fn reset(&mut self) {
        self.model.reset();
        self.last_timestamp = None;
    }
}

/// A stream whose checkpoint could not be loaded; it answers 503 until it is
/// deleted or recreated.
#[derive(Clone, Debug)]
pub struct Broken {
    /// Where the unreadable file was moved to.
    pub moved_to: PathBuf,
    /// Why it could not be read.
    pub reason: String,
}

/// What is remembered of a working stream whose model was written to its
/// checkpoint and dropped from memory (`store::residency`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evicted {
    /// The stream's figures when it was evicted; `None` when it was
    /// registered at start from its file name without decoding the file.
    pub summary: Option<EvictedSummary>,
}

/// Figures of an evicted stream that `GET /streams` lists without
/// reloading it.
#[derive(Clone, Debug, PartialEq)]
pub struct EvictedSummary {
    /// Samples the model has seen.
    pub samples: u64,
    /// Final anomaly score of the last sample.
    pub last_score: Option<f64>,
    /// Results flagged as anomalies.
    pub anomalies: u64,
    /// `Model::memory_bytes` when it was evicted.
    pub memory_bytes: usize,
}

impl EvictedSummary {
    /// The figures of `st`.
    pub fn of(st: &StreamState) -> EvictedSummary {
        EvictedSummary {
            samples: st.model.steps(),
            last_score: st.stats.last_score,
            anomalies: st.stats.anomalies,
            memory_bytes: st.model.memory_bytes(),
        }
    }
}

/// What a stream entry holds.
#[derive(Debug)]
pub enum Slot {
    /// A working stream.
    Ready(Box<StreamState>),
    /// A working stream whose model is only in its checkpoint file; the
    /// next operation on it reloads it.
    Evicted(Evicted),
    /// A stream whose checkpoint failed to load.
    Broken(Broken),
    /// Removed by `DELETE`; a request that still holds the entry must not
    /// resurrect it.
    Deleted,
}

/// A stream entry of the registry.
#[derive(Debug)]
pub struct Stream {
    id: StreamId,
    /// The state. A std mutex: it is held only for the synchronous work of a
    /// step or batch (on a blocking thread), never across an `.await`.
    state: Mutex<Slot>,
    /// Serializes this stream's checkpoint-file writes with its deletion.
    /// Lock order: `io`, then `state`.
    io: Mutex<()>,
    /// Admits one request at a time, first come first served, so samples
    /// are applied in the order they were accepted and one stream occupies
    /// at most one blocking thread.
    turn: tokio::sync::Semaphore,
    /// Requests accepted for this stream and not yet finished (bounds the
    /// per-stream queue).
    pending: AtomicUsize,
    /// Bumped on every change of the state.
    version: AtomicU64,
    /// The version last written to disk.
    saved_version: AtomicU64,
    /// The write-ahead-log LSN covered by the checkpoint on disk (0: none).
    checkpoint_lsn: AtomicU64,
    /// Residency clock tick of the last operation on the stream: the
    /// least recently used idle streams are evicted first.
    last_used: AtomicU64,
    /// Model bytes this stream adds to the resident total, or
    /// [`NOT_RESIDENT`]; kept here so the total is adjusted by differences.
    charged: AtomicU64,
    /// LSN of a change logged but not yet applied (waiting to be durable;
    /// 0: none): the log from there on must be kept.
    unapplied_lsn: AtomicU64,
}

/// `Stream::charged` of a stream whose model is not in memory.
pub const NOT_RESIDENT: u64 = u64::MAX;

/// Lock a mutex, recovering from poisoning: a panic inside a model step is
/// caught by the server and the state is still structurally valid.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Stream {
    /// A new entry holding `slot`. `saved` says whether the slot is already
    /// on disk as it is (true when loaded from a checkpoint).
    pub fn new(id: StreamId, slot: Slot, saved: bool) -> Stream {
        let checkpoint_lsn = match &slot {
            Slot::Ready(st) if saved => st.wal_lsn,
            _ => 0,
        };
        Stream {
            id,
            state: Mutex::new(slot),
            io: Mutex::new(()),
            turn: tokio::sync::Semaphore::new(1),
            pending: AtomicUsize::new(0),
            version: AtomicU64::new(1),
            saved_version: AtomicU64::new(if saved { 1 } else { 0 }),
            checkpoint_lsn: AtomicU64::new(checkpoint_lsn),
            last_used: AtomicU64::new(0),
            charged: AtomicU64::new(NOT_RESIDENT),
            unapplied_lsn: AtomicU64::new(0),
        }
    }

    /// The residency clock tick of the last operation on the stream.
    pub fn last_used(&self) -> &AtomicU64 {
        &self.last_used
    }

    /// The model bytes charged to the resident total ([`NOT_RESIDENT`] if
    /// none); only `store::residency` changes it.
    pub fn charged(&self) -> &AtomicU64 {
        &self.charged
    }

    /// The stream's name.
    pub fn id(&self) -> &StreamId {
        &self.id
    }

    /// Lock the state. Never hold the guard across an `.await`.
    pub fn lock(&self) -> MutexGuard<'_, Slot> {
        lock(&self.state)
    }

    /// Lock the checkpoint-file lock (take it before [`Stream::lock`]).
    pub fn lock_io(&self) -> MutexGuard<'_, ()> {
        lock(&self.io)
    }

    /// The FIFO admission semaphore (one permit).
    pub fn turn(&self) -> &tokio::sync::Semaphore {
        &self.turn
    }

    /// The count of accepted, unfinished requests.
    pub fn pending(&self) -> &AtomicUsize {
        &self.pending
    }

    /// Record a change; call while holding the state lock.
    pub fn mark_changed(&self) {
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The current change counter; read while holding the state lock to
    /// pair it with what is encoded.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Note that `version` is on disk.
    pub fn mark_saved(&self, version: u64) {
        self.saved_version.fetch_max(version, Ordering::AcqRel);
    }

    /// Note that the state as it is now is on disk (it was just read from
    /// there).
    pub fn mark_loaded(&self, lsn: u64) {
        self.mark_saved(self.version());
        self.mark_checkpoint_lsn(lsn);
    }

    /// Note that the checkpoint on disk covers the log up to `lsn`.
    pub fn mark_checkpoint_lsn(&self, lsn: u64) {
        self.checkpoint_lsn.fetch_max(lsn, Ordering::AcqRel);
    }

    /// The write-ahead-log LSN the checkpoint on disk covers (0: none).
    pub fn checkpoint_lsn(&self) -> u64 {
        self.checkpoint_lsn.load(Ordering::Acquire)
    }

    /// Note a change logged as `lsn` and not yet applied (0: none left).
    pub fn set_unapplied_lsn(&self, lsn: u64) {
        self.unapplied_lsn.store(lsn, Ordering::Release);
    }

    /// The LSN of a change logged and not yet applied (0: none).
    pub fn unapplied_lsn(&self) -> u64 {
        self.unapplied_lsn.load(Ordering::Acquire)
    }

    /// Whether the state changed since it was last written.
    pub fn is_dirty(&self) -> bool {
        self.version.load(Ordering::Acquire) != self.saved_version.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::stream_config::DEFAULT_THRESHOLD;
    use chrono::NaiveDate;

    fn ts(h: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 11, 27)
            .unwrap()
            .and_hms_opt(h, 0, 0)
            .unwrap()
    }

    fn state() -> StreamState {
        StreamState::new(
            StreamId::new("s").unwrap(),
            StreamConfig::with_preset("default", DEFAULT_THRESHOLD),
        )
        .unwrap()
    }

    fn sample(h: u32, value: f64) -> Sample {
        Sample {
            timestamp: ts(h),
            value,
            learn: None,
        }
    }

    #[test]
    fn apply_steps_in_order_and_tracks_stats() {
        let mut st = state();
        let mut out = Vec::new();
        st.apply(&[sample(1, 1.0), sample(1, 2.0), sample(2, 3.0)], &mut out)
            .unwrap();
        assert_eq!(
            out.iter().map(|a| a.output.step).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(st.model.steps(), 3);
        assert_eq!(st.last_timestamp, Some(ts(2)));
        assert_eq!(st.stats.last_value, Some(3.0));
        assert_eq!(
            st.stats.anomalies,
            out.iter().filter(|a| a.is_anomaly).count() as u64
        );
    }

    #[test]
    fn a_rejected_batch_changes_nothing() {
        let mut st = state();
        let mut out = Vec::new();
        st.apply(&[sample(5, 1.0)], &mut out).unwrap();
        let before = (st.model.steps(), st.last_timestamp, st.stats.clone());
        out.clear();
        let err = st
            .apply(&[sample(6, 1.0), sample(4, 2.0)], &mut out)
            .unwrap_err();
        assert!(matches!(err, Rejected::OutOfOrder { index: 1, .. }));
        let err = st.apply(&[sample(4, 1.0)], &mut out).unwrap_err();
        assert!(matches!(err, Rejected::OutOfOrder { index: 0, .. }));
        assert!(out.is_empty());
        assert_eq!((st.model.steps(), st.last_timestamp, st.stats), before);
    }

    #[test]
    fn threshold_decides_is_anomaly_and_learn_follows_config() {
        let mut st = state();
        st.config.threshold = 0.0;
        st.config.learn = false;
        let mut out = Vec::new();
        st.apply(
            &[
                sample(1, 1.0),
                Sample {
                    learn: Some(true),
                    ..sample(1, 1.0)
                },
            ],
            &mut out,
        )
        .unwrap();
        assert!(out.iter().all(|a| a.is_anomaly));
        assert_eq!(st.stats.anomalies, 2);
        assert!(!out[0].output.learned);
        assert!(out[1].output.learned);
    }

    #[test]
    fn reset_allows_an_earlier_timestamp() {
        let mut st = state();
        let mut out = Vec::new();
        st.apply(&[sample(9, 1.0)], &mut out).unwrap();
        st.reset();
        st.apply(&[sample(1, 1.0)], &mut out).unwrap();
        assert_eq!(st.model.steps(), 2);
    }

    #[test]
    fn dirty_tracking() {
        let s = Stream::new(
            StreamId::new("a").unwrap(),
            Slot::Ready(Box::new(state())),
            true,
        );
        assert!(!s.is_dirty());
        s.mark_changed();
        assert!(s.is_dirty());
        let v = s.version();
        s.mark_saved(v);
        assert!(!s.is_dirty());
        let fresh = Stream::new(StreamId::new("b").unwrap(), Slot::Deleted, false);
        assert!(fresh.is_dirty());
    }
}
