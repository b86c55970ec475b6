//! Counters for every decision the crawler makes.

use std::collections::BTreeMap;

use crate::crawl::CrawlStats;
use crate::fault::Fault;
use crate::fetch::FetchStats;
use crate::routing::RoutingStats;

/// Packets by KRPC method or kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PacketCounts {
    pub ping: u64,
    pub find_node: u64,
    pub get_peers: u64,
    pub announce_peer: u64,
    pub sample_infohashes: u64,
    pub other: u64,
}

impl PacketCounts {
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
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub queries_in: PacketCounts,
    pub queries_out: PacketCounts,
    pub responses_in: u64,
    pub errors_in: u64,
    pub responses_out: u64,
    pub errors_out: u64,
    /// Faults by kind.
    pub faults: BTreeMap<Fault, u64>,
    pub timeouts_short: u64,
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
    pub lookups_started: u64,
    pub lookups_done: u64,
    pub bootstrap_attempts: u64,
    /// Datagrams accepted although their dict keys were out of order.
    pub unsorted_keys_accepted: u64,
    pub external_votes: u64,
}

impl DhtStats {
    pub fn fault(&mut self, f: Fault) {
        *self.faults.entry(f).or_insert(0) += 1;
    }
    pub fn faults_total(&self) -> u64 {
        self.faults.values().sum()
    }
}

/// All of the crawler's counters.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub dht: DhtStats,
    /// Routing counters summed over identities.
    pub routing: RoutingStats,
    pub fetch: FetchStats,
    pub crawl: CrawlStats,
    /// Nodes currently in routing tables (all identities).
    pub nodes: usize,
    /// Outputs dropped because the output queue was full.
    pub dropped_outputs: u64,
    pub lookups_running: usize,
    pub transactions: usize,
    pub stored_infohashes: usize,
}
