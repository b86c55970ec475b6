//! KRPC, the DHT's UDP message layer: every message of BEP 5 (ping, find_node,
//! get_peers, announce_peer, errors), with the fields of BEP 32 (`want`, `nodes6`),
//! BEP 33 (scrape bloom filters), BEP 42 (`ip`), BEP 43 (`ro`) and BEP 51
//! (sample_infohashes).
//!
//! - Types: [`Message`] with its [`Body`] ([`Query`] / [`QueryKind`], [`Response`],
//!   [`KrpcError`]); compact lists [`CompactNodesV4`] (26 bytes an entry),
//!   [`CompactNodesV6`] (38 bytes) and [`Samples`] (20 bytes); [`error_code`].
//! - Decoding: [`decode`] is a hand-written one-pass reader (`codec/fast.rs`) that
//!   borrows from the datagram; [`decode_lenient`] also accepts unsorted keys. bendy is
//!   not on the decode path: [`decode_bendy`] (bendy's tokenizer) and
//!   [`decode_reference`] (our tokenizer) are slower references that tests and the
//!   `krpc_decode` fuzz target hold [`decode`] to.
//! - Encoding: [`encode`] is deterministic (keys in bencode order, only present fields).
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
    /// The query, response or error this message carries (selected by `y`).
    pub body: Body<'a>,
}

/// The three kinds of KRPC message (`y` = `q`, `r` or `e`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body<'a> {
    /// `y: q`: a query with its arguments (`q` + `a`).
    Query(Query<'a>),
    /// `y: r`: a response (`r`).
    Response(Response<'a>),
    /// `y: e`: an error (`e`).
    Error(KrpcError<'a>),
}

/// BEP 32 `want`: which address families the querier wants nodes for.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Want {
    /// `n4`: the querier wants IPv4 nodes (`nodes`).
    pub n4: bool,
    /// `n6`: the querier wants IPv6 nodes (`nodes6`).
    pub n6: bool,
}

/// A query: the querier's id, BEP 32 `want`, and the method with its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query<'a> {
    /// The querying node's id.
    pub id: NodeId,
    /// `want`, or `None` when absent (answer in the family of the socket).
    pub want: Option<Want>,
    /// The method (`q`) and its method-specific arguments.
    pub kind: QueryKind<'a>,
}

/// A query method with its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryKind<'a> {
    /// `ping`: no arguments beyond `id`.
    Ping,
    /// `find_node`: the nodes closest to `target`.
    FindNode {
        /// The id whose closest nodes are wanted.
        target: NodeId,
    },
    /// `get_peers`: peers for `info_hash`, or the closest nodes and a token.
    GetPeers {
        /// The torrent asked about.
        info_hash: InfoHash,
        /// BEP 33 `scrape: 1`.
        scrape: bool,
        /// BEP 33 `noseed: 1`.
        noseed: bool,
    },
    /// `announce_peer`: the querier is a peer of `info_hash`.
    AnnouncePeer {
        /// The torrent announced.
        info_hash: InfoHash,
        /// The peer's TCP port (0 when left out because `implied_port` is set).
        port: u16,
        /// `implied_port: 1`: use the UDP source port of the query instead of `port`.
        implied_port: bool,
        /// The token from an earlier get_peers answer of ours.
        token: &'a [u8],
        /// BEP 33 `seed`, when present.
        seed: Option<bool>,
    },
    /// BEP 51.
    SampleInfohashes {
        /// The id whose closest nodes are wanted, as for find_node.
        target: NodeId,
    },
    /// A method we do not know. For forward compatibility (as libtorrent does), one
    /// that carries `target` or `info_hash` is answered like find_node with `nodes`;
    /// one that carries neither gets error 204.
    Unknown {
        /// The method name as sent.
        method: &'a [u8],
        /// `target`, when present and 20 bytes.
        target: Option<NodeId>,
        /// `info_hash`, when present and 20 bytes.
        info_hash: Option<InfoHash>,
    },
}

impl QueryKind<'_> {
    /// The method name as sent in `q` (`b"find_node"`, …).
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
    /// The responder's node id.
    pub id: NodeId,
    /// Compact IPv4 nodes (find_node, get_peers, sample_infohashes).
    pub nodes: Option<CompactNodesV4<'a>>,
    /// BEP 32 compact IPv6 nodes.
    pub nodes6: Option<CompactNodesV6<'a>>,
    /// get_peers `values`: compact peers, each 6 (IPv4) or 18 (IPv6) bytes.
    pub values: Option<Vec<SocketAddr>>,
    /// get_peers `token`, to be sent back in announce_peer.
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

/// A KRPC error (`e`: a list of a code and a message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KrpcError<'a> {
    /// The error code (see [`error_code`]); any integer is accepted on decode.
    pub code: i64,
    /// The human-readable message, as sent (not necessarily UTF-8).
    pub message: &'a [u8],
}

/// KRPC error codes (BEP 5).
pub mod error_code {
    /// 201: generic error.
    pub const GENERIC: i64 = 201;
    /// 202: server error (we send it when rate limiting, if configured).
    pub const SERVER: i64 = 202;
    /// 203: protocol error (malformed packet, invalid arguments, bad token).
    pub const PROTOCOL: i64 = 203;
    /// 204: method unknown.
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
    /// Bytes per entry: 20-byte id, 4-byte IPv4 address, 2-byte port.
    pub const ENTRY: usize = 26;
    /// `None` if the length is not a multiple of 26.
    pub fn new(b: &'a [u8]) -> Option<Self> {
        (b.len() % Self::ENTRY == 0).then_some(Self(b))
    }
    /// The raw compact bytes, as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
    /// Number of nodes (bytes / 26).
    pub fn len(&self) -> usize {
        self.0.len() / Self::ENTRY
    }
    /// True when there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The nodes in wire order, decoded lazily (nothing is allocated).
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, SocketAddr)> + 'a {
        self.0.chunks_exact(Self::ENTRY).filter_map(|c| {
            let id = NodeId::from_slice(c.get(..20)?)?;
            let addr = peer_from_compact(c.get(20..)?)?;
            Some((id, addr))
        })
    }
}

impl<'a> CompactNodesV6<'a> {
    /// Bytes per entry: 20-byte id, 16-byte IPv6 address, 2-byte port.
    pub const ENTRY: usize = 38;
    /// `None` if the length is not a multiple of 38.
    pub fn new(b: &'a [u8]) -> Option<Self> {
        (b.len() % Self::ENTRY == 0).then_some(Self(b))
    }
    /// The raw compact bytes, as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
    /// Number of nodes (bytes / 38).
    pub fn len(&self) -> usize {
        self.0.len() / Self::ENTRY
    }
    /// True when there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The nodes in wire order, decoded lazily (nothing is allocated; flow info and scope
    /// id are 0).
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
    /// The raw bytes: the infohashes back to back.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
    /// Number of infohashes: every 20-byte slice is one.
    pub fn len(&self) -> usize {
        self.0.len() / 20
    }
    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The infohashes in wire order.
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
