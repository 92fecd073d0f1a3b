//! The raw anomaly score: how much of the current input the Temporal Memory
//! failed to predict.
//!
//! At time `t` the Temporal Memory has a set of predictive cells (computed
//! from the cells active at `t − 1`); the columns holding them are the
//! *predicted* columns. The raw score is the fraction of the columns active
//! at `t` that were not predicted: 0 when everything was foreseen, 1 when
//! nothing was. An empty input is not surprising, so it scores 0 rather
//! than 0/0 (reference: `docs/htm-reference.md` §5.1 and §9 item 14).

use super::sdr::sorted_overlap;

/// Fraction of active columns not predicted (§5.1); 0 when `active` is empty.
///
/// Both lists must be sorted ascending and free of duplicates (as
/// [`super::sdr::Sdr::indices`] and
/// [`super::temporal_memory::TemporalMemory::predicted_columns_of_last_compute`]
/// are).
pub fn raw_anomaly(active_columns: &[u32], predicted_columns: &[u32]) -> f32 {
    if active_columns.is_empty() {
        return 0.0;
    }
    let predicted = sorted_overlap(active_columns, predicted_columns);
    let total = active_columns.len();
    (total - predicted) as f32 / total as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nothing_active_and_nothing_predicted_scores_zero() {
        assert_eq!(raw_anomaly(&[], &[]), 0.0);
    }

    #[test]
    fn nothing_active_scores_zero_whatever_was_predicted() {
        assert_eq!(raw_anomaly(&[], &[3, 5]), 0.0);
    }

    #[test]
    fn a_perfect_prediction_scores_zero() {
        assert_eq!(raw_anomaly(&[2, 3, 6], &[2, 3, 6]), 0.0);
    }

    #[test]
    fn no_overlap_scores_one() {
        assert_eq!(raw_anomaly(&[2, 3, 6], &[3 + 100, 5 + 100]), 1.0);
    }

    #[test]
    fn a_partial_match_scores_the_unpredicted_fraction() {
        // Only column 3 of {2, 3, 6} was predicted: two of three are a surprise.
        let score = raw_anomaly(&[2, 3, 6], &[3, 5, 7]);
        assert!((score - 2.0 / 3.0).abs() < 1e-6, "{score}");
    }

    #[test]
    fn extra_predictions_do_not_lower_the_score() {
        assert_eq!(raw_anomaly(&[1, 2], &[0, 1, 2, 3, 4]), 0.0);
        assert_eq!(raw_anomaly(&[1, 2], &[0, 1, 3, 4]), 0.5);
    }

    proptest! {
        #[test]
        fn score_is_the_unpredicted_fraction(
            active in proptest::collection::btree_set(0u32..100, 0..40),
            predicted in proptest::collection::btree_set(0u32..100, 0..40),
        ) {
            let a: Vec<u32> = active.iter().copied().collect();
            let p: Vec<u32> = predicted.iter().copied().collect();
            let score = raw_anomaly(&a, &p);
            prop_assert!((0.0..=1.0).contains(&score));
            if !a.is_empty() {
                let missed = a.iter().filter(|c| !predicted.contains(c)).count();
                prop_assert!((score - missed as f32 / a.len() as f32).abs() < 1e-6);
            } else {
                prop_assert_eq!(score, 0.0);
            }
        }
    }
}
