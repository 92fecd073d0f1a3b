//! The flat-line (stuck sensor) rule.
//!
//! A sensor that stops updating keeps reporting its last value. HTM misses
//! this: a constant input is a sequence it learns within a few steps, so the
//! raw anomaly, and with it the likelihood, falls to nothing. The rule
//! watches for `min_run` consecutive identical values and reports an anomaly
//! once, at the sample that completes the run, when the stream had been
//! varying before it: it has changed at least once (a metric constant since
//! its first sample is not stuck, it never moved) and no other run of
//! `min_run` or more ended in the `quiet_rows` samples before this run
//! started (a stream that often holds its value — a square wave, a counter
//! that idles at zero — is not stuck when it does so again). The value must
//! change for the rule to fire again. Measurements: `docs/nab.md`.

use serde::{Deserialize, Serialize};

use super::params::FlatLineParams;

/// The rule's state: the last value, how long it has repeated, and how long
/// ago the last long run ended.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FlatLine {
    /// The previous sample's value (`None` before the first sample).
    last: Option<f64>,
    /// Consecutive samples equal to `last`, the latest included.
    run: u32,
    /// Whether two consecutive samples have ever differed.
    varied: bool,
    /// Samples since the last run of `min_run` or more ended (the current
    /// run included); `None` if none has.
    since_long_run: Option<u32>,
}

impl FlatLine {
    /// Feed one value; true when it completes a run of exactly `min_run`
    /// identical values and the stream had been varying (module docs).
    /// `min_run` 0 turns the rule off.
    pub fn push(&mut self, params: &FlatLineParams, value: f64) -> bool {
        if let Some(since) = self.since_long_run.as_mut() {
            *since = since.saturating_add(1);
        }
        match self.last {
            Some(last) if last == value => self.run = self.run.saturating_add(1),
            Some(_) => {
                self.varied = true;
                if params.min_run > 0 && self.run >= params.min_run {
                    self.since_long_run = Some(1);
                }
                self.run = 1;
            }
            None => self.run = 1,
        }
        self.last = Some(value);
        let quiet = self
            .since_long_run
            .is_none_or(|since| since - self.run.min(since) > params.quiet_rows);
        params.min_run > 0 && self.varied && self.run == params.min_run && quiet
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fires(min_run: u32, quiet_rows: u32, values: &[f64]) -> Vec<usize> {
        let params = FlatLineParams {
            min_run,
            quiet_rows,
        };
        let mut rule = FlatLine::default();
        values
            .iter()
            .enumerate()
            .filter(|(_, &v)| rule.push(&params, v))
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn fires_once_when_a_varying_stream_repeats_min_run_times() {
        let mut values: Vec<f64> = (0..20).map(|i| f64::from(i % 3)).collect();
        values.extend(std::iter::repeat_n(5.0, 30));
        // The run starts at index 20 and reaches 4 samples at index 23.
        assert_eq!(fires(4, 0, &values), vec![23]);
        assert_eq!(fires(4, 1000, &values), vec![23]);
    }

    #[test]
    fn the_previous_value_counts_towards_the_run() {
        // 1, 2, 2, 2: the run of 2s is 3 long at index 3.
        assert_eq!(fires(3, 0, &[1.0, 2.0, 2.0, 2.0, 2.0]), vec![3]);
    }

    #[test]
    fn fires_again_only_after_the_value_changes() {
        let mut values = vec![1.0, 2.0];
        values.extend([3.0; 6]);
        values.push(9.0);
        values.extend([4.0; 6]);
        // Runs of 3.0 (indices 2..=7) and 4.0 (9..=14).
        assert_eq!(fires(5, 0, &values), vec![6, 13]);
    }

    #[test]
    fn a_run_soon_after_another_long_run_is_quiet() {
        let varying: Vec<f64> = (0..10).map(f64::from).collect();
        let mut values = varying.clone();
        values.extend([50.0; 8]); // long run: fires at index 13
        values.extend(&varying); // 10 varying samples
        values.extend([60.0; 8]); // starts 10 samples after: quiet if quiet_rows >= 10
        assert_eq!(fires(4, 9, &values), vec![13, 31]);
        assert_eq!(fires(4, 10, &values), vec![13]);
    }

    #[test]
    fn never_fires_on_a_stream_constant_from_the_start() {
        assert!(fires(3, 0, &[7.0; 100]).is_empty());
        // Nor on the stream's first change back to a constant right after.
        let mut values = vec![7.0; 100];
        values.extend([8.0; 100]);
        assert!(fires(3, 50, &values).is_empty());
    }

    #[test]
    fn short_repeats_do_not_fire() {
        let values: Vec<f64> = (0..200).map(|i| f64::from(i / 3 % 4)).collect();
        assert!(fires(4, 0, &values).is_empty());
    }

    #[test]
    fn min_run_zero_is_off() {
        assert!(fires(0, 0, &[1.0, 2.0, 2.0, 2.0, 2.0]).is_empty());
    }
}
