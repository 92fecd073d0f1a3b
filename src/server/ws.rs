//! WebSocket ingest: `GET /streams/{id}/ws`. Each text (or binary) frame is
//! one sample or a batch, exactly as a `POST` body; each is answered, in
//! order, by one frame holding its result(s) or `{"error": {...}}`.
//! On shutdown the server closes the socket with code 1001 after finishing
//! the frame in progress.
//!
//! Limits: a message over `--max-body-bytes` is refused with close code
//! 1009 (without reading it); a session without a frame from its client
//! for `--ws-idle-timeout-secs` is closed with code 1000; a reply the
//! client does not take within twice `--ws-ping-interval-secs` ends the
//! session. The session keeps its connection's `--max-connections` slot.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{close_code, CloseCode, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Extension;

use crate::server::connections::ConnectionSlot;
use crate::server::error::ApiError;
use crate::server::ingest::ingest;
use crate::server::sample::parse_json;
use crate::server::AppState;
use crate::store::StreamId;

/// `GET /streams/{id}/ws`.
pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    Path(raw_id): Path<String>,
    slot: Option<Extension<ConnectionSlot>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let id = StreamId::new(raw_id)?;
    let ws = ws.map_err(not_websocket)?;
    state.ensure_ready()?;
    let limit = state.args.max_body_bytes;
    let tracker = state.tasks.clone();
    Ok(ws
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            tracker.track_future(async move {
                run(state, id, socket).await;
                drop(slot);
            })
        }))
}

/// 400 `not_websocket` for a request to a WebSocket endpoint that is not a
/// WebSocket handshake (axum's own rejection is plain text).
pub(crate) fn not_websocket(rejection: WebSocketUpgradeRejection) -> ApiError {
    ApiError::bad_request(
        "not_websocket",
        format!("not a WebSocket handshake: {}", rejection.body_text()),
    )
}

/// Answer one frame: the result body, or the JSON error.
pub async fn answer_frame(state: &Arc<AppState>, id: &StreamId, frame: &[u8]) -> String {
    let outcome = async {
        let (shape, samples) = parse_json(frame, state.args.max_batch)?;
        ingest(state, id, samples, shape).await
    }
    .await;
    match outcome {
        Ok(text) => text,
        Err(e) => e.body().to_string(),
    }
}

/// Close a WebSocket with `code` and `reason`; used for shutdown (1001),
/// idle sessions (1000), oversized messages (1009) and dead subscribers
/// (1008). The peer may be gone or not reading: the close frame gets a
/// second, and a failed close is of no consequence.
pub(crate) async fn close_with(socket: &mut WebSocket, code: CloseCode, reason: &str) {
    let close = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    let _ = send_within(socket, close, Duration::from_secs(1)).await;
}

/// Tell a WebSocket peer the server is going away (close code 1001); used by
/// ingest sessions and feed subscribers at shutdown.
pub(crate) async fn close_for_shutdown(socket: &mut WebSocket) {
    close_with(socket, close_code::AWAY, "server shutting down").await;
}

/// Whether a receive error is a message or frame over the size limit.
pub(crate) fn is_too_big(error: &axum::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(tungstenite::Error::Capacity(_)) = e.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// Send `message`, giving up after `limit` (a client that does not read
/// must not hold the session for ever). `false`: the session is over.
pub(crate) async fn send_within(socket: &mut WebSocket, message: Message, limit: Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, socket.send(message)).await,
        Ok(Ok(()))
    )
}

async fn run(state: Arc<AppState>, id: StreamId, mut socket: WebSocket) {
    state.metrics.ws_connections(1);
    let idle_limit = Duration::from_secs(state.args.ws_idle_timeout_secs);
    let send_limit = Duration::from_secs(2 * state.args.ws_ping_interval_secs);
    loop {
        let frame = tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => {
                close_for_shutdown(&mut socket).await;
                break;
            }
            incoming = tokio::time::timeout(idle_limit, socket.recv()) => incoming,
        };
        let reply = match frame {
            Err(_) => {
                state.metrics.ws_closed("idle");
                let reason = format!("no frame for {} s", idle_limit.as_secs());
                close_with(&mut socket, close_code::NORMAL, &reason).await;
                break;
            }
            Ok(Some(Ok(Message::Text(t)))) => answer_frame(&state, &id, t.as_bytes()).await,
            Ok(Some(Ok(Message::Binary(b)))) => answer_frame(&state, &id, &b).await,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Err(e))) if is_too_big(&e) => {
                state.metrics.ws_closed("too_big");
                let reason = format!("message over {} bytes", state.args.max_body_bytes);
                close_with(&mut socket, close_code::SIZE, &reason).await;
                break;
            }
            Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) => break,
        };
        if !send_within(&mut socket, Message::Text(reply.into()), send_limit).await {
            state.metrics.ws_closed("slow_reader");
            break;
        }
    }
    state.metrics.ws_connections(-1);
}
