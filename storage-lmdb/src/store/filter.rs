//! Content filters in the store (issue 20 §2, §4): tombstones, hidden torrents, and
//! the removal of torrents (`magnetar delete`, `filter apply`, `db prune`).
//!
//! - `tombstones`: infohash (20) → `1`, at u64 LE, label (UTF-8, the rest). A
//!   tombstoned infohash is never stored again: an `Op::Torrent` of it is skipped
//!   (and counted in [`crate::BatchReport::tombstoned`]).
//! - `hidden`: infohash (20) → the same layout. A hidden torrent is stored without
//!   postings (so search never finds it) and left out of `recent` and exports. The
//!   mark is keyed by infohash, not doc id, so that it can precede the torrent (the
//!   crawler sends `Op::Hide` before the torrent's `Op::Torrent`).
//!
//! Removing a torrent deletes its record, file list, info dict, `by_time`, `by_size`
//! and `ids`/`ids_delta`/`ids_v2` entries, its postings (each posting block holding
//! one of its doc ids is rewritten without it) and its hidden mark, and updates the
//! counters, all in one write transaction.

use std::collections::BTreeMap;
use std::ops::Bound;

use heed::{RoTxn, RwTxn};

use super::{docid_of, lmdb, Db, Dbs, MetaCounters, Result, Store};
use crate::codec;
use crate::tokenize::torrent_terms;
use crate::types::*;

/// Labels are cut to this many bytes when stored.
pub const MAX_LABEL_BYTES: usize = 200;

/// How many tombstones and hidden marks the store holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterTotals {
    /// Infohashes never to be fetched or stored again.
    pub tombstones: u64,
    /// Torrents stored but hidden (or marks waiting for their torrent).
    pub hidden: u64,
}

/// What a removal did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TorrentRemoval {
    /// Torrents removed.
    pub removed: u64,
    /// Tombstones written (new or renewed).
    pub tombstoned: u64,
    /// Infohashes asked for that were not stored.
    pub not_stored: u64,
}

fn encode_mark(m: &FilterMark) -> Vec<u8> {
    let mut label = m.label.as_str();
    if label.len() > MAX_LABEL_BYTES {
        let mut end = MAX_LABEL_BYTES;
        while !label.is_char_boundary(end) {
            end -= 1;
        }
        label = &label[..end];
    }
    let mut v = Vec::with_capacity(9 + label.len());
    v.push(1);
    v.extend_from_slice(&m.at.to_le_bytes());
    v.extend_from_slice(label.as_bytes());
    v
}

fn decode_mark(v: &[u8]) -> Option<FilterMark> {
    if v.first() != Some(&1) {
        return None;
    }
    let at = u64::from_le_bytes(v.get(1..9)?.try_into().ok()?);
    let label = String::from_utf8_lossy(v.get(9..)?).into_owned();
    Some(FilterMark { at, label })
}

fn mark_of(
    txn: &RoTxn,
    db: &super::Db,
    name: &'static str,
    ih: &InfoHash,
) -> Result<Option<FilterMark>> {
    match db.get(txn, ih).map_err(lmdb("reading filter marks"))? {
        None => Ok(None),
        Some(v) => decode_mark(v)
            .map(Some)
            .ok_or_else(|| super::corrupt(name, ih)("bad filter mark")),
    }
}

impl Store {
    /// The tombstone of an infohash, if it has one.
    pub fn tombstone(&self, infohash: &InfoHash) -> Result<Option<FilterMark>> {
        self.read(|txn, dbs| mark_of(txn, &dbs.tombstones, "tombstones", infohash))
    }

    /// The hidden mark of an infohash, if it has one.
    pub fn hidden_mark(&self, infohash: &InfoHash) -> Result<Option<FilterMark>> {
        self.read(|txn, dbs| mark_of(txn, &dbs.hidden, "hidden", infohash))
    }

    /// How many tombstones and hidden marks there are (no scan).
    pub fn filter_totals(&self) -> Result<FilterTotals> {
        self.read(|txn, dbs| {
            Ok(FilterTotals {
                tombstones: dbs
                    .tombstones
                    .len(txn)
                    .map_err(lmdb("reading tombstones"))?,
                hidden: dbs.hidden.len(txn).map_err(lmdb("reading hidden"))?,
            })
        })
    }

    /// Tombstones and hidden marks by rule label: (label, tombstones, hidden), most
    /// first; reads at most `max_scan` entries of each table.
    pub fn filter_labels(&self, max_scan: u64) -> Result<Vec<(String, u64, u64)>> {
        self.read(|txn, dbs| {
            let mut by: BTreeMap<String, (u64, u64)> = BTreeMap::new();
            for (i, db) in [&dbs.tombstones, &dbs.hidden].into_iter().enumerate() {
                for r in db
                    .iter(txn)
                    .map_err(lmdb("reading filter marks"))?
                    .take(usize::try_from(max_scan).unwrap_or(usize::MAX))
                {
                    let (_, v) = r.map_err(lmdb("reading filter marks"))?;
                    let label = decode_mark(v).map_or_else(|| "(unreadable)".into(), |m| m.label);
                    let e = by.entry(label).or_default();
                    if i == 0 {
                        e.0 += 1;
                    } else {
                        e.1 += 1;
                    }
                }
            }
            let mut v: Vec<(String, u64, u64)> =
                by.into_iter().map(|(l, (t, h))| (l, t, h)).collect();
            v.sort_by(|a, b| (b.1 + b.2).cmp(&(a.1 + a.2)).then_with(|| a.0.cmp(&b.0)));
            Ok(v)
        })
    }

    /// Removes the stored torrents of `infohashes` (record, files, info dict,
    /// postings, indexes), in one write transaction. With `tombstone`, every
    /// infohash (stored or not) is also remembered as a tombstone, so that it is
    /// never stored again; without, a removed torrent may come back.
    pub fn remove_torrents(
        &self,
        infohashes: &[InfoHash],
        tombstone: Option<&FilterMark>,
    ) -> Result<TorrentRemoval> {
        let (r, _) = self.write(|txn, dbs| {
            let mut meta = MetaCounters::load(txn, &dbs.meta)?;
            let mut rep = TorrentRemoval::default();
            let n = remove_txn(txn, dbs, &mut meta, infohashes)?;
            rep.removed = n;
            rep.not_stored = infohashes.len() as u64 - n.min(infohashes.len() as u64);
            if let Some(m) = tombstone {
                let v = encode_mark(m);
                for ih in infohashes {
                    dbs.tombstones
                        .put(txn, ih, &v)
                        .map_err(lmdb("writing tombstones"))?;
                    rep.tombstoned += 1;
                }
            }
            meta.store(txn, &dbs.meta)?;
            Ok(rep)
        })?;
        Ok(r)
    }

    /// Hides the torrents of `marks` (their postings are removed; `recent` and
    /// exports skip them); returns how many stored torrents were newly hidden. A
    /// mark for an infohash not stored is kept for when it comes.
    pub fn hide_torrents(&self, marks: &[(InfoHash, FilterMark)]) -> Result<u64> {
        let (n, _) = self.write(|txn, dbs| hide_txn(txn, dbs, marks))?;
        Ok(n)
    }

    /// Unhides the torrents of `infohashes` (their marks go, their postings are
    /// written again); returns how many stored torrents were unhidden.
    pub fn unhide_torrents(&self, infohashes: &[InfoHash]) -> Result<u64> {
        let (n, _) = self.write(|txn, dbs| {
            let mut docs = Vec::new();
            for ih in infohashes {
                if !dbs
                    .hidden
                    .delete(txn, ih)
                    .map_err(lmdb("removing hidden"))?
                {
                    continue;
                }
                if let Some(d) = load_doc(txn, dbs, ih)? {
                    docs.push(d);
                }
            }
            insert_postings(txn, dbs, &docs)?;
            Ok(docs.len() as u64)
        })?;
        Ok(n)
    }

    /// Calls `f` with every stored torrent and its files, in doc id order (one read
    /// transaction); corrupt records are skipped. `f` returning false stops the walk.
    /// Returns how many torrents were visited.
    pub fn for_each_torrent(
        &self,
        mut f: impl FnMut(&TorrentRecord, &[FileEntry], bool) -> bool,
    ) -> Result<u64> {
        self.read(|txn, dbs| {
            let any_hidden = !dbs.hidden.is_empty(txn).map_err(lmdb("reading hidden"))?;
            let mut n = 0;
            for r in dbs.torrents.iter(txn).map_err(lmdb("walking torrents"))? {
                let (k, v) = r.map_err(lmdb("walking torrents"))?;
                let Ok(docid) = codec::docid_from(k) else {
                    continue;
                };
                let Ok(st) = codec::decode_torrent(docid, v) else {
                    continue;
                };
                let files = match dbs.files.get(txn, k).map_err(lmdb("walking files"))? {
                    Some(fv) => codec::decode_files(fv).unwrap_or_default(),
                    None => Vec::new(),
                };
                let hidden = any_hidden
                    && dbs
                        .hidden
                        .get(txn, &st.rec.infohash)
                        .map_err(lmdb("reading hidden"))?
                        .is_some();
                n += 1;
                if !f(&st.rec, &files, hidden) {
                    break;
                }
            }
            Ok(n)
        })
    }
}

/// Whether `rec` is hidden (for listings: `recent`, exports). `any` is whether the
/// `hidden` table has entries at all (read once per transaction).
pub(crate) fn is_hidden(txn: &RoTxn, dbs: &Dbs, any: bool, ih: &InfoHash) -> Result<bool> {
    if !any {
        return Ok(false);
    }
    Ok(dbs
        .hidden
        .get(txn, ih)
        .map_err(lmdb("reading hidden"))?
        .is_some())
}

/// Whether the `hidden` table has entries.
pub(crate) fn any_hidden(txn: &RoTxn, dbs: &Dbs) -> Result<bool> {
    Ok(!dbs.hidden.is_empty(txn).map_err(lmdb("reading hidden"))?)
}

/// The batch's `Op::Tombstone`s and `Op::Hide`s, before its torrents: marks written,
/// stored torrents removed (tombstones) or stripped of their postings (hidden).
pub(super) fn apply_marks(
    txn: &mut RwTxn,
    dbs: &Dbs,
    ops: &[Op],
    meta: &mut MetaCounters,
) -> Result<()> {
    let mut dead = Vec::new();
    let mut hide = Vec::new();
    for o in ops {
        match o {
            Op::Tombstone {
                infohash,
                at,
                label,
            } => {
                let m = FilterMark {
                    at: *at,
                    label: label.clone(),
                };
                dbs.tombstones
                    .put(txn, infohash, &encode_mark(&m))
                    .map_err(lmdb("writing tombstones"))?;
                dead.push(*infohash);
            }
            Op::Hide {
                infohash,
                at,
                label,
            } => hide.push((
                *infohash,
                FilterMark {
                    at: *at,
                    label: label.clone(),
                },
            )),
            _ => {}
        }
    }
    if !dead.is_empty() {
        remove_txn(txn, dbs, meta, &dead)?;
    }
    if !hide.is_empty() {
        hide_txn(txn, dbs, &hide)?;
    }
    Ok(())
}

/// Keeps the items of `v` whose infohash has no tombstone; returns how many went.
pub(super) fn retain_untombstoned<T>(
    txn: &RoTxn,
    dbs: &Dbs,
    v: &mut Vec<T>,
    ih: impl Fn(&T) -> InfoHash,
) -> Result<u64> {
    if v.is_empty()
        || dbs
            .tombstones
            .is_empty(txn)
            .map_err(lmdb("reading tombstones"))?
    {
        return Ok(0);
    }
    let mut keep = Vec::with_capacity(v.len());
    for x in v.iter() {
        keep.push(
            dbs.tombstones
                .get(txn, &ih(x))
                .map_err(lmdb("reading tombstones"))?
                .is_none(),
        );
    }
    let before = v.len();
    let mut k = keep.into_iter();
    v.retain(|_| k.next().unwrap_or(true));
    Ok((before - v.len()) as u64)
}

/// For each item of `v`: whether its infohash is hidden (stored without postings).
pub(super) fn hidden_flags<T>(
    txn: &RoTxn,
    dbs: &Dbs,
    v: &[T],
    ih: impl Fn(&T) -> InfoHash,
) -> Result<Vec<bool>> {
    let any = any_hidden(txn, dbs)?;
    v.iter().map(|x| is_hidden(txn, dbs, any, &ih(x))).collect()
}

fn hide_txn(txn: &mut RwTxn, dbs: &Dbs, marks: &[(InfoHash, FilterMark)]) -> Result<u64> {
    let mut docs = Vec::new();
    for (ih, m) in marks {
        let already = dbs
            .hidden
            .get(txn, ih)
            .map_err(lmdb("reading hidden"))?
            .is_some();
        dbs.hidden
            .put(txn, ih, &encode_mark(m))
            .map_err(lmdb("writing hidden"))?;
        if already {
            continue;
        }
        if let Some(d) = load_doc(txn, dbs, ih)? {
            docs.push(d);
        }
    }
    let n = docs.len() as u64;
    remove_postings(txn, dbs, &docs)?;
    Ok(n)
}

/// A stored torrent being removed or hidden.
struct Doc {
    docid: u32,
    rec: TorrentRecord,
    files: Vec<FileEntry>,
}

fn load_doc(txn: &RoTxn, dbs: &Dbs, ih: &InfoHash) -> Result<Option<Doc>> {
    let Some(docid) = docid_of(txn, dbs, ih)? else {
        return Ok(None);
    };
    let dk = codec::docid_key(docid);
    let Some(v) = dbs
        .torrents
        .get(txn, &dk)
        .map_err(lmdb("reading a torrent"))?
    else {
        return Ok(None);
    };
    let st = codec::decode_torrent(docid, v).map_err(super::corrupt("torrents", &dk))?;
    let files = match dbs.files.get(txn, &dk).map_err(lmdb("reading files"))? {
        Some(fv) => codec::decode_files(fv).map_err(super::corrupt("files", &dk))?,
        None => Vec::new(),
    };
    Ok(Some(Doc {
        docid,
        rec: st.rec,
        files,
    }))
}

/// Removes the stored torrents of `ihs` (duplicates and unknown ones are skipped);
/// returns how many were removed.
fn remove_txn(
    txn: &mut RwTxn,
    dbs: &Dbs,
    meta: &mut MetaCounters,
    ihs: &[InfoHash],
) -> Result<u64> {
    let mut docs: Vec<Doc> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for ih in ihs {
        if let Some(d) = load_doc(txn, dbs, ih)? {
            if seen.insert(d.docid) {
                docs.push(d);
            }
        }
    }
    let hidden_any = any_hidden(txn, dbs)?;
    let mut indexed = Vec::with_capacity(docs.len());
    for d in docs.iter() {
        if !is_hidden(txn, dbs, hidden_any, &d.rec.infohash)? {
            indexed.push(d);
        }
    }
    remove_postings_of(txn, dbs, &indexed)?;
    let docids: Vec<u32> = docs.iter().map(|d| d.docid).collect();
    super::facets::remove_of(txn, dbs, &docids)?;
    for d in &docs {
        let dk = codec::docid_key(d.docid);
        let ih = d.rec.infohash;
        dbs.torrents
            .delete(txn, &dk)
            .map_err(lmdb("removing a torrent"))?;
        dbs.files.delete(txn, &dk).map_err(lmdb("removing files"))?;
        super::columns::remove(txn, dbs, d.docid)?;
        if dbs.info.delete(txn, &dk).map_err(lmdb("removing info"))? {
            meta.with_info = meta.with_info.saturating_sub(1);
        }
        dbs.by_time
            .delete(txn, &codec::by_time_key(d.rec.discovered_at, d.docid))
            .map_err(lmdb("removing by_time"))?;
        dbs.by_size
            .delete(txn, &codec::by_size_key(d.rec.total_size, d.docid))
            .map_err(lmdb("removing by_size"))?;
        if !dbs
            .ids_delta
            .delete(txn, &ih)
            .map_err(lmdb("removing ids"))?
        {
            dbs.ids.delete(txn, &ih).map_err(lmdb("removing ids"))?;
        }
        if let (HashKind::Hybrid, Some(v2)) = (d.rec.kind, &d.rec.v2) {
            let t = truncate_v2(v2);
            let mine = dbs
                .ids_v2
                .get(txn, &t)
                .map_err(lmdb("reading ids_v2"))?
                .is_some_and(|v| codec::docid_from(v) == Ok(d.docid));
            if mine {
                dbs.ids_v2
                    .delete(txn, &t)
                    .map_err(lmdb("removing ids_v2"))?;
            }
        }
        dbs.hidden
            .delete(txn, &ih)
            .map_err(lmdb("removing hidden"))?;
        meta.torrents = meta.torrents.saturating_sub(1);
    }
    Ok(docs.len() as u64)
}

fn remove_postings(txn: &mut RwTxn, dbs: &Dbs, docs: &[Doc]) -> Result<()> {
    let refs: Vec<&Doc> = docs.iter().collect();
    remove_postings_of(txn, dbs, &refs)
}

/// Writes the postings of `docs` (stored torrents whose doc ids may lie anywhere
/// among the stored ones): per term, each new posting goes into the block whose
/// range it falls in (the last block starting at or before it, else the first),
/// which is rewritten, split in as many blocks as it needs.
fn insert_postings(txn: &mut RwTxn, dbs: &Dbs, docs: &[Doc]) -> Result<()> {
    let mut by_term: BTreeMap<String, Vec<(u32, u8)>> = BTreeMap::new();
    for d in docs {
        for (term, flags) in torrent_terms(&d.rec.name, &d.files) {
            by_term.entry(term).or_default().push((d.docid, flags));
        }
    }
    let mut raw = Vec::new();
    for (term, mut new) in by_term {
        new.sort_unstable();
        new.dedup_by_key(|p| p.0);
        let key = term.as_bytes();
        let range = (Bound::Included(key), Bound::Included(key));
        // Block index → (its bytes, the new postings it takes).
        let mut targets: BTreeMap<usize, Target> = BTreeMap::new();
        let mut prev: Option<Vec<u8>> = None;
        let mut i = 0;
        let mut k = 0;
        for r in dbs
            .terms
            .range(txn, &range)
            .map_err(lmdb("reading terms"))?
        {
            let (_, block) = r.map_err(lmdb("reading terms"))?;
            let first = block
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u32::from_be_bytes);
            let j = i + new.get(i..).unwrap_or(&[]).partition_point(|p| p.0 < first);
            if j > i {
                // Before this block: into the previous one, or this one if first.
                let (t, bytes) = match &prev {
                    Some(p) => (k - 1, p.clone()),
                    None => (k, block.to_vec()),
                };
                let e = targets.entry(t).or_insert_with(|| (bytes, Vec::new()));
                e.1.extend_from_slice(new.get(i..j).unwrap_or(&[]));
                i = j;
            }
            prev = Some(block.to_vec());
            k += 1;
        }
        let rest = new.get(i..).unwrap_or(&[]);
        let mut fresh: Vec<(u32, u8)> = Vec::new();
        if !rest.is_empty() {
            match prev {
                Some(p) => {
                    let e = targets.entry(k - 1).or_insert_with(|| (p, Vec::new()));
                    e.1.extend_from_slice(rest);
                }
                None => fresh.extend_from_slice(rest),
            }
        }
        for (_, (old, add)) in targets {
            raw.clear();
            if codec::block_decode(&old, &mut raw).is_err() {
                continue;
            }
            let mut all: Vec<(u32, u8)> = raw.iter().map(|p| (p >> 2, (p & 3) as u8)).collect();
            all.extend(add);
            all.sort_unstable();
            all.dedup_by_key(|p| p.0);
            dbs.terms
                .delete_one_duplicate(txn, key, &old)
                .map_err(lmdb("writing terms"))?;
            put_blocks(txn, dbs, key, &all)?;
        }
        put_blocks(txn, dbs, key, &fresh)?;
    }
    Ok(())
}

/// A posting block being rewritten: its bytes, and the postings it takes.
type Target = (Vec<u8>, Vec<(u32, u8)>);

/// Writes `postings` (ascending doc ids) as blocks of `key`.
fn put_blocks(txn: &mut RwTxn, dbs: &Dbs, key: &[u8], postings: &[(u32, u8)]) -> Result<()> {
    let mut rest = postings;
    while let Some(first) = rest.first() {
        let mut block = codec::block_new(first.0, first.1);
        let mut n = 1;
        while n < rest.len() && codec::block_push(&mut block, rest[n].0, rest[n].1) {
            n += 1;
        }
        dbs.terms
            .put(txn, key, &block)
            .map_err(lmdb("writing terms"))?;
        rest = &rest[n..];
    }
    Ok(())
}

/// Removes the postings of `docs`: per term, every block holding one of their doc
/// ids is rewritten without it (or deleted when nothing is left).
fn remove_postings_of(txn: &mut RwTxn, dbs: &Dbs, docs: &[&Doc]) -> Result<()> {
    let mut by_term: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for d in docs {
        for (term, _) in torrent_terms(&d.rec.name, &d.files) {
            by_term.entry(term).or_default().push(d.docid);
        }
    }
    for (term, mut ids) in by_term {
        ids.sort_unstable();
        ids.dedup();
        remove_from_blocks(txn, &dbs.terms, term.as_bytes(), &ids)?;
    }
    Ok(())
}

/// Removes the doc ids `ids` (ascending, no repeats) from the posting blocks of `key`
/// in `db` (`terms` or `facet_terms`: DUP_SORT, delta-coded blocks); a block left
/// empty is deleted.
pub(super) fn remove_from_blocks(txn: &mut RwTxn, db: &Db, key: &[u8], ids: &[u32]) -> Result<()> {
    let mut raw = Vec::new();
    let range = (Bound::Included(key), Bound::Included(key));
    // (old block, new block or None when emptied)
    let mut changes: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    for r in db.range(txn, &range).map_err(lmdb("reading postings"))? {
        let (_, block) = r.map_err(lmdb("reading postings"))?;
        let Some(first) = block
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
        else {
            continue;
        };
        let Some(last) = codec::block_last(block) else {
            continue;
        };
        let lo = ids.partition_point(|&d| d < first);
        if ids.get(lo).is_none_or(|&d| d > last) {
            continue;
        }
        raw.clear();
        if codec::block_decode(block, &mut raw).is_err() {
            continue;
        }
        let before = raw.len();
        raw.retain(|p| ids.binary_search(&(p >> 2)).is_err());
        if raw.len() == before {
            continue;
        }
        let new = raw.split_first().map(|(f, rest)| {
            let mut b = codec::block_new(f >> 2, (f & 3) as u8);
            for p in rest {
                codec::block_push(&mut b, p >> 2, (p & 3) as u8);
            }
            b
        });
        changes.push((block.to_vec(), new));
    }
    for (old, new) in changes {
        db.delete_one_duplicate(txn, key, &old)
            .map_err(lmdb("writing postings"))?;
        if let Some(b) = new {
            db.put(txn, key, &b).map_err(lmdb("writing postings"))?;
        }
    }
    Ok(())
}
