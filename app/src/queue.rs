//! `magnetar crawl --shard I/N --queue URL`: sharing work with the other crawlers
//! of a fleet (issue 21 §2). Core offers the infohashes of other shards' slices
//! (`Event::InfohashOffered`); [`Sharing`] batches them into the shared queue,
//! claims this shard's work (and work taken over from dead claimers) for
//! `Crawler::acquire_claimed`, marks fetched work done, releases what it holds
//! at shutdown, and checks the shared store (behind a local cache) before a
//! discovery of its own slice is fetched. The queue is behind [`WorkQueue`], so
//! the crawl loop is the same without one (an LMDB user runs no queue).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use magnetar_core::fetch::AfterFailure;
use magnetar_core::report::Metric;
use magnetar_core::{Event, InfoHash, Shard};
use magnetar_storage_pg::{ClaimOptions, Queue};

/// A claimed infohash: how often its row was claimed (this time included) and
/// how long ago it was first offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub ih: InfoHash,
    pub claims: u32,
    pub age: Duration,
}

/// A shared work queue, as the crawl loop uses it.
pub trait WorkQueue: Send {
    /// Offers infohashes of other shards (`(infohash, owner)`); idempotent.
    /// Returns how many were new to the queue.
    fn offer(&mut self, items: &[(InfoHash, u16)]) -> Result<u64, String>;
    /// Claims up to `n` infohashes for this shard (its own, then taken over),
    /// each with its row's claims so far (this one included) and its age (since
    /// it was first offered, on the queue's clock).
    fn claim(&mut self, n: usize) -> Result<Vec<Claim>, String>;
    /// How long a claim holds (the lease).
    fn lease(&self) -> Duration;
    /// Marks claimed infohashes done (fetched or given up).
    fn complete(&mut self, ihs: &[InfoHash]) -> Result<u64, String>;
    /// Gives claimed infohashes back to the queue, due at once.
    fn release(&mut self, ihs: &[InfoHash]) -> Result<u64, String>;
    /// Which of `ihs` the shared store holds.
    fn stored(&mut self, ihs: &[InfoHash]) -> Result<Vec<InfoHash>, String>;
    /// Deletes a bounded batch of done rows older than [`PRUNE_KEEP`]; how many.
    fn prune(&mut self) -> Result<u64, String>;
}

/// This crawler's name in the queue (`offered_by`, `claimed_by`): host, process
/// and shard, e.g. `crawler-3:4711:1/3`.
pub fn crawler_name(shard: Shard) -> String {
    format!("{}:{}:{shard}", host_name(), std::process::id())
}

/// This machine's host name (`host` if it cannot be read).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}

/// The PostgreSQL queue (`magnetar_storage_pg::queue`). A lost connection (the
/// server restarted, the network failed) is made again at the next call, at
/// most every [`RECONNECT_EVERY`]; meanwhile calls fail and are counted.
pub struct PgQueue {
    queue: Option<Queue>,
    url: String,
    name: String,
    shard: u16,
    opts: ClaimOptions,
    last_attempt: Option<Instant>,
}

/// How often a lost queue connection is tried again.
const RECONNECT_EVERY: Duration = Duration::from_secs(2);

impl PgQueue {
    /// Connects to `url` (migrating the schema) as `name`, claiming under `opts`.
    pub fn connect(
        url: &str,
        name: &str,
        shard: Shard,
        opts: ClaimOptions,
    ) -> Result<PgQueue, String> {
        let queue = Queue::connect(url, name).map_err(|e| e.to_string())?;
        Ok(PgQueue {
            queue: Some(queue),
            url: url.to_owned(),
            name: name.to_owned(),
            shard: shard.index(),
            opts,
            last_attempt: None,
        })
    }

    /// The connection, made again if it was lost (bounded by [`RECONNECT_EVERY`]).
    fn queue(&mut self) -> Result<&mut Queue, String> {
        if self.queue.as_mut().is_some_and(|q| q.is_closed()) {
            tracing::warn!(target: "magnetar::queue", "shared queue: connection lost");
            self.queue = None;
        }
        if self.queue.is_none() {
            if self
                .last_attempt
                .is_some_and(|t| t.elapsed() < RECONNECT_EVERY)
            {
                return Err("not connected (retrying)".into());
            }
            self.last_attempt = Some(Instant::now());
            let q = Queue::connect(&self.url, &self.name).map_err(|e| e.to_string())?;
            tracing::info!(target: "magnetar::queue", "shared queue: connected again");
            self.queue = Some(q);
        }
        self.queue
            .as_mut()
            .ok_or_else(|| "not connected".to_string())
    }
}

fn key(ih: &InfoHash) -> [u8; 20] {
    ih.0
}

impl WorkQueue for PgQueue {
    fn offer(&mut self, items: &[(InfoHash, u16)]) -> Result<u64, String> {
        let rows: Vec<([u8; 20], u16)> = items.iter().map(|(ih, s)| (key(ih), *s)).collect();
        self.queue()?.offer(&rows).map_err(|e| e.to_string())
    }
    fn claim(&mut self, n: usize) -> Result<Vec<Claim>, String> {
        let (shard, opts) = (self.shard, self.opts);
        let rows = self
            .queue()?
            .claim(shard, n, &opts)
            .map_err(|e| e.to_string())?;
        Ok(rows
            .into_iter()
            .map(|r| Claim {
                ih: InfoHash(r.info_hash),
                claims: u32::try_from(r.attempts).unwrap_or(0),
                age: Duration::from_secs(u64::try_from(r.age).unwrap_or(0)),
            })
            .collect())
    }
    fn lease(&self) -> Duration {
        self.opts.lease
    }
    fn complete(&mut self, ihs: &[InfoHash]) -> Result<u64, String> {
        let keys: Vec<[u8; 20]> = ihs.iter().map(key).collect();
        self.queue()?.complete(&keys).map_err(|e| e.to_string())
    }
    fn release(&mut self, ihs: &[InfoHash]) -> Result<u64, String> {
        let keys: Vec<[u8; 20]> = ihs.iter().map(key).collect();
        self.queue()?
            .release(&keys, Duration::ZERO)
            .map_err(|e| e.to_string())
    }
    fn stored(&mut self, ihs: &[InfoHash]) -> Result<Vec<InfoHash>, String> {
        let keys: Vec<[u8; 20]> = ihs.iter().map(key).collect();
        let got = self.queue()?.stored(&keys).map_err(|e| e.to_string())?;
        Ok(got.into_iter().map(InfoHash).collect())
    }
    fn prune(&mut self) -> Result<u64, String> {
        self.queue()?
            .prune_done(PRUNE_KEEP, PRUNE_BATCH)
            .map_err(|e| e.to_string())
    }
}

/// Offers buffered before a flush (they are flushed at every status tick too).
const OFFER_BATCH: usize = 256;
/// How often the queue is asked for work.
const CLAIM_EVERY: Duration = Duration::from_secs(2);
/// Infohashes claimed at once.
const CLAIM_BATCH: usize = 64;
/// Claimed infohashes held (fetching) at most: no claims above it.
const MAX_HELD: usize = 512;
/// Claims forgotten at their lease's end, remembered for one more lease.
const MAX_STALE: usize = 4 * MAX_HELD;
/// Infohashes known to be in the shared store, cached locally.
const STORED_CACHE: usize = 65_536;
/// How often each crawler prunes done queue rows.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Done rows are kept this long after their lease ended, then deleted.
pub const PRUNE_KEEP: Duration = Duration::from_secs(24 * 3600);
/// Done rows deleted per prune at most (a bounded statement).
const PRUNE_BATCH: i64 = 10_000;
/// A row claimed more than this many times and offered more than
/// [`GIVE_UP_AGE`] ago without an outcome (no peers found, every claimer died
/// or refused it) is given up at its next claim: completed, not fetched.
/// Offered again after it is pruned, it starts over. Both must hold: claims
/// alone come fast when leases are short or crawlers refuse work they have no
/// room for, and age alone says nothing of how often it was tried.
pub const MAX_CLAIMS: u32 = 4;
/// See [`MAX_CLAIMS`].
pub const GIVE_UP_AGE: Duration = Duration::from_secs(24 * 3600);

/// The queue's counters, for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct QueueCounters {
    pub offered: u64,
    pub offer_inserted: u64,
    pub claimed: u64,
    pub completed: u64,
    pub released: u64,
    pub pruned: u64,
    pub given_up: u64,
    pub expired: u64,
    pub errors: u64,
    pub stored_checks: u64,
    pub stored_hits: u64,
    pub held: u64,
}

/// The fleet side of one crawler: its shard and its queue.
pub struct Sharing {
    shard: Shard,
    queue: Option<Box<dyn WorkQueue>>,
    offers: Vec<(InfoHash, u16)>,
    /// Claimed, handed to the crawler, not done yet: when each was claimed.
    /// A claim the crawler ends without an outcome (its acquisition found no
    /// peers, was refused or skipped) is forgotten when its lease ends: the row
    /// is taken over, and claiming goes on.
    held: BTreeMap<InfoHash, Instant>,
    /// Claims forgotten that way, for one more lease (at most
    /// [`MAX_STALE`]): an outcome that comes late still completes the row.
    stale: BTreeMap<InfoHash, Instant>,
    /// Done, to be completed in the queue.
    done: Vec<InfoHash>,
    /// Claimed, not yet handed to the crawler.
    ready: Vec<InfoHash>,
    /// Known to be in the shared store (bounded; oldest out first).
    stored: BTreeMap<InfoHash, u64>,
    stored_order: BTreeMap<u64, InfoHash>,
    stored_seq: u64,
    last_claim: Option<Instant>,
    last_prune: Option<Instant>,
    counters: QueueCounters,
}

impl Sharing {
    /// A crawler of `shard` with `queue` (`None`: no fleet, nothing to do).
    pub fn new(shard: Shard, queue: Option<Box<dyn WorkQueue>>) -> Sharing {
        Sharing {
            shard,
            queue,
            offers: Vec::new(),
            held: BTreeMap::new(),
            stale: BTreeMap::new(),
            done: Vec::new(),
            ready: Vec::new(),
            stored: BTreeMap::new(),
            stored_order: BTreeMap::new(),
            stored_seq: 0,
            last_claim: None,
            last_prune: None,
            counters: QueueCounters::default(),
        }
    }

    /// Whether a queue is configured.
    pub fn active(&self) -> bool {
        self.queue.is_some()
    }

    /// The counters.
    pub fn counters(&self) -> &QueueCounters {
        &self.counters
    }

    fn failed(&mut self, what: &str, e: String) {
        self.counters.errors += 1;
        tracing::warn!(target: "magnetar::queue", "shared queue: {what} failed: {e}");
    }

    /// A core event: offers are buffered, fetched or given-up claims noted.
    pub fn on_event(&mut self, event: &Event) {
        if self.queue.is_none() {
            return;
        }
        match event {
            Event::InfohashOffered { info_hash, owner } => {
                self.counters.offered += 1;
                self.offers.push((*info_hash, *owner));
                if self.offers.len() >= OFFER_BATCH {
                    self.flush_offers();
                }
            }
            Event::MetadataFetched(m) => {
                self.remember_stored(m.info_hash);
                self.finished(m.info_hash);
            }
            Event::MetadataFailed(m) if m.next == AfterFailure::GivenUp => {
                self.finished(m.info_hash)
            }
            _ => {}
        }
    }

    /// `ih` fetched or given up: if claimed, completed at the next tick.
    pub fn finished(&mut self, ih: InfoHash) {
        if self.held.remove(&ih).is_some() || self.stale.remove(&ih).is_some() {
            self.done.push(ih);
        }
    }

    /// Whether the shared store holds `ih` already (checked before an infohash
    /// of this crawler's slice is fetched): the local cache first, then the
    /// queue's store. An error says no (fetching twice beats losing it).
    pub fn is_stored(&mut self, ih: &InfoHash) -> bool {
        if self.stored.contains_key(ih) {
            self.counters.stored_hits += 1;
            return true;
        }
        let Some(q) = self.queue.as_mut() else {
            return false;
        };
        self.counters.stored_checks += 1;
        match q.stored(std::slice::from_ref(ih)) {
            Ok(v) if !v.is_empty() => {
                self.counters.stored_hits += 1;
                self.remember_stored(*ih);
                true
            }
            Ok(_) => false,
            Err(e) => {
                self.failed("store lookup", e);
                false
            }
        }
    }

    fn remember_stored(&mut self, ih: InfoHash) {
        if self.stored.contains_key(&ih) {
            return;
        }
        self.stored_seq += 1;
        self.stored.insert(ih, self.stored_seq);
        self.stored_order.insert(self.stored_seq, ih);
        while self.stored.len() > STORED_CACHE {
            let Some((_, old)) = self.stored_order.pop_first() else {
                break;
            };
            self.stored.remove(&old);
        }
    }

    fn flush_offers(&mut self) {
        if self.offers.is_empty() {
            return;
        }
        let Some(q) = self.queue.as_mut() else {
            return;
        };
        match q.offer(&self.offers) {
            Ok(n) => {
                self.counters.offer_inserted += n;
                self.offers.clear();
            }
            Err(e) => {
                // Kept for the next tick, within a bound.
                if self.offers.len() > 16 * OFFER_BATCH {
                    let drop = self.offers.len() - 16 * OFFER_BATCH;
                    self.offers.drain(..drop);
                }
                self.failed("offer", e);
            }
        }
    }

    /// The status tick: offers flushed, done work completed, new work claimed
    /// (every [`CLAIM_EVERY`], while fewer than [`MAX_HELD`] are held). At the
    /// last tick, what is held is released for the others to take at once.
    pub fn tick(&mut self, last: bool) {
        self.tick_at(Instant::now(), last);
    }

    /// [`Sharing::tick`] at `now`.
    fn tick_at(&mut self, now: Instant, last: bool) {
        let Some(lease) = self.queue.as_ref().map(|q| q.lease()) else {
            return;
        };
        self.flush_offers();
        if !self.done.is_empty() {
            let done = std::mem::take(&mut self.done);
            let r = self.queue.as_mut().map(|q| q.complete(&done));
            match r {
                Some(Ok(n)) => self.counters.completed += n,
                Some(Err(e)) => {
                    self.done = done;
                    self.failed("complete", e);
                }
                None => {}
            }
        }
        if last {
            let held: Vec<InfoHash> = self.held.keys().chain(&self.ready).copied().collect();
            if !held.is_empty() {
                match self.queue.as_mut().map(|q| q.release(&held)) {
                    Some(Ok(n)) => self.counters.released += n,
                    Some(Err(e)) => self.failed("release", e),
                    None => {}
                }
            }
            tracing::info!(target: "magnetar::queue", shard = %self.shard, counters = ?self.counters(), "shared queue at shutdown");
            return;
        }
        let before = self.held.len();
        let mut gone = Vec::new();
        self.held.retain(|ih, at| {
            let keep = now.saturating_duration_since(*at) < lease;
            if !keep {
                gone.push(*ih);
            }
            keep
        });
        let expired = before - self.held.len();
        self.stale
            .retain(|_, at| now.saturating_duration_since(*at) < lease);
        for ih in gone {
            if self.stale.len() < MAX_STALE {
                self.stale.insert(ih, now);
            }
        }
        if expired > 0 {
            self.counters.expired += expired as u64;
            tracing::debug!(target: "magnetar::queue", expired, "claims ended without an outcome: left to their lease");
        }
        if self
            .last_prune
            .is_none_or(|t| now.saturating_duration_since(t) >= PRUNE_EVERY)
        {
            self.last_prune = Some(now);
            match self.queue.as_mut().map(|q| q.prune()) {
                Some(Ok(n)) => self.counters.pruned += n,
                Some(Err(e)) => self.failed("prune", e),
                None => {}
            }
        }
        let due = self
            .last_claim
            .is_none_or(|t| now.saturating_duration_since(t) >= CLAIM_EVERY);
        if due && self.held.len() < MAX_HELD {
            self.last_claim = Some(now);
            let n = CLAIM_BATCH.min(MAX_HELD - self.held.len());
            let r = self.queue.as_mut().map(|q| q.claim(n));
            match r {
                Some(Ok(rows)) => {
                    self.counters.claimed += rows.len() as u64;
                    // Claimed too often, for too long, without an outcome: given up.
                    let mut v = Vec::with_capacity(rows.len());
                    for c in rows {
                        if c.claims > MAX_CLAIMS && c.age > GIVE_UP_AGE {
                            self.counters.given_up += 1;
                            tracing::debug!(target: "magnetar::queue", ih = %c.ih, claims = c.claims, age_s = c.age.as_secs(), "claimed too often for too long: given up");
                            self.done.push(c.ih);
                        } else {
                            v.push(c.ih);
                        }
                    }
                    // A claimed row whose torrent is stored already (its owner
                    // fetched it from a discovery of its own, and the row stayed
                    // open until it was taken over): done, not fetched again.
                    let in_store: Vec<InfoHash> = if v.is_empty() {
                        Vec::new()
                    } else {
                        match self.queue.as_mut().map(|q| q.stored(&v)) {
                            Some(Ok(s)) => s,
                            Some(Err(e)) => {
                                self.failed("store lookup", e);
                                Vec::new()
                            }
                            None => Vec::new(),
                        }
                    };
                    for ih in in_store {
                        self.remember_stored(ih);
                    }
                    for ih in v {
                        if self.stored.contains_key(&ih) {
                            // Stored meanwhile: nothing to fetch.
                            self.done.push(ih);
                        } else if self.held.insert(ih, now).is_none() {
                            self.ready.push(ih);
                        }
                    }
                }
                Some(Err(e)) => self.failed("claim", e),
                None => {}
            }
        }
        self.counters.held = self.held.len() as u64;
    }

    /// Claimed work for the crawler.
    pub fn take_claimed(&mut self, out: &mut Vec<InfoHash>) {
        out.append(&mut self.ready);
    }

    /// The `/metrics` lines (rendered without a queue too: zeros, shard 0/1).
    pub fn metrics(&self) -> Vec<Metric> {
        metrics(self.shard, self.active(), &self.counters)
    }
}

/// The shard and queue metrics.
pub fn metrics(shard: Shard, active: bool, c: &QueueCounters) -> Vec<Metric> {
    vec![
        Metric::gauge(
            "magnetar_shard_index",
            "This crawler's shard (--shard I/N): I.",
            f64::from(shard.index()),
        ),
        Metric::gauge(
            "magnetar_shard_count",
            "Shards of the fleet (--shard I/N): N (1: unsharded).",
            f64::from(shard.count()),
        ),
        Metric::gauge(
            "magnetar_queue_connected",
            "Whether a shared work queue is configured (--queue).",
            if active { 1.0 } else { 0.0 },
        ),
        Metric::counter(
            "magnetar_queue_offered_total",
            "Infohashes of other shards offered to the shared queue.",
            c.offered,
        ),
        Metric::counter(
            "magnetar_queue_offer_inserted_total",
            "Of those, the ones new to the queue.",
            c.offer_inserted,
        ),
        Metric::counter(
            "magnetar_queue_claimed_total",
            "Infohashes claimed from the shared queue (own and taken over).",
            c.claimed,
        ),
        Metric::counter(
            "magnetar_queue_completed_total",
            "Claimed infohashes marked done (fetched or given up).",
            c.completed,
        ),
        Metric::counter(
            "magnetar_queue_released_total",
            "Claimed infohashes given back at shutdown.",
            c.released,
        ),
        Metric::counter(
            "magnetar_queue_pruned_total",
            "Done rows deleted from the shared queue (a day after their lease ended).",
            c.pruned,
        ),
        Metric::counter(
            "magnetar_queue_given_up_total",
            "Claimed rows given up, not fetched: claimed more than 4 times and first offered over a day ago.",
            c.given_up,
        ),
        Metric::counter(
            "magnetar_queue_expired_total",
            "Claims that ended without an outcome (no peers, refused): forgotten at the lease's end.",
            c.expired,
        ),
        Metric::counter(
            "magnetar_queue_errors_total",
            "Shared queue operations that failed (retried at the next tick).",
            c.errors,
        ),
        Metric::counter(
            "magnetar_queue_stored_checks_total",
            "Shared-store lookups before fetching (local cache misses).",
            c.stored_checks,
        ),
        Metric::counter(
            "magnetar_queue_stored_hits_total",
            "Discoveries found in the shared store (not fetched).",
            c.stored_hits,
        ),
        Metric::gauge(
            "magnetar_queue_held",
            "Claimed infohashes being fetched.",
            c.held as f64,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};

    /// An in-memory queue recording calls.
    #[derive(Clone, Default)]
    struct Mem(Arc<Mutex<MemState>>);
    #[derive(Default)]
    struct MemState {
        rows: BTreeMap<InfoHash, (u16, bool, bool)>,
        claims: BTreeMap<InfoHash, u32>,
        /// Rows' ages (zero unless set).
        ages: BTreeMap<InfoHash, Duration>,
        stored: BTreeSet<InfoHash>,
        lookups: u64,
        prunes: u64,
    }
    impl WorkQueue for Mem {
        fn offer(&mut self, items: &[(InfoHash, u16)]) -> Result<u64, String> {
            let mut s = self.0.lock().unwrap();
            let mut n = 0;
            for (ih, o) in items {
                if !s.rows.contains_key(ih) {
                    s.rows.insert(*ih, (*o, false, false));
                    n += 1;
                }
            }
            Ok(n)
        }
        fn claim(&mut self, n: usize) -> Result<Vec<Claim>, String> {
            let mut s = self.0.lock().unwrap();
            let v: Vec<InfoHash> = s
                .rows
                .iter()
                .filter(|(_, r)| r.0 == 1 && !r.1)
                .map(|(k, _)| *k)
                .take(n)
                .collect();
            let mut out = Vec::new();
            for k in v {
                if let Some(r) = s.rows.get_mut(&k) {
                    r.1 = true;
                }
                let age = s.ages.get(&k).copied().unwrap_or_default();
                let c = s.claims.entry(k).or_default();
                *c += 1;
                out.push(Claim {
                    ih: k,
                    claims: *c,
                    age,
                });
            }
            Ok(out)
        }
        fn lease(&self) -> Duration {
            LEASE
        }
        fn complete(&mut self, ihs: &[InfoHash]) -> Result<u64, String> {
            let mut s = self.0.lock().unwrap();
            for k in ihs {
                if let Some(r) = s.rows.get_mut(k) {
                    r.2 = true;
                }
            }
            Ok(ihs.len() as u64)
        }
        fn release(&mut self, ihs: &[InfoHash]) -> Result<u64, String> {
            let mut s = self.0.lock().unwrap();
            for k in ihs {
                if let Some(r) = s.rows.get_mut(k) {
                    r.1 = false;
                }
            }
            Ok(ihs.len() as u64)
        }
        fn stored(&mut self, ihs: &[InfoHash]) -> Result<Vec<InfoHash>, String> {
            let mut s = self.0.lock().unwrap();
            s.lookups += 1;
            Ok(ihs
                .iter()
                .filter(|k| s.stored.contains(k))
                .copied()
                .collect())
        }
        fn prune(&mut self) -> Result<u64, String> {
            let mut s = self.0.lock().unwrap();
            let before = s.rows.len();
            s.rows.retain(|_, r| !r.2);
            s.prunes += 1;
            Ok((before - s.rows.len()) as u64)
        }
    }

    const LEASE: Duration = Duration::from_secs(3600);

    #[test]
    fn offers_claims_completion_release_and_the_stored_cache() {
        let mem = Mem::default();
        let shard = Shard::new(1, 3).unwrap();
        let mut s = Sharing::new(shard, Some(Box::new(mem.clone())));
        let (a, b, c) = (
            InfoHash([0x10; 20]),
            InfoHash([0x60; 20]),
            InfoHash([0x61; 20]),
        );
        s.on_event(&Event::InfohashOffered {
            info_hash: a,
            owner: 0,
        });
        s.on_event(&Event::InfohashOffered {
            info_hash: a,
            owner: 0,
        });
        // Another shard offered b and c, of our slice.
        mem.clone().offer(&[(b, 1), (c, 1)]).unwrap();
        s.tick(false);
        assert_eq!(s.counters().offered, 2);
        assert_eq!(s.counters().offer_inserted, 1);
        let mut got = Vec::new();
        s.take_claimed(&mut got);
        assert_eq!(got, vec![b, c]);
        // b is stored by someone: the check finds it once, the cache after.
        mem.0.lock().unwrap().stored.insert(b);
        assert!(s.is_stored(&b));
        assert!(s.is_stored(&b));
        assert!(!s.is_stored(&a));
        // One lookup for the claimed batch, one for b, one for a.
        assert_eq!(mem.0.lock().unwrap().lookups, 3);
        // c is fetched here: completed at the next tick; b is released at the end.
        s.finished(c);
        s.tick(true);
        let st = mem.0.lock().unwrap();
        assert_eq!(st.rows[&c], (1, true, true));
        assert_eq!(st.rows[&b], (1, false, false), "released, not done");
        assert_eq!(s.counters().released, 1);
    }

    /// A claimed row whose torrent is in the shared store already (its owner
    /// fetched it from its own discovery; the row was taken over later) is
    /// completed, not handed to the crawler to fetch again.
    #[test]
    fn a_claimed_row_already_stored_is_completed_not_fetched() {
        let mem = Mem::default();
        let mut s = Sharing::new(Shard::new(1, 3).unwrap(), Some(Box::new(mem.clone())));
        let (b, c) = (InfoHash([0x60; 20]), InfoHash([0x61; 20]));
        mem.clone().offer(&[(b, 1), (c, 1)]).unwrap();
        mem.0.lock().unwrap().stored.insert(b);
        s.tick(false);
        let mut got = Vec::new();
        s.take_claimed(&mut got);
        assert_eq!(got, vec![c], "b is stored: not fetched");
        assert!(s.is_stored(&b), "remembered in the local cache");
        // Completed at the next tick.
        s.last_claim = Some(Instant::now());
        s.tick(false);
        assert_eq!(mem.0.lock().unwrap().rows[&b], (1, true, true));
        assert_eq!(mem.0.lock().unwrap().rows[&c], (1, true, false));
        // Pruned at the first tick only (then every PRUNE_EVERY): b stays.
        assert_eq!(mem.0.lock().unwrap().prunes, 1);
        assert_eq!(s.counters().pruned, 0);
        // Due again: b (done) goes, c (held) stays.
        s.last_prune = None;
        s.tick(false);
        assert_eq!(mem.0.lock().unwrap().prunes, 2);
        assert_eq!(s.counters().pruned, 1);
        assert!(!mem.0.lock().unwrap().rows.contains_key(&b));
        assert!(mem.0.lock().unwrap().rows.contains_key(&c));
    }

    /// Claims the crawler ends without an outcome (no peers found, the
    /// acquisition refused or skipped) are forgotten when their lease ends, so
    /// claiming never stops at MAX_HELD; a row claimed more than MAX_CLAIMS
    /// times is given up (completed, not fetched).
    #[test]
    fn silent_claims_expire_with_their_lease_and_tired_rows_are_given_up() {
        let mem = Mem::default();
        let mut s = Sharing::new(Shard::new(1, 3).unwrap(), Some(Box::new(mem.clone())));
        // MAX_HELD rows of our slice, and more.
        let rows: Vec<(InfoHash, u16)> = (0..MAX_HELD as u32 + 10)
            .map(|i| {
                let mut k = [0x60; 20];
                k[16..].copy_from_slice(&i.to_be_bytes());
                (InfoHash(k), 1)
            })
            .collect();
        mem.clone().offer(&rows).unwrap();
        let t0 = Instant::now();
        let mut got = Vec::new();
        let mut t = t0;
        // Claiming until MAX_HELD are held; none of them ends.
        for _ in 0..(MAX_HELD / CLAIM_BATCH + 2) {
            s.tick_at(t, false);
            t += CLAIM_EVERY;
        }
        s.take_claimed(&mut got);
        assert_eq!(got.len(), MAX_HELD);
        assert_eq!(s.counters().held, MAX_HELD as u64);
        // Nothing more while the leases hold.
        s.tick_at(t, false);
        s.take_claimed(&mut got);
        assert_eq!(got.len(), MAX_HELD);
        assert_eq!(s.counters().expired, 0);
        // The leases end: forgotten, and claiming goes on (the rest of the rows).
        s.tick_at(t + LEASE, false);
        assert_eq!(s.counters().expired, MAX_HELD as u64);
        s.take_claimed(&mut got);
        assert_eq!(got.len(), MAX_HELD + 10);
        // One of the forgotten ones is fetched after all: still completed.
        let late = got[3];
        s.finished(late);
        s.tick_at(t + LEASE + CLAIM_EVERY, false);
        assert!(
            mem.0.lock().unwrap().rows[&late].2,
            "late outcome completed"
        );
        // Rows taken over again and again, now up for their fifth claim: the
        // one first offered more than a day ago is given up, the one offered a
        // day ago exactly is fetched.
        let (tired, young) = (rows[1].0, rows[2].0);
        {
            let mut m = mem.0.lock().unwrap();
            for (ih, age) in [
                (tired, GIVE_UP_AGE + Duration::from_secs(1)),
                (young, GIVE_UP_AGE),
            ] {
                m.claims.insert(ih, MAX_CLAIMS);
                m.ages.insert(ih, age);
                m.rows.get_mut(&ih).unwrap().1 = false;
            }
        }
        // (Their old claims here were forgotten at the lease's end above.)
        s.tick_at(t + LEASE * 3, false);
        let before = got.len();
        s.take_claimed(&mut got);
        assert_eq!(got[before..], [young], "only the young one handed over");
        assert_eq!(s.counters().given_up, 1);
        // Completed at the next tick; the young one is not.
        s.tick_at(t + LEASE * 3 + CLAIM_EVERY, false);
        assert!(mem.0.lock().unwrap().rows[&tired].2);
        assert!(!mem.0.lock().unwrap().rows[&young].2);
    }

    #[test]
    fn without_a_queue_nothing_happens() {
        let mut s = Sharing::new(Shard::ALL, None);
        s.on_event(&Event::InfohashOffered {
            info_hash: InfoHash([1; 20]),
            owner: 0,
        });
        s.tick(false);
        assert!(!s.is_stored(&InfoHash([1; 20])));
        assert_eq!(s.counters().offered, 0);
        let mut v = Vec::new();
        s.take_claimed(&mut v);
        assert!(v.is_empty());
    }
}
