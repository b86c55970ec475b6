//! The mio event loop around the core's driver pump.
//!
//! One thread, one `Poll`. Every wakeup follows the run-loop contract: each input
//! (a datagram, a TCP event, the timer) goes to the pump, which feeds the crawler
//! and drains `poll_output` until `Timeout`/`Idle`, carrying out every output
//! through this loop's [`Io`]; then the loop polls until the next socket event or
//! the core's deadline. UDP sockets are drained until `WouldBlock` (mio is
//! edge-triggered) in bounded batches ([`pump::UDP_BATCH`]), so a flood cannot
//! starve signals, TCP and housekeeping; readable TCP streams are drained until
//! `WouldBlock`.
//!
//! Tokens: a peer connection's token is its `ConnId::to_usize()`; the UDP sockets
//! and the waker (router names resolved, a signal taken by the signal thread) take
//! tokens from the top of the `usize` range, which no `ConnId` reaches in practice
//! (it would need generation `u32::MAX`).

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use magnetar_core::pump::{
    self, close_reason, AcquirePolicy, Cadence, Connect, Decision, Io, Pump, Snapshot, Storage,
    Transmit,
};
use magnetar_core::{
    CloseReason, Config, ConnId, Crawler, Event, Input, SocketId, Stats, Timestamp,
};
use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Registry, Token};
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::dns::{self, Resolved};

const WAKER: Token = Token(usize::MAX - 1);
/// UDP socket `i` has token `UDP_BASE - i`.
const UDP_BASE: usize = usize::MAX - 16;

/// Called every status interval with the counters (on the loop thread).
pub type StatusCallback = Box<dyn FnMut(&Snapshot)>;
/// Called with each router name's resolution (on the loop thread).
pub type DnsCallback = Box<dyn FnMut(&str, &Result<Vec<SocketAddr>, String>)>;

/// What the loop runs with.
pub struct RunOptions {
    /// The crawler's configuration; `identities` match `sockets` one to one.
    pub config: Config,
    /// Bound UDP sockets, one per identity (made non-blocking here).
    pub sockets: Vec<std::net::UdpSocket>,
    /// Router names (`host:port`), resolved off the loop thread and retried.
    pub routers: Vec<String>,
    /// Nodes to bootstrap from at once (saved by an earlier run).
    pub bootstrap_nodes: Vec<SocketAddr>,
    /// Stop after this long (`None`: at SIGINT/SIGTERM).
    pub duration: Option<Duration>,
    /// How often [`Storage::status`] and `on_status` get a [`Snapshot`].
    pub status_interval: Duration,
    /// Peer connections allowed at once.
    pub max_conns: usize,
    /// Where events, nodes and status go (called inline; its first error stops
    /// the loop).
    pub storage: Box<dyn Storage>,
    /// See [`StatusCallback`].
    pub on_status: Option<StatusCallback>,
    /// See [`DnsCallback`].
    pub on_dns: Option<DnsCallback>,
}

/// The loop's result.
#[derive(Debug)]
pub struct RunReport {
    /// The crawler's counters at the end.
    pub stats: Stats,
    /// The runtime's counters at the end.
    pub counters: pump::RuntimeCounters,
}

/// `Timestamp`s are nanoseconds since the loop started.
#[derive(Copy, Clone)]
struct Clock(Instant);

impl Clock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.elapsed().as_nanos() as u64)
    }
}

fn wall_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct Conn {
    stream: TcpStream,
    connected: bool,
    wbuf: Vec<u8>,
}

/// A non-blocking connect to `to` from `from` (an IP of this host, port 0): the
/// socket is bound first, which `TcpStream::connect` cannot do. If the bind
/// fails, the kernel's choice of source stands.
fn connect_from(from: SocketAddr, to: SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    s.set_nonblocking(true)?;
    if let Err(e) = s.bind(&from.into()) {
        tracing::debug!(%from, "binding a peer connection: {e}");
    }
    match s.connect(&to.into()) {
        Ok(()) => {}
        // EINPROGRESS (115 on Linux): under way, as for `TcpStream::connect`.
        Err(e) if e.raw_os_error() == Some(115) || e.kind() == ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(s.into()))
}

/// The loop's side of the pump: sockets, connections, storage.
struct MioIo {
    registry: Registry,
    clock: Clock,
    udp: Vec<UdpSocket>,
    /// The UDP sockets' local addresses: peer connections start from the same
    /// IP ([`pump::tcp_source`]).
    binds: Vec<SocketAddr>,
    conns: HashMap<usize, Conn>,
    /// Connections that failed while the pump was draining (a failed write):
    /// their `TcpClosed` is fed after the drain.
    dead: Vec<(ConnId, CloseReason)>,
    storage: Box<dyn Storage>,
    /// The first storage failure: the crawl stops and reports it.
    store_error: Option<String>,
}

impl MioIo {
    fn storage_failed(&mut self, e: String) {
        if self.store_error.is_none() {
            tracing::error!("storage failed: {e}; stopping");
            self.store_error = Some(e);
        }
    }

    /// The peer (or the OS) ended a connection; the crawler hears of it after the
    /// drain.
    fn lost(&mut self, token: usize, reason: CloseReason) {
        if let Some(mut c) = self.conns.remove(&token) {
            let _ = self.registry.deregister(&mut c.stream);
            self.dead.push((ConnId::from_usize(token), reason));
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
            self.lost(token, reason);
        }
    }
}

impl Io for MioIo {
    fn now(&mut self) -> Timestamp {
        self.clock.now()
    }

    fn transmit(&mut self, local: SocketId, to: SocketAddr, payload: Bytes) -> Transmit {
        match self.udp.get(local.0 as usize) {
            Some(s) => Transmit::from_result(&s.send_to(&payload, to), to),
            None => Transmit::Failed,
        }
    }

    fn recv(&mut self, local: SocketId, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self.udp.get(local.0 as usize) {
            Some(s) => s.recv_from(buf),
            None => Err(ErrorKind::WouldBlock.into()),
        }
    }

    fn connect(&mut self, conn: ConnId, to: SocketAddr) -> Connect {
        let token = conn.to_usize();
        let started = match pump::tcp_source(&self.binds, &to) {
            Some(from) => connect_from(from, to),
            None => TcpStream::connect(to),
        };
        match started {
            Ok(mut stream) => {
                if let Err(e) = self.registry.register(
                    &mut stream,
                    Token(token),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    tracing::debug!("register: {e}");
                    return Connect::LocalError;
                }
                self.conns.insert(
                    token,
                    Conn {
                        stream,
                        connected: false,
                        wbuf: Vec::new(),
                    },
                );
                Connect::Started
            }
            Err(e) => Connect::from_error(&e),
        }
    }

    fn send(&mut self, conn: ConnId, bytes: Bytes) {
        let token = conn.to_usize();
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        c.wbuf.extend_from_slice(&bytes);
        if c.connected {
            self.flush_conn(token);
        }
    }

    fn close(&mut self, conn: ConnId) {
        if let Some(mut c) = self.conns.remove(&conn.to_usize()) {
            let _ = self.registry.deregister(&mut c.stream);
        }
    }

    fn open_conns(&self) -> usize {
        self.conns.len()
    }

    fn event(&mut self, _: &mut Crawler, e: Event) -> Decision {
        match self.storage.on_event(wall_secs(), &e) {
            Ok(d) => d,
            Err(e) => {
                self.storage_failed(e);
                Decision::Nothing
            }
        }
    }
}

struct Loop {
    poll: Poll,
    pump: Pump,
    io: MioIo,
    /// Sockets that may hold unread datagrams (readable event, or a batch cut short).
    udp_ready: Vec<bool>,
    rbuf: Vec<u8>,
}

/// Runs the crawl until `duration` passes or SIGINT/SIGTERM.
pub fn run(opts: RunOptions) -> io::Result<RunReport> {
    let poll = Poll::new()?;
    let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER)?);
    // SIGINT/SIGTERM: the first sets `term` and wakes the loop, a second exits at
    // once (status 130). One thread takes them in order from signal-hook's
    // self-pipe, so two that arrive together on two threads still count as two
    // (a flag handler per signal let both see the flag unset and stop gracefully).
    // Taken down when `run` returns, after storage is closed.
    let term = Arc::new(AtomicBool::new(false));
    let _signals = SignalThread::start(term.clone(), waker.clone())?;

    let mut udp = Vec::new();
    for (i, s) in opts.sockets.into_iter().enumerate() {
        s.set_nonblocking(true)?;
        let mut s = UdpSocket::from_std(s);
        poll.registry()
            .register(&mut s, Token(UDP_BASE - i), Interest::READABLE)?;
        udp.push(s);
    }

    let clock = Clock(Instant::now());
    let now = clock.now();
    let crawler = Crawler::new(opts.config, now);
    for ident in crawler.identities() {
        let id: String = ident.id.0.iter().map(|x| format!("{x:02x}")).collect();
        tracing::info!(socket = ident.socket.0, bind = %ident.bind, %id, "identity");
    }
    let dns_rx = dns::spawn(opts.routers, waker.clone());
    let mut on_dns = opts.on_dns;
    let mut on_status = opts.on_status;

    let mut lp = Loop {
        pump: Pump::new(crawler, AcquirePolicy::PRODUCTION, opts.max_conns),
        io: MioIo {
            registry: poll.registry().try_clone()?,
            clock,
            conns: HashMap::new(),
            dead: Vec::new(),
            storage: opts.storage,
            store_error: None,
            binds: udp.iter().filter_map(|s| s.local_addr().ok()).collect(),
            udp,
        },
        udp_ready: Vec::new(),
        rbuf: vec![0u8; pump::UDP_BUF],
        poll,
    };
    lp.udp_ready = vec![false; lp.io.udp.len()];

    if !opts.bootstrap_nodes.is_empty() {
        let nodes = opts.bootstrap_nodes;
        lp.pump.call(&mut lp.io, |c, now| c.bootstrap(now, &nodes));
    }
    lp.drain();

    let start = now;
    let end = opts.duration.map(|d| start.add(d));
    let mut status = Cadence::new(start, opts.status_interval);
    let mut save_nodes = Cadence::new(start, pump::SAVE_NODES_EVERY);
    let mut events = Events::with_capacity(1024);
    let mut stop_reason = "duration reached";

    loop {
        let now = lp.io.clock.now();
        if end.is_some_and(|e| now >= e) {
            break;
        }
        if term.load(Ordering::Relaxed) {
            stop_reason = "signal";
            break;
        }
        if lp.io.store_error.is_some() {
            stop_reason = "storage failed";
            break;
        }
        // Sleep until the core's deadline or our own housekeeping, whichever is first.
        let mut wake = status.next().min(save_nodes.next());
        if let Some(d) = lp.pump.deadline() {
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
                WAKER => lp.on_dns(&dns_rx, &mut on_dns),
                Token(t) if t > UDP_BASE - lp.io.udp.len() && t <= UDP_BASE => {
                    lp.udp_ready[UDP_BASE - t] = true
                }
                Token(t) => lp.on_tcp(t, ev),
            }
        }
        // Readable sockets, a bounded batch each: under a flood the loop still gets
        // round to signals, TCP and housekeeping (sockets left unread stay ready).
        for i in 0..lp.udp_ready.len() {
            if lp.udp_ready[i] {
                let mut buf = std::mem::take(&mut lp.rbuf);
                lp.udp_ready[i] = lp.pump.read_udp(&mut lp.io, SocketId(i as u16), &mut buf);
                lp.rbuf = buf;
                lp.settle();
            }
        }
        let now = lp.io.clock.now();
        if lp.pump.deadline().is_some_and(|d| d <= now) {
            lp.pump.timeout(&mut lp.io);
            lp.settle();
        }
        if status.due(now) {
            let snap = lp.snapshot();
            if let Err(e) = lp.io.storage.status(wall_secs(), &snap, false) {
                lp.io.storage_failed(e);
            }
            // Work claimed from a fleet's shared queue (none for a lone crawler).
            let mut claimed = Vec::new();
            lp.io.storage.claimed(&mut claimed);
            if !claimed.is_empty() {
                lp.pump.claimed(&mut lp.io, &claimed);
                lp.drain();
            }
            if let Some(f) = &mut on_status {
                f(&snap);
            }
        }
        if save_nodes.due(now) {
            lp.save_nodes();
        }
    }

    // Stop: no new work is taken (the loop no longer polls), connections are dropped,
    // and storage is flushed with the last status.
    tracing::info!(reason = stop_reason, "crawl stopping");
    lp.io.conns.clear();
    lp.save_nodes();
    let snap = lp.snapshot();
    if let Err(e) = lp.io.storage.status(wall_secs(), &snap, true) {
        lp.io.storage_failed(e);
    }
    let store_error = lp.io.store_error.take();
    let closed = std::mem::replace(&mut lp.io.storage, Box::new(pump::NullStorage)).close();
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
        fetched = snap.stats.fetch.fetched,
        failed = snap.stats.fetch.failed,
        new_infohashes = snap.runtime.infohashes_new,
        "crawl stopped"
    );
    Ok(RunReport {
        stats: snap.stats,
        counters: snap.runtime,
    })
}

/// The thread that takes SIGINT and SIGTERM for [`run`] (see there); closed and
/// joined when dropped.
struct SignalThread {
    handle: signal_hook::iterator::Handle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SignalThread {
    fn start(term: Arc<AtomicBool>, waker: Arc<mio::Waker>) -> io::Result<SignalThread> {
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("magnetar-signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if term.swap(true, Ordering::SeqCst) {
                        signal_hook::low_level::exit(130);
                    }
                    tracing::info!(signal = sig, "stopping (a second signal exits at once)");
                    let _ = waker.wake();
                }
            })?;
        Ok(SignalThread {
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for SignalThread {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Loop {
    fn snapshot(&mut self) -> Snapshot {
        let now = self.io.clock.now();
        self.pump.snapshot(now, self.io.conns.len())
    }

    /// Drains the pump, then tells the crawler of connections that failed meanwhile.
    fn drain(&mut self) {
        self.pump.drain(&mut self.io);
        self.settle();
    }

    /// Feeds the `TcpClosed` of connections that failed inside a drain.
    fn settle(&mut self) {
        while let Some((conn, reason)) = self.io.dead.pop() {
            self.pump.closed(&mut self.io, conn, reason);
            self.pump.drain(&mut self.io);
        }
    }

    fn on_tcp(&mut self, token: usize, ev: &mio::event::Event) {
        self.on_tcp_event(token, ev);
        self.drain();
    }

    fn on_tcp_event(&mut self, token: usize, ev: &mio::event::Event) {
        let Some(c) = self.io.conns.get_mut(&token) else {
            return;
        };
        if !c.connected {
            // Connected, or failed: take_error tells which; a spurious wakeup has
            // neither an error nor a peer address yet.
            match c.stream.take_error() {
                Ok(Some(e)) | Err(e) => {
                    self.io.lost(token, close_reason(&e));
                    return;
                }
                Ok(None) => {}
            }
            match c.stream.peer_addr() {
                Ok(_) => {
                    c.connected = true;
                    let at = self.io.clock.now();
                    let conn = ConnId::from_usize(token);
                    self.pump
                        .input(&mut self.io, Input::TcpConnected { at, conn });
                    self.settle();
                    self.io.flush_conn(token);
                }
                Err(e) if e.kind() == ErrorKind::NotConnected => {
                    if ev.is_error() || ev.is_read_closed() || ev.is_write_closed() {
                        self.io.lost(token, CloseReason::Reset);
                    }
                    return;
                }
                Err(e) => {
                    self.io.lost(token, close_reason(&e));
                    return;
                }
            }
        }
        if ev.is_writable() {
            self.io.flush_conn(token);
        }
        if ev.is_readable() || ev.is_read_closed() {
            self.read_conn(token);
        }
    }

    fn read_conn(&mut self, token: usize) {
        let mut buf = [0u8; pump::TCP_READ];
        loop {
            let Some(c) = self.io.conns.get_mut(&token) else {
                return; // closed by the crawler while we fed it
            };
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    self.io.lost(token, CloseReason::Eof);
                    return;
                }
                Ok(n) => {
                    let at = self.io.clock.now();
                    let conn = ConnId::from_usize(token);
                    self.pump.input(
                        &mut self.io,
                        Input::TcpData {
                            at,
                            conn,
                            bytes: &buf[..n],
                        },
                    );
                    self.settle();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.io.lost(token, close_reason(&e));
                    return;
                }
            }
        }
    }

    fn on_dns(&mut self, rx: &Receiver<Resolved>, on_dns: &mut Option<DnsCallback>) {
        let mut fresh: Vec<SocketAddr> = Vec::new();
        while let Ok(r) = rx.try_recv() {
            if let Some(f) = on_dns {
                f(&r.name, &r.result);
            }
            if let Ok(addrs) = r.result {
                fresh.extend(addrs);
            }
        }
        if !fresh.is_empty() {
            self.pump
                .call(&mut self.io, |c, now| c.bootstrap(now, &fresh));
            self.settle();
        }
    }

    fn save_nodes(&mut self) {
        let nodes: Vec<_> = self
            .pump
            .identities()
            .iter()
            .flat_map(|i| i.table.nodes().cloned())
            .collect();
        if let Err(e) = self.io.storage.nodes(wall_secs(), &nodes) {
            self.io.storage_failed(e);
        }
    }
}
