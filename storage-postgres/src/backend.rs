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
//! # What is not supported yet
//! The PostgreSQL schema has no peers, nodes, sessions, requests, tombstones,
//! hidden marks or stored facets yet (they come with a later migration). Reads of
//! them return `StoreError::Unsupported("not supported by the PostgreSQL store
//! yet: …")`; facets are computed from the name and files by the same classifier
//! the LMDB writer stores them with ([`classify_torrent`]), so they are the same.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use magnetar_storage::backend::{
    classify_torrent, write_json_line, write_torrent_file, IndexSink, ReadIndex, RemoteTotals,
};
use magnetar_storage::{
    ClientStats, ExportReport, Facets, FileEntry, FilterMark, FilterTotals, Hourly, InfoHash,
    NodeRecord, Op, SearchQuery, SearchResults, SessionYield, Stats, StoreError, Torrent,
    TorrentRecord, WriterTotals,
};
use postgres::Row;

use crate::search::{record_of, RECORD_COLUMNS};
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
        let first = PgStore::connect(url, PgOptions::default())?;
        let mut slots = vec![Mutex::new(Some(first))];
        slots.extend((1..size.max(1)).map(|_| Mutex::new(None)));
        Ok(PgReader {
            url: url.to_owned(),
            slots,
            next: AtomicUsize::new(0),
        })
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
            *g = Some(PgStore::connect(&self.url, PgOptions::default()).map_err(store_error)?);
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

/// The stored record of `infohash`, without files.
pub fn record(
    store: &mut PgStore,
    ih: &InfoHash,
) -> std::result::Result<Option<TorrentRecord>, PgError> {
    let key: &[u8] = ih;
    let row = store
        .client()
        .query_opt(
            &format!("SELECT {RECORD_COLUMNS} FROM torrents t WHERE t.infohash = $1"),
            &[&key],
        )
        .map_err(PgError::db("reading a torrent"))?;
    row.map(|r| checked(&r)).transpose()
}

fn checked(r: &Row) -> std::result::Result<TorrentRecord, PgError> {
    record_of(r)
        .ok_or_else(|| PgError::InvalidInput("a stored torrent has a value out of range".into()))
}

/// The files of the torrents with these ids, by id.
fn files_of(
    store: &mut PgStore,
    ids: &[i64],
) -> std::result::Result<HashMap<i64, Vec<FileEntry>>, PgError> {
    let mut out: HashMap<i64, Vec<FileEntry>> = HashMap::new();
    for r in store
        .client()
        .query(
            "SELECT torrent_id, path, size FROM files WHERE torrent_id = ANY($1) \
             ORDER BY torrent_id, idx",
            &[&ids],
        )
        .map_err(PgError::db("reading files"))?
    {
        out.entry(r.get(0)).or_default().push(FileEntry {
            path: r.get(1),
            size: u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
        });
    }
    Ok(out)
}

/// Rows of an export, oldest first, a page at a time (keyset paging on
/// `(discovered_at, id)`, so a long export holds no transaction open).
const EXPORT_PAGE: i64 = 2_000;

fn export_walk(
    store: &mut PgStore,
    since: Option<u64>,
    with_info: bool,
    mut f: impl FnMut(TorrentRecord, Vec<FileEntry>, Option<Vec<u8>>) -> Result<bool>,
) -> Result<ExportReport> {
    let mut report = ExportReport::default();
    let mut after: (i64, i64) = (
        i64::try_from(since.unwrap_or(0)).unwrap_or(i64::MAX),
        i64::MIN,
    );
    loop {
        let rows = store
            .client()
            .query(
                &format!(
                    "SELECT {RECORD_COLUMNS}, t.id FROM torrents t \
                     WHERE (t.discovered_at, t.id) > ($1, $2) \
                     ORDER BY t.discovered_at, t.id LIMIT {EXPORT_PAGE}"
                ),
                &[&after.0, &after.1],
            )
            .map_err(PgError::db("exporting"))
            .map_err(store_error)?;
        let Some(last) = rows.last() else {
            break;
        };
        after = (last.get(10), last.get(17));
        // `(discovered_at, id) > (since, MIN)` also skips discovered_at == since
        // with id MIN, which no row has (ids are from a sequence).
        let ids: Vec<i64> = rows.iter().map(|r| r.get(17)).collect();
        let mut files = files_of(store, &ids).map_err(store_error)?;
        let mut infos: HashMap<i64, Vec<u8>> = HashMap::new();
        if with_info {
            for r in store
                .client()
                .query(
                    "SELECT torrent_id, dict FROM info WHERE torrent_id = ANY($1)",
                    &[&ids],
                )
                .map_err(PgError::db("reading info dicts"))
                .map_err(store_error)?
            {
                infos.insert(r.get(0), r.get(1));
            }
        }
        for r in &rows {
            let Some(rec) = record_of(r) else {
                report.skipped_corrupt += 1;
                continue;
            };
            let id: i64 = r.get(17);
            let at = rec.discovered_at;
            if f(
                rec,
                files.remove(&id).unwrap_or_default(),
                infos.remove(&id),
            )? {
                report.torrents += 1;
                report.last_discovered_at = Some(at);
            }
        }
        if (rows.len() as i64) < EXPORT_PAGE {
            break;
        }
    }
    Ok(report)
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
        self.with(|s| record(s, infohash))
    }
    fn info_dict(&self, infohash: &InfoHash) -> Result<Option<Vec<u8>>> {
        self.with(|s| s.info(infohash))
    }
    fn facets(&self, infohash: &InfoHash) -> Result<Option<Facets>> {
        Ok(self
            .get(infohash)?
            .map(|t| classify_torrent(&t.record.name, &t.files)))
    }
    fn facets_of(&self, infohashes: &[InfoHash]) -> Result<Vec<Option<Facets>>> {
        let keys: Vec<&[u8]> = infohashes.iter().map(|h| &h[..]).collect();
        self.with(|s| {
            let rows = s
                .client()
                .query(
                    "SELECT infohash, id, name FROM torrents WHERE infohash = ANY($1)",
                    &[&keys],
                )
                .map_err(PgError::db("reading torrents"))?;
            let ids: Vec<i64> = rows.iter().map(|r| r.get(1)).collect();
            let mut files = files_of(s, &ids)?;
            let mut by_ih: HashMap<Vec<u8>, Facets> = HashMap::new();
            for r in &rows {
                let name: String = r.get(2);
                let fl = files.remove(&r.get::<_, i64>(1)).unwrap_or_default();
                by_ih.insert(r.get(0), classify_torrent(&name, &fl));
            }
            Ok(infohashes
                .iter()
                .map(|h| by_ih.get(&h[..]).cloned())
                .collect())
        })
    }
    fn infohashes_with_prefix(
        &self,
        bytes: &[u8],
        nibbles: usize,
        limit: usize,
    ) -> Result<Vec<InfoHash>> {
        let mut lo = [0u8; 20];
        let mut hi = [0xffu8; 20];
        let whole = (nibbles / 2).min(bytes.len()).min(20);
        lo[..whole].copy_from_slice(&bytes[..whole]);
        hi[..whole].copy_from_slice(&bytes[..whole]);
        if nibbles % 2 == 1 && whole < 20 {
            let b = bytes.get(whole).copied().unwrap_or(0);
            lo[whole] = b & 0xf0;
            hi[whole] = b | 0x0f;
        }
        let (lo, hi): (&[u8], &[u8]) = (&lo, &hi);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(|s| {
            let rows = s
                .client()
                .query(
                    "SELECT infohash FROM torrents WHERE infohash BETWEEN $1 AND $2 \
                     ORDER BY infohash LIMIT $3",
                    &[&lo, &hi, &limit],
                )
                .map_err(PgError::db("scanning infohashes"))?;
            Ok(rows
                .iter()
                .filter_map(|r| <[u8; 20]>::try_from(r.get::<_, &[u8]>(0)).ok())
                .collect())
        })
    }
    fn recent(&self, n: usize) -> Result<Vec<TorrentRecord>> {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.with(|s| {
            let rows = s
                .client()
                .query(
                    &format!(
                        "SELECT {RECORD_COLUMNS} FROM torrents t \
                         ORDER BY t.discovered_at DESC, t.id DESC LIMIT $1"
                    ),
                    &[&n],
                )
                .map_err(PgError::db("listing recent torrents"))?;
            Ok(rows.iter().filter_map(record_of).collect())
        })
    }
    fn count(&self) -> Result<u64> {
        self.with(|s| s.count())
    }
    fn stats(&self) -> Result<Stats> {
        Err(unsupported("stats"))
    }
    fn session_yields(&self, _now: u64) -> Result<Vec<SessionYield>> {
        Err(unsupported("session_yields"))
    }
    fn failure_reasons(&self) -> Result<Vec<(String, u64)>> {
        Err(unsupported("failure_reasons"))
    }
    fn encryption_outcomes(&self) -> Result<Vec<(String, u64, u64)>> {
        Err(unsupported("encryption_outcomes"))
    }
    fn transport_outcomes(&self) -> Result<Vec<(String, u64, u64)>> {
        Err(unsupported("transport_outcomes"))
    }
    fn top_clients(&self, _limit: usize) -> Result<Vec<ClientStats>> {
        Err(unsupported("top_clients"))
    }
    fn discoveries_per_hour(&self, _now: u64, _hours: u32) -> Result<Hourly> {
        Err(unsupported("discoveries_per_hour"))
    }
    fn requests_per_hour(&self, _now: u64, _hours: u32) -> Result<Hourly> {
        Err(unsupported("requests_per_hour"))
    }
    fn filter_totals(&self) -> Result<FilterTotals> {
        Err(unsupported("filter_totals"))
    }
    fn filter_labels(&self, _max_scan: u64) -> Result<Vec<(String, u64, u64)>> {
        Err(unsupported("filter_labels"))
    }
    fn export_jsonl(&self, out: &mut dyn Write, since: Option<u64>) -> Result<ExportReport> {
        let mut g = self.slot();
        if g.is_none() {
            *g = Some(PgStore::connect(&self.url, PgOptions::default()).map_err(store_error)?);
        }
        let Some(store) = g.as_mut() else {
            return Err(StoreError::Backend("PostgreSQL: no connection".into()));
        };
        let mut out = out;
        let rep = export_walk(store, since, false, |rec, files, _| {
            let facets = classify_torrent(&rec.name, &files);
            write_json_line(&mut out, rec, files, Some(facets))?;
            Ok(true)
        })?;
        out.flush().map_err(|e| StoreError::Io {
            context: "writing JSON".into(),
            source: e,
        })?;
        Ok(rep)
    }
    fn export_torrent_files(&self, dir: &Path, since: Option<u64>) -> Result<ExportReport> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io {
            context: format!("creating {}", dir.display()),
            source: e,
        })?;
        let mut g = self.slot();
        if g.is_none() {
            *g = Some(PgStore::connect(&self.url, PgOptions::default()).map_err(store_error)?);
        }
        let Some(store) = g.as_mut() else {
            return Err(StoreError::Backend("PostgreSQL: no connection".into()));
        };
        let mut no_info = 0;
        let mut rep = export_walk(store, since, true, |rec, _, info| {
            let Some(info) = info else {
                no_info += 1;
                return Ok(false);
            };
            write_torrent_file(dir, &rec.infohash, &info)?;
            Ok(true)
        })?;
        rep.skipped_no_info = no_info;
        Ok(rep)
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
        let r = self.lookup(|s| record(s, infohash))?;
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
    fn tombstone(&self, _infohash: &InfoHash) -> Result<Option<FilterMark>> {
        Err(unsupported("tombstones"))
    }
    fn saved_nodes(&self, _limit: usize) -> Result<Vec<NodeRecord>> {
        Err(unsupported("saved_nodes"))
    }
    fn stats(&self) -> Result<Stats> {
        Err(unsupported("stats"))
    }
}
