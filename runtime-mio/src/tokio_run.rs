//! `magnetar crawl --runtime tokio`: the tokio driver ([`magnetar_tokio::run`])
//! with the glue the mio loop uses (the ingest storage, the status line,
//! `/metrics` and the session record), shared through [`crate::crawl`] and
//! `magnetar_storage::ingest`.

use std::time::Duration;

use magnetar_core::report::StatusSample;
use magnetar_core::routing::NodeEntry;
use magnetar_core::{Event, Stats, Timestamp};
use magnetar_storage::ingest::{self, Ingest};
use magnetar_storage::SessionRecord;
use magnetar_tokio::{Decision, RunOptions, RunReport, Snapshot, Storage};

use crate::crawl::{self, CrawlOptions, RuntimeCounters};
use crate::metrics;

/// `/metrics` is rendered this often (as by the mio loop).
const METRICS_EVERY: Duration = Duration::from_secs(1);

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
    let status_every = opts.status_interval;
    // The driver's status tick also drives `/metrics`, so it runs at least once a
    // second when metrics are served; the status line and the session record keep
    // their own interval.
    let tick = match opts.metrics {
        Some(_) => status_every.min(METRICS_EVERY),
        None => status_every,
    };
    // Ticks per status line and session record (counted: tick times jitter).
    let every = (status_every.as_millis() / tick.as_millis().max(1)).max(1) as u64;
    let storage = LmdbStorage::new(ingest, opts.metrics, max_conns, every)
        .map_err(|e| format!("storage: {e}"))?;

    let mut prev = StatusSample::new(Timestamp::ZERO, &Stats::default(), 0);
    let mut ticks = 0u64;
    let on_status = move |s: &Snapshot| {
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
    ro.handle_signals = true;
    magnetar_tokio::run(ro).map_err(|e| e.to_string())
}

/// The tokio driver's counters under the names the mio loop's `/metrics` uses.
fn counters(c: &magnetar_tokio::RuntimeCounters) -> RuntimeCounters {
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
        dns_failures: 0,
    }
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
}

impl LmdbStorage {
    fn new(
        mut ingest: Ingest,
        metrics: Option<metrics::Shared>,
        max_conns: usize,
        session_every: u64,
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
        };
        s.render_metrics(&Stats::default(), &RuntimeCounters::default());
        Ok(s)
    }

    fn render_metrics(&mut self, stats: &Stats, c: &RuntimeCounters) {
        if let Some(shared) = &self.metrics {
            let text = crawl::render_metrics(stats, c, self.max_conns, &mut self.ingest);
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
        self.render_metrics(&snap.stats, &counters(&snap.runtime));
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
