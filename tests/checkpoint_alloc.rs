//! Writing a checkpoint must not copy the model in memory: the encoding is
//! streamed into the file, and no part of the model is cloned to be
//! encoded. A copy of a large part of a model (megabytes, every checkpoint
//! round) is what made a server's memory creep up checkpoint after
//! checkpoint (README "Soak"), so this checks the largest single allocation
//! made while a trained model is encoded, with a global allocator that
//! records it.
//!
//! This file holds a single test so no other test thread allocates while
//! it measures (the record is per thread anyway).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{BufWriter, Sink};

use chrono::{Duration, NaiveDate};
use htm_stream::model::{Model, ModelParams};
use htm_stream::store::codec;

/// Forwards to the system allocator, recording the largest allocation
/// (or reallocation) the current thread asked for.
struct LargestAllocation;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    // `try_with`: the thread-local may be gone while a thread shuts down.
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: LargestAllocation = LargestAllocation;

/// The largest block encoding may allocate: bincode's and serde's own small
/// buffers fit far below it.
const BOUND: usize = 64 * 1024;

#[test]
fn encoding_a_checkpoint_copies_no_part_of_the_model() {
    let mut params = ModelParams::nab();
    params.set_value_range(0.0, 100.0);
    params.set_probationary_period(750);
    let mut model = Model::new(params).unwrap();
    let t0 = NaiveDate::from_ymd_opt(2026, 1, 5)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    // Hourly samples of a daily pattern with a weekly wobble and a little
    // deterministic noise, so the Temporal Memory grows many synapses.
    for i in 0..3_000i64 {
        let day = (i % 24) as f64 / 24.0 * std::f64::consts::TAU;
        let week = (i % 168) as f64 / 168.0 * std::f64::consts::TAU;
        let noise = ((i * 7_919) % 13) as f64 - 6.0;
        model.step(
            t0 + Duration::hours(i),
            50.0 + 30.0 * day.sin() + 10.0 * week.cos() + noise,
            true,
        );
    }
    let synapses = model.internals().unwrap().synapses;
    // Each synapse record is 16 bytes (presynaptic cell, segment,
    // permanence, fanout slot); the test means something only if a copy of
    // them would be far above the bound.
    let synapse_records_bytes = synapses * 16;
    assert!(
        synapse_records_bytes > 8 * BOUND,
        "only {synapses} synapses: the model is too small for this test"
    );

    let mut out: BufWriter<Sink> = BufWriter::with_capacity(1 << 16, std::io::sink());
    LARGEST.with(|largest| largest.set(0));
    codec::encode_to_writer(&model, &mut out).unwrap();
    let largest = LARGEST.with(Cell::get);

    assert!(
        largest < BOUND,
        "encoding allocated a block of {largest} bytes (the synapse records \
         alone are {synapse_records_bytes} bytes)"
    );
}
