//! WebSocket ingest and the anomaly feed over real sockets.

mod server_support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use server_support::{sine, TestServer};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
            .expect("socket open")
            .expect("no socket error");
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn ws_ingest_answers_each_frame_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &["--max-batch", "10"]).await;
    let (mut ws, _) = connect_async(s.ws_url("/streams/w/ws")).await.unwrap();
    ws.send(Message::text(sine(0).to_string())).await.unwrap();
    let r = next_json(&mut ws).await;
    assert_eq!(
        (r["stream"].as_str(), r["step"].as_u64()),
        (Some("w"), Some(1))
    );
    ws.send(Message::text(json!([sine(1), sine(2)]).to_string()))
        .await
        .unwrap();
    let r = next_json(&mut ws).await;
    assert_eq!(r[1]["step"], 3);
    // errors come back as frames and the socket stays usable
    ws.send(Message::text("{\"value\": \"NaN\"}"))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["error"]["code"], "bad_sample");
    ws.send(Message::text(sine(0).to_string())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["error"]["code"], "out_of_order");
    ws.send(Message::text("not json")).await.unwrap();
    assert_eq!(next_json(&mut ws).await["error"]["code"], "bad_json");
    // pipelined frames are answered in order
    for h in 3..13 {
        ws.send(Message::text(sine(h).to_string())).await.unwrap();
    }
    for step in 4..14 {
        assert_eq!(next_json(&mut ws).await["step"], step);
    }
    // invalid id is refused before the upgrade
    assert!(connect_async(s.ws_url("/streams/bad!id/ws")).await.is_err());
    ws.close(None).await.unwrap();
    s.stop().await.unwrap();
}

#[tokio::test]
async fn feed_pushes_anomalies_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &[]).await;
    // threshold 0: every result of `hot` is an anomaly; `calm` never is (threshold 1
    // and the final score stays below 1 for these samples)
    s.put("hot", &json!({"threshold": 0.0})).await;
    s.put("calm", &json!({"threshold": 1.0})).await;
    let (mut anomalies, _) = connect_async(s.ws_url("/feed")).await.unwrap();
    let (mut everything, _) = connect_async(s.ws_url("/feed?all=true&streams=calm"))
        .await
        .unwrap();
    let (mut high, _) = connect_async(s.ws_url("/feed?min_log_likelihood=1.01"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    s.post("calm", &sine(0)).await;
    let (_, r) = s.post("hot", &sine(0)).await;
    assert_eq!(r["is_anomaly"], true);

    let m = next_json(&mut anomalies).await;
    assert_eq!(m["type"], "result");
    assert_eq!(m["result"]["stream"], "hot");
    assert_eq!(m["result"]["is_anomaly"], true);
    assert_eq!(m["result"]["step"], 1);
    let m = next_json(&mut everything).await;
    assert_eq!(m["result"]["stream"], "calm");
    assert_eq!(m["result"]["is_anomaly"], false);

    // the min_log_likelihood filter (1.01 is above any score) let nothing through
    s.post("hot", &sine(1)).await;
    assert_eq!(next_json(&mut anomalies).await["result"]["step"], 2);
    let none = tokio::time::timeout(Duration::from_millis(200), high.next()).await;
    assert!(none.is_err(), "filtered subscriber received {none:?}");

    // bad filters are refused before the upgrade
    assert!(connect_async(s.ws_url("/feed?streams=a/b")).await.is_err());
    assert!(connect_async(s.ws_url("/feed?min_log_likelihood=x"))
        .await
        .is_err());
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_lagging_subscriber_is_told_and_counted_without_slowing_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &["--feed-capacity", "4"]).await;
    s.put("hot", &json!({"threshold": 0.0})).await;
    let (mut slow, _) = connect_async(s.ws_url("/feed")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // 2000 anomalies while the subscriber does not read: ingest is not held up
    let batch = Value::Array((0..2000).map(|_| json!({"value": 1.0})).collect());
    let started = std::time::Instant::now();
    let (st, _) = s.post("hot", &batch).await;
    assert_eq!(st, 200);
    assert!(started.elapsed() < Duration::from_secs(10));
    let mut missed = 0;
    let mut results = 0;
    while missed + results < 2000 {
        let m = next_json(&mut slow).await;
        match m["type"].as_str().unwrap() {
            "lagged" => missed += m["missed"].as_u64().unwrap(),
            "result" => results += 1,
            other => panic!("{other}"),
        }
    }
    assert!(missed > 0, "the subscriber should have lagged");
    assert_eq!(missed + results, 2000);
    let metrics = s.metrics().await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("htm_feed_dropped_messages_total "))
        .unwrap();
    assert_eq!(line.split_whitespace().nth(1).unwrap(), missed.to_string());
    s.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_websockets_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &[]).await;
    let (mut ingest, _) = connect_async(s.ws_url("/streams/w/ws")).await.unwrap();
    let (mut feed, _) = connect_async(s.ws_url("/feed")).await.unwrap();
    ingest
        .send(Message::text(sine(0).to_string()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ingest).await["step"], 1);
    let stopping = tokio::spawn(s.stop());
    for ws in [&mut ingest, &mut feed] {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap();
        match msg {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
    stopping.await.unwrap().unwrap();
    assert!(dir.path().join("w.ckpt").exists());
}

/// A learned periodic stream, then a spike: the feed must report it.
#[tokio::test]
async fn feed_receives_an_anomaly_injected_into_a_learned_periodic_stream() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &[]).await;
    s.put("periodic", &json!({"value_range": {"min": 0, "max": 100}}))
        .await;
    let (mut feed, _) = connect_async(s.ws_url("/feed?streams=periodic"))
        .await
        .unwrap();
    let learn: Vec<Value> = (0..24 * 40).map(sine).collect();
    for chunk in learn.chunks(200) {
        let (st, _) = s.post("periodic", &Value::Array(chunk.to_vec())).await;
        assert_eq!(st, 200);
    }
    // drain anomalies reported while learning
    while tokio::time::timeout(Duration::from_millis(200), feed.next())
        .await
        .is_ok()
    {}
    let h0 = 24 * 40;
    let mut spike: Vec<Value> = vec![json!({"value": 5.0, "timestamp": server_support::hour(h0)})];
    spike.extend((h0 + 1..h0 + 48).map(sine));
    s.post("periodic", &Value::Array(spike)).await;
    let m = next_json(&mut feed).await;
    assert_eq!(m["result"]["is_anomaly"], true);
    let step = m["result"]["step"].as_u64().unwrap();
    assert!((h0 + 1..=h0 + 48).contains(&step), "anomaly at step {step}");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_plain_get_on_a_websocket_endpoint_is_a_json_400() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &[]).await;
    for path in ["/streams/w/ws", "/feed"] {
        let (status, body) = s.get(path).await;
        server_support::assert_error(status, &body, 400, "not_websocket");
    }
}
