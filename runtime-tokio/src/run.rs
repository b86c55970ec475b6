//! The driver entry point for the `magnetar` binary (`magnetar crawl --runtime tokio`).

use std::net::SocketAddr;
use std::time::Duration;

use magnetar_core::{Config, Stats};

use crate::storage::Storage;
use crate::{Crawler, Error, RuntimeCounters, Snapshot, DEFAULT_SHUTDOWN_TIMEOUT};

/// Called every status interval with the counters (on the runtime's thread).
pub type StatusCallback = Box<dyn FnMut(&Snapshot) + Send>;

/// Called with each router name's resolution, failures included (on the
/// runtime's thread, before the driver bootstraps from the addresses). The binary
/// uses it for the "no bootstrap node has answered" report it shares with the mio
/// runtime.
pub type DnsCallback = Box<dyn FnMut(&str, &Result<Vec<SocketAddr>, String>) + Send>;

// How long unresolved router names wait before the next attempt (doubling, to
// at most `DNS_RETRY_MAX`): the pump's constants, as in the mio runtime.
use magnetar_core::pump::{self, DNS_RETRY_FIRST as DNS_RETRY, DNS_RETRY_MAX};

/// What [`run`] crawls with.
pub struct RunOptions {
    /// The crawler's configuration; `fetch.max_sessions` must already fit the fd
    /// limit (the binary caps it under RLIMIT_NOFILE as for the mio runtime).
    pub config: Config,
    /// Router names (`host:port`), resolved off the hot path and retried.
    pub routers: Vec<String>,
    /// UDP sockets bound already (one per identity, in order); empty: bind
    /// `config.identities[i].bind` here.
    pub sockets: Vec<std::net::UdpSocket>,
    /// Addresses to bootstrap from at once (e.g. nodes saved by an earlier run).
    pub bootstrap_nodes: Vec<SocketAddr>,
    /// Stop after this long (`None`: until SIGINT/SIGTERM).
    pub duration: Option<Duration>,
    /// Where results go (`None`: nowhere; every discovery is acquired).
    pub storage: Option<Box<dyn Storage>>,
    /// How often `on_status` (and [`Storage::status`]) get the counters.
    pub status_interval: Duration,
    /// For the status line and `/metrics` (rendered by `magnetar_core::report`).
    pub on_status: Option<StatusCallback>,
    /// Each router resolution; without it, failures are logged here.
    pub on_dns: Option<DnsCallback>,
    /// Bound on the graceful shutdown (storage flush).
    pub shutdown_timeout: Duration,
    /// Stop on SIGINT/SIGTERM (a second signal exits at once with status 130).
    pub handle_signals: bool,
}

impl RunOptions {
    pub fn new(config: Config) -> Self {
        RunOptions {
            config,
            routers: Vec::new(),
            sockets: Vec::new(),
            bootstrap_nodes: Vec::new(),
            duration: None,
            storage: None,
            status_interval: crate::DEFAULT_STATUS_INTERVAL,
            on_status: None,
            on_dns: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            handle_signals: true,
        }
    }
}

/// Why [`run`] stopped, and the final counters.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub stats: Stats,
    pub counters: RuntimeCounters,
    /// "duration reached" or "signal".
    pub stop_reason: &'static str,
}

/// Crawls on a new current-thread tokio runtime until `opts.duration` passes or a
/// signal arrives, then shuts down gracefully (storage flushed). A storage failure
/// stops the crawl at once and is the error returned, as in the mio runtime.
pub fn run(opts: RunOptions) -> Result<RunReport, Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(opts))
}

async fn run_async(opts: RunOptions) -> Result<RunReport, Error> {
    let mut b = Crawler::builder(opts.config)
        .event_capacity(0)
        .status_interval(opts.status_interval)
        .shutdown_timeout(opts.shutdown_timeout)
        .sockets(opts.sockets);
    if let Some(s) = opts.storage {
        b = b.storage(s);
    }
    let (handle, _events) = b.start()?;
    for (i, a) in handle.local_addrs().iter().enumerate() {
        tracing::info!(socket = i, bind = %a, "identity (tokio runtime)");
    }
    if !opts.bootstrap_nodes.is_empty() {
        handle.bootstrap(&opts.bootstrap_nodes).await?;
    }
    let resolver = {
        let handle = handle.clone();
        let routers = opts.routers;
        let on_dns = opts.on_dns;
        tokio::spawn(async move { resolve_routers(handle, routers, on_dns).await })
    };

    let status = opts.on_status.map(|mut f| {
        let handle = handle.clone();
        let every = opts.status_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match handle.stats().await {
                    Ok(s) => f(&s),
                    Err(_) => return,
                }
            }
        })
    });

    let stop_reason = tokio::select! {
        () = sleep_opt(opts.duration) => "duration reached",
        () = signal(opts.handle_signals) => "signal",
        // Only a storage failure stops the driver by itself.
        () = handle.stopped() => "storage failed",
    };
    tracing::info!(reason = stop_reason, "crawl stopping");
    resolver.abort();
    if let Some(s) = status {
        s.abort();
    }
    let report = handle.shutdown().await?;
    let c = &report.counters;
    tracing::info!(
        fetched = report.stats.fetch.fetched,
        failed = report.stats.fetch.failed,
        new_infohashes = c.infohashes_new,
        storage_waits = c.storage_waits,
        storage_errors = c.storage_errors,
        stream_dropped = c.stream_dropped,
        "crawl stopped"
    );
    Ok(RunReport {
        stats: report.stats,
        counters: report.counters,
        stop_reason,
    })
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Resolves when SIGINT or SIGTERM arrives; then a second one exits at once.
async fn signal(enabled: bool) {
    use tokio::signal::unix::{signal, SignalKind};
    if !enabled {
        return std::future::pending().await;
    }
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("could not install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping (a second signal exits at once)");
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        std::process::exit(130);
    });
}

/// Resolves each router name (retrying failures with backoff) and bootstraps from
/// the addresses as they come.
async fn resolve_routers(
    handle: crate::Handle,
    mut names: Vec<String>,
    mut on_dns: Option<DnsCallback>,
) {
    let mut wait = DNS_RETRY;
    while !names.is_empty() {
        let mut failed = Vec::new();
        for name in names {
            let result = pump::resolved(tokio::net::lookup_host(name.clone()).await);
            match &mut on_dns {
                Some(f) => f(&name, &result),
                None => match &result {
                    Ok(addrs) => tracing::debug!(%name, ?addrs, "router resolved"),
                    Err(e) => {
                        tracing::warn!(%name, "could not resolve bootstrap router: {e} (retrying)")
                    }
                },
            }
            match result {
                Ok(addrs) => {
                    if handle.bootstrap(&addrs).await.is_err() {
                        return;
                    }
                }
                Err(_) => failed.push(name),
            }
        }
        names = failed;
        if !names.is_empty() {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(DNS_RETRY_MAX);
        }
    }
}
