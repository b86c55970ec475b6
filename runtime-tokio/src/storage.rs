//! Where the crawl's results go, seen from the driver.
//!
//! A [`Storage`] lives on its own thread (`magnetar-tokio-storage`) and is fed
//! through a bounded channel: every core event, the routing table's nodes now and
//! then, and periodic [`Snapshot`]s. Its methods may block (an LMDB writer's `send`
//! blocks when the writer is behind); the channel then fills and the driver task
//! waits for room before it reads more input (it yields to the runtime meanwhile,
//! never blocking a thread): that is the backpressure.
//!
//! For an `InfohashDiscovered` event the storage answers with a [`Decision`]: the
//! driver calls `Crawler::acquire` only for [`Decision::Acquire`], so the
//! "already stored?" read runs on the storage thread, off the reactor.
//!
//! The method shapes follow the shared ingest glue (`magnetar_storage::ingest`:
//! `on_event` returning a decision, `nodes`, `close`), which does the event →
//! record conversion for both runtimes; the LMDB `Storage` is a thin adapter to it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use magnetar_core::routing::NodeEntry;
use magnetar_core::{Event, InfoHash};

use crate::Snapshot;

/// What to do with a discovered infohash.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not stored: find peers and fetch the metadata.
    Acquire,
    /// Already stored: nothing to do.
    Known,
    /// Not a discovery event.
    Nothing,
}

/// A store of crawl results, owned by the storage thread.
pub trait Storage: Send + 'static {
    /// One core event at wall-clock time `wall` (Unix seconds). For
    /// `InfohashDiscovered`, says whether to acquire it. May block (backpressure).
    /// An error from any method is counted and stops the crawler (new work stops at
    /// once; the messages already queued still reach storage, then `close`).
    fn on_event(&mut self, wall: u64, event: &Event) -> Result<Decision, String>;
    /// The routing tables' nodes, every few minutes and at shutdown (the next
    /// start bootstraps from them).
    fn nodes(&mut self, _wall: u64, _nodes: &[NodeEntry]) -> Result<(), String> {
        Ok(())
    }
    /// The counters, every status interval and once at shutdown (`last`): for a
    /// session record.
    fn status(&mut self, _wall: u64, _snapshot: &Snapshot, _last: bool) -> Result<(), String> {
        Ok(())
    }
    /// Everything recorded is made durable and the store is closed. Called once,
    /// at shutdown, after the last event.
    fn close(self: Box<Self>) -> Result<(), String> {
        Ok(())
    }
}

/// Torrents kept in memory: name and total size by infohash (tests, and programs
/// that want no database). Clones share the same map, so a program can keep one
/// to read while the crawler owns another.
#[derive(Clone, Default, Debug)]
pub struct MemoryStorage {
    torrents: Arc<Mutex<HashMap<InfoHash, (String, u64)>>>,
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
    /// Marks `ih` as stored (it will not be acquired).
    pub fn insert(&self, ih: InfoHash, name: &str, size: u64) {
        let mut t = self.torrents.lock().unwrap_or_else(|e| e.into_inner());
        t.insert(ih, (name.to_string(), size));
    }
}

impl Storage for MemoryStorage {
    fn on_event(&mut self, _wall: u64, event: &Event) -> Result<Decision, String> {
        let mut t = self.torrents.lock().unwrap_or_else(|e| e.into_inner());
        Ok(match event {
            Event::InfohashDiscovered { info_hash, .. } if t.contains_key(info_hash) => {
                Decision::Known
            }
            Event::InfohashDiscovered { .. } => Decision::Acquire,
            Event::MetadataFetched(m) => {
                t.insert(m.info_hash, (m.info.name.clone(), m.info.total_size));
                Decision::Nothing
            }
            _ => Decision::Nothing,
        })
    }
}

/// The LMDB store, through the ingest glue both runtimes share: the same
/// acquire-or-skip decision and the same records as the mio runtime.
#[cfg(feature = "lmdb")]
impl Storage for magnetar_storage::ingest::Ingest {
    fn on_event(&mut self, wall: u64, event: &Event) -> Result<Decision, String> {
        use magnetar_storage::ingest::Decision as D;
        match magnetar_storage::ingest::Ingest::on_event(self, wall, event) {
            Ok(D::Acquire(_)) => Ok(Decision::Acquire),
            Ok(D::Known) => Ok(Decision::Known),
            Ok(D::Nothing) => Ok(Decision::Nothing),
            Err(e) => Err(e.to_string()),
        }
    }
    fn nodes(&mut self, wall: u64, nodes: &[NodeEntry]) -> Result<(), String> {
        magnetar_storage::ingest::Ingest::nodes(self, wall, nodes).map_err(|e| e.to_string())
    }
    fn close(self: Box<Self>) -> Result<(), String> {
        magnetar_storage::ingest::Ingest::close(*self)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
