//! The UDP tracker protocol (BEP 15): request encoding and reply decoding.
//!
//! Every request starts `connection_id (8) | action (4) | transaction_id (4)`; every
//! reply starts `action (4) | transaction_id (4)`. Integers are big-endian. Replies
//! are untrusted: [`decode_reply`] checks every length and returns a typed error,
//! never panics.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::addr::Family;
use crate::id::InfoHash;

/// The magic connection id of a connect request.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;
/// Action numbers.
const CONNECT: u32 = 0;
const ANNOUNCE: u32 = 1;
const SCRAPE: u32 = 2;
const ERROR: u32 = 3;
/// Most infohashes one scrape may carry (BEP 15: "up to about 74").
pub const MAX_SCRAPE: usize = 74;
/// Most peers a reply is read for (a full 1,500-byte datagram holds ~245 IPv4 peers).
pub const MAX_PEERS: usize = 512;
/// Longest error message kept.
const MAX_MESSAGE: usize = 256;

/// An announce request's fields (BEP 15 layout, 98 bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceRequest {
    /// From the connect reply.
    pub connection_id: u64,
    /// Chosen by us, echoed by the tracker.
    pub transaction_id: u32,
    /// The torrent.
    pub info_hash: InfoHash,
    /// Our peer id.
    pub peer_id: [u8; 20],
    /// Bytes downloaded (a crawler downloads no content: 0).
    pub downloaded: u64,
    /// Bytes left (non-zero, so that the tracker hands out seeders).
    pub left: u64,
    /// Bytes uploaded.
    pub uploaded: u64,
    /// 0 none, 1 completed, 2 started, 3 stopped.
    pub event: u32,
    /// A random key identifying us across address changes.
    pub key: u32,
    /// Peers wanted (-1: the tracker's default).
    pub num_want: i32,
    /// Our port.
    pub port: u16,
}

/// A connect request (16 bytes).
pub fn connect_request(transaction_id: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..8].copy_from_slice(&PROTOCOL_ID.to_be_bytes());
    b[8..12].copy_from_slice(&CONNECT.to_be_bytes());
    b[12..16].copy_from_slice(&transaction_id.to_be_bytes());
    b
}

/// An announce request (98 bytes; the IPv4 address field is 0: "use the sender's").
pub fn announce_request(r: &AnnounceRequest) -> Vec<u8> {
    let mut b = Vec::with_capacity(98);
    b.extend_from_slice(&r.connection_id.to_be_bytes());
    b.extend_from_slice(&ANNOUNCE.to_be_bytes());
    b.extend_from_slice(&r.transaction_id.to_be_bytes());
    b.extend_from_slice(&r.info_hash.0);
    b.extend_from_slice(&r.peer_id);
    b.extend_from_slice(&r.downloaded.to_be_bytes());
    b.extend_from_slice(&r.left.to_be_bytes());
    b.extend_from_slice(&r.uploaded.to_be_bytes());
    b.extend_from_slice(&r.event.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes()); // IP address: default
    b.extend_from_slice(&r.key.to_be_bytes());
    b.extend_from_slice(&r.num_want.to_be_bytes());
    b.extend_from_slice(&r.port.to_be_bytes());
    b
}

/// A scrape request for up to [`MAX_SCRAPE`] infohashes (more are left out).
pub fn scrape_request(connection_id: u64, transaction_id: u32, hashes: &[InfoHash]) -> Vec<u8> {
    let hashes = hashes.get(..hashes.len().min(MAX_SCRAPE)).unwrap_or(&[]);
    let mut b = Vec::with_capacity(16 + 20 * hashes.len());
    b.extend_from_slice(&connection_id.to_be_bytes());
    b.extend_from_slice(&SCRAPE.to_be_bytes());
    b.extend_from_slice(&transaction_id.to_be_bytes());
    for h in hashes {
        b.extend_from_slice(&h.0);
    }
    b
}

/// One torrent's counts in a scrape reply.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrapeCounts {
    /// Seeders.
    pub complete: u32,
    /// Completed downloads.
    pub downloaded: u32,
    /// Leechers.
    pub incomplete: u32,
}

/// A decoded reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UdpReply {
    /// A connection id, valid for a minute.
    Connect {
        /// Echoed.
        transaction_id: u32,
        /// To use in the next requests.
        connection_id: u64,
    },
    /// Peers of one torrent.
    Announce {
        /// Echoed.
        transaction_id: u32,
        /// Seconds to wait before announcing this torrent again.
        interval: u32,
        /// Leechers.
        leechers: u32,
        /// Seeders.
        seeders: u32,
        /// The peers (IPv4 or IPv6 as the request's family; at most [`MAX_PEERS`]).
        peers: Vec<SocketAddr>,
    },
    /// Counts, in request order.
    Scrape {
        /// Echoed.
        transaction_id: u32,
        /// One entry per infohash asked (possibly fewer).
        counts: Vec<ScrapeCounts>,
    },
    /// The tracker refused the request.
    Error {
        /// Echoed.
        transaction_id: u32,
        /// Its message (lossy UTF-8, truncated).
        message: String,
    },
}

impl UdpReply {
    /// The transaction id it answers.
    pub fn transaction_id(&self) -> u32 {
        match self {
            UdpReply::Connect { transaction_id, .. }
            | UdpReply::Announce { transaction_id, .. }
            | UdpReply::Scrape { transaction_id, .. }
            | UdpReply::Error { transaction_id, .. } => *transaction_id,
        }
    }
}

/// Why a datagram is not a BEP 15 reply.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UdpError {
    /// Shorter than the action's fixed part.
    Short,
    /// An action number that is not 0 to 3.
    UnknownAction,
    /// The peer list's length is not a multiple of the entry size.
    RaggedPeers,
    /// The scrape counts' length is not a multiple of 12.
    RaggedScrape,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let hi = u32_at(b, at)? as u64;
    let lo = u32_at(b, at.checked_add(4)?)? as u64;
    Some(hi << 32 | lo)
}

/// Decodes a tracker's reply; `family` is the family the request went over (it
/// decides the size of the peer entries: 6 bytes for IPv4, 18 for IPv6).
pub fn decode_reply(b: &[u8], family: Family) -> Result<UdpReply, UdpError> {
    let action = u32_at(b, 0).ok_or(UdpError::Short)?;
    let transaction_id = u32_at(b, 4).ok_or(UdpError::Short)?;
    let rest = b.get(8..).unwrap_or(&[]);
    match action {
        CONNECT => Ok(UdpReply::Connect {
            transaction_id,
            connection_id: u64_at(rest, 0).ok_or(UdpError::Short)?,
        }),
        ANNOUNCE => {
            let interval = u32_at(rest, 0).ok_or(UdpError::Short)?;
            let leechers = u32_at(rest, 4).ok_or(UdpError::Short)?;
            let seeders = u32_at(rest, 8).ok_or(UdpError::Short)?;
            let list = rest.get(12..).unwrap_or(&[]);
            let peers = match family {
                Family::V4 => compact_v4(list).ok_or(UdpError::RaggedPeers)?,
                Family::V6 => compact_v6(list).ok_or(UdpError::RaggedPeers)?,
            };
            Ok(UdpReply::Announce {
                transaction_id,
                interval,
                leechers,
                seeders,
                peers,
            })
        }
        SCRAPE => {
            if rest.len() % 12 != 0 {
                return Err(UdpError::RaggedScrape);
            }
            let counts = rest
                .chunks_exact(12)
                .take(MAX_SCRAPE)
                .map(|c| ScrapeCounts {
                    complete: u32_at(c, 0).unwrap_or(0),
                    downloaded: u32_at(c, 4).unwrap_or(0),
                    incomplete: u32_at(c, 8).unwrap_or(0),
                })
                .collect();
            Ok(UdpReply::Scrape {
                transaction_id,
                counts,
            })
        }
        ERROR => {
            let m = rest.get(..rest.len().min(MAX_MESSAGE)).unwrap_or(&[]);
            Ok(UdpReply::Error {
                transaction_id,
                message: String::from_utf8_lossy(m).into_owned(),
            })
        }
        _ => Err(UdpError::UnknownAction),
    }
}

/// Compact IPv4 peers (BEP 23: 4-byte address, 2-byte port); `None` when ragged.
/// At most [`MAX_PEERS`] are kept.
pub fn compact_v4(b: &[u8]) -> Option<Vec<SocketAddr>> {
    if b.len() % 6 != 0 {
        return None;
    }
    Some(
        b.chunks_exact(6)
            .take(MAX_PEERS)
            .map(|c| {
                let ip = Ipv4Addr::new(c[0], c[1], c[2], c[3]);
                SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be_bytes([c[4], c[5]])))
            })
            .collect(),
    )
}

/// Compact IPv6 peers (BEP 7: 16-byte address, 2-byte port); `None` when ragged.
/// At most [`MAX_PEERS`] are kept.
pub fn compact_v6(b: &[u8]) -> Option<Vec<SocketAddr>> {
    if b.len() % 18 != 0 {
        return None;
    }
    Some(
        b.chunks_exact(18)
            .take(MAX_PEERS)
            .map(|c| {
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&c[..16]);
                let port = u16::from_be_bytes([c[16], c[17]]);
                SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(action: u32, tid: u32, rest: &[u8]) -> Vec<u8> {
        let mut b = action.to_be_bytes().to_vec();
        b.extend_from_slice(&tid.to_be_bytes());
        b.extend_from_slice(rest);
        b
    }

    #[test]
    fn connect_request_layout() {
        let b = connect_request(0xdead_beef);
        assert_eq!(&b[..8], &[0, 0, 4, 0x17, 0x27, 0x10, 0x19, 0x80]);
        assert_eq!(&b[8..12], &[0, 0, 0, 0]);
        assert_eq!(&b[12..], &[0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn announce_request_layout() {
        let r = AnnounceRequest {
            connection_id: 7,
            transaction_id: 9,
            info_hash: InfoHash([0xaa; 20]),
            peer_id: [0xbb; 20],
            downloaded: 1,
            left: 2,
            uploaded: 3,
            event: 2,
            key: 5,
            num_want: -1,
            port: 6881,
        };
        let b = announce_request(&r);
        assert_eq!(b.len(), 98);
        assert_eq!(u64_at(&b, 0), Some(7));
        assert_eq!(u32_at(&b, 8), Some(1));
        assert_eq!(u32_at(&b, 12), Some(9));
        assert_eq!(&b[16..36], &[0xaa; 20]);
        assert_eq!(&b[36..56], &[0xbb; 20]);
        assert_eq!(u64_at(&b, 56), Some(1));
        assert_eq!(u64_at(&b, 64), Some(2));
        assert_eq!(u64_at(&b, 72), Some(3));
        assert_eq!(u32_at(&b, 80), Some(2));
        assert_eq!(u32_at(&b, 84), Some(0));
        assert_eq!(u32_at(&b, 88), Some(5));
        assert_eq!(u32_at(&b, 92), Some(u32::MAX));
        assert_eq!(&b[96..], &6881u16.to_be_bytes());
    }

    #[test]
    fn scrape_request_is_capped() {
        let hs = vec![InfoHash([1; 20]); 100];
        let b = scrape_request(3, 4, &hs);
        assert_eq!(b.len(), 16 + 20 * MAX_SCRAPE);
        assert_eq!(u32_at(&b, 8), Some(2));
    }

    #[test]
    fn decodes_every_action() {
        let c = reply(0, 1, &42u64.to_be_bytes());
        assert_eq!(
            decode_reply(&c, Family::V4),
            Ok(UdpReply::Connect {
                transaction_id: 1,
                connection_id: 42
            })
        );
        let mut a = Vec::new();
        for v in [1800u32, 3, 4] {
            a.extend_from_slice(&v.to_be_bytes());
        }
        a.extend_from_slice(&[10, 0, 0, 1, 0x1a, 0xe1, 10, 0, 0, 2, 0, 80]);
        match decode_reply(&reply(1, 2, &a), Family::V4) {
            Ok(UdpReply::Announce {
                interval,
                leechers,
                seeders,
                peers,
                ..
            }) => {
                assert_eq!((interval, leechers, seeders), (1800, 3, 4));
                assert_eq!(
                    peers,
                    vec![
                        "10.0.0.1:6881".parse::<SocketAddr>().unwrap(),
                        "10.0.0.2:80".parse().unwrap()
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
        let mut a6 = Vec::new();
        for v in [60u32, 0, 1] {
            a6.extend_from_slice(&v.to_be_bytes());
        }
        let ip: Ipv6Addr = "2001:db8::1".parse().unwrap();
        a6.extend_from_slice(&ip.octets());
        a6.extend_from_slice(&443u16.to_be_bytes());
        match decode_reply(&reply(1, 2, &a6), Family::V6) {
            Ok(UdpReply::Announce { peers, .. }) => {
                assert_eq!(peers, vec!["[2001:db8::1]:443".parse().unwrap()])
            }
            other => panic!("{other:?}"),
        }
        let mut s = Vec::new();
        for v in [5u32, 6, 7, 8, 9, 10] {
            s.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(
            decode_reply(&reply(2, 3, &s), Family::V4),
            Ok(UdpReply::Scrape {
                transaction_id: 3,
                counts: vec![
                    ScrapeCounts {
                        complete: 5,
                        downloaded: 6,
                        incomplete: 7
                    },
                    ScrapeCounts {
                        complete: 8,
                        downloaded: 9,
                        incomplete: 10
                    }
                ]
            })
        );
        assert_eq!(
            decode_reply(&reply(3, 4, b"go away"), Family::V4),
            Ok(UdpReply::Error {
                transaction_id: 4,
                message: "go away".into()
            })
        );
    }

    #[test]
    fn malformed_replies_are_typed_errors() {
        assert_eq!(decode_reply(&[], Family::V4), Err(UdpError::Short));
        assert_eq!(decode_reply(&[0, 0, 0], Family::V4), Err(UdpError::Short));
        assert_eq!(
            decode_reply(&reply(0, 1, &[1, 2, 3]), Family::V4),
            Err(UdpError::Short)
        );
        assert_eq!(
            decode_reply(&reply(1, 1, &[0; 11]), Family::V4),
            Err(UdpError::Short)
        );
        assert_eq!(
            decode_reply(&reply(1, 1, &[0; 12 + 7]), Family::V4),
            Err(UdpError::RaggedPeers)
        );
        assert_eq!(
            decode_reply(&reply(1, 1, &[0; 12 + 6]), Family::V6),
            Err(UdpError::RaggedPeers)
        );
        assert_eq!(
            decode_reply(&reply(2, 1, &[0; 13]), Family::V4),
            Err(UdpError::RaggedScrape)
        );
        assert_eq!(
            decode_reply(&reply(9, 1, &[]), Family::V4),
            Err(UdpError::UnknownAction)
        );
        // A huge peer list is cut, not refused.
        let big = vec![1u8; 12 + 6 * (MAX_PEERS + 10)];
        match decode_reply(&reply(1, 1, &big), Family::V4) {
            Ok(UdpReply::Announce { peers, .. }) => assert_eq!(peers.len(), MAX_PEERS),
            other => panic!("{other:?}"),
        }
    }
}
