//! One uTP connection as a state machine (BEP 29): the SYN/STATE handshake as
//! initiator or acceptor, sequence and ack numbers (u16, wrapping), a bounded send
//! buffer and a bounded receive reorder buffer, retransmission (RTT estimate,
//! 500 ms minimum timeout, doubling back-off, give up after
//! [`ConnConfig::max_retransmits`]), fast resend on 3 duplicate acks or 3 packets
//! selectively acked past a hole, LEDBAT congestion control (100 ms target one-way
//! delay, two-minute base delay, gain capped at [`ConnConfig::max_cwnd_gain`] bytes
//! per RTT, a one-packet minimum window), the peer's advertised window (a zero
//! window is probed on a timer and given up after
//! [`ConnConfig::zero_window_timeout`]), FIN and RESET, and keep-alives.
//!
//! The machine does no IO: [`Conn::on_packet`] and [`Conn::on_timeout`] take the
//! time as a [`Timestamp`], [`Conn::flush`] appends the datagrams to send, and
//! [`Conn::deadline`] says when to call [`Conn::on_timeout`] next. The microsecond
//! timestamps in headers are those `Timestamp`s, truncated to 32 bits.
//!
//! Sizes: a datagram is at most [`MAX_DATAGRAM`] (1,232) bytes, so that the IP
//! packet fits the 1,280-byte IPv6 minimum MTU (40-byte IPv6 and 8-byte UDP
//! headers); a DATA payload is at most [`MAX_PAYLOAD`] (1,178) bytes, leaving room
//! for the 20-byte header and a selective ACK of up to 32 bytes (256 packets).

use std::collections::VecDeque;
use std::time::Duration;

use super::packet::{encode, Header, Packet, PacketType, HEADER_LEN};
use super::{UtpCloseReason, UtpFault, UtpStats};
use crate::Timestamp;

/// The largest datagram a connection sends.
pub const MAX_DATAGRAM: usize = 1232;
/// The largest selective ACK bitmask a connection sends, in bytes.
pub const MAX_SACK_BYTES: usize = 32;
/// The largest DATA payload: `MAX_DATAGRAM - 20 - 2 - MAX_SACK_BYTES`.
pub const MAX_PAYLOAD: usize = MAX_DATAGRAM - HEADER_LEN - 2 - MAX_SACK_BYTES;
/// The smallest congestion window: one full packet.
pub const MIN_CWND: usize = MAX_PAYLOAD + HEADER_LEN;
/// The initial timeout (BEP 29).
const INITIAL_RTO: Duration = Duration::from_millis(1000);
/// The smallest timeout (BEP 29).
const MIN_RTO: Duration = Duration::from_millis(500);
/// The largest timeout after back-off.
const MAX_RTO: Duration = Duration::from_secs(60);
/// Packets in flight, or held for reordering, never span more than this much of
/// the u16 sequence space, whatever the configuration says (wrap-around
/// comparisons need less than half of it).
const MAX_SEQ_SPAN: usize = 16_384;
/// How long a connection whose FIN was acknowledged waits for the peer's FIN.
const LINGER: Duration = Duration::from_secs(5);
/// How far behind our oldest unacked packet an ack may be and still be a
/// harmless reordered old ack rather than a fault.
const STALE_ACK_SPAN: u16 = 4096;

/// A connection's limits and timers.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ConnConfig {
    /// Bytes written and not yet acknowledged (pending plus in flight).
    pub send_buffer: usize,
    /// Bytes received and not yet read (readable plus out of order); the
    /// advertised window is what is left of it.
    pub recv_buffer: usize,
    /// Packets the reorder buffer spans past the next expected one; a packet
    /// further ahead is a fault and dropped. At most 16,384.
    pub max_reorder: usize,
    /// Packets in flight at most (at most 16,384).
    pub max_in_flight: usize,
    /// Consecutive timeouts of data before the connection fails.
    pub max_retransmits: u32,
    /// Times the SYN is resent before the connect fails.
    pub syn_retransmits: u32,
    /// LEDBAT's target one-way queueing delay.
    pub target_delay: Duration,
    /// The most the congestion window grows per RTT outside slow start, in bytes.
    pub max_cwnd_gain: usize,
    /// An empty STATE goes out when nothing was sent for this long.
    pub keepalive: Duration,
    /// The connection fails when nothing was received for this long.
    pub idle_timeout: Duration,
    /// An accepted connection still waiting for the initiator's first packet
    /// after this long is dropped (spoofed SYNs hold no slot for long).
    pub syn_recv_timeout: Duration,
    /// The connection fails when the peer's window stays too small to send for
    /// this long while we have data.
    pub zero_window_timeout: Duration,
    /// Faults (bad acks, sequence numbers out of the window, ...) a connection
    /// may cause before it is reset.
    pub max_faults: u32,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            send_buffer: 1 << 20,
            recv_buffer: 1 << 20,
            max_reorder: 1024,
            max_in_flight: 1024,
            max_retransmits: 6,
            syn_retransmits: 2,
            target_delay: Duration::from_millis(100),
            max_cwnd_gain: 3000,
            keepalive: Duration::from_secs(29),
            idle_timeout: Duration::from_secs(90),
            syn_recv_timeout: Duration::from_secs(10),
            zero_window_timeout: Duration::from_secs(60),
            max_faults: 64,
        }
    }
}

/// Where a connection is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// We sent a SYN and wait for its STATE.
    SynSent,
    /// We answered a SYN and wait for the initiator's first packet.
    SynRecv,
    /// Both sides may send.
    Connected,
    /// Ended, for this reason.
    Closed(UtpCloseReason),
}

#[derive(Debug)]
struct Sent {
    seq: u16,
    ty: PacketType,
    payload: Vec<u8>,
    first_sent: Timestamp,
    transmissions: u32,
    acked: bool,
    /// Counted in `cur_window`.
    in_window: bool,
    need_resend: bool,
    fast_resent: bool,
}

impl Sent {
    fn size(&self) -> usize {
        self.payload.len() + HEADER_LEN
    }
}

fn micros(t: Timestamp) -> u32 {
    (t.as_nanos() / 1000) as u32
}

/// `a` comes before `b` in u16 sequence space.
fn seq_before(a: u16, b: u16) -> bool {
    (b.wrapping_sub(a) as i16) > 0
}

/// `a` is before `b` in wrapping u32 microsecond time.
fn micros_before(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) > 0
}

/// The sliding two-minute minimum of one-way delay samples.
#[derive(Debug, Default)]
struct BaseDelay {
    /// (minute, minimum in that minute), newest last, at most 3.
    minutes: VecDeque<(u64, u32)>,
}

impl BaseDelay {
    fn add(&mut self, now: Timestamp, sample: u32) {
        let minute = now.as_secs() / 60;
        match self.minutes.back_mut() {
            Some((m, v)) if *m == minute => {
                if micros_before(sample, *v) {
                    *v = sample;
                }
            }
            _ => {
                self.minutes.push_back((minute, sample));
                while self.minutes.len() > 3 {
                    self.minutes.pop_front();
                }
            }
        }
    }
    fn base(&self) -> Option<u32> {
        let mut it = self.minutes.iter().map(|(_, v)| *v);
        let first = it.next()?;
        Some(it.fold(first, |b, v| if micros_before(v, b) { v } else { b }))
    }
}

/// One connection.
#[derive(Debug)]
pub struct Conn {
    cfg: ConnConfig,
    state: ConnState,
    recv_id: u16,
    send_id: u16,
    /// The next sequence number to send.
    seq_nr: u16,
    /// The last sequence number received in order.
    ack_nr: u16,
    pending: VecDeque<u8>,
    in_flight: VecDeque<Sent>,
    in_flight_payload: usize,
    cur_window: usize,
    cwnd: usize,
    slow_start: bool,
    ssthresh: usize,
    cwnd_full: bool,
    peer_wnd: usize,
    rtt_us: u64,
    rtt_var_us: u64,
    rto: Duration,
    timeouts: u32,
    rto_deadline: Option<Timestamp>,
    dup_acks: u32,
    loss_seq_nr: u16,
    reply_micro: u32,
    base_delay: BaseDelay,
    reorder: VecDeque<Option<Vec<u8>>>,
    reorder_bytes: usize,
    readable: VecDeque<u8>,
    eof_pkt: Option<u16>,
    eof: bool,
    write_closed: bool,
    fin_sent: bool,
    fin_acked_at: Option<Timestamp>,
    ack_due: bool,
    last_sent: Timestamp,
    last_recv: Timestamp,
    zero_window_since: Option<Timestamp>,
    probe_at: Option<Timestamp>,
    probe_now: bool,
    faults: u32,
    connected_event: bool,
    reset_due: bool,
}

impl Conn {
    fn blank(cfg: ConnConfig, now: Timestamp, recv_id: u16, send_id: u16, seq_nr: u16) -> Self {
        Conn {
            cfg,
            state: ConnState::SynSent,
            recv_id,
            send_id,
            seq_nr,
            ack_nr: 0,
            pending: VecDeque::new(),
            in_flight: VecDeque::new(),
            in_flight_payload: 0,
            cur_window: 0,
            cwnd: MIN_CWND * 2,
            slow_start: true,
            ssthresh: cfg.send_buffer,
            cwnd_full: false,
            peer_wnd: MIN_CWND,
            rtt_us: 0,
            rtt_var_us: 0,
            rto: INITIAL_RTO,
            timeouts: 0,
            rto_deadline: None,
            dup_acks: 0,
            loss_seq_nr: seq_nr.wrapping_sub(1),
            reply_micro: 0,
            base_delay: BaseDelay::default(),
            reorder: VecDeque::new(),
            reorder_bytes: 0,
            readable: VecDeque::new(),
            eof_pkt: None,
            eof: false,
            write_closed: false,
            fin_sent: false,
            fin_acked_at: None,
            ack_due: false,
            last_sent: now,
            last_recv: now,
            zero_window_since: None,
            probe_at: None,
            probe_now: false,
            faults: 0,
            connected_event: false,
            reset_due: false,
        }
    }

    /// An initiating connection that receives on `recv_id` (sends on
    /// `recv_id + 1`) and numbers its SYN `seq_nr`. The SYN goes out with the
    /// next [`Conn::flush`].
    pub fn connect(cfg: ConnConfig, now: Timestamp, recv_id: u16, seq_nr: u16) -> Self {
        let mut c = Conn::blank(cfg, now, recv_id, recv_id.wrapping_add(1), seq_nr);
        c.in_flight.push_back(Sent {
            seq: seq_nr,
            ty: PacketType::Syn,
            payload: Vec::new(),
            first_sent: now,
            transmissions: 0,
            acked: false,
            in_window: false,
            need_resend: true,
            fast_resent: false,
        });
        c.seq_nr = seq_nr.wrapping_add(1);
        c
    }

    /// An accepting connection for this SYN: it receives on the SYN's id + 1,
    /// sends on the SYN's id, and numbers its packets from `seq_nr`. The STATE
    /// answering the SYN goes out with the next [`Conn::flush`].
    pub fn accept(cfg: ConnConfig, now: Timestamp, syn: &Header, seq_nr: u16) -> Self {
        let id = syn.connection_id;
        let mut c = Conn::blank(cfg, now, id.wrapping_add(1), id, seq_nr);
        c.state = ConnState::SynRecv;
        c.ack_nr = syn.seq_nr;
        c.peer_wnd = syn.wnd_size as usize;
        c.reply_micro = micros(now).wrapping_sub(syn.timestamp_us);
        c.ack_due = true;
        c
    }

    /// The id the peer sends to us with (our key in the socket manager).
    pub fn recv_id(&self) -> u16 {
        self.recv_id
    }

    /// The id we send to the peer with.
    pub fn send_id(&self) -> u16 {
        self.send_id
    }

    /// Where the connection is.
    pub fn state(&self) -> ConnState {
        self.state
    }

    /// Whether it has ended.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, ConnState::Closed(_))
    }

    /// Whether the handshake is still under way.
    pub fn is_half_open(&self) -> bool {
        matches!(self.state, ConnState::SynSent | ConnState::SynRecv)
    }

    /// Takes the "just connected" flag (set once, when the handshake completes).
    pub fn take_connected(&mut self) -> bool {
        std::mem::take(&mut self.connected_event)
    }

    /// Bytes received in order and not read yet.
    pub fn readable_len(&self) -> usize {
        self.readable.len()
    }

    /// Whether the peer's stream has ended (its FIN arrived and every packet
    /// before it): once the readable bytes are read, nothing more comes.
    pub fn is_eof(&self) -> bool {
        self.eof
    }

    /// Room left in the send buffer.
    pub fn write_room(&self) -> usize {
        if self.write_closed || self.is_closed() {
            return 0;
        }
        self.cfg
            .send_buffer
            .saturating_sub(self.pending.len() + self.in_flight_payload)
    }

    /// Bytes written and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.pending.len() + self.in_flight_payload
    }

    /// The congestion window now, in bytes.
    pub fn cwnd(&self) -> usize {
        self.cwnd
    }

    /// The retransmission timeout now (before back-off).
    pub fn rto(&self) -> Duration {
        self.rto
    }

    /// Appends as much of `bytes` as the send buffer takes; returns how much.
    pub fn write(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.write_room());
        // A slice extends a VecDeque by copying (an iterator adapter goes
        // byte by byte).
        self.pending.extend(bytes.get(..n).unwrap_or_default());
        n
    }

    /// Moves up to `max` readable bytes to `out`; returns how many.
    pub fn read(&mut self, out: &mut Vec<u8>, max: usize) -> usize {
        let before = self.recv_window();
        let n = max.min(self.readable.len());
        take_front(&mut self.readable, n, out);
        // Tell a peer we had closed our window that it is open again.
        if !self.is_closed() && before < MIN_CWND && self.recv_window() >= MIN_CWND {
            self.ack_due = true;
        }
        n
    }

    /// Closes our side gracefully: the written bytes go out, then a FIN. The
    /// connection ends when the FIN is acknowledged (or fails as usual).
    pub fn close(&mut self) {
        self.write_closed = true;
    }

    /// Ends the connection at once with a RESET to the peer.
    pub fn abort(&mut self) {
        if !self.is_closed() {
            self.reset_due = true;
            self.state = ConnState::Closed(UtpCloseReason::Aborted);
        }
    }

    fn fail(&mut self, reason: UtpCloseReason, reset: bool) {
        if !self.is_closed() {
            self.reset_due = reset;
            self.state = ConnState::Closed(reason);
        }
    }

    fn fault(&mut self, f: UtpFault, stats: &mut UtpStats) {
        stats.fault(f);
        self.faults += 1;
        if self.faults > self.cfg.max_faults {
            self.fail(UtpCloseReason::Misbehaving, true);
        }
    }

    fn recv_window(&self) -> usize {
        self.cfg
            .recv_buffer
            .saturating_sub(self.readable.len() + self.reorder_bytes)
    }

    /// The header for a packet we send now.
    fn header(&self, now: Timestamp, ty: PacketType, seq_nr: u16) -> Header {
        Header {
            ty,
            connection_id: if ty == PacketType::Syn {
                self.recv_id
            } else {
                self.send_id
            },
            timestamp_us: micros(now),
            timestamp_diff_us: self.reply_micro,
            wnd_size: u32::try_from(self.recv_window()).unwrap_or(u32::MAX),
            seq_nr,
            ack_nr: self.ack_nr,
        }
    }

    /// The selective ACK bitmask, when a packet past a hole was received.
    fn sack(&self) -> Option<Vec<u8>> {
        // reorder[0] is ack_nr + 1 (missing); bit i is ack_nr + 2 + i = reorder[i + 1].
        let span = self.reorder.len().checked_sub(1).filter(|n| *n > 0)?;
        let bits = span.min(MAX_SACK_BYTES * 8);
        let bytes = bits.div_ceil(32) * 4;
        let mut mask = vec![0u8; bytes];
        for (i, slot) in self.reorder.iter().skip(1).take(bits).enumerate() {
            if slot.is_some() {
                if let Some(b) = mask.get_mut(i / 8) {
                    *b |= 1 << (i % 8);
                }
            }
        }
        Some(mask)
    }

    fn emit(&mut self, now: Timestamp, h: Header, payload: &[u8], out: &mut Vec<Vec<u8>>) {
        let mut buf = Vec::new();
        let sack = if matches!(h.ty, PacketType::Syn | PacketType::Reset) {
            None
        } else {
            self.sack()
        };
        encode(&h, sack.as_deref(), payload, &mut buf);
        out.push(buf);
        self.last_sent = now;
        self.ack_due = false;
    }

    /// One packet from a peer (already matched to this connection).
    pub fn on_packet(&mut self, now: Timestamp, p: &Packet<'_>, stats: &mut UtpStats) {
        if self.is_closed() {
            return;
        }
        let h = &p.header;
        self.last_recv = now;
        if h.timestamp_us != 0 {
            self.reply_micro = micros(now).wrapping_sub(h.timestamp_us);
        }
        match h.ty {
            PacketType::Reset => {
                let why = if self.state == ConnState::SynSent {
                    UtpCloseReason::Refused
                } else {
                    UtpCloseReason::Reset
                };
                self.fail(why, false);
                return;
            }
            PacketType::Syn => {
                // A resent SYN (our STATE was lost): answer again.
                if self.state == ConnState::SynRecv
                    && h.connection_id.wrapping_add(1) == self.recv_id
                {
                    self.ack_due = true;
                } else {
                    self.fault(UtpFault::UnexpectedSyn, stats);
                }
                return;
            }
            _ => {}
        }
        if self.state == ConnState::SynSent {
            let syn_seq = self.seq_nr.wrapping_sub(1);
            if h.ty != PacketType::State || h.ack_nr != syn_seq {
                // Only the STATE answering our SYN moves us on.
                self.fault(UtpFault::UnexpectedPacket, stats);
                return;
            }
            // The STATE does not consume a sequence number: the peer's first
            // DATA carries this same number.
            self.ack_nr = h.seq_nr.wrapping_sub(1);
            self.state = ConnState::Connected;
            self.connected_event = true;
            // Tell the acceptor at once that we are here (unless data we
            // send right away carries the ack): it leaves its SYN-received
            // state on our first packet.
            self.ack_due = true;
        }
        self.peer_wnd = h.wnd_size as usize;
        let Some(progress) = self.on_ack(now, p, stats) else {
            return;
        };
        if self.state == ConnState::SynRecv {
            self.state = ConnState::Connected;
            self.connected_event = true;
        }
        match h.ty {
            PacketType::Data => {
                if p.payload.is_empty() {
                    self.fault(UtpFault::EmptyData, stats);
                    return;
                }
                self.receive(h.seq_nr, p.payload.to_vec(), stats);
            }
            PacketType::Fin => {
                if self.eof_pkt.is_some_and(|e| e != h.seq_nr) {
                    self.fault(UtpFault::UnexpectedPacket, stats);
                    return;
                }
                if self.eof_pkt.is_none() && seq_before(self.ack_nr, h.seq_nr) {
                    // Nothing already buffered may lie past the FIN.
                    let off = h.seq_nr.wrapping_sub(self.ack_nr).wrapping_sub(1) as usize;
                    if self.reorder.len() > off.saturating_add(1) {
                        self.fault(UtpFault::UnexpectedPacket, stats);
                        return;
                    }
                    if self.receive(h.seq_nr, Vec::new(), stats) {
                        self.eof_pkt = Some(h.seq_nr);
                    }
                } else {
                    // A resent FIN: ack it again.
                    self.ack_due = true;
                }
                self.check_eof();
            }
            _ => {}
        }
        self.after_progress(now, progress);
    }

    fn check_eof(&mut self) {
        if let Some(e) = self.eof_pkt {
            if !seq_before(self.ack_nr, e) {
                self.eof = true;
                // The peer is done: we finish our side too.
                self.write_closed = true;
            }
        }
    }

    /// A DATA or FIN numbered `seq`: into the reorder buffer, and everything in
    /// order onto the readable bytes. Returns whether it was accepted (new or
    /// already held).
    fn receive(&mut self, seq: u16, payload: Vec<u8>, stats: &mut UtpStats) -> bool {
        self.ack_due = true;
        if !seq_before(self.ack_nr, seq) {
            stats.duplicates_in += 1;
            return true;
        }
        if self.eof_pkt.is_some_and(|e| seq_before(e, seq)) {
            self.fault(UtpFault::SeqOutOfWindow, stats);
            return false;
        }
        let off = seq.wrapping_sub(self.ack_nr).wrapping_sub(1) as usize;
        if off >= self.cfg.max_reorder.min(MAX_SEQ_SPAN) {
            self.fault(UtpFault::SeqOutOfWindow, stats);
            return false;
        }
        if self.reorder.get(off).is_some_and(|s| s.is_some()) {
            stats.duplicates_in += 1;
            return true;
        }
        if payload.len() > self.recv_window() {
            stats.recv_window_drops += 1;
            return false;
        }
        while self.reorder.len() <= off {
            self.reorder.push_back(None);
        }
        self.reorder_bytes += payload.len();
        if let Some(slot) = self.reorder.get_mut(off) {
            *slot = Some(payload);
        }
        while let Some(Some(_)) = self.reorder.front() {
            if let Some(Some(b)) = self.reorder.pop_front() {
                self.reorder_bytes = self.reorder_bytes.saturating_sub(b.len());
                stats.bytes_delivered += b.len() as u64;
                self.readable.extend(b);
            }
            self.ack_nr = self.ack_nr.wrapping_add(1);
        }
        self.check_eof();
        true
    }

    /// The ack part of a packet. Returns false (and counts a fault) when the
    /// ack is impossible, in which case the rest of the packet is ignored.
    fn on_ack(&mut self, now: Timestamp, p: &Packet<'_>, stats: &mut UtpStats) -> Option<bool> {
        let ack = p.header.ack_nr;
        let oldest = self.seq_nr.wrapping_sub(self.in_flight.len() as u16);
        let last = self.seq_nr.wrapping_sub(1);
        // Packets acked by the cumulative ack: oldest ..= ack.
        let n = ack.wrapping_sub(oldest).wrapping_add(1) as usize;
        let mut acked_bytes = 0usize;
        if n > self.in_flight.len() {
            // Either an old ack overtaken by newer ones, or one for a packet we
            // never sent.
            let behind = oldest.wrapping_sub(1).wrapping_sub(ack);
            if seq_before(last, ack) || behind > STALE_ACK_SPAN {
                self.fault(UtpFault::AckOutOfRange, stats);
                return None;
            }
        } else if n == 0 {
            // ack == oldest - 1: nothing new.
            if p.header.ty == PacketType::State
                && p.sack.is_none()
                && self.in_flight.front().is_some_and(|s| !s.acked)
            {
                self.dup_acks += 1;
                if self.dup_acks == 3 {
                    self.mark_lost(0, stats);
                }
            }
        } else {
            self.dup_acks = 0;
            self.timeouts = 0;
            for i in 0..n {
                acked_bytes += self.ack_at(now, i);
            }
        }
        if let Some(mask) = p.sack {
            acked_bytes += self.on_sack(now, ack, mask, stats);
        }
        while self.in_flight.front().is_some_and(|s| s.acked) {
            self.in_flight.pop_front();
        }
        if acked_bytes > 0 {
            self.on_congestion(now, p.header.timestamp_diff_us, acked_bytes);
        }
        Some(acked_bytes > 0)
    }

    /// Bookkeeping for in-flight packet `idx` acked now (it stays in the queue,
    /// marked); returns its window bytes.
    fn ack_at(&mut self, now: Timestamp, idx: usize) -> usize {
        let Some(s) = self.in_flight.get_mut(idx) else {
            return 0;
        };
        if s.acked {
            return 0;
        }
        s.acked = true;
        s.need_resend = false;
        let (size, in_window, plen, tx, first, ty) = (
            s.size(),
            s.in_window,
            s.payload.len(),
            s.transmissions,
            s.first_sent,
            s.ty,
        );
        if in_window {
            self.cur_window = self.cur_window.saturating_sub(size);
        }
        self.in_flight_payload = self.in_flight_payload.saturating_sub(plen);
        if ty == PacketType::Fin {
            self.fin_acked_at = Some(now);
        }
        if tx == 1 {
            self.rtt_sample(now.since(first).as_micros() as u64);
        }
        size
    }

    fn rtt_sample(&mut self, rtt: u64) {
        if self.rtt_us == 0 && self.rtt_var_us == 0 {
            self.rtt_us = rtt;
            self.rtt_var_us = rtt / 2;
        } else {
            let delta = self.rtt_us.abs_diff(rtt);
            self.rtt_var_us = (self.rtt_var_us * 3 + delta) / 4;
            self.rtt_us = (self.rtt_us * 7 + rtt) / 8;
        }
        let t = Duration::from_micros(self.rtt_us.saturating_add(4 * self.rtt_var_us));
        self.rto = t.max(MIN_RTO).min(MAX_RTO);
    }

    fn on_sack(&mut self, now: Timestamp, ack: u16, mask: &[u8], stats: &mut UtpStats) -> usize {
        let oldest = self.seq_nr.wrapping_sub(self.in_flight.len() as u16);
        let mut acked_bytes = 0;
        let mut newly = Vec::new();
        for (byte_i, byte) in mask.iter().enumerate() {
            for bit in 0..8 {
                if byte & (1 << bit) == 0 {
                    continue;
                }
                let seq = ack.wrapping_add(2).wrapping_add((byte_i * 8 + bit) as u16);
                let idx = seq.wrapping_sub(oldest) as usize;
                if idx < self.in_flight.len() {
                    newly.push(idx);
                }
            }
        }
        for idx in newly {
            acked_bytes += self.ack_at(now, idx);
        }
        // Any unacked packet with 3 or more acked after it is lost.
        let mut acked_after = 0;
        let mut lost = Vec::new();
        for (i, s) in self.in_flight.iter().enumerate().rev() {
            if s.acked {
                acked_after += 1;
            } else if acked_after >= 3 && !s.fast_resent && !s.need_resend {
                lost.push(i);
            }
        }
        for i in lost {
            self.mark_lost(i, stats);
        }
        acked_bytes
    }

    /// Packet `idx` of the in-flight queue is lost: resend it now, and halve the
    /// window once per window of data.
    fn mark_lost(&mut self, idx: usize, stats: &mut UtpStats) {
        let Some(s) = self.in_flight.get_mut(idx) else {
            return;
        };
        if s.acked || s.ty == PacketType::Syn {
            return;
        }
        s.need_resend = true;
        s.fast_resent = true;
        let seq = s.seq;
        stats.fast_resends += 1;
        if seq_before(self.loss_seq_nr, seq) {
            self.cwnd = (self.cwnd / 2).max(MIN_CWND);
            self.ssthresh = self.cwnd;
            self.slow_start = false;
            self.loss_seq_nr = self.seq_nr.wrapping_sub(1);
        }
    }

    /// LEDBAT: grow or shrink the window by how far the peer's delay sample
    /// is from the target.
    fn on_congestion(&mut self, now: Timestamp, their_delay: u32, acked: usize) {
        let target = self.cfg.target_delay.as_micros().max(1) as i64;
        let our_delay = if their_delay == 0 {
            0
        } else {
            self.base_delay.add(now, their_delay);
            let base = self.base_delay.base().unwrap_or(their_delay);
            let d = their_delay.wrapping_sub(base);
            if (d as i32) < 0 {
                0
            } else {
                d as i64
            }
        };
        let max = self.cfg.send_buffer.max(MIN_CWND);
        if self.slow_start {
            if our_delay > target * 9 / 10 || self.cwnd >= self.ssthresh {
                self.slow_start = false;
            } else if self.cwnd_full {
                self.cwnd = (self.cwnd + acked).min(max);
                return;
            }
        }
        let off_target = (target - our_delay).clamp(-target, target);
        let cwnd = self.cwnd.max(1) as i64;
        let gain = (self.cfg.max_cwnd_gain as i64)
            .saturating_mul(off_target)
            .saturating_mul(acked as i64)
            / target.saturating_mul(cwnd);
        if gain < 0 || self.cwnd_full {
            let next = (cwnd + gain).max(MIN_CWND as i64) as usize;
            self.cwnd = next.min(max);
        }
    }

    /// After an ack or new data: reset timers that progress settles.
    fn after_progress(&mut self, now: Timestamp, progress: bool) {
        if self.in_flight.iter().any(|s| !s.acked) {
            if progress || self.rto_deadline.is_none() {
                self.rto_deadline = Some(now.add(self.backed_off_rto()));
            }
        } else {
            self.rto_deadline = None;
            self.timeouts = 0;
        }
        // Both FINs are through: done. (Our FIN acked without the peer's lingers
        // for [`LINGER`], see `on_timeout`.)
        if self.fin_acked_at.is_some() && self.eof {
            self.fail(UtpCloseReason::Finished, false);
        }
    }

    fn backed_off_rto(&self) -> Duration {
        let mut t = self.rto;
        for _ in 0..self.timeouts.min(16) {
            t = t.saturating_mul(2);
        }
        t.min(MAX_RTO)
    }

    /// The peer's window cannot take the next packet's payload.
    fn window_blocked(&self) -> bool {
        self.peer_wnd < self.pending.len().min(MAX_PAYLOAD)
    }

    /// Timers: retransmission, zero-window probe, idle, keep-alive (sent by the
    /// next [`Conn::flush`]).
    pub fn on_timeout(&mut self, now: Timestamp, stats: &mut UtpStats) {
        if self.is_closed() {
            return;
        }
        if self.fin_acked_at.is_some_and(|t| now.since(t) >= LINGER) {
            self.fail(UtpCloseReason::Finished, false);
            return;
        }
        if now.since(self.last_recv) >= self.cfg.idle_timeout {
            self.fail(UtpCloseReason::Idle, true);
            return;
        }
        if self.state == ConnState::SynRecv
            && now.since(self.last_recv) >= self.cfg.syn_recv_timeout
        {
            self.fail(UtpCloseReason::ConnectTimedOut, false);
            return;
        }
        if let Some(since) = self.zero_window_since {
            if now.since(since) >= self.cfg.zero_window_timeout {
                self.fail(UtpCloseReason::ZeroWindow, true);
                return;
            }
        }
        if self.probe_at.is_some_and(|t| t <= now) {
            self.probe_at = None;
            self.probe_now = true;
            stats.window_probes += 1;
        }
        if self.rto_deadline.is_some_and(|t| t <= now) {
            self.rto_deadline = None;
            let zero_window = self.zero_window_since.is_some();
            if !zero_window {
                self.timeouts += 1;
                stats.timeouts += 1;
            }
            let limit = if self.state == ConnState::SynSent {
                self.cfg.syn_retransmits
            } else {
                self.cfg.max_retransmits
            };
            if self.timeouts > limit {
                let why = if self.state == ConnState::SynSent {
                    UtpCloseReason::ConnectTimedOut
                } else {
                    UtpCloseReason::TimedOut
                };
                self.fail(why, self.state != ConnState::SynSent);
                return;
            }
            // Everything unacked goes again, paced by a one-packet window.
            if !zero_window {
                self.ssthresh = (self.cwnd / 2).max(MIN_CWND);
                self.cwnd = MIN_CWND;
                self.slow_start = true;
                self.loss_seq_nr = self.seq_nr.wrapping_sub(1);
            }
            for s in self.in_flight.iter_mut().filter(|s| !s.acked) {
                if s.in_window {
                    self.cur_window = self.cur_window.saturating_sub(s.size());
                    s.in_window = false;
                }
                s.need_resend = true;
            }
            if zero_window {
                self.probe_now = true;
            }
            self.rto_deadline = Some(now.add(self.backed_off_rto()));
        }
    }

    /// When [`Conn::on_timeout`] wants to run next.
    pub fn deadline(&self) -> Option<Timestamp> {
        if self.is_closed() {
            return None;
        }
        let mut t = Some(self.last_recv.add(self.cfg.idle_timeout));
        let mut min = |d: Option<Timestamp>| {
            t = crate::time::min_deadline(t, d);
        };
        min(self.rto_deadline);
        min(self.probe_at);
        min(self.fin_acked_at.map(|f| f.add(LINGER)));
        if self.state == ConnState::SynRecv {
            min(Some(self.last_recv.add(self.cfg.syn_recv_timeout)));
        }
        min(self
            .zero_window_since
            .map(|s| s.add(self.cfg.zero_window_timeout)));
        if self.state == ConnState::Connected {
            min(Some(self.last_sent.add(self.cfg.keepalive)));
        }
        t
    }

    /// Appends the datagrams due now to `out`: a RESET, resends, new data as the
    /// windows allow, our FIN, and an ack or keep-alive when nothing else carried
    /// one.
    pub fn flush(&mut self, now: Timestamp, out: &mut Vec<Vec<u8>>, stats: &mut UtpStats) {
        if self.reset_due {
            self.reset_due = false;
            let h = self.header(now, PacketType::Reset, self.seq_nr);
            self.emit(now, h, &[], out);
            stats.resets_sent += 1;
        }
        if self.is_closed() {
            if self.ack_due && self.state == ConnState::Closed(UtpCloseReason::Finished) {
                // The ack of the peer's FIN that completed the close.
                let h = self.header(now, PacketType::State, self.seq_nr);
                self.emit(now, h, &[], out);
            }
            return;
        }
        self.send_resends(now, out, stats);
        if self.state == ConnState::Connected {
            self.send_new(now, out, stats);
        }
        if self.ack_due {
            let h = self.header(now, PacketType::State, self.seq_nr);
            self.emit(now, h, &[], out);
        } else if self.state == ConnState::Connected
            && now.since(self.last_sent) >= self.cfg.keepalive
        {
            let h = self.header(now, PacketType::State, self.seq_nr);
            self.emit(now, h, &[], out);
            stats.keepalives += 1;
        }
        if self.rto_deadline.is_none() && self.in_flight.iter().any(|s| !s.acked) {
            self.rto_deadline = Some(now.add(self.backed_off_rto()));
        }
    }

    fn window(&self) -> usize {
        self.cwnd.min(self.peer_wnd)
    }

    fn send_resends(&mut self, now: Timestamp, out: &mut Vec<Vec<u8>>, stats: &mut UtpStats) {
        for i in 0..self.in_flight.len() {
            let Some(s) = self.in_flight.get(i) else {
                break;
            };
            if !s.need_resend || s.acked {
                continue;
            }
            let size = s.size();
            // With nothing in flight one packet always goes (the timeout restart
            // and the zero-window probe of BEP 29).
            if !s.in_window && self.cur_window > 0 && self.cur_window + size > self.window() {
                break;
            }
            let (seq, ty, payload) = (s.seq, s.ty, s.payload.clone());
            let h = self.header(now, ty, seq);
            self.emit(now, h, &payload, out);
            if let Some(s) = self.in_flight.get_mut(i) {
                if s.transmissions > 0 {
                    stats.retransmits += 1;
                } else {
                    s.first_sent = now;
                }
                s.transmissions += 1;
                s.need_resend = false;
                if !s.in_window {
                    s.in_window = true;
                    self.cur_window += size;
                }
            }
        }
    }

    fn send_new(&mut self, now: Timestamp, out: &mut Vec<Vec<u8>>, stats: &mut UtpStats) {
        self.cwnd_full = false;
        while !self.pending.is_empty() {
            if self.in_flight.len() >= self.cfg.max_in_flight.min(MAX_SEQ_SPAN) {
                break;
            }
            let len = self.pending.len().min(MAX_PAYLOAD);
            let size = len + HEADER_LEN;
            if self.window_blocked() && self.cur_window == 0 {
                // The peer's window is closed: probe it on a timer.
                if self.zero_window_since.is_none() {
                    self.zero_window_since = Some(now);
                }
                if !std::mem::take(&mut self.probe_now) {
                    if self.probe_at.is_none() {
                        self.probe_at = Some(now.add(self.rto));
                    }
                    break;
                }
            } else if self.cur_window + size > self.window() && self.cur_window > 0 {
                self.cwnd_full = self.cwnd <= self.peer_wnd;
                break;
            } else {
                self.zero_window_since = None;
                self.probe_at = None;
            }
            let mut payload = Vec::with_capacity(len);
            take_front(&mut self.pending, len, &mut payload);
            let seq = self.seq_nr;
            self.seq_nr = seq.wrapping_add(1);
            let h = self.header(now, PacketType::Data, seq);
            self.emit(now, h, &payload, out);
            stats.data_packets_out += 1;
            self.cur_window += size;
            self.in_flight_payload += len;
            self.in_flight.push_back(Sent {
                seq,
                ty: PacketType::Data,
                payload,
                first_sent: now,
                transmissions: 1,
                acked: false,
                in_window: true,
                need_resend: false,
                fast_resent: false,
            });
        }
        if self.pending.is_empty() || !self.window_blocked() {
            self.zero_window_since = None;
            self.probe_at = None;
        }
        if self.write_closed && self.pending.is_empty() && !self.fin_sent {
            self.fin_sent = true;
            let seq = self.seq_nr;
            self.seq_nr = seq.wrapping_add(1);
            let h = self.header(now, PacketType::Fin, seq);
            self.emit(now, h, &[], out);
            self.cur_window += HEADER_LEN;
            self.in_flight.push_back(Sent {
                seq,
                ty: PacketType::Fin,
                payload: Vec::new(),
                first_sent: now,
                transmissions: 1,
                acked: false,
                in_window: true,
                need_resend: false,
                fast_resent: false,
            });
        }
    }
}

/// Moves the first `n` bytes of `q` (at most all of them) to the end of `out`,
/// copying slices rather than byte by byte.
fn take_front(q: &mut VecDeque<u8>, n: usize, out: &mut Vec<u8>) {
    let n = n.min(q.len());
    let (a, b) = q.as_slices();
    let from_a = n.min(a.len());
    out.extend_from_slice(a.get(..from_a).unwrap_or_default());
    out.extend_from_slice(b.get(..n - from_a).unwrap_or_default());
    q.drain(..n);
}
