//! 160-bit identifiers: [`NodeId`] and [`InfoHash`], XOR [`Distance`] (BEP 5), and
//! BEP 42 node-ID generation and verification ([`bep42_node_id`], [`bep42_verify`]).

use std::fmt;
use std::net::IpAddr;

use crate::rng::Rng;

macro_rules! id20 {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Copy, Clone, PartialEq, Eq, Hash, Default)]
        pub struct $name(pub [u8; 20]);

        // Byte-wise (big-endian) order, as derived, but compared as two integers
        // instead of a `memcmp` call: ids key most of the crawler's ordered maps.
        impl Ord for $name {
            #[inline]
            fn cmp(&self, o: &Self) -> std::cmp::Ordering {
                cmp20(&self.0, &o.0)
            }
        }
        impl PartialOrd for $name {
            #[inline]
            fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(o))
            }
        }

        impl $name {
            /// All zero bits.
            pub const ZERO: $name = $name([0; 20]);

            /// Reads 20 bytes; `None` for any other length.
            pub fn from_slice(b: &[u8]) -> Option<Self> {
                <[u8; 20]>::try_from(b).ok().map($name)
            }
            /// The 20 bytes, most significant first.
            pub fn as_bytes(&self) -> &[u8; 20] {
                &self.0
            }
            /// 20 random bytes from `rng`.
            pub fn random(rng: &mut Rng) -> Self {
                $name(rng.bytes())
            }
            /// Lowercase hex, 40 characters.
            pub fn to_hex(&self) -> String {
                hex(&self.0)
            }
            /// Parses 40 hex digits (either case).
            pub fn from_hex(s: &str) -> Option<Self> {
                let s = s.as_bytes();
                if s.len() != 40 {
                    return None;
                }
                let mut out = [0u8; 20];
                for (i, pair) in s.chunks_exact(2).enumerate() {
                    let hi = hexval(pair[0])?;
                    let lo = hexval(pair[1])?;
                    out[i] = hi << 4 | lo;
                }
                Some($name(out))
            }
            /// XOR distance to another 160-bit value.
            pub fn distance(&self, other: &[u8; 20]) -> Distance {
                let mut d = [0u8; 20];
                for (i, b) in d.iter_mut().enumerate() {
                    *b = self.0[i] ^ other[i];
                }
                Distance(d)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), hex(&self.0))
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex(&self.0))
            }
        }
    };
}

id20!(
    /// A DHT node's identifier.
    NodeId
);
id20!(
    /// A torrent's v1 infohash (SHA-1 of the info dict), or a v2 infohash truncated to 20 bytes.
    InfoHash
);

impl From<InfoHash> for NodeId {
    fn from(ih: InfoHash) -> Self {
        NodeId(ih.0)
    }
}
impl From<NodeId> for InfoHash {
    fn from(id: NodeId) -> Self {
        InfoHash(id.0)
    }
}

/// Compares two 20-byte strings lexicographically (= as big-endian integers).
#[inline]
fn cmp20(a: &[u8; 20], b: &[u8; 20]) -> std::cmp::Ordering {
    let (mut a16, mut b16, mut a4, mut b4) = ([0u8; 16], [0u8; 16], [0u8; 4], [0u8; 4]);
    a16.copy_from_slice(&a[..16]);
    b16.copy_from_slice(&b[..16]);
    a4.copy_from_slice(&a[16..]);
    b4.copy_from_slice(&b[16..]);
    u128::from_be_bytes(a16)
        .cmp(&u128::from_be_bytes(b16))
        .then(u32::from_be_bytes(a4).cmp(&u32::from_be_bytes(b4)))
}

/// XOR distance between two ids. Ordered as a big-endian 160-bit integer.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub struct Distance(pub [u8; 20]);

impl Ord for Distance {
    #[inline]
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        cmp20(&self.0, &o.0)
    }
}
impl PartialOrd for Distance {
    #[inline]
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Distance {
    /// Leading zero bits (160 when the ids are equal).
    pub fn leading_zeros(&self) -> u32 {
        let mut n = 0;
        for b in self.0 {
            if b == 0 {
                n += 8;
            } else {
                return n + b.leading_zeros();
            }
        }
        n
    }
    /// The distance exponent: `160 - leading_zeros`, so 0 for equal ids and 160
    /// when the top bits differ. Bucket `i` of a Kademlia table holds distances with exponent `i`.
    pub fn exponent(&self) -> u32 {
        160 - self.leading_zeros()
    }
}

fn hex(b: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(HEX[(x >> 4) as usize] as char);
        s.push(HEX[(x & 15) as usize] as char);
    }
    s
}

fn hexval(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// BEP 42: addresses that cannot be verified (loopback, private, link-local,
/// unspecified) are exempt from the node-ID restriction.
pub fn bep42_exempt(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified()
        }
        IpAddr::V6(v6) => {
            let seg0 = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (seg0 & 0xfe00) == 0xfc00 // unique local
                || (seg0 & 0xffc0) == 0xfe80 // link local
                || v6.to_ipv4_mapped().is_some_and(|v4| bep42_exempt(IpAddr::V4(v4)))
        }
    }
}

/// The CRC32C prefix for `ip` and the 3-bit random `r` (BEP 42).
fn bep42_crc(ip: IpAddr, r: u8) -> u32 {
    let r = r & 7;
    match ip {
        IpAddr::V4(v4) => {
            const MASK: [u8; 4] = [0x03, 0x0f, 0x3f, 0xff];
            let mut b = v4.octets();
            for (x, m) in b.iter_mut().zip(MASK) {
                *x &= m;
            }
            b[0] |= r << 5;
            crc32c::crc32c(&b)
        }
        IpAddr::V6(v6) => {
            const MASK: [u8; 8] = [0x01, 0x03, 0x07, 0x0f, 0x1f, 0x3f, 0x7f, 0xff];
            let o = v6.octets();
            let mut b = [0u8; 8];
            for i in 0..8 {
                b[i] = o[i] & MASK[i];
            }
            b[0] |= r << 5;
            crc32c::crc32c(&b)
        }
    }
}

/// A BEP 42 node ID for external address `ip`, with `rng` supplying `r` and the free bits.
pub fn bep42_node_id(ip: IpAddr, rng: &mut Rng) -> NodeId {
    let id: [u8; 20] = rng.bytes();
    bep42_shape(ip, id[19] & 7, id)
}

/// A BEP 42 node ID for external address `ip` with `r` (its low 3 bits) chosen by
/// the caller (several identities on one address take different `r`, hence
/// different prefixes) and every other free bit from `rng`: 139 random bits.
pub fn bep42_node_id_r(ip: IpAddr, r: u8, rng: &mut Rng) -> NodeId {
    let mut id: [u8; 20] = rng.bytes();
    id[19] = (id[19] & !7) | (r & 7);
    bep42_shape(ip, r & 7, id)
}

/// `id` with the BEP 42 prefix for `ip` and `r` written over its first 21 bits.
fn bep42_shape(ip: IpAddr, r: u8, mut id: [u8; 20]) -> NodeId {
    let crc = bep42_crc(ip, r);
    id[0] = (crc >> 24) as u8;
    id[1] = (crc >> 16) as u8;
    id[2] = ((crc >> 8) as u8 & 0xf8) | (id[2] & 0x07);
    NodeId(id)
}

/// Whether `id` satisfies BEP 42 for `ip`. Exempt addresses always pass.
pub fn bep42_verify(id: &NodeId, ip: IpAddr) -> bool {
    if bep42_exempt(ip) {
        return true;
    }
    bep42_matches(id, ip)
}

/// Whether `id` carries the BEP 42 prefix for `ip`, with no exemption for local ranges.
pub fn bep42_matches(id: &NodeId, ip: IpAddr) -> bool {
    let crc = bep42_crc(ip, id.0[19] & 7);
    id.0[0] == (crc >> 24) as u8
        && id.0[1] == (crc >> 16) as u8
        && (id.0[2] & 0xf8) == ((crc >> 8) as u8 & 0xf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn id_order_is_byte_order() {
        let mut rng = Rng::new(7);
        let mut ids: Vec<[u8; 20]> = (0..2000).map(|_| rng.bytes()).collect();
        // Ids that differ only late, or only in the last 4 bytes.
        for i in 0..200 {
            let mut a = ids[i];
            a[..16].copy_from_slice(&ids[0][..16]);
            ids.push(a);
            let mut b = ids[0];
            b[19] = i as u8;
            ids.push(b);
        }
        for w in ids.windows(2) {
            let (a, b) = (w[0], w[1]);
            assert_eq!(NodeId(a).cmp(&NodeId(b)), a.cmp(&b));
            assert_eq!(InfoHash(a).cmp(&InfoHash(b)), a.cmp(&b));
            assert_eq!(Distance(a).cmp(&Distance(b)), a.cmp(&b));
            assert_eq!(NodeId(a).cmp(&NodeId(a)), std::cmp::Ordering::Equal);
        }
    }

    #[test]
    fn bep42_vectors() {
        // The table in BEP 42: ip, rand, example id.
        let rows = [
            (
                "124.31.75.21",
                1u8,
                "5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eee401",
            ),
            (
                "21.75.31.124",
                86,
                "5a3ce9c14e7a08645677bbd1cfe7d8f956d53256",
            ),
            (
                "65.23.51.170",
                22,
                "a5d43220bc8f112a3d426c84764f8c2a1150e616",
            ),
            (
                "84.124.73.14",
                65,
                "1b0321dd1bb1fe518101ceef99462b947a01ff41",
            ),
            (
                "43.213.53.83",
                90,
                "e56f6cbf5b7c4be0237986d5243b87aa6d51305a",
            ),
        ];
        for (ip, rand, id) in rows {
            let ip: IpAddr = ip.parse().unwrap();
            let id = NodeId::from_hex(id).unwrap();
            assert_eq!(id.0[19], rand);
            assert!(bep42_matches(&id, ip), "{ip}");
            assert!(bep42_verify(&id, ip));
            let crc = bep42_crc(ip, rand & 7);
            assert_eq!(id.0[0], (crc >> 24) as u8);
            // Flipping a prefix bit breaks it.
            let mut bad = id;
            bad.0[1] ^= 0x10;
            assert!(!bep42_matches(&bad, ip));
        }
    }

    #[test]
    fn generated_ids_verify() {
        let mut rng = Rng::new(42);
        for ip in [
            "1.2.3.4",
            "200.100.50.25",
            "2001:db8::1",
            "2a00:1450:4001::5",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            for _ in 0..20 {
                let id = bep42_node_id(ip, &mut rng);
                assert!(bep42_matches(&id, ip));
            }
        }
        let id = bep42_node_id("1.2.3.4".parse().unwrap(), &mut rng);
        assert!(!bep42_matches(&id, "5.6.7.8".parse().unwrap()));
        assert!(bep42_verify(&id, IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }

    #[test]
    fn distance_and_hex() {
        let a = NodeId([0xff; 20]);
        let b = NodeId([0; 20]);
        assert_eq!(a.distance(&b.0).exponent(), 160);
        assert_eq!(a.distance(&a.0).exponent(), 0);
        let mut c = a;
        c.0[19] ^= 1;
        assert_eq!(a.distance(&c.0).exponent(), 1);
        assert_eq!(NodeId::from_hex(&a.to_hex()), Some(a));
        assert_eq!(NodeId::from_hex("zz"), None);
        assert_eq!(NodeId::from_slice(&[1, 2, 3]), None);
    }
}
