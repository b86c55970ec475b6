//! The store: one LMDB environment and its databases (the layouts are in the crate
//! doc).
//!
//! This module owns the environment: [`StoreOptions`] and [`Durability`], opening
//! (creating the databases, refusing another schema version, migrating schema 2),
//! the read and write transactions (growing the map on `MDB_MAP_FULL` and adopting a
//! size set by another process), the counters kept in `meta`, and what several
//! concerns share: the infohash → doc id lookup with the `ids_delta` merge, and
//! trimming the oldest entries of a table. The rest is split by concern:
//!
//! - `read`: point reads and listings (torrents, peers, nodes, sessions, requests,
//!   totals).
//! - `readonly`: [`Store::open_read_only`], which never waits for a writer.
//! - `search`: the full-text search engine.
//! - `prepare`: a batch's CPU work before its transaction (write order, tokens,
//!   [`PreparedBatch`]).
//! - `write`: applying a batch in one write transaction, as named steps.
//! - `maintenance`: prune, integrity check and compaction.
//! - `tests`: unit tests that need the crate's internals.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use heed::types::Bytes;
use heed::{
    CommitOrAbort, Database, DatabaseFlags, Env, EnvFlags, EnvOpenOptions, RoTxn, RwTxn, WithoutTls,
};

use crate::codec;
use crate::error::{hex, StoreError};
use crate::types::InfoHash;

mod columns;
mod facets;
mod filter;
mod history;
mod identity;
mod maintenance;
mod migrate;
mod prepare;
mod read;
mod readonly;
mod search;
#[cfg(test)]
mod tests;
mod upgrade_columns;
mod upgrade_f;
mod upgrade_seeders;
mod write;

pub(crate) use facets::facets_by_docid;
pub(crate) use facets::of_torrent;
pub use facets::{
    category_name, Facets, ReclassifyReport, CATEGORY_GROUPS, LANGUAGE_NAMES, MAX_RANGE_KEYS,
    TORZNAB_CATEGORIES,
};
pub(crate) use filter::{any_hidden, is_hidden};
pub use filter::{FilterTotals, TorrentRemoval};
pub use history::{Hourly, MAX_HISTORY_SCAN};
pub use maintenance::{compact, IntegrityReport, PruneReport, RetentionPolicy};
pub use prepare::PreparedBatch;
pub use read::{ClientStats, SessionYield, Stats};
pub use search::{
    FacetFilter, Order, SearchQuery, SearchResults, SortBy, MAX_PREFIX_TERMS, MAX_SEARCH_LIMIT,
    MAX_SEARCH_OFFSET, PHRASE_CHECK_BUDGET,
};
pub use write::BatchReport;

pub(crate) type Result<T> = std::result::Result<T, StoreError>;
pub(crate) type Db = Database<'static, Bytes, Bytes>;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 7;
/// Older schemas migrated on open, in place: schema 2 lacks the `ids_delta` table,
/// schemas 2 and 3 the `ids_v2` table (both created empty), and their `torrents`
/// values are layout 2, which is still read (a v1 torrent whose counts have no
/// measurement time); records written since schema 4 are layout 3. Schemas 2 to 4
/// indexed terms with the old tokenizer (no accent folding, no bigrams) and one
/// posting flag (in name): `terms` is rebuilt from the records (`migrate`), in one
/// write transaction that also raises the version, so an interrupted upgrade leaves
/// the old database as it was and the next open starts it again.
///
/// Schema 6 adds the classifier's `facets` and `facet_terms` (`upgrade_f`: every
/// stored torrent classified), in the same transaction, after `terms` for 2 to 4.
/// Schema 6 added `columns` (filled from `torrents` by `upgrade_columns`, in the same
/// transaction, after the `terms` rebuild of schemas 2 to 4).
/// Schema 7 adds `by_seeders` (filled from `columns` by `upgrade_seeders`; from
/// schemas 2 to 5, by the `columns` fill itself).
const MIGRATES_FROM: [u32; 5] = [2, 3, 4, 5, 6];
/// `ids_delta` is merged into `ids` when it holds more than
/// `max(IDS_DELTA_MIN, sqrt(IDS_DELTA_FACTOR · ids entries))` entries: about the
/// size that minimises the pages a batch of 10,000 dirties in both tables.
const IDS_DELTA_MIN: u64 = 50_000;
const IDS_DELTA_FACTOR: f64 = 20_000.0;

const GIB: usize = 1 << 30;
/// Map sizes are kept a multiple of 64 KiB, a multiple of every common page size.
const MAP_ALIGN: usize = 64 * 1024;

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
    /// How hard commits are pushed to disk (default [`Durability::Durable`]).
    pub durability: Durability,
    /// Keep raw info dicts for `.torrent` export (default true).
    pub keep_info: bool,
    /// LMDB's reader slots: read transactions open at once, over every process
    /// (default 126).
    pub max_readers: u32,
    /// The writer keeps at most this many metadata request records (oldest dropped).
    pub max_requests: u64,
    /// `ids_delta` is merged into `ids` once it holds more than this many entries.
    /// `None` (the default): `max(50,000, sqrt(20,000 · entries of ids))`. Tests set
    /// a small bound so that merges happen often (and crashes land in them).
    pub ids_delta_max: Option<u64>,
    /// Classify torrents when they are first stored (default true). False only for
    /// the store bench's baseline: new torrents are then left unclassified until
    /// [`Store::reclassify`].
    #[doc(hidden)]
    pub classify: bool,
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
            classify: true,
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
    /// The truncated v2 hash of a hybrid torrent → its doc id (its v1 hash is in
    /// `ids`/`ids_delta`), so that either infohash finds the one record.
    pub ids_v2: Db,
    pub peers: Db,
    pub nodes: Db,
    pub sessions: Db,
    pub requests: Db,
    pub meta: Db,
    /// Filtered or deleted infohash → when and by which rule (`filter`).
    pub tombstones: Db,
    /// Hidden infohash → when and by which rule: stored without postings (`filter`).
    pub hidden: Db,
    /// Doc id → the classifier's facets (`facets.rs`).
    pub facets: Db,
    /// Facet key → posting blocks of doc ids (DUP_SORT; `facets.rs`).
    pub facet_terms: Db,
    /// Search's fixed-width fields by doc id (see `columns`).
    pub columns: Db,
    /// (seeders, doc id) of every torrent with known seeders (schema 7; see `columns`).
    pub by_seeders: Db,
}

/// Every table, in the order [`Dbs::from_tables`] takes them; both opens (the
/// writing one and `readonly.rs`) use this list, so a table added here is opened by
/// both.
pub(super) const TABLES: [&str; TABLE_COUNT] = [
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
    "ids_v2",
    "tombstones",
    "hidden",
    "facets",
    "facet_terms",
    "columns",
    "by_seeders",
];
/// The tables holding several values a key (posting blocks).
pub(super) fn is_dup_sort(table: &str) -> bool {
    table == "terms" || table == "facet_terms"
}
/// How many tables there are.
pub(super) const TABLE_COUNT: usize = 20;
/// Where `meta` is in [`TABLES`].
const TABLE_META: usize = 10;
/// The environment's table limit (room for tables later schemas add).
pub(super) const MAX_DBS: u32 = 32;

impl Dbs {
    /// The tables, opened in [`TABLES`] order.
    pub(super) fn from_tables(t: [Db; TABLE_COUNT]) -> Dbs {
        let [torrents, files, info, terms, by_time, ids, peers, nodes, sessions, requests, meta, by_size, ids_delta, ids_v2, tombstones, hidden, facets, facet_terms, columns, by_seeders] =
            t;
        Dbs {
            torrents,
            files,
            info,
            terms,
            by_time,
            by_size,
            ids,
            ids_delta,
            ids_v2,
            peers,
            nodes,
            sessions,
            requests,
            meta,
            tombstones,
            hidden,
            facets,
            facet_terms,
            columns,
            by_seeders,
        }
    }
}

pub(crate) struct Inner {
    pub env: Env<WithoutTls>,
    pub dbs: Dbs,
    /// Readers and the writer hold it shared; growing the map holds it exclusively,
    /// since LMDB may only resize while no transaction of this process is active.
    gate: RwLock<()>,
    pub opts: StoreOptions,
    pub writer_running: AtomicBool,
    /// 0: choose by cost (see `search::WALK_FACTOR`); 1: always look up; 2: always walk.
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
        .max_dbs(MAX_DBS)
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
        let mut migrate = false;
        let mut from_version = SCHEMA_VERSION;
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
                        if found != SCHEMA_VERSION && !MIGRATES_FROM.contains(&found) {
                            return Ok(CommitOrAbort::Abort(found));
                        }
                        migrate = found != SCHEMA_VERSION;
                        from_version = found;
                    }
                }
                let mut dbs = Vec::with_capacity(TABLES.len());
                for name in TABLES {
                    let mut o = opener.database_options().types::<Bytes, Bytes>();
                    o.name(name);
                    if is_dup_sort(name) {
                        o.flags(DatabaseFlags::DUP_SORT);
                    }
                    dbs.push(o.create(wtxn)?);
                }
                let meta = dbs[TABLE_META];
                // New: this schema. An older one keeps its version (its missing tables
                // were just created empty) until `migrate` has rebuilt `terms`.
                if meta.get(wtxn, K_SCHEMA)?.is_none() {
                    meta.put(wtxn, K_SCHEMA, &SCHEMA_VERSION.to_le_bytes())?;
                }
                let arr: [_; TABLE_COUNT] = std::array::from_fn(|i| dbs[i]);
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
        let store = Store {
            inner: Arc::new(Inner {
                env,
                dbs: Dbs::from_tables(dbs),
                gate: RwLock::new(()),
                opts,
                writer_running: AtomicBool::new(false),
                order_mode: AtomicUsize::new(0),
            }),
        };
        if migrate {
            // A running crawler of an older build would go on writing the old index
            // into the new one: upgrade only when no other process holds the
            // database's lock (this process may: a crawler locks, then opens).
            if let Ok(Some(h)) = crate::lock::DbLock::holder(&store.inner.opts.path) {
                if h.pid != Some(std::process::id()) {
                    return Err(StoreError::InvalidInput(format!(
                        "the database at {} must be upgraded to schema {SCHEMA_VERSION} (its \
                         indexes are rebuilt), but {h} holds it; stop that process, then \
                         run this build again",
                        store.inner.opts.path.display()
                    )));
                }
            }
            store.write(|txn, dbs| migrate::upgrade(txn, dbs, from_version))?;
        }
        Ok(store)
    }

    /// How time/size orders are computed: 0 by cost, 1 always per-match lookups in
    /// `torrents`, 2 always walking the ordered index, 3 by cost without the
    /// `columns` table (the search of schema 5, for the bench's before/after), 4 as 0
    /// but the relevance walk takes only unscoped plain words with no exclusion or
    /// phrase (the search before phrases, exclusions and `name:`/`path:` were walked,
    /// for the bench's before/after), 5 as 0 without the walks added with schema 7
    /// (`by_seeders`; the search of schema 6, for the bench's before/after). 0, 2, 4
    /// and 5 read filters and sort keys from `columns`.
    /// All give the same results (for tests).
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
}

/// Doc id of a stored infohash: in `ids_delta` (recent batches) or in `ids`, or
/// (the truncated v2 hash of a hybrid) in `ids_v2`.
///
/// Infohashes are random, so a batch of 10,000 new ones inserted into one B-tree of
/// 1,000,000 dirties most of its leaf pages, and every commit rewrote them. New
/// entries go to the small `ids_delta` instead, which is merged into `ids` in one
/// sorted pass when it has grown (see `IDS_DELTA_MIN`), in the same transaction as a
/// batch: nothing is held outside the database. An infohash is in one of the two.
pub(crate) fn docid_of(txn: &RoTxn, dbs: &Dbs, ih: &InfoHash) -> Result<Option<u32>> {
    for (db, name) in [
        (&dbs.ids_delta, "ids_delta"),
        (&dbs.ids, "ids"),
        (&dbs.ids_v2, "ids_v2"),
    ] {
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
    /// Marks the single writer thread as running; false if one already runs.
    pub(crate) fn claim_writer(&self) -> bool {
        !self.writer_running.swap(true, Ordering::SeqCst)
    }
    /// Marks the writer thread as gone.
    pub(crate) fn release_writer(&self) {
        self.writer_running.store(false, Ordering::SeqCst);
    }
}
