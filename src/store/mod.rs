//! Checkpoints and the stream registry (to be written).
