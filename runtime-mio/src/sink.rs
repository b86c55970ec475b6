//! Where the crawl's results go: the loop asks the sink whether an infohash is
//! already stored (to decide acquire-or-skip) and hands it every core event.
//!
//! The loop knows only this trait; the LMDB store plugs in behind it.

use std::collections::HashMap;
use std::net::SocketAddr;

use magnetar_core::report::Metric;
use magnetar_core::{Event, InfoHash, NodeId};

/// Counters of one crawl session, written at the end (and periodically).
#[derive(Clone, Debug, Default)]
pub struct SessionSummary {
    pub started_at: u64,
    pub ended_at: Option<u64>,
    pub infohashes_discovered: u64,
    pub metadata_fetched: u64,
    pub metadata_failed: u64,
    pub torrents_new: u64,
    pub dht_queries_sent: u64,
    pub dht_responses_received: u64,
    pub peak_rss_bytes: u64,
    pub cpu_ms: u64,
}

pub trait Sink {
    /// Whether storage already has the metadata of `ih`.
    fn known(&mut self, ih: &InfoHash) -> bool;
    /// One core event, at wall-clock time `wall` (Unix seconds).
    fn event(&mut self, wall: u64, e: &Event);
    /// Nodes saved by earlier runs, best first, to bootstrap from.
    fn saved_nodes(&mut self, limit: usize) -> Vec<SocketAddr>;
    /// The routing tables' nodes (saved for the next start).
    fn nodes(&mut self, wall: u64, nodes: &[(NodeId, SocketAddr)]);
    /// The session's counters (written at start, periodically and at the end).
    fn session(&mut self, s: &SessionSummary);
    /// Storage counters for `/metrics`.
    fn metrics(&mut self) -> Vec<Metric>;
    /// Everything sent so far is made durable and the store is closed.
    fn close(self: Box<Self>) -> Result<(), String>;
}

/// A sink that keeps fetched torrents in memory (tests, and runs without storage).
#[derive(Default)]
pub struct MemorySink {
    pub torrents: HashMap<InfoHash, (String, u64)>,
    pub nodes: Vec<SocketAddr>,
    pub session: SessionSummary,
}

impl Sink for MemorySink {
    fn known(&mut self, ih: &InfoHash) -> bool {
        self.torrents.contains_key(ih)
    }
    fn event(&mut self, _wall: u64, e: &Event) {
        if let Event::MetadataFetched(m) = e {
            self.torrents
                .insert(m.info_hash, (m.info.name.clone(), m.info.total_size));
        }
    }
    fn saved_nodes(&mut self, limit: usize) -> Vec<SocketAddr> {
        self.nodes.iter().take(limit).copied().collect()
    }
    fn nodes(&mut self, _wall: u64, nodes: &[(NodeId, SocketAddr)]) {
        self.nodes = nodes.iter().map(|n| n.1).collect();
    }
    fn session(&mut self, s: &SessionSummary) {
        self.session = s.clone();
    }
    fn metrics(&mut self) -> Vec<Metric> {
        vec![Metric::gauge(
            "magnetar_storage_torrents",
            "Torrents stored.",
            self.torrents.len() as f64,
        )]
    }
    fn close(self: Box<Self>) -> Result<(), String> {
        tracing::info!(
            torrents = self.torrents.len(),
            started_at = self.session.started_at,
            "in-memory store discarded"
        );
        Ok(())
    }
}
