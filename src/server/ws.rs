//! WebSocket ingest: `GET /streams/{id}/ws`. Each text (or binary) frame is
//! one sample or a batch, exactly as a `POST` body; each is answered, in
//! order, by one frame holding its result(s) or `{"error": {...}}`.
//! On shutdown the server closes the socket with code 1001 after finishing
//! the frame in progress.

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;

use crate::server::error::ApiError;
use crate::server::ingest::ingest;
use crate::server::sample::parse_json;
use crate::server::AppState;
use crate::store::StreamId;

/// `GET /streams/{id}/ws`.
pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    Path(raw_id): Path<String>,
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
        .on_upgrade(move |socket| tracker.track_future(run(state, id, socket))))
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

/// Tell a WebSocket peer the server is going away (close code 1001); used by
/// ingest sessions and feed subscribers at shutdown.
pub(crate) async fn close_for_shutdown(socket: &mut WebSocket) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: axum::extract::ws::close_code::AWAY,
            reason: "server shutting down".into(),
        })))
        .await;
}

async fn run(state: Arc<AppState>, id: StreamId, mut socket: WebSocket) {
    state.metrics.ws_connections(1);
    loop {
        let frame = tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => {
                close_for_shutdown(&mut socket).await;
                break;
            }
            incoming = socket.recv() => incoming,
        };
        let reply = match frame {
            Some(Ok(Message::Text(t))) => answer_frame(&state, &id, t.as_bytes()).await,
            Some(Ok(Message::Binary(b))) => answer_frame(&state, &id, &b).await,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
        };
        if socket.send(Message::Text(reply.into())).await.is_err() {
            break;
        }
    }
    state.metrics.ws_connections(-1);
}
