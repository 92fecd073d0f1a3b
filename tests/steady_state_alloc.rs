//! "No heap allocation per step in steady state except when segments or
//! synapses grow" (issue 2), checked with a counting global allocator.
//!
//! A model with the `nab` preset learns a daily-periodic signal until it
//! predicts it; then every further step is counted. A step may allocate only
//! if the model grew during it: more Temporal Memory segments or synapses
//! (they are created and destroyed every step; only an increase may need
//! memory), or more of the memory the model reports (the classifier's weight rows and categories,
//! which grow when a cell or a value bucket is seen for the first time).
//! Everything else (encoders, Spatial Pooler, Temporal Memory activity,
//! likelihood, predictor inference) must reuse its buffers.
//!
//! This file holds a single test so no other test thread allocates while
//! it counts (the counter is per thread anyway).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use chrono::{Duration, NaiveDate};
use htm_stream::model::{Model, ModelParams};

/// Forwards to the system allocator, counting allocations and reallocations
/// made by the current thread.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    // `try_with`: the thread-local may be gone while a thread shuts down.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// What may grow during a step; a step that increases none of it must not
/// allocate.
#[derive(Debug, Clone, Copy)]
struct Size {
    segments: usize,
    synapses: usize,
    memory_bytes: usize,
}

impl Size {
    /// Whether anything that may need memory increased since `before`
    /// (synapses come and go every step; only an increase can allocate).
    fn grew_from(&self, before: &Size) -> bool {
        self.segments > before.segments
            || self.synapses > before.synapses
            || self.memory_bytes > before.memory_bytes
    }
}

fn size(model: &Model) -> Size {
    let internals = model.internals().expect("the nab preset builds at once");
    Size {
        segments: internals.segments,
        synapses: internals.synapses,
        memory_bytes: model.memory_bytes(),
    }
}

#[test]
fn steady_state_steps_do_not_allocate() {
    let mut params = ModelParams::nab();
    params.set_value_range(0.0, 100.0);
    params.set_probationary_period(750);
    let mut model = Model::new(params).unwrap();

    let t0 = NaiveDate::from_ymd_opt(2026, 1, 5)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    // Hourly samples of a daily pattern with a weekly wobble.
    let value = |i: i64| {
        let day = (i % 24) as f64 / 24.0 * std::f64::consts::TAU;
        let week = (i % 168) as f64 / 168.0 * std::f64::consts::TAU;
        50.0 + 30.0 * day.sin() + 10.0 * week.cos()
    };

    let warmup = 3_000;
    for i in 0..warmup {
        model.step(t0 + Duration::hours(i), value(i), true);
    }

    let measured = 1_500;
    let (mut quiet_steps, mut growing_steps) = (0, 0);
    let mut offenders = Vec::new();
    for i in warmup..warmup + measured {
        let before = size(&model);
        let allocations_before = allocations();
        let output = model.step(t0 + Duration::hours(i), value(i), true);
        let allocated = allocations() - allocations_before;
        assert!(output.learned);
        if !size(&model).grew_from(&before) {
            quiet_steps += 1;
            if allocated > 0 {
                offenders.push((i, allocated));
            }
        } else {
            growing_steps += 1;
        }
    }
    assert!(
        offenders.is_empty(),
        "steps that allocated without the model growing (step, allocations): {offenders:?}"
    );
    // The test means something only if many measured steps were quiet.
    assert!(
        quiet_steps > measured / 3,
        "{quiet_steps} quiet and {growing_steps} growing steps of {measured}"
    );
}
