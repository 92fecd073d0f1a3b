//! Running work on one stream: in the order requests were accepted, off the
//! async reactor, within the server's limits.
//!
//! Every operation that touches a stream's state goes through [`on_stream`]:
//! 1. refuse at once with 503 when the server already has
//!    `--max-inflight` operations in progress, and with 429 when this stream
//!    already has `--max-stream-queue` waiting (so a burst on one stream
//!    cannot take every slot);
//! 2. wait for the stream's turn (a FIFO semaphore: accepted order);
//! 3. run the closure on a stream worker ([`crate::server::workers`]) under
//!    the stream's std mutex (nothing awaits while it is held), tracked so
//!    shutdown waits for it; an evicted stream is reloaded from its
//!    checkpoint first, and if the resident set is then over its limits,
//!    idle streams are evicted on the same worker before the answer goes
//!    out (so a burst of reloads is slowed down rather than let past the
//!    memory budget).
//!
//! [`on_stream_logged`] splits step 3 for changes the write-ahead log must
//! hold first: log, wait until durable (still holding the turn), apply. A
//! stream that such a request created is removed again if its change is
//! refused, so a refused request leaves nothing behind.
//!
//! A stream deleted between lookup and lock is looked up again.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::server::config::Durability;
use crate::server::error::ApiError;
use crate::server::AppState;
use crate::store::{checkpoint, CheckpointError, Slot, Stream, StreamId, StreamState};

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

/// Gives a stream's turn back when dropped. Owned (not a borrowed permit),
/// so a continuation task can hold the turn after the request that took
/// it is gone.
struct Turn(Arc<Stream>);

impl Drop for Turn {
    fn drop(&mut self) {
        self.0.turn().add_permits(1);
    }
}

/// A stream found (or created) whose turn this request holds.
struct Admitted {
    stream: Arc<Stream>,
    created: bool,
    pending: Pending,
    turn: Turn,
}

/// Steps 1 and 2 of the module doc, for one lookup.
async fn admit(
    state: &Arc<AppState>,
    id: &StreamId,
    find: &Find<'_>,
) -> Result<Admitted, ApiError> {
    let (stream, created) = match (state.registry.get(id), find) {
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
    stream
        .turn()
        .acquire()
        .await
        .map_err(|_| ApiError::Internal("stream closed".into()))?
        .forget();
    let turn = Turn(Arc::clone(&stream));
    Ok(Admitted {
        stream,
        created,
        pending,
        turn,
    })
}

/// Step 3: run `f` on a stream worker under the stream's mutex. `None`
/// if the stream was deleted meanwhile.
async fn run_locked<R, F>(
    state: &Arc<AppState>,
    stream: &Arc<Stream>,
    f: F,
) -> Result<Option<R>, ApiError>
where
    R: Send + 'static,
    F: FnOnce(&Stream, &mut Slot) -> Result<R, ApiError> + Send + 'static,
{
    let stream = Arc::clone(stream);
    let id = stream.id().clone();
    let worker_state = Arc::clone(state);
    let work = state.workers.run(move || {
        let residency = worker_state.registry.residency();
        let result = {
            let mut slot = stream.lock();
            if matches!(*slot, Slot::Deleted) {
                return None;
            }
            residency.reload(&worker_state.data_dir, &stream, &mut slot);
            let result = f(&stream, &mut slot);
            residency.touch(&stream, &slot);
            result
        };
        // This request still holds the stream's turn, so the stream itself
        // is not evicted.
        if residency.over_limit() {
            residency.evict_idle(&worker_state.registry, &worker_state.data_dir);
        }
        Some(result)
    });
    match work.await {
        Ok(Some(result)) => result.map(Some),
        Ok(None) => Ok(None),
        Err(e) => {
            tracing::error!(stream = %id, error = %e, "stream operation failed");
            Err(ApiError::Internal(format!(
                "the operation on stream {:?} failed: {e}",
                id.as_str()
            )))
        }
    }
}

fn churn(id: &StreamId) -> ApiError {
    ApiError::Unavailable {
        code: "stream_churn",
        message: format!(
            "stream {:?} was deleted repeatedly while this request waited",
            id.as_str()
        ),
    }
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
        let admitted = admit(state, id, &find).await?;
        let f = Arc::clone(&f);
        let done = run_locked(state, &admitted.stream, move |s, slot| f(s, slot)).await?;
        if let Some(r) = done {
            return Ok((r, admitted.created));
        }
    }
    Err(churn(id))
}

/// What the logging half of [`on_stream_logged`] did.
enum Logged<T, R> {
    /// Logged as record `lsn`; apply `T` once it is durable.
    Pending(u64, T),
    /// Logged and applied at once (`--durability none`).
    Applied(R),
}

/// Like [`on_stream`] for a change that the write-ahead log must hold
/// before the state changes: `log` appends the record and returns its LSN
/// (0 when there is nothing to log: `apply` then runs at once) and what
/// `apply` needs; once the record is as durable as `--durability`
/// requires, `apply` changes the state, still in this request's turn. A
/// record that fails to become durable is never applied, so the state
/// only ever reflects acknowledged changes, and a stream this request
/// created for the change is removed again. Once logged, the rest runs in
/// a tracked task, so a client that goes away cannot leave a logged
/// change unapplied.
pub async fn on_stream_logged<T, R, L, A>(
    state: &Arc<AppState>,
    id: &StreamId,
    find: Find<'_>,
    log: L,
    apply: A,
) -> Result<(R, bool), ApiError>
where
    T: Send + 'static,
    R: Send + 'static,
    L: Fn(&Stream, &mut Slot) -> Result<(u64, T), ApiError> + Send + Sync + 'static,
    A: Fn(&Stream, &mut Slot, T) -> Result<R, ApiError> + Send + Sync + 'static,
{
    state.ensure_ready()?;
    let _slot = Arc::clone(&state.inflight)
        .try_acquire_owned()
        .map_err(|_| ApiError::overloaded())?;
    let log = Arc::new(log);
    let apply = Arc::new(apply);
    let immediate = state.args.durability == Durability::None;
    for _ in 0..3 {
        let admitted = admit(state, id, &find).await?;
        let (log, first_apply) = (Arc::clone(&log), Arc::clone(&apply));
        let logged = run_locked(state, &admitted.stream, move |s, slot| {
            let (lsn, t) = log(s, slot)?;
            if immediate || lsn == 0 {
                Ok(Logged::Applied(first_apply(s, slot, t)?))
            } else {
                s.set_unapplied_lsn(lsn);
                Ok(Logged::Pending(lsn, t))
            }
        })
        .await;
        let (lsn, t) = match logged {
            Ok(None) => continue,
            Ok(Some(Logged::Applied(r))) => return Ok((r, admitted.created)),
            Ok(Some(Logged::Pending(lsn, t))) => (lsn, t),
            Err(e) => {
                if admitted.created {
                    forget_unlogged(state, &admitted.stream).await;
                }
                return Err(e);
            }
        };
        let worker = Arc::clone(state);
        let apply = Arc::clone(&apply);
        let stream_id = id.clone();
        let Admitted {
            stream,
            created,
            pending,
            turn,
        } = admitted;
        let rest = state.tasks.spawn(async move {
            let (_turn, _pending) = (turn, pending);
            let result = match worker.acknowledge(lsn).await {
                Ok(()) => run_locked(&worker, &stream, move |s, slot| apply(s, slot, t))
                    .await
                    .and_then(|r| r.ok_or_else(|| ApiError::stream_not_found(&stream_id))),
                Err(e) => {
                    if created {
                        forget_unlogged(&worker, &stream).await;
                    }
                    Err(e)
                }
            };
            stream.set_unapplied_lsn(0);
            result
        });
        let r = rest
            .await
            .map_err(|e| ApiError::Internal(format!("logged change not applied: {e}")))??;
        return Ok((r, created));
    }
    Err(churn(id))
}

/// Remove `stream`, created by a request whose change was then refused,
/// if no change of it was ever applied (its state is still the one it was
/// created with, which no log record holds): otherwise it would be listed,
/// checkpointed and found after a restart although no request succeeded.
/// Called while the request still holds the stream's turn; requests queued
/// behind it find it deleted and look the id up again.
async fn forget_unlogged(state: &Arc<AppState>, stream: &Arc<Stream>) {
    let worker = Arc::clone(state);
    let stream = Arc::clone(stream);
    let forgotten = state.tasks.spawn_blocking(move || {
        let _io = stream.lock_io();
        let mut slot = stream.lock();
        if !matches!(&*slot, Slot::Ready(st) if st.wal_lsn == 0) {
            return;
        }
        if !stream.is_dirty() {
            // The periodic checkpointer wrote it meanwhile: that file goes
            // too (nothing to remove otherwise, which matters on a
            // read-only disk).
            let path = worker.data_dir.path_for(stream.id());
            let removed = std::fs::remove_file(&path)
                .map_err(|source| CheckpointError::Io {
                    path: path.clone(),
                    source,
                })
                .and_then(|()| checkpoint::sync_parent(&path));
            if let Err(e) = removed {
                tracing::warn!(stream = %stream.id(), error = %e, "refused new stream removed, but not its checkpoint");
            }
        }
        *slot = Slot::Deleted;
        stream.mark_changed();
        worker.registry.remove(stream.id(), &stream);
    });
    if let Err(e) = forgotten.await {
        tracing::error!(error = %e, "removing a refused new stream failed");
    }
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
