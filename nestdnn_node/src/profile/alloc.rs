//! A counting global allocator, so plan memory can be measured instead of estimated.
//!
//! Install it in a binary (the `nestdnn` tool, the benches and the tests that check memory do):
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: nestdnn::profile::alloc::CountingAlloc = nestdnn::profile::alloc::CountingAlloc;
//! ```
//!
//! It counts live heap bytes per thread (allocated minus freed on that thread) and process-wide.
//! [`ThreadMeasure`] brackets a piece of work on the current thread (a plan build) and reports
//! the bytes it left allocated and its transient peak, unaffected by other threads serving
//! frames at the same time. Without the allocator installed, [`is_installed`] is false and
//! measurements are `None`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// The system allocator with byte counters. Zero-sized; install with `#[global_allocator]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAlloc;

static INSTALLED: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);

thread_local! {
    static T_LIVE: Cell<i64> = const { Cell::new(0) };
    static T_PEAK: Cell<i64> = const { Cell::new(0) };
}

#[inline]
fn add(n: i64) {
    let live = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    if n > 0 {
        PEAK.fetch_max(live, Ordering::Relaxed);
    }
    // `try_with`: no-op during thread teardown. The cells have no destructor and a const
    // initialiser, so touching them never allocates.
    let _ = T_LIVE.try_with(|l| {
        let v = l.get() + n;
        l.set(v);
        let _ = T_PEAK.try_with(|p| {
            if v > p.get() {
                p.set(v)
            }
        });
    });
}

// SAFETY: every call is forwarded unchanged to `System`; the counters have no effect on the
// returned memory.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            if !INSTALLED.load(Ordering::Relaxed) {
                INSTALLED.store(true, Ordering::Relaxed);
            }
            add(layout.size() as i64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (all our allocations are).
        unsafe { System.dealloc(ptr, layout) };
        add(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

/// True once [`CountingAlloc`] has served an allocation, i.e. it is the global allocator.
pub fn is_installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// Process-wide live heap bytes (0 without the allocator).
pub fn live_bytes() -> i64 {
    LIVE.load(Ordering::Relaxed)
}

/// Process-wide peak of live heap bytes since start (0 without the allocator).
pub fn peak_bytes() -> i64 {
    PEAK.load(Ordering::Relaxed)
}

fn thread_live() -> i64 {
    T_LIVE.try_with(Cell::get).unwrap_or(0)
}

/// Measures heap use of work done on the current thread between [`ThreadMeasure::start`]
/// and [`ThreadMeasure::finish`].
#[derive(Debug)]
pub struct ThreadMeasure {
    start: i64,
    saved_peak: i64,
}

/// Result of a [`ThreadMeasure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measured {
    /// Bytes allocated and still live at the end (e.g. the plan that was built).
    pub retained: u64,
    /// Highest live bytes above the start level at any moment in between.
    pub peak: u64,
}

impl ThreadMeasure {
    /// Starts a measurement on the current thread.
    pub fn start() -> Self {
        let start = thread_live();
        let saved_peak = T_PEAK.try_with(|p| p.replace(start)).unwrap_or(0);
        ThreadMeasure { start, saved_peak }
    }

    /// Ends the measurement; `None` when the counting allocator is not installed.
    pub fn finish(self) -> Option<Measured> {
        let now = thread_live();
        let peak = T_PEAK
            .try_with(|p| {
                let peak = p.get();
                p.set(peak.max(self.saved_peak));
                peak
            })
            .unwrap_or(now);
        if !is_installed() {
            return None;
        }
        Some(Measured {
            retained: (now - self.start).max(0) as u64,
            peak: (peak - self.start).max(0) as u64,
        })
    }
}
