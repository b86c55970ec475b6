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

    #[test]
    fn bencode_writer() {
        let mut v = Vec::new();
        bencode::int(&mut v, -3);
        bencode::bytes(&mut v, b"spam");
        assert_eq!(v, b"i-3e4:spam");
    }
}
