//! `magnetar crawl --runtime tokio`: the tokio driver ([`magnetar_tokio::run`])
//! with the same wiring as the mio loop ([`crate::crawl::wire`]).

use crate::crawl::{self, CrawlOptions, Outcome};
use crate::ingest::Ingest;

/// Runs the crawl on the tokio driver until `duration` passes or SIGINT/SIGTERM.
/// `sockets` are bound already and match `opts.config.identities` one to one.
pub fn run(
    opts: CrawlOptions,
    sockets: Vec<std::net::UdpSocket>,
    ingest: Ingest,
) -> Result<Outcome, String> {
    let w = crawl::wire(opts, ingest, crawl::tokio_only)?;
    let obs = w.observed.clone();
    let mut ro = magnetar_tokio::RunOptions::new(w.config);
    ro.routers = w.routers;
    ro.sockets = sockets;
    ro.bootstrap_nodes = w.saved;
    ro.duration = w.duration;
    ro.storage = Some(Box::new(w.storage));
    ro.status_interval = w.tick;
    ro.on_status = Some(w.on_status);
    ro.on_dns = Some(w.on_dns);
    ro.handle_signals = true;
    let r = magnetar_tokio::run(ro).map_err(|e| e.to_string())?;
    let observed = obs.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(Outcome {
        stats: r.stats,
        counters: r.counters,
        observed,
    })
}
