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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use magnetar_core::fetch::{FailReason, MetadataFetched, PeerSessionReport, SessionOutcome};
use magnetar_core::report::Metric;
use magnetar_core::routing::NodeEntry;
use magnetar_core::{DiscoverySource, Event};

use magnetar_core::pump::{Decision, Storage};
use magnetar_storage::*;

type Result<T> = std::result::Result<T, StoreError>;

/// Acquisitions remembered (discovery time, sources, scrape) until fetched.
const MAX_PENDING: usize = 200_000;
/// Peers whose counters are kept in memory (then the table starts over).
const MAX_PEERS: usize = 100_000;

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
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    discovered_at: u64,
    sources: Sources,
    seeders: Option<u32>,
    leechers: Option<u32>,
}

/// The event → record glue around a store and its writer.
pub struct Ingest {
    store: Store,
    writer: Writer,
    pending: HashMap<InfoHash, Pending>,
    peers: HashMap<SocketAddr, PeerRecord>,
    counters: IngestCounters,
    /// The store's totals for `/metrics`, read at most every 10 s.
    store_stats: Option<magnetar_storage::Stats>,
    next_store_stats: Option<Instant>,
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

/// The torrent record for verified metadata (padding files are left out of the list).
pub fn torrent_input(
    m: &MetadataFetched,
    discovered_at: u64,
    sources: Sources,
    seeders: Option<u32>,
    leechers: Option<u32>,
) -> TorrentInput {
    let info = &m.info;
    TorrentInput {
        infohash: m.info_hash.0,
        name: info.name.clone(),
        total_size: info.total_size,
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
        Ingest {
            store,
            writer,
            pending: HashMap::new(),
            peers: HashMap::new(),
            counters: IngestCounters::default(),
            store_stats: None,
            next_store_stats: None,
        }
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
        let wt = self.writer.totals();
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
        if self.next_store_stats.is_none_or(|t| t <= Instant::now()) {
            self.next_store_stats = Some(Instant::now() + Duration::from_secs(10));
            if let Ok(st) = self.store.stats() {
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

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn counters(&self) -> IngestCounters {
        self.counters
    }

    pub fn writer_totals(&self) -> WriterTotals {
        self.writer.totals()
    }

    /// Best effort: dropped (and counted) when the writer is behind.
    fn offer(&mut self, op: Op) -> Result<()> {
        if self.writer.try_send(op)?.is_some() {
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
                let known = match self.store.contains(&info_hash.0) {
                    Ok(k) => k,
                    Err(_) => {
                        self.counters.read_errors += 1;
                        false
                    }
                };
                if known {
                    self.counters.known += 1;
                    self.offer(Op::Seen {
                        infohash: info_hash.0,
                        at: wall,
                        sources,
                        seeders: None,
                        leechers: None,
                    })?;
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
                if let Some(p) = self.pending.get_mut(&info_hash.0) {
                    p.seeders = seeders.or(p.seeders);
                    p.leechers = leechers.or(p.leechers);
                }
                Ok(Decision::Nothing)
            }
            Event::MetadataFetched(m) => {
                let p = self.pending.remove(&m.info_hash.0).unwrap_or(Pending {
                    discovered_at: wall,
                    sources: Sources::default(),
                    seeders: None,
                    leechers: None,
                });
                let t = torrent_input(m, p.discovered_at, p.sources, p.seeders, p.leechers);
                self.writer.send(Op::Torrent(Box::new(t)))?;
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
        self.writer.send(Op::Session(s))
    }

    /// Addresses of saved nodes, best first.
    pub fn saved_nodes(&self, limit: usize) -> Result<Vec<SocketAddr>> {
        Ok(self
            .store
            .saved_nodes(limit)?
            .into_iter()
            .map(|n| n.addr)
            .collect())
    }

    /// Blocks until everything sent is committed.
    pub fn flush(&self) -> Result<u64> {
        self.writer.flush()
    }

    /// Flushes and stops the writer.
    pub fn close(self) -> Result<WriterTotals> {
        self.writer.close()
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
        // Now known: skipped.
        assert_eq!(ing.on_event(200, &disc).unwrap(), Decision::Known);
        let c = ing.counters();
        assert_eq!((c.new, c.known, c.torrents, c.requests), (1, 1, 1, 1));
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
