//! Kill test (issue 6, "No acknowledged sample is lost, even on kill -9"):
//! the real binary serves on `127.0.0.1:0`; a load generator posts small
//! batches to several streams while the server is killed with SIGKILL
//! (`Child::kill`) at random moments, again and again. After each restart,
//! every stream must hold exactly the samples that were answered 2xx — plus,
//! at most, the one batch that was in flight when the server died (it may
//! have been logged without being answered) — and its next output must
//! equal, bit for bit (same JSON text), that of a reference `StreamState`
//! fed the same samples in this process.
//!
//! The durability policy rotates over `fsync`, `group` and `none` between
//! restarts (`none` also survives a killed process: records are written to
//! the kernel before the answer). Checkpoints run every second and log
//! segments are 4 KiB, so restarts combine checkpoints, replay and
//! segment deletion.
//!
//! ```text
//! cargo test --release --test server_wal_kill                 # 3 kills
//! cargo test --release --test server_wal_kill -- --ignored --nocapture   # 20 kills
//! ```
//! `HTM_KILL_SEED` fixes the random kill moments and batch sizes.

mod server_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::time::Duration;
use tokio::sync::Mutex as AsyncMutex;

use htm_stream::server::sample::result_json;
use htm_stream::store::{Sample, StreamId, StreamState};
use serde_json::Value;
use server_support::child::ChildServer;
use server_support::samples::{put_body, sample, small_config, wire};

const STREAMS: usize = 4;
const POLICIES: [&str; 3] = ["fsync", "group", "none"];

/// A tiny xorshift generator: the test's own randomness, seedable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The server binary with `policy`, checkpoints every second and 4 KiB
/// segments; its log lines about the write-ahead log (replay summary) and
/// panics are kept.
fn start(dir: &std::path::Path, policy: &str) -> ChildServer {
    let flags = [
        "--durability",
        policy,
        "--checkpoint-interval-secs",
        "1",
        "--wal-segment-bytes",
        "4096",
    ];
    ChildServer::spawn(dir, &flags, |v| {
        let message = v["fields"]["message"].as_str().unwrap_or_default();
        message.contains("write-ahead log") || v.to_string().contains("panicked")
    })
}

/// The load generator's view of one stream.
struct Track {
    id: StreamId,
    /// Fed every sample the server acknowledged (applied after each kill).
    reference: StreamState,
    /// Acknowledged, not yet applied to `reference`.
    acked: Vec<Sample>,
    /// The batch sent when the server died, unanswered.
    in_flight: Option<Vec<Sample>>,
    /// Next sample number.
    next: u64,
}

#[derive(Debug, Default)]
struct Totals {
    kills: usize,
    acked_samples: u64,
    in_flight_batches: u64,
    in_flight_kept: u64,
    losses: u64,
    probes_equal: u64,
    replayed_records: u64,
    torn_records: u64,
}

async fn load(
    client: reqwest::Client,
    base: String,
    track: Arc<AsyncMutex<Track>>,
    stop: Arc<AtomicBool>,
    seed: u64,
    stream: usize,
) {
    let mut rng = Rng(seed | 1);
    while !stop.load(Ordering::Acquire) {
        let (id, batch) = {
            let mut t = track.lock().await;
            let k = 1 + rng.below(3);
            let batch: Vec<Sample> = (t.next..t.next + k)
                .map(|h| sample(h, stream as f64))
                .collect();
            t.next += k;
            t.in_flight = Some(batch.clone());
            (t.id.clone(), batch)
        };
        let body = Value::Array(batch.iter().map(wire).collect());
        let sent = client
            .post(format!("{base}/streams/{id}"))
            .json(&body)
            .send()
            .await;
        let status = match sent {
            Ok(r) => {
                let status = r.status().as_u16();
                // The answer is complete only once its body is read.
                match r.bytes().await {
                    Ok(_) => status,
                    Err(_) => return,
                }
            }
            Err(_) => return, // the server died: the batch stays in flight
        };
        assert_eq!(status, 200, "unexpected answer for stream {id}");
        let mut t = track.lock().await;
        let done = t.in_flight.take().unwrap();
        t.acked.extend(done);
    }
}

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

async fn run(kills: usize) -> Totals {
    let seed = std::env::var("HTM_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("kill test: seed {seed} (HTM_KILL_SEED), {kills} kills");
    let mut rng = Rng(seed | 1);
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut totals = Totals::default();
    let tracks: Vec<Arc<AsyncMutex<Track>>> = (0..STREAMS)
        .map(|i| {
            let id = StreamId::new(format!("sensor-{i}")).unwrap();
            Arc::new(AsyncMutex::new(Track {
                reference: StreamState::new(id.clone(), small_config()).unwrap(),
                id,
                acked: Vec::new(),
                in_flight: None,
                next: 0,
            }))
        })
        .collect();

    let mut server = start(dir.path(), POLICIES[0]);
    server.wait_ready(&client, Duration::from_secs(60)).await;
    for t in &tracks {
        let id = t.lock().await.id.clone();
        let r = client
            .put(format!("{}/streams/{id}", server.base))
            .json(&put_body(&small_config()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }

    for round in 0..=kills {
        if round > 0 {
            // Check every stream against its reference, then probe it.
            let metrics = server.metrics(&client).await;
            totals.replayed_records += counter(&metrics, "htm_wal_replayed_records_total");
            totals.torn_records += counter(&metrics, "htm_wal_torn_records_total");
            for (i, t) in tracks.iter().enumerate() {
                let mut t = t.lock().await;
                let t = &mut *t;
                let acked = std::mem::take(&mut t.acked);
                totals.acked_samples += acked.len() as u64;
                t.reference.apply(&acked, &mut Vec::new()).unwrap();
                let r = client
                    .get(format!("{}/streams/{}", server.base, t.id))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let desc: Value = r.json().await.unwrap();
                let held = desc["stats"]["samples"].as_u64().unwrap();
                let want = t.reference.model.steps();
                let in_flight = t.in_flight.take();
                totals.in_flight_batches += u64::from(in_flight.is_some());
                if held < want {
                    totals.losses += want - held;
                }
                match in_flight {
                    Some(b) if held == want + b.len() as u64 => {
                        totals.in_flight_kept += 1;
                        t.reference.apply(&b, &mut Vec::new()).unwrap();
                    }
                    _ => assert_eq!(
                        held, want,
                        "round {round}, stream {}: server holds {held} samples, {want} were acknowledged",
                        t.id
                    ),
                }
                let probe = sample(t.next, i as f64);
                t.next += 1;
                let r = client
                    .post(format!("{}/streams/{}", server.base, t.id))
                    .json(&wire(&probe))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let got = r.text().await.unwrap();
                let mut out = Vec::new();
                t.reference.apply(&[probe], &mut out).unwrap();
                totals.acked_samples += 1;
                let expected = result_json(&t.id, &out[0]);
                assert_eq!(
                    got, expected,
                    "round {round}, stream {}: output differs from the reference",
                    t.id
                );
                totals.probes_equal += 1;
            }
        }
        if round == kills {
            break;
        }
        // Load, then kill at a random moment.
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = tracks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                tokio::spawn(load(
                    client.clone(),
                    server.base.clone(),
                    Arc::clone(t),
                    Arc::clone(&stop),
                    rng.next(),
                    i,
                ))
            })
            .collect();
        let after = Duration::from_millis(150 + rng.below(1350));
        tokio::time::sleep(after).await;
        server.kill();
        totals.kills += 1;
        stop.store(true, Ordering::Release);
        for task in tasks {
            task.await.unwrap();
        }
        assert!(
            !server
                .kept()
                .iter()
                .any(|v| v.to_string().contains("panicked")),
            "the server panicked"
        );
        let policy = POLICIES[(round + 1) % POLICIES.len()];
        server = start(dir.path(), policy);
        server.wait_ready(&client, Duration::from_secs(60)).await;
        let replay = server.kept();
        eprintln!(
            "kill {} after {} ms; restarted with --durability {policy}: {}",
            round + 1,
            after.as_millis(),
            replay
                .iter()
                .map(|v| v["fields"].to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    server.kill();
    eprintln!(
        "kill test totals: {} kills, {} acknowledged samples, {} lost, {} of {} in-flight batches \
         found applied, {} probe outputs bit-identical, {} records replayed, {} torn records dropped",
        totals.kills,
        totals.acked_samples,
        totals.losses,
        totals.in_flight_kept,
        totals.in_flight_batches,
        totals.probes_equal,
        totals.replayed_records,
        totals.torn_records
    );
    totals
}

fn check(totals: &Totals, kills: usize) {
    assert_eq!(totals.kills, kills);
    assert_eq!(totals.losses, 0);
    assert_eq!(totals.probes_equal, (kills * STREAMS) as u64);
    assert!(totals.acked_samples > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_samples_survive_three_kills() {
    let totals = run(3).await;
    check(&totals, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "20 kills, about a minute; run by hand"]
async fn acknowledged_samples_survive_twenty_kills() {
    let totals = run(20).await;
    check(&totals, 20);
}
