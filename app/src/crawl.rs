//! `magnetar crawl`: the wiring of the LMDB store to a runtime (the mio loop, or
//! the tokio driver with `--runtime tokio`), and what both share: the storage
//! adapter ([`LmdbStorage`]: ingest, session record, `/metrics`), the status line,
//! the event log lines, the bootstrap watch and the leech budget.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use magnetar_core::pump::{self, BootstrapWatch, Decision, RuntimeCounters, Snapshot, Storage};
use magnetar_core::report::{status_line, Metric, StatusSample};
use magnetar_core::routing::NodeEntry;
use magnetar_core::{Config, Event, IdentityConfig, NodeId, Stats, Timestamp};
use magnetar_storage::SessionRecord;

use crate::doctor::{self, Observed};
use crate::ingest::{self, Ingest};
use crate::metrics::{self, prometheus};
use crate::sys;

/// What `magnetar crawl` runs with (built from the command line).
pub struct CrawlOptions {
    pub config: Config,
    /// Router names (`host:port`) resolved off the hot path.
    pub routers: Vec<String>,
    pub duration: Option<Duration>,
    /// Where the `/metrics` responder (already listening) reads its text.
    pub metrics: Option<metrics::Shared>,
    pub status_interval: Duration,
    /// Leeches in flight wanted (capped under RLIMIT_NOFILE).
    pub max_leeches: usize,
    /// When the log gets the doctor's report ([`doctor::LOG_AFTER`] by default).
    pub doctor_after: Duration,
    /// Where each identity's node id is kept (a new one is saved when the
    /// external-address vote makes an identity switch).
    pub id_records: Option<IdRecords>,
    /// The counters of the web server running beside the crawl (`--http`), shown
    /// on `/metrics`.
    pub http: Option<Arc<magnetar_web::ServerCounters>>,
    /// The fleet side: shard and shared queue (inactive without `--queue`).
    pub sharing: crate::queue::Sharing,
}

/// The name under which identity `i` keeps its node id in the database: its bind
/// address's IP and its rank among the identities on that IP (so the name holds
/// when a busy default port falls back to a random one).
pub fn identity_keys(binds: &[SocketAddr]) -> Vec<String> {
    binds
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let rank = binds[..i].iter().filter(|o| o.ip() == b.ip()).count();
            format!("node_id/{}#{rank}", b.ip())
        })
        .collect()
}

/// Where node ids are kept: the LMDB store, or PostgreSQL's `node_ids` table
/// under this host's `--node-name`.
pub enum IdStore {
    Lmdb(magnetar_storage::Store),
    Pg(Box<magnetar_storage_pg::PgIdentities>),
}

impl IdStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        match self {
            IdStore::Lmdb(s) => s.identity(key).map_err(|e| e.to_string()),
            IdStore::Pg(p) => p.get(key).map_err(|e| e.to_string()),
        }
    }
    fn save(&self, key: &str, id: &[u8]) -> Result<(), String> {
        match self {
            IdStore::Lmdb(s) => s.save_identity(key, id).map_err(|e| e.to_string()),
            IdStore::Pg(p) => p.save(key, id).map_err(|e| e.to_string()),
        }
    }
}

/// The node ids kept by an earlier run, by identity (`None`: none kept, or
/// unreadable).
pub fn saved_ids(store: &IdStore, keys: &[String]) -> Vec<Option<NodeId>> {
    keys.iter()
        .map(|k| match store.get(k) {
            Ok(v) => v.and_then(|b| NodeId::from_slice(&b)),
            Err(e) => {
                tracing::warn!("could not read the saved node id {k}: {e}");
                None
            }
        })
        .collect()
}

/// Where the identities' node ids are kept.
pub struct IdRecords {
    pub store: IdStore,
    /// By identity (see [`identity_keys`]).
    pub keys: Vec<String>,
}

impl IdRecords {
    /// Keeps identity `i`'s node id (best effort: a failure is logged).
    pub fn save(&self, i: usize, id: &NodeId) {
        let Some(k) = self.keys.get(i) else {
            return;
        };
        if let Err(e) = self.store.save(k, &id.0) {
            tracing::warn!("could not save the node id {k}: {e}");
        }
    }

    /// Logs and keeps every identity's starting id (`saved`: what the last run kept).
    pub fn save_all(&self, identities: &[IdentityConfig], saved: &[Option<NodeId>]) {
        for (i, ic) in identities.iter().enumerate() {
            let Some(id) = ic.node_id else { continue };
            let reused = saved.get(i).copied().flatten() == Some(id);
            let bep42 = ic
                .external_ip
                .map(|ip| magnetar_core::bep42_matches(&id, ip));
            tracing::info!(
                socket = i,
                bind = %ic.bind,
                node_id = %id,
                reused,
                external_ip = ?ic.external_ip,
                bep42 = ?bep42,
                "DHT identity"
            );
            if !reused {
                self.save(i, &id);
            }
        }
    }
}

/// What a finished crawl reports.
pub struct Outcome {
    pub stats: Stats,
    pub counters: RuntimeCounters,
    /// What the events told (votes, connections, torrents stored).
    pub observed: Observed,
}

/// Wall-clock Unix seconds (stored dates are stamped by the runtime).
pub fn wall_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Binds one non-blocking UDP socket (v6-only for IPv6, large kernel buffers).
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    magnetar_tokio::bind_udp(addr)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The bootstrap watch, shared by the DNS and status callbacks (runtime thread)
/// and the storage (`/metrics`).
type Watch = Arc<Mutex<BootstrapWatch>>;

fn lock(w: &Watch) -> MutexGuard<'_, BootstrapWatch> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the events told, shared by the storage (which sees the events), the status
/// callback (the report in the log) and the caller (`magnetar doctor`).
pub type SharedObserved = Arc<Mutex<Observed>>;

fn observed(o: &SharedObserved) -> MutexGuard<'_, Observed> {
    o.lock().unwrap_or_else(|e| e.into_inner())
}

/// Logs the doctor's report, one line per check (warnings and failures at warn).
pub fn log_report(lines: &[doctor::Line]) {
    for l in lines {
        match l.verdict {
            doctor::Verdict::Ok => tracing::info!(target: "magnetar::doctor", "{l}"),
            _ => tracing::warn!(target: "magnetar::doctor", "{l}"),
        }
    }
}

/// What both runtimes are started with.
pub struct Wiring {
    pub config: Config,
    pub routers: Vec<String>,
    pub duration: Option<Duration>,
    /// Nodes saved by the last run.
    pub saved: Vec<SocketAddr>,
    /// Peer connections allowed.
    pub max_conns: usize,
    /// The status tick (the status line and session record every few ticks).
    pub tick: Duration,
    pub storage: LmdbStorage,
    pub on_status: magnetar_tokio::StatusCallback,
    pub on_dns: magnetar_tokio::DnsCallback,
    pub observed: SharedObserved,
}

/// Builds what a runtime needs from the options and the store: the leech budget,
/// the saved nodes, the storage adapter, the status and DNS callbacks (the
/// status line, the bootstrap watch). `runtime_only` renders the counters one
/// runtime has and the other lacks.
pub fn wire(
    opts: CrawlOptions,
    ingest: Ingest,
    runtime_only: fn(&RuntimeCounters) -> Vec<Metric>,
) -> Result<Wiring, String> {
    let mut config = opts.config;
    let max_conns = apply_leech_budget(&mut config, opts.max_leeches);
    let saved = ingest.saved_nodes(pump::SAVED_NODES).unwrap_or_else(|e| {
        tracing::warn!("could not read saved nodes: {e}");
        Vec::new()
    });
    if !saved.is_empty() {
        tracing::info!(nodes = saved.len(), "bootstrapping from saved nodes");
    }
    // The runtimes' clocks start at zero.
    let watch: Watch = Arc::new(Mutex::new(BootstrapWatch::new(Timestamp::ZERO, &saved)));
    let status_every = opts.status_interval;
    let tick = status_every.min(pump::TICK);
    // Ticks per status line and session record (counted: tick times jitter).
    let every = (status_every.as_millis() / tick.as_millis().max(1)).max(1) as u64;
    let shared_observed: SharedObserved = Arc::default();
    let mut storage = LmdbStorage::new(
        ingest,
        opts.metrics,
        max_conns,
        every,
        watch.clone(),
        runtime_only,
        shared_observed.clone(),
    )
    .map_err(|e| format!("storage failed: {e}"))?;
    storage.id_records = opts.id_records;
    storage.http = opts.http;
    storage.sharing = opts.sharing;
    let on_dns = {
        let watch = watch.clone();
        move |name: &str, r: &Result<Vec<SocketAddr>, String>| {
            // The runtime bootstraps from every resolved address itself.
            lock(&watch).on_dns(name, r);
        }
    };
    let mut prev = StatusSample::new(Timestamp::ZERO, &Stats::default(), 0);
    let mut ticks = 0u64;
    let sockets: Vec<SocketAddr> = config.identities.iter().map(|i| i.bind).collect();
    let (max_leeches, max_pps) = (opts.max_leeches as u64, config.crawl.max_pps as u64);
    let mut reported = false;
    let doctor_after = opts.doctor_after;
    let obs = shared_observed.clone();
    let on_status = move |s: &Snapshot| {
        lock(&watch).check(s.at, s.stats.dht.responses_in);
        // The doctor's report, once, a little into the run.
        let elapsed = s.at.since(Timestamp::ZERO);
        if !reported && elapsed >= doctor_after {
            reported = true;
            let o = observed(&obs).clone();
            let i = doctor::gather(&sockets, &s.stats, &o, max_leeches, max_pps, elapsed);
            tracing::info!(target: "magnetar::doctor", "reachability and funnel after {}s (magnetar doctor):", elapsed.as_secs());
            log_report(&doctor::report(&i));
        }
        ticks += 1;
        if ticks % every != 0 {
            return;
        }
        let cur = StatusSample::new(s.at, &s.stats, s.runtime.infohashes_new);
        print_status(&prev, &cur);
        prev = cur;
    };
    Ok(Wiring {
        config,
        routers: opts.routers,
        duration: opts.duration,
        saved,
        max_conns,
        tick,
        storage,
        on_status: Box::new(on_status),
        on_dns: Box::new(on_dns),
        observed: shared_observed,
    })
}

/// Runs the crawl on the mio loop until `duration` passes or SIGINT/SIGTERM.
/// `sockets` are bound already and match `opts.config.identities` one to one.
pub fn run(
    opts: CrawlOptions,
    sockets: Vec<std::net::UdpSocket>,
    ingest: Ingest,
) -> Result<Outcome, String> {
    let w = wire(opts, ingest, |_| Vec::new())?;
    let obs = w.observed.clone();
    let out = magnetar_mio::run(magnetar_mio::RunOptions {
        config: w.config,
        sockets,
        routers: w.routers,
        bootstrap_nodes: w.saved,
        duration: w.duration,
        status_interval: w.tick,
        max_conns: w.max_conns,
        storage: Box::new(w.storage),
        on_status: Some(w.on_status),
        on_dns: Some(w.on_dns),
    })
    .map_err(|e| e.to_string())?;
    let observed = observed(&obs).clone();
    Ok(Outcome {
        stats: out.stats,
        counters: out.counters,
        observed,
    })
}

/// Caps the leeches (fetch sessions) under RLIMIT_NOFILE, raised first, and lets
/// acquisitions reach that budget. Returns the connections allowed.
pub fn apply_leech_budget(config: &mut Config, max_leeches: usize) -> usize {
    let nofile = sys::raise_nofile();
    let max_conns = sys::leech_budget(nofile, max_leeches);
    if max_conns < max_leeches {
        tracing::warn!(
            nofile,
            wanted = max_leeches,
            using = max_conns,
            "leech concurrency capped under RLIMIT_NOFILE"
        );
    }
    config.fetch.max_sessions = max_conns;
    // Acquisitions (peer search, then fetch) must not cap the leeches below the budget.
    config.crawl.max_acquisitions = config.crawl.max_acquisitions.max(max_conns);
    max_conns
}

/// Prints the status line for the interval `prev`..`cur` (both runtimes): to
/// stderr on a terminal, else as a log line.
pub fn print_status(prev: &StatusSample, cur: &StatusSample) {
    let line = status_line(prev, cur);
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!("{line}");
    } else {
        tracing::info!(target: "magnetar::status", "{line}");
    }
}

/// Logs the events a user wants to see (both runtimes); `bootstrapped` is set by
/// the first `Bootstrapped`.
///
/// At debug level, target `magnetar::timeline`, the steps of each acquisition
/// (discovery, peers found, each peer session) are logged too: with `--log-format
/// json` their timestamps give per-torrent times to metadata (the interop test reads
/// them).
pub fn log_event(e: &Event, bootstrapped: &mut bool) {
    match e {
        Event::InfohashDiscovered {
            info_hash,
            source,
            from,
            peer,
        } => {
            tracing::debug!(
                target: "magnetar::timeline",
                info_hash = %hex(&info_hash.0),
                source = ?source,
                from = %from,
                peer = ?peer,
                "infohash discovered"
            );
        }
        Event::PeersFound {
            info_hash, peers, ..
        } => {
            tracing::debug!(
                target: "magnetar::timeline",
                info_hash = %hex(&info_hash.0),
                peers = peers.len(),
                "peers found"
            );
        }
        Event::PeerSession(r) => {
            tracing::debug!(
                target: "magnetar::timeline",
                info_hash = %hex(&r.info_hash.0),
                peer = %r.peer,
                outcome = ?r.outcome,
                duration_us = r.duration.as_micros() as u64,
                connect_us = r.connect_time.map(|d| d.as_micros() as u64),
                rtt_us = r.rtt.map(|d| d.as_micros() as u64),
                pieces = r.pieces,
                client = ?r.client,
                encryption = r.encryption.name(),
                transport = r.transport.name(),
                "peer session"
            );
        }
        Event::MetadataFetched(m) => {
            tracing::info!(
                info_hash = %hex(&m.info_hash.0),
                name = %m.info.name,
                size = m.info.total_size,
                files = m.info.files.len(),
                peer = %m.peer,
                elapsed_us = m.elapsed.as_micros() as u64,
                peers_tried = m.peers_tried,
                "metadata fetched"
            );
        }
        Event::MetadataFailed(m) => {
            tracing::debug!(info_hash = %hex(&m.info_hash.0), peers = m.peers_tried, "metadata failed");
        }
        Event::TrackerReply(r) => {
            tracing::debug!(
                target: "magnetar::timeline",
                info_hash = %hex(&r.info_hash.0),
                tracker = %r.tracker,
                scrape = r.scrape,
                peers = r.peers.len(),
                seeders = r.seeders,
                leechers = r.leechers,
                "tracker reply"
            );
        }
        Event::Bootstrapped { socket, nodes } => {
            if !*bootstrapped {
                tracing::info!(socket = socket.0, nodes, "bootstrapped");
            }
            *bootstrapped = true;
        }
        Event::IdentityChanged {
            socket,
            old,
            new,
            external_ip,
        } => {
            tracing::info!(
                socket = socket.0,
                %external_ip,
                %old,
                %new,
                "external address settled: new BEP 42 node id"
            );
        }
        Event::BootstrapFailed { socket, attempt } => {
            tracing::debug!(socket = socket.0, attempt, "bootstrap retry");
        }
        _ => {}
    }
}

/// Brings a session record up to date: counters, peak RSS, CPU time.
pub fn update_session(s: &mut SessionRecord, stats: &Stats, ingest: &Ingest) {
    ingest.update_session(s, stats);
    let pid = std::process::id();
    if let Some((_, peak)) = sys::rss(pid) {
        s.peak_rss_bytes = peak;
    }
    if let Some(cpu) = sys::cpu_time(pid) {
        s.cpu_ms = cpu.as_millis() as u64;
    }
}

/// The `/metrics` text (both runtimes): the core's counters, the runtime's (plus
/// `runtime_only`, the counters one runtime has and the other lacks), the
/// process's and storage's.
pub fn render_metrics(
    stats: &Stats,
    c: &RuntimeCounters,
    max_conns: usize,
    ingest: &mut Ingest,
    runtime_only: Vec<Metric>,
    observed: &Observed,
) -> String {
    let mut extra = vec![
        Metric::counter(
            "magnetar_runtime_infohashes_new_total",
            "Discovered infohashes not in storage (acquired).",
            c.infohashes_new,
        ),
        Metric::counter(
            "magnetar_runtime_infohashes_known_total",
            "Discovered infohashes already in storage (skipped).",
            c.infohashes_known,
        ),
        Metric::counter(
            "magnetar_runtime_acquire_full_total",
            "Acquisitions refused: queue full.",
            c.acquire_full,
        ),
        Metric::counter(
            "magnetar_runtime_udp_send_errors_total",
            "UDP send errors.",
            c.udp_send_errors,
        ),
        Metric::counter(
            "magnetar_runtime_udp_send_would_block_total",
            "Datagrams dropped: send buffer full.",
            c.udp_send_would_block,
        ),
        Metric::counter(
            "magnetar_runtime_udp_recv_errors_total",
            "UDP receive errors.",
            c.udp_recv_errors,
        ),
        Metric::counter(
            "magnetar_runtime_tcp_local_errors_total",
            "Connects failed locally (fd limit, backoff).",
            c.tcp_connect_local_errors,
        ),
        Metric::counter(
            "magnetar_runtime_emfile_total",
            "Connects that hit the file descriptor limit.",
            c.emfile,
        ),
        Metric::gauge(
            "magnetar_runtime_tcp_open",
            "Peer connections open.",
            c.tcp_open as f64,
        ),
        Metric::gauge(
            "magnetar_runtime_tcp_max",
            "Peer connections allowed.",
            max_conns as f64,
        ),
        Metric::counter(
            "magnetar_runtime_dns_failures_total",
            "Router name resolutions that failed.",
            c.dns_failures,
        ),
    ];
    extra.extend(runtime_only);
    let pid = std::process::id();
    if let Some((rss, _)) = sys::rss(pid) {
        extra.push(Metric::gauge(
            "process_resident_memory_bytes",
            "Resident memory.",
            rss as f64,
        ));
    }
    if let Some(cpu) = sys::cpu_time(pid) {
        extra.push(Metric::gauge(
            "process_cpu_seconds_total",
            "CPU time, user and system.",
            cpu.as_secs_f64(),
        ));
    }
    extra.extend(ingest.metrics());
    extra.extend(doctor::Funnel::new(stats, observed).metrics());
    prometheus(stats, &extra)
}

/// The driver's counters that the mio loop has no equivalent of (it calls storage
/// inline and has no event stream).
pub fn tokio_only(c: &RuntimeCounters) -> Vec<Metric> {
    vec![
        Metric::counter(
            "magnetar_runtime_storage_waits_total",
            "Times the driver waited for room in the storage channel (backpressure).",
            c.storage_waits,
        ),
        Metric::counter(
            "magnetar_runtime_storage_errors_total",
            "Storage calls that failed (the first one stops the crawl).",
            c.storage_errors,
        ),
        Metric::counter(
            "magnetar_runtime_stream_dropped_total",
            "Events not delivered to the library event stream because it was full.",
            c.stream_dropped,
        ),
    ]
}

/// The ingest glue as the runtimes' [`Storage`] (on the tokio driver's storage
/// thread, or inline in the mio loop), plus what needs it: the session record,
/// the `/metrics` text and the log lines for events.
pub struct LmdbStorage {
    ingest: Ingest,
    session: SessionRecord,
    /// Status ticks seen, and how many make one session-record write.
    ticks: u64,
    session_every: u64,
    metrics: Option<metrics::Shared>,
    max_conns: usize,
    bootstrapped: bool,
    watch: Watch,
    /// Runtime-only counters to render (the tokio driver's).
    runtime_only: fn(&RuntimeCounters) -> Vec<Metric>,
    observed: SharedObserved,
    /// Where a switched identity's new node id is kept.
    id_records: Option<IdRecords>,
    /// The web server's counters (`--http`).
    http: Option<Arc<magnetar_web::ServerCounters>>,
    /// The fleet side (`--shard`, `--queue`).
    sharing: crate::queue::Sharing,
}

impl LmdbStorage {
    fn new(
        mut ingest: Ingest,
        metrics: Option<metrics::Shared>,
        max_conns: usize,
        session_every: u64,
        watch: Watch,
        runtime_only: fn(&RuntimeCounters) -> Vec<Metric>,
        observed: SharedObserved,
    ) -> Result<Self, magnetar_storage::StoreError> {
        let session = ingest::new_session(wall_secs());
        ingest.session(session.clone())?;
        let mut s = LmdbStorage {
            ingest,
            session,
            ticks: 0,
            session_every,
            metrics,
            max_conns,
            bootstrapped: false,
            watch,
            runtime_only,
            observed,
            id_records: None,
            http: None,
            sharing: crate::queue::Sharing::new(magnetar_core::Shard::ALL, None),
        };
        s.render_metrics(&Stats::default(), &Default::default());
        Ok(s)
    }

    fn render_metrics(&mut self, stats: &Stats, c: &RuntimeCounters) {
        if let Some(shared) = &self.metrics {
            let mut c = c.clone();
            c.dns_failures = lock(&self.watch).dns_failures();
            let mut only = (self.runtime_only)(&c);
            if let Some(h) = &self.http {
                only.extend(metrics::http(h));
            }
            only.extend(self.sharing.metrics());
            let o = observed(&self.observed);
            let text = render_metrics(stats, &c, self.max_conns, &mut self.ingest, only, &o);
            drop(o);
            if let Ok(mut t) = shared.lock() {
                *t = text;
            }
        }
    }
}

impl Storage for LmdbStorage {
    fn on_event(&mut self, wall: u64, event: &Event) -> Result<Decision, String> {
        log_event(event, &mut self.bootstrapped);
        observed(&self.observed).on_event(event);
        if let (Event::IdentityChanged { socket, new, .. }, Some(r)) = (event, &self.id_records) {
            r.save(socket.0 as usize, new);
        }
        self.sharing.on_event(event);
        let d = Storage::on_event(&mut self.ingest, wall, event)?;
        // Not in the local store: is it in the fleet's shared one?
        if let (Decision::Acquire, Event::InfohashDiscovered { info_hash, .. }) = (d, event) {
            if self.sharing.active() && self.sharing.is_stored(info_hash) {
                return Ok(Decision::Known);
            }
        }
        Ok(d)
    }

    fn nodes(&mut self, wall: u64, nodes: &[NodeEntry]) -> Result<(), String> {
        Storage::nodes(&mut self.ingest, wall, nodes)
    }

    fn status(&mut self, wall: u64, snap: &Snapshot, last: bool) -> Result<(), String> {
        self.ingest.poll_filter_reload();
        self.sharing.tick(last);
        observed(&self.observed).stored = self.ingest.counters().torrents;
        self.render_metrics(&snap.stats, &snap.runtime);
        self.ticks += 1;
        if last || self.ticks % self.session_every == 0 {
            update_session(&mut self.session, &snap.stats, &self.ingest);
            if last {
                self.session.ended_at = Some(wall);
            }
            self.ingest
                .session(self.session.clone())
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn claimed(&mut self, out: &mut Vec<magnetar_core::InfoHash>) {
        self.sharing.take_claimed(out);
    }

    fn close(self: Box<Self>) -> Result<(), String> {
        Storage::close(Box::new(self.ingest))
    }
}
