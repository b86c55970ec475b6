//! The driver pump: everything a runtime does around the sans-IO [`Crawler`] that
//! does not touch a socket, a clock or a thread, written once for the mio loop,
//! the tokio driver and the simulator.
//!
//! A runtime owns the sockets, the polling, the timers and the signals. It
//! implements [`Io`] (send a datagram, start a connection, write, close, take an
//! event, read the clock) and hands every input to [`Pump::input`]. The pump feeds
//! the crawler, then drains `poll_output` until `Timeout`/`Idle`, dispatching each
//! output to the [`Io`]: transmit errors are counted, connects go through the
//! connection cap and the EMFILE back-off, and each discovered infohash the event
//! sink answers [`Decision::Acquire`] for goes through the one acquire policy
//! ([`AcquirePolicy`]). [`Pump::read_udp`] is the batch reader: a bounded batch of
//! datagrams per socket per wakeup, the clock read once per [`CLOCK_EVERY`].
//!
//! The other shared pieces: the [`RuntimeCounters`] and [`Snapshot`] both
//! runtimes report, the [`Storage`] sink trait, the [`BootstrapWatch`], the
//! housekeeping [`Cadence`], the `std::io` error classification
//! ([`close_reason`], [`is_fd_exhaustion`]) and one set of constants.

mod io;
mod storage;
mod watch;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use crate::{CloseReason, ConnId, Crawler, Event, InfoHash, Input, Output, SocketId, Timestamp};

pub use io::{close_reason, is_fd_exhaustion, resolved, tcp_source, Connect, Io, Transmit};
pub use storage::{Decision, NullStorage, Snapshot, Storage};
pub use watch::BootstrapWatch;

/// Largest UDP datagram read (KRPC messages are well under 1,500 bytes).
pub const UDP_BUF: usize = 65_536;
/// Datagrams read from one socket per wakeup before the runtime looks at its
/// other inputs (signals, TCP, timers, other sockets). Reached before
/// `WouldBlock` only under a flood.
pub const UDP_BATCH: u32 = 1024;
/// While reading a batch, the clock is read once per this many datagrams (one
/// clock read per 64 datagrams is precise enough for the core).
pub const CLOCK_EVERY: u32 = 64;
/// Bytes read from a TCP stream at once.
pub const TCP_READ: usize = 64 * 1024;
/// After EMFILE/ENFILE, connects fail fast (as `LocalError`) for this long.
pub const EMFILE_BACKOFF: Duration = Duration::from_millis(250);
/// Nodes saved by earlier runs that a start bootstraps from.
pub const SAVED_NODES: usize = 48;
/// When no bootstrap node answered after this long, say so (then with back-off).
pub const BOOTSTRAP_WARN: Duration = Duration::from_secs(30);
/// The longest interval between two "no bootstrap node answered" warnings.
pub const BOOTSTRAP_WARN_MAX: Duration = Duration::from_secs(600);
/// The routing tables go to storage this often (and at shutdown).
pub const SAVE_NODES_EVERY: Duration = Duration::from_secs(300);
/// The housekeeping tick: `/metrics` is rendered and the bootstrap watch looks
/// this often.
pub const TICK: Duration = Duration::from_secs(1);
/// A router name that did not resolve is retried after this long, doubling…
pub const DNS_RETRY_FIRST: Duration = Duration::from_secs(5);
/// …up to this interval.
pub const DNS_RETRY_MAX: Duration = Duration::from_secs(300);
/// Infohashes waiting for a free acquisition slot under
/// [`AcquirePolicy::Queue`] (the default bound).
pub const ACQUIRE_QUEUE: usize = 10_000;

/// What the pump does with a new infohash when `Crawler::acquire` refuses it
/// (its acquisitions are full).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AcquirePolicy {
    /// Drop it (counted in [`RuntimeCounters::acquire_full`]).
    Drop,
    /// Queue it (up to `max`, then drop) and retry, oldest first, whenever the
    /// crawler has drained its outputs.
    Queue {
        /// The most infohashes kept waiting.
        max: usize,
    },
}

impl AcquirePolicy {
    /// The policy the runtimes run. Measured against [`AcquirePolicy::Queue`] in
    /// the dense simulated world (BENCHMARKS.md, "Acquire policy"): the same
    /// result, as core's own acquisition queue absorbs the bursts, so the simpler
    /// one. `Queue` stays for the simulator's comparisons.
    pub const PRODUCTION: AcquirePolicy = AcquirePolicy::Drop;
}

/// Counters only the runtime sees (both runtimes report the same set; a runtime
/// leaves the ones it has no use for at zero).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeCounters {
    /// Discoveries storage did not know (acquired; all of them without storage).
    pub infohashes_new: u64,
    /// Discoveries storage knew already (skipped).
    pub infohashes_known: u64,
    /// `acquire` refused (core's acquisitions full), queued or dropped.
    pub acquire_full: u64,
    /// Refused infohashes queued for a retry ([`AcquirePolicy::Queue`]).
    pub acquire_queued: u64,
    /// Refused infohashes dropped (the policy drops, or the queue was full).
    pub acquire_dropped: u64,
    /// UDP send errors.
    pub udp_send_errors: u64,
    /// Datagrams dropped because the socket's send buffer was full.
    pub udp_send_would_block: u64,
    /// UDP receive errors (ICMP errors surface here on Linux).
    pub udp_recv_errors: u64,
    /// Connects answered with `TcpClosed { LocalError }` (fd budget, EMFILE, …).
    pub tcp_connect_local_errors: u64,
    /// Times the process ran out of file descriptors.
    pub emfile: u64,
    /// TCP connections open now.
    pub tcp_open: usize,
    /// Router name resolutions that failed.
    pub dns_failures: u64,
    /// Events not delivered to a library event stream because it was full.
    pub stream_dropped: u64,
    /// Times the driver waited for room in the storage channel (backpressure).
    pub storage_waits: u64,
    /// Storage calls that returned an error.
    pub storage_errors: u64,
}

/// A housekeeping timer on the runtime's clock (status line, saved nodes).
#[derive(Copy, Clone, Debug)]
pub struct Cadence {
    every: Duration,
    next: Timestamp,
}

impl Cadence {
    /// First due `every` after `start`.
    pub fn new(start: Timestamp, every: Duration) -> Self {
        Cadence {
            every,
            next: start.add(every),
        }
    }

    /// When it is due next.
    pub fn next(&self) -> Timestamp {
        self.next
    }

    /// True (and the next time set `every` after `now`) when due at `now`.
    pub fn due(&mut self, now: Timestamp) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now.add(self.every);
        true
    }
}

/// The crawler and everything runtime-independent around it (see the module doc).
pub struct Pump {
    crawler: Crawler,
    counters: RuntimeCounters,
    policy: AcquirePolicy,
    waiting: VecDeque<InfoHash>,
    max_conns: usize,
    emfile_until: Option<Timestamp>,
    deadline: Option<Timestamp>,
}

impl std::ops::Deref for Pump {
    type Target = Crawler;
    /// The crawler, for inspection (its mutating calls go through
    /// [`Pump::call`], which drains afterwards).
    fn deref(&self) -> &Crawler {
        &self.crawler
    }
}

impl Pump {
    /// Wraps `crawler`; at most `max_conns` peer connections are open at once
    /// (connects past that fail at once as `LocalError`).
    pub fn new(crawler: Crawler, policy: AcquirePolicy, max_conns: usize) -> Self {
        Pump {
            crawler,
            counters: RuntimeCounters::default(),
            policy,
            waiting: VecDeque::new(),
            max_conns,
            emfile_until: None,
            deadline: None,
        }
    }

    /// The crawler.
    pub fn crawler(&self) -> &Crawler {
        &self.crawler
    }

    /// The runtime counters.
    pub fn counters(&self) -> &RuntimeCounters {
        &self.counters
    }

    /// The runtime counters, for the ones the runtime counts itself.
    pub fn counters_mut(&mut self) -> &mut RuntimeCounters {
        &mut self.counters
    }

    /// The acquire policy.
    pub fn policy(&self) -> AcquirePolicy {
        self.policy
    }

    /// Infohashes waiting for an acquisition slot.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The core's deadline after the last drain (`None`: idle).
    pub fn deadline(&self) -> Option<Timestamp> {
        self.deadline
    }

    /// The counters and the crawler's, at `at`, with `open` connections.
    pub fn snapshot(&self, at: Timestamp, open: usize) -> Snapshot {
        let mut runtime = self.counters.clone();
        runtime.tcp_open = open;
        Snapshot {
            at,
            stats: self.crawler.stats(),
            runtime,
        }
    }

    /// Calls the crawler's API (bootstrap, fetch, lookups…) at `io.now()`, then
    /// drains.
    pub fn call<I: Io + ?Sized, R>(
        &mut self,
        io: &mut I,
        f: impl FnOnce(&mut Crawler, Timestamp) -> R,
    ) -> R {
        let now = io.now();
        let r = f(&mut self.crawler, now);
        self.drain(io);
        r
    }

    /// Feeds one input to the crawler, then drains.
    pub fn input<I: Io + ?Sized>(&mut self, io: &mut I, input: Input<'_>) -> Option<Timestamp> {
        self.crawler.handle_input(input);
        self.drain(io)
    }

    /// The timer fired: `Timeout(now)`, then drain.
    pub fn timeout<I: Io + ?Sized>(&mut self, io: &mut I) -> Option<Timestamp> {
        let now = io.now();
        self.input(io, Input::Timeout(now))
    }

    /// A connection ended (the peer, the OS, or a failed connect): tells the
    /// crawler. No drain: call it from inside a write in a drain, or drain after.
    pub fn closed<I: Io + ?Sized>(&mut self, io: &mut I, conn: ConnId, reason: CloseReason) {
        let at = io.now();
        self.crawler
            .handle_input(Input::TcpClosed { at, conn, reason });
    }

    /// Reads datagrams from socket `local` through [`Io::recv`] until it would
    /// block or [`UDP_BATCH`] were read, feeding each to the crawler and draining.
    /// `buf` is the read buffer ([`UDP_BUF`] bytes). True when it stopped at the
    /// batch limit (the socket may hold more).
    pub fn read_udp<I: Io + ?Sized>(
        &mut self,
        io: &mut I,
        local: SocketId,
        buf: &mut [u8],
    ) -> bool {
        let mut n_read = 0u32;
        let mut at = io.now();
        loop {
            if n_read == UDP_BATCH {
                return true;
            }
            match io.recv(local, buf) {
                Ok((n, from)) => {
                    n_read += 1;
                    if n_read % CLOCK_EVERY == 0 {
                        at = io.now();
                    }
                    let bytes = buf.get(..n).unwrap_or(buf);
                    self.crawler.handle_input(Input::Datagram {
                        at,
                        local,
                        from,
                        bytes,
                    });
                    self.drain(io);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.counters.udp_recv_errors += 1;
                    tracing::trace!("recv_from: {e}");
                }
            }
        }
    }

    /// Drains `poll_output` until `Timeout`/`Idle`, carrying out each output
    /// through `io`; returns the deadline (`None`: idle). Before parking, the
    /// runtime's own waiting work ([`Io::before_park`]) and the queued
    /// acquisitions get a turn; when any starts, the drain goes on.
    pub fn drain<I: Io + ?Sized>(&mut self, io: &mut I) -> Option<Timestamp> {
        loop {
            match self.crawler.poll_output() {
                Output::Transmit { local, to, payload } => {
                    match io.transmit(local, to, payload) {
                        Transmit::Sent => {}
                        // A full send buffer drops the datagram (UDP may lose it anyway).
                        Transmit::WouldBlock => self.counters.udp_send_would_block += 1,
                        Transmit::Failed => self.counters.udp_send_errors += 1,
                    }
                }
                Output::Connect { conn, to } => self.connect(io, conn, to),
                Output::Send { conn, bytes } => io.send(conn, bytes),
                Output::Close { conn } => io.close(conn),
                Output::Event(e) => self.event(io, e),
                Output::Timeout(t) => {
                    if self.before_park(io) {
                        continue;
                    }
                    self.deadline = Some(t);
                    return self.deadline;
                }
                Output::Idle => {
                    if self.before_park(io) {
                        continue;
                    }
                    self.deadline = None;
                    return None;
                }
            }
        }
    }

    fn before_park<I: Io + ?Sized>(&mut self, io: &mut I) -> bool {
        let mut started = io.before_park(&mut self.crawler);
        if self.waiting.is_empty() {
            return started;
        }
        let now = io.now();
        while let Some(ih) = self.waiting.front().copied() {
            if self.crawler.acquire(now, ih).is_err() {
                break;
            }
            self.waiting.pop_front();
            started = true;
        }
        started
    }

    fn connect<I: Io + ?Sized>(&mut self, io: &mut I, conn: ConnId, to: SocketAddr) {
        let now = io.now();
        let backing_off = self.emfile_until.is_some_and(|t| now < t);
        if backing_off || io.open_conns() >= self.max_conns {
            self.local_error(io, conn);
            return;
        }
        match io.connect(conn, to) {
            Connect::Started => {}
            Connect::FdExhausted => {
                self.counters.emfile += 1;
                self.emfile_until = Some(now.add(EMFILE_BACKOFF));
                tracing::warn!(
                    open = io.open_conns(),
                    "out of file descriptors; backing off connects"
                );
                self.local_error(io, conn);
            }
            Connect::LocalError => self.local_error(io, conn),
            Connect::Failed(reason) => self.closed(io, conn, reason),
        }
    }

    fn local_error<I: Io + ?Sized>(&mut self, io: &mut I, conn: ConnId) {
        self.counters.tcp_connect_local_errors += 1;
        self.closed(io, conn, CloseReason::LocalError);
    }

    fn event<I: Io + ?Sized>(&mut self, io: &mut I, e: Event) {
        let discovered = match &e {
            Event::InfohashDiscovered { info_hash, .. } => Some(*info_hash),
            _ => None,
        };
        let d = io.event(&mut self.crawler, e);
        if let Some(ih) = discovered {
            self.decided(io, ih, d);
        }
    }

    /// The event sink's answer for a discovered infohash, when it comes later
    /// than the event (the tokio driver's storage thread). Acquires it (through
    /// the acquire policy) for [`Decision::Acquire`], unless core acquires by
    /// itself (`auto_acquire`). No drain.
    pub fn decided<I: Io + ?Sized>(&mut self, io: &mut I, ih: InfoHash, d: Decision) {
        match d {
            Decision::Acquire => {
                self.counters.infohashes_new += 1;
                if !self.crawler.config().crawl.auto_acquire {
                    let now = io.now();
                    self.acquire(now, ih);
                }
            }
            Decision::Known => self.counters.infohashes_known += 1,
            Decision::Refresh => {
                self.counters.infohashes_known += 1;
                let now = io.now();
                self.crawler.refresh_scrape(now, ih);
            }
            Decision::Nothing => {}
        }
    }

    /// Infohashes claimed from a fleet's shared queue ([`Storage::claimed`]):
    /// acquired whatever their slice (`Crawler::acquire_claimed`). One the crawler
    /// refuses (its acquisitions are full) is dropped and counted: its lease runs
    /// out and the queue hands it out again. No drain.
    pub fn claimed<I: Io + ?Sized>(&mut self, io: &mut I, ihs: &[InfoHash]) {
        let now = io.now();
        for ih in ihs {
            if self.crawler.acquire_claimed(now, *ih).is_err() {
                self.counters.acquire_full += 1;
                self.counters.acquire_dropped += 1;
            }
        }
    }

    /// Starts acquiring `ih` at `now`; when the crawler refuses, applies the
    /// acquire policy. True if it started now.
    pub fn acquire(&mut self, now: Timestamp, ih: InfoHash) -> bool {
        if self.crawler.acquire(now, ih).is_ok() {
            return true;
        }
        self.counters.acquire_full += 1;
        match self.policy {
            AcquirePolicy::Queue { max } if self.waiting.len() < max => {
                self.counters.acquire_queued += 1;
                self.waiting.push_back(ih);
            }
            _ => self.counters.acquire_dropped += 1,
        }
        false
    }
}

#[cfg(test)]
mod tests;
