//! Dense permanence rows: the Spatial Pooler's per-column Hebbian update and
//! connected-bit extraction, vectorized.
//!
//! A column's permanences are stored densely, one `f32` per input bit (64
//! per word of its potential-pool bit row); only entries whose pool bit is
//! set are synapses. The other entries are padding that is never read: an
//! update moves them like the rest (they stay in `[0, 1]`), and the
//! connected bits are masked with the pool. Updating a row is then one
//! straight pass with no data-dependent branches and no per-lane selection:
//!
//! ```text
//! for every input i:  perm[i] = clamp(perm[i] + delta[i], 0, 1)
//! connected bit i   = pooled(i) && perm[i] >= threshold
//! ```
//!
//! where `delta` is the same for every column of a learning step (`+inc` on
//! active inputs, `-dec` elsewhere), or a constant for a bump. Eight lanes at
//! a time with AVX2 when the running CPU has it (checked at run time, so the
//! binary still runs on any x86-64), else a scalar loop; both compute each
//! entry with the same single f32 addition and clamp, so the results are the
//! same bits either way (tests below compare them).
//!
//! This is what made the Spatial Pooler's learning cheap: walking a compact
//! synapse list bit by bit cost about a quarter of a model step. Updating
//! the padding too, instead of blending it back per 8 lanes, halved the
//! instructions of the pass again.

/// Lanes per pool word: a row of `w` words holds `64 * w` permanences.
pub const LANES_PER_WORD: usize = 64;

/// Apply `perm = clamp(perm + delta, 0, 1)` to every entry of one row (the
/// entries outside the pool are padding, see the module doc) and write its
/// connected bits (`pooled && perm >= threshold`) into `connected`; returns
/// how many are connected.
///
/// # Panics
/// If `perms` or `delta` is not `64 * pool.len()` long, or `connected` is
/// not `pool.len()` long.
pub fn update_row(
    perms: &mut [f32],
    delta: &[f32],
    pool: &[u64],
    threshold: f32,
    connected: &mut [u64],
) -> u32 {
    let lanes = LANES_PER_WORD * pool.len();
    assert!(
        perms.len() == lanes && delta.len() == lanes && connected.len() == pool.len(),
        "dense row slices disagree in length"
    );
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was just detected on the running CPU, and the
            // lengths the kernel's unchecked loads and stores rely on were
            // asserted above.
            return unsafe { update_row_avx2(perms, delta, pool, threshold, connected) };
        }
    }
    update_row_portable(perms, delta, pool, threshold, connected)
}

/// [`update_row`] one entry at a time.
fn update_row_portable(
    perms: &mut [f32],
    delta: &[f32],
    pool: &[u64],
    threshold: f32,
    connected: &mut [u64],
) -> u32 {
    let mut count = 0;
    for (((&pooled, conn), perms), delta) in pool
        .iter()
        .zip(connected.iter_mut())
        .zip(perms.chunks_exact_mut(LANES_PER_WORD))
        .zip(delta.chunks_exact(LANES_PER_WORD))
    {
        let mut bits = 0u64;
        for (j, (perm, &step)) in perms.iter_mut().zip(delta).enumerate() {
            *perm = (*perm + step).clamp(0.0, 1.0);
            bits |= u64::from(*perm >= threshold) << j;
        }
        *conn = bits & pooled;
        count += conn.count_ones();
    }
    count
}

/// [`update_row`] eight lanes at a time.
///
/// Per lane this is `min(max(perm + delta, 0), 1)`, which equals
/// `f32::clamp(perm + delta, 0.0, 1.0)` for every sum a pooler produces
/// (finite, and never `-0.0`: a sum is `-0.0` only when both terms are).
///
/// # Safety
/// The CPU must support AVX2; `perms` and `delta` must hold
/// `64 * pool.len()` entries and `connected` `pool.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn update_row_avx2(
    perms: &mut [f32],
    delta: &[f32],
    pool: &[u64],
    threshold: f32,
    connected: &mut [u64],
) -> u32 {
    use std::arch::x86_64::{
        _mm256_add_ps, _mm256_cmp_ps, _mm256_loadu_ps, _mm256_max_ps, _mm256_min_ps,
        _mm256_movemask_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps, _CMP_GE_OQ,
    };
    let zero = _mm256_setzero_ps();
    let one = _mm256_set1_ps(1.0);
    let threshold = _mm256_set1_ps(threshold);
    let mut count = 0;
    for (w, (&pooled, conn)) in pool.iter().zip(connected.iter_mut()).enumerate() {
        let mut bits = 0u64;
        for group in 0..8 {
            let at = w * LANES_PER_WORD + 8 * group;
            // SAFETY: `at + 8 <= 64 * pool.len()`, the length of both
            // slices (the caller's contract).
            let (perm, step) = unsafe {
                (
                    _mm256_loadu_ps(perms.as_ptr().add(at)),
                    _mm256_loadu_ps(delta.as_ptr().add(at)),
                )
            };
            let moved = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(perm, step), zero), one);
            // SAFETY: as for the loads.
            unsafe { _mm256_storeu_ps(perms.as_mut_ptr().add(at), moved) };
            let above = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(moved, threshold));
            bits |= u64::from(above as u8) << (8 * group);
        }
        bits &= pooled;
        *conn = bits;
        count += bits.count_ones();
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::htm::random::Random;

    /// A random row: `words` pool words of the given density, permanences
    /// spread over and around [0, 1] edges, deltas mixing the two signs.
    fn random_row(words: usize, seed: u32) -> (Vec<f32>, Vec<f32>, Vec<u64>) {
        let mut rng = Random::new(seed);
        let lanes = LANES_PER_WORD * words;
        let edges = [0.0f32, 1.0, 0.2, 0.2 - 1e-6, 0.999_9, 0.000_1];
        let perms = (0..lanes)
            .map(|_| {
                if rng.next_u32() % 4 == 0 {
                    edges[rng.next_u32_below(edges.len() as u32) as usize]
                } else {
                    rng.real_range(0.0, 1.0)
                }
            })
            .collect();
        let delta = (0..lanes)
            .map(|_| match rng.next_u32() % 3 {
                0 => 0.003,
                1 => -0.0005,
                _ => rng.real_range(-0.3, 0.3),
            })
            .collect();
        let pool = (0..words)
            .map(|_| u64::from(rng.next_u32()) << 32 | u64::from(rng.next_u32()))
            .collect();
        (perms, delta, pool)
    }

    #[test]
    fn entries_move_and_clamp_and_only_pooled_ones_connect() {
        let pool = [0b1011u64];
        let mut perms = vec![0.5f32; 64];
        perms[0] = 0.999;
        perms[1] = 0.001;
        perms[2] = 0.3;
        perms[3] = 0.2;
        let mut delta = vec![-0.01f32; 64];
        delta[0] = 0.01;
        let mut connected = [0u64];
        let count = update_row(&mut perms, &delta, &pool, 0.2, &mut connected);
        assert_eq!(perms[0], 1.0, "clamped at 1");
        assert_eq!(perms[1], 0.0, "clamped at 0");
        assert_eq!(perms[3], 0.2 - 0.01);
        // Entry 2 and 4.. are padding: they move and clamp too, but 2 (0.29)
        // and the others (0.49) are not reported connected.
        assert!(perms.iter().all(|p| (0.0..=1.0).contains(p)));
        assert_eq!(connected[0], 0b0001, "only entry 0 is pooled and >= 0.2");
        assert_eq!(count, 1);
    }

    #[test]
    fn vector_and_scalar_kernels_agree_bit_for_bit() {
        for seed in 1..200 {
            let words = 1 + seed as usize % 9;
            let (perms, delta, pool) = random_row(words, seed);
            let threshold = 0.2 - 1e-6;
            let (mut a, mut b) = (perms.clone(), perms);
            let (mut conn_a, mut conn_b) = (vec![0; words], vec![0; words]);
            let count_a = update_row(&mut a, &delta, &pool, threshold, &mut conn_a);
            let count_b = update_row_portable(&mut b, &delta, &pool, threshold, &mut conn_b);
            let bits = |v: &[f32]| v.iter().map(|p| p.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "seed {seed}");
            assert_eq!(conn_a, conn_b, "seed {seed}");
            assert_eq!(count_a, count_b);
            assert_eq!(count_a, conn_a.iter().map(|w| w.count_ones()).sum::<u32>());
        }
    }

    #[test]
    #[should_panic(expected = "disagree in length")]
    fn mismatched_lengths_are_refused() {
        let mut perms = vec![0.0f32; 63];
        update_row(&mut perms, &[0.0; 64], &[1], 0.5, &mut [0]);
    }
}
