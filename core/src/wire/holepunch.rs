//! BEP 55 `ut_holepunch` messages: `msg_type` (1 byte), `addr_type` (1 byte: 0
//! IPv4, 1 IPv6), the address (4 or 16 bytes), the port (2 bytes) and an error
//! code (4 bytes, 0 unless an `error`), all big-endian. libtorrent (1.2 to
//! 2.1) writes the error code only in `error` messages: a `rendezvous` or
//! `connect` without it (8 or 20 bytes) is accepted too, with code 0. Anything
//! else is an [`HolepunchError`], never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::encode_extended;

/// The three message types of BEP 55.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HolepunchKind {
    /// 0x00: initiator → relay: "introduce me to this endpoint".
    Rendezvous,
    /// 0x01: relay → both ends: "open uTP to this endpoint now".
    Connect,
    /// 0x02: relay → initiator: the rendezvous cannot be done (`err_code`).
    Error,
}

/// A BEP 55 error code.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HolepunchErrorCode {
    /// 0x01: the target endpoint is invalid.
    NoSuchPeer,
    /// 0x02: the relay is not connected to the target.
    NotConnected,
    /// 0x03: the target does not support the extension.
    NoSupport,
    /// 0x04: the target is the relay itself.
    NoSelf,
    /// Any other value (kept, counted as such).
    Other(u32),
}

impl HolepunchErrorCode {
    /// The wire value.
    pub fn code(self) -> u32 {
        match self {
            HolepunchErrorCode::NoSuchPeer => 1,
            HolepunchErrorCode::NotConnected => 2,
            HolepunchErrorCode::NoSupport => 3,
            HolepunchErrorCode::NoSelf => 4,
            HolepunchErrorCode::Other(c) => c,
        }
    }

    /// From the wire value (0 is not an error code: `Other(0)`).
    pub fn from_code(c: u32) -> Self {
        match c {
            1 => HolepunchErrorCode::NoSuchPeer,
            2 => HolepunchErrorCode::NotConnected,
            3 => HolepunchErrorCode::NoSupport,
            4 => HolepunchErrorCode::NoSelf,
            c => HolepunchErrorCode::Other(c),
        }
    }

    /// A label for metrics (`no_such_peer`, …, `other`).
    pub fn name(self) -> &'static str {
        match self {
            HolepunchErrorCode::NoSuchPeer => "no_such_peer",
            HolepunchErrorCode::NotConnected => "not_connected",
            HolepunchErrorCode::NoSupport => "no_support",
            HolepunchErrorCode::NoSelf => "no_self",
            HolepunchErrorCode::Other(_) => "other",
        }
    }
}

/// One `ut_holepunch` message.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct HolepunchMsg {
    /// Its type.
    pub kind: HolepunchKind,
    /// The endpoint it names.
    pub addr: SocketAddr,
    /// The error code (`Error` only; 0 elsewhere, as sent).
    pub err: u32,
}

/// Why a `ut_holepunch` payload did not decode.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HolepunchError {
    /// Shorter or longer than its `addr_type` says.
    BadLength,
    /// `msg_type` above 2.
    UnknownType(u8),
    /// `addr_type` neither 0 nor 1.
    UnknownAddrType(u8),
}

/// Parses a `ut_holepunch` payload (after the extended message id).
pub fn parse_holepunch(p: &[u8]) -> Result<HolepunchMsg, HolepunchError> {
    let (&ty, rest) = p.split_first().ok_or(HolepunchError::BadLength)?;
    let (&at, rest) = rest.split_first().ok_or(HolepunchError::BadLength)?;
    let kind = match ty {
        0 => HolepunchKind::Rendezvous,
        1 => HolepunchKind::Connect,
        2 => HolepunchKind::Error,
        t => return Err(HolepunchError::UnknownType(t)),
    };
    let alen = match at {
        0 => 4,
        1 => 16,
        t => return Err(HolepunchError::UnknownAddrType(t)),
    };
    let with_code = rest.len() == alen + 2 + 4;
    // libtorrent's form: no error code but in `error` messages.
    let without = rest.len() == alen + 2 && kind != HolepunchKind::Error;
    if !with_code && !without {
        return Err(HolepunchError::BadLength);
    }
    let (a, rest) = rest.split_at(alen);
    let (port, err) = rest.split_at(2);
    let err: &[u8] = if with_code { err } else { &[0, 0, 0, 0] };
    let ip = if let Ok(b) = <[u8; 4]>::try_from(a) {
        IpAddr::V4(Ipv4Addr::from(b))
    } else {
        let b = <[u8; 16]>::try_from(a).map_err(|_| HolepunchError::BadLength)?;
        IpAddr::V6(Ipv6Addr::from(b))
    };
    let port = u16::from_be_bytes(port.try_into().map_err(|_| HolepunchError::BadLength)?);
    let err = u32::from_be_bytes(err.try_into().map_err(|_| HolepunchError::BadLength)?);
    Ok(HolepunchMsg {
        kind,
        addr: SocketAddr::new(ip, port),
        err,
    })
}

/// Encodes a `ut_holepunch` payload (without the frame header).
pub fn encode_holepunch_payload(out: &mut Vec<u8>, m: &HolepunchMsg) {
    out.push(match m.kind {
        HolepunchKind::Rendezvous => 0,
        HolepunchKind::Connect => 1,
        HolepunchKind::Error => 2,
    });
    match m.addr.ip() {
        IpAddr::V4(a) => {
            out.push(0);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(1);
            out.extend_from_slice(&a.octets());
        }
    }
    out.extend_from_slice(&m.addr.port().to_be_bytes());
    out.extend_from_slice(&m.err.to_be_bytes());
}

/// Appends a full framed `ut_holepunch` message to `ext_id` (the peer's id).
pub fn encode_holepunch(out: &mut Vec<u8>, ext_id: u8, m: &HolepunchMsg) {
    let mut p = Vec::with_capacity(24);
    encode_holepunch_payload(&mut p, m);
    encode_extended(out, ext_id, &p);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind_and_family() {
        for kind in [
            HolepunchKind::Rendezvous,
            HolepunchKind::Connect,
            HolepunchKind::Error,
        ] {
            for addr in [
                SocketAddr::from(([203, 0, 113, 7], 6881)),
                "[2001:db8::1]:51413".parse().unwrap(),
            ] {
                let m = HolepunchMsg {
                    kind,
                    addr,
                    err: if kind == HolepunchKind::Error { 2 } else { 0 },
                };
                let mut p = Vec::new();
                encode_holepunch_payload(&mut p, &m);
                assert_eq!(p.len(), if addr.is_ipv4() { 12 } else { 24 });
                assert_eq!(parse_holepunch(&p), Ok(m));
            }
        }
    }

    #[test]
    fn the_bep_layout_byte_for_byte() {
        // rendezvous to 1.2.3.4:0x1ae1, no error.
        let p = [0, 0, 1, 2, 3, 4, 0x1a, 0xe1, 0, 0, 0, 0];
        let m = parse_holepunch(&p).unwrap();
        assert_eq!(m.kind, HolepunchKind::Rendezvous);
        assert_eq!(m.addr, SocketAddr::from(([1, 2, 3, 4], 0x1ae1)));
        let e = [2, 0, 1, 2, 3, 4, 0, 80, 0, 0, 0, 3];
        let m = parse_holepunch(&e).unwrap();
        assert_eq!(
            HolepunchErrorCode::from_code(m.err),
            HolepunchErrorCode::NoSupport
        );
    }

    #[test]
    fn libtorrents_form_without_the_error_code() {
        // libtorrent's write_holepunch_msg: connect to 10.77.0.5:6881, 8 bytes.
        let m = parse_holepunch(&[1, 0, 10, 77, 0, 5, 0x1a, 0xe1]).unwrap();
        assert_eq!(m.kind, HolepunchKind::Connect);
        assert_eq!(m.addr, SocketAddr::from(([10, 77, 0, 5], 6881)));
        assert_eq!(m.err, 0);
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(parse_holepunch(&[]), Err(HolepunchError::BadLength));
        assert_eq!(parse_holepunch(&[0]), Err(HolepunchError::BadLength));
        assert_eq!(
            parse_holepunch(&[3, 0, 1, 2, 3, 4, 0, 1, 0, 0, 0, 0]),
            Err(HolepunchError::UnknownType(3))
        );
        assert_eq!(
            parse_holepunch(&[1, 2, 1, 2, 3, 4, 0, 1, 0, 0, 0, 0]),
            Err(HolepunchError::UnknownAddrType(2))
        );
        // IPv6 type with an IPv4-sized body, and one byte too many.
        assert_eq!(
            parse_holepunch(&[1, 1, 1, 2, 3, 4, 0, 1, 0, 0, 0, 0]),
            Err(HolepunchError::BadLength)
        );
        assert_eq!(
            parse_holepunch(&[1, 0, 1, 2, 3, 4, 0, 1, 0, 0, 0, 0, 9]),
            Err(HolepunchError::BadLength)
        );
        // Every prefix of a valid message fails cleanly, but the one without
        // the error code (libtorrent's form of connect).
        let p = [
            1, 1, 0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 80, 0, 0, 0, 0,
        ];
        assert!(parse_holepunch(&p).is_ok());
        for n in 0..p.len() {
            assert_eq!(parse_holepunch(&p[..n]).is_ok(), n == 20, "{n}");
        }
        // An error needs its code.
        assert_eq!(
            parse_holepunch(&[2, 0, 1, 2, 3, 4, 0, 80]),
            Err(HolepunchError::BadLength)
        );
    }
}
