//! Online calibration of the value encoder's resolution.
//!
//! A service stream arrives with no known range, and the RDSE's bucket width
//! cannot change later without remapping every value the model has learned.
//! So the model gathers its first `calibration_samples` samples, fixes the
//! resolution from their range with NuPIC's NAB rule (range padded by 20 % on
//! each side, 130 buckets), and only then builds the HTM pipeline and feeds it
//! the gathered samples in order — nothing is skipped, nothing looks ahead.
//! A stream that stays flat keeps gathering (only the last
//! `calibration_samples` are kept) until its first change; the RDSE itself
//! has no range, so values beyond the calibration range simply get new
//! buckets.

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use super::params::{ParamsError, ValueEncoderParams};

/// A sample held back until the resolution is known.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldSample {
    pub timestamp: NaiveDateTime,
    pub value: f64,
    pub learn: bool,
}

/// The gathering state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    target: usize,
    params: ValueEncoderParams,
    held: Vec<HeldSample>,
}

impl Calibration {
    pub(crate) fn new(params: &ValueEncoderParams) -> Result<Self, ParamsError> {
        if params.resolution.is_none() && params.calibration_samples == 0 {
            return Err(ParamsError::new(
                "value_encoder.calibration_samples",
                "must be at least 1 when no resolution is given",
            ));
        }
        for (field, v) in [
            ("range_buckets", params.range_buckets),
            ("min_resolution", params.min_resolution),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(ParamsError::new(
                    format!("value_encoder.{field}"),
                    "must be a positive finite number",
                ));
            }
        }
        if !(params.range_padding.is_finite() && params.range_padding >= 0.0) {
            return Err(ParamsError::new(
                "value_encoder.range_padding",
                "must be a finite number >= 0",
            ));
        }
        Ok(Self {
            target: params.calibration_samples as usize,
            params: params.clone(),
            held: Vec::new(),
        })
    }

    /// Hold one more sample; returns the resolution once it can be fixed.
    pub(crate) fn push(
        &mut self,
        timestamp: NaiveDateTime,
        value: f64,
        learn: bool,
    ) -> Option<f64> {
        self.held.push(HeldSample {
            timestamp,
            value,
            learn,
        });
        if self.held.len() < self.target {
            return None;
        }
        let (min, max) = self
            .held
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), s| {
                (lo.min(s.value), hi.max(s.value))
            });
        if min == max {
            // Flat so far: keep waiting for the first change, bounded.
            if self.held.len() > self.target {
                self.held.remove(0);
            }
            return None;
        }
        Some(self.params.resolution_for_range(min, max))
    }

    /// The held samples, in arrival order; empties the hold.
    pub(crate) fn take_samples(&mut self) -> Vec<HeldSample> {
        std::mem::take(&mut self.held)
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.held.capacity() * std::mem::size_of::<HeldSample>()
    }
}
