//! The strategy's inputs, and what it asks of the node it runs in.
//!
//! The strategy is a leaf: it knows nothing of the crawler that owns it. The
//! crawler hands it typed inputs ([`Discovery`], [`CrawlReply`], timeouts,
//! lookup and fetch results, `now`) together with a [`Net`], through which the
//! strategy asks for queries to be sent, peer searches and fetches to be
//! started, and events to be emitted. These requests answer at once (was the
//! query sent, did the search start), because what the strategy does next
//! depends on it: a source that cannot be asked is skipped for the next one.

use std::net::SocketAddr;

use crate::id::{InfoHash, NodeId};
use crate::krpc::{QueryKind, Response};
use crate::rng::Rng;
use crate::{ApiMisuse, DiscoverySource, Event};

use super::Pacer;

/// Whether a query went out.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Sent.
    Yes,
    /// Held back by the packet budget or per-IP pacing: try again later.
    Throttled,
    /// Not sendable (filtered address, wrong family, transaction table full).
    No,
}

/// How a request for a peer search went.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum PeerSearch {
    /// No identity to search from: nothing was done.
    NoIdentity,
    /// The lookup table is full.
    Refused,
    /// It started and finished at once (nobody to ask).
    Finished,
    /// It runs as this lookup; its end comes back as a lookup result.
    Running(u64),
}

/// What the strategy asks of the node it runs in.
pub(crate) trait Net {
    /// Sends a crawl query (transaction purpose `Crawl(tag)`) from identity
    /// `ident`, charging `pacer` once the address passes the node's filters.
    fn send_query(
        &mut self,
        pacer: &mut Pacer,
        ident: usize,
        to: SocketAddr,
        expect_id: Option<NodeId>,
        tag: u64,
        kind: QueryKind<'_>,
    ) -> Sent;

    /// Starts a get_peers traversal for `ih` from the identity closest to it,
    /// seeded with `seeds`, capped at `max_queries` queries. With `scrape` it
    /// asks for BEP 33 filters: libtorrent then answers with the filters *instead
    /// of* `values`, so a search that wants peers must not scrape. With `low`
    /// it is of low priority (a get_peers candidate's): its queries take only
    /// what the per-IP pace leaves to others ([`Pacer::admit_low`]).
    fn start_peer_search(
        &mut self,
        pacer: &mut Pacer,
        ih: InfoHash,
        seeds: &[(NodeId, SocketAddr)],
        max_queries: u32,
        scrape: bool,
        low: bool,
    ) -> PeerSearch;

    /// The peer search `lid`, started with `low`, is of normal priority from
    /// now on (its infohash showed evidence of being a torrent).
    fn promote_search(&mut self, lid: u64);

    /// Fetches metadata for `ih` from `peers` (or adds them to a running fetch).
    fn fetch(&mut self, ih: InfoHash, peers: &[SocketAddr]) -> Result<(), ApiMisuse>;

    /// Hands a public event out.
    fn emit(&mut self, event: Event);

    /// An acquisition's peer search found nobody (the trackers may know peers).
    fn found_nobody(&mut self, ih: InfoHash);

    /// The node's random stream (shared, so that runs replay exactly).
    fn rng(&mut self) -> &mut Rng;

    /// The identity to talk to a node from: same family, id closest to the
    /// node's, so that it keeps us in one of its deep (sparse) buckets.
    fn ident_for(&self, addr: &SocketAddr, id: &NodeId) -> Option<usize>;

    /// A node from the first identity's routing table close to `target` (to
    /// explore from while the book is empty).
    fn nearest_contact(&self, target: &NodeId) -> Option<(SocketAddr, NodeId)>;
}

/// An infohash heard: in a query to us (capture) or in a sample.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Discovery {
    /// The infohash.
    pub info_hash: InfoHash,
    /// How it was heard.
    pub source: DiscoverySource,
    /// The node that told us.
    pub from: SocketAddr,
    /// The announced peer (announce_peer only).
    pub peer: Option<SocketAddr>,
    /// The sampling node (identity, its id), to ask it for peers later.
    pub sampled_by: Option<(usize, NodeId)>,
    /// A get_peers query with BEP 33 `noseed=1`: a seeder's own lookup of the
    /// infohash, evidence of a torrent (a table refresh never sets it).
    pub noseed: bool,
}

/// A reply to one of the strategy's queries.
pub(crate) struct CrawlReply<'a, 'r> {
    /// The identity it came to.
    pub ident: usize,
    /// Who answered.
    pub from: SocketAddr,
    /// The decoded reply.
    pub response: &'a Response<'r>,
    /// Its usable nodes, in the identity's family (through the address filter).
    pub nodes: &'a [(NodeId, SocketAddr)],
    /// Its usable `values` peers (through the address filter); read these, not
    /// `response.values`.
    pub peers: &'a [SocketAddr],
}
