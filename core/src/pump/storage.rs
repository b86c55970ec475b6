//! Where the crawl's results go, seen from a runtime.

use crate::routing::NodeEntry;
use crate::{Event, InfoHash, Stats, Timestamp};

use super::RuntimeCounters;

/// What to do with a discovered infohash (the sink's "new or known?" answer).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Not stored: find peers and fetch the metadata.
    Acquire,
    /// Already stored: nothing to do.
    Known,
    /// Already stored, but its BEP 33 counts are missing or old: scrape it again
    /// (`Crawler::refresh_scrape`, under the refresh budget).
    Refresh,
    /// Not a discovery event (or the answer comes later).
    Nothing,
}

/// A snapshot of the crawler's counters and the runtime's own.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The runtime's clock (nanoseconds since it started), for rates.
    pub at: Timestamp,
    /// The crawler's counters.
    pub stats: Stats,
    /// The runtime's counters.
    pub runtime: RuntimeCounters,
}

/// A store of crawl results: the sink both runtimes feed. The tokio driver runs
/// it on a thread of its own behind a bounded channel (backpressure); the mio
/// loop calls it inline.
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
    /// Infohashes to acquire whatever the crawler's shard: claimed from a fleet's
    /// shared queue (issue 21 §2). Asked right after each `status` call (not the
    /// last); the runtime hands them to `Crawler::acquire_claimed`. None by default.
    fn claimed(&mut self, _out: &mut Vec<InfoHash>) {}
    /// Everything recorded is made durable and the store is closed. Called once,
    /// at shutdown, after the last event.
    fn close(self: Box<Self>) -> Result<(), String> {
        Ok(())
    }
}

/// A sink that keeps nothing and acquires every discovery.
#[derive(Copy, Clone, Debug, Default)]
pub struct NullStorage;

impl Storage for NullStorage {
    fn on_event(&mut self, _wall: u64, event: &Event) -> Result<Decision, String> {
        Ok(match event {
            Event::InfohashDiscovered { .. } => Decision::Acquire,
            _ => Decision::Nothing,
        })
    }
}
