//! The PostgreSQL store behind the common storage interface
//! (`magnetar_storage::backend`): [`PgReader`] is a [`ReadIndex`] (what the web
//! server and the CLI's read commands use), [`PgSink`] an [`IndexSink`] (the
//! crawl's write side: a [`PgWriter`] plus the lookups the ingest glue makes).
//!
//! # Connections
//! [`PgReader`] keeps a small pool: `size` slots, each a `Mutex<Option<PgStore>>`
//! (one connection). A read takes the first free slot (`try_lock` in turn from a
//! rotating start), or waits for one; a slot is connected when first used, and a
//! connection that broke is dropped and made again by the next read. The first
//! slot is connected by [`PgReader::connect`], so a wrong URL fails at once.
//! `magnetar serve` uses 8 slots (tokio's blocking pool there has 8 threads),
//! the CLI commands 1.
//!
//! # Reads
//! Every read forwards to the inherent [`PgStore`] method of the LMDB store's name
//! (schema 2 keeps peers, nodes, sessions, requests, filter marks and facets), so
//! the two stores answer alike (`tests/records.rs`, `tests/equivalence.rs`).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use magnetar_storage::backend::{IndexSink, ReadIndex, RemoteTotals};
use magnetar_storage::{
    ClientStats, ExportReport, Facets, FilterMark, FilterTotals, Hourly, InfoHash, NodeRecord, Op,
    SearchQuery, SearchResults, SessionYield, Stats, StoreError, Torrent, TorrentRecord,
    WriterTotals,
};

use crate::{PgError, PgOptions, PgStore, PgWriter, PgWriterConfig};

type Result<T> = std::result::Result<T, StoreError>;

/// A PostgreSQL error as the common interface's error.
pub fn store_error(e: PgError) -> StoreError {
    match e {
        PgError::InvalidQuery(m) => StoreError::InvalidQuery(m),
        PgError::Unsupported(m) => StoreError::Unsupported(m),
        PgError::InvalidInput(m) => StoreError::InvalidInput(m),
        e => StoreError::Backend(format!("PostgreSQL: {e}")),
    }
}

/// The error of a read this store cannot answer yet.
pub fn unsupported(what: &str) -> StoreError {
    StoreError::Unsupported(format!("not supported by the PostgreSQL store yet: {what}"))
}

/// Whether the connection behind `e` is gone (the slot is then reconnected).
fn broken(e: &PgError) -> bool {
    match e {
        PgError::Db { source, .. } => {
            source.is_closed()
                || source.code().is_none_or(|c| {
                    // connection_exception, operator_intervention (admin shutdown,
                    // crash shutdown, cannot connect now).
                    c.code().starts_with("08") || c.code().starts_with("57P")
                })
        }
        _ => false,
    }
}

/// A pool of read connections: see the module doc.
pub struct PgReader {
    url: String,
    /// Whether connections migrate the schema ([`PgReader::connect`]) or
    /// refuse any but this build's ([`PgReader::open`]).
    migrate: bool,
    slots: Vec<Mutex<Option<PgStore>>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for PgReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgReader")
            .field("slots", &self.slots.len())
            .finish()
    }
}

impl PgReader {
    /// Connects the first of `size` (at least 1) connections (and migrates the
    /// schema, as every [`PgStore::connect`] does).
    pub fn connect(url: &str, size: usize) -> std::result::Result<PgReader, PgError> {
        PgReader::with_mode(url, size, true)
    }

    /// Like [`PgReader::connect`] but changing nothing: every connection is
    /// made by [`PgStore::connect_existing`] (an empty database or another
    /// schema version is refused). For reading commands.
    pub fn open(url: &str, size: usize) -> std::result::Result<PgReader, PgError> {
        PgReader::with_mode(url, size, false)
    }

    fn with_mode(url: &str, size: usize, migrate: bool) -> std::result::Result<PgReader, PgError> {
        let first = PgReader::connect_one(url, migrate)?;
        let mut slots = vec![Mutex::new(Some(first))];
        slots.extend((1..size.max(1)).map(|_| Mutex::new(None)));
        Ok(PgReader {
            url: url.to_owned(),
            migrate,
            slots,
            next: AtomicUsize::new(0),
        })
    }

    fn connect_one(url: &str, migrate: bool) -> std::result::Result<PgStore, PgError> {
        if migrate {
            PgStore::connect(url, PgOptions::default())
        } else {
            PgStore::connect_existing(url, PgOptions::default())
        }
    }

    fn slot(&self) -> MutexGuard<'_, Option<PgStore>> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            if let Ok(g) = self.slots[(start + i) % n].try_lock() {
                return g;
            }
        }
        match self.slots[start].lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Runs `f` on a pooled connection (connecting the slot first if need be).
    pub fn with<T>(
        &self,
        f: impl FnOnce(&mut PgStore) -> std::result::Result<T, PgError>,
    ) -> Result<T> {
        let mut g = self.slot();
        if g.is_none() {
            *g = Some(PgReader::connect_one(&self.url, self.migrate).map_err(store_error)?);
        }
        let Some(store) = g.as_mut() else {
            return Err(StoreError::Backend("PostgreSQL: no connection".into()));
        };
        match f(store) {
            Ok(v) => Ok(v),
            Err(e) => {
                if broken(&e) || store.client().is_closed() {
                    *g = None;
                }
                Err(store_error(e))
            }
        }
    }
}

impl ReadIndex for PgReader {
    fn kind(&self) -> &'static str {
        "postgres"
    }
    fn query(&self, q: &SearchQuery) -> Result<SearchResults> {
        self.with(|s| s.query(q))
    }
    fn get(&self, infohash: &InfoHash) -> Result<Option<Torrent>> {
        self.with(|s| s.get(infohash))
    }
    fn record(&self, infohash: &InfoHash) -> Result<Option<TorrentRecord>> {
        self.with(|s| s.record(infohash))
    }
    fn info_dict(&self, infohash: &InfoHash) -> Result<Option<Vec<u8>>> {
        self.with(|s| s.info_dict(infohash))
    }
    fn facets(&self, infohash: &InfoHash) -> Result<Option<Facets>> {
        self.with(|s| s.facets(infohash))
    }
    fn facets_of(&self, infohashes: &[InfoHash]) -> Result<Vec<Option<Facets>>> {
        self.with(|s| s.facets_of(infohashes))
    }
    fn infohashes_with_prefix(
        &self,
        bytes: &[u8],
        nibbles: usize,
        limit: usize,
    ) -> Result<Vec<InfoHash>> {
        self.with(|s| s.infohashes_with_prefix(bytes, nibbles, limit))
    }
    fn recent(&self, n: usize) -> Result<Vec<TorrentRecord>> {
        self.with(|s| s.recent(n))
    }
    fn count(&self) -> Result<u64> {
        self.with(|s| s.count())
    }
    fn stats(&self) -> Result<Stats> {
        self.with(|s| s.stats())
    }
    fn session_yields(&self, now: u64) -> Result<Vec<SessionYield>> {
        self.with(|s| s.session_yields(now))
    }
    fn failure_reasons(&self) -> Result<Vec<(String, u64)>> {
        self.with(|s| s.failure_reasons())
    }
    fn encryption_outcomes(&self) -> Result<Vec<(String, u64, u64)>> {
        self.with(|s| s.encryption_outcomes())
    }
    fn transport_outcomes(&self) -> Result<Vec<(String, u64, u64)>> {
        self.with(|s| s.transport_outcomes())
    }
    fn top_clients(&self, limit: usize) -> Result<Vec<ClientStats>> {
        self.with(|s| s.top_clients(limit))
    }
    fn discoveries_per_hour(&self, now: u64, hours: u32) -> Result<Hourly> {
        self.with(|s| s.discoveries_per_hour(now, hours))
    }
    fn requests_per_hour(&self, now: u64, hours: u32) -> Result<Hourly> {
        self.with(|s| s.requests_per_hour(now, hours))
    }
    fn filter_totals(&self) -> Result<FilterTotals> {
        self.with(|s| s.filter_totals())
    }
    fn filter_labels(&self, max_scan: u64) -> Result<Vec<(String, u64, u64)>> {
        self.with(|s| s.filter_labels(max_scan))
    }
    fn export_jsonl(&self, out: &mut dyn Write, since: Option<u64>) -> Result<ExportReport> {
        self.with(|s| s.export_jsonl(&mut *out, since))
    }
    fn export_torrent_files(&self, dir: &Path, since: Option<u64>) -> Result<ExportReport> {
        self.with(|s| s.export_torrent_files(dir, since))
    }
}

/// Records of known torrents kept by [`PgSink`] (then the cache starts over).
pub const KNOWN_CACHE: usize = 65_536;
/// After a failed lookup connection, lookups fail at once for this long (the
/// crawl then treats the infohash as unknown) instead of each trying to connect.
const LOOKUP_RETRY: Duration = Duration::from_secs(1);

/// The crawl's write side on PostgreSQL: a [`PgWriter`] (bounded buffer, retry
/// with backoff) and one lookup connection with a cache of the records of known
/// torrents ("known?" is asked for every discovery; a torrent seen again is asked
/// about again and again): those found in PostgreSQL and those sent to it (so one
/// still in the buffer, or written while PostgreSQL is down, is not fetched again).
pub struct PgSink {
    url: String,
    writer: PgWriter,
    lookup: Mutex<(Option<PgStore>, Option<Instant>)>,
    known: Mutex<HashMap<InfoHash, TorrentRecord>>,
    sent: u64,
    cache_hits: AtomicU64,
}

impl PgSink {
    /// Starts the writer (it connects on its own, retrying while the database is
    /// down); the lookup connection is made on first use.
    pub fn start(url: &str, cfg: PgWriterConfig) -> PgSink {
        PgSink {
            url: url.to_owned(),
            writer: PgWriter::start(url, cfg),
            lookup: Mutex::new((None, None)),
            known: Mutex::new(HashMap::new()),
            sent: 0,
            cache_hits: AtomicU64::new(0),
        }
    }

    fn lookup<T>(
        &self,
        f: impl FnOnce(&mut PgStore) -> std::result::Result<T, PgError>,
    ) -> Result<T> {
        let mut g = match self.lookup.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let (conn, failed_at) = &mut *g;
        if conn.is_none() {
            if failed_at.is_some_and(|t| t.elapsed() < LOOKUP_RETRY) {
                return Err(StoreError::Backend(
                    "PostgreSQL: unreachable (lookup connection)".into(),
                ));
            }
            match PgStore::connect(&self.url, PgOptions::default()) {
                Ok(s) => *conn = Some(s),
                Err(e) => {
                    *failed_at = Some(Instant::now());
                    return Err(store_error(e));
                }
            }
        }
        let Some(s) = conn.as_mut() else {
            return Err(StoreError::Backend("PostgreSQL: no connection".into()));
        };
        match f(s) {
            Ok(v) => Ok(v),
            Err(e) => {
                if broken(&e) || s.client().is_closed() {
                    *conn = None;
                    *failed_at = Some(Instant::now());
                }
                Err(store_error(e))
            }
        }
    }

    /// Keeps the cached record of a torrent in step with what is sent about it.
    fn note(&self, op: &Op) {
        let Ok(mut known) = self.known.lock() else {
            return;
        };
        match op {
            Op::Seen { infohash, at, .. } => {
                if let Some(r) = known.get_mut(infohash) {
                    r.last_seen_at = r.last_seen_at.max(*at);
                }
            }
            Op::Scrape {
                infohash,
                at,
                seeders,
                leechers,
            } => {
                if let Some(r) = known.get_mut(infohash) {
                    r.seeders = Some(*seeders);
                    r.leechers = Some(*leechers);
                    r.scraped_at = Some(*at);
                }
            }
            // Sent, not yet committed: known from now on, so a discovery of it
            // while it waits in the buffer does not fetch it again (under its v1
            // hash and, for a hybrid or v2 torrent, its truncated v2 hash).
            Op::Torrent(t) => {
                if known.len() >= KNOWN_CACHE {
                    known.clear();
                }
                let rec = TorrentRecord {
                    infohash: t.infohash,
                    kind: t.kind,
                    v2: t.v2,
                    name: t.name.clone(),
                    total_size: t.total_size,
                    piece_length: t.piece_length,
                    piece_count: t.piece_count,
                    file_count: u32::try_from(t.files.len()).unwrap_or(u32::MAX),
                    private: t.private,
                    source: t.source.clone(),
                    discovered_at: t.discovered_at,
                    last_seen_at: t.discovered_at,
                    sources: t.sources,
                    seeders: t.seeders,
                    leechers: t.leechers,
                    scraped_at: t.scraped_at,
                    has_info: t.info.is_some(),
                };
                if let Some(v2) = t.v2 {
                    let mut short = [0u8; 20];
                    short.copy_from_slice(&v2[..20]);
                    if short != t.infohash {
                        known.insert(short, rec.clone());
                    }
                }
                known.insert(t.infohash, rec);
            }
            _ => {}
        }
    }
}

impl IndexSink for PgSink {
    fn kind(&self) -> &'static str {
        "postgres"
    }
    fn send(&mut self, op: Op) -> Result<()> {
        self.note(&op);
        self.writer.send(op).map_err(store_error)?;
        self.sent += 1;
        Ok(())
    }
    fn try_send(&mut self, op: Op) -> Result<Option<Op>> {
        self.note(&op);
        let back = self.writer.try_send(op).map_err(store_error)?;
        if back.is_none() {
            self.sent += 1;
        }
        Ok(back)
    }
    fn flush(&mut self) -> Result<u64> {
        self.writer.flush().map_err(store_error)?;
        Ok(self.writer.totals().batches)
    }
    fn totals(&self) -> WriterTotals {
        let t = self.writer.totals();
        WriterTotals {
            batches: t.batches,
            records: t.ops,
            torrents_new: t.torrents_new,
            ..WriterTotals::default()
        }
    }
    fn remote_totals(&self) -> Option<RemoteTotals> {
        let t = self.writer.totals();
        Some(RemoteTotals {
            buffered: self.sent.saturating_sub(t.ops),
            retries: t.retries,
            outages: t.outages,
            down: t.down,
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
        })
    }
    fn close(self: Box<Self>) -> Result<WriterTotals> {
        let t = self.writer.close().map_err(store_error)?;
        Ok(WriterTotals {
            batches: t.batches,
            records: t.ops,
            torrents_new: t.torrents_new,
            ..WriterTotals::default()
        })
    }
    fn record(&self, infohash: &InfoHash) -> Result<Option<TorrentRecord>> {
        if let Ok(known) = self.known.lock() {
            if let Some(r) = known.get(infohash) {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(r.clone()));
            }
        }
        let r = self.lookup(|s| s.record(infohash))?;
        if let Some(rec) = &r {
            if let Ok(mut known) = self.known.lock() {
                if known.len() >= KNOWN_CACHE {
                    known.clear();
                }
                known.insert(*infohash, rec.clone());
            }
        }
        Ok(r)
    }
    fn tombstone(&self, infohash: &InfoHash) -> Result<Option<FilterMark>> {
        self.lookup(|s| s.tombstone(infohash))
    }
    fn saved_nodes(&self, limit: usize) -> Result<Vec<NodeRecord>> {
        self.lookup(|s| s.saved_nodes(limit))
    }
    fn stats(&self) -> Result<Stats> {
        self.lookup(|s| s.stats())
    }
}
