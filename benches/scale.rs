//! Scale benchmark (issue 6, "Thousands of streams in bounded memory"):
//! many streams under a residency limit, against the release `htm-stream`
//! binary on loopback.
//!
//! # Running it
//!
//! ```text
//! cargo bench --bench scale                       # both scenarios
//! HTM_SCALE_ONLY=a cargo bench --bench scale      # (a) only
//! ```
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `HTM_SCALE_ONLY` | both | `a` or `b`: run one scenario |
//! | `HTM_SCALE_STREAMS` | `10000` | (a) active streams, `default` preset |
//! | `HTM_SCALE_ROUNDS` | `2` | (a) samples per stream, sent round-robin, one per request |
//! | `HTM_SCALE_BUDGET` | `4294967296` | (a) `--memory-budget-bytes` |
//! | `HTM_SCALE_KNOWN` | `100000` | (b) streams known to the server |
//! | `HTM_SCALE_RESIDENT` | `1000` | (b) `--max-resident-streams` |
//! | `HTM_SCALE_CHECK` | `200` | (b) streams checked against in-process models |
//! | `HTM_SCALE_CONNS` | `8` | concurrent connections |
//!
//! # What it does
//!
//! The server is the `htm-stream serve` binary as a child process (so its
//! memory is its own: `VmRSS` is sampled from `/proc/PID/status` every
//! 200 ms, and `VmHWM`, the peak, read at the end), on a free loopback
//! port, with a temporary data directory, `--durability none` (a record is
//! written to the OS before the answer, not fsynced: the benchmark measures
//! residency, not the disk's fsync rate; checkpoints are still fsynced) and
//! no periodic checkpoints. Only loopback is contacted.
//!
//! - **(a) 10,000 active streams, `default` preset**: every stream is
//!   created with `PUT {"value_range": {"min": 0, "max": 100}}` (so its
//!   model is built at once, not after the calibration samples), then gets
//!   `HTM_SCALE_ROUNDS` samples, one per request, round-robin over all
//!   streams. The budget holds a few hundred such models, so from the first
//!   round on almost every request reloads its stream and evicts another.
//!   Reported: samples/s per round, request latency p50/p99 per round, the
//!   server's reload time (its `htm_stream_reload_duration_seconds`
//!   histogram: mean, and p50/p99 as bucket upper bounds), and RSS.
//! - **(b) 100,000 known streams**: each is created by `PUT` with a small
//!   model (the residency code does not depend on model size, and 100,000
//!   full models would need hundreds of GB of checkpoints) and sent a batch
//!   of 5 samples, with `--max-resident-streams 1000`, so 99% of them are
//!   evicted. A seeded random subset of `HTM_SCALE_CHECK` streams is then
//!   checked: its answers must equal those of a `StreamState` fed the same
//!   samples in this process, field for field. The server is stopped
//!   (SIGTERM: final checkpoints) and started again on the same directory;
//!   the time until `/readyz` answers 200 is the start-up time with 100,000
//!   checkpoint files. The subset then gets one more sample each, reloaded
//!   from files registered at start by name, and is checked again.

#[path = "../tests/server_support/mod.rs"]
mod server_support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use htm_stream::htm::random::Random;
use htm_stream::server::sample::result_json;
use htm_stream::store::{Applied, Sample, StreamConfig, StreamId, StreamState, DEFAULT_THRESHOLD};
use serde_json::{json, Value};
use server_support::child::ChildServer;
use server_support::samples::{self, from_wire};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The server binary with `extra` flags, `--durability none` and no
/// periodic checkpoints.
fn start_server(dir: &std::path::Path, extra: &[String]) -> ChildServer {
    let mut flags = vec!["--durability", "none", "--checkpoint-interval-secs", "0"];
    flags.extend(extra.iter().map(String::as_str));
    ChildServer::spawn(dir, &flags, |_| false)
}

/// Until `/readyz` answers 200 (start-up with 100,000 checkpoint files
/// takes a while).
const READY_WITHIN: Duration = Duration::from_secs(3600);

/// (VmRSS, VmHWM) of process `pid`, in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Sample `h` of stream number `i` (its phase `i % 24` hours), exact in
/// decimal (the reference must see the server's `f64`).
fn wire(i: usize, h: u64) -> Value {
    let phase = (i % 24) as f64 * std::f64::consts::TAU / 24.0;
    samples::wire(&samples::sample(h, phase))
}

fn quantile_ms(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize] * 1e3
}

/// Send `requests` (stream number, method, path, body) over `conns`
/// connections; returns per-request seconds and the answers by stream.
async fn drive(
    base: &str,
    conns: usize,
    requests: Vec<(usize, reqwest::Method, String, Value)>,
    keep: impl Fn(usize) -> bool + Send + Sync + 'static,
) -> (Vec<f64>, HashMap<usize, Value>) {
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicU64::new(0));
    let keep = Arc::new(keep);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (requests, next, keep) = (Arc::clone(&requests), Arc::clone(&next), Arc::clone(&keep));
        let base = base.to_string();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut times = Vec::new();
            let mut kept = HashMap::new();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some((i, method, path, body)) = requests.get(k) else {
                    break;
                };
                let start = Instant::now();
                let r = client
                    .request(method.clone(), format!("{base}{path}"))
                    .json(body)
                    .send()
                    .await
                    .expect("loopback request");
                let status = r.status().as_u16();
                let answer: Value = r.json().await.unwrap_or(Value::Null);
                times.push(start.elapsed().as_secs_f64());
                assert!(status < 300, "{method} {path}: {status} {answer}");
                if keep(*i) {
                    kept.insert(*i, answer);
                }
            }
            (times, kept)
        }));
    }
    let mut times = Vec::new();
    let mut kept = HashMap::new();
    for t in tasks {
        let (t, k) = t.await.unwrap();
        times.extend(t);
        kept.extend(k);
    }
    times.sort_by(f64::total_cmp);
    (times, kept)
}

/// Peak VmRSS seen by a sampler running until `stop` is set.
fn sample_rss(pid_memory: impl Fn() -> u64 + Send + 'static) -> (Arc<AtomicU64>, Arc<AtomicU64>) {
    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicU64::new(0));
    let (p, s) = (Arc::clone(&peak), Arc::clone(&stop));
    std::thread::spawn(move || {
        while s.load(Ordering::Relaxed) == 0 {
            p.fetch_max(pid_memory(), Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    (peak, stop)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Upper bound of the bucket holding quantile `q` of a histogram.
fn histogram_quantile_ms(text: &str, name: &str, q: f64) -> f64 {
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&format!("{name}_bucket{{le=\""))?;
            let (le, count) = rest.split_once("\"} ")?;
            Some((le.parse().unwrap_or(f64::INFINITY), count.parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |b| b.1);
    buckets
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map_or(f64::NAN, |(le, _)| le * 1e3)
}

async fn scenario_a(conns: usize) {
    let streams: usize = env_or("HTM_SCALE_STREAMS", 10_000);
    let rounds: u64 = env_or("HTM_SCALE_ROUNDS", 2);
    let budget: u64 = env_or("HTM_SCALE_BUDGET", 4 << 30);
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_server(
        dir.path(),
        &[
            "--max-streams".into(),
            streams.to_string(),
            "--max-resident-streams".into(),
            streams.to_string(),
            "--memory-budget-bytes".into(),
            budget.to_string(),
        ],
    );
    let client = reqwest::Client::new();
    server.wait_ready(&client, READY_WITHIN).await;
    let pid = server.child.id();
    let (peak, stop) = sample_rss(move || memory(pid).0);
    println!("(a) {streams} streams, default preset, --memory-budget-bytes {budget}, {conns} connections");
    let puts = (0..streams)
        .map(|i| {
            (
                i,
                reqwest::Method::PUT,
                format!("/streams/a{i}"),
                json!({"value_range": {"min": 0, "max": 100}}),
            )
        })
        .collect();
    let start = Instant::now();
    let (times, _) = drive(&server.base, conns, puts, |_| false).await;
    println!(
        "  create (PUT): {:.1} s, {:.0} streams/s, p50 {:.1} ms, p99 {:.1} ms",
        start.elapsed().as_secs_f64(),
        streams as f64 / start.elapsed().as_secs_f64(),
        quantile_ms(&times, 0.5),
        quantile_ms(&times, 0.99)
    );
    for h in 0..rounds {
        let posts = (0..streams)
            .map(|i| {
                (
                    i,
                    reqwest::Method::POST,
                    format!("/streams/a{i}"),
                    wire(i, h),
                )
            })
            .collect();
        let start = Instant::now();
        let (times, _) = drive(&server.base, conns, posts, |_| false).await;
        let took = start.elapsed().as_secs_f64();
        let m = server.metrics(&client).await;
        println!(
            "  round {h}: {took:.1} s, {:.0} samples/s, request p50 {:.1} ms, p99 {:.1} ms; resident {} ({:.2} GB of models), evictions {}, reloads {}",
            streams as f64 / took,
            quantile_ms(&times, 0.5),
            quantile_ms(&times, 0.99),
            metric(&m, "htm_streams_resident"),
            metric(&m, "htm_resident_model_bytes") / 1e9,
            metric(&m, "htm_stream_evictions_total"),
            metric(&m, "htm_stream_reloads_total"),
        );
    }
    let m = server.metrics(&client).await;
    let name = "htm_stream_reload_duration_seconds";
    println!(
        "  reload: {} reloads, mean {:.1} ms, p50 <= {:.1} ms, p99 <= {:.1} ms (bucket bounds)",
        metric(&m, &format!("{name}_count")),
        metric(&m, &format!("{name}_sum")) / metric(&m, &format!("{name}_count")) * 1e3,
        histogram_quantile_ms(&m, name, 0.5),
        histogram_quantile_ms(&m, name, 0.99)
    );
    stop.store(1, Ordering::Relaxed);
    let (rss, hwm) = memory(server.child.id());
    println!(
        "  server memory: VmRSS now {:.2} GB, peak sampled {:.2} GB, VmHWM {:.2} GB",
        rss as f64 / 1e9,
        peak.load(Ordering::Relaxed) as f64 / 1e9,
        hwm as f64 / 1e9
    );
    let disk: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "  checkpoints on disk: {:.1} GB ({:.1} MB per stream)",
        disk as f64 / 1e9,
        disk as f64 / streams as f64 / 1e6
    );
    // Killed, not stopped: a final checkpoint of every resident model is
    // not what is measured, and the directory is deleted.
    server.kill();
}

fn small_overrides() -> Value {
    json!({
        "value_encoder": {"size": 200, "active_bits": 11},
        "sp": {"column_dimensions": [128], "num_active_columns_per_inh_area": 6},
        "tm": {"cells_per_column": 8}
    })
}

async fn scenario_b(conns: usize) {
    let known: usize = env_or("HTM_SCALE_KNOWN", 100_000);
    let resident: usize = env_or("HTM_SCALE_RESIDENT", 1_000);
    let check: usize = env_or("HTM_SCALE_CHECK", 200);
    let dir = tempfile::tempdir().unwrap();
    let flags = vec![
        "--max-streams".into(),
        known.to_string(),
        "--max-resident-streams".into(),
        resident.to_string(),
    ];
    let server = start_server(dir.path(), &flags);
    let client = reqwest::Client::new();
    server.wait_ready(&client, READY_WITHIN).await;
    println!("(b) {known} known streams, --max-resident-streams {resident}, small model, {conns} connections");
    let put_body = json!({"resolution": 1.0, "overrides": small_overrides()});
    let config = StreamConfig {
        resolution: Some(1.0),
        overrides: small_overrides().to_string(),
        ..StreamConfig::with_preset("default", DEFAULT_THRESHOLD)
    };
    let mut order: Vec<usize> = (0..known).collect();
    Random::new(6).shuffle(&mut order);
    let checked: Arc<std::collections::HashSet<usize>> =
        Arc::new(order[..check.min(known)].iter().copied().collect());

    let start = Instant::now();
    let puts = (0..known)
        .map(|i| {
            (
                i,
                reqwest::Method::PUT,
                format!("/streams/b{i}"),
                put_body.clone(),
            )
        })
        .collect();
    let (put_times, _) = drive(&server.base, conns, puts, |_| false).await;
    let batch = |i: usize, from: u64| -> Value { (from..from + 5).map(|h| wire(i, h)).collect() };
    let posts = (0..known)
        .map(|i| {
            (
                i,
                reqwest::Method::POST,
                format!("/streams/b{i}"),
                batch(i, 0),
            )
        })
        .collect();
    let keep = Arc::clone(&checked);
    let (post_times, answers) = drive(&server.base, conns, posts, move |i| keep.contains(&i)).await;
    let took = start.elapsed().as_secs_f64();
    let m = server.metrics(&client).await;
    println!(
        "  create + one 5-sample batch each: {took:.1} s ({:.0} streams/s); PUT p50 {:.1} ms p99 {:.1} ms; POST p50 {:.1} ms p99 {:.1} ms; resident {}, evictions {}",
        known as f64 / took,
        quantile_ms(&put_times, 0.5),
        quantile_ms(&put_times, 0.99),
        quantile_ms(&post_times, 0.5),
        quantile_ms(&post_times, 0.99),
        metric(&m, "htm_streams_resident"),
        metric(&m, "htm_stream_evictions_total"),
    );
    let (rss, hwm) = memory(server.child.id());
    println!(
        "  server memory: VmRSS {:.2} GB, VmHWM {:.2} GB",
        rss as f64 / 1e9,
        hwm as f64 / 1e9
    );

    // Reference models, computed here.
    let mut reference: HashMap<usize, StreamState> = HashMap::new();
    let mut mismatches = 0;
    for &i in checked.iter() {
        let id = StreamId::new(format!("b{i}")).unwrap();
        let mut st = StreamState::new(id.clone(), config.clone()).unwrap();
        let samples: Vec<Sample> = batch(i, 0)
            .as_array()
            .unwrap()
            .iter()
            .map(from_wire)
            .collect();
        let mut out: Vec<Applied> = Vec::new();
        st.apply(&samples, &mut out).unwrap();
        let want: Vec<Value> = out
            .iter()
            .map(|a| serde_json::from_str(&result_json(&id, a)).unwrap())
            .collect();
        if answers[&i] != Value::Array(want) {
            mismatches += 1;
        }
        reference.insert(i, st);
    }
    println!(
        "  checked {} random streams against in-process models: {mismatches} mismatches",
        checked.len()
    );

    let start = Instant::now();
    server.terminate();
    println!(
        "  graceful stop (final checkpoints): {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let files = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".ckpt"))
        })
        .count();
    let start = Instant::now();
    let mut server = start_server(dir.path(), &flags);
    server.wait_ready(&client, READY_WITHIN).await;
    println!(
        "  start-up with {files} checkpoint files until /readyz: {:.2} s",
        start.elapsed().as_secs_f64()
    );
    let (rss, _) = memory(server.child.id());
    println!(
        "  server memory after start: VmRSS {:.2} GB",
        rss as f64 / 1e9
    );

    let posts = checked
        .iter()
        .map(|&i| {
            (
                i,
                reqwest::Method::POST,
                format!("/streams/b{i}"),
                wire(i, 5),
            )
        })
        .collect();
    let keep = Arc::clone(&checked);
    let (times, answers) = drive(&server.base, conns, posts, move |i| keep.contains(&i)).await;
    let mut mismatches = 0;
    for (&i, st) in reference.iter_mut() {
        let id = StreamId::new(format!("b{i}")).unwrap();
        let mut out = Vec::new();
        st.apply(&[from_wire(&wire(i, 5))], &mut out).unwrap();
        let want: Value = serde_json::from_str(&result_json(&id, &out[0])).unwrap();
        if answers[&i] != want {
            mismatches += 1;
        }
    }
    println!(
        "  after restart, one more sample to each checked stream (reloaded from files registered by name): {mismatches} mismatches; request p50 {:.1} ms, p99 {:.1} ms",
        quantile_ms(&times, 0.5),
        quantile_ms(&times, 0.99)
    );
    server.kill();
}

fn main() {
    // `cargo bench --no-run` builds this; `cargo test --benches` passes
    // `--bench`-less args: run only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let only: String = env_or("HTM_SCALE_ONLY", String::new());
    let conns: usize = env_or("HTM_SCALE_CONNS", 8);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    println!("shared 2-core VM (other builds may run at the same time); release build");
    if only.is_empty() || only == "a" {
        rt.block_on(scenario_a(conns));
    }
    if only.is_empty() || only == "b" {
        rt.block_on(scenario_b(conns));
    }
}
