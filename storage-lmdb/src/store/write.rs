//! Batch writes: [`Store::apply_batch`] and [`Store::apply_prepared`] apply a batch
//! of [`Op`]s in one write transaction. [`apply_batch_txn`] runs it as named steps,
//! in this order (the order of the writes is part of what makes them cheap):
//!
//! 0. `filter::apply_marks`: the batch's `Op::Tombstone`s and `Op::Hide`s (a
//!    tombstoned new torrent is then not stored, a hidden one gets no postings).
//! 1. [`BatchTxn::look_up_groups`]: one `ids_delta`/`ids` lookup per distinct
//!    infohash, in key order.
//! 2. [`BatchTxn::update_known`]: merge every sighting into the stored torrents
//!    (doc id order).
//! 3. [`BatchTxn::append_fresh`]: new torrents get doc ids in discovery order and are
//!    appended to `torrents`, `files`, `info` and `by_time`.
//! 4. [`fresh_postings`], then the randomly keyed tables in key order:
//!    [`BatchTxn::write_ids`] (`ids_delta`, merged into `ids` past its bound),
//!    [`BatchTxn::write_v2_ids`] (`ids_v2`: hybrids' truncated v2 hashes),
//!    [`BatchTxn::write_by_size`] and [`write_postings`] (`terms`).
//! 5. [`BatchTxn::apply_sightings`] (`Op::Seen`, `Op::Scrape`), [`BatchTxn::write_latest`] (peers,
//!    nodes, sessions) and [`BatchTxn::append_requests`] (with trimming).
//! 6. `columns`: the search fields of every record written (one write per chunk).
//! 7. The `meta` counters.
//!
//! On `MDB_MAP_FULL` the transaction is aborted and run again from step 1 (see
//! `Store::write`), so a step keeps no state outside the transaction except the
//! batch's tokens, which are made once.

use std::ops::Bound;

use heed::{PutFlags, RwTxn};

use super::prepare::{group_count, sorted_torrents, torrent_order, PreparedBatch, Tokens};
use super::{
    delete_first, docid_of, lmdb, merge_ids_delta, Db, Dbs, MetaCounters, Result, Store,
    StoreOptions,
};
use crate::codec;
use crate::error::StoreError;
use crate::types::*;

/// Batches with at least this many new torrents tokenize them on a second thread.
const PARALLEL_INDEX_MIN: usize = 256;

/// What one applied batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Torrents stored for the first time.
    pub torrents_new: u64,
    /// `Op::Torrent`s merged into a stored torrent, or into a new one of the same
    /// batch (a repeat of its infohash).
    pub torrents_updated: u64,
    /// `Op::Seen`s merged into a stored torrent.
    pub seen_updated: u64,
    /// `Op::Seen` or `Op::Scrape` for an infohash the store does not know.
    pub seen_unknown: u64,
    /// `Op::Scrape`s merged into a stored torrent.
    pub scrapes_updated: u64,
    /// Existing records that could not be decoded and were left untouched.
    pub skipped_corrupt: u64,
    /// Peer records written.
    pub peers: u64,
    /// DHT node records written.
    pub nodes: u64,
    /// Session records written.
    pub sessions: u64,
    /// Metadata request records appended.
    pub requests: u64,
    /// New torrents not stored because their infohash has a tombstone.
    pub tombstoned: u64,
    /// How many times the map was grown while writing this batch.
    pub map_grown: u32,
}

impl Store {
    /// Applies one batch of writes in a single transaction and commits it.
    ///
    /// Keys are sorted before writing (sorted inserts are much faster in LMDB). This
    /// is what the writer thread calls; importers call it directly.
    pub fn apply_batch(&self, ops: &[Op]) -> Result<BatchReport> {
        let settings = WriteSettings::of(&self.inner.opts);
        let order = torrent_order(ops);
        let groups = group_count(ops, &order);
        let (mut report, grown) = if groups >= PARALLEL_INDEX_MIN {
            // Tokenizing runs on a second thread while this one writes the records.
            std::thread::scope(|s| {
                let order = &order;
                let classify = settings.classify;
                let mut handle =
                    Some(s.spawn(move || Tokens::of_classified(ops, order, false, classify)));
                let mut make = || match handle.take().map(|h| h.join()) {
                    Some(Ok(t)) => Ok(t),
                    _ => Err(StoreError::InvalidInput(
                        "internal: the indexing thread panicked".into(),
                    )),
                };
                let mut batch = BatchCtx {
                    ops,
                    order,
                    tokens: None,
                    make_tokens: &mut make,
                    settings,
                };
                self.write(|txn, dbs| apply_batch_txn(txn, dbs, &mut batch))
            })?
        } else {
            let mut batch = BatchCtx {
                ops,
                order: &order,
                tokens: Some(Tokens::of_classified(ops, &order, true, settings.classify)),
                make_tokens: &mut Tokens::of_nothing,
                settings,
            };
            self.write(|txn, dbs| apply_batch_txn(txn, dbs, &mut batch))?
        };
        report.map_grown = grown;
        Ok(report)
    }

    /// Like [`Store::apply_batch`] for a batch whose CPU work (sorting, tokenizing)
    /// was done by [`PreparedBatch::new`], possibly on another thread while the
    /// previous batch was committing. Returns the batch's ops (e.g. to reuse the Vec).
    pub fn apply_prepared(&self, batch: PreparedBatch) -> Result<(BatchReport, Vec<Op>)> {
        let PreparedBatch { ops, order, tokens } = batch;
        let mut batch = BatchCtx {
            ops: &ops,
            order: &order,
            tokens: Some(tokens),
            make_tokens: &mut Tokens::of_nothing,
            settings: WriteSettings::of(&self.inner.opts),
        };
        let (mut report, grown) = self.write(|txn, dbs| apply_batch_txn(txn, dbs, &mut batch))?;
        report.map_grown = grown;
        Ok((report, ops))
    }
}

/// The store settings a batch's writes depend on.
#[derive(Clone, Copy)]
struct WriteSettings {
    /// [`StoreOptions::keep_info`].
    keep_info: bool,
    /// [`StoreOptions::max_requests`].
    max_requests: u64,
    /// [`StoreOptions::ids_delta_max`].
    ids_delta_max: Option<u64>,
    /// [`StoreOptions::classify`].
    classify: bool,
}

impl WriteSettings {
    fn of(opts: &StoreOptions) -> WriteSettings {
        WriteSettings {
            keep_info: opts.keep_info,
            max_requests: opts.max_requests,
            ids_delta_max: opts.ids_delta_max,
            classify: opts.classify,
        }
    }
}

/// One batch as its transaction sees it. It outlives the retries after the map grew,
/// so the tokens are made once.
struct BatchCtx<'b> {
    ops: &'b [Op],
    /// The torrent ops' write order ([`torrent_order`]).
    order: &'b [u32],
    /// The batch's tokens when ready (prepared, or made before the transaction).
    tokens: Option<Tokens>,
    /// Makes the tokens the first time they are needed, when `tokens` is `None` (the
    /// result of `apply_batch`'s second thread).
    make_tokens: &'b mut dyn FnMut() -> Result<Tokens>,
    settings: WriteSettings,
}

/// The torrents of one infohash in a batch.
#[derive(Clone, Copy)]
struct Group {
    /// Its torrents are `ts[start..end]` of the batch's sorted torrents.
    start: usize,
    end: usize,
    /// The doc id it is stored under; `None` when new.
    docid: Option<u32>,
    /// Its group number among the batch's distinct infohashes (its index in `Tokens`).
    index: usize,
}

/// A new torrent of the batch (a [`Group`] without a doc id). The derived order, by
/// (discovered_at, infohash), is the order in which doc ids are given.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Fresh {
    discovered_at: u64,
    infohash: InfoHash,
    start: usize,
    end: usize,
    group: usize,
}

/// What [`BatchTxn::append_fresh`] leaves for the randomly keyed tables.
struct Appended {
    /// (infohash, doc id) of every new torrent, for `ids_delta`.
    ids: Vec<(InfoHash, u32)>,
    /// The `by_size` key of every new torrent.
    by_size: Vec<[u8; 6]>,
}

/// The state the steps of one batch's transaction share: the transaction, the
/// tables, the `meta` counters being updated and the report being filled.
struct BatchTxn<'t, 'e> {
    txn: &'t mut RwTxn<'e>,
    dbs: &'t Dbs,
    meta: MetaCounters,
    rep: BatchReport,
    /// The search fields of every record written, for `columns` (see `columns::write`).
    cols: Vec<(u32, codec::SortFields)>,
}

/// Writes one batch in `txn` (see the module doc for its steps) and returns what it
/// did. Nothing is committed here; on error the caller aborts the transaction.
fn apply_batch_txn(txn: &mut RwTxn, dbs: &Dbs, batch: &mut BatchCtx) -> Result<BatchReport> {
    let settings = batch.settings;
    let meta = MetaCounters::load(txn, &dbs.meta)?;
    let mut w = BatchTxn {
        txn,
        dbs,
        meta,
        rep: BatchReport::default(),
        cols: Vec::new(),
    };
    // Filter marks first: they decide what this batch's torrents become.
    super::filter::apply_marks(w.txn, dbs, batch.ops, &mut w.meta)?;

    // Torrents, grouped by infohash (stable: a group keeps its discovery order after
    // sorting by time).
    let ts = sorted_torrents(batch.ops, batch.order);
    let groups = w.look_up_groups(&ts)?;
    // Truncated v2 hashes of hybrids → their doc ids, for `ids_v2`.
    let mut v2_ids: Vec<(InfoHash, u32)> = Vec::new();
    w.update_known(&ts, &groups, settings.keep_info, &mut v2_ids)?;
    let mut fresh = fresh_torrents(&ts, &groups);
    w.rep.tombstoned += super::filter::retain_untombstoned(w.txn, dbs, &mut fresh, |f| f.infohash)?;
    let hidden = super::filter::hidden_flags(w.txn, dbs, &fresh, |f| f.infohash)?;
    if w.meta.next_docid + fresh.len() as u64 > u64::from(codec::MAX_DOCID) + 1 {
        return Err(StoreError::InvalidInput("more than 2^30 torrents".into()));
    }
    let base = w.meta.next_docid as u32;
    // File lists are encoded by `Tokens` when it is ready (a prepared batch), else
    // while appending.
    let appended = w.append_fresh(
        &ts,
        &fresh,
        batch.tokens.as_ref(),
        settings.keep_info,
        &mut v2_ids,
    )?;
    if batch.tokens.is_none() {
        batch.tokens = Some((batch.make_tokens)()?);
    }
    let Some(tok) = batch.tokens.as_ref() else {
        return Err(StoreError::InvalidInput("internal: no tokens".into()));
    };
    let postings = fresh_postings(tok, &fresh, base, &hidden);

    // Randomly keyed tables last, each in key order.
    w.write_ids(appended.ids, settings.ids_delta_max)?;
    w.write_v2_ids(v2_ids)?;
    w.write_by_size(appended.by_size)?;
    write_postings(
        w.txn,
        dbs,
        tok.terms
            .iter()
            .zip(&postings)
            .map(|(t, p)| (t.as_str(), p.as_slice())),
    )?;
    // The new torrents' facets (made with the tokens, when classification is on).
    let facets = fresh.iter().enumerate();
    let facets = facets.filter_map(|(k, f)| Some((base + k as u32, tok.facets.get(f.group)?)));
    super::facets::write_new(w.txn, dbs, facets)?;

    w.apply_sightings(batch.ops)?;
    w.write_latest(batch.ops)?;
    w.append_requests(batch.ops, settings.max_requests)?;
    super::columns::write(w.txn, dbs, std::mem::take(&mut w.cols))?;
    w.meta.store(w.txn, &dbs.meta)?;
    Ok(w.rep)
}

impl BatchTxn<'_, '_> {
    /// Splits the sorted torrents `ts` into groups of one infohash and looks each up
    /// (one `ids_delta`/`ids` lookup per group, in key order). A group whose ids
    /// entry is corrupt is left out and counted as skipped.
    fn look_up_groups(&mut self, ts: &[&TorrentInput]) -> Result<Vec<Group>> {
        let mut groups = Vec::new();
        let mut i = 0;
        let mut g = 0;
        while i < ts.len() {
            let mut j = i + 1;
            while j < ts.len() && ts[j].infohash == ts[i].infohash {
                j += 1;
            }
            g += 1;
            let docid = match docid_of(self.txn, self.dbs, &ts[i].infohash) {
                Ok(id) => id,
                Err(StoreError::Corrupt { .. }) => {
                    self.rep.skipped_corrupt += (j - i) as u64;
                    i = j;
                    continue;
                }
                Err(e) => return Err(e),
            };
            groups.push(Group {
                start: i,
                end: j,
                docid,
                index: g - 1,
            });
            i = j;
        }
        Ok(groups)
    }

    /// Known torrents: reads each, merges every sighting of the batch (and a late
    /// info dict) and writes it back, in doc id order.
    fn update_known(
        &mut self,
        ts: &[&TorrentInput],
        groups: &[Group],
        keep_info: bool,
        v2_ids: &mut Vec<(InfoHash, u32)>,
    ) -> Result<()> {
        let dbs = self.dbs;
        let mut known: Vec<(u32, usize, usize)> = groups
            .iter()
            .filter_map(|g| g.docid.map(|d| (d, g.start, g.end)))
            .collect();
        known.sort_unstable();
        for (docid, a, b) in known {
            let dk = codec::docid_key(docid);
            let Some(v) = dbs
                .torrents
                .get(self.txn, &dk)
                .map_err(lmdb("reading a torrent"))?
            else {
                self.rep.skipped_corrupt += (b - a) as u64;
                continue;
            };
            let Ok(mut st) = codec::decode_torrent(docid, v) else {
                self.rep.skipped_corrupt += (b - a) as u64;
                continue;
            };
            let r = &mut st.rec;
            for t in &ts[a..b] {
                merge_seen(r, t.discovered_at, t.sources, scrape_of(t));
                if r.v2.is_none() && t.v2.is_some() && t.kind != HashKind::V1 {
                    // Stored as v1 (an import, an older version): it is a hybrid.
                    r.v2 = t.v2;
                    r.kind = t.kind;
                    if let (HashKind::Hybrid, Some(v2)) = (t.kind, &t.v2) {
                        v2_ids.push((truncate_v2(v2), docid));
                    }
                }
                if keep_info && !r.has_info {
                    if let Some(info) = &t.info {
                        dbs.info
                            .put(self.txn, &dk, info)
                            .map_err(lmdb("writing info"))?;
                        r.has_info = true;
                        self.meta.with_info += 1;
                    }
                }
            }
            dbs.torrents
                .put(self.txn, &dk, &codec::encode_torrent(r))
                .map_err(lmdb("writing a torrent"))?;
            self.cols.push((docid, codec::SortFields::of(r)));
            self.rep.torrents_updated += (b - a) as u64;
        }
        Ok(())
    }

    /// New torrents: gives them doc ids in `fresh` order (discovery order, so that
    /// doc id order is time order, the fast path of `Order::Newest`) and appends
    /// them to every table keyed by doc id (`torrents`, `files`, `info`) and to
    /// `by_time` (appended while discovery times grow; otherwise `time_disorder` is
    /// counted). File lists come from `pre` when it has them.
    fn append_fresh(
        &mut self,
        ts: &[&TorrentInput],
        fresh: &[Fresh],
        pre: Option<&Tokens>,
        keep_info: bool,
        v2_ids: &mut Vec<(InfoHash, u32)>,
    ) -> Result<Appended> {
        let dbs = self.dbs;
        let meta = &mut self.meta;
        let mut ids: Vec<(InfoHash, u32)> = Vec::with_capacity(fresh.len());
        let mut by_size: Vec<[u8; 6]> = Vec::with_capacity(fresh.len());
        for f in fresh {
            let (ih, a, b, g) = (f.infohash, f.start, f.end, f.group);
            let enc;
            let docid = meta.next_docid as u32;
            meta.next_docid += 1;
            let t = ts[a];
            let dk = codec::docid_key(docid);
            let has_info = keep_info && t.info.is_some();
            let v2 = t.v2.filter(|_| t.kind != HashKind::V1);
            let mut rec = TorrentRecord {
                infohash: ih,
                kind: if v2.is_some() { t.kind } else { HashKind::V1 },
                v2,
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
                seeders: None,
                leechers: None,
                scraped_at: None,
                has_info,
            };
            merge_seen(&mut rec, t.discovered_at, t.sources, scrape_of(t));
            for later in &ts[a + 1..b] {
                merge_seen(
                    &mut rec,
                    later.discovered_at,
                    later.sources,
                    scrape_of(later),
                );
                if rec.v2.is_none() && later.v2.is_some() && later.kind != HashKind::V1 {
                    rec.v2 = later.v2;
                    rec.kind = later.kind;
                }
            }
            if let (HashKind::Hybrid, Some(v2)) = (rec.kind, &rec.v2) {
                v2_ids.push((truncate_v2(v2), docid));
            }
            let append = PutFlags::APPEND;
            dbs.torrents
                .put_with_flags(self.txn, append, &dk, &codec::encode_torrent(&rec))
                .map_err(lmdb("writing a torrent"))?;
            self.cols.push((docid, codec::SortFields::of(&rec)));
            dbs.files
                .put_with_flags(self.txn, append, &dk, {
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
                        .put_with_flags(self.txn, append, &dk, info)
                        .map_err(lmdb("writing info"))?;
                    meta.with_info += 1;
                }
            }
            let tk = codec::by_time_key(t.discovered_at, docid);
            if t.discovered_at >= meta.max_discovered {
                // Larger than every stored key: (time, doc id) both grow.
                dbs.by_time
                    .put_with_flags(self.txn, append, &tk, &[])
                    .map_err(lmdb("writing by_time"))?;
            } else {
                meta.time_disorder += 1;
                dbs.by_time
                    .put(self.txn, &tk, &[])
                    .map_err(lmdb("writing by_time"))?;
            }
            meta.max_discovered = meta.max_discovered.max(t.discovered_at);
            by_size.push(codec::by_size_key(t.total_size, docid));
            ids.push((ih, docid));
            meta.torrents += 1;
            self.rep.torrents_new += 1;
            self.rep.torrents_updated += (b - a - 1) as u64;
        }
        Ok(Appended { ids, by_size })
    }

    /// Writes the new torrents' (infohash, doc id) entries to `ids_delta` in key
    /// order, then merges `ids_delta` into `ids` if it has grown past its bound.
    fn write_ids(&mut self, mut ids: Vec<(InfoHash, u32)>, bound: Option<u64>) -> Result<()> {
        ids.sort_unstable();
        for (ih, docid) in &ids {
            self.dbs
                .ids_delta
                .put(self.txn, ih, &codec::docid_key(*docid))
                .map_err(lmdb("writing ids"))?;
        }
        merge_ids_delta(self.txn, self.dbs, bound)
    }

    /// Writes the truncated v2 hashes of hybrids to `ids_v2` in key order (a hash
    /// that is already some torrent's own infohash is left alone).
    fn write_v2_ids(&mut self, mut ids: Vec<(InfoHash, u32)>) -> Result<()> {
        ids.sort_unstable();
        for (ih, docid) in &ids {
            if docid_of(self.txn, self.dbs, ih)?.is_some() {
                continue;
            }
            self.dbs
                .ids_v2
                .put(self.txn, ih, &codec::docid_key(*docid))
                .map_err(lmdb("writing ids_v2"))?;
        }
        Ok(())
    }

    /// Writes the new torrents' `by_size` keys in key order.
    fn write_by_size(&mut self, mut keys: Vec<[u8; 6]>) -> Result<()> {
        keys.sort_unstable();
        for k in &keys {
            self.dbs
                .by_size
                .put(self.txn, k, &[])
                .map_err(lmdb("writing by_size"))?;
        }
        Ok(())
    }

    /// Sightings (`Op::Seen`) of stored torrents: merged into their records in doc id
    /// order (sightings of one torrent in batch order); unknown ones are counted.
    fn apply_sightings(&mut self, ops: &[Op]) -> Result<()> {
        let dbs = self.dbs;
        let mut seen: Vec<(u32, &Op)> = Vec::new();
        for o in ops {
            if let Op::Seen { infohash, .. } | Op::Scrape { infohash, .. } = o {
                match docid_of(self.txn, dbs, infohash) {
                    Ok(Some(d)) => seen.push((d, o)),
                    Ok(None) => self.rep.seen_unknown += 1,
                    Err(StoreError::Corrupt { .. }) => self.rep.skipped_corrupt += 1,
                    Err(e) => return Err(e),
                }
            }
        }
        seen.sort_by_key(|s| s.0); // stable: sightings of one torrent keep their order
        for (docid, o) in seen {
            let (at, sources, scrape) = match o {
                Op::Seen {
                    at,
                    sources,
                    seeders,
                    leechers,
                    ..
                } => (
                    Some(*at),
                    *sources,
                    Scrape::of(*seeders, *leechers, Some(*at)),
                ),
                Op::Scrape {
                    at,
                    seeders,
                    leechers,
                    ..
                } => (
                    None,
                    Sources::default(),
                    Scrape::of(Some(*seeders), Some(*leechers), Some(*at)),
                ),
                _ => continue,
            };
            let dk = codec::docid_key(docid);
            let Some(v) = dbs
                .torrents
                .get(self.txn, &dk)
                .map_err(lmdb("reading a torrent"))?
            else {
                self.rep.skipped_corrupt += 1;
                continue;
            };
            let Ok(mut st) = codec::decode_torrent(docid, v) else {
                self.rep.skipped_corrupt += 1;
                continue;
            };
            match at {
                Some(at) => merge_seen(&mut st.rec, at, sources, scrape),
                None => merge_scrape(&mut st.rec, scrape),
            }
            dbs.torrents
                .put(self.txn, &dk, &codec::encode_torrent(&st.rec))
                .map_err(lmdb("writing a torrent"))?;
            self.cols.push((docid, codec::SortFields::of(&st.rec)));
            if at.is_some() {
                self.rep.seen_updated += 1;
            } else {
                self.rep.scrapes_updated += 1;
            }
        }
        Ok(())
    }

    /// Peers, nodes, sessions: the latest record of a key wins; each table is
    /// written in key order.
    fn write_latest(&mut self, ops: &[Op]) -> Result<()> {
        let dbs = self.dbs;
        let mut kv: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for o in ops {
            if let Op::Peer(p) = o {
                kv.push((codec::addr_key(&p.addr), codec::encode_peer(p)));
                self.rep.peers += 1;
            }
        }
        put_sorted(self.txn, &dbs.peers, kv, "writing peers")?;
        let mut kv = Vec::new();
        for o in ops {
            if let Op::Node(n) = o {
                kv.push((n.id.to_vec(), codec::encode_node(n)));
                self.rep.nodes += 1;
            }
        }
        put_sorted(self.txn, &dbs.nodes, kv, "writing nodes")?;
        let mut kv = Vec::new();
        for o in ops {
            if let Op::Session(s) = o {
                kv.push((s.id.to_be_bytes().to_vec(), codec::encode_session(s)));
                self.rep.sessions += 1;
            }
        }
        put_sorted(self.txn, &dbs.sessions, kv, "writing sessions")
    }

    /// Requests: appended under increasing ids, then the oldest are trimmed so that
    /// at most `max_requests` are kept.
    fn append_requests(&mut self, ops: &[Op], max_requests: u64) -> Result<()> {
        let meta = &mut self.meta;
        for o in ops {
            if let Op::Request(r) = o {
                self.dbs
                    .requests
                    .put(
                        self.txn,
                        &meta.next_request.to_be_bytes(),
                        &codec::encode_request(r),
                    )
                    .map_err(lmdb("writing requests"))?;
                meta.next_request += 1;
                meta.requests += 1;
                self.rep.requests += 1;
            }
        }
        if meta.requests > max_requests {
            let excess = meta.requests - max_requests;
            meta.requests -= delete_first(self.txn, &self.dbs.requests, excess)?;
        }
        Ok(())
    }
}

/// The groups without a doc id (new torrents), in the order they get doc ids.
fn fresh_torrents(ts: &[&TorrentInput], groups: &[Group]) -> Vec<Fresh> {
    let mut fresh: Vec<Fresh> = groups
        .iter()
        .filter(|g| g.docid.is_none())
        .map(|g| Fresh {
            discovered_at: ts[g.start].discovered_at,
            infohash: ts[g.start].infohash,
            start: g.start,
            end: g.end,
            group: g.index,
        })
        .collect();
    fresh.sort_unstable();
    fresh
}

/// The postings of the new torrents (the `k`-th of `fresh` has doc id `base + k`):
/// per term of `tok` (byte order), its (doc id, flags) pairs, doc ids ascending.
/// Hidden torrents (`hidden[k]`) get none.
fn fresh_postings(
    tok: &Tokens,
    fresh: &[Fresh],
    base: u32,
    hidden: &[bool],
) -> Vec<Vec<(u32, u8)>> {
    let mut postings: Vec<Vec<(u32, u8)>> = vec![Vec::new(); tok.terms.len()];
    for (k, f) in fresh.iter().enumerate() {
        if hidden.get(k).copied().unwrap_or(false) {
            continue;
        }
        let docid = base + k as u32;
        for &(term, flags) in tok.of_group(f.group) {
            if let Some(p) = postings.get_mut(term as usize) {
                p.push((docid, flags));
            }
        }
    }
    postings
}

/// A BEP 33 measurement carried by an op: counts and when they were measured.
#[derive(Clone, Copy)]
struct Scrape {
    seeders: Option<u32>,
    leechers: Option<u32>,
    at: Option<u64>,
}

impl Scrape {
    fn of(seeders: Option<u32>, leechers: Option<u32>, at: Option<u64>) -> Scrape {
        Scrape {
            seeders,
            leechers,
            at,
        }
    }
}

/// A torrent op's scrape: its counts, measured at `scraped_at` (unknown for
/// imports that carry counts without a time).
fn scrape_of(t: &TorrentInput) -> Scrape {
    Scrape::of(t.seeders, t.leechers, t.scraped_at)
}

/// Merges a later sighting into a stored record.
fn merge_seen(r: &mut TorrentRecord, at: u64, sources: Sources, scrape: Scrape) {
    r.last_seen_at = r.last_seen_at.max(at);
    r.sources = r.sources | sources;
    merge_scrape(r, scrape);
}

/// Takes a measurement's counts unless the record's were measured later (counts of
/// unknown age are older than any dated one; among undated ones the later op wins).
fn merge_scrape(r: &mut TorrentRecord, s: Scrape) {
    if s.seeders.is_none() && s.leechers.is_none() {
        return;
    }
    let newer = match (s.at, r.scraped_at) {
        (Some(new), Some(old)) => new >= old,
        (Some(_), None) => true,
        (None, Some(_)) => r.seeders.is_none() && r.leechers.is_none(),
        (None, None) => true,
    };
    if !newer {
        return;
    }
    if s.seeders.is_some() {
        r.seeders = s.seeders;
    }
    if s.leechers.is_some() {
        r.leechers = s.leechers;
    }
    if s.at.is_some() {
        r.scraped_at = s.at;
    }
}

/// Appends postings to their terms' blocks: the last block of a term is extended
/// while it has room (replaced: LMDB dup values cannot grow in place), then new
/// blocks follow. Doc ids of a batch are larger than every stored one, so appending
/// keeps each term's blocks ascending.
/// `terms` come in byte order; each group is in doc id order (ids are assigned in
/// the order torrents are indexed).
pub(super) fn write_postings<'t>(
    txn: &mut RwTxn,
    dbs: &Dbs,
    terms: impl Iterator<Item = (&'t str, &'t [(u32, u8)])>,
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
