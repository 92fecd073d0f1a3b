//! Replay a CSV through a model (to be written).
