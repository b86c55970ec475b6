//! Address families and the outgoing address filter: [`Family`] (which routing
//! table an address belongs to, BEP 32), [`canonical`] (IPv4-mapped IPv6 to IPv4) and
//! [`is_sendable`] (never send to reserved, multicast or, unless allowed, private
//! addresses).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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

/// Whether `addr` may be sent to: the one address filter. Every address that
/// comes from the network (a datagram's source, KRPC `nodes`/`nodes6` and
/// `values`, an announcing peer, PEX `added`/`added6`) passes it before
/// anything is sent to it; the policy is [`crate::Config::allow_private`].
///
/// Never valid: port 0; unspecified; multicast; IPv4 broadcast, `0/8`,
/// `240/4` (reserved) and the documentation ranges (`192.0.2/24`,
/// `198.51.100/24`, `203.0.113/24`); IPv6 documentation (`2001:db8::/32`,
/// `3fff::/20`) and anything outside global unicast `2000::/3` that is not
/// listed below (IPv4-compatible `::/96`, discard-only `100::/64`, ...).
///
/// Valid only with `allow_private`: IPv4 loopback `127/8`, RFC 1918
/// (`10/8`, `172.16/12`, `192.168/16`), link-local `169.254/16`, CGNAT
/// `100.64/10`, benchmarking `198.18/15`, IETF `192.0.0/24`; IPv6 loopback,
/// unique-local `fc00::/7`, link-local `fe80::/10`, site-local `fec0::/10`,
/// benchmarking `2001:2::/48` and local-use NAT64 `64:ff9b:1::/48`.
///
/// Addresses that embed an IPv4 address are judged by it: IPv4-mapped
/// `::ffff:0:0/96` (see [`canonical`]), well-known NAT64 `64:ff9b::/96` (a
/// NAT64 gateway would carry the packet to that IPv4 address) and 6to4
/// `2002::/16`. Teredo (`2001::/32`) counts as public.
pub fn is_sendable(addr: &SocketAddr, allow_private: bool) -> bool {
    if addr.port() == 0 {
        return false;
    }
    match canonical(*addr).ip() {
        IpAddr::V4(ip) => v4_class(ip).allowed(allow_private),
        IpAddr::V6(ip) => v6_class(ip).allowed(allow_private),
    }
}

/// How the filter sees an IP address.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Class {
    /// Globally routable.
    Public,
    /// Loopback, private, link-local and the like: only with `allow_private`.
    Private,
    /// Never sent to.
    Never,
}

impl Class {
    fn allowed(self, allow_private: bool) -> bool {
        match self {
            Class::Public => true,
            Class::Private => allow_private,
            Class::Never => false,
        }
    }
}

fn v4_class(ip: Ipv4Addr) -> Class {
    let o = ip.octets();
    if ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || o[0] == 0
        || o[0] >= 240
    {
        return Class::Never;
    }
    let private = ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10 CGNAT
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18/15 benchmarking
        || (o[0] == 192 && o[1] == 0 && o[2] == 0); // 192.0.0/24
    if private {
        Class::Private
    } else {
        Class::Public
    }
}

fn v6_class(ip: Ipv6Addr) -> Class {
    let s = ip.segments();
    if ip.is_unspecified() || ip.is_multicast() {
        return Class::Never;
    }
    if ip.is_loopback() {
        return Class::Private;
    }
    // Well-known NAT64 prefix 64:ff9b::/96: the last 32 bits are IPv4.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4_class(embedded_v4(s[6], s[7]));
    }
    // 6to4 2002::/16: bits 16..48 are IPv4.
    if s[0] == 0x2002 {
        return v4_class(embedded_v4(s[1], s[2]));
    }
    let nat64_local = s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1; // 64:ff9b:1::/48
    let unique_local = (s[0] & 0xfe00) == 0xfc00; // fc00::/7
    let link_local = (s[0] & 0xffc0) == 0xfe80; // fe80::/10
    let site_local = (s[0] & 0xffc0) == 0xfec0; // fec0::/10 (deprecated)
    let benchmarking = s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0; // 2001:2::/48
    if nat64_local || unique_local || link_local || site_local || benchmarking {
        return Class::Private;
    }
    let global_unicast = (s[0] & 0xe000) == 0x2000; // 2000::/3
    let doc = (s[0] == 0x2001 && s[1] == 0x0db8) // 2001:db8::/32
        || (s[0] == 0x3fff && (s[1] & 0xf000) == 0); // 3fff::/20
    if !global_unicast || doc {
        return Class::Never;
    }
    Class::Public
}

fn embedded_v4(hi: u16, lo: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))
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

    /// Every bogon range, with and without `allow_private`: (address, public?,
    /// allowed with `allow_private`?).
    #[test]
    fn bogon_list() {
        let cases: &[(&str, bool, bool)] = &[
            // IPv4
            ("1.1.1.1:1", true, true),
            ("0.0.0.0:1", false, false),
            ("0.1.2.3:1", false, false),
            ("10.0.0.1:1", false, true),
            ("100.64.0.1:1", false, true),
            ("100.127.255.254:1", false, true),
            ("100.128.0.1:1", true, true),
            ("127.0.0.1:1", false, true),
            ("127.255.0.9:1", false, true),
            ("169.254.1.1:1", false, true),
            ("172.16.0.1:1", false, true),
            ("172.31.255.1:1", false, true),
            ("172.32.0.1:1", true, true),
            ("192.0.0.8:1", false, true),
            ("192.0.2.1:1", false, false),
            ("192.168.1.1:1", false, true),
            ("198.18.0.1:1", false, true),
            ("198.19.255.1:1", false, true),
            ("198.51.100.1:1", false, false),
            ("203.0.113.1:1", false, false),
            ("224.0.0.1:1", false, false),
            ("239.1.1.1:1", false, false),
            ("240.0.0.1:1", false, false),
            ("255.255.255.255:1", false, false),
            // IPv6
            ("[2a00:1450::1]:1", true, true),
            ("[::]:1", false, false),
            ("[::1]:1", false, true),
            ("[::a00:1]:1", false, false),
            ("[100::1]:1", false, false),
            ("[fc00::1]:1", false, true),
            ("[fd12:3456::1]:1", false, true),
            ("[fe80::1]:1", false, true),
            ("[febf::1]:1", false, true),
            ("[fec0::1]:1", false, true),
            ("[ff02::1]:1", false, false),
            ("[ff0e::1]:1", false, false),
            ("[2001:db8::1]:1", false, false),
            ("[3fff::1]:1", false, false),
            ("[3fff:fff::1]:1", false, false),
            ("[3fff:1000::1]:1", true, true),
            ("[2001:2::1]:1", false, true),
            ("[2001:0:4136:e378::1]:1", true, true),
            // IPv4-mapped, NAT64 and 6to4 forms are judged by their IPv4 address.
            ("[::ffff:127.0.0.1]:1", false, true),
            ("[::ffff:10.1.2.3]:1", false, true),
            ("[::ffff:224.0.0.1]:1", false, false),
            ("[::ffff:8.8.8.8]:1", true, true),
            ("[64:ff9b::8.8.8.8]:1", true, true),
            ("[64:ff9b::127.0.0.1]:1", false, true),
            ("[64:ff9b::192.168.0.1]:1", false, true),
            ("[64:ff9b::255.255.255.255]:1", false, false),
            ("[64:ff9b:1::1]:1", false, true),
            ("[2002:808:808::1]:1", true, true),
            ("[2002:a00:1::1]:1", false, true),
            ("[2002:7f00:1::1]:1", false, true),
            ("[2002:e000:1::1]:1", false, false),
        ];
        for &(s, public, private_ok) in cases {
            assert_eq!(
                is_sendable(&a(s), false),
                public,
                "{s} without allow_private"
            );
            assert_eq!(
                is_sendable(&a(s), true),
                private_ok,
                "{s} with allow_private"
            );
        }
    }
}
