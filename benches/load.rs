//! Load benchmark of the HTTP service (issue 4, "Speed"): samples/s and
//! latency of `POST /streams/{id}` against a release build on loopback.
//!
//! # Running it
//!
//! ```text
//! cargo bench --bench load
//! HTM_LOAD_SECS=30 HTM_LOAD_CONNS=32 cargo bench --bench load
//! ```
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `HTM_LOAD_SECS` | `10` | measured seconds per scenario |
//! | `HTM_LOAD_CONNS` | `64` | keep-alive connections (at most one per stream) |
//! | `HTM_LOAD_WARMUP` | the `default` preset's calibration samples + 150 (450) | samples sent to each stream, in one batch, before it is measured |
//! | `HTM_LOAD_RATE` | half of (a) at 1,000 streams | offered rate of the open-loop scenario, samples/s |
//! | `HTM_LOAD_SERVER_THREADS` | `2` | worker threads of the server's runtime |
//! | `HTM_LOAD_CLIENT_THREADS` | `1` | worker threads of the load generator's runtime |
//! | `HTM_LOAD_STREAMS` | `1,100,1000` | stream counts of scenario (a) |
//! | `HTM_LOAD_CLOSED_ONLY` | `false` | run scenario (a) only (skip (b), (c), (d)) |
//!
//! Server flags come from their `HTM_*` variables too (the server parses
//! its settings with the environment as fallback), e.g. `HTM_DURABILITY=group`.
//!
//! # What it does
//!
//! The server runs **in-process**: [`htm_stream::server::run`] on its own
//! multi-thread tokio runtime (threads named `htm-srv`, blocking pool
//! included; beside it the server's stream workers, `htm-worker`, and the
//! log's fsync thread) over a real `127.0.0.1:0` socket, with a temporary data
//! directory, periodic checkpoints off (`--checkpoint-interval-secs 0`) and
//! a memory budget of 70 % of `MemAvailable` (`--memory-budget-bytes`,
//! unless `HTM_MEMORY_BUDGET_BYTES` is set), so the streams chosen below
//! stay resident;
//! every other setting is the `serve` default, so streams are created by their
//! first sample with the `default` preset. The load generator is a reqwest
//! client on a second runtime (threads named `htm-load`); server and client
//! share the machine's cores. Only loopback is contacted; every scenario
//! stops after `HTM_LOAD_SECS`. At the end the server runtime is dropped
//! without the final checkpoint (it would write every model to the temporary
//! directory, which is then deleted).
//!
//! Each connection is one task with its own `reqwest::Client` (so one
//! keep-alive connection each) that owns a disjoint set of streams and sends
//! to them in turn, so every stream's timestamps increase (5 minutes apart,
//! RFC 3339 strings, as a sensor would send them). With fewer streams than
//! `HTM_LOAD_CONNS` there is one connection per stream: a stream's samples
//! are applied one at a time anyway, and two connections on one stream
//! could reorder its timestamps. Before a stream set is measured, each
//! stream gets `HTM_LOAD_WARMUP` samples in one batch, so the `default`
//! preset's calibration samples (held until the value range is known, then
//! learned) are behind it and the measurement is steady-state model steps.
//!
//! Only one stream set is held at a time (the previous one is deleted).
//! A warmed `default` model takes tens of MB, so 1,000 of them may not fit
//! in memory: the bench measures the memory per stream while warming the
//! 100-stream set and, if 1,000 streams would take more than 60% of
//! `MemAvailable`, uses as many as fit and says so under the table.
//!
//! Scenarios:
//! - **(a) closed loop**: single-sample POSTs, as fast as answers come back,
//!   over 1, 100 and 1,000 streams.
//! - **(b) open loop**: single-sample POSTs over the 1,000 streams of (a) at a
//!   fixed rate (half of (a) at 1,000 streams unless `HTM_LOAD_RATE`). Each
//!   connection sends at fixed intervals (rate / connections, staggered), and
//!   latency is measured from the *scheduled* send time, so a slow answer
//!   that delays later sends is counted in them too (no coordinated
//!   omission). The latency from the actual send is printed as well.
//! - **(c) batches**: 100 samples per POST over 100 fresh streams, closed loop.
//! - **(d) raw `Model::step`**: the `default` preset on one thread of this
//!   process, no server: 100 models warmed like the streams of (c), stepped
//!   in turn for `HTM_LOAD_SECS`, so model age and memory footprint match
//!   (c); once one step per model in turn (the access pattern of (a): each
//!   step finds its ~30 MB model out of cache) and once 100 steps per model
//!   in turn (the pattern of (c), which (c) is compared with).
//!
//! The table's latencies are per request (a batch request carries 100
//! samples). "errors" counts non-2xx answers other than 429/503 and
//! transport failures; 429/503 (backpressure) are counted apart. CPU time is
//! read from `/proc/self/task/*/stat` by thread name, so server and client
//! are told apart; it is `-` where `/proc` is not there.
//!
//! The batch-vs-raw comparison (with the 100-steps-per-model raw rate) is
//! printed twice: batch samples/s over the raw one-thread steps/s (the
//! server may use both cores), and batch samples per server CPU-second over
//! raw steps per CPU-second, which other load on the machine does not skew.

use std::time::{Duration, Instant};

use chrono::{NaiveDate, NaiveDateTime};
use htm_stream::model::{Model, ModelParams};
use htm_stream::server::{run, ServeArgs};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

/// Streams of the single-sample scenarios.
const STREAM_COUNTS: [usize; 3] = [1, 100, 1_000];
/// Streams of the batch scenario and of the raw-step comparison.
const BATCH_STREAMS: usize = 100;
/// Samples per POST in the batch scenario.
const BATCH_SIZE: usize = 100;
/// Seconds between a stream's consecutive sample timestamps.
const SAMPLE_PERIOD_SECS: i64 = 300;

/// Settings from the environment.
#[derive(Debug, Clone)]
struct Config {
    secs: f64,
    conns: usize,
    warmup: usize,
    rate: Option<f64>,
    server_threads: usize,
    client_threads: usize,
    streams: Vec<usize>,
    closed_only: bool,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

/// Samples that take a `default` stream past its calibration, plus 150
/// steps of the built model.
fn default_warmup() -> usize {
    htm_stream::model::ModelParams::default_preset()
        .value_encoder
        .calibration_samples as usize
        + 150
}

impl Config {
    fn from_env() -> Config {
        let c = Config {
            secs: env_or("HTM_LOAD_SECS", 10.0),
            conns: env_or("HTM_LOAD_CONNS", 64),
            warmup: env_or("HTM_LOAD_WARMUP", default_warmup()),
            rate: std::env::var("HTM_LOAD_RATE")
                .ok()
                .map(|v| v.parse().expect("HTM_LOAD_RATE is samples/s")),
            server_threads: env_or("HTM_LOAD_SERVER_THREADS", 2),
            client_threads: env_or("HTM_LOAD_CLIENT_THREADS", 1),
            streams: std::env::var("HTM_LOAD_STREAMS").map_or_else(
                |_| STREAM_COUNTS.to_vec(),
                |v| {
                    v.split(',')
                        .map(|n| {
                            n.trim()
                                .parse()
                                .expect("HTM_LOAD_STREAMS is a list of counts")
                        })
                        .collect()
                },
            ),
            closed_only: env_or("HTM_LOAD_CLOSED_ONLY", false),
        };
        assert!(c.secs > 0.0 && c.conns > 0 && c.server_threads > 0 && c.client_threads > 0);
        c
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.secs)
    }
}

/// The sample a stream sends at `step`: a daily sine with a per-stream
/// phase and a little deterministic noise, and its timestamp.
fn sample_at(stream: usize, step: u64) -> (f64, NaiveDateTime) {
    let base = NaiveDate::from_ymd_opt(2026, 11, 27)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("valid date");
    let ts = base + chrono::Duration::seconds(step as i64 * SAMPLE_PERIOD_SECS);
    let per_day = (86_400 / SAMPLE_PERIOD_SECS) as f64;
    let phase = (stream % 17) as f64 * 0.37;
    let angle = std::f64::consts::TAU * step as f64 / per_day + phase;
    // A cheap integer hash for noise in [-1, 1].
    let h = (step ^ (stream as u64).rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let noise = (h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
    (50.0 + 20.0 * angle.sin() + noise, ts)
}

/// One sample as the JSON object the API takes.
fn sample_json(out: &mut String, stream: usize, step: u64) {
    use std::fmt::Write;
    let (value, ts) = sample_at(stream, step);
    write!(
        out,
        r#"{{"value":{value:.4},"timestamp":"{}"}}"#,
        ts.format("%Y-%m-%dT%H:%M:%SZ")
    )
    .expect("writing to a String");
}

/// One stream as the client sees it.
#[derive(Debug, Clone)]
struct Cursor {
    /// Index of the stream (for its values).
    index: usize,
    /// `http://addr/streams/{id}`.
    url: String,
    /// Samples sent so far; the next sample is step `sent`.
    sent: u64,
}

/// A set of streams named `{prefix}-{i}`.
fn stream_set(base: &str, prefix: &str, count: usize) -> Vec<Cursor> {
    (0..count)
        .map(|i| Cursor {
            index: i,
            url: format!("{base}/streams/{prefix}-{i}"),
            sent: 0,
        })
        .collect()
}

/// Deal `streams` to `conns` connections round-robin (stream `i` to
/// connection `i % conns`).
fn deal(streams: Vec<Cursor>, conns: usize) -> Vec<Vec<Cursor>> {
    let mut out: Vec<Vec<Cursor>> = (0..conns).map(|_| Vec::new()).collect();
    for (i, s) in streams.into_iter().enumerate() {
        out[i % conns].push(s);
    }
    out
}

/// Put dealt streams back in index order.
fn gather(parts: Vec<Vec<Cursor>>) -> Vec<Cursor> {
    let mut all: Vec<Cursor> = parts.into_iter().flatten().collect();
    all.sort_by_key(|c| c.index);
    all
}

/// How the answers of a scenario went.
#[derive(Debug, Default)]
struct Tally {
    /// Requests answered 2xx.
    ok: u64,
    /// Samples in those requests.
    samples: u64,
    /// 429 and 503 answers (backpressure).
    backpressure: u64,
    /// Other non-2xx answers and transport failures.
    errors: u64,
    /// First few error and backpressure answers, for the report.
    error_examples: Vec<String>,
    /// Latency of every 2xx request, microseconds (from the scheduled send
    /// time in the open-loop scenario).
    latency_us: Vec<u32>,
    /// Open loop only: latency from the actual send, microseconds.
    service_us: Vec<u32>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.samples += other.samples;
        self.backpressure += other.backpressure;
        self.errors += other.errors;
        for e in other.error_examples {
            if self.error_examples.len() < 5 {
                self.error_examples.push(e);
            }
        }
        self.latency_us.extend(other.latency_us);
        self.service_us.extend(other.service_us);
    }

    fn note_error(&mut self, what: String) {
        self.errors += 1;
        if self.error_examples.len() < 5 {
            self.error_examples.push(what);
        }
    }
}

/// Send one body; returns whether it was a 2xx, counting the rest.
async fn send(client: &reqwest::Client, url: &str, body: String, tally: &mut Tally) -> bool {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    match response {
        Ok(r) => {
            let status = r.status();
            // Read the whole answer so the connection is reused.
            let text = r.bytes().await;
            if status.is_success() && text.is_ok() {
                true
            } else if status.as_u16() == 429 || status.as_u16() == 503 {
                tally.backpressure += 1;
                if tally.error_examples.len() < 5 {
                    let body = text.map(|b| String::from_utf8_lossy(&b).into_owned());
                    tally
                        .error_examples
                        .push(format!("{status}: {}", body.unwrap_or_default()));
                }
                false
            } else {
                let body = text
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_else(|e| e.to_string());
                tally.note_error(format!("{status}: {body}"));
                false
            }
        }
        Err(e) => {
            tally.note_error(format!("transport: {e}"));
            false
        }
    }
}

/// A client with one keep-alive connection; `timeout` bounds each request.
fn new_client_with(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .timeout(timeout)
        .build()
        .expect("a reqwest client")
}

fn new_client() -> reqwest::Client {
    new_client_with(Duration::from_secs(30))
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// How each connection paces its requests.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// Send the next request when the answer to the last one is in.
    Closed,
    /// Send at `interval` steps from `start + offset` (open loop).
    Open {
        start: tokio::time::Instant,
        offset: Duration,
        interval: Duration,
    },
}

/// One connection: send `per_request` samples per POST to its streams in
/// turn until `deadline`.
async fn connection(
    mut streams: Vec<Cursor>,
    per_request: usize,
    pace: Pace,
    deadline: tokio::time::Instant,
) -> (Vec<Cursor>, Tally) {
    let client = new_client();
    let mut tally = Tally::default();
    let mut k: u32 = 0;
    'outer: loop {
        for s in streams.iter_mut() {
            let scheduled = match pace {
                Pace::Closed => None,
                Pace::Open {
                    start,
                    offset,
                    interval,
                } => {
                    let at = start + offset + interval * k;
                    if at >= deadline {
                        break 'outer;
                    }
                    tokio::time::sleep_until(at).await;
                    Some(at.into_std())
                }
            };
            k += 1;
            let mut body = String::with_capacity(per_request * 64 + 2);
            if per_request > 1 {
                body.push('[');
            }
            for i in 0..per_request {
                if i > 0 {
                    body.push(',');
                }
                sample_json(&mut body, s.index, s.sent + i as u64);
            }
            if per_request > 1 {
                body.push(']');
            }
            let sent_at = Instant::now();
            let ok = send(&client, &s.url, body, &mut tally).await;
            let done = Instant::now();
            // A refused request changed nothing, but moving on keeps
            // timestamps increasing either way.
            s.sent += per_request as u64;
            if ok {
                tally.ok += 1;
                tally.samples += per_request as u64;
                match scheduled {
                    Some(at) => {
                        tally.latency_us.push(micros(done - at));
                        tally.service_us.push(micros(done - sent_at));
                    }
                    None => tally.latency_us.push(micros(done - sent_at)),
                }
            }
            if pace_is_closed(pace) && tokio::time::Instant::now() >= deadline {
                break 'outer;
            }
        }
    }
    (streams, tally)
}

fn pace_is_closed(p: Pace) -> bool {
    matches!(p, Pace::Closed)
}

/// Send each stream `warmup` samples in one batch (`conns` at a time).
async fn warm_up(streams: Vec<Cursor>, warmup: usize, conns: usize) -> (Vec<Cursor>, Tally) {
    if warmup == 0 {
        return (streams, Tally::default());
    }
    let conns = conns.min(streams.len()).max(1);
    let mut tasks = Vec::new();
    for part in deal(streams, conns) {
        tasks.push(tokio::spawn(async move {
            // Creating a stream builds its model at the end of calibration,
            // which is slow when hundreds are created at once.
            let client = new_client_with(Duration::from_secs(600));
            let mut tally = Tally::default();
            let mut part = part;
            for s in part.iter_mut() {
                let mut body = String::from("[");
                for i in 0..warmup {
                    if i > 0 {
                        body.push(',');
                    }
                    sample_json(&mut body, s.index, s.sent + i as u64);
                }
                body.push(']');
                if send(&client, &s.url, body, &mut tally).await {
                    tally.ok += 1;
                    tally.samples += warmup as u64;
                }
                s.sent += warmup as u64;
            }
            (part, tally)
        }));
    }
    collect(tasks).await
}

async fn collect(
    tasks: Vec<tokio::task::JoinHandle<(Vec<Cursor>, Tally)>>,
) -> (Vec<Cursor>, Tally) {
    let mut parts = Vec::new();
    let mut tally = Tally::default();
    for t in tasks {
        let (part, t) = t.await.expect("a connection task panicked");
        parts.push(part);
        tally.merge(t);
    }
    (gather(parts), tally)
}

/// CPU seconds used so far by this process's live threads whose name
/// `counts`, from `/proc/self/task/*/stat`; `None` without `/proc`.
/// Assumes the usual 100 clock ticks per second.
fn cpu_secs(counts: impl Fn(&str) -> bool) -> Option<f64> {
    let mut ticks: u64 = 0;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let Ok(stat) = std::fs::read_to_string(entry.ok()?.path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !counts(&stat[open + 1..close]) {
            continue;
        }
        // After "pid (comm) ": state is field 3; utime and stime are 14, 15.
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        ticks += utime + stime;
    }
    Some(ticks as f64 / 100.0)
}

/// CPU seconds of the server's threads (every thread but the client's:
/// the runtime, the stream workers, the log's fsync thread) and the
/// client's.
fn cpu_now() -> (Option<f64>, Option<f64>) {
    let client = |name: &str| name.starts_with("htm-load");
    (cpu_secs(|name| !client(name)), cpu_secs(client))
}

/// One row of the report.
#[derive(Debug)]
struct Row {
    scenario: String,
    streams: usize,
    conns: usize,
    samples_per_sec: f64,
    tally: Tally,
    /// Server and client CPU seconds per wall second (cores used).
    server_cores: Option<f64>,
    client_cores: Option<f64>,
}

/// Run one measured scenario on `streams`.
async fn measure(
    cfg: &Config,
    name: &str,
    streams: Vec<Cursor>,
    per_request: usize,
    rate: Option<f64>,
) -> (Vec<Cursor>, Row) {
    let count = streams.len();
    let conns = cfg.conns.min(count).max(1);
    let (srv0, cli0) = cpu_now();
    let wall = Instant::now();
    let start = tokio::time::Instant::now() + Duration::from_millis(5);
    let deadline = start + cfg.duration();
    let mut tasks = Vec::new();
    for (w, part) in deal(streams, conns).into_iter().enumerate() {
        let pace = match rate {
            None => Pace::Closed,
            Some(r) => {
                // Each connection offers r / conns requests/s, staggered so
                // the sends of all connections are evenly spaced.
                let interval = Duration::from_secs_f64(conns as f64 / r);
                Pace::Open {
                    start,
                    offset: interval.mul_f64(w as f64 / conns as f64),
                    interval,
                }
            }
        };
        tasks.push(tokio::spawn(connection(part, per_request, pace, deadline)));
    }
    let (streams, tally) = collect(tasks).await;
    let secs = wall.elapsed().as_secs_f64();
    let (srv1, cli1) = cpu_now();
    let cores = |a: Option<f64>, b: Option<f64>| Some((b? - a?) / secs);
    let row = Row {
        scenario: name.to_string(),
        streams: count,
        conns,
        samples_per_sec: tally.samples as f64 / secs,
        server_cores: cores(srv0, srv1),
        client_cores: cores(cli0, cli1),
        tally,
    };
    eprintln!(
        "  {name}: {:.0} samples/s, {} requests ok, {} backpressure, {} errors",
        row.samples_per_sec, row.tally.ok, row.tally.backpressure, row.tally.errors
    );
    for e in &row.tally.error_examples {
        eprintln!("    error: {e}");
    }
    (streams, row)
}

/// The `q` quantile of sorted microseconds, as milliseconds.
fn quantile_ms(sorted: &[u32], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(f64::from(sorted[rank - 1]) / 1000.0)
}

fn fmt_opt(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
}

/// Raw `Model::step` rate: `models` default-preset models warmed with
/// `warmup` samples each, stepped in turn on this thread for `secs`.
/// `run` consecutive steps are taken on a model before the next one: 1 is
/// the access pattern of single-sample POSTs over many streams (each step
/// finds its model out of cache), 100 that of batches of 100.
fn raw_step_rate(models: usize, warmup: usize, secs: f64, run: usize) -> (f64, Option<f64>, u64) {
    let params = ModelParams::preset("default").expect("the default preset");
    let mut all: Vec<(Model, u64)> = (0..models)
        .map(|_| (Model::new(params.clone()).expect("valid preset"), 0))
        .collect();
    for (i, (m, step)) in all.iter_mut().enumerate() {
        for _ in 0..warmup {
            let (v, ts) = sample_at(i, *step);
            std::hint::black_box(m.step(ts, v, true));
            *step += 1;
        }
    }
    let cpu0 = thread_cpu_secs();
    let start = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    let mut steps = 0u64;
    while start.elapsed() < limit {
        for (i, (m, step)) in all.iter_mut().enumerate() {
            for _ in 0..run {
                let (v, ts) = sample_at(i, *step);
                std::hint::black_box(m.step(ts, v, true));
                *step += 1;
                steps += 1;
            }
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let per_cpu = match (cpu0, thread_cpu_secs()) {
        (Some(a), Some(b)) if b > a => Some(steps as f64 / (b - a)),
        _ => None,
    };
    (steps as f64 / wall, per_cpu, steps)
}

/// CPU seconds used so far by the calling thread (`/proc/thread-self/stat`).
fn thread_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let close = stat.rfind(')')?;
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

fn main() {
    let cfg = Config::from_env();
    eprintln!("htm-stream load benchmark: {cfg:?}");

    let dir = tempfile::tempdir().expect("a temporary directory");
    let server_rt: Runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.server_threads)
        .thread_name("htm-srv")
        // Keep blocking threads alive so their CPU time stays readable.
        .thread_keep_alive(Duration::from_secs(3_600))
        .enable_all()
        .build()
        .expect("the server runtime");
    let mut flags = vec![
        "serve".to_string(),
        "--data-dir".into(),
        dir.path().display().to_string(),
        "--checkpoint-interval-secs".into(),
        "0".into(),
    ];
    // The bench uses as many streams as fit in 60 % of the available
    // memory and measures them resident; under the server's default budget
    // (8 GiB) hundreds of warmed models would be evicted and reloaded on
    // every request instead. 70 % leaves the models' own estimate room.
    if std::env::var_os("HTM_MEMORY_BUDGET_BYTES").is_none() {
        if let Some(available) = mem_available() {
            flags.push("--memory-budget-bytes".into());
            flags.push((available / 10 * 7).to_string());
        }
    }
    let args = ServeArgs::try_parse_from(flags).expect("valid flags");
    let listener = server_rt
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("a local address");
    let (_stop, stopped) = oneshot::channel::<()>();
    let server = server_rt.spawn(run(args, listener, async move {
        let _ = stopped.await;
    }));

    let client_rt: Runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.client_threads)
        .thread_name("htm-load")
        .enable_all()
        .build()
        .expect("the client runtime");
    let base = format!("http://{addr}");
    let mut rows: Vec<Row> = Vec::new();
    let mut warmup_errors = 0u64;
    let mut notes: Vec<String> = Vec::new();
    client_rt.block_on(async {
        wait_ready(&base).await;
        // (a) closed loop over 1, 100 and 1,000 streams.
        let mut last: Vec<Cursor> = Vec::new();
        let mut per_stream: Option<f64> = None;
        for wanted in cfg.streams.clone() {
            let count = match per_stream {
                Some(bytes) => {
                    let fit = fits_in_memory(bytes);
                    if fit < wanted {
                        notes.push(format!(
                            "{wanted} streams do not fit in memory: each warmed `default` model \
                             takes about {:.0} MB here, so {fit} streams (60% of the {:.1} GB \
                             available) were used instead.",
                            bytes / 1e6,
                            mem_available().unwrap_or(0) as f64 / 1e9
                        ));
                    }
                    wanted.min(fit)
                }
                None => wanted,
            };
            // Only one stream set is held at a time.
            delete_all(&last).await;
            let set = stream_set(&base, &format!("a{count}"), count);
            eprintln!("warming {count} stream(s) with {} samples each", cfg.warmup);
            let rss0 = rss_bytes();
            let (set, t) = warm_up(set, cfg.warmup, cfg.conns).await;
            if let (Some(a), Some(b)) = (rss0, rss_bytes()) {
                if count >= 10 && b > a {
                    per_stream = Some((b - a) as f64 / count as f64);
                }
            }
            warmup_errors += t.errors + t.backpressure;
            for e in &t.error_examples {
                eprintln!("    warm-up error: {e}");
            }
            let (set, row) = measure(&cfg, "(a) closed, single", set, 1, None).await;
            rows.push(row);
            last = set;
        }
        if cfg.closed_only {
            return;
        }
        // (b) open loop at half of (a)'s 1,000-stream rate, same streams.
        let a1000 = rows.last().map_or(0.0, |r| r.samples_per_sec);
        let rate = cfg.rate.unwrap_or(a1000 / 2.0).max(1.0);
        eprintln!("open loop at {rate:.0} samples/s");
        let (last, row) = measure(
            &cfg,
            &format!("(b) open {rate:.0}/s, single"),
            last,
            1,
            Some(rate),
        )
        .await;
        rows.push(row);
        delete_all(&last).await;
        // (c) batches of 100 over 100 fresh streams.
        let set = stream_set(&base, "c", BATCH_STREAMS);
        eprintln!("warming {BATCH_STREAMS} stream(s) for batches");
        let (set, t) = warm_up(set, cfg.warmup, cfg.conns).await;
        warmup_errors += t.errors + t.backpressure;
        let (_, row) = measure(&cfg, "(c) closed, batch 100", set, BATCH_SIZE, None).await;
        rows.push(row);
    });
    drop(client_rt);
    // No final checkpoint: see the module doc.
    server.abort();
    server_rt.shutdown_timeout(Duration::from_secs(2));

    if cfg.closed_only {
        print_report(
            &cfg,
            &mut rows,
            (0.0, None, 0),
            (0.0, None, 0),
            warmup_errors,
        );
        return;
    }
    // (d) raw Model::step, one thread, nothing else running in this process.
    eprintln!(
        "raw Model::step over {BATCH_STREAMS} models on one thread, one step per model in turn"
    );
    let single = raw_step_rate(BATCH_STREAMS, cfg.warmup, cfg.secs, 1);
    eprintln!("raw Model::step over {BATCH_STREAMS} models on one thread, {BATCH_SIZE} steps per model in turn");
    let (raw_rate, raw_per_cpu, raw_steps) =
        raw_step_rate(BATCH_STREAMS, cfg.warmup, cfg.secs, BATCH_SIZE);

    print_report(
        &cfg,
        &mut rows,
        single,
        (raw_rate, raw_per_cpu, raw_steps),
        warmup_errors,
    );
    for n in notes {
        println!("{n}");
    }
}

/// `DELETE` every stream of `set` (frees its model).
async fn delete_all(set: &[Cursor]) {
    let client = new_client();
    for s in set {
        let _ = client.delete(&s.url).send().await;
    }
}

/// This process's resident memory, from `/proc/self/statm` (4 KiB pages).
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// `MemAvailable` of `/proc/meminfo`, bytes.
fn mem_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// How many streams of `bytes` each fit in 60% of the available memory
/// (the raw-step comparison and the allocator need the rest).
fn fits_in_memory(bytes: f64) -> usize {
    match mem_available() {
        Some(avail) if bytes > 0.0 => ((avail as f64 * 0.6) / bytes) as usize,
        _ => usize::MAX,
    }
}

async fn wait_ready(base: &str) {
    let client = new_client();
    for _ in 0..500 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the server did not become ready");
}

fn print_report(
    cfg: &Config,
    rows: &mut [Row],
    single: (f64, Option<f64>, u64),
    raw: (f64, Option<f64>, u64),
    warmup_errors: u64,
) {
    let (raw_rate, raw_per_cpu, raw_steps) = raw;
    println!();
    println!(
        "## htm-stream load ({} s per scenario, up to {} keep-alive connections, {} warm-up samples per stream, `default` preset)",
        cfg.secs, cfg.conns, cfg.warmup
    );
    println!();
    println!("| scenario | streams | conns | samples/s | p50 ms | p99 ms | p99.9 ms | errors | 429/503 | server cores | client cores |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in rows.iter_mut() {
        r.tally.latency_us.sort_unstable();
        let l = &r.tally.latency_us;
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.streams,
            r.conns,
            r.samples_per_sec,
            fmt_opt(quantile_ms(l, 0.50), 2),
            fmt_opt(quantile_ms(l, 0.99), 2),
            fmt_opt(quantile_ms(l, 0.999), 2),
            r.tally.errors,
            r.tally.backpressure,
            fmt_opt(r.server_cores, 2),
            fmt_opt(r.client_cores, 2),
        );
    }
    if cfg.closed_only {
        println!();
        println!("Warm-up errors: {warmup_errors}.");
        return;
    }
    println!(
        "| (d) raw `Model::step`, 1 thread, 1 step per model in turn | {BATCH_STREAMS} | - | {:.0} | - | - | - | - | - | - | - |",
        single.0
    );
    println!(
        "| (d) raw `Model::step`, 1 thread, {BATCH_SIZE} steps per model in turn | {BATCH_STREAMS} | - | {raw_rate:.0} | - | - | - | - | - | - | - |"
    );
    println!();
    println!(
        "Raw steps per CPU-second: {} (1 per model in turn), {} ({BATCH_SIZE} per model in turn).",
        fmt_opt(single.1, 0),
        fmt_opt(raw_per_cpu, 0)
    );
    println!();
    for r in rows.iter_mut().filter(|r| !r.tally.service_us.is_empty()) {
        r.tally.service_us.sort_unstable();
        let s = &r.tally.service_us;
        println!(
            "{}: latency from the actual send (not the schedule): p50 {} ms, p99 {} ms, p99.9 {} ms.",
            r.scenario,
            fmt_opt(quantile_ms(s, 0.50), 2),
            fmt_opt(quantile_ms(s, 0.99), 2),
            fmt_opt(quantile_ms(s, 0.999), 2),
        );
    }
    if let Some(batch) = rows.iter().find(|r| r.scenario.starts_with("(c)")) {
        println!(
            "Batch vs raw: {:.0} samples/s over HTTP (whole machine) is {:.0}% of the raw one-thread rate {:.0} steps/s ({} steps).",
            batch.samples_per_sec,
            100.0 * batch.samples_per_sec / raw_rate,
            raw_rate,
            raw_steps
        );
        if let (Some(cores), Some(raw_cpu)) = (batch.server_cores.filter(|c| *c > 0.0), raw_per_cpu)
        {
            let per_core = batch.samples_per_sec / cores;
            println!(
                "Per CPU-second (robust to other load on the machine): batch ingest {per_core:.0} samples per server CPU-second ({cores:.2} cores busy) is {:.0}% of raw `Model::step` {raw_cpu:.0} steps per CPU-second.",
                100.0 * per_core / raw_cpu
            );
        }
    }
    if warmup_errors > 0 {
        println!("Warm-up had {warmup_errors} failed request(s).");
    }
}
