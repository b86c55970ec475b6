//! Counters for every decision the crawler makes: [`Stats`] (a snapshot from
//! [`crate::Crawler::stats`]) with [`DhtStats`] and [`PacketCounts`] here and the
//! routing, strategy and fetcher counters defined next to their machines. Counters
//! are `u64` totals since the crawler started (they do not wrap in practice); the
//! `usize` fields are gauges of the moment.

use std::collections::BTreeMap;

use crate::crawl::CrawlStats;
use crate::fault::Fault;
use crate::fetch::FetchStats;
use crate::routing::RoutingStats;
use crate::utp::UtpStats;

/// Packets by KRPC method or kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PacketCounts {
    /// `ping` packets.
    pub ping: u64,
    /// `find_node` packets.
    pub find_node: u64,
    /// `get_peers` packets.
    pub get_peers: u64,
    /// `announce_peer` packets.
    pub announce_peer: u64,
    /// `sample_infohashes` packets (BEP 51).
    pub sample_infohashes: u64,
    /// Packets with any other method name.
    pub other: u64,
}

impl PacketCounts {
    /// Counts one packet under `method` (its KRPC name; unknown names go to `other`).
    pub fn bump(&mut self, method: &[u8]) {
        match method {
            b"ping" => self.ping += 1,
            b"find_node" => self.find_node += 1,
            b"get_peers" => self.get_peers += 1,
            b"announce_peer" => self.announce_peer += 1,
            b"sample_infohashes" => self.sample_infohashes += 1,
            _ => self.other += 1,
        }
    }
    /// The sum over all methods.
    pub fn total(&self) -> u64 {
        self.ping
            + self.find_node
            + self.get_peers
            + self.announce_peer
            + self.sample_infohashes
            + self.other
    }
}

/// DHT-level counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DhtStats {
    /// KRPC datagrams received (valid or not).
    pub datagrams_in: u64,
    /// KRPC datagrams we built to send (queries, responses and errors), including
    /// any then dropped because the output queue was full.
    pub datagrams_out: u64,
    /// Bytes of the received datagrams (UDP payload only).
    pub bytes_in: u64,
    /// Bytes of those datagrams (UDP payload only).
    pub bytes_out: u64,
    /// Queries received and decoded, by method (before rate limiting).
    pub queries_in: PacketCounts,
    /// Queries we sent, by method.
    pub queries_out: PacketCounts,
    /// Responses received and decoded (whether or not they match a transaction).
    pub responses_in: u64,
    /// KRPC errors received and decoded (whether or not they match a transaction).
    pub errors_in: u64,
    /// Responses we sent.
    pub responses_out: u64,
    /// KRPC errors we sent.
    pub errors_out: u64,
    /// Faults by kind.
    pub faults: BTreeMap<Fault, u64>,
    /// Transactions that passed their short timeout (`DhtConfig::short_timeout`).
    pub timeouts_short: u64,
    /// Transactions that passed their full timeout and failed.
    pub timeouts_full: u64,
    /// Outgoing queries dropped because the transaction table was full.
    pub dropped_tx_full: u64,
    /// Outgoing datagrams not sent because the destination failed the address filter.
    pub dropped_filtered: u64,
    /// Announce-store entries evicted by its cap.
    pub store_evictions: u64,
    /// Rate-limiter entries evicted by its cap.
    pub rate_table_evictions: u64,
    /// Lookups not started because too many were running.
    pub dropped_lookups: u64,
    /// Lookups started (API calls, bootstrap and bucket refresh, the strategy).
    pub lookups_started: u64,
    /// Lookups finished.
    pub lookups_done: u64,
    /// Bootstrap rounds sent, per identity (the first one and every retry).
    pub bootstrap_attempts: u64,
    /// Datagrams accepted although their dict keys were out of order.
    pub unsorted_keys_accepted: u64,
    /// Responses that carried a BEP 42 `ip` (our address as the responder sees it).
    pub external_votes: u64,
    /// Nodes of the other address family in replies (BEP 32), handed to the
    /// identities of their family.
    pub foreign_nodes: u64,
    /// BEP 42 `ip` votes the external-address voter ignored (private or bogus
    /// addresses, wrong family, a network that already voted this round).
    pub external_votes_ignored: u64,
    /// Times the external-address vote settled on a new address.
    pub external_address_changes: u64,
    /// Identities that took a new (BEP 42) node id because of it.
    pub identity_switches: u64,
}

impl DhtStats {
    /// Counts one fault of kind `f`.
    pub fn fault(&mut self, f: Fault) {
        *self.faults.entry(f).or_insert(0) += 1;
    }
    /// Faults of every kind.
    pub fn faults_total(&self) -> u64 {
        self.faults.values().sum()
    }
}

/// All of the crawler's counters.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// DHT counters (datagrams, queries, faults, lookups).
    pub dht: DhtStats,
    /// Routing counters summed over identities.
    pub routing: RoutingStats,
    /// Metadata fetcher counters.
    pub fetch: FetchStats,
    /// Harvesting strategy counters.
    pub crawl: CrawlStats,
    /// Tracker client counters.
    pub tracker: crate::tracker::TrackerStats,
    /// Nodes currently in routing tables (all identities).
    pub nodes: usize,
    /// Outputs dropped because the output queue was full.
    pub dropped_outputs: u64,
    /// Lookups running now (a gauge; capped by `DhtConfig::max_lookups`).
    pub lookups_running: usize,
    /// Live transactions now (within their short timeout; a gauge capped by
    /// `DhtConfig::max_transactions`). Late ones, past it and still matched
    /// until the full timeout, are in `Crawler::table_sizes`.
    pub transactions: usize,
    /// Infohashes in the announce store now (a gauge).
    pub stored_infohashes: usize,
    /// The uTP socket manager's counters (the fetcher's uTP streams).
    pub utp: UtpStats,
}

/// One bounded table of the crawler: its size now against the cap its
/// configuration holds it to (see [`crate::Crawler::table_sizes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSize {
    /// A short name of the table ("routing table", "crawl book", ...).
    pub name: &'static str,
    /// Entries now.
    pub len: usize,
    /// The most entries it may hold.
    pub bound: usize,
}

impl TableSize {
    /// Whether the table holds more than its bound.
    pub fn over(&self) -> bool {
        self.len > self.bound
    }
}
