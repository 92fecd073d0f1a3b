//! Replaying a CSV series through a model (the `replay` command).

pub mod plot;
pub mod run;
pub mod series;
