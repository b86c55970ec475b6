//! uTP (BEP 29) as sans-IO machines, sharing the DHT's UDP socket.
//!
//! - [`packet`]: the header codec.
//! - [`conn`]: one connection's state machine (handshake, windows, LEDBAT,
//!   retransmission, FIN/RESET, keep-alive).
//! - [`Utp`] (here): the socket manager. It keys connections by (local socket,
//!   peer address, receive connection id), takes datagrams and time, and gives
//!   datagrams to send ([`Utp::poll_transmit`]), stream events
//!   ([`Utp::poll_event`]) and its next deadline ([`Utp::deadline`]). A stream
//!   is a [`StreamId`] handle: [`Utp::connect`], [`Utp::write`], [`Utp::read`],
//!   [`Utp::close`], [`Utp::abort`], the same four operations a TCP stream offers,
//!   so that a peer-wire session can run over either.
//!
//! How the crawler uses it: `Crawler::on_datagram` dispatches on the first byte
//! of each datagram (`d` → KRPC; `(type << 4) | 1` for types 0..=4 → here), and
//! the manager's datagrams go out as ordinary `Output::Transmit`s on the same
//! socket. Incoming connections are refused unless [`UtpConfig::accept_incoming`]
//! is set (it is off in the crawler until the fetcher speaks uTP): an unsolicited
//! SYN is answered with a RESET, rate-limited ([`UtpConfig::resets_per_sec`]),
//! and counted. When accepting, half-open connections are capped in total
//! ([`UtpConfig::max_half_open`]) and per IP ([`UtpConfig::max_half_open_per_ip`]);
//! SYNs over the caps are dropped and counted, never answered. A packet for no
//! known connection gets a rate-limited RESET (never in answer to a RESET).
//!
//! Everything is bounded: connections ([`UtpConfig::max_connections`]), each
//! connection's send and receive buffers ([`conn::ConnConfig`]), the queues of
//! datagrams ([`UtpConfig::max_transmits`]) and events ([`UtpConfig::max_events`]);
//! what does not fit is dropped and counted in [`UtpStats`].

pub mod conn;
pub mod packet;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

use crate::{ApiMisuse, Rng, SocketId, Timestamp};
use conn::{Conn, ConnConfig};
use packet::{Header, PacketError, PacketType};

pub use packet::is_utp_first_byte;

/// What a remote uTP party did wrong (counted in [`UtpStats::faults`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UtpFault {
    /// The datagram did not decode.
    Malformed(PacketError),
    /// A packet other than a SYN for no connection we know.
    UnknownConnection,
    /// A SYN where none is expected (a collision with a live connection).
    UnexpectedSyn,
    /// A packet the connection's state does not expect.
    UnexpectedPacket,
    /// A DATA packet without payload.
    EmptyData,
    /// A sequence number outside the receive window (or past the FIN).
    SeqOutOfWindow,
    /// An ack of a packet we never sent.
    AckOutOfRange,
    /// A SYN over the half-open caps (total or per IP) or the connection cap.
    SynOverCap,
    /// A SYN while incoming connections are refused.
    SynRefused,
    /// A SYN from an address we opened a stream to from that socket (open, or
    /// within [`CROSS_WINDOW`]; a BEP 55 holepunch dials from both ends at
    /// once): the peer's connection is accepted as a stream of its own
    /// ([`UtpEvent::Crossed`]) and ours goes on; the owner keeps what the peer
    /// keeps (libtorrent drops one of two connections with the same endpoint
    /// or peer id, comparing ports or ids, or at random).
    SynCrossed,
}

/// Why a uTP connection ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UtpCloseReason {
    /// Both sides finished (FINs acknowledged), or ours was and the peer's did
    /// not come within the linger time.
    Finished,
    /// The peer reset the connection.
    Reset,
    /// The peer answered our SYN with a RESET.
    Refused,
    /// Our SYN was never answered.
    ConnectTimedOut,
    /// Data went unacknowledged through every retransmission.
    TimedOut,
    /// Nothing was received for the idle timeout.
    Idle,
    /// The peer's window stayed closed too long.
    ZeroWindow,
    /// The peer caused too many faults; we reset it.
    Misbehaving,
    /// Our own [`Utp::abort`].
    Aborted,
}

/// uTP counters (totals since start; `connections` and `half_open` are gauges).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UtpStats {
    /// uTP datagrams received (valid or not).
    pub datagrams_in: u64,
    /// Datagrams queued to send.
    pub datagrams_out: u64,
    /// Bytes of received uTP datagrams.
    pub bytes_in: u64,
    /// Bytes of the datagrams queued to send.
    pub bytes_out: u64,
    /// Faults by kind.
    pub faults: BTreeMap<UtpFault, u64>,
    /// Connections we opened.
    pub connects: u64,
    /// Connections we accepted.
    pub accepted: u64,
    /// Connections ended, by reason.
    pub closed: BTreeMap<UtpCloseReason, u64>,
    /// RESETs sent (to connections and to unknown ones).
    pub resets_sent: u64,
    /// RESETs not sent because of the rate limit.
    pub resets_limited: u64,
    /// DATA packets sent for the first time.
    pub data_packets_out: u64,
    /// Packets sent again (timeout or fast resend).
    pub retransmits: u64,
    /// Packets declared lost by duplicate or selective acks.
    pub fast_resends: u64,
    /// Retransmission timeouts.
    pub timeouts: u64,
    /// Zero-window probes.
    pub window_probes: u64,
    /// Keep-alive STATE packets.
    pub keepalives: u64,
    /// DATA or FIN packets received again.
    pub duplicates_in: u64,
    /// DATA dropped because the receive buffer was full.
    pub recv_window_drops: u64,
    /// Payload bytes delivered in order.
    pub bytes_delivered: u64,
    /// Datagrams dropped because the transmit queue was full.
    pub transmit_drops: u64,
    /// Events dropped because the event queue was full.
    pub event_drops: u64,
    /// Open connections (gauge).
    pub connections: usize,
    /// Connections in the handshake (gauge).
    pub half_open: usize,
}

impl UtpStats {
    /// Counts one fault.
    pub fn fault(&mut self, f: UtpFault) {
        *self.faults.entry(f).or_insert(0) += 1;
    }
    /// Faults of every kind.
    pub fn faults_total(&self) -> u64 {
        self.faults.values().sum()
    }
}

/// The socket manager's limits.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct UtpConfig {
    /// Each connection's limits and timers.
    pub conn: ConnConfig,
    /// Connections at most (open and half-open).
    pub max_connections: usize,
    /// Half-open connections at most (ours and theirs).
    pub max_half_open: usize,
    /// Half-open incoming connections per peer IP at most.
    pub max_half_open_per_ip: usize,
    /// Whether SYNs from peers open connections; otherwise they are answered
    /// with a (rate-limited) RESET.
    pub accept_incoming: bool,
    /// RESETs to unknown connections and refused SYNs per second (a token
    /// bucket with this burst).
    pub resets_per_sec: u32,
    /// Datagrams waiting for [`Utp::poll_transmit`] at most.
    pub max_transmits: usize,
    /// Events waiting for [`Utp::poll_event`] at most.
    pub max_events: usize,
}

impl Default for UtpConfig {
    fn default() -> Self {
        UtpConfig {
            conn: ConnConfig::default(),
            max_connections: 256,
            max_half_open: 64,
            max_half_open_per_ip: 4,
            accept_incoming: false,
            resets_per_sec: 20,
            max_transmits: 8192,
            max_events: 4096,
        }
    }
}

/// How long after we opened a stream to an address a SYN from it counts as a
/// crossing ([`UtpEvent::Crossed`]) rather than an unsolicited SYN.
pub const CROSS_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
/// Addresses remembered for [`CROSS_WINDOW`] at most (oldest forgotten).
pub const CROSS_MEMORY: usize = 1024;

/// A uTP stream, allocated by the manager (never reused).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub u64);

/// What happened to a stream.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum UtpEvent {
    /// The handshake of a stream we opened (or accepted) completed.
    Connected(StreamId),
    /// A peer opened a stream to us (only with `accept_incoming`).
    Incoming {
        /// The new stream.
        stream: StreamId,
        /// The socket it arrived on.
        local: SocketId,
        /// The peer.
        from: SocketAddr,
    },
    /// A SYN from an address we opened a stream to from that socket (a
    /// simultaneous open, as a BEP 55 holepunch makes: both ends dial at
    /// once): accepted as `stream`, whatever [`UtpConfig::accept_incoming`]
    /// says. `attempt` is our own stream to it if one is still open (it goes
    /// on), `None` if ours ended within [`CROSS_WINDOW`]. At most one
    /// crossing per address is open at a time. The owner adopts `stream` as a candidate connection
    /// to that peer, or aborts it.
    Crossed {
        /// Our stream to the peer, if still open.
        attempt: Option<StreamId>,
        /// The peer's connection.
        stream: StreamId,
        /// The socket it arrived on.
        local: SocketId,
        /// The peer.
        from: SocketAddr,
    },
    /// Bytes (or the end of the peer's stream) are waiting for [`Utp::read`].
    /// Sent once until the stream is read again.
    Readable(StreamId),
    /// The stream ended and every received byte was read; its id is forgotten.
    /// (A stream that ends with unread bytes stays, closed, until they are
    /// read: read on every `Readable`.)
    Closed {
        /// The stream.
        stream: StreamId,
        /// Why.
        reason: UtpCloseReason,
    },
}

/// One datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The socket to send from.
    pub local: SocketId,
    /// The destination.
    pub to: SocketAddr,
    /// The datagram.
    pub payload: Bytes,
}

type Key = (SocketId, SocketAddr, u16);

#[derive(Debug)]
struct Entry {
    key: Key,
    conn: Conn,
    incoming: bool,
    readable_sent: bool,
    /// Closed and counted; kept only until its last bytes are read.
    ended: bool,
}

/// The socket manager: every uTP connection of the crawler's sockets.
#[derive(Debug)]
pub struct Utp {
    cfg: UtpConfig,
    rng: Rng,
    now: Timestamp,
    by_key: BTreeMap<Key, StreamId>,
    streams: BTreeMap<StreamId, Entry>,
    next_id: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<UtpEvent>,
    stats: UtpStats,
    reset_tokens: u32,
    reset_refill: Timestamp,
    scratch: Vec<Vec<u8>>,
    /// Where we opened streams to, and when (see [`CROSS_WINDOW`]).
    dialled: BTreeMap<(SocketId, SocketAddr), Timestamp>,
    dialled_order: BTreeSet<(Timestamp, SocketId, SocketAddr)>,
}

impl Utp {
    /// A manager with these limits; `rng` picks connection ids and initial
    /// sequence numbers.
    pub fn new(cfg: UtpConfig, rng: Rng) -> Self {
        Utp {
            cfg,
            rng,
            now: Timestamp::ZERO,
            by_key: BTreeMap::new(),
            streams: BTreeMap::new(),
            next_id: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: UtpStats::default(),
            reset_tokens: cfg.resets_per_sec,
            reset_refill: Timestamp::ZERO,
            scratch: Vec::new(),
            dialled: BTreeMap::new(),
            dialled_order: BTreeSet::new(),
        }
    }

    /// The counters (gauges filled in).
    pub fn stats(&self) -> UtpStats {
        let mut s = self.stats.clone();
        s.connections = self.streams.len();
        s.half_open = self.half_open();
        s
    }

    /// The limits.
    pub fn config(&self) -> &UtpConfig {
        &self.cfg
    }

    /// Open streams now.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Whether no stream is open.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// The connection behind a stream (for tests and diagnostics).
    pub fn conn(&self, s: StreamId) -> Option<&Conn> {
        self.streams.get(&s).map(|e| &e.conn)
    }

    /// The peer of a stream.
    pub fn peer(&self, s: StreamId) -> Option<(SocketId, SocketAddr)> {
        self.streams.get(&s).map(|e| (e.key.0, e.key.1))
    }

    fn half_open(&self) -> usize {
        self.streams
            .values()
            .filter(|e| e.conn.is_half_open())
            .count()
    }

    fn advance(&mut self, now: Timestamp) {
        if now > self.now {
            self.now = now;
        }
    }

    fn alloc(&mut self) -> StreamId {
        self.next_id += 1;
        StreamId(self.next_id)
    }

    /// Opens a stream to `to` from socket `local`. The SYN is among the next
    /// transmits; [`UtpEvent::Connected`] or [`UtpEvent::Closed`] follows.
    pub fn connect(
        &mut self,
        now: Timestamp,
        local: SocketId,
        to: SocketAddr,
    ) -> Result<StreamId, ApiMisuse> {
        self.advance(now);
        if self.streams.len() >= self.cfg.max_connections
            || self.half_open() >= self.cfg.max_half_open
        {
            return Err(ApiMisuse::Full);
        }
        // Our receive id, and the peer's possible receive id for a SYN it
        // might send us (id + 1), must both be free.
        let mut recv_id = None;
        for _ in 0..16 {
            let id = self.rng.next_u32() as u16;
            if !self.by_key.contains_key(&(local, to, id))
                && !self.by_key.contains_key(&(local, to, id.wrapping_add(1)))
            {
                recv_id = Some(id);
                break;
            }
        }
        let recv_id = recv_id.ok_or(ApiMisuse::Full)?;
        let seq = self.rng.next_u32() as u16;
        let conn = Conn::connect(self.cfg.conn, self.now, recv_id, seq);
        let sid = self.alloc();
        let key = (local, to, recv_id);
        self.by_key.insert(key, sid);
        self.streams.insert(
            sid,
            Entry {
                key,
                conn,
                incoming: false,
                readable_sent: false,
                ended: false,
            },
        );
        self.stats.connects += 1;
        if let Some(t) = self.dialled.insert((local, to), self.now) {
            self.dialled_order.remove(&(t, local, to));
        }
        self.dialled_order.insert((self.now, local, to));
        while self.dialled.len() > CROSS_MEMORY {
            let Some((t, l, a)) = self.dialled_order.pop_first() else {
                break;
            };
            if self.dialled.get(&(l, a)) == Some(&t) {
                self.dialled.remove(&(l, a));
            }
        }
        self.service(sid);
        Ok(sid)
    }

    /// Writes as much of `bytes` as the stream's send buffer takes; returns how
    /// much (0 when full, closing or closed).
    pub fn write(&mut self, now: Timestamp, s: StreamId, bytes: &[u8]) -> Result<usize, ApiMisuse> {
        self.advance(now);
        let e = self.streams.get_mut(&s).ok_or(ApiMisuse::Unknown)?;
        let n = e.conn.write(bytes);
        self.service(s);
        Ok(n)
    }

    /// Room in the stream's send buffer.
    pub fn write_room(&self, s: StreamId) -> usize {
        self.streams.get(&s).map_or(0, |e| e.conn.write_room())
    }

    /// Moves up to `max` received bytes to `out`. Returns how many, and whether
    /// the peer's stream has ended and everything is read.
    pub fn read(
        &mut self,
        now: Timestamp,
        s: StreamId,
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<(usize, bool), ApiMisuse> {
        self.advance(now);
        let e = self.streams.get_mut(&s).ok_or(ApiMisuse::Unknown)?;
        let n = e.conn.read(out, max);
        let eof = e.conn.is_eof() && e.conn.readable_len() == 0;
        e.readable_sent = false;
        self.service(s);
        Ok((n, eof))
    }

    /// Closes our side gracefully (pending bytes, then a FIN).
    pub fn close(&mut self, now: Timestamp, s: StreamId) -> Result<(), ApiMisuse> {
        self.advance(now);
        let e = self.streams.get_mut(&s).ok_or(ApiMisuse::Unknown)?;
        e.conn.close();
        self.service(s);
        Ok(())
    }

    /// Ends a stream at once with a RESET. [`UtpEvent::Closed`] follows.
    pub fn abort(&mut self, now: Timestamp, s: StreamId) -> Result<(), ApiMisuse> {
        self.advance(now);
        let e = self.streams.get_mut(&s).ok_or(ApiMisuse::Unknown)?;
        e.conn.abort();
        self.service(s);
        Ok(())
    }

    /// Whether a datagram waits for [`Utp::poll_transmit`].
    pub fn has_transmit(&self) -> bool {
        !self.transmits.is_empty()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next stream event.
    pub fn poll_event(&mut self) -> Option<UtpEvent> {
        self.events.pop_front()
    }

    /// When [`Utp::handle_timeout`] should run next.
    pub fn deadline(&self) -> Option<Timestamp> {
        self.streams
            .values()
            .filter_map(|e| e.conn.deadline())
            .min()
    }

    /// Runs every connection's due timers.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.advance(now);
        let due: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(_, e)| e.conn.deadline().is_some_and(|t| t <= self.now))
            .map(|(s, _)| *s)
            .collect();
        for s in due {
            if let Some(e) = self.streams.get_mut(&s) {
                e.conn.on_timeout(self.now, &mut self.stats);
            }
            self.service(s);
        }
    }

    /// One datagram that the demultiplexer recognised as uTP (by its first
    /// byte). Garbage is counted, never answered.
    pub fn handle_datagram(
        &mut self,
        now: Timestamp,
        local: SocketId,
        from: SocketAddr,
        bytes: &[u8],
    ) {
        self.advance(now);
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += bytes.len() as u64;
        let p = match packet::decode(bytes) {
            Ok(p) => p,
            Err(e) => {
                self.stats.fault(UtpFault::Malformed(e));
                return;
            }
        };
        let h = p.header;
        let key = if h.ty == PacketType::Syn {
            (local, from, h.connection_id.wrapping_add(1))
        } else {
            (local, from, h.connection_id)
        };
        if let Some(&sid) = self.by_key.get(&key) {
            if let Some(e) = self.streams.get_mut(&sid) {
                e.conn.on_packet(self.now, &p, &mut self.stats);
            }
            self.service(sid);
            return;
        }
        match h.ty {
            PacketType::Syn => self.on_syn(local, from, &h),
            PacketType::Reset => {
                // Some implementations reset with the id they received, which
                // is our send id: match that too (same socket and peer).
                let by_send = self
                    .streams
                    .iter()
                    .find(|(_, e)| {
                        e.key.0 == local
                            && e.key.1 == from
                            && !e.ended
                            && e.conn.send_id() == h.connection_id
                    })
                    .map(|(s, _)| *s);
                match by_send {
                    Some(sid) => {
                        if let Some(e) = self.streams.get_mut(&sid) {
                            e.conn.on_packet(self.now, &p, &mut self.stats);
                        }
                        self.service(sid);
                    }
                    None => self.stats.fault(UtpFault::UnknownConnection),
                }
            }
            _ => {
                self.stats.fault(UtpFault::UnknownConnection);
                self.send_reset(local, from, &h);
            }
        }
    }

    fn on_syn(&mut self, local: SocketId, from: SocketAddr, h: &Header) {
        // Our own stream to that address (open, in any state), or one we
        // opened within the window; and no crossing from it open already.
        let same = |e: &Entry| !e.ended && e.key.0 == local && e.key.1 == from;
        let attempt = self
            .streams
            .iter()
            .find(|(_, e)| !e.incoming && same(e))
            .map(|(s, _)| *s);
        let crossing_open = self.streams.values().any(|e| e.incoming && same(e));
        let recent = self
            .dialled
            .get(&(local, from))
            .is_some_and(|t| self.now.since(*t) <= CROSS_WINDOW);
        if (attempt.is_some() || recent) && !crossing_open {
            // A simultaneous open (BEP 55): the peer's SYN got through the
            // NATs, whether or not ours did. Our attempt stays: which
            // connection the peer keeps is its choice (libtorrent drops one
            // of two with the same endpoint or peer id, comparing ports or
            // ids, or at random), so the owner runs both.
            self.stats.fault(UtpFault::SynCrossed);
            if self.streams.len() >= self.cfg.max_connections
                || self.half_open() >= self.cfg.max_half_open
            {
                self.stats.fault(UtpFault::SynOverCap);
                return;
            }
            let Some(sid) = self.accept_syn(local, from, h) else {
                return;
            };
            self.push_event(UtpEvent::Crossed {
                attempt,
                stream: sid,
                local,
                from,
            });
            self.service(sid);
            return;
        }
        if !self.cfg.accept_incoming {
            self.stats.fault(UtpFault::SynRefused);
            self.send_reset(local, from, h);
            return;
        }
        let ip = from.ip();
        let per_ip = self
            .streams
            .values()
            .filter(|e| e.incoming && e.conn.is_half_open() && e.key.1.ip() == ip)
            .count();
        if self.streams.len() >= self.cfg.max_connections
            || self.half_open() >= self.cfg.max_half_open
            || per_ip >= self.cfg.max_half_open_per_ip
        {
            self.stats.fault(UtpFault::SynOverCap);
            return;
        }
        let Some(sid) = self.accept_syn(local, from, h) else {
            return;
        };
        self.push_event(UtpEvent::Incoming {
            stream: sid,
            local,
            from,
        });
        self.service(sid);
    }

    /// Accepts `from`'s SYN on `local` as a new incoming stream (counted).
    /// `None` if a stream already has its key: never, as
    /// [`Self::handle_datagram`] hands such a SYN to that stream.
    fn accept_syn(&mut self, local: SocketId, from: SocketAddr, h: &Header) -> Option<StreamId> {
        let seq = self.rng.next_u32() as u16;
        let conn = Conn::accept(self.cfg.conn, self.now, h, seq);
        let key = (local, from, conn.recv_id());
        if self.by_key.contains_key(&key) {
            return None;
        }
        let sid = self.alloc();
        self.by_key.insert(key, sid);
        self.streams.insert(
            sid,
            Entry {
                key,
                conn,
                incoming: true,
                readable_sent: false,
                ended: false,
            },
        );
        self.stats.accepted += 1;
        Some(sid)
    }

    /// A RESET for a packet of no connection of ours, within the rate limit.
    fn send_reset(&mut self, local: SocketId, to: SocketAddr, h: &Header) {
        let elapsed = self.now.since(self.reset_refill);
        let refill =
            (elapsed.as_millis() as u64).saturating_mul(self.cfg.resets_per_sec as u64) / 1000;
        if refill > 0 {
            self.reset_tokens =
                (self.reset_tokens as u64 + refill).min(self.cfg.resets_per_sec as u64) as u32;
            self.reset_refill = self.now;
        }
        if self.reset_tokens == 0 {
            self.stats.resets_limited += 1;
            return;
        }
        self.reset_tokens -= 1;
        // The peer sends with its send id; for a SYN that is its receive id,
        // which the RESET must carry. Otherwise its send id is our would-be
        // receive id, and its own receive id is one less (for an initiator) or
        // one more: libtorrent answers with the id it received, and so do we.
        let r = Header {
            ty: PacketType::Reset,
            connection_id: h.connection_id,
            timestamp_us: (self.now.as_nanos() / 1000) as u32,
            timestamp_diff_us: 0,
            wnd_size: 0,
            seq_nr: self.rng.next_u32() as u16,
            ack_nr: h.seq_nr,
        };
        let mut buf = Vec::new();
        packet::encode(&r, None, &[], &mut buf);
        self.stats.resets_sent += 1;
        self.push_transmit(local, to, buf);
    }

    fn push_transmit(&mut self, local: SocketId, to: SocketAddr, buf: Vec<u8>) {
        if self.transmits.len() >= self.cfg.max_transmits {
            self.stats.transmit_drops += 1;
            return;
        }
        self.stats.datagrams_out += 1;
        self.stats.bytes_out += buf.len() as u64;
        self.transmits.push_back(Transmit {
            local,
            to,
            payload: Bytes::from(buf),
        });
    }

    fn push_event(&mut self, e: UtpEvent) {
        if self.events.len() >= self.cfg.max_events {
            self.stats.event_drops += 1;
            return;
        }
        self.events.push_back(e);
    }

    /// After anything happened to a stream: its datagrams, its events, and its
    /// removal when it has ended.
    fn service(&mut self, sid: StreamId) {
        let now = self.now;
        let mut out = std::mem::take(&mut self.scratch);
        let Some(e) = self.streams.get_mut(&sid) else {
            return;
        };
        e.conn.flush(now, &mut out, &mut self.stats);
        let (local, to) = (e.key.0, e.key.1);
        let connected = e.conn.take_connected();
        let readable = !e.readable_sent && (e.conn.readable_len() > 0 || e.conn.is_eof());
        if readable {
            e.readable_sent = true;
        }
        // A closed stream stays (off the key table) until its bytes are read.
        let mut closed = None;
        if let conn::ConnState::Closed(r) = e.conn.state() {
            let first = !e.ended;
            e.ended = true;
            closed = Some((r, e.key, first, e.conn.readable_len() == 0));
        }
        for buf in out.drain(..) {
            self.push_transmit(local, to, buf);
        }
        self.scratch = out;
        if connected {
            self.push_event(UtpEvent::Connected(sid));
        }
        if readable {
            self.push_event(UtpEvent::Readable(sid));
        }
        if let Some((reason, key, first, drained)) = closed {
            if first {
                self.by_key.remove(&key);
                *self.stats.closed.entry(reason).or_insert(0) += 1;
            }
            if drained {
                self.streams.remove(&sid);
                self.push_event(UtpEvent::Closed {
                    stream: sid,
                    reason,
                });
            }
        }
    }

    /// Whether an IP has this many half-open incoming connections (for tests).
    pub fn half_open_from(&self, ip: IpAddr) -> usize {
        self.streams
            .values()
            .filter(|e| e.incoming && e.conn.is_half_open() && e.key.1.ip() == ip)
            .count()
    }
}

#[cfg(test)]
mod tests;
