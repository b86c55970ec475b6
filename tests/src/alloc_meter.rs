//! Heap metering for one node of the world (the `sim` binary's "memory" column).
//!
//! [`Meter`] is a global allocator over the system one. Every block carries a
//! small header naming its owner: the metered node when the block was allocated
//! while the world was running that node's code ([`World::meter`] names the node;
//! the world sets [`enter`]/[`leave`] around its handlers), anyone else otherwise.
//! A block is charged to its owner until it is freed, wherever that happens, so
//! the figure is the live heap the node's code allocated and still holds
//! (including its datagrams and TCP bytes still in flight in the world queue).
//!
//! Only the `sim` binary (and a machinery test) installs the allocator; elsewhere
//! [`live`] and [`peak`] stay 0 and `enter`/`leave` cost a thread-local store.
//! The owner is per thread; the counters are per process (one metered node).
//!
//! [`World::meter`]: crate::world::World::meter

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};

thread_local! {
    /// Per thread, so worlds on other threads (parallel tests) are not charged.
    static OWNER: Cell<u8> = const { Cell::new(0) };
}
static LIVE: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Allocations from now on belong to the metered node.
#[inline]
pub fn enter() {
    OWNER.with(|o| o.set(1));
}

/// Allocations from now on belong to the rest of the world.
#[inline]
pub fn leave() {
    OWNER.with(|o| o.set(0));
}

/// Live heap bytes charged to the metered node (requested sizes, no headers).
pub fn live() -> i64 {
    LIVE.load(Relaxed)
}

/// The largest [`live`] value seen.
pub fn peak() -> i64 {
    PEAK.load(Relaxed)
}

/// Whether [`Meter`] is the global allocator (else the figures mean nothing).
pub fn installed() -> bool {
    INSTALLED.load(Relaxed)
}

/// Resets the counters (between worlds). Blocks still live from before and
/// freed later are not charged to anyone afterwards.
pub fn reset() {
    LIVE.store(0, Relaxed);
    PEAK.store(0, Relaxed);
}

/// The owner-tagging allocator. Install with `#[global_allocator]`.
pub struct Meter;

/// Header bytes before each block: at least 16, and the block's alignment.
#[inline]
fn header(align: usize) -> usize {
    align.max(16)
}

#[inline]
fn charge(owner: u8, delta: i64) {
    if owner == 1 {
        let now = LIVE.fetch_add(delta, Relaxed) + delta;
        if delta > 0 {
            PEAK.fetch_max(now, Relaxed);
        }
    }
}

// SAFETY: every block handed out is `header` bytes into a block of the system
// allocator with the same alignment and `header` more bytes; the owner byte sits
// at the start of that block, and `dealloc`/`realloc` undo the offset with the
// same layout-derived `header`.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        INSTALLED.store(true, Relaxed);
        let h = header(layout.align());
        let Ok(full) = Layout::from_size_align(layout.size() + h, layout.align().max(16)) else {
            return std::ptr::null_mut();
        };
        let base = System.alloc(full);
        if base.is_null() {
            return base;
        }
        // During thread teardown the owner is gone: the rest of the world.
        let owner = OWNER.try_with(Cell::get).unwrap_or(0);
        *base = owner;
        charge(owner, layout.size() as i64);
        base.add(h)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let h = header(layout.align());
        let base = ptr.sub(h);
        charge(*base, -(layout.size() as i64));
        let full = Layout::from_size_align_unchecked(layout.size() + h, layout.align().max(16));
        System.dealloc(base, full);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let h = header(layout.align());
        let base = ptr.sub(h);
        let owner = *base;
        let full = Layout::from_size_align_unchecked(layout.size() + h, layout.align().max(16));
        let nb = System.realloc(base, full, new_size + h);
        if nb.is_null() {
            return nb;
        }
        charge(owner, new_size as i64 - layout.size() as i64);
        nb.add(h)
    }
}
