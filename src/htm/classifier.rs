//! SDR classifier: a single-layer softmax network that learns which category
//! (value bucket) tends to go with a pattern of active bits, and returns a
//! probability distribution over the categories (`htm-reference.md` §6.1).
//!
//! Each input bit has one weight per category. Inference sums the weights of
//! the active bits and applies a softmax; learning moves the weights of the
//! active bits by `alpha · (target - predicted)`, where the target gives
//! `1/n` to each of the `n` categories named. This is online logistic
//! regression, so it follows a changing stream.
//!
//! # Weights in `f32`
//!
//! The reference keeps `f64` weights. Here each weight is stored as an
//! `f32`: sums, the softmax and the learning step are computed in `f64` as
//! in the reference, and only the stored result of each step is rounded to
//! the nearest `f32`. The weight table is most of a model's memory (11 of
//! 18 MB of a `default` model after 450 samples) and the largest stream of
//! memory a cache-cold step reads, so halving it matters more for a server
//! holding a thousand models than the digits beyond the seventh (test
//! `f32_weights_follow_the_f64_reference_closely`).
//!
//! # Sparse weight table
//!
//! The reference keeps a dense `input_bits × categories` table. With 65,536
//! cells and ~150 buckets that is 78 MB a model, so here only bits that have
//! been active in a learned pattern own a row: `row_of_bit[bit]` is the row's
//! slot (or [`NO_ROW`]), and the rows lie one after another in one flat `f64`
//! vector, in the order the bits were first seen. A bit without a row has
//! only zero weights in the dense table (weights change only for active
//! bits), and adding `+0.0` to the sums changes nothing, so the results are
//! bit-identical to the dense table.
//!
//! Rows are `stride` weights apart, `stride ≥ num_categories` and a multiple
//! of [`STRIDE_STEP`]; the weights past `num_categories` are 0 and never
//! read. When a category index beyond the stride arrives, the rows are
//! re-laid in place with a longer stride. Re-laying moves the whole table,
//! so growing the stride a step at a time (rather than one category at a
//! time) cuts the copying by that factor while wasting at most
//! `STRIDE_STEP - 1` weights per row.
//!
//! The distribution is written into a buffer owned by the classifier, so
//! neither inference nor learning allocates once the table has its shape.

use serde::{Deserialize, Serialize};

use super::prefetch;

/// `row_of_bit` entry of an input bit that has no weights yet.
pub const NO_ROW: u32 = u32::MAX;

/// Row strides are multiples of this many weights (32 bytes).
pub const STRIDE_STEP: usize = 8;

/// One-horizon SDR classifier (`htm-reference.md` §6.1).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Classifier {
    /// Learning rate.
    alpha: f64,
    /// Length of the category axis: 1 + the largest category learned.
    num_categories: usize,
    /// Distance between rows in `weights`: `num_categories` rounded up to a
    /// multiple of [`STRIDE_STEP`] (0 before the first category).
    stride: usize,
    /// Row slot of each input bit, [`NO_ROW`] if the bit has never been
    /// active in a learned pattern. Only as long as the largest such bit.
    row_of_bit: Vec<u32>,
    /// Rows of `stride` weights each, slot after slot.
    weights: Vec<f32>,
    /// The last distribution computed by [`Classifier::infer`].
    #[serde(skip)]
    pdf: Vec<f64>,
    /// Scratch for the prediction error while learning.
    #[serde(skip)]
    scratch: Vec<f64>,
}

impl Classifier {
    /// An untrained classifier with learning rate `alpha` (the reference
    /// default is 0.001; hotgym uses 0.1, NuPIC's NAB configuration 0.0358).
    /// `alpha` is not validated here; [`crate::htm::predictor::Predictor`]
    /// checks it.
    pub fn new(alpha: f64) -> Self {
        Self {
            alpha,
            num_categories: 0,
            stride: 0,
            row_of_bit: Vec::new(),
            weights: Vec::new(),
            pdf: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// The probability of each category given the active bits `pattern`
    /// (one entry per category, summing to 1); empty if never trained.
    /// Bits never seen in training contribute nothing.
    pub fn infer(&mut self, pattern: &[u32]) -> &[f64] {
        let mut pdf = std::mem::take(&mut self.pdf);
        self.infer_into(pattern, &mut pdf);
        self.pdf = pdf;
        &self.pdf
    }

    /// The distribution computed by the last [`Classifier::infer`] (empty
    /// before the first one, and after deserialization).
    pub fn last_pdf(&self) -> &[f64] {
        &self.pdf
    }

    /// Learn that `pattern` goes with `categories` (each gets the target
    /// probability `1/categories.len()`; a category listed twice is counted
    /// once but still divides by the full length, as in the reference).
    /// An empty `categories` teaches nothing and is ignored.
    pub fn learn(&mut self, pattern: &[u32], categories: &[u32]) {
        let Some(&max_category) = categories.iter().max() else {
            return;
        };
        let needed = max_category as usize + 1;
        if needed > self.num_categories {
            self.grow_categories(needed);
        }
        for &bit in pattern {
            self.ensure_row(bit);
        }

        // error = target - pdf, computed in place over the pdf.
        let mut error = std::mem::take(&mut self.scratch);
        self.infer_into(pattern, &mut error);
        for e in error.iter_mut() {
            *e = 0.0 - *e;
        }
        let share = 1.0 / categories.len() as f64;
        for (i, &category) in categories.iter().enumerate() {
            if !categories[..i].contains(&category) {
                let e = &mut error[category as usize];
                *e += share;
            }
        }

        // The same product for every row: compute it once.
        for e in error.iter_mut() {
            *e *= self.alpha;
        }
        let (n, stride) = (self.num_categories, self.stride);
        for &bit in pattern {
            let row = self.row_of_bit[bit as usize] as usize;
            add_into_weights(&mut self.weights[row * stride..row * stride + n], &error);
        }
        self.scratch = error;
    }

    /// Number of categories the distribution covers (0 if never trained).
    pub fn num_categories(&self) -> usize {
        self.num_categories
    }

    /// Number of input bits that own a weight row.
    pub fn num_rows(&self) -> usize {
        self.weights.len().checked_div(self.stride).unwrap_or(0)
    }

    /// The learning rate.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Approximate memory held, in bytes.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.row_of_bit.capacity() * std::mem::size_of::<u32>()
            + self.weights.capacity() * std::mem::size_of::<f32>()
            + (self.pdf.capacity() + self.scratch.capacity()) * std::mem::size_of::<f64>()
    }

    /// Weighted sums of the active bits, then softmax, into `out`.
    fn infer_into(&self, pattern: &[u32], out: &mut Vec<f64>) {
        out.clear();
        let (n, stride) = (self.num_categories, self.stride);
        if n == 0 {
            return;
        }
        out.resize(n, 0.0);
        for (i, &bit) in pattern.iter().enumerate() {
            // Two stages ahead, as in `Connections::compute_activity`: a
            // bit's row index, then its row's first line (the hardware
            // prefetcher streams the rest; prefetching every line of a
            // 200-bucket row cost more in cache than it saved out of it).
            if let Some(&ahead) = pattern.get(i + 8) {
                if let Some(row) = self.row_of_bit.get(ahead as usize) {
                    prefetch::item(row);
                }
            }
            if let Some(&ahead) = pattern.get(i + 4) {
                match self.row_of_bit.get(ahead as usize) {
                    Some(&row) if row != NO_ROW => {
                        prefetch::item(&self.weights[row as usize * stride]);
                    }
                    _ => {}
                }
            }
            match self.row_of_bit.get(bit as usize) {
                Some(&row) if row != NO_ROW => {
                    let start = row as usize * stride;
                    add_weights_into(out, &self.weights[start..start + n]);
                }
                _ => {}
            }
        }
        softmax(out);
    }

    /// Give `bit` a zero row if it has none.
    fn ensure_row(&mut self, bit: u32) {
        let index = bit as usize;
        if index >= self.row_of_bit.len() {
            self.row_of_bit
                .reserve_exact(index + 1 - self.row_of_bit.len());
            self.row_of_bit.resize(index + 1, NO_ROW);
        }
        if self.row_of_bit[index] == NO_ROW {
            let n = self.stride;
            let slot = self.weights.len() / n;
            self.row_of_bit[index] = u32::try_from(slot).expect("fewer rows than u32 bits");
            if self.weights.capacity() - self.weights.len() < n {
                // Grow by an eighth (at least 16 rows) rather than doubling:
                // this table is most of a model's predictor memory.
                let extra = (self.weights.len() / 8).max(16 * n);
                self.weights.reserve_exact(extra);
            }
            self.weights.resize(self.weights.len() + n, 0.0);
        }
    }

    /// Extend the category axis to `categories` (new weights 0). Within the
    /// stride nothing moves; beyond it every row is re-laid in place with
    /// the stride rounded up to the next multiple of [`STRIDE_STEP`], from
    /// the last row down so no row is overwritten before it has moved.
    fn grow_categories(&mut self, categories: usize) {
        self.num_categories = categories;
        if categories <= self.stride {
            return;
        }
        let old = self.stride;
        let new = categories.div_ceil(STRIDE_STEP) * STRIDE_STEP;
        let rows = self.num_rows();
        // Exact: a doubling here would leave up to half the table unused.
        self.weights
            .reserve_exact((rows * new).saturating_sub(self.weights.len()));
        self.weights.resize(rows * new, 0.0);
        if old > 0 {
            for row in (0..rows).rev() {
                self.weights
                    .copy_within(row * old..(row + 1) * old, row * new);
                self.weights[row * new + old..(row + 1) * new].fill(0.0);
            }
        }
        self.stride = new;
    }
}

/// `sums[k] += row[k]` for every `k < sums.len()` (`row` must be at least
/// as long): a row of weights into the sums, each weight widened to `f64`.
///
/// Four lanes at a time with AVX2 when the running CPU has it (checked at
/// run time, so the binary still runs on any x86-64), else portable code;
/// each entry is the same widening and single `f64` addition either way, so
/// the results are the same bits. The rows are the classifier's largest
/// memory stream, and the wider lanes cut the instructions that walk them.
#[inline]
fn add_weights_into(sums: &mut [f64], row: &[f32]) {
    let row = &row[..sums.len()];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was just detected on the running CPU, which is the
            // only requirement of the call.
            unsafe { add_weights_into_avx2(sums, row) };
            return;
        }
    }
    add_weights_into_portable(sums, row);
}

#[inline(always)]
fn add_weights_into_portable(sums: &mut [f64], row: &[f32]) {
    for (s, &w) in sums.iter_mut().zip(row) {
        *s += f64::from(w);
    }
}

/// [`add_weights_into_portable`] compiled with AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn add_weights_into_avx2(sums: &mut [f64], row: &[f32]) {
    add_weights_into_portable(sums, row);
}

/// One learning step on a row: `row[k] = f32(f64(row[k]) + step[k])` for
/// every `k < row.len()` (`step` must be at least as long), with AVX2 when
/// the running CPU has it, as in [`add_weights_into`].
#[inline]
fn add_into_weights(row: &mut [f32], step: &[f64]) {
    let step = &step[..row.len()];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was just detected on the running CPU, which is the
            // only requirement of the call.
            unsafe { add_into_weights_avx2(row, step) };
            return;
        }
    }
    add_into_weights_portable(row, step);
}

#[inline(always)]
fn add_into_weights_portable(row: &mut [f32], step: &[f64]) {
    for (w, &d) in row.iter_mut().zip(step) {
        *w = (f64::from(*w) + d) as f32;
    }
}

/// [`add_into_weights_portable`] compiled with AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn add_into_weights_avx2(row: &mut [f32], step: &[f64]) {
    add_into_weights_portable(row, step);
}

/// Softmax in place: `v[k] = exp(v[k] - max) / Σ exp(v[j] - max)`.
///
/// Subtracting the maximum keeps `exp` from overflowing for large inputs.
/// If the maximum is `+∞` the infinite entries share the probability
/// equally; if every entry is `-∞` the result is uniform. Never produces NaN
/// from non-NaN input.
pub fn softmax(values: &mut [f64]) {
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::INFINITY {
        for v in values.iter_mut() {
            *v = if *v == f64::INFINITY { 1.0 } else { 0.0 };
        }
    } else if max == f64::NEG_INFINITY {
        values.fill(1.0);
    } else {
        for v in values.iter_mut() {
            *v = (*v - max).exp();
        }
    }
    let sum: f64 = values.iter().sum();
    for v in values.iter_mut() {
        *v /= sum;
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

    /// §6.1 as written: a dense `bits × categories` table of `f64`
    /// weights, optionally rounded to `f32` after each learning step as
    /// [`Classifier`] stores them.
    struct DenseClassifier {
        alpha: f64,
        weights: Vec<Vec<f64>>,
        categories: usize,
        round_to_f32: bool,
    }

    impl DenseClassifier {
        /// Rounding to `f32` as the classifier does.
        fn new(alpha: f64, bits: usize) -> Self {
            Self {
                alpha,
                weights: vec![Vec::new(); bits],
                categories: 0,
                round_to_f32: true,
            }
        }

        /// The reference's `f64` weights.
        fn new_f64(alpha: f64, bits: usize) -> Self {
            Self {
                round_to_f32: false,
                ..Self::new(alpha, bits)
            }
        }

        fn infer(&self, pattern: &[u32]) -> Vec<f64> {
            if self.categories == 0 {
                return Vec::new();
            }
            let mut s = vec![0.0; self.categories];
            for &bit in pattern {
                for (k, s) in s.iter_mut().enumerate() {
                    *s += self.weights[bit as usize][k];
                }
            }
            softmax(&mut s);
            s
        }

        fn learn(&mut self, pattern: &[u32], categories: &[u32]) {
            let needed = *categories.iter().max().unwrap() as usize + 1;
            if needed > self.categories {
                self.categories = needed;
                for row in &mut self.weights {
                    row.resize(needed, 0.0);
                }
            }
            let pdf = self.infer(pattern);
            let mut target = vec![0.0; self.categories];
            for &c in categories {
                target[c as usize] = 1.0 / categories.len() as f64;
            }
            for &bit in pattern {
                for k in 0..self.categories {
                    let w = &mut self.weights[bit as usize][k];
                    *w += self.alpha * (target[k] - pdf[k]);
                    if self.round_to_f32 {
                        *w = f64::from(*w as f32);
                    }
                }
            }
        }
    }

    #[test]
    fn untrained_classifier_infers_nothing() {
        let mut c = Classifier::new(0.1);
        assert!(c.infer(&[1, 2, 3]).is_empty());
        c.learn(&[1, 2, 3], &[]);
        assert!(c.infer(&[1, 2, 3]).is_empty());
        assert_eq!(c.num_categories(), 0);
    }

    #[test]
    fn single_value_learned_ten_times_predicts_its_bucket() {
        let mut c = Classifier::new(0.1);
        let pattern = [1, 5, 9];
        for _ in 0..10 {
            c.learn(&pattern, &[4]);
        }
        let pdf = c.infer(&pattern).to_vec();
        assert_eq!(pdf.len(), 5);
        assert_eq!(argmax(&pdf), 4);
        assert!(pdf[4] > 0.5, "{pdf:?}");
        // The other buckets were never targets: they stay equally likely.
        assert!(pdf[..4].iter().all(|&p| p == pdf[0]));
        // More training makes the prediction more confident.
        for _ in 0..10 {
            c.learn(&pattern, &[4]);
        }
        assert!(c.infer(&pattern)[4] > pdf[4]);
    }

    #[test]
    fn multiple_categories_share_the_probability() {
        let mut c = Classifier::new(0.1);
        let pattern = [1, 5, 9];
        for _ in 0..1000 {
            c.learn(&pattern, &[1, 3]);
        }
        let pdf = c.infer(&pattern).to_vec();
        assert_eq!(pdf.len(), 4);
        assert!((pdf[1] - 0.5).abs() < 0.01, "{pdf:?}");
        assert!((pdf[3] - 0.5).abs() < 0.01, "{pdf:?}");
        assert!(pdf[0] < 0.01 && pdf[2] < 0.01);
    }

    #[test]
    fn compute_complex_mixed_patterns_and_buckets() {
        // Three overlapping patterns with their own buckets, interleaved.
        let mut c = Classifier::new(0.1);
        let a = [1, 5, 9];
        let b = [0, 6, 9, 11];
        let d = [6, 9, 20];
        for _ in 0..100 {
            c.learn(&a, &[4]);
            c.learn(&b, &[5]);
            c.learn(&d, &[2, 5]);
        }
        assert_eq!(c.num_categories(), 6);
        assert_eq!(argmax(c.infer(&a)), 4);
        assert_eq!(argmax(c.infer(&b)), 5);
        let pd = c.infer(&d).to_vec();
        assert!(pd[2] > 0.3 && pd[5] > 0.3, "{pd:?}");
        assert!(pd[4] < 0.1);
        // Unseen bits alone carry no information: uniform distribution.
        let unseen = c.infer(&[100, 200]).to_vec();
        for p in unseen {
            assert!((p - 1.0 / 6.0).abs() < 1e-15);
        }
        assert_eq!(c.num_rows(), 7);
    }

    #[test]
    fn softmax_is_correct() {
        let mut v = [0.0, 1.0, 2.0];
        softmax(&mut v);
        let e = [1.0, 1f64.exp(), 2f64.exp()];
        let total: f64 = e.iter().sum();
        for (got, e) in v.iter().zip(e) {
            assert!((got - e / total).abs() < 1e-15);
        }
        let mut empty: [f64; 0] = [];
        softmax(&mut empty);
    }

    #[test]
    fn softmax_survives_huge_and_infinite_inputs() {
        let mut v = [f64::MAX];
        softmax(&mut v);
        assert_eq!(v, [1.0]);
        let mut v = [f64::MAX, f64::MAX, 0.0];
        softmax(&mut v);
        assert_eq!(v, [0.5, 0.5, 0.0]);
        let mut v = [1e308, -1e308];
        softmax(&mut v);
        assert_eq!(v, [1.0, 0.0]);
        let mut v = [f64::INFINITY, 3.0];
        softmax(&mut v);
        assert_eq!(v, [1.0, 0.0]);
        let mut v = [f64::NEG_INFINITY; 4];
        softmax(&mut v);
        assert_eq!(v, [0.25; 4]);
    }

    #[test]
    fn huge_weights_give_no_nan() {
        let mut c = Classifier::new(0.1);
        c.learn(&[1, 2], &[0, 1]);
        c.weights.fill(f32::MAX);
        c.weights[0] = -f32::MAX;
        let pdf = c.infer(&[1, 2]);
        assert!(pdf.iter().all(|p| p.is_finite() && *p >= 0.0), "{pdf:?}");
        assert_eq!(argmax(pdf), 1);
    }

    #[test]
    fn weights_are_stored_only_for_active_bits() {
        let mut c = Classifier::new(0.1);
        c.learn(&[65_535, 7, 30_000], &[149]);
        assert_eq!(c.num_rows(), 3);
        assert_eq!(c.num_categories(), 150);
        // Dense would be 65,536 × 150 × 8 bytes; this is the slot index plus
        // a few rows of 4-byte weights.
        assert!(c.memory_bytes() < 65_536 * 4 + 20 * 150 * 4 + 4096);
    }

    #[test]
    fn growing_categories_keeps_learned_weights() {
        let mut sparse = Classifier::new(0.2);
        let mut dense = DenseClassifier::new(0.2, 64);
        let steps: [(&[u32], &[u32]); 5] = [
            (&[3, 9], &[1]),
            (&[9, 40], &[0]),
            (&[3, 41], &[7]),
            (&[1, 3, 9], &[2, 12]),
            (&[40], &[5]),
        ];
        for (pattern, categories) in steps {
            sparse.learn(pattern, categories);
            dense.learn(pattern, categories);
        }
        for pattern in [&[3u32, 9][..], &[40], &[1, 41], &[63]] {
            assert_eq!(sparse.infer(pattern), dense.infer(pattern).as_slice());
        }
    }

    #[test]
    fn serde_round_trip_keeps_the_model() {
        let mut c = Classifier::new(0.1);
        c.learn(&[1, 2, 3], &[2]);
        c.learn(&[3, 4], &[0]);
        let json = serde_json::to_string(&c).unwrap();
        let mut back: Classifier = serde_json::from_str(&json).unwrap();
        assert!(back.last_pdf().is_empty());
        let expected = c.infer(&[1, 4]).to_vec();
        let got = back.infer(&[1, 4]);
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() < 1e-15);
        }
    }

    fn random_pattern(rng: &mut Random, bits: u32) -> Vec<u32> {
        let mut pattern: Vec<u32> = (0..rng.next_u32_below(6) + 1)
            .map(|_| rng.next_u32_below(bits))
            .collect();
        pattern.sort_unstable();
        pattern.dedup();
        pattern
    }

    proptest! {
        #[test]
        fn sparse_table_equals_dense_reference(seed in any::<u32>(), alpha in 0.001f64..1.0) {
            let mut rng = Random::new(seed);
            let mut sparse = Classifier::new(alpha);
            let mut dense = DenseClassifier::new(alpha, 50);
            for _ in 0..60 {
                let pattern = random_pattern(&mut rng, 50);
                let categories: Vec<u32> =
                    (0..rng.next_u32_below(2) + 1).map(|_| rng.next_u32_below(12)).collect();
                let expected = dense.infer(&pattern);
                prop_assert_eq!(sparse.infer(&pattern), expected.as_slice());
                sparse.learn(&pattern, &categories);
                dense.learn(&pattern, &categories);
            }
        }

        #[test]
        fn f32_weights_follow_the_f64_reference_closely(seed in any::<u32>(), alpha in 0.01f64..0.5) {
            let mut rng = Random::new(seed);
            let mut c = Classifier::new(alpha);
            let mut reference = DenseClassifier::new_f64(alpha, 50);
            for _ in 0..300 {
                let pattern = random_pattern(&mut rng, 50);
                let category = rng.next_u32_below(12);
                let expected = reference.infer(&pattern);
                let got = c.infer(&pattern);
                prop_assert_eq!(got.len(), expected.len());
                for (g, e) in got.iter().zip(&expected) {
                    prop_assert!((g - e).abs() < 1e-5, "{} vs {}", g, e);
                }
                c.learn(&pattern, &[category]);
                reference.learn(&pattern, &[category]);
            }
        }

        #[test]
        fn pdf_is_a_distribution(seed in any::<u32>(), alpha in 0.001f64..2.0) {
            let mut rng = Random::new(seed);
            let mut c = Classifier::new(alpha);
            for _ in 0..100 {
                let pattern = random_pattern(&mut rng, 200);
                let category = rng.next_u32_below(30);
                c.learn(&pattern, &[category]);
                let pdf = c.infer(&random_pattern(&mut rng, 200));
                let sum: f64 = pdf.iter().sum();
                prop_assert!((sum - 1.0).abs() <= 1e-9, "sum {}", sum);
                prop_assert!(pdf.iter().all(|p| *p >= 0.0));
            }
        }
    }
}
