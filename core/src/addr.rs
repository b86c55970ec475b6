//! Address families and the outgoing address filter: [`Family`] (which routing
//! table an address belongs to, BEP 32), [`canonical`] (IPv4-mapped IPv6 to IPv4) and
//! [`is_sendable`] (never send to reserved, multicast or, unless allowed, private
//! addresses).

use std::net::{IpAddr, SocketAddr};

/// IP family of a socket or routing table.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4 (including IPv4-mapped IPv6 addresses, see [`canonical`]).
    V4,
    /// IPv6 proper.
    V6,
}

impl Family {
    /// The family of `addr`; an IPv4-mapped IPv6 address counts as IPv4.
    pub fn of(addr: &SocketAddr) -> Family {
        match addr {
            SocketAddr::V4(_) => Family::V4,
            SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_some() => Family::V4,
            SocketAddr::V6(_) => Family::V6,
        }
    }
}

/// Maps an IPv4-mapped IPv6 address to plain IPv4; leaves others alone.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// Whether `addr` may be sent to. Port 0, unspecified, multicast, broadcast and
/// documentation/reserved ranges are never valid; loopback, private, link-local,
/// CGNAT and unique-local addresses are allowed only with `allow_private`.
pub fn is_sendable(addr: &SocketAddr, allow_private: bool) -> bool {
    if addr.port() == 0 {
        return false;
    }
    match canonical(*addr).ip() {
        IpAddr::V4(ip) => {
            let o = ip.octets();
            if ip.is_unspecified()
                || ip.is_multicast()
                || ip.is_broadcast()
                || ip.is_documentation()
                || o[0] == 0
                || o[0] >= 240
            {
                return false;
            }
            let private = ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10 CGNAT
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18/15 benchmarking
                || (o[0] == 192 && o[1] == 0 && o[2] == 0); // 192.0.0/24
            allow_private || !private
        }
        IpAddr::V6(ip) => {
            let s0 = ip.segments()[0];
            if ip.is_unspecified()
                || ip.is_multicast()
                || s0 == 0x2001 && ip.segments()[1] == 0x0db8
            {
                return false;
            }
            let private = ip.is_loopback()
                || (s0 & 0xfe00) == 0xfc00
                || (s0 & 0xffc0) == 0xfe80
                || (s0 == 0 && !ip.is_loopback()); // other ::/16 forms (v4-compatible etc.)
            allow_private || !private
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn filter() {
        assert!(is_sendable(&a("8.8.8.8:53"), false));
        assert!(!is_sendable(&a("8.8.8.8:0"), true));
        assert!(!is_sendable(&a("127.0.0.1:6881"), false));
        assert!(is_sendable(&a("127.0.0.1:6881"), true));
        assert!(!is_sendable(&a("10.1.2.3:6881"), false));
        assert!(!is_sendable(&a("192.168.1.1:6881"), false));
        assert!(!is_sendable(&a("224.0.0.1:6881"), true));
        assert!(!is_sendable(&a("255.255.255.255:6881"), true));
        assert!(!is_sendable(&a("0.1.2.3:6881"), true));
        assert!(!is_sendable(&a("100.64.0.1:6881"), false));
        assert!(is_sendable(&a("[2a00:1450::1]:6881"), false));
        assert!(!is_sendable(&a("[::1]:6881"), false));
        assert!(is_sendable(&a("[::1]:6881"), true));
        assert!(!is_sendable(&a("[ff02::1]:6881"), true));
        assert!(!is_sendable(&a("[fe80::1]:6881"), false));
        assert!(!is_sendable(&a("[::ffff:127.0.0.1]:6881"), false));
        assert_eq!(Family::of(&a("[::ffff:1.2.3.4]:1")), Family::V4);
        assert_eq!(canonical(a("[::ffff:1.2.3.4]:1")), a("1.2.3.4:1"));
    }
}
