//! `ApiError`: every error the API answers, with its HTTP status and the
//! JSON body `{"error": {"code": "...", "message": "..."}}` (plus `field`
//! for configuration errors). Also the middleware that gives the same JSON
//! shape to errors produced outside the handlers (body limit, unknown
//! method).

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::store::{
    Broken, ConfigError, InvalidStreamId, Rejected, StorageFault, StreamId, TooManyStreams,
};

/// An error answer of the API.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed JSON, a bad sample, a bad stream id.
    #[error("{message}")]
    BadRequest {
        /// Machine-readable code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// 401: missing or wrong bearer token.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// 404: no such stream or route.
    #[error("{message}")]
    NotFound {
        /// Machine-readable code.
        code: &'static str,
        /// What was not found.
        message: String,
    },
    /// 405: the route exists, the method does not.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// 408: the request body did not arrive within `--body-timeout-secs`.
    #[error("{0}")]
    RequestTimeout(String),
    /// 409: a sample earlier than the stream's last timestamp.
    #[error("{0}")]
    OutOfOrder(String),
    /// 413: body, message or batch too large.
    #[error("{0}")]
    TooLarge(String),
    /// 422: a configuration that cannot build a model.
    #[error("{0}")]
    InvalidConfig(ConfigError),
    /// 429: this stream has too many requests queued.
    #[error("{0}")]
    StreamBusy(String),
    /// 429: the server already knows `--max-streams` streams; a new one is
    /// refused until one is deleted (no `Retry-After`: waiting alone does
    /// not help).
    #[error("{0}")]
    TooManyStreams(String),
    /// 503: the server or this stream cannot serve now.
    #[error("{message}")]
    Unavailable {
        /// Machine-readable code.
        code: &'static str,
        /// Why.
        message: String,
    },
    /// 500: a bug or an I/O failure.
    #[error("{0}")]
    Internal(String),
    /// 507: the data dir is full; the change was not made.
    #[error("{0}")]
    InsufficientStorage(String),
}

impl ApiError {
    /// A 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// The 404 for a stream that does not exist.
    pub fn stream_not_found(id: &StreamId) -> ApiError {
        ApiError::NotFound {
            code: "stream_not_found",
            message: format!("no stream named {:?}", id.as_str()),
        }
    }

    /// The 503 for a stream whose checkpoint could not be loaded.
    pub fn broken_stream(id: &StreamId, broken: &Broken) -> ApiError {
        ApiError::Unavailable {
            code: "checkpoint_unreadable",
            message: format!(
                "stream {:?} is unavailable: its checkpoint could not be loaded ({}); the file was moved to {}. DELETE or PUT the stream to start it anew",
                id.as_str(),
                broken.reason,
                broken.moved_to.display()
            ),
        }
    }

    /// The 503 while checkpoints are still being loaded.
    pub fn not_ready() -> ApiError {
        ApiError::Unavailable {
            code: "not_ready",
            message: "checkpoints are still being loaded".into(),
        }
    }

    /// The 503 when every ingest slot is taken.
    pub fn overloaded() -> ApiError {
        ApiError::Unavailable {
            code: "overloaded",
            message: "the server is at its limit of requests in progress; retry shortly".into(),
        }
    }

    /// HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::OutOfOrder(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::InvalidConfig(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::StreamBusy(_) | ApiError::TooManyStreams(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
        }
    }

    /// Machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::NotFound { code, .. }
            | ApiError::Unavailable { code, .. } => code,
            ApiError::Unauthorized => "unauthorized",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::OutOfOrder(_) => "out_of_order",
            ApiError::TooLarge(_) => "too_large",
            ApiError::InvalidConfig(_) => "invalid_config",
            ApiError::StreamBusy(_) => "stream_busy",
            ApiError::TooManyStreams(_) => "too_many_streams",
            ApiError::Internal(_) => "internal",
            ApiError::InsufficientStorage(_) => "insufficient_storage",
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> serde_json::Value {
        let mut err = serde_json::json!({ "code": self.code(), "message": self.to_string() });
        if let ApiError::InvalidConfig(c) = self {
            err["field"] = c.field.clone().into();
        }
        serde_json::json!({ "error": err })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), Json(self.body())).into_response();
        match &self {
            ApiError::Unauthorized => {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::StreamBusy(_)
            | ApiError::Unavailable { .. }
            | ApiError::InsufficientStorage(_) => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        resp
    }
}

impl From<InvalidStreamId> for ApiError {
    fn from(e: InvalidStreamId) -> Self {
        ApiError::bad_request("bad_stream_id", e.to_string())
    }
}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> Self {
        ApiError::InvalidConfig(e)
    }
}

impl From<Rejected> for ApiError {
    fn from(e: Rejected) -> Self {
        ApiError::OutOfOrder(e.to_string())
    }
}

impl From<TooManyStreams> for ApiError {
    fn from(e: TooManyStreams) -> Self {
        ApiError::TooManyStreams(format!(
            "{e}; delete a stream or raise --max-streams to create more"
        ))
    }
}

impl From<crate::store::WalError> for ApiError {
    /// A full disk is 507 `insufficient_storage`; a read-only data dir is
    /// 503 `storage_unavailable`; any other log failure is 503
    /// `wal_unavailable`. In every case the change was not made.
    fn from(e: crate::store::WalError) -> Self {
        let message = format!("the change could not be logged durably and was not made: {e}");
        match e.fault() {
            Some(StorageFault::NoSpace) => ApiError::InsufficientStorage(message),
            Some(StorageFault::ReadOnly) => ApiError::Unavailable {
                code: "storage_unavailable",
                message,
            },
            Some(StorageFault::Io) | None => ApiError::Unavailable {
                code: "wal_unavailable",
                message,
            },
        }
    }
}

/// Map a body-reading failure (axum's rejection) to our error.
pub fn body_rejection(e: axum::extract::rejection::BytesRejection) -> ApiError {
    if crate::server::body_deadline::is_body_deadline(&e) {
        ApiError::RequestTimeout(format!(
            "{}; send the body faster or in smaller requests",
            e.body_text()
        ))
    } else if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge("request body is larger than the configured limit".into())
    } else {
        ApiError::bad_request("bad_body", e.body_text())
    }
}

/// Middleware: give error responses produced outside our handlers (tower's
/// body limit, axum's 405) the JSON error shape.
pub async fn json_error_bodies(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || resp.status().is_success() || resp.status().is_informational() {
        return resp;
    }
    match resp.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::TooLarge("request body is larger than the configured limit".into())
                .into_response()
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            let allow = resp.headers().get(header::ALLOW).cloned();
            let mut new = ApiError::MethodNotAllowed.into_response();
            if let Some(a) = allow {
                new.headers_mut().insert(header::ALLOW, a);
            }
            new
        }
        _ => resp,
    }
}

/// Fallback for unknown routes.
pub async fn no_route() -> ApiError {
    ApiError::NotFound {
        code: "no_route",
        message: "no such endpoint".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes() {
        let cases = [
            (ApiError::bad_request("bad_json", "x"), 400, "bad_json"),
            (ApiError::Unauthorized, 401, "unauthorized"),
            (ApiError::RequestTimeout("x".into()), 408, "request_timeout"),
            (ApiError::OutOfOrder("x".into()), 409, "out_of_order"),
            (ApiError::TooLarge("x".into()), 413, "too_large"),
            (ApiError::StreamBusy("x".into()), 429, "stream_busy"),
            (
                ApiError::from(TooManyStreams { max: 3 }),
                429,
                "too_many_streams",
            ),
            (ApiError::overloaded(), 503, "overloaded"),
            (
                ApiError::InsufficientStorage("x".into()),
                507,
                "insufficient_storage",
            ),
        ];
        for (e, status, code) in cases {
            assert_eq!(e.status().as_u16(), status);
            assert_eq!(e.body()["error"]["code"], code);
        }
    }

    #[test]
    fn config_errors_name_the_field() {
        let e = ApiError::from(ConfigError {
            field: "overrides.tm.cells_per_column".into(),
            message: "must be at least 1".into(),
        });
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.body()["error"]["field"], "overrides.tm.cells_per_column");
        assert!(e.body()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cells_per_column"));
    }
}
