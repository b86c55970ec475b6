//! The mio event loop around the sans-IO crawler.
//!
//! One thread, one `Poll`. Every wakeup follows DESIGN.md §1: feed each input to
//! the crawler (a datagram, a TCP event, the timer), drain `poll_output` until
//! `Timeout`/`Idle`, carry out every output, then poll until the next socket event
//! or the core's deadline. UDP sockets are drained until `WouldBlock` (mio is
//! edge-triggered) in batches of [`UDP_BATCH`], so a flood cannot starve signals,
//! TCP and housekeeping; readable TCP streams are drained until `WouldBlock`.
//!
//! Tokens: a peer connection's token is its `ConnId::to_usize()`; the UDP sockets,
//! the signal pipe and the waker take tokens from the top of the `usize` range,
//! which no `ConnId` reaches in practice (it would need generation `u32::MAX`).

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use magnetar_core::report::{status_line, Metric, StatusSample};
use magnetar_core::{
    CloseReason, Config, ConnId, Crawler, Event, Input, Output, SocketId, Timestamp,
};
use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::dns::{self, Resolved};
use crate::metrics::{self, prometheus};
use crate::sys;
use magnetar_storage::ingest::{Decision, Ingest};
use magnetar_storage::SessionRecord;

const SIGNAL: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);
/// UDP socket `i` has token `UDP_BASE - i`.
const UDP_BASE: usize = usize::MAX - 16;

/// Largest UDP datagram we read (KRPC messages are well under 1,500 bytes).
const UDP_BUF: usize = 65_536;
/// Datagrams read from one socket before the loop looks at everything else.
const UDP_BATCH: u32 = 1024;
/// Bytes read from a TCP stream per `read` call.
const TCP_BUF: usize = 64 * 1024;
/// After EMFILE/ENFILE, connects fail fast (as `LocalError`) for this long.
const EMFILE_BACKOFF: Duration = Duration::from_millis(250);
/// Nodes saved by earlier runs that a start bootstraps from.
pub const SAVED_NODES: usize = 48;
/// When no bootstrap node answered after this long, say so (then with backoff).
const BOOTSTRAP_WARN: Duration = Duration::from_secs(30);
/// The routing tables are saved this often (and at the end).
const SAVE_NODES_EVERY: Duration = Duration::from_secs(300);

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
}

/// Wall-clock Unix seconds (stored dates are stamped by the runtime).
pub fn wall_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `Timestamp`s are nanoseconds since the process (loop) started.
struct Clock(Instant);

impl Clock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.elapsed().as_nanos() as u64)
    }
}

struct Conn {
    stream: TcpStream,
    connected: bool,
    wbuf: Vec<u8>,
}

/// Counters only the runtime sees.
#[derive(Default, Debug, Clone)]
pub struct RuntimeCounters {
    pub infohashes_new: u64,
    pub infohashes_known: u64,
    pub acquire_full: u64,
    pub udp_send_errors: u64,
    pub udp_send_would_block: u64,
    pub udp_recv_errors: u64,
    pub tcp_connect_local_errors: u64,
    pub emfile: u64,
    pub tcp_open: usize,
    pub dns_failures: u64,
}

/// "No bootstrap node has answered", shared by both runtimes: it remembers the
/// addresses tried (saved nodes, resolved routers) and the router names that did
/// not resolve, and when nothing has answered `BOOTSTRAP_WARN` after the start it
/// says so plainly, then again with a doubling interval (at most every 10 min),
/// until a node answers. The runtime keeps retrying meanwhile (core's bootstrap
/// backoff, the resolver's retries); this only reports.
#[derive(Debug)]
pub struct BootstrapWatch {
    start: Timestamp,
    next: Timestamp,
    every: Duration,
    answered: bool,
    tried: Vec<SocketAddr>,
    dns_failed: Vec<(String, String)>,
    dns_failures: u64,
}

impl BootstrapWatch {
    /// Starts watching at `start` (the runtime's clock), bootstrapping from `saved`.
    pub fn new(start: Timestamp, saved: &[SocketAddr]) -> Self {
        BootstrapWatch {
            start,
            next: start.add(BOOTSTRAP_WARN),
            every: BOOTSTRAP_WARN,
            answered: false,
            tried: saved.to_vec(),
            dns_failed: Vec::new(),
            dns_failures: 0,
        }
    }

    /// One router name's resolution (both runtimes resolve off the hot path and
    /// retry failures). A failure is counted and warned about once per name (its
    /// retries log at debug). Returns the addresses not tried before.
    pub fn on_dns(
        &mut self,
        name: &str,
        result: &Result<Vec<SocketAddr>, String>,
    ) -> Vec<SocketAddr> {
        let mut fresh = Vec::new();
        match result {
            Ok(addrs) => {
                tracing::debug!(%name, ?addrs, "router resolved");
                self.dns_failed.retain(|(n, _)| n != name);
                for a in addrs {
                    if !self.tried.contains(a) {
                        self.tried.push(*a);
                        fresh.push(*a);
                    }
                }
            }
            Err(e) => {
                self.dns_failures += 1;
                if self.dns_failed.iter().any(|(n, _)| n == name) {
                    tracing::debug!(%name, "still cannot resolve bootstrap router: {e}");
                } else {
                    tracing::warn!(%name, "could not resolve bootstrap router: {e} (retrying with backoff)");
                }
                self.dns_failed.retain(|(n, _)| n != name);
                self.dns_failed.push((name.to_string(), e.clone()));
            }
        }
        fresh
    }

    /// Router name resolutions that failed so far (for `/metrics`).
    pub fn dns_failures(&self) -> u64 {
        self.dns_failures
    }

    /// When [`BootstrapWatch::check`] is due next; `None` once a node answered.
    pub fn next_check(&self) -> Option<Timestamp> {
        (!self.answered).then_some(self.next)
    }

    /// Called at least at [`BootstrapWatch::next_check`], with the responses the
    /// crawler has received so far. Once any arrived, the watch ends; otherwise, when
    /// due, it logs the warning (returned too) and backs off.
    pub fn check(&mut self, now: Timestamp, responses_in: u64) -> Option<String> {
        if self.answered || now < self.next {
            return None;
        }
        // Some node answered: bootstrap is under way even if the tables are small.
        if responses_in > 0 {
            self.answered = true;
            return None;
        }
        let tried: Vec<String> = self.tried.iter().map(|a| a.to_string()).collect();
        let dns: Vec<String> = self
            .dns_failed
            .iter()
            .map(|(n, e)| format!("{n}: {e}"))
            .collect();
        let msg = format!(
            "no bootstrap node has answered after {}s; tried {} address(es) [{}]; DNS failures [{}]; \
             {} response(s) received; still retrying with backoff (check the network, a firewall, \
             or pass --bootstrap HOST:PORT)",
            now.since(self.start).as_secs(),
            tried.len(),
            tried.join(", "),
            dns.join("; "),
            responses_in,
        );
        tracing::warn!("{msg}");
        self.every = (self.every * 2).min(Duration::from_secs(600));
        self.next = now.add(self.every);
        Some(msg)
    }
}

struct Loop {
    poll: Poll,
    clock: Clock,
    crawler: Crawler,
    udp: Vec<UdpSocket>,
    /// Sockets that may hold unread datagrams (readable event, or a batch cut short).
    udp_ready: Vec<bool>,
    conns: HashMap<usize, Conn>,
    deadline: Option<Timestamp>,
    max_conns: usize,
    emfile_until: Option<Timestamp>,
    ingest: Ingest,
    /// The first storage failure: the crawl stops and reports it.
    store_error: Option<String>,
    c: RuntimeCounters,
    rbuf: Vec<u8>,
    bootstrapped: bool,
    watch: BootstrapWatch,
}

/// The loop's result.
pub struct Outcome {
    pub stats: magnetar_core::Stats,
    pub counters: RuntimeCounters,
}

/// Binds one non-blocking UDP socket (IPv6 sockets are v6-only so that `[::]:p` and
/// `0.0.0.0:p` can coexist) with large kernel buffers.
pub fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(UdpSocket::from_std(s.into()))
}

fn close_reason(e: &io::Error) -> CloseReason {
    match e.kind() {
        ErrorKind::ConnectionRefused => CloseReason::Refused,
        ErrorKind::TimedOut => CloseReason::ConnectTimedOut,
        _ => CloseReason::Reset,
    }
}

fn is_fd_exhaustion(e: &io::Error) -> bool {
    // EMFILE (24), ENFILE (23), ENOBUFS (105), ENOMEM (12).
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

/// Runs the crawl until `duration` passes or SIGINT/SIGTERM. `sockets` are bound
/// already and match `opts.config.identities` one to one.
pub fn run(mut opts: CrawlOptions, sockets: Vec<UdpSocket>, ingest: Ingest) -> io::Result<Outcome> {
    let poll = Poll::new()?;
    // A second SIGINT/SIGTERM exits at once (status 130); the first only sets the flag
    // (conditional shutdown must be registered before the flag setter).
    let term = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, term.clone())?;
        signal_hook::flag::register(sig, term.clone())?;
    }
    let mut signals = signal_hook_mio::v1_0::Signals::new([SIGINT, SIGTERM])?;
    poll.registry()
        .register(&mut signals, SIGNAL, Interest::READABLE)?;
    let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER)?);

    let max_conns = apply_leech_budget(&mut opts.config, opts.max_leeches);

    let mut udp = sockets;
    for (i, s) in udp.iter_mut().enumerate() {
        poll.registry()
            .register(s, Token(UDP_BASE - i), Interest::READABLE)?;
    }

    let metrics_text = opts.metrics.take();

    let clock = Clock(Instant::now());
    let now = clock.now();
    let crawler = Crawler::new(opts.config.clone(), now);
    for ident in crawler.identities() {
        tracing::info!(
            socket = ident.socket.0,
            bind = %ident.bind,
            id = %hex(&ident.id.0),
            "identity"
        );
    }
    let saved = ingest.saved_nodes(SAVED_NODES).unwrap_or_else(|e| {
        tracing::warn!("could not read saved nodes: {e}");
        Vec::new()
    });
    let dns_rx = dns::spawn(opts.routers.clone(), waker.clone());

    let mut lp = Loop {
        poll,
        clock,
        crawler,
        udp_ready: vec![false; udp.len()],
        udp,
        conns: HashMap::new(),
        deadline: None,
        max_conns,
        emfile_until: None,
        ingest,
        store_error: None,
        c: RuntimeCounters::default(),
        rbuf: vec![0u8; UDP_BUF],
        bootstrapped: false,
        watch: BootstrapWatch::new(now, &saved),
    };
    let mut session = magnetar_storage::ingest::new_session(wall_secs());
    lp.write_session(&session);

    // Saved nodes first; the routers join as their names resolve.
    if !saved.is_empty() {
        tracing::info!(nodes = saved.len(), "bootstrapping from saved nodes");
        lp.crawler.bootstrap(now, &saved);
    }
    lp.drain();

    let start = now;
    let end = opts.duration.map(|d| start.add(d));
    let mut next_status = start.add(opts.status_interval);
    let mut prev_sample = StatusSample::new(start, &lp.crawler.stats(), 0);
    let mut next_metrics = start;
    let mut next_save_nodes = start.add(SAVE_NODES_EVERY);
    let mut events = Events::with_capacity(1024);
    let mut stop_reason = "duration reached";

    loop {
        let now = lp.clock.now();
        if end.is_some_and(|e| now >= e) {
            break;
        }
        if term.load(Ordering::Relaxed) {
            stop_reason = "signal";
            break;
        }
        if lp.store_error.is_some() {
            stop_reason = "storage failed";
            break;
        }
        // Sleep until the core's deadline or our own housekeeping, whichever is first.
        let mut wake = next_status.min(next_metrics);
        if let Some(t) = lp.watch.next_check() {
            wake = wake.min(t);
        }
        if let Some(d) = lp.deadline {
            wake = wake.min(d);
        }
        if let Some(e) = end {
            wake = wake.min(e);
        }
        let timeout = if lp.udp_ready.iter().any(|r| *r) {
            Duration::ZERO
        } else {
            wake.since(now)
        };
        if let Err(e) = lp.poll.poll(&mut events, Some(timeout)) {
            if e.kind() != ErrorKind::Interrupted {
                return Err(e);
            }
        }
        for ev in events.iter() {
            match ev.token() {
                SIGNAL => {
                    for sig in signals.pending() {
                        tracing::info!(signal = sig, "stopping (a second signal exits at once)");
                        term.store(true, Ordering::Relaxed);
                    }
                }
                WAKER => lp.on_dns(&dns_rx),
                Token(t) if t > UDP_BASE - lp.udp.len() && t <= UDP_BASE => {
                    lp.udp_ready[UDP_BASE - t] = true
                }
                Token(t) => lp.on_tcp(t, ev),
            }
        }
        // Readable sockets, a bounded batch each: under a flood the loop still gets
        // round to signals, TCP and housekeeping (sockets left unread stay ready).
        for i in 0..lp.udp.len() {
            if lp.udp_ready[i] {
                lp.on_udp(i);
            }
        }
        let now = lp.clock.now();
        if lp.deadline.is_some_and(|d| d <= now) {
            lp.crawler.handle_input(Input::Timeout(now));
            lp.drain();
        }
        if now >= next_metrics {
            next_metrics = now.add(Duration::from_secs(1));
            if let Some(shared) = &metrics_text {
                let text = lp.render_metrics();
                if let Ok(mut t) = shared.lock() {
                    *t = text;
                }
            }
        }
        if now >= next_status {
            next_status = now.add(opts.status_interval);
            let sample = StatusSample::new(now, &lp.crawler.stats(), lp.c.infohashes_new);
            print_status(&prev_sample, &sample);
            prev_sample = sample;
            lp.update_session(&mut session);
            lp.write_session(&session);
        }
        if lp.watch.next_check().is_some_and(|t| now >= t) {
            let responses = lp.crawler.stats().dht.responses_in;
            lp.watch.check(now, responses);
        }
        if now >= next_save_nodes {
            next_save_nodes = now.add(SAVE_NODES_EVERY);
            lp.save_nodes();
        }
    }

    // Stop: no new work is taken (the loop no longer polls), connections are dropped,
    // and storage is flushed with the session record.
    tracing::info!(reason = stop_reason, "crawl stopping");
    lp.conns.clear();
    lp.save_nodes();
    lp.update_session(&mut session);
    session.ended_at = Some(wall_secs());
    lp.write_session(&session);
    let stats = lp.crawler.stats();
    let counters = lp.c.clone();
    let store_error = lp.store_error.take();
    let closed = lp.ingest.close();
    // The first failure says why (closing a failed writer only repeats it).
    if let Some(e) = store_error {
        return Err(io::Error::other(format!("storage failed: {e}")));
    }
    if let Err(e) = closed {
        return Err(io::Error::other(format!(
            "storage failed when closing: {e}"
        )));
    }
    tracing::info!(
        fetched = stats.fetch.fetched,
        failed = stats.fetch.failed,
        new_infohashes = counters.infohashes_new,
        "crawl stopped"
    );
    Ok(Outcome { stats, counters })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Loop {
    /// Drains the crawler's outputs, carrying out each one.
    fn drain(&mut self) {
        loop {
            match self.crawler.poll_output() {
                Output::Transmit { local, to, payload } => self.transmit(local, to, &payload),
                Output::Connect { conn, to } => self.connect(conn, to),
                Output::Send { conn, bytes } => self.send(conn, &bytes),
                Output::Close { conn } => self.close(conn),
                Output::Event(e) => self.on_event(e),
                Output::Timeout(t) => {
                    self.deadline = Some(t);
                    return;
                }
                Output::Idle => {
                    self.deadline = None;
                    return;
                }
            }
        }
    }

    fn transmit(&mut self, local: SocketId, to: SocketAddr, payload: &[u8]) {
        let Some(s) = self.udp.get(local.0 as usize) else {
            return;
        };
        match s.send_to(payload, to) {
            Ok(_) => {}
            // A full send buffer drops the datagram (UDP may lose it anyway).
            Err(e) if e.kind() == ErrorKind::WouldBlock => self.c.udp_send_would_block += 1,
            Err(e) => {
                self.c.udp_send_errors += 1;
                tracing::trace!(%to, "send_to: {e}");
            }
        }
    }

    fn connect(&mut self, conn: ConnId, to: SocketAddr) {
        let now = self.clock.now();
        let backing_off = self.emfile_until.is_some_and(|t| now < t);
        if backing_off || self.conns.len() >= self.max_conns {
            self.c.tcp_connect_local_errors += 1;
            self.local_error(conn);
            return;
        }
        let token = conn.to_usize();
        match TcpStream::connect(to) {
            Ok(mut stream) => {
                if let Err(e) = self.poll.registry().register(
                    &mut stream,
                    Token(token),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    tracing::debug!("register: {e}");
                    self.c.tcp_connect_local_errors += 1;
                    self.local_error(conn);
                    return;
                }
                self.conns.insert(
                    token,
                    Conn {
                        stream,
                        connected: false,
                        wbuf: Vec::new(),
                    },
                );
                self.c.tcp_open = self.conns.len();
            }
            Err(e) => {
                if is_fd_exhaustion(&e) {
                    self.c.emfile += 1;
                    self.emfile_until = Some(now.add(EMFILE_BACKOFF));
                    tracing::warn!(
                        open = self.conns.len(),
                        "out of file descriptors ({e}); backing off connects"
                    );
                    self.c.tcp_connect_local_errors += 1;
                    self.local_error(conn);
                } else {
                    let reason = close_reason(&e);
                    let at = self.clock.now();
                    self.crawler
                        .handle_input(Input::TcpClosed { at, conn, reason });
                }
            }
        }
    }

    fn local_error(&mut self, conn: ConnId) {
        let at = self.clock.now();
        self.crawler.handle_input(Input::TcpClosed {
            at,
            conn,
            reason: CloseReason::LocalError,
        });
    }

    fn send(&mut self, conn: ConnId, bytes: &[u8]) {
        let token = conn.to_usize();
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        c.wbuf.extend_from_slice(bytes);
        if c.connected {
            self.flush_conn(token);
        }
    }

    fn close(&mut self, conn: ConnId) {
        if let Some(mut c) = self.conns.remove(&conn.to_usize()) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.c.tcp_open = self.conns.len();
        }
    }

    /// The peer (or the OS) ended a connection: tell the crawler.
    fn closed(&mut self, token: usize, reason: CloseReason) {
        if let Some(mut c) = self.conns.remove(&token) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.c.tcp_open = self.conns.len();
            let at = self.clock.now();
            self.crawler.handle_input(Input::TcpClosed {
                at,
                conn: ConnId::from_usize(token),
                reason,
            });
            // No drain here: this runs inside a drain (a failed write) or from
            // `on_tcp`, which drains once it is done.
        }
    }

    fn flush_conn(&mut self, token: usize) {
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        let mut written = 0;
        let mut err = None;
        while written < c.wbuf.len() {
            match c.stream.write(&c.wbuf[written..]) {
                Ok(0) => {
                    err = Some(CloseReason::Reset);
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    err = Some(close_reason(&e));
                    break;
                }
            }
        }
        c.wbuf.drain(..written);
        if let Some(reason) = err {
            self.closed(token, reason);
        }
    }

    fn on_tcp(&mut self, token: usize, ev: &mio::event::Event) {
        self.on_tcp_event(token, ev);
        self.drain();
    }

    fn on_tcp_event(&mut self, token: usize, ev: &mio::event::Event) {
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        if !c.connected {
            // Connected, or failed: take_error tells which; a spurious wakeup has
            // neither an error nor a peer address yet.
            match c.stream.take_error() {
                Ok(Some(e)) | Err(e) => {
                    let reason = close_reason(&e);
                    self.closed(token, reason);
                    return;
                }
                Ok(None) => {}
            }
            match c.stream.peer_addr() {
                Ok(_) => {
                    c.connected = true;
                    let at = self.clock.now();
                    self.crawler.handle_input(Input::TcpConnected {
                        at,
                        conn: ConnId::from_usize(token),
                    });
                    self.drain();
                    self.flush_conn(token);
                }
                Err(e) if e.kind() == ErrorKind::NotConnected => {
                    if ev.is_error() || ev.is_read_closed() || ev.is_write_closed() {
                        self.closed(token, CloseReason::Reset);
                    }
                    return;
                }
                Err(e) => {
                    let reason = close_reason(&e);
                    self.closed(token, reason);
                    return;
                }
            }
        }
        if ev.is_writable() {
            self.flush_conn(token);
        }
        if ev.is_readable() || ev.is_read_closed() {
            self.read_conn(token);
        }
    }

    fn read_conn(&mut self, token: usize) {
        let mut buf = [0u8; TCP_BUF];
        loop {
            let Some(c) = self.conns.get_mut(&token) else {
                return; // closed by the crawler while we fed it
            };
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    self.closed(token, CloseReason::Eof);
                    return;
                }
                Ok(n) => {
                    let at = self.clock.now();
                    self.crawler.handle_input(Input::TcpData {
                        at,
                        conn: ConnId::from_usize(token),
                        bytes: &buf[..n],
                    });
                    self.drain();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    let reason = close_reason(&e);
                    self.closed(token, reason);
                    return;
                }
            }
        }
    }

    fn on_udp(&mut self, i: usize) {
        let mut buf = std::mem::take(&mut self.rbuf);
        let mut n_read = 0u32;
        let mut at = self.clock.now();
        if i >= self.udp.len() {
            self.rbuf = buf;
            return;
        }
        self.udp_ready[i] = false;
        loop {
            if n_read == UDP_BATCH {
                self.udp_ready[i] = true; // not drained yet: edge-triggered, come back
                break;
            }
            match self.udp[i].recv_from(&mut buf) {
                Ok((n, from)) => {
                    n_read += 1;
                    // One clock read per 64 datagrams is precise enough for the core.
                    if n_read % 64 == 0 {
                        at = self.clock.now();
                    }
                    self.crawler.handle_input(Input::Datagram {
                        at,
                        local: SocketId(i as u16),
                        from,
                        bytes: &buf[..n],
                    });
                    self.drain();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // ICMP errors surface here on Linux (e.g. ECONNREFUSED); keep going.
                    self.c.udp_recv_errors += 1;
                    tracing::trace!("recv_from: {e}");
                }
            }
        }
        self.rbuf = buf;
    }

    fn on_event(&mut self, e: Event) {
        let wall = wall_secs();
        log_event(&e, &mut self.bootstrapped);
        match self.ingest.on_event(wall, &e) {
            Ok(Decision::Acquire(ih)) => {
                self.c.infohashes_new += 1;
                let now = self.clock.now();
                if self.crawler.acquire(now, ih).is_err() {
                    self.c.acquire_full += 1;
                }
            }
            Ok(Decision::Known) => self.c.infohashes_known += 1,
            Ok(Decision::Nothing) => {}
            Err(e) => self.storage_failed(e),
        }
    }

    fn on_dns(&mut self, rx: &Receiver<Resolved>) {
        let mut fresh = Vec::new();
        while let Ok(r) = rx.try_recv() {
            fresh.extend(self.watch.on_dns(&r.name, &r.result));
        }
        self.c.dns_failures = self.watch.dns_failures();
        if !fresh.is_empty() {
            let now = self.clock.now();
            self.crawler.bootstrap(now, &fresh);
            self.drain();
        }
    }

    fn save_nodes(&mut self) {
        let wall = wall_secs();
        let nodes = self
            .crawler
            .identities()
            .iter()
            .flat_map(|i| i.table.nodes());
        if let Err(e) = self.ingest.nodes(wall, nodes) {
            self.storage_failed(e);
        }
    }

    fn storage_failed(&mut self, e: magnetar_storage::StoreError) {
        if self.store_error.is_none() {
            tracing::error!("storage failed: {e}; stopping");
            self.store_error = Some(e.to_string());
        }
    }

    fn write_session(&mut self, s: &SessionRecord) {
        if let Err(e) = self.ingest.session(s.clone()) {
            self.storage_failed(e);
        }
    }

    fn update_session(&self, s: &mut SessionRecord) {
        update_session(s, &self.crawler.stats(), &self.ingest);
    }

    fn render_metrics(&mut self) -> String {
        render_metrics(
            &self.crawler.stats(),
            &self.c,
            self.max_conns,
            &mut self.ingest,
            Vec::new(),
        )
    }
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
        Event::Bootstrapped { socket, nodes } => {
            if !*bootstrapped {
                tracing::info!(socket = socket.0, nodes, "bootstrapped");
            }
            *bootstrapped = true;
        }
        Event::BootstrapFailed { socket, attempt } => {
            tracing::debug!(socket = socket.0, attempt, "bootstrap retry");
        }
        _ => {}
    }
}

/// Brings a session record up to date: counters, peak RSS, CPU time.
pub fn update_session(s: &mut SessionRecord, stats: &magnetar_core::Stats, ingest: &Ingest) {
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
    stats: &magnetar_core::Stats,
    c: &RuntimeCounters,
    max_conns: usize,
    ingest: &mut Ingest,
    runtime_only: Vec<Metric>,
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
    prometheus(stats, &extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> Timestamp {
        Timestamp::from_secs(secs)
    }

    #[test]
    fn bootstrap_watch_warns_with_what_was_tried_then_backs_off() {
        let saved: SocketAddr = "10.0.0.1:6881".parse().unwrap();
        let mut w = BootstrapWatch::new(t(0), &[saved]);
        let router: SocketAddr = "10.0.0.2:6881".parse().unwrap();
        assert_eq!(
            w.on_dns("router.example:6881", &Ok(vec![router, saved])),
            vec![router]
        );
        assert!(w
            .on_dns("nope.invalid:6881", &Err("no such host".into()))
            .is_empty());
        assert!(w
            .on_dns("nope.invalid:6881", &Err("no such host".into()))
            .is_empty());
        assert_eq!(w.dns_failures(), 2);
        assert_eq!(w.next_check(), Some(t(30)));
        assert_eq!(w.check(t(29), 0), None, "not before 30 s");
        let msg = w.check(t(30), 0).expect("a warning at 30 s");
        assert!(msg.contains("after 30s"), "{msg}");
        assert!(
            msg.contains("tried 2 address(es) [10.0.0.1:6881, 10.0.0.2:6881]"),
            "{msg}"
        );
        assert!(
            msg.contains("DNS failures [nope.invalid:6881: no such host]"),
            "{msg}"
        );
        // Then with a doubling interval.
        assert_eq!(w.next_check(), Some(t(90)));
        assert_eq!(w.check(t(60), 0), None);
        assert!(w.check(t(90), 0).is_some());
        assert_eq!(w.next_check(), Some(t(210)));
        // A name that resolves later leaves the DNS failures.
        w.on_dns(
            "nope.invalid:6881",
            &Ok(vec!["10.0.0.3:1".parse().unwrap()]),
        );
        let msg = w.check(t(210), 0).unwrap();
        assert!(
            msg.contains("DNS failures []") && msg.contains("10.0.0.3:1"),
            "{msg}"
        );
        // Once a node answered, the watch ends.
        assert_eq!(w.check(t(1000), 1), None);
        assert_eq!(w.next_check(), None);
        assert_eq!(w.check(t(5000), 1), None);
    }
}
