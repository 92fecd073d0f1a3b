//! Sample ingest: `POST /streams/{id}` (one sample, a JSON batch or NDJSON)
//! and the shared path that WebSocket ingest uses too.
//!
//! A request is validated completely before the model sees it; a batch is
//! applied in order under one turn of the stream, so it is never interleaved
//! with another request's samples, and a rejected batch changes nothing.
//! An accepted batch is appended to the write-ahead log and the model steps
//! on it only once the record is as durable as `--durability` requires: a
//! record that fails (disk full, fsync error) leaves the model exactly as
//! it was, so the model only ever holds acknowledged samples.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::server::error::{body_rejection, ApiError};
use crate::server::ordered::{on_stream_logged, ready, Find};
use crate::server::sample::{self, join_results, result_json, Shape};
use crate::server::AppState;
use crate::store::wal::EntryRef;
use crate::store::{Sample, StreamConfig, StreamId, StreamState};

/// Apply `samples` to stream `id` (created with the default preset unless
/// `--no-auto-create`), publish the results to the feed, and return the
/// body of the answer in `shape`.
pub async fn ingest(
    state: &Arc<AppState>,
    id: &StreamId,
    samples: Vec<Sample>,
    shape: Shape,
) -> Result<String, ApiError> {
    let make = || {
        StreamState::new(
            id.clone(),
            StreamConfig::with_preset(&state.args.default_preset, state.args.default_threshold),
        )
        .map_err(ApiError::from)
    };
    let find = if state.args.no_auto_create {
        Find::Existing
    } else {
        Find::OrCreate(&make)
    };
    let samples = Arc::new(samples);
    let logged = Arc::clone(&samples);
    let worker_state = Arc::clone(state);
    let result = on_stream_logged(
        state,
        id,
        find,
        move |stream, slot| {
            let st = ready(stream.id(), slot)?;
            st.check(&logged)?;
            // The first record of a new stream carries its configuration,
            // so replay can create it.
            let lsn = worker_state.wal()?.append(&EntryRef::Samples {
                stream: stream.id(),
                config: (st.wal_lsn == 0).then_some(&st.config),
                samples: &logged,
            })?;
            Ok((lsn, lsn))
        },
        {
            let state = Arc::clone(state);
            move |stream, slot, lsn| {
                let st = ready(stream.id(), slot)?;
                let mut applied = Vec::with_capacity(samples.len());
                let mut parts = Vec::with_capacity(samples.len());
                for s in samples.iter() {
                    let start = Instant::now();
                    st.apply(std::slice::from_ref(s), &mut applied)?;
                    let took = start.elapsed();
                    let a = applied.last().expect("one result per sample");
                    state.metrics.sample(stream.id(), a.is_anomaly, took);
                    parts.push(result_json(stream.id(), a));
                }
                st.wal_lsn = lsn;
                stream.mark_changed();
                state.feed.publish(stream.id(), &applied, &parts);
                Ok(join_results(&parts, shape))
            }
        },
    )
    .await
    .map(|(body, _)| body);
    match result {
        Ok(body) => Ok(body),
        Err(e) => {
            state.metrics.rejected(e.code());
            Err(e)
        }
    }
}

/// Parse a body by its content type: NDJSON for `application/x-ndjson` or
/// `application/ndjson`, JSON otherwise.
pub fn parse_body(
    headers: &HeaderMap,
    body: &[u8],
    max_batch: usize,
) -> Result<(Shape, Vec<Sample>), ApiError> {
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.trim_start();
            ct.starts_with("application/x-ndjson") || ct.starts_with("application/ndjson")
        });
    if ndjson {
        Ok((Shape::Ndjson, sample::parse_ndjson(body, max_batch)?))
    } else {
        sample::parse_json(body, max_batch)
    }
}

/// `POST /streams/{id}`.
pub async fn post(
    State(state): State<Arc<AppState>>,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let outcome = async {
        let id = StreamId::new(raw_id)?;
        let body = body.map_err(body_rejection)?;
        let (shape, samples) = parse_body(&headers, &body, state.args.max_batch)?;
        let text = ingest(&state, &id, samples, shape).await?;
        let ct = if shape == Shape::Ndjson {
            "application/x-ndjson"
        } else {
            "application/json"
        };
        Ok::<_, ApiError>(
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, HeaderValue::from_static(ct))],
                text,
            )
                .into_response(),
        )
    }
    .await;
    if let Err(e) = &outcome {
        // Errors from `ingest` were counted there.
        if matches!(e, ApiError::BadRequest { .. } | ApiError::TooLarge(_)) {
            state.metrics.rejected(e.code());
        }
    }
    outcome
}
