//! The write-ahead log: every change of a stream (accepted samples, a
//! configuration put, a reset, a deletion) as one record, appended before
//! the change is answered, so a server killed at any moment can rebuild
//! every acknowledged change from its checkpoints plus the log after them.
//!
//! One log per server, in `<data-dir>/wal/`, cut into segment files named
//! by the first log sequence number (LSN) they hold (`<lsn:020>.wal`). A
//! segment is closed (fsynced) when the next record would take it past
//! `segment_bytes`; segments whose records every checkpoint covers are
//! deleted by [`Wal::delete_segments_before`].
//!
//! Record layout, all integers little-endian:
//!
//! | bytes   | field                                                   |
//! | ------- | ------------------------------------------------------- |
//! | 0..4    | payload length in bytes (`u32`)                         |
//! | 4..8    | CRC-32 (IEEE) of bytes 8.. (LSN and payload)            |
//! | 8..16   | LSN (`u64`), one more than the previous record's        |
//! | 16..    | payload: an [`Entry`], bincode 2 (serde API, standard)  |
//!
//! Reading stops at the first record that is cut short, fails its checksum,
//! does not follow its predecessor's LSN or does not decode: a write torn
//! by a crash. That record and everything after it in its segment is
//! truncated away (and later segments, which a torn write cannot produce,
//! are renamed `*.quarantined`), so garbage is never replayed.
//!
//! Durability: appends are `write(2)` calls on the segment file (nothing is
//! buffered in the process, so a killed process loses nothing already
//! appended); [`Wal::wait_durable`] waits until a background thread has
//! fsynced past a record — at once for `fsync`, after a short delay that
//! gathers more records for `group` — so one fsync covers every record
//! written before it (group commit).
//!
//! Storage failures (disk full, read-only, I/O error) fail the append or
//! the wait with the [`StorageFault`] kind, change nothing already on disk,
//! and the log recovers by itself once the disk does:
//! - a failed `write(2)` is cut off (`ftruncate` to where the record
//!   began), so the segment still ends after a whole record;
//! - after a failed fsync (or a cut that failed) the segment's unsynced
//!   tail is in an unknown state, so every record after the last
//!   successful fsync is *lost*: its waiters get an error and it is never
//!   acknowledged. The next append first truncates the segment to its
//!   last synced length (fsynced), then starts a new segment; LSNs are
//!   never reused, so a lost record cannot be mistaken for a later one
//!   (the gap is noted when the log is next opened).
//!
//! The codec is bincode through [`codec`], as for checkpoints, whose
//! decoding is bounded by the payload's length.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::store::codec;
use crate::store::storage_fault::StorageFault;
use crate::store::stream::Sample;
use crate::store::stream_config::StreamConfig;
use crate::store::stream_id::StreamId;

/// Bytes before a record's payload.
pub const RECORD_HEADER_LEN: usize = 16;
/// Largest payload a record may hold; a larger length is a corrupt header.
pub const MAX_PAYLOAD: usize = 256 << 20;
/// File name suffix of segments.
pub const SEGMENT_SUFFIX: &str = ".wal";
/// Suffix given to segments found after a corrupt record.
pub const QUARANTINED_SUFFIX: &str = ".quarantined";

/// Why the log could not be read or written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WalError {
    /// A file operation failed; the record was not appended.
    #[error("write-ahead log I/O error on {path}: {message}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        message: String,
        /// What kind of failure it is.
        fault: StorageFault,
    },
    /// A record could not be encoded.
    #[error("write-ahead log record does not encode: {0}")]
    Encode(String),
    /// The record was written but could not be made durable (an fsync
    /// failed); it is dropped and never acknowledged.
    #[error("write-ahead log record lost: {message}")]
    Lost {
        /// Why.
        message: String,
        /// What kind of failure it is.
        fault: StorageFault,
    },
    /// The log is closed (the server is stopping).
    #[error("write-ahead log closed")]
    Closed,
}

impl WalError {
    /// The storage failure behind this error, if it is one.
    pub fn fault(&self) -> Option<StorageFault> {
        match self {
            WalError::Io { fault, .. } | WalError::Lost { fault, .. } => Some(*fault),
            WalError::Encode(_) | WalError::Closed => None,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |e| WalError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
        fault: StorageFault::of(&e),
    }
}

/// One logged change (owned form, as read back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Entry {
    /// Samples accepted by a stream, in order.
    Samples {
        /// The stream.
        stream: StreamId,
        /// The configuration, when this record created the stream (its
        /// first record since creation); `None` otherwise.
        config: Option<StreamConfig>,
        /// The samples as applied.
        samples: Vec<Sample>,
    },
    /// A stream created or replaced with a configuration (`PUT`).
    Put {
        /// The stream.
        stream: StreamId,
        /// Its new configuration.
        config: StreamConfig,
    },
    /// A stream's sequence restarted (`POST /streams/{id}/reset`).
    Reset {
        /// The stream.
        stream: StreamId,
    },
    /// A stream deleted.
    Delete {
        /// The stream.
        stream: StreamId,
    },
}

/// The borrowed form of [`Entry`], for appending without copies. Variants
/// and fields must stay in the same order as in [`Entry`] (the codec
/// writes variant indices and fields in order).
#[derive(Debug, Clone, Copy, Serialize)]
pub enum EntryRef<'a> {
    /// See [`Entry::Samples`].
    Samples {
        /// The stream.
        stream: &'a StreamId,
        /// The configuration if this record creates the stream.
        config: Option<&'a StreamConfig>,
        /// The samples.
        samples: &'a [Sample],
    },
    /// See [`Entry::Put`].
    Put {
        /// The stream.
        stream: &'a StreamId,
        /// Its new configuration.
        config: &'a StreamConfig,
    },
    /// See [`Entry::Reset`].
    Reset {
        /// The stream.
        stream: &'a StreamId,
    },
    /// See [`Entry::Delete`].
    Delete {
        /// The stream.
        stream: &'a StreamId,
    },
}

impl Entry {
    /// The borrowed form of this entry, as [`Wal::append`] takes it.
    pub fn as_entry_ref(&self) -> EntryRef<'_> {
        match self {
            Entry::Samples {
                stream,
                config,
                samples,
            } => EntryRef::Samples {
                stream,
                config: config.as_ref(),
                samples,
            },
            Entry::Put { stream, config } => EntryRef::Put { stream, config },
            Entry::Reset { stream } => EntryRef::Reset { stream },
            Entry::Delete { stream } => EntryRef::Delete { stream },
        }
    }
}

/// Encode one complete record (header and payload) into `out`.
pub fn encode_record(lsn: u64, entry: &EntryRef<'_>, out: &mut Vec<u8>) -> Result<(), WalError> {
    out.clear();
    out.resize(RECORD_HEADER_LEN, 0);
    codec::encode_into(entry, out).map_err(WalError::Encode)?;
    let len = out.len() - RECORD_HEADER_LEN;
    if len > MAX_PAYLOAD {
        return Err(WalError::Encode(format!(
            "record of {len} bytes is larger than {MAX_PAYLOAD}"
        )));
    }
    write_header(lsn, out);
    Ok(())
}

/// Frame `payload` as the record `lsn` (header with its length and
/// checksum, then the payload), appended to `out`. The payload is taken as
/// it is, whether or not it decodes: tests use this to put damaged
/// payloads behind a valid header.
pub fn frame_record(lsn: u64, payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + RECORD_HEADER_LEN, 0);
    out.extend_from_slice(payload);
    write_header(lsn, &mut out[start..]);
}

/// Fill the header of `record` (header space followed by the payload): the
/// payload's length, the LSN, and the checksum of both.
fn write_header(lsn: u64, record: &mut [u8]) {
    let len = record.len() - RECORD_HEADER_LEN;
    record[8..16].copy_from_slice(&lsn.to_le_bytes());
    let crc = crc32fast::hash(&record[8..]);
    record[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    record[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Why reading a segment stopped before its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Torn {
    /// Fewer bytes than a header or than the header's length.
    Short,
    /// The length field is larger than [`MAX_PAYLOAD`].
    BadLength(u32),
    /// Checksum mismatch.
    Checksum,
    /// The LSN does not follow the previous record's.
    Sequence {
        /// The LSN expected.
        expected: u64,
        /// The LSN found.
        found: u64,
    },
    /// The payload does not decode.
    Decode(String),
}

/// The records of one segment's bytes that are whole, and where reading
/// stopped.
#[derive(Debug)]
pub struct Parsed {
    /// Valid records in order.
    pub records: Vec<(u64, Entry)>,
    /// Bytes taken by the valid records.
    pub valid_len: usize,
    /// Why reading stopped early (`None`: the bytes end after a record).
    pub torn: Option<Torn>,
}

/// Parse a segment's bytes. `first_lsn` is the LSN its first record must
/// have (the segment's name).
pub fn parse_segment(bytes: &[u8], first_lsn: u64) -> Parsed {
    let mut records = Vec::new();
    let mut at = 0usize;
    let mut expected = first_lsn;
    let torn = loop {
        let rest = &bytes[at..];
        if rest.is_empty() {
            break None;
        }
        if rest.len() < RECORD_HEADER_LEN {
            break Some(Torn::Short);
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes"));
        if len as usize > MAX_PAYLOAD {
            break Some(Torn::BadLength(len));
        }
        let end = RECORD_HEADER_LEN + len as usize;
        if rest.len() < end {
            break Some(Torn::Short);
        }
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if crc32fast::hash(&rest[8..end]) != crc {
            break Some(Torn::Checksum);
        }
        let lsn = u64::from_le_bytes(rest[8..16].try_into().expect("8 bytes"));
        if lsn != expected {
            break Some(Torn::Sequence {
                expected,
                found: lsn,
            });
        }
        let payload = &rest[RECORD_HEADER_LEN..end];
        match codec::decode::<Entry>(payload) {
            Ok(entry) => records.push((lsn, entry)),
            Err(e) => break Some(Torn::Decode(e)),
        }
        at += end;
        expected += 1;
    };
    Parsed {
        records,
        valid_len: at,
        torn,
    }
}

/// Which log operation a storage failure hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalOp {
    /// Writing a record.
    Append,
    /// Fsyncing a segment.
    Fsync,
    /// Creating or truncating a segment (rollover, recovery).
    Segment,
}

impl WalOp {
    /// The metric label of this operation.
    pub fn label(self) -> &'static str {
        match self {
            WalOp::Append => "wal_append",
            WalOp::Fsync => "wal_fsync",
            WalOp::Segment => "wal_segment",
        }
    }
}

/// Told about appends, fsyncs and failures (the server's metrics).
pub trait WalObserver: Send + Sync {
    /// A record of `bytes` bytes (header included) was appended.
    fn appended(&self, bytes: usize);
    /// An fsync of the log took `took`.
    fn synced(&self, took: Duration);
    /// `op` failed with a storage fault.
    fn failed(&self, op: WalOp, fault: StorageFault);
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl WalObserver for NoObserver {
    fn appended(&self, _: usize) {}
    fn synced(&self, _: Duration) {}
    fn failed(&self, _: WalOp, _: StorageFault) {}
}

/// How the log is opened.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// The directory of the segments (created if missing).
    pub dir: PathBuf,
    /// A segment is closed when the next record would take it past this.
    pub segment_bytes: u64,
    /// How long the fsync thread waits after the first request before it
    /// syncs, gathering more records (zero: sync at once).
    pub group_delay: Duration,
}

/// What opening the log found.
#[derive(Debug, Default, Clone)]
pub struct OpenReport {
    /// Records handed to the replay function.
    pub records: u64,
    /// Torn or corrupt records dropped (at most one per opening, plus one
    /// per quarantined segment).
    pub torn: u64,
    /// Human-readable notes on what was truncated or quarantined.
    pub notes: Vec<String>,
    /// The LSN the next record gets.
    pub next_lsn: u64,
    /// Segments found.
    pub segments: usize,
}

/// Durability progress, published to waiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Durable {
    /// Every record up to this LSN is on disk, or lost (see
    /// [`Shared::lost`]).
    lsn: u64,
    /// Faults so far; bumped to wake waiters whose record was lost.
    faults: u64,
}

/// How many lost LSN ranges are remembered for waiters (one per fault; a
/// waiter looks its LSN up right after appending, so only a burst of this
/// many fault-and-recover cycles in between could hide its loss).
const LOST_RANGES_KEPT: usize = 1024;

/// A segment whose unsynced tail is in an unknown state.
#[derive(Debug, Clone)]
struct Fault {
    kind: StorageFault,
    why: String,
}

/// The appending side, behind one lock.
#[derive(Debug)]
struct Writer {
    /// The segment being appended to; shared with the fsync thread, which
    /// syncs it without holding this lock.
    file: Arc<File>,
    /// Its path.
    path: PathBuf,
    /// Its size in bytes.
    size: u64,
    /// Its bytes known to be on disk (the size at its last successful
    /// fsync).
    synced_size: u64,
    /// The LSN the next record gets.
    next_lsn: u64,
    /// First LSNs of every live segment, ascending; the last is `file`.
    segments: Vec<u64>,
    /// Reused encoding buffer.
    buf: Vec<u8>,
    /// Set when an fsync failed (or a failed write could not be cut
    /// off): the next append truncates the segment to `synced_size` and
    /// starts a new one before it writes.
    fault: Option<Fault>,
    /// The last storage error, cleared by the next successful append
    /// (reported by `/readyz`).
    last_error: Option<String>,
}

/// What the fsync thread is asked to do.
#[derive(Debug, Default)]
struct SyncRequest {
    /// Highest LSN someone waits for.
    wanted: u64,
    /// Stop the thread.
    stop: bool,
}

struct Shared {
    options: WalOptions,
    writer: Mutex<Writer>,
    /// One fsync (or fault recovery) at a time. Lock order: `syncing`,
    /// then `writer`.
    syncing: Mutex<()>,
    durable: watch::Sender<Durable>,
    /// LSN ranges (inclusive) lost to faults, oldest first, at most
    /// [`LOST_RANGES_KEPT`]. A range is added before `durable.lsn` may
    /// pass it.
    lost: Mutex<std::collections::VecDeque<(u64, u64, StorageFault)>>,
    request: Mutex<SyncRequest>,
    wake: Condvar,
    observer: Arc<dyn WalObserver>,
    /// Mirrors `writer.fault.is_some()` for the fsync thread, which must
    /// not spin on a faulted segment.
    faulted: AtomicBool,
}

/// The write-ahead log of one server.
pub struct Wal {
    shared: Arc<Shared>,
    syncer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.options.dir)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn segment_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("{first_lsn:020}{SEGMENT_SUFFIX}"))
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Segments in `dir` by first LSN, ascending.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)) else {
            continue;
        };
        if let Ok(lsn) = stem.parse::<u64>() {
            found.push((lsn, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

impl Wal {
    /// Open the log in `options.dir`: read every segment in order, hand
    /// each valid record to `replay`, truncate a torn tail, and start a new
    /// segment for appends. The next LSN is at least `min_next_lsn` (one
    /// past the newest checkpoint's LSN, so LSNs never go backwards even if
    /// every segment was deleted).
    pub fn open(
        options: WalOptions,
        min_next_lsn: u64,
        observer: Arc<dyn WalObserver>,
        mut replay: impl FnMut(u64, Entry),
    ) -> Result<(Wal, OpenReport), WalError> {
        let dir = options.dir.clone();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let found = list_segments(&dir)?;
        let mut report = OpenReport {
            segments: found.len(),
            ..OpenReport::default()
        };
        let mut next_lsn = min_next_lsn.max(1);
        let mut live = Vec::new();
        let mut stopped = false;
        let mut expected: Option<u64> = None;
        for (first, path) in &found {
            if stopped {
                let mut target = path.as_os_str().to_owned();
                target.push(QUARANTINED_SUFFIX);
                fs::rename(path, &target).map_err(io_err(path))?;
                report.torn += 1;
                report.notes.push(format!(
                    "segment {} follows a corrupt record; renamed to {}",
                    path.display(),
                    PathBuf::from(&target).display()
                ));
                continue;
            }
            if let Some(e) = expected {
                if *first != e {
                    // A segment that does not continue its predecessor: the
                    // earlier ones were deleted (fine) only if nothing was
                    // read yet; otherwise records are missing.
                    report.notes.push(format!(
                        "segment {} starts at LSN {first}, expected {e}",
                        path.display()
                    ));
                }
            }
            let bytes = fs::read(path).map_err(io_err(path))?;
            let parsed = parse_segment(&bytes, *first);
            let count = parsed.records.len() as u64;
            for (lsn, entry) in parsed.records {
                report.records += 1;
                replay(lsn, entry);
            }
            let end = first + count;
            expected = Some(end);
            next_lsn = next_lsn.max(end);
            live.push(*first);
            if let Some(torn) = parsed.torn {
                report.torn += 1;
                report.notes.push(format!(
                    "segment {}: record at byte {} dropped ({torn:?}); {} bytes truncated",
                    path.display(),
                    parsed.valid_len,
                    bytes.len() - parsed.valid_len
                ));
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io_err(path))?;
                file.set_len(parsed.valid_len as u64)
                    .map_err(io_err(path))?;
                file.sync_all().map_err(io_err(path))?;
                stopped = true;
            }
        }
        // Appends go to a fresh segment named by the next LSN (an empty
        // segment of that name, left by an earlier start, is reused).
        let path = segment_path(&dir, next_lsn);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let size = file.metadata().map_err(io_err(&path))?.len();
        if size != 0 {
            return Err(WalError::Io {
                path,
                message: format!("new segment already holds {size} bytes"),
                fault: StorageFault::Io,
            });
        }
        sync_dir(&dir)?;
        if live.last() != Some(&next_lsn) {
            live.push(next_lsn);
        }
        report.next_lsn = next_lsn;
        let (durable, _) = watch::channel(Durable {
            lsn: next_lsn - 1,
            faults: 0,
        });
        let shared = Arc::new(Shared {
            options,
            writer: Mutex::new(Writer {
                file: Arc::new(file),
                path,
                size: 0,
                synced_size: 0,
                next_lsn,
                segments: live,
                buf: Vec::new(),
                fault: None,
                last_error: None,
            }),
            syncing: Mutex::new(()),
            durable,
            lost: Mutex::new(std::collections::VecDeque::new()),
            request: Mutex::new(SyncRequest::default()),
            wake: Condvar::new(),
            observer,
            faulted: AtomicBool::new(false),
        });
        let worker = Arc::clone(&shared);
        let syncer = std::thread::Builder::new()
            .name("htm-wal-sync".into())
            .spawn(move || sync_loop(&worker))
            .map_err(io_err(&dir))?;
        Ok((
            Wal {
                shared,
                syncer: Mutex::new(Some(syncer)),
            },
            report,
        ))
    }

    /// Append one record; returns its LSN. The record is in the operating
    /// system's hands (it survives a killed process) but not yet durable
    /// against power loss: see [`Wal::wait_durable`]. Blocking (one
    /// `write(2)`, plus an fsync when a segment is closed, plus the
    /// recovery of an earlier fault). On error nothing was appended.
    pub fn append(&self, entry: &EntryRef<'_>) -> Result<u64, WalError> {
        let s = &*self.shared;
        if s.faulted.load(Ordering::Acquire) {
            s.recover()?;
        }
        let mut w = lock(&s.writer);
        if w.fault.is_some() {
            // Faulted again since `recover`; the next append retries.
            let fault = w.fault.clone().expect("checked");
            return Err(WalError::Lost {
                message: fault.why,
                fault: fault.kind,
            });
        }
        let lsn = w.next_lsn;
        let mut buf = std::mem::take(&mut w.buf);
        let encoded = encode_record(lsn, entry, &mut buf);
        let result = encoded.and_then(|()| {
            let len = buf.len() as u64;
            if w.size > 0 && w.size + len > s.options.segment_bytes {
                self.roll(&mut w)?;
            }
            let start = w.size;
            if let Err(e) = (&*w.file).write_all(&buf) {
                let kind = StorageFault::of(&e);
                let why = format!("write to {} failed: {e}", w.path.display());
                s.observer.failed(WalOp::Append, kind);
                tracing::error!(error = %why, "write-ahead log append failed; nothing was logged");
                // Cut a partial record off, so later records follow a whole
                // one; if even that fails, the segment's tail is unknown.
                if let Err(cut) = w.file.set_len(start) {
                    s.fault(
                        &mut w,
                        StorageFault::of(&cut),
                        format!("{why}; cutting it off failed: {cut}"),
                    );
                }
                w.last_error = Some(why.clone());
                return Err(WalError::Io {
                    path: w.path.clone(),
                    message: e.to_string(),
                    fault: kind,
                });
            }
            w.size += len;
            w.next_lsn += 1;
            w.last_error = None;
            s.observer.appended(buf.len());
            Ok(lsn)
        });
        w.buf = buf;
        result
    }

    /// Close the current segment (fsync) and start an empty one, if the
    /// current one holds records: at a clean shutdown, once every
    /// checkpoint is written, this lets [`Wal::delete_segments_before`]
    /// delete every record, so the next start replays (and decodes)
    /// nothing. Blocking.
    pub fn seal(&self) -> Result<(), WalError> {
        let s = &*self.shared;
        if s.faulted.load(Ordering::Acquire) {
            s.recover()?;
        }
        let mut w = lock(&s.writer);
        if let Some(fault) = &w.fault {
            return Err(WalError::Lost {
                message: fault.why.clone(),
                fault: fault.kind,
            });
        }
        if w.size == 0 {
            return Ok(());
        }
        self.roll(&mut w)
    }

    /// Close the current segment (fsync) and start the next one.
    fn roll(&self, w: &mut Writer) -> Result<(), WalError> {
        let s = &*self.shared;
        let start = Instant::now();
        if let Err(e) = w.file.sync_data() {
            let kind = StorageFault::of(&e);
            let why = format!("fsync of {} failed: {e}", w.path.display());
            s.observer.failed(WalOp::Fsync, kind);
            s.fault(w, kind, why.clone());
            return Err(WalError::Lost {
                message: why,
                fault: kind,
            });
        }
        s.observer.synced(start.elapsed());
        w.synced_size = w.size;
        let done = w.next_lsn - 1;
        s.durable.send_if_modified(|d| {
            let newer = done > d.lsn;
            d.lsn = d.lsn.max(done);
            newer
        });
        let first = w.next_lsn;
        let file = s.create_segment(first).inspect_err(|e| {
            if let Some(kind) = e.fault() {
                s.observer.failed(WalOp::Segment, kind);
            }
            w.last_error = Some(e.to_string());
        })?;
        w.file = Arc::new(file);
        w.path = segment_path(&s.options.dir, first);
        w.size = 0;
        w.synced_size = 0;
        w.segments.push(first);
        Ok(())
    }

    /// Fsync every record appended so far. Blocking.
    pub fn sync(&self) -> Result<(), WalError> {
        self.shared.sync()
    }

    /// Wait (without blocking the thread) until record `lsn` is durable;
    /// an error if it was lost to a failed fsync.
    pub async fn wait_durable(&self, lsn: u64) -> Result<(), WalError> {
        let s = &*self.shared;
        let mut rx = s.durable.subscribe();
        loop {
            // Durability first, losses second: a loss is recorded before
            // `durable.lsn` may pass it.
            let durable = rx.borrow_and_update().lsn;
            if let Some(err) = s.lost(lsn) {
                return Err(err);
            }
            if durable >= lsn {
                return Ok(());
            }
            {
                let mut r = lock(&s.request);
                r.wanted = r.wanted.max(lsn);
            }
            s.wake.notify_one();
            rx.changed().await.map_err(|_| WalError::Closed)?;
        }
    }

    /// Do what a failed fsync does (a real one needs a failing device):
    /// every record not yet durable is lost and its waiters get an error;
    /// the next append recovers.
    #[cfg(test)]
    pub(crate) fn inject_fsync_failure(&self, kind: StorageFault) {
        let s = &*self.shared;
        let mut w = lock(&s.writer);
        s.fault(&mut w, kind, "fsync failed (injected by a test)".into());
    }

    /// The last storage error if the log is not known to be writable
    /// (the last append failed or a fault awaits recovery); `None` when
    /// healthy.
    pub fn storage_error(&self) -> Option<String> {
        let w = lock(&self.shared.writer);
        w.fault
            .as_ref()
            .map(|f| f.why.clone())
            .or_else(|| w.last_error.clone())
    }

    /// The LSN the next record will get.
    pub fn next_lsn(&self) -> u64 {
        lock(&self.shared.writer).next_lsn
    }

    /// First LSNs of the live segments, ascending (the last is being
    /// appended to).
    pub fn segments(&self) -> Vec<u64> {
        lock(&self.shared.writer).segments.clone()
    }

    /// Delete every closed segment all of whose records have LSNs below
    /// `needed` (the oldest record some stream still needs). Returns how
    /// many were deleted.
    pub fn delete_segments_before(&self, needed: u64) -> Result<usize, WalError> {
        let dir = &self.shared.options.dir;
        let doomed: Vec<u64> = {
            let mut w = lock(&self.shared.writer);
            let segs = &w.segments;
            // Segment i holds LSNs [segs[i], segs[i + 1]); the last is open.
            let n = segs.windows(2).take_while(|pair| pair[1] <= needed).count();
            w.segments.drain(..n).collect()
        };
        for first in &doomed {
            let path = segment_path(dir, *first);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        if !doomed.is_empty() {
            sync_dir(dir)?;
        }
        Ok(doomed.len())
    }
}

impl Shared {
    /// Declare the current segment's unsynced tail lost: every record
    /// after the last durable one fails its waiters, and the next append
    /// recovers. Called with the writer locked.
    fn fault(&self, w: &mut Writer, kind: StorageFault, why: String) {
        tracing::error!(error = %why, "write-ahead log fault; unsynced records are dropped, the next append starts a new segment");
        let durable = self.durable.borrow().lsn;
        let last = w.next_lsn - 1;
        if last > durable {
            let mut lost = lock(&self.lost);
            if lost.len() == LOST_RANGES_KEPT {
                lost.pop_front();
            }
            lost.push_back((durable + 1, last, kind));
        }
        w.last_error = Some(why.clone());
        w.fault = Some(Fault { kind, why });
        self.faulted.store(true, Ordering::Release);
        self.durable.send_modify(|d| d.faults += 1);
    }

    /// The error for a waiter of `lsn` if that record was lost.
    fn lost(&self, lsn: u64) -> Option<WalError> {
        lock(&self.lost)
            .iter()
            .rev()
            .find(|(from, to, _)| (*from..=*to).contains(&lsn))
            .map(|&(from, to, fault)| WalError::Lost {
                message: format!(
                    "records {from}..={to} were written but their fsync failed; they were dropped"
                ),
                fault,
            })
    }

    /// Create (and make durable) an empty segment whose first LSN is
    /// `first`.
    fn create_segment(&self, first: u64) -> Result<File, WalError> {
        let path = segment_path(&self.options.dir, first);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        sync_dir(&self.options.dir)?;
        Ok(file)
    }

    /// Recover from a fault: truncate the faulted segment to its last
    /// synced length (and fsync that), then start a new segment after the
    /// lost records. Leaves the fault in place if the disk still fails.
    fn recover(&self) -> Result<(), WalError> {
        let _one = lock(&self.syncing);
        let mut w = lock(&self.writer);
        let Some(fault) = w.fault.clone() else {
            return Ok(());
        };
        let failed = |op: WalOp, e: std::io::Error, w: &mut Writer| {
            let kind = StorageFault::of(&e);
            self.observer.failed(op, kind);
            let why = format!(
                "{} (recovery from it failed: {e} on {})",
                fault.why,
                w.path.display()
            );
            w.last_error = Some(why.clone());
            WalError::Io {
                path: w.path.clone(),
                message: why,
                fault: kind,
            }
        };
        let synced = w.synced_size;
        if let Err(e) = w.file.set_len(synced).and_then(|()| w.file.sync_all()) {
            return Err(failed(WalOp::Segment, e, &mut w));
        }
        let first = w.next_lsn;
        let file = self.create_segment(first).inspect_err(|e| {
            let kind = e.fault().unwrap_or(StorageFault::Io);
            self.observer.failed(WalOp::Segment, kind);
            w.last_error = Some(e.to_string());
        })?;
        tracing::warn!(
            truncated = %w.path.display(),
            to_bytes = synced,
            next_lsn = first,
            "write-ahead log recovered from a fault; new segment started"
        );
        w.file = Arc::new(file);
        w.path = segment_path(&self.options.dir, first);
        w.size = 0;
        w.synced_size = 0;
        w.segments.push(first);
        w.fault = None;
        self.faulted.store(false, Ordering::Release);
        // Every earlier record is durable or lost.
        self.durable.send_if_modified(|d| {
            let newer = first - 1 > d.lsn;
            d.lsn = d.lsn.max(first - 1);
            newer
        });
        Ok(())
    }

    fn sync(&self) -> Result<(), WalError> {
        let _one = lock(&self.syncing);
        let (file, upto, path, size) = {
            let w = lock(&self.writer);
            if let Some(f) = &w.fault {
                return Err(WalError::Lost {
                    message: f.why.clone(),
                    fault: f.kind,
                });
            }
            (Arc::clone(&w.file), w.next_lsn - 1, w.path.clone(), w.size)
        };
        if self.durable.borrow().lsn >= upto {
            return Ok(());
        }
        let start = Instant::now();
        if let Err(e) = file.sync_data() {
            let kind = StorageFault::of(&e);
            let why = format!("fsync of {} failed: {e}", path.display());
            self.observer.failed(WalOp::Fsync, kind);
            let mut w = lock(&self.writer);
            // A segment rolled over since was fsynced by the rollover.
            if w.path == path {
                self.fault(&mut w, kind, why.clone());
            }
            return Err(WalError::Lost {
                message: why,
                fault: kind,
            });
        }
        self.observer.synced(start.elapsed());
        {
            let mut w = lock(&self.writer);
            if w.path == path {
                w.synced_size = w.synced_size.max(size);
            }
        }
        self.durable.send_if_modified(|d| {
            let newer = upto > d.lsn;
            d.lsn = d.lsn.max(upto);
            newer
        });
        Ok(())
    }
}

/// The fsync thread: sleeps until a waiter asks for an LSN that is not yet
/// durable, waits `group_delay` to gather more, syncs.
fn sync_loop(s: &Shared) {
    loop {
        {
            let mut r = lock(&s.request);
            loop {
                if r.stop {
                    return;
                }
                if r.wanted > s.durable.borrow().lsn && !s.faulted.load(Ordering::Acquire) {
                    break;
                }
                r = s.wake.wait(r).unwrap_or_else(|e| e.into_inner());
            }
        }
        if !s.options.group_delay.is_zero() {
            std::thread::sleep(s.options.group_delay);
        }
        let _ = s.sync();
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        lock(&self.shared.request).stop = true;
        self.shared.wake.notify_all();
        if let Some(h) = lock(&self.syncer).take() {
            let _ = h.join();
        }
        let _ = self.shared.sync();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::stream_config::DEFAULT_THRESHOLD;

    fn id(s: &str) -> StreamId {
        StreamId::new(s).unwrap()
    }

    fn samples(n: usize, base: f64) -> Vec<Sample> {
        let t = chrono::NaiveDate::from_ymd_opt(2026, 11, 27)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        (0..n)
            .map(|i| Sample {
                timestamp: t + chrono::Duration::seconds(i as i64 * 300),
                value: base + i as f64 * 0.25,
                learn: if i % 2 == 0 { None } else { Some(false) },
            })
            .collect()
    }

    fn entries() -> Vec<Entry> {
        let config = StreamConfig::with_preset("default", DEFAULT_THRESHOLD);
        vec![
            Entry::Put {
                stream: id("a"),
                config: config.clone(),
            },
            Entry::Samples {
                stream: id("a"),
                config: None,
                samples: samples(3, 1.0),
            },
            Entry::Samples {
                stream: id("b"),
                config: Some(config),
                samples: samples(1, -7.5),
            },
            Entry::Reset { stream: id("a") },
            Entry::Delete { stream: id("b") },
        ]
    }

    fn options(dir: &Path, segment_bytes: u64) -> WalOptions {
        WalOptions {
            dir: dir.to_path_buf(),
            segment_bytes,
            group_delay: Duration::ZERO,
        }
    }

    fn open(dir: &Path, segment_bytes: u64) -> (Wal, OpenReport, Vec<(u64, Entry)>) {
        let mut seen = Vec::new();
        let (wal, report) = Wal::open(
            options(dir, segment_bytes),
            1,
            Arc::new(NoObserver),
            |lsn, e| seen.push((lsn, e)),
        )
        .unwrap();
        (wal, report, seen)
    }

    fn only_segment(dir: &Path) -> PathBuf {
        let segs = list_segments(dir).unwrap();
        let non_empty: Vec<_> = segs
            .into_iter()
            .filter(|(_, p)| fs::metadata(p).unwrap().len() > 0)
            .collect();
        assert_eq!(non_empty.len(), 1);
        non_empty[0].1.clone()
    }

    #[test]
    fn records_round_trip_in_order_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, report, seen) = open(dir.path(), 1 << 20);
        assert_eq!((report.records, report.next_lsn), (0, 1));
        assert!(seen.is_empty());
        for (i, e) in entries().iter().enumerate() {
            assert_eq!(wal.append(&e.as_entry_ref()).unwrap(), i as u64 + 1);
        }
        wal.sync().unwrap();
        drop(wal);
        let (wal, report, seen) = open(dir.path(), 1 << 20);
        assert_eq!(report.torn, 0);
        assert_eq!(report.next_lsn, 6);
        let want: Vec<_> = entries()
            .into_iter()
            .enumerate()
            .map(|(i, e)| (i as u64 + 1, e))
            .collect();
        assert_eq!(seen, want);
        assert_eq!(wal.append(&entries()[3].as_entry_ref()).unwrap(), 6);
    }

    #[tokio::test]
    async fn wait_durable_returns_once_synced() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, _) = open(dir.path(), 1 << 20);
        let lsn = wal.append(&entries()[0].as_entry_ref()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), wal.wait_durable(lsn))
            .await
            .expect("synced in time")
            .unwrap();
    }

    #[test]
    fn a_torn_last_record_is_dropped_at_every_cut() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (wal, _, _) = open(dir.path(), 1 << 20);
            for e in entries() {
                wal.append(&e.as_entry_ref()).unwrap();
            }
        }
        let path = only_segment(dir.path());
        let full = fs::read(&path).unwrap();
        let whole = parse_segment(&full, 1);
        assert_eq!(whole.records.len(), 5);
        // Where the last record starts.
        let last_start = {
            let four = parse_segment(&full, 1);
            let mut at = 0;
            for _ in 0..4 {
                let len = u32::from_le_bytes(full[at..at + 4].try_into().unwrap()) as usize;
                at += RECORD_HEADER_LEN + len;
            }
            assert!(four.torn.is_none());
            at
        };
        for cut in last_start..full.len() {
            let case = tempfile::tempdir().unwrap();
            let seg = case.path().join(path.file_name().unwrap());
            fs::write(&seg, &full[..cut]).unwrap();
            let (wal, report, seen) = open(case.path(), 1 << 20);
            assert_eq!(seen.len(), 4, "cut at {cut}");
            assert_eq!(seen[3].1, entries()[3]);
            assert_eq!(report.torn, u64::from(cut != last_start), "cut at {cut}");
            assert_eq!(fs::metadata(&seg).unwrap().len(), last_start as u64);
            // The next record takes the dropped one's LSN.
            assert_eq!(wal.append(&entries()[0].as_entry_ref()).unwrap(), 5);
        }
    }

    #[test]
    fn a_corrupt_byte_stops_reading_at_its_record() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (wal, _, _) = open(dir.path(), 1 << 20);
            for e in entries() {
                wal.append(&e.as_entry_ref()).unwrap();
            }
        }
        let path = only_segment(dir.path());
        let full = fs::read(&path).unwrap();
        let first_len =
            RECORD_HEADER_LEN + u32::from_le_bytes(full[0..4].try_into().unwrap()) as usize;
        for (byte, want_records) in [(first_len + 20, 1), (3, 0), (first_len + 9, 1)] {
            let mut bad = full.clone();
            bad[byte] ^= 0x10;
            let parsed = parse_segment(&bad, 1);
            assert_eq!(parsed.records.len(), want_records, "byte {byte}");
            assert!(parsed.torn.is_some());
        }
        // Reopening with a flipped payload bit in record 2 keeps record 1,
        // truncates the rest, and never replays garbage.
        let mut bad = full.clone();
        bad[first_len + 20] ^= 0x01;
        fs::write(&path, &bad).unwrap();
        let (_, report, seen) = open(dir.path(), 1 << 20);
        assert_eq!(seen.len(), 1);
        assert_eq!(report.torn, 1);
        assert!(report.notes[0].contains("Checksum"), "{:?}", report.notes);
    }

    #[test]
    fn framing_an_encoded_payload_gives_the_encoded_record() {
        let mut record = Vec::new();
        for (i, e) in entries().iter().enumerate() {
            let lsn = 7 + i as u64;
            encode_record(lsn, &e.as_entry_ref(), &mut record).unwrap();
            // Appended after what `out` already holds.
            let mut framed = vec![0xAA];
            frame_record(lsn, &record[RECORD_HEADER_LEN..], &mut framed);
            assert_eq!((framed[0], &framed[1..]), (0xAA, &record[..]));
        }
    }

    #[test]
    fn an_lsn_out_of_sequence_is_corrupt() {
        let e = entries();
        let mut bytes = Vec::new();
        let mut buf = Vec::new();
        encode_record(1, &e[0].as_entry_ref(), &mut buf).unwrap();
        bytes.extend_from_slice(&buf);
        encode_record(3, &e[1].as_entry_ref(), &mut buf).unwrap();
        bytes.extend_from_slice(&buf);
        let parsed = parse_segment(&bytes, 1);
        assert_eq!(parsed.records.len(), 1);
        assert_eq!(
            parsed.torn,
            Some(Torn::Sequence {
                expected: 2,
                found: 3
            })
        );
        // A zero-filled tail (file size extended, data not written).
        let mut zeros = buf.clone();
        zeros.iter_mut().for_each(|b| *b = 0);
        let parsed = parse_segment(&zeros, 1);
        assert!(parsed.records.is_empty() && parsed.torn.is_some());
    }

    #[test]
    fn segments_roll_over_and_covered_ones_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, _) = open(dir.path(), 200);
        let e = Entry::Samples {
            stream: id("s"),
            config: None,
            samples: samples(4, 0.0),
        };
        for _ in 0..20 {
            wal.append(&e.as_entry_ref()).unwrap();
        }
        let segs = wal.segments();
        assert!(segs.len() > 3, "{segs:?}");
        assert_eq!(list_segments(dir.path()).unwrap().len(), segs.len());
        for path in list_segments(dir.path()).unwrap() {
            assert!(fs::metadata(&path.1).unwrap().len() <= 200);
        }
        // Nothing is needed before LSN segs[2]: the first two segments go.
        assert_eq!(wal.delete_segments_before(segs[2]).unwrap(), 2);
        assert_eq!(wal.segments(), segs[2..].to_vec());
        assert_eq!(list_segments(dir.path()).unwrap().len(), segs.len() - 2);
        // One LSN short of the next boundary deletes nothing more.
        assert_eq!(wal.delete_segments_before(segs[3] - 1).unwrap(), 0);
        // Everything covered: all but the open segment go.
        assert_eq!(
            wal.delete_segments_before(u64::MAX).unwrap(),
            segs.len() - 3
        );
        assert_eq!(wal.segments().len(), 1);
        drop(wal);
        // After a restart, LSNs continue past the deleted records.
        let (wal, report, seen) = open(dir.path(), 200);
        assert_eq!(report.torn, 0);
        assert!(seen.iter().all(|(lsn, _)| *lsn >= segs[segs.len() - 1]));
        assert_eq!(wal.next_lsn(), 21);
        // Sealed, the open segment's records can go too: nothing to replay.
        wal.append(&e.as_entry_ref()).unwrap();
        wal.seal().unwrap();
        wal.seal().unwrap();
        assert!(wal.delete_segments_before(wal.next_lsn()).unwrap() >= 1);
        drop(wal);
        let (wal, _, seen) = open(dir.path(), 200);
        assert!(seen.is_empty(), "{seen:?}");
        assert_eq!(wal.next_lsn(), 22);
    }

    #[tokio::test]
    async fn records_after_a_failed_fsync_are_lost_never_replayed_and_the_log_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, _) = open(dir.path(), 1 << 20);
        let e = entries();
        for entry in &e[..3] {
            wal.append(&entry.as_entry_ref()).unwrap();
        }
        wal.sync().unwrap();
        let unsynced = [
            wal.append(&e[3].as_entry_ref()).unwrap(),
            wal.append(&e[4].as_entry_ref()).unwrap(),
        ];
        wal.inject_fsync_failure(StorageFault::Io);
        for lsn in unsynced {
            let err = wal.wait_durable(lsn).await.unwrap_err();
            assert!(matches!(err, WalError::Lost { .. }), "{err:?}");
        }
        wal.wait_durable(3).await.unwrap();
        assert!(wal.storage_error().is_some());
        // The next append recovers: new segment, LSNs not reused.
        assert_eq!(wal.append(&e[0].as_entry_ref()).unwrap(), 6);
        assert!(wal.storage_error().is_none());
        tokio::time::timeout(Duration::from_secs(10), wal.wait_durable(6))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(wal.segments(), vec![1, 6]);
        drop(wal);
        let (wal, report, seen) = open(dir.path(), 1 << 20);
        let lsns: Vec<u64> = seen.iter().map(|(lsn, _)| *lsn).collect();
        assert_eq!(lsns, [1, 2, 3, 6], "lost records must not be replayed");
        assert_eq!(report.torn, 0);
        assert_eq!(wal.next_lsn(), 7);
    }

    #[test]
    fn next_lsn_is_at_least_the_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, report) = Wal::open(
            options(dir.path(), 1 << 20),
            42,
            Arc::new(NoObserver),
            |_, _| {},
        )
        .unwrap();
        assert_eq!(report.next_lsn, 42);
        assert_eq!(
            wal.append(&EntryRef::Reset { stream: &id("x") }).unwrap(),
            42
        );
    }
}
