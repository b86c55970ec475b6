//! KRPC messages of BEP 5, 32, 33, 42, 43 and 51: zero-copy decoding over bendy and
//! deterministic encoding.
//!
//! The types here borrow from the datagram they were decoded from. Compact lists
//! (`nodes`, `nodes6`, `samples`) are validated on decode and iterated lazily.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::id::{InfoHash, NodeId};

mod codec;
pub use codec::{
    decode, decode_bendy, decode_lenient, decode_reference, encode, DecodeError, LenientMessage,
    MAX_DEPTH,
};

/// One KRPC message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// Transaction id: any length from others; ours are 2 bytes.
    pub tid: &'a [u8],
    /// `v`: client version, if present.
    pub version: Option<&'a [u8]>,
    /// BEP 42 top-level `ip`: the address the sender saw us at.
    pub ip: Option<SocketAddr>,
    /// BEP 43 `ro: 1`: a read-only node. Never put it in a routing table.
    pub read_only: bool,
    pub body: Body<'a>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body<'a> {
    Query(Query<'a>),
    Response(Response<'a>),
    Error(KrpcError<'a>),
}

/// BEP 32 `want`: which address families the querier wants nodes for.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Want {
    pub n4: bool,
    pub n6: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query<'a> {
    /// The querying node's id.
    pub id: NodeId,
    /// `want`, or `None` when absent (answer in the family of the socket).
    pub want: Option<Want>,
    pub kind: QueryKind<'a>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryKind<'a> {
    Ping,
    FindNode {
        target: NodeId,
    },
    GetPeers {
        info_hash: InfoHash,
        /// BEP 33 `scrape: 1`.
        scrape: bool,
        /// BEP 33 `noseed: 1`.
        noseed: bool,
    },
    AnnouncePeer {
        info_hash: InfoHash,
        port: u16,
        implied_port: bool,
        token: &'a [u8],
        /// BEP 33 `seed`, when present.
        seed: Option<bool>,
    },
    /// BEP 51.
    SampleInfohashes {
        target: NodeId,
    },
    /// A method we do not know. For forward compatibility (as libtorrent does), one
    /// that carries `target` or `info_hash` is answered like find_node with `nodes`;
    /// one that carries neither gets error 204.
    Unknown {
        method: &'a [u8],
        /// `target`, when present and 20 bytes.
        target: Option<NodeId>,
        /// `info_hash`, when present and 20 bytes.
        info_hash: Option<InfoHash>,
    },
}

impl QueryKind<'_> {
    pub fn method(&self) -> &[u8] {
        match self {
            QueryKind::Ping => b"ping",
            QueryKind::FindNode { .. } => b"find_node",
            QueryKind::GetPeers { .. } => b"get_peers",
            QueryKind::AnnouncePeer { .. } => b"announce_peer",
            QueryKind::SampleInfohashes { .. } => b"sample_infohashes",
            QueryKind::Unknown { method, .. } => method,
        }
    }
}

/// A response. KRPC responses do not name their method, so every field that any
/// response may carry is optional here; the RPC layer interprets them against the
/// query it sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response<'a> {
    pub id: NodeId,
    pub nodes: Option<CompactNodesV4<'a>>,
    pub nodes6: Option<CompactNodesV6<'a>>,
    /// get_peers `values`: compact peers, each 6 (IPv4) or 18 (IPv6) bytes.
    pub values: Option<Vec<SocketAddr>>,
    pub token: Option<&'a [u8]>,
    /// BEP 51.
    pub samples: Option<Samples<'a>>,
    /// BEP 51 `num`: how many infohashes the node stores.
    pub num: Option<i64>,
    /// BEP 51 `interval`, seconds.
    pub interval: Option<i64>,
    /// BEP 33 seeds bloom filter (256 bytes).
    pub bf_seeds: Option<&'a [u8; 256]>,
    /// BEP 33 peers bloom filter (256 bytes).
    pub bf_peers: Option<&'a [u8; 256]>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KrpcError<'a> {
    pub code: i64,
    pub message: &'a [u8],
}

/// KRPC error codes (BEP 5).
pub mod error_code {
    pub const GENERIC: i64 = 201;
    pub const SERVER: i64 = 202;
    pub const PROTOCOL: i64 = 203;
    pub const METHOD_UNKNOWN: i64 = 204;
}

/// Compact IPv4 node info: a validated slice whose length is a multiple of 26.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactNodesV4<'a>(&'a [u8]);
/// Compact IPv6 node info: a validated slice whose length is a multiple of 38.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactNodesV6<'a>(&'a [u8]);
/// BEP 51 samples: a validated slice whose length is a multiple of 20.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Samples<'a>(&'a [u8]);

impl<'a> CompactNodesV4<'a> {
    pub const ENTRY: usize = 26;
    /// `None` if the length is not a multiple of 26.
    pub fn new(b: &'a [u8]) -> Option<Self> {
        (b.len() % Self::ENTRY == 0).then_some(Self(b))
    }
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
    pub fn len(&self) -> usize {
        self.0.len() / Self::ENTRY
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, SocketAddr)> + 'a {
        self.0.chunks_exact(Self::ENTRY).filter_map(|c| {
            let id = NodeId::from_slice(c.get(..20)?)?;
            let addr = peer_from_compact(c.get(20..)?)?;
            Some((id, addr))
        })
    }
}

impl<'a> CompactNodesV6<'a> {
    pub const ENTRY: usize = 38;
    /// `None` if the length is not a multiple of 38.
    pub fn new(b: &'a [u8]) -> Option<Self> {
        (b.len() % Self::ENTRY == 0).then_some(Self(b))
    }
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
    pub fn len(&self) -> usize {
        self.0.len() / Self::ENTRY
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, SocketAddr)> + 'a {
        self.0.chunks_exact(Self::ENTRY).filter_map(|c| {
            let id = NodeId::from_slice(c.get(..20)?)?;
            let addr = peer_from_compact(c.get(20..)?)?;
            Some((id, addr))
        })
    }
}

impl<'a> Samples<'a> {
    /// `None` if the length is not a multiple of 20.
    pub fn new(b: &'a [u8]) -> Option<Self> {
        (b.len() % 20 == 0).then_some(Self(b))
    }
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
    /// Number of infohashes: every 20-byte slice is one.
    pub fn len(&self) -> usize {
        self.0.len() / 20
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = InfoHash> + 'a {
        self.0.chunks_exact(20).filter_map(InfoHash::from_slice)
    }
}

/// Compact peer info: 6 bytes (IPv4) or 18 bytes (IPv6), big-endian address then port.
pub fn peer_from_compact(b: &[u8]) -> Option<SocketAddr> {
    match b.len() {
        6 => {
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            let port = u16::from_be_bytes([b[4], b[5]]);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        18 => {
            let oct: [u8; 16] = b.get(..16)?.try_into().ok()?;
            let port = u16::from_be_bytes([b[16], b[17]]);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(oct),
                port,
                0,
                0,
            )))
        }
        _ => None,
    }
}

/// Appends compact peer info for `addr` (6 or 18 bytes).
pub fn write_compact_peer(addr: &SocketAddr, out: &mut Vec<u8>) {
    let [p0, p1] = addr.port().to_be_bytes();
    match addr {
        SocketAddr::V4(a) => {
            let [a0, a1, a2, a3] = a.ip().octets();
            out.extend_from_slice(&[a0, a1, a2, a3, p0, p1]);
        }
        SocketAddr::V6(a) => {
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&[p0, p1]);
        }
    }
}

/// Appends compact node info (26 or 38 bytes).
pub fn write_compact_node(id: &NodeId, addr: &SocketAddr, out: &mut Vec<u8>) {
    match addr {
        // One copy of 26 bytes (honest nodes in the simulator write 8 per reply).
        SocketAddr::V4(a) => {
            let mut entry = [0u8; 26];
            let (idp, rest) = entry.split_at_mut(20);
            idp.copy_from_slice(&id.0);
            let (ip, port) = rest.split_at_mut(4);
            ip.copy_from_slice(&a.ip().octets());
            port.copy_from_slice(&a.port().to_be_bytes());
            out.extend_from_slice(&entry);
        }
        SocketAddr::V6(_) => {
            out.extend_from_slice(&id.0);
            write_compact_peer(addr, out);
        }
    }
}
