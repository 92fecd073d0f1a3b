//! `GET /healthz` (the process answers), `GET /readyz` (checkpoints are
//! loaded and the server takes samples) and `GET /metrics` (Prometheus text).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::server::error::ApiError;
use crate::server::AppState;
use crate::store::Slot;

/// `GET /healthz`.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 once checkpoints are loaded, 503 before and during
/// shutdown. A data dir that is full or read-only keeps it at 200 (reads
/// are served; writes answer 507/503 and recover by themselves) but shows
/// `"storage": "degraded"` with the last error.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    if state.shutdown.is_cancelled() {
        return Err(ApiError::Unavailable {
            code: "shutting_down",
            message: "the server is shutting down".into(),
        });
    }
    state.ensure_ready()?;
    let storage_error = state.wal().ok().and_then(|w| w.storage_error());
    Ok((
        StatusCode::OK,
        Json(json!({
            "status": "ready",
            "streams": state.registry.len(),
            "storage": if storage_error.is_some() { "degraded" } else { "ok" },
            "storage_error": storage_error,
        })),
    )
        .into_response())
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let worker = Arc::clone(&state);
    let text = tokio::task::spawn_blocking(move || {
        let memory: usize = worker
            .registry
            .snapshot()
            .iter()
            .map(|s| match &*s.lock() {
                Slot::Ready(st) => st.model.memory_bytes(),
                _ => 0,
            })
            .sum();
        worker.metrics.set_streams(worker.registry.len(), memory);
        let residency = worker.registry.residency();
        worker
            .metrics
            .set_residency(residency.resident(), residency.resident_bytes());
        worker.metrics.render()
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
