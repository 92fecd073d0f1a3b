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
use std::io::{BufReader, BufWriter, Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::format_compat;
use crate::store::codec;

/// First eight bytes of every checkpoint file.
pub const MAGIC: [u8; 8] = *b"HTMCKPT\0";
/// The format version this build writes. Version 2 added the
/// write-ahead-log LSN a checkpoint covers (`StreamState::wal_lsn`),
/// version 3 stores the predictor's classifier weights as `f32`, version 4
/// adds the Temporal Memory's `first_order_fallback` parameter.
pub const FORMAT_VERSION: u32 = 4;
/// The oldest format version this build reads. A version-3 payload is
/// decoded into today's types with every field added since taking the value
/// that keeps the old behaviour ([`crate::format_compat`]); the next save
/// writes it as [`FORMAT_VERSION`]. Older files are refused.
pub const OLDEST_READABLE_VERSION: u32 = 3;
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
    #[error("unknown checkpoint format version {found} (this build reads {OLDEST_READABLE_VERSION} to {FORMAT_VERSION})")]
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

/// Encode `state` as a complete checkpoint (header + payload) in memory.
/// [`PendingWrite`] writes the same bytes to a file without holding them.
pub fn encode<T: Serialize>(state: &T) -> Result<Vec<u8>, CheckpointError> {
    let mut out = Cursor::new(Vec::new());
    write_framed(&mut out, state).map_err(|e| match e {
        codec::StreamError::Io(e) => CheckpointError::Encode(e.to_string()),
        codec::StreamError::Value(e) => CheckpointError::Encode(e),
    })?;
    Ok(out.into_inner())
}

/// The header of a payload of `len` bytes with checksum `crc`.
fn header(len: u64, crc: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&len.to_le_bytes());
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Write the whole checkpoint of `state` at `out`'s start: a placeholder
/// header, the payload streamed through a checksum as bincode produces it,
/// then the real header over the placeholder. Returns the bytes written.
fn write_framed<T: Serialize, W: Write + Seek>(
    out: &mut W,
    state: &T,
) -> Result<u64, codec::StreamError> {
    out.seek(SeekFrom::Start(0))?;
    out.write_all(&[0u8; HEADER_LEN])?;
    let mut payload = BufWriter::with_capacity(IO_BUFFER, Checksummed::new(&mut *out));
    codec::encode_to_writer(state, &mut payload)?;
    let sink = payload.into_inner().map_err(|e| e.into_error())?;
    let (len, crc) = (sink.len, sink.hasher.finalize());
    out.seek(SeekFrom::Start(0))?;
    out.write_all(&header(len, crc))?;
    out.seek(SeekFrom::End(0))?;
    Ok(HEADER_LEN as u64 + len)
}

/// Bytes bincode's small writes (and reads) are gathered into between it
/// and the checksum and the file.
const IO_BUFFER: usize = 64 * 1024;

/// A writer or reader that passes bytes on and keeps their count and CRC-32.
struct Checksummed<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    len: u64,
}

impl<W> Checksummed<W> {
    fn new(inner: W) -> Checksummed<W> {
        Checksummed {
            inner,
            hasher: crc32fast::Hasher::new(),
            len: 0,
        }
    }
}

impl<R: Read> Read for Checksummed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Decode a complete checkpoint, checking magic, version, length and checksum
/// before the payload is decoded.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CheckpointError> {
    let header = check_header(&bytes[..bytes.len().min(HEADER_LEN)], bytes.len() as u64)?;
    debug_assert_eq!(header.len, (bytes.len() - HEADER_LEN) as u64);
    let payload = &bytes[HEADER_LEN..];
    check_crc(header.crc, crc32fast::hash(payload))?;
    format_compat::decoding_format(header.version, || codec::decode(payload))
        .map_err(CheckpointError::Decode)
}

/// What a checked header says about the payload after it.
struct Header {
    version: u32,
    len: u64,
    crc: u32,
}

/// Check a checkpoint's header (`head`: its first [`HEADER_LEN`] bytes, or
/// all of them if fewer) against the total length of the file, `total`.
fn check_header(head: &[u8], total: u64) -> Result<Header, CheckpointError> {
    if head.len() >= MAGIC.len() && head[..MAGIC.len()] != MAGIC {
        return Err(CheckpointError::BadMagic);
    }
    if head.len() < HEADER_LEN {
        // A prefix of the magic (or nothing) is a cut-off checkpoint.
        if !MAGIC.starts_with(&head[..head.len().min(MAGIC.len())]) {
            return Err(CheckpointError::BadMagic);
        }
        return Err(CheckpointError::Truncated {
            expected: HEADER_LEN as u64,
            actual: total,
        });
    }
    let u32_at = |at: usize| u32::from_le_bytes(head[at..at + 4].try_into().expect("4 bytes"));
    let version = u32_at(8);
    if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(CheckpointError::UnknownVersion { found: version });
    }
    let len = u64::from_le_bytes(head[12..20].try_into().expect("8 bytes"));
    let have = total - HEADER_LEN as u64;
    if have < len {
        return Err(CheckpointError::Truncated {
            expected: HEADER_LEN as u64 + len,
            actual: total,
        });
    }
    if have > len {
        return Err(CheckpointError::TrailingBytes { extra: have - len });
    }
    Ok(Header {
        version,
        len,
        crc: u32_at(20),
    })
}

fn check_crc(expected: u32, actual: u32) -> Result<(), CheckpointError> {
    if actual == expected {
        Ok(())
    } else {
        Err(CheckpointError::ChecksumMismatch { expected, actual })
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A checkpoint on its way to `path`: written to `<path>.tmp`, which
/// [`commit`](PendingWrite::commit) makes durable and renames over `path`
/// (a crash leaves the old checkpoint or the new one, never half of one).
/// Dropped before that, the temporary file is removed.
///
/// The three steps are separate so a caller can hold a lock on the state
/// only while it is encoded ([`write`](PendingWrite::write)), not while the
/// file is created or synced. The encoding goes straight to the file
/// through a small buffer: a checkpoint never needs a buffer the size of
/// the model (tens of MB, which the allocator may keep after it is freed).
#[derive(Debug)]
pub struct PendingWrite {
    path: PathBuf,
    tmp: PathBuf,
    file: File,
    len: u64,
    renamed: bool,
}

impl PendingWrite {
    /// Create `<path>.tmp`, replacing any leftover.
    pub fn create(path: &Path) -> Result<PendingWrite, CheckpointError> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        Ok(PendingWrite {
            path: path.to_path_buf(),
            tmp,
            file,
            len: 0,
            renamed: false,
        })
    }

    /// Write `state`'s whole checkpoint to the temporary file (replacing
    /// what an earlier call wrote). Returns the file's length.
    pub fn write<T: Serialize>(&mut self, state: &T) -> Result<u64, CheckpointError> {
        self.len = write_framed(&mut self.file, state).map_err(|e| match e {
            codec::StreamError::Io(source) => CheckpointError::Io {
                path: self.tmp.clone(),
                source,
            },
            codec::StreamError::Value(e) => CheckpointError::Encode(e),
        })?;
        self.file.set_len(self.len).map_err(io_err(&self.tmp))?;
        Ok(self.len)
    }

    /// Fsync the temporary file, rename it over the checkpoint and fsync
    /// the directory. Returns the checkpoint's length in bytes.
    pub fn commit(mut self) -> Result<u64, CheckpointError> {
        self.file.sync_all().map_err(io_err(&self.tmp))?;
        fs::rename(&self.tmp, &self.path).map_err(io_err(&self.path))?;
        self.renamed = true;
        sync_parent(&self.path)?;
        Ok(self.len)
    }
}

impl Drop for PendingWrite {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
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

/// Write `state`'s checkpoint to `path` atomically ([`PendingWrite`]).
/// Returns the checkpoint's length in bytes.
pub fn save<T: Serialize>(path: &Path, state: &T) -> Result<u64, CheckpointError> {
    let mut pending = PendingWrite::create(path)?;
    pending.write(state)?;
    pending.commit()
}

/// Read and decode the checkpoint at `path`, with the errors [`decode`]
/// gives for the file's bytes. The payload is decoded as it is read, its
/// checksum computed on the way (and checked before the state is
/// returned), so loading never holds a copy of the file beside the state.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, CheckpointError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let total = file.metadata().map_err(io_err(path))?.len();
    let mut head = Vec::with_capacity(HEADER_LEN);
    (&mut file)
        .take(HEADER_LEN as u64)
        .read_to_end(&mut head)
        .map_err(io_err(path))?;
    let header = check_header(&head, total)?;
    let (len, expected_crc) = (header.len, header.crc);
    let mut payload = BufReader::with_capacity(IO_BUFFER, Checksummed::new(file.take(len)));
    let decoded = format_compat::decoding_format(header.version, || {
        codec::decode_from_reader(&mut payload, len)
    });
    // A failed decode stops early: the checksum must still cover every
    // byte, and a mismatch is the better explanation of the failure.
    std::io::copy(&mut payload, &mut std::io::sink()).map_err(io_err(path))?;
    check_crc(expected_crc, payload.into_inner().hasher.finalize())?;
    decoded.map_err(|e| match e {
        codec::StreamError::Io(source) => CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        },
        codec::StreamError::Value(e) => CheckpointError::Decode(e),
    })
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
    fn a_saved_file_holds_exactly_the_in_memory_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.ckpt");
        // Larger than the write buffer, so the payload reaches the file
        // and its checksum in several pieces.
        let big = Sample {
            values: (0..40_000).map(|i| i as f64 * 0.37).collect(),
            ..sample()
        };
        let written = save(&path, &big).unwrap();
        let on_disk = fs::read(&path).unwrap();
        assert!(on_disk.len() > 3 * IO_BUFFER);
        assert_eq!(written, on_disk.len() as u64);
        assert_eq!(on_disk, encode(&big).unwrap());
        assert_eq!(decode::<Sample>(&on_disk).unwrap(), big);
    }

    /// Serializes a few fields, then fails, like a state that cannot be
    /// encoded halfway through.
    struct FailsHalfway;

    impl Serialize for FailsHalfway {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::{Error, SerializeTuple};
            let mut t = s.serialize_tuple(3)?;
            t.serialize_element(&vec![7u8; 100_000])?;
            t.serialize_element(&1u32)?;
            Err(S::Error::custom("cannot encode the third field"))
        }
    }

    #[test]
    fn a_failed_write_keeps_the_old_checkpoint_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.ckpt");
        save(&path, &sample()).unwrap();
        let before = fs::read(&path).unwrap();
        let err = save(&path, &FailsHalfway).unwrap_err();
        assert!(
            matches!(&err, CheckpointError::Encode(m) if m.contains("third field")),
            "{err:?}"
        );
        assert_eq!(fs::read(&path).unwrap(), before);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("s.ckpt")]);
    }

    /// A sink that fails like a full disk once `room` bytes are taken.
    struct FullAfter {
        room: usize,
        taken: Cursor<Vec<u8>>,
    }

    impl Write for FullAfter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.taken.get_ref().len() + buf.len() > self.room {
                return Err(std::io::ErrorKind::StorageFull.into());
            }
            self.taken.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Seek for FullAfter {
        fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
            self.taken.seek(to)
        }
    }

    #[test]
    fn a_full_disk_during_encoding_is_reported_as_the_io_error_it_is() {
        let mut sink = FullAfter {
            room: 2 * IO_BUFFER,
            taken: Cursor::new(Vec::new()),
        };
        let big = Sample {
            values: vec![0.5; 50_000],
            ..sample()
        };
        match write_framed(&mut sink, &big) {
            Err(codec::StreamError::Io(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::StorageFull)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_file_is_an_io_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.ckpt");
        let err = load::<Sample>(&path).unwrap_err();
        assert!(err.to_string().contains("nope.ckpt"), "{err}");
    }

    /// `load` of a file must answer exactly what `decode` answers for its
    /// bytes: the same value, or an error of the same kind.
    fn load_agrees_with_decode(bytes: &[u8]) -> Result<(), TestCaseError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.ckpt");
        fs::write(&path, bytes).unwrap();
        match (load::<Sample>(&path), decode::<Sample>(bytes)) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(a), Err(b)) => prop_assert_eq!(
                std::mem::discriminant(&a),
                std::mem::discriminant(&b),
                "load: {:?}, decode: {:?}",
                a,
                b
            ),
            (a, b) => prop_assert!(false, "load: {:?}, decode: {:?}", a, b),
        }
        Ok(())
    }

    #[test]
    fn loading_a_file_fails_like_decoding_its_bytes() {
        let good = encode(&sample()).unwrap();
        load_agrees_with_decode(&good).unwrap();
        for cut in 0..good.len() {
            load_agrees_with_decode(&good[..cut]).unwrap();
        }
        let mut longer = good.clone();
        longer.push(0);
        load_agrees_with_decode(&longer).unwrap();
        let other = encode(&"just a string").unwrap();
        load_agrees_with_decode(&other).unwrap();
    }

    proptest! {
        #[test]
        fn load_and_decode_agree_on_damaged_files(
            flips in proptest::collection::vec((0usize..4096, 0u8..8), 1..4),
        ) {
            let big = Sample { values: (0..500).map(f64::from).collect(), ..sample() };
            let mut b = encode(&big).unwrap();
            for (byte, bit) in flips {
                let byte = byte % b.len();
                b[byte] ^= 1 << bit;
            }
            load_agrees_with_decode(&b)?;
            // Also with the header's length and checksum made to match, so
            // the damage reaches the payload decoder.
            let len = (b.len() - HEADER_LEN) as u64;
            let crc = crc32fast::hash(&b[HEADER_LEN..]);
            b[..HEADER_LEN].copy_from_slice(&header(len, crc));
            load_agrees_with_decode(&b)?;
        }

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
