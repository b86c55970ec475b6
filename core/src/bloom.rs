//! BEP 33 scrape bloom filters (m = 2048 bits, k = 2, SHA-1 indices).

use std::net::IpAddr;

use sha1::{Digest, Sha1};

/// A 256-byte BEP 33 bloom filter of IP addresses.
#[derive(Clone, PartialEq, Eq)]
pub struct Bloom(pub [u8; 256]);

impl Default for Bloom {
    fn default() -> Self {
        Bloom([0; 256])
    }
}

impl std::fmt::Debug for Bloom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bloom(~{:.0})", self.estimate())
    }
}

const M: usize = 256 * 8;

impl Bloom {
    /// Adds `ip` (IPv4-mapped IPv6 is first mapped to IPv4) by setting the two bits that
    /// BEP 33 derives from the first four bytes of SHA-1(address bytes).
    pub fn insert(&mut self, ip: IpAddr) {
        let d = match crate::addr::canonical(std::net::SocketAddr::new(ip, 0)).ip() {
            IpAddr::V4(v4) => Sha1::digest(v4.octets()),
            IpAddr::V6(v6) => Sha1::digest(v6.octets()),
        };
        let i1 = (d[0] as usize | (d[1] as usize) << 8) % M;
        let i2 = (d[2] as usize | (d[3] as usize) << 8) % M;
        self.0[i1 / 8] |= 1 << (i1 % 8);
        self.0[i2 / 8] |= 1 << (i2 % 8);
    }

    /// ORs another filter into this one (the union of the two sets).
    pub fn union(&mut self, other: &[u8; 256]) {
        for (a, b) in self.0.iter_mut().zip(other.iter()) {
            *a |= *b;
        }
    }

    /// Whether both bits of `ip` are set (it may be in the set).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let mut one = Bloom::default();
        one.insert(ip);
        self.0.iter().zip(one.0.iter()).all(|(a, b)| a & b == *b)
    }

    /// BEP 33 size estimate.
    pub fn estimate(&self) -> f64 {
        let zeros: u32 = self.0.iter().map(|b| b.count_zeros()).sum();
        if zeros as usize == M {
            return 0.0; // The formula gives 0.5 for an empty filter (c is capped at m-1).
        }
        let c = (zeros as f64).min((M - 1) as f64);
        let m = M as f64;
        (c / m).ln() / (2.0 * (1.0 - 1.0 / m).ln())
    }
}

/// BEP 33 (seeders, leechers) from the union of the seed and peer filters of the
/// answers, plus `values` handed out without filters (BEP 33, "Handling legacy
/// responses": counted as peers unless a seed filter holds them). `None` when no
/// answer carried a filter or a value.
pub(crate) fn scrape_estimate_of(
    seeds: &Bloom,
    peers: &Bloom,
    filters: bool,
    values: &[std::net::SocketAddr],
) -> Option<(u32, u32)> {
    if !filters && values.is_empty() {
        return None;
    }
    let mut p = peers.clone();
    for v in values {
        if !seeds.contains(v.ip()) {
            p.insert(v.ip());
        }
    }
    Some((seeds.estimate().round() as u32, p.estimate().round() as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn bep33_vector() {
        let mut b = Bloom::default();
        for i in 0..=255u8 {
            b.insert(IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)));
        }
        for i in 0..=0x3e7u16 {
            b.insert(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i)));
        }
        let expect = "F6C3F5EAA07FFD91BDE89F777F26FB2BFF37BDB8FB2BBAA2FD3DDDE7BACFFF75EE7CCBAE\
FE5EEDB1FBFAFF67F6ABFF5E43DDBCA3FD9B9FFDF4FFD3E9DFF12D1BDF59DB53DBE9FA5B\
7FF3B8FDFCDE1AFB8BEDD7BE2F3EE71EBBBFE93BCDEEFE148246C2BC5DBFF7E7EFDCF24F\
D8DC7ADFFD8FFFDFDDFFF7A4BBEEDF5CB95CE81FC7FCFF1FF4FFFFDFE5F7FDCBB7FD79B3\
FA1FC77BFE07FFF905B7B7FFC7FEFEFFE0B8370BB0CD3F5B7F2BD93FEB4386CFDD6F7FD5\
BFAF2E9EBFFFFEECD67ADBF7C67F17EFD5D75EBA6FFEBA7FFF47A91EB1BFBB53E8ABFB57\
62ABE8FF237279BFEFBFEEF5FFC5FEBFDFE5ADFFADFEE1FB737FFFFBFD9F6AEFFEEE76B6\
FD8F72EF";
        let got: String = b.0.iter().map(|x| format!("{x:02X}")).collect();
        assert_eq!(got, expect);
        assert!((b.estimate() - 1224.9308).abs() < 0.001, "{}", b.estimate());
        let mut u = Bloom::default();
        u.union(&b.0);
        assert_eq!(u, b);
        assert_eq!(Bloom::default().estimate(), 0.0);
        assert!(b.contains(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))));
        assert!(!Bloom::default().contains(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))));
    }

    #[test]
    fn legacy_values_count_as_peers_unless_seeds() {
        let seed: std::net::SocketAddr = "192.0.2.1:1".parse().unwrap();
        let peer: std::net::SocketAddr = "192.0.2.2:1".parse().unwrap();
        let mut s = Bloom::default();
        s.insert(seed.ip());
        let none = Bloom::default();
        // No filter, no value: nothing measured.
        assert_eq!(scrape_estimate_of(&none, &none, false, &[]), None);
        // Values only: each is a peer.
        let both = [seed, peer];
        assert_eq!(scrape_estimate_of(&none, &none, false, &both), Some((0, 2)));
        // A seed filter holding one of them: that one is a seed, not a peer.
        assert_eq!(scrape_estimate_of(&s, &none, true, &both), Some((1, 1)));
        // Filters without values: the filters alone (empty ones: a count of 0).
        assert_eq!(scrape_estimate_of(&s, &s, true, &[]), Some((1, 1)));
        assert_eq!(scrape_estimate_of(&none, &none, true, &[]), Some((0, 0)));
    }
}
