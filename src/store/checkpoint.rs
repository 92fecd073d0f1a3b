//! The checkpoint file format: header, checksum, atomic writes.
//!
//! A checkpoint is one stream's whole state (configuration, model with its
//! random generator, ordering and statistics), so that a restarted server
//! continues the stream bit for bit (ARCHITECTURE.md, "Determinism").
//!
//! Layout, all integers little-endian:
//!
//! | bytes  | field                                             |
//! | ------ | ------------------------------------------------- |
//! | 0..8   | magic `HTMCKPT\0`                                 |
//! | 8..12  | format version (`u32`, currently [`FORMAT_VERSION`]) |
//! | 12..20 | payload length in bytes (`u64`)                   |
//! | 20..24 | CRC-32 (IEEE) of the payload (`u32`)              |
//! | 24..   | payload: bincode 2 (serde API, standard config; [`codec`]) |
//!
//! Files are written atomically: temporary file in the same directory,
//! `fsync`, rename over the old file, `fsync` of the directory — a crash
//! leaves either the old or the new checkpoint, never half of one.
//!
//! bincode's development has stopped; keeping it behind this module and
//! [`codec`] means a codec change is a new [`FORMAT_VERSION`] here and
//! nowhere else.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::store::codec;

/// First eight bytes of every checkpoint file.
pub const MAGIC: [u8; 8] = *b"HTMCKPT\0";
/// The format version this build writes and reads. Version 2 added the
/// write-ahead-log LSN a checkpoint covers (`StreamState::wal_lsn`);
/// version 1 files are refused.
pub const FORMAT_VERSION: u32 = 2;
/// Header length in bytes; the payload starts here.
pub const HEADER_LEN: usize = 24;

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading or writing the file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file (or directory) involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is shorter than its header says.
    #[error("truncated: {actual} bytes, expected {expected}")]
    Truncated {
        /// Bytes the header (or the header itself) requires.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// The file does not start with [`MAGIC`].
    #[error("not a checkpoint file (bad magic bytes)")]
    BadMagic,
    /// The file was written by a format this build does not know.
    #[error("unknown checkpoint format version {found} (this build reads {FORMAT_VERSION})")]
    UnknownVersion {
        /// The version in the header.
        found: u32,
    },
    /// Bytes follow the payload.
    #[error("corrupt: {extra} bytes after the payload")]
    TrailingBytes {
        /// How many.
        extra: u64,
    },
    /// The payload does not match its checksum.
    #[error("corrupt: checksum mismatch (header {expected:#010x}, payload {actual:#010x})")]
    ChecksumMismatch {
        /// Checksum stored in the header.
        expected: u32,
        /// Checksum of the payload as read.
        actual: u32,
    },
    /// The checksum matched but the payload did not decode.
    #[error("corrupt: payload does not decode: {0}")]
    Decode(String),
    /// The state could not be encoded.
    #[error("state does not encode: {0}")]
    Encode(String),
}

/// Encode `state` as a complete checkpoint (header + payload).
pub fn encode<T: Serialize>(state: &T) -> Result<Vec<u8>, CheckpointError> {
    let mut out = vec![0u8; HEADER_LEN];
    codec::encode_into(state, &mut out).map_err(CheckpointError::Encode)?;
    let payload = &out[HEADER_LEN..];
    let len = payload.len() as u64;
    let crc = crc32fast::hash(payload);
    out[0..8].copy_from_slice(&MAGIC);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[12..20].copy_from_slice(&len.to_le_bytes());
    out[20..24].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Decode a complete checkpoint, checking magic, version, length and checksum
/// before the payload is decoded.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CheckpointError> {
    if bytes.len() >= MAGIC.len() && bytes[..MAGIC.len()] != MAGIC {
        return Err(CheckpointError::BadMagic);
    }
    if bytes.len() < HEADER_LEN {
        // A prefix of the magic (or nothing) is a cut-off checkpoint.
        if !MAGIC.starts_with(&bytes[..bytes.len().min(MAGIC.len())]) {
            return Err(CheckpointError::BadMagic);
        }
        return Err(CheckpointError::Truncated {
            expected: HEADER_LEN as u64,
            actual: bytes.len() as u64,
        });
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let version = u32_at(8);
    if version != FORMAT_VERSION {
        return Err(CheckpointError::UnknownVersion { found: version });
    }
    let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let expected_crc = u32_at(20);
    let have = (bytes.len() - HEADER_LEN) as u64;
    if have < len {
        return Err(CheckpointError::Truncated {
            expected: HEADER_LEN as u64 + len,
            actual: bytes.len() as u64,
        });
    }
    if have > len {
        return Err(CheckpointError::TrailingBytes { extra: have - len });
    }
    let payload = &bytes[HEADER_LEN..];
    let actual_crc = crc32fast::hash(payload);
    if actual_crc != expected_crc {
        return Err(CheckpointError::ChecksumMismatch {
            expected: expected_crc,
            actual: actual_crc,
        });
    }
    codec::decode(payload).map_err(CheckpointError::Decode)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `bytes` to `path` atomically: `<path>.tmp`, fsync, rename, fsync of
/// the parent directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
        file.write_all(bytes).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        drop(file);
        fs::rename(&tmp, path).map_err(io_err(path))?;
        sync_parent(path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Fsync the directory holding `path`, so a rename or removal in it is durable.
pub fn sync_parent(path: &Path) -> Result<(), CheckpointError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Encode `state` and write it to `path` atomically.
pub fn save<T: Serialize>(path: &Path, state: &T) -> Result<(), CheckpointError> {
    write_atomic(path, &encode(state)?)
}

/// Read and decode the checkpoint at `path`.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, CheckpointError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    decode(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        values: Vec<f64>,
        step: u64,
        flag: Option<bool>,
    }

    fn sample() -> Sample {
        Sample {
            name: "cpu".into(),
            values: vec![1.5, -0.0, f64::MAX, 1e-300],
            step: 123_456_789,
            flag: Some(true),
        }
    }

    #[test]
    fn round_trips_and_header_is_as_documented() {
        let bytes = encode(&sample()).unwrap();
        assert_eq!(&bytes[..8], b"HTMCKPT\0");
        assert_eq!(
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
            FORMAT_VERSION
        );
        let len = u64::from_le_bytes(bytes[12..20].try_into().unwrap());
        assert_eq!(len as usize, bytes.len() - HEADER_LEN);
        let crc = u32::from_le_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!(crc, crc32fast::hash(&bytes[HEADER_LEN..]));
        assert_eq!(decode::<Sample>(&bytes).unwrap(), sample());
    }

    #[test]
    fn every_truncation_is_reported_as_truncated() {
        let bytes = encode(&sample()).unwrap();
        for cut in 0..bytes.len() {
            match decode::<Sample>(&bytes[..cut]) {
                Err(CheckpointError::Truncated { actual, .. }) => assert_eq!(actual, cut as u64),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn typed_errors_for_magic_version_trailing_and_checksum() {
        let good = encode(&sample()).unwrap();

        let mut b = good.clone();
        b[0] = b'X';
        assert!(matches!(
            decode::<Sample>(&b),
            Err(CheckpointError::BadMagic)
        ));
        assert!(matches!(
            decode::<Sample>(b"hello"),
            Err(CheckpointError::BadMagic)
        ));

        let mut b = good.clone();
        b[8..12].copy_from_slice(&7u32.to_le_bytes());
        assert!(matches!(
            decode::<Sample>(&b),
            Err(CheckpointError::UnknownVersion { found: 7 })
        ));

        let mut b = good.clone();
        b.push(0);
        assert!(matches!(
            decode::<Sample>(&b),
            Err(CheckpointError::TrailingBytes { extra: 1 })
        ));

        let mut b = good.clone();
        let last = b.len() - 1;
        b[last] ^= 0x40;
        assert!(matches!(
            decode::<Sample>(&b),
            Err(CheckpointError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn payload_of_another_type_is_a_decode_error() {
        let bytes = encode(&"just a string").unwrap();
        assert!(matches!(
            decode::<Sample>(&bytes),
            Err(CheckpointError::Decode(_))
        ));
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.ckpt");
        save(&path, &sample()).unwrap();
        let mut second = sample();
        second.step += 1;
        save(&path, &second).unwrap();
        assert_eq!(load::<Sample>(&path).unwrap(), second);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("s.ckpt")]);
    }

    #[test]
    fn missing_file_is_an_io_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.ckpt");
        let err = load::<Sample>(&path).unwrap_err();
        assert!(err.to_string().contains("nope.ckpt"), "{err}");
    }

    proptest! {
        #[test]
        fn any_single_bit_flip_is_detected(byte in 0usize..200, bit in 0u8..8) {
            let good = encode(&sample()).unwrap();
            let byte = byte % good.len();
            let mut b = good.clone();
            b[byte] ^= 1 << bit;
            prop_assert!(decode::<Sample>(&b).is_err());
        }
    }
}
