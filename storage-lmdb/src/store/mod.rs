//! The LMDB environment, its databases, batched writes and reads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use heed::types::Bytes;
use heed::{
    CommitOrAbort, Database, DatabaseFlags, Env, EnvFlags, EnvOpenOptions, PutFlags, RoTxn, RwTxn,
    WithoutTls,
};

use crate::codec;
use crate::error::{hex, StoreError};
use crate::tokenize::{tokenize, torrent_terms, TermIndex};
use crate::types::*;

pub(crate) type Result<T> = std::result::Result<T, StoreError>;
pub(crate) type Db = Database<'static, Bytes, Bytes>;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 3;
/// Schema 2 lacks only the (empty) `ids_delta` table: it is migrated on open.
const MIGRATES_FROM: u32 = 2;
/// `ids_delta` is merged into `ids` when it holds more than
/// `max(IDS_DELTA_MIN, sqrt(IDS_DELTA_FACTOR · ids entries))` entries: about the
/// size that minimises the pages a batch of 10,000 dirties in both tables.
const IDS_DELTA_MIN: u64 = 50_000;
const IDS_DELTA_FACTOR: f64 = 20_000.0;

const GIB: usize = 1 << 30;
/// Map sizes are kept a multiple of 64 KiB, a multiple of every common page size.
const MAP_ALIGN: usize = 64 * 1024;
/// A prefix (the last query word) expands to at most this many terms.
pub const MAX_PREFIX_TERMS: usize = 20_000;
/// Time and size orders either look up every match in `torrents` (about 1 µs each) or
/// walk `by_time`/`by_size` from the wanted end until the page is full (about
/// `k · docs / matches` entries at tens of ns each); they walk when
/// `matches² · WALK_FACTOR > k · docs`.
const WALK_FACTOR: f64 = 20.0;
/// Batches with at least this many new torrents tokenize them on a second thread.
const PARALLEL_INDEX_MIN: usize = 256;
/// Largest page `search` returns.
pub const MAX_SEARCH_LIMIT: usize = 1_000;

const K_SCHEMA: &[u8] = b"schema_version";
const K_TORRENTS: &[u8] = b"count_torrents";
const K_WITH_INFO: &[u8] = b"count_with_info";
const K_REQUESTS: &[u8] = b"count_requests";
const K_NEXT_DOCID: &[u8] = b"next_docid";
const K_NEXT_REQUEST: &[u8] = b"next_request_id";
const K_MAX_DISCOVERED: &[u8] = b"max_discovered_at";
const K_TIME_DISORDER: &[u8] = b"time_disorder";

/// How hard commits are pushed to disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Every commit is fsync'ed (data and meta page). A committed batch survives a
    /// process crash, an OS crash and power loss. The default.
    #[default]
    Durable,
    /// `MDB_NOMETASYNC`: data pages are synced but the meta page is not. A process
    /// crash loses nothing; an OS crash or power loss may undo the last committed
    /// batch (the database stays consistent).
    NoMetaSync,
    /// `MDB_NOSYNC`: nothing is synced by commits. A process crash (SIGKILL) loses
    /// nothing, because the OS still writes the pages; an OS crash or power loss may
    /// undo every batch since the OS last flushed (typically up to ~30 s), and on a
    /// file system that reorders writes may corrupt the database. `Store::sync`
    /// forces a flush.
    NoSync,
}

/// Where and how to open the store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Directory of the environment (holds `data.mdb` and `lock.mdb`).
    pub path: PathBuf,
    /// Initial map size; the map doubles on `MDB_MAP_FULL` (default 1 GiB).
    pub initial_map_size: usize,
    /// The map never grows past this (default 1 TiB).
    pub max_map_size: usize,
    pub durability: Durability,
    /// Keep raw info dicts for `.torrent` export (default true).
    pub keep_info: bool,
    pub max_readers: u32,
    /// The writer keeps at most this many metadata request records (oldest dropped).
    pub max_requests: u64,
    /// `ids_delta` is merged into `ids` once it holds more than this many entries.
    /// `None` (the default): `max(50,000, sqrt(20,000 · entries of ids))`. Tests set
    /// a small bound so that merges happen often (and crashes land in them).
    pub ids_delta_max: Option<u64>,
}

impl StoreOptions {
    /// Options with defaults for an environment at `path`.
    pub fn new(path: impl Into<PathBuf>) -> StoreOptions {
        StoreOptions {
            path: path.into(),
            initial_map_size: GIB,
            max_map_size: 1024 * GIB,
            durability: Durability::Durable,
            keep_info: true,
            max_readers: 126,
            max_requests: 1_000_000,
            ids_delta_max: None,
        }
    }

    /// Options with defaults at [`default_data_dir`].
    pub fn at_default_location() -> Result<StoreOptions> {
        Ok(StoreOptions::new(default_data_dir()?))
    }
}

/// `$XDG_DATA_HOME/magnetar`, or `$HOME/.local/share/magnetar` when XDG_DATA_HOME is
/// unset, empty or relative (as the XDG spec says).
pub fn default_data_dir() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
        let p = PathBuf::from(x);
        if p.is_absolute() {
            return Ok(p.join("magnetar"));
        }
    }
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => Ok(PathBuf::from(h).join(".local/share/magnetar")),
        _ => Err(StoreError::NoDataDir),
    }
}

#[derive(Clone, Copy)]
pub(crate) struct Dbs {
    pub torrents: Db,
    pub files: Db,
    pub info: Db,
    pub terms: Db,
    pub by_time: Db,
    pub by_size: Db,
    pub ids: Db,
    /// Recent infohash → doc id entries, merged into `ids` in bulk (see `docid_of`).
    pub ids_delta: Db,
    pub peers: Db,
    pub nodes: Db,
    pub sessions: Db,
    pub requests: Db,
    pub meta: Db,
}

pub(crate) struct Inner {
    pub env: Env<WithoutTls>,
    pub dbs: Dbs,
    /// Readers and the writer hold it shared; growing the map holds it exclusively,
    /// since LMDB may only resize while no transaction of this process is active.
    gate: RwLock<()>,
    pub opts: StoreOptions,
    pub writer_running: AtomicBool,
    /// 0: choose by cost (see [`WALK_FACTOR`]); 1: always look up; 2: always walk.
    order_mode: AtomicUsize,
}

/// The torrent database. Cheap to clone; all clones share one environment. Reads may
/// run on any thread, concurrently with the writer.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.opts.path)
            .finish()
    }
}

/// What one applied batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchReport {
    pub torrents_new: u64,
    pub torrents_updated: u64,
    pub seen_updated: u64,
    /// `Op::Seen` for an infohash the store does not know.
    pub seen_unknown: u64,
    /// Existing records that could not be decoded and were left untouched.
    pub skipped_corrupt: u64,
    pub peers: u64,
    pub nodes: u64,
    pub sessions: u64,
    pub requests: u64,
    /// How many times the map was grown while writing this batch.
    pub map_grown: u32,
}

/// Search result ordering.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    /// Most query words in the name first (a name hit beats a file-path hit), then newest.
    #[default]
    Relevance,
    /// Latest discovered_at first.
    Newest,
    Oldest,
    Largest,
    Smallest,
}

/// One page of search results.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchResults {
    /// All matches (not only this page).
    pub total: usize,
    pub hits: Vec<TorrentRecord>,
    /// The last word's prefix matched more than [`MAX_PREFIX_TERMS`] terms; only the
    /// first ones (in byte order) were used.
    pub prefix_truncated: bool,
    /// Corrupt records skipped (counted, never a panic).
    pub skipped_corrupt: usize,
}

/// Totals, read from counters and LMDB's own page statistics (no scan).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub torrents: u64,
    pub torrents_with_info: u64,
    /// Posting blocks in `terms` (each holds up to ~480 bytes of postings).
    pub posting_blocks: u64,
    pub peers: u64,
    pub nodes: u64,
    pub sessions: u64,
    pub requests: u64,
    /// Size of `data.mdb` on disk.
    pub disk_bytes: u64,
    /// Bytes in use (pages actually used by the B-trees).
    pub used_bytes: u64,
    pub map_size: u64,
}

/// Yield of one crawl session.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionYield {
    pub session: SessionRecord,
    /// New torrents per hour over the session's duration (end or now).
    pub torrents_per_hour: f64,
}

/// ut_metadata success of one client name.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientStats {
    pub client: String,
    pub requests: u64,
    pub successes: u64,
    pub success_rate: f64,
}

/// Result of [`Store::integrity_check`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntegrityReport {
    pub torrents: u64,
    pub files_lists: u64,
    pub postings: u64,
    pub by_time: u64,
    pub info_dicts: u64,
    /// Number of problems found (only the first 100 are described).
    pub problem_count: u64,
    pub problems: Vec<String>,
}

impl IntegrityReport {
    pub fn is_ok(&self) -> bool {
        self.problem_count == 0
    }
    fn problem(&mut self, p: String) {
        self.problem_count += 1;
        if self.problems.len() < 100 {
            self.problems.push(p);
        }
    }
}

/// Retention for `Store::prune`. `None` keeps everything of that kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Reference time, Unix seconds.
    pub now: u64,
    pub requests_max_age_secs: Option<u64>,
    pub requests_max_count: Option<u64>,
    /// Peers not seen for this long are dropped (blacklisted ones are kept).
    pub peers_max_age_secs: Option<u64>,
    pub nodes_max_age_secs: Option<u64>,
}

/// What `prune` removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub requests: u64,
    pub peers: u64,
    pub nodes: u64,
}

fn round_map(n: usize) -> usize {
    n.div_ceil(MAP_ALIGN).max(1) * MAP_ALIGN
}

fn lmdb(context: &'static str) -> impl FnOnce(heed::Error) -> StoreError {
    StoreError::lmdb(context)
}

fn corrupt<'k>(db: &'static str, key: &'k [u8]) -> impl FnOnce(&'static str) -> StoreError + 'k {
    move |what| StoreError::Corrupt {
        db,
        key: hex(key),
        what,
    }
}

fn read_u64(txn: &RoTxn, meta: &Db, key: &[u8]) -> Result<u64> {
    match meta.get(txn, key).map_err(lmdb("reading meta"))? {
        None => Ok(0),
        Some(v) => {
            let b: [u8; 8] = v.try_into().map_err(|_| StoreError::Corrupt {
                db: "meta",
                key: String::from_utf8_lossy(key).into_owned(),
                what: "counter is not 8 bytes",
            })?;
            Ok(u64::from_le_bytes(b))
        }
    }
}

fn put_u64(txn: &mut RwTxn, meta: &Db, key: &[u8], v: u64) -> Result<()> {
    meta.put(txn, key, &v.to_le_bytes())
        .map_err(lmdb("writing meta"))
}

/// The counters kept in `meta`, loaded and stored once per batch.
struct MetaCounters {
    torrents: u64,
    with_info: u64,
    requests: u64,
    next_docid: u64,
    next_request: u64,
    max_discovered: u64,
    time_disorder: u64,
}

impl MetaCounters {
    fn load(txn: &RoTxn, m: &Db) -> Result<MetaCounters> {
        Ok(MetaCounters {
            torrents: read_u64(txn, m, K_TORRENTS)?,
            with_info: read_u64(txn, m, K_WITH_INFO)?,
            requests: read_u64(txn, m, K_REQUESTS)?,
            next_docid: read_u64(txn, m, K_NEXT_DOCID)?,
            next_request: read_u64(txn, m, K_NEXT_REQUEST)?,
            max_discovered: read_u64(txn, m, K_MAX_DISCOVERED)?,
            time_disorder: read_u64(txn, m, K_TIME_DISORDER)?,
        })
    }
    fn store(&self, txn: &mut RwTxn, m: &Db) -> Result<()> {
        put_u64(txn, m, K_TORRENTS, self.torrents)?;
        put_u64(txn, m, K_WITH_INFO, self.with_info)?;
        put_u64(txn, m, K_REQUESTS, self.requests)?;
        put_u64(txn, m, K_NEXT_DOCID, self.next_docid)?;
        put_u64(txn, m, K_NEXT_REQUEST, self.next_request)?;
        put_u64(txn, m, K_MAX_DISCOVERED, self.max_discovered)?;
        put_u64(txn, m, K_TIME_DISORDER, self.time_disorder)
    }
}

pub(crate) fn open_env(opts: &StoreOptions) -> Result<Env<WithoutTls>> {
    std::fs::create_dir_all(&opts.path)
        .map_err(StoreError::io(format!("creating {}", opts.path.display())))?;
    let mut b = EnvOpenOptions::new().read_txn_without_tls();
    b.map_size(round_map(opts.initial_map_size))
        .max_dbs(16)
        .max_readers(opts.max_readers);
    let flags = match opts.durability {
        Durability::Durable => EnvFlags::empty(),
        Durability::NoMetaSync => EnvFlags::NO_META_SYNC,
        Durability::NoSync => EnvFlags::NO_SYNC,
    };
    // SAFETY: NO_META_SYNC and NO_SYNC only weaken durability against OS crashes and
    // power loss, as documented on `Durability`; they cannot cause memory unsafety.
    #[allow(unsafe_code)]
    unsafe {
        b.flags(flags);
    }
    // SAFETY: LMDB forbids opening the same environment twice in one process and
    // modifying the files behind its back. heed keeps a registry of open paths and
    // returns EnvAlreadyOpened for a second open (mapped to `AlreadyOpen`); this crate
    // opens each environment exactly once per `Store` and shares it through an Arc.
    // The data files are only touched by LMDB (compaction swaps files only after the
    // environment is closed).
    #[allow(unsafe_code)]
    let env = unsafe { b.open(&opts.path) };
    env.map_err(|e| match e {
        heed::Error::EnvAlreadyOpened => StoreError::AlreadyOpen {
            path: opts.path.clone(),
        },
        e => StoreError::Lmdb {
            context: "opening the environment",
            source: e,
        },
    })
}

impl Store {
    /// Opens (creating if needed) the store. A database of another schema version is
    /// refused with [`StoreError::SchemaVersion`] before anything is written.
    pub fn open(opts: StoreOptions) -> Result<Store> {
        let env = open_env(&opts)?;
        let wtxn = env
            .write_txn()
            .map_err(lmdb("starting the opening transaction"))?;
        let outcome = env.create_databases_and_commit(
            wtxn,
            |opener, wtxn| -> std::result::Result<_, heed::Error> {
                // Check the schema before creating anything.
                if let Some(meta) = opener.open_database::<Bytes, Bytes>(wtxn, Some("meta"))? {
                    if let Some(v) = meta.get(wtxn, K_SCHEMA)? {
                        let found = match <[u8; 4]>::try_from(v) {
                            Ok(b) => u32::from_le_bytes(b),
                            Err(_) => u32::MAX,
                        };
                        if found != SCHEMA_VERSION && found != MIGRATES_FROM {
                            return Ok(CommitOrAbort::Abort(found));
                        }
                    }
                }
                let mut dbs = Vec::with_capacity(13);
                for name in [
                    "torrents",
                    "files",
                    "info",
                    "terms",
                    "by_time",
                    "ids",
                    "peers",
                    "nodes",
                    "sessions",
                    "requests",
                    "meta",
                    "by_size",
                    "ids_delta",
                ] {
                    let mut o = opener.database_options().types::<Bytes, Bytes>();
                    o.name(name);
                    if name == "terms" {
                        o.flags(DatabaseFlags::DUP_SORT);
                    }
                    dbs.push(o.create(wtxn)?);
                }
                let meta = dbs[10];
                // New, or schema 2 (whose missing `ids_delta` was just created empty).
                if meta.get(wtxn, K_SCHEMA)? != Some(&SCHEMA_VERSION.to_le_bytes()[..]) {
                    meta.put(wtxn, K_SCHEMA, &SCHEMA_VERSION.to_le_bytes())?;
                }
                let arr: [_; 13] = std::array::from_fn(|i| dbs[i]);
                Ok(CommitOrAbort::Commit(arr))
            },
        );
        let dbs = match outcome.map_err(lmdb("creating the databases"))? {
            CommitOrAbort::Commit(d) => d,
            CommitOrAbort::Abort(found) => {
                return Err(StoreError::SchemaVersion {
                    path: opts.path.clone(),
                    found,
                    supported: SCHEMA_VERSION,
                })
            }
        };
        let [torrents, files, info, terms, by_time, ids, peers, nodes, sessions, requests, meta, by_size, ids_delta] =
            dbs;
        Ok(Store {
            inner: Arc::new(Inner {
                env,
                dbs: Dbs {
                    torrents,
                    files,
                    info,
                    terms,
                    by_time,
                    by_size,
                    ids,
                    ids_delta,
                    peers,
                    nodes,
                    sessions,
                    requests,
                    meta,
                },
                gate: RwLock::new(()),
                opts,
                writer_running: AtomicBool::new(false),
                order_mode: AtomicUsize::new(0),
            }),
        })
    }

    /// How time/size orders are computed: 0 by cost, 1 always per-match lookups,
    /// 2 always walking the ordered index. All give the same results (for tests).
    #[doc(hidden)]
    pub fn set_order_mode(&self, mode: usize) {
        self.inner.order_mode.store(mode, Ordering::Relaxed);
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.opts
    }

    /// Directory of the environment.
    pub fn path(&self) -> &Path {
        &self.inner.opts.path
    }

    /// Runs `f` in a read transaction.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&RoTxn, &Dbs) -> Result<R>) -> Result<R> {
        let _g = self
            .inner
            .gate
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let txn = match self.inner.env.read_txn() {
            Err(heed::Error::Mdb(heed::MdbError::MapResized)) => {
                drop(_g);
                self.adopt_foreign_resize()?;
                return self.read(f);
            }
            r => r.map_err(lmdb("starting a read transaction"))?,
        };
        f(&txn, &self.inner.dbs)
    }

    /// Runs `f` in a write transaction and commits. On MDB_MAP_FULL the transaction
    /// is aborted, the map doubled and `f` run again from the start: the batch is
    /// never lost. Returns the value and how often the map grew.
    pub(crate) fn write<R>(
        &self,
        mut f: impl FnMut(&mut RwTxn, &Dbs) -> Result<R>,
    ) -> Result<(R, u32)> {
        let mut grown = 0;
        loop {
            let res = {
                let _g = self
                    .inner
                    .gate
                    .read()
                    .unwrap_or_else(PoisonError::into_inner);
                match self.inner.env.write_txn() {
                    Err(heed::Error::Mdb(heed::MdbError::MapResized)) => Err(StoreError::Lmdb {
                        context: "starting a write transaction",
                        source: heed::Error::Mdb(heed::MdbError::MapResized),
                    }),
                    Err(e) => return Err(lmdb("starting a write transaction")(e)),
                    Ok(mut txn) => match f(&mut txn, &self.inner.dbs) {
                        Ok(r) => txn.commit().map(|()| r).map_err(lmdb("committing")),
                        Err(e) => Err(e), // txn dropped: aborted
                    },
                }
            };
            match res {
                Err(e) if e.is_map_full() => {
                    self.grow()?;
                    grown += 1;
                }
                Err(StoreError::Lmdb {
                    source: heed::Error::Mdb(heed::MdbError::MapResized),
                    ..
                }) => self.adopt_foreign_resize()?,
                other => return other.map(|r| (r, grown)),
            }
        }
    }

    /// Doubles the map (the write transaction was aborted; no transaction of this
    /// process is active while the gate is held exclusively).
    fn grow(&self) -> Result<()> {
        let _w = self
            .inner
            .gate
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let cur = self.inner.env.info().map_size;
        let limit = round_map(self.inner.opts.max_map_size);
        if cur >= limit {
            return Err(StoreError::MapFull {
                map_size: cur,
                limit,
            });
        }
        let new = round_map(cur.saturating_mul(2)).min(limit);
        // SAFETY: LMDB allows mdb_env_set_mapsize while no transaction of this process
        // is active. Every transaction of this crate is begun under `gate` held shared;
        // we hold it exclusively here, so none is active.
        #[allow(unsafe_code)]
        let r = unsafe { self.inner.env.resize(new) };
        r.map_err(lmdb("growing the map"))
    }

    /// Another process grew the map: adopt its size.
    fn adopt_foreign_resize(&self) -> Result<()> {
        let _w = self
            .inner
            .gate
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // SAFETY: as in `grow`, no transaction of this process is active; a size of 0
        // makes LMDB adopt the size the other process set.
        #[allow(unsafe_code)]
        let r = unsafe { self.inner.env.resize(0) };
        r.map_err(lmdb("adopting the map size set by another process"))
    }

    /// Forces LMDB to flush to disk (useful with `Durability::NoSync`).
    pub fn sync(&self) -> Result<()> {
        self.inner.env.force_sync().map_err(lmdb("syncing"))
    }

    /// Applies one batch of writes in a single transaction and commits it.
    ///
    /// Keys are sorted before writing (sorted inserts are much faster in LMDB). This
    /// is what the writer thread calls; importers call it directly.
    pub fn apply_batch(&self, ops: &[Op]) -> Result<BatchReport> {
        let keep_info = self.inner.opts.keep_info;
        let max_requests = self.inner.opts.max_requests;
        let order = torrent_order(ops);
        let groups = group_count(ops, &order);
        let (mut report, grown) = if groups >= PARALLEL_INDEX_MIN {
            // Tokenizing runs on a second thread while this one writes the records.
            std::thread::scope(|s| {
                let order = &order;
                let mut handle = Some(s.spawn(move || Tokens::of(ops, order, false)));
                let mut make = || match handle.take().map(|h| h.join()) {
                    Some(Ok(t)) => Ok(t),
                    _ => Err(StoreError::InvalidInput(
                        "internal: the indexing thread panicked".into(),
                    )),
                };
                let mut cache = None;
                self.write(|txn, dbs| {
                    apply_batch_txn(
                        txn,
                        dbs,
                        ops,
                        order,
                        &mut cache,
                        &mut make,
                        keep_info,
                        max_requests,
                        self.inner.opts.ids_delta_max,
                    )
                })
            })?
        } else {
            let mut cache = Some(Tokens::of(ops, &order, true));
            self.write(|txn, dbs| {
                apply_batch_txn(
                    txn,
                    dbs,
                    ops,
                    &order,
                    &mut cache,
                    &mut || Tokens::of_nothing(),
                    keep_info,
                    max_requests,
                    self.inner.opts.ids_delta_max,
                )
            })?
        };
        report.map_grown = grown;
        Ok(report)
    }

    /// Like [`Store::apply_batch`] for a batch whose CPU work (sorting, tokenizing)
    /// was done by [`PreparedBatch::new`], possibly on another thread while the
    /// previous batch was committing. Returns the batch's ops (e.g. to reuse the Vec).
    pub fn apply_prepared(&self, batch: PreparedBatch) -> Result<(BatchReport, Vec<Op>)> {
        let keep_info = self.inner.opts.keep_info;
        let max_requests = self.inner.opts.max_requests;
        let PreparedBatch { ops, order, tokens } = batch;
        let mut cache = Some(tokens);
        let (mut report, grown) = self.write(|txn, dbs| {
            apply_batch_txn(
                txn,
                dbs,
                &ops,
                &order,
                &mut cache,
                &mut || Tokens::of_nothing(),
                keep_info,
                max_requests,
                self.inner.opts.ids_delta_max,
            )
        })?;
        report.map_grown = grown;
        Ok((report, ops))
    }

    // ------------------------------------------------------------------ reads

    /// The torrent with its files, or None when unknown.
    pub fn get(&self, infohash: &InfoHash) -> Result<Option<Torrent>> {
        self.read(|txn, dbs| {
            let Some(docid) = docid_of(txn, dbs, infohash)? else {
                return Ok(None);
            };
            let dk = codec::docid_key(docid);
            let Some(v) = dbs
                .torrents
                .get(txn, &dk)
                .map_err(lmdb("reading a torrent"))?
            else {
                return Err(corrupt("torrents", infohash)(
                    "no record for a known infohash",
                ));
            };
            let t = codec::decode_torrent(docid, v).map_err(corrupt("torrents", infohash))?;
            let files = match dbs.files.get(txn, &dk).map_err(lmdb("reading files"))? {
                Some(v) => codec::decode_files(v).map_err(corrupt("files", infohash))?,
                None => Vec::new(),
            };
            Ok(Some(Torrent {
                record: t.rec,
                files,
            }))
        })
    }

    /// Whether the infohash is stored (the runtime's "already known?").
    pub fn contains(&self, infohash: &InfoHash) -> Result<bool> {
        self.read(|txn, dbs| Ok(docid_of(txn, dbs, infohash)?.is_some()))
    }

    /// The raw info dict, when kept.
    pub fn info_dict(&self, infohash: &InfoHash) -> Result<Option<Vec<u8>>> {
        self.read(|txn, dbs| {
            let Some(docid) = docid_of(txn, dbs, infohash)? else {
                return Ok(None);
            };
            Ok(dbs
                .info
                .get(txn, &codec::docid_key(docid))
                .map_err(lmdb("reading info"))?
                .map(<[u8]>::to_vec))
        })
    }

    /// Number of torrents, from a counter kept in `meta` (no scan).
    pub fn count(&self) -> Result<u64> {
        self.read(|txn, dbs| read_u64(txn, &dbs.meta, K_TORRENTS))
    }

    /// The schema version stored in `meta`.
    pub fn schema_version(&self) -> Result<u32> {
        self.read(
            |txn, dbs| match dbs.meta.get(txn, K_SCHEMA).map_err(lmdb("reading meta"))? {
                Some(v) => {
                    Ok(u32::from_le_bytes(v.try_into().map_err(|_| {
                        corrupt("meta", K_SCHEMA)("version is not 4 bytes")
                    })?))
                }
                None => Err(corrupt("meta", K_SCHEMA)("no schema version")),
            },
        )
    }

    /// The `n` most recently discovered torrents, newest first. Corrupt records are
    /// skipped.
    pub fn recent(&self, n: usize) -> Result<Vec<TorrentRecord>> {
        self.read(|txn, dbs| {
            let mut out = Vec::with_capacity(n.min(10_000));
            for r in dbs.by_time.rev_iter(txn).map_err(lmdb("listing by time"))? {
                if out.len() >= n {
                    break;
                }
                let (k, _) = r.map_err(lmdb("listing by time"))?;
                let Some(docid) = k.get(8..12).and_then(|s| codec::docid_from(s).ok()) else {
                    continue;
                };
                if let Some(rec) = record_by_docid(txn, dbs, docid)? {
                    out.push(rec);
                }
            }
            Ok(out)
        })
    }

    /// Full-text search: AND of the query's words, the last word matched as a prefix,
    /// over names and file paths. See [`Order`] for the orderings.
    pub fn search(
        &self,
        query: &str,
        limit: usize,
        offset: usize,
        order: Order,
    ) -> Result<SearchResults> {
        let limit = limit.min(MAX_SEARCH_LIMIT);
        let mut words: Vec<String> = tokenize(query).collect();
        let Some(last) = words.pop() else {
            return Ok(SearchResults::default());
        };
        words.sort();
        words.dedup();
        words.retain(|w| *w != last);
        self.read(|txn, dbs| {
            let mut res = SearchResults::default();
            let mut lists: Vec<Vec<u32>> = Vec::with_capacity(words.len() + 1);
            for w in &words {
                let l = postings(txn, dbs, w.as_bytes(), &mut res)?;
                if l.is_empty() {
                    return Ok(res);
                }
                lists.push(l);
            }
            let ndocs = read_u64(txn, &dbs.meta, K_NEXT_DOCID)?;
            let (pl, truncated) = prefix_postings(txn, dbs, last.as_bytes(), ndocs, &mut res)?;
            res.prefix_truncated = truncated;
            if pl.is_empty() {
                return Ok(res);
            }
            lists.push(pl);
            let mut matches = intersect(lists);
            res.total = matches.len();
            let k = offset.saturating_add(limit).min(matches.len());
            if offset >= k {
                return Ok(res);
            }
            let time_ordered = read_u64(txn, &dbs.meta, K_TIME_DISORDER)? == 0;
            let page: Vec<u32> = match order {
                Order::Relevance => {
                    // Key: score desc, docid desc.
                    let key =
                        |m: &(u32, u32)| std::cmp::Reverse((u64::from(m.1) << 32) | u64::from(m.0));
                    top_k(&mut matches, k, key);
                    matches[offset..k].iter().map(|m| m.0).collect()
                }
                Order::Newest if time_ordered => matches
                    .iter()
                    .rev()
                    .skip(offset)
                    .take(limit)
                    .map(|m| m.0)
                    .collect(),
                Order::Oldest if time_ordered => matches
                    .iter()
                    .skip(offset)
                    .take(limit)
                    .map(|m| m.0)
                    .collect(),
                _ if match self.inner.order_mode.load(Ordering::Relaxed) {
                    1 => false,
                    2 => true,
                    _ => (matches.len() as f64).powi(2) * WALK_FACTOR > (k as f64) * (ndocs as f64),
                } =>
                {
                    // Many matches: walk the ordered index and keep the matching docs.
                    let (db, rev, size) = match order {
                        Order::Largest => (&dbs.by_size, true, true),
                        Order::Smallest => (&dbs.by_size, false, true),
                        Order::Newest => (&dbs.by_time, true, false),
                        _ => (&dbs.by_time, false, false),
                    };
                    let docids: Vec<u32> = matches.iter().map(|m| m.0).collect();
                    let mut hits = Vec::with_capacity(k);
                    let mut bucket: Option<[u8; 2]> = None;
                    let mut corrupt = 0;
                    // `by_size` is ordered by size *class*: read whole classes until k
                    // matches are in, then order those exactly.
                    let mut on_entry = |key: &[u8], _val: &[u8]| {
                        let d = if size {
                            let b = key.get(..2).and_then(|b| <[u8; 2]>::try_from(b).ok());
                            if hits.len() >= k && b != bucket {
                                return false;
                            }
                            bucket = b;
                            key.get(2..6)
                        } else {
                            key.get(8..12)
                        };
                        match d.and_then(|b| codec::docid_from(b).ok()) {
                            Some(d) if docids.binary_search(&d).is_ok() => hits.push(d),
                            Some(_) => {}
                            None => corrupt += 1,
                        }
                        size || hits.len() < k
                    };
                    if rev {
                        for r in db.rev_iter(txn).map_err(lmdb("ordering results"))? {
                            let (key, val) = r.map_err(lmdb("ordering results"))?;
                            if !on_entry(key, val) {
                                break;
                            }
                        }
                    } else {
                        for r in db.iter(txn).map_err(lmdb("ordering results"))? {
                            let (key, val) = r.map_err(lmdb("ordering results"))?;
                            if !on_entry(key, val) {
                                break;
                            }
                        }
                    }
                    res.skipped_corrupt += corrupt;
                    if size {
                        exact_order(txn, dbs, hits.into_iter(), order, offset, k, &mut res)?
                    } else {
                        hits.get(offset..).unwrap_or(&[]).to_vec()
                    }
                }
                _ => {
                    // Few matches: exact ordering from the records' fixed fields.
                    exact_order(
                        txn,
                        dbs,
                        matches.iter().map(|m| m.0),
                        order,
                        offset,
                        k,
                        &mut res,
                    )?
                }
            };
            for docid in page {
                match record_by_docid(txn, dbs, docid)? {
                    Some(r) => res.hits.push(r),
                    None => res.skipped_corrupt += 1,
                }
            }
            Ok(res)
        })
    }

    /// Nodes for the next bootstrap: good ones first, then questionable, most recently
    /// seen first; bad nodes are left out.
    pub fn saved_nodes(&self, limit: usize) -> Result<Vec<NodeRecord>> {
        self.read(|txn, dbs| {
            let mut all = Vec::new();
            for r in dbs.nodes.iter(txn).map_err(lmdb("listing nodes"))? {
                let (k, v) = r.map_err(lmdb("listing nodes"))?;
                let Ok(id) = <[u8; 20]>::try_from(k) else {
                    continue;
                };
                if let Ok(n) = codec::decode_node(id, v) {
                    if n.status != NodeStatus::Bad {
                        all.push(n);
                    }
                }
            }
            all.sort_by_key(|n| (n.status != NodeStatus::Good, std::cmp::Reverse(n.last_seen)));
            all.truncate(limit);
            Ok(all)
        })
    }

    /// The stored record of one peer.
    pub fn peer(&self, addr: &SocketAddr) -> Result<Option<PeerRecord>> {
        let key = codec::addr_key(addr);
        self.read(
            |txn, dbs| match dbs.peers.get(txn, &key).map_err(lmdb("reading a peer"))? {
                Some(v) => Ok(Some(
                    codec::decode_peer(*addr, v).map_err(corrupt("peers", &key))?,
                )),
                None => Ok(None),
            },
        )
    }

    /// All sessions, oldest first.
    pub fn sessions(&self) -> Result<Vec<SessionRecord>> {
        self.read(|txn, dbs| {
            let mut out = Vec::new();
            for r in dbs.sessions.iter(txn).map_err(lmdb("listing sessions"))? {
                let (k, v) = r.map_err(lmdb("listing sessions"))?;
                let Ok(id) = <[u8; 8]>::try_from(k) else {
                    continue;
                };
                if let Ok(s) = codec::decode_session(u64::from_be_bytes(id), v) {
                    out.push(s);
                }
            }
            Ok(out)
        })
    }

    /// The most recent metadata requests, newest first.
    pub fn recent_requests(&self, n: usize) -> Result<Vec<RequestRecord>> {
        self.read(|txn, dbs| {
            let mut out = Vec::new();
            for r in dbs
                .requests
                .rev_iter(txn)
                .map_err(lmdb("listing requests"))?
            {
                if out.len() >= n {
                    break;
                }
                let (_, v) = r.map_err(lmdb("listing requests"))?;
                if let Ok(req) = codec::decode_request(v) {
                    out.push(req);
                }
            }
            Ok(out)
        })
    }

    /// Totals.
    pub fn stats(&self) -> Result<Stats> {
        let disk_bytes = std::fs::metadata(self.path().join("data.mdb"))
            .map(|m| m.len())
            .unwrap_or(0);
        let info = self.inner.env.info();
        self.read(|txn, dbs| {
            let len = |db: &Db| db.len(txn).map_err(lmdb("reading database stats"));
            let page = |db: &Db| -> Result<u64> {
                let s = db.stat(txn).map_err(lmdb("reading database stats"))?;
                Ok((s.branch_pages + s.leaf_pages + s.overflow_pages) as u64 * s.page_size as u64)
            };
            let mut used = 0;
            for db in [
                &dbs.torrents,
                &dbs.files,
                &dbs.info,
                &dbs.terms,
                &dbs.by_time,
                &dbs.by_size,
                &dbs.ids,
                &dbs.ids_delta,
                &dbs.peers,
                &dbs.nodes,
                &dbs.sessions,
                &dbs.requests,
                &dbs.meta,
            ] {
                used += page(db)?;
            }
            Ok(Stats {
                torrents: read_u64(txn, &dbs.meta, K_TORRENTS)?,
                torrents_with_info: read_u64(txn, &dbs.meta, K_WITH_INFO)?,
                posting_blocks: len(&dbs.terms)?,
                peers: len(&dbs.peers)?,
                nodes: len(&dbs.nodes)?,
                sessions: len(&dbs.sessions)?,
                requests: read_u64(txn, &dbs.meta, K_REQUESTS)?,
                disk_bytes,
                used_bytes: used,
                map_size: info.map_size as u64,
            })
        })
    }

    /// Per-session yield (new torrents per hour), oldest session first. `now` (Unix
    /// seconds) ends sessions that are still running.
    pub fn session_yields(&self, now: u64) -> Result<Vec<SessionYield>> {
        Ok(self
            .sessions()?
            .into_iter()
            .map(|s| {
                let end = s.ended_at.unwrap_or(now).max(s.started_at);
                let hours = ((end - s.started_at) as f64 / 3600.0).max(1.0 / 3600.0);
                SessionYield {
                    torrents_per_hour: s.counters.torrents_new as f64 / hours,
                    session: s,
                }
            })
            .collect())
    }

    /// Failure reasons of the kept metadata requests, most frequent first.
    pub fn failure_reasons(&self) -> Result<Vec<(String, u64)>> {
        let mut m: HashMap<String, u64> = HashMap::new();
        self.for_each_request(|r| {
            if r.outcome == RequestOutcome::Failure {
                *m.entry(r.reason).or_default() += 1;
            }
        })?;
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(v)
    }

    /// Clients ranked by ut_metadata successes over the kept requests.
    pub fn top_clients(&self, limit: usize) -> Result<Vec<ClientStats>> {
        let mut m: HashMap<String, (u64, u64)> = HashMap::new();
        self.for_each_request(|r| {
            let e = m.entry(r.client).or_default();
            e.0 += 1;
            if r.outcome == RequestOutcome::Success {
                e.1 += 1;
            }
        })?;
        let mut v: Vec<ClientStats> = m
            .into_iter()
            .map(|(client, (requests, successes))| ClientStats {
                client,
                requests,
                successes,
                success_rate: successes as f64 / requests.max(1) as f64,
            })
            .collect();
        v.sort_by(|a, b| {
            b.successes
                .cmp(&a.successes)
                .then_with(|| a.client.cmp(&b.client))
        });
        v.truncate(limit);
        Ok(v)
    }

    fn for_each_request(&self, mut f: impl FnMut(RequestRecord)) -> Result<()> {
        self.read(|txn, dbs| {
            for r in dbs.requests.iter(txn).map_err(lmdb("listing requests"))? {
                let (_, v) = r.map_err(lmdb("listing requests"))?;
                if let Ok(req) = codec::decode_request(v) {
                    f(req);
                }
            }
            Ok(())
        })
    }

    /// Walks every table and checks that they agree: every torrent decodes, has its
    /// `ids` entry (pointing back at it), its by_size and by_time entries, its file
    /// list (with file_count files) and exactly the postings its name and paths
    /// produce; by_time has no stray entry; the counters match the tables. Runs in one read transaction (a consistent snapshot).
    pub fn integrity_check(&self) -> Result<IntegrityReport> {
        self.read(integrity_txn)
    }

    /// Applies retention to requests, peers and nodes.
    pub fn prune(&self, policy: &RetentionPolicy) -> Result<PruneReport> {
        let (r, _) = self.write(|txn, dbs| prune_txn(txn, dbs, policy))?;
        Ok(r)
    }
}

/// Reads a term's postings (raw values: docid << 1 | in_name), ascending.
fn postings(txn: &RoTxn, dbs: &Dbs, term: &[u8], res: &mut SearchResults) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    if let Some(it) = dbs
        .terms
        .get_duplicates(txn, term)
        .map_err(lmdb("reading postings"))?
    {
        for r in it {
            let (_, v) = r.map_err(lmdb("reading postings"))?;
            let before = out.len();
            if codec::block_decode(v, &mut out).is_err() {
                out.truncate(before);
                res.skipped_corrupt += 1;
            }
        }
    }
    Ok(out)
}

/// Union of the postings of every term starting with `prefix` (`ndocs` bounds the
/// doc ids): one term is decoded as is; several are merged in a bitmap.
fn prefix_postings(
    txn: &RoTxn,
    dbs: &Dbs,
    prefix: &[u8],
    ndocs: u64,
    res: &mut SearchResults,
) -> Result<(Vec<u32>, bool)> {
    let mut out = Vec::new();
    let mut keys = 0usize;
    let mut last_key: &[u8] = &[];
    let mut truncated = false;
    let words = (ndocs as usize).div_ceil(64);
    let mut seen: Vec<u64> = Vec::new();
    let mut named: Vec<u64> = Vec::new();
    for r in dbs
        .terms
        .prefix_iter(txn, prefix)
        .map_err(lmdb("reading postings"))?
    {
        let (k, v) = r.map_err(lmdb("reading postings"))?;
        if k != last_key {
            if keys == MAX_PREFIX_TERMS {
                truncated = true;
                break;
            }
            keys += 1;
            last_key = k;
            if keys == 2 {
                // Switch to bitmaps for the union (`out` holds the first term's
                // postings, which go in with the next block).
                seen = vec![0; words];
                named = vec![0; words];
            }
        }
        let before = out.len();
        if codec::block_decode(v, &mut out).is_err() {
            out.truncate(before);
            res.skipped_corrupt += 1;
            continue;
        }
        if keys >= 2 {
            for &p in &out {
                let d = (p >> 1) as usize;
                if let Some(w) = seen.get_mut(d / 64) {
                    *w |= 1 << (d % 64);
                    named[d / 64] |= u64::from(p & 1) << (d % 64);
                } else {
                    res.skipped_corrupt += 1;
                }
            }
            out.clear();
        }
    }
    if keys >= 2 {
        out.clear();
        for (i, (&w, &n)) in seen.iter().zip(&named).enumerate() {
            let mut bits = w;
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                let d = (i * 64) as u32 + b;
                out.push((d << 1) | ((n >> b) & 1) as u32);
            }
        }
    }
    Ok((out, truncated))
}

/// Intersects posting lists; returns (docid, number of lists whose hit is in the name),
/// ascending by docid.
fn intersect(mut lists: Vec<Vec<u32>>) -> Vec<(u32, u32)> {
    lists.sort_by_key(Vec::len);
    let mut it = lists.into_iter();
    let Some(first) = it.next() else {
        return Vec::new();
    };
    let mut cur: Vec<(u32, u32)> = first.iter().map(|&p| (p >> 1, p & 1)).collect();
    for other in it {
        let mut j = 0usize;
        cur.retain_mut(|(doc, score)| {
            // Exponential search from j for the first posting >= doc.
            let (mut lo, mut hi, mut step) = (j, j, 1usize);
            while hi < other.len() && other[hi] >> 1 < *doc {
                lo = hi + 1;
                hi = j + step;
                step *= 2;
            }
            let hi = hi.min(other.len());
            j = lo + other[lo..hi].partition_point(|&p| p >> 1 < *doc);
            if j < other.len() && other[j] >> 1 == *doc {
                *score += other[j] & 1;
                true
            } else {
                false
            }
        });
        if cur.is_empty() {
            break;
        }
    }
    cur
}

/// Puts the k smallest (by key) first, sorted.
fn top_k<T, K: Ord>(v: &mut [T], k: usize, key: impl Fn(&T) -> K) {
    if k == 0 {
        return;
    }
    if k < v.len() {
        v.select_nth_unstable_by(k - 1, |a, b| key(a).cmp(&key(b)));
    }
    let k = k.min(v.len());
    v[..k].sort_unstable_by_key(key);
}

/// The page `offset..k` of `cands` in `order`, from the records' fixed fields
/// (discovered_at or total_size, ties by doc id).
fn exact_order(
    txn: &RoTxn,
    dbs: &Dbs,
    cands: impl Iterator<Item = u32>,
    order: Order,
    offset: usize,
    k: usize,
    res: &mut SearchResults,
) -> Result<Vec<u32>> {
    let mut keyed: Vec<(u64, u32)> = Vec::new();
    for docid in cands {
        let dk = codec::docid_key(docid);
        match dbs
            .torrents
            .get(txn, &dk)
            .map_err(lmdb("reading torrents"))?
        {
            Some(v) => match codec::torrent_keys(v) {
                Ok((_, at, size)) => keyed.push((
                    match order {
                        Order::Largest | Order::Smallest => size,
                        _ => at,
                    },
                    docid,
                )),
                Err(_) => res.skipped_corrupt += 1,
            },
            None => res.skipped_corrupt += 1,
        }
    }
    let k = k.min(keyed.len());
    match order {
        Order::Smallest | Order::Oldest => top_k(&mut keyed, k, |x| *x),
        _ => top_k(&mut keyed, k, |x| std::cmp::Reverse(*x)),
    }
    Ok(keyed
        .get(offset..k)
        .unwrap_or(&[])
        .iter()
        .map(|x| x.1)
        .collect())
}

fn record_by_docid(txn: &RoTxn, dbs: &Dbs, docid: u32) -> Result<Option<TorrentRecord>> {
    let dk = codec::docid_key(docid);
    let Some(v) = dbs
        .torrents
        .get(txn, &dk)
        .map_err(lmdb("reading a torrent"))?
    else {
        return Ok(None);
    };
    Ok(codec::decode_torrent(docid, v).ok().map(|t| t.rec))
}

/// Doc id of a stored infohash: in `ids_delta` (recent batches) or in `ids`.
///
/// Infohashes are random, so a batch of 10,000 new ones inserted into one B-tree of
/// 1,000,000 dirties most of its leaf pages, and every commit rewrote them. New
/// entries go to the small `ids_delta` instead, which is merged into `ids` in one
/// sorted pass when it has grown (see `IDS_DELTA_MIN`), in the same transaction as a
/// batch: nothing is held outside the database. An infohash is in one of the two.
pub(crate) fn docid_of(txn: &RoTxn, dbs: &Dbs, ih: &InfoHash) -> Result<Option<u32>> {
    for (db, name) in [(&dbs.ids_delta, "ids_delta"), (&dbs.ids, "ids")] {
        if let Some(v) = db.get(txn, ih).map_err(lmdb("reading ids"))? {
            return Ok(Some(codec::docid_from(v).map_err(corrupt(name, ih))?));
        }
    }
    Ok(None)
}

/// Merges `ids_delta` into `ids` when it has grown past its bound.
fn merge_ids_delta(txn: &mut RwTxn, dbs: &Dbs, bound: Option<u64>) -> Result<()> {
    let delta = dbs
        .ids_delta
        .stat(txn)
        .map_err(lmdb("reading ids"))?
        .entries as u64;
    let main = dbs.ids.stat(txn).map_err(lmdb("reading ids"))?.entries as u64;
    let bound =
        bound.unwrap_or_else(|| IDS_DELTA_MIN.max((IDS_DELTA_FACTOR * main as f64).sqrt() as u64));
    if delta <= bound {
        return Ok(());
    }
    let mut kv: Vec<([u8; 20], [u8; 4])> = Vec::with_capacity(delta as usize);
    for r in dbs.ids_delta.iter(txn).map_err(lmdb("reading ids"))? {
        let (k, v) = r.map_err(lmdb("reading ids"))?;
        let (Ok(k), Ok(v)) = (<[u8; 20]>::try_from(k), <[u8; 4]>::try_from(v)) else {
            return Err(corrupt("ids_delta", k)("bad entry size"));
        };
        kv.push((k, v));
    }
    for (k, v) in &kv {
        dbs.ids.put(txn, k, v).map_err(lmdb("writing ids"))?;
    }
    dbs.ids_delta.clear(txn).map_err(lmdb("writing ids"))?;
    Ok(())
}

/// Merges a later sighting into a stored record.
fn merge_seen(
    r: &mut TorrentRecord,
    at: u64,
    sources: Sources,
    seeders: Option<u32>,
    leechers: Option<u32>,
) {
    r.last_seen_at = r.last_seen_at.max(at);
    r.sources = r.sources | sources;
    if seeders.is_some() {
        r.seeders = seeders;
    }
    if leechers.is_some() {
        r.leechers = leechers;
    }
}

#[allow(clippy::too_many_arguments)]
fn apply_batch_txn(
    txn: &mut RwTxn,
    dbs: &Dbs,
    ops: &[Op],
    order: &[u32],
    tokens: &mut Option<Tokens>,
    make_tokens: &mut dyn FnMut() -> Result<Tokens>,
    keep_info: bool,
    max_requests: u64,
    ids_delta_max: Option<u64>,
) -> Result<BatchReport> {
    let mut rep = BatchReport::default();
    let mut meta = MetaCounters::load(txn, &dbs.meta)?;

    // Torrents, grouped by infohash (stable: a group keeps its discovery order after
    // sorting by time). One `ids` lookup per distinct infohash, in key order.
    let ts = sorted_torrents(ops, order);
    // (first input index, end index, stored doc id, group number)
    let mut groups: Vec<(usize, usize, Option<u32>, usize)> = Vec::new();
    let mut i = 0;
    let mut g = 0;
    while i < ts.len() {
        let mut j = i + 1;
        while j < ts.len() && ts[j].infohash == ts[i].infohash {
            j += 1;
        }
        g += 1;
        let id = match docid_of(txn, dbs, &ts[i].infohash) {
            Ok(id) => id,
            Err(StoreError::Corrupt { .. }) => {
                rep.skipped_corrupt += (j - i) as u64;
                i = j;
                continue;
            }
            Err(e) => return Err(e),
        };
        groups.push((i, j, id, g - 1));
        i = j;
    }

    // Known torrents: read, merge every sighting of the batch, write back (doc id order).
    let mut known: Vec<(u32, usize, usize)> = groups
        .iter()
        .filter_map(|&(a, b, id, _)| id.map(|d| (d, a, b)))
        .collect();
    known.sort_unstable();
    for (docid, a, b) in known {
        let dk = codec::docid_key(docid);
        let Some(v) = dbs
            .torrents
            .get(txn, &dk)
            .map_err(lmdb("reading a torrent"))?
        else {
            rep.skipped_corrupt += (b - a) as u64;
            continue;
        };
        let Ok(mut st) = codec::decode_torrent(docid, v) else {
            rep.skipped_corrupt += (b - a) as u64;
            continue;
        };
        let r = &mut st.rec;
        for t in &ts[a..b] {
            merge_seen(r, t.discovered_at, t.sources, t.seeders, t.leechers);
            if keep_info && !r.has_info {
                if let Some(info) = &t.info {
                    dbs.info.put(txn, &dk, info).map_err(lmdb("writing info"))?;
                    r.has_info = true;
                    meta.with_info += 1;
                }
            }
        }
        dbs.torrents
            .put(txn, &dk, &codec::encode_torrent(r))
            .map_err(lmdb("writing a torrent"))?;
        rep.torrents_updated += (b - a) as u64;
    }

    // New torrents: doc ids in discovery order, so that doc id order is time order
    // (the fast path of `Order::Newest`), and every table keyed by doc id is appended.
    let mut fresh: Vec<(u64, InfoHash, usize, usize, usize)> = groups
        .iter()
        .filter(|g| g.2.is_none())
        .map(|&(a, b, _, g)| (ts[a].discovered_at, ts[a].infohash, a, b, g))
        .collect();
    fresh.sort_unstable();
    if meta.next_docid + fresh.len() as u64 > 1 << 31 {
        return Err(StoreError::InvalidInput("more than 2^31 torrents".into()));
    }
    let mut new_ids: Vec<(InfoHash, u32)> = Vec::with_capacity(fresh.len());
    let mut by_size: Vec<[u8; 6]> = Vec::with_capacity(fresh.len());
    let base = meta.next_docid as u32;
    let ts = &ts;
    // File lists encoded by `Tokens` when it is ready (a prepared batch), else here.
    let pre = tokens.as_ref();
    let mut write_fresh = || -> Result<()> {
        for &(_, ih, a, b, g) in &fresh {
            let enc;
            let docid = meta.next_docid as u32;
            meta.next_docid += 1;
            let t = ts[a];
            let dk = codec::docid_key(docid);
            let has_info = keep_info && t.info.is_some();
            let mut rec = TorrentRecord {
                infohash: ih,
                name: t.name.clone(),
                total_size: t.total_size,
                piece_length: t.piece_length,
                piece_count: t.piece_count,
                file_count: t.files.len().min(u32::MAX as usize) as u32,
                private: t.private,
                source: t.source.clone(),
                discovered_at: t.discovered_at,
                last_seen_at: t.discovered_at,
                sources: t.sources,
                seeders: t.seeders,
                leechers: t.leechers,
                has_info,
            };
            for later in &ts[a + 1..b] {
                merge_seen(
                    &mut rec,
                    later.discovered_at,
                    later.sources,
                    later.seeders,
                    later.leechers,
                );
            }
            let append = PutFlags::APPEND;
            dbs.torrents
                .put_with_flags(txn, append, &dk, &codec::encode_torrent(&rec))
                .map_err(lmdb("writing a torrent"))?;
            dbs.files
                .put_with_flags(txn, append, &dk, {
                    match pre.and_then(|p| p.files.get(g)) {
                        Some(f) => f,
                        None => {
                            enc = codec::encode_files(&t.files);
                            &enc
                        }
                    }
                })
                .map_err(lmdb("writing files"))?;
            if has_info {
                if let Some(info) = &t.info {
                    dbs.info
                        .put_with_flags(txn, append, &dk, info)
                        .map_err(lmdb("writing info"))?;
                    meta.with_info += 1;
                }
            }
            let tk = codec::by_time_key(t.discovered_at, docid);
            if t.discovered_at >= meta.max_discovered {
                // Larger than every stored key: (time, doc id) both grow.
                dbs.by_time
                    .put_with_flags(txn, append, &tk, &[])
                    .map_err(lmdb("writing by_time"))?;
            } else {
                meta.time_disorder += 1;
                dbs.by_time
                    .put(txn, &tk, &[])
                    .map_err(lmdb("writing by_time"))?;
            }
            meta.max_discovered = meta.max_discovered.max(t.discovered_at);
            by_size.push(codec::by_size_key(t.total_size, docid));
            new_ids.push((ih, docid));
            meta.torrents += 1;
            rep.torrents_new += 1;
            rep.torrents_updated += (b - a - 1) as u64;
        }
        Ok(())
    };
    write_fresh()?;
    // The postings of the new torrents, by term in byte order (doc ids ascending).
    if tokens.is_none() {
        *tokens = Some(make_tokens()?);
    }
    let Some(tok) = tokens.as_ref() else {
        return Err(StoreError::InvalidInput("internal: no tokens".into()));
    };
    let mut postings: Vec<Vec<(u32, bool)>> = vec![Vec::new(); tok.terms.len()];
    for (k, &(.., g)) in fresh.iter().enumerate() {
        let docid = base + k as u32;
        for &(term, in_name) in tok.of_group(g) {
            if let Some(p) = postings.get_mut(term as usize) {
                p.push((docid, in_name));
            }
        }
    }
    // Randomly keyed tables last, each in key order.
    new_ids.sort_unstable();
    for (ih, docid) in &new_ids {
        dbs.ids_delta
            .put(txn, ih, &codec::docid_key(*docid))
            .map_err(lmdb("writing ids"))?;
    }
    merge_ids_delta(txn, dbs, ids_delta_max)?;
    by_size.sort_unstable();
    for k in &by_size {
        dbs.by_size
            .put(txn, k, &[])
            .map_err(lmdb("writing by_size"))?;
    }
    write_postings(
        txn,
        dbs,
        tok.terms
            .iter()
            .zip(&postings)
            .map(|(t, p)| (t.as_str(), p.as_slice())),
    )?;

    // Sightings of known torrents.
    let mut seen: Vec<(u32, &Op)> = Vec::new();
    for o in ops {
        if let Op::Seen { infohash, .. } = o {
            match docid_of(txn, dbs, infohash) {
                Ok(Some(d)) => seen.push((d, o)),
                Ok(None) => rep.seen_unknown += 1,
                Err(StoreError::Corrupt { .. }) => rep.skipped_corrupt += 1,
                Err(e) => return Err(e),
            }
        }
    }
    seen.sort_by_key(|s| s.0); // stable: sightings of one torrent keep their order
    for (docid, o) in seen {
        let Op::Seen {
            at,
            sources,
            seeders,
            leechers,
            ..
        } = o
        else {
            continue;
        };
        let dk = codec::docid_key(docid);
        let Some(v) = dbs
            .torrents
            .get(txn, &dk)
            .map_err(lmdb("reading a torrent"))?
        else {
            rep.skipped_corrupt += 1;
            continue;
        };
        let Ok(mut st) = codec::decode_torrent(docid, v) else {
            rep.skipped_corrupt += 1;
            continue;
        };
        merge_seen(&mut st.rec, *at, *sources, *seeders, *leechers);
        dbs.torrents
            .put(txn, &dk, &codec::encode_torrent(&st.rec))
            .map_err(lmdb("writing a torrent"))?;
        rep.seen_updated += 1;
    }

    // Peers, nodes, sessions: the latest record wins; sorted by key.
    let mut kv: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for o in ops {
        if let Op::Peer(p) = o {
            kv.push((codec::addr_key(&p.addr), codec::encode_peer(p)));
            rep.peers += 1;
        }
    }
    put_sorted(txn, &dbs.peers, kv, "writing peers")?;
    let mut kv = Vec::new();
    for o in ops {
        if let Op::Node(n) = o {
            kv.push((n.id.to_vec(), codec::encode_node(n)));
            rep.nodes += 1;
        }
    }
    put_sorted(txn, &dbs.nodes, kv, "writing nodes")?;
    let mut kv = Vec::new();
    for o in ops {
        if let Op::Session(s) = o {
            kv.push((s.id.to_be_bytes().to_vec(), codec::encode_session(s)));
            rep.sessions += 1;
        }
    }
    put_sorted(txn, &dbs.sessions, kv, "writing sessions")?;

    // Requests: append under increasing ids, then trim to the retention bound.
    for o in ops {
        if let Op::Request(r) = o {
            dbs.requests
                .put(
                    txn,
                    &meta.next_request.to_be_bytes(),
                    &codec::encode_request(r),
                )
                .map_err(lmdb("writing requests"))?;
            meta.next_request += 1;
            meta.requests += 1;
            rep.requests += 1;
        }
    }
    if meta.requests > max_requests {
        let excess = meta.requests - max_requests;
        meta.requests -= delete_first(txn, &dbs.requests, excess)?;
    }
    meta.store(txn, &dbs.meta)?;
    Ok(rep)
}

/// Indices of the torrent ops of a batch in write order: by infohash, and for one
/// infohash by discovery time (then input order).
fn torrent_order(ops: &[Op]) -> Vec<u32> {
    let mut v: Vec<(InfoHash, u64, u32)> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match o {
            Op::Torrent(t) => Some((t.infohash, t.discovered_at, i as u32)),
            _ => None,
        })
        .collect();
    v.sort_unstable();
    v.into_iter().map(|x| x.2).collect()
}

/// The torrents of `order` (indices that are not torrent ops are skipped).
fn sorted_torrents<'o>(ops: &'o [Op], order: &[u32]) -> Vec<&'o TorrentInput> {
    order
        .iter()
        .filter_map(|&i| match ops.get(i as usize) {
            Some(Op::Torrent(t)) => Some(&**t),
            _ => None,
        })
        .collect()
}

/// Distinct infohashes among the torrents of `order`.
fn group_count(ops: &[Op], order: &[u32]) -> usize {
    let ts = sorted_torrents(ops, order);
    ts.iter()
        .enumerate()
        .filter(|(i, t)| *i == 0 || ts[i - 1].infohash != t.infohash)
        .count()
}

/// The terms of the first torrent of each infohash group of a batch: a batch
/// dictionary in byte order, and per group its (term, in name) pairs.
pub(crate) struct Tokens {
    terms: Vec<String>,
    /// Group `g`'s encoded file list.
    files: Vec<Vec<u8>>,
    /// Group `g`'s pairs are `pairs[off[g]..off[g + 1]]`.
    off: Vec<usize>,
    pairs: Vec<(u32, bool)>,
}

impl Tokens {
    /// `with_files`: also encode each group's file list.
    fn of(ops: &[Op], order: &[u32], with_files: bool) -> Tokens {
        let ts = sorted_torrents(ops, order);
        let mut dict = TermIndex::new();
        let mut off = vec![0];
        let mut pairs = Vec::new();
        let mut tterms = Vec::new();
        let mut files = Vec::new();
        for (i, t) in ts.iter().enumerate() {
            if i > 0 && ts[i - 1].infohash == t.infohash {
                continue;
            }
            if with_files {
                files.push(codec::encode_files(&t.files));
            }
            dict.torrent(&t.name, &t.files, &mut tterms);
            pairs.extend_from_slice(&tterms);
            off.push(pairs.len());
        }
        // Renumber the terms in byte order.
        let mut by_text: Vec<u32> = (0..dict.terms.len() as u32).collect();
        by_text.sort_unstable_by(|&a, &b| dict.terms[a as usize].cmp(&dict.terms[b as usize]));
        let mut new_id = vec![0u32; by_text.len()];
        for (n, &old) in by_text.iter().enumerate() {
            new_id[old as usize] = n as u32;
        }
        for p in &mut pairs {
            p.0 = new_id[p.0 as usize];
        }
        let mut old_terms: Vec<Option<String>> = dict.terms.into_iter().map(Some).collect();
        let terms = by_text
            .iter()
            .map(|&old| old_terms[old as usize].take().unwrap_or_default())
            .collect();
        Tokens {
            terms,
            files,
            off,
            pairs,
        }
    }

    fn of_nothing() -> Result<Tokens> {
        Err(StoreError::InvalidInput(
            "internal: a batch's tokens are missing".into(),
        ))
    }

    fn of_group(&self, g: usize) -> &[(u32, bool)] {
        match (self.off.get(g), self.off.get(g + 1)) {
            (Some(&a), Some(&b)) => self.pairs.get(a..b).unwrap_or(&[]),
            _ => &[],
        }
    }
}

/// A batch of writes with its CPU work done (sorted, tokenized), ready for
/// [`Store::apply_prepared`]. Preparing needs no store or transaction, so a writer
/// can prepare the next batch while the current one commits.
pub struct PreparedBatch {
    ops: Vec<Op>,
    order: Vec<u32>,
    tokens: Tokens,
}

impl PreparedBatch {
    pub fn new(ops: Vec<Op>) -> PreparedBatch {
        let order = torrent_order(&ops);
        let tokens = Tokens::of(&ops, &order, true);
        PreparedBatch { ops, order, tokens }
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Appends postings to their terms' blocks: the last block of a term is extended
/// while it has room (replaced: LMDB dup values cannot grow in place), then new
/// blocks follow. Doc ids of a batch are larger than every stored one, so appending
/// keeps each term's blocks ascending.
/// `terms` come in byte order; each group is in doc id order (ids are assigned in
/// the order torrents are indexed).
fn write_postings<'t>(
    txn: &mut RwTxn,
    dbs: &Dbs,
    terms: impl Iterator<Item = (&'t str, &'t [(u32, bool)])>,
) -> Result<()> {
    for (term, group) in terms {
        if group.is_empty() {
            continue;
        }
        let term = term.as_bytes();
        let range = (Bound::Included(term), Bound::Included(term));
        let last: Option<Vec<u8>> = match dbs
            .terms
            .rev_range(txn, &range)
            .map_err(lmdb("reading terms"))?
            .next()
        {
            Some(r) => Some(r.map_err(lmdb("reading terms"))?.1.to_vec()),
            None => None,
        };
        let mut rest = group;
        if let Some(old) = last {
            let mut block = old.clone();
            let mut n = 0;
            while n < rest.len() && codec::block_push(&mut block, rest[n].0, rest[n].1) {
                n += 1;
            }
            if n > 0 {
                dbs.terms
                    .delete_one_duplicate(txn, term, &old)
                    .map_err(lmdb("writing terms"))?;
                dbs.terms
                    .put(txn, term, &block)
                    .map_err(lmdb("writing terms"))?;
                rest = &rest[n..];
            }
        }
        while let Some(first) = rest.first() {
            let mut block = codec::block_new(first.0, first.1);
            let mut n = 1;
            while n < rest.len() && codec::block_push(&mut block, rest[n].0, rest[n].1) {
                n += 1;
            }
            dbs.terms
                .put(txn, term, &block)
                .map_err(lmdb("writing terms"))?;
            rest = &rest[n..];
        }
    }
    Ok(())
}

fn put_sorted(
    txn: &mut RwTxn,
    db: &Db,
    mut kv: Vec<(Vec<u8>, Vec<u8>)>,
    ctx: &'static str,
) -> Result<()> {
    // Stable sort: for a key written twice in a batch, the later write wins.
    kv.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, v) in &kv {
        db.put(txn, k, v).map_err(lmdb(ctx))?;
    }
    Ok(())
}

/// Deletes the first `n` entries of `db`; returns how many were deleted.
fn delete_first(txn: &mut RwTxn, db: &Db, n: u64) -> Result<u64> {
    if n == 0 {
        return Ok(0);
    }
    let last: Option<Vec<u8>> = {
        let mut it = db.iter(txn).map_err(lmdb("trimming"))?;
        let mut last = None;
        for _ in 0..n {
            match it.next() {
                Some(r) => last = Some(r.map_err(lmdb("trimming"))?.0.to_vec()),
                None => break,
            }
        }
        last
    };
    match last {
        None => Ok(0),
        Some(k) => {
            let range = (Bound::Unbounded, Bound::Included(k.as_slice()));
            Ok(db.delete_range(txn, &range).map_err(lmdb("trimming"))? as u64)
        }
    }
}

fn prune_txn(txn: &mut RwTxn, dbs: &Dbs, p: &RetentionPolicy) -> Result<PruneReport> {
    let mut rep = PruneReport::default();
    let mut meta = MetaCounters::load(txn, &dbs.meta)?;
    if let Some(age) = p.requests_max_age_secs {
        let cutoff_ms = p.now.saturating_sub(age).saturating_mul(1000);
        let mut n = 0u64;
        for r in dbs.requests.iter(txn).map_err(lmdb("pruning requests"))? {
            let (_, v) = r.map_err(lmdb("pruning requests"))?;
            match codec::decode_request(v) {
                Ok(req) if req.started_at_ms < cutoff_ms => n += 1,
                _ => break,
            }
        }
        let d = delete_first(txn, &dbs.requests, n)?;
        rep.requests += d;
        meta.requests = meta.requests.saturating_sub(d);
    }
    if let Some(max) = p.requests_max_count {
        if meta.requests > max {
            let d = delete_first(txn, &dbs.requests, meta.requests - max)?;
            rep.requests += d;
            meta.requests -= d;
        }
    }
    if let Some(age) = p.peers_max_age_secs {
        let cutoff = p.now.saturating_sub(age);
        let mut dead = Vec::new();
        for r in dbs.peers.iter(txn).map_err(lmdb("pruning peers"))? {
            let (k, v) = r.map_err(lmdb("pruning peers"))?;
            let Ok(addr) = codec::addr_from_key(k) else {
                continue;
            };
            if let Ok(peer) = codec::decode_peer(addr, v) {
                if peer.last_seen < cutoff && peer.status != PeerStatus::Blacklisted {
                    dead.push(k.to_vec());
                }
            }
        }
        for k in dead {
            dbs.peers.delete(txn, &k).map_err(lmdb("pruning peers"))?;
            rep.peers += 1;
        }
    }
    if let Some(age) = p.nodes_max_age_secs {
        let cutoff = p.now.saturating_sub(age);
        let mut dead = Vec::new();
        for r in dbs.nodes.iter(txn).map_err(lmdb("pruning nodes"))? {
            let (k, v) = r.map_err(lmdb("pruning nodes"))?;
            let Ok(id) = <[u8; 20]>::try_from(k) else {
                continue;
            };
            if let Ok(n) = codec::decode_node(id, v) {
                if n.last_seen < cutoff {
                    dead.push(id);
                }
            }
        }
        for k in dead {
            dbs.nodes.delete(txn, &k).map_err(lmdb("pruning nodes"))?;
            rep.nodes += 1;
        }
    }
    meta.store(txn, &dbs.meta)?;
    Ok(rep)
}

fn term_hash(term: &[u8], in_name: bool) -> u64 {
    // FNV-1a: stable and dependency-free; only compares two walks of the same data.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in term.iter().chain(std::iter::once(&u8::from(in_name))) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Mix so that sums of hashes do not cancel.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

fn integrity_txn(txn: &RoTxn, dbs: &Dbs) -> Result<IntegrityReport> {
    let mut rep = IntegrityReport::default();
    // docid -> (expected postings, expected hash sum) from the torrents walk, and
    // (actual postings, actual hash sum) from the terms walk.
    let mut expected: HashMap<u32, (u64, u64)> = HashMap::new();
    let mut with_info = 0u64;
    let mut last_docid: Option<u32> = None;
    for r in dbs.torrents.iter(txn).map_err(lmdb("checking torrents"))? {
        let (k, v) = r.map_err(lmdb("checking torrents"))?;
        rep.torrents += 1;
        let Ok(docid) = codec::docid_from(k) else {
            rep.problem(format!("torrents key {} is not 4 bytes", hex(k)));
            continue;
        };
        last_docid = Some(docid);
        let st = match codec::decode_torrent(docid, v) {
            Ok(st) => st,
            Err(e) => {
                rep.problem(format!("torrent doc {docid}: {e}"));
                continue;
            }
        };
        let ih = st.rec.infohash;
        let dk = codec::docid_key(docid);
        match docid_of(txn, dbs, &ih) {
            Ok(Some(d)) if d == docid => {}
            Ok(Some(_)) | Err(StoreError::Corrupt { .. }) => {
                rep.problem(format!("torrent {}: ids entry disagrees", hex(&ih)))
            }
            Ok(None) => rep.problem(format!("torrent {}: no ids entry", hex(&ih))),
            Err(e) => return Err(e),
        }
        let bs = codec::by_size_key(st.rec.total_size, st.docid);
        if dbs
            .by_size
            .get(txn, &bs)
            .map_err(lmdb("checking by_size"))?
            .is_none()
        {
            rep.problem(format!("torrent {}: no by_size entry", hex(&ih)));
        }
        let bt = codec::by_time_key(st.rec.discovered_at, docid);
        if dbs
            .by_time
            .get(txn, &bt)
            .map_err(lmdb("checking by_time"))?
            .is_none()
        {
            rep.problem(format!("torrent {}: no by_time entry", hex(&ih)));
        }
        let files = match dbs.files.get(txn, &dk).map_err(lmdb("checking files"))? {
            Some(fv) => match codec::decode_files(fv) {
                Ok(f) => {
                    rep.files_lists += 1;
                    f
                }
                Err(e) => {
                    rep.problem(format!("torrent {}: files: {e}", hex(&ih)));
                    continue;
                }
            },
            None => {
                rep.problem(format!("torrent {}: no file list", hex(&ih)));
                continue;
            }
        };
        if files.len() as u64 != u64::from(st.rec.file_count) {
            rep.problem(format!(
                "torrent {}: {} files stored, record says {}",
                hex(&ih),
                files.len(),
                st.rec.file_count
            ));
        }
        let has_info = dbs
            .info
            .get(txn, &dk)
            .map_err(lmdb("checking info"))?
            .is_some();
        if has_info {
            rep.info_dicts += 1;
        }
        if has_info != st.rec.has_info {
            rep.problem(format!(
                "torrent {}: has_info flag disagrees with info",
                hex(&ih)
            ));
        }
        if st.rec.has_info {
            with_info += 1;
        }
        let mut e = (0u64, 0u64);
        for (term, in_name) in torrent_terms(&st.rec.name, &files) {
            e.0 += 1;
            e.1 = e.1.wrapping_add(term_hash(term.as_bytes(), in_name));
        }
        expected.insert(st.docid, e);
    }
    let mut actual: HashMap<u32, (u64, u64)> = HashMap::new();
    let mut last_term: Option<Vec<u8>> = None;
    let mut prev_doc: Option<u32> = None;
    for r in dbs.terms.iter(txn).map_err(lmdb("checking terms"))? {
        let (k, v) = r.map_err(lmdb("checking terms"))?;
        let mut ps = Vec::new();
        match codec::block_decode(v, &mut ps) {
            Ok(()) => {
                if last_term.as_deref() == Some(k) && ps.first().map(|p| p >> 1) <= prev_doc {
                    rep.problem(format!(
                        "terms {}: blocks overlap or are out of order",
                        hex(k)
                    ));
                }
                if last_term.as_deref() != Some(k) {
                    last_term = Some(k.to_vec());
                }
                prev_doc = ps.last().map(|p| p >> 1);
                for p in ps {
                    rep.postings += 1;
                    let a = actual.entry(p >> 1).or_default();
                    a.0 += 1;
                    a.1 = a.1.wrapping_add(term_hash(k, p & 1 == 1));
                }
            }
            Err(e) => rep.problem(format!("terms {}: {e}", hex(k))),
        }
    }
    for (docid, e) in &expected {
        let a = actual.remove(docid).unwrap_or_default();
        if a != *e {
            rep.problem(format!(
                "doc {docid}: {} postings stored, {} expected (or different terms)",
                a.0, e.0
            ));
        }
    }
    for docid in actual.keys() {
        rep.problem(format!("postings for doc {docid}, which is no torrent"));
    }
    for r in dbs.by_time.iter(txn).map_err(lmdb("checking by_time"))? {
        let (k, _) = r.map_err(lmdb("checking by_time"))?;
        rep.by_time += 1;
        let ok = k.len() == 12 && {
            let at = k
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes);
            let docid = k.get(8..).and_then(|b| codec::docid_from(b).ok());
            match (at, docid) {
                (Some(at), Some(d)) => match dbs
                    .torrents
                    .get(txn, &codec::docid_key(d))
                    .map_err(lmdb("checking by_time"))?
                {
                    Some(v) => codec::torrent_keys(v).is_ok_and(|t| t.1 == at),
                    None => false,
                },
                _ => false,
            }
        };
        if !ok {
            rep.problem(format!("by_time entry {} has no matching torrent", hex(k)));
        }
    }
    let ids = dbs.ids.len(txn).map_err(lmdb("checking ids"))?
        + dbs.ids_delta.len(txn).map_err(lmdb("checking ids"))?;
    let by_size = dbs.by_size.len(txn).map_err(lmdb("checking by_size"))?;
    let counted = read_u64(txn, &dbs.meta, K_TORRENTS)?;
    if counted != rep.torrents
        || ids != rep.torrents
        || rep.by_time != rep.torrents
        || by_size != rep.torrents
    {
        rep.problem(format!(
            "counts disagree: meta {counted}, torrents {}, ids {ids}, by_time {}, by_size {by_size}",
            rep.torrents, rep.by_time
        ));
    }
    if let Some(last) = last_docid {
        if u64::from(last) >= read_u64(txn, &dbs.meta, K_NEXT_DOCID)? {
            rep.problem(format!("doc id {last} is not below next_docid"));
        }
    }
    if read_u64(txn, &dbs.meta, K_WITH_INFO)? != with_info || with_info != rep.info_dicts {
        rep.problem(format!(
            "info count disagrees: {with_info} flagged, {} stored",
            rep.info_dicts
        ));
    }
    let requests = dbs.requests.len(txn).map_err(lmdb("checking requests"))?;
    if read_u64(txn, &dbs.meta, K_REQUESTS)? != requests {
        rep.problem(format!(
            "request count disagrees with the {requests} stored"
        ));
    }
    Ok(rep)
}

/// Copies the environment at `opts.path` with compaction and swaps the copy in.
///
/// The store must not be open anywhere (in this process it returns `AlreadyOpen`;
/// other processes must be stopped by the caller). The copy is written next to
/// `data.mdb` and renamed over it only once complete and synced, so a crash during
/// compaction leaves the original intact. Returns (bytes before, bytes after).
pub fn compact(opts: &StoreOptions) -> Result<(u64, u64)> {
    let data = opts.path.join("data.mdb");
    let tmp = opts.path.join("data.mdb.compact");
    let before = std::fs::metadata(&data)
        .map_err(StoreError::io(format!("reading {}", data.display())))?
        .len();
    // Refuse a database of another schema version before touching anything.
    drop(Store::open(opts.clone())?);
    wait_closed(&opts.path);
    let env = open_env(opts)?;
    let _ = std::fs::remove_file(&tmp);
    let file = env
        .copy_to_path(&tmp, heed::CompactionOption::Enabled)
        .map_err(lmdb("copying with compaction"))?;
    file.sync_all()
        .map_err(StoreError::io(format!("syncing {}", tmp.display())))?;
    drop(file);
    env.prepare_for_closing().wait();
    std::fs::rename(&tmp, &data).map_err(StoreError::io(format!(
        "renaming {} over {}",
        tmp.display(),
        data.display()
    )))?;
    if let Ok(dir) = std::fs::File::open(&opts.path) {
        let _ = dir.sync_all();
    }
    let after = std::fs::metadata(&data)
        .map_err(StoreError::io(format!("reading {}", data.display())))?
        .len();
    Ok((before, after))
}

/// Waits until heed has really closed the environment at `path` (after the last
/// clone of a `Store` was dropped).
pub fn wait_closed(path: &Path) {
    if let Ok(p) = path.canonicalize() {
        if let Some(ev) = heed::env_closing_event(p) {
            ev.wait();
        }
    }
}

impl Inner {
    pub(crate) fn claim_writer(&self) -> bool {
        !self.writer_running.swap(true, Ordering::SeqCst)
    }
    pub(crate) fn release_writer(&self) {
        self.writer_running.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u8, name: &str) -> Op {
        Op::Torrent(Box::new(TorrentInput {
            infohash: [n; 20],
            name: name.into(),
            total_size: 1,
            piece_length: 1,
            piece_count: 1,
            private: false,
            source: Some("SRC".into()),
            files: vec![FileEntry {
                path: format!("{name}/f.txt"),
                size: 1,
            }],
            discovered_at: u64::from(n),
            sources: Sources::SAMPLE,
            seeders: None,
            leechers: None,
            info: None,
        }))
    }

    #[test]
    fn schema_2_is_migrated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions::new(dir.path().join("db"));
        let store = Store::open(opts.clone()).unwrap();
        store.apply_batch(&[t(1, "kept")]).unwrap();
        // A schema 2 database: version 2, no `ids_delta` (its entry moved to `ids`).
        store
            .write(|txn, dbs| {
                merge_ids_delta(txn, dbs, Some(0))?;
                dbs.meta
                    .put(txn, K_SCHEMA, &2u32.to_le_bytes())
                    .map_err(lmdb("test"))
            })
            .unwrap();
        let in_ids = store
            .read(|txn, dbs| Ok((dbs.ids.len(txn).unwrap(), dbs.ids_delta.len(txn).unwrap())))
            .unwrap();
        assert_eq!(in_ids, (1, 0));
        drop(store);
        wait_closed(&opts.path);
        let store = Store::open(opts).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(store.get(&[1; 20]).unwrap().unwrap().record.name, "kept");
        store.apply_batch(&[t(1, "kept"), t(2, "new")]).unwrap();
        assert_eq!(store.count().unwrap(), 2);
        assert!(store.integrity_check().unwrap().is_ok());
    }

    #[test]
    fn ids_delta_merges_keep_every_lookup_and_idempotency() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = StoreOptions::new(dir.path().join("db"));
        opts.ids_delta_max = Some(60);
        let store = Store::open(opts).unwrap();
        let mut synth = crate::synth::Synth::new(5);
        let mut all = Vec::new();
        let mut merges = 0;
        let mut last_delta = 0;
        for b in 0..40u64 {
            let mut ops: Vec<Op> = (0..25)
                .map(|i| Op::Torrent(Box::new(synth.torrent(1000 + b * 100 + i, false))))
                .collect();
            // Repeats of earlier torrents, wherever their ids entry now is.
            for old in all.iter().step_by(7).take(10) {
                ops.push(Op::Torrent(Box::new(Clone::clone(old))));
            }
            for o in &ops[..25] {
                if let Op::Torrent(t) = o {
                    all.push((**t).clone());
                }
            }
            let rep = store.apply_batch(&ops).unwrap();
            assert_eq!(rep.torrents_new, 25, "batch {b}");
            let delta = store
                .read(|txn, dbs| Ok(dbs.ids_delta.len(txn).unwrap()))
                .unwrap();
            if delta < last_delta {
                merges += 1;
            }
            last_delta = delta;
        }
        assert!(merges >= 3, "only {merges} merges");
        assert_eq!(store.count().unwrap(), all.len() as u64);
        for t in &all {
            let got = store.get(&t.infohash).unwrap().unwrap();
            assert_eq!(got.record.name, t.name);
        }
        assert!(store.integrity_check().unwrap().is_ok());
    }

    #[test]
    fn other_schema_version_is_refused_with_a_clear_message() {
        // Schema 1 (torrents keyed by infohash, before doc id keyed tables) is the real
        // older version; 99 stands for a newer one.
        for old in [1u32, 99] {
            refused_with_a_clear_message(old);
        }
    }

    fn refused_with_a_clear_message(old: u32) {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions::new(dir.path().join("db"));
        let store = Store::open(opts.clone()).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        store.apply_batch(&[t(1, "kept")]).unwrap();
        store
            .write(|txn, dbs| {
                dbs.meta
                    .put(txn, K_SCHEMA, &old.to_le_bytes())
                    .map_err(lmdb("test"))
            })
            .unwrap();
        drop(store);
        wait_closed(&opts.path);
        let err = Store::open(opts.clone()).unwrap_err();
        assert!(matches!(
            err,
            StoreError::SchemaVersion {
                found,
                supported: SCHEMA_VERSION,
                ..
            } if found == old
        ));
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("schema version {old},"))
                && msg.contains(&format!("supports schema version {SCHEMA_VERSION}"))
                && msg.contains(&format!("no migration from {old}"))
                && msg.contains("export JSON lines"),
            "{msg}"
        );
        wait_closed(&opts.path);
        // Nothing was changed: restoring the version gives the data back.
        let env = open_env(&opts).unwrap();
        let rtxn = env.read_txn().unwrap();
        let meta: Db = env
            .open_databases_and_commit(rtxn, |o, r| {
                o.open_database::<Bytes, Bytes>(r, Some("meta"))
                    .map(CommitOrAbort::<_, ()>::Commit)
            })
            .unwrap()
            .unwrap_commit()
            .unwrap();
        let mut w = env.write_txn().unwrap();
        meta.put(&mut w, K_SCHEMA, &SCHEMA_VERSION.to_le_bytes())
            .unwrap();
        w.commit().unwrap();
        env.prepare_for_closing().wait();
        let store = Store::open(opts).unwrap();
        assert_eq!(store.get(&[1; 20]).unwrap().unwrap().record.name, "kept");
    }

    #[test]
    fn corrupt_records_are_errors_or_counted_skips_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreOptions::new(dir.path().join("db"))).unwrap();
        store
            .apply_batch(&[t(1, "alpha one"), t(2, "alpha two"), t(3, "alpha three")])
            .unwrap();
        // Damage torrent 2's record and torrent 3's file list.
        store
            .write(|txn, dbs| {
                // Doc ids follow discovery order: torrent n has doc id n - 1.
                dbs.torrents
                    .put(txn, &codec::docid_key(1), &[2, 0, 0])
                    .map_err(lmdb("test"))?;
                dbs.files
                    .put(txn, &codec::docid_key(2), &[1, 200])
                    .map_err(lmdb("test"))
            })
            .unwrap();
        assert!(matches!(
            store.get(&[2; 20]),
            Err(StoreError::Corrupt { db: "torrents", .. })
        ));
        assert!(matches!(
            store.get(&[3; 20]),
            Err(StoreError::Corrupt { db: "files", .. })
        ));
        let r = store.search("alpha", 10, 0, Order::Relevance).unwrap();
        assert_eq!(r.total, 3);
        assert_eq!(r.hits.len(), 2);
        assert_eq!(r.skipped_corrupt, 1);
        assert_eq!(store.recent(10).unwrap().len(), 2);
        let rep = store.integrity_check().unwrap();
        assert!(!rep.is_ok());
        assert!(
            rep.problems.iter().any(|p| p.contains("truncated")),
            "{:?}",
            rep.problems
        );
        // Writing the damaged torrent again leaves it alone and counts it.
        let b = store
            .apply_batch(&[t(2, "alpha two"), t(1, "alpha one")])
            .unwrap();
        assert_eq!((b.skipped_corrupt, b.torrents_updated), (1, 1));
        let mut out = Vec::new();
        let e = store.export_jsonl(&mut out, None).unwrap();
        assert_eq!((e.torrents, e.skipped_corrupt), (1, 2));
    }

    #[test]
    fn intersect_gallops_correctly() {
        let a: Vec<u32> = (0..1000).map(|d| d << 1).collect();
        let b: Vec<u32> = (0..1000)
            .filter(|d| d % 7 == 0)
            .map(|d| (d << 1) | 1)
            .collect();
        let c: Vec<u32> = (0..1000).filter(|d| d % 3 == 0).map(|d| d << 1).collect();
        let r = intersect(vec![a, b, c]);
        let want: Vec<(u32, u32)> = (0..1000).filter(|d| d % 21 == 0).map(|d| (d, 1)).collect();
        assert_eq!(r, want);
    }
}
