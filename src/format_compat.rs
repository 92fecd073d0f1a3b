//! Reading checkpoints of an older format version into today's types.
//!
//! A checkpoint's payload is positional (bincode): a field added to a
//! serialized struct shifts every byte after it, so a file written before the
//! field existed cannot be read as today's struct. Instead of keeping a copy
//! of every old type, each added field names the format version it arrived
//! in with `#[serde(deserialize_with = ...)]`; while a payload of an older
//! version is decoded (inside [`decoding_format`]), that field reads no bytes
//! and takes the value that reproduces the old behaviour. Self-describing
//! inputs (JSON configurations) are decoded outside [`decoding_format`] and
//! read the field normally.
//!
//! A leaf module: [`crate::htm`] and [`crate::store`] both use it.

use std::cell::Cell;

use serde::{Deserialize, Deserializer};

thread_local! {
    /// The format version of the checkpoint payload being decoded on this
    /// thread, if any.
    static DECODING: Cell<Option<u32>> = const { Cell::new(None) };
}

/// Run `decode` (a synchronous decode of one payload) as a payload of
/// checkpoint format `version`.
pub fn decoding_format<R>(version: u32, decode: impl FnOnce() -> R) -> R {
    /// Restores the outer value even if `decode` panics.
    struct Restore(Option<u32>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DECODING.with(|d| d.set(self.0));
        }
    }
    let _restore = Restore(DECODING.with(|d| d.replace(Some(version))));
    decode()
}

/// Whether the payload being decoded predates format `version`.
fn older_than(version: u32) -> bool {
    DECODING.with(|d| d.get().is_some_and(|v| v < version))
}

/// For a field added in checkpoint format 4: absent from older payloads,
/// where it takes its type's default (which must mean "off").
pub fn added_in_format_4<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    if older_than(4) {
        Ok(T::default())
    } else {
        T::deserialize(deserializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Old {
        a: u32,
        c: String,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct New {
        a: u32,
        #[serde(deserialize_with = "added_in_format_4")]
        b: f32,
        c: String,
    }

    fn bytes<T: Serialize>(value: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap()
    }

    fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
        bincode::serde::decode_from_slice(bytes, bincode::config::standard())
            .map(|(v, _)| v)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn an_older_payload_reads_the_added_field_as_its_default() {
        let old = bytes(&Old {
            a: 7,
            c: "x".into(),
        });
        let new: New = decoding_format(3, || decode(&old)).unwrap();
        assert_eq!(
            new,
            New {
                a: 7,
                b: 0.0,
                c: "x".into()
            }
        );
    }

    #[test]
    fn a_current_payload_reads_the_field() {
        let value = New {
            a: 7,
            b: 0.5,
            c: "x".into(),
        };
        let back: New = decoding_format(4, || decode(&bytes(&value))).unwrap();
        assert_eq!(back, value);
        // Outside a checkpoint decode (JSON, tests) the field is read too.
        assert_eq!(decode::<New>(&bytes(&value)).unwrap(), value);
    }

    #[test]
    fn the_old_layout_is_not_readable_without_the_version() {
        let old = bytes(&Old {
            a: 7,
            c: "x".into(),
        });
        assert!(decode::<New>(&old).is_err());
    }

    #[test]
    fn the_version_is_scoped_to_the_call_even_on_panic() {
        let caught = std::panic::catch_unwind(|| decoding_format(3, || panic!("decode failed")));
        assert!(caught.is_err());
        assert!(!older_than(4));
        decoding_format(3, || {
            assert!(older_than(4));
            decoding_format(4, || assert!(!older_than(4)));
            assert!(older_than(4));
        });
    }
}
