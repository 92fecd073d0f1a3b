//! Hostile and careless clients against the real server over real sockets:
//! slowloris headers, slow bodies, a flood of connections, oversized and
//! idle WebSockets, feed subscribers that never answer pings, thousands of
//! idle subscribers. Each limit must cut off the offender and keep serving
//! everyone else. Timeouts are set to a second or two so the file runs in a
//! few seconds.

mod server_support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use server_support::{sine, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Read until the peer closes (or resets) the connection; what it sent.
async fn read_to_close(conn: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let _ = conn.read_to_end(&mut got).await;
    String::from_utf8_lossy(&got).into_owned()
}

/// The JSON body of a raw HTTP/1.1 response.
fn json_body(response: &str) -> Value {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// The value of an unlabelled or labelled metric line, 0 when absent.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// The next close frame's code, skipping other messages.
async fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| f.code),
            Ok(Some(Ok(_))) => continue,
            Ok(_) => return None,
            Err(_) => panic!("no close frame within 10 s"),
        }
    }
}

#[tokio::test]
async fn a_slowloris_client_is_cut_off_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &["--header-timeout-secs", "1"]).await;

    let mut slow = TcpStream::connect(s.addr).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"POST /streams/slow HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // Dribble a header a byte every 100 ms, never finishing it.
    let (mut reader, mut writer) = slow.into_split();
    let dribbler = tokio::spawn(async move {
        for byte in b"x-slow: ".iter().cycle() {
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // Meanwhile another client is served at once.
    let (status, body) = s.post("fast", &sine(0)).await;
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() < Duration::from_millis(900));

    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "slow connection still open after 5 s");
    let lived = started.elapsed();
    assert!(
        lived >= Duration::from_millis(900),
        "closed after {lived:?}"
    );
    dribbler.abort();

    // A fresh connection: the test client's pooled one, idle for the
    // second the slow one took, may be closed by the server (as idle) just
    // as it is reused, which reqwest reports as an incomplete message.
    let fresh = reqwest::Client::new();
    let text = s.metrics_via(&fresh).await;
    // Exactly the slow one. The test client's own keep-alive connection
    // may meet the same deadline, but it is counted as idle.
    assert_eq!(
        metric(&text, "htm_http_timeouts_total{phase=\"header\"}"),
        1.0
    );
    let status = fresh
        .get(s.url("/streams/slow"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404, "the cut-off request created nothing");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_and_counted_as_idle() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &["--header-timeout-secs", "1"]).await;

    let mut conn = TcpStream::connect(s.addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 15];
    conn.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200 OK");
    let idle_since = Instant::now();
    // Nothing more is sent: the server closes the connection at the
    // deadline.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "idle connection still open after 5 s");
    assert!(idle_since.elapsed() >= Duration::from_millis(900));

    let text = s.metrics().await;
    assert!(metric(&text, "htm_http_timeouts_total{phase=\"idle\"}") >= 1.0);
    assert_eq!(
        metric(&text, "htm_http_timeouts_total{phase=\"header\"}"),
        0.0
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_body_slower_than_its_deadline_gets_408_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &["--body-timeout-secs", "1"]).await;

    let mut conn = TcpStream::connect(s.addr).await.unwrap();
    let started = Instant::now();
    conn.write_all(
        b"POST /streams/dribble HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 40\r\n\r\n{\"value\":",
    )
    .await
    .unwrap();
    // A byte every 300 ms: an inactivity timeout would never fire.
    let (mut reader, mut writer) = conn.into_split();
    let dribbler = tokio::spawn(async move {
        for _ in 0..20 {
            if writer.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut got))
        .await
        .expect("answered and closed within 5 s");
    dribbler.abort();
    let response = String::from_utf8_lossy(&got);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert_eq!(json_body(&response)["error"]["code"], "request_timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "answered after {took:?}"
    );

    let (status, _) = s.get("/streams/dribble").await;
    assert_eq!(status, 404, "the timed-out sample created nothing");
    let text = s.metrics().await;
    assert_eq!(
        metric(&text, "htm_http_timeouts_total{phase=\"body\"}"),
        1.0
    );
    // A body sent promptly on a fresh connection is still fine.
    let (status, _) = s.post("dribble", &sine(0)).await;
    assert_eq!(status, 200);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn connections_over_the_limit_get_503_and_slots_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &["--max-connections", "3"]).await;

    // Three slots: the test client's pooled keep-alive connection, one
    // WebSocket session (which keeps its slot after the HTTP connection is
    // handed over) and one idle socket.
    let (status, _) = s.get("/healthz").await;
    assert_eq!(status, 200);
    let (mut session, _) = connect_async(s.ws_url("/streams/w/ws")).await.unwrap();
    let idle = TcpStream::connect(s.addr).await.unwrap();

    let mut extra = TcpStream::connect(s.addr).await.unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), read_to_close(&mut extra))
        .await
        .expect("refused at once");
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert_eq!(
        json_body(&response)["error"]["code"],
        "too_many_connections"
    );

    // The WebSocket session still works at the limit.
    session
        .send(Message::Text(sine(0).to_string().into()))
        .await
        .unwrap();
    let reply = session.next().await.unwrap().unwrap();
    let reply: Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
    assert_eq!(reply["step"], 1);

    // Closing the idle socket frees its slot for a new client.
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut fresh = TcpStream::connect(s.addr).await.unwrap();
        fresh
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let response = read_to_close(&mut fresh).await;
        if response.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "no slot came back: {response}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = s.metrics().await;
    assert!(metric(&text, "htm_connections_refused_total") >= 1.0);
    drop(session);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn an_oversized_websocket_message_is_closed_with_1009() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &["--max-body-bytes", "1024"]).await;

    let (mut ws, _) = connect_async(s.ws_url("/streams/big/ws")).await.unwrap();
    let huge = format!("{{\"value\": 1.0, \"pad\": \"{}\"}}", "x".repeat(4000));
    ws.send(Message::Text(huge.into())).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Size));

    // Nothing was applied, and a new session is served normally.
    let (status, _) = s.get("/streams/big").await;
    assert_eq!(status, 404);
    let (mut ws, _) = connect_async(s.ws_url("/streams/big/ws")).await.unwrap();
    ws.send(Message::Text(sine(0).to_string().into()))
        .await
        .unwrap();
    let reply = ws.next().await.unwrap().unwrap();
    assert!(reply.to_text().unwrap().contains("\"step\":1"), "{reply}");
    // Feed subscribers only answer pings: 4 KiB is their limit.
    let (mut feed, _) = connect_async(s.ws_url("/feed")).await.unwrap();
    feed.send(Message::Text("y".repeat(5000).into()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut feed).await, Some(CloseCode::Size));
    let text = s.metrics().await;
    assert_eq!(
        metric(&text, "htm_ws_closed_by_server_total{reason=\"too_big\"}"),
        2.0
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn an_idle_ingest_session_is_closed_with_1000() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &["--ws-idle-timeout-secs", "1"]).await;

    let (mut ws, _) = connect_async(s.ws_url("/streams/idle/ws")).await.unwrap();
    // Frames more often than the limit keep the session open.
    for h in 0..4 {
        ws.send(Message::Text(sine(h).to_string().into()))
            .await
            .unwrap();
        assert!(ws.next().await.unwrap().unwrap().is_text());
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let quiet = Instant::now();
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Normal));
    assert!(quiet.elapsed() >= Duration::from_millis(500));
    let text = s.metrics().await;
    assert_eq!(
        metric(&text, "htm_ws_closed_by_server_total{reason=\"idle\"}"),
        1.0
    );
    assert_eq!(metric(&text, "htm_ws_ingest_connections"), 0.0);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_feed_subscriber_that_answers_no_ping_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &["--ws-ping-interval-secs", "1"]).await;

    // `deaf` is never read, so its client library never answers a ping;
    // `alive` is read all the time (the library answers pings as it reads).
    let (deaf, _) = connect_async(s.ws_url("/feed")).await.unwrap();
    let (mut alive, _) = connect_async(s.ws_url("/feed")).await.unwrap();
    let reader = tokio::spawn(async move {
        let mut pings = 0;
        while let Some(Ok(m)) = alive.next().await {
            if m.is_ping() {
                pings += 1;
            }
        }
        pings
    });
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let text = s.metrics().await;
    assert_eq!(
        metric(&text, "htm_ws_closed_by_server_total{reason=\"no_pong\"}"),
        1.0
    );
    assert_eq!(metric(&text, "htm_feed_subscribers"), 1.0);
    drop(deaf);
    s.stop().await.unwrap();
    let pings = reader.await.unwrap();
    assert!(pings >= 2, "the live subscriber saw {pings} pings");
}

#[tokio::test]
async fn subscribers_beyond_the_limit_get_503_before_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &["--max-feed-subscribers", "2"]).await;

    let (first, _) = connect_async(s.ws_url("/feed")).await.unwrap();
    let (_second, _) = connect_async(s.ws_url("/feed")).await.unwrap();
    match connect_async(s.ws_url("/feed")).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "too_many_subscribers");
        }
        other => panic!("third subscriber: {:?}", other.map(|(_, r)| r.status())),
    }
    // A subscriber leaving frees its place.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match connect_async(s.ws_url("/feed")).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("no place came back: {e}"),
        }
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn two_thousand_idle_subscribers_do_not_stop_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &[]).await;

    let mut idle = Vec::new();
    for _ in 0..2_000 {
        let (ws, _) = connect_async(s.ws_url("/feed")).await.unwrap();
        idle.push(ws);
    }
    let batch: Vec<Value> = (0..200).map(sine).collect();
    let (status, body) = s.post("busy", &json!(batch)).await;
    assert_eq!(status, 200, "{body}");
    for h in 200..250 {
        let (status, body) = s.post("busy", &sine(h)).await;
        assert_eq!(status, 200, "{body}");
    }
    let text = s.metrics().await;
    assert_eq!(metric(&text, "htm_feed_subscribers"), 2_000.0);
    assert!(metric(&text, "htm_connections_open") >= 2_001.0);
    drop(idle);
    s.stop().await.unwrap();
}

/// A client still sending its headers at shutdown is dropped after the
/// grace period (5 s), not after its 30 s header deadline.
#[tokio::test]
async fn shutdown_does_not_wait_for_a_half_sent_request() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &[]).await; // header deadline 30 s

    let mut slow = TcpStream::connect(s.addr).await.unwrap();
    slow.write_all(b"POST /streams/x HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let (status, _) = s.post("x", &sine(0)).await;
    assert_eq!(status, 200);
    let started = Instant::now();
    s.stop().await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "shutdown took {took:?}");
    drop(slow);
}
