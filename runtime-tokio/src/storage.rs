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
//! [`Storage`] and [`Decision`] are defined once, in the core's driver pump
//! (`magnetar_core::pump`), for both runtimes; the application implements
//! `Storage` for its LMDB ingest glue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use magnetar_core::{Event, InfoHash};

/// The sink trait and its answer are the core pump's, shared with the mio loop.
pub use magnetar_core::pump::{Decision, Storage};

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
