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
//! Within the metered node's own figure, the blocks it allocates inside
//! [`as_storage`] (the harness's maps that stand in for the database) are also
//! counted apart ([`storage`]), so that the crawler's heap is [`live`] less
//! [`storage`], both measured (not estimated from the maps' capacities).
//!
//! Only the `sim` binary (and a machinery test) installs the allocator; elsewhere
//! [`live`] and [`peak`] stay 0 and `enter`/`leave` cost a thread-local store.
//! The owner is per thread; each thread charges its metered node to its own
//! counter slot ([`use_slot`]), so worlds run on parallel threads are metered
//! apart (a block is charged to the slot it was allocated in, wherever freed).
//!
//! [`World::meter`]: crate::world::World::meter

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};

/// Meter slots: a world on its own thread meters its node in its own slot.
pub const SLOTS: usize = 8;

thread_local! {
    /// Per thread, so worlds on other threads are not charged; 0 = nobody,
    /// 1..=SLOTS the metered node of that slot, SLOTS+1..=2*SLOTS the same
    /// node's storage stand-in ([`as_storage`]).
    static OWNER: Cell<u8> = const { Cell::new(0) };
    /// The slot this thread's metered node is charged to (1..=SLOTS).
    static SLOT: Cell<u8> = const { Cell::new(1) };
}
/// One slot's counters, on a cache line of their own (worlds on other cores
/// update their own slots without invalidating this one).
#[repr(align(64))]
struct Counters {
    live: AtomicI64,
    peak: AtomicI64,
}
#[allow(clippy::declare_interior_mutable_const)]
const ZERO: Counters = Counters {
    live: AtomicI64::new(0),
    peak: AtomicI64::new(0),
};
static COUNTERS: [Counters; SLOTS + 1] = [ZERO; SLOTS + 1];
/// Per slot, the part of its live heap allocated inside [`as_storage`]. Such
/// blocks carry the owner `slot + SLOTS`.
#[allow(clippy::declare_interior_mutable_const)]
const ZERO_STORAGE: AtomicI64 = AtomicI64::new(0);
static STORAGE: [AtomicI64; SLOTS + 1] = [ZERO_STORAGE; SLOTS + 1];
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Allocations from now on belong to the metered node.
#[inline]
pub fn enter() {
    OWNER.with(|o| o.set(SLOT.with(Cell::get)));
}

/// Allocations from now on belong to the rest of the world, until [`resume`]
/// with the returned owner (for memory the world keeps for itself, such as its
/// datagram buffer pool, even while a metered node is running).
#[inline]
pub fn suspend() -> u8 {
    OWNER.with(|o| o.replace(0))
}

/// Undoes [`suspend`].
#[inline]
pub fn resume(owner: u8) {
    OWNER.with(|o| o.set(owner));
}

/// Runs `f` with what it allocates, if the metered node is running, counted
/// as that node's storage stand-in ([`storage`]) as well as in its [`live`]
/// heap. Elsewhere (another node running, or nobody) it just runs `f`.
#[inline]
pub fn as_storage<R>(f: impl FnOnce() -> R) -> R {
    let o = OWNER.with(Cell::get);
    let metered = (1..=SLOTS as u8).contains(&o);
    if metered {
        OWNER.with(|c| c.set(o + SLOTS as u8));
    }
    let r = f();
    if metered {
        OWNER.with(|c| c.set(o));
    }
    r
}

/// Charges this thread's metered node to `slot` (1..=[`SLOTS`]; default 1), so
/// worlds on several threads are metered apart.
pub fn use_slot(slot: usize) {
    SLOT.with(|s| s.set(slot.clamp(1, SLOTS) as u8));
}

fn slot() -> usize {
    SLOT.with(Cell::get) as usize
}

/// Allocations from now on belong to the rest of the world.
#[inline]
pub fn leave() {
    OWNER.with(|o| o.set(0));
}

/// Live heap bytes charged to this thread's metered node (requested sizes, no
/// headers).
pub fn live() -> i64 {
    COUNTERS[slot()].live.load(Relaxed)
}

/// Of [`live`], the bytes allocated inside [`as_storage`] and still held
/// (requested sizes, no headers).
pub fn storage() -> i64 {
    STORAGE[slot()].load(Relaxed)
}

/// The largest [`live`] value seen.
pub fn peak() -> i64 {
    COUNTERS[slot()].peak.load(Relaxed)
}

/// Whether [`Meter`] is the global allocator (else the figures mean nothing).
pub fn installed() -> bool {
    INSTALLED.load(Relaxed)
}

/// Resets the counters (between worlds). Blocks still live from before and
/// freed later are not charged to anyone afterwards.
pub fn reset() {
    COUNTERS[slot()].live.store(0, Relaxed);
    COUNTERS[slot()].peak.store(0, Relaxed);
    STORAGE[slot()].store(0, Relaxed);
}

/// Restarts [`peak`] from the live heap now (to read the peak of an interval).
pub fn reset_peak() {
    let c = &COUNTERS[slot()];
    c.peak.store(c.live.load(Relaxed), Relaxed);
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
    let mut o = owner as usize;
    if o > SLOTS && o <= 2 * SLOTS {
        o -= SLOTS;
        STORAGE[o].fetch_add(delta, Relaxed);
    }
    if o != 0 && o <= SLOTS {
        let now = COUNTERS[o].live.fetch_add(delta, Relaxed) + delta;
        if delta > 0 {
            COUNTERS[o].peak.fetch_max(now, Relaxed);
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
        // Load first: a store on every call would bounce the flag's cache line
        // between the cores of worlds run side by side.
        if !INSTALLED.load(Relaxed) {
            INSTALLED.store(true, Relaxed);
        }
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
