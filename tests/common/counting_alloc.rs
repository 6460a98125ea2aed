//! A global allocator that counts allocations, for the "run allocates
//! nothing" tests. Include it with `#[path = "common/counting_alloc.rs"]
//! mod counting_alloc;` and install it with
//! `#[global_allocator] static GLOBAL: Counting = Counting;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Forwards to the system allocator, counting `alloc` and `realloc` calls.
pub struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

/// Allocations (and reallocations) so far, by every thread.
pub fn allocations() -> usize {
    ALLOCATIONS.load(Ordering::SeqCst)
}

// SAFETY: forwards every call to the system allocator unchanged; only
// counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// The fewest allocations any of `attempts` calls of `f` made. A thread
/// pool dropped by an earlier case winds its threads down in the
/// background, and their exit allocates; that lands in one window at most,
/// while an allocation inside `f` shows in every one.
pub fn fewest_allocations(attempts: usize, mut f: impl FnMut()) -> usize {
    (0..attempts)
        .map(|_| {
            let before = allocations();
            f();
            allocations() - before
        })
        .min()
        .unwrap_or(0)
}
