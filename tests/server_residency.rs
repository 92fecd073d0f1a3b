//! The residency limit over real sockets: streams evicted to their
//! checkpoint and reloaded on their next request give bit-identical
//! results; every operation works on an evicted stream; a restart registers
//! streams without decoding them; a failed checkpoint keeps its stream
//! resident; a flood of new stream ids hits `--max-streams` with 429.

mod server_support;

use htm_stream::server::sample::result_json;
use htm_stream::store::{Applied, StreamId, StreamState};
use serde_json::{json, Value};
use server_support::samples::{from_wire, put_body, small_config};
use server_support::{assert_error, sine, TestServer};

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in metrics"))
}

/// (resident, evicted) counts from `GET /streams`.
async fn residency_of(s: &TestServer) -> (usize, usize) {
    let (_, list) = s.get("/streams").await;
    let streams = list["streams"].as_array().unwrap();
    let resident = streams.iter().filter(|e| e["resident"] == true).count();
    let evicted = streams.iter().filter(|e| e["resident"] == false).count();
    (resident, evicted)
}

#[tokio::test]
async fn round_robin_over_six_streams_with_two_resident_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &["--max-resident-streams", "2"]).await;
    let names: Vec<String> = (0..6).map(|i| format!("s{i}")).collect();
    let mut reference: Vec<StreamState> = names
        .iter()
        .map(|n| StreamState::new(StreamId::new(n.as_str()).unwrap(), small_config()).unwrap())
        .collect();
    for n in &names {
        let (st, _) = s.put(n, &put_body(&small_config())).await;
        assert_eq!(st, 201);
    }
    for h in 0..30u64 {
        for (i, n) in names.iter().enumerate() {
            // Each stream its own phase, so the models differ.
            let wire = sine(h * 3 + i as u64);
            let (st, got) = s.post(n, &wire).await;
            assert_eq!(st, 200, "{got}");
            let mut out: Vec<Applied> = Vec::new();
            reference[i].apply(&[from_wire(&wire)], &mut out).unwrap();
            let want: Value =
                serde_json::from_str(&result_json(&reference[i].id, &out[0])).unwrap();
            assert_eq!(got, want, "stream {n}, sample {h}");
        }
        let (resident, evicted) = residency_of(&s).await;
        assert_eq!((resident, evicted), (2, 4));
    }
    // The state kept across evictions is the reference's too.
    for (i, n) in names.iter().enumerate() {
        let (st, desc) = s.get(&format!("/streams/{n}")).await;
        assert_eq!(st, 200);
        assert_eq!(desc["stats"]["samples"], 30);
        assert_eq!(desc["stats"]["anomalies"], reference[i].stats.anomalies);
        assert_eq!(
            desc["stats"]["last_score"].as_f64(),
            reference[i].stats.last_score
        );
    }
    let metrics = s.metrics().await;
    // Every request but the first two of each round reloads one stream.
    assert!(counter(&metrics, "htm_stream_reloads_total") >= 6 * 29);
    assert!(counter(&metrics, "htm_stream_evictions_total") >= 6 * 29);
    assert!(metrics.contains("htm_stream_reload_duration_seconds_count"));
    assert_eq!(counter(&metrics, "htm_streams_resident"), 2);
    assert!(counter(&metrics, "htm_resident_model_bytes") > 0);
    s.stop().await.unwrap();

    // The checkpoints on disk hold exactly the reference models.
    for r in &reference {
        let on_disk: StreamState =
            htm_stream::store::checkpoint::load(&dir.path().join(format!("{}.ckpt", r.id)))
                .unwrap();
        assert_eq!(
            htm_stream::store::checkpoint::encode(&on_disk.model).unwrap(),
            htm_stream::store::checkpoint::encode(&r.model).unwrap()
        );
    }
}

#[tokio::test]
async fn every_operation_reloads_an_evicted_stream() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &["--max-resident-streams", "1"]).await;
    let put = put_body(&small_config());
    for n in ["a", "b", "c", "d"] {
        assert_eq!(s.put(n, &put).await.0, 201);
        for h in 0..3 {
            assert_eq!(s.post(n, &sine(h)).await.0, 200);
        }
    }
    assert_eq!(residency_of(&s).await, (1, 3));
    // GET reloads a.
    let (st, desc) = s.get("/streams/a").await;
    assert_eq!((st, desc["stats"]["samples"].as_u64()), (200, Some(3)));
    // reset reloads b: an earlier timestamp is then accepted.
    assert_eq!(s.reset("b").await.0, 200);
    let (st, res) = s.post("b", &sine(0)).await;
    assert_eq!((st, res["step"].as_u64()), (200, Some(4)));
    // PUT replaces evicted c with a fresh model.
    let (st, desc) = s.put("c", &json!({})).await;
    assert_eq!((st, desc["stats"]["samples"].as_u64()), (200, Some(0)));
    // DELETE of evicted d removes it and its checkpoint.
    assert!(dir.path().join("d.ckpt").exists());
    assert_eq!(s.delete("d").await.0, 204);
    assert!(!dir.path().join("d.ckpt").exists());
    let (st, body) = s.get("/streams/d").await;
    assert_error(st, &body, 404, "stream_not_found");
    assert_eq!(residency_of(&s).await, (1, 2));
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_restart_registers_streams_without_decoding_them_and_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let put = put_body(&small_config());
    let s = TestServer::start(dir.path(), &[]).await;
    for i in 0..6 {
        let n = format!("r{i}");
        assert_eq!(s.put(&n, &put).await.0, 201);
        for h in 0..4 {
            assert_eq!(s.post(&n, &sine(h)).await.0, 200);
        }
    }
    s.stop().await.unwrap();

    let s = TestServer::start(dir.path(), &["--max-resident-streams", "2"]).await;
    let (_, list) = s.get("/streams").await;
    let streams = list["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 6);
    // Two decoded at start; the rest known by file name only.
    let lazy: Vec<&Value> = streams.iter().filter(|e| e["resident"] == false).collect();
    assert_eq!(lazy.len(), 4);
    assert!(lazy.iter().all(|e| e.get("samples").is_none()));
    for i in 0..6 {
        let (st, r) = s.post(&format!("r{i}"), &sine(4)).await;
        assert_eq!((st, r["step"].as_u64()), (200, Some(5)));
    }
    assert_eq!(residency_of(&s).await, (2, 4));
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_failed_checkpoint_keeps_its_stream_resident() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), &["--max-resident-streams", "1"]).await;
    let put = put_body(&small_config());
    assert_eq!(s.put("a", &put).await.0, 201);
    assert_eq!(s.post("a", &sine(0)).await.0, 200);
    // a's checkpoint cannot be renamed into place: a directory is there.
    let blocked = dir.path().join("a.ckpt");
    std::fs::create_dir(&blocked).unwrap();
    std::fs::write(blocked.join("x"), b"x").unwrap();
    assert_eq!(s.put("b", &put).await.0, 201);
    let metrics = s.metrics().await;
    assert!(counter(&metrics, "htm_checkpoint_write_failures_total") >= 1);
    assert_eq!(counter(&metrics, "htm_stream_evictions_total"), 0);
    let (_, list) = s.get("/streams").await;
    assert_eq!(list["streams"][0]["resident"], true, "{list}");
    // Once the file can be written, a is evicted and still exact.
    std::fs::remove_dir_all(&blocked).unwrap();
    assert_eq!(s.put("c", &put).await.0, 201);
    let (_, list) = s.get("/streams").await;
    assert_eq!(list["streams"][0]["resident"], false, "{list}");
    let (st, r) = s.post("a", &sine(1)).await;
    assert_eq!((st, r["step"].as_u64()), (200, Some(2)));
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_flood_of_new_stream_ids_hits_the_limit_with_429() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(
        dir.path(),
        &["--max-streams", "3", "--max-resident-streams", "1"],
    )
    .await;
    let put = put_body(&small_config());
    for i in 0..3 {
        assert_eq!(s.put(&format!("k{i}"), &put).await.0, 201);
    }
    for i in 0..20 {
        let (st, body) = s.post(&format!("new{i}"), &sine(0)).await;
        assert_error(st, &body, 429, "too_many_streams");
        let (st, body) = s.put(&format!("new{i}"), &put).await;
        assert_error(st, &body, 429, "too_many_streams");
    }
    assert_eq!(s.checkpoint().await.0, 200);
    let files = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".ckpt")
        })
        .count();
    assert_eq!(files, 3);
    // Known streams still serve, evicted or not.
    for i in 0..3 {
        assert_eq!(s.post(&format!("k{i}"), &sine(1)).await.0, 200);
    }
    s.stop().await.unwrap();
}
