//! The search engine: [`Store::search`] and its parts. Posting lists are read from
//! `terms` (the last query word as a prefix, merged in a bitmap), intersected with
//! galloping search, then ordered by relevance, time or size (from doc id order,
//! per-match lookups in `torrents`, or a walk of `by_time`/`by_size`, whichever is
//! cheaper).

use std::sync::atomic::Ordering;

use heed::RoTxn;

use super::read::record_by_docid;
use super::{lmdb, read_u64, Dbs, Result, Store, K_NEXT_DOCID, K_TIME_DISORDER};
use crate::codec;
use crate::tokenize::tokenize;
use crate::types::TorrentRecord;

/// A prefix (the last query word) expands to at most this many terms.
pub const MAX_PREFIX_TERMS: usize = 20_000;
/// Time and size orders either look up every match in `torrents` (about 1 µs each) or
/// walk `by_time`/`by_size` from the wanted end until the page is full (about
/// `k · docs / matches` entries at tens of ns each); they walk when
/// `matches² · WALK_FACTOR > k · docs`.
const WALK_FACTOR: f64 = 20.0;
/// Largest page `search` returns.
pub const MAX_SEARCH_LIMIT: usize = 1_000;

/// Search result ordering.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    /// Most query words in the name first (a name hit beats a file-path hit), then newest.
    #[default]
    Relevance,
    /// Latest discovered_at first.
    Newest,
    /// Earliest discovered_at first.
    Oldest,
    /// Largest total size first.
    Largest,
    /// Smallest total size first.
    Smallest,
}

/// One page of search results.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchResults {
    /// All matches (not only this page).
    pub total: usize,
    /// This page of matches, in the requested order.
    pub hits: Vec<TorrentRecord>,
    /// The last word's prefix matched more than [`MAX_PREFIX_TERMS`] terms; only the
    /// first ones (in byte order) were used.
    pub prefix_truncated: bool,
    /// Corrupt records skipped (counted, never a panic).
    pub skipped_corrupt: usize,
}

impl Store {
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
pub(super) fn intersect(mut lists: Vec<Vec<u32>>) -> Vec<(u32, u32)> {
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
