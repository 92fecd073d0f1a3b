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

/// Why [`encode_to_writer`] or [`decode_from_reader`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The writer or reader failed (a full disk, a bad sector); kept whole
    /// so the caller can tell its kind.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The value cannot be encoded, or the bytes do not decode.
    #[error("{0}")]
    Value(String),
}

/// Encode `value` into `out` as it is produced, without building the
/// encoding in memory first. bincode writes field by field, so `out` should
/// be buffered.
pub fn encode_to_writer<T: Serialize + ?Sized>(
    value: &T,
    out: &mut impl std::io::Write,
) -> Result<(), StreamError> {
    match bincode::serde::encode_into_std_write(value, out, standard()) {
        Ok(_) => Ok(()),
        Err(bincode::error::EncodeError::Io { inner, .. }) => Err(StreamError::Io(inner)),
        Err(e) => Err(StreamError::Value(e.to_string())),
    }
}

/// Call `$decode($input, config)` with the standard configuration limited
/// to the smallest rung of a ladder of powers of two that is at least
/// `$need` bytes (bincode's limit is a const generic, hence the ladder).
macro_rules! with_limit {
    ($need:expr, $decode:path, $input:expr) => {
        with_limit!(@rungs $need, $decode, $input; 12 14 16 18 20 22 24 26 28 30 32 34 36 38 40 42 44)
    };
    (@rungs $need:expr, $decode:path, $input:expr; $($bits:literal)*) => {{
        let need: usize = $need;
        $(
            if need <= 1usize << $bits {
                $decode($input, standard().with_limit::<{ 1usize << $bits }>())
            } else
        )*
        {
            $decode($input, standard().with_limit::<{ usize::MAX }>())
        }
    }};
}

/// Decode one value that must take all of `bytes`, allocating at most about
/// [`CLAIM_FACTOR`] times `bytes.len()` (rounded up to a power of two, at
/// least 4 KiB) whatever the bytes say.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let need = bytes.len().saturating_mul(CLAIM_FACTOR);
    let (value, used) =
        with_limit!(need, bincode::serde::decode_from_slice, bytes).map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err(format!("{used} of {} bytes used", bytes.len()));
    }
    Ok(value)
}

/// Decode one value from the next `len` bytes of `reader`, which must take
/// all of them, with the same allocation bound as [`decode`]. Reading
/// stops after `len` bytes whatever the value claims; a value that claims
/// more is a [`StreamError::Value`], a failing reader a [`StreamError::Io`].
pub fn decode_from_reader<T: DeserializeOwned>(
    reader: impl std::io::Read,
    len: u64,
) -> Result<T, StreamError> {
    let mut reader = reader.take(len);
    let need = usize::try_from(len)
        .unwrap_or(usize::MAX)
        .saturating_mul(CLAIM_FACTOR);
    let value = match with_limit!(need, bincode::serde::decode_from_std_read, &mut reader) {
        Ok(value) => value,
        Err(bincode::error::DecodeError::Io { inner, .. })
            if inner.kind() != std::io::ErrorKind::UnexpectedEof =>
        {
            return Err(StreamError::Io(inner))
        }
        Err(e) => return Err(StreamError::Value(e.to_string())),
    };
    let unused = std::io::copy(&mut reader, &mut std::io::sink())?;
    if unused != 0 {
        return Err(StreamError::Value(format!(
            "{} of {len} bytes used",
            len - unused
        )));
    }
    Ok(value)
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
        let len = bytes.len() as u64;
        match decode_from_reader::<String>(&bytes[..], len) {
            Err(StreamError::Value(e)) => assert!(e.contains("imit"), "{e}"),
            other => panic!("{other:?}"),
        }
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
        match decode_from_reader::<u32>(&bytes[..], 2) {
            Err(StreamError::Value(e)) => assert!(e.contains("1 of 2"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_reader_is_read_no_further_than_its_length() {
        let mut bytes = Vec::new();
        encode_into(&(5u32, 6u32), &mut bytes).unwrap();
        let mut reader = &bytes[..];
        // The value claims two fields, the length allows one.
        assert!(matches!(
            decode_from_reader::<(u32, u32)>(&mut reader, 1),
            Err(StreamError::Value(_))
        ));
        assert_eq!(reader.len(), bytes.len() - 1);
        let mut reader = &bytes[..];
        assert_eq!(
            decode_from_reader::<(u32, u32)>(&mut reader, 2).unwrap(),
            (5, 6)
        );
    }
}
