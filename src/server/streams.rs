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
use crate::server::ordered::{on_stream, ready, Find};
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

/// `PUT /streams/{id}`: 201 when created, 200 when replaced.
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
    let ((desc, lsn), created) =
        on_stream(&state, &id, Find::OrCreate(&make), move |stream, slot| {
            // Unchanged only if it is this configuration, untouched, and its
            // creation is already logged.
            let replaced_current = match slot {
                Slot::Ready(st) => {
                    st.config == fresh.config && st.model.steps() == 0 && st.wal_lsn != 0
                }
                _ => false,
            };
            let mut lsn = 0;
            if !replaced_current {
                lsn = worker.wal()?.append(&EntryRef::Put {
                    stream: stream.id(),
                    config: &fresh.config,
                })?;
                if matches!(slot, Slot::Broken(_)) {
                    metrics.checkpoint_replaced(stream.id());
                }
                let mut st = fresh.clone();
                st.wal_lsn = lsn;
                *slot = Slot::Ready(Box::new(st));
                stream.mark_changed();
            }
            let Slot::Ready(st) = slot else {
                unreachable!("just set")
            };
            Ok((describe(stream, st), lsn))
        })
        .await?;
    if lsn != 0 {
        state.acknowledge(lsn).await?;
    }
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

/// `POST /streams/{id}/reset`: the next sample starts a new sequence.
pub async fn reset(
    State(state): State<Arc<AppState>>,
    Path(raw_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = StreamId::new(raw_id)?;
    state.wal()?;
    let worker = Arc::clone(&state);
    let ((step, lsn), _) = on_stream(&state, &id, Find::Existing, move |stream, slot| {
        let st = ready(stream.id(), slot)?;
        let lsn = worker.wal()?.append(&EntryRef::Reset {
            stream: stream.id(),
        })?;
        st.reset();
        st.wal_lsn = lsn;
        stream.mark_changed();
        Ok((st.model.steps(), lsn))
    })
    .await?;
    state.acknowledge(lsn).await?;
    Ok(Json(
        json!({ "id": id.as_str(), "reset": true, "step": step }),
    ))
}
