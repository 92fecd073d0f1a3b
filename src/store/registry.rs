//! The stream registry: every stream of the process by id, in a concurrent
//! map, with a bound on how many there may be, and the resident set that
//! bounds how many of their models are in memory (`store::residency`).
//!
//! The map only hands out `Arc<Stream>`; all work on a stream happens after
//! the map's shard lock is released, under the stream's own locks, so
//! different streams never wait for each other.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use crate::store::residency::Residency;
use crate::store::stream::Stream;
use crate::store::stream_id::StreamId;

/// The stream limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server already holds its maximum of {max} streams")]
pub struct TooManyStreams {
    /// The configured limit.
    pub max: usize,
}

/// All streams of the process.
#[derive(Debug)]
pub struct Registry {
    /// Streams by id. Entries are `Arc`s so a request keeps its stream alive
    /// after releasing the shard lock.
    streams: DashMap<StreamId, Arc<Stream>>,
    /// Number of entries, kept beside the map: `DashMap::len` locks every
    /// shard and would deadlock inside an `entry` call.
    count: AtomicUsize,
    /// Most streams allowed at once, resident or not.
    max_streams: usize,
    /// Which of the streams' models are in memory.
    residency: Residency,
}

impl Registry {
    /// An empty registry that holds at most `max_streams` streams, every
    /// model resident.
    pub fn new(max_streams: usize) -> Registry {
        Registry::with_residency(max_streams, Residency::unlimited())
    }

    /// An empty registry that holds at most `max_streams` streams and
    /// keeps models in memory within `residency`'s limits.
    pub fn with_residency(max_streams: usize, residency: Residency) -> Registry {
        Registry {
            streams: DashMap::new(),
            count: AtomicUsize::new(0),
            max_streams,
            residency,
        }
    }

    /// The resident set.
    pub fn residency(&self) -> &Residency {
        &self.residency
    }

    /// The stream named `id`, if present.
    pub fn get(&self, id: &StreamId) -> Option<Arc<Stream>> {
        self.streams.get(id).map(|s| Arc::clone(s.value()))
    }

    /// The stream named `id`, created with `make` if absent. The bool is
    /// true when it was created.
    pub fn get_or_create(
        &self,
        id: &StreamId,
        make: impl FnOnce() -> Stream,
    ) -> Result<(Arc<Stream>, bool), TooManyStreams> {
        if let Some(s) = self.get(id) {
            return Ok((s, false));
        }
        match self.streams.entry(id.clone()) {
            Entry::Occupied(e) => Ok((Arc::clone(e.get()), false)),
            Entry::Vacant(e) => {
                self.reserve()?;
                let s = Arc::new(make());
                e.insert(Arc::clone(&s));
                Ok((s, true))
            }
        }
    }

    fn reserve(&self) -> Result<(), TooManyStreams> {
        let max = self.max_streams;
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|_| TooManyStreams { max })
    }

    /// Remove `id` if it still maps to `stream` (a newer stream of the same
    /// name is left alone). Returns whether it was removed.
    pub fn remove(&self, id: &StreamId, stream: &Arc<Stream>) -> bool {
        let removed = self
            .streams
            .remove_if(id, |_, s| Arc::ptr_eq(s, stream))
            .is_some();
        if removed {
            self.count.fetch_sub(1, Ordering::AcqRel);
            self.residency.forget(stream);
        }
        removed
    }

    /// Number of streams.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Whether there are no streams.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The configured stream limit.
    pub fn max_streams(&self) -> usize {
        self.max_streams
    }

    /// Every stream, in no particular order.
    pub fn all(&self) -> Vec<Arc<Stream>> {
        self.streams.iter().map(|e| Arc::clone(e.value())).collect()
    }

    /// Every stream, sorted by id.
    pub fn snapshot(&self) -> Vec<Arc<Stream>> {
        let mut all: Vec<_> = self.streams.iter().map(|e| Arc::clone(e.value())).collect();
        all.sort_by(|a, b| a.id().cmp(b.id()));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::stream::Slot;

    fn id(s: &str) -> StreamId {
        StreamId::new(s).unwrap()
    }

    fn make(s: &str) -> impl FnOnce() -> Stream + '_ {
        move || Stream::new(id(s), Slot::Deleted, false)
    }

    #[test]
    fn creates_once_and_returns_the_same_entry() {
        let r = Registry::new(10);
        let (a, created) = r.get_or_create(&id("a"), make("a")).unwrap();
        assert!(created);
        let (b, created) = r.get_or_create(&id("a"), make("a")).unwrap();
        assert!(!created);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn enforces_the_limit_and_frees_on_remove() {
        let r = Registry::new(2);
        let (a, _) = r.get_or_create(&id("a"), make("a")).unwrap();
        r.get_or_create(&id("b"), make("b")).unwrap();
        assert_eq!(
            r.get_or_create(&id("c"), make("c")).unwrap_err(),
            TooManyStreams { max: 2 }
        );
        assert!(r.remove(&id("a"), &a));
        assert!(!r.remove(&id("a"), &a));
        assert!(r.get_or_create(&id("c"), make("c")).unwrap().1);
        assert_eq!(
            r.snapshot()
                .iter()
                .map(|s| s.id().to_string())
                .collect::<Vec<_>>(),
            ["b", "c"]
        );
    }

    #[test]
    fn remove_leaves_a_newer_entry_alone() {
        let r = Registry::new(2);
        let (old, _) = r.get_or_create(&id("a"), make("a")).unwrap();
        r.remove(&id("a"), &old);
        let (new, _) = r.get_or_create(&id("a"), make("a")).unwrap();
        assert!(!r.remove(&id("a"), &old));
        assert!(Arc::ptr_eq(&r.get(&id("a")).unwrap(), &new));
    }

    #[test]
    fn concurrent_creation_respects_the_limit() {
        let r = Arc::new(Registry::new(50));
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let r = Arc::clone(&r);
                std::thread::spawn(move || {
                    (0..20)
                        .filter(|i| {
                            let name = format!("s{}", (i * 8 + t) % 80);
                            r.get_or_create(&id(&name), make(&name)).is_ok()
                        })
                        .count()
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(r.len(), 50);
        assert_eq!(r.snapshot().len(), 50);
    }
}
