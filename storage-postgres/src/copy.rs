//! `magnetar db copy`: every torrent, with its files, discovery and last-seen
//! times, sources, counts and info dict, from one store to another (LMDB or
//! PostgreSQL, either way), losslessly: LMDB → PostgreSQL → LMDB gives a
//! byte-identical `magnetar export`.
//!
//! # How
//! A source is read in order (LMDB: its export order, discovery time then doc id,
//! in one read snapshot; PostgreSQL: [`PgStore::torrents_after`], keyset-paged by
//! doc id). Each torrent becomes the writer ops both stores already take
//! ([`ops_of`]): an `Op::Torrent` carrying the record's fields, files, counts and
//! info dict, and, when it was seen after its discovery, an `Op::Seen` at its
//! last-seen time with its sources. Both stores merge these idempotently, so
//! running a copy again stores nothing twice (it reports the torrents as updated).
//!
//! # Order
//! Both stores give new torrents doc ids in (discovery time, infohash) order
//! within a batch, and exports list torrents by (discovery time, doc id). A
//! [`Batcher`] cuts a batch early whenever a torrent would be reordered among the
//! batch's torrents of the same discovery time (a smaller infohash after a larger
//! one), so the target's doc ids keep the source's order among equal times and the
//! exports are the same line for line.
//!
//! What is not copied: peers, DHT nodes, sessions and request records (not
//! torrents' data), hidden torrents (never exported) and tombstones. Facets are
//! recomputed by the target from the same fields (deterministic).

use std::collections::BTreeMap;
use std::fmt;

use magnetar_storage::{
    FileEntry, InfoHash, Op, Store, StoreError, Torrent, TorrentInput, TorrentRecord,
};

use crate::error::{PgError, Result as PgResult};
use crate::search::{record_of, RECORD_COLUMNS};
use crate::PgStore;

/// A torrent with everything a store keeps of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FullTorrent {
    pub record: TorrentRecord,
    pub files: Vec<FileEntry>,
    /// The raw info dict, when kept.
    pub info: Option<Vec<u8>>,
}

/// What a copy did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Torrents read from the source.
    pub read: u64,
    /// Stored for the first time in the target.
    pub new: u64,
    /// Already in the target (merged: nothing stored twice).
    pub updated: u64,
    /// Refused by the target (a value it cannot hold) or corrupt in the source.
    pub skipped: u64,
    /// Batches written.
    pub batches: u64,
}

/// Why a copy failed.
#[derive(Debug)]
pub enum CopyError {
    /// The PostgreSQL side.
    Pg(PgError),
    /// The LMDB side.
    Lmdb(StoreError),
    /// Source and target are the same store, or a target is in use.
    Refused(String),
}

impl fmt::Display for CopyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CopyError::Pg(e) => write!(f, "PostgreSQL: {e}"),
            CopyError::Lmdb(e) => write!(f, "LMDB: {e}"),
            CopyError::Refused(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for CopyError {}

impl From<PgError> for CopyError {
    fn from(e: PgError) -> CopyError {
        CopyError::Pg(e)
    }
}

impl From<StoreError> for CopyError {
    fn from(e: StoreError) -> CopyError {
        CopyError::Lmdb(e)
    }
}

/// The writer ops that store `t` in either store as the source holds it: the
/// torrent itself (its record's fields, files, counts and info dict, discovered
/// at its discovery time with its sources) and, when it was seen after its
/// discovery, a sighting at its last-seen time (merged after the batch's
/// torrents by both stores).
pub fn ops_of(t: FullTorrent) -> Vec<Op> {
    let r = t.record;
    let mut ops = Vec::with_capacity(2);
    let seen = (r.last_seen_at > r.discovered_at).then_some(Op::Seen {
        infohash: r.infohash,
        at: r.last_seen_at,
        sources: r.sources,
        seeders: None,
        leechers: None,
    });
    ops.push(Op::Torrent(Box::new(TorrentInput {
        infohash: r.infohash,
        kind: r.kind,
        v2: r.v2,
        name: r.name,
        total_size: r.total_size,
        piece_length: r.piece_length,
        piece_count: r.piece_count,
        private: r.private,
        source: r.source,
        files: t.files,
        discovered_at: r.discovered_at,
        sources: r.sources,
        seeders: r.seeders,
        leechers: r.leechers,
        scraped_at: r.scraped_at,
        info: t.info.filter(|_| r.has_info),
    })));
    ops.extend(seen);
    ops
}

/// Groups torrents into batches that keep their order in the target (see the
/// module doc).
#[derive(Debug)]
pub struct Batcher {
    max: usize,
    ops: Vec<Op>,
    torrents: usize,
    /// Per discovery time in the batch, the largest infohash so far.
    ties: BTreeMap<u64, InfoHash>,
}

impl Batcher {
    /// Batches of at most `max` torrents (at least 1).
    pub fn new(max: usize) -> Batcher {
        Batcher {
            max: max.max(1),
            ops: Vec::new(),
            torrents: 0,
            ties: BTreeMap::new(),
        }
    }

    /// Adds a torrent; returns the batch to write first when it must be cut.
    pub fn push(&mut self, t: FullTorrent) -> Option<Vec<Op>> {
        let (at, ih) = (t.record.discovered_at, t.record.infohash);
        let reorders = self.ties.get(&at).is_some_and(|max| *max > ih);
        let out = (self.torrents >= self.max || reorders).then(|| self.take());
        let e = self.ties.entry(at).or_insert(ih);
        if *e < ih {
            *e = ih;
        }
        self.torrents += 1;
        self.ops.extend(ops_of(t));
        out
    }

    /// The batch so far (empty at the end when nothing is left).
    pub fn take(&mut self) -> Vec<Op> {
        self.torrents = 0;
        self.ties.clear();
        std::mem::take(&mut self.ops)
    }
}

/// Where a copy reads.
pub enum Source<'a> {
    Lmdb(&'a Store),
    Pg(&'a mut PgStore),
}

/// Where a copy writes.
pub enum Target<'a> {
    Lmdb(&'a Store),
    Pg(&'a mut PgStore),
}

fn write(target: &mut Target<'_>, ops: &[Op], rep: &mut CopyReport) -> Result<(), CopyError> {
    if ops.is_empty() {
        return Ok(());
    }
    rep.batches += 1;
    match target {
        Target::Lmdb(s) => {
            let r = s.apply_batch(ops)?;
            rep.new += r.torrents_new;
            rep.updated += r.torrents_updated;
            rep.skipped += r.skipped_corrupt + r.tombstoned;
        }
        Target::Pg(s) => {
            let r = s.apply_batch(ops)?;
            rep.new += r.torrents_new;
            rep.updated += r.torrents_updated;
            rep.skipped += r.rejected;
        }
    }
    Ok(())
}

/// Copies every torrent of `source` into `target` in batches of `batch`
/// torrents, calling `progress` after each batch. The caller makes sure the two
/// are not the same store ([`same_pg_database`] for two PostgreSQL connections)
/// and that no crawler holds an LMDB target.
pub fn copy(
    source: Source<'_>,
    mut target: Target<'_>,
    batch: usize,
    mut progress: impl FnMut(&CopyReport),
) -> Result<CopyReport, CopyError> {
    let mut rep = CopyReport::default();
    let mut b = Batcher::new(batch);
    match source {
        Source::Lmdb(store) => {
            // The walk runs in a read transaction; a failed write ends it and its
            // error is kept here (the walk only carries LMDB errors).
            let mut failed: Option<CopyError> = None;
            let walked = store.walk_export(None, |record, files, info| {
                rep.read += 1;
                let t = FullTorrent {
                    record,
                    files,
                    info: info.map(<[u8]>::to_vec),
                };
                if let Some(ops) = b.push(t) {
                    if let Err(e) = write(&mut target, &ops, &mut rep) {
                        failed = Some(e);
                        return Err(StoreError::InvalidInput("the copy's target failed".into()));
                    }
                    progress(&rep);
                }
                Ok(())
            });
            if let Some(e) = failed {
                return Err(e);
            }
            let walked = walked?;
            rep.skipped += walked.skipped_corrupt;
        }
        Source::Pg(store) => {
            let mut after = i64::MIN;
            loop {
                let page = store.torrents_after(after, batch.clamp(1, 10_000) as i64)?;
                let Some(last) = page.last() else { break };
                after = last.0;
                for (_, t) in page {
                    rep.read += 1;
                    if let Some(ops) = b.push(t) {
                        write(&mut target, &ops, &mut rep)?;
                        progress(&rep);
                    }
                }
            }
        }
    }
    let ops = b.take();
    if !ops.is_empty() {
        write(&mut target, &ops, &mut rep)?;
        progress(&rep);
    }
    Ok(rep)
}

/// Whether two connections reach the same database (of the same server): the
/// first takes a session advisory lock on a key made for this check, and the
/// second cannot take it only when it is in the same database (advisory locks
/// are per database).
pub fn same_pg_database(a: &mut PgStore, b: &mut PgStore) -> PgResult<bool> {
    let key: i64 = a
        .client()
        .query_one(
            "SELECT ('x' || substr(md5(random()::text || clock_timestamp()::text), 1, 15))::bit(60)::bigint",
            &[],
        )
        .map_err(PgError::db("making a check key"))?
        .get(0);
    a.client()
        .execute("SELECT pg_advisory_lock($1)", &[&key])
        .map_err(PgError::db("taking the check lock"))?;
    let got: bool = b
        .client()
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .map_err(PgError::db("trying the check lock"))?
        .get(0);
    if got {
        b.client()
            .execute("SELECT pg_advisory_unlock($1)", &[&key])
            .map_err(PgError::db("releasing the check lock"))?;
    }
    a.client()
        .execute("SELECT pg_advisory_unlock($1)", &[&key])
        .map_err(PgError::db("releasing the check lock"))?;
    Ok(!got)
}

impl PgStore {
    /// Up to `limit` stored torrents with doc ids above `after`, in doc id order,
    /// each with its doc id, files and info dict: a keyset page (start with
    /// `i64::MIN`, then pass the last id returned). A value out of range is an
    /// error naming the torrent.
    pub fn torrents_after(&mut self, after: i64, limit: i64) -> PgResult<Vec<(i64, FullTorrent)>> {
        let rows = self
            .client()
            .query(
                &format!(
                    "SELECT {RECORD_COLUMNS}, t.id, i.dict FROM torrents t \
                     LEFT JOIN info i ON i.torrent_id = t.id \
                     WHERE t.id > $1 ORDER BY t.id LIMIT $2"
                ),
                &[&after, &limit],
            )
            .map_err(PgError::db("reading torrents"))?;
        let mut out: Vec<(i64, FullTorrent)> = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.get(17);
            let Some(record) = record_of(row) else {
                return Err(PgError::InvalidInput(format!(
                    "the stored torrent with doc id {id} has a value out of range"
                )));
            };
            out.push((
                id,
                FullTorrent {
                    record,
                    files: Vec::new(),
                    info: row.get(18),
                },
            ));
        }
        let (Some(first), Some(last)) = (out.first(), out.last()) else {
            return Ok(out);
        };
        let (lo, hi) = (first.0, last.0);
        let mut at = 0usize;
        for r in self
            .client()
            .query(
                "SELECT torrent_id, coalesce(path_raw, convert_to(path, 'UTF8')), size \
                 FROM files WHERE torrent_id BETWEEN $1 AND $2 ORDER BY torrent_id, idx",
                &[&lo, &hi],
            )
            .map_err(PgError::db("reading files"))?
        {
            let tid: i64 = r.get(0);
            while at < out.len() && out[at].0 < tid {
                at += 1;
            }
            let Some((id, t)) = out.get_mut(at) else {
                break;
            };
            if *id != tid {
                continue;
            }
            let path = String::from_utf8(r.get(1)).map_err(|_| {
                PgError::InvalidInput(format!("a file path of doc id {tid} is not UTF-8"))
            })?;
            let size = u64::try_from(r.get::<_, i64>(2)).unwrap_or(0);
            t.files.push(FileEntry { path, size });
        }
        Ok(out)
    }

    /// Every stored torrent in doc id order, with files and info (for tests and
    /// small stores; a copy pages with [`PgStore::torrents_after`]).
    pub fn all_torrents(&mut self) -> PgResult<Vec<FullTorrent>> {
        let mut out = Vec::new();
        let mut after = i64::MIN;
        loop {
            let page = self.torrents_after(after, 1000)?;
            let Some(last) = page.last() else { break };
            after = last.0;
            out.extend(page.into_iter().map(|p| p.1));
        }
        Ok(out)
    }
}

/// A stored torrent as [`Torrent`] plus its info dict.
impl From<FullTorrent> for Torrent {
    fn from(t: FullTorrent) -> Torrent {
        Torrent {
            record: t.record,
            files: t.files,
        }
    }
}
