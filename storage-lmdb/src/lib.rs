//! LMDB storage for magnetar: a durable, searchable torrent database (heed 0.23).
//!
//! # Use
//! ```no_run
//! use magnetar_storage::{Store, StoreOptions, WriterConfig, Op, Order};
//! # fn main() -> Result<(), magnetar_storage::StoreError> {
//! let store = Store::open(StoreOptions::at_default_location()?)?;
//! let writer = store.writer(WriterConfig::default())?;
//! // writer.send(Op::Torrent(Box::new(input)))?;   // blocks when the channel is full
//! writer.flush()?;                                  // everything sent is now committed
//! let page = store.search("ubuntu 22.04 desk", 20, 0, Order::Relevance)?;
//! writer.close()?;
//! # let _ = page; Ok(()) }
//! ```
//!
//! # Environment
//! One LMDB environment (a directory holding `data.mdb` and `lock.mdb`), by default
//! [`default_data_dir`]. The map starts at 1 GiB and doubles on `MDB_MAP_FULL`; the
//! batch being written is then run again from its start, so it is never lost. The
//! schema version lives in `meta`; another version is refused with a message saying
//! what to do ([`StoreError::SchemaVersion`]). Commits are durable by default; see
//! [`Durability`] for the fast modes and exactly what they can lose.
//!
//! # Databases and record layouts
//! Integers are little-endian in values and big-endian in keys (so keys sort
//! numerically). `var` is an unsigned LEB128 varint; `str` is `var` length + UTF-8.
//! Every value whose layout may change starts with a layout byte (`1`, or `2` for
//! `torrents`, `3` for `torrents` written since schema 4). Schema version 4: every
//! torrent has a doc id (u32, given in discovery order, below 2^30), and the torrent
//! tables are keyed by it. Schema version 5 changed only `terms` (the tokenizer folds
//! accents and indexes space-less scripts as bigrams; postings carry a path flag).
//! Schema version 6 adds `facets` and `facet_terms` (the classifier's kind, category
//! and attributes of every torrent) and `columns` (search's fixed-width fields by doc
//! id); a schema 2 to 5 database gets every stored torrent classified and `columns`
//! filled on open, in the upgrade's one write transaction. Schema version 7 adds
//! `by_seeders` (the torrents with known seeders in seeders order), filled on open
//! from `columns` (from 2 to 5, by the `columns` fill).
//! Schemas 2 to 4 are migrated on open: schema 2 lacks `ids_delta`, 2 and 3 lack
//! `ids_v2` (created empty), and their `torrents` values are layout 2, which is still
//! read (a v1 torrent whose counts have no measurement time); `terms` is rebuilt from
//! the records in one write transaction that also raises the version, so an
//! interrupted upgrade leaves the old database intact and is started again by the
//! next open (its duration at scale was not measured: it reads every record and file
//! list and writes the whole index once).
//!
//! | db | key | value |
//! |---|---|---|
//! | `ids` | infohash (20) | docid u32 BE |
//! | `ids_delta` | infohash (20) | docid u32 BE: the entries of recent batches, merged into `ids` in bulk; an infohash is in exactly one of the two |
//! | `ids_v2` | truncated v2 hash (20) of a hybrid | docid u32 BE (its v1 hash is in `ids`/`ids_delta`) |
//! | `torrents` | docid u32 BE | `3`, flags u8 (private, has_info, has_source, has_v2, no_v1), sources u8, infohash (20: v1, or a v2-only torrent's truncated v2), total_size u64, piece_length u32, piece_count u32, file_count u32, discovered_at u64, last_seen_at u64, seeders u32, leechers u32 (`u32::MAX` = unknown), scraped_at u64 (`u64::MAX` = unknown), [v2 hash (32) when has_v2], name str, [source str] — 75 bytes (+ 32) + name; layout `2` (schemas 2 and 3) lacks scraped_at and the v2 hash |
//! | `files` | docid u32 BE | `1`, count var, then per file: size var, shared-prefix var, suffix str (front coding: each path stores only what differs from the previous path) |
//! | `info` | docid u32 BE | raw bencoded info dict (only when `keep_info`) |
//! | `terms` | term (UTF-8, ≤ 64 bytes) | DUP_SORT; each duplicate is a posting block of ≤ 480 bytes: first docid u32 BE (blocks sort by docid), last docid u32, then per posting a var `(docid − previous docid) << 2 \| flags` (1: in the name, 2: in a file path); schemas 2–4 had `<< 1 \| in_name` and the old tokenizer |
//! | `by_time` | discovered_at u64 BE ‖ docid u32 BE | empty |
//! | `by_size` | size bucket u16 BE (sizes < 16 exact, then 8 classes per power of two) ‖ docid u32 BE | empty |
//! | `columns` | chunk u32 BE (docid / 504) | presence bitmap of 63 bytes (bit i % 8 of byte i / 8: docid chunk·504 + i has an entry), then 504 entries of total_size u64, discovered_at u64, file_count u32, seeders u32 (`u32::MAX` unknown), LE: 12,159 bytes (three overflow pages), kept in step with `torrents` by every write |
//! | `by_seeders` | epoch u16 BE (docid >> 16) ‖ seeders u32 BE ‖ docid u32 BE, one entry per torrent with known seeders, moved by every write that changes them (schema 7) | empty |
//! | `peers` | family u8 (4/6), ip, port u16 BE | `1`, status u8, ut_metadata u8 (0 unknown, 1 no, 2 yes), attempts u32, successes u32, failures u32, rtt_ms u32, last_seen u64, client str, last_error str |
//! | `nodes` | node id (20) | `1`, status u8, address (as the peers key), rtt_ms u32, last_seen u64, queries 6×u32, responses 6×u32 |
//! | `sessions` | id u64 BE | `1`, started_at u64, ended_at u64 (`u64::MAX` = running), 6 counters u64, peak_rss u64, cpu_ms u64 |
//! | `requests` | request id u64 BE (increasing) | `1`, infohash, peer address, started_at_ms u64, duration_ms u32, outcome u8, pieces u32, reason str, client str |
//! | `meta` | name | schema_version u32; counters u64: torrents, with_info, requests, next_docid, next_request_id, max_discovered_at, time_disorder |
//! | `tombstones` | infohash (20) | `1`, at u64 LE, rule label (UTF-8, ≤ 200 bytes, the rest of the value): never stored again (content filters, `delete`) |
//! | `hidden` | infohash (20) | as `tombstones`: stored without postings, skipped by `recent` and exports (the mark may precede its torrent) |
//! | `facets` | docid u32 BE | `1`, kind code u8, Torznab category u16, presence mask u16, languages u32, then the present attributes (year, seasons, episodes, date, resolution, source, codec, audio codes, title str); see `store/facets.rs` (schema 6) |
//! | `facet_terms` | tag u8 ‖ value BE (`k` kind, `c` category, `y` year, `r` resolution, `o` source, `v` codec, `a` audio, `s` season, `e` episode, `l` language bit) | DUP_SORT posting blocks as in `terms` (flags 0) (schema 6) |
//!
//! Why doc ids: infohashes are random, so a B-tree keyed by them takes every batch's
//! inserts at random leaves, and LMDB copies each touched page on write (a batch of
//! 10,000 torrents touched up to 10,000 leaves of each of `torrents` and `files`). New doc ids are
//! larger than every stored one, so `torrents`, `files`, `info` and (for torrents
//! discovered in time order) `by_time` are appended with `MDB_APPEND` and a batch
//! dirties only their last pages; the random part is confined to `ids` (24-byte
//! entries); `by_size` is keyed by a coarse size class first, so it is appended per
//! class (the walk for a size order reads whole classes and orders their matches
//! exactly). On 300,000 synthetic torrents doc id keys alone more than doubled
//! inserts per CPU-second (31 k → 70–77 k) and cut the file from 1,327 to 725 bytes
//! per torrent (see `README.md`). The idempotency check is one `ids_delta` and one
//! `ids` lookup per distinct infohash of a batch, in key order.
//!
//! Why `ids_delta`: the random part still cost half of a commit at scale. At
//! 1,000,000 torrents `ids` has ~12,000 leaf pages and 10,000 random inserts dirty
//! about half of them: filling 1 M, commits wrote 3,524 B per torrent, of which
//! ~1,800 B were `ids` pages (1,700 B with no `ids` writes at all). New entries now go to
//! `ids_delta`, which stays small (its bound is `max(50,000, sqrt(20,000 · entries
//! of ids))`, 141,000 at 1 M, about the size that minimises pages dirtied by the
//! batches plus the merges), and is merged into `ids` in one sorted pass, in the
//! transaction of the batch that crosses the bound: every `ids` page is then copied
//! once per ~14 batches instead of every batch. Nothing is held outside the
//! database, so durability is unchanged. Measured: 2,177 B written per torrent (of
//! which ~480 B for `ids` and `ids_delta`); the largest part left is `terms`
//! (~1,200 B per torrent: each batch extends the last block of thousands of
//! distinct terms scattered over the tree).
//!
//! `terms` maps a term to *blocks* of 4-byte document ids rather than to one 20-byte
//! infohash per duplicate. Measured on 100,000 synthetic torrents, one infohash (or
//! one doc id) per duplicate gave 12,000 inserts/s and a 12 ms p99 one-word search
//! (LMDB walks duplicates one cursor step at a time); blocks of delta-coded doc ids
//! are ~1–2 bytes per posting, decode at memory speed, and a batch touches each term
//! once (its last block is extended, then new blocks follow). Doc ids are given in discovery order (within a batch too),
//! so while `time_disorder` is 0 (no torrent was ever added with an older
//! discovered_at than one already stored, as an import may do) doc id order *is* time
//! order and [`Order::Newest`] needs no lookup per match; otherwise, and for the size
//! orders, matches are looked up in `torrents` (fixed offsets, no full decode) when
//! few, or `by_time`/`by_size` is walked from the wanted end when many.
//!
//! # Writing a batch
//! One write transaction: existence check in infohash order; known torrents are
//! read, merged (last_seen_at, sources, seeders/leechers, a late info dict) and
//! rewritten in doc id order; new torrents get doc ids in discovery order and are
//! appended. Their words are tokenized through a per-batch dictionary (each spelling
//! normalized once per batch); each term's posting list is then extended once per
//! batch. [`Store::apply_batch`] tokenizes on a second thread while it writes the
//! records (batches of at least 256 torrents). The [`Writer`] does better: its
//! receiving thread cuts batches and prepares each ([`PreparedBatch`]: sorting,
//! tokenizing, the batch dictionary in byte order) while a second thread writes and
//! commits the previous one ([`Store::apply_prepared`]), so the CPU work of batch
//! N + 1 overlaps the page writes and fsync of batch N.
//!
//! # Search
//! Query and documents go through the same tokenizer ([`tokenize`]: accents and case
//! folded, CJK and other space-less scripts as character bigrams). [`Store::query`]
//! takes a [`SearchQuery`]: text in the query language of [`query`] (words, the last
//! one a prefix, `"phrases"`, `-exclusions`, `name:`/`path:` scopes), a sort
//! ([`SortBy`]: relevance, discovery time, size, seeders, files; either direction),
//! a page, size and discovery-time ranges, and a category and attribute filter
//! ([`FacetFilter`], answered from the classifier's facets stored with every torrent
//! since schema 6); it returns the page and the total.
//! [`Store::search`] is its classic form. Every word must occur (as a whole word, in
//! the scope asked) in the name or a file path; a prefix matches every term it
//! starts (at most [`MAX_PREFIX_TERMS`] terms). Posting lists are intersected
//! smallest first with galloping search; a prefix expanding to several terms is
//! merged in a bitmap over doc ids; exclusions are subtracted; a discovery-time
//! range is a doc id range while doc ids are in time order. Phrases are checked on
//! the candidates' names (read in place) and file paths (there are no positions in
//! the index; a file list is read only when every word of the phrase has the path
//! flag for that torrent); seeders sorts walk `by_seeders` from the wanted end
//! (its epochs merged) while the matches are many, keeping those that match; one
//! unscoped word (or prefix) with no filter sorted by seeders or discovery time
//! walks that order (`by_seeders`, its own postings), looking each candidate up in
//! the word's posting blocks without decoding them all; size filters, the seeders and files sorts, exact size
//! and time orders, and time filters on a store out of time order read `columns`
//! (a cursor walk over the chunks the matches span, or one lookup per chunk when
//! they are sparse) instead of looking each candidate up in `torrents`; a phrase
//! with more than [`PHRASE_CHECK_BUDGET`] candidates is checked in the page's
//! order in every sort. Relevance = number of query
//! terms found in the name (a name hit beats a file-path-only hit), ties newest
//! first.

pub mod backend;
mod codec;
mod error;
mod export;
pub mod fmt;
mod lock;
#[cfg(feature = "magnetico")]
mod magnetico;
mod prefix;
pub mod query;
mod store;
#[doc(hidden)]
pub mod synth;
mod tokenize;
mod types;
mod writer;

pub use error::{parse_infohash_hex, StoreError};
pub use export::{magnet_of, magnet_uri, ExportReport, ImportReport, JsonFile, JsonTorrent};
pub use lock::{DbLock, LockError, LockHolder, LOCK_FILE};
/// The classifier whose facets the store keeps (`magnetar_core::classify`).
pub use magnetar_core::classify;
pub use prefix::{parse_torrent_ref, TorrentRef, MIN_PREFIX_HEX};
pub use query::{MAX_QUERY_BYTES, MAX_QUERY_TERMS};
pub use store::{
    category_name, Facets, ReclassifyReport, CATEGORY_GROUPS, LANGUAGE_NAMES, MAX_RANGE_KEYS,
    TORZNAB_CATEGORIES,
};
pub use store::{
    compact, default_data_dir, wait_closed, BatchReport, ClientStats, Durability, FacetFilter,
    FilterTotals, Hourly, IntegrityReport, Order, PreparedBatch, PruneReport, RetentionPolicy,
    SearchQuery, SearchResults, SessionYield, SortBy, Stats, Store, StoreOptions, TorrentRemoval,
    MAX_HISTORY_SCAN, MAX_PREFIX_TERMS, MAX_SEARCH_LIMIT, MAX_SEARCH_OFFSET, PHRASE_CHECK_BUDGET,
    SCHEMA_VERSION,
};
pub use tokenize::{
    tokenize, torrent_terms, MAX_TERMS_PER_TORRENT, MAX_TERM_BYTES, MAX_TOKENS_PER_TORRENT,
    MAX_TOKENS_PER_WORD, MAX_WORDS_PER_TORRENT,
};
pub use types::*;
pub use writer::{CommitCallback, CommitInfo, Writer, WriterConfig, WriterTotals};

/// Lowercase hex of bytes (e.g. an infohash).
pub fn to_hex(bytes: &[u8]) -> String {
    error::hex(bytes)
}
