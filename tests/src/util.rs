//! Small deterministic helpers: a fixed hasher for lookup-only maps, the trace
//! hash, seeds from the environment, and a tiny bencode writer.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A fast, fixed (unseeded) hasher. Maps built with it are only ever used for
/// lookups, or iterated in an order that does not reach the trace.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(K);
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(i as u64);
    }
    fn write_u16(&mut self, i: u16) {
        self.write_u64(i as u64);
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(i as u64);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

pub type FxBuild = BuildHasherDefault<FxHasher>;
pub type FxMap<K, V> = HashMap<K, V, FxBuild>;
pub type FxSet<K> = HashSet<K, FxBuild>;

/// The determinism oracle: a running 64-bit hash over every delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceHash {
    h: u64,
    /// Deliveries hashed so far.
    pub count: u64,
}

impl Default for TraceHash {
    fn default() -> Self {
        TraceHash {
            h: 0xcbf2_9ce4_8422_2325,
            count: 0,
        }
    }
}

impl TraceHash {
    #[inline]
    fn mix(&mut self, v: u64) {
        self.h = (self.h ^ v)
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(29);
    }
    pub fn record(&mut self, time: u64, from: u64, to: u64, bytes: &[u8]) {
        self.count += 1;
        self.mix(time);
        self.mix(from);
        self.mix(to);
        self.mix(bytes.len() as u64);
        let mut words = bytes.chunks_exact(8);
        for c in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            self.mix(u64::from_le_bytes(b));
        }
        // The tail, zero-padded (the same value as hashing it as a short chunk).
        let tail = words.remainder();
        if !tail.is_empty() {
            let mut b = [0u8; 8];
            for (d, s) in b.iter_mut().zip(tail) {
                *d = *s;
            }
            self.mix(u64::from_le_bytes(b));
        }
    }
    pub fn value(&self) -> u64 {
        self.h ^ self.count
    }
}

/// Hints the CPU to start loading the memory of `r` (up to its first 256
/// bytes) into the cache. No effect on behaviour.
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = (r as *const T).cast::<i8>();
        let size = std::mem::size_of::<T>().clamp(1, 256);
        let mut off = 0;
        while off < size {
            // SAFETY: a prefetch is only a hint: it never faults, writes
            // nothing and changes no observable state; the address lies
            // inside `*r` (or is its start, for a zero-sized `T`).
            #[allow(unsafe_code)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off));
            }
            off += 64;
        }
        // The last line, when `*r` straddles one more than its size suggests.
        let last = p.wrapping_add(size - 1);
        if (last as usize) / 64 != (p.wrapping_add(off - 64) as usize) / 64 {
            #[allow(unsafe_code)]
            // SAFETY: as above; `last` lies inside `*r`.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(last);
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// [`prefetch`] for the cache lines of the first `max` bytes of `b`.
#[inline(always)]
pub fn prefetch_bytes(b: &[u8], max: usize) {
    for chunk in b[..b.len().min(max)].chunks(64) {
        prefetch(&chunk[0]);
    }
}

/// One entry of a [`RadixHeap`]: the key `(hi, lo)` (compared as one 128-bit
/// number) and a value carried along.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RadixEntry {
    pub hi: u64,
    pub lo: u64,
    pub val: u32,
}

impl RadixEntry {
    #[inline]
    fn key(&self) -> u128 {
        (self.hi as u128) << 64 | self.lo as u128
    }
}

/// A min-queue for keys that mostly never go below the last one taken out (a
/// simulation clock): a radix heap. Keys are 128-bit (`(time, sequence)` for
/// the world's queue) and should be unique; equal keys come out in any order.
///
/// Bucket `b` (1..=128) holds keys above `last` whose highest bit differing
/// from `last` is bit `b - 1`; `front` holds the keys up to `last`, sorted,
/// and they are the smallest of all. Pushing appends to one bucket. When the
/// front runs dry, the lowest non-empty bucket is emptied: a small one is
/// sorted into the front whole (`last` becomes its largest key); a large one
/// is redistributed into lower buckets around its smallest key, which goes to
/// the front. Entries move only downwards, in sequential appends, instead of a
/// binary heap's log n scattered sift steps. A key up to `last` (a push into
/// the past, or into the span of the front) is inserted into the front in
/// order, so the order is exactly a binary heap's.
pub struct RadixHeap {
    buckets: Vec<Vec<RadixEntry>>,
    /// Bit `b - 1` set: bucket `b` is not empty (`b` in 1..=128).
    occupied: u128,
    last: u128,
    /// The smallest entries, largest first (the next one out is at the end).
    front: Vec<RadixEntry>,
    len: usize,
}

impl Default for RadixHeap {
    fn default() -> Self {
        RadixHeap {
            buckets: (0..=128).map(|_| Vec::new()).collect(),
            occupied: 0,
            last: 0,
            front: Vec::new(),
            len: 0,
        }
    }
}

impl RadixHeap {
    /// Buckets up to this size are sorted into the front rather than
    /// redistributed (which would take several more passes for few entries).
    const SORT_MAX: usize = 16;

    #[inline]
    fn bucket_of(&self, key: u128) -> usize {
        (128 - (key ^ self.last).leading_zeros()) as usize
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, e: RadixEntry) {
        self.len += 1;
        let key = e.key();
        if key <= self.last {
            let at = self.front.partition_point(|f| f.key() > key);
            self.front.insert(at, e);
            return;
        }
        let b = self.bucket_of(key);
        self.buckets[b].push(e);
        self.occupied |= 1 << (b - 1);
    }

    /// Refills the front from the lowest non-empty bucket if it is empty;
    /// false if everything is.
    fn settle(&mut self) -> bool {
        if !self.front.is_empty() {
            return true;
        }
        if self.occupied == 0 {
            return false;
        }
        let b = self.occupied.trailing_zeros() as usize + 1;
        self.occupied &= !(1 << (b - 1));
        let mut moving = std::mem::take(&mut self.buckets[b]);
        if moving.len() <= Self::SORT_MAX {
            // Every bucket above `b` still differs from the largest key here
            // first at the same bit as from the old `last`.
            moving.sort_unstable_by_key(|e| std::cmp::Reverse(e.key()));
            self.last = moving.first().map_or(self.last, RadixEntry::key);
            self.front.append(&mut moving);
        } else {
            self.last = moving
                .iter()
                .map(RadixEntry::key)
                .min()
                .unwrap_or(self.last);
            // Every key of bucket `b` now differs from `last` below bit `b - 1`.
            for e in moving.drain(..) {
                let nb = self.bucket_of(e.key());
                if nb == 0 {
                    self.front.push(e);
                } else {
                    self.buckets[nb].push(e);
                    self.occupied |= 1 << (nb - 1);
                }
            }
        }
        self.buckets[b] = moving;
        true
    }

    /// Takes out the entry with the smallest key.
    pub fn pop(&mut self) -> Option<RadixEntry> {
        if !self.settle() {
            return None;
        }
        let e = self.front.pop();
        self.len -= e.is_some() as usize;
        e
    }

    /// The entry with the smallest key, readying it to be taken out.
    pub fn peek_mut(&mut self) -> Option<RadixEntry> {
        if !self.settle() {
            return None;
        }
        self.front.last().copied()
    }

    /// The entry with the smallest key if it is ready to be taken out (the
    /// front is not empty); `None` means "not known without a search", not
    /// "empty".
    pub fn peek_ready(&self) -> Option<RadixEntry> {
        self.front.last().copied()
    }

    /// The entry with the smallest key (without moving anything).
    pub fn peek(&self) -> Option<RadixEntry> {
        if let Some(e) = self.front.last() {
            return Some(*e);
        }
        if self.occupied == 0 {
            return None;
        }
        let b = self.occupied.trailing_zeros() as usize + 1;
        self.buckets[b].iter().min_by_key(|e| e.key()).copied()
    }
}

thread_local! {
    static SEED: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// The seed for a test: `SIM_SEED` if set, else `default`.
///
/// It is also remembered for this thread, and a panic hook (installed once)
/// prints it after any panic on the thread — an assertion without the seed in
/// its message, an `unwrap`, a panic inside the world — so every failure names
/// the seed that replays it.
pub fn seed_from_env(default: u64) -> u64 {
    let seed = std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default);
    SEED.with(|s| s.set(Some(seed)));
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            if let Some(seed) = SEED.try_with(|s| s.get()).ok().flatten() {
                eprintln!("simulation seed {seed}: replay with SIM_SEED={seed}");
            }
        }));
    });
    seed
}

/// A minimal bencode writer (for synthetic info dicts and BitTorrent messages).
pub mod bencode {
    pub fn int(out: &mut Vec<u8>, v: i64) {
        out.push(b'i');
        out.extend_from_slice(v.to_string().as_bytes());
        out.push(b'e');
    }
    pub fn bytes(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(b.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    #[test]
    fn trace_hash_depends_on_every_field() {
        let base = {
            let mut t = TraceHash::default();
            t.record(1, 2, 3, b"abc");
            t.value()
        };
        for (a, b, c, d) in [
            (9u64, 2u64, 3u64, &b"abc"[..]),
            (1, 9, 3, b"abc"),
            (1, 2, 9, b"abc"),
            (1, 2, 3, b"abd"),
        ] {
            let mut t = TraceHash::default();
            t.record(a, b, c, d);
            assert_ne!(t.value(), base);
        }
    }

    /// The radix heap gives exactly a binary heap's order, through random
    /// pushes (mostly ahead of the last key taken out, some into the past, some
    /// equal in time), pops and peeks.
    #[test]
    fn radix_heap_matches_a_binary_heap() {
        let mut rng = magnetar_core::Rng::new(7);
        let mut radix = RadixHeap::default();
        let mut reference: BinaryHeap<Reverse<RadixEntry>> = BinaryHeap::new();
        let (mut now, mut seq, mut popped) = (0u64, 0u64, 0usize);
        for round in 0..200_000u32 {
            match rng.below(10) {
                0..=4 => {
                    seq += 1;
                    let at = match rng.below(20) {
                        0 => now.saturating_sub(rng.below(1_000)),
                        1 => now,
                        2 => now + rng.below(1 << 40),
                        _ => now + rng.below(100_000),
                    };
                    let e = RadixEntry {
                        hi: at,
                        lo: seq,
                        val: round,
                    };
                    radix.push(e);
                    reference.push(Reverse(e));
                }
                5..=7 => {
                    let want = reference.pop().map(|r| r.0);
                    assert_eq!(radix.pop(), want, "pop {round}");
                    if let Some(e) = want {
                        now = now.max(e.hi);
                        popped += 1;
                    }
                }
                8 => {
                    let want = reference.peek().map(|r| r.0);
                    assert_eq!(radix.peek(), want, "peek {round}");
                    if let Some(e) = radix.peek_ready() {
                        assert_eq!(Some(e), want, "peek_ready {round}");
                    }
                }
                _ => assert_eq!(
                    radix.peek_mut(),
                    reference.peek().map(|r| r.0),
                    "peek_mut {round}"
                ),
            }
            assert_eq!(radix.len(), reference.len());
        }
        while let Some(Reverse(e)) = reference.pop() {
            assert_eq!(radix.pop(), Some(e));
        }
        assert!(radix.pop().is_none() && radix.is_empty());
        assert!(popped > 50_000, "{popped}");
    }

    #[test]
    fn bencode_writer() {
        let mut v = Vec::new();
        bencode::int(&mut v, -3);
        bencode::bytes(&mut v, b"spam");
        assert_eq!(v, b"i-3e4:spam");
    }
}
