//! Start-up recovery: after the checkpoints are in the registry, replay the
//! write-ahead log over them, in LSN order, so every change that was
//! acknowledged before the process died is back — bit for bit, since a
//! model step is deterministic (ARCHITECTURE.md, "Determinism").
//!
//! A record is applied to a stream only if its LSN is greater than the LSN
//! the stream's state already covers (`StreamState::wal_lsn`, stored in the
//! checkpoint). The rules per record:
//!
//! - samples: applied to the stream; a stream that does not exist is
//!   created from the record's configuration (the first record of a stream
//!   created by its first sample carries it), or skipped without one (its
//!   earlier history was deleted with the stream);
//! - put: the stream is created or replaced with a fresh model;
//! - reset: the stream's sequence restarts;
//! - delete: the stream and its checkpoint are removed.
//!
//! A stream whose checkpoint was unreadable (`Slot::Broken`) takes only put
//! and delete records, as it does while serving.
//!
//! With a residency limit, streams registered at start without their
//! model (`Slot::Evicted`) are loaded only when a record names them, and
//! evicted again (checkpoint first) whenever the resident set passes its
//! limits, so replay stays within the memory budget too.

use std::sync::Arc;

use crate::store::data_dir::DataDir;
use crate::store::registry::Registry;
use crate::store::stream::{Slot, Stream, StreamState};
use crate::store::stream_id::StreamId;
use crate::store::wal::{Entry, OpenReport, Wal, WalError, WalObserver, WalOptions};

/// What replaying the log did.
#[derive(Debug, Default, Clone)]
pub struct ReplayReport {
    /// Records that changed a stream.
    pub applied: u64,
    /// Records already covered by a checkpoint.
    pub covered: u64,
    /// Records that could not apply (stream unknown, broken, limit reached);
    /// each with a note in `notes`.
    pub skipped: u64,
    /// Samples stepped during replay.
    pub samples: u64,
    /// What was skipped and why.
    pub notes: Vec<String>,
}

/// Everything [`recover`] found.
#[derive(Debug)]
pub struct Recovered {
    /// The open log, ready for appends.
    pub wal: Wal,
    /// What opening the log found (records read, torn records dropped).
    pub log: OpenReport,
    /// What replaying did.
    pub replay: ReplayReport,
}

/// Replay the log in `options.dir` over the streams already loaded into
/// `registry` from checkpoints, then open it for appends. Blocking.
pub fn recover(
    registry: &Registry,
    data_dir: &DataDir,
    options: WalOptions,
    observer: Arc<dyn WalObserver>,
) -> Result<Recovered, WalError> {
    let newest = registry
        .snapshot()
        .iter()
        .filter_map(|s| match &*s.lock() {
            Slot::Ready(st) => Some(st.wal_lsn),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let mut replay = ReplayReport::default();
    let (wal, log) = Wal::open(options, newest + 1, observer, |lsn, entry| {
        apply(registry, data_dir, lsn, entry, &mut replay);
    })?;
    Ok(Recovered { wal, log, replay })
}

fn skip(report: &mut ReplayReport, lsn: u64, stream: &StreamId, why: &str) {
    report.skipped += 1;
    if report.notes.len() < 100 {
        report
            .notes
            .push(format!("record {lsn} for stream {stream}: {why}"));
    }
}

/// Apply one log record to the registry: reload its stream if it is
/// evicted, apply, then evict idle streams if the resident set is over its
/// limits.
pub fn apply(
    registry: &Registry,
    data_dir: &DataDir,
    lsn: u64,
    entry: Entry,
    report: &mut ReplayReport,
) {
    let id = match &entry {
        Entry::Samples { stream, .. }
        | Entry::Put { stream, .. }
        | Entry::Reset { stream }
        | Entry::Delete { stream } => stream.clone(),
    };
    let residency = registry.residency();
    if let Some(stream) = registry.get(&id) {
        residency.reload(data_dir, &stream, &mut stream.lock());
    }
    apply_record(registry, data_dir, lsn, entry, report);
    if let Some(stream) = registry.get(&id) {
        residency.touch(&stream, &stream.lock());
    }
    if residency.over_limit() {
        residency.evict_idle(registry, data_dir);
    }
}

/// Apply one log record to the registry, its stream (if any) resident.
fn apply_record(
    registry: &Registry,
    data_dir: &DataDir,
    lsn: u64,
    entry: Entry,
    report: &mut ReplayReport,
) {
    match entry {
        Entry::Samples {
            stream: id,
            config,
            samples,
        } => {
            let existing = registry.get(&id);
            if let Some(stream) = existing {
                let mut slot = stream.lock();
                match &mut *slot {
                    Slot::Ready(st) if lsn <= st.wal_lsn => report.covered += 1,
                    Slot::Ready(st) => match st.apply(&samples, &mut Vec::new()) {
                        Ok(()) => {
                            st.wal_lsn = lsn;
                            stream.mark_changed();
                            report.applied += 1;
                            report.samples += samples.len() as u64;
                        }
                        Err(e) => skip(report, lsn, &id, &e.to_string()),
                    },
                    // `apply` reloaded an evicted stream or marked it broken.
                    Slot::Broken(_) | Slot::Evicted(_) => {
                        skip(report, lsn, &id, "checkpoint unreadable")
                    }
                    Slot::Deleted => skip(report, lsn, &id, "deleted"),
                }
                return;
            }
            let Some(config) = config else {
                // The stream's creation was in a deleted segment and the
                // stream itself was deleted since: nothing to rebuild.
                report.covered += 1;
                return;
            };
            let mut st = match StreamState::new(id.clone(), config) {
                Ok(st) => st,
                Err(e) => return skip(report, lsn, &id, &e.to_string()),
            };
            if let Err(e) = st.apply(&samples, &mut Vec::new()) {
                return skip(report, lsn, &id, &e.to_string());
            }
            st.wal_lsn = lsn;
            let n = samples.len() as u64;
            match registry.get_or_create(&id, || {
                Stream::new(id.clone(), Slot::Ready(Box::new(st)), false)
            }) {
                Ok(_) => {
                    report.applied += 1;
                    report.samples += n;
                }
                Err(e) => skip(report, lsn, &id, &e.to_string()),
            }
        }
        Entry::Put { stream: id, config } => {
            let mut fresh = match StreamState::new(id.clone(), config) {
                Ok(st) => st,
                Err(e) => return skip(report, lsn, &id, &e.to_string()),
            };
            fresh.wal_lsn = lsn;
            if let Some(stream) = registry.get(&id) {
                let mut slot = stream.lock();
                match &*slot {
                    Slot::Ready(st) if lsn <= st.wal_lsn => report.covered += 1,
                    _ => {
                        *slot = Slot::Ready(Box::new(fresh));
                        stream.mark_changed();
                        report.applied += 1;
                    }
                }
                return;
            }
            match registry.get_or_create(&id, || {
                Stream::new(id.clone(), Slot::Ready(Box::new(fresh)), false)
            }) {
                Ok(_) => report.applied += 1,
                Err(e) => skip(report, lsn, &id, &e.to_string()),
            }
        }
        Entry::Reset { stream: id } => {
            let Some(stream) = registry.get(&id) else {
                report.covered += 1;
                return;
            };
            let mut slot = stream.lock();
            match &mut *slot {
                Slot::Ready(st) if lsn <= st.wal_lsn => report.covered += 1,
                Slot::Ready(st) => {
                    st.reset();
                    st.wal_lsn = lsn;
                    stream.mark_changed();
                    report.applied += 1;
                }
                Slot::Broken(_) | Slot::Evicted(_) | Slot::Deleted => {
                    skip(report, lsn, &id, "checkpoint unreadable")
                }
            }
        }
        Entry::Delete { stream: id } => {
            let Some(stream) = registry.get(&id) else {
                report.covered += 1;
                return;
            };
            let covered = matches!(&*stream.lock(), Slot::Ready(st) if lsn <= st.wal_lsn);
            if covered {
                report.covered += 1;
                return;
            }
            let removed = data_dir.delete(
                &stream,
                || Ok::<_, std::convert::Infallible>(()),
                || {
                    registry.remove(&id, &stream);
                },
            );
            report.applied += 1;
            if let Ok(Err(e)) = removed {
                report
                    .notes
                    .push(format!("record {lsn} deleted stream {id}, but: {e}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{hourly, small};
    use crate::store::wal::{EntryRef, NoObserver};
    use std::time::Duration;

    fn options(dir: &std::path::Path) -> WalOptions {
        WalOptions {
            dir: dir.join("wal"),
            segment_bytes: 1 << 20,
            group_delay: Duration::ZERO,
        }
    }

    fn id(s: &str) -> StreamId {
        StreamId::new(s).unwrap()
    }

    #[test]
    fn checkpoint_plus_log_equals_the_uninterrupted_stream() {
        let dir = tempfile::tempdir().unwrap();
        let dd = DataDir::open(dir.path()).unwrap();
        let registry = Registry::new(10);
        let rec = recover(&registry, &dd, options(dir.path()), Arc::new(NoObserver)).unwrap();
        let wal = rec.wal;
        // Reference: one state fed everything.
        let mut reference = StreamState::new(id("a"), small()).unwrap();
        // a: put, 10 samples, checkpoint, 5 more samples, reset, 3 more.
        let mut live = StreamState::new(id("a"), small()).unwrap();
        live.wal_lsn = wal
            .append(&EntryRef::Put {
                stream: &id("a"),
                config: &small(),
            })
            .unwrap();
        for (from, n) in [(0, 10), (10, 5)] {
            let b = hourly(from, n);
            live.wal_lsn = wal
                .append(&EntryRef::Samples {
                    stream: &id("a"),
                    config: None,
                    samples: &b,
                })
                .unwrap();
            live.apply(&b, &mut Vec::new()).unwrap();
            reference.apply(&b, &mut Vec::new()).unwrap();
            if from == 0 {
                let s = Stream::new(id("a"), Slot::Ready(Box::new(live.clone())), false);
                dd.save(&s).unwrap();
            }
        }
        wal.append(&EntryRef::Reset { stream: &id("a") }).unwrap();
        reference.reset();
        let b = hourly(2, 3);
        wal.append(&EntryRef::Samples {
            stream: &id("a"),
            config: None,
            samples: &b,
        })
        .unwrap();
        reference.apply(&b, &mut Vec::new()).unwrap();
        // b: auto-created, then deleted; c: auto-created.
        let b1 = hourly(0, 4);
        for entry in [
            EntryRef::Samples {
                stream: &id("b"),
                config: Some(&small()),
                samples: &b1,
            },
            EntryRef::Delete { stream: &id("b") },
            EntryRef::Samples {
                stream: &id("c"),
                config: Some(&small()),
                samples: &b1,
            },
        ] {
            wal.append(&entry).unwrap();
        }
        drop(wal);

        // Restart: checkpoint of a (10 samples) + log.
        let registry = Registry::new(10);
        let report = dd.load_all().unwrap();
        assert_eq!(report.loaded.len(), 1);
        for st in report.loaded {
            let sid = st.id.clone();
            registry
                .get_or_create(&sid, || {
                    Stream::new(sid.clone(), Slot::Ready(Box::new(st)), true)
                })
                .unwrap();
        }
        let rec = recover(&registry, &dd, options(dir.path()), Arc::new(NoObserver)).unwrap();
        assert_eq!(rec.log.records, 8);
        assert_eq!(rec.replay.covered, 2, "{:?}", rec.replay);
        assert!(rec.replay.notes.is_empty(), "{:?}", rec.replay.notes);
        assert!(registry.get(&id("b")).is_none());
        let a = registry.get(&id("a")).unwrap();
        let guard = a.lock();
        let Slot::Ready(st) = &*guard else {
            panic!("a is ready")
        };
        assert_eq!(st.model.steps(), reference.model.steps());
        assert_eq!(
            crate::store::checkpoint::encode(&st.model).unwrap(),
            crate::store::checkpoint::encode(&reference.model).unwrap()
        );
        assert_eq!(st.stats, reference.stats);
        assert!(registry.get(&id("c")).is_some());
        assert_eq!(rec.wal.next_lsn(), 9);
    }
}
