//! Disk-full and read-only data dir (issue 6): writes fail loudly (507
//! `insufficient_storage` / 503 `storage_unavailable`, a log line, a count
//! in `htm_storage_errors_total`), change nothing (the model stays
//! bit-exact with a reference fed only the acknowledged samples, the
//! checkpoint on disk stays byte-identical), reads keep working, and the
//! server recovers without a restart once the disk does.
//!
//! Needs `mount` (root in the test container): the full disk is a 4 MiB
//! tmpfs filled by a filler file; the read-only data dir is a read-only
//! bind mount over it (a `remount,ro` of the tmpfs itself is refused while
//! the log's segment is open for writing). Without permission to mount,
//! each test prints why and returns early. Every mount is undone by a
//! guard, even when an assertion fails.
//!
//! ```text
//! cargo test --release --test server_disk_full
//! ```

mod server_support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{NaiveDate, NaiveDateTime};
use htm_stream::server::sample::result_json;
use htm_stream::store::{Sample, StreamConfig, StreamId, StreamState, ValueRange};
use serde_json::{json, Value};
use server_support::TestServer;

const OVERRIDES: &str = r#"{"value_encoder":{"size":100,"active_bits":7},"sp":{"column_dimensions":[64],"num_active_columns_per_inh_area":4},"tm":{"cells_per_column":8}}"#;

/// Unmounts (lazily, so open files cannot keep it) when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount(args: &[&str], target: &Path) -> Result<Mount, String> {
    let out = Command::new("mount")
        .args(args)
        .arg(target)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if out.status.success() {
        Ok(Mount(target.to_path_buf()))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn config() -> StreamConfig {
    StreamConfig {
        preset: "default".into(),
        value_range: Some(ValueRange {
            min: 0.0,
            max: 100.0,
        }),
        resolution: None,
        overrides: OVERRIDES.into(),
        threshold: 0.5,
        learn: true,
    }
}

fn put_body() -> Value {
    json!({
        "preset": "default",
        "value_range": {"min": 0.0, "max": 100.0},
        "overrides": serde_json::from_str::<Value>(OVERRIDES).unwrap(),
        "threshold": 0.5,
    })
}

fn t0() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2026, 11, 27)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
}

/// Sample number `h`: hourly, values in halves (exact in JSON).
fn sample(h: u64) -> Sample {
    let x = 50.0 + 40.0 * (h as f64 * std::f64::consts::TAU / 24.0).sin();
    Sample {
        timestamp: t0() + chrono::Duration::hours(h as i64),
        value: (x * 2.0).round() / 2.0,
        learn: None,
    }
}

fn wire(s: &Sample) -> Value {
    json!({
        "timestamp": format!("{}Z", s.timestamp.format("%Y-%m-%dT%H:%M:%S")),
        "value": s.value,
    })
}

/// The server's stream `s` next to a reference model fed only what the
/// server acknowledged.
struct Tracked {
    reference: StreamState,
    next: u64,
}

impl Tracked {
    fn new() -> Tracked {
        Tracked {
            reference: StreamState::new(StreamId::new("s").unwrap(), config()).unwrap(),
            next: 0,
        }
    }

    /// POST a batch of `n` samples; the reference takes them only on 200.
    async fn post(&mut self, server: &TestServer, n: u64) -> (u16, Value) {
        let batch: Vec<Sample> = (self.next..self.next + n).map(sample).collect();
        let body = Value::Array(batch.iter().map(wire).collect());
        let (status, answer) = server.post("s", &body).await;
        if status == 200 {
            self.reference.apply(&batch, &mut Vec::new()).unwrap();
            self.next += n;
        }
        (status, answer)
    }

    /// POST one more sample and check its result is, as JSON text, the
    /// reference's.
    async fn probe(&mut self, server: &TestServer, when: &str) {
        let s = sample(self.next);
        let (status, got) = server.post("s", &wire(&s)).await;
        assert_eq!(status, 200, "{when}: {got}");
        let mut out = Vec::new();
        self.reference.apply(&[s], &mut out).unwrap();
        self.next += 1;
        let want: Value =
            serde_json::from_str(&result_json(&StreamId::new("s").unwrap(), &out[0])).unwrap();
        assert_eq!(got, want, "{when}: output differs from the reference");
    }
}

async fn metric(server: &TestServer, op: &str, kind: &str) -> u64 {
    let text = server.metrics().await;
    let key = format!("htm_storage_errors_total{{kind=\"{kind}\",op=\"{op}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .map_or(0, |v| v.trim().parse().unwrap())
}

fn checkpoint_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Write zeros to `path` until the file system is full.
fn fill(path: &Path) {
    let mut f = fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_507_changes_nothing_and_recovers_without_restart() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("data");
    fs::create_dir(&dir).unwrap();
    let _mount = match mount(&["-t", "tmpfs", "-o", "size=4m", "tmpfs"], &dir) {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipped: cannot mount a tmpfs here: {why}");
            return;
        }
    };
    let flags = ["--durability", "fsync", "--wal-segment-bytes", "65536"];
    let server = TestServer::start(&dir, &flags).await;
    let mut s = Tracked::new();
    assert_eq!(server.put("s", &put_body()).await.0, 201);
    assert_eq!(s.post(&server, 30).await.0, 200);
    let r = server
        .client
        .post(server.url("/checkpoint"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.post(&server, 5).await.0, 200);
    let before = checkpoint_files(&dir);
    assert!(before.iter().any(|(n, _)| n == "s.ckpt"), "{before:?}");

    let filler = dir.join("filler");
    fill(&filler);
    // A record may still fit in the segment's last page; within a few
    // batches one cannot.
    let mut refused = None;
    for _ in 0..40 {
        let (status, body) = s.post(&server, 40).await;
        if status != 200 {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("a full disk refuses samples");
    server_support::assert_error(status, &body, 507, "insufficient_storage");
    for _ in 0..3 {
        let (status, body) = s.post(&server, 40).await;
        server_support::assert_error(status, &body, 507, "insufficient_storage");
    }
    assert!(metric(&server, "wal_append", "no_space").await >= 4);
    // Reads keep working and show only acknowledged samples.
    let (status, desc) = server.get("/streams/s").await;
    assert_eq!(status, 200);
    assert_eq!(desc["stats"]["samples"], s.reference.model.steps());
    let (status, ready) = server.get("/readyz").await;
    assert_eq!((status, ready["storage"].as_str()), (200, Some("degraded")));
    // A checkpoint cannot be written either: 507, the old one intact.
    let r = server
        .client
        .post(server.url("/checkpoint"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 507);
    assert!(metric(&server, "checkpoint", "no_space").await >= 1);
    let mut still: Vec<_> = checkpoint_files(&dir);
    still.retain(|(n, _)| n != "filler");
    assert_eq!(still, before, "files in the data dir changed");

    // Space returns: the next request succeeds, no restart.
    fs::remove_file(&filler).unwrap();
    s.probe(&server, "after space returned").await;
    assert_eq!(s.post(&server, 20).await.0, 200);
    let (_, ready) = server.get("/readyz").await;
    assert_eq!(ready["storage"], "ok");
    s.probe(&server, "after more samples").await;

    // After a restart every acknowledged sample is in the model, and only
    // those.
    server.stop().await.unwrap();
    let server = TestServer::start(&dir, &flags).await;
    s.probe(&server, "after restart").await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_data_dir_answers_503_and_recovers_without_restart() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("data");
    fs::create_dir(&dir).unwrap();
    // Small segments: every batch below starts a new one, which a
    // read-only directory refuses.
    let flags = ["--durability", "group", "--wal-segment-bytes", "1024"];
    let server = TestServer::start(&dir, &flags).await;
    let mut s = Tracked::new();
    assert_eq!(server.put("s", &put_body()).await.0, 201);
    assert_eq!(s.post(&server, 30).await.0, 200);
    let r = server
        .client
        .post(server.url("/checkpoint"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.post(&server, 5).await.0, 200);
    let before = checkpoint_files(&dir);

    let bind = match mount(&["--bind", dir.to_str().unwrap()], &dir) {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipped: cannot bind-mount here: {why}");
            server.stop().await.unwrap();
            return;
        }
    };
    match mount(&["-o", "remount,bind,ro"], &dir) {
        // The same mount as `bind`, whose guard unmounts it.
        Ok(remounted) => std::mem::forget(remounted),
        Err(why) => {
            eprintln!("skipped: cannot remount read-only here: {why}");
            drop(bind);
            server.stop().await.unwrap();
            return;
        }
    }
    for _ in 0..3 {
        let (status, body) = s.post(&server, 60).await;
        server_support::assert_error(status, &body, 503, "storage_unavailable");
    }
    assert!(metric(&server, "wal_segment", "read_only").await >= 3);
    let (status, desc) = server.get("/streams/s").await;
    assert_eq!(status, 200);
    assert_eq!(desc["stats"]["samples"], s.reference.model.steps());
    let r = server
        .client
        .post(server.url("/checkpoint"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(metric(&server, "checkpoint", "read_only").await >= 1);
    assert_eq!(checkpoint_files(&dir), before);

    drop(bind);
    s.probe(&server, "after the dir became writable").await;
    assert_eq!(s.post(&server, 60).await.0, 200);
    s.probe(&server, "after more samples").await;
    server.stop().await.unwrap();
    let server = TestServer::start(&dir, &flags).await;
    s.probe(&server, "after restart").await;
    server.stop().await.unwrap();
}
