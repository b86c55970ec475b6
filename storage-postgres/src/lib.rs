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
//!
//! Schema 4 adds `torrents.name_raw`, `torrents.source_raw` and `files.path_raw`
//! (exact bytes of a text holding NUL, else NULL) and replaces the foreign keys of
//! `files` and `info` by an `AFTER DELETE` trigger on `torrents` (deleting torrents
//! deletes their files and info dicts, without a check per inserted row).
//!
//! Indexes: GIN on `search`; GIN trigram on `magnetar_fold(name)` (`unaccent` +
//! `lower`); `v2`'s first 20 bytes; `(discovered_at, id)`, `(total_size, id)`,
//! `(seeders, id)` for the orders. See [`migrate`] for why `search` is written by
//! the writer from the LMDB tokenizer rather than by `to_tsvector`.
//!
//! # Writing
//! [`PgStore::apply_batch`] takes the LMDB writer's [`Op`]s: see [`write`](crate::write)
//! (COPY into staging tables, one idempotent upsert, retried on deadlock). Peer,
//! node, session and request records are counted and not kept yet. PostgreSQL text
//! cannot hold NUL: a name, source or path holding NUL is stored with each NUL as
//! U+FFFD in its text column and exactly in its `*_raw` bytea column (schema 4),
//! which readers prefer, so nothing is lost.
//!
//! # Searching
//! [`PgStore::query`] takes the LMDB store's [`SearchQuery`] and returns its
//! [`SearchResults`]; see [`search`](crate::search) for how, and for the intentional
//! differences.

pub mod copy;
mod error;
pub mod migrate;
pub mod search;
#[doc(hidden)]
pub mod testing;
mod vector;
pub mod write;
pub mod writer;

pub use error::{PgError, Result};
pub use migrate::{migrate, SCHEMA_VERSION};
pub use write::BatchReport;
pub use writer::{PgWriter, PgWriterConfig, PgWriterTotals};

use magnetar_storage::{FileEntry, InfoHash, Op, SearchQuery, SearchResults, Torrent};
use postgres::{Client, NoTls};

/// How a [`PgStore`] writes.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Keep the raw info dicts (as the LMDB store's `keep_info`; default true).
    pub keep_info: bool,
}

impl Default for PgOptions {
    fn default() -> PgOptions {
        PgOptions { keep_info: true }
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

    /// Applies one batch of writes in one transaction (see [`write`](crate::write)).
    pub fn apply_batch(&mut self, ops: &[Op]) -> Result<BatchReport> {
        write::apply_batch(&mut self.client, ops, self.opts.keep_info)
    }

    /// Runs a search (see [`search`](crate::search)).
    pub fn query(&mut self, q: &SearchQuery) -> Result<SearchResults> {
        search::query(&mut self.client, q)
    }

    /// The stored torrent with this infohash, with its files.
    pub fn get(&mut self, infohash: &InfoHash) -> Result<Option<Torrent>> {
        let ih: &[u8] = infohash;
        let Some(row) = self
            .client
            .query_opt(
                &format!(
                    "SELECT {}, t.id FROM torrents t WHERE t.infohash = $1",
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
                "SELECT i.dict FROM info i JOIN torrents t ON t.id = i.torrent_id \
                 WHERE t.infohash = $1",
                &[&ih],
            )
            .map_err(PgError::db("reading an info dict"))?
            .map(|r| r.get(0)))
    }

    /// How many torrents are stored.
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
