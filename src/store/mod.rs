//! Streams and their persistence: validated ids ([`stream_id`]), the
//! per-stream state and its ordering lock ([`stream`]), configuration
//! ([`stream_config`]), the concurrent registry ([`registry`]), the
//! checkpoint format ([`checkpoint`]) and the bincode codec it shares with
//! the log ([`codec`], bounded decoding; the only code that knows bincode),
//! the data directory ([`data_dir`]) and which models stay in memory
//! ([`residency`]); the write-ahead log ([`wal`]), the start-up replay of
//! it over the checkpoints ([`recovery`]) and the classification of
//! storage errors ([`storage_fault`]). Unit tests share their test data
//! through `test_support`.
//!
//! Nothing here is HTTP-specific; the server maps these types to its API.

pub mod checkpoint;
pub mod codec;
pub mod data_dir;
pub mod recovery;
pub mod registry;
pub mod residency;
pub mod storage_fault;
pub mod stream;
pub mod stream_config;
pub mod stream_id;
#[cfg(test)]
mod test_support;
pub mod wal;

pub use checkpoint::CheckpointError;
pub use data_dir::{DataDir, LoadFailure, LoadReport, Saved};
pub use registry::{Registry, TooManyStreams};
pub use residency::{Residency, ResidencyLimits, ResidencyObserver};
pub use storage_fault::StorageFault;
pub use stream::{
    Applied, Broken, Evicted, EvictedSummary, Rejected, Sample, Slot, Stream, StreamState,
    StreamStats,
};
pub use stream_config::{ConfigError, StreamConfig, ValueRange, DEFAULT_THRESHOLD};
pub use stream_id::{InvalidStreamId, StreamId};
pub use wal::{Wal, WalError};
