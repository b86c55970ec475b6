//! The glue between the fetcher's connections and the uTP socket manager: a
//! connection the fetcher opened over uTP ([`FetchOutput::UtpConnect`]) is a
//! [`StreamId`]; its `Send` and `Close` outputs go to the stream, and the
//! stream's events come back as the same `connected` / `data` / `closed`
//! inputs that a TCP connection's runtime gives. The session and its MSE layer
//! never know which transport carries them.
//!
//! ```text
//! Fetcher --UtpConnect/Send/Close--> UtpLink --connect/write/abort--> Utp --> Transmit
//! Fetcher <--connected/data/closed-- UtpLink <--Connected/Readable/Closed-- Utp
//! ```
//!
//! Bounded by the fetcher's sessions: one entry per uTP connection in flight.
//!
//! A connect that finds the manager's caps full (`UtpConfig::max_half_open`,
//! `max_connections`: SYNs into closed NAT mappings hold a half-open slot
//! until the fetcher's connect timeout) waits in a FIFO of at most
//! [`MAX_WAITING`] connects instead of failing: each stream that ends or
//! connects frees a slot and opens the oldest waiting one, whose connect
//! timeout starts then (its job's deadline bounds the wait). Waits are counted
//! in `TransportStats::utp_waited`; only a connect that finds the queue full
//! too fails, as a local error (`utp_unavailable`).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use crate::utp::{StreamId, Utp, UtpCloseReason, UtpEvent};
use crate::{CloseReason, ConnId, Output, SocketId, Timestamp};

use super::{FetchOutput, Fetcher};

/// Bytes read from a stream per call (the read loop is bounded by what the
/// stream holds, itself bounded by its receive buffer).
const READ_CHUNK: usize = 64 * 1024;

/// uTP connects that wait for room in the manager's caps, at most.
pub const MAX_WAITING: usize = 256;

/// The uTP connections of a fetcher (see the module docs).
#[derive(Debug, Default)]
pub struct UtpLink {
    by_conn: BTreeMap<ConnId, StreamId>,
    by_stream: BTreeMap<StreamId, ConnId>,
    /// Connects waiting for the manager's caps, oldest first (see the module
    /// docs).
    waiting: VecDeque<(ConnId, SocketId, SocketAddr)>,
    buf: Vec<u8>,
}

impl UtpLink {
    /// No connections.
    pub fn new() -> Self {
        Self::default()
    }

    /// uTP connections in flight (waiting ones included).
    pub fn len(&self) -> usize {
        self.by_conn.len() + self.waiting.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.by_conn.is_empty() && self.waiting.is_empty()
    }

    /// Connects waiting for room in the manager's caps.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Opens waiting connects, oldest first, while the manager has room.
    fn open_waiting(&mut self, now: Timestamp, utp: &mut Utp, fetcher: &mut Fetcher) {
        while let Some(&(conn, local, to)) = self.waiting.front() {
            if !fetcher.is_live(conn) {
                self.waiting.pop_front();
                continue;
            }
            let Ok(s) = utp.connect(now, local, to) else {
                return;
            };
            self.waiting.pop_front();
            self.by_conn.insert(conn, s);
            self.by_stream.insert(s, conn);
            fetcher.connect_timer_from(now, conn);
        }
    }

    /// Carries out a fetcher output if it is about a uTP connection (opens,
    /// writes, closes a stream); returns any other output untouched.
    pub fn route(
        &mut self,
        now: Timestamp,
        o: FetchOutput,
        utp: &mut Utp,
        fetcher: &mut Fetcher,
    ) -> Option<FetchOutput> {
        match o {
            FetchOutput::UtpConnect { conn, local, to } => {
                self.open_waiting(now, utp, fetcher);
                let opened = if self.waiting.is_empty() {
                    utp.connect(now, local, to).ok()
                } else {
                    None
                };
                match opened {
                    Some(s) => {
                        self.by_conn.insert(conn, s);
                        self.by_stream.insert(s, conn);
                    }
                    None if self.waiting.len() < MAX_WAITING => {
                        // The manager's caps are full: wait for a slot.
                        fetcher.stats.transport.utp_waited += 1;
                        fetcher.connect_timer_stop(conn);
                        self.waiting.push_back((conn, local, to));
                    }
                    None => {
                        // The caps and the queue are full: ours, not the
                        // peer's.
                        fetcher.stats.transport.utp_unavailable += 1;
                        fetcher.handle_closed(now, conn, CloseReason::LocalError);
                    }
                }
                None
            }
            FetchOutput::Output(Output::Send { conn, bytes }) => {
                let Some(&s) = self.by_conn.get(&conn) else {
                    return Some(FetchOutput::Output(Output::Send { conn, bytes }));
                };
                let n = utp.write(now, s, &bytes).unwrap_or(0);
                if n < bytes.len() {
                    fetcher.stats.transport.utp_write_overflow += 1;
                    self.forget(now, conn, utp);
                    fetcher.handle_closed(now, conn, CloseReason::Reset);
                }
                None
            }
            FetchOutput::Output(Output::Close { conn }) => {
                if let Some(i) = self.waiting.iter().position(|w| w.0 == conn) {
                    // Never opened: nothing to close.
                    self.waiting.remove(i);
                    return None;
                }
                if !self.by_conn.contains_key(&conn) {
                    return Some(FetchOutput::Output(Output::Close { conn }));
                }
                self.forget(now, conn, utp);
                self.open_waiting(now, utp, fetcher);
                None
            }
            other => Some(other),
        }
    }

    /// Ends `conn`'s stream at once (unread bytes dropped) and forgets it.
    fn forget(&mut self, now: Timestamp, conn: ConnId, utp: &mut Utp) {
        let Some(s) = self.by_conn.remove(&conn) else {
            return;
        };
        self.by_stream.remove(&s);
        // A closed stream stays in the manager until its bytes are read.
        self.buf.clear();
        while utp
            .read(now, s, &mut self.buf, READ_CHUNK)
            .is_ok_and(|(n, _)| n > 0)
        {
            self.buf.clear();
        }
        let _ = utp.abort(now, s);
    }

    /// A uTP event: to the fetcher if it is about one of its streams. A
    /// stream that connects or ends frees a half-open slot: waiting connects
    /// open.
    pub fn on_event(&mut self, now: Timestamp, ev: UtpEvent, utp: &mut Utp, fetcher: &mut Fetcher) {
        self.dispatch(now, ev, utp, fetcher);
        self.open_waiting(now, utp, fetcher);
    }

    fn dispatch(&mut self, now: Timestamp, ev: UtpEvent, utp: &mut Utp, fetcher: &mut Fetcher) {
        match ev {
            UtpEvent::Connected(s) => {
                if let Some(&conn) = self.by_stream.get(&s) {
                    fetcher.handle_connected(now, conn);
                }
            }
            UtpEvent::Readable(s) => {
                let Some(&conn) = self.by_stream.get(&s) else {
                    return;
                };
                loop {
                    self.buf.clear();
                    let Ok((n, eof)) = utp.read(now, s, &mut self.buf, READ_CHUNK) else {
                        return;
                    };
                    if n > 0 {
                        fetcher.handle_data(now, conn, &self.buf);
                    }
                    // The fetcher may have ended it (its `Close` is routed later).
                    if !fetcher.is_live(conn) {
                        return;
                    }
                    if eof {
                        self.by_conn.remove(&conn);
                        self.by_stream.remove(&s);
                        let _ = utp.abort(now, s);
                        fetcher.handle_closed(now, conn, CloseReason::Eof);
                        return;
                    }
                    if n == 0 {
                        return;
                    }
                }
            }
            UtpEvent::Closed { stream, reason } => {
                if let Some(conn) = self.by_stream.remove(&stream) {
                    self.by_conn.remove(&conn);
                    fetcher.handle_closed(now, conn, close_reason(reason));
                }
            }
            // The peer's SYN crossed our own dialling (a holepunch's
            // simultaneous open): the fetcher runs a session on it, next to
            // our attempt's if that is still open, or aborts it.
            UtpEvent::Crossed {
                attempt,
                stream,
                from,
                ..
            } => {
                let attempt = attempt.and_then(|a| self.by_stream.get(&a).copied());
                match fetcher.adopt_crossed(now, attempt, from) {
                    Some(c) => {
                        self.by_conn.insert(c, stream);
                        self.by_stream.insert(stream, c);
                    }
                    None => {
                        let _ = utp.abort(now, stream);
                    }
                }
            }
            // Incoming streams are not the fetcher's (the crawler refuses them).
            UtpEvent::Incoming { stream, .. } => {
                let _ = utp.abort(now, stream);
            }
        }
    }
}

impl Fetcher {
    /// A uTP connect waits for the manager's caps: no connect timeout runs
    /// (its job's deadline still does).
    fn connect_timer_stop(&mut self, id: ConnId) {
        let key = super::TimerKey::Conn(id.index, id.generation);
        if let Some(c) = self.conn_mut(id) {
            let t = c.deadline;
            self.timers.remove(&(t, key));
        }
    }

    /// A waiting uTP connect sent its SYN: the attempt starts now (its
    /// connect and peer timeouts, and the times in its session report).
    fn connect_timer_from(&mut self, now: Timestamp, id: ConnId) {
        let key = super::TimerKey::Conn(id.index, id.generation);
        let t = now.add(self.cfg.connect_timeout);
        if let Some(c) = self.conn_mut(id) {
            let old = c.deadline;
            c.started_at = now;
            c.last_rx = now;
            c.deadline = t;
            self.timers.remove(&(old, key));
            self.timers.insert((t, key));
        }
    }
}

/// A uTP ending as the fetcher's close reasons (which it maps to failures the
/// same way for either transport).
fn close_reason(r: UtpCloseReason) -> CloseReason {
    match r {
        UtpCloseReason::Finished => CloseReason::Eof,
        UtpCloseReason::Refused => CloseReason::Refused,
        UtpCloseReason::ConnectTimedOut => CloseReason::ConnectTimedOut,
        UtpCloseReason::Reset
        | UtpCloseReason::TimedOut
        | UtpCloseReason::Idle
        | UtpCloseReason::ZeroWindow
        | UtpCloseReason::Misbehaving
        | UtpCloseReason::Aborted => CloseReason::Reset,
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::{UtpLink, MAX_WAITING};
    use crate::fetch::{
        FetchConfig, FetchOutput, Fetcher, SessionOutcome, Transport, TransportChoice,
    };
    use crate::id::InfoHash;
    use crate::session::FailReason;
    use crate::testkit::{build_info, InfoSpec, UtpSwarm};
    use crate::utp::{Utp, UtpConfig};
    use crate::{Event, Output, Rng, SocketId, Timestamp};

    fn seeder() -> SocketAddr {
        "10.0.0.7:51413".parse().unwrap()
    }

    fn info(piece_length: u64, size: u64) -> Vec<u8> {
        build_info(&InfoSpec {
            piece_length,
            ..InfoSpec::single("utp.bin", size)
        })
    }

    fn fetcher(utp: bool) -> Fetcher {
        Fetcher::new(FetchConfig::default(), Rng::new(3))
            .with_allow_private(true)
            .with_utp(utp)
    }

    fn fetched(ev: &[Event]) -> Vec<&crate::fetch::MetadataFetched> {
        ev.iter()
            .filter_map(|e| match e {
                Event::MetadataFetched(m) => Some(&**m),
                _ => None,
            })
            .collect()
    }

    fn sessions(ev: &[Event]) -> Vec<(Transport, SessionOutcome)> {
        ev.iter()
            .filter_map(|e| match e {
                Event::PeerSession(r) => Some((r.transport, r.outcome)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_utp_only_seeder_is_fetched_after_tcp_is_refused_and_utp_is_remembered() {
        let mut w = UtpSwarm::new(1, Duration::from_millis(20), 0);
        let raw = info(1 << 20, 100 << 20);
        let ih = w.set_seeder(seeder(), raw.clone().into());
        let mut f = fetcher(true);
        let mut ev = Vec::new();
        f.fetch(Timestamp::ZERO, ih, &[seeder()]).unwrap();
        w.run_into(&mut f, 100_000, &mut ev);
        let got = fetched(&ev);
        assert_eq!(got.len(), 1, "{ev:?}");
        assert_eq!(&got[0].raw[..], &raw[..]);
        assert_eq!(w.tcp_refused, 1);
        assert_eq!(
            sessions(&ev),
            [
                (
                    Transport::Tcp,
                    SessionOutcome::Failed(FailReason::ConnectRefused)
                ),
                (Transport::Utp, SessionOutcome::Ok)
            ]
        );
        let t = &f.stats().transport;
        assert_eq!(
            t.chosen.get(&(Transport::Tcp, TransportChoice::Default)),
            Some(&1)
        );
        assert_eq!(
            t.chosen.get(&(Transport::Utp, TransportChoice::Fallback)),
            Some(&1)
        );
        assert_eq!(t.ok.get(&Transport::Utp), Some(&1));
        assert_eq!(t.connected.get(&Transport::Utp), Some(&1));
        assert_eq!(
            t.failed.get(&(Transport::Tcp, FailReason::ConnectRefused)),
            Some(&1)
        );
        assert_eq!(
            f.peer_capability(&seeder()).unwrap().transport,
            Some(Transport::Utp)
        );

        // The same peer again: uTP straight away.
        ev.clear();
        let now = w.now();
        f.fetch(now, ih, &[seeder()]).unwrap();
        w.run_into(&mut f, 100_000, &mut ev);
        assert_eq!(fetched(&ev).len(), 1, "{ev:?}");
        assert_eq!(w.tcp_refused, 1);
        let t = &f.stats().transport;
        assert_eq!(
            t.chosen.get(&(Transport::Utp, TransportChoice::Remembered)),
            Some(&1)
        );
        // Every stream ended and was forgotten on both sides.
        assert!(w.ours().is_empty(), "{:?}", w.ours().stats());
    }

    #[test]
    fn a_peer_that_talked_to_us_over_udp_gets_utp_first() {
        let mut w = UtpSwarm::new(2, Duration::from_millis(20), 0);
        let ih = w.set_seeder(seeder(), info(1 << 20, 100 << 20).into());
        let mut f = fetcher(true);
        f.note_udp_contact(Timestamp::ZERO, seeder(), SocketId(0));
        let mut ev = Vec::new();
        f.fetch(Timestamp::ZERO, ih, &[seeder()]).unwrap();
        w.run_into(&mut f, 100_000, &mut ev);
        assert_eq!(fetched(&ev).len(), 1, "{ev:?}");
        assert_eq!(w.tcp_refused, 0);
        assert_eq!(sessions(&ev), [(Transport::Utp, SessionOutcome::Ok)]);
        let t = &f.stats().transport;
        assert_eq!(
            t.chosen.get(&(Transport::Utp, TransportChoice::UdpContact)),
            Some(&1)
        );
        assert_eq!(t.udp_contacts, 1);
    }

    #[test]
    fn an_old_udp_contact_does_not_count() {
        let mut w = UtpSwarm::new(2, Duration::from_millis(20), 0);
        let ih = w.set_seeder(seeder(), info(1 << 20, 100 << 20).into());
        let mut f = fetcher(true);
        f.note_udp_contact(Timestamp::ZERO, seeder(), SocketId(0));
        let later = Timestamp::from_secs(3600);
        let mut ev = Vec::new();
        f.fetch(later, ih, &[seeder()]).unwrap();
        w.run_into(&mut f, 100_000, &mut ev);
        // TCP first (refused), then uTP.
        assert_eq!(w.tcp_refused, 1);
        assert_eq!(fetched(&ev).len(), 1, "{ev:?}");
    }

    #[test]
    fn a_tcp_peer_that_closes_before_a_byte_both_ways_is_tried_over_utp() {
        let mut w = UtpSwarm::new(4, Duration::from_millis(20), 0);
        w.tcp_accept_then_close = true;
        let ih = w.set_seeder(seeder(), info(1 << 20, 100 << 20).into());
        let mut f = fetcher(true);
        let mut ev = Vec::new();
        f.fetch(Timestamp::ZERO, ih, &[seeder()]).unwrap();
        w.run_into(&mut f, 100_000, &mut ev);
        assert_eq!(fetched(&ev).len(), 1, "{ev:?}");
        // Plaintext, then MSE (the encryption retry), then uTP.
        assert_eq!(w.tcp_refused, 2);
        assert_eq!(
            sessions(&ev),
            [
                (
                    Transport::Tcp,
                    SessionOutcome::Failed(FailReason::ClosedBeforeHandshake)
                ),
                (
                    Transport::Tcp,
                    SessionOutcome::Failed(FailReason::ClosedDuringMse)
                ),
                (Transport::Utp, SessionOutcome::Ok)
            ]
        );
        // TCP connected but never worked: uTP is what the cache keeps.
        assert_eq!(
            f.peer_capability(&seeder()).unwrap().transport,
            Some(Transport::Utp)
        );
    }

    /// Issue 15, the strategy's cost: jobs for the same uTP-only peer start
    /// in parallel, before the capability cache knows anything. Only the
    /// first one pays the TCP attempts (plaintext, then MSE: libtorrent with
    /// incoming TCP off accepts and closes); the others wait for what it
    /// learns and go straight to uTP.
    #[test]
    fn parallel_jobs_to_a_utp_only_peer_pay_its_tcp_attempts_once() {
        let mut w = UtpSwarm::new(5, Duration::from_millis(20), 0);
        w.tcp_accept_then_close = true;
        let raw = info(1 << 20, 100 << 20);
        let ih = w.set_seeder(seeder(), raw.clone().into());
        let mut f = fetcher(true);
        let mut ev = Vec::new();
        // Three more torrents from the same peer, at the same moment (the
        // seeder serves only `ih`: the others fail once they reach it).
        let others = [0x21u8, 0x22, 0x23].map(|b| crate::InfoHash([b; 20]));
        f.fetch(Timestamp::ZERO, ih, &[seeder()]).unwrap();
        for o in others {
            f.fetch(Timestamp::ZERO, o, &[seeder()]).unwrap();
        }
        w.run_into(&mut f, 100_000, &mut ev);
        assert_eq!(fetched(&ev).len(), 1, "{ev:?}");
        // One job's plaintext and MSE connects, not four jobs' worth.
        assert_eq!(w.tcp_refused, 2, "{:?}", sessions(&ev));
        let t = &f.stats().transport;
        assert_eq!(t.attempts.get(&Transport::Tcp), Some(&2));
        // The three others went to uTP straight away, from the cache: each
        // plaintext first, which the seeder closes (it lacks the torrent),
        // then MSE only while the peer has not refused MSE over uTP yet (two
        // jobs run side by side and both retry; the third starts after the
        // refusal and does not): 3 + 2.
        assert_eq!(
            t.chosen.get(&(Transport::Utp, TransportChoice::Remembered)),
            Some(&5),
            "{:?}",
            t.chosen
        );
        assert_eq!(f.jobs(), 0);
    }

    #[test]
    fn without_utp_the_fetcher_only_tries_tcp() {
        let mut w = UtpSwarm::new(3, Duration::from_millis(20), 0);
        let ih = w.set_seeder(seeder(), info(1 << 20, 100 << 20).into());
        let mut f = fetcher(false);
        f.note_udp_contact(Timestamp::ZERO, seeder(), SocketId(0));
        let mut ev = Vec::new();
        f.fetch(Timestamp::ZERO, ih, &[seeder()]).unwrap();
        w.run_into(&mut f, 100_000, &mut ev);
        assert_eq!(fetched(&ev).len(), 0);
        assert_eq!(w.tcp_refused, 1);
        assert_eq!(w.ours().stats().connects, 0);
        assert!(ev.iter().any(|e| matches!(e, Event::MetadataFailed(_))));
    }

    #[test]
    fn a_multi_piece_info_dict_arrives_over_a_lossy_link_and_the_run_is_deterministic() {
        let run = |seed: u64| {
            let mut w = UtpSwarm::new(seed, Duration::from_millis(30), 20_000);
            let raw = info(16 << 10, 80 << 20);
            assert!(raw.len() > 32 * 1024, "{}", raw.len());
            let ih = w.set_seeder(seeder(), raw.clone().into());
            let mut f = fetcher(true);
            f.note_udp_contact(Timestamp::ZERO, seeder(), SocketId(0));
            let mut ev = Vec::new();
            f.fetch(Timestamp::ZERO, ih, &[seeder()]).unwrap();
            w.run_into(&mut f, 1_000_000, &mut ev);
            let got = fetched(&ev);
            assert_eq!(got.len(), 1, "{ev:?}");
            assert_eq!(&got[0].raw[..], &raw[..]);
            assert!(w.lost > 0);
            (w.now(), w.lost, w.carried, w.ours().stats())
        };
        assert_eq!(run(7), run(7));
    }

    #[test]
    fn a_utp_connect_that_finds_the_half_open_cap_full_waits_for_a_slot() {
        // One half-open slot, taken by a SYN to a peer that never answers.
        let cfg = UtpConfig {
            max_half_open: 1,
            ..UtpConfig::default()
        };
        let mut w = UtpSwarm::with_our_config(6, Duration::from_millis(20), 0, cfg);
        let ih = w.set_seeder(seeder(), info(1 << 20, 100 << 20).into());
        let silent: SocketAddr = "10.0.0.9:6881".parse().unwrap();
        let mut f = fetcher(true);
        f.note_udp_contact(Timestamp::ZERO, silent, SocketId(0));
        f.note_udp_contact(Timestamp::ZERO, seeder(), SocketId(0));
        let mut ev = Vec::new();
        f.fetch(Timestamp::ZERO, InfoHash([9; 20]), &[silent])
            .unwrap();
        f.fetch(Timestamp::ZERO, ih, &[seeder()]).unwrap();
        w.run_into(&mut f, 100_000, &mut ev);
        assert_eq!(fetched(&ev).len(), 1, "{ev:?}");
        let t = &f.stats().transport;
        assert_eq!(t.utp_waited, 1);
        assert_eq!(t.utp_unavailable, 0);
        // Nothing failed as ours, and no connect paused for a back-off.
        assert!(
            !sessions(&ev)
                .iter()
                .any(|s| s.1 == SessionOutcome::Failed(FailReason::LocalError)),
            "{ev:?}"
        );
        assert_eq!(f.stats().local_backoffs, 0);
        // The seeder's session started when its SYN went out: after the
        // silent peer's connect timeout freed the slot.
        let ok = ev
            .iter()
            .find_map(|e| match e {
                Event::PeerSession(r) if r.peer == seeder() => Some(r.started_at),
                _ => None,
            })
            .unwrap();
        assert!(ok >= Timestamp::ZERO.add(FetchConfig::default().connect_timeout));
        assert!(w.ours().is_empty(), "{:?}", w.ours().stats());
    }

    #[test]
    fn waiting_utp_connects_are_bounded_and_leave_with_their_job() {
        let mut utp = Utp::new(
            UtpConfig {
                max_half_open: 0,
                ..UtpConfig::default()
            },
            Rng::new(1),
        );
        let mut link = UtpLink::new();
        let mut f = fetcher(true);
        let n = MAX_WAITING + 44;
        for i in 0..n {
            let peer = SocketAddr::from(([10, 1, (i / 200) as u8, (i % 200) as u8 + 1], 6881));
            f.note_udp_contact(Timestamp::ZERO, peer, SocketId(0));
            let mut b = [0u8; 20];
            b[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
            f.fetch(Timestamp::ZERO, InfoHash(b), &[peer]).unwrap();
        }
        let mut route_all = |f: &mut Fetcher, link: &mut UtpLink, now| {
            let mut left = 0;
            while let Some(o) = f.poll_outcome() {
                if let Some(FetchOutput::Output(Output::Close { .. } | Output::Connect { .. })) =
                    link.route(now, o, &mut utp, f)
                {
                    left += 1;
                }
            }
            left
        };
        assert_eq!(route_all(&mut f, &mut link, Timestamp::ZERO), 0);
        assert_eq!(link.waiting(), MAX_WAITING);
        let t = &f.stats().transport;
        assert_eq!(t.utp_waited, MAX_WAITING as u64);
        assert_eq!(t.utp_unavailable, 44);
        // No connect timeout runs while waiting; the jobs' deadlines do, and
        // their closes empty the queue (none reaches the TCP driver).
        // (The 44 refused ones come back after the local back-off and are
        // refused again: the queue stays full.)
        let mid = Timestamp::ZERO.add(FetchConfig::default().infohash_timeout / 2);
        f.handle_timeout(mid);
        assert_eq!(route_all(&mut f, &mut link, mid), 0);
        assert_eq!(link.waiting(), MAX_WAITING);
        assert_eq!(f.stats().transport.utp_waited, MAX_WAITING as u64);
        assert_eq!(f.stats().transport.utp_unavailable, 88);
        let end = Timestamp::ZERO.add(FetchConfig::default().infohash_timeout);
        f.handle_timeout(end);
        assert_eq!(route_all(&mut f, &mut link, end), 0);
        assert_eq!(link.waiting(), 0);
        assert!(link.is_empty());
        assert_eq!(f.jobs(), 0);
    }
}
