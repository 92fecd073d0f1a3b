//! The bincode codec shared by checkpoints and write-ahead-log records, with
//! decoding bounded by the length of the bytes being decoded.
//!
//! bincode 2 trusts length prefixes: a string or byte vector whose prefix
//! claims 2^40 bytes is allocated (zeroed) before a single byte is read, so
//! one corrupt length whose checksum happens to match — or a crafted file —
//! aborts the process on allocation failure. bincode's only guard is a byte
//! limit in its configuration, checked before every allocation and every
//! primitive read; it is a const generic, so [`decode`] picks the smallest
//! limit of a ladder of powers of two that is at least [`CLAIM_FACTOR`]
//! times the input. A valid encoding never claims more than that (a primitive
//! claims its in-memory size, at most 16 bytes, and takes at least one byte);
//! a corrupt one gets a clear `LimitExceeded` error instead of an abort, and
//! no decode allocates more than a fixed multiple of its input.
//!
//! Encoding is unaffected by the limit: files written before it decode as
//! before.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// How many bytes of claims (in-memory sizes of primitives, lengths of
/// strings) a decode may make per input byte. 16: a `u128` or `i128` is the
/// largest primitive and its varint takes at least one byte.
pub const CLAIM_FACTOR: usize = 16;

/// The configuration every encoding uses: bincode 2 standard (little-endian,
/// varint integers).
fn standard() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encode `value` after the bytes already in `out`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), String> {
    bincode::serde::encode_into_std_write(value, out, standard())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Why [`encode_to_writer`] failed.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The writer failed (a full disk, say); kept whole so the caller can
    /// tell its kind.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The value cannot be encoded.
    #[error("{0}")]
    Value(String),
}

/// Encode `value` into `out` as it is produced, without building the
/// encoding in memory first. bincode writes field by field, so `out` should
/// be buffered.
pub fn encode_to_writer<T: Serialize + ?Sized>(
    value: &T,
    out: &mut impl std::io::Write,
) -> Result<(), EncodeError> {
    match bincode::serde::encode_into_std_write(value, out, standard()) {
        Ok(_) => Ok(()),
        Err(bincode::error::EncodeError::Io { inner, .. }) => Err(EncodeError::Io(inner)),
        Err(e) => Err(EncodeError::Value(e.to_string())),
    }
}

/// Decode one value that must take all of `bytes`, allocating at most about
/// [`CLAIM_FACTOR`] times `bytes.len()` (rounded up to a power of two, at
/// least 4 KiB) whatever the bytes say.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let need = bytes.len().saturating_mul(CLAIM_FACTOR);
    let (value, used) = decode_by_limit::<T>(bytes, need).map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err(format!("{used} of {} bytes used", bytes.len()));
    }
    Ok(value)
}

/// Decode with the smallest limit of the ladder that is at least `need`.
fn decode_by_limit<T: DeserializeOwned>(
    bytes: &[u8],
    need: usize,
) -> Result<(T, usize), bincode::error::DecodeError> {
    macro_rules! ladder {
        ($($bits:literal)*) => {
            $(
                if need <= 1usize << $bits {
                    return bincode::serde::decode_from_slice(
                        bytes,
                        standard().with_limit::<{ 1usize << $bits }>(),
                    );
                }
            )*
        };
    }
    ladder!(12 14 16 18 20 22 24 26 28 30 32 34 36 38 40 42 44);
    bincode::serde::decode_from_slice(bytes, standard().with_limit::<{ usize::MAX }>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_like_the_unbounded_codec() {
        let value = (
            vec![u64::MAX, 0, 7],
            "stream".to_string(),
            u128::MAX,
            -1.5f64,
        );
        let mut bytes = Vec::new();
        encode_into(&value, &mut bytes).unwrap();
        let plain = bincode::serde::encode_to_vec(&value, standard()).unwrap();
        assert_eq!(bytes, plain);
        assert_eq!(
            decode::<(Vec<u64>, String, u128, f64)>(&bytes).unwrap(),
            value
        );
    }

    #[test]
    fn a_huge_string_length_is_an_error_not_an_allocation() {
        // varint marker 253 = u64 follows: a string of 2^60 bytes.
        let mut bytes = vec![253];
        bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
        bytes.extend_from_slice(b"abc");
        let err = decode::<String>(&bytes).unwrap_err();
        assert!(err.to_string().contains("imit"), "{err}");
        // Just under the ladder's first rung, still far beyond the input.
        let mut bytes = vec![252];
        bytes.extend_from_slice(&4000u32.to_le_bytes());
        assert!(decode::<Vec<u8>>(&bytes).is_err());
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut bytes = Vec::new();
        encode_into(&5u32, &mut bytes).unwrap();
        bytes.push(0);
        assert!(decode::<u32>(&bytes).unwrap_err().contains("1 of 2"));
    }
}
