//! The router — the only code that builds it — and its layer stack.
//!
//! [`ROUTES`] lists every (method, path) the router serves; a test compares
//! it with `proto/openapi.yaml` so code and contract cannot drift.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::server::error::{json_error_bodies, no_route, ApiError};
use crate::server::metrics::track_http;
use crate::server::{
    auth, body_deadline, checkpointer, feed, health, ingest, streams, ws, AppState,
};

/// Every route: (method, path template as in the OpenAPI document).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/checkpoint"),
    ("GET", "/feed"),
    ("GET", "/streams"),
    ("POST", "/streams/{id}"),
    ("PUT", "/streams/{id}"),
    ("GET", "/streams/{id}"),
    ("DELETE", "/streams/{id}"),
    ("POST", "/streams/{id}/reset"),
    ("GET", "/streams/{id}/ws"),
];

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    use axum::response::IntoResponse;
    ApiError::Internal("the request handler panicked".into()).into_response()
}

/// The application: every route with auth, limits, metrics, tracing.
pub fn router(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/metrics", get(health::metrics))
        .route("/checkpoint", post(checkpointer::post))
        .route("/feed", get(feed::subscribe))
        .route("/streams", get(streams::list))
        .route(
            "/streams/{id}",
            post(ingest::post)
                .put(streams::put)
                .get(streams::get_one)
                .delete(streams::delete),
        )
        .route("/streams/{id}/reset", post(streams::reset))
        .route("/streams/{id}/ws", get(ws::upgrade))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require_token,
        ));
    let open = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz));
    let max_body = state.args.max_body_bytes;
    protected
        .merge(open)
        .fallback(no_route)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            body_deadline::limit_body_time,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(middleware::from_fn(json_error_bodies))
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            track_http,
        ))
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}
