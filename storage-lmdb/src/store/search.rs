//! The search engine: [`Store::query`] (and [`Store::search`], its classic form) and
//! its parts. Posting lists are read from `terms` (keeping the postings whose flags
//! meet a clause's scope; a prefix merged in a bitmap), intersected with galloping
//! search, excluded clauses subtracted, a discovery-time range cut as a doc id range
//! while doc ids are in time order (by relevance with no filter, words, scoped words,
//! exclusions and phrases take a shorter way: the blocks are walked from the last
//! until the page is certain, see `relevance_walk`);
//! then either ordered by relevance, time or size
//! (from doc id order, per-match lookups in `torrents`, or a walk of
//! `by_time`/`by_size`, whichever is cheaper), or, when a filter, a phrase or the
//! sort needs a match's fields, every match is looked up in `torrents` (fixed
//! offsets; phrases decode the name and, if need be, the file list).

use std::ops::Bound;
use std::sync::atomic::Ordering;

use heed::RoTxn;

use super::columns;
use super::facets;
use super::read::record_by_docid;
use super::{lmdb, read_u64, Dbs, Result, Store, K_NEXT_DOCID, K_TIME_DISORDER};
use crate::codec;
use crate::error::StoreError;
use crate::query::{parse, phrase_in, Parsed, Phrase, Scope, Term};
use crate::tokenize::IN_PATH;
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

/// The largest `offset` a query may ask for (deeper pages are refused).
pub const MAX_SEARCH_OFFSET: usize = 100_000;

/// Search result ordering (the orders of [`Store::search`]; [`SearchQuery`] has them
/// all, each in both directions).
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

/// What [`SearchQuery`] sorts by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortBy {
    /// Query words found in the name (a name hit beats a file-path hit); ties by doc
    /// id (discovery order).
    #[default]
    Relevance,
    /// Discovery time.
    Discovered,
    /// Total size.
    Size,
    /// Seeders (torrents whose seeders are unknown come last in both directions).
    Seeders,
    /// Number of files.
    Files,
}

/// A category and attribute filter, answered from the classifier's facets (stored
/// with each torrent; see [`Facets`](super::Facets)). An unknown category,
/// attribute or value is refused with [`StoreError::InvalidQuery`] listing the known
/// ones. With no query text, every torrent that passes the filter matches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FacetFilter {
    /// A content kind (`movie`, `tv_episode`, `tv_season`, `music`, `audiobook`,
    /// `ebook`, `comic`, `software`, `game`, `disc_image`, `archive`, `images`,
    /// `adult`, `other`), a group (`movies`, `tv`, `audio`, `books`, `pc`, `xxx`), a
    /// Torznab number (`2000` and its sub-categories, or `2040` alone), or several of
    /// these separated by commas (any of them).
    pub category: Option<String>,
    /// Attributes that must all hold, as (name, value): `year` (`1999` or
    /// `1990-1999`), `season`, `episode` (a number or a range), `resolution`
    /// (`1080p`), `source`, `codec`, `audio`, `language` (`en`, `fr`, …, `multi`),
    /// `category`.
    pub attributes: Vec<(String, String)>,
}

/// A search: text in the query language (see [`crate::query`]), sort, page and
/// filters. Built with [`SearchQuery::new`] and the builder methods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchQuery {
    /// The query text.
    pub text: String,
    /// What to sort by (default relevance).
    pub sort: SortBy,
    /// Largest first (the default) or smallest first.
    pub descending: bool,
    /// Matches to skip (at most [`MAX_SEARCH_OFFSET`]).
    pub offset: usize,
    /// Page size (capped at [`MAX_SEARCH_LIMIT`]; default 20).
    pub limit: usize,
    /// Smallest total size, inclusive.
    pub min_size: Option<u64>,
    /// Largest total size, inclusive.
    pub max_size: Option<u64>,
    /// Discovered at or after this time (Unix seconds).
    pub discovered_since: Option<u64>,
    /// Discovered before this time (Unix seconds, exclusive).
    pub discovered_before: Option<u64>,
    /// Category and attribute filter (see [`FacetFilter`]).
    pub facets: Option<FacetFilter>,
}

impl SearchQuery {
    /// A query for `text`, by relevance, the first 20 matches, no filter.
    pub fn new(text: impl Into<String>) -> SearchQuery {
        SearchQuery {
            text: text.into(),
            sort: SortBy::Relevance,
            descending: true,
            offset: 0,
            limit: 20,
            min_size: None,
            max_size: None,
            discovered_since: None,
            discovered_before: None,
            facets: None,
        }
    }
    /// Sorts by `by`, largest first unless [`SearchQuery::ascending`] follows.
    pub fn sort(mut self, by: SortBy) -> SearchQuery {
        self.sort = by;
        self
    }
    /// Smallest first.
    pub fn ascending(mut self) -> SearchQuery {
        self.descending = false;
        self
    }
    /// Largest first.
    pub fn descending(mut self) -> SearchQuery {
        self.descending = true;
        self
    }
    /// The page: skip `offset` matches, return at most `limit`.
    pub fn page(mut self, offset: usize, limit: usize) -> SearchQuery {
        self.offset = offset;
        self.limit = limit;
        self
    }
    /// Total size between `min` and `max` bytes, inclusive.
    pub fn size_range(mut self, min: Option<u64>, max: Option<u64>) -> SearchQuery {
        self.min_size = min;
        self.max_size = max;
        self
    }
    /// Discovered in `[since, before)` (Unix seconds).
    pub fn discovered_range(mut self, since: Option<u64>, before: Option<u64>) -> SearchQuery {
        self.discovered_since = since;
        self.discovered_before = before;
        self
    }
    /// Category and attribute filter.
    pub fn facets(mut self, f: FacetFilter) -> SearchQuery {
        self.facets = Some(f);
        self
    }
    /// The query of [`Store::search`]'s arguments.
    pub fn of_order(text: &str, limit: usize, offset: usize, order: Order) -> SearchQuery {
        let (sort, descending) = match order {
            Order::Relevance => (SortBy::Relevance, true),
            Order::Newest => (SortBy::Discovered, true),
            Order::Oldest => (SortBy::Discovered, false),
            Order::Largest => (SortBy::Size, true),
            Order::Smallest => (SortBy::Size, false),
        };
        SearchQuery {
            sort,
            descending,
            ..SearchQuery::new(text).page(offset, limit)
        }
    }
}

/// One page of search results.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchResults {
    /// All matches (not only this page).
    pub total: usize,
    /// This page of matches, in the requested order.
    pub hits: Vec<TorrentRecord>,
    /// A prefix matched more than [`MAX_PREFIX_TERMS`] terms; only the first ones
    /// (in byte order) were used.
    pub prefix_truncated: bool,
    /// Corrupt records skipped (counted, never a panic).
    pub skipped_corrupt: usize,
    /// `total` is an estimate: a phrase query had more than [`PHRASE_CHECK_BUDGET`]
    /// candidates (documents holding all its words), and only as many were checked
    /// as the page and the budget needed; `total` is the share of those that held the
    /// phrase, scaled to all candidates. Or a relevance query other than one
    /// unscoped word (several words, `name:`/`path:` words, exclusions, phrases)
    /// whose rarest word has more than [`RELEVANCE_EXACT_POSTINGS`] postings stopped
    /// once its page was certain; `total` is the share of the rarest word's walked
    /// postings that matched, scaled to all of them. The page itself is exact.
    pub total_estimated: bool,
}

/// A phrase query checks at most this many candidates beyond what its page needs,
/// in the page's order (see [`SearchResults::total_estimated`]). It was 2,000: at
/// 1 M torrents that made phrases the slowest shape (p99 ~50 ms on the loaded
/// machine; see BENCHMARKS.md), and the page is exact either way; 500 checks bound
/// the estimate's sampling error to a few percent.
pub const PHRASE_CHECK_BUDGET: usize = 500;

impl Store {
    /// Full-text search: [`Store::query`] with one of the classic orders and no filter.
    pub fn search(
        &self,
        query: &str,
        limit: usize,
        offset: usize,
        order: Order,
    ) -> Result<SearchResults> {
        self.query(&SearchQuery::of_order(query, limit, offset, order))
    }

    /// Runs a [`SearchQuery`]: the text's clauses (see [`crate::query`]), then the
    /// filters, the sort and the page, with the total number of matches.
    pub fn query(&self, q: &SearchQuery) -> Result<SearchResults> {
        let facet_filter = match &q.facets {
            Some(f) => facets::compile(f)?,
            None => facets::Compiled::default(),
        };
        if q.offset > MAX_SEARCH_OFFSET {
            return Err(StoreError::InvalidQuery(format!(
                "offset {} is past the limit of {MAX_SEARCH_OFFSET}; narrow the query instead",
                q.offset
            )));
        }
        if let (Some(a), Some(b)) = (q.min_size, q.max_size) {
            if a > b {
                return Err(StoreError::InvalidQuery(format!(
                    "the minimum size ({a}) is above the maximum size ({b})"
                )));
            }
        }
        if let (Some(a), Some(b)) = (q.discovered_since, q.discovered_before) {
            if a >= b {
                return Err(StoreError::InvalidQuery(format!(
                    "the discovery-time range [{a}, {b}) is empty"
                )));
            }
        }
        let parsed = parse(&q.text)?;
        if parsed.must.is_empty() && facet_filter.is_empty() {
            if !parsed.must_not.is_empty() {
                return Err(StoreError::InvalidQuery(
                    "a query needs at least one word that is not excluded".into(),
                ));
            }
            return Ok(SearchResults::default());
        }
        let mode = self.inner.order_mode.load(Ordering::Relaxed);
        self.read(|txn, dbs| run_query(txn, dbs, &parsed, q, mode, &facet_filter))
    }
}

/// The postings of one query term (only those whose flags meet its scope).
fn term_postings(
    txn: &RoTxn,
    dbs: &Dbs,
    t: &Term,
    ndocs: u64,
    res: &mut SearchResults,
) -> Result<Vec<u32>> {
    let mask = t.scope.mask();
    if t.prefix {
        let (l, truncated) = prefix_postings(txn, dbs, t.text.as_bytes(), ndocs, mask, res)?;
        res.prefix_truncated |= truncated;
        Ok(l)
    } else {
        postings(txn, dbs, t.text.as_bytes(), mask, res)
    }
}

/// Whether every phrase holds for `docid` (whose `torrents` value is `v`).
/// `in_paths[i]`, when given, holds the postings of every word of `phrases[i]`:
/// unless all have the path flag for `docid`, its file list is not read for it.
fn phrases_hold(
    txn: &RoTxn,
    dbs: &Dbs,
    docid: u32,
    v: &[u8],
    phrases: &[&Phrase],
    in_paths: &[Option<Vec<Vec<u32>>>],
    res: &mut SearchResults,
) -> Result<bool> {
    let path_ok = |i: usize| match in_paths.get(i) {
        Some(Some(ls)) => {
            let in_path = |l: &Vec<u32>| match l.binary_search_by_key(&docid, |p| p >> 2) {
                Ok(j) => l[j] & u32::from(IN_PATH) != 0,
                Err(_) => false,
            };
            ls.iter().all(in_path)
        }
        _ => true,
    };
    phrases_hold_with(txn, dbs, docid, v, phrases, &path_ok, res)
}

/// [`phrases_hold`] with `path_ok(i)`: whether `phrases[i]` may be in a file path
/// of `docid` (false: every word of it has a posting without the path flag, and
/// the file list is not read for it).
fn phrases_hold_with(
    txn: &RoTxn,
    dbs: &Dbs,
    docid: u32,
    v: &[u8],
    phrases: &[&Phrase],
    path_ok: &dyn Fn(usize) -> bool,
    res: &mut SearchResults,
) -> Result<bool> {
    let Ok(name) = codec::torrent_name(v) else {
        res.skipped_corrupt += 1;
        return Ok(false);
    };
    let mut files: Option<Vec<crate::types::FileEntry>> = None;
    for (i, ph) in phrases.iter().enumerate() {
        if ph.scope != Scope::Path && phrase_in(ph, name) {
            continue;
        }
        if ph.scope == Scope::Name {
            return Ok(false);
        }
        if !path_ok(i) {
            return Ok(false);
        }
        if files.is_none() {
            let dk = codec::docid_key(docid);
            let f = match dbs.files.get(txn, &dk).map_err(lmdb("reading files"))? {
                Some(fv) => codec::decode_files(fv).unwrap_or_else(|_| {
                    res.skipped_corrupt += 1;
                    Vec::new()
                }),
                None => Vec::new(),
            };
            files = Some(f);
        }
        if !files
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .any(|f| phrase_in(ph, &f.path))
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The first doc id discovered at or after `at` (the store is in time order).
fn first_docid_from(txn: &RoTxn, dbs: &Dbs, at: u64) -> Result<Option<u32>> {
    let lo = codec::by_time_key(at, 0);
    let range = (Bound::Included(&lo[..]), Bound::Unbounded);
    match dbs
        .by_time
        .range(txn, &range)
        .map_err(lmdb("reading by_time"))?
        .next()
    {
        Some(r) => {
            let (k, _) = r.map_err(lmdb("reading by_time"))?;
            Ok(k.get(8..12).and_then(|b| codec::docid_from(b).ok()))
        }
        None => Ok(None),
    }
}

fn run_query(
    txn: &RoTxn,
    dbs: &Dbs,
    parsed: &Parsed,
    q: &SearchQuery,
    mode: usize,
    facet_filter: &facets::Compiled,
) -> Result<SearchResults> {
    let mut res = SearchResults::default();
    let limit = q.limit.min(MAX_SEARCH_LIMIT);
    let offset = q.offset;
    let ndocs = read_u64(txn, &dbs.meta, K_NEXT_DOCID)?;
    let mut terms: Vec<&Term> = parsed.must.iter().flat_map(|c| &c.terms).collect();
    terms.sort();
    terms.dedup();
    // By relevance with no filter (words of any scope, exclusions, phrases): walk
    // the posting blocks from the end and stop once the page is certain (see
    // `relevance_walk`; mode 4 walks only unscoped words with no exclusion or phrase).
    let plain_relevance = (mode == 0 || mode == 2 || mode == 4 || mode == 5)
        && q.sort == SortBy::Relevance
        && q.descending
        && !terms.is_empty()
        && (mode != 4 || parsed.must_not.is_empty())
        && facet_filter.is_empty()
        && (mode != 4 || (q.min_size.is_none() && q.max_size.is_none()))
        && q.discovered_since.is_none()
        && q.discovered_before.is_none()
        && (mode != 4
            || (parsed.must.iter().all(|c| c.phrase.is_none())
                && terms.iter().all(|t| t.scope == Scope::Any)));
    if plain_relevance {
        if let Some(r) = relevance_walk(txn, dbs, parsed, &terms, q, ndocs)? {
            return Ok(r);
        }
    }
    // One unscoped word with no filter, by seeders or discovery time: walk the
    // order and look each candidate up in the word's posting blocks (see
    // `one_word_walk`), instead of decoding every posting.
    let one_word = (mode == 0 || mode == 2)
        && (q.sort == SortBy::Seeders || q.sort == SortBy::Discovered)
        && terms.len() == 1
        && terms[0].scope == Scope::Any
        && parsed.must_not.is_empty()
        && parsed.must.iter().all(|c| c.phrase.is_none())
        && facet_filter.is_empty()
        && q.min_size.is_none()
        && q.max_size.is_none()
        && q.discovered_since.is_none()
        && q.discovered_before.is_none();
    if one_word {
        if let Some(r) = one_word_walk(txn, dbs, terms[0], q, ndocs, mode)? {
            return Ok(r);
        }
    }
    let mut lists: Vec<Vec<u32>> = Vec::with_capacity(terms.len());
    for t in &terms {
        let l = term_postings(txn, dbs, t, ndocs, &mut res)?;
        if l.is_empty() {
            return Ok(res);
        }
        lists.push(l);
    }
    let no_text = lists.is_empty();
    // `columns` answers the size filter and a time range out of doc id order, and
    // gives the sort keys (modes 0 and 2; see `Store::set_order_mode`).
    let cols = mode == 0 || mode == 2 || mode == 4 || mode == 5;
    // Per phrase (modes 0 and 2), the postings of its words: a candidate for which
    // one of them lacks the path flag cannot hold it in a file path, and its file
    // list is not read for it.
    let mut in_paths: Vec<Option<Vec<Vec<u32>>>> = Vec::new();
    for c in &parsed.must {
        if let Some(ph) = &c.phrase {
            let unknown = !cols || ph.scope == Scope::Name || c.terms.iter().any(|t| t.prefix);
            in_paths.push(if unknown {
                None
            } else {
                c.terms
                    .iter()
                    .map(|t| {
                        terms
                            .binary_search(&t)
                            .ok()
                            .and_then(|i| lists.get(i).cloned())
                    })
                    .collect()
            });
        }
    }
    let mut matches = intersect(lists);
    // The facet filter: every torrent that passes it (no text), or the text's matches
    // that pass it.
    if no_text {
        let mut skipped = 0;
        matches = facets::matching(txn, dbs, facet_filter, &mut skipped)?
            .into_iter()
            .map(|d| (d, 0))
            .collect();
        res.skipped_corrupt += skipped;
    } else {
        facets::filter_matches(
            txn,
            dbs,
            facet_filter,
            &mut matches,
            &mut res.skipped_corrupt,
        )?;
    }
    // Exclusions: drop the matches that satisfy a negated clause.
    for c in &parsed.must_not {
        let mut ls = Vec::with_capacity(c.terms.len());
        for t in &c.terms {
            let l = term_postings(txn, dbs, t, ndocs, &mut res)?;
            if l.is_empty() {
                break;
            }
            ls.push(l);
        }
        if ls.len() < c.terms.len() || matches.is_empty() {
            continue;
        }
        let mut out: Vec<u32> = Vec::new();
        for (d, _) in intersect(ls) {
            if matches.binary_search_by_key(&d, |m| m.0).is_ok() {
                out.push(d);
            }
        }
        if let Some(ph) = &c.phrase {
            let mut kept = Vec::with_capacity(out.len());
            for d in out {
                if let Some(v) = dbs
                    .torrents
                    .get(txn, &codec::docid_key(d))
                    .map_err(lmdb("reading torrents"))?
                {
                    if phrases_hold(txn, dbs, d, v, &[ph], &[], &mut res)? {
                        kept.push(d);
                    }
                }
            }
            out = kept;
        }
        if !out.is_empty() {
            matches.retain(|m| out.binary_search(&m.0).is_err());
        }
    }
    let time_ordered = read_u64(txn, &dbs.meta, K_TIME_DISORDER)? == 0;
    let time_range = q.discovered_since.is_some() || q.discovered_before.is_some();
    if time_range && time_ordered {
        // Doc id order is time order: the range is a doc id range.
        let lo = match q.discovered_since {
            Some(s) => first_docid_from(txn, dbs, s)?.unwrap_or(u32::MAX),
            None => 0,
        };
        let hi = match q.discovered_before {
            Some(b) => first_docid_from(txn, dbs, b)?.unwrap_or(u32::MAX),
            None => u32::MAX,
        };
        matches.retain(|m| m.0 >= lo && m.0 < hi);
    }
    let phrases: Vec<&Phrase> = parsed
        .must
        .iter()
        .filter_map(|c| c.phrase.as_ref())
        .collect();
    let cols_filter =
        cols && (q.min_size.is_some() || q.max_size.is_some() || (time_range && !time_ordered));
    if cols_filter {
        filter_by_columns(txn, dbs, &mut matches, q, &mut res)?;
    }
    let mut size_filter = (q.min_size.is_some() || q.max_size.is_some()) && !cols_filter;
    let walk = match mode {
        1 => false,
        2 => true,
        _ => matches.len() as u64 * SIZE_WALK_FACTOR > ndocs,
    };
    if size_filter && walk {
        // Many matches: walk the size range of `by_size` instead of looking each up.
        size_filter = !filter_by_size_walk(
            txn,
            dbs,
            &mut matches,
            q.min_size,
            q.max_size,
            ndocs,
            &mut res,
        )?;
    }
    let time_checks = time_range && !time_ordered && !cols_filter;
    let checks = size_filter || time_checks || !phrases.is_empty();
    let fast = match (q.sort, q.descending) {
        _ if checks => None,
        (SortBy::Relevance, true) => Some(Order::Relevance),
        (SortBy::Relevance, false) => {
            // Least relevant first: score asc, docid asc.
            res.total = matches.len();
            let k = offset.saturating_add(limit).min(matches.len());
            if offset >= k {
                return Ok(res);
            }
            let key = |m: &(u32, u32)| (u64::from(m.1) << 32) | u64::from(m.0);
            top_k(&mut matches, k, key);
            let page: Vec<u32> = matches[offset..k].iter().map(|m| m.0).collect();
            push_records(txn, dbs, page, &mut res)?;
            return Ok(res);
        }
        (SortBy::Discovered, true) => Some(Order::Newest),
        (SortBy::Discovered, false) => Some(Order::Oldest),
        (SortBy::Size, true) => Some(Order::Largest),
        (SortBy::Size, false) => Some(Order::Smallest),
        _ => None,
    };
    let by_docid = q.sort == SortBy::Relevance || (q.sort == SortBy::Discovered && time_ordered);
    let phrase_only = !phrases.is_empty() && !size_filter && !time_checks;
    if phrase_only && (by_docid || cols) && matches.len() > PHRASE_CHECK_BUDGET {
        // Check candidates in the page's order: the page is exact; the total is
        // exact only if the budget reached every candidate.
        let desc = q.descending;
        if q.sort == SortBy::Relevance {
            let key = |m: &(u32, u32)| (u64::from(m.1) << 32) | u64::from(m.0);
            if desc {
                matches.sort_unstable_by_key(|m| std::cmp::Reverse(key(m)));
            } else {
                matches.sort_unstable_by_key(key);
            }
        } else if by_docid {
            if desc {
                matches.reverse();
            }
        } else {
            // The sort key of every candidate from `columns`, then in that order.
            let mut keyed = column_keys(txn, dbs, &matches, q.sort, desc, &mut res)?;
            keyed.sort_unstable_by_key(|x| (x.0, x.1));
            matches = keyed.into_iter().map(|x| (x.2, 0)).collect();
        }
        let k = offset.saturating_add(limit);
        let (mut checked, mut found) = (0usize, 0usize);
        let mut page = Vec::with_capacity(limit);
        for &(d, _) in &matches {
            if checked >= PHRASE_CHECK_BUDGET && found >= k {
                break;
            }
            checked += 1;
            let Some(v) = dbs
                .torrents
                .get(txn, &codec::docid_key(d))
                .map_err(lmdb("reading torrents"))?
            else {
                res.skipped_corrupt += 1;
                continue;
            };
            if phrases_hold(txn, dbs, d, v, &phrases, &in_paths, &mut res)? {
                if found >= offset && found < k {
                    page.push(d);
                }
                found += 1;
            }
        }
        res.total = if checked == matches.len() {
            found
        } else {
            res.total_estimated = true;
            ((found as f64 / checked as f64) * matches.len() as f64).round() as usize
        };
        push_records(txn, dbs, page, &mut res)?;
        return Ok(res);
    }
    if fast.is_none()
        && cols
        && phrases.is_empty()
        && q.sort == SortBy::Seeders
        && (mode == 0 || mode == 2)
    {
        // By seeders: walk `by_seeders` from the wanted end (see `seeders_walk`).
        let k = offset.saturating_add(limit);
        if let Some(page) = seeders_walk(txn, dbs, &matches, q.descending, offset, k, ndocs, mode)?
        {
            count_walk(3);
            res.total = matches.len();
            push_records(txn, dbs, page, &mut res)?;
            return Ok(res);
        }
    }
    let page = if let Some(order) = fast {
        res.total = matches.len();
        let k = offset.saturating_add(limit).min(matches.len());
        if offset >= k {
            return Ok(res);
        }
        page_in_order(
            txn,
            dbs,
            matches,
            order,
            offset,
            limit,
            ndocs,
            time_ordered,
            mode,
            &mut res,
        )?
    } else if cols && phrases.is_empty() {
        // Filters are applied: the sort keys of every match from `columns`, the
        // best `offset + limit` kept in a heap.
        let k = offset.saturating_add(limit);
        let mut best: std::collections::BinaryHeap<(u64, u32, u32)> =
            std::collections::BinaryHeap::with_capacity(k.min(matches.len()) + 1);
        let (sort, desc) = (q.sort, q.descending);
        let mut seen = 0usize;
        res.skipped_corrupt += columns::for_each(txn, dbs, matches.iter().map(|m| m.0), |i, f| {
            let (d, score) = matches[i];
            let key = sort_key(sort, desc, score, &f, d);
            seen += 1;
            if best.len() < k {
                best.push(key);
            } else if let Some(mut top) = best.peek_mut() {
                if key < *top {
                    *top = key;
                }
            }
        })?;
        res.total = seen;
        let keyed = best.into_sorted_vec();
        if offset >= keyed.len() {
            return Ok(res);
        }
        keyed[offset..].iter().map(|x| x.2).collect()
    } else {
        // Every match is looked up: filters, phrases, and the sort key.
        let desc = q.descending;
        let mut keyed: Vec<(u64, u32, u32)> = Vec::new();
        for &(d, score) in &matches {
            let Some(v) = dbs
                .torrents
                .get(txn, &codec::docid_key(d))
                .map_err(lmdb("reading torrents"))?
            else {
                res.skipped_corrupt += 1;
                continue;
            };
            let Ok(f) = codec::torrent_sort_fields(v) else {
                res.skipped_corrupt += 1;
                continue;
            };
            if q.min_size.is_some_and(|m| f.total_size < m)
                || q.max_size.is_some_and(|m| f.total_size > m)
                || q.discovered_since.is_some_and(|s| f.discovered_at < s)
                || q.discovered_before.is_some_and(|b| f.discovered_at >= b)
            {
                continue;
            }
            if !phrases.is_empty() && !phrases_hold(txn, dbs, d, v, &phrases, &in_paths, &mut res)?
            {
                continue;
            }
            keyed.push(sort_key(q.sort, desc, score, &f, d));
        }
        res.total = keyed.len();
        let k = offset.saturating_add(limit).min(keyed.len());
        if offset >= k {
            return Ok(res);
        }
        top_k(&mut keyed, k, |x| (x.0, x.1));
        keyed[offset..k].iter().map(|x| x.2).collect()
    };
    push_records(txn, dbs, page, &mut res)?;
    Ok(res)
}

/// The ascending key of match `d` (with relevance `score`) for `sort`: (value,
/// tie-break, doc id). Unknown values come last either way; ties by doc id in the
/// sort's direction.
fn sort_key(
    sort: SortBy,
    desc: bool,
    score: u32,
    f: &codec::SortFields,
    d: u32,
) -> (u64, u32, u32) {
    let val = match sort {
        SortBy::Relevance => Some(u64::from(score)),
        SortBy::Discovered => Some(f.discovered_at),
        SortBy::Size => Some(f.total_size),
        SortBy::Seeders => f.seeders.map(u64::from),
        SortBy::Files => Some(u64::from(f.file_count)),
    };
    let key = match val {
        None => u64::MAX,
        Some(v) if desc => u64::MAX - 1 - v.min(u64::MAX - 1),
        Some(v) => v.min(u64::MAX - 1),
    };
    (key, if desc { u32::MAX - d } else { d }, d)
}

#[cfg(test)]
thread_local! {
    /// Tests: pages answered by `one_word_walk` (time, -, seeders) and by
    /// `seeders_walk`, on this thread.
    pub(super) static WALKS_TAKEN: std::cell::Cell<[usize; 4]> = const { std::cell::Cell::new([0; 4]) };
}

#[cfg(test)]
fn count_walk(i: usize) {
    WALKS_TAKEN.with(|w| {
        let mut v = w.get();
        v[i] += 1;
        w.set(v);
    });
}
#[cfg(not(test))]
fn count_walk(_: usize) {}

/// A seeders sort walks `by_seeders` when `matches² > SEEDERS_WALK_FACTOR · k ·
/// docs`: it expects to read about `k · docs / matches` entries (a cursor step and a
/// binary search in the matches each) where reading every match's `columns` entry
/// costs about a fifth of that per match.
const SEEDERS_WALK_FACTOR: f64 = 4.0;
/// The walk gives up (and the caller reads `columns`) past this many times the
/// entries it expected to read.
const SEEDERS_WALK_BUDGET: usize = 8;

/// The page `offset..k` of `matches` (final: filters applied; ascending doc ids)
/// ordered by seeders (`desc`: most first; ties by doc id in the same direction),
/// from a walk of `by_seeders` from the wanted end that keeps the matches until `k`
/// are in. `None` (the caller reads every match's `columns` entry) when the matches
/// are too few for the walk to pay (mode 0; mode 2 always walks), when the walk
/// passes its budget, or when it ends before `k` matches with known seeders are in
/// (the page needs matches of unknown seeders, which come last).
#[allow(clippy::too_many_arguments)]
fn seeders_walk(
    txn: &RoTxn,
    dbs: &Dbs,
    matches: &[(u32, u32)],
    desc: bool,
    offset: usize,
    k: usize,
    ndocs: u64,
    mode: usize,
) -> Result<Option<Vec<u32>>> {
    let n = matches.len();
    if k == 0 || n == 0 {
        return Ok(None);
    }
    let expect = (k as f64) * (ndocs as f64) / (n as f64);
    let budget = if mode == 2 {
        usize::MAX
    } else if (n as f64) * (n as f64) > SEEDERS_WALK_FACTOR * (k as f64) * (ndocs as f64) {
        (expect * SEEDERS_WALK_BUDGET as f64) as usize + 1_024
    } else {
        return Ok(None);
    };
    let mut hits: Vec<u32> = Vec::with_capacity(k.min(n));
    let mut order = columns::SeedersOrder::new(txn, dbs, ndocs, desc)?;
    let mut read = 0usize;
    while let Some((_, d)) = order.next()? {
        read += 1;
        if matches.binary_search_by_key(&d, |m| m.0).is_ok() {
            hits.push(d);
            if hits.len() >= k {
                break;
            }
        }
        if read >= budget {
            break;
        }
    }
    if order.bad > 0 {
        return Ok(None);
    }
    if hits.len() < k {
        return Ok(None);
    }
    Ok(Some(hits.get(offset..).unwrap_or(&[]).to_vec()))
}

/// The sort keys (see `sort_key`) of `matches` from `columns`; a match without an
/// entry is counted as corrupt and left out.
fn column_keys(
    txn: &RoTxn,
    dbs: &Dbs,
    matches: &[(u32, u32)],
    sort: SortBy,
    desc: bool,
    res: &mut SearchResults,
) -> Result<Vec<(u64, u32, u32)>> {
    let mut keyed = Vec::with_capacity(matches.len());
    res.skipped_corrupt += columns::for_each(txn, dbs, matches.iter().map(|m| m.0), |i, f| {
        let (d, score) = matches[i];
        keyed.push(sort_key(sort, desc, score, &f, d));
    })?;
    Ok(keyed)
}

/// Keeps the matches whose `columns` entry meets the size and discovery-time
/// ranges of `q`; a match without an entry is counted as corrupt and dropped.
fn filter_by_columns(
    txn: &RoTxn,
    dbs: &Dbs,
    matches: &mut Vec<(u32, u32)>,
    q: &SearchQuery,
    res: &mut SearchResults,
) -> Result<()> {
    let (lo, hi) = (q.min_size.unwrap_or(0), q.max_size.unwrap_or(u64::MAX));
    let (since, before) = (
        q.discovered_since.unwrap_or(0),
        q.discovered_before.unwrap_or(u64::MAX),
    );
    let mut keep = vec![false; matches.len()];
    res.skipped_corrupt += columns::for_each(txn, dbs, matches.iter().map(|m| m.0), |i, f| {
        keep[i] = f.total_size >= lo
            && f.total_size <= hi
            && f.discovered_at >= since
            && (q.discovered_before.is_none() || f.discovered_at < before);
    })?;
    let mut i = 0;
    matches.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    Ok(())
}

/// Appends the records of `page` to the hits.
fn push_records(txn: &RoTxn, dbs: &Dbs, page: Vec<u32>, res: &mut SearchResults) -> Result<()> {
    for docid in page {
        match record_by_docid(txn, dbs, docid)? {
            Some(r) => res.hits.push(r),
            None => res.skipped_corrupt += 1,
        }
    }
    Ok(())
}

/// A size filter walks `by_size` when `matches · SIZE_WALK_FACTOR > docs`: a lookup
/// in `torrents` costs about as much as walking 40 `by_size` entries.
const SIZE_WALK_FACTOR: u64 = 40;

/// Keeps the matches whose size is in `[min, max]`, from a walk of the size classes
/// of the range in `by_size` (a bitmap over doc ids); the matches of the two
/// boundary classes are checked exactly in `torrents`. Returns true (the filter is
/// applied).
fn filter_by_size_walk(
    txn: &RoTxn,
    dbs: &Dbs,
    matches: &mut Vec<(u32, u32)>,
    min: Option<u64>,
    max: Option<u64>,
    ndocs: u64,
    res: &mut SearchResults,
) -> Result<bool> {
    let (lo, hi) = (min.unwrap_or(0), max.unwrap_or(u64::MAX));
    let (blo, bhi) = (codec::size_bucket(lo), codec::size_bucket(hi));
    let words = (ndocs as usize).div_ceil(64);
    let mut sure = vec![0u64; words];
    let mut edge = vec![0u64; words];
    let start = codec::by_size_key(lo, 0);
    let mut end = [0xffu8; 6];
    end[..2].copy_from_slice(&bhi.to_be_bytes());
    let range = (Bound::Included(&start[..]), Bound::Included(&end[..]));
    for r in dbs
        .by_size
        .range(txn, &range)
        .map_err(lmdb("reading by_size"))?
    {
        let (k, _) = r.map_err(lmdb("reading by_size"))?;
        let (Some(b), Some(d)) = (
            k.get(..2).and_then(|b| <[u8; 2]>::try_from(b).ok()),
            k.get(2..6).and_then(|b| codec::docid_from(b).ok()),
        ) else {
            res.skipped_corrupt += 1;
            continue;
        };
        let b = u16::from_be_bytes(b);
        let d = d as usize;
        let set = if b == blo || b == bhi {
            &mut edge
        } else {
            &mut sure
        };
        match set.get_mut(d / 64) {
            Some(w) => *w |= 1 << (d % 64),
            None => res.skipped_corrupt += 1,
        }
    }
    let bit = |v: &[u64], d: u32| {
        v.get(d as usize / 64)
            .is_some_and(|w| w >> (d % 64) & 1 == 1)
    };
    let mut keep = Vec::with_capacity(matches.len());
    for &m in matches.iter() {
        if bit(&sure, m.0) {
            keep.push(m);
        } else if bit(&edge, m.0) {
            match dbs
                .torrents
                .get(txn, &codec::docid_key(m.0))
                .map_err(lmdb("reading torrents"))?
                .map(codec::torrent_sort_fields)
            {
                Some(Ok(f)) if f.total_size >= lo && f.total_size <= hi => keep.push(m),
                Some(Ok(_)) => {}
                _ => res.skipped_corrupt += 1,
            }
        }
    }
    *matches = keep;
    Ok(true)
}

/// The page `offset..offset + limit` of `matches` (non-empty, `offset` inside) in
/// one of the classic orders, by the cheapest way (see `WALK_FACTOR`).
#[allow(clippy::too_many_arguments)]
fn page_in_order(
    txn: &RoTxn,
    dbs: &Dbs,
    mut matches: Vec<(u32, u32)>,
    order: Order,
    offset: usize,
    limit: usize,
    ndocs: u64,
    time_ordered: bool,
    mode: usize,
    res: &mut SearchResults,
) -> Result<Vec<u32>> {
    let k = offset.saturating_add(limit).min(matches.len());
    Ok(match order {
        Order::Relevance => {
            // Key: score desc, docid desc.
            let key = |m: &(u32, u32)| std::cmp::Reverse((u64::from(m.1) << 32) | u64::from(m.0));
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
        _ if match mode {
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
                exact_order(txn, dbs, hits.into_iter(), order, offset, k, mode, res)?
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
                mode,
                res,
            )?
        }
    })
}

/// A relevance query of several words whose rarest word has more postings than this
/// stops as soon as its page is certain and estimates its total (see
/// [`SearchResults::total_estimated`]); with fewer, every posting of the rarest
/// word is walked and the total is exact. One word's total is always exact.
#[cfg(not(test))]
pub const RELEVANCE_EXACT_POSTINGS: usize = 20_000;
/// (Small in tests, so that random stores take both ways.)
#[cfg(test)]
pub const RELEVANCE_EXACT_POSTINGS: usize = 100;
/// A relevance walk whose total is estimated walks at least this many postings of
/// the rarest word before it stops: the share that matched, measured on a few dozen
/// postings, made the estimates of the most popular words (queried most often) off
/// by tens of percent (the mean total of one word with a size range at 1 M was
/// 19 % high; see BENCHMARKS.md).
#[cfg(not(test))]
pub const RELEVANCE_MIN_SAMPLE: usize = 1_000;
/// (Small in tests.)
#[cfg(test)]
pub const RELEVANCE_MIN_SAMPLE: usize = 30;

/// The number of postings in a block, without decoding it: one varint each, and a
/// varint's last byte is the only one with the high bit clear.
fn block_count(b: &[u8]) -> usize {
    b.get(8..)
        .map_or(0, |p| p.iter().filter(|&&x| x & 0x80 == 0).count())
}

/// The first doc id of a block (its header; `u32::MAX` if the block is too short).
fn block_first(b: &[u8]) -> u32 {
    b.get(..4)
        .and_then(|x| <[u8; 4]>::try_from(x).ok())
        .map_or(u32::MAX, u32::from_be_bytes)
}

/// Relevance order (words in the name, then doc id, both descending) for words of
/// any scope, with exclusions and phrases, without decoding every posting: the
/// posting blocks of every word are listed (their postings counted from their
/// bytes), the rarest word's blocks are decoded from the last, and each of its doc
/// ids is looked up in the other words' blocks found by their headers (first and
/// last doc id), decoding only those; a `name:`/`path:` word keeps only its
/// postings with the scope's flag. A candidate is then looked up the same way in
/// the words of each excluded clause (dropped when it holds all of them, and the
/// clause's phrase if any), and a size range checked on its `columns` entry.
/// Matches holding every word in the name (the best class)
/// come in doc id order, descending, so the walk stops once `offset + limit` of
/// them are in, unless the total needs the rest: one unscoped word's total is its
/// posting count; otherwise the walk goes on to the end when the rarest word has at
/// most [`RELEVANCE_EXACT_POSTINGS`] postings, and otherwise the total is estimated
/// from the share of the walked postings that matched (the walk then takes at least
/// [`RELEVANCE_MIN_SAMPLE`] postings). Phrases are checked (name,
/// then file list unless a word lacks the path flag) on best-class candidates as
/// they come, on the others only when the page needs them or for the total while
/// fewer than [`PHRASE_CHECK_BUDGET`] were checked (past it, the total is an
/// estimate, as in the general path). `None` (nothing read is wrong, the caller
/// takes the general path) when a block is corrupt.
fn relevance_walk(
    txn: &RoTxn,
    dbs: &Dbs,
    parsed: &Parsed,
    terms: &[&Term],
    q: &SearchQuery,
    ndocs: u64,
) -> Result<Option<SearchResults>> {
    let mut res = SearchResults::default();
    let (offset, limit) = (q.offset, q.limit.min(MAX_SEARCH_LIMIT));
    let k = offset.saturating_add(limit);
    // A size range: each candidate's size from `columns` (a candidate without an
    // entry is counted as corrupt and left out, as `filter_by_columns` does).
    let sized = q.min_size.is_some() || q.max_size.is_some();
    let (min_size, max_size) = (q.min_size.unwrap_or(0), q.max_size.unwrap_or(u64::MAX));
    let mut cols = columns::Reader::new();
    let mut lists: Vec<WalkList> = Vec::with_capacity(terms.len());
    for (ti, t) in terms.iter().enumerate() {
        let Some(mut l) = walk_list(txn, dbs, t, ndocs, &mut res)? else {
            return Ok(None);
        };
        if l.n == 0 {
            return Ok(Some(SearchResults {
                prefix_truncated: res.prefix_truncated,
                ..SearchResults::default()
            }));
        }
        l.term = ti;
        lists.push(l);
    }
    lists.sort_by_key(|l| l.n);
    // Excluded clauses: the lists of their words (a clause one of whose words has
    // no posting excludes nothing), and their phrase.
    let mut excl: Vec<(Vec<WalkList>, Option<&Phrase>)> = Vec::new();
    'clause: for c in &parsed.must_not {
        let mut ls = Vec::with_capacity(c.terms.len());
        for t in &c.terms {
            let Some(l) = walk_list(txn, dbs, t, ndocs, &mut res)? else {
                return Ok(None);
            };
            if l.n == 0 {
                continue 'clause;
            }
            ls.push(l);
        }
        excl.push((ls, c.phrase.as_ref()));
    }
    // Phrases, each with the lists of its words when their path flags tell whether
    // it may be in a file path (not for a prefix word, whose union loses them).
    let mut phrases: Vec<&Phrase> = Vec::new();
    let mut phrase_lists: Vec<Option<Vec<usize>>> = Vec::new();
    for c in &parsed.must {
        if let Some(ph) = &c.phrase {
            phrases.push(ph);
            let unknown = ph.scope == Scope::Name || c.terms.iter().any(|t| t.prefix);
            phrase_lists.push(if unknown {
                None
            } else {
                c.terms
                    .iter()
                    .map(|t| {
                        let ti = terms.iter().position(|x| *x == t)?;
                        lists.iter().position(|l| l.term == ti)
                    })
                    .collect()
            });
        }
    }
    if phrases.len() > 32 {
        return Ok(None);
    }
    let nt = lists.len() as u32;
    let driver = &lists[0];
    let driver_total = driver.n;
    let others = &lists[1..];
    let simple = nt == 1 && excl.is_empty() && phrases.is_empty() && driver.mask == 3 && !sized;
    let exact = simple || driver_total <= RELEVANCE_EXACT_POSTINGS;
    let mut big: Vec<BlockCursor> = others.iter().map(|l| BlockCursor::new(&l.big)).collect();
    let mut small: Vec<SmallCursor> = others.iter().map(|l| SmallCursor::new(&l.small)).collect();
    let mut ex_cur: Vec<Vec<(BlockCursor, SmallCursor)>> = excl
        .iter()
        .map(|(ls, _)| {
            ls.iter()
                .map(|l| (BlockCursor::new(&l.big), SmallCursor::new(&l.small)))
                .collect()
        })
        .collect();
    let mut best: Vec<u32> = Vec::new();
    // Lower classes while the page may need them: (doc id, score, path bits of the
    // phrases: bit i set when phrase i may be in a file path).
    let mut rest: Vec<(u32, u32, u32)> = Vec::new();
    let (mut walked, mut matched, mut stopped) = (0usize, 0usize, false);
    // Phrase checks: candidates checked, and those holding every phrase.
    let (mut checked, mut found) = (0usize, 0usize);
    let mut raw: Vec<u32> = vec![0; lists.len()];
    // The driver's postings, descending: its blocks from the last, merged with its
    // decoded rest.
    let (mut blocks_left, mut si) = (driver.big.len(), driver.small.len());
    let mut buf: Vec<u32> = Vec::new();
    'walk: loop {
        if buf.is_empty() && blocks_left > 0 {
            blocks_left -= 1;
            if codec::block_decode(driver.big[blocks_left], &mut buf).is_err() {
                return Ok(None);
            }
        }
        let b = buf.last().copied();
        let sm = si.checked_sub(1).map(|i| driver.small[i]);
        let (x, y) = match (b, sm) {
            (None, None) => break,
            (Some(x), Some(y)) if x >> 2 == y >> 2 => {
                buf.pop();
                si -= 1;
                (Some(x), Some(y))
            }
            (Some(x), Some(y)) if x >> 2 > y >> 2 => {
                buf.pop();
                (Some(x), None)
            }
            (Some(x), None) => {
                buf.pop();
                (Some(x), None)
            }
            (_, Some(y)) => {
                si -= 1;
                (None, Some(y))
            }
        };
        if k > 0
            && best.len() >= k
            && (simple
                || (walked >= RELEVANCE_MIN_SAMPLE
                    && (!exact || (!phrases.is_empty() && checked >= PHRASE_CHECK_BUDGET))))
        {
            stopped = true;
            break;
        }
        walked += 1;
        let Some((d, mut score, r0)) = combine(x, y, driver.mask) else {
            continue;
        };
        raw[0] = r0;
        for (i, (bc, sc)) in big.iter_mut().zip(small.iter_mut()).enumerate() {
            let Ok(x) = bc.find(d) else {
                return Ok(None);
            };
            match combine(x, sc.find(d), others[i].mask) {
                None => continue 'walk,
                Some((_, s, r)) => {
                    score += s;
                    raw[i + 1] = r;
                }
            }
        }
        for ((ls, ph), curs) in excl.iter().zip(ex_cur.iter_mut()) {
            let mut all = true;
            for (l, (bc, sc)) in ls.iter().zip(curs.iter_mut()) {
                let Ok(x) = bc.find(d) else {
                    return Ok(None);
                };
                if combine(x, sc.find(d), l.mask).is_none() {
                    all = false;
                    break;
                }
            }
            if !all {
                continue;
            }
            let Some(ph) = ph else {
                continue 'walk;
            };
            if let Some(v) = dbs
                .torrents
                .get(txn, &codec::docid_key(d))
                .map_err(lmdb("reading torrents"))?
            {
                if phrases_hold_with(txn, dbs, d, v, &[*ph], &|_| true, &mut res)? {
                    continue 'walk;
                }
            }
        }
        if sized {
            match cols.get(txn, dbs, d)? {
                Some(f) if f.total_size >= min_size && f.total_size <= max_size => {}
                Some(_) => continue,
                None => {
                    res.skipped_corrupt += 1;
                    continue;
                }
            }
        }
        matched += 1;
        if phrases.is_empty() {
            if score == nt {
                best.push(d);
            } else if best.len() < k {
                rest.push((d, score, 0));
            }
            continue;
        }
        let mut bits = 0u32;
        for (i, pl) in phrase_lists.iter().enumerate() {
            let ok = match pl {
                Some(ix) => ix
                    .iter()
                    .all(|&li| raw.get(li).is_some_and(|r| r & u32::from(IN_PATH) != 0)),
                None => true,
            };
            bits |= u32::from(ok) << i;
        }
        if score != nt && best.len() < k {
            // Checked at the end if the page needs it.
            rest.push((d, score, bits));
            continue;
        }
        if (score == nt && best.len() < k) || checked < PHRASE_CHECK_BUDGET {
            checked += 1;
            if phrase_check(txn, dbs, d, bits, &phrases, &mut res)? {
                found += 1;
                if score == nt {
                    best.push(d);
                }
            }
        }
    }
    let page: Vec<u32> = if k > 0 && best.len() >= k {
        best[offset..k].to_vec()
    } else {
        // Every posting was walked: the best class, then the rest by score, each
        // in descending doc id order (the sort is stable); phrases are checked on
        // the rest in that order until the page is full (and for the total while
        // under the budget).
        rest.sort_by_key(|m| std::cmp::Reverse(m.1));
        let mut more: Vec<u32> = Vec::new();
        if phrases.is_empty() {
            more.extend(rest.iter().map(|m| m.0));
        } else {
            for &(d, _, bits) in &rest {
                if best.len() + more.len() >= k && checked >= PHRASE_CHECK_BUDGET {
                    break;
                }
                checked += 1;
                if phrase_check(txn, dbs, d, bits, &phrases, &mut res)? {
                    found += 1;
                    more.push(d);
                }
            }
        }
        best.iter()
            .copied()
            .chain(more)
            .skip(offset)
            .take(limit)
            .collect()
    };
    let scaled = |n: usize| -> usize {
        let est = (n as f64 / walked.max(1) as f64) * driver_total as f64;
        (est.round() as usize).max(n)
    };
    res.total = if simple {
        driver_total
    } else if phrases.is_empty() {
        if stopped {
            res.total_estimated = true;
            scaled(matched)
        } else {
            matched
        }
    } else if !stopped && checked == matched {
        found
    } else {
        res.total_estimated = true;
        let cands = if stopped { scaled(matched) } else { matched };
        let est = (found as f64 / checked.max(1) as f64) * cands as f64;
        (est.round() as usize).max(found)
    };
    push_records(txn, dbs, page, &mut res)?;
    Ok(Some(res))
}

/// Whether every phrase holds for `d` (`bits`: bit i set when phrase i may be in a
/// file path); a missing record is counted as corrupt.
fn phrase_check(
    txn: &RoTxn,
    dbs: &Dbs,
    d: u32,
    bits: u32,
    phrases: &[&Phrase],
    res: &mut SearchResults,
) -> Result<bool> {
    let Some(v) = dbs
        .torrents
        .get(txn, &codec::docid_key(d))
        .map_err(lmdb("reading torrents"))?
    else {
        res.skipped_corrupt += 1;
        return Ok(false);
    };
    phrases_hold_with(txn, dbs, d, v, phrases, &|i| bits >> i & 1 == 1, res)
}

/// A doc id's postings in a [`WalkList`]: `x` from its blocks (raw: kept only if its
/// flags meet `mask`), `y` from its decoded rest (already filtered). Returns the doc
/// id, whether a kept posting has the name flag, and the posting (flags of `x` if
/// kept, else of `y`); `None` when neither is kept.
fn combine(x: Option<u32>, y: Option<u32>, mask: u32) -> Option<(u32, u32, u32)> {
    let x = x.filter(|p| mask == 3 || p & mask != 0);
    match (x, y) {
        (None, None) => None,
        (Some(p), None) | (None, Some(p)) => Some((p >> 2, p & 1, p)),
        (Some(p), Some(q)) => Some((p >> 2, (p | q) & 1, p)),
    }
}

/// A word's postings for `relevance_walk`: the blocks of its term (of a prefix,
/// its term with the most postings; raw, all flags), the postings of a prefix's
/// other terms decoded (ascending, one per doc id, only those whose flags meet the
/// scope, name flags or-ed), the number of distinct doc ids among them all (of
/// every flag: for a scoped word, at least its matches), the scope's mask and the
/// index of its term.
struct WalkList<'a> {
    big: Vec<&'a [u8]>,
    small: Vec<u32>,
    n: usize,
    mask: u32,
    term: usize,
}

/// The [`WalkList`] of `t` (`None` when a block is corrupt: the general path then
/// counts it). Postings are counted from the blocks' bytes, not decoded, except
/// those of a prefix's smaller terms.
fn walk_list<'a>(
    txn: &'a RoTxn,
    dbs: &Dbs,
    t: &Term,
    ndocs: u64,
    res: &mut SearchResults,
) -> Result<Option<WalkList<'a>>> {
    let mask = u32::from(t.scope.mask());
    // Per term: its blocks and its posting count.
    let mut keys: Vec<(Vec<&'a [u8]>, usize)> = Vec::new();
    let mut last: &[u8] = &[];
    for r in dbs
        .terms
        .prefix_iter(txn, t.text.as_bytes())
        .map_err(lmdb("reading postings"))?
    {
        let (key, v) = r.map_err(lmdb("reading postings"))?;
        if !t.prefix && key != t.text.as_bytes() {
            break;
        }
        if keys.is_empty() || key != last {
            if keys.len() == MAX_PREFIX_TERMS {
                res.prefix_truncated = true;
                break;
            }
            keys.push((Vec::new(), 0));
            last = key;
        }
        if v.len() < 9 || block_first(v) > codec::block_last(v).unwrap_or(0) {
            return Ok(None);
        }
        let e = keys.last_mut().expect("pushed above");
        e.1 += block_count(v);
        e.0.push(v);
    }
    let Some(bi) = (0..keys.len()).max_by_key(|&i| keys[i].1) else {
        return Ok(Some(WalkList {
            big: Vec::new(),
            small: Vec::new(),
            n: 0,
            mask,
            term: 0,
        }));
    };
    let (big, big_n) = keys.swap_remove(bi);
    let rest_n: usize = keys.iter().map(|k| k.1).sum();
    if rest_n > big_n / 4 {
        // No term dominates the prefix: their union in a bitmap (as the general
        // path does) beats sorting their postings.
        let (l, truncated) =
            prefix_postings(txn, dbs, t.text.as_bytes(), ndocs, t.scope.mask(), res)?;
        if res.skipped_corrupt > 0 {
            return Ok(None);
        }
        res.prefix_truncated |= truncated;
        return Ok(Some(WalkList {
            big: Vec::new(),
            n: l.len(),
            small: l,
            mask,
            term: 0,
        }));
    }
    let mut small = Vec::new();
    for (blocks, _) in &keys {
        for b in blocks {
            if codec::block_decode(b, &mut small).is_err() {
                return Ok(None);
            }
        }
    }
    if mask != 3 {
        small.retain(|p| p & mask != 0);
    }
    small.sort_unstable();
    // One posting per doc id, name flags or-ed (as the general path's union).
    let mut out: Vec<u32> = Vec::with_capacity(small.len());
    for p in small {
        match out.last_mut() {
            Some(l) if *l >> 2 == p >> 2 => *l |= p & 1,
            _ => out.push(p),
        }
    }
    // Distinct doc ids: the big term's, and those of the others it lacks.
    let mut n = big_n;
    let mut cur = BlockCursor::new(&big);
    for p in out.iter().rev() {
        match cur.find(p >> 2) {
            Ok(None) => n += 1,
            Ok(Some(_)) => {}
            Err(()) => return Ok(None),
        }
    }
    Ok(Some(WalkList {
        big,
        small: out,
        n,
        mask,
        term: 0,
    }))
}

/// Finds doc ids, asked in non-increasing order, in posting blocks: the blocks are
/// found by their headers, and only those decoded.
struct BlockCursor<'b, 'a> {
    blocks: &'b [&'a [u8]],
    /// Blocks that may still hold a doc id at or below the last one asked.
    left: usize,
    /// The last decoded block: its index and postings.
    at: usize,
    dec: Vec<u32>,
}

impl<'b, 'a> BlockCursor<'b, 'a> {
    fn new(blocks: &'b [&'a [u8]]) -> Self {
        BlockCursor {
            blocks,
            left: blocks.len(),
            at: usize::MAX,
            dec: Vec::new(),
        }
    }

    /// The raw posting of `d`, if any; `Err` when its block is corrupt.
    fn find(&mut self, d: u32) -> std::result::Result<Option<u32>, ()> {
        while self.left > 0 && block_first(self.blocks[self.left - 1]) > d {
            self.left -= 1;
        }
        let Some(i) = self.left.checked_sub(1) else {
            return Ok(None);
        };
        if codec::block_last(self.blocks[i]).unwrap_or(0) < d {
            return Ok(None);
        }
        if self.at != i {
            self.dec.clear();
            codec::block_decode(self.blocks[i], &mut self.dec).map_err(|_| ())?;
            self.at = i;
        }
        Ok(self
            .dec
            .binary_search_by_key(&d, |x| x >> 2)
            .ok()
            .map(|j| self.dec[j]))
    }
}

/// Finds doc ids, asked in any order, among the postings of one unscoped word's
/// [`WalkList`]: its decoded rest by binary search, its blocks by their headers
/// (the last decoded one kept: doc ids asked in order decode each block once).
struct AnyFinder<'b, 'a> {
    list: &'b WalkList<'a>,
    at: usize,
    dec: Vec<u32>,
}

impl<'b, 'a> AnyFinder<'b, 'a> {
    fn new(list: &'b WalkList<'a>) -> Self {
        AnyFinder {
            list,
            at: usize::MAX,
            dec: Vec::new(),
        }
    }

    /// Whether `d` has a posting; `Err` when its block is corrupt.
    fn has(&mut self, d: u32) -> std::result::Result<bool, ()> {
        if self.list.small.binary_search_by_key(&d, |p| p >> 2).is_ok() {
            return Ok(true);
        }
        let blocks = &self.list.big;
        let Some(i) = blocks
            .partition_point(|b| block_first(b) <= d)
            .checked_sub(1)
        else {
            return Ok(false);
        };
        if codec::block_last(blocks[i]).unwrap_or(0) < d {
            return Ok(false);
        }
        if self.at != i {
            self.dec.clear();
            codec::block_decode(blocks[i], &mut self.dec).map_err(|_| ())?;
            self.at = i;
        }
        Ok(self.dec.binary_search_by_key(&d, |x| x >> 2).is_ok())
    }
}

/// A one-word walk of seeders is taken when `postings² > ONE_WORD_WALK_FACTOR · k ·
/// docs`: it expects to read about `k · docs / postings` entries of the order, each
/// looked up in the word's blocks (a block decoded for most), where the general
/// path decodes every posting and reads its `columns` entry.
const ONE_WORD_WALK_FACTOR: f64 = 16.0;

/// One unscoped word (a prefix too) with no filter, sorted by seeders or discovery
/// time, without decoding every posting of it: its [`WalkList`] (the total is its
/// count of doc ids), then
/// - seeders: `by_seeders` walked from the wanted end ([`columns::SeedersOrder`]),
///   each entry looked up in the word's blocks ([`AnyFinder`]), until the page is in;
/// - discovery time, on a store in time order: the word's postings from the wanted
///   end (doc id order is time order).
///
/// (Size orders are not taken here: `by_size` walked the same way, to the end of the
/// size class that fills the page, was slower at 1 M than the general path's walk
/// against the decoded postings, p50 0.41 → 0.47 ms; see BENCHMARKS.md.)
///
/// `None` (the caller takes the general path) when the word has too few postings
/// for the seeders walk to pay (mode 0; mode 2 always walks), when that walk passes
/// its budget or ends before the page is full (matches of unknown seeders come
/// last), on a store out of time order for a time sort, or when a block is corrupt.
fn one_word_walk(
    txn: &RoTxn,
    dbs: &Dbs,
    t: &Term,
    q: &SearchQuery,
    ndocs: u64,
    mode: usize,
) -> Result<Option<SearchResults>> {
    let mut res = SearchResults::default();
    let (offset, limit) = (q.offset, q.limit.min(MAX_SEARCH_LIMIT));
    let k = offset.saturating_add(limit);
    if k == 0 {
        return Ok(None);
    }
    let time_ordered = read_u64(txn, &dbs.meta, K_TIME_DISORDER)? == 0;
    if q.sort == SortBy::Discovered && !time_ordered {
        return Ok(None);
    }
    let Some(list) = walk_list(txn, dbs, t, ndocs, &mut res)? else {
        return Ok(None);
    };
    if list.mask != 3 {
        return Ok(None);
    }
    res.total = list.n;
    if list.n == 0 || offset >= list.n {
        return Ok(Some(res));
    }
    let page: Vec<u32> = match q.sort {
        SortBy::Discovered => {
            let Some(ends) = list_end(&list, k, q.descending) else {
                return Ok(None);
            };
            ends.get(offset..).unwrap_or(&[]).to_vec()
        }
        SortBy::Seeders => {
            let n = list.n as f64;
            let budget = if mode == 2 {
                usize::MAX
            } else if n * n > ONE_WORD_WALK_FACTOR * (k as f64) * (ndocs as f64) {
                ((k as f64) * (ndocs as f64) / n * 8.0) as usize + 1_024
            } else {
                return Ok(None);
            };
            let mut finder = AnyFinder::new(&list);
            let mut hits: Vec<u32> = Vec::with_capacity(k);
            let mut order = columns::SeedersOrder::new(txn, dbs, ndocs, q.descending)?;
            let mut read = 0usize;
            while let Some((_, d)) = order.next()? {
                read += 1;
                match finder.has(d) {
                    Ok(true) => hits.push(d),
                    Ok(false) => {}
                    Err(()) => return Ok(None),
                }
                if hits.len() >= k || read >= budget {
                    break;
                }
            }
            if order.bad > 0 || hits.len() < k {
                return Ok(None);
            }
            hits.get(offset..).unwrap_or(&[]).to_vec()
        }
        _ => return Ok(None),
    };
    count_walk(if q.sort == SortBy::Discovered { 0 } else { 2 });
    push_records(txn, dbs, page, &mut res)?;
    Ok(Some(res))
}

/// The first `k` distinct doc ids of one unscoped word's postings from the wanted
/// end (`desc`: the largest first); `None` when a block is corrupt.
fn list_end(list: &WalkList, k: usize, desc: bool) -> Option<Vec<u32>> {
    let mut out: Vec<u32> = Vec::with_capacity(k.min(list.n));
    let mut buf: Vec<u32> = Vec::new();
    // Blocks taken from the wanted end; `buf` holds the current one's doc ids in
    // the order they are taken (reversed when descending).
    let (nb, ns) = (list.big.len(), list.small.len());
    let (mut bi, mut si, mut bpos) = (0usize, 0usize, 0usize);
    while out.len() < k {
        if bpos == buf.len() && bi < nb {
            let b = if desc {
                list.big[nb - 1 - bi]
            } else {
                list.big[bi]
            };
            bi += 1;
            buf.clear();
            codec::block_decode(b, &mut buf).ok()?;
            for p in buf.iter_mut() {
                *p >>= 2;
            }
            if desc {
                buf.reverse();
            }
            bpos = 0;
        }
        let x = buf.get(bpos).copied();
        let y = (si < ns).then(|| list.small[if desc { ns - 1 - si } else { si }] >> 2);
        let d = match (x, y) {
            (None, None) => break,
            (Some(x), Some(y)) if x == y => {
                bpos += 1;
                si += 1;
                x
            }
            (Some(x), Some(y)) if (x > y) == desc => {
                bpos += 1;
                x
            }
            (Some(x), None) => {
                bpos += 1;
                x
            }
            (_, Some(y)) => {
                si += 1;
                y
            }
        };
        if out.last() != Some(&d) {
            out.push(d);
        }
    }
    Some(out)
}

/// Finds doc ids, asked in non-increasing order, in decoded postings.
struct SmallCursor<'b> {
    v: &'b [u32],
    left: usize,
}

impl<'b> SmallCursor<'b> {
    fn new(v: &'b [u32]) -> Self {
        SmallCursor { v, left: v.len() }
    }

    fn find(&mut self, d: u32) -> Option<u32> {
        self.left = self.v[..self.left].partition_point(|x| x >> 2 <= d);
        self.left
            .checked_sub(1)
            .map(|i| self.v[i])
            .filter(|x| x >> 2 == d)
    }
}

/// Reads a term's postings (raw values: docid << 2 | flags), ascending, keeping those
/// whose flags meet `mask`.
fn postings(
    txn: &RoTxn,
    dbs: &Dbs,
    term: &[u8],
    mask: u8,
    res: &mut SearchResults,
) -> Result<Vec<u32>> {
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
    if mask & 3 != 3 {
        let m = u32::from(mask);
        out.retain(|p| p & m != 0);
    }
    Ok(out)
}

/// Union of the postings of every term starting with `prefix` whose flags meet
/// `mask` (`ndocs` bounds the doc ids): one term is decoded as is; several are merged
/// in a bitmap (the result then carries only the name flag).
fn prefix_postings(
    txn: &RoTxn,
    dbs: &Dbs,
    prefix: &[u8],
    ndocs: u64,
    mask: u8,
    res: &mut SearchResults,
) -> Result<(Vec<u32>, bool)> {
    let m = u32::from(mask);
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
        if m != 3 {
            let keep = before;
            let mut w = keep;
            for r in keep..out.len() {
                if out[r] & m != 0 {
                    out[w] = out[r];
                    w += 1;
                }
            }
            out.truncate(w);
        }
        if keys >= 2 {
            for &p in &out {
                let d = (p >> 2) as usize;
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
                out.push((d << 2) | ((n >> b) & 1) as u32);
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
    let mut cur: Vec<(u32, u32)> = first.iter().map(|&p| (p >> 2, p & 1)).collect();
    for other in it {
        let mut j = 0usize;
        cur.retain_mut(|(doc, score)| {
            // Exponential search from j for the first posting >= doc.
            let (mut lo, mut hi, mut step) = (j, j, 1usize);
            while hi < other.len() && other[hi] >> 2 < *doc {
                lo = hi + 1;
                hi = j + step;
                step *= 2;
            }
            let hi = hi.min(other.len());
            j = lo + other[lo..hi].partition_point(|&p| p >> 2 < *doc);
            if j < other.len() && other[j] >> 2 == *doc {
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
/// (discovered_at or total_size, ties by doc id), read from `columns` (modes 0 and
/// 2) or `torrents`.
#[allow(clippy::too_many_arguments)]
fn exact_order(
    txn: &RoTxn,
    dbs: &Dbs,
    cands: impl Iterator<Item = u32>,
    order: Order,
    offset: usize,
    k: usize,
    mode: usize,
    res: &mut SearchResults,
) -> Result<Vec<u32>> {
    let mut keyed: Vec<(u64, u32)> = Vec::new();
    let by_size = matches!(order, Order::Largest | Order::Smallest);
    if mode == 0 || mode == 2 || mode == 4 || mode == 5 {
        let mut ds: Vec<u32> = cands.collect();
        ds.sort_unstable();
        keyed.reserve(ds.len());
        res.skipped_corrupt += columns::for_each(txn, dbs, ds.iter().copied(), |i, f| {
            keyed.push((
                if by_size {
                    f.total_size
                } else {
                    f.discovered_at
                },
                ds[i],
            ));
        })?;
    } else {
        for docid in cands {
            let dk = codec::docid_key(docid);
            match dbs
                .torrents
                .get(txn, &dk)
                .map_err(lmdb("reading torrents"))?
            {
                Some(v) => match codec::torrent_keys(v) {
                    Ok((_, at, size)) => keyed.push((if by_size { size } else { at }, docid)),
                    Err(_) => res.skipped_corrupt += 1,
                },
                None => res.skipped_corrupt += 1,
            }
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
