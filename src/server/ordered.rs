//! Running work on one stream: in the order requests were accepted, off the
//! async reactor, within the server's limits.
//!
//! Every operation that touches a stream's state goes through [`on_stream`]:
//! 1. refuse at once with 503 when the server already has
//!    `--max-inflight` operations in progress, and with 429 when this stream
//!    already has `--max-stream-queue` waiting (so a burst on one stream
//!    cannot take every slot);
//! 2. wait for the stream's turn (a FIFO semaphore: accepted order);
//! 3. run the closure on the blocking pool under the stream's std mutex
//!    (nothing awaits while it is held), tracked so shutdown waits for it;
//!    an evicted stream is reloaded from its checkpoint first, and if the
//!    resident set is then over its limits, idle streams are evicted on the
//!    same blocking thread before the answer goes out (so a burst of
//!    reloads is slowed down rather than let past the memory budget).
//!
//! A stream deleted between lookup and lock is looked up again.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::server::error::ApiError;
use crate::server::AppState;
use crate::store::{Slot, Stream, StreamId, StreamState};

/// Decrements a stream's pending count when dropped.
struct Pending(Arc<Stream>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending().fetch_sub(1, Ordering::AcqRel);
    }
}

/// How to find the stream.
pub enum Find<'a> {
    /// It must exist (404 otherwise).
    Existing,
    /// Create it with this state if absent.
    OrCreate(&'a (dyn Fn() -> Result<StreamState, ApiError> + Sync)),
}

/// Run `f` on stream `id` as described in the module doc. `f` sees the slot
/// (never `Deleted`). Returns its result and whether the stream was created.
pub async fn on_stream<R, F>(
    state: &Arc<AppState>,
    id: &StreamId,
    find: Find<'_>,
    f: F,
) -> Result<(R, bool), ApiError>
where
    R: Send + 'static,
    F: Fn(&Stream, &mut Slot) -> Result<R, ApiError> + Send + Sync + 'static,
{
    state.ensure_ready()?;
    let _slot = Arc::clone(&state.inflight)
        .try_acquire_owned()
        .map_err(|_| ApiError::overloaded())?;
    let f = Arc::new(f);
    // A stream deleted while we waited is looked up again; three tries are
    // plenty unless a client deletes in a tight loop.
    for _ in 0..3 {
        let (stream, created) = match (state.registry.get(id), &find) {
            (Some(s), _) => (s, false),
            (None, Find::Existing) => return Err(ApiError::stream_not_found(id)),
            (None, Find::OrCreate(make)) => {
                let fresh = make()?;
                state.registry.get_or_create(id, || {
                    Stream::new(id.clone(), Slot::Ready(Box::new(fresh)), false)
                })?
            }
        };
        let queued = stream.pending().fetch_add(1, Ordering::AcqRel);
        let pending = Pending(Arc::clone(&stream));
        if queued >= state.args.max_stream_queue {
            return Err(ApiError::StreamBusy(format!(
                "stream {:?} already has {queued} requests queued; retry shortly",
                id.as_str()
            )));
        }
        let _turn = stream
            .turn()
            .acquire()
            .await
            .map_err(|_| ApiError::Internal("stream closed".into()))?;
        let worker = Arc::clone(&state.workers)
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Internal("server closing".into()))?;
        let f = Arc::clone(&f);
        let stream = Arc::clone(&stream);
        let worker_state = Arc::clone(state);
        let work = state.tasks.spawn_blocking(move || {
            let _worker = worker;
            let residency = worker_state.registry.residency();
            let result = {
                let _pending = pending;
                let mut slot = stream.lock();
                if matches!(*slot, Slot::Deleted) {
                    return None;
                }
                residency.reload(&worker_state.data_dir, &stream, &mut slot);
                let result = f(&stream, &mut slot);
                residency.touch(&stream, &slot);
                result
            };
            // This stream's turn is still held, so it is not evicted itself.
            if residency.over_limit() {
                residency.evict_idle(&worker_state.registry, &worker_state.data_dir);
            }
            Some(result)
        });
        match work.await {
            Ok(Some(result)) => return result.map(|r| (r, created)),
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(stream = %id, error = %e, "stream operation panicked");
                return Err(ApiError::Internal(format!(
                    "the operation on stream {:?} failed: {e}",
                    id.as_str()
                )));
            }
        }
    }
    Err(ApiError::Unavailable {
        code: "stream_churn",
        message: format!(
            "stream {:?} was deleted repeatedly while this request waited",
            id.as_str()
        ),
    })
}

/// The ready state of a slot, or the error it answers with.
pub fn ready<'a>(id: &StreamId, slot: &'a mut Slot) -> Result<&'a mut StreamState, ApiError> {
    match slot {
        Slot::Ready(st) => Ok(st),
        Slot::Broken(b) => Err(ApiError::broken_stream(id, b)),
        Slot::Deleted => Err(ApiError::stream_not_found(id)),
        // `on_stream` reloads an evicted stream before its closure runs.
        Slot::Evicted(_) => Err(ApiError::Internal(format!(
            "stream {:?} was not reloaded",
            id.as_str()
        ))),
    }
}
