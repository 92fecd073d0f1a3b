//! The body deadline (`--body-timeout-secs`): a request's whole body must
//! arrive within this time of its headers, so a client sending a body a
//! byte at a time cannot hold a connection and an ingest slot for ever.
//!
//! A middleware gives every request body a fixed deadline (not one that
//! restarts with each chunk, as an inactivity timeout would: a dribbling
//! client resets those). Reading past it fails with [`BodyDeadline`], which
//! [`crate::server::error::body_rejection`] answers 408 `request_timeout`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt;
use tokio::time::{timeout_at, Instant};

use crate::server::AppState;

/// The body did not arrive before its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyDeadline(pub Duration);

/// Middleware: bound the time to read the request's body.
pub async fn limit_body_time(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let allowed = Duration::from_secs(state.args.body_timeout_secs);
    let deadline = Instant::now() + allowed;
    let req = req.map(|body| {
        if body.is_end_stream() {
            return body; // nothing to wait for (GETs, WebSocket handshakes)
        }
        let chunks = body.into_data_stream();
        Body::from_stream(futures_util::stream::unfold(
            Some(chunks),
            move |chunks| async move {
                let mut chunks = chunks?;
                match timeout_at(deadline, chunks.next()).await {
                    Ok(Some(chunk)) => Some((chunk.map_err(axum::BoxError::from), Some(chunks))),
                    Ok(None) => None,
                    // End the stream after the error: nothing more is read.
                    Err(_) => Some((Err(BodyDeadline(allowed).into()), None)),
                }
            },
        ))
    });
    let resp = next.run(req).await;
    if resp.status() == StatusCode::REQUEST_TIMEOUT {
        state.metrics.http_timeout("body");
    }
    resp
}

/// Whether `error` (or an error it wraps) is a [`BodyDeadline`].
pub fn is_body_deadline(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<BodyDeadline>() {
            return true;
        }
        current = e.source();
    }
    false
}
