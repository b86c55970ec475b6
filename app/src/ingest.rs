//! From crawler events to stored records: the glue every runtime shares (mio and
//! tokio alike), so that both decide acquire-or-skip and write the same records.
//!
//! A runtime hands each `magnetar_core::Event` to [`Ingest::on_event`]. For an
//! [`Event::InfohashDiscovered`] the answer is a [`Decision`]: [`Decision::Acquire`]
//! when the store does not have the torrent (the runtime then calls
//! `Crawler::acquire`), [`Decision::Known`] when it does (a `Seen` update is written
//! instead). Fetched metadata becomes a torrent (with files and the raw info dict),
//! each peer session a request record and an updated peer record, each node added
//! to a routing table a node record (the next start bootstraps from these).
//!
//! Torrents are sent with backpressure (never dropped); the other records are
//! best effort (`try_send`): when the writer's channel is full they are dropped and
//! counted in [`IngestCounters::dropped`], so a slow disk never stalls the DHT.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use magnetar_core::fetch::{FailReason, MetadataFetched, PeerSessionReport, SessionOutcome};
use magnetar_core::report::Metric;
use magnetar_core::routing::NodeEntry;
use magnetar_core::{DiscoverySource, Event};

use magnetar_core::filter::Action;
use magnetar_core::pump::{Decision, Storage};
use magnetar_storage::backend::{IndexSink, LmdbSink, RemoteTotals};
use magnetar_storage::*;

use crate::filter::{self, Filter};

type Result<T> = std::result::Result<T, StoreError>;

/// Acquisitions remembered (discovery time, sources, scrape) until fetched.
const MAX_PENDING: usize = 200_000;
/// Peers whose counters are kept in memory (then the table starts over).
const MAX_PEERS: usize = 100_000;
/// A stored torrent seen again is scraped again when its counts are older than
/// this (or unknown): the default of `magnetar crawl --scrape-max-age`.
pub const SCRAPE_MAX_AGE: Duration = Duration::from_secs(6 * 3600);

/// Counters of the ingest glue (for `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestCounters {
    /// Discoveries the store did not have.
    pub new: u64,
    /// Discoveries the store had.
    pub known: u64,
    pub torrents: u64,
    pub requests: u64,
    pub nodes: u64,
    /// Best-effort records dropped because the writer was behind.
    pub dropped: u64,
    /// Reads that failed (the infohash was then treated as unknown).
    pub read_errors: u64,
    /// Known torrents seen again whose counts were missing or old: a scrape
    /// refresh was asked for.
    pub refresh_asked: u64,
    /// BEP 33 counts of stored torrents sent to storage (refreshes and other
    /// peer searches of stored torrents).
    pub scrapes: u64,
    /// Tracker answers (`Event::TrackerReply`).
    pub tracker_replies: u64,
    /// Discoveries not acquired and fetched torrents not stored by the content
    /// filter (tombstones, `drop` rules).
    pub filtered: u64,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    discovered_at: u64,
    sources: Sources,
    seeders: Option<u32>,
    leechers: Option<u32>,
    /// When those counts were measured.
    scraped_at: Option<u64>,
}

/// The event → record glue around a store and its writer.
pub struct Ingest {
    /// The store's write side and the lookups made while writing (LMDB's `Store`
    /// and `Writer`, or PostgreSQL's writer with its cached reads).
    sink: Box<dyn IndexSink>,
    pending: HashMap<InfoHash, Pending>,
    peers: HashMap<SocketAddr, PeerRecord>,
    counters: IngestCounters,
    /// The store's totals for `/metrics`, read at most every 10 s.
    store_stats: Option<magnetar_storage::Stats>,
    next_store_stats: Option<Instant>,
    /// Counts older than this are refreshed when the torrent is seen again.
    scrape_max_age: Duration,
    /// Operator content rules and their counts (tombstones apply without rules).
    filter: Filter,
    /// Infohashes dropped by this run (until their tombstones are committed).
    dropped: HashSet<InfoHash>,
    /// `crawl --sink bitmagnet URL`: every stored torrent is also sent there.
    bitmagnet: Option<crate::sink::BitmagnetSink>,
}

/// A fresh session record (id: Unix milliseconds), started at `wall` (Unix seconds).
pub fn new_session(wall: u64) -> SessionRecord {
    SessionRecord {
        id: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        started_at: wall,
        ..SessionRecord::default()
    }
}

/// The storage bit for a discovery source.
pub fn sources_of(s: DiscoverySource) -> Sources {
    match s {
        DiscoverySource::Announce => Sources::ANNOUNCE,
        DiscoverySource::GetPeers => Sources::GET_PEERS,
        DiscoverySource::Sample => Sources::SAMPLE,
        // A source the store has no bit for (core's enum is non-exhaustive).
        _ => Sources(0),
    }
}

/// `snake_case` name of a failure reason (without its detail), e.g. `connect_refused`.
pub fn reason_name(r: &FailReason) -> String {
    let dbg = format!("{r:?}");
    let head = dbg.split('(').next().unwrap_or("");
    let mut out = String::with_capacity(head.len() + 4);
    for (i, ch) in head.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The torrent record for verified metadata (padding files are left out of the
/// list). A hybrid is keyed by its v1 hash and a v2-only torrent by its truncated
/// v2 hash, whichever of them it was fetched by; the full v2 hash goes beside it.
pub fn torrent_input(
    m: &MetadataFetched,
    discovered_at: u64,
    sources: Sources,
    seeders: Option<u32>,
    leechers: Option<u32>,
) -> TorrentInput {
    let info = &m.info;
    let (v1, v2) = magnetar_core::metadata::info_hashes(&m.raw, info, m.hash);
    let infohash = match (v1, &v2) {
        (Some(v1), _) => v1.0,
        (None, Some(v2)) => truncate_v2(v2),
        (None, None) => m.info_hash.0,
    };
    TorrentInput {
        infohash,
        kind: HashKind::of(v1.is_some(), v2.as_ref()),
        v2,
        name: info.name.clone(),
        // The content's size: BEP 47 padding (hybrids align files to pieces) is
        // not part of it, as it is not part of the file list.
        total_size: info
            .files
            .iter()
            .filter(|f| !f.padding)
            .fold(0u64, |a, f| a.saturating_add(f.length)),
        piece_length: clamp_u32(info.piece_length),
        piece_count: clamp_u32(info.piece_count),
        private: info.private,
        source: info.source.clone(),
        files: info
            .files
            .iter()
            .filter(|f| !f.padding)
            .map(|f| FileEntry {
                path: f.path.join("/"),
                size: f.length,
            })
            .collect(),
        discovered_at,
        sources,
        seeders,
        leechers,
        scraped_at: None,
        info: Some(m.raw.to_vec()),
    }
}

/// Per-method counts of a routing-table entry (slots as `MethodCounts::slot`).
fn query_counts(c: &[u32; 5]) -> QueryCounts {
    QueryCounts {
        ping: c[0],
        find_node: c[1],
        get_peers: c[2],
        announce_peer: c[3],
        sample_infohashes: c[4],
        other: 0,
    }
}

/// A node record from a routing-table entry, seen at `wall` (Unix seconds).
pub fn node_record(n: &NodeEntry, wall: u64) -> NodeRecord {
    NodeRecord {
        id: n.id.0,
        addr: n.addr,
        rtt_ms: n.rtt.map(|d| clamp_u32(d.as_millis() as u64)),
        queries: query_counts(&n.counts.queries),
        responses: query_counts(&n.counts.responses),
        status: if n.last_response.is_some() && n.failures == 0 {
            NodeStatus::Good
        } else {
            NodeStatus::Questionable
        },
        last_seen: wall,
    }
}

fn ms(d: Duration) -> u32 {
    clamp_u32(d.as_millis() as u64)
}

impl Ingest {
    pub fn new(store: Store, writer: Writer) -> Self {
        Ingest::with_sink(Box::new(LmdbSink { store, writer }))
    }

    /// The glue around any store's write side ([`IndexSink`]).
    pub fn with_sink(sink: Box<dyn IndexSink>) -> Self {
        Ingest {
            sink,
            pending: HashMap::new(),
            peers: HashMap::new(),
            counters: IngestCounters::default(),
            store_stats: None,
            next_store_stats: None,
            scrape_max_age: SCRAPE_MAX_AGE,
            filter: Filter::new(Default::default(), None),
            dropped: HashSet::new(),
            bitmagnet: None,
        }
    }

    /// Also sends every stored torrent to bitmagnet (`crawl --sink bitmagnet`).
    pub fn set_bitmagnet(&mut self, sink: crate::sink::BitmagnetSink) {
        self.bitmagnet = Some(sink);
    }

    fn remember_drop(&mut self, ih: InfoHash) {
        if self.dropped.len() >= MAX_PEERS {
            self.dropped.clear();
        }
        self.dropped.insert(ih);
    }

    /// Operator content rules (`crawl --filter-rules`).
    pub fn set_filter(&mut self, f: Filter) {
        self.filter = f;
    }

    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Reads the rules file again if SIGHUP asked for it (status ticks call this).
    pub fn poll_filter_reload(&mut self) {
        self.filter.poll_reload();
    }

    /// The decision before metadata is fetched: a tombstoned infohash, or one a
    /// `drop infohashes` rule lists (then tombstoned), is not acquired.
    fn filter_before_fetch(&mut self, wall: u64, ih: &InfoHash) -> Result<bool> {
        // Dropped by this run: its tombstone may still be in the writer's channel.
        if self.dropped.contains(ih) {
            self.filter.count("skip", "tombstone");
            return Ok(true);
        }
        match self.sink.tombstone(ih) {
            Ok(Some(m)) => {
                self.filter.count("skip", "tombstone");
                tracing::debug!(
                    target: "magnetar::filter",
                    action = "skip",
                    rule = %m.label,
                    infohash = %to_hex(ih),
                    "tombstoned infohash not fetched"
                );
                return Ok(true);
            }
            // A store that keeps no tombstones (PostgreSQL, so far) has none.
            Ok(None) | Err(StoreError::Unsupported(_)) => {}
            Err(_) => self.counters.read_errors += 1,
        }
        let label = match self.filter.rules().check_infohash(ih) {
            Some(v) if v.action() == Action::Drop => filter::rule_label(v.rule),
            _ => return Ok(false),
        };
        self.filter.count("drop", &label);
        self.remember_drop(*ih);
        tracing::info!(
            target: "magnetar::filter",
            action = "drop",
            rule = %label,
            infohash = %to_hex(ih),
            name = "",
            "filter decision: listed infohash, not fetched (tombstoned)"
        );
        self.sink.send(Op::Tombstone {
            infohash: *ih,
            at: wall,
            label,
        })?;
        Ok(true)
    }

    /// The decision once metadata is here: `Some(false)` stores it (hidden when
    /// a `hide` rule matched: its `Op::Hide` is sent first), `Some(true)` drops it
    /// (tombstoned).
    fn filter_after_fetch(
        &mut self,
        wall: u64,
        fetched: &InfoHash,
        t: &TorrentInput,
    ) -> Result<bool> {
        for ih in [&t.infohash, fetched] {
            if let Ok(Some(m)) = self.sink.tombstone(ih) {
                self.filter.count("skip", "tombstone");
                tracing::debug!(target: "magnetar::filter", action = "skip", rule = %m.label,
                    infohash = %to_hex(ih), name = %t.name, "tombstoned torrent not stored");
                return Ok(true);
            }
        }
        if self.filter.rules().is_empty() {
            return Ok(false);
        }
        let kind = magnetar_core::classify::classify(
            &t.name,
            t.files.iter().map(|f| (f.path.as_str(), f.size)),
        )
        .kind;
        let rules = self.filter.rules();
        let verdict = rules
            .check(
                &t.infohash,
                kind,
                &t.name,
                t.files.iter().map(|f| f.path.as_str()),
            )
            .or_else(|| rules.check_infohash(fetched));
        let Some(v) = verdict else {
            return Ok(false);
        };
        let (action, label, reason) = (v.action(), filter::rule_label(v.rule), v.reason.clone());
        if action == Action::Drop {
            self.remember_drop(t.infohash);
            self.remember_drop(*fetched);
        }
        let name = if action == Action::Drop {
            "drop"
        } else {
            "hide"
        };
        self.filter.count(name, &label);
        tracing::info!(
            target: "magnetar::filter",
            action = name,
            rule = %label,
            infohash = %to_hex(&t.infohash),
            name = %t.name,
            reason = ?reason,
            "filter decision"
        );
        match action {
            Action::Drop => {
                // A hybrid fetched by its v2 hash: both hashes are tombstoned.
                if *fetched != t.infohash {
                    self.sink.send(Op::Tombstone {
                        infohash: *fetched,
                        at: wall,
                        label: label.clone(),
                    })?;
                }
                self.sink.send(Op::Tombstone {
                    infohash: t.infohash,
                    at: wall,
                    label,
                })?;
                Ok(true)
            }
            Action::Hide => {
                self.sink.send(Op::Hide {
                    infohash: t.infohash,
                    at: wall,
                    label,
                })?;
                Ok(false)
            }
        }
    }

    /// Counts older than `age` (or unknown) are refreshed when a stored torrent
    /// is seen again ([`Decision::Refresh`]).
    pub fn set_scrape_max_age(&mut self, age: Duration) {
        self.scrape_max_age = age;
    }

    /// Fills a session record's counters from the crawler's stats and ours (the
    /// runtime adds the process facts: peak RSS, CPU time).
    pub fn update_session(&self, s: &mut SessionRecord, st: &magnetar_core::Stats) {
        let c = &mut s.counters;
        c.infohashes_discovered =
            st.crawl.new_from_announce + st.crawl.new_from_get_peers + st.crawl.new_from_sample;
        c.metadata_fetched = st.fetch.fetched;
        c.metadata_failed = st.fetch.failed;
        c.torrents_new = self.counters.torrents;
        c.dht_queries_sent = st.dht.queries_out.total();
        c.dht_responses_received = st.dht.responses_in;
    }

    /// The storage side of `/metrics`: ingest counters, writer totals and the
    /// store's totals (read at most every 10 s).
    pub fn metrics(&mut self) -> Vec<Metric> {
        let ic = self.counters;
        let wt = self.sink.totals();
        let mut out = vec![
            Metric::counter(
                "magnetar_storage_torrents_written_total",
                "Torrents sent to storage.",
                ic.torrents,
            ),
            Metric::counter(
                "magnetar_storage_requests_written_total",
                "Request records sent to storage.",
                ic.requests,
            ),
            Metric::counter(
                "magnetar_storage_nodes_written_total",
                "Node records sent to storage.",
                ic.nodes,
            ),
            Metric::counter(
                "magnetar_storage_dropped_total",
                "Best-effort records dropped: writer behind.",
                ic.dropped,
            ),
            Metric::counter(
                "magnetar_storage_read_errors_total",
                "Storage reads that failed.",
                ic.read_errors,
            ),
            Metric::counter(
                "magnetar_scrape_refresh_asked_total",
                "Stored torrents seen again with missing or old counts: refresh asked.",
                ic.refresh_asked,
            ),
            Metric::counter(
                "magnetar_scrape_counts_written_total",
                "BEP 33 counts of stored torrents sent to storage.",
                ic.scrapes,
            ),
            Metric::counter(
                "magnetar_storage_batches_total",
                "Batches committed.",
                wt.batches,
            ),
            Metric::counter(
                "magnetar_storage_records_total",
                "Records committed.",
                wt.records,
            ),
            Metric::counter(
                "magnetar_storage_torrents_new_total",
                "New torrents committed.",
                wt.torrents_new,
            ),
        ];
        // A remote store's writer (PostgreSQL): its buffer and outages (zero on
        // LMDB, which has neither).
        let rt = self.sink.remote_totals().unwrap_or_default();
        out.extend([
            Metric::gauge(
                "magnetar_store_pg_buffered",
                "Records buffered for PostgreSQL, not yet committed (0 on LMDB).",
                rt.buffered as f64,
            ),
            Metric::counter(
                "magnetar_store_pg_retries_total",
                "Failed attempts to reach PostgreSQL (connects and writes).",
                rt.retries,
            ),
            Metric::counter(
                "magnetar_store_pg_outages_total",
                "Times PostgreSQL became unreachable.",
                rt.outages,
            ),
            Metric::gauge(
                "magnetar_store_pg_down",
                "1 while PostgreSQL is unreachable (the writer buffers and retries).",
                if rt.down { 1.0 } else { 0.0 },
            ),
            Metric::counter(
                "magnetar_store_pg_cache_hits_total",
                "Known-torrent lookups answered from the local cache instead of PostgreSQL.",
                rt.cache_hits,
            ),
        ]);
        out.extend(self.filter.metrics());
        if let Some(b) = &self.bitmagnet {
            out.extend(b.metrics());
        }
        if self.next_store_stats.is_none_or(|t| t <= Instant::now()) {
            self.next_store_stats = Some(Instant::now() + Duration::from_secs(10));
            if let Ok(st) = self.sink.stats() {
                self.store_stats = Some(st);
            }
        }
        if let Some(st) = &self.store_stats {
            out.extend([
                Metric::gauge(
                    "magnetar_storage_torrents",
                    "Torrents stored.",
                    st.torrents as f64,
                ),
                Metric::gauge(
                    "magnetar_storage_torrents_with_info",
                    "Torrents stored with their info dict.",
                    st.torrents_with_info as f64,
                ),
                Metric::gauge("magnetar_storage_peers", "Peers stored.", st.peers as f64),
                Metric::gauge(
                    "magnetar_storage_nodes",
                    "DHT nodes stored.",
                    st.nodes as f64,
                ),
                Metric::gauge(
                    "magnetar_storage_sessions",
                    "Crawl sessions stored.",
                    st.sessions as f64,
                ),
                Metric::gauge(
                    "magnetar_storage_requests",
                    "Metadata requests stored.",
                    st.requests as f64,
                ),
                Metric::gauge(
                    "magnetar_storage_disk_bytes",
                    "Size of data.mdb.",
                    st.disk_bytes as f64,
                ),
                Metric::gauge(
                    "magnetar_storage_used_bytes",
                    "Bytes used by the B-trees.",
                    st.used_bytes as f64,
                ),
            ]);
        }
        out
    }

    pub fn counters(&self) -> IngestCounters {
        self.counters
    }

    pub fn writer_totals(&self) -> WriterTotals {
        self.sink.totals()
    }

    /// Best effort: dropped (and counted) when the writer is behind.
    fn offer(&mut self, op: Op) -> Result<()> {
        if self.sink.try_send(op)?.is_some() {
            self.counters.dropped += 1;
        }
        Ok(())
    }

    /// Records one event at wall-clock time `wall` (Unix seconds) and says what to do
    /// with a discovered infohash. An error means the writer failed (fatal).
    pub fn on_event(&mut self, wall: u64, e: &Event) -> Result<Decision> {
        match e {
            Event::InfohashDiscovered {
                info_hash, source, ..
            } => {
                let sources = sources_of(*source);
                let known = match self.sink.record(&info_hash.0) {
                    Ok(k) => k,
                    Err(_) => {
                        self.counters.read_errors += 1;
                        None
                    }
                };
                if let Some(rec) = known {
                    self.counters.known += 1;
                    self.offer(Op::Seen {
                        infohash: info_hash.0,
                        at: wall,
                        sources,
                        seeders: None,
                        leechers: None,
                    })?;
                    // Seen again: the most recently seen are refreshed first.
                    let fresh = rec
                        .scraped_at
                        .is_some_and(|t| wall.saturating_sub(t) < self.scrape_max_age.as_secs());
                    if fresh {
                        return Ok(Decision::Known);
                    }
                    self.counters.refresh_asked += 1;
                    return Ok(Decision::Refresh);
                }
                if self.filter_before_fetch(wall, &info_hash.0)? {
                    self.counters.filtered += 1;
                    return Ok(Decision::Known);
                }
                self.counters.new += 1;
                if let Some(p) = self.pending.get_mut(&info_hash.0) {
                    p.sources = p.sources | sources;
                } else if self.pending.len() < MAX_PENDING {
                    self.pending.insert(
                        info_hash.0,
                        Pending {
                            discovered_at: wall,
                            sources,
                            seeders: None,
                            leechers: None,
                            scraped_at: None,
                        },
                    );
                }
                Ok(Decision::Acquire)
            }
            Event::PeersFound {
                info_hash,
                seeders,
                leechers,
                ..
            } => {
                let (Some(s), Some(l)) = (*seeders, *leechers) else {
                    return Ok(Decision::Nothing);
                };
                if let Some(p) = self.pending.get_mut(&info_hash.0) {
                    // Being acquired: the counts go with the torrent.
                    p.seeders = Some(s);
                    p.leechers = Some(l);
                    p.scraped_at = Some(wall);
                    return Ok(Decision::Nothing);
                }
                // A scrape refresh of a stored torrent (or of one just fetched,
                // whose record may still be in the writer's channel, ahead of this
                // op): its counts, measured now. The store ignores (and counts) an
                // infohash it does not have.
                self.counters.scrapes += 1;
                self.offer(Op::Scrape {
                    infohash: info_hash.0,
                    at: wall,
                    seeders: s,
                    leechers: l,
                })?;
                Ok(Decision::Nothing)
            }
            Event::TrackerReply(r) => {
                // A tracker's counts stand in for the DHT's estimate when it gave
                // none (a torrent being acquired keeps them for its record); for a
                // stored torrent they are a measurement like a BEP 33 scrape's.
                self.counters.tracker_replies += 1;
                if let Some(p) = self.pending.get_mut(&r.info_hash.0) {
                    if p.seeders.is_none() && p.leechers.is_none() {
                        p.seeders = r.seeders;
                        p.leechers = r.leechers;
                        p.scraped_at =
                            (r.seeders.is_some() || r.leechers.is_some()).then_some(wall);
                    }
                    return Ok(Decision::Nothing);
                }
                let (Some(s), Some(l)) = (r.seeders, r.leechers) else {
                    return Ok(Decision::Nothing);
                };
                self.counters.scrapes += 1;
                self.offer(Op::Scrape {
                    infohash: r.info_hash.0,
                    at: wall,
                    seeders: s,
                    leechers: l,
                })?;
                Ok(Decision::Nothing)
            }
            Event::MetadataFetched(m) => {
                let p = self.pending.remove(&m.info_hash.0).unwrap_or(Pending {
                    discovered_at: wall,
                    sources: Sources::default(),
                    seeders: None,
                    leechers: None,
                    scraped_at: None,
                });
                let mut t = torrent_input(m, p.discovered_at, p.sources, p.seeders, p.leechers);
                t.scraped_at = p.scraped_at;
                if self.filter_after_fetch(wall, &m.info_hash.0, &t)? {
                    self.counters.filtered += 1;
                    return Ok(Decision::Nothing);
                }
                if let Some(b) = &self.bitmagnet {
                    b.offer(&t);
                }
                self.sink.send(Op::Torrent(Box::new(t)))?;
                self.counters.torrents += 1;
                Ok(Decision::Nothing)
            }
            Event::PeerSession(r) => {
                self.peer_session(wall, r)?;
                Ok(Decision::Nothing)
            }
            Event::NodeAdded { id, addr, .. } => {
                self.counters.nodes += 1;
                self.offer(Op::Node(NodeRecord {
                    id: id.0,
                    addr: *addr,
                    rtt_ms: None,
                    queries: QueryCounts::default(),
                    responses: QueryCounts::default(),
                    status: NodeStatus::Questionable,
                    last_seen: wall,
                }))?;
                Ok(Decision::Nothing)
            }
            _ => Ok(Decision::Nothing),
        }
    }

    fn peer_session(&mut self, wall: u64, r: &PeerSessionReport) -> Result<()> {
        let (outcome, reason) = match &r.outcome {
            SessionOutcome::Ok => (RequestOutcome::Success, String::new()),
            SessionOutcome::Failed(f) => (RequestOutcome::Failure, reason_name(f)),
            // Closed by us because another peer delivered: neither a success nor
            // the peer's fault, so it is not recorded (nor an outcome this version
            // does not know).
            _ => return Ok(()),
        };
        let client = r
            .version
            .clone()
            .or_else(|| r.client.clone())
            .unwrap_or_default();
        let started_at_ms = (wall * 1000).saturating_sub(r.duration.as_millis() as u64);
        self.counters.requests += 1;
        self.offer(Op::Request(RequestRecord {
            infohash: r.info_hash.0,
            peer: r.peer,
            started_at_ms,
            duration_ms: ms(r.duration),
            outcome,
            reason: reason.clone(),
            pieces: r.pieces,
            client: client.clone(),
            encryption: r.encryption.name().to_owned(),
            transport: r.transport.name().to_owned(),
        }))?;

        if self.peers.len() >= MAX_PEERS && !self.peers.contains_key(&r.peer) {
            self.peers.clear();
        }
        let p = self.peers.entry(r.peer).or_insert_with(|| PeerRecord {
            addr: r.peer,
            client: String::new(),
            attempts: 0,
            successes: 0,
            failures: 0,
            rtt_ms: None,
            ut_metadata: None,
            last_error: String::new(),
            status: PeerStatus::Unknown,
            last_seen: wall,
        });
        p.attempts += 1;
        p.last_seen = wall;
        if !client.is_empty() {
            p.client = client;
        }
        if let Some(rtt) = r.rtt {
            p.rtt_ms = Some(ms(rtt));
        }
        if r.ut_metadata.is_some() {
            p.ut_metadata = Some(true);
        }
        match &r.outcome {
            SessionOutcome::Ok => {
                p.successes += 1;
                p.status = PeerStatus::Good;
            }
            SessionOutcome::Failed(f) => {
                p.failures += 1;
                p.last_error = reason;
                if f.never_serves() {
                    p.ut_metadata = Some(false);
                }
                if p.successes == 0 {
                    p.status = PeerStatus::Bad;
                }
            }
            // Cancelled (or an outcome this version does not know): nothing to record.
            _ => {}
        }
        let rec = p.clone();
        self.offer(Op::Peer(rec))
    }

    /// Saves routing-table nodes (the next start bootstraps from them).
    pub fn nodes<'a>(
        &mut self,
        wall: u64,
        nodes: impl IntoIterator<Item = &'a NodeEntry>,
    ) -> Result<()> {
        for n in nodes {
            self.counters.nodes += 1;
            self.offer(Op::Node(node_record(n, wall)))?;
        }
        Ok(())
    }

    /// Writes the session record (with backpressure: it is small and rare).
    pub fn session(&mut self, s: SessionRecord) -> Result<()> {
        self.sink.send(Op::Session(s))
    }

    /// Addresses of saved nodes, best first.
    pub fn saved_nodes(&self, limit: usize) -> Result<Vec<SocketAddr>> {
        Ok(self
            .sink
            .saved_nodes(limit)?
            .into_iter()
            .map(|n| n.addr)
            .collect())
    }

    /// Blocks until everything sent is committed.
    pub fn flush(&mut self) -> Result<u64> {
        self.sink.flush()
    }

    /// Flushes and stops the writer, then sends what the bitmagnet sink holds
    /// (for at most 10 s; what is left then is dropped, logged and counted).
    pub fn close(mut self) -> Result<WriterTotals> {
        let bitmagnet = self.bitmagnet.take();
        let totals = self.sink.close();
        if let Some(b) = bitmagnet {
            let c = b.close(Duration::from_secs(10));
            tracing::info!(
                sent = c.sent,
                failed = c.failed,
                dropped = c.dropped,
                "bitmagnet sink closed"
            );
        }
        totals
    }

    /// The sink's buffer and outage counters, for a remote store.
    pub fn remote_totals(&self) -> Option<RemoteTotals> {
        self.sink.remote_totals()
    }
}

/// The ingest glue as the runtimes' sink: the same acquire-or-skip decision and
/// the same records on either runtime.
impl Storage for Ingest {
    fn on_event(&mut self, wall: u64, event: &Event) -> std::result::Result<Decision, String> {
        Ingest::on_event(self, wall, event).map_err(|e| e.to_string())
    }
    fn nodes(&mut self, wall: u64, nodes: &[NodeEntry]) -> std::result::Result<(), String> {
        Ingest::nodes(self, wall, nodes).map_err(|e| e.to_string())
    }
    fn close(self: Box<Self>) -> std::result::Result<(), String> {
        Ingest::close(*self).map(|_| ()).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use magnetar_core::metadata::{parse_info, sha1_info_hash, HashKind};
    use magnetar_core::testkit::{build_info, InfoSpec};
    use magnetar_core::{ConnId, InfoHash as CoreIh, Timestamp};

    fn fetched(raw: Vec<u8>, peer: SocketAddr) -> MetadataFetched {
        MetadataFetched {
            info_hash: sha1_info_hash(&raw),
            info: parse_info(&raw).unwrap(),
            raw: Bytes::from(raw),
            peer,
            client: None,
            hash: HashKind::Sha1,
            elapsed: Duration::from_millis(5),
            pieces: 1,
            peers_tried: 1,
        }
    }

    #[test]
    fn routing_entries_keep_their_per_method_counts() {
        use magnetar_core::routing::MethodCounts;
        let n = NodeEntry {
            id: magnetar_core::NodeId([7; 20]),
            addr: "1.2.3.4:6881".parse().unwrap(),
            last_seen: magnetar_core::Timestamp::from_secs(1),
            last_response: Some(magnetar_core::Timestamp::from_secs(1)),
            rtt: Some(Duration::from_millis(30)),
            failures: 0,
            verified: false,
            counts: MethodCounts {
                queries: [1, 2, 3, 4, 5],
                responses: [1, 1, 2, 0, 4],
            },
        };
        let r = node_record(&n, 100);
        let q = QueryCounts {
            ping: 1,
            find_node: 2,
            get_peers: 3,
            announce_peer: 4,
            sample_infohashes: 5,
            other: 0,
        };
        assert_eq!(r.queries, q);
        assert_eq!(
            (
                r.responses.get_peers,
                r.responses.sample_infohashes,
                r.rtt_ms
            ),
            (2, 4, Some(30))
        );
        // And they survive the store.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreOptions::new(dir.path())).unwrap();
        store.apply_batch(&[Op::Node(r.clone())]).unwrap();
        assert_eq!(store.saved_nodes(10).unwrap(), vec![r]);
    }

    #[test]
    fn discovery_fetch_and_session_become_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreOptions::new(dir.path())).unwrap();
        let writer = store.writer(WriterConfig::default()).unwrap();
        let mut ing = Ingest::new(store.clone(), writer);
        let raw = build_info(&InfoSpec::single("hello world.iso", 123_456));
        let peer: SocketAddr = "10.0.0.2:6881".parse().unwrap();
        let m = fetched(raw.clone(), peer);
        let ih = m.info_hash;
        let disc = Event::InfohashDiscovered {
            info_hash: ih,
            source: DiscoverySource::Sample,
            from: "10.0.0.3:6881".parse().unwrap(),
            peer: None,
        };
        assert_eq!(ing.on_event(100, &disc).unwrap(), Decision::Acquire);
        ing.on_event(105, &Event::MetadataFetched(Box::new(m)))
            .unwrap();
        let report = PeerSessionReport {
            info_hash: ih,
            peer,
            conn: ConnId {
                index: 0,
                generation: 1,
            },
            started_at: Timestamp::ZERO,
            duration: Duration::from_millis(40),
            outcome: SessionOutcome::Failed(FailReason::ConnectRefused),
            connect_time: None,
            rtt: None,
            pieces: 0,
            bytes_in: 0,
            bytes_out: 0,
            client: None,
            version: Some("Fake 1.0".into()),
            peer_id: None,
            ut_metadata: None,
            ut_pex: None,
            metadata_size: None,
            fast: false,
            dht: false,
            yourip: None,
            listen_port: None,
            reqq: None,
            pex_added: 0,
            encryption: Default::default(),
            transport: Default::default(),
        };
        ing.on_event(106, &Event::PeerSession(Box::new(report)))
            .unwrap();
        ing.flush().unwrap();
        let t = store.get(&ih.0).unwrap().expect("stored");
        assert_eq!(t.record.name, "hello world.iso");
        assert_eq!(t.record.total_size, 123_456);
        assert_eq!(t.record.discovered_at, 100);
        assert!(t.record.sources.contains(Sources::SAMPLE));
        assert_eq!(store.info_dict(&ih.0).unwrap().unwrap(), raw);
        let reqs = store.recent_requests(10).unwrap();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].reason, "connect_refused");
        assert_eq!(store.peer(&peer).unwrap().unwrap().failures, 1);
        // Now known, without counts: a scrape refresh is asked for.
        assert_eq!(ing.on_event(200, &disc).unwrap(), Decision::Refresh);
        let c = ing.counters();
        assert_eq!((c.new, c.known, c.torrents, c.requests), (1, 1, 1, 1));
        assert_eq!(c.refresh_asked, 1);
        // Its refresh reports counts: stored with their time; seen again soon
        // after, it is known and fresh.
        let found = Event::PeersFound {
            info_hash: ih,
            peers: vec![peer],
            seeders: Some(4),
            leechers: Some(9),
        };
        ing.on_event(210, &found).unwrap();
        ing.flush().unwrap();
        let r = store.get(&ih.0).unwrap().unwrap().record;
        assert_eq!(
            (r.seeders, r.leechers, r.scraped_at),
            (Some(4), Some(9), Some(210))
        );
        assert_eq!(ing.on_event(220, &disc).unwrap(), Decision::Known);
        // A tracker's later answer is a measurement too, stored with its time.
        let tracker = Event::TrackerReply(Box::new(magnetar_core::tracker::TrackerReply {
            info_hash: ih,
            tracker: "udp://127.0.0.1:6969".into(),
            scrape: false,
            peers: vec![peer],
            seeders: Some(6),
            leechers: Some(2),
            downloaded: None,
        }));
        ing.on_event(230, &tracker).unwrap();
        ing.flush().unwrap();
        let r = store.get(&ih.0).unwrap().unwrap().record;
        assert_eq!(
            (r.seeders, r.leechers, r.scraped_at),
            (Some(6), Some(2), Some(230))
        );
        // Older than the refresh age: asked again.
        ing.set_scrape_max_age(Duration::from_secs(60));
        assert_eq!(ing.on_event(300, &disc).unwrap(), Decision::Refresh);
        let unknown = CoreIh([7; 20]);
        assert!(matches!(
            ing.on_event(
                201,
                &Event::InfohashDiscovered {
                    info_hash: unknown,
                    source: DiscoverySource::Announce,
                    from: peer,
                    peer: Some(peer)
                }
            )
            .unwrap(),
            Decision::Acquire
        ));
        ing.close().unwrap();
    }

    /// A BEP 52 hybrid with a BEP 47 padding file, as libtorrent makes them.
    fn hybrid_info() -> Vec<u8> {
        fn s(o: &mut Vec<u8>, b: &[u8]) {
            o.extend_from_slice(format!("{}:", b.len()).as_bytes());
            o.extend_from_slice(b);
        }
        let mut o = b"d".to_vec();
        s(&mut o, b"file tree");
        o.push(b'd');
        for (name, len) in [(&b"a.bin"[..], 20000), (b"b.bin", 70000)] {
            s(&mut o, name);
            o.extend_from_slice(b"d0:d6:length");
            o.extend_from_slice(format!("i{len}e").as_bytes());
            s(&mut o, b"pieces root");
            s(&mut o, &[7; 32]);
            o.extend_from_slice(b"ee");
        }
        o.push(b'e');
        s(&mut o, b"files");
        o.extend_from_slice(b"ld6:lengthi20000e4:pathl5:a.bineed4:attr1:p6:lengthi12768e4:pathl4:.pad5:12768eed6:lengthi70000e4:pathl5:b.bineee");
        o.extend_from_slice(b"12:meta versioni2e");
        s(&mut o, b"name");
        s(&mut o, b"hybrid");
        o.extend_from_slice(b"12:piece lengthi16384e");
        s(&mut o, b"pieces");
        s(&mut o, &[1; 7 * 20]);
        o.push(b'e');
        o
    }

    /// A hybrid fetched by its (truncated) v2 hash is stored under its v1 hash
    /// with both, found by either; its size leaves the padding out, as its file
    /// list does.
    #[test]
    fn a_hybrid_is_keyed_by_v1_whichever_hash_fetched_it() {
        use magnetar_core::metadata::{sha256_info_hash, verify};
        let raw = hybrid_info();
        let info = parse_info(&raw).unwrap();
        assert!(info.has_v1 && info.has_v2, "{info:?}");
        let full = sha256_info_hash(&raw);
        let by_v2 = CoreIh(truncate_v2(&full));
        assert_eq!(verify(&raw, &by_v2), Some(HashKind::Sha256Truncated));
        let m = MetadataFetched {
            info_hash: by_v2,
            hash: HashKind::Sha256Truncated,
            ..fetched(raw.clone(), "10.0.0.2:6881".parse().unwrap())
        };
        let t = torrent_input(&m, 10, Sources::SAMPLE, None, None);
        let v1 = sha1_info_hash(&raw).0;
        assert_eq!(t.infohash, v1);
        assert_eq!(
            (t.kind, t.v2),
            (magnetar_storage::HashKind::Hybrid, Some(full))
        );
        assert_eq!((t.total_size, t.files.len()), (90000, 2));
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreOptions::new(dir.path())).unwrap();
        let writer = store.writer(WriterConfig::default()).unwrap();
        let mut ing = Ingest::new(store.clone(), writer);
        ing.on_event(10, &Event::MetadataFetched(Box::new(m)))
            .unwrap();
        ing.flush().unwrap();
        let a = store.get(&v1).unwrap().unwrap().record;
        let b = store.get(&by_v2.0).unwrap().unwrap().record;
        assert_eq!(a, b);
        // Discovered again by either hash: known.
        for ih in [v1, by_v2.0] {
            let d = Event::InfohashDiscovered {
                info_hash: CoreIh(ih),
                source: DiscoverySource::Sample,
                from: "10.0.0.3:6881".parse().unwrap(),
                peer: None,
            };
            assert_ne!(ing.on_event(20, &d).unwrap(), Decision::Acquire);
        }
        ing.close().unwrap();
        assert_eq!(store.count().unwrap(), 1);
    }

    /// Content rules in the glue: a listed infohash is not acquired (tombstoned); a
    /// `drop words` torrent is not stored (tombstoned, not acquired again); a `hide`
    /// torrent is stored but not found; every decision is counted by rule.
    #[test]
    fn filter_rules_decide_before_and_after_the_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreOptions::new(dir.path())).unwrap();
        let writer = store.writer(WriterConfig::default()).unwrap();
        let mut ing = Ingest::new(store.clone(), writer);
        let listed = CoreIh([0x42; 20]);
        let rules = magnetar_core::filter::Rules::parse(&format!(
            "takedown: drop infohashes {}\nspam: drop words casino\nquiet: hide words secret\n",
            to_hex(&listed.0)
        ))
        .unwrap();
        ing.set_filter(Filter::new(rules, None));
        let peer: SocketAddr = "10.0.0.2:6881".parse().unwrap();
        let disc = |ih| Event::InfohashDiscovered {
            info_hash: ih,
            source: DiscoverySource::Announce,
            from: peer,
            peer: Some(peer),
        };
        assert_eq!(ing.on_event(1, &disc(listed)).unwrap(), Decision::Known);
        let spam = fetched(build_info(&InfoSpec::single("Casino night.iso", 10)), peer);
        let quiet = fetched(build_info(&InfoSpec::single("Secret garden.iso", 10)), peer);
        let plain = fetched(build_info(&InfoSpec::single("Garden party.iso", 10)), peer);
        let ids = [spam.info_hash, quiet.info_hash, plain.info_hash];
        for (m, ih) in [spam, quiet, plain].into_iter().zip(ids) {
            assert_eq!(ing.on_event(2, &disc(ih)).unwrap(), Decision::Acquire);
            ing.on_event(3, &Event::MetadataFetched(Box::new(m)))
                .unwrap();
        }
        ing.flush().unwrap();
        assert_eq!(ing.on_event(4, &disc(ids[0])).unwrap(), Decision::Known);
        assert!(store.get(&ids[0].0).unwrap().is_none());
        assert_eq!(store.tombstone(&ids[0].0).unwrap().unwrap().label, "spam");
        assert_eq!(
            store.tombstone(&listed.0).unwrap().unwrap().label,
            "takedown"
        );
        assert!(store.get(&ids[1].0).unwrap().is_some());
        let found = |q: &str| -> Vec<[u8; 20]> {
            store
                .search(q, 10, 0, Order::Relevance)
                .unwrap()
                .hits
                .iter()
                .map(|h| h.infohash)
                .collect()
        };
        assert_eq!(found("garden"), vec![ids[2].0]);
        assert!(found("casino").is_empty());
        let c = ing.filter().counts().clone();
        let n = |a: &'static str, r: &str| c.get(&(a, r.to_owned())).copied().unwrap_or(0);
        assert_eq!(
            (n("drop", "takedown"), n("drop", "spam"), n("hide", "quiet")),
            (1, 1, 1)
        );
        assert_eq!(n("skip", "tombstone"), 1);
        assert_eq!(ing.counters().filtered, 3);
        ing.close().unwrap();
    }

    #[test]
    fn reason_names_are_snake_case() {
        assert_eq!(reason_name(&FailReason::ConnectRefused), "connect_refused");
        assert_eq!(
            reason_name(&FailReason::InvalidInfo(
                magnetar_core::metadata::InfoError::NoFiles
            )),
            "invalid_info"
        );
        assert_eq!(reason_name(&FailReason::TooLarge), "too_large");
    }
}
