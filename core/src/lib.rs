//! # magnetar-core
//!
//! The sans-IO heart of magnetar: a Mainline DHT node (BEP 5, 32, 33, 42, 43, 51),
//! an infohash harvesting strategy, and a metadata fetcher (BEP 3, 9, 10, 11), all as
//! deterministic state machines.
//!
//! Core owns no sockets, threads or clocks and has no global randomness. A driver
//! (the mio or tokio runtime, or the simulator) feeds [`Input`]s with the time they
//! happened and drains [`Output`]s until [`Output::Timeout`] or [`Output::Idle`]:
//!
//! ```
//! use magnetar_core::{Config, Crawler, Output, Timestamp};
//! let mut crawler = Crawler::new(Config::loopback_test(1), Timestamp::ZERO);
//! crawler.bootstrap(Timestamp::ZERO, &["127.0.0.1:6881".parse().unwrap()]);
//! loop {
//!     match crawler.poll_output() {
//!         Output::Transmit { to, .. } => assert_eq!(to.port(), 6881),
//!         Output::Timeout(_) | Output::Idle => break,
//!         _ => {}
//!     }
//! }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::disallowed_methods, clippy::disallowed_types)]

use std::net::SocketAddr;

use bytes::Bytes;

// The public surface.
//
// Namespaces other crates use (`pub mod`):
// - `addr`: address families and the outgoing address filter;
// - `classify`: offline classification of torrents (content kind, Torznab category,
//   release-name attributes), pure and bounded;
// - `crawl`: the harvesting strategy's config and stats, its packet budget;
// - `fetch`: the metadata fetcher (leech scheduler), its config, stats and reports;
// - `filter`: the operator's content rules file (issue 20 §2): parser and matcher;
// - `krpc`: KRPC message types and their bencode codec (BEP 5 and extensions);
// - `metadata`: metadata assembly, infohash verification, info dict parsing;
// - `mse`: Message Stream Encryption (MSE/PE), both sides, as a sans-IO machine;
// - `pump`: the driver loop shared by the runtimes and the simulator (IO trait,
//   storage sink, acquire policy, counters, bootstrap watch);
// - `report`: operator counters as data (status line, metric samples);
// - `routing`: the routing table, its config and stats, per-node query counts;
// - `session`: one BEP 9/10 peer wire session as a state machine;
// - `utp`: uTP (BEP 29) streams on the DHT socket: codec, connection, manager;
// - `wire`: bencode and the peer wire (BEP 3 framing, BEP 9/10/11 messages);
// - `tracker`: UDP (BEP 15) and HTTP tracker clients, the fallback source of peers;
// - `testkit` (feature `testkit`): sans-IO fake peers for tests.
//
// Everything else is internal (`mod`: bloom, config, crawler, fault, id, identity,
// limiter, lookup, node, rng, rpc, server, stats, time, tokens, vote); what other
// crates need from it is re-exported here: the crawler and its inputs and outputs (this file), its
// config (`Config`, `DhtConfig`, `IdentityConfig`), identities (`Identity`),
// ids (`NodeId`, `InfoHash`, `Distance`, `bep42_node_id`, `bep42_matches`,
// `bep42_verify`), time (`Timestamp`),
// stats (`Stats`, `DhtStats`, `PacketCounts`), faults (`Fault`), the deterministic
// generator every seeded component takes (`Rng`), the BEP 33 bloom filter
// (`Bloom`) and the lookup kind reported by `Event::LookupDone` (`LookupKind`).
// `routing::Method` re-exports the query method `MethodCounts::slot` takes.
pub mod addr;
mod bloom;
pub mod classify;
mod config;
pub mod crawl;
mod crawler;
mod fault;
pub mod fetch;
pub mod filter;
mod id;
mod identity;
pub mod krpc;
mod limiter;
mod lookup;
pub mod metadata;
pub mod mse;
mod node;
pub mod pump;
pub mod report;
mod rng;
pub mod routing;
mod rpc;
mod server;
pub mod session;
pub mod shard;
mod stats;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
mod time;
mod tokens;
pub mod tracker;
pub mod utp;
mod vote;
pub mod wire;

pub use bloom::Bloom;
pub use config::{Config, DhtConfig, IdentityConfig};
pub use crawler::{Crawler, Identity};
pub use fault::Fault;
pub use id::{bep42_matches, bep42_node_id, bep42_verify, Distance, InfoHash, NodeId};
pub use lookup::LookupKind;
pub use rng::Rng;
pub use shard::Shard;
pub use stats::{DhtStats, PacketCounts, Stats, TableSize};
pub use time::Timestamp;

/// One of the crawler's UDP identities: an index into `Config::identities`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SocketId(pub u16);

/// A TCP connection, allocated by core: a slot index plus a generation so that a
/// stale id is never confused with a reused slot. Maps one-to-one to a mio `Token`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId {
    /// The connection's slot in the fetcher's table.
    pub index: u32,
    /// The slot's generation, bumped (wrapping) each time a connection in it ends.
    pub generation: u32,
}

impl ConnId {
    /// Packs into a `usize` (for a mio `Token`).
    pub fn to_usize(self) -> usize {
        ((self.generation as u64) << 32 | self.index as u64) as usize
    }

    /// Unpacks what [`ConnId::to_usize`] packed (on 64-bit targets; a 32-bit `usize`
    /// keeps only the index).
    pub fn from_usize(v: usize) -> Self {
        let v = v as u64;
        ConnId {
            index: v as u32,
            generation: (v >> 32) as u32,
        }
    }
}

/// Why a TCP connection ended, as the driver saw it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CloseReason {
    /// The peer closed its side cleanly.
    Eof,
    /// Connection refused while connecting.
    Refused,
    /// The connect attempt timed out in the OS.
    ConnectTimedOut,
    /// Reset or any other IO error.
    Reset,
    /// The driver could not open a socket (EMFILE and the like).
    LocalError,
}

/// Everything that happens to the crawler, stamped with the time it happened.
#[derive(Debug)]
pub enum Input<'a> {
    /// A timer fired (or the driver simply woke up). Time must not go backwards.
    Timeout(Timestamp),
    /// A UDP datagram arrived on one of our identities' sockets.
    Datagram {
        /// When it arrived.
        at: Timestamp,
        /// The identity (socket) it arrived on.
        local: SocketId,
        /// The sender.
        from: SocketAddr,
        /// The payload (any length; core never trusts it).
        bytes: &'a [u8],
    },
    /// A connection requested by [`Output::Connect`] is established.
    TcpConnected {
        /// When it connected.
        at: Timestamp,
        /// The connection.
        conn: ConnId,
    },
    /// Bytes from a connection, in any chunking.
    TcpData {
        /// When they arrived.
        at: Timestamp,
        /// The connection.
        conn: ConnId,
        /// The bytes, in order after the previous ones.
        bytes: &'a [u8],
    },
    /// A connection ended (or never connected), for any reason but our own
    /// [`Output::Close`].
    TcpClosed {
        /// When it ended.
        at: Timestamp,
        /// The connection.
        conn: ConnId,
        /// Why, as the driver saw it.
        reason: CloseReason,
    },
}

impl Input<'_> {
    /// The time the input happened.
    pub fn at(&self) -> Timestamp {
        match self {
            Input::Timeout(t) => *t,
            Input::Datagram { at, .. }
            | Input::TcpConnected { at, .. }
            | Input::TcpData { at, .. }
            | Input::TcpClosed { at, .. } => *at,
        }
    }
}

/// What the crawler asks the driver to do. Drain with `poll_output` until
/// `Timeout` or `Idle`.
#[derive(Debug, Clone)]
pub enum Output {
    /// Send one UDP datagram.
    Transmit {
        /// The identity (socket) to send from.
        local: SocketId,
        /// The destination.
        to: SocketAddr,
        /// The datagram.
        payload: Bytes,
    },
    /// Open a TCP connection; answer with [`Input::TcpConnected`] or
    /// [`Input::TcpClosed`].
    Connect {
        /// The id core gave the connection.
        conn: ConnId,
        /// The peer to connect to.
        to: SocketAddr,
    },
    /// Write bytes to a connection, after any earlier ones.
    Send {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        bytes: Bytes,
    },
    /// Close a connection. Core has already forgotten it: a later input for it is
    /// counted as stale and ignored.
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// Something the crawler learned, for the application.
    Event(Event),
    /// Nothing more to do now; call `handle_input(Input::Timeout(t))` at `t`.
    Timeout(Timestamp),
    /// Nothing more to do until the next input.
    Idle,
}

/// How an infohash reached us.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DiscoverySource {
    /// A valid announce_peer query to us.
    Announce,
    /// A get_peers query to us (a candidate: many are random refresh targets).
    GetPeers,
    /// A BEP 51 sample.
    Sample,
}

/// What the crawler learned.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// An infohash heard on the DHT. With the crawl strategy enabled, core emits
    /// each infohash once per bounded deduplication window; otherwise every sighting.
    InfohashDiscovered {
        /// The infohash.
        info_hash: InfoHash,
        /// How it reached us.
        source: DiscoverySource,
        /// The node that told us.
        from: SocketAddr,
        /// For announces: the announcing peer's address.
        peer: Option<SocketAddr>,
    },
    /// An infohash of another shard's slice that this crawler would have
    /// acquired (see `crate::shard`): the driver offers it to the shared queue,
    /// whose owner claims it and acquires it (`Crawler::acquire_claimed`).
    InfohashOffered {
        /// The infohash.
        info_hash: InfoHash,
        /// The shard that owns it.
        owner: u16,
    },
    /// Peers for an infohash, from a get_peers query or traversal.
    PeersFound {
        /// The infohash.
        info_hash: InfoHash,
        /// The peers' addresses.
        peers: Vec<SocketAddr>,
        /// BEP 33 estimate of the seeders, when the nodes answered scrapes.
        seeders: Option<u32>,
        /// BEP 33 estimate of the leechers (peers), when the nodes answered scrapes.
        leechers: Option<u32>,
    },
    /// Metadata fetched and verified against its infohash.
    MetadataFetched(Box<fetch::MetadataFetched>),
    /// A metadata fetch failed, with each peer's reason and what happens next.
    MetadataFailed(Box<fetch::MetadataFailed>),
    /// One peer session ended (for the request log and the peer records).
    PeerSession(Box<fetch::PeerSessionReport>),
    /// A tracker answered: peers (already handed to the fetcher) and its seeder
    /// and leecher counts, with the tracker's URL as their source.
    TrackerReply(Box<tracker::TrackerReply>),
    /// A node entered an identity's routing table.
    NodeAdded {
        /// The identity whose table it entered.
        socket: SocketId,
        /// The node's id.
        id: NodeId,
        /// The node's address.
        addr: SocketAddr,
    },
    /// A node left an identity's routing table.
    NodeRemoved {
        /// The identity whose table it left.
        socket: SocketId,
        /// The node's id.
        id: NodeId,
        /// The node's address.
        addr: SocketAddr,
    },
    /// A remote node told us (BEP 42 `ip`) which address it sees us at.
    ExternalAddressVote {
        /// The identity the reply came to.
        socket: SocketId,
        /// The node that told us.
        voter: SocketAddr,
        /// Our address as that node sees it.
        seen_as: SocketAddr,
    },
    /// The vote on our external address (see `ExternalAddressVote`) settled on an
    /// address this identity's node id was not valid for (BEP 42): it took a new
    /// id for it, and its routing table was rebuilt around that id.
    IdentityChanged {
        /// The identity.
        socket: SocketId,
        /// The id it had.
        old: NodeId,
        /// The id it has now.
        new: NodeId,
        /// The external address the vote settled on.
        external_ip: std::net::IpAddr,
    },
    /// A lookup finished.
    LookupDone {
        /// The identity it ran on.
        socket: SocketId,
        /// The id `find_node` or `get_peers` returned when starting it.
        id: u64,
        /// The node id or infohash looked up.
        target: [u8; 20],
        /// What it looked for.
        kind: LookupKind,
        /// The k closest nodes that answered, closest first.
        closest: Vec<(NodeId, SocketAddr)>,
        /// Queries it sent.
        queries: u32,
    },
    /// The routing table of an identity reached its bootstrap size.
    Bootstrapped {
        /// The identity.
        socket: SocketId,
        /// Nodes in its table.
        nodes: usize,
    },
    /// Bootstrap has not succeeded yet; it is retried with backoff.
    BootstrapFailed {
        /// The identity.
        socket: SocketId,
        /// The number of the retry starting now (1 for the first retry).
        attempt: u32,
    },
}

/// Misuse of the API by our own runtime (never caused by remote input).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiMisuse {
    /// A queue or table is full; the caller should retry later.
    Full,
    /// An argument is invalid (for example, no peers).
    Invalid(&'static str),
    /// The referenced connection or identity does not exist.
    Unknown,
}

impl std::fmt::Display for ApiMisuse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiMisuse::Full => f.write_str("queue full"),
            ApiMisuse::Invalid(w) => write!(f, "invalid argument: {w}"),
            ApiMisuse::Unknown => f.write_str("unknown id"),
        }
    }
}

impl std::error::Error for ApiMisuse {}
