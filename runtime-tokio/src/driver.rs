//! The driver task: one tokio task owns the sans-IO crawler and follows ARCHITECTURE.md §4.
//!
//! Every wakeup feeds inputs to the crawler (a datagram, a TCP event, a command from
//! a [`Handle`](crate::Handle), the timer), drains `poll_output` until
//! `Timeout`/`Idle`, and carries out each output. UDP sockets live in the driver
//! (no per-packet channel hop): it waits for any of them to be readable, then
//! reads until `WouldBlock`. Each TCP connection is a small task that connects,
//! reads into the shared bounded connection channel and writes what the driver
//! sends it; `Close` aborts the task, which closes the socket. Connection events
//! are stamped with the `ConnId` the core allocated, so events of a closed
//! connection still in the channel are recognised and dropped.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use magnetar_core::pump::{
    self, close_reason, is_fd_exhaustion, AcquirePolicy, Connect, Decision, Io, Pump, Storage,
    Transmit,
};
use magnetar_core::{
    CloseReason, ConnId, Crawler, Event, InfoHash, Input, SocketId, Stats, Timestamp,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Sleep;

pub use magnetar_core::pump::RuntimeCounters;

use crate::{Error, Snapshot};

/// Connection events queued from the connection tasks to the driver.
const CONN_CHANNEL: usize = 1024;

/// Wall-clock Unix seconds (stored dates are stamped by the runtime).
pub(crate) fn wall_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `Timestamp`s are nanoseconds since the driver started (monotonic).
#[derive(Clone, Copy)]
pub(crate) struct Clock(pub(crate) Instant);

impl Clock {
    pub(crate) fn now(&self) -> Timestamp {
        Timestamp(self.0.elapsed().as_nanos() as u64)
    }
    fn instant(&self, t: Timestamp) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.0 + Duration::from_nanos(t.as_nanos()))
    }
}

/// A request from a [`Handle`](crate::Handle).
pub(crate) enum Command {
    Fetch {
        ih: InfoHash,
        peers: Vec<SocketAddr>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Acquire {
        ih: InfoHash,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Bootstrap {
        routers: Vec<SocketAddr>,
    },
    Stats {
        reply: oneshot::Sender<Snapshot>,
    },
    Shutdown,
}

enum ConnEventKind {
    Connected,
    Data(Bytes),
    Closed(CloseReason),
}

struct ConnEvent {
    conn: ConnId,
    kind: ConnEventKind,
}

/// What the storage thread is fed.
enum StoreMsg {
    Event(u64, Event),
    Nodes(u64, Vec<magnetar_core::routing::NodeEntry>),
    Status(u64, Box<Snapshot>, bool),
}

/// What the storage thread answers: a discovery's decision, or a failure.
enum StoreReply {
    Decision(InfoHash, Decision),
    /// Work claimed from a fleet's shared queue (`Storage::claimed`).
    Claimed(Vec<InfoHash>),
    Error(String),
}

struct Conn {
    tx: mpsc::UnboundedSender<Bytes>,
    task: AbortHandle,
}

/// What the driver hands back when it ends.
#[derive(Clone, Debug)]
pub struct DriverReport {
    pub stats: Stats,
    pub counters: RuntimeCounters,
    /// Storage failed (the crawler then stopped by itself), or the flush at
    /// shutdown failed or timed out.
    pub storage_error: Option<String>,
}

/// The driver's side of the pump: sockets, connection tasks, the event stream
/// and the messages for the storage thread.
pub(crate) struct TokioIo {
    clock: Clock,
    udp: Vec<UdpSocket>,
    /// The same sockets (dup'ed fds) for sending: a plain non-blocking `send_to`
    /// goes straight to the kernel, while tokio's `try_send_to` reports
    /// `WouldBlock` until the reactor has seen the socket writable once (the
    /// first datagrams of a new socket would be lost).
    udp_tx: Vec<std::net::UdpSocket>,
    /// The UDP sockets' local addresses: peer connections start from the same
    /// IP ([`pump::tcp_source`]).
    binds: Vec<SocketAddr>,
    conns: HashMap<ConnId, Conn>,
    conn_tx: mpsc::Sender<ConnEvent>,
    /// Events for storage, sent (awaiting room) after the drain that produced them.
    pending: Vec<StoreMsg>,
    has_storage: bool,
    events_tx: Option<mpsc::Sender<Event>>,
    /// Events not delivered to the event stream because it was full.
    stream_dropped: u64,
}

impl Io for TokioIo {
    fn now(&mut self) -> Timestamp {
        self.clock.now()
    }

    fn connect(&mut self, conn: ConnId, to: SocketAddr) -> Connect {
        let socket = match if to.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        } {
            Ok(s) => s,
            Err(e) if is_fd_exhaustion(&e) => return Connect::FdExhausted,
            Err(_) => return Connect::LocalError,
        };
        if let Some(from) = pump::tcp_source(&self.binds, &to) {
            // If the bind fails, the kernel's choice of source stands.
            if let Err(e) = socket.bind(from) {
                tracing::debug!(%from, "binding a peer connection: {e}");
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let events = self.conn_tx.clone();
        let task = tokio::spawn(conn_task(conn, socket, to, rx, events)).abort_handle();
        self.conns.insert(conn, Conn { tx, task });
        Connect::Started
    }

    fn send(&mut self, conn: ConnId, bytes: Bytes) {
        if let Some(c) = self.conns.get(&conn) {
            let _ = c.tx.send(bytes);
        }
    }

    fn close(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            c.task.abort();
        }
    }

    fn open_conns(&self) -> usize {
        self.conns.len()
    }

    /// Through the dup'ed blocking-free socket (see `udp_tx`).
    fn transmit(&mut self, local: SocketId, to: SocketAddr, payload: Bytes) -> Transmit {
        let Some(tx) = self.udp_tx.get(local.0 as usize) else {
            return Transmit::Failed;
        };
        Transmit::from_result(&tx.send_to(&payload, to), to)
    }

    /// tokio's `try_recv_from` (readiness was seen by `udp_readable`).
    fn recv(&mut self, local: SocketId, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let Some(rx) = self.udp.get(local.0 as usize) else {
            return Err(ErrorKind::WouldBlock.into());
        };
        rx.try_recv_from(buf)
    }

    fn event(&mut self, _: &mut Crawler, e: Event) -> Decision {
        if let Some(tx) = &self.events_tx {
            match tx.try_send(e.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => self.stream_dropped += 1,
                Err(mpsc::error::TrySendError::Closed(_)) => self.events_tx = None,
            }
        }
        // With storage, the storage thread decides (see `on_store_reply`); without
        // it every discovery is new.
        if self.has_storage {
            self.pending.push(StoreMsg::Event(wall_secs(), e));
            return Decision::Nothing;
        }
        match e {
            Event::InfohashDiscovered { .. } => Decision::Acquire,
            _ => Decision::Nothing,
        }
    }
}

pub(crate) struct Driver {
    pump: Pump,
    io: TokioIo,
    /// The UDP socket checked first at the next wakeup.
    udp_next: usize,
    conn_rx: mpsc::Receiver<ConnEvent>,
    store_tx: Option<mpsc::Sender<StoreMsg>>,
    store_rx: Option<mpsc::UnboundedReceiver<StoreReply>>,
    store_thread: Option<std::thread::JoinHandle<Result<(), String>>>,
    status_every: Duration,
    /// The first storage failure: the driver stops new work and shuts down.
    store_failed: Option<String>,
    rbuf: Vec<u8>,
}

impl Driver {
    pub(crate) fn new(
        clock: Clock,
        crawler: Crawler,
        sockets: Vec<(UdpSocket, std::net::UdpSocket)>,
        storage: Option<Box<dyn Storage>>,
        storage_channel: usize,
        status_every: Duration,
        events_tx: Option<mpsc::Sender<Event>>,
    ) -> io::Result<Self> {
        let (udp, udp_tx): (Vec<_>, Vec<_>) = sockets.into_iter().unzip();
        let (conn_tx, conn_rx) = mpsc::channel(CONN_CHANNEL);
        let max_sessions = crawler.config().fetch.max_sessions;
        let (store_tx, store_rx, store_thread) = match storage {
            Some(s) => {
                let (tx, rx) = mpsc::channel(storage_channel.max(1));
                // Unbounded, yet bounded in practice: at most one reply per message
                // of the bounded channel, and the driver reads replies first.
                let (reply_tx, reply_rx) = mpsc::unbounded_channel();
                let t = std::thread::Builder::new()
                    .name("magnetar-tokio-storage".into())
                    .spawn(move || storage_thread(s, rx, reply_tx))?;
                (Some(tx), Some(reply_rx), Some(t))
            }
            None => (None, None, None),
        };
        Ok(Driver {
            pump: Pump::new(crawler, AcquirePolicy::PRODUCTION, max_sessions),
            io: TokioIo {
                clock,
                binds: udp.iter().filter_map(|s| s.local_addr().ok()).collect(),
                udp,
                udp_tx,
                conns: HashMap::new(),
                conn_tx,
                pending: Vec::new(),
                has_storage: store_tx.is_some(),
                events_tx,
                stream_dropped: 0,
            },
            udp_next: 0,
            conn_rx,
            store_tx,
            store_rx,
            store_thread,
            status_every,
            store_failed: None,
            rbuf: vec![0u8; pump::UDP_BUF],
        })
    }

    /// Runs until `Shutdown` (or every `Handle` is dropped) or a storage failure,
    /// then stops new work, closes every connection and flushes storage (bounded by
    /// `shutdown_timeout`). After a storage failure the command channel closes at
    /// once, so handles see the crawler stopped (as the mio loop stops at once).
    pub(crate) async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Command>,
        shutdown_timeout: Duration,
    ) -> DriverReport {
        self.pump.drain(&mut self.io);
        self.flush_pending().await;
        let mut sleep: Pin<Box<Sleep>> = Box::pin(tokio::time::sleep(Duration::ZERO));
        let mut armed: Option<Timestamp> = None;
        let start = tokio::time::Instant::now();
        let mut status = tokio::time::interval_at(start + self.status_every, self.status_every);
        status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut save_nodes =
            tokio::time::interval_at(start + pump::SAVE_NODES_EVERY, pump::SAVE_NODES_EVERY);
        save_nodes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.store_failed.is_some() {
                break;
            }
            let mut more = false;
            let deadline = self.pump.deadline();
            if armed != deadline {
                armed = deadline;
                if let Some(d) = deadline {
                    sleep.as_mut().reset(self.io.clock.instant(d));
                }
            }
            tokio::select! {
                biased;
                cmd = cmds.recv() => match cmd {
                    Some(Command::Shutdown) | None => break,
                    Some(cmd) => self.on_command(cmd),
                },
                Some(r) = recv_opt(&mut self.store_rx) => {
                    self.on_store_reply(r);
                    while let Some(Ok(r)) = self.store_rx.as_mut().map(|rx| rx.try_recv()) {
                        self.on_store_reply(r);
                    }
                    self.pump.drain(&mut self.io);
                }
                () = &mut sleep, if armed.is_some() => {
                    armed = None;
                    self.pump.timeout(&mut self.io);
                }
                ev = self.conn_rx.recv() => {
                    if let Some(ev) = ev {
                        self.on_conn(ev);
                        // Whatever else is queued, without waiting.
                        for _ in 0..256 {
                            match self.conn_rx.try_recv() {
                                Ok(ev) => self.on_conn(ev),
                                Err(_) => break,
                            }
                        }
                    }
                }
                i = udp_readable(&self.io.udp, self.udp_next) => {
                    let mut buf = std::mem::take(&mut self.rbuf);
                    more = self.pump.read_udp(&mut self.io, SocketId(i as u16), &mut buf);
                    self.rbuf = buf;
                    // Round robin: a flooded socket does not starve the others.
                    self.udp_next = i + 1;
                }
                _ = status.tick(), if self.store_tx.is_some() => {
                    let snap = self.snapshot();
                    self.io.pending.push(StoreMsg::Status(wall_secs(), Box::new(snap), false));
                }
                _ = save_nodes.tick(), if self.store_tx.is_some() => {
                    let nodes = self.nodes();
                    self.io.pending.push(StoreMsg::Nodes(wall_secs(), nodes));
                }
            }
            self.flush_pending().await;
            if more {
                tokio::task::yield_now().await;
            }
        }
        // No more commands: a handle waiting in `stopped()` wakes now.
        drop(cmds);
        self.shutdown(shutdown_timeout).await
    }

    async fn shutdown(mut self, timeout: Duration) -> DriverReport {
        let until = tokio::time::Instant::now() + timeout;
        tracing::info!(open = self.io.conns.len(), "tokio driver stopping");
        for (_, c) in self.io.conns.drain() {
            c.task.abort();
        }
        self.io.udp.clear();
        self.io.udp_tx.clear();
        let wall = wall_secs();
        let snap = self.snapshot();
        let mut storage_error = self.store_failed.take();
        if self.store_tx.is_some() {
            let nodes = self.nodes();
            self.io.pending.push(StoreMsg::Nodes(wall, nodes));
            self.io
                .pending
                .push(StoreMsg::Status(wall, Box::new(snap.clone()), true));
            if tokio::time::timeout_at(until, self.flush_pending())
                .await
                .is_err()
            {
                storage_error = Some(format!(
                    "storage did not take the last records within {timeout:?}"
                ));
            }
        }
        // Closing the channel ends the storage thread after it closed the store.
        self.store_tx = None;
        self.store_rx = None;
        self.io.events_tx = None;
        if let Some(t) = self.store_thread.take() {
            let (tx, rx) = oneshot::channel();
            std::thread::spawn(move || {
                let _ = tx.send(t.join());
            });
            let e = match tokio::time::timeout_at(until, rx).await {
                Ok(Ok(Ok(Ok(())))) => None,
                Ok(Ok(Ok(Err(e)))) => Some(e),
                Ok(Ok(Err(_))) | Ok(Err(_)) => Some("storage thread panicked".into()),
                Err(_) => Some(format!("storage flush did not finish within {timeout:?}")),
            };
            storage_error = storage_error.or(e);
        }
        DriverReport {
            stats: snap.stats,
            counters: snap.runtime,
            storage_error,
        }
    }

    fn snapshot(&self) -> Snapshot {
        let mut snap = self.pump.snapshot(self.io.clock.now(), self.io.conns.len());
        snap.runtime.stream_dropped = self.io.stream_dropped;
        snap
    }

    fn nodes(&self) -> Vec<magnetar_core::routing::NodeEntry> {
        let mut nodes = Vec::new();
        for ident in self.pump.identities() {
            nodes.extend(ident.table.nodes().cloned());
        }
        nodes
    }

    fn on_store_reply(&mut self, r: StoreReply) {
        match r {
            StoreReply::Decision(ih, d) => self.pump.decided(&mut self.io, ih, d),
            StoreReply::Claimed(v) => self.pump.claimed(&mut self.io, &v),
            StoreReply::Error(e) => {
                self.pump.counters_mut().storage_errors += 1;
                if self.store_failed.is_none() {
                    tracing::error!("storage failed: {e}; stopping");
                    self.store_failed = Some(e);
                }
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let io = &mut self.io;
        match cmd {
            Command::Fetch { ih, peers, reply } => {
                let r = self
                    .pump
                    .call(io, |c, now| c.fetch_metadata(now, ih, &peers));
                let _ = reply.send(r.map_err(Error::Api));
            }
            Command::Acquire { ih, reply } => {
                let r = self.pump.call(io, |c, now| c.acquire(now, ih));
                let _ = reply.send(r.map_err(Error::Api));
            }
            Command::Bootstrap { routers } => {
                self.pump.call(io, |c, now| c.bootstrap(now, &routers));
            }
            Command::Stats { reply } => {
                let _ = reply.send(self.snapshot());
            }
            Command::Shutdown => {}
        }
    }

    fn on_conn(&mut self, ev: ConnEvent) {
        // Events of a connection the crawler closed already are stale.
        if !self.io.conns.contains_key(&ev.conn) {
            return;
        }
        let at = self.io.clock.now();
        let conn = ev.conn;
        let input = match &ev.kind {
            ConnEventKind::Connected => Input::TcpConnected { at, conn },
            ConnEventKind::Data(b) => Input::TcpData { at, conn, bytes: b },
            ConnEventKind::Closed(reason) => {
                self.io.conns.remove(&conn);
                Input::TcpClosed {
                    at,
                    conn,
                    reason: *reason,
                }
            }
        };
        self.pump.input(&mut self.io, input);
    }

    /// Hands the drained events to storage, waiting for room when the storage
    /// channel is full (the driver reads no input meanwhile: backpressure).
    async fn flush_pending(&mut self) {
        if self.io.pending.is_empty() {
            return;
        }
        let Some(tx) = &self.store_tx else {
            self.io.pending.clear();
            return;
        };
        for item in self.io.pending.drain(..) {
            match tx.try_send(item) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(item)) => {
                    self.pump.counters_mut().storage_waits += 1;
                    if tx.send(item).await.is_err() {
                        self.pump.counters_mut().storage_errors += 1;
                        self.store_failed
                            .get_or_insert_with(|| "the storage thread ended".into());
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.pump.counters_mut().storage_errors += 1;
                    self.store_failed
                        .get_or_insert_with(|| "the storage thread ended".into());
                }
            }
        }
    }
}

fn storage_thread(
    mut s: Box<dyn Storage>,
    mut rx: mpsc::Receiver<StoreMsg>,
    replies: mpsc::UnboundedSender<StoreReply>,
) -> Result<(), String> {
    let mut first_err = None;
    while let Some(msg) = rx.blocking_recv() {
        let r = match msg {
            StoreMsg::Event(wall, e) => match s.on_event(wall, &e) {
                Ok(d) => {
                    if let Event::InfohashDiscovered { info_hash, .. } = &e {
                        let _ = replies.send(StoreReply::Decision(*info_hash, d));
                    }
                    Ok(())
                }
                Err(err) => Err(err),
            },
            StoreMsg::Nodes(wall, nodes) => s.nodes(wall, &nodes),
            StoreMsg::Status(wall, snap, last) => {
                let r = s.status(wall, &snap, last);
                if !last {
                    let mut claimed = Vec::new();
                    s.claimed(&mut claimed);
                    if !claimed.is_empty() {
                        let _ = replies.send(StoreReply::Claimed(claimed));
                    }
                }
                r
            }
        };
        if let Err(err) = r {
            // Every failure is counted; the driver logs the first and stops.
            let _ = replies.send(StoreReply::Error(err.clone()));
            first_err.get_or_insert(err);
        }
    }
    let closed = s.close();
    match first_err {
        Some(e) => Err(e),
        None => closed,
    }
}

async fn recv_opt<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves to the index of a readable UDP socket, checking from `first` on
/// (never resolves when there are none).
async fn udp_readable(udp: &[UdpSocket], first: usize) -> usize {
    poll_fn(|cx| {
        let n = udp.len();
        for k in 0..n {
            let i = (first + k) % n;
            if udp[i].poll_recv_ready(cx).is_ready() {
                return Poll::Ready(i);
            }
        }
        Poll::Pending
    })
    .await
}

/// One peer connection: connect, then read into the driver's channel and write
/// what the driver sends, until EOF, an error, or the driver aborts the task.
async fn conn_task(
    conn: ConnId,
    socket: TcpSocket,
    to: SocketAddr,
    mut wrx: mpsc::UnboundedReceiver<Bytes>,
    events: mpsc::Sender<ConnEvent>,
) {
    let send = |kind| events.send(ConnEvent { conn, kind });
    let mut stream = match socket.connect(to).await {
        Ok(s) => s,
        Err(e) => {
            let _ = send(ConnEventKind::Closed(close_reason(&e))).await;
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    if send(ConnEventKind::Connected).await.is_err() {
        return;
    }
    let (mut r, mut w) = stream.split();
    let mut buf = BytesMut::with_capacity(pump::TCP_READ);
    let reason = loop {
        tokio::select! {
            n = r.read_buf(&mut buf) => match n {
                Ok(0) => break CloseReason::Eof,
                Ok(_) => {
                    let chunk = buf.split().freeze();
                    if send(ConnEventKind::Data(chunk)).await.is_err() {
                        return;
                    }
                    buf.reserve(pump::TCP_READ);
                }
                Err(e) => break close_reason(&e),
            },
            b = wrx.recv() => match b {
                Some(b) => {
                    if let Err(e) = w.write_all(&b).await {
                        break close_reason(&e);
                    }
                }
                // The driver dropped us (Close): just close the socket.
                None => return,
            },
        }
    };
    let _ = send(ConnEventKind::Closed(reason)).await;
}
