//! Bit helpers over 160-bit ids, most significant bit first (bit 0 is the top bit
//! of byte 0). A "block" of length `len` around an id is the set of ids sharing its
//! first `len` bits: a contiguous, aligned range of the key space.

use crate::rng::Rng;

type Bytes = [u8; 20];

/// A 160-bit id as two integers (big-endian), so that ordering and XOR are plain
/// integer operations rather than byte-slice comparisons.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key(u128, u32);

impl Key {
    pub(crate) fn of(b: &Bytes) -> Key {
        let mut hi = [0u8; 16];
        let mut lo = [0u8; 4];
        hi.copy_from_slice(&b[..16]);
        lo.copy_from_slice(&b[16..]);
        Key(u128::from_be_bytes(hi), u32::from_be_bytes(lo))
    }
    pub(crate) fn xor(self, o: Key) -> Key {
        Key(self.0 ^ o.0, self.1 ^ o.1)
    }
    /// Leading zero bits (160 for zero).
    pub(crate) fn leading_zeros(self) -> u32 {
        if self.0 != 0 {
            self.0.leading_zeros()
        } else {
            128 + self.1.leading_zeros()
        }
    }
}

/// `id` with bit `i` flipped (no-op for `i >= 160`).
pub(crate) fn flip(mut id: Bytes, i: u32) -> Bytes {
    if i < 160 {
        id[(i / 8) as usize] ^= 0x80 >> (i % 8);
    }
    id
}

/// Length of the common prefix of `a` and `b`, in bits (160 when equal).
pub(crate) fn common_prefix(a: &Bytes, b: &Bytes) -> u32 {
    for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
        let d = x ^ y;
        if d != 0 {
            return i as u32 * 8 + d.leading_zeros();
        }
    }
    160
}

/// The lowest and highest ids sharing the first `len` bits (capped at 160) with `id`.
pub(crate) fn block(id: &Bytes, len: u32) -> (Bytes, Bytes) {
    let len = len.min(160);
    let mut lo = *id;
    let mut hi = *id;
    for j in 0..20u32 {
        let start = j * 8;
        let (l, h) = (&mut lo[j as usize], &mut hi[j as usize]);
        if len >= start + 8 {
            continue;
        }
        if len <= start {
            *l = 0;
            *h = 0xff;
        } else {
            let keep = len - start; // 1..=7
            let mask = 0xffu8 << (8 - keep);
            *l &= mask;
            *h |= !mask;
        }
    }
    (lo, hi)
}

/// A uniformly random id sharing the first `len` bits with `id`.
pub(crate) fn random_in_block(id: &Bytes, len: u32, rng: &mut Rng) -> Bytes {
    let (lo, hi) = block(id, len);
    let r: Bytes = rng.bytes();
    let mut out = [0u8; 20];
    for i in 0..20 {
        // Bits fixed by the prefix are equal in lo and hi; the free ones are 0 in lo, 1 in hi.
        let free = lo[i] ^ hi[i];
        out[i] = (lo[i] & !free) | (r[i] & free);
    }
    out
}

/// `x + 1` as a 160-bit integer; `None` on overflow.
pub(crate) fn successor(mut x: Bytes) -> Option<Bytes> {
    for b in x.iter_mut().rev() {
        if *b == 0xff {
            *b = 0;
        } else {
            *b += 1;
            return Some(x);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks() {
        let id = [0xa5u8; 20];
        assert_eq!(block(&id, 0), ([0; 20], [0xff; 20]));
        assert_eq!(block(&id, 160), (id, id));
        let (lo, hi) = block(&id, 3);
        assert_eq!(lo[0], 0xa0);
        assert_eq!(hi[0], 0xbf);
        assert_eq!(lo[1..], [0; 19]);
        assert_eq!(hi[1..], [0xff; 19]);
        let (lo, hi) = block(&id, 12);
        assert_eq!((lo[0], lo[1], hi[1]), (0xa5, 0xa0, 0xaf));
        assert_eq!(flip(id, 1)[0], 0xe5);
        assert_eq!(common_prefix(&id, &flip(id, 77)), 77);
        assert_eq!(common_prefix(&id, &id), 160);
        assert_eq!(successor([0xff; 20]), None);
        let mut one = [0u8; 20];
        one[19] = 1;
        assert_eq!(successor([0; 20]), Some(one));
        let k = Key::of(&id);
        assert_eq!(k.xor(k).leading_zeros(), 160);
        assert_eq!(k.xor(Key::of(&flip(id, 77))).leading_zeros(), 77);
        assert_eq!(k.xor(Key::of(&flip(id, 140))).leading_zeros(), 140);
        assert!(Key::of(&[0; 20]) < Key::of(&successor([0; 20]).unwrap()));
        assert!(Key::of(&flip([0; 20], 127)) > Key::of(&flip([0; 20], 130)));
        let mut rng = Rng::new(5);
        for len in [0, 1, 7, 8, 9, 100, 159, 160] {
            for _ in 0..20 {
                let r = random_in_block(&id, len, &mut rng);
                assert!(common_prefix(&r, &id) >= len);
            }
        }
    }
}
