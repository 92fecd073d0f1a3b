//! Which models stay in memory: a residency limit, so a server can know
//! far more streams than fit in RAM.
//!
//! Two limits bound the resident models: a count (`--max-resident-streams`)
//! and a budget on the sum of their `Model::memory_bytes`
//! (`--memory-budget-bytes`). When either is exceeded, the least recently
//! used *idle* streams (no request in progress or queued) are written to
//! their checkpoint if they changed and their model is dropped
//! ([`Slot::Evicted`]); the registry entry stays, so the stream is still
//! listed and counted against `--max-streams`. The next operation on an
//! evicted stream reloads it from its checkpoint ([`Residency::reload`]);
//! since a checkpoint holds the whole state, random generator included, the
//! results are bit-identical to a stream that never left memory
//! (ARCHITECTURE.md, "Determinism").
//!
//! Durability is unchanged: a stream is evicted only once its checkpoint on
//! disk covers its last write-ahead-log record, so an evicted stream never
//! holds a log segment back, and a crash right after an eviction loses
//! nothing. A checkpoint that cannot be written keeps its stream resident.
//!
//! Eviction stops a little below the limits (1/16 of each) so that one
//! pass over the registry serves many new arrivals instead of one.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::checkpoint::CheckpointError;
use crate::store::data_dir::{DataDir, LoadFailure};
use crate::store::registry::Registry;
use crate::store::stream::{Broken, Evicted, EvictedSummary, Slot, Stream, NOT_RESIDENT};
use crate::store::stream_id::StreamId;

/// How many models may stay in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResidencyLimits {
    /// Most resident models.
    pub max_resident: usize,
    /// Most bytes of resident models (sum of `Model::memory_bytes`).
    pub budget_bytes: u64,
}

impl ResidencyLimits {
    /// No limit: every model stays in memory.
    pub const UNLIMITED: ResidencyLimits = ResidencyLimits {
        max_resident: usize::MAX,
        budget_bytes: u64::MAX,
    };

    /// The levels eviction brings the resident set down to.
    fn targets(&self) -> (usize, u64) {
        (
            self.max_resident - self.max_resident / 16,
            self.budget_bytes - self.budget_bytes / 16,
        )
    }
}

/// Told about evictions and reloads (the server counts them in metrics).
pub trait ResidencyObserver: Send + Sync {
    /// A stream was evicted.
    fn evicted(&self);
    /// A stream could not be evicted: its checkpoint write failed.
    fn eviction_failed(&self, stream: &StreamId, error: &CheckpointError);
    /// An evicted stream was reloaded in `took`.
    fn reloaded(&self, took: Duration);
    /// An evicted stream's checkpoint could not be read back.
    fn reload_failed(&self, failure: &LoadFailure);
}

/// Observes nothing.
#[derive(Debug)]
pub struct NoObserver;

impl ResidencyObserver for NoObserver {
    fn evicted(&self) {}
    fn eviction_failed(&self, _: &StreamId, _: &CheckpointError) {}
    fn reloaded(&self, _: Duration) {}
    fn reload_failed(&self, _: &LoadFailure) {}
}

/// The resident set: its limits, its size, and the clock that orders
/// streams by last use.
pub struct Residency {
    limits: ResidencyLimits,
    /// Streams whose model is in memory (and accounted).
    resident: AtomicUsize,
    /// Sum of their model bytes, as last accounted.
    bytes: AtomicU64,
    /// Ticks once per operation on any stream; a stream's `last_used` is
    /// the tick of its last operation.
    clock: AtomicU64,
    observer: Arc<dyn ResidencyObserver>,
}

impl std::fmt::Debug for Residency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Residency")
            .field("limits", &self.limits)
            .field("resident", &self.resident())
            .field("bytes", &self.resident_bytes())
            .finish()
    }
}

impl Residency {
    /// A resident set bounded by `limits`.
    pub fn new(limits: ResidencyLimits, observer: Arc<dyn ResidencyObserver>) -> Residency {
        Residency {
            limits,
            resident: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            clock: AtomicU64::new(0),
            observer,
        }
    }

    /// No limit and no observer.
    pub fn unlimited() -> Residency {
        Residency::new(ResidencyLimits::UNLIMITED, Arc::new(NoObserver))
    }

    /// The configured limits.
    pub fn limits(&self) -> ResidencyLimits {
        self.limits
    }

    /// Streams whose model is in memory.
    pub fn resident(&self) -> usize {
        self.resident.load(Ordering::Acquire)
    }

    /// Bytes of the resident models.
    pub fn resident_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// Whether one more model may be loaded without passing a limit.
    pub fn has_room(&self) -> bool {
        self.resident() < self.limits.max_resident
            && self.resident_bytes() < self.limits.budget_bytes
    }

    /// Whether a limit is passed (eviction is due).
    pub fn over_limit(&self) -> bool {
        self.resident() > self.limits.max_resident
            || self.resident_bytes() > self.limits.budget_bytes
    }

    /// Bring `stream`'s share of the resident set up to date with `slot`
    /// (its model's bytes if ready, nothing otherwise). Call with the
    /// stream's state lock held.
    pub fn account(&self, stream: &Stream, slot: &Slot) {
        let now = match slot {
            Slot::Ready(st) => st.model.memory_bytes() as u64,
            Slot::Evicted(_) | Slot::Broken(_) | Slot::Deleted => NOT_RESIDENT,
        };
        self.charge(stream, now);
    }

    /// Take `stream` out of the resident set (it left the registry).
    pub fn forget(&self, stream: &Stream) {
        self.charge(stream, NOT_RESIDENT);
    }

    fn charge(&self, stream: &Stream, now: u64) {
        let before = stream.charged().swap(now, Ordering::AcqRel);
        match (before == NOT_RESIDENT, now == NOT_RESIDENT) {
            (true, true) => {}
            (true, false) => {
                self.resident.fetch_add(1, Ordering::AcqRel);
                self.bytes.fetch_add(now, Ordering::AcqRel);
            }
            (false, true) => {
                self.resident.fetch_sub(1, Ordering::AcqRel);
                self.bytes.fetch_sub(before, Ordering::AcqRel);
            }
            // Wrapping add of the difference: the total stays exact.
            (false, false) => {
                self.bytes
                    .fetch_add(now.wrapping_sub(before), Ordering::AcqRel);
            }
        }
    }

    /// Record an operation on `stream` (it becomes the most recently used)
    /// and account its slot. Call with the stream's state lock held.
    pub fn touch(&self, stream: &Stream, slot: &Slot) {
        let tick = self.clock.fetch_add(1, Ordering::AcqRel) + 1;
        stream.last_used().store(tick, Ordering::Release);
        self.account(stream, slot);
    }

    /// If `slot` is evicted, read the stream back from its checkpoint; an
    /// unreadable file is moved aside and the stream becomes
    /// [`Slot::Broken`], as at start. Call with the stream's state lock
    /// held (and its turn, when serving). Blocking.
    pub fn reload(&self, data_dir: &DataDir, stream: &Stream, slot: &mut Slot) {
        if !matches!(slot, Slot::Evicted(_)) {
            return;
        }
        let start = Instant::now();
        match data_dir.load_one(stream.id()) {
            Ok(st) => {
                let lsn = st.wal_lsn;
                *slot = Slot::Ready(Box::new(st));
                stream.mark_loaded(lsn);
                self.observer.reloaded(start.elapsed());
            }
            Err(failure) => {
                self.observer.reload_failed(&failure);
                *slot = Slot::Broken(Broken {
                    moved_to: failure.moved_to,
                    reason: failure.error,
                });
            }
        }
        self.touch(stream, slot);
    }

    /// Evict least recently used idle streams of `registry` until the
    /// resident set is a little below its limits. Returns how many were
    /// evicted. Blocking (writes checkpoints).
    pub fn evict_idle(&self, registry: &Registry, data_dir: &DataDir) -> usize {
        if !self.over_limit() {
            return 0;
        }
        let (max_resident, max_bytes) = self.limits.targets();
        let mut candidates: Vec<(u64, Arc<Stream>)> = registry
            .all()
            .into_iter()
            .filter(|s| s.charged().load(Ordering::Acquire) != NOT_RESIDENT)
            .map(|s| (s.last_used().load(Ordering::Acquire), s))
            .collect();
        candidates.sort_unstable_by_key(|(tick, _)| *tick);
        let mut evicted = 0;
        for (_, stream) in candidates {
            if self.resident() <= max_resident && self.resident_bytes() <= max_bytes {
                break;
            }
            if self.evict(data_dir, &stream) {
                evicted += 1;
            }
        }
        evicted
    }

    /// Evict `stream` if it is idle and ready: write its checkpoint if it
    /// changed, then drop its model. Returns whether it was evicted.
    fn evict(&self, data_dir: &DataDir, stream: &Stream) -> bool {
        // Holding the turn keeps requests out while the model goes; one
        // that is queued (pending) or running means the stream is not idle.
        let Ok(_turn) = stream.turn().try_acquire() else {
            return false;
        };
        if stream.pending().load(Ordering::Acquire) > 0 {
            return false;
        }
        if stream.is_dirty() {
            if let Err(e) = data_dir.save(stream) {
                self.observer.eviction_failed(stream.id(), &e);
                return false;
            }
        }
        let _io = stream.lock_io();
        let mut slot = stream.lock();
        // Written state only: the checkpoint must cover every record.
        if stream.is_dirty() {
            return false;
        }
        let Slot::Ready(st) = &*slot else {
            return false;
        };
        *slot = Slot::Evicted(Evicted {
            summary: Some(EvictedSummary::of(st)),
        });
        self.account(stream, &slot);
        self.observer.evicted();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::stream::StreamState;
    use crate::store::test_support::{hourly, small};

    /// Create `name` in `registry`, feed it, and touch it.
    fn fed(registry: &Registry, name: &str) -> Arc<Stream> {
        let id = StreamId::new(name).unwrap();
        let mut st = StreamState::new(id.clone(), small()).unwrap();
        st.apply(&hourly(0, 5), &mut Vec::new()).unwrap();
        let (s, _) = registry
            .get_or_create(&id, || {
                Stream::new(id.clone(), Slot::Ready(Box::new(st)), false)
            })
            .unwrap();
        registry.residency().touch(&s, &s.lock());
        s
    }

    fn registry(max_resident: usize) -> Registry {
        let limits = ResidencyLimits {
            max_resident,
            budget_bytes: u64::MAX,
        };
        Registry::with_residency(100, Residency::new(limits, Arc::new(NoObserver)))
    }

    #[test]
    fn evicts_the_least_recently_used_and_reloads_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let dd = DataDir::open(dir.path()).unwrap();
        let r = registry(2);
        let a = fed(&r, "a");
        let b = fed(&r, "b");
        let c = fed(&r, "c");
        let res = r.residency();
        assert_eq!(res.resident(), 3);
        let bytes_before = res.resident_bytes();
        let encoded_a = crate::store::checkpoint::encode(match &*a.lock() {
            Slot::Ready(st) => &**st,
            _ => unreachable!(),
        })
        .unwrap();
        assert_eq!(res.evict_idle(&r, &dd), 1);
        assert!(matches!(&*a.lock(), Slot::Evicted(e) if e.summary.as_ref().unwrap().samples == 5));
        assert!(matches!(&*b.lock(), Slot::Ready(_)));
        assert!(matches!(&*c.lock(), Slot::Ready(_)));
        assert_eq!(res.resident(), 2);
        let bytes_evicted = res.resident_bytes();
        assert!(bytes_evicted < bytes_before);
        assert!(!a.is_dirty());
        assert!(dd.path_for(a.id()).exists());

        let mut slot = a.lock();
        res.reload(&dd, &a, &mut slot);
        let Slot::Ready(st) = &*slot else {
            panic!("reloaded")
        };
        assert_eq!(crate::store::checkpoint::encode(&**st).unwrap(), encoded_a);
        assert_eq!(res.resident(), 3);
        // A decoded model's vectors have no spare capacity, so it may count
        // fewer bytes than before it left.
        assert!(res.resident_bytes() > bytes_evicted);
    }

    #[test]
    fn a_busy_stream_or_a_failed_checkpoint_stays_resident() {
        let dir = tempfile::tempdir().unwrap();
        let dd = DataDir::open(dir.path()).unwrap();
        let r = registry(1);
        let a = fed(&r, "a");
        let b = fed(&r, "b");
        // a is queued-for; b's checkpoint path is a directory with a file
        // in it, so renaming over it fails.
        a.pending().fetch_add(1, Ordering::AcqRel);
        let blocked = dd.path_for(b.id());
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), b"x").unwrap();
        assert_eq!(r.residency().evict_idle(&r, &dd), 0);
        assert!(matches!(&*a.lock(), Slot::Ready(_)));
        assert!(matches!(&*b.lock(), Slot::Ready(_)));
        assert!(b.is_dirty());
        // Once a is idle it goes.
        a.pending().fetch_sub(1, Ordering::AcqRel);
        assert_eq!(r.residency().evict_idle(&r, &dd), 1);
        assert!(matches!(&*a.lock(), Slot::Evicted(_)));
    }

    #[test]
    fn removing_a_stream_frees_its_share() {
        let r = registry(10);
        let a = fed(&r, "a");
        assert_eq!(r.residency().resident(), 1);
        assert!(r.remove(a.id(), &a));
        assert_eq!(
            (r.residency().resident(), r.residency().resident_bytes()),
            (0, 0)
        );
    }
}
