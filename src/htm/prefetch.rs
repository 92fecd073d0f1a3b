//! Software prefetch: start loading memory the next step of a loop will
//! read, so the load overlaps the work on the current item.
//!
//! With many streams, each model's memory has left the CPU caches by the
//! time its next sample comes (a model is megabytes; the server steps
//! hundreds of them in turn), and a step then waits on hundreds of
//! scattered cache misses, many in chains where one miss gives the address
//! of the next: a fanout list's head, then the list, per active cell; a
//! classifier row's index, then the row; a segment's list headers, then its
//! lists. The loops over those know the items a few iterations ahead; a
//! prefetch issued then turns a serial chain of misses into overlapping
//! ones. (The Spatial Pooler's row update is a straight pass the hardware
//! prefetcher already streams; prefetching its next row did not help.) A
//! prefetch is only a hint: it never faults, changes no value, and costs a
//! few instructions when the data is already cached.

/// Bytes per cache line on the CPUs we run on (x86-64 and most ARM cores).
const LINE: usize = 64;

/// Hint that every cache line of `data` is about to be read or written.
#[inline(always)]
pub fn slice<T>(data: &[T]) {
    let bytes = std::mem::size_of_val(data);
    let base = data.as_ptr().cast::<i8>();
    let mut offset = 0;
    while offset < bytes {
        line(base.wrapping_add(offset));
        offset += LINE;
    }
}

/// Hint that the cache line holding `value` is about to be read or written.
#[inline(always)]
pub fn item<T>(value: &T) {
    line(std::ptr::from_ref(value).cast::<i8>());
}

#[inline(always)]
fn line(address: *const i8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch never dereferences in the language's sense:
        // it cannot fault, and any address is allowed.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(address) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}
