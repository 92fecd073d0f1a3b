//! MurmurHash3, x86 32-bit variant (Austin Appleby's SMHasher).
//!
//! The RDSE ([`super::rdse`]) turns every bucket key into an output bit with
//! this hash, so the exact algorithm is part of the encoder's output: a
//! different hash would give different (equally good, but not
//! htm.core-compatible) encodings. See htm-reference.md §1.1 for how the RDSE
//! uses it and §11 for the reference outputs; the function below is the
//! general form (any input length), which for a 4-byte key reduces to the
//! one-block case spelled out in §1.1.

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

/// Scrambles one 32-bit block before it is mixed into the state.
#[inline]
fn scramble(block: u32) -> u32 {
    block.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2)
}

/// The finalizer: forces every input bit to affect every output bit.
#[inline]
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// MurmurHash3 x86_32 of a byte slice (general, any length), standard
/// SMHasher algorithm. Blocks are read little-endian, so the result is the
/// same on every platform.
pub fn murmur3_x86_32(data: &[u8], seed: u32) -> u32 {
    let mut h = seed;
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        h ^= scramble(k);
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    // The 1–3 trailing bytes form one partial little-endian block that is
    // scrambled but not followed by the rotate/multiply step.
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let k = tail
            .iter()
            .rev()
            .fold(0u32, |acc, &byte| (acc << 8) | u32::from(byte));
        h ^= scramble(k);
    }
    // The reference algorithm mixes in the length modulo 2^32.
    h ^= data.len() as u32;
    fmix32(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published SMHasher / MurmurHash3 x86_32 vectors.
    #[test]
    fn published_vectors() {
        let cases: &[(&[u8], u32, u32)] = &[
            (b"", 0, 0),
            (b"", 1, 0x514e_28b7),
            (b"", 0xffff_ffff, 0x81f1_6f39),
            (&[0xff, 0xff, 0xff, 0xff], 0, 0x7629_3b50),
            (&[0x21, 0x43, 0x65, 0x87], 0, 0xf55b_516b),
            (&[0x21, 0x43, 0x65, 0x87], 0x5082_edee, 0x2362_f9de),
            (&[0x21, 0x43, 0x65], 0, 0x7e4a_8634),
            (&[0x21, 0x43], 0, 0xa0f7_b07a),
            (&[0x21], 0, 0x7266_1cf4),
            (&[0, 0, 0, 0], 0, 0x2362_f9de),
            (&[0, 0, 0], 0, 0x85f0_b427),
            (&[0, 0], 0, 0x30f4_c306),
            (&[0], 0, 0x514e_28b7),
            (b"Hello, world!", 1234, 0xfaf6_cdb3),
            (b"Hello, world!", 0x9747_b28c, 0x2488_4cba),
            (b"aaaa", 0x9747_b28c, 0x5a97_808a),
            (b"aaa", 0x9747_b28c, 0x283e_0130),
            (b"aa", 0x9747_b28c, 0x5d21_1726),
            (b"a", 0x9747_b28c, 0x7fa0_9ea6),
            (b"abcd", 0x9747_b28c, 0xf047_8627),
            (b"abc", 0x9747_b28c, 0xc84a_62dd),
            (b"ab", 0x9747_b28c, 0x7487_5592),
            (
                b"The quick brown fox jumps over the lazy dog",
                0x9747_b28c,
                0x2fa8_26cd,
            ),
        ];
        for &(data, seed, expected) in cases {
            assert_eq!(
                murmur3_x86_32(data, seed),
                expected,
                "input {data:?} seed {seed:#x}"
            );
        }
    }

    /// htm-reference.md §11: u32 keys as 4 little-endian bytes, seed 42.
    #[test]
    fn htm_core_key_vectors() {
        assert_eq!(murmur3_x86_32(&0u32.to_le_bytes(), 42), 933_211_791);
        assert_eq!(murmur3_x86_32(&1u32.to_le_bytes(), 42), 3_735_386_339);
    }

    /// The one-block formula of htm-reference.md §1.1, written out step by
    /// step, agrees with the general implementation.
    #[test]
    fn one_block_formula_matches_general_form() {
        for (key, seed) in [
            (0u32, 42u32),
            (7, 1),
            (0xdead_beef, 0x9747_b28c),
            (u32::MAX, 3),
        ] {
            let mut k = key.wrapping_mul(C1);
            k = k.rotate_left(15);
            k = k.wrapping_mul(C2);
            let mut h = seed ^ k;
            h = h.rotate_left(13);
            h = h.wrapping_mul(5).wrapping_add(0xe654_6b64);
            h ^= 4;
            assert_eq!(murmur3_x86_32(&key.to_le_bytes(), seed), fmix32(h));
        }
    }
}
