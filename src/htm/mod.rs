//! The HTM numeric core, one concept per file.
//!
//! A sample flows through these in order:
//!
//! 1. [`rdse`] and [`date_encoder`] (built on [`scalar_encoder`]) turn the
//!    value and the timestamp into [`sdr::Sdr`]s, concatenated into one input.
//! 2. [`spatial_pooler`] maps the input to a fixed number of active columns
//!    (its learning pass runs on [`dense_row`]).
//! 3. [`temporal_memory`] (on the synapse store [`connections`]) activates
//!    cells in those columns and predicts the next columns.
//! 4. [`anomaly`] scores how much of the input was unpredicted;
//!    [`anomaly_likelihood`] turns that score into how unusual it is for this
//!    stream.
//! 5. [`predictor`] (one [`classifier`] per horizon) decodes the active cells
//!    into a distribution over the next value.
//!
//! Everything here is deterministic given its seeds ([`random`]) and
//! serializable, and does no I/O. [`prefetch`] hints at memory the TM and
//! the classifier are about to read, for steps whose model has left the CPU
//! caches (the service's many streams); it changes no result.

pub mod anomaly;
pub mod anomaly_likelihood;
pub mod classifier;
pub mod connections;
pub mod date_encoder;
pub mod dense_row;
pub mod murmur3;
pub mod predictor;
pub mod prefetch;
pub mod random;
pub mod rdse;
pub mod scalar_encoder;
pub mod sdr;
pub mod spatial_pooler;
pub mod temporal_memory;
