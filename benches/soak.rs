//! Soak benchmark (issue 6, "Load"): sustained mixed load against the
//! release server for a bounded time, on loopback only.
//!
//! ```text
//! cargo bench --bench soak                                  # 10 minutes
//! HTM_SOAK_SECS=60 cargo bench --bench soak                 # 1 minute
//! ```
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `HTM_SOAK_SECS` | `600` | seconds of load |
//! | `HTM_SOAK_RATE` | `750` | offered samples/s over all kinds: half of the ~1,500 samples/s this mix sustained when offered 1,600 (README "Soak") |
//! | `HTM_SOAK_STREAMS` | `48` | streams of single-sample POSTs (plus 8 batch and 8 WebSocket streams) |
//! | `HTM_SOAK_CHECKPOINT_SECS` | `60` | the server's `--checkpoint-interval-secs` (its default) |
//! | `HTM_SOAK_WARMUP` | `450` | samples each stream learns before the load starts |
//! | `HTM_SOAK_LEARN` | `true` | `false`: every load sample says `"learn": false`, so no model can grow and any memory growth is the server's |
//!
//! The server is the real binary (`target/release/htm-stream serve`) on
//! `127.0.0.1:0` with a temporary data directory, `--durability fsync`
//! and `--checkpoint-interval-secs` from `HTM_SOAK_CHECKPOINT_SECS`. (Every
//! round checkpoints all 64 streams, some 15 MB each once warm: at 5 s
//! that is ~200 MB/s of checkpoint writes, which this VM's disk cannot
//! sustain beside the log's fsyncs.) Every stream is first warmed with
//! `HTM_SOAK_WARMUP` samples in batches (by default 450: past the `default`
//! preset's 300 calibration samples). Then, open loop at fixed intervals (latency measured from
//! each request's *scheduled* time, so a slow answer is charged to the
//! requests it delays):
//! - 60 % of the rate as single-sample POSTs over keep-alive connections
//!   (16 connections, each owning a disjoint set of streams);
//! - 20 % as batches of 50 samples (2 connections over 8 streams);
//! - 20 % as single-sample WebSocket frames (8 connections, one stream
//!   each, each frame answered before the next is sent);
//! - 4 `/feed` subscribers, two of them with `?all=true`; received and
//!   lost (`lagged`) messages are counted.
//!
//! Every 10 s the bench reads the server's RSS from `/proc/<pid>/status`
//! and the models' own size from `/metrics` (`htm_model_memory_bytes`): the
//! models keep growing while they learn (segments and synapses), so a leak
//! shows as growth of RSS *minus* model bytes. The bench prints a table
//! (per kind: requests, samples/s, p50/p99/p99.9 latency, errors), the
//! feed counts, the memory series and the growth of both over the second
//! half, and exits non-zero if any request failed.

#[path = "../tests/server_support/mod.rs"]
mod server_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, NaiveDateTime};
use futures_util::{SinkExt, StreamExt};
use server_support::child::ChildServer;
use tokio_tungstenite::tungstenite::Message;

const WARMUP_BATCH: u64 = 5_000;
const HTTP_CONNS: usize = 16;
const BATCH_STREAMS: usize = 8;
const BATCH_CONNS: usize = 2;
const BATCH_SIZE: u64 = 50;
const WS_STREAMS: usize = 8;
const FEEDS: usize = 4;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn t0() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2026, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
}

/// What every load request sends after the warm-up.
#[derive(Clone, Copy)]
struct Load {
    /// The step the load starts at (the warm-up's length).
    first_step: u64,
    /// Whether the load's samples are learned.
    learn: bool,
}

/// Sample `step` of stream `seed` as JSON: 5-minute spacing, a daily wave.
fn sample_json(seed: usize, step: u64, learn: bool) -> String {
    let t = t0() + chrono::Duration::seconds(step as i64 * 300);
    let phase = step as f64 * std::f64::consts::TAU / 288.0 + seed as f64;
    let v = 50.0 + 30.0 * phase.sin() + (step % 7) as f64;
    let learn = if learn { "" } else { r#","learn":false"# };
    format!(
        r#"{{"timestamp":"{}Z","value":{v:.3}{learn}}}"#,
        t.format("%Y-%m-%dT%H:%M:%S")
    )
}

fn batch_json(seed: usize, from: u64, n: u64, learn: bool) -> String {
    let parts: Vec<String> = (from..from + n)
        .map(|s| sample_json(seed, s, learn))
        .collect();
    format!("[{}]", parts.join(","))
}

/// Latencies (µs) and errors of one kind of request.
#[derive(Default)]
struct Tally {
    latencies: Vec<u32>,
    samples: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn record(&mut self, scheduled: Instant, samples: u64, outcome: Result<(), String>) {
        let us = scheduled.elapsed().as_micros().min(u32::MAX as u128) as u32;
        self.latencies.push(us);
        match outcome {
            Ok(()) => self.samples += samples,
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.samples += other.samples;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// A fixed-interval schedule; `next` returns each slot's scheduled time.
struct Schedule(tokio::time::Interval);

impl Schedule {
    fn new(per_sec: f64, offset: f64) -> Schedule {
        let period = Duration::from_secs_f64(1.0 / per_sec);
        let start = tokio::time::Instant::now() + period.mul_f64(offset);
        let mut i = tokio::time::interval_at(start, period);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        Schedule(i)
    }

    async fn next(&mut self) -> Instant {
        self.0.tick().await.into_std()
    }
}

async fn post(client: &reqwest::Client, url: &str, body: String) -> Result<(), String> {
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let text = r.text().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{status}: {text}"))
    }
}

/// One keep-alive connection sending single samples (or batches) to its
/// streams in turn until `end`.
async fn http_sender(
    base: String,
    streams: Vec<usize>,
    load: Load,
    batch: u64,
    per_sec: f64,
    offset: f64,
    end: Instant,
) -> Tally {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let mut steps = vec![load.first_step; streams.len()];
    let mut tally = Tally::default();
    let mut schedule = Schedule::new(per_sec, offset);
    let mut turn = 0;
    loop {
        let scheduled = schedule.next().await;
        if scheduled >= end {
            return tally;
        }
        let i = turn % streams.len();
        turn += 1;
        let body = if batch == 1 {
            sample_json(streams[i], steps[i], load.learn)
        } else {
            batch_json(streams[i], steps[i], batch, load.learn)
        };
        steps[i] += batch;
        let url = format!("{base}/streams/soak-{}", streams[i]);
        let outcome = post(&client, &url, body).await;
        tally.record(scheduled, batch, outcome);
    }
}

/// One WebSocket ingest connection on one stream.
async fn ws_sender(
    ws_base: String,
    stream: usize,
    load: Load,
    per_sec: f64,
    offset: f64,
    end: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let url = format!("{ws_base}/streams/soak-{stream}/ws");
    let (mut socket, _) = match tokio_tungstenite::connect_async(&url).await {
        Ok(s) => s,
        Err(e) => {
            tally.errors += 1;
            tally.first_error = Some(format!("ws connect: {e}"));
            return tally;
        }
    };
    let mut schedule = Schedule::new(per_sec, offset);
    let mut step = load.first_step;
    loop {
        let scheduled = schedule.next().await;
        if scheduled >= end {
            let _ = socket.close(None).await;
            return tally;
        }
        let frame = sample_json(stream, step, load.learn);
        step += 1;
        let outcome = async {
            socket
                .send(Message::text(frame))
                .await
                .map_err(|e| e.to_string())?;
            match socket.next().await {
                Some(Ok(Message::Text(t))) if !t.contains("\"error\"") => Ok(()),
                other => Err(format!("ws answer: {other:?}")),
            }
        }
        .await;
        tally.record(scheduled, 1, outcome);
    }
}

/// A `/feed` subscriber counting messages received and lost until `end`;
/// an error if it cannot connect.
async fn feed(
    ws_base: String,
    all: bool,
    received: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    end: Instant,
) -> Result<(), String> {
    let url = format!("{ws_base}/feed{}", if all { "?all=true" } else { "" });
    let (mut socket, _) = tokio_tungstenite::connect_async(&url)
        .await
        .map_err(|e| format!("feed connect: {e}"))?;
    let deadline = tokio::time::Instant::from_std(end);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, socket.next()).await {
        if let Message::Text(t) = msg {
            if let Some(missed) = t
                .split("\"missed\":")
                .nth(1)
                .and_then(|r| r.trim_end_matches('}').parse::<u64>().ok())
            {
                lost.fetch_add(missed, Ordering::Relaxed);
            } else {
                received.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// The models' own memory, in MB, from the server's `/metrics`.
async fn model_mb(client: &reqwest::Client, base: &str) -> Option<f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let bytes: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("htm_model_memory_bytes "))?
        .trim()
        .parse()
        .ok()?;
    Some(bytes / 1e6)
}

/// One memory sample: seconds into the run, server RSS MB, model MB.
type MemorySample = (u64, f64, f64);

/// How much `pick` grew from the middle of `series` to its end, in MB and %.
fn second_half_growth(series: &[MemorySample], pick: impl Fn(&MemorySample) -> f64) -> String {
    let (mid, last) = (&series[series.len() / 2], &series[series.len() - 1]);
    let (a, b) = (pick(mid), pick(last));
    format!(
        "{:+.1} MB ({:+.2} %) over {}..{} s",
        b - a,
        (b - a) / a * 100.0,
        mid.0,
        last.0
    )
}

fn quantile_ms(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

/// Start the server binary (checkpoints every `checkpoint_secs`) and wait
/// until it is ready.
async fn start_server(dir: &std::path::Path, checkpoint_secs: u64) -> ChildServer {
    let checkpoint_secs = checkpoint_secs.to_string();
    let flags = [
        "--durability",
        "fsync",
        "--checkpoint-interval-secs",
        &checkpoint_secs,
    ];
    let server = ChildServer::spawn(dir, &flags, |_| false);
    server
        .wait_ready(&reqwest::Client::new(), Duration::from_secs(30))
        .await;
    server
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let secs: u64 = env_or("HTM_SOAK_SECS", 600);
    let rate: f64 = env_or("HTM_SOAK_RATE", 750.0);
    let http_streams: usize = env_or("HTM_SOAK_STREAMS", 48);
    let checkpoint_secs: u64 = env_or("HTM_SOAK_CHECKPOINT_SECS", 60);
    let load = Load {
        first_step: env_or("HTM_SOAK_WARMUP", 450),
        learn: env_or("HTM_SOAK_LEARN", true),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_server(dir.path(), checkpoint_secs).await;
    let base = server.base.clone();
    let client = reqwest::Client::new();
    let ws_base = base.replacen("http", "ws", 1);
    let pid = server.child.id();
    let total_streams = http_streams + BATCH_STREAMS + WS_STREAMS;
    println!(
        "soak: {secs} s at {rate} samples/s offered; {total_streams} streams warmed with {} samples each; load learned: {}; server pid {pid}",
        load.first_step, load.learn
    );

    // Warm every stream past calibration, a few at a time.
    let warm_client = reqwest::Client::new();
    let warm_start = Instant::now();
    for chunk in (0..total_streams).collect::<Vec<_>>().chunks(4) {
        let posts = chunk.iter().map(|&s| {
            let url = format!("{base}/streams/soak-{s}");
            let client = &warm_client;
            async move {
                for from in (0..load.first_step).step_by(WARMUP_BATCH as usize) {
                    let n = WARMUP_BATCH.min(load.first_step - from);
                    post(client, &url, batch_json(s, from, n, true)).await?;
                }
                Ok::<(), String>(())
            }
        });
        for r in futures_util::future::join_all(posts).await {
            r.expect("warm-up batch accepted");
        }
    }
    println!("warmed in {:.1} s", warm_start.elapsed().as_secs_f64());

    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let received = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let feeds: Vec<_> = (0..FEEDS)
        .map(|i| {
            tokio::spawn(feed(
                ws_base.clone(),
                i % 2 == 0,
                Arc::clone(&received),
                Arc::clone(&lost),
                end,
            ))
        })
        .collect();
    let http_rate = rate * 0.6 / HTTP_CONNS as f64;
    let http: Vec<_> = (0..HTTP_CONNS)
        .map(|c| {
            let streams: Vec<usize> = (0..http_streams).filter(|s| s % HTTP_CONNS == c).collect();
            let offset = c as f64 / HTTP_CONNS as f64;
            tokio::spawn(http_sender(
                base.clone(),
                streams,
                load,
                1,
                http_rate,
                offset,
                end,
            ))
        })
        .collect();
    let batch_rate = rate * 0.2 / BATCH_SIZE as f64 / BATCH_CONNS as f64;
    let batches: Vec<_> = (0..BATCH_CONNS)
        .map(|c| {
            let streams: Vec<usize> = (0..BATCH_STREAMS)
                .filter(|s| s % BATCH_CONNS == c)
                .map(|s| http_streams + s)
                .collect();
            let offset = c as f64 / BATCH_CONNS as f64;
            tokio::spawn(http_sender(
                base.clone(),
                streams,
                load,
                BATCH_SIZE,
                batch_rate,
                offset,
                end,
            ))
        })
        .collect();
    let ws_rate = rate * 0.2 / WS_STREAMS as f64;
    let ws: Vec<_> = (0..WS_STREAMS)
        .map(|i| {
            let stream = http_streams + BATCH_STREAMS + i;
            tokio::spawn(ws_sender(
                ws_base.clone(),
                stream,
                load,
                ws_rate,
                i as f64 / WS_STREAMS as f64,
                end,
            ))
        })
        .collect();

    let sample_memory = |elapsed: u64| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let model = model_mb(&client, &base).await.unwrap_or(f64::NAN);
            (elapsed, rss_mb(pid).unwrap_or(f64::NAN), model)
        }
    };
    let mut memory: Vec<MemorySample> = vec![sample_memory(0).await];
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(10),
        Duration::from_secs(10),
    );
    while Instant::now() + Duration::from_secs(10) <= end + Duration::from_millis(500) {
        ticker.tick().await;
        memory.push(sample_memory(start.elapsed().as_secs()).await);
    }

    let mut kinds = Vec::new();
    for (name, handles) in [
        ("HTTP single-sample POSTs", http),
        ("HTTP batches of 50", batches),
        ("WebSocket single-sample frames", ws),
    ] {
        let mut tally = Tally::default();
        for h in handles {
            tally.merge(h.await.unwrap());
        }
        kinds.push((name, tally));
    }
    let mut feed_errors = 0;
    for f in feeds {
        if let Err(e) = f.await.unwrap() {
            println!("  feed error: {e}");
            feed_errors += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let server_metrics = match client.get(format!("{base}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    server.kill();

    println!();
    println!("| kind | requests | samples/s | p50 ms | p99 ms | p99.9 ms | errors |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut errors = 0;
    let mut samples = 0;
    for (name, mut t) in kinds {
        t.latencies.sort_unstable();
        errors += t.errors;
        samples += t.samples;
        println!(
            "| {name} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            t.latencies.len(),
            t.samples as f64 / elapsed,
            quantile_ms(&t.latencies, 0.5),
            quantile_ms(&t.latencies, 0.99),
            quantile_ms(&t.latencies, 0.999),
            t.errors
        );
        if let Some(e) = t.first_error {
            println!("  first error ({name}): {e}");
        }
    }
    println!(
        "| all | | {:.0} | | | | {errors} |",
        samples as f64 / elapsed
    );
    println!();
    println!(
        "feed: {} subscribers ({} with ?all=true), {} messages received, {} lost (lagged)",
        FEEDS,
        FEEDS.div_ceil(2),
        received.load(Ordering::Relaxed),
        lost.load(Ordering::Relaxed)
    );
    let series: Vec<String> = memory
        .iter()
        .map(|(t, rss, model)| format!("{t}s {rss:.0}/{model:.0}"))
        .collect();
    println!("server RSS / model MB every 10 s: {}", series.join(", "));
    if memory.len() >= 3 {
        // The model estimate counts allocated capacity, RSS touched pages,
        // so only their growth is compared.
        let (mid, last) = (&memory[memory.len() / 2], &memory[memory.len() - 1]);
        println!(
            "second half: RSS {}; models {}; RSS growth not explained by the models {:+.1} MB",
            second_half_growth(&memory, |m| m.1),
            second_half_growth(&memory, |m| m.2),
            (last.1 - mid.1) - (last.2 - mid.2)
        );
    }
    let value = |name: &str| {
        server_metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    println!(
        "server: {} checkpoints written in {:.1} s in all; {} log fsyncs, mean {:.2} ms",
        value("htm_checkpoint_writes_total"),
        value("htm_checkpoint_duration_seconds_sum"),
        value("htm_wal_fsync_duration_seconds_count"),
        value("htm_wal_fsync_duration_seconds_sum") / value("htm_wal_fsync_duration_seconds_count")
            * 1e3
    );
    errors += feed_errors;
    if errors > 0 {
        eprintln!("soak: {errors} request(s) failed");
        std::process::exit(1);
    }
}
