//! The storage interface every store implements (issue 21): what the web server,
//! the CLI's read commands and the crawl's ingest glue call, whatever holds the
//! index.
//!
//! - [`ReadIndex`]: the reads (search, a torrent, its info dict and facets, the
//!   newest torrents, the totals and the dashboard's figures, exports). Shared as
//!   `Arc<dyn ReadIndex>` by the web server's handlers; `Send + Sync`.
//! - [`IndexSink`]: the crawl's write side (ops sent with backpressure or best
//!   effort, flush, close) plus the few lookups the ingest glue makes while it
//!   writes (is this infohash stored? tombstoned? the saved nodes to bootstrap
//!   from, the totals for `/metrics`). Owned as `Box<dyn IndexSink>`.
//!
//! Implemented here for the LMDB store ([`Store`], and [`LmdbSink`] = a `Store`
//! with its [`Writer`]): pure forwarding to their inherent methods. The PostgreSQL
//! store (`magnetar-storage-pg`) implements both in its own `backend` module.
//! A read a store cannot answer returns [`StoreError::Unsupported`] with what it
//! was (never a panic).
//!
//! Object-safe traits rather than generics: the web crate and the commands are
//! compiled once, and the store is chosen at run time (`--store PATH|URL`).

use std::io::Write;
use std::path::Path;

pub use crate::export::{write_json_line, write_torrent_file};
use crate::{
    ClientStats, ExportReport, FilterMark, FilterTotals, Hourly, InfoHash, NodeRecord, Op,
    SearchQuery, SearchResults, SessionYield, Stats, Store, StoreError, Torrent, TorrentRecord,
    Writer, WriterTotals,
};
use crate::{Facets, FileEntry};

type Result<T> = std::result::Result<T, StoreError>;

/// The facets the classifier gives a torrent of this name and files: what a store
/// that keeps none (yet) answers, identical to what the LMDB writer stores.
pub fn classify_torrent(name: &str, files: &[FileEntry]) -> Facets {
    crate::store::of_torrent(name, files)
}

/// Every read the web server and the CLI's read commands make.
pub trait ReadIndex: Send + Sync {
    /// `"lmdb"` or `"postgres"`, for logs and messages.
    fn kind(&self) -> &'static str;
    /// A search in the query language of [`crate::query`].
    fn query(&self, q: &SearchQuery) -> Result<SearchResults>;
    /// The stored torrent with its files.
    fn get(&self, infohash: &InfoHash) -> Result<Option<Torrent>>;
    /// The stored torrent without its files.
    fn record(&self, infohash: &InfoHash) -> Result<Option<TorrentRecord>>;
    /// The raw info dict, when kept.
    fn info_dict(&self, infohash: &InfoHash) -> Result<Option<Vec<u8>>>;
    /// The classifier's facets of a stored torrent.
    fn facets(&self, infohash: &InfoHash) -> Result<Option<Facets>>;
    /// The facets of several torrents, in order.
    fn facets_of(&self, infohashes: &[InfoHash]) -> Result<Vec<Option<Facets>>>;
    /// Stored infohashes starting with a hex prefix (see `TorrentRef::Prefix`).
    fn infohashes_with_prefix(
        &self,
        bytes: &[u8],
        nibbles: usize,
        limit: usize,
    ) -> Result<Vec<InfoHash>>;
    /// The `n` newest torrents, newest first.
    fn recent(&self, n: usize) -> Result<Vec<TorrentRecord>>;
    /// How many torrents are stored.
    fn count(&self) -> Result<u64>;
    /// The totals.
    fn stats(&self) -> Result<Stats>;
    /// Per-session yield.
    fn session_yields(&self, now: u64) -> Result<Vec<SessionYield>>;
    /// Failure reasons of the kept request records, most frequent first.
    fn failure_reasons(&self) -> Result<Vec<(String, u64)>>;
    /// (encryption, requests, successes) of the kept request records.
    fn encryption_outcomes(&self) -> Result<Vec<(String, u64, u64)>>;
    /// (transport, requests, successes) of the kept request records.
    fn transport_outcomes(&self) -> Result<Vec<(String, u64, u64)>>;
    /// The clients that answered most.
    fn top_clients(&self, limit: usize) -> Result<Vec<ClientStats>>;
    /// Torrents discovered per hour over the last `hours`.
    fn discoveries_per_hour(&self, now: u64, hours: u32) -> Result<Hourly>;
    /// Metadata requests per hour over the last `hours`.
    fn requests_per_hour(&self, now: u64, hours: u32) -> Result<Hourly>;
    /// Tombstones and hidden marks.
    fn filter_totals(&self) -> Result<FilterTotals>;
    /// (label, tombstoned, hidden) per rule label.
    fn filter_labels(&self, max_scan: u64) -> Result<Vec<(String, u64, u64)>>;
    /// JSON lines of every torrent discovered at or after `since`, oldest first
    /// (one [`write_json_line`] each).
    fn export_jsonl(&self, out: &mut dyn Write, since: Option<u64>) -> Result<ExportReport>;
    /// `<infohash>.torrent` files of every torrent with a kept info dict.
    fn export_torrent_files(&self, dir: &Path, since: Option<u64>) -> Result<ExportReport>;
}

/// Counters of a remote store's writer (buffer, outages): none for LMDB.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteTotals {
    /// Ops waiting in the writer's buffer.
    pub buffered: u64,
    /// Failed attempts to reach the database.
    pub retries: u64,
    /// Times the database became unreachable.
    pub outages: u64,
    /// The database is unreachable now.
    pub down: bool,
    /// "Known?" lookups answered from the local cache.
    pub cache_hits: u64,
}

/// The crawl's write side: what `Ingest` calls on its store and writer.
pub trait IndexSink: Send {
    /// `"lmdb"` or `"postgres"`.
    fn kind(&self) -> &'static str;
    /// Queues an op; blocks while the buffer is full (backpressure).
    fn send(&mut self, op: Op) -> Result<()>;
    /// Queues an op unless the buffer is full; then hands it back.
    fn try_send(&mut self, op: Op) -> Result<Option<Op>>;
    /// Returns once everything sent before is committed (a sequence number, or 0).
    fn flush(&mut self) -> Result<u64>;
    /// The writer's counters now.
    fn totals(&self) -> WriterTotals;
    /// A remote store's buffer and outage counters (`None` for LMDB).
    fn remote_totals(&self) -> Option<RemoteTotals> {
        None
    }
    /// Writes everything sent and stops the writer.
    fn close(self: Box<Self>) -> Result<WriterTotals>;
    /// The stored record of an infohash (the crawl's "known?").
    fn record(&self, infohash: &InfoHash) -> Result<Option<TorrentRecord>>;
    /// The tombstone of an infohash, if any.
    fn tombstone(&self, infohash: &InfoHash) -> Result<Option<FilterMark>>;
    /// Saved DHT nodes, best first.
    fn saved_nodes(&self, limit: usize) -> Result<Vec<NodeRecord>>;
    /// The store's totals (for `/metrics`).
    fn stats(&self) -> Result<Stats>;
}

impl ReadIndex for Store {
    fn kind(&self) -> &'static str {
        "lmdb"
    }
    fn query(&self, q: &SearchQuery) -> Result<SearchResults> {
        Store::query(self, q)
    }
    fn get(&self, infohash: &InfoHash) -> Result<Option<Torrent>> {
        Store::get(self, infohash)
    }
    fn record(&self, infohash: &InfoHash) -> Result<Option<TorrentRecord>> {
        Store::record(self, infohash)
    }
    fn info_dict(&self, infohash: &InfoHash) -> Result<Option<Vec<u8>>> {
        Store::info_dict(self, infohash)
    }
    fn facets(&self, infohash: &InfoHash) -> Result<Option<Facets>> {
        Store::facets(self, infohash)
    }
    fn facets_of(&self, infohashes: &[InfoHash]) -> Result<Vec<Option<Facets>>> {
        Store::facets_of(self, infohashes)
    }
    fn infohashes_with_prefix(
        &self,
        bytes: &[u8],
        nibbles: usize,
        limit: usize,
    ) -> Result<Vec<InfoHash>> {
        Store::infohashes_with_prefix(self, bytes, nibbles, limit)
    }
    fn recent(&self, n: usize) -> Result<Vec<TorrentRecord>> {
        Store::recent(self, n)
    }
    fn count(&self) -> Result<u64> {
        Store::count(self)
    }
    fn stats(&self) -> Result<Stats> {
        Store::stats(self)
    }
    fn session_yields(&self, now: u64) -> Result<Vec<SessionYield>> {
        Store::session_yields(self, now)
    }
    fn failure_reasons(&self) -> Result<Vec<(String, u64)>> {
        Store::failure_reasons(self)
    }
    fn encryption_outcomes(&self) -> Result<Vec<(String, u64, u64)>> {
        Store::encryption_outcomes(self)
    }
    fn transport_outcomes(&self) -> Result<Vec<(String, u64, u64)>> {
        Store::transport_outcomes(self)
    }
    fn top_clients(&self, limit: usize) -> Result<Vec<ClientStats>> {
        Store::top_clients(self, limit)
    }
    fn discoveries_per_hour(&self, now: u64, hours: u32) -> Result<Hourly> {
        Store::discoveries_per_hour(self, now, hours)
    }
    fn requests_per_hour(&self, now: u64, hours: u32) -> Result<Hourly> {
        Store::requests_per_hour(self, now, hours)
    }
    fn filter_totals(&self) -> Result<FilterTotals> {
        Store::filter_totals(self)
    }
    fn filter_labels(&self, max_scan: u64) -> Result<Vec<(String, u64, u64)>> {
        Store::filter_labels(self, max_scan)
    }
    fn export_jsonl(&self, out: &mut dyn Write, since: Option<u64>) -> Result<ExportReport> {
        Store::export_jsonl(self, out, since)
    }
    fn export_torrent_files(&self, dir: &Path, since: Option<u64>) -> Result<ExportReport> {
        Store::export_torrent_files(self, dir, since)
    }
}

/// A `Store` wherever a shared [`ReadIndex`] is taken.
impl From<Store> for std::sync::Arc<dyn ReadIndex> {
    fn from(s: Store) -> Self {
        std::sync::Arc::new(s)
    }
}

/// The LMDB store and its writer as an [`IndexSink`].
pub struct LmdbSink {
    pub store: Store,
    pub writer: Writer,
}

impl IndexSink for LmdbSink {
    fn kind(&self) -> &'static str {
        "lmdb"
    }
    fn send(&mut self, op: Op) -> Result<()> {
        self.writer.send(op)
    }
    fn try_send(&mut self, op: Op) -> Result<Option<Op>> {
        self.writer.try_send(op)
    }
    fn flush(&mut self) -> Result<u64> {
        self.writer.flush()
    }
    fn totals(&self) -> WriterTotals {
        self.writer.totals()
    }
    fn close(self: Box<Self>) -> Result<WriterTotals> {
        self.writer.close()
    }
    fn record(&self, infohash: &InfoHash) -> Result<Option<TorrentRecord>> {
        self.store.record(infohash)
    }
    fn tombstone(&self, infohash: &InfoHash) -> Result<Option<FilterMark>> {
        self.store.tombstone(infohash)
    }
    fn saved_nodes(&self, limit: usize) -> Result<Vec<NodeRecord>> {
        self.store.saved_nodes(limit)
    }
    fn stats(&self) -> Result<Stats> {
        self.store.stats()
    }
}
