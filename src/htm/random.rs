//! The random generator of htm.core, reproduced exactly.
//!
//! htm.core gives each Spatial Pooler and Temporal Memory its own 32-bit
//! Mersenne Twister (`std::mt19937`) and draws from it through a handful of
//! primitives. Replicating the generator *and* those primitives (plain modulo
//! for bounded integers, division by `u32::MAX` for reals, high-to-low
//! Fisher–Yates) is what makes our outputs equal htm.core's bit for bit
//! (reference: `docs/htm-reference.md`, "Conventions").
//!
//! The whole state serializes, so a checkpointed model continues with exactly
//! the draws it would have made had it never stopped.

use serde::{Deserialize, Serialize};

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// MT19937 with htm.core's draw primitives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Random {
    /// The 624-word Mersenne Twister state.
    state: Vec<u32>,
    /// Next word of `state` to temper and return; `N` means "twist first".
    index: usize,
}

impl Random {
    /// A generator seeded like `std::mt19937(seed)`.
    ///
    /// htm.core treats seed 0 as "pick a random seed"; this type does not:
    /// callers that want randomness must choose a seed themselves, so every
    /// model is reproducible.
    pub fn new(seed: u32) -> Self {
        let mut state = vec![0u32; N];
        state[0] = seed;
        for i in 1..N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Self { state, index: N }
    }

    /// Regenerate the 624 state words in place, in index order: word `i`
    /// becomes a mix of words `i`, `i + 1` and `i + M` (indices modulo
    /// `N`; those below `i` already regenerated). The three loops are the
    /// stretches where those indices do not wrap, so no modulo is needed.
    fn twist(&mut self) {
        fn mix(word: u32, next: u32, far: u32) -> u32 {
            let y = (word & UPPER_MASK) | (next & LOWER_MASK);
            far ^ (y >> 1) ^ ((y & 1).wrapping_neg() & MATRIX_A)
        }
        let mt = &mut self.state[..N];
        for i in 0..N - M {
            mt[i] = mix(mt[i], mt[i + 1], mt[i + M]);
        }
        for i in N - M..N - 1 {
            mt[i] = mix(mt[i], mt[i + 1], mt[i + M - N]);
        }
        mt[N - 1] = mix(mt[N - 1], mt[0], mt[M - 1]);
        self.index = 0;
    }

    /// The next raw 32-bit output of the twister.
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// A value in `0..n` by plain modulo (htm.core's choice; slightly biased,
    /// but it is what bit-exactness requires). `n` must be positive.
    pub fn next_u32_below(&mut self, n: u32) -> u32 {
        debug_assert!(n > 0, "next_u32_below(0)");
        self.next_u32() % n
    }

    /// A real in the closed interval `[0, 1]`.
    pub fn next_f64(&mut self) -> f64 {
        f64::from(self.next_u32()) / 4_294_967_295.0
    }

    /// A real in `[a, b]` with htm.core's mixed f32/f64 rounding.
    pub fn real_range(&mut self, a: f32, b: f32) -> f32 {
        let span = f64::from(b - a);
        a + (span * self.next_f64()) as f32
    }

    /// Fisher–Yates from the last element down, as htm.core shuffles.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.next_u32_below(i as u32 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// `k` elements of `population`: the whole copy is shuffled, the first
    /// `k` kept in shuffled order.
    pub fn sample<T: Clone>(&mut self, population: &[T], k: usize) -> Vec<T> {
        let mut copy = population.to_vec();
        self.shuffle(&mut copy);
        copy.truncate(k);
        copy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_cpp_standard_conformance_values() {
        let mut rng = Random::new(5489);
        assert_eq!(rng.next_u32(), 3_499_211_612);
        for _ in 1..9_999 {
            rng.next_u32();
        }
        assert_eq!(rng.next_u32(), 4_123_659_995);
    }

    #[test]
    fn seed_42_gives_the_reference_u32_stream() {
        let mut rng = Random::new(42);
        let got: Vec<u32> = (0..5).map(|_| rng.next_u32()).collect();
        assert_eq!(
            got,
            [
                1_608_637_542,
                3_421_126_067,
                4_083_286_876,
                787_846_414,
                3_143_890_026
            ]
        );
    }

    #[test]
    #[allow(clippy::excessive_precision)] // the reference prints 17 digits
    fn seed_42_gives_the_reference_reals() {
        let mut rng = Random::new(42);
        assert_eq!(rng.next_f64(), 0.37454011439684315);
        assert_eq!(rng.next_f64(), 0.79654298438610116);
        assert_eq!(rng.next_f64(), 0.95071431178383392);
    }

    #[test]
    fn sample_matches_the_reference() {
        let mut rng = Random::new(1);
        let population: Vec<u32> = (0..10).collect();
        assert_eq!(rng.sample(&population, 4), vec![0, 8, 2, 7]);
    }

    #[test]
    fn real_range_stays_in_bounds() {
        let mut rng = Random::new(7);
        for _ in 0..10_000 {
            let x = rng.real_range(0.1, 1.0);
            assert!((0.1..=1.0).contains(&x), "{x}");
        }
    }

    #[test]
    fn state_round_trips_through_serde() {
        let mut rng = Random::new(3);
        for _ in 0..700 {
            rng.next_u32();
        }
        let json = serde_json::to_string(&rng).unwrap();
        let mut back: Random = serde_json::from_str(&json).unwrap();
        for _ in 0..1000 {
            assert_eq!(rng.next_u32(), back.next_u32());
        }
    }
}
