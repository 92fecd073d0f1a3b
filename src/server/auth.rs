//! Optional bearer-token authentication. With `--token` set, every route
//! this middleware is layered on (all but `/healthz` and `/readyz`) needs
//! `Authorization: Bearer <token>`; otherwise it answers 401.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::server::error::ApiError;
use crate::server::AppState;

/// Compare in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `authorization` (the header value) carries `token`.
pub fn authorized(token: &str, authorization: Option<&[u8]>) -> bool {
    authorization
        .and_then(|v| v.strip_prefix(b"Bearer "))
        .is_some_and(|given| same(given.trim_ascii(), token.as_bytes()))
}

/// Middleware: require the token when one is configured.
pub async fn require_token(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(token) = &state.args.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !authorized(token, given) {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_passes() {
        assert!(authorized("s3cret", Some(b"Bearer s3cret")));
        assert!(!authorized("s3cret", Some(b"Bearer s3cre")));
        assert!(!authorized("s3cret", Some(b"Bearer s3cret2")));
        assert!(!authorized("s3cret", Some(b"Basic s3cret")));
        assert!(!authorized("s3cret", Some(b"s3cret")));
        assert!(!authorized("s3cret", None));
    }
}
