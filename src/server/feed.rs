//! The anomaly feed: `GET /feed` is a WebSocket on which the server pushes
//! results as they are computed.
//!
//! Results go through a `tokio::sync::broadcast` channel of
//! `--feed-capacity` messages. Publishing never waits, so a slow subscriber
//! never slows ingestion: when it falls more than the capacity behind it
//! loses the oldest messages, receives `{"type":"lagged","missed":N}`, and
//! the loss is counted in a metric.
//!
//! Filters: `?all=true` (every result, not only anomalies),
//! `?streams=a,b`, `?min_log_likelihood=0.5`.
//!
//! Limits, so idle or dead subscribers cannot pile up: at most
//! `--max-feed-subscribers` at once (one more is answered 503
//! `too_many_subscribers` before the upgrade); every
//! `--ws-ping-interval-secs` the server pings each subscriber, and drops
//! one that has sent nothing (no pong) for two intervals or that cannot
//! take a message within two intervals.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{close_code, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;
use tokio::sync::{broadcast, Semaphore};
use tokio::time::{interval_at, Instant, MissedTickBehavior};

use crate::server::connections::ConnectionSlot;
use crate::server::error::ApiError;
use crate::server::ws::{close_with, is_too_big, send_within};
use crate::server::AppState;
use crate::store::{Applied, StreamId};

/// One result as pushed to subscribers, serialized once for all of them.
#[derive(Debug)]
pub struct FeedEvent {
    /// The stream it belongs to.
    pub stream: StreamId,
    /// For `min_log_likelihood`.
    pub log_likelihood: f64,
    /// Anomalies go to every subscriber, other results only with `all`.
    pub is_anomaly: bool,
    /// The complete message text: `{"type":"result","result":{...}}`.
    pub message: String,
}

/// The publishing side of the feed.
#[derive(Debug, Clone)]
pub struct Feed {
    tx: broadcast::Sender<Arc<FeedEvent>>,
    /// Subscribers with `all=true`; with none, non-anomalies are not sent.
    all_subscribers: Arc<AtomicUsize>,
    /// One permit per allowed subscriber (`--max-feed-subscribers`).
    slots: Arc<Semaphore>,
}

impl Feed {
    /// A feed buffering `capacity` messages per subscriber, for at most
    /// `max_subscribers` subscribers.
    pub fn new(capacity: usize, max_subscribers: usize) -> Feed {
        let (tx, _) = broadcast::channel(capacity);
        Feed {
            tx,
            all_subscribers: Arc::new(AtomicUsize::new(0)),
            slots: Arc::new(Semaphore::new(max_subscribers)),
        }
    }

    /// Publish results (`parts[i]` is the JSON of `applied[i]`). Never waits.
    pub fn publish(&self, id: &StreamId, applied: &[Applied], parts: &[String]) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let all = self.all_subscribers.load(Ordering::Acquire) > 0;
        for (a, json) in applied.iter().zip(parts) {
            if a.is_anomaly || all {
                let _ = self.tx.send(Arc::new(FeedEvent {
                    stream: id.clone(),
                    log_likelihood: a.output.log_likelihood,
                    is_anomaly: a.is_anomaly,
                    message: format!("{{\"type\":\"result\",\"result\":{json}}}"),
                }));
            }
        }
    }
}

/// Query of `GET /feed`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// Comma-separated stream ids; absent = all streams.
    pub streams: Option<String>,
    /// Only results whose log-likelihood is at least this.
    pub min_log_likelihood: Option<f64>,
    /// Every result, not only anomalies.
    #[serde(default)]
    pub all: bool,
}

/// A subscriber's filter.
#[derive(Debug, Clone)]
struct Filter {
    streams: Option<HashSet<StreamId>>,
    min_log_likelihood: Option<f64>,
    all: bool,
}

impl Filter {
    fn parse(q: FeedQuery) -> Result<Filter, ApiError> {
        let streams = match q.streams {
            None => None,
            Some(list) => Some(
                list.split(',')
                    .filter(|s| !s.is_empty())
                    .map(StreamId::new)
                    .collect::<Result<HashSet<_>, _>>()?,
            ),
        };
        if let Some(m) = q.min_log_likelihood {
            if !m.is_finite() {
                return Err(ApiError::bad_request(
                    "bad_query",
                    "min_log_likelihood must be a finite number",
                ));
            }
        }
        Ok(Filter {
            streams,
            min_log_likelihood: q.min_log_likelihood,
            all: q.all,
        })
    }

    fn accepts(&self, e: &FeedEvent) -> bool {
        (self.all || e.is_anomaly)
            && self.streams.as_ref().is_none_or(|s| s.contains(&e.stream))
            && self
                .min_log_likelihood
                .is_none_or(|m| e.log_likelihood >= m)
    }
}

/// `GET /feed`.
pub async fn subscribe(
    State(state): State<Arc<AppState>>,
    query: Result<Query<FeedQuery>, QueryRejection>,
    connection: Option<Extension<ConnectionSlot>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let ws = ws.map_err(crate::server::ws::not_websocket)?;
    let filter = Filter::parse(q)?;
    let slot = Arc::clone(&state.feed.slots)
        .try_acquire_owned()
        .map_err(|_| too_many_subscribers(state.args.max_feed_subscribers))?;
    // Subscribe before answering, so nothing published after the upgrade
    // response is missed.
    let rx = state.feed.tx.subscribe();
    let tracker = state.tasks.clone();
    Ok(ws
        .max_message_size(SUBSCRIBER_MESSAGE_LIMIT)
        .on_upgrade(move |socket| {
            tracker.track_future(async move {
                run_subscriber(state, socket, rx, filter).await;
                drop((slot, connection));
            })
        }))
}

/// Subscribers only answer pings; anything larger is refused (close 1009).
const SUBSCRIBER_MESSAGE_LIMIT: usize = 4096;

fn too_many_subscribers(max: usize) -> ApiError {
    ApiError::Unavailable {
        code: "too_many_subscribers",
        message: format!("the feed already has {max} subscribers; retry later"),
    }
}

async fn run_subscriber(
    state: Arc<AppState>,
    mut socket: WebSocket,
    mut rx: broadcast::Receiver<Arc<FeedEvent>>,
    filter: Filter,
) {
    let all_guard = filter.all.then(|| {
        state.feed.all_subscribers.fetch_add(1, Ordering::AcqRel);
        Arc::clone(&state.feed.all_subscribers)
    });
    state.metrics.feed_subscribers(1);
    let ping_every = Duration::from_secs(state.args.ws_ping_interval_secs);
    let mut pings = interval_at(Instant::now() + ping_every, ping_every);
    pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => {
                super::ws::close_for_shutdown(&mut socket).await;
                break;
            }
            incoming = socket.recv() => match incoming {
                Some(Err(e)) if is_too_big(&e) => {
                    state.metrics.ws_closed("too_big");
                    close_with(&mut socket, close_code::SIZE, "a subscriber message over 4096 bytes").await;
                    break;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                // pongs and anything else: the subscriber is alive
                Some(Ok(_)) => last_heard = Instant::now(),
            },
            _ = pings.tick() => {
                if last_heard.elapsed() >= 2 * ping_every {
                    state.metrics.ws_closed("no_pong");
                    close_with(&mut socket, close_code::POLICY, "no pong").await;
                    break;
                }
                if !send_within(&mut socket, Message::Ping(Default::default()), 2 * ping_every).await {
                    state.metrics.ws_closed("slow_reader");
                    break;
                }
            }
            event = rx.recv() => {
                let text = match event {
                    Ok(e) if filter.accepts(&e) => e.message.clone(),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        state.metrics.feed_dropped(n);
                        format!("{{\"type\":\"lagged\",\"missed\":{n}}}")
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if !send_within(&mut socket, Message::Text(text.into()), 2 * ping_every).await {
                    state.metrics.ws_closed("slow_reader");
                    break;
                }
            }
        }
    }
    state.metrics.feed_subscribers(-1);
    if let Some(all) = all_guard {
        all.fetch_sub(1, Ordering::AcqRel);
    }
}
