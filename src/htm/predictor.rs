//! Multi-step predictor: one [`Classifier`] per prediction horizon, each
//! learning what the stream's value turned out to be `n` records after a
//! pattern of active cells (`htm-reference.md` §6.2).
//!
//! The predictor remembers the last `max(steps) + 1` learned patterns with
//! their record numbers. When record `r` arrives with its categories (value
//! buckets), every remembered pattern from record `r - n`, for a horizon `n`
//! in `steps`, is taught to horizon `n`'s classifier: "this pattern was
//! followed, `n` records later, by these categories". Inference asks every
//! classifier about the current pattern. In the reference pipeline (§7)
//! `infer` runs before `learn` on each record.
//!
//! The history reuses the buffers of the patterns it drops, and every
//! classifier writes its distribution into its own buffer, so neither call
//! allocates in steady state.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::classifier::Classifier;

/// Invalid predictor parameters or calls.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PredictorError {
    /// `steps` was empty.
    #[error("predictor needs at least one step")]
    NoSteps,
    /// `steps` was not strictly ascending or contained 0.
    #[error("predictor steps must be > 0, sorted ascending and unique, got {0:?}")]
    InvalidSteps(Vec<u32>),
    /// `alpha` was not a positive finite number.
    #[error("predictor alpha must be positive and finite, got {0}")]
    InvalidAlpha(f64),
    /// `learn` was called with a record number below the last one.
    #[error("record number {got} is before the last learned record {last}")]
    RecordNumDecreased {
        /// The last record number learned.
        last: u64,
        /// The record number given.
        got: u64,
    },
}

/// Predictor over several horizons (`htm-reference.md` §6.2).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Predictor {
    /// Horizons in records, strictly ascending, all > 0.
    steps: Vec<u32>,
    /// `classifiers[i]` predicts `steps[i]` records ahead.
    classifiers: Vec<Classifier>,
    /// `(record number, pattern)` of the last `max(steps) + 1` learned
    /// records, oldest first, record numbers strictly ascending.
    history: VecDeque<(u64, Vec<u32>)>,
}

impl Predictor {
    /// A predictor for the horizons `steps` (non-empty, > 0, strictly
    /// ascending) with learning rate `alpha` (positive, finite).
    pub fn new(steps: &[u32], alpha: f64) -> Result<Self, PredictorError> {
        if steps.is_empty() {
            return Err(PredictorError::NoSteps);
        }
        if steps[0] == 0 || steps.windows(2).any(|w| w[0] >= w[1]) {
            return Err(PredictorError::InvalidSteps(steps.to_vec()));
        }
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(PredictorError::InvalidAlpha(alpha));
        }
        Ok(Self {
            steps: steps.to_vec(),
            classifiers: steps.iter().map(|_| Classifier::new(alpha)).collect(),
            history: VecDeque::new(),
        })
    }

    /// The distribution over categories for each horizon given the current
    /// active cells, as `(step, pdf)` in ascending step order; a pdf is empty
    /// while its horizon has not learned anything. The pdfs stay readable
    /// through [`Predictor::pdf`] until the next `infer`.
    pub fn infer(&mut self, pattern: &[u32]) -> impl Iterator<Item = (u32, &[f64])> + '_ {
        for classifier in &mut self.classifiers {
            classifier.infer(pattern);
        }
        self.pdfs()
    }

    /// The distributions computed by the last [`Predictor::infer`].
    pub fn pdfs(&self) -> impl Iterator<Item = (u32, &[f64])> + '_ {
        self.steps
            .iter()
            .copied()
            .zip(self.classifiers.iter().map(Classifier::last_pdf))
    }

    /// The distribution for horizon `step` computed by the last
    /// [`Predictor::infer`]; `None` if `step` is not one of the horizons.
    pub fn pdf(&self, step: u32) -> Option<&[f64]> {
        let index = self.steps.binary_search(&step).ok()?;
        Some(self.classifiers[index].last_pdf())
    }

    /// Learn from record `record_num`, whose active cells are `pattern` and
    /// whose value falls in `categories`. Record numbers must not decrease
    /// (an error, and nothing changes). A new record number is remembered
    /// with its pattern; a repeated one is not (the stored pattern stays),
    /// but the past patterns still learn `categories` again.
    pub fn learn(
        &mut self,
        record_num: u64,
        pattern: &[u32],
        categories: &[u32],
    ) -> Result<(), PredictorError> {
        let last = self.history.back().map(|(r, _)| *r);
        match last {
            Some(last) if record_num < last => {
                return Err(PredictorError::RecordNumDecreased {
                    last,
                    got: record_num,
                });
            }
            Some(last) if record_num == last => {}
            _ => self.remember(record_num, pattern),
        }
        for (past_record, past_pattern) in &self.history {
            let distance = record_num - past_record;
            let Ok(distance) = u32::try_from(distance) else {
                continue;
            };
            if let Ok(index) = self.steps.binary_search(&distance) {
                self.classifiers[index].learn(past_pattern, categories);
            }
        }
        Ok(())
    }

    /// Forget the remembered patterns (start of a new sequence): nothing
    /// learned after the reset is attributed to a pattern from before it, and
    /// the next record number may be any value.
    pub fn reset(&mut self) {
        self.history.clear();
    }

    /// The horizons, ascending.
    pub fn steps(&self) -> &[u32] {
        &self.steps
    }

    /// The classifier of horizon `step`, if it is one of the horizons.
    pub fn classifier(&self, step: u32) -> Option<&Classifier> {
        let index = self.steps.binary_search(&step).ok()?;
        Some(&self.classifiers[index])
    }

    /// Approximate memory held, in bytes.
    pub fn memory_bytes(&self) -> usize {
        let history: usize = self
            .history
            .iter()
            .map(|(_, p)| p.capacity() * std::mem::size_of::<u32>())
            .sum();
        std::mem::size_of::<Self>()
            + self.steps.capacity() * std::mem::size_of::<u32>()
            + self
                .classifiers
                .iter()
                .map(Classifier::memory_bytes)
                .sum::<usize>()
            + self.history.capacity() * std::mem::size_of::<(u64, Vec<u32>)>()
            + history
    }

    /// Append `(record_num, pattern)` to the history, dropping (and reusing
    /// the buffer of) the oldest entry when `max(steps) + 1` are stored.
    fn remember(&mut self, record_num: u64, pattern: &[u32]) {
        let max_step = self.steps.last().copied().unwrap_or(0);
        let capacity = max_step as usize + 1;
        let mut buffer = if self.history.len() >= capacity {
            self.history.pop_front().map(|(_, p)| p).unwrap_or_default()
        } else {
            Vec::new()
        };
        buffer.clear();
        buffer.extend_from_slice(pattern);
        self.history.push_back((record_num, buffer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::htm::random::Random;
    use proptest::prelude::*;

    fn argmax(pdf: &[f64]) -> usize {
        let mut best = 0;
        for (i, &p) in pdf.iter().enumerate() {
            if p > pdf[best] {
                best = i;
            }
        }
        best
    }

    #[test]
    fn new_validates_steps_and_alpha() {
        assert_eq!(
            Predictor::new(&[], 0.1).unwrap_err(),
            PredictorError::NoSteps
        );
        for steps in [&[0u32, 1][..], &[3, 1], &[1, 1], &[0]] {
            assert_eq!(
                Predictor::new(steps, 0.1).unwrap_err(),
                PredictorError::InvalidSteps(steps.to_vec())
            );
        }
        for alpha in [0.0, -0.1, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                Predictor::new(&[1], alpha),
                Err(PredictorError::InvalidAlpha(_))
            ));
        }
        let p = Predictor::new(&[1, 5], 0.1).unwrap();
        assert_eq!(p.steps(), &[1, 5]);
    }

    #[test]
    fn learns_each_horizon_from_the_pattern_n_records_ago() {
        // Cycle of four disjoint patterns; pattern i has bucket 10 + i.
        let patterns: [Vec<u32>; 4] =
            [vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8], vec![9, 10, 11]];
        let mut p = Predictor::new(&[1, 3], 0.3).unwrap();
        for record in 0..400u64 {
            let i = (record % 4) as usize;
            p.learn(record, &patterns[i], &[10 + i as u32]).unwrap();
        }
        for (i, pattern) in patterns.iter().enumerate() {
            let pdfs: Vec<(u32, Vec<f64>)> =
                p.infer(pattern).map(|(s, pdf)| (s, pdf.to_vec())).collect();
            assert_eq!(pdfs.len(), 2);
            assert_eq!(pdfs[0].0, 1);
            assert_eq!(argmax(&pdfs[0].1), 10 + (i + 1) % 4);
            assert_eq!(pdfs[1].0, 3);
            assert_eq!(argmax(&pdfs[1].1), 10 + (i + 3) % 4);
            assert_eq!(p.pdf(3).unwrap(), pdfs[1].1.as_slice());
        }
        assert!(p.pdf(2).is_none());
    }

    #[test]
    fn decreasing_record_num_is_an_error_and_changes_nothing() {
        let mut p = Predictor::new(&[1], 0.1).unwrap();
        p.learn(5, &[1, 2], &[0]).unwrap();
        assert_eq!(
            p.learn(4, &[3], &[1]),
            Err(PredictorError::RecordNumDecreased { last: 5, got: 4 })
        );
        assert_eq!(p.history.len(), 1);
        assert_eq!(p.classifier(1).unwrap().num_categories(), 0);
    }

    #[test]
    fn repeated_record_num_does_not_append_history() {
        let mut p = Predictor::new(&[1], 0.5).unwrap();
        let (a, b, c) = ([1u32, 2, 3], [10u32, 11, 12], [20u32, 21]);
        p.learn(0, &a, &[5]).unwrap();
        p.learn(0, &b, &[5]).unwrap();
        assert_eq!(p.history.len(), 1);
        p.learn(1, &c, &[7]).unwrap();
        // Only `a` (record 0) learned that record 1 was bucket 7.
        let pa = p.infer(&a).next().unwrap().1.to_vec();
        assert_eq!(argmax(&pa), 7);
        let pb = p.infer(&b).next().unwrap().1.to_vec();
        assert!(pb.iter().all(|&x| x == pb[0]), "b never learned: {pb:?}");
    }

    #[test]
    fn record_gaps_count_in_records_not_calls() {
        let mut p = Predictor::new(&[2], 0.5).unwrap();
        p.learn(0, &[1], &[0]).unwrap();
        p.learn(1, &[2], &[1]).unwrap();
        p.learn(3, &[3], &[4]).unwrap();
        // Record 3 is two records after record 1 only.
        assert_eq!(argmax(p.infer(&[2]).next().unwrap().1), 4);
        let p1 = p.infer(&[1]).next().unwrap().1.to_vec();
        assert!(p1.iter().all(|&x| x == p1[0]));
    }

    #[test]
    fn reset_forgets_the_sequence() {
        let mut p = Predictor::new(&[1], 0.1).unwrap();
        p.learn(10, &[1, 2], &[0]).unwrap();
        p.reset();
        // Any record number is accepted again, and nothing crosses the reset.
        p.learn(3, &[3, 4], &[1]).unwrap();
        assert!(p.infer(&[1, 2]).next().unwrap().1.is_empty());
        p.learn(4, &[5], &[2]).unwrap();
        assert_eq!(argmax(p.infer(&[3, 4]).next().unwrap().1), 2);
    }

    #[test]
    fn history_holds_max_step_plus_one_and_reuses_buffers() {
        let mut p = Predictor::new(&[1, 4], 0.1).unwrap();
        for record in 0..20u64 {
            p.learn(record, &[record as u32, 100], &[0]).unwrap();
        }
        assert_eq!(p.history.len(), 5);
        assert_eq!(p.history.front().unwrap().0, 15);
        let before = p.memory_bytes();
        for record in 20..40u64 {
            p.learn(record, &[record as u32, 100], &[0]).unwrap();
        }
        // Steady state with same-sized patterns: only new weight rows grow
        // (20 new bits in each of the 2 classifiers, one row stride of f64
        // each, plus up to 16 rows of reserve per classifier).
        let row_bytes = crate::htm::classifier::STRIDE_STEP * 8;
        let rows_growth = 20 * 2 * row_bytes + 16 * row_bytes * 2;
        assert!(p.memory_bytes() <= before + rows_growth);
    }

    #[test]
    fn serde_round_trip_continues_identically() {
        let config = bincode::config::standard();
        let mut rng = Random::new(8);
        let mut a = Predictor::new(&[1, 2, 5], 0.2).unwrap();
        let step = |p: &mut Predictor, r: u64, rng: &mut Random| {
            let pattern: Vec<u32> = (0..4).map(|k| k * 50 + rng.next_u32_below(50)).collect();
            let bucket = rng.next_u32_below(8);
            let pdfs: Vec<Vec<f64>> = p.infer(&pattern).map(|(_, pdf)| pdf.to_vec()).collect();
            p.learn(r, &pattern, &[bucket]).unwrap();
            pdfs
        };
        for r in 0..100 {
            step(&mut a, r, &mut rng);
        }
        let bytes = bincode::serde::encode_to_vec(&a, config).unwrap();
        let (mut b, _): (Predictor, usize) =
            bincode::serde::decode_from_slice(&bytes, config).unwrap();
        let mut rng_b = rng.clone();
        for r in 100..200 {
            assert_eq!(step(&mut a, r, &mut rng), step(&mut b, r, &mut rng_b));
        }
    }

    proptest! {
        #[test]
        fn every_pdf_is_a_distribution(seed in any::<u32>(), alpha in 0.001f64..1.0) {
            let mut rng = Random::new(seed);
            let mut p = Predictor::new(&[1, 3], alpha).unwrap();
            for record in 0..80u64 {
                let pattern: Vec<u32> = (0..5).map(|k| k * 20 + rng.next_u32_below(20)).collect();
                for (_, pdf) in p.infer(&pattern) {
                    if !pdf.is_empty() {
                        let sum: f64 = pdf.iter().sum();
                        prop_assert!((sum - 1.0).abs() <= 1e-9, "sum {}", sum);
                        prop_assert!(pdf.iter().all(|x| *x >= 0.0));
                    }
                }
                p.learn(record, &pattern, &[rng.next_u32_below(16)]).unwrap();
            }
        }
    }
}
