//! Every read the web crate makes of the store, in one place: the search (the
//! store's [`SearchQuery`]: every sort both ways, size and time filters, category
//! and attribute filters on the classifier's facets; what the store refuses, such as
//! an unknown category, is a 400 with the store's message), a torrent, its facets,
//! its info dict, the newest torrents, and the dashboard's figures.
//!
//! The store is any [`ReadIndex`] (LMDB's `Store`, PostgreSQL's reader): every
//! call here is a blocking read; handlers run them on tokio's blocking pool
//! ([`Index::run`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use magnetar_storage::backend::ReadIndex;
use magnetar_storage::{
    ClientStats, FacetFilter, Facets, Hourly, InfoHash, SearchQuery, SessionYield, SortBy, Stats,
    StoreError, Torrent, TorrentRecord,
};

/// Largest page of results any endpoint returns.
pub const MAX_LIMIT: usize = 100;
/// `offset + limit` may not pass this (deep paging costs a top-k of that size).
pub const MAX_DEPTH: usize = 10_000;
/// Longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 256;
/// Hours of history on the dashboard.
pub const HISTORY_HOURS: u32 = 48;
/// How long the dashboard's figures are reused (they scan the request records).
const DASHBOARD_TTL: Duration = Duration::from_secs(15);

/// What a search is ordered by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    Relevance,
    Discovered,
    Size,
    Seeders,
    Files,
}

impl Sort {
    pub fn parse(s: &str) -> Option<Sort> {
        Some(match s {
            "relevance" => Sort::Relevance,
            "discovered" | "newest" | "time" => Sort::Discovered,
            "size" => Sort::Size,
            "seeders" => Sort::Seeders,
            "files" => Sort::Files,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Sort::Relevance => "relevance",
            Sort::Discovered => "discovered",
            Sort::Size => "size",
            Sort::Seeders => "seeders",
            Sort::Files => "files",
        }
    }
}

/// A search as the API and the pages ask for it (already validated for ranges).
#[derive(Clone, Debug)]
pub struct SearchRequest {
    pub q: String,
    pub sort: Sort,
    /// Descending (the default) or ascending.
    pub desc: bool,
    pub offset: usize,
    pub limit: usize,
    pub min_size: Option<u64>,
    pub max_size: Option<u64>,
    pub after: Option<u64>,
    pub before: Option<u64>,
    /// A category (see [`FacetFilter::category`]).
    pub category: Option<String>,
    /// Attribute filters (name, value), e.g. ("season", "2").
    pub attributes: Vec<(String, String)>,
}

/// One page of results.
#[derive(Clone, Debug, Default)]
pub struct Page {
    pub total: usize,
    /// `total` is an estimate (a phrase query with more candidates than the store
    /// checks; the page itself is exact).
    pub total_estimated: bool,
    pub hits: Vec<TorrentRecord>,
    /// The hits' facets, in the same order (`None`: not classified).
    pub facets: Vec<Option<Facets>>,
    /// The last word matched too many terms; only the first were used.
    pub prefix_truncated: bool,
}

/// Why a read failed.
#[derive(Debug)]
pub enum IndexError {
    /// The request asks for something the store cannot do yet (a 400).
    Unsupported(String),
    /// The store failed (a 500).
    Store(StoreError),
    /// The blocking task died (a 500).
    Task(String),
}

impl From<StoreError> for IndexError {
    fn from(e: StoreError) -> Self {
        IndexError::Store(e)
    }
}

impl std::fmt::Display for IndexError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IndexError::Unsupported(s) => write!(f, "{s}"),
            IndexError::Store(e) => write!(f, "database: {e}"),
            IndexError::Task(e) => write!(f, "internal: {e}"),
        }
    }
}

/// The dashboard's figures.
#[derive(Clone, Debug, Default)]
pub struct Dashboard {
    pub now: u64,
    pub stats: Stats,
    pub sessions: Vec<SessionYield>,
    pub failure_reasons: Vec<(String, u64)>,
    pub clients: Vec<ClientStats>,
    pub discoveries: Hourly,
    pub requests: Hourly,
}

impl Dashboard {
    /// The funnel over every session: discovered → metadata fetched → new torrents.
    pub fn funnel(&self) -> [(&'static str, u64); 3] {
        let sum = |f: fn(&magnetar_storage::SessionCounters) -> u64| -> u64 {
            self.sessions.iter().map(|y| f(&y.session.counters)).sum()
        };
        [
            ("discovered", sum(|c| c.infohashes_discovered)),
            ("metadata fetched", sum(|c| c.metadata_fetched)),
            ("stored new", sum(|c| c.torrents_new)),
        ]
    }
}

/// The dashboard and when it was computed.
type Cached = (Instant, Arc<Dashboard>);

/// The store, shared by every handler.
#[derive(Clone)]
pub struct Index {
    store: Arc<dyn ReadIndex>,
    dashboard: Arc<Mutex<Option<Cached>>>,
    /// Store reads running at once (`None`: as many as the blocking pool runs).
    reads: Option<Arc<tokio::sync::Semaphore>>,
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Index {
    pub fn new(store: Arc<dyn ReadIndex>) -> Index {
        Index::with_reads(store, 0)
    }

    /// An index running at most `max_reads` store reads at once (0: no limit but
    /// the blocking pool's); see [`crate::Limits::max_store_reads`].
    pub fn with_reads(store: Arc<dyn ReadIndex>, max_reads: usize) -> Index {
        Index {
            store,
            dashboard: Arc::new(Mutex::new(None)),
            reads: (max_reads > 0).then(|| Arc::new(tokio::sync::Semaphore::new(max_reads))),
        }
    }

    /// Runs a blocking read on tokio's blocking pool, once a read slot is free (in
    /// the order asked: tokio's semaphore is fair).
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Index) -> Result<T, IndexError> + Send + 'static,
    ) -> Result<T, IndexError> {
        let permit = match &self.reads {
            Some(s) => Some(
                s.clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| IndexError::Task(e.to_string()))?,
            ),
            None => None,
        };
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let r = f(&me);
            drop(permit);
            r
        })
        .await
        .map_err(|e| IndexError::Task(e.to_string()))?
    }

    /// A search through the store's query API ([`SearchQuery`]): every sort both
    /// ways, size and discovery-time filters; a query the store refuses
    /// (`InvalidQuery`, `Unsupported`) is a 400.
    pub fn search(&self, r: &SearchRequest) -> Result<Page, IndexError> {
        let sort = match r.sort {
            Sort::Relevance => SortBy::Relevance,
            Sort::Discovered => SortBy::Discovered,
            Sort::Size => SortBy::Size,
            Sort::Seeders => SortBy::Seeders,
            Sort::Files => SortBy::Files,
        };
        let mut q = SearchQuery::new(r.q.clone());
        q.sort = sort;
        q.descending = r.desc;
        q.offset = r.offset;
        q.limit = r.limit;
        q.min_size = r.min_size;
        q.max_size = r.max_size;
        q.discovered_since = r.after;
        q.discovered_before = r.before;
        if r.category.is_some() || !r.attributes.is_empty() {
            q.facets = Some(FacetFilter {
                category: r.category.clone(),
                attributes: r.attributes.clone(),
            });
        }
        let res = match self.store.query(&q) {
            Ok(res) => res,
            Err(StoreError::InvalidQuery(m)) => {
                return Err(IndexError::Unsupported(format!(
                    "invalid search query: {m}"
                )))
            }
            Err(StoreError::Unsupported(m)) => {
                return Err(IndexError::Unsupported(format!("not supported: {m}")))
            }
            Err(e) => return Err(e.into()),
        };
        let facets = self.facets_of(&res.hits)?;
        Ok(Page {
            total: res.total,
            total_estimated: res.total_estimated,
            hits: res.hits,
            facets,
            prefix_truncated: res.prefix_truncated,
        })
    }

    /// The facets of `rows`, in order (`None`: not classified).
    pub fn facets_of(&self, rows: &[TorrentRecord]) -> Result<Vec<Option<Facets>>, IndexError> {
        let ihs: Vec<InfoHash> = rows.iter().map(|r| r.infohash).collect();
        Ok(self.store.facets_of(&ihs)?)
    }

    /// A torrent's facets, or None.
    pub fn facets(&self, ih: &InfoHash) -> Result<Option<Facets>, IndexError> {
        Ok(self.store.facets(ih)?)
    }

    /// The torrent with its files, or None.
    pub fn torrent(&self, ih: &InfoHash) -> Result<Option<Torrent>, IndexError> {
        Ok(self.store.get(ih)?)
    }

    /// The stored torrent without files, or None.
    pub fn record(&self, ih: &InfoHash) -> Result<Option<TorrentRecord>, IndexError> {
        Ok(self.store.record(ih)?)
    }

    /// The raw info dict, when kept.
    pub fn info_dict(&self, ih: &InfoHash) -> Result<Option<Vec<u8>>, IndexError> {
        Ok(self.store.info_dict(ih)?)
    }

    /// The newest torrents (`offset` skipped), newest first.
    pub fn recent(&self, offset: usize, limit: usize) -> Result<Vec<TorrentRecord>, IndexError> {
        let mut v = self.store.recent(offset.saturating_add(limit))?;
        Ok(v.split_off(offset.min(v.len())))
    }

    /// Totals only (cheap: counters and page statistics). A store that keeps no
    /// totals yet (PostgreSQL before its statistics land) gives its torrent count.
    pub fn totals(&self) -> Result<Stats, IndexError> {
        match self.store.stats() {
            Err(StoreError::Unsupported(_)) => Ok(Stats {
                torrents: self.store.count()?,
                ..Stats::default()
            }),
            r => Ok(r?),
        }
    }

    /// The dashboard's figures, reused for a few seconds (they scan the kept
    /// request records).
    pub fn dashboard(&self) -> Result<Arc<Dashboard>, IndexError> {
        if let Ok(g) = self.dashboard.lock() {
            if let Some((at, d)) = g.as_ref() {
                if at.elapsed() < DASHBOARD_TTL {
                    return Ok(d.clone());
                }
            }
        }
        let now = now_secs();
        // A figure the store cannot give yet (PostgreSQL) is left empty.
        fn or_empty<T: Default>(r: Result<T, StoreError>) -> Result<T, IndexError> {
            match r {
                Err(StoreError::Unsupported(_)) => Ok(T::default()),
                r => Ok(r?),
            }
        }
        let d = Arc::new(Dashboard {
            now,
            stats: self.totals()?,
            sessions: or_empty(self.store.session_yields(now))?,
            failure_reasons: or_empty(self.store.failure_reasons())?,
            clients: or_empty(self.store.top_clients(10))?,
            discoveries: or_empty(self.store.discoveries_per_hour(now, HISTORY_HOURS))?,
            requests: or_empty(self.store.requests_per_hour(now, HISTORY_HOURS))?,
        });
        if let Ok(mut g) = self.dashboard.lock() {
            *g = Some((Instant::now(), d.clone()));
        }
        Ok(d)
    }
}
