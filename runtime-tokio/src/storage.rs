//! Where the crawl's results go, seen from the driver.
//!
//! The driver knows only the [`Storage`] trait: it asks [`Storage::known`] whether a
//! discovered infohash is stored (inline, on the driver task: it must be a fast
//! read, as an LMDB `contains` is) and hands every core event to
//! [`Storage::record`] on a dedicated storage thread, through a bounded channel.
//! `record` may block (the LMDB writer's `send` blocks when its own channel is
//! full); the bounded channel then fills and the driver waits for room before it
//! reads more input: that is the backpressure.
//!
//! The conversion of events into storage records belongs to the shared ingest glue
//! (`magnetar_storage::ingest`), not to this crate: an LMDB-backed `Storage` is a
//! thin adapter over it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use magnetar_core::{Event, InfoHash, NodeId};

/// A store of crawl results. All methods take `&self`: `known` runs on the driver
/// task while `record` runs on the storage thread.
pub trait Storage: Send + Sync + 'static {
    /// Whether the metadata of `ih` is stored already (then it is not acquired).
    /// Called on the driver task once per new discovery: must not block for long.
    fn known(&self, ih: &InfoHash) -> bool;
    /// One core event, at wall-clock time `wall` (Unix seconds). Runs on the
    /// storage thread; may block (backpressure).
    fn record(&self, wall: u64, event: &Event) -> Result<(), String>;
    /// The routing tables' nodes at shutdown (for the next start's bootstrap).
    fn save_nodes(&self, _wall: u64, _nodes: &[(NodeId, SocketAddr)]) -> Result<(), String> {
        Ok(())
    }
    /// Everything recorded so far is made durable. Called once, at shutdown, on the
    /// storage thread, after the last `record`.
    fn flush(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A store that keeps fetched torrents in memory: name and total size by infohash
/// (tests, and programs that want no database).
#[derive(Default, Debug)]
pub struct MemoryStorage {
    torrents: Mutex<HashMap<InfoHash, (String, u64)>>,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }
    /// The torrents fetched so far: infohash, name, total size.
    pub fn torrents(&self) -> Vec<(InfoHash, String, u64)> {
        let t = self.torrents.lock().unwrap_or_else(|e| e.into_inner());
        t.iter().map(|(k, (n, s))| (*k, n.clone(), *s)).collect()
    }
}

impl Storage for MemoryStorage {
    fn known(&self, ih: &InfoHash) -> bool {
        let t = self.torrents.lock().unwrap_or_else(|e| e.into_inner());
        t.contains_key(ih)
    }
    fn record(&self, _wall: u64, event: &Event) -> Result<(), String> {
        if let Event::MetadataFetched(m) = event {
            let mut t = self.torrents.lock().unwrap_or_else(|e| e.into_inner());
            t.insert(m.info_hash, (m.info.name.clone(), m.info.total_size));
        }
        Ok(())
    }
}
