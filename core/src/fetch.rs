//! Leech scheduler: per-infohash peer queues, parallel sessions, caps, deadlines.
//!
//! STUB: the interface the crawler relies on. The metadata-fetching work replaces
//! the bodies (and may add to, but not break, this interface).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use crate::id::InfoHash;
use crate::metadata::TorrentInfo;
use crate::rng::Rng;
use crate::time::Timestamp;
use crate::{ApiMisuse, CloseReason, ConnId, Output};

#[derive(Clone, Debug)]
pub struct FetchConfig {
    pub max_metadata_size: usize,
    pub connect_timeout: Duration,
    pub peer_timeout: Duration,
    pub infohash_timeout: Duration,
    pub peers_per_infohash: usize,
    pub max_sessions: usize,
    pub max_sessions_per_ip: usize,
    /// Our BEP 10 `v`, if any.
    pub client_version: Option<String>,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            max_metadata_size: 10 << 20,
            connect_timeout: Duration::from_secs(3),
            peer_timeout: Duration::from_secs(10),
            infohash_timeout: Duration::from_secs(60),
            peers_per_infohash: 3,
            max_sessions: 1000,
            max_sessions_per_ip: 2,
            client_version: None,
        }
    }
}

/// Verified metadata for an infohash.
#[derive(Clone, Debug)]
pub struct MetadataFetched {
    pub info_hash: InfoHash,
    pub info: TorrentInfo,
    /// The raw, verified info dict.
    pub raw: Bytes,
    pub peer: SocketAddr,
}

/// Every peer failed for an infohash.
#[derive(Clone, Debug)]
pub struct MetadataFailed {
    pub info_hash: InfoHash,
}

/// One peer session's outcome.
#[derive(Clone, Debug)]
pub struct PeerSessionReport {
    pub info_hash: InfoHash,
    pub peer: SocketAddr,
}

#[derive(Clone, Debug, Default)]
pub struct FetchStats {
    pub started: u64,
}

pub struct Fetcher {
    stats: FetchStats,
}

impl Fetcher {
    pub fn new(_cfg: FetchConfig, _rng: Rng) -> Self {
        Fetcher {
            stats: FetchStats::default(),
        }
    }
    /// Starts fetching `ih` from `peers`, or adds peers to a running fetch.
    pub fn fetch(
        &mut self,
        _now: Timestamp,
        _ih: InfoHash,
        _peers: &[SocketAddr],
    ) -> Result<(), ApiMisuse> {
        Err(ApiMisuse::Full)
    }
    pub fn is_fetching(&self, _ih: &InfoHash) -> bool {
        false
    }
    pub fn handle_connected(&mut self, _now: Timestamp, _conn: ConnId) {}
    pub fn handle_data(&mut self, _now: Timestamp, _conn: ConnId, _bytes: &[u8]) {}
    pub fn handle_closed(&mut self, _now: Timestamp, _conn: ConnId, _reason: CloseReason) {}
    pub fn handle_timeout(&mut self, _now: Timestamp) {}
    /// Connect, Send, Close and Event outputs only; `None` when drained.
    pub fn poll_output(&mut self) -> Option<Output> {
        None
    }
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        None
    }
    pub fn stats(&self) -> &FetchStats {
        &self.stats
    }
}
