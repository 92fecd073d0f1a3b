//! The accept loop: HTTP/1.1 connections (with upgrades, for WebSockets)
//! served with the limits `axum::serve` does not offer.
//!
//! - `--header-timeout-secs`: a request's headers must arrive within this
//!   time of the connection opening or of the previous answer; a client
//!   that dribbles them (slowloris) or leaves a keep-alive connection idle
//!   is disconnected; the two are counted apart
//!   ([`between_requests`](crate::server::between_requests)).
//! - `--max-connections`: open connections, WebSocket sessions included.
//!   One over the limit is answered `503 too_many_connections` and closed
//!   at once, without reading from it, so a flood of sockets cannot starve
//!   the clients already connected.
//!
//! Each connection holds a [`ConnectionSlot`] until it ends; a request
//! carries it in its extensions so a WebSocket session can keep it after
//! the HTTP connection is handed over.
//!
//! At shutdown the loop stops accepting, lets each connection finish the
//! request in progress (hyper's graceful shutdown) for up to
//! [`SHUTDOWN_GRACE`], and waits for them.

use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::server::between_requests::Watched;
use crate::server::AppState;

/// How long requests in progress at shutdown may take to finish. A client
/// still sending its headers or body after it is disconnected, so that a
/// slow client cannot hold up the final checkpoints (container runtimes
/// kill a process 10 s after asking it to stop).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// One of `--max-connections` slots, held by a connection and by the
/// WebSocket session it may become; the slot is free (and
/// `htm_connections_open` lower) when both are gone.
#[derive(Debug, Clone)]
pub struct ConnectionSlot {
    _held: Arc<HeldSlot>,
}

#[derive(Debug)]
struct HeldSlot {
    _permit: OwnedSemaphorePermit,
    state: Arc<AppState>,
}

impl HeldSlot {
    fn new(permit: OwnedSemaphorePermit, state: Arc<AppState>) -> HeldSlot {
        state.metrics.connections_open(1);
        HeldSlot {
            _permit: permit,
            state,
        }
    }
}

impl Drop for HeldSlot {
    fn drop(&mut self) {
        self.state.metrics.connections_open(-1);
    }
}

/// What a connection over the limit receives before it is closed: a
/// complete HTTP/1.1 response, so the client sees why.
fn refusal(max_connections: usize) -> Vec<u8> {
    let body = format!(
        "{{\"error\":{{\"code\":\"too_many_connections\",\"message\":\"the server already has {max_connections} open connections; retry later\"}}}}"
    );
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Accept connections on `listener` and serve `app` on each until
/// `state.shutdown` is cancelled; then wait for open connections to finish
/// their requests.
pub async fn serve(state: Arc<AppState>, listener: TcpListener, app: Router) {
    let slots = Arc::new(Semaphore::new(state.args.max_connections));
    let refused = refusal(state.args.max_connections);
    let connections = TaskTracker::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(state.args.header_timeout_secs));

    loop {
        let stream = tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    accept_failed(&state, &e).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            refuse(&state, &stream, &refused);
            continue;
        };
        let slot = ConnectionSlot {
            _held: Arc::new(HeldSlot::new(permit, Arc::clone(&state))),
        };
        let _ = stream.set_nodelay(true);
        let service = app.clone().map_request(move |req: Request<Incoming>| {
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(slot.clone());
            req
        });
        let (stream, mid_request) = Watched::new(stream);
        let conn = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .with_upgrades();
        let state = Arc::clone(&state);
        connections.spawn(async move {
            let mut conn = pin!(conn);
            let served = tokio::select! {
                served = conn.as_mut() => served,
                _ = state.shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    tokio::time::timeout(SHUTDOWN_GRACE, conn).await.unwrap_or(Ok(()))
                }
            };
            if let Err(e) = served {
                if e.is_timeout() {
                    let phase = if mid_request.load(Ordering::Relaxed) {
                        "header"
                    } else {
                        "idle"
                    };
                    state.metrics.http_timeout(phase);
                }
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    connections.close();
    connections.wait().await;
}

/// Answer `503 too_many_connections` without reading and close. The write
/// does not wait: a peer whose receive window is full gets nothing.
fn refuse(state: &AppState, stream: &TcpStream, refused: &[u8]) {
    state.metrics.connection_refused();
    let _ = stream.try_write(refused);
}

/// An `accept` error (e.g. out of file descriptors) must not end the
/// server, nor spin: log it, count it, and pause briefly before retrying.
async fn accept_failed(state: &AppState, e: &std::io::Error) {
    tracing::warn!(error = %e, "accepting a connection failed");
    state.metrics.accept_error();
    tokio::time::sleep(Duration::from_millis(50)).await;
}
