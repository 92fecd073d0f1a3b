//! `/metrics` scraped from a real server after real traffic, checked for
//! the names the issue asks for and with `promtool check metrics`.

mod server_support;

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::json;
use server_support::{sine, TestServer};

#[tokio::test]
async fn metrics_are_exported_and_promtool_clean() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &["--per-stream-metrics"]).await;
    s.put("hot", &json!({"threshold": 0.0})).await;
    for h in 0..5 {
        s.post("hot", &sine(h)).await;
    }
    s.post("hot", &json!({"value": "NaN"})).await;
    s.client.post(s.url("/checkpoint")).send().await.unwrap();
    let text = s.metrics().await;

    for needle in [
        "htm_samples_total 5",
        "htm_anomalies_total 5",
        "htm_streams 1",
        "htm_ready 1",
        "htm_checkpoint_writes_total 1",
        "htm_checkpoint_write_failures_total 0",
        "htm_feed_subscribers 0",
        "htm_feed_dropped_messages_total 0",
        "htm_step_duration_seconds_count 5",
        "htm_checkpoint_duration_seconds_count 1",
        "htm_stream_samples_total{stream=\"hot\"} 5",
        "htm_rejected_requests_total{reason=\"bad_sample\"} 1",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert!(text.contains(
        "htm_http_request_duration_seconds_count{method=\"POST\",route=\"/streams/{id}\",status=\"200\"} 5"
    ), "{text}");
    assert!(text.contains("status=\"400\""));
    let memory: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("htm_model_memory_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(memory > 0.0);

    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool check metrics failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("promtool is required in CI (apt-get install prometheus): {e}")
        }
        Err(e) => eprintln!("SKIPPED promtool check: promtool not available ({e})"),
    }
    s.stop().await.unwrap();
}
