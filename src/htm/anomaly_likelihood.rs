//! Anomaly likelihood: how unusual the recent raw anomaly scores are for this
//! stream, as NuPIC's `AnomalyLikelihood` computed it for NAB
//! (`htm-reference.md` §5.2).
//!
//! The raw anomaly score of a noisy stream is often high even when nothing is
//! wrong, so alerting on it directly gives many false positives. Instead the
//! raw scores are smoothed with a short moving average, a normal distribution
//! is fitted to the smoothed scores of the recent history, and the likelihood
//! is `1 - tail probability` of the current smoothed score under that fit: it
//! is close to 1 only when the recent scores are far from this stream's usual
//! level.
//!
//! Per sample:
//!
//! 1. During the probation (`learning_period + estimation_samples` samples)
//!    the likelihood is exactly 0.5.
//! 2. After that the distribution is re-estimated from the whole history
//!    (at most `historic_window_size` samples, the current one excluded)
//!    when there is none yet and every `reestimation_period` samples; the
//!    first samples of a young stream are skipped (`skip_records`). A stream
//!    whose metric value is flat gets the *null* distribution (mean 0.5,
//!    stdev 1000), which keeps the likelihood at ~0.5.
//! 3. The current raw score joins the moving average, its tail probability is
//!    filtered (only the first of consecutive tail probabilities ≤ 1e-5
//!    keeps its value; later ones become 1e-3), and `1 - filtered` is
//!    returned.
//!
//! The update is O(1); the re-estimation is O(history) every
//! `reestimation_period` samples and allocates nothing (the moving average
//! over the history is recomputed from the stored raw scores instead of being
//! kept in a scratch buffer).
//!
//! Arithmetic is `f64` with the same operation order as NuPIC's Python, with
//! one exception: numpy's `mean`/`var` sum with pairwise summation, this
//! module sums sequentially, so estimated means and variances can differ in
//! the last bits.
//!
//! [`log_likelihood`] is the log transform NAB reports. [`erfc`] is a
//! double-precision complementary error function (W. J. Cody's rational
//! Chebyshev approximations).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Tail probabilities at or below this are "red" (likelihood ≥ 0.99999).
/// Computed as NuPIC did, `1 - 0.99999`, so it is not exactly `1e-5`.
const RED_THRESHOLD: f64 = 1.0 - 0.99999;
/// What a red tail probability following another red one is replaced with
/// (`1 - 0.999`, likelihood 0.999).
const YELLOW_THRESHOLD: f64 = 1.0 - 0.999;
/// Lower bound of the fitted mean of the averaged raw scores.
const MIN_MEAN: f64 = 0.03;
/// Lower bound of the fitted variance of the averaged raw scores.
const MIN_VARIANCE: f64 = 0.0003;
/// A metric whose population variance over the history is below this is
/// "flat" and gets the null distribution.
const FLAT_METRIC_VARIANCE: f64 = 1.5e-5;
/// NuPIC's stand-in for √2 in the tail probability. Kept on purpose: the
/// reference divides by this truncated value, and NAB's scores depend on it.
#[allow(clippy::approx_constant)]
const NUPIC_SQRT_2: f64 = 1.4142;
/// Likelihood reported during the probation.
const PROBATION_LIKELIHOOD: f64 = 0.5;

/// Invalid [`AnomalyLikelihoodParams`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LikelihoodError {
    /// A window or period that must hold at least one sample is 0.
    #[error("anomaly likelihood parameter `{0}` must be at least 1")]
    ZeroParameter(&'static str),
}

/// Parameters of [`AnomalyLikelihood`] (NuPIC's names, `htm-reference.md`
/// §5.2). Missing fields take the class defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalyLikelihoodParams {
    /// Samples at the start of the stream that never enter a fit (the
    /// temporal memory is still learning). Default 288.
    pub learning_period: u32,
    /// Samples after the learning period collected before the first fit.
    /// Default 100.
    pub estimation_samples: u32,
    /// Samples kept in the history the distribution is fitted to.
    /// Default 8640.
    pub historic_window_size: u32,
    /// The distribution is refitted every this many samples. Default 100.
    pub reestimation_period: u32,
    /// Length of the moving average of the raw score. Default 10.
    pub averaging_window: u32,
}

impl Default for AnomalyLikelihoodParams {
    fn default() -> Self {
        Self {
            learning_period: 288,
            estimation_samples: 100,
            historic_window_size: 8640,
            reestimation_period: 100,
            averaging_window: 10,
        }
    }
}

impl AnomalyLikelihoodParams {
    /// NAB's setting for a probationary period of `p` rows: learning
    /// `floor(p/2)`, estimation `p - floor(p/2)`, the other fields default.
    pub fn for_probationary_period(p: u32) -> Self {
        let learning_period = p / 2;
        Self {
            learning_period,
            estimation_samples: p - learning_period,
            ..Self::default()
        }
    }

    /// Samples for which the likelihood is 0.5: learning + estimation.
    pub fn probation(&self) -> u64 {
        u64::from(self.learning_period) + u64::from(self.estimation_samples)
    }

    fn validate(&self) -> Result<(), LikelihoodError> {
        let must_be_positive = [
            ("historic_window_size", self.historic_window_size),
            ("reestimation_period", self.reestimation_period),
            ("averaging_window", self.averaging_window),
        ];
        match must_be_positive.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(LikelihoodError::ZeroParameter(name)),
            None => Ok(()),
        }
    }
}

/// A normal distribution fitted to the averaged raw anomaly scores.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub mean: f64,
    pub variance: f64,
    pub stdev: f64,
}

impl Distribution {
    /// The "no information" distribution: every score has a tail
    /// probability of about 0.5.
    pub const NULL: Distribution = Distribution {
        mean: 0.5,
        variance: 1e6,
        stdev: 1e3,
    };

    /// Fit to samples with the given population mean and variance, applying
    /// the lower bounds (mean ≥ 0.03, variance ≥ 0.0003) that keep a
    /// near-perfectly predicted stream from calling every blip an anomaly.
    fn bounded(mean: f64, variance: f64) -> Self {
        let mean = if mean < MIN_MEAN { MIN_MEAN } else { mean };
        let variance = if variance < MIN_VARIANCE {
            MIN_VARIANCE
        } else {
            variance
        };
        let stdev = if variance > 0.0 { variance.sqrt() } else { 0.0 };
        Self {
            mean,
            variance,
            stdev,
        }
    }

    /// Probability of a value at least as far from the mean as `x`, on the
    /// same side (the distribution is symmetric, so values below the mean are
    /// reflected above it). NuPIC divides by the constant 1.4142, not √2.
    pub fn tail_probability(&self, x: f64) -> f64 {
        let x = if x < self.mean {
            2.0 * self.mean - x
        } else {
            x
        };
        let z = (x - self.mean) / self.stdev;
        0.5 * erfc(z / NUPIC_SQRT_2)
    }
}

/// NuPIC's anomaly likelihood for one stream (`htm-reference.md` §5.2).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AnomalyLikelihood {
    params: AnomalyLikelihoodParams,
    /// Samples seen so far.
    iteration: u64,
    /// `(metric value, raw score)` of the last `historic_window_size`
    /// samples, oldest first. Grown in steps up to exactly the window size so
    /// a young stream does not pay for a full window.
    history: VecDeque<(f64, f64)>,
    /// The current fit; `None` until the probation is over.
    distribution: Option<Distribution>,
    /// The raw scores in the moving average (at most `averaging_window`):
    /// rebuilt at each re-estimation, then continued sample by sample.
    window: VecDeque<f64>,
    /// Running sum of `window`, updated by subtraction and addition exactly
    /// as NuPIC's `MovingAverage` did (not re-summed).
    window_total: f64,
    /// Unfiltered tail probabilities of the last `averaging_window` averaged
    /// scores (NuPIC's `historicalLikelihoods`); the filter looks at the last.
    recent_tails: VecDeque<f64>,
}

impl AnomalyLikelihood {
    /// A fresh estimator; fails if a window or period is 0.
    pub fn new(params: AnomalyLikelihoodParams) -> Result<Self, LikelihoodError> {
        params.validate()?;
        let averaging = params.averaging_window as usize;
        Ok(Self {
            params,
            iteration: 0,
            history: VecDeque::new(),
            distribution: None,
            window: VecDeque::with_capacity(averaging),
            window_total: 0.0,
            recent_tails: VecDeque::with_capacity(averaging),
        })
    }

    /// §5.2 `anomaly_probability`: the likelihood in [0, 1] (in fact in
    /// [0.5, 1]) that the stream is in an unusual state; exactly 0.5 during
    /// the probation. `value` is the metric value (only used to detect a flat
    /// metric), `raw_anomaly` the raw anomaly score in [0, 1].
    pub fn compute(&mut self, value: f64, raw_anomaly: f64) -> f64 {
        let likelihood = if self.iteration < self.params.probation() {
            PROBATION_LIKELIHOOD
        } else {
            let due = self.iteration % u64::from(self.params.reestimation_period) == 0;
            let distribution = match self.distribution {
                Some(d) if !due => d,
                _ => self.reestimate(),
            };
            let average = self.push_average(raw_anomaly);
            let tail = distribution.tail_probability(average);
            let filtered = filter_tail(self.recent_tails.back().copied(), tail);
            if self.recent_tails.len() == self.params.averaging_window as usize {
                self.recent_tails.pop_front();
            }
            self.recent_tails.push_back(tail);
            1.0 - filtered
        };
        self.push_history(value, raw_anomaly);
        self.iteration += 1;
        likelihood
    }

    /// Samples seen so far.
    pub fn iteration(&self) -> u64 {
        self.iteration
    }

    /// The parameters this estimator was built with.
    pub fn params(&self) -> &AnomalyLikelihoodParams {
        &self.params
    }

    /// The current fit of the averaged raw scores; `None` during the
    /// probation.
    pub fn distribution(&self) -> Option<Distribution> {
        self.distribution
    }

    /// Approximate memory held, in bytes (the history dominates: 16 bytes a
    /// sample, 138 KB for the default window of 8640).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.history.capacity() * std::mem::size_of::<(f64, f64)>()
            + (self.window.capacity() + self.recent_tails.capacity()) * std::mem::size_of::<f64>()
    }

    /// Add the current raw score to the moving average and return the new
    /// average (NuPIC's `MovingAverage.compute`).
    fn push_average(&mut self, raw: f64) -> f64 {
        if self.window.len() == self.params.averaging_window as usize {
            if let Some(oldest) = self.window.pop_front() {
                self.window_total -= oldest;
            }
        }
        self.window.push_back(raw);
        self.window_total += raw;
        self.window_total / self.window.len() as f64
    }

    fn push_history(&mut self, value: f64, raw: f64) {
        let capacity = self.params.historic_window_size as usize;
        let len = self.history.len();
        if len == capacity {
            self.history.pop_front();
        } else if len == self.history.capacity() {
            // Grow by half (at least 64), never past the window size.
            let extra = (len / 2).max(64).min(capacity - len);
            self.history.reserve_exact(extra);
        }
        self.history.push_back((value, raw));
    }

    /// Fit the distribution to the history (NuPIC's
    /// `estimateAnomalyLikelihoods`) and reset the moving average and the
    /// recent tail probabilities from it. Returns the new fit.
    fn reestimate(&mut self) -> Distribution {
        let averaging = self.params.averaging_window as usize;
        let records = self.history.len();
        let skip = skip_records(
            self.iteration,
            self.params.historic_window_size,
            self.params.learning_period,
        );
        // `skip <= iteration`, and `records >= min(iteration, window)`; the
        // conversion only saturates when nothing would be fitted anyway.
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        let keep_from = records - records.min(averaging);

        // Pass 1: means after `skip`; remember the last averaged scores.
        self.recent_tails.clear();
        let mut averages = MovingAverages::new(&self.history, averaging);
        let (mut sum_avg, mut sum_value) = (0.0, 0.0);
        for (i, (value, average)) in averages.by_ref().enumerate() {
            if i >= skip {
                sum_avg += average;
                sum_value += value;
            }
            if i >= keep_from {
                self.recent_tails.push_back(average);
            }
        }
        self.window_total = averages.total;
        self.window.clear();
        self.window
            .extend(self.history.range(keep_from..).map(|&(_, raw)| raw));

        let distribution = if records <= skip {
            Distribution::NULL
        } else {
            // Pass 2: population variances around those means.
            let n = (records - skip) as f64;
            let (mean_avg, mean_value) = (sum_avg / n, sum_value / n);
            let (mut ss_avg, mut ss_value) = (0.0, 0.0);
            for (value, average) in MovingAverages::new(&self.history, averaging).skip(skip) {
                let (da, dv) = (average - mean_avg, value - mean_value);
                ss_avg += da * da;
                ss_value += dv * dv;
            }
            if ss_value / n < FLAT_METRIC_VARIANCE {
                Distribution::NULL
            } else {
                Distribution::bounded(mean_avg, ss_avg / n)
            }
        };
        for tail in &mut self.recent_tails {
            *tail = distribution.tail_probability(*tail);
        }
        self.distribution = Some(distribution);
        distribution
    }
}

/// The moving average of the raw scores over a history, as NuPIC computed
/// it from an empty window: yields `(metric value, averaged raw score)`;
/// `total` is the running sum after the last item. The value leaving the
/// window is read back from the history, so no window buffer is needed.
struct MovingAverages<'a> {
    history: &'a VecDeque<(f64, f64)>,
    window: usize,
    next: usize,
    total: f64,
}

impl<'a> MovingAverages<'a> {
    fn new(history: &'a VecDeque<(f64, f64)>, window: usize) -> Self {
        Self {
            history,
            window,
            next: 0,
            total: 0.0,
        }
    }
}

impl Iterator for MovingAverages<'_> {
    type Item = (f64, f64);

    fn next(&mut self) -> Option<(f64, f64)> {
        let i = self.next;
        let &(value, raw) = self.history.get(i)?;
        if i >= self.window {
            self.total -= self.history[i - self.window].1;
        }
        self.total += raw;
        self.next += 1;
        let len = (i + 1).min(self.window);
        Some((value, self.total / len as f64))
    }
}

/// How many of the oldest history records a fit skips (NuPIC's
/// `_calcSkipRecords`): the learning period, less what has already been
/// shifted out of the history window, never more than was ingested.
fn skip_records(ingested: u64, window: u32, learning_period: u32) -> u64 {
    let shifted_out = ingested.saturating_sub(u64::from(window));
    u64::from(learning_period)
        .saturating_sub(shifted_out)
        .min(ingested)
}

/// The red/yellow filter for the newest tail probability: a red one (≤ 1e-5)
/// right after another red one (compared unfiltered) becomes yellow (1e-3),
/// so only the first sample of an extreme run reports an extreme likelihood.
fn filter_tail(previous: Option<f64>, current: f64) -> f64 {
    match previous {
        Some(previous) if current <= RED_THRESHOLD && previous <= RED_THRESHOLD => YELLOW_THRESHOLD,
        _ => current,
    }
}

/// NAB's log transform of a likelihood:
/// `ln(1.0000000001 - likelihood) / ln(1e-10)`, mapping 0.5 → 0.0301,
/// 0.99 → 0.2, 0.99999 → 0.5, 1 → 1.0 (`htm-reference.md` §5.2).
pub fn log_likelihood(likelihood: f64) -> f64 {
    (1.0000000001 - likelihood).ln() / -23.02585084720009
}

/// The complementary error function `erfc(x) = 1 - erf(x)` in double
/// precision (within 2e-15 relative of the C library's `erfc` on the test
/// points, wherever the result is a normal number).
///
/// Source: W. J. Cody, "Rational Chebyshev approximations for the error
/// function", Math. Comp. 23 (1969) 631–637, and the coefficient sets of his
/// public-domain SPECFUN routine CALERF (Netlib). Three intervals of `|x|`:
/// `erf` by a rational function of `x²` up to 0.46875; `exp(x²)·erfc` by a
/// rational function of `|x|` up to 4; beyond, `exp(x²)·erfc·|x|` by a
/// rational function of `1/x²` (the asymptotic expansion). `exp(-x²)` is
/// computed as `exp(-t²)·exp(-(|x|-t)(|x|+t))` with `t` = `|x|` truncated to
/// a multiple of 1/16, which keeps the rounding error of `x²` out of the
/// exponent. Negative arguments use `erfc(-x) = 2 - erfc(x)`.
#[allow(clippy::excessive_precision)]
pub fn erfc(x: f64) -> f64 {
    // erf on [0, 0.46875]: x · A(x²) / B(x²).
    const A: [f64; 5] = [
        3.16112374387056560e0,
        1.13864154151050156e2,
        3.77485237685302021e2,
        3.20937758913846947e3,
        1.85777706184603153e-1,
    ];
    const B: [f64; 4] = [
        2.36012909523441209e1,
        2.44024637934444173e2,
        1.28261652607737228e3,
        2.84423683343917062e3,
    ];
    // exp(x²)·erfc on [0.46875, 4]: C(x) / D(x).
    const C: [f64; 9] = [
        5.64188496988670089e-1,
        8.88314979438837594e0,
        6.61191906371416295e1,
        2.98635138197400131e2,
        8.81952221241769090e2,
        1.71204761263407058e3,
        2.05107837782607147e3,
        1.23033935479799725e3,
        2.15311535474403846e-8,
    ];
    const D: [f64; 8] = [
        1.57449261107098347e1,
        1.17693950891312499e2,
        5.37181101862009858e2,
        1.62138957456669019e3,
        3.29079923573345963e3,
        4.36261909014324716e3,
        3.43936767414372164e3,
        1.23033935480374942e3,
    ];
    // exp(x²)·erfc·x on (4, ∞): 1/√π - P(1/x²) / (x² Q(1/x²)).
    const P: [f64; 6] = [
        3.05326634961232344e-1,
        3.60344899949804439e-1,
        1.25781726111229246e-1,
        1.60837851487422766e-2,
        6.58749161529837803e-4,
        1.63153871373020978e-2,
    ];
    const Q: [f64; 5] = [
        2.56852019228982242e0,
        1.87295284992346047e0,
        5.27905102951428412e-1,
        6.05183413124413191e-2,
        2.33520497626869185e-3,
    ];
    const ONE_OVER_SQRT_PI: f64 = 5.6418958354775628695e-1;
    // Below this, x² vanishes next to the constant terms.
    const TINY: f64 = 1.11e-16;
    // Beyond this, erfc(|x|) is 0 in f64 (erfc(27.3) < 5e-324).
    const ZERO_BEYOND: f64 = 27.5;

    if x.is_nan() {
        return x;
    }
    let y = x.abs();
    if y <= 0.46875 {
        let t = if y > TINY { y * y } else { 0.0 };
        let mut num = A[4] * t;
        let mut den = t;
        for (a, b) in A[..3].iter().zip(&B[..3]) {
            num = (num + a) * t;
            den = (den + b) * t;
        }
        return 1.0 - x * (num + A[3]) / (den + B[3]);
    }
    if y >= ZERO_BEYOND {
        return if x < 0.0 { 2.0 } else { 0.0 };
    }
    let scaled = if y <= 4.0 {
        let mut num = C[8] * y;
        let mut den = y;
        for (c, d) in C[..7].iter().zip(&D[..7]) {
            num = (num + c) * y;
            den = (den + d) * y;
        }
        (num + C[7]) / (den + D[7])
    } else {
        let t = 1.0 / (y * y);
        let mut num = P[5] * t;
        let mut den = t;
        for (p, q) in P[..4].iter().zip(&Q[..4]) {
            num = (num + p) * t;
            den = (den + q) * t;
        }
        (ONE_OVER_SQRT_PI - t * (num + P[4]) / (den + Q[4])) / y
    };
    let truncated = (y * 16.0).trunc() / 16.0;
    let rest = (y - truncated) * (y + truncated);
    let upper = (-truncated * truncated).exp() * (-rest).exp() * scaled;
    if x < 0.0 {
        2.0 - upper
    } else {
        upper
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::htm::random::Random;
    use proptest::prelude::*;

    fn params(learning: u32, estimation: u32, window: u32, period: u32) -> AnomalyLikelihoodParams {
        AnomalyLikelihoodParams {
            learning_period: learning,
            estimation_samples: estimation,
            historic_window_size: window,
            reestimation_period: period,
            averaging_window: 10,
        }
    }

    fn assert_rel_close(actual: f64, expected: f64, rel: f64) {
        let err = ((actual - expected) / expected).abs();
        assert!(
            err <= rel,
            "{actual:e} vs {expected:e}: relative error {err:e} > {rel:e}"
        );
    }

    #[test]
    #[allow(clippy::excessive_precision)] // reference values as published
    fn erfc_matches_reference_values() {
        // Values of Python's math.erfc (the C library's erfc, glibc x86-64).
        let table = [
            (0.0, 1.0),
            (1e-20, 1.0),
            (0.1, 0.8875370839817152),
            (0.3, 0.6713732405408726),
            (0.46875, 0.507386526782062),
            (0.47, 0.5062549491139179),
            (0.5, 0.4795001221869535),
            (0.75, 0.28884436634648486),
            (1.0, 0.15729920705028513),
            (1.5, 0.033894853524689274),
            (2.0, 0.004677734981047266),
            (2.5, 0.0004069520174449589),
            (3.0, 2.209049699858544e-05),
            (3.9, 3.479224859723177e-08),
            (4.0, 1.541725790028002e-08),
            (4.1, 6.700027654084918e-09),
            (5.0, 1.5374597944280349e-12),
            (6.0, 2.1519736712498916e-17),
            (8.0, 1.1224297172982928e-29),
            (10.0, 2.088487583762545e-45),
            (15.0, 7.212994172451206e-100),
            (26.0, 5.663192408856143e-296),
            (-0.3, 1.3286267594591274),
            (-1.0, 1.8427007929497148),
            (-2.0, 1.9953222650189528),
            (-5.0, 1.9999999999984626),
        ];
        for (x, expected) in table {
            assert_rel_close(erfc(x), expected, 2e-15);
        }
    }

    #[test]
    fn erfc_limits_and_nan() {
        assert_eq!(erfc(30.0), 0.0);
        assert_eq!(erfc(f64::INFINITY), 0.0);
        assert_eq!(erfc(-30.0), 2.0);
        assert_eq!(erfc(f64::NEG_INFINITY), 2.0);
        assert!(erfc(f64::NAN).is_nan());
    }

    #[test]
    fn erfc_is_continuous_at_interval_boundaries() {
        for boundary in [0.46875, 4.0] {
            let below = erfc(boundary - 1e-12);
            let above = erfc(boundary + 1e-12);
            assert!(below > above, "erfc must decrease across {boundary}");
            assert_rel_close(below, above, 1e-10);
        }
    }

    #[test]
    fn log_likelihood_maps_nab_reference_points() {
        assert!((log_likelihood(0.5) - 0.0301).abs() < 1e-4);
        assert!((log_likelihood(0.99) - 0.2).abs() < 1e-6);
        assert!((log_likelihood(0.99999) - 0.5).abs() < 1e-6);
        assert!((log_likelihood(1.0) - 1.0).abs() < 1e-8);
        assert!(log_likelihood(0.999) < log_likelihood(0.9999));
    }

    #[test]
    fn params_defaults_and_nab_setting() {
        let d = AnomalyLikelihoodParams::default();
        assert_eq!(
            (
                d.learning_period,
                d.estimation_samples,
                d.historic_window_size
            ),
            (288, 100, 8640)
        );
        assert_eq!((d.reestimation_period, d.averaging_window), (100, 10));
        let p = AnomalyLikelihoodParams::for_probationary_period(751);
        assert_eq!((p.learning_period, p.estimation_samples), (375, 376));
        assert_eq!(p.probation(), 751);
        assert_eq!(p.historic_window_size, 8640);
    }

    #[test]
    fn params_json_fills_defaults_and_rejects_unknown_fields() {
        let p: AnomalyLikelihoodParams = serde_json::from_str(r#"{"learning_period": 5}"#).unwrap();
        assert_eq!(p.learning_period, 5);
        assert_eq!(p.estimation_samples, 100);
        assert!(serde_json::from_str::<AnomalyLikelihoodParams>(r#"{"bogus": 1}"#).is_err());
    }

    #[test]
    fn new_rejects_zero_windows() {
        for (field, p) in [
            ("historic_window_size", params(1, 1, 0, 1)),
            ("reestimation_period", params(1, 1, 1, 0)),
            (
                "averaging_window",
                AnomalyLikelihoodParams {
                    averaging_window: 0,
                    ..Default::default()
                },
            ),
        ] {
            assert_eq!(
                AnomalyLikelihood::new(p).unwrap_err(),
                LikelihoodError::ZeroParameter(field)
            );
        }
    }

    #[test]
    fn skip_records_follows_learning_period_and_window() {
        assert_eq!(skip_records(0, 8640, 288), 0);
        assert_eq!(skip_records(100, 8640, 288), 100);
        assert_eq!(skip_records(388, 8640, 288), 288);
        assert_eq!(skip_records(8640, 8640, 288), 288);
        assert_eq!(skip_records(8640 + 100, 8640, 288), 188);
        assert_eq!(skip_records(8640 + 300, 8640, 288), 0);
    }

    #[test]
    fn tail_probability_is_symmetric_and_half_at_mean() {
        let d = Distribution::bounded(0.2, 0.01);
        assert_eq!(d.tail_probability(0.2), 0.5);
        assert_rel_close(d.tail_probability(0.35), d.tail_probability(0.05), 1e-12);
        assert!(d.tail_probability(0.5) < d.tail_probability(0.3));
        // z = 1 exactly: divided by 1.4142, not by √2.
        let d = Distribution::bounded(0.25, 0.25);
        assert_eq!(d.tail_probability(0.75), 0.5 * erfc(1.0 / NUPIC_SQRT_2));
        assert_eq!(NUPIC_SQRT_2.to_string(), "1.4142");
        assert_ne!(
            d.tail_probability(0.75),
            0.5 * erfc(std::f64::consts::FRAC_1_SQRT_2)
        );
    }

    #[test]
    fn distribution_lower_bounds() {
        let d = Distribution::bounded(0.001, 1e-9);
        assert_eq!((d.mean, d.variance), (0.03, 0.0003));
        assert_eq!(d.stdev, 0.0003f64.sqrt());
    }

    #[test]
    fn filter_keeps_only_the_first_red_tail() {
        assert_eq!(filter_tail(None, 1e-9), 1e-9);
        assert_eq!(filter_tail(Some(0.4), 1e-9), 1e-9);
        assert_eq!(filter_tail(Some(1e-7), 1e-9), YELLOW_THRESHOLD);
        assert_eq!(filter_tail(Some(1e-7), 0.2), 0.2);
        assert_eq!(filter_tail(Some(1e-7), 1e-4), 1e-4);
    }

    #[test]
    fn probation_returns_exactly_one_half() {
        let mut lik = AnomalyLikelihood::new(params(20, 30, 8640, 100)).unwrap();
        let mut rng = Random::new(3);
        for _ in 0..50 {
            assert_eq!(lik.compute(rng.next_f64(), rng.next_f64()), 0.5);
            assert!(lik.distribution().is_none());
        }
        lik.compute(rng.next_f64(), rng.next_f64());
        assert!(lik.distribution().is_some());
        assert_eq!(lik.iteration(), 51);
    }

    #[test]
    fn constant_raw_score_gives_one_half() {
        let mut rng = Random::new(5);
        let mut lik = AnomalyLikelihood::new(params(50, 50, 8640, 100)).unwrap();
        for i in 0..1000 {
            let l = lik.compute(rng.next_f64() * 100.0, 0.2);
            assert!((l - 0.5).abs() < 1e-9, "step {i}: {l}");
        }
        let d = lik.distribution().unwrap();
        assert!((d.mean - 0.2).abs() < 1e-12);
        assert_eq!(d.variance, MIN_VARIANCE);
    }

    #[test]
    fn flat_metric_gives_null_distribution() {
        let mut rng = Random::new(9);
        let mut lik = AnomalyLikelihood::new(params(50, 50, 8640, 100)).unwrap();
        for _ in 0..400 {
            let l = lik.compute(42.0, rng.next_f64());
            assert!((l - 0.5).abs() < 1e-3);
        }
        assert_eq!(lik.distribution(), Some(Distribution::NULL));

        // The same scores with a varying metric get a real fit.
        let mut rng = Random::new(9);
        let mut lik = AnomalyLikelihood::new(params(50, 50, 8640, 100)).unwrap();
        for i in 0..400 {
            lik.compute(f64::from(i % 7), rng.next_f64());
        }
        assert_ne!(lik.distribution(), Some(Distribution::NULL));
    }

    #[test]
    fn anomaly_run_after_stable_period_is_flagged_once_then_yellow() {
        let mut rng = Random::new(11);
        let mut lik = AnomalyLikelihood::new(params(150, 150, 8640, 100)).unwrap();
        for _ in 0..1000 {
            let l = lik.compute(rng.next_f64(), 0.1 * rng.next_f64());
            assert!(l < 0.999);
        }
        let first = lik.compute(rng.next_f64(), 1.0);
        assert!(first > 0.99999, "first anomalous step: {first}");
        // The following extreme tail probabilities are filtered to yellow:
        // each is compared with the previous *unfiltered* one.
        for _ in 0..5 {
            assert_eq!(lik.compute(rng.next_f64(), 1.0), 1.0 - YELLOW_THRESHOLD);
        }
        assert!(log_likelihood(first) > 0.5);
    }

    #[test]
    fn reestimates_every_period() {
        let mut rng = Random::new(21);
        let mut lik = AnomalyLikelihood::new(params(10, 10, 50, 7)).unwrap();
        let mut previous = None;
        for i in 0..300u64 {
            lik.compute(rng.next_f64(), rng.next_f64());
            let current = lik.distribution();
            let expected_change = i == 20 || (i > 20 && i % 7 == 0);
            assert_eq!(
                current != previous,
                expected_change,
                "iteration {i}: {previous:?} -> {current:?}"
            );
            previous = current;
        }
    }

    /// The fit, computed the obvious way from the full input list.
    fn naive_fit(inputs: &[(f64, f64)], p: &AnomalyLikelihoodParams) -> Distribution {
        let iteration = inputs.len();
        let start = iteration.saturating_sub(p.historic_window_size as usize);
        let history = &inputs[start..];
        let skip = skip_records(iteration as u64, p.historic_window_size, p.learning_period);
        let w = p.averaging_window as usize;
        let mut averages = Vec::new();
        for i in 0..history.len() {
            let from = (i + 1).saturating_sub(w);
            let window = &history[from..=i];
            averages.push(window.iter().map(|r| r.1).sum::<f64>() / window.len() as f64);
        }
        let skip = skip as usize;
        if history.len() <= skip {
            return Distribution::NULL;
        }
        let population = |xs: &[f64]| {
            let mean = xs.iter().sum::<f64>() / xs.len() as f64;
            let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / xs.len() as f64;
            (mean, var)
        };
        let values: Vec<f64> = history.iter().map(|r| r.0).collect();
        if population(&values[skip..]).1 < FLAT_METRIC_VARIANCE {
            return Distribution::NULL;
        }
        let (mean, var) = population(&averages[skip..]);
        Distribution::bounded(mean, var)
    }

    #[test]
    fn fit_matches_naive_computation_across_history_wrap() {
        let p = params(12, 8, 30, 5);
        let mut lik = AnomalyLikelihood::new(p.clone()).unwrap();
        let mut rng = Random::new(77);
        let mut inputs = Vec::new();
        for i in 0..200usize {
            let input = (rng.next_f64() * 10.0, rng.next_f64());
            let due = i >= 20 && (i == 20 || i % 5 == 0);
            let expected = due.then(|| naive_fit(&inputs, &p));
            lik.compute(input.0, input.1);
            inputs.push(input);
            if let Some(expected) = expected {
                let got = lik.distribution().unwrap();
                assert!((got.mean - expected.mean).abs() < 1e-12, "step {i}");
                assert!((got.variance - expected.variance).abs() < 1e-12, "step {i}");
            }
        }
    }

    #[test]
    fn zero_probation_starts_with_null_distribution() {
        let mut lik = AnomalyLikelihood::new(params(0, 0, 100, 10)).unwrap();
        let l = lik.compute(1.0, 1.0);
        assert_eq!(lik.distribution(), Some(Distribution::NULL));
        assert!((0.5..0.51).contains(&l));
    }

    #[test]
    fn serde_round_trip_continues_identically() {
        let config = bincode::config::standard();
        let mut rng = Random::new(31);
        let mut a = AnomalyLikelihood::new(params(40, 40, 200, 25)).unwrap();
        for _ in 0..300 {
            a.compute(rng.next_f64(), rng.next_f64());
        }
        let bytes = bincode::serde::encode_to_vec(&a, config).unwrap();
        let (mut b, _): (AnomalyLikelihood, usize) =
            bincode::serde::decode_from_slice(&bytes, config).unwrap();
        for _ in 0..500 {
            let (value, raw) = (rng.next_f64(), rng.next_f64() * rng.next_f64());
            assert_eq!(
                a.compute(value, raw).to_bits(),
                b.compute(value, raw).to_bits()
            );
        }
        assert_eq!(a.distribution(), b.distribution());
    }

    #[test]
    fn history_memory_is_bounded_by_the_window() {
        let mut lik = AnomalyLikelihood::new(AnomalyLikelihoodParams::default()).unwrap();
        let young = lik.memory_bytes();
        for i in 0..10_000 {
            lik.compute(f64::from(i), 0.1);
        }
        assert!(lik.history.capacity() >= 8640);
        assert!(lik.history.capacity() <= 8640 + 64);
        assert!(lik.memory_bytes() >= young + 8640 * 16);
    }

    proptest! {
        #[test]
        fn likelihood_stays_in_upper_half(
            seed in any::<u32>(),
            learning in 0u32..40,
            estimation in 0u32..40,
            scale in 0.0f64..1.0,
        ) {
            let mut lik = AnomalyLikelihood::new(params(learning, estimation, 64, 9)).unwrap();
            let mut rng = Random::new(seed);
            for _ in 0..300 {
                let l = lik.compute(rng.next_f64() * 5.0, rng.next_f64() * scale);
                prop_assert!((0.5..=1.0).contains(&l), "{}", l);
            }
        }
    }
}
