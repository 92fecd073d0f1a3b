//! `StreamId`: the validated name of a metric stream.
//!
//! A stream id reaches a concurrent map, a Prometheus label and a file name
//! (`<id>.ckpt` in the data directory), so it is checked once, at the edge,
//! against `[A-Za-z0-9._-]{1,128}` (ARCHITECTURE.md, "Untrusted input stays
//! outside"). The only names that pass yet could be special as a path
//! component, `.` and `..`, are harmless because a suffix is always appended.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A stream id that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidStreamId {
    /// The id is the empty string.
    #[error("stream id is empty")]
    Empty,
    /// The id is longer than [`StreamId::MAX_LEN`] bytes.
    #[error("stream id is {0} characters long; at most {max} are allowed", max = StreamId::MAX_LEN)]
    TooLong(usize),
    /// The id holds a character outside `[A-Za-z0-9._-]`.
    #[error("stream id contains {0:?}; only A-Z a-z 0-9 . _ - are allowed")]
    BadChar(char),
}

/// The name of a stream: 1 to 128 characters from `[A-Za-z0-9._-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(String);

impl StreamId {
    /// Longest accepted id, in characters (all accepted characters are ASCII).
    pub const MAX_LEN: usize = 128;

    /// Validate `id`.
    pub fn new(id: impl Into<String>) -> Result<StreamId, InvalidStreamId> {
        let id = id.into();
        if id.is_empty() {
            return Err(InvalidStreamId::Empty);
        }
        if let Some(c) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(InvalidStreamId::BadChar(c));
        }
        if id.len() > Self::MAX_LEN {
            return Err(InvalidStreamId::TooLong(id.len()));
        }
        Ok(StreamId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for StreamId {
    type Err = InvalidStreamId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StreamId::new(s)
    }
}

impl TryFrom<String> for StreamId {
    type Error = InvalidStreamId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        StreamId::new(s)
    }
}

impl From<StreamId> for String {
    fn from(id: StreamId) -> String {
        id.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_allowed_alphabet() {
        for ok in ["a", "cpu.host-1_eu", "...", "A9", &"x".repeat(128)] {
            assert_eq!(StreamId::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_bad_ids_with_the_reason() {
        assert_eq!(StreamId::new(""), Err(InvalidStreamId::Empty));
        assert_eq!(
            StreamId::new("x".repeat(129)),
            Err(InvalidStreamId::TooLong(129))
        );
        assert_eq!(StreamId::new("a/b"), Err(InvalidStreamId::BadChar('/')));
        assert_eq!(StreamId::new("a b"), Err(InvalidStreamId::BadChar(' ')));
        assert_eq!(StreamId::new("é"), Err(InvalidStreamId::BadChar('é')));
        assert_eq!(StreamId::new("a\0"), Err(InvalidStreamId::BadChar('\0')));
    }

    #[test]
    fn serde_validates_on_the_way_in() {
        let id: StreamId = serde_json::from_str("\"ok-1\"").unwrap();
        assert_eq!(id.as_str(), "ok-1");
        assert!(serde_json::from_str::<StreamId>("\"../etc\"").is_err());
    }

    proptest! {
        #[test]
        fn valid_iff_alphabet_and_length(s in "\\PC{0,140}") {
            let ok = !s.is_empty()
                && s.len() <= 128
                && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            prop_assert_eq!(StreamId::new(s.clone()).is_ok(), ok);
        }

        #[test]
        fn generated_valid_ids_round_trip(s in "[A-Za-z0-9._-]{1,128}") {
            let id = StreamId::new(s.clone()).unwrap();
            prop_assert_eq!(id.to_string(), s);
        }
    }
}
