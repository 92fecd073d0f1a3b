//! Disk-full and read-only data dir (issue 6): writes fail loudly (507
//! `insufficient_storage` / 503 `storage_unavailable`, a log line, a count
//! in `htm_storage_errors_total`), change nothing (the model stays
//! bit-exact with a reference fed only the acknowledged changes, the
//! checkpoint on disk stays byte-identical), reads keep working, and the
//! server recovers without a restart once the disk does. Sample batches,
//! `PUT` (replacing or creating a stream), reset and `DELETE` alike.
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
use std::path::Path;

use htm_stream::server::sample::result_json;
use htm_stream::store::{Sample, StreamId, StreamState};
use serde_json::Value;
use server_support::mount::{or_skip, read_only, tmpfs};
use server_support::samples::{put_body, sample, small_config, wire};
use server_support::{assert_error, TestServer};

/// The server's stream `s` next to a reference model fed only what the
/// server acknowledged.
struct Tracked {
    reference: StreamState,
    next: u64,
}

impl Tracked {
    fn new() -> Tracked {
        Tracked {
            reference: StreamState::new(StreamId::new("s").unwrap(), small_config()).unwrap(),
            next: 0,
        }
    }

    /// POST a batch of `n` samples; the reference takes them only on 200.
    async fn post(&mut self, server: &TestServer, n: u64) -> (u16, Value) {
        let batch: Vec<Sample> = (self.next..self.next + n).map(|h| sample(h, 0.0)).collect();
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
        let s = sample(self.next, 0.0);
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

/// The data dir's files (not its subdirectories), without the filler.
fn checkpoint_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().unwrap().is_file() && e.file_name() != "filler")
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

/// A temporary directory and its `data` subdirectory (a mount point).
fn data_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("data");
    fs::create_dir(&dir).unwrap();
    (base, dir)
}

/// Start a server on `dir` with `flags`, create stream `s` and feed it 30
/// samples, a checkpoint, then a batch of `last` (so both the checkpoint
/// and the log hold some); returns the server, the stream's tracker and
/// the data dir's files.
async fn started_with_stream(
    dir: &Path,
    flags: &[&str],
    last: u64,
) -> (TestServer, Tracked, Vec<(String, Vec<u8>)>) {
    let server = TestServer::start(dir, flags).await;
    let mut s = Tracked::new();
    assert_eq!(server.put("s", &put_body(&small_config())).await.0, 201);
    assert_eq!(s.post(&server, 30).await.0, 200);
    assert_eq!(server.checkpoint().await.0, 200);
    assert_eq!(s.post(&server, last).await.0, 200);
    let files = checkpoint_files(dir);
    assert!(files.iter().any(|(n, _)| n == "s.ckpt"), "{files:?}");
    (server, s, files)
}

/// Stop `server` and start another on `dir`, whose model must hold every
/// acknowledged change and nothing refused: its next output is the
/// reference's. Returns the new server.
async fn restart_and_probe(
    server: TestServer,
    dir: &Path,
    flags: &[&str],
    s: &mut Tracked,
) -> TestServer {
    server.stop().await.unwrap();
    let server = TestServer::start(dir, flags).await;
    s.probe(&server, "after restart").await;
    server
}

/// With the log refusing every record: `PUT` (replace and create), reset
/// and `DELETE` answer `status`/`code` and change nothing a client can see.
async fn refused_changes_change_nothing(server: &TestServer, status: u16, code: &str) {
    let (_, before) = server.get("/streams/s").await;
    let replace = put_body(&htm_stream::store::StreamConfig {
        threshold: 0.9,
        ..small_config()
    });
    let (st, body) = server.put("s", &replace).await;
    assert_error(st, &body, status, code);
    let (st, body) = server.put("new", &put_body(&small_config())).await;
    assert_error(st, &body, status, code);
    let (st, body) = server.get("/streams/new").await;
    assert_error(st, &body, 404, "stream_not_found");
    let (st, body) = server.reset("s").await;
    assert_error(st, &body, status, code);
    let (st, body) = server.delete("s").await;
    assert_error(st, &body, status, code);
    let (st, after) = server.get("/streams/s").await;
    assert_eq!(st, 200);
    for field in ["config", "stats"] {
        assert_eq!(after[field], before[field], "{field}");
    }
    let (_, list) = server.get("/streams").await;
    assert_eq!(list["streams"].as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_507_changes_nothing_and_recovers_without_restart() {
    let (_base, dir) = data_dir();
    let Some(_tmpfs) = or_skip(tmpfs(&dir, "4m")) else {
        return;
    };
    let flags = ["--durability", "fsync", "--wal-segment-bytes", "65536"];
    let (server, mut s, before) = started_with_stream(&dir, &flags, 5).await;

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
    assert_error(status, &body, 507, "insufficient_storage");
    for _ in 0..3 {
        let (status, body) = s.post(&server, 40).await;
        assert_error(status, &body, 507, "insufficient_storage");
    }
    assert!(metric(&server, "wal_append", "no_space").await >= 4);
    // Reads keep working and show only acknowledged samples.
    let (status, desc) = server.get("/streams/s").await;
    assert_eq!(status, 200);
    assert_eq!(desc["stats"]["samples"], s.reference.model.steps());
    let (status, ready) = server.get("/readyz").await;
    assert_eq!((status, ready["storage"].as_str()), (200, Some("degraded")));
    // A checkpoint cannot be written either: 507, the old one intact.
    assert_eq!(server.checkpoint().await.0, 507);
    assert!(metric(&server, "checkpoint", "no_space").await >= 1);
    assert_eq!(
        checkpoint_files(&dir),
        before,
        "files in the data dir changed"
    );

    // Space returns: the next request succeeds, no restart.
    fs::remove_file(&filler).unwrap();
    s.probe(&server, "after space returned").await;
    assert_eq!(s.post(&server, 20).await.0, 200);
    let (_, ready) = server.get("/readyz").await;
    assert_eq!(ready["storage"], "ok");
    s.probe(&server, "after more samples").await;

    let server = restart_and_probe(server, &dir, &flags, &mut s).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_data_dir_answers_503_and_recovers_without_restart() {
    let (_base, dir) = data_dir();
    // Small segments: every batch below starts a new one, which a
    // read-only directory refuses.
    let flags = ["--durability", "group", "--wal-segment-bytes", "1024"];
    let (server, mut s, before) = started_with_stream(&dir, &flags, 5).await;
    let Some(read_only) = or_skip(read_only(&dir)) else {
        server.stop().await.unwrap();
        return;
    };
    for _ in 0..3 {
        let (status, body) = s.post(&server, 60).await;
        assert_error(status, &body, 503, "storage_unavailable");
    }
    assert!(metric(&server, "wal_segment", "read_only").await >= 3);
    let (status, desc) = server.get("/streams/s").await;
    assert_eq!(status, 200);
    assert_eq!(desc["stats"]["samples"], s.reference.model.steps());
    assert_eq!(server.checkpoint().await.0, 503);
    assert!(metric(&server, "checkpoint", "read_only").await >= 1);
    assert_eq!(checkpoint_files(&dir), before);

    drop(read_only);
    s.probe(&server, "after the dir became writable").await;
    assert_eq!(s.post(&server, 60).await.0, 200);
    s.probe(&server, "after more samples").await;
    let server = restart_and_probe(server, &dir, &flags, &mut s).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_full_disk_put_reset_and_delete_answer_507_and_change_nothing() {
    let (_base, dir) = data_dir();
    let Some(_tmpfs) = or_skip(tmpfs(&dir, "4m")) else {
        return;
    };
    // 1 KiB segments and a last batch larger than that: the next record
    // starts a new segment, which has no page on the full tmpfs, so every
    // record fails to be written, however small.
    let flags = ["--durability", "fsync", "--wal-segment-bytes", "1024"];
    let (server, mut s, before) = started_with_stream(&dir, &flags, 40).await;
    fill(&dir.join("filler"));
    refused_changes_change_nothing(&server, 507, "insufficient_storage").await;
    assert_eq!(
        checkpoint_files(&dir),
        before,
        "files in the data dir changed"
    );

    // Space returns: the model is the reference's, untouched by the
    // refused changes, also after a restart (nothing refused is replayed).
    fs::remove_file(dir.join("filler")).unwrap();
    s.probe(&server, "after space returned").await;
    let server = restart_and_probe(server, &dir, &flags, &mut s).await;
    let (_, list) = server.get("/streams").await;
    assert_eq!(list["streams"].as_array().unwrap().len(), 1, "{list}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_read_only_data_dir_put_reset_and_delete_answer_503_and_change_nothing() {
    let (_base, dir) = data_dir();
    // 1 KiB segments and a last batch larger than that: every record
    // needs a new segment, which a read-only directory refuses.
    let flags = ["--durability", "group", "--wal-segment-bytes", "1024"];
    let (server, mut s, before) = started_with_stream(&dir, &flags, 40).await;
    let Some(read_only) = or_skip(read_only(&dir)) else {
        server.stop().await.unwrap();
        return;
    };
    refused_changes_change_nothing(&server, 503, "storage_unavailable").await;
    assert_eq!(
        checkpoint_files(&dir),
        before,
        "files in the data dir changed"
    );

    drop(read_only);
    s.probe(&server, "after the dir became writable").await;
    let server = restart_and_probe(server, &dir, &flags, &mut s).await;
    server.stop().await.unwrap();
}
