//! Prometheus metrics — the only file that knows metric names.
//!
//! Names follow Prometheus conventions: the `htm_` prefix, base units
//! (`_seconds`, `_bytes`), `_total` on counters, histograms for durations.
//! Labels have bounded cardinality: routes are the router's templates,
//! statuses are HTTP codes, stream ids appear only with
//! `--per-stream-metrics` (bounded by `--max-streams`) and for checkpoints
//! that failed to load.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry, TextEncoder,
};

use crate::store::wal::WalOp;
use crate::store::{StorageFault, StreamId};

/// Every metric of one server, registered in its own [`Registry`].
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    samples: IntCounter,
    anomalies: IntCounter,
    rejected: IntCounterVec,
    step_duration: Histogram,
    http_duration: HistogramVec,
    streams: IntGauge,
    model_memory: IntGauge,
    checkpoint_duration: Histogram,
    checkpoint_writes: IntCounter,
    checkpoint_failures: IntCounter,
    checkpoint_load_failures: IntCounter,
    checkpoint_unreadable: GaugeVec,
    feed_subscribers: IntGauge,
    feed_dropped: IntCounter,
    ws_connections: IntGauge,
    per_stream: Option<(IntCounterVec, IntCounterVec)>,
    up: Gauge,
    wal_appends: IntCounter,
    wal_bytes: IntCounter,
    wal_fsync_duration: Histogram,
    wal_replayed: IntCounter,
    wal_torn: IntCounter,
    streams_resident: IntGauge,
    resident_model_bytes: IntGauge,
    evictions: IntCounter,
    reloads: IntCounter,
    reload_duration: Histogram,
    storage_errors: IntCounterVec,
    connections_open: IntGauge,
    connections_refused: IntCounter,
    accept_errors: IntCounter,
    http_timeouts: IntCounterVec,
    ws_closed: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn buckets_fast() -> Vec<f64> {
    // 5 µs .. ~2.6 s, doubling.
    prometheus::exponential_buckets(5e-6, 2.0, 20).expect("valid buckets")
}

impl Metrics {
    /// Create and register every metric; `per_stream` adds the per-stream
    /// counters.
    pub fn new(per_stream: bool) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m;
                registry.register(Box::new(m.clone()))?;
                m
            }};
        }
        let per_stream = if per_stream {
            Some((
                reg!(IntCounterVec::new(
                    Opts::new("htm_stream_samples_total", "Samples applied, by stream."),
                    &["stream"]
                )?),
                reg!(IntCounterVec::new(
                    Opts::new(
                        "htm_stream_anomalies_total",
                        "Anomalies flagged, by stream."
                    ),
                    &["stream"]
                )?),
            ))
        } else {
            None
        };
        Ok(Metrics {
            samples: reg!(IntCounter::new(
                "htm_samples_total",
                "Samples applied to models."
            )?),
            anomalies: reg!(IntCounter::new(
                "htm_anomalies_total",
                "Results flagged as anomalies."
            )?),
            rejected: reg!(IntCounterVec::new(
                Opts::new(
                    "htm_rejected_requests_total",
                    "Ingest requests refused, by reason (the error code)."
                ),
                &["reason"]
            )?),
            step_duration: reg!(Histogram::with_opts(
                HistogramOpts::new(
                    "htm_step_duration_seconds",
                    "Time of one model step (score and learn one sample)."
                )
                .buckets(buckets_fast())
            )?),
            http_duration: reg!(HistogramVec::new(
                HistogramOpts::new(
                    "htm_http_request_duration_seconds",
                    "HTTP request duration, by route template, method and status."
                )
                .buckets(buckets_fast()),
                &["route", "method", "status"]
            )?),
            streams: reg!(IntGauge::new("htm_streams", "Streams held by the server.")?),
            model_memory: reg!(IntGauge::new(
                "htm_model_memory_bytes",
                "Approximate memory held by all models."
            )?),
            checkpoint_duration: reg!(Histogram::with_opts(
                HistogramOpts::new(
                    "htm_checkpoint_duration_seconds",
                    "Time to encode and durably write one stream's checkpoint."
                )
                .buckets(buckets_fast())
            )?),
            checkpoint_writes: reg!(IntCounter::new(
                "htm_checkpoint_writes_total",
                "Checkpoint files written."
            )?),
            checkpoint_failures: reg!(IntCounter::new(
                "htm_checkpoint_write_failures_total",
                "Checkpoint writes that failed."
            )?),
            checkpoint_load_failures: reg!(IntCounter::new(
                "htm_checkpoint_load_failures_total",
                "Checkpoint files that could not be loaded at start."
            )?),
            checkpoint_unreadable: reg!(GaugeVec::new(
                Opts::new(
                    "htm_checkpoint_unreadable",
                    "1 for each stream whose checkpoint could not be loaded and which is not yet deleted or recreated."
                ),
                &["stream"]
            )?),
            feed_subscribers: reg!(IntGauge::new(
                "htm_feed_subscribers",
                "Connected /feed subscribers."
            )?),
            feed_dropped: reg!(IntCounter::new(
                "htm_feed_dropped_messages_total",
                "Feed messages lost by subscribers that fell behind."
            )?),
            ws_connections: reg!(IntGauge::new(
                "htm_ws_ingest_connections",
                "Connected WebSocket ingest clients."
            )?),
            up: reg!(Gauge::new("htm_ready", "1 once checkpoints are loaded.")?),
            wal_appends: reg!(IntCounter::new(
                "htm_wal_appends_total",
                "Records appended to the write-ahead log."
            )?),
            wal_bytes: reg!(IntCounter::new(
                "htm_wal_appended_bytes_total",
                "Bytes appended to the write-ahead log, record headers included."
            )?),
            wal_fsync_duration: reg!(Histogram::with_opts(
                HistogramOpts::new(
                    "htm_wal_fsync_duration_seconds",
                    "Time of one fsync of the write-ahead log."
                )
                .buckets(buckets_fast())
            )?),
            wal_replayed: reg!(IntCounter::new(
                "htm_wal_replayed_records_total",
                "Write-ahead-log records replayed over the checkpoints at start."
            )?),
            wal_torn: reg!(IntCounter::new(
                "htm_wal_torn_records_total",
                "Torn or corrupt write-ahead-log records dropped at start."
            )?),
            streams_resident: reg!(IntGauge::new(
                "htm_streams_resident",
                "Streams whose model is in memory (the rest are evicted to their checkpoint)."
            )?),
            resident_model_bytes: reg!(IntGauge::new(
                "htm_resident_model_bytes",
                "Model bytes counted against --memory-budget-bytes."
            )?),
            evictions: reg!(IntCounter::new(
                "htm_stream_evictions_total",
                "Idle streams checkpointed and dropped from memory by the residency limit."
            )?),
            reloads: reg!(IntCounter::new(
                "htm_stream_reloads_total",
                "Evicted streams read back from their checkpoint."
            )?),
            reload_duration: reg!(Histogram::with_opts(
                HistogramOpts::new(
                    "htm_stream_reload_duration_seconds",
                    "Time to read and decode an evicted stream's checkpoint."
                )
                .buckets(buckets_fast())
            )?),
            storage_errors: reg!(IntCounterVec::new(
                Opts::new(
                    "htm_storage_errors_total",
                    "Failed writes to the data dir, by operation (wal_append, wal_fsync, wal_segment, checkpoint) and kind (no_space, read_only, io)."
                ),
                &["op", "kind"]
            )?),
            connections_open: reg!(IntGauge::new(
                "htm_connections_open",
                "Open client connections (HTTP and WebSocket), bounded by --max-connections."
            )?),
            connections_refused: reg!(IntCounter::new(
                "htm_connections_refused_total",
                "Connections answered 503 and closed because --max-connections were open."
            )?),
            accept_errors: reg!(IntCounter::new(
                "htm_accept_errors_total",
                "Failed accepts (e.g. out of file descriptors)."
            )?),
            http_timeouts: reg!(IntCounterVec::new(
                Opts::new(
                    "htm_http_timeouts_total",
                    "Connections cut at a deadline, by phase: header (a request begun, its headers not complete within --header-timeout-secs), body (not complete within --body-timeout-secs; answered 408), idle (a keep-alive connection with no new request within --header-timeout-secs)."
                ),
                &["phase"]
            )?),
            ws_closed: reg!(IntCounterVec::new(
                Opts::new(
                    "htm_ws_closed_by_server_total",
                    "WebSockets the server closed for a limit, by reason (idle, too_big, no_pong, slow_reader)."
                ),
                &["reason"]
            )?),
            per_stream,
            registry,
        })
    }

    /// Count one applied sample.
    pub fn sample(&self, stream: &StreamId, is_anomaly: bool, step_time: Duration) {
        self.samples.inc();
        self.step_duration.observe(step_time.as_secs_f64());
        if is_anomaly {
            self.anomalies.inc();
        }
        if let Some((samples, anomalies)) = &self.per_stream {
            samples.with_label_values(&[stream.as_str()]).inc();
            if is_anomaly {
                anomalies.with_label_values(&[stream.as_str()]).inc();
            }
        }
    }

    /// Count a refused ingest request.
    pub fn rejected(&self, code: &str) {
        self.rejected.with_label_values(&[code]).inc();
    }

    /// Forget a deleted stream's labels.
    pub fn stream_removed(&self, stream: &StreamId) {
        if let Some((samples, anomalies)) = &self.per_stream {
            let _ = samples.remove_label_values(&[stream.as_str()]);
            let _ = anomalies.remove_label_values(&[stream.as_str()]);
        }
        let _ = self
            .checkpoint_unreadable
            .remove_label_values(&[stream.as_str()]);
    }

    /// Record a checkpoint write.
    pub fn checkpoint_written(&self, took: Duration) {
        self.checkpoint_writes.inc();
        self.checkpoint_duration.observe(took.as_secs_f64());
    }

    /// Record a failed checkpoint write.
    pub fn checkpoint_failed(&self) {
        self.checkpoint_failures.inc();
    }

    /// Record a checkpoint that failed to load, by stream.
    pub fn checkpoint_unreadable(&self, stream: &StreamId) {
        self.checkpoint_load_failures.inc();
        self.checkpoint_unreadable
            .with_label_values(&[stream.as_str()])
            .set(1.0);
    }

    /// A stream was recreated over an unreadable checkpoint.
    pub fn checkpoint_replaced(&self, stream: &StreamId) {
        let _ = self
            .checkpoint_unreadable
            .remove_label_values(&[stream.as_str()]);
    }

    /// Feed subscriber connected (+1) or left (-1).
    pub fn feed_subscribers(&self, delta: i64) {
        self.feed_subscribers.add(delta);
    }

    /// A feed subscriber lost `n` messages.
    pub fn feed_dropped(&self, n: u64) {
        self.feed_dropped.inc_by(n);
    }

    /// WebSocket ingest client connected (+1) or left (-1).
    pub fn ws_connections(&self, delta: i64) {
        self.ws_connections.add(delta);
    }

    /// Checkpoints are loaded.
    pub fn set_ready(&self) {
        self.up.set(1.0);
    }

    /// Count what start-up recovery found: records replayed, torn records
    /// dropped.
    pub fn wal_recovered(&self, replayed: u64, torn: u64) {
        self.wal_replayed.inc_by(replayed);
        self.wal_torn.inc_by(torn);
    }

    /// Set the gauges sampled at scrape time.
    pub fn set_streams(&self, streams: usize, model_memory: usize) {
        self.streams.set(streams as i64);
        self.model_memory.set(model_memory as i64);
    }

    /// Record one HTTP request.
    pub fn http_request(&self, route: &str, method: &str, status: u16, took: Duration) {
        self.http_duration
            .with_label_values(&[route, method, status.to_string().as_str()])
            .observe(took.as_secs_f64());
    }

    /// Count one failed write to the data dir.
    pub fn storage_error(&self, op: &str, fault: StorageFault) {
        self.storage_errors
            .with_label_values(&[op, fault.label()])
            .inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding of gathered metrics");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

impl crate::store::wal::WalObserver for Metrics {
    fn appended(&self, bytes: usize) {
        self.wal_appends.inc();
        self.wal_bytes.inc_by(bytes as u64);
    }

    fn synced(&self, took: Duration) {
        self.wal_fsync_duration.observe(took.as_secs_f64());
    }

    fn failed(&self, op: WalOp, fault: StorageFault) {
        self.storage_error(op.label(), fault);
    }
}

impl Metrics {
    /// A connection opened (+1) or closed (-1).
    pub fn connections_open(&self, delta: i64) {
        self.connections_open.add(delta);
    }

    /// A connection was refused for `--max-connections`.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// `accept` failed.
    pub fn accept_error(&self) {
        self.accept_errors.inc();
    }

    /// A request's `phase` (`header` or `body`) timed out.
    pub fn http_timeout(&self, phase: &str) {
        self.http_timeouts.with_label_values(&[phase]).inc();
    }

    /// The server closed a WebSocket for `reason`.
    pub fn ws_closed(&self, reason: &str) {
        self.ws_closed.with_label_values(&[reason]).inc();
    }

    /// Set the resident-set gauges (sampled at scrape time).
    pub fn set_residency(&self, resident: usize, bytes: u64) {
        self.streams_resident.set(resident as i64);
        self.resident_model_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

impl crate::store::ResidencyObserver for Metrics {
    fn evicted(&self) {
        self.evictions.inc();
    }

    fn eviction_failed(&self, stream: &StreamId, error: &crate::store::CheckpointError) {
        self.checkpoint_failed();
        tracing::error!(%stream, %error, "checkpoint before eviction failed; stream stays resident");
    }

    fn reloaded(&self, took: Duration) {
        self.reloads.inc();
        self.reload_duration.observe(took.as_secs_f64());
    }

    fn reload_failed(&self, failure: &crate::store::LoadFailure) {
        self.checkpoint_unreadable(&failure.id);
        tracing::error!(
            stream = %failure.id,
            moved_to = %failure.moved_to.display(),
            error = %failure.error,
            "evicted stream's checkpoint unreadable; moved aside, stream answers 503 until deleted or recreated"
        );
    }
}

/// Middleware: time every request by route template and status.
pub async fn track_http(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let resp = next.run(req).await;
    metrics.http_request(&route, &method, resp.status().as_u16(), start.elapsed());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_conventions_and_values_show() {
        let m = Metrics::new(true).unwrap();
        let id = StreamId::new("s1").unwrap();
        m.sample(&id, true, Duration::from_micros(40));
        m.feed_dropped(3);
        m.http_request("/streams/{id}", "POST", 200, Duration::from_millis(1));
        m.checkpoint_unreadable(&id);
        crate::store::wal::WalObserver::appended(&m, 40);
        crate::store::wal::WalObserver::synced(&m, Duration::from_micros(900));
        m.wal_recovered(7, 1);
        crate::store::ResidencyObserver::evicted(&m);
        crate::store::ResidencyObserver::reloaded(&m, Duration::from_millis(3));
        m.set_residency(2, 4096);
        m.connections_open(1);
        m.connection_refused();
        m.http_timeout("body");
        m.ws_closed("too_big");
        crate::store::wal::WalObserver::failed(&m, WalOp::Fsync, StorageFault::NoSpace);
        let text = m.render();
        assert!(text.contains("htm_stream_evictions_total 1"));
        assert!(text.contains("htm_stream_reloads_total 1"));
        assert!(text.contains("htm_stream_reload_duration_seconds_count 1"));
        assert!(text.contains("htm_streams_resident 2"));
        assert!(text.contains("htm_resident_model_bytes 4096"));
        assert!(text.contains("htm_wal_appends_total 1"));
        assert!(text.contains("htm_wal_appended_bytes_total 40"));
        assert!(text.contains("htm_wal_fsync_duration_seconds_count 1"));
        assert!(text.contains("htm_wal_replayed_records_total 7"));
        assert!(text.contains("htm_wal_torn_records_total 1"));
        assert!(text.contains("htm_storage_errors_total{kind=\"no_space\",op=\"wal_fsync\"} 1"));
        assert!(text.contains("htm_connections_open 1"));
        assert!(text.contains("htm_connections_refused_total 1"));
        assert!(text.contains("htm_http_timeouts_total{phase=\"body\"} 1"));
        assert!(text.contains("htm_ws_closed_by_server_total{reason=\"too_big\"} 1"));
        assert!(text.contains("htm_samples_total 1"));
        assert!(text.contains("htm_anomalies_total 1"));
        assert!(text.contains("htm_feed_dropped_messages_total 3"));
        assert!(text.contains("htm_stream_samples_total{stream=\"s1\"} 1"));
        assert!(text.contains("htm_step_duration_seconds_bucket"));
        assert!(text.contains("route=\"/streams/{id}\""));
        assert!(text.contains("htm_checkpoint_unreadable{stream=\"s1\"} 1"));
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let mut parts = line.split_whitespace().skip(2);
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(name.starts_with("htm_"), "{name}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{name}");
            }
        }
        m.stream_removed(&id);
        assert!(!m.render().contains("stream=\"s1\""));
    }
}
