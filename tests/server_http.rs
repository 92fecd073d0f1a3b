//! HTTP API against a real server on 127.0.0.1:0: ingest in its three
//! shapes, stream management, every bad input, auth, limits, ordering.

mod server_support;

use serde_json::{json, Value};
use server_support::{assert_error, hour, sine, TestServer};

#[tokio::test]
async fn single_sample_creates_the_stream_and_answers_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &[]).await;
    let (status, r) = s
        .post(
            "temp.probe-1",
            &json!({"value": 21.5, "timestamp": "2026-11-27T10:00:00Z"}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["stream"], "temp.probe-1");
    assert_eq!(r["timestamp"], "2026-11-27T10:00:00");
    assert_eq!(r["value"], 21.5);
    assert_eq!(r["step"], 1);
    assert_eq!(r["learned"], true);
    for field in [
        "anomaly_score",
        "anomaly_likelihood",
        "log_likelihood",
        "final_score",
    ] {
        let x = r[field].as_f64().unwrap_or_else(|| panic!("{field}: {r}"));
        assert!((0.0..=1.0).contains(&x), "{field} = {x}");
    }
    assert!(r["is_anomaly"].is_boolean());
    assert!(r.get("prediction").is_some());
    // learn:false, unix-seconds timestamp, and no timestamp at all
    let (_, r) = s
        .post(
            "temp.probe-1",
            &json!({"value": 22, "timestamp": 1_795_773_600, "learn": false}),
        )
        .await;
    assert_eq!(r["timestamp"], "2026-11-27T10:00:00");
    assert_eq!(r["learned"], false);
    assert_eq!(r["step"], 2);
    let (status, r) = s.post("temp.probe-1", &json!({"value": 23})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["step"], 3);

    let (status, list) = s.get("/streams").await;
    assert_eq!(status, 200);
    assert_eq!(list["streams"][0]["id"], "temp.probe-1");
    assert_eq!(list["streams"][0]["samples"], 3);
    assert!(list["streams"][0]["memory_bytes"].as_u64().unwrap() > 0);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn batch_and_ndjson_are_applied_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &[]).await;
    let batch: Vec<Value> = (0..5).map(sine).collect();
    let (status, r) = s.post("b", &Value::Array(batch)).await;
    assert_eq!(status, 200, "{r}");
    let steps: Vec<u64> = r
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3, 4, 5]);
    assert_eq!(r[4]["timestamp"], "2026-11-27T04:00:00");

    let ndjson: String = (5..8).map(|h| format!("{}\n", sine(h))).collect();
    let resp = s
        .client
        .post(s.url("/streams/b"))
        .header("content-type", "application/x-ndjson")
        .body(ndjson)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/x-ndjson"
    );
    let text = resp.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines
            .iter()
            .map(|l| l["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [6, 7, 8]
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn bad_samples_are_answered_as_specified_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(
        dir.path(),
        &["--max-batch", "3", "--max-body-bytes", "2000"],
    )
    .await;
    let (st, _) = s.post("x", &sine(10)).await;
    assert_eq!(st, 200);

    // 400: bad JSON, non-finite / missing value, bad timestamp
    let r = s
        .client
        .post(s.url("/streams/x"))
        .body("{\"value\": ")
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    assert_error(st, &r.json().await.unwrap(), 400, "bad_json");
    let r = s
        .client
        .post(s.url("/streams/x"))
        .body("{\"value\": NaN}")
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    assert_error(st, &r.json().await.unwrap(), 400, "bad_json");
    let r = s
        .client
        .post(s.url("/streams/x"))
        .body("{\"value\": 1e999}")
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    assert_error(st, &r.json().await.unwrap(), 400, "bad_json");
    for bad in [
        json!({"value": "Infinity"}),
        json!({"value": "NaN"}),
        json!({"timestamp": hour(11)}),
        json!({"value": 1, "timestamp": "not a time"}),
        json!({"value": 1, "vlaue": 2}),
    ] {
        let (st, body) = s.post("x", &bad).await;
        assert_error(st, &body, 400, "bad_sample");
    }
    // a batch with one bad sample is refused whole
    let (st, body) = s.post("x", &json!([sine(11), {"value": "NaN"}])).await;
    assert_error(st, &body, 400, "bad_sample");

    // 409: earlier than the last timestamp (alone or inside a batch)
    let (st, body) = s.post("x", &sine(9)).await;
    assert_error(st, &body, 409, "out_of_order");
    let (st, body) = s.post("x", &json!([sine(12), sine(11)])).await;
    assert_error(st, &body, 409, "out_of_order");

    // 413: body too big, batch too long
    let big = format!("[{}]", vec![sine(20).to_string(); 40].join(","));
    let r = s
        .client
        .post(s.url("/streams/x"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    assert_error(st, &r.json().await.unwrap(), 413, "too_large");
    let (st, body) = s
        .post("x", &json!([sine(20), sine(21), sine(22), sine(23)]))
        .await;
    assert_error(st, &body, 413, "too_large");

    // 400: bad stream id
    let (st, body) = s.post("bad%20id", &sine(30)).await;
    assert_error(st, &body, 400, "bad_stream_id");
    let long = "a".repeat(129);
    let (st, body) = s.post(&long, &sine(30)).await;
    assert_error(st, &body, 400, "bad_stream_id");

    // nothing above changed the stream
    let (_, one) = s.get("/streams/x").await;
    assert_eq!(one["stats"]["samples"], 1, "{one}");
    assert_eq!(one["stats"]["last_timestamp"], "2026-11-27T10:00:00");
    let (st, r) = s.post("x", &sine(10)).await;
    assert_eq!((st, r["step"].as_u64()), (200, Some(2)));

    // unknown route and method: JSON errors too
    let (st, body) = s.get("/nope").await;
    assert_error(st, &body, 404, "no_route");
    let r = s.client.patch(s.url("/streams/x")).send().await.unwrap();
    let st = r.status().as_u16();
    assert_error(st, &r.json().await.unwrap(), 405, "method_not_allowed");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn put_configures_and_422_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &[]).await;
    let (st, body) = s
        .put(
            "cfg",
            &json!({"preset": "nab", "value_range": {"min": 0, "max": 100},
                    "overrides": {"tm": {"cells_per_column": 8}},
                    "threshold": 0.7, "learn": false}),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["config"]["preset"], "nab");
    assert_eq!(body["config"]["threshold"], 0.7);
    assert_eq!(body["params"]["tm"]["cells_per_column"], 8);
    let (_, r) = s.post("cfg", &sine(1)).await;
    assert_eq!(r["learned"], false);

    let (st, body) = s
        .put(
            "cfg",
            &json!({"overrides": {"tm": {"cells_per_column": 0}}}),
        )
        .await;
    assert_error(st, &body, 422, "invalid_config");
    assert_eq!(body["error"]["field"], "overrides.tm.cells_per_column");
    let (st, body) = s
        .put("cfg", &json!({"overrides": {"tm": {"no_such_knob": 1}}}))
        .await;
    assert_error(st, &body, 422, "invalid_config");
    assert_eq!(body["error"]["field"], "overrides.tm.no_such_knob");
    let (st, body) = s.put("cfg", &json!({"tresh": 0.5})).await;
    assert_error(st, &body, 422, "invalid_config");
    assert!(body["error"]["message"].as_str().unwrap().contains("tresh"));
    let (st, body) = s.put("cfg", &json!({"preset": "nope"})).await;
    assert_eq!((st, body["error"]["field"].as_str()), (422, Some("preset")));
    let (st, body) = s.put("cfg", &json!({"threshold": "high"})).await;
    assert_eq!(
        (st, body["error"]["field"].as_str()),
        (422, Some("threshold"))
    );

    // failed PUTs left the stream as it was
    let (_, one) = s.get("/streams/cfg").await;
    assert_eq!(one["stats"]["samples"], 1);
    assert_eq!(one["config"]["preset"], "nab");

    // a valid PUT replaces it: 200, fresh model
    let (st, body) = s.put("cfg", &json!({})).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["stats"]["samples"], 0);
    assert_eq!(body["config"]["preset"], "default");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn delete_reset_and_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &["--no-auto-create"]).await;
    let (st, body) = s.post("ghost", &sine(1)).await;
    assert_error(st, &body, 404, "stream_not_found");
    let (st, body) = s.get("/streams/ghost").await;
    assert_error(st, &body, 404, "stream_not_found");

    let (st, _) = s.put("d", &json!({})).await;
    assert_eq!(st, 201);
    s.post("d", &sine(5)).await;
    let r = s.client.post(s.url("/checkpoint")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let file = dir.path().join("d.ckpt");
    assert!(file.exists());

    // reset: the next sample may be earlier, steps continue
    let r = s
        .client
        .post(s.url("/streams/d/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (st, r) = s.post("d", &sine(1)).await;
    assert_eq!((st, r["step"].as_u64()), (200, Some(2)), "{r}");

    let r = s.client.delete(s.url("/streams/d")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert!(!file.exists());
    let (st, _) = s.get("/streams/d").await;
    assert_eq!(st, 404);
    let r = s.client.delete(s.url("/streams/d")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = s
        .client
        .post(s.url("/streams/d/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    s.stop().await.unwrap();
    assert!(
        !file.exists(),
        "a deleted stream is not written at shutdown"
    );
}

#[tokio::test]
async fn auth_when_a_token_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &["--token", "s3cret"]).await;
    for path in ["/healthz", "/readyz"] {
        let r = s.client.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} is open");
    }
    for path in ["/streams", "/metrics", "/streams/a"] {
        let r = s.client.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let r = s
        .client
        .post(s.url("/streams/a"))
        .bearer_auth("wrong")
        .json(&sine(1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s
        .client
        .post(s.url("/streams/a"))
        .bearer_auth("s3cret")
        .json(&sine(1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .client
        .get(s.url("/streams"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.stop().await.unwrap();

    // without a token, no header is needed
    let s = TestServer::start(dir.path(), &[]).await;
    let (st, _) = s.get("/streams").await;
    assert_eq!(st, 200);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn stream_limit_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &["--max-streams", "2"]).await;
    assert_eq!(s.post("a", &sine(1)).await.0, 200);
    assert_eq!(s.put("b", &json!({})).await.0, 201);
    let (st, body) = s.post("c", &sine(1)).await;
    assert_error(st, &body, 429, "too_many_streams");
    let (st, body) = s.put("c", &json!({})).await;
    assert_error(st, &body, 429, "too_many_streams");
    // existing streams still take samples; deleting frees a place
    assert_eq!(s.post("a", &sine(2)).await.0, 200);
    s.client.delete(s.url("/streams/b")).send().await.unwrap();
    assert_eq!(s.post("c", &sine(1)).await.0, 200);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn saturation_answers_429_and_503_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let batch = Value::Array((0..2000).map(|_| json!({"value": 1.0})).collect());
    let body = batch.to_string();

    // one stream, queue of 1: concurrent batches beyond it get 429
    let s = TestServer::start(
        dir.path(),
        &["--max-stream-queue", "1", "--max-body-bytes", "1000000"],
    )
    .await;
    let statuses = fire(&s, "hot", &body, 24).await;
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    // another stream is not starved meanwhile
    assert_eq!(s.post("cold", &json!({"value": 1})).await.0, 200);
    s.stop().await.unwrap();

    // whole server, one operation at a time: the rest get 503 at once
    let s = TestServer::start(
        dir.path(),
        &["--max-inflight", "1", "--max-body-bytes", "1000000"],
    )
    .await;
    let statuses = fire(&s, "hot", &body, 24).await;
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    s.stop().await.unwrap();
}

async fn fire(s: &TestServer, stream: &str, body: &str, n: usize) -> Vec<u16> {
    let futures: Vec<_> = (0..n)
        .map(|_| {
            let req = s
                .client
                .post(s.url(&format!("/streams/{stream}")))
                .header("content-type", "application/json")
                .body(body.to_string());
            tokio::spawn(async move {
                let r = req.send().await.unwrap();
                let status = r.status().as_u16();
                if status != 200 {
                    let b: Value = r.json().await.unwrap();
                    let code = b["error"]["code"].as_str().unwrap().to_string();
                    assert!(matches!(code.as_str(), "stream_busy" | "overloaded"), "{b}");
                }
                status
            })
        })
        .collect();
    let mut out = Vec::new();
    for f in futures {
        out.push(f.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_posts_to_one_stream_are_applied_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &["--max-stream-queue", "1000"]).await;
    // 8 clients, each posting 25 samples in sequence with increasing values.
    let mut tasks = Vec::new();
    for c in 0..8u64 {
        let client = s.client.clone();
        let url = s.url("/streams/shared");
        tasks.push(tokio::spawn(async move {
            let mut steps = Vec::new();
            for i in 0..25u64 {
                let r: Value = client
                    .post(&url)
                    .json(&json!({"value": (c * 1000 + i) as f64, "timestamp": hour(1)}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(r["value"].as_f64().unwrap(), (c * 1000 + i) as f64);
                steps.push(r["step"].as_u64().unwrap());
            }
            steps
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let steps = t.await.unwrap();
        // each client's samples were applied in the order it sent them
        assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
        all.extend(steps);
    }
    // no step was lost or applied twice
    all.sort_unstable();
    assert_eq!(all, (1..=200).collect::<Vec<u64>>());
    let (_, one) = s.get("/streams/shared").await;
    assert_eq!(one["stats"]["samples"], 200);
    s.stop().await.unwrap();
}
