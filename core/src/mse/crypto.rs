//! The MSE primitives: Diffie-Hellman over the 768-bit MSE prime with generator
//! 2 (`num-bigint` does the modular exponentiation), the SHA-1 derivations
//! (`req1`, `req2 ^ req3`, `keyA`, `keyB`) and RC4 with the first 1,024
//! keystream bytes discarded (RustCrypto `rc4`).

use num_bigint::BigUint;
use rc4::consts::U20;
use rc4::{KeyInit, Rc4, StreamCipher};
use sha1::{Digest, Sha1};

/// Bytes of a public key and of the shared secret (768 bits, big-endian).
pub const KEY_LEN: usize = 96;

/// Bytes of a private key (160 bits).
pub const PRIVATE_LEN: usize = 20;

/// The MSE prime P, big-endian.
pub const PRIME: [u8; KEY_LEN] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xC9, 0x0F, 0xDA, 0xA2, 0x21, 0x68, 0xC2, 0x34,
    0xC4, 0xC6, 0x62, 0x8B, 0x80, 0xDC, 0x1C, 0xD1, 0x29, 0x02, 0x4E, 0x08, 0x8A, 0x67, 0xCC, 0x74,
    0x02, 0x0B, 0xBE, 0xA6, 0x3B, 0x13, 0x9B, 0x22, 0x51, 0x4A, 0x08, 0x79, 0x8E, 0x34, 0x04, 0xDD,
    0xEF, 0x95, 0x19, 0xB3, 0xCD, 0x3A, 0x43, 0x1B, 0x30, 0x2B, 0x0A, 0x6D, 0xF2, 0x5F, 0x14, 0x37,
    0x4F, 0xE1, 0x35, 0x6D, 0x6D, 0x51, 0xC2, 0x45, 0xE4, 0x85, 0xB5, 0x76, 0x62, 0x5E, 0x7E, 0xC6,
    0xF4, 0x4C, 0x42, 0xE9, 0xA6, 0x3A, 0x36, 0x21, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x05, 0x63,
];

/// Keystream bytes discarded after keying RC4.
pub const RC4_DROP: usize = 1024;

/// Why a peer's public key is refused (values that make the secret guessable).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum KeyFault {
    /// Y = 0.
    Zero,
    /// Y = 1.
    One,
    /// Y = P − 1.
    PMinusOne,
    /// Y ≥ P.
    OutOfRange,
}

fn prime() -> BigUint {
    BigUint::from_bytes_be(&PRIME)
}

fn to_bytes96(n: &BigUint) -> [u8; KEY_LEN] {
    let b = n.to_bytes_be();
    let mut out = [0u8; KEY_LEN];
    // n < P < 2^768, so `b` has at most 96 bytes; a longer one cannot happen,
    // but is cut rather than panicking.
    let take = b.len().min(KEY_LEN);
    let src = b.get(b.len() - take..).unwrap_or_default();
    if let Some(dst) = out.get_mut(KEY_LEN - take..) {
        dst.copy_from_slice(src);
    }
    out
}

/// Our public key G^x mod P for the private key `x` (big-endian).
pub fn public_key(x: &[u8; PRIVATE_LEN]) -> [u8; KEY_LEN] {
    let g = BigUint::from(2u32);
    to_bytes96(&g.modpow(&BigUint::from_bytes_be(x), &prime()))
}

/// Checks a peer's public key: 1 < Y < P − 1.
pub fn check_public(y: &[u8; KEY_LEN]) -> Result<(), KeyFault> {
    let p = prime();
    let y = BigUint::from_bytes_be(y);
    let one = BigUint::from(1u32);
    if y == BigUint::ZERO {
        Err(KeyFault::Zero)
    } else if y == one {
        Err(KeyFault::One)
    } else if y >= p {
        Err(KeyFault::OutOfRange)
    } else if y == p - one {
        Err(KeyFault::PMinusOne)
    } else {
        Ok(())
    }
}

/// The shared secret S = Y^x mod P as 96 big-endian bytes, after checking Y.
pub fn shared_secret(y: &[u8; KEY_LEN], x: &[u8; PRIVATE_LEN]) -> Result<[u8; KEY_LEN], KeyFault> {
    check_public(y)?;
    let s = BigUint::from_bytes_be(y).modpow(&BigUint::from_bytes_be(x), &prime());
    Ok(to_bytes96(&s))
}

fn hash(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// HASH('req1', S): the initiator's synchronisation marker.
pub fn req1(s: &[u8; KEY_LEN]) -> [u8; 20] {
    hash(&[b"req1", s])
}

/// HASH('req2', SKEY): what the answering side matches an infohash by.
pub fn req2(skey: &[u8; 20]) -> [u8; 20] {
    hash(&[b"req2", skey])
}

/// HASH('req3', S).
pub fn req3(s: &[u8; KEY_LEN]) -> [u8; 20] {
    hash(&[b"req3", s])
}

/// HASH('req2', SKEY) xor HASH('req3', S), as sent in step 3.
pub fn req2_xor_req3(skey: &[u8; 20], s: &[u8; KEY_LEN]) -> [u8; 20] {
    xor20(&req2(skey), &req3(s))
}

/// `a ^ b`.
pub fn xor20(a: &[u8; 20], b: &[u8; 20]) -> [u8; 20] {
    let mut out = [0u8; 20];
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x ^ y;
    }
    out
}

/// HASH('keyA', S, SKEY): the key of the initiator's sending stream.
pub fn key_a(s: &[u8; KEY_LEN], skey: &[u8; 20]) -> [u8; 20] {
    hash(&[b"keyA", s, skey])
}

/// HASH('keyB', S, SKEY): the key of the answering side's sending stream.
pub fn key_b(s: &[u8; KEY_LEN], skey: &[u8; 20]) -> [u8; 20] {
    hash(&[b"keyB", s, skey])
}

/// One direction's RC4 stream, the first [`RC4_DROP`] bytes already discarded.
pub struct Rc4Stream(Rc4<U20>);

impl Rc4Stream {
    /// Keys RC4 with `key` and discards 1,024 keystream bytes.
    pub fn new(key: &[u8; 20]) -> Self {
        let mut c = Rc4::<U20>::new(key.into());
        let mut drop = [0u8; RC4_DROP];
        c.apply_keystream(&mut drop);
        Rc4Stream(c)
    }

    /// XORs the next keystream bytes into `buf` (encrypts or decrypts).
    pub fn apply(&mut self, buf: &mut [u8]) {
        self.0.apply_keystream(buf);
    }
}
