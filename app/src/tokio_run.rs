//! `magnetar crawl --runtime tokio`: the tokio driver ([`magnetar_tokio::run`])
//! with the glue the mio loop uses (the ingest storage, the status line,
//! `/metrics`, the session record and the "no bootstrap node has answered"
//! report), shared through [`crate::crawl`] and `magnetar_storage::ingest`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use magnetar_core::report::{Metric, StatusSample};
use magnetar_core::routing::NodeEntry;
use magnetar_core::{Event, Stats, Timestamp};
use magnetar_storage::ingest::{self, Ingest};
use magnetar_storage::SessionRecord;
use magnetar_tokio::{Decision, RunOptions, RunReport, Snapshot, Storage};

use crate::crawl::{self, BootstrapWatch, CrawlOptions, RuntimeCounters};
use crate::metrics;

/// The driver's status tick: `/metrics` is rendered this often (as by the mio
/// loop) and the bootstrap watch looks this often; the status line and the
/// session record keep their own interval.
const TICK: Duration = Duration::from_secs(1);

/// The bootstrap watch, shared by the DNS and status callbacks (runtime thread)
/// and the storage thread (`/metrics`).
type Watch = Arc<Mutex<BootstrapWatch>>;

fn lock(w: &Watch) -> MutexGuard<'_, BootstrapWatch> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the crawl on the tokio driver until `duration` passes or SIGINT/SIGTERM.
/// `sockets` are bound already and match `opts.config.identities` one to one.
pub fn run(
    opts: CrawlOptions,
    sockets: Vec<std::net::UdpSocket>,
    ingest: Ingest,
) -> Result<RunReport, String> {
    let mut config = opts.config;
    let max_conns = crawl::apply_leech_budget(&mut config, opts.max_leeches);
    let saved = ingest.saved_nodes(crawl::SAVED_NODES).unwrap_or_else(|e| {
        tracing::warn!("could not read saved nodes: {e}");
        Vec::new()
    });
    if !saved.is_empty() {
        tracing::info!(nodes = saved.len(), "bootstrapping from saved nodes");
    }
    // The driver's clock starts at zero.
    let watch: Watch = Arc::new(Mutex::new(BootstrapWatch::new(Timestamp::ZERO, &saved)));
    let status_every = opts.status_interval;
    let tick = status_every.min(TICK);
    // Ticks per status line and session record (counted: tick times jitter).
    let every = (status_every.as_millis() / tick.as_millis().max(1)).max(1) as u64;
    let storage = LmdbStorage::new(ingest, opts.metrics, max_conns, every, watch.clone())
        .map_err(|e| format!("storage failed: {e}"))?;

    let on_dns = {
        let watch = watch.clone();
        move |name: &str, r: &Result<Vec<std::net::SocketAddr>, String>| {
            // The driver bootstraps from every resolved address itself.
            lock(&watch).on_dns(name, r);
        }
    };
    let mut prev = StatusSample::new(Timestamp::ZERO, &Stats::default(), 0);
    let mut ticks = 0u64;
    let on_status = move |s: &Snapshot| {
        lock(&watch).check(s.at, s.stats.dht.responses_in);
        ticks += 1;
        if ticks % every != 0 {
            return;
        }
        let cur = StatusSample::new(s.at, &s.stats, s.runtime.infohashes_new);
        crawl::print_status(&prev, &cur);
        prev = cur;
    };

    let mut ro = RunOptions::new(config);
    ro.routers = opts.routers;
    ro.sockets = sockets;
    ro.bootstrap_nodes = saved;
    ro.duration = opts.duration;
    ro.storage = Some(Box::new(storage));
    ro.status_interval = tick;
    ro.on_status = Some(Box::new(on_status));
    ro.on_dns = Some(Box::new(on_dns));
    ro.handle_signals = true;
    magnetar_tokio::run(ro).map_err(|e| e.to_string())
}

/// The tokio driver's counters under the names the mio loop's `/metrics` uses
/// (`dns_failures` is counted by the shared bootstrap watch).
fn counters(c: &magnetar_tokio::RuntimeCounters, dns_failures: u64) -> RuntimeCounters {
    RuntimeCounters {
        infohashes_new: c.infohashes_new,
        infohashes_known: c.infohashes_known,
        acquire_full: c.acquire_full,
        udp_send_errors: c.udp_send_errors,
        udp_send_would_block: c.udp_send_would_block,
        udp_recv_errors: c.udp_recv_errors,
        tcp_connect_local_errors: c.tcp_connect_local_errors,
        emfile: c.emfile,
        tcp_open: c.tcp_open,
        dns_failures,
    }
}

/// The driver's counters that the mio loop has no equivalent of (it calls storage
/// inline and has no event stream).
fn tokio_only(c: &magnetar_tokio::RuntimeCounters) -> Vec<Metric> {
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

/// The ingest glue on the driver's storage thread, plus what needs it: the
/// session record and the `/metrics` text.
struct LmdbStorage {
    ingest: Ingest,
    session: SessionRecord,
    /// Status ticks seen, and how many make one session-record write.
    ticks: u64,
    session_every: u64,
    metrics: Option<metrics::Shared>,
    max_conns: usize,
    bootstrapped: bool,
    watch: Watch,
}

impl LmdbStorage {
    fn new(
        mut ingest: Ingest,
        metrics: Option<metrics::Shared>,
        max_conns: usize,
        session_every: u64,
        watch: Watch,
    ) -> Result<Self, magnetar_storage::StoreError> {
        let session = ingest::new_session(crawl::wall_secs());
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
        };
        s.render_metrics(&Stats::default(), &Default::default());
        Ok(s)
    }

    fn render_metrics(&mut self, stats: &Stats, c: &magnetar_tokio::RuntimeCounters) {
        if let Some(shared) = &self.metrics {
            let dns_failures = lock(&self.watch).dns_failures();
            let text = crawl::render_metrics(
                stats,
                &counters(c, dns_failures),
                self.max_conns,
                &mut self.ingest,
                tokio_only(c),
            );
            if let Ok(mut t) = shared.lock() {
                *t = text;
            }
        }
    }
}

impl Storage for LmdbStorage {
    fn on_event(&mut self, wall: u64, event: &Event) -> Result<Decision, String> {
        crawl::log_event(event, &mut self.bootstrapped);
        Storage::on_event(&mut self.ingest, wall, event)
    }

    fn nodes(&mut self, wall: u64, nodes: &[NodeEntry]) -> Result<(), String> {
        Storage::nodes(&mut self.ingest, wall, nodes)
    }

    fn status(&mut self, wall: u64, snap: &Snapshot, last: bool) -> Result<(), String> {
        self.render_metrics(&snap.stats, &snap.runtime);
        self.ticks += 1;
        if last || self.ticks % self.session_every == 0 {
            crawl::update_session(&mut self.session, &snap.stats, &self.ingest);
            if last {
                self.session.ended_at = Some(wall);
            }
            self.ingest
                .session(self.session.clone())
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn close(self: Box<Self>) -> Result<(), String> {
        Storage::close(Box::new(self.ingest))
    }
}
