//! htm-stream: streaming anomaly detection with Hierarchical Temporal Memory.
//!
//! # Layout
//!
//! Dependencies point downward only:
//!
//! - [`htm`] — the numeric core (SDR, encoders, Spatial Pooler, Temporal
//!   Memory, anomaly score and likelihood, predictor). No I/O, no async; one
//!   concept per file, so HTM can be learned from this module alone.
//! - [`model`] — [`model::Model`]: encoders → SP → TM → anomaly → likelihood
//!   → predictor behind one `step()`, with [`model::ModelParams`] and named
//!   presets.
//! - [`replay`] — runs a CSV file through a model (the `replay` command).
//! - [`nab`] — the Numenta Anomaly Benchmark runner and scorer.
//! - [`store`] — checkpoint format and files, the stream registry, the
//!   write-ahead log and its start-up replay.
//! - [`server`] — the HTTP/WebSocket service.
//! - [`format_compat`] — a leaf below [`htm`] and [`store`]: fields added
//!   after a checkpoint format version, read from older checkpoints.
//!
//! `src/main.rs` is the thin command line over these.

pub mod format_compat;
pub mod htm;
pub mod model;
pub mod nab;
pub mod replay;
pub mod server;
pub mod store;
