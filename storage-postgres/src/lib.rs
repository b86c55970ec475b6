//! PostgreSQL storage for magnetar: one shared index that several crawler hosts
//! write and users search (issue 21). LMDB (`magnetar-storage`) stays the embedded
//! default; this store holds the same records, answers the same query language
//! with the same results, and is what operators already run, back up and replicate.
//!
//! # Use
//! ```no_run
//! use magnetar_storage::{Op, SearchQuery};
//! use magnetar_storage_pg::{PgOptions, PgStore};
//! # fn main() -> Result<(), magnetar_storage_pg::PgError> {
//! let mut store = PgStore::connect("host=/run/postgresql dbname=magnetar", PgOptions::default())?;
//! // store.apply_batch(&[Op::Torrent(Box::new(input))])?;
//! let page = store.query(&SearchQuery::new("ubuntu 22.04 desk"))?;
//! # let _ = page; Ok(()) }
//! ```
//!
//! # Client
//! `postgres` (rust-postgres), the synchronous client: the crawler's sink
//! (`magnetar_core::pump::Storage`) is a sync trait run on a thread of its own, and
//! the LMDB store's API is sync too, so a blocking client fits both without an async
//! runtime in the store's API. One [`PgStore`] is one connection.
//!
//! # Schema
//! Created and migrated by [`PgStore::connect`] ([`migrate`]: versioned, one
//! transaction per migration, a newer schema refused). Version 1:
//!
//! | table | columns |
//! |---|---|
//! | `schema_migrations` | version (PK), name, applied_at |
//! | `torrents` | infohash bytea PK (20), id bigint UNIQUE (doc id, discovery order), kind (1 v1, 2 v2, 3 hybrid), v2 bytea (32), name, total_size, piece_length, piece_count, file_count, private, source, discovered_at, last_seen_at (Unix s), sources (bitset), seeders, leechers, scraped_at (NULL = unknown), has_info, search tsvector |
//! | `files` | torrent_id → torrents.id, idx, path, size; PK (torrent_id, idx) |
//! | `info` | torrent_id → torrents.id PK, dict bytea (the raw bencoded info dict) |
//! | `crawl_queue` (3) | the fleet's shared work queue with leases: see [`queue`] |
//!
//! Version 2 (see [`migrate`] for the columns): `peers` (PK ip, port), `nodes` (PK
//! id), `sessions` (PK id), `requests` (identity id, capped at
//! [`PgOptions::max_requests`]), `tombstones` and `hidden` (PK infohash: the filter
//! marks), `facets` (the classifier's kind, Torznab category and attributes per
//! torrent) and `facet_keys` (PK (key, torrent): the facet index the category and
//! attribute filters read), and the SQL functions `magnetar_torrent_id` (an
//! infohash, or a hybrid's truncated v2 hash, to its torrent) and
//! `magnetar_lock_buckets` (the writers' bucket locks, see [`records`]).
//!
//! Schema 4 adds `torrents.name_raw`, `torrents.source_raw` and `files.path_raw`
//! (exact bytes of a text holding NUL, else NULL) and replaces the foreign keys of
//! `files` and `info` by an `AFTER DELETE` trigger on `torrents` (deleting torrents
//! deletes their files and info dicts, without a check per inserted row).
//! Schema 5 adds `node_ids` (PK host, key; the crawlers' node ids, see
//! [`identities`]). Schema 6 adds the indexes `(seeders NULLS FIRST, id)` and
//! `(file_count, id)` (see below).
//!
//! Indexes: GIN on `search`; GIN trigram on `magnetar_fold(name)` (`unaccent` +
//! `lower`); `v2`'s first 20 bytes; `(discovered_at, id)`, `(total_size, id)`,
//! `(seeders, id)`, `(seeders NULLS FIRST, id)` (walked backward: most seeders
//! first, unknown last) and `(file_count, id)` for the orders. See [`migrate`] for why `search` is written by
//! the writer from the LMDB tokenizer rather than by `to_tsvector`.
//!
//! # Writing
//! [`PgStore::apply_batch`] takes the LMDB writer's [`Op`]s: see [`write`](crate::write)
//! (COPY into staging tables, one idempotent upsert, retried on deadlock), and
//! [`records`] for every other op (filter marks first, then peers, nodes, sessions
//! and requests), all in the batch's one transaction. PostgreSQL text cannot hold
//! NUL: a NUL in a label or client name is stored as U+FFFD.
//!
//! # Reading
//! Every read the web server and the CLI make of the LMDB store has an inherent
//! method here with the LMDB `Store`'s name and arguments (taking `&mut self`: one
//! store is one connection) and the same results: [`PgStore::get`],
//! [`PgStore::record`], [`PgStore::contains`], [`PgStore::info_dict`],
//! [`PgStore::count`], [`PgStore::recent`], [`PgStore::infohashes_with_prefix`],
//! [`PgStore::facets`], [`PgStore::facets_of`], the filter marks
//! ([`PgStore::tombstone`], [`PgStore::hidden_mark`], [`PgStore::filter_totals`],
//! [`PgStore::filter_labels`]), the crawl's records ([`PgStore::peer`],
//! [`PgStore::saved_nodes`], [`PgStore::sessions`], [`PgStore::recent_requests`])
//! and the dashboard's figures ([`stats`](crate::stats): [`PgStore::stats`],
//! [`PgStore::session_yields`], [`PgStore::failure_reasons`],
//! [`PgStore::encryption_outcomes`], [`PgStore::transport_outcomes`],
//! [`PgStore::top_clients`], [`PgStore::discoveries_per_hour`],
//! [`PgStore::requests_per_hour`]). The CLI's other calls too: [`PgStore::search`],
//! [`PgStore::schema_version`], [`PgStore::remove_torrents`],
//! [`PgStore::hide_torrents`], [`PgStore::unhide_torrents`],
//! [`PgStore::reclassify`], [`PgStore::for_each_torrent`],
//! [`PgStore::export_jsonl`], [`PgStore::export_torrent_files`]. Hidden torrents
//! are never found by search, listed by `recent` or exported; tombstoned ones are
//! not stored.
//!
//! A name, source or path holding NUL is stored with each NUL as U+FFFD in its
//! text column and exactly in its `*_raw` bytea column (schema 4), which readers
//! prefer, so nothing is lost.
//!
//! # Searching
//! [`PgStore::query`] takes the LMDB store's [`SearchQuery`] and returns its
//! [`SearchResults`]; see [`search`](crate::search) for how, and for the intentional
//! differences. Category and attribute filters ([`magnetar_storage::FacetFilter`])
//! are compiled by the LMDB store's compiler into ranges of facet keys and answered
//! from `facet_keys` ([`facets`]).

pub mod backend;
pub mod copy;
mod error;
pub mod exports;
pub mod facets;
pub mod identities;
pub mod migrate;
pub mod queue;
pub mod records;
pub mod search;
pub mod stats;
#[doc(hidden)]
pub mod testing;
mod vector;
pub mod write;
pub mod writer;

pub use backend::{PgReader, PgSink};
pub use error::{PgError, Result};
pub use identities::PgIdentities;
pub use migrate::{migrate, SCHEMA_VERSION};
pub use queue::{ClaimOptions, Claimed, Queue, QueueTotals};
pub use write::BatchReport;
pub use writer::{PgWriter, PgWriterConfig, PgWriterTotals};

use magnetar_storage::{
    FileEntry, InfoHash, Op, SearchQuery, SearchResults, Torrent, TorrentRecord,
};
use postgres::{Client, NoTls};

/// How a [`PgStore`] writes.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Keep the raw info dicts (as the LMDB store's `keep_info`; default true).
    pub keep_info: bool,
    /// The writer keeps at most this many metadata request records, the oldest
    /// deleted (as the LMDB store's `max_requests`; default 1,000,000).
    pub max_requests: u64,
}

impl Default for PgOptions {
    fn default() -> PgOptions {
        PgOptions {
            keep_info: true,
            max_requests: 1_000_000,
        }
    }
}

/// A connection to a magnetar database in PostgreSQL.
pub struct PgStore {
    client: Client,
    opts: PgOptions,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("opts", &self.opts).finish()
    }
}

impl PgStore {
    /// Connects (a libpq-style string or a `postgres://` URL; no TLS: use a Unix
    /// socket or a trusted network), migrates the schema to [`SCHEMA_VERSION`], and
    /// prepares this session's staging tables.
    pub fn connect(url: &str, opts: PgOptions) -> Result<PgStore> {
        let mut client = Client::connect(url, NoTls).map_err(PgError::db("connecting"))?;
        migrate(&mut client)?;
        client
            .batch_execute(write::CREATE_STAGING)
            .map_err(PgError::db("creating staging tables"))?;
        Ok(PgStore { client, opts })
    }

    /// Connects to a database whose schema is this build's, changing nothing:
    /// an empty database is refused ([`PgError::NoSchema`]), an older schema too
    /// ([`PgError::SchemaTooOld`]), a newer one as by [`PgStore::connect`]. For
    /// reading commands, which must not create or upgrade the fleet's schema
    /// under crawlers of another build.
    pub fn connect_existing(url: &str, opts: PgOptions) -> Result<PgStore> {
        let mut client = Client::connect(url, NoTls).map_err(PgError::db("connecting"))?;
        let found = migrate::schema_version(&mut client)?;
        let known = SCHEMA_VERSION;
        if found == 0 {
            return Err(PgError::NoSchema);
        }
        if found < known {
            return Err(PgError::SchemaTooOld { found, known });
        }
        if found > known {
            return Err(PgError::SchemaTooNew { found, known });
        }
        client
            .batch_execute(write::CREATE_STAGING)
            .map_err(PgError::db("creating staging tables"))?;
        Ok(PgStore { client, opts })
    }

    /// Applies one batch of writes in one transaction (see [`write`](crate::write)).
    pub fn apply_batch(&mut self, ops: &[Op]) -> Result<BatchReport> {
        let settings = write::BatchSettings {
            keep_info: self.opts.keep_info,
            max_requests: self.opts.max_requests,
        };
        write::apply_batch(&mut self.client, ops, &settings)
    }

    /// Runs a search (see [`search`](crate::search)).
    pub fn query(&mut self, q: &SearchQuery) -> Result<SearchResults> {
        search::query(&mut self.client, q)
    }

    /// [`PgStore::query`] with the first version's SQL (the benchmark's "before").
    #[doc(hidden)]
    pub fn query_before(&mut self, q: &SearchQuery) -> Result<SearchResults> {
        search::query_with(&mut self.client, q, search::Plan::Before)
    }

    /// Full-text search: [`PgStore::query`] with one of the classic orders and no
    /// filter (the LMDB store's `search`).
    pub fn search(
        &mut self,
        query: &str,
        limit: usize,
        offset: usize,
        order: magnetar_storage::Order,
    ) -> Result<SearchResults> {
        self.query(&SearchQuery::of_order(query, limit, offset, order))
    }

    /// The newest migration applied (the LMDB store's `schema_version`, whose
    /// numbers are the LMDB schema's: the two are separate sequences).
    pub fn schema_version(&mut self) -> Result<u32> {
        Ok(migrate::schema_version(&mut self.client)?.max(0) as u32)
    }

    /// The stored torrent with this infohash (or whose truncated v2 hash it is,
    /// for a hybrid), with its files.
    pub fn get(&mut self, infohash: &InfoHash) -> Result<Option<Torrent>> {
        let ih: &[u8] = infohash;
        let Some(row) = self
            .client
            .query_opt(
                &format!(
                    "SELECT {}, t.id FROM torrents t WHERE t.id = magnetar_torrent_id($1)",
                    search::RECORD_COLUMNS
                ),
                &[&ih],
            )
            .map_err(PgError::db("reading a torrent"))?
        else {
            return Ok(None);
        };
        let Some(record) = search::record_of(&row) else {
            return Err(PgError::InvalidInput(format!(
                "the stored torrent {} has a value out of range",
                magnetar_storage::to_hex(infohash)
            )));
        };
        let id: i64 = row.get(17);
        let mut files = Vec::new();
        for r in self
            .client
            .query(
                "SELECT coalesce(path_raw, convert_to(path, 'UTF8')), size FROM files \
                 WHERE torrent_id = $1 ORDER BY idx",
                &[&id],
            )
            .map_err(PgError::db("reading files"))?
        {
            let path = String::from_utf8(r.get(0)).map_err(|_| {
                PgError::InvalidInput(format!(
                    "a file path of {} is not UTF-8",
                    magnetar_storage::to_hex(infohash)
                ))
            })?;
            files.push(FileEntry {
                path,
                size: u64::try_from(r.get::<_, i64>(1)).unwrap_or(0),
            });
        }
        Ok(Some(Torrent { record, files }))
    }

    /// The raw info dict of a stored torrent, if kept.
    pub fn info(&mut self, infohash: &InfoHash) -> Result<Option<Vec<u8>>> {
        let ih: &[u8] = infohash;
        Ok(self
            .client
            .query_opt(
                "SELECT i.dict FROM info i WHERE i.torrent_id = magnetar_torrent_id($1)",
                &[&ih],
            )
            .map_err(PgError::db("reading an info dict"))?
            .map(|r| r.get(0)))
    }

    /// The raw info dict, when kept (the LMDB store's name for [`PgStore::info`]).
    pub fn info_dict(&mut self, infohash: &InfoHash) -> Result<Option<Vec<u8>>> {
        self.info(infohash)
    }

    /// The stored torrent without its files (found by its infohash, or by the
    /// truncated v2 hash of a hybrid), or None when unknown or unreadable.
    pub fn record(&mut self, infohash: &InfoHash) -> Result<Option<TorrentRecord>> {
        let ih: &[u8] = infohash;
        Ok(self
            .client
            .query_opt(
                &format!(
                    "SELECT {} FROM torrents t WHERE t.id = magnetar_torrent_id($1)",
                    search::RECORD_COLUMNS
                ),
                &[&ih],
            )
            .map_err(PgError::db("reading a torrent"))?
            .and_then(|r| search::record_of(&r)))
    }

    /// Whether the infohash is stored (the runtime's "already known?").
    pub fn contains(&mut self, infohash: &InfoHash) -> Result<bool> {
        let ih: &[u8] = infohash;
        Ok(self
            .client
            .query_one("SELECT magnetar_torrent_id($1) IS NOT NULL", &[&ih])
            .map_err(PgError::db("looking up a torrent"))?
            .get(0))
    }

    /// The `n` most recently discovered torrents, newest first (ties: the later
    /// doc id first, as LMDB's `by_time`); hidden torrents are never listed,
    /// unreadable records are skipped.
    pub fn recent(&mut self, n: usize) -> Result<Vec<TorrentRecord>> {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT {} FROM torrents t \
                     WHERE NOT EXISTS (SELECT 1 FROM hidden h WHERE h.infohash = t.infohash) \
                     ORDER BY t.discovered_at DESC, t.id DESC LIMIT $1",
                    search::RECORD_COLUMNS
                ),
                &[&n],
            )
            .map_err(PgError::db("listing by time"))?;
        Ok(rows.iter().filter_map(search::record_of).collect())
    }

    /// The stored infohashes starting with the hex prefix given as
    /// `bytes`/`nibbles` (see `magnetar_storage::TorrentRef::Prefix`), in order, at
    /// most `limit`; hybrids are also found by their truncated v2 hash.
    pub fn infohashes_with_prefix(
        &mut self,
        bytes: &[u8],
        nibbles: usize,
        limit: usize,
    ) -> Result<Vec<InfoHash>> {
        let whole = &bytes[..(nibbles / 2).min(bytes.len())];
        let half = (nibbles % 2 == 1).then(|| bytes.get(nibbles / 2).copied().unwrap_or(0) >> 4);
        // The range of 20-byte keys with this prefix: [lo, hi].
        let mut lo = [0u8; 20];
        let mut hi = [0xffu8; 20];
        lo[..whole.len()].copy_from_slice(whole);
        hi[..whole.len()].copy_from_slice(whole);
        if let Some(h) = half {
            if let Some(b) = lo.get_mut(whole.len()) {
                *b = h << 4;
            }
            if let Some(b) = hi.get_mut(whole.len()) {
                *b = h << 4 | 0x0f;
            }
        }
        let (lo, hi): (&[u8], &[u8]) = (&lo, &hi);
        let n = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client
            .query(
                "SELECT ih FROM (
                     (SELECT infohash AS ih FROM torrents
                      WHERE infohash BETWEEN $1 AND $2 ORDER BY infohash LIMIT $3)
                     UNION
                     (SELECT substring(v2 FROM 1 FOR 20) FROM torrents
                      WHERE v2 IS NOT NULL AND kind = 3
                        AND substring(v2 FROM 1 FOR 20) BETWEEN $1 AND $2
                      ORDER BY 1 LIMIT $3)) x
                 ORDER BY ih LIMIT $3",
                &[&lo, &hi, &n],
            )
            .map_err(PgError::db("scanning infohashes"))?;
        Ok(rows
            .iter()
            .filter_map(|r| <[u8; 20]>::try_from(r.get::<_, Vec<u8>>(0).as_slice()).ok())
            .collect())
    }

    /// How many torrents are stored (exact: `count(*)`).
    pub fn count(&mut self) -> Result<u64> {
        let n: i64 = self
            .client
            .query_one("SELECT count(*) FROM torrents", &[])
            .map_err(PgError::db("counting torrents"))?
            .get(0);
        Ok(n as u64)
    }

    /// The connection, for tests and tools that need plain SQL.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}
