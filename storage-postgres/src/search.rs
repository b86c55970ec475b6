//! Search: the LMDB store's query language ([`magnetar_storage::query`]) run by
//! PostgreSQL's full-text machinery. The query is parsed by the same parser, turned
//! into one tsquery (words, `:*` prefixes, `<->` phrases, `!` exclusions, weights A
//! and B for `name:` and `path:`) matched against `torrents.search` on its GIN index;
//! size and time ranges are plain `WHERE` terms; relevance is the number of distinct
//! query terms found in the name (one small tsquery each), as the LMDB store counts
//! it; every order breaks ties by doc id in the same direction. A category and
//! attribute filter is one `t.id IN (…)` over `facet_keys` per clause (see
//! [`facets`](crate::facets)); without words it alone selects (as in LMDB).
//! Hidden torrents (the `hidden` marks) are never found.
//!
//! # How a query runs (schema 6)
//! Two or three statements: the exact `count(*)` of the matches (a bitmap or
//! sequential scan that visits the heap row of every match: the cost that remains,
//! see BENCHMARKS.md), then the page:
//! - Time, size, seeders and file-count orders: `ORDER BY key, id LIMIT … OFFSET …`,
//!   which the planner answers from the `(key, id)` index walked from the wanted end
//!   when the matches are many (schema 6 added the seeders-descending-unknown-last
//!   and file-count indexes), or by a top-N sort of the matches when they are few.
//! - Relevance, when there are more matches than `LEVEL_WALK` (2,000, or four pages'
//!   worth): relevance orders by the number of score terms in the name, then by doc
//!   id, so its first *level* (every score term in the name, descending; none,
//!   ascending) comes first in doc-id order. The page is looked for in that level
//!   among the first `LEVEL_WALK` matches in doc-id order (a bounded walk, whatever
//!   the level's density); when it is full there, it is the page. Otherwise (a
//!   sparse level, or a few matches) every match is scored: one constant tsquery per
//!   score term (`(search @@ 'term':A)::int + …`), top-N sorted.
//!
//! The first version (`Plan::Before`, kept for the benchmark) scored every match
//! with one tsquery parsed per term per row and had no level walk.
//!
//! Intentional differences from the LMDB store:
//! - `total` is always exact (LMDB estimates it for a phrase query with more than
//!   `PHRASE_CHECK_BUDGET` candidates and says so in `total_estimated`).
//! - A prefix is not cut at `MAX_PREFIX_TERMS` terms (`prefix_truncated` is never set).
//! - Phrases are matched on positions, which PostgreSQL keeps up to 16,383 per
//!   document and 256 per lexeme: in a torrent with more tokens than that, a phrase
//!   past those limits may be missed.
//! - A `path:` scoped *prefix* scores a name hit when any term with that prefix is
//!   in the name (LMDB: only a term that is also in a path).

use magnetar_storage::query::parse;
use magnetar_storage::{
    HashKind, SearchQuery, SearchResults, SortBy, Sources, TorrentRecord, MAX_SEARCH_LIMIT,
    MAX_SEARCH_OFFSET,
};
use postgres::types::ToSql;
use postgres::{Client, Row};

use crate::error::{PgError, Result};
use crate::vector::{query_tsquery, score_tsqueries};

/// The columns [`record_of`] reads, in its order.
/// Name and source are read as UTF-8 bytes: the raw column (schema 4) when the
/// text had to be altered to be stored (a NUL), else the text.
pub(crate) const RECORD_COLUMNS: &str = "t.infohash, t.kind, t.v2, \
    coalesce(t.name_raw, convert_to(t.name, 'UTF8')), t.total_size, \
    t.piece_length, t.piece_count, t.file_count, t.private, \
    coalesce(t.source_raw, convert_to(t.source, 'UTF8')), t.discovered_at, \
    t.last_seen_at, t.sources, t.seeders, t.leechers, t.scraped_at, t.has_info";

/// How many columns [`RECORD_COLUMNS`] selects (its text holds commas of its own).
pub(crate) const RECORD_COLUMN_COUNT: usize = 17;

fn u64_of(v: i64) -> Option<u64> {
    u64::try_from(v).ok()
}

/// A record from a row of [`RECORD_COLUMNS`]; `None` when a value is out of range
/// (counted as corrupt by the caller).
pub(crate) fn record_of(r: &Row) -> Option<TorrentRecord> {
    let ih: Vec<u8> = r.try_get(0).ok()?;
    let kind = match r.try_get::<_, i16>(1).ok()? {
        1 => HashKind::V1,
        2 => HashKind::V2,
        3 => HashKind::Hybrid,
        _ => return None,
    };
    let v2: Option<Vec<u8>> = r.try_get(2).ok()?;
    let v2 = match v2 {
        Some(v) => Some(<[u8; 32]>::try_from(v.as_slice()).ok()?),
        None => None,
    };
    let opt32 = |i: usize| -> Option<Option<u32>> {
        match r.try_get::<_, Option<i64>>(i).ok()? {
            Some(v) => u32::try_from(v).ok().map(Some),
            None => Some(None),
        }
    };
    Some(TorrentRecord {
        infohash: <[u8; 20]>::try_from(ih.as_slice()).ok()?,
        kind,
        v2,
        name: String::from_utf8(r.try_get(3).ok()?).ok()?,
        total_size: u64_of(r.try_get(4).ok()?)?,
        piece_length: u32::try_from(r.try_get::<_, i64>(5).ok()?).ok()?,
        piece_count: u32::try_from(r.try_get::<_, i64>(6).ok()?).ok()?,
        file_count: u32::try_from(r.try_get::<_, i64>(7).ok()?).ok()?,
        private: r.try_get(8).ok()?,
        source: match r.try_get::<_, Option<Vec<u8>>>(9).ok()? {
            Some(b) => Some(String::from_utf8(b).ok()?),
            None => None,
        },
        discovered_at: u64_of(r.try_get(10).ok()?)?,
        last_seen_at: u64_of(r.try_get(11).ok()?)?,
        sources: Sources(u8::try_from(r.try_get::<_, i16>(12).ok()?).ok()?),
        seeders: opt32(13)?,
        leechers: opt32(14)?,
        scraped_at: match r.try_get::<_, Option<i64>>(15).ok()? {
            Some(v) => Some(u64_of(v)?),
            None => None,
        },
        has_info: r.try_get(16).ok()?,
    })
}

/// The same checks, in the same order and words, as the LMDB store's `query`.
/// Returns the facet filter's SQL condition (empty without a filter).
fn validate(q: &SearchQuery) -> Result<String> {
    let facets = match &q.facets {
        Some(f) => crate::facets::filter_sql(f)?,
        None => String::new(),
    };
    if q.offset > MAX_SEARCH_OFFSET {
        return Err(PgError::InvalidQuery(format!(
            "offset {} is past the limit of {MAX_SEARCH_OFFSET}; narrow the query instead",
            q.offset
        )));
    }
    if let (Some(a), Some(b)) = (q.min_size, q.max_size) {
        if a > b {
            return Err(PgError::InvalidQuery(format!(
                "the minimum size ({a}) is above the maximum size ({b})"
            )));
        }
    }
    if let (Some(a), Some(b)) = (q.discovered_since, q.discovered_before) {
        if a >= b {
            return Err(PgError::InvalidQuery(format!(
                "the discovery-time range [{a}, {b}) is empty"
            )));
        }
    }
    Ok(facets)
}

/// The relevance level is looked for among at least this many matches in doc-id
/// order before every match is scored.
const LEVEL_WALK: usize = 2_000;

/// Which SQL a query runs: [`Plan::Levels`] (the default) or the first version's
/// ([`Plan::Before`], kept for the before/after benchmark).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Relevance as levels (see the module doc), scores from constant tsqueries.
    Levels,
    /// One tsquery parsed per query term per matching row, every match ranked.
    Before,
}

/// Runs a query (see the module doc).
pub(crate) fn query(client: &mut Client, q: &SearchQuery) -> Result<SearchResults> {
    query_with(client, q, Plan::Levels)
}

/// [`query`] with a given plan (the benchmark's "before").
#[doc(hidden)]
pub fn query_with(client: &mut Client, q: &SearchQuery, plan: Plan) -> Result<SearchResults> {
    let facet_filter = validate(q)?;
    let parsed = parse(&q.text).map_err(|e| match e {
        magnetar_storage::StoreError::InvalidQuery(m) => PgError::InvalidQuery(m),
        e => PgError::InvalidQuery(e.to_string()),
    })?;
    let mut res = SearchResults::default();
    if parsed.must.is_empty() && facet_filter.is_empty() {
        if !parsed.must_not.is_empty() {
            return Err(PgError::InvalidQuery(
                "a query needs at least one word that is not excluded".into(),
            ));
        }
        return Ok(res);
    }
    let tsq = query_tsquery(&parsed);
    let scores = score_tsqueries(&parsed);
    // Filters: bounds beyond bigint's range are no bound (above) or no match (below).
    // Without words (a facet filter alone, perhaps with exclusions) every torrent
    // passing the filter matches; exclusions still apply (`!…` terms alone).
    let mut params: Vec<Box<dyn ToSql + Sync>> = vec![Box::new(tsq.clone())];
    let mut filter = if tsq.is_empty() {
        String::from("$1::text = ''")
    } else {
        String::from("t.search @@ $1::text::tsquery")
    };
    // Hidden torrents are never found (LMDB stores them without postings and
    // leaves them out of facet matches).
    filter.push_str(" AND NOT EXISTS (SELECT 1 FROM hidden h WHERE h.infohash = t.infohash)");
    filter.push_str(&facet_filter);
    let mut bound = |col: &str, op: &str, v: Option<u64>, filter: &mut String| {
        if let Some(v) = v {
            match i64::try_from(v) {
                Ok(v) => {
                    params.push(Box::new(v));
                    filter.push_str(&format!(" AND t.{col} {op} ${}", params.len()));
                }
                Err(_) if op.starts_with('>') => filter.push_str(" AND false"),
                Err(_) => {}
            }
        }
    };
    bound("total_size", ">=", q.min_size, &mut filter);
    bound("total_size", "<=", q.max_size, &mut filter);
    bound("discovered_at", ">=", q.discovered_since, &mut filter);
    bound("discovered_at", "<", q.discovered_before, &mut filter);
    let total: i64 = {
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref()).collect();
        client
            .query_one(
                &format!("SELECT count(*) FROM torrents t WHERE {filter}"),
                &refs,
            )
            .map_err(PgError::db("counting matches"))?
            .get(0)
    };
    res.total = usize::try_from(total).unwrap_or(usize::MAX);
    let limit = q.limit.min(MAX_SEARCH_LIMIT);
    if q.offset >= res.total || limit == 0 {
        return Ok(res);
    }
    let dir = if q.descending { "DESC" } else { "ASC" };
    // One page: `from_where` is the FROM and WHERE, `key` the sort keys before
    // the doc id.
    let page = |client: &mut Client,
                params: &[&(dyn ToSql + Sync)],
                from_where: &str,
                key: &str,
                res: &mut SearchResults|
     -> Result<usize> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM {from_where} \
             ORDER BY {key}t.id {dir} LIMIT {limit} OFFSET {}",
            q.offset
        );
        let rows = client
            .query(&sql, params)
            .map_err(PgError::db("searching"))?;
        let n = rows.len();
        for r in rows {
            match record_of(&r) {
                Some(rec) => res.hits.push(rec),
                None => res.skipped_corrupt += 1,
            }
        }
        Ok(n)
    };
    let all = format!("torrents t WHERE {filter}");
    let n = params.len();
    let key = match q.sort {
        SortBy::Relevance if plan == Plan::Before => format!(
            "(SELECT count(*) FROM unnest(${}::text[]) q WHERE t.search @@ q::tsquery) {dir}, ",
            n + 1
        ),
        SortBy::Relevance => {
            // The first level: every score term in the name (descending), or none
            // (ascending); alone, it is ordered by doc id, which an index walks
            // from the wanted end. Without score terms every match is in it.
            let level = if scores.is_empty() {
                String::new()
            } else if q.descending {
                scores.join(" & ")
            } else {
                format!("!({})", scores.join(" | "))
            };
            if level.is_empty() {
                let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref()).collect();
                page(client, &refs, &all, "", &mut res)?;
                return Ok(res);
            }
            // The level's first matches in doc-id order, looked for among the first
            // LEVEL_WALK (at least 4 pages' worth) matches in that order: bounded
            // work even when the level is sparse or empty (say a word found in
            // paths only), where an unbounded walk of the doc ids would read every
            // torrent.
            // With no more matches than that, scoring them all costs no more.
            let walk = (4 * (q.offset + limit)).max(LEVEL_WALK);
            if res.total > walk {
                let mut refs: Vec<&(dyn ToSql + Sync)> =
                    params.iter().map(|p| p.as_ref()).collect();
                refs.push(&level);
                let from_where = format!(
                    "(SELECT * FROM {all} ORDER BY t.id {dir} LIMIT {walk}) t \
                     WHERE t.search @@ ${}::text::tsquery",
                    refs.len()
                );
                // The page is certain when it is full: the level holds offset +
                // limit matches or more, and they come first.
                if page(client, &refs, &from_where, "", &mut res)? == limit {
                    return Ok(res);
                }
                res.hits.clear();
                res.skipped_corrupt = 0;
            }
            // Else every match is scored: one constant tsquery per score term.
            let terms: Vec<String> = (0..scores.len())
                .map(|i| format!("(t.search @@ ${}::text::tsquery)::int", n + 1 + i))
                .collect();
            format!("{} {dir}, ", terms.join(" + "))
        }
        SortBy::Discovered => format!("t.discovered_at {dir}, "),
        SortBy::Size => format!("t.total_size {dir}, "),
        // Unknown seeders last in both directions.
        SortBy::Seeders => format!("t.seeders {dir} NULLS LAST, "),
        SortBy::Files => format!("t.file_count {dir}, "),
    };
    let mut refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref()).collect();
    if q.sort == SortBy::Relevance {
        if plan == Plan::Before {
            refs.push(&scores);
        } else {
            refs.extend(scores.iter().map(|s| s as &(dyn ToSql + Sync)));
        }
    }
    page(client, &refs, &all, &key, &mut res)?;
    Ok(res)
}
