//! `columns`: the fields search filters and sorts on (total size, discovery time,
//! file count, seeders) of every torrent, packed in fixed width by doc id, so that
//! a query can read them for tens of thousands of matches without looking each one
//! up in `torrents`.
//!
//! Key: chunk number u32 BE (doc id / 504). Value: a presence bitmap of 63 bytes (bit
//! `i % 8` of byte `i / 8`: doc id `chunk · 504 + i` has an entry), then 504 entries of
//! 24 bytes: total_size u64 LE, discovered_at u64 LE, file_count u32 LE, seeders u32
//! LE (`u32::MAX` = unknown). 12,159 bytes, three 4 KiB overflow pages: 1,000,000
//! torrents are ~2,000 chunks, walked in key order by a cursor when the matches are
//! dense, or looked up chunk by chunk when they are few. (Chunks of 64 entries, two
//! per leaf page, made a dense walk 8 times as many cursor steps: a one-word seeders
//! sort at 1 M took p50 7.5 ms, against 0.94 ms with these, on the loaded machine;
//! see BENCHMARKS.md. The price: a scrape rewrites its chunk's three pages.)
//!
//! The writer keeps it in step with `torrents` in the same transaction: every
//! record it writes (new, merged sighting, scrape) is written here too
//! ([`write`]), once per chunk per batch; a deleted torrent must be removed with
//! [`remove`]. `Store::integrity_check` compares the two.
//!
//! `by_seeders` (schema 7) orders the torrents whose seeders are known: key epoch
//! u16 BE (doc id >> 16) ‖ seeders u32 BE ‖ doc id u32 BE, empty value. [`apply`]
//! keeps it in step with the chunks' seeders fields (an entry whose seeders change
//! moves: one delete, one put), so a sort by seeders walks it from either end
//! ([`SeedersOrder`]: one cursor per epoch, merged) and stops once its page is full
//! instead of reading every match's entry (see `search::seeders_walk`). The epoch
//! comes first so that a batch of new torrents (the newest doc ids) inserts into the
//! pages of one epoch, not into pages all over the table: keyed by seeders alone, a
//! batch of 10,000 new torrents with random seeders dirtied nearly every leaf page of
//! the table at 1 M (about 1 KB more written per torrent; see BENCHMARKS.md).

use std::ops::Bound;

use heed::{RoTxn, RwTxn};

use super::{lmdb, Dbs, Result};
use crate::codec::{self, SortFields};

/// Doc ids per chunk: the value (12,159 bytes) and LMDB's header fill three 4 KiB
/// overflow pages.
const PER_CHUNK: usize = 504;
const PER: u32 = PER_CHUNK as u32;
/// Bytes of one entry.
const ENTRY: usize = 24;
/// Bytes of the presence bitmap.
const BITMAP: usize = PER_CHUNK / 8;
/// Bytes of a chunk value.
const CHUNK_BYTES: usize = BITMAP + PER_CHUNK * ENTRY;
/// Matches are read with one lookup per chunk when `matches · DENSE_FACTOR <` the
/// chunks they span, else by one cursor walk over those chunks (a cursor step costs
/// a small fraction of a lookup).
const DENSE_FACTOR: usize = 8;

/// Doc ids per `by_seeders` epoch: 65,536 (a few in tests, so that random stores
/// have many epochs to merge).
#[cfg(not(test))]
const EPOCH_BITS: u32 = 16;
#[cfg(test)]
const EPOCH_BITS: u32 = 6;

/// The `by_seeders` key of `docid` with `seeders` known.
pub(super) fn seeders_key(seeders: u32, docid: u32) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..2].copy_from_slice(&((docid >> EPOCH_BITS) as u16).to_be_bytes());
    k[2..6].copy_from_slice(&seeders.to_be_bytes());
    k[6..].copy_from_slice(&docid.to_be_bytes());
    k
}

/// The (seeders, doc id) of a `by_seeders` key, `None` if it is not 10 bytes or its
/// epoch is not its doc id's.
pub(super) fn seeders_entry(k: &[u8]) -> Option<(u32, u32)> {
    let k: [u8; 10] = k.try_into().ok()?;
    let s = u32::from_be_bytes([k[2], k[3], k[4], k[5]]);
    let d = u32::from_be_bytes([k[6], k[7], k[8], k[9]]);
    (u32::from(u16::from_be_bytes([k[0], k[1]])) == d >> EPOCH_BITS).then_some((s, d))
}

type KvIter<'t> = Box<dyn Iterator<Item = heed::Result<(&'t [u8], &'t [u8])>> + 't>;

/// The torrents with known seeders in seeders order (`desc`: most first, ties by doc
/// id descending; else fewest first, ties ascending): one cursor per epoch of
/// `by_seeders`, merged by their heads.
pub(super) struct SeedersOrder<'t> {
    desc: bool,
    heads: Vec<(Option<(u32, u32)>, KvIter<'t>)>,
    /// Keys that did not decode (skipped; `db check` reports them).
    pub(super) bad: usize,
}

impl<'t> SeedersOrder<'t> {
    /// The order over the epochs of doc ids below `ndocs`.
    pub(super) fn new(txn: &'t RoTxn, dbs: &Dbs, ndocs: u64, desc: bool) -> Result<Self> {
        let epochs = ndocs.div_ceil(1 << EPOCH_BITS).min(1 << 16);
        let mut me = SeedersOrder {
            desc,
            heads: Vec::with_capacity(epochs as usize),
            bad: 0,
        };
        for e in 0..epochs {
            let p = (e as u16).to_be_bytes();
            let mut it: KvIter<'t> = if desc {
                Box::new(
                    dbs.by_seeders
                        .rev_prefix_iter(txn, &p[..])
                        .map_err(lmdb("reading by_seeders"))?,
                )
            } else {
                Box::new(
                    dbs.by_seeders
                        .prefix_iter(txn, &p[..])
                        .map_err(lmdb("reading by_seeders"))?,
                )
            };
            let head = Self::advance(&mut it, &mut me.bad)?;
            me.heads.push((head, it));
        }
        Ok(me)
    }

    fn advance(it: &mut KvIter<'t>, bad: &mut usize) -> Result<Option<(u32, u32)>> {
        for r in it.by_ref() {
            let (k, _) = r.map_err(lmdb("reading by_seeders"))?;
            match seeders_entry(k) {
                Some(x) => return Ok(Some(x)),
                None => *bad += 1,
            }
        }
        Ok(None)
    }

    /// The next (seeders, doc id) in the order.
    pub(super) fn next(&mut self) -> Result<Option<(u32, u32)>> {
        let mut best: Option<(usize, (u32, u32))> = None;
        for (i, (h, _)) in self.heads.iter().enumerate() {
            if let Some(x) = *h {
                let better = match best {
                    None => true,
                    Some((_, y)) => (x > y) == self.desc,
                };
                if better {
                    best = Some((i, x));
                }
            }
        }
        let Some((i, x)) = best else {
            return Ok(None);
        };
        let (h, it) = &mut self.heads[i];
        *h = Self::advance(it, &mut self.bad)?;
        Ok(Some(x))
    }
}

fn chunk_key(docid: u32) -> [u8; 4] {
    (docid / PER).to_be_bytes()
}

fn encode_entry(f: &SortFields, out: &mut [u8]) {
    out[..8].copy_from_slice(&f.total_size.to_le_bytes());
    out[8..16].copy_from_slice(&f.discovered_at.to_le_bytes());
    out[16..20].copy_from_slice(&f.file_count.to_le_bytes());
    out[20..24].copy_from_slice(&f.seeders.unwrap_or(u32::MAX).to_le_bytes());
}

/// The entry of slot `slot` of chunk value `v`, if present.
fn entry(v: &[u8], slot: usize) -> Option<SortFields> {
    if v.len() != CHUNK_BYTES || v[slot / 8] >> (slot % 8) & 1 == 0 {
        return None;
    }
    let e = v.get(BITMAP + slot * ENTRY..BITMAP + (slot + 1) * ENTRY)?;
    let u64_at = |o: usize| {
        u64::from_le_bytes([
            e[o],
            e[o + 1],
            e[o + 2],
            e[o + 3],
            e[o + 4],
            e[o + 5],
            e[o + 6],
            e[o + 7],
        ])
    };
    let u32_at = |o: usize| u32::from_le_bytes([e[o], e[o + 1], e[o + 2], e[o + 3]]);
    let seeders = u32_at(20);
    Some(SortFields {
        total_size: u64_at(0),
        discovered_at: u64_at(8),
        file_count: u32_at(16),
        seeders: (seeders != u32::MAX).then_some(seeders),
    })
}

/// Writes the entries of `updates` ((doc id, fields), any order; for a doc id given
/// twice the later one wins), one read and one write per chunk, in key order.
pub(super) fn write(txn: &mut RwTxn, dbs: &Dbs, mut updates: Vec<(u32, SortFields)>) -> Result<()> {
    updates.sort_by_key(|u| u.0); // stable: the later of a doc id's updates stays last
    apply(txn, dbs, updates.into_iter().map(|(d, f)| (d, Some(f))))
}

/// Removes the entry of `docid` (a deleted or pruned torrent: `filter::remove_txn`);
/// an emptied chunk is deleted.
pub(super) fn remove(txn: &mut RwTxn, dbs: &Dbs, docid: u32) -> Result<()> {
    apply(txn, dbs, std::iter::once((docid, None)))
}

/// Sets (`Some`) or clears (`None`) entries; doc ids ascending.
fn apply(
    txn: &mut RwTxn,
    dbs: &Dbs,
    updates: impl Iterator<Item = (u32, Option<SortFields>)>,
) -> Result<()> {
    let mut cur: Option<([u8; 4], Vec<u8>)> = None;
    for (docid, f) in updates {
        let key = chunk_key(docid);
        if cur.as_ref().map(|c| c.0) != Some(key) {
            if let Some((k, v)) = cur.take() {
                flush(txn, dbs, &k, &v)?;
            }
            let v = match dbs
                .columns
                .get(txn, &key)
                .map_err(lmdb("reading columns"))?
            {
                Some(v) if v.len() == CHUNK_BYTES => v.to_vec(),
                // Absent, or of a bad size (rewritten whole; `db check` reports it).
                _ => vec![0u8; CHUNK_BYTES],
            };
            cur = Some((key, v));
        }
        if let Some((_, v)) = cur.as_mut() {
            let slot = docid as usize % PER_CHUNK;
            let at = BITMAP + slot * ENTRY;
            // `by_seeders` follows the entry's seeders.
            let old = entry(v, slot).and_then(|e| e.seeders);
            let new = f.as_ref().and_then(|f| f.seeders);
            if old != new {
                if let Some(o) = old {
                    dbs.by_seeders
                        .delete(txn, &seeders_key(o, docid))
                        .map_err(lmdb("writing by_seeders"))?;
                }
                if let Some(n) = new {
                    dbs.by_seeders
                        .put(txn, &seeders_key(n, docid), &[])
                        .map_err(lmdb("writing by_seeders"))?;
                }
            }
            match f {
                Some(f) => {
                    v[slot / 8] |= 1 << (slot % 8);
                    encode_entry(&f, &mut v[at..at + ENTRY]);
                }
                None => {
                    v[slot / 8] &= !(1 << (slot % 8));
                    v[at..at + ENTRY].fill(0);
                }
            }
        }
    }
    if let Some((k, v)) = cur {
        flush(txn, dbs, &k, &v)?;
    }
    Ok(())
}

fn flush(txn: &mut RwTxn, dbs: &Dbs, k: &[u8; 4], v: &[u8]) -> Result<()> {
    if v[..BITMAP].iter().all(|&b| b == 0) {
        dbs.columns
            .delete(txn, k)
            .map_err(lmdb("writing columns"))?;
        Ok(())
    } else {
        dbs.columns.put(txn, k, v).map_err(lmdb("writing columns"))
    }
}

/// The fields of one torrent, `None` when it has no entry.
pub(super) fn get(txn: &RoTxn, dbs: &Dbs, docid: u32) -> Result<Option<SortFields>> {
    Ok(dbs
        .columns
        .get(txn, &chunk_key(docid))
        .map_err(lmdb("reading columns"))?
        .and_then(|v| entry(v, docid as usize % PER_CHUNK)))
}

/// Reads entries one doc id at a time, keeping the last chunk read (doc ids that
/// come in order, either way, read each chunk once).
pub(super) struct Reader<'t> {
    chunk: Option<(u32, Option<&'t [u8]>)>,
}

impl<'t> Reader<'t> {
    pub(super) fn new() -> Self {
        Reader { chunk: None }
    }

    /// The fields of `docid`, `None` when it has no entry.
    pub(super) fn get(
        &mut self,
        txn: &'t RoTxn,
        dbs: &Dbs,
        docid: u32,
    ) -> Result<Option<SortFields>> {
        let c = docid / PER;
        let v = match self.chunk {
            Some((at, v)) if at == c => v,
            _ => {
                let v = dbs
                    .columns
                    .get(txn, &c.to_be_bytes())
                    .map_err(lmdb("reading columns"))?;
                self.chunk = Some((c, v));
                v
            }
        };
        Ok(v.and_then(|v| entry(v, docid as usize % PER_CHUNK)))
    }
}

/// Calls `f(i, fields)` for each `docids[i]` (ascending) that has an entry; returns
/// how many had none. Dense doc ids are read by one cursor walk over the chunks they
/// span, sparse ones by one lookup per chunk.
pub(super) fn for_each(
    txn: &RoTxn,
    dbs: &Dbs,
    docids: impl ExactSizeIterator<Item = u32> + Clone,
    mut f: impl FnMut(usize, SortFields),
) -> Result<usize> {
    let n = docids.len();
    let mut it = docids.clone();
    let (Some(first), Some(last)) = (it.next(), docids.clone().last()) else {
        return Ok(0);
    };
    let span = ((last / PER) - (first / PER)) as usize + 1;
    let mut missing = 0;
    if n.saturating_mul(DENSE_FACTOR) < span {
        let mut chunk: Option<(u32, Option<&[u8]>)> = None;
        for (i, d) in docids.enumerate() {
            let c = d / PER;
            if chunk.map(|x| x.0) != Some(c) {
                let v = dbs
                    .columns
                    .get(txn, &c.to_be_bytes())
                    .map_err(lmdb("reading columns"))?;
                chunk = Some((c, v));
            }
            match chunk
                .and_then(|x| x.1)
                .and_then(|v| entry(v, d as usize % PER_CHUNK))
            {
                Some(e) => f(i, e),
                None => missing += 1,
            }
        }
        return Ok(missing);
    }
    let lo = chunk_key(first);
    let hi = chunk_key(last);
    let range = (Bound::Included(&lo[..]), Bound::Included(&hi[..]));
    let mut walk = dbs
        .columns
        .range(txn, &range)
        .map_err(lmdb("reading columns"))?;
    let mut cur: Option<(u32, &[u8])> = None;
    for (i, d) in docids.enumerate() {
        let c = d / PER;
        while cur.is_none_or(|x| x.0 < c) {
            match walk.next() {
                Some(r) => {
                    let (k, v) = r.map_err(lmdb("reading columns"))?;
                    match codec::docid_from(k) {
                        Ok(kc) => cur = Some((kc, v)),
                        Err(_) => continue,
                    }
                }
                None => {
                    cur = Some((u32::MAX, &[]));
                }
            }
        }
        match cur
            .filter(|x| x.0 == c)
            .and_then(|x| entry(x.1, d as usize % PER_CHUNK))
        {
            Some(e) => f(i, e),
            None => missing += 1,
        }
    }
    Ok(missing)
}

/// Fills `columns` from `torrents` (the upgrade to schema 6, and tests); returns
/// how many entries were written.
pub(super) fn rebuild(txn: &mut RwTxn, dbs: &Dbs) -> Result<u64> {
    dbs.columns.clear(txn).map_err(lmdb("clearing columns"))?;
    dbs.by_seeders
        .clear(txn)
        .map_err(lmdb("clearing by_seeders"))?;
    let mut after: Option<[u8; 4]> = None;
    let mut done = 0u64;
    loop {
        let mut chunk: Vec<(u32, SortFields)> = Vec::with_capacity(50_000);
        let mut read = 0usize;
        {
            let range = match &after {
                Some(k) => (Bound::Excluded(&k[..]), Bound::Unbounded),
                None => (Bound::Unbounded, Bound::Unbounded),
            };
            for r in dbs
                .torrents
                .range(txn, &range)
                .map_err(lmdb("reading torrents"))?
            {
                let (k, v) = r.map_err(lmdb("reading torrents"))?;
                let Ok(docid) = codec::docid_from(k) else {
                    continue;
                };
                after = Some(codec::docid_key(docid));
                read += 1;
                // A record that does not decode gets no entry (search skips it as
                // corrupt, as it did); `db check` reports it.
                if let Ok(f) = codec::torrent_sort_fields(v) {
                    chunk.push((docid, f));
                }
                if read == 50_000 {
                    break;
                }
            }
        }
        if read == 0 {
            break;
        }
        done += chunk.len() as u64;
        write(txn, dbs, chunk)?;
    }
    Ok(done)
}

/// Entries in `columns`, and chunks whose value has the wrong size.
pub(super) fn count(txn: &RoTxn, dbs: &Dbs) -> Result<(u64, u64)> {
    let (mut entries, mut bad) = (0u64, 0u64);
    for r in dbs.columns.iter(txn).map_err(lmdb("reading columns"))? {
        let (_, v) = r.map_err(lmdb("reading columns"))?;
        if v.len() == CHUNK_BYTES {
            entries += v[..BITMAP]
                .iter()
                .map(|b| u64::from(b.count_ones()))
                .sum::<u64>();
        } else {
            bad += 1;
        }
    }
    Ok((entries, bad))
}

/// Fills `by_seeders` from `columns` (the upgrade from schema 6 to 7); returns how
/// many entries were written.
pub(super) fn rebuild_seeders(txn: &mut RwTxn, dbs: &Dbs) -> Result<u64> {
    dbs.by_seeders
        .clear(txn)
        .map_err(lmdb("clearing by_seeders"))?;
    let mut keys: Vec<[u8; 10]> = Vec::new();
    for r in dbs.columns.iter(txn).map_err(lmdb("reading columns"))? {
        let (k, v) = r.map_err(lmdb("reading columns"))?;
        let Ok(c) = codec::docid_from(k) else {
            continue;
        };
        for slot in 0..PER_CHUNK {
            if let Some(s) = entry(v, slot).and_then(|e| e.seeders) {
                keys.push(seeders_key(s, c * PER + slot as u32));
            }
        }
    }
    keys.sort_unstable();
    for k in &keys {
        dbs.by_seeders
            .put(txn, k, &[])
            .map_err(lmdb("writing by_seeders"))?;
    }
    Ok(keys.len() as u64)
}

/// Problems of `by_seeders` against `columns`: a key that does not decode or names a
/// torrent whose entry has other (or no) seeders, or a count that differs from the
/// entries with known seeders.
pub(super) fn check_seeders(txn: &RoTxn, dbs: &Dbs) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let mut n = 0u64;
    let mut reader = Reader::new();
    for r in dbs
        .by_seeders
        .iter(txn)
        .map_err(lmdb("reading by_seeders"))?
    {
        let (k, _) = r.map_err(lmdb("reading by_seeders"))?;
        n += 1;
        match seeders_entry(k) {
            Some((s, d)) => {
                let have = reader.get(txn, dbs, d)?.and_then(|e| e.seeders);
                if have != Some(s) && problems.len() < 10 {
                    problems.push(format!(
                        "by_seeders lists doc {d} with {s} seeders, columns has {have:?}"
                    ));
                }
            }
            None if problems.len() < 10 => {
                problems.push(format!("by_seeders has a key of {} bytes", k.len()))
            }
            None => {}
        }
    }
    let mut known = 0u64;
    for r in dbs.columns.iter(txn).map_err(lmdb("reading columns"))? {
        let (_, v) = r.map_err(lmdb("reading columns"))?;
        known += (0..PER_CHUNK)
            .filter(|&i| entry(v, i).is_some_and(|e| e.seeders.is_some()))
            .count() as u64;
    }
    if n != known {
        problems.push(format!(
            "by_seeders has {n} entries for {known} torrents with known seeders"
        ));
    }
    Ok(problems)
}
