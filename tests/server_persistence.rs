//! Checkpoints across restarts, with real files: identical continuation,
//! graceful shutdown writing checkpoints, periodic checkpoints, and a
//! corrupt checkpoint that is moved aside while other streams serve.

mod server_support;

use std::time::Duration;

use serde_json::{json, Value};
use server_support::{assert_error, sine, TestServer};

async fn post_range(s: &TestServer, stream: &str, hours: std::ops::Range<u64>) -> Vec<Value> {
    let batch = Value::Array(hours.map(sine).collect());
    let (st, r) = s.post(stream, &batch).await;
    assert_eq!(st, 200, "{r}");
    r.as_array().unwrap().clone()
}

#[tokio::test]
async fn restart_continues_bit_identically() {
    let stopped = tempfile::tempdir().unwrap();
    let never = tempfile::tempdir().unwrap();

    // server A: 100 samples on two streams, checkpoint via POST, stop
    let a = TestServer::start(stopped.path(), &[]).await;
    a.put(
        "s1",
        &json!({"value_range": {"min": 0, "max": 100}, "threshold": 0.3}),
    )
    .await;
    post_range(&a, "s1", 0..100).await;
    post_range(&a, "s2", 0..60).await;
    let r = a.client.post(a.url("/checkpoint")).send().await.unwrap();
    let summary: Value = r.json().await.unwrap();
    assert_eq!(summary["written"], 2, "{summary}");
    a.stop().await.unwrap();

    // server B on the same directory continues
    let b = TestServer::start(stopped.path(), &[]).await;
    let (_, one) = b.get("/streams/s1").await;
    assert_eq!(one["stats"]["samples"], 100);
    assert_eq!(one["config"]["threshold"], 0.3);
    let continued1 = post_range(&b, "s1", 100..150).await;
    let continued2 = post_range(&b, "s2", 60..90).await;
    // the ordering rule survived the restart too
    let (st, body) = b.post("s1", &sine(10)).await;
    assert_error(st, &body, 409, "out_of_order");
    b.stop().await.unwrap();

    // server C never stopped
    let c = TestServer::start(never.path(), &[]).await;
    c.put(
        "s1",
        &json!({"value_range": {"min": 0, "max": 100}, "threshold": 0.3}),
    )
    .await;
    post_range(&c, "s1", 0..100).await;
    post_range(&c, "s2", 0..60).await;
    let reference1 = post_range(&c, "s1", 100..150).await;
    let reference2 = post_range(&c, "s2", 60..90).await;
    c.stop().await.unwrap();

    // serde_json keeps every f64 exactly, so equal JSON is bit-identical
    assert_eq!(continued1, reference1);
    assert_eq!(continued2, reference2);
    assert_eq!(continued1[0]["step"], 101);
}

#[tokio::test]
async fn graceful_shutdown_writes_changed_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &[]).await;
    post_range(&s, "a", 0..10).await;
    post_range(&s, "b", 0..5).await;
    assert!(
        !dir.path().join("a.ckpt").exists(),
        "no periodic writes configured"
    );
    s.stop().await.unwrap();
    assert!(dir.path().join("a.ckpt").exists());
    assert!(dir.path().join("b.ckpt").exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let s = TestServer::start(dir.path(), &[]).await;
    let (_, list) = s.get("/streams").await;
    let samples: Vec<u64> = list["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["samples"].as_u64().unwrap())
        .collect();
    assert_eq!(samples, [10, 5]);
    // unchanged streams are not rewritten at the next shutdown
    let before = std::fs::metadata(dir.path().join("a.ckpt"))
        .unwrap()
        .modified()
        .unwrap();
    post_range(&s, "b", 5..6).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.stop().await.unwrap();
    let after = std::fs::metadata(dir.path().join("a.ckpt"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after);
}

#[tokio::test]
async fn periodic_checkpoints_write_changed_streams() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &["--checkpoint-interval-secs", "1"]).await;
    post_range(&s, "p", 0..3).await;
    let file = dir.path().join("p.ckpt");
    for _ in 0..40 {
        if file.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(file.exists(), "written within about a second");
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("htm_checkpoint_writes_total 1"),
        "{metrics}"
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn corrupt_checkpoint_is_moved_aside_and_its_stream_answers_503() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &[]).await;
    post_range(&s, "good", 0..5).await;
    post_range(&s, "bad", 0..5).await;
    post_range(&s, "future", 0..5).await;
    s.stop().await.unwrap();

    // truncate one file, give another an unknown format version
    let bad = dir.path().join("bad.ckpt");
    let bytes = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() - 7]).unwrap();
    let future = dir.path().join("future.ckpt");
    let mut bytes = std::fs::read(&future).unwrap();
    bytes[8] = 42;
    std::fs::write(&future, &bytes).unwrap();

    let s = TestServer::start(dir.path(), &[]).await;
    assert!(!bad.exists() && !future.exists(), "moved aside");
    let quarantined: Vec<String> = std::fs::read_dir(dir.path().join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(quarantined.len(), 2, "{quarantined:?}");
    assert!(quarantined.iter().any(|n| n.starts_with("bad.ckpt.")));

    let (st, body) = s.post("bad", &sine(6)).await;
    assert_error(st, &body, 503, "checkpoint_unreadable");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("truncated"));
    let (st, body) = s.get("/streams/future").await;
    assert_error(st, &body, 503, "checkpoint_unreadable");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("version 42"));
    // the other stream serves normally
    let (st, r) = s.post("good", &sine(6)).await;
    assert_eq!((st, r["step"].as_u64()), (200, Some(6)));
    let metrics = s.metrics().await;
    assert!(metrics.contains("htm_checkpoint_load_failures_total 2"));
    assert!(metrics.contains("htm_checkpoint_unreadable{stream=\"bad\"} 1"));
    let (_, list) = s.get("/streams").await;
    assert_eq!(list["streams"][0]["status"], "unavailable");

    // DELETE clears one, PUT recreates the other
    let r = s.client.delete(s.url("/streams/bad")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let (st, r) = s.post("bad", &sine(0)).await;
    assert_eq!((st, r["step"].as_u64()), (200, Some(1)));
    let (st, _) = s.put("future", &json!({})).await;
    assert_eq!(st, 200);
    let (st, _) = s.post("future", &sine(0)).await;
    assert_eq!(st, 200);
    let metrics = s.metrics().await;
    assert!(!metrics.contains("htm_checkpoint_unreadable{"), "{metrics}");
    s.stop().await.unwrap();
}

/// An upgrade keeps the learned models: a checkpoint of the previous format
/// (version 3, the committed golden file) is served where it stopped, and
/// the next checkpoint rewrites it in the current format.
#[tokio::test]
async fn a_previous_format_checkpoint_is_served_and_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden-v3.ckpt");
    let file = dir.path().join("golden.stream-1.ckpt");
    std::fs::copy(&fixture, &file).unwrap();

    let s = TestServer::start(dir.path(), &[]).await;
    let (st, one) = s.get("/streams/golden.stream-1").await;
    assert_eq!(st, 200, "{one}");
    assert_eq!(one["stats"]["samples"], 48);
    // It runs as the model it was: saved with 16 cells, before the fallback.
    assert_eq!(one["params"]["tm"]["cells_per_column"], 16, "{one}");
    assert_eq!(one["params"]["tm"]["first_order_fallback"], 0.0, "{one}");
    // The golden stream's 48 hourly samples ended at 2026-11-29T09:00Z.
    let (st, r) = s
        .post(
            "golden.stream-1",
            &json!({"value": 50.0, "timestamp": "2026-11-29T10:00:00Z"}),
        )
        .await;
    assert_eq!((st, r["step"].as_u64()), (200, Some(49)), "{r}");
    let r = s.client.post(s.url("/checkpoint")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    s.stop().await.unwrap();

    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(
        u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
        htm_stream::store::checkpoint::FORMAT_VERSION
    );
    assert!(!dir.path().join("quarantine").exists());
    let s = TestServer::start(dir.path(), &[]).await;
    let (_, one) = s.get("/streams/golden.stream-1").await;
    assert_eq!(one["stats"]["samples"], 49);
    s.stop().await.unwrap();
}
