//! Stream management: `PUT /streams/{id}` (create or replace with a
//! configuration), `GET /streams`, `GET /streams/{id}`,
//! `DELETE /streams/{id}` (model and checkpoint gone) and
//! `POST /streams/{id}/reset` (start of a new sequence).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::server::config::Durability;
use crate::server::error::{body_rejection, ApiError};
use crate::server::ordered::{on_stream, on_stream_logged, ready, Find};
use crate::server::AppState;
use crate::store::wal::EntryRef;
use crate::store::{ConfigError, Slot, Stream, StreamConfig, StreamId, StreamState, ValueRange};

/// Body of `PUT /streams/{id}`; every field optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigBody {
    preset: Option<String>,
    value_range: Option<ValueRange>,
    resolution: Option<f64>,
    overrides: Option<Value>,
    threshold: Option<f64>,
    learn: Option<bool>,
}

fn parse_config(state: &AppState, body: &[u8]) -> Result<StreamConfig, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed: ConfigBody = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() {
            ApiError::InvalidConfig(ConfigError {
                field: if path == "." { String::new() } else { path },
                message: inner.to_string(),
            })
        } else {
            ApiError::bad_request("bad_json", format!("body is not valid JSON: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request("bad_json", format!("body is not valid JSON: {e}")))?;
    Ok(StreamConfig {
        preset: parsed
            .preset
            .unwrap_or_else(|| state.args.default_preset.clone()),
        value_range: parsed.value_range,
        resolution: parsed.resolution,
        overrides: parsed.overrides.unwrap_or_else(|| json!({})).to_string(),
        threshold: parsed.threshold.unwrap_or(state.args.default_threshold),
        learn: parsed.learn.unwrap_or(true),
    })
}

/// The JSON description of a working stream.
pub fn describe(stream: &Stream, st: &StreamState) -> Value {
    let c = &st.config;
    json!({
        "id": stream.id().as_str(),
        "status": "ready",
        "config": {
            "preset": c.preset,
            "value_range": c.value_range,
            "resolution": c.resolution,
            "overrides": serde_json::from_str::<Value>(&c.overrides).unwrap_or(Value::Null),
            "threshold": c.threshold,
            "learn": c.learn,
        },
        "params": st.model.params(),
        "stats": {
            "samples": st.model.steps(),
            "anomalies": st.stats.anomalies,
            "last_timestamp": st.last_timestamp,
            "last_value": st.stats.last_value,
            "last_score": st.stats.last_score,
            "last_log_likelihood": st.stats.last_log_likelihood,
        },
        "memory_bytes": st.model.memory_bytes(),
        "checkpoint_pending": stream.is_dirty(),
    })
}

/// `PUT /streams/{id}`: 201 when created, 200 when replaced. The new
/// configuration is logged, and the stream replaced only once the record
/// is durable: a refused `PUT` leaves the stream as it was (or absent).
pub async fn put(
    State(state): State<Arc<AppState>>,
    Path(raw_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = StreamId::new(raw_id)?;
    let body = body.map_err(body_rejection)?;
    let config = parse_config(&state, &body)?;
    let fresh = StreamState::new(id.clone(), config)?;
    let make_state = fresh.clone();
    let make = move || Ok(make_state.clone());
    let metrics = state.metrics.clone();
    state.wal()?;
    let worker = Arc::clone(&state);
    let logged_config = fresh.config.clone();
    let (desc, created) = on_stream_logged(
        &state,
        &id,
        Find::OrCreate(&make),
        move |stream, slot| {
            // Unchanged only if it is this configuration, untouched, and
            // its creation is already logged: nothing to log (LSN 0).
            let unchanged = matches!(slot, Slot::Ready(st)
                if st.config == logged_config && st.model.steps() == 0 && st.wal_lsn != 0);
            if unchanged {
                return Ok((0, 0));
            }
            let lsn = worker.wal()?.append(&EntryRef::Put {
                stream: stream.id(),
                config: &logged_config,
            })?;
            Ok((lsn, lsn))
        },
        move |stream, slot, lsn| {
            if lsn != 0 {
                if matches!(slot, Slot::Broken(_)) {
                    metrics.checkpoint_replaced(stream.id());
                }
                let mut st = fresh.clone();
                st.wal_lsn = lsn;
                *slot = Slot::Ready(Box::new(st));
                stream.mark_changed();
            }
            let st = ready(stream.id(), slot)?;
            Ok(describe(stream, st))
        },
    )
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(desc)).into_response())
}

/// `GET /streams/{id}`.
pub async fn get_one(
    State(state): State<Arc<AppState>>,
    Path(raw_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = StreamId::new(raw_id)?;
    let (desc, _) = on_stream(&state, &id, Find::Existing, |stream, slot| {
        let st = ready(stream.id(), slot)?;
        Ok(describe(stream, st))
    })
    .await?;
    Ok(Json(desc))
}

/// `GET /streams`: every stream with its samples, last score and memory.
pub async fn list(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    state.ensure_ready()?;
    let worker = Arc::clone(&state);
    let streams = tokio::task::spawn_blocking(move || {
        worker
            .registry
            .snapshot()
            .iter()
            .filter_map(|s| match &*s.lock() {
                Slot::Ready(st) => Some(json!({
                    "id": s.id().as_str(),
                    "status": "ready",
                    "resident": true,
                    "samples": st.model.steps(),
                    "last_score": st.stats.last_score,
                    "anomalies": st.stats.anomalies,
                    "memory_bytes": st.model.memory_bytes(),
                })),
                // Listed from what was kept at eviction, without reloading;
                // a stream registered at start from its file name has no
                // figures until its first use.
                Slot::Evicted(e) => Some(match &e.summary {
                    Some(sum) => json!({
                        "id": s.id().as_str(),
                        "status": "ready",
                        "resident": false,
                        "samples": sum.samples,
                        "last_score": sum.last_score,
                        "anomalies": sum.anomalies,
                        "memory_bytes": sum.memory_bytes,
                    }),
                    None => json!({
                        "id": s.id().as_str(),
                        "status": "ready",
                        "resident": false,
                    }),
                }),
                Slot::Broken(b) => Some(json!({
                    "id": s.id().as_str(),
                    "status": "unavailable",
                    "reason": b.reason,
                })),
                Slot::Deleted => None,
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(json!({ "streams": streams })))
}

/// `DELETE /streams/{id}`: 204; the model and its checkpoint are gone.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path(raw_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = StreamId::new(raw_id)?;
    state.ensure_ready()?;
    let stream = state
        .registry
        .get(&id)
        .ok_or_else(|| ApiError::stream_not_found(&id))?;
    state.wal()?;
    let worker = Arc::clone(&state);
    state
        .tasks
        .spawn_blocking(move || {
            // The deletion is durable in the log before the checkpoint
            // goes, so older log records cannot bring the stream back.
            let log = || -> Result<(), ApiError> {
                let wal = worker.wal()?;
                wal.append(&EntryRef::Delete {
                    stream: stream.id(),
                })?;
                if worker.args.durability != Durability::None {
                    wal.sync()?;
                }
                Ok(())
            };
            let removed = worker.data_dir.delete(&stream, log, || {
                worker.registry.remove(stream.id(), &stream);
            })?;
            removed
                .map(|()| worker.metrics.stream_removed(stream.id()))
                .map_err(|e| ApiError::Internal(format!("stream deleted, but its checkpoint: {e}")))
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    tracing::info!(stream = %id, "stream deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /streams/{id}/reset`: the next sample starts a new sequence. Logged
/// first; the model is reset only once the record is durable.
pub async fn reset(
    State(state): State<Arc<AppState>>,
    Path(raw_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = StreamId::new(raw_id)?;
    state.wal()?;
    let worker = Arc::clone(&state);
    let (step, _) = on_stream_logged(
        &state,
        &id,
        Find::Existing,
        move |stream, slot| {
            ready(stream.id(), slot)?;
            let lsn = worker.wal()?.append(&EntryRef::Reset {
                stream: stream.id(),
            })?;
            Ok((lsn, lsn))
        },
        |stream, slot, lsn| {
            let st = ready(stream.id(), slot)?;
            st.reset();
            st.wal_lsn = lsn;
            stream.mark_changed();
            Ok(st.model.steps())
        },
    )
    .await?;
    Ok(Json(
        json!({ "id": id.as_str(), "reset": true, "step": step }),
    ))
}

#[cfg(test)]
mod tests {
    //! Log → durable → apply for `PUT` and reset, with the log's fsync
    //! failed between the append and the (delayed) group fsync — the case
    //! a full or read-only disk cannot produce (those fail the append).

    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Method, Request};
    use tower::ServiceExt;

    use super::*;
    use crate::server::{checkpointer, routes, ServeArgs};
    use crate::store::StorageFault;

    /// A ready server state on `dir` whose group fsync waits a second, so
    /// a test can fail the log after a record is appended and before it is
    /// synced.
    fn state(dir: &std::path::Path) -> Arc<AppState> {
        let args = ServeArgs::try_parse_from([
            "serve",
            "--data-dir",
            dir.to_str().unwrap(),
            "--durability",
            "group",
            "--group-commit-ms",
            "1000",
            "--checkpoint-interval-secs",
            "0",
        ])
        .unwrap();
        let state = AppState::new(args).unwrap();
        checkpointer::load(&state).unwrap();
        state.ready.store(true, Ordering::Release);
        Arc::new(state)
    }

    /// Send a request through the router; (status, JSON body).
    async fn call(state: &Arc<AppState>, method: Method, path: &str, body: Value) -> (u16, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = routes::router(Arc::clone(state))
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Send a request and fail the log's fsync as soon as its record is
    /// appended (the group fsync is a second away), so the record is lost.
    async fn call_losing_its_record(
        state: &Arc<AppState>,
        method: Method,
        path: &str,
        body: Value,
    ) -> (u16, Value) {
        let wal = state.wal().unwrap();
        let before = wal.next_lsn();
        let request = tokio::spawn({
            let (state, path) = (Arc::clone(state), path.to_owned());
            async move { call(&state, method, &path, body).await }
        });
        tokio::time::timeout(Duration::from_secs(10), async {
            while wal.next_lsn() == before {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the request appends its record");
        wal.inject_fsync_failure(StorageFault::Io);
        request.await.unwrap()
    }

    fn assert_wal_unavailable(status: u16, body: &Value) {
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "wal_unavailable", "{body}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_put_or_reset_whose_record_is_lost_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        let (status, _) = call(&state, Method::PUT, "/streams/s", json!({"threshold": 0.5})).await;
        assert_eq!(status, 201);
        let batch = json!([
            {"value": 1.0, "timestamp": "2026-11-27T01:00:00"},
            {"value": 2.0, "timestamp": "2026-11-27T02:00:00"},
        ]);
        assert_eq!(call(&state, Method::POST, "/streams/s", batch).await.0, 200);

        // Replacing the configuration: refused, the stream as it was.
        let (status, body) =
            call_losing_its_record(&state, Method::PUT, "/streams/s", json!({"threshold": 0.9}))
                .await;
        assert_wal_unavailable(status, &body);
        let (_, desc) = call(&state, Method::GET, "/streams/s", Value::Null).await;
        assert_eq!(desc["config"]["threshold"], 0.5, "{desc}");
        assert_eq!(desc["stats"]["samples"], 2, "{desc}");

        // Reset: refused, so an earlier timestamp is still out of order.
        let (status, body) =
            call_losing_its_record(&state, Method::POST, "/streams/s/reset", Value::Null).await;
        assert_wal_unavailable(status, &body);
        let earlier = json!({"value": 1.0, "timestamp": "2026-11-27T00:00:00"});
        let (status, body) = call(&state, Method::POST, "/streams/s", earlier).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (409, &json!("out_of_order"))
        );

        // Creating a stream: refused, no stream left behind.
        let (status, body) =
            call_losing_its_record(&state, Method::PUT, "/streams/new", json!({})).await;
        assert_wal_unavailable(status, &body);
        let (status, _) = call(&state, Method::GET, "/streams/new", Value::Null).await;
        assert_eq!(status, 404);
        assert!(state.registry.get(&StreamId::new("new").unwrap()).is_none());

        // The log recovers with the next change, which is applied.
        let (status, desc) =
            call(&state, Method::PUT, "/streams/s", json!({"threshold": 0.9})).await;
        assert_eq!(status, 200, "{desc}");
        assert_eq!(
            (&desc["config"]["threshold"], &desc["stats"]["samples"]),
            (&json!(0.9), &json!(0))
        );
    }
}
