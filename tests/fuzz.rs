//! Fuzzing of everything that decodes untrusted bytes (issue 6, "Faults and
//! hostile input"): request bodies (JSON object, JSON array, NDJSON, both
//! timestamp forms), checkpoint files and write-ahead-log segments.
//!
//! Inputs are arbitrary bytes and, more usefully, *mutated valid encodings*:
//! bit flips, overwritten bytes, truncations, inserted bytes, length prefixes
//! set huge and spliced ranges — for checkpoints and log records also with
//! the length and checksum fixed up afterwards, so the mutation reaches the
//! payload decoder instead of stopping at the checksum.
//!
//! Properties, for every input:
//! - no panic (a panic fails the case; an abort on allocation failure kills
//!   the test binary, which fails too);
//! - the result is a valid value or a clear error (parsed samples are finite
//!   and within the batch limit; log records re-encode to exactly the bytes
//!   they were read from and follow their LSN sequence);
//! - the peak heap allocated by the current thread while decoding stays under
//!   a bound linear in the input's length (a counting `#[global_allocator]`).
//!
//! Cases per property: `PROPTEST_CASES` (proptest's default of 256 when
//! unset keeps `cargo test --release` within seconds). The long runs
//! reported in README ("Reliability") set it to 100000.
//! Inputs that once found a bug are kept below as explicit regression tests.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::OnceLock;

use chrono::NaiveDate;
use htm_stream::server::sample::{parse_json, parse_ndjson};
use htm_stream::store::checkpoint::{self, CheckpointError, HEADER_LEN};
use htm_stream::store::wal::{
    encode_record, frame_record, parse_segment, Entry, RECORD_HEADER_LEN,
};
use htm_stream::store::{Sample, StreamConfig, StreamId, StreamState, DEFAULT_THRESHOLD};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Forwards to the system allocator, keeping the current thread's live and
/// peak heap bytes (tests run on several threads; each measures its own).
struct PeakAllocator;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    // `try_with`: the thread-locals may be gone while a thread shuts down.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

unsafe impl GlobalAlloc for PeakAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        track(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: PeakAllocator = PeakAllocator;

/// Run `f` and return its result with the peak heap bytes it allocated on
/// this thread above what was live when it started.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    let peak = PEAK.with(Cell::get) - base;
    (out, peak.max(0) as usize)
}

/// Largest batch the parsers are given (the server's default `--max-batch`).
const MAX_BATCH: usize = 10_000;

/// Peak heap a request body may cost while parsed: `serde_json::Value`
/// trees are a few dozen times larger than their text (a 7-byte `{"":0}`
/// is a map node of several hundred bytes).
fn body_bound(len: usize) -> usize {
    256 * len + (64 << 10)
}

/// Peak heap a checkpoint or log payload may cost while decoded: the codec
/// claims at most 16 bytes per input byte (rounded up to a power of two),
/// plus serde's capped pre-allocation of sequences (1 MiB each, one per
/// nesting level on the decode path).
fn payload_bound(len: usize) -> usize {
    64 * len + (8 << 20)
}

/// One way of damaging an encoding.
#[derive(Debug, Clone)]
enum Mutation {
    /// Flip one bit (position taken modulo the length).
    FlipBit(usize, u8),
    /// Overwrite one byte.
    SetByte(usize, u8),
    /// Cut the bytes at a position.
    Truncate(usize),
    /// Insert bytes at a position.
    Insert(usize, Vec<u8>),
    /// Overwrite with a varint length prefix claiming about 2^bits elements
    /// (bincode: 253 = a `u64` follows).
    HugeLength(usize, u8),
    /// Copy a range of the encoding over another place.
    Splice {
        /// Start of the copied range.
        from: usize,
        /// Its length.
        len: usize,
        /// Where it is written.
        to: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let pos = any::<usize>();
    prop_oneof![
        (pos, 0u8..8).prop_map(|(p, b)| Mutation::FlipBit(p, b)),
        (pos, any::<u8>()).prop_map(|(p, v)| Mutation::SetByte(p, v)),
        pos.prop_map(Mutation::Truncate),
        (pos, prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(p, b)| Mutation::Insert(p, b)),
        (pos, 16u8..64).prop_map(|(p, b)| Mutation::HugeLength(p, b)),
        (pos, 1usize..64, pos).prop_map(|(from, len, to)| Mutation::Splice { from, len, to }),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let n = bytes.len();
    match m {
        Mutation::FlipBit(p, b) => bytes[p % n] ^= 1 << b,
        Mutation::SetByte(p, v) => bytes[p % n] = *v,
        Mutation::Truncate(p) => bytes.truncate(p % n),
        Mutation::Insert(p, b) => {
            let at = p % (n + 1);
            bytes.splice(at..at, b.iter().copied());
        }
        Mutation::HugeLength(p, bits) => {
            let at = p % n;
            let mut prefix = vec![253u8];
            prefix.extend_from_slice(&(1u64 << bits).to_le_bytes());
            let end = (at + prefix.len()).min(n);
            bytes.splice(at..end, prefix);
        }
        Mutation::Splice { from, len, to } => {
            let from = from % n;
            let piece: Vec<u8> = bytes[from..(from + len).min(n)].to_vec();
            let to = to % n;
            let end = (to + piece.len()).min(n);
            bytes.splice(to..end, piece);
        }
    }
}

fn id(s: &str) -> StreamId {
    StreamId::new(s).unwrap()
}

fn samples(n: usize) -> Vec<Sample> {
    let t = NaiveDate::from_ymd_opt(2026, 11, 27)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    (0..n)
        .map(|i| Sample {
            timestamp: t + chrono::Duration::seconds(i as i64 * 300),
            value: (i as f64 * 0.7).sin() * 10.0,
            learn: (i % 3 == 0).then_some(false),
        })
        .collect()
}

/// A real checkpoint: a stream with the default preset after a few samples.
fn valid_checkpoint() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let config = StreamConfig::with_preset("default", DEFAULT_THRESHOLD);
        let mut state = StreamState::new(id("fuzz"), config).unwrap();
        state.apply(&samples(20), &mut Vec::new()).unwrap();
        checkpoint::encode(&state).unwrap()
    })
}

/// Set a checkpoint's header length and checksum to match its payload.
fn fix_checkpoint_header(bytes: &mut [u8]) {
    if bytes.len() < HEADER_LEN {
        return;
    }
    let len = (bytes.len() - HEADER_LEN) as u64;
    let crc = crc32fast::hash(&bytes[HEADER_LEN..]);
    bytes[12..20].copy_from_slice(&len.to_le_bytes());
    bytes[20..24].copy_from_slice(&crc.to_le_bytes());
}

/// Decode a checkpoint, asserting the bound on its peak allocation.
fn decode_checkpoint(bytes: &[u8]) -> Result<Result<StreamState, CheckpointError>, TestCaseError> {
    let (result, peak) = peak_of(|| checkpoint::decode::<StreamState>(bytes));
    let payload = bytes.len().saturating_sub(HEADER_LEN);
    prop_assert!(
        peak <= payload_bound(payload),
        "checkpoint decode of {} bytes allocated {peak} bytes at peak",
        bytes.len()
    );
    Ok(result)
}

/// A decoded stream is a value the codec round-trips: its encoding decodes
/// and encodes to the same bytes. (The input itself may be a non-canonical
/// encoding of it: chrono's text timestamps also accept a space-padded
/// hour.)
fn prop_assert_canonical_checkpoint(state: &StreamState) -> Result<(), TestCaseError> {
    let canonical = checkpoint::encode(state).unwrap();
    let again: StreamState = checkpoint::decode(&canonical).unwrap();
    prop_assert_eq!(checkpoint::encode(&again).unwrap(), canonical);
    Ok(())
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
            samples: samples(5),
        },
        Entry::Samples {
            stream: id("b"),
            config: Some(config),
            samples: samples(2),
        },
        Entry::Reset { stream: id("a") },
        Entry::Delete { stream: id("b") },
    ]
}

/// The first LSN of the segments built here.
const FIRST_LSN: u64 = 41;

/// The records of [`entries`] as payloads (without record headers).
fn valid_payloads() -> Vec<Vec<u8>> {
    entries()
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut rec = Vec::new();
            encode_record(FIRST_LSN + i as u64, &e.as_entry_ref(), &mut rec).unwrap();
            rec[RECORD_HEADER_LEN..].to_vec()
        })
        .collect()
}

/// Frame payloads as consecutive records with correct lengths and checksums.
fn frame(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, payload) in payloads.iter().enumerate() {
        frame_record(FIRST_LSN + i as u64, payload, &mut out);
    }
    out
}

/// Parse a segment and check what it yields: bounded allocation, records
/// that follow their LSNs and re-encode to exactly the bytes they came from.
fn check_segment(bytes: &[u8]) -> Result<usize, TestCaseError> {
    let (parsed, peak) = peak_of(|| parse_segment(bytes, FIRST_LSN));
    prop_assert!(
        peak <= payload_bound(bytes.len()),
        "segment of {} bytes allocated {peak} bytes at peak",
        bytes.len()
    );
    prop_assert!(parsed.valid_len <= bytes.len());
    prop_assert_eq!(parsed.torn.is_none(), parsed.valid_len == bytes.len());
    let mut again = Vec::new();
    let mut rec = Vec::new();
    for (i, (lsn, entry)) in parsed.records.iter().enumerate() {
        prop_assert_eq!(*lsn, FIRST_LSN + i as u64);
        encode_record(*lsn, &entry.as_entry_ref(), &mut rec).unwrap();
        again.extend_from_slice(&rec);
    }
    // The records read back are the records written again (their encoding
    // may differ: chrono also reads a space-padded hour, `T 1:10:00`).
    let reread = parse_segment(&again, FIRST_LSN);
    prop_assert!(reread.torn.is_none());
    prop_assert_eq!(&reread.records, &parsed.records);
    Ok(parsed.records.len())
}

/// A sample as a JSON text, from a small grammar of valid and nearly valid
/// pieces (huge and fractional unix seconds, RFC 3339 with offsets, wrong
/// types), so mutations start from something the parser mostly accepts.
fn sample_text() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        any::<f64>().prop_map(|v| format!("{v:?}")),
        Just("1e999".to_string()),
        Just("-0".to_string()),
        Just("\"1.5\"".to_string()),
        Just("null".to_string()),
    ];
    let timestamp = prop_oneof![
        Just(None),
        any::<i64>().prop_map(|t| Some(t.to_string())),
        any::<f64>().prop_map(|t| Some(format!("{t:?}"))),
        (-1e13f64..1e13).prop_map(|t| Some(format!("{t}"))),
        (0u32..10_000, 1u32..13, 1u32..32, 0u32..24, -1440i32..1440).prop_map(
            |(y, mo, d, h, off)| Some(format!(
                "\"{y:04}-{mo:02}-{d:02}T{h:02}:00:00{}{:02}:{:02}\"",
                if off < 0 { '-' } else { '+' },
                off.unsigned_abs() / 60,
                off.unsigned_abs() % 60
            ))
        ),
        Just(Some("\"2026-11-27 10:00:00.123\"".to_string())),
        Just(Some("[[[[1]]]]".to_string())),
    ];
    let learn = prop_oneof![Just(None), any::<bool>().prop_map(|b| Some(b.to_string()))];
    (value, timestamp, learn).prop_map(|(v, t, l)| {
        let mut s = format!("{{\"value\":{v}");
        if let Some(t) = t {
            s.push_str(&format!(",\"timestamp\":{t}"));
        }
        if let Some(l) = l {
            s.push_str(&format!(",\"learn\":{l}"));
        }
        s.push('}');
        s
    })
}

/// Parse `body` both as JSON and NDJSON; check samples and allocation.
fn check_body(body: &[u8]) -> Result<(), TestCaseError> {
    let (json, peak) = peak_of(|| parse_json(body, MAX_BATCH));
    prop_assert!(peak <= body_bound(body.len()), "JSON: {peak} bytes");
    let (ndjson, peak) = peak_of(|| parse_ndjson(body, MAX_BATCH));
    prop_assert!(peak <= body_bound(body.len()), "NDJSON: {peak} bytes");
    for samples in [json.map(|(_, s)| s), ndjson] {
        match samples {
            Ok(s) => {
                prop_assert!(!s.is_empty() && s.len() <= MAX_BATCH);
                prop_assert!(s.iter().all(|x| x.value.is_finite()));
            }
            Err(e) => {
                let status = e.status().as_u16();
                prop_assert!(status == 400 || status == 413, "{status}: {e}");
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/fuzz.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bodies_parse_or_fail_cleanly(body in prop::collection::vec(any::<u8>(), 0..4096)) {
        check_body(&body)?;
    }

    #[test]
    fn mutated_bodies_parse_or_fail_cleanly(
        items in prop::collection::vec(sample_text(), 1..40),
        as_array in any::<bool>(),
        mutations in prop::collection::vec(mutation(), 0..6),
    ) {
        let text = if as_array {
            format!("[{}]", items.join(","))
        } else {
            items.join("\n")
        };
        let mut body = text.into_bytes();
        for m in &mutations {
            mutate(&mut body, m);
        }
        check_body(&body)?;
    }

    #[test]
    fn arbitrary_checkpoint_payloads_decode_or_fail_cleanly(
        payload in prop::collection::vec(any::<u8>(), 0..4096),
    ) {
        let mut bytes = valid_checkpoint()[..HEADER_LEN].to_vec();
        bytes.extend_from_slice(&payload);
        fix_checkpoint_header(&mut bytes);
        let decoded = decode_checkpoint(&bytes)?;
        prop_assert!(decoded.is_err(), "random bytes decoded as a stream");
    }

    #[test]
    fn mutated_checkpoints_decode_or_fail_cleanly(
        mutations in prop::collection::vec(mutation(), 1..4),
        fix_header in any::<bool>(),
    ) {
        let mut bytes = valid_checkpoint().to_vec();
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        if fix_header {
            fix_checkpoint_header(&mut bytes);
        }
        if let Ok(state) = decode_checkpoint(&bytes)? {
            prop_assert_canonical_checkpoint(&state)?;
        }
    }

    #[test]
    fn arbitrary_segments_parse_or_stop_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        check_segment(&bytes)?;
    }

    #[test]
    fn mutated_segments_parse_or_stop_cleanly(
        mutations in prop::collection::vec(mutation(), 1..4),
        reframe in any::<bool>(),
    ) {
        let payloads = valid_payloads();
        let bytes = if reframe {
            // Damage one payload, then frame it correctly, so the damage
            // reaches the payload decoder.
            let mut payloads = payloads;
            let victim = mutations.len() % payloads.len();
            for m in &mutations {
                mutate(&mut payloads[victim], m);
            }
            frame(&payloads)
        } else {
            let mut bytes = frame(&payloads);
            for m in &mutations {
                mutate(&mut bytes, m);
            }
            bytes
        };
        check_segment(&bytes)?;
    }
}

/// The valid encodings themselves pass the properties (the mutation tests
/// start from them).
#[test]
fn valid_encodings_round_trip() {
    let bytes = valid_checkpoint();
    let state: StreamState = checkpoint::decode(bytes).unwrap();
    assert_eq!(checkpoint::encode(&state).unwrap(), bytes);
    let segment = frame(&valid_payloads());
    let parsed = parse_segment(&segment, FIRST_LSN);
    assert_eq!(
        parsed.records,
        entries()
            .into_iter()
            .enumerate()
            .map(|(i, e)| (FIRST_LSN + i as u64, e))
            .collect::<Vec<_>>()
    );
    assert!(parsed.torn.is_none());
}

/// Regression: a string length prefix of 2^60 in a checkpoint whose header
/// length and checksum match. bincode allocated the claimed length (zeroed)
/// before reading, so the process aborted on allocation failure; now the
/// bounded codec refuses it as a decode error.
#[test]
fn huge_length_prefix_in_a_checksummed_checkpoint_is_a_decode_error() {
    let mut bytes = valid_checkpoint().to_vec();
    // The payload starts with the stream id: a varint length, then bytes.
    let mut prefix = vec![253u8];
    prefix.extend_from_slice(&(1u64 << 60).to_le_bytes());
    bytes.splice(HEADER_LEN..HEADER_LEN + 1, prefix);
    fix_checkpoint_header(&mut bytes);
    let (result, peak) = peak_of(|| checkpoint::decode::<StreamState>(&bytes));
    assert!(
        matches!(result, Err(CheckpointError::Decode(_))),
        "{result:?}"
    );
    assert!(peak <= payload_bound(bytes.len()), "{peak}");
}

/// Regression: the same in a write-ahead-log record with a valid checksum:
/// reading stops at that record (a torn write) instead of aborting.
#[test]
fn huge_length_prefix_in_a_checksummed_log_record_stops_the_segment() {
    let mut payloads = valid_payloads();
    // Entry::Samples: variant index 0, then the stream id's length.
    let mut huge = vec![0u8, 253];
    huge.extend_from_slice(&(1u64 << 50).to_le_bytes());
    payloads[1].splice(0..2, huge);
    let segment = frame(&payloads);
    let parsed = parse_segment(&segment, FIRST_LSN);
    assert_eq!(parsed.records.len(), 1);
    assert!(
        matches!(parsed.torn, Some(htm_stream::store::wal::Torn::Decode(_))),
        "{:?}",
        parsed.torn
    );
}

/// Regression (found by the 100k-case run): one flipped bit turned a
/// timestamp `2026-11-27T01:10:00` in a checksummed checkpoint into
/// `2026-11-27T 1:10:00`, which chrono reads as the same time. The state
/// decodes; its encoding is not the input's but round-trips.
#[test]
fn a_space_padded_hour_in_a_checkpoint_decodes_to_the_same_time() {
    let mut bytes = valid_checkpoint().to_vec();
    let at = bytes
        .windows(19)
        .position(|w| w == b"2026-11-27T01:10:00")
        .unwrap();
    bytes[at + 11] = b' ';
    fix_checkpoint_header(&mut bytes);
    let state: StreamState = checkpoint::decode(&bytes).unwrap();
    let canonical = checkpoint::encode(&state).unwrap();
    assert_ne!(canonical, bytes);
    assert_eq!(canonical, valid_checkpoint());
}

/// Regression (found by the 100k-case run): the hour's leading zero of a
/// log record's sample timestamp flipped to a space (`2026-11-27T 0:00:00`),
/// with a valid checksum; the record is read as the same sample.
#[test]
fn a_space_padded_hour_in_a_log_record_reads_the_same_sample() {
    let mut payloads = valid_payloads();
    let at = payloads[1]
        .windows(11)
        .position(|w| w == b"2026-11-27T")
        .unwrap();
    payloads[1][at + 11] = b' ';
    let parsed = parse_segment(&frame(&payloads), FIRST_LSN);
    assert!(parsed.torn.is_none(), "{:?}", parsed.torn);
    assert_eq!(parsed.records[1].1, entries()[1]);
}
