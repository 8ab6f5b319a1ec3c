//! A global allocator that counts every allocation and reallocation, per thread (the
//! no-allocation checks of the per-packet paths, which run on the test's own thread: tests of
//! one binary run on parallel threads, so a process-wide count would see the others'). A test
//! binary that declares `mod counting_alloc;` allocates through it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    // A const-initialised `Cell<u64>` has no destructor: using it allocates nothing and
    // registers nothing, so the allocator can use it.
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: nothing to count once the thread's locals are gone.
    let _ = COUNT.try_with(|c| c.set(c.get() + 1));
}

/// Allocations and reallocations so far on this thread.
pub fn allocs() -> u64 {
    COUNT.with(Cell::get)
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: same layout, forwarded.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `alloc` with this layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn the_count_sees_this_threads_allocations_only() {
    let before = allocs();
    let v: Vec<u8> = std::hint::black_box(Vec::with_capacity(64));
    assert_eq!(allocs() - before, 1);
    // Another thread's thousand allocations are not counted here (spawning and joining it
    // allocate a few times on this thread).
    let before = allocs();
    let other = std::thread::spawn(|| {
        for _ in 0..1000 {
            drop(std::hint::black_box(Vec::<u8>::with_capacity(64)));
        }
        allocs()
    });
    assert!(other.join().expect("joined") >= 1000);
    assert!(allocs() - before < 100, "{}", allocs() - before);
    drop(v);
}
