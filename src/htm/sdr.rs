//! Sparse Distributed Representation: a fixed-size binary vector stored as
//! the sorted list of its active (1) bits.
//!
//! Every stage of the pipeline speaks SDRs: the encoders produce one, the
//! Spatial Pooler maps it to active columns, the Temporal Memory to active
//! cells. Storing only the active indices keeps the work proportional to the
//! few active bits (2–10 % of the size), which is what HTM's speed rests on.
//! The indices are always sorted ascending and unique, so overlap and
//! concatenation are linear merges and outputs are comparable bit for bit.

use serde::{Deserialize, Serialize};

use super::random::Random;

/// A binary vector of `size` bits, stored sparsely.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sdr {
    size: u32,
    /// Active bits, sorted ascending, unique, each `< size`.
    active: Vec<u32>,
}

impl Sdr {
    /// An all-zero SDR of `size` bits.
    pub fn new(size: u32) -> Self {
        Self {
            size,
            active: Vec::new(),
        }
    }

    /// An SDR from any list of active bits (sorted and de-duplicated here).
    ///
    /// # Panics
    /// If an index is `>= size`: that is a programming error, not bad input.
    pub fn from_indices(size: u32, indices: impl IntoIterator<Item = u32>) -> Self {
        let mut sdr = Self::new(size);
        sdr.set_indices(indices);
        sdr
    }

    /// An SDR from a dense 0/1 vector.
    pub fn from_dense(dense: &[bool]) -> Self {
        let active = dense
            .iter()
            .enumerate()
            .filter_map(|(i, &on)| on.then_some(i as u32))
            .collect();
        Self {
            size: dense.len() as u32,
            active,
        }
    }

    /// Replace the active bits, reusing this SDR's buffer (no allocation once
    /// the buffer is large enough).
    pub fn set_indices(&mut self, indices: impl IntoIterator<Item = u32>) {
        self.active.clear();
        self.active.extend(indices);
        self.active.sort_unstable();
        self.active.dedup();
        if let Some(&last) = self.active.last() {
            assert!(
                last < self.size,
                "SDR index {last} out of range {}",
                self.size
            );
        }
    }

    /// Replace the active bits with a list the caller guarantees to be
    /// sorted, unique and in range (checked in debug builds only).
    pub fn set_sorted_indices(&mut self, indices: &[u32]) {
        debug_assert!(indices.windows(2).all(|w| w[0] < w[1]), "not sorted");
        debug_assert!(indices.last().is_none_or(|&i| i < self.size));
        self.active.clear();
        self.active.extend_from_slice(indices);
    }

    /// Turn every bit off.
    pub fn clear(&mut self) {
        self.active.clear();
    }

    /// Number of bits.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The active bits, sorted ascending.
    pub fn indices(&self) -> &[u32] {
        &self.active
    }

    /// Number of active bits.
    pub fn count(&self) -> usize {
        self.active.len()
    }

    /// Fraction of active bits.
    pub fn sparsity(&self) -> f64 {
        if self.size == 0 {
            0.0
        } else {
            self.active.len() as f64 / f64::from(self.size)
        }
    }

    /// Whether bit `i` is active (binary search).
    pub fn contains(&self, i: u32) -> bool {
        self.active.binary_search(&i).is_ok()
    }

    /// The dense 0/1 form.
    pub fn to_dense(&self) -> Vec<bool> {
        let mut dense = vec![false; self.size as usize];
        for &i in &self.active {
            dense[i as usize] = true;
        }
        dense
    }

    /// Number of bits active in both (a linear merge of the sorted lists).
    pub fn overlap(&self, other: &Sdr) -> usize {
        sorted_overlap(&self.active, &other.active)
    }

    /// Concatenate SDRs end to end: the bits of the k-th part are shifted by
    /// the sizes of the parts before it.
    pub fn concat(parts: &[&Sdr]) -> Sdr {
        let mut out = Sdr::new(0);
        out.concat_into(parts);
        out
    }

    /// [`Sdr::concat`] into this SDR's buffer (no allocation in steady state).
    pub fn concat_into(&mut self, parts: &[&Sdr]) {
        self.active.clear();
        let mut offset = 0u32;
        for part in parts {
            self.active.extend(part.active.iter().map(|&i| i + offset));
            offset += part.size;
        }
        self.size = offset;
    }

    /// Activate `round(size * sparsity)` bits chosen uniformly with `rng`
    /// (htm.core's `SDR::randomize`: a sample of all indices, then sorted).
    pub fn randomize(&mut self, sparsity: f32, rng: &mut Random) {
        let k = (self.size as f32 * sparsity).round() as usize;
        let all: Vec<u32> = (0..self.size).collect();
        self.active = rng.sample(&all, k);
        self.active.sort_unstable();
    }

    /// Move a fraction `fraction` of the active bits to random inactive
    /// positions, keeping the count (htm.core's `SDR::addNoise`).
    pub fn add_noise(&mut self, fraction: f32, rng: &mut Random) {
        let n_move = (fraction * self.active.len() as f32).round() as usize;
        let inactive: Vec<u32> = (0..self.size).filter(|&i| !self.contains(i)).collect();
        let turn_on = rng.sample(&inactive, n_move);
        let turn_off = rng.sample(&self.active, n_move);
        let mut next: Vec<u32> = self
            .active
            .iter()
            .copied()
            .filter(|i| !turn_off.contains(i))
            .collect();
        next.extend(turn_on);
        next.sort_unstable();
        self.active = next;
    }
}

/// Size of the intersection of two sorted, duplicate-free lists (a merge).
pub fn sorted_overlap(a: &[u32], b: &[u32]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn indices_are_sorted_and_unique() {
        let sdr = Sdr::from_indices(10, [7, 1, 7, 3]);
        assert_eq!(sdr.indices(), &[1, 3, 7]);
        assert_eq!(sdr.count(), 3);
        assert!(sdr.contains(3) && !sdr.contains(4));
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn out_of_range_index_panics() {
        Sdr::from_indices(4, [4]);
    }

    #[test]
    fn dense_round_trip() {
        let sdr = Sdr::from_indices(6, [0, 5]);
        let dense = sdr.to_dense();
        assert_eq!(dense, [true, false, false, false, false, true]);
        assert_eq!(Sdr::from_dense(&dense), sdr);
    }

    #[test]
    fn concatenation_shifts_later_parts() {
        let a = Sdr::from_indices(3, [0, 2]);
        let b = Sdr::from_indices(4, [1, 3]);
        let c = Sdr::concat(&[&a, &b]);
        assert_eq!(c.size(), 7);
        assert_eq!(c.indices(), &[0, 2, 4, 6]);
    }

    #[test]
    fn overlap_counts_shared_bits() {
        let a = Sdr::from_indices(10, [1, 2, 3, 8]);
        let b = Sdr::from_indices(10, [2, 3, 4, 9]);
        assert_eq!(a.overlap(&b), 2);
        assert_eq!(a.overlap(&Sdr::new(10)), 0);
    }

    #[test]
    fn randomize_activates_the_rounded_fraction() {
        let mut rng = Random::new(1);
        let mut sdr = Sdr::new(1000);
        sdr.randomize(0.15, &mut rng);
        assert_eq!(sdr.count(), 150);
        assert!(sdr.indices().windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn add_noise_keeps_the_count_and_moves_the_fraction() {
        let mut rng = Random::new(2);
        let mut sdr = Sdr::new(1000);
        sdr.randomize(0.1, &mut rng);
        let before = sdr.clone();
        sdr.add_noise(0.5, &mut rng);
        assert_eq!(sdr.count(), 100);
        assert_eq!(sdr.overlap(&before), 50);
    }

    proptest! {
        #[test]
        fn overlap_is_symmetric_and_bounded(
            a in proptest::collection::vec(0u32..200, 0..50),
            b in proptest::collection::vec(0u32..200, 0..50),
        ) {
            let a = Sdr::from_indices(200, a);
            let b = Sdr::from_indices(200, b);
            prop_assert_eq!(a.overlap(&b), b.overlap(&a));
            prop_assert!(a.overlap(&b) <= a.count().min(b.count()));
            let dense_overlap = a.to_dense().iter().zip(b.to_dense()).filter(|(x, y)| **x && *y).count();
            prop_assert_eq!(a.overlap(&b), dense_overlap);
        }
    }
}
