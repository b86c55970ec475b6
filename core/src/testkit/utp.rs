//! A fetcher fetching over uTP from fake seeders behind their own uTP socket
//! manager, through a simulated datagram link (latency, seeded loss): the
//! sans-IO pair of the uTP transport, for tests and benchmarks.
//!
//! ```text
//! Fetcher <-> UtpLink <-> Utp (ours) <-- datagrams, latency, loss --> Utp (theirs) <-> FakeSeeder
//! ```
//!
//! The seeders accept only uTP: a TCP connect from the fetcher is refused at
//! once (counted in [`UtpSwarm::tcp_refused`]), so a fetcher that tries TCP
//! first falls back to uTP.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use crate::fetch::{AfterFailure, FetchOutput, Fetcher, UtpLink};
use crate::id::InfoHash;
use crate::rng::Rng;
use crate::time::Timestamp;
use crate::utp::{StreamId, Utp, UtpConfig, UtpEvent};
use crate::{CloseReason, Event, Output, SocketId};

use super::{Behavior, FakeSeeder, SeederEncryption};

/// Which way a datagram goes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Dir {
    ToSeeders,
    ToFetcher,
}

/// The world: see the module docs.
pub struct UtpSwarm {
    now: Timestamp,
    ours: Utp,
    link: UtpLink,
    theirs: Utp,
    /// Our address as the seeders see it.
    our_addr: SocketAddr,
    seeder: Option<(SocketAddr, Bytes, InfoHash)>,
    /// Which handshakes the seeder accepts.
    encryption: SeederEncryption,
    /// How the seeder behaves.
    behavior: Behavior,
    /// The seeder side's streams: the seeder and its bytes not yet written.
    streams: BTreeMap<StreamId, (FakeSeeder, Vec<u8>)>,
    wire: BTreeMap<(Timestamp, u64), (Dir, SocketAddr, Bytes)>,
    seq: u64,
    latency: Duration,
    /// Loss per million datagrams.
    loss_ppm: u32,
    rng: Rng,
    buf: Vec<u8>,
    /// TCP connects the fetcher asked for (all refused, or accepted and
    /// closed at once with [`UtpSwarm::tcp_accept_then_close`]).
    pub tcp_refused: u64,
    /// Whether a TCP connect is accepted and closed before any byte (as
    /// libtorrent with incoming TCP off does) rather than refused.
    pub tcp_accept_then_close: bool,
    /// Datagrams the link dropped.
    pub lost: u64,
    /// Datagrams the link carried.
    pub carried: u64,
    /// The seeder sits behind a NAT (see [`UtpSwarm::put_behind_a_nat`]):
    /// its mapping to us is open until then.
    nat_open_until: Option<Timestamp>,
}

/// How long a NAT keeps a UDP mapping after the seeder's last datagram.
const NAT_MAPPING: Duration = Duration::from_secs(60);

impl UtpSwarm {
    /// An empty world at time zero: one-way `latency`, `loss_ppm` datagrams per
    /// million lost (from `seed`).
    pub fn new(seed: u64, latency: Duration, loss_ppm: u32) -> Self {
        Self::with_our_config(seed, latency, loss_ppm, UtpConfig::default())
    }

    /// [`UtpSwarm::new`] with our uTP manager configured by `ours`.
    pub fn with_our_config(seed: u64, latency: Duration, loss_ppm: u32, ours: UtpConfig) -> Self {
        let rng = Rng::new(seed);
        let theirs_cfg = UtpConfig {
            accept_incoming: true,
            max_half_open_per_ip: 64,
            ..UtpConfig::default()
        };
        UtpSwarm {
            now: Timestamp::ZERO,
            ours: Utp::new(ours, rng.child(1)),
            link: UtpLink::new(),
            theirs: Utp::new(theirs_cfg, rng.child(2)),
            our_addr: SocketAddr::from(([10, 255, 0, 1], 6881)),
            seeder: None,
            encryption: SeederEncryption::default(),
            behavior: Behavior::Honest,
            streams: BTreeMap::new(),
            wire: BTreeMap::new(),
            seq: 0,
            latency,
            loss_ppm,
            rng: rng.child(3),
            buf: Vec::new(),
            tcp_refused: 0,
            tcp_accept_then_close: false,
            lost: 0,
            carried: 0,
            nat_open_until: None,
        }
    }

    /// Puts the seeder behind an address-and-port-restricted NAT with no
    /// mapping to us: our datagrams reach it only within a minute of its own
    /// last datagram to us ([`UtpSwarm::seeder_sends_us_a_datagram`], or any
    /// uTP packet it sends).
    pub fn put_behind_a_nat(&mut self) {
        self.nat_open_until = Some(Timestamp::ZERO);
    }

    /// The seeder sends us a datagram (a DHT query, say): its NAT maps it to
    /// us for a minute. The caller tells the fetcher
    /// ([`Fetcher::note_udp_contact`]).
    pub fn seeder_sends_us_a_datagram(&mut self) {
        if let Some(t) = &mut self.nat_open_until {
            *t = (*t).max(self.now.add(NAT_MAPPING));
        }
    }

    /// The seeder's address, if there is one.
    pub fn seeder_addr(&self) -> Option<SocketAddr> {
        self.seeder.as_ref().map(|s| s.0)
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Our uTP manager (its counters).
    pub fn ours(&self) -> &Utp {
        &self.ours
    }

    /// Puts an honest seeder of `info` at `addr` (one per world: the seeder
    /// side is one socket); returns its infohash.
    pub fn set_seeder(&mut self, addr: SocketAddr, info: Bytes) -> InfoHash {
        let ih = crate::metadata::sha1_info_hash(&info);
        self.seeder = Some((addr, info, ih));
        ih
    }

    /// Sets which handshakes the seeder accepts (default plaintext only), for
    /// the streams it accepts from now on.
    pub fn set_encryption(&mut self, e: SeederEncryption) {
        self.encryption = e;
    }

    /// Sets how the seeder behaves (default honest), for the streams it
    /// accepts from now on: the hostile behaviours of the TCP tests, over uTP.
    pub fn set_behavior(&mut self, b: Behavior) {
        self.behavior = b;
    }

    /// Drives `f` (made with [`Fetcher::with_utp`]) until nothing is left to
    /// do or `max_steps` rounds; appends its events to `events`.
    pub fn run_into(&mut self, f: &mut Fetcher, max_steps: usize, events: &mut Vec<Event>) {
        for _ in 0..max_steps {
            let mut busy = false;
            while let Some(o) = f.poll_outcome() {
                busy = true;
                match self.link.route(self.now, o, &mut self.ours, f) {
                    None => {}
                    Some(FetchOutput::Output(Output::Connect { conn, .. })) => {
                        self.tcp_refused += 1;
                        if self.tcp_accept_then_close {
                            f.handle_connected(self.now, conn);
                            f.handle_closed(self.now, conn, CloseReason::Eof);
                        } else {
                            f.handle_closed(self.now, conn, CloseReason::Refused);
                        }
                    }
                    Some(FetchOutput::Output(Output::Event(e))) => events.push(e),
                    Some(FetchOutput::Failed(x)) => events.push(Event::MetadataFailed(Box::new(
                        x.into_event(AfterFailure::NotManaged),
                    ))),
                    Some(_) => {}
                }
            }
            while let Some(ev) = self.ours.poll_event() {
                busy = true;
                self.link.on_event(self.now, ev, &mut self.ours, f);
            }
            while let Some(t) = self.ours.poll_transmit() {
                busy = true;
                self.send(Dir::ToSeeders, t.to, t.payload);
            }
            while let Some(ev) = self.theirs.poll_event() {
                busy = true;
                self.on_their_event(ev);
            }
            self.flush_seeders();
            while let Some(t) = self.theirs.poll_transmit() {
                busy = true;
                self.send(Dir::ToFetcher, t.to, t.payload);
            }
            if busy {
                continue;
            }
            let next = [
                self.wire.keys().next().map(|k| k.0),
                self.ours.deadline(),
                self.theirs.deadline(),
                f.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(t) = next else {
                return;
            };
            self.now = self.now.max(t);
            let now = self.now;
            while let Some(entry) = self.wire.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let (dir, addr, bytes) = entry.remove();
                match dir {
                    // `addr` is the seeder's: it sees us as `our_addr`.
                    Dir::ToSeeders => {
                        self.theirs
                            .handle_datagram(now, SocketId(0), self.our_addr, &bytes)
                    }
                    Dir::ToFetcher => self.ours.handle_datagram(now, SocketId(0), addr, &bytes),
                }
            }
            if self.ours.deadline().is_some_and(|d| d <= now) {
                self.ours.handle_timeout(now);
            }
            if self.theirs.deadline().is_some_and(|d| d <= now) {
                self.theirs.handle_timeout(now);
            }
            if f.poll_timeout().is_some_and(|d| d <= now) {
                f.handle_timeout(now);
            }
        }
    }

    /// Puts a datagram on the link. `addr` is the destination going out; a
    /// reply comes from the seeder's address.
    fn send(&mut self, dir: Dir, addr: SocketAddr, payload: Bytes) {
        let Some(seeder) = self.seeder.as_ref().map(|s| s.0) else {
            self.lost += 1;
            return;
        };
        if dir == Dir::ToSeeders && addr != seeder {
            // Nobody there: the datagram is lost.
            self.lost += 1;
            return;
        }
        let addr = seeder;
        match (dir, &mut self.nat_open_until) {
            (Dir::ToSeeders, Some(t)) if self.now >= *t => {
                // No mapping: the NAT drops it.
                self.lost += 1;
                return;
            }
            (Dir::ToFetcher, Some(t)) => *t = (*t).max(self.now.add(NAT_MAPPING)),
            _ => {}
        }
        if self.loss_ppm > 0 && (self.rng.next_u32() % 1_000_000) < self.loss_ppm {
            self.lost += 1;
            return;
        }
        self.carried += 1;
        self.seq += 1;
        self.wire
            .insert((self.now.add(self.latency), self.seq), (dir, addr, payload));
    }

    /// Writes what the seeders have waiting, as far as their streams take it.
    fn flush_seeders(&mut self) {
        let now = self.now;
        for (stream, (s, backlog)) in self.streams.iter_mut() {
            let more = s.take_output();
            backlog.extend_from_slice(&more);
            if !backlog.is_empty() {
                let n = self.theirs.write(now, *stream, backlog).unwrap_or(0);
                backlog.drain(..n.min(backlog.len()));
            }
            if backlog.is_empty() && s.wants_close() {
                let _ = self.theirs.close(now, *stream);
            }
        }
    }

    fn on_their_event(&mut self, ev: UtpEvent) {
        let now = self.now;
        match ev {
            UtpEvent::Incoming { stream, .. } => {
                let Some((_, info, ih)) = self.seeder.clone() else {
                    let _ = self.theirs.abort(now, stream);
                    return;
                };
                let mut s = FakeSeeder::with_info_hash(info, ih, self.behavior.clone())
                    .with_encryption(self.encryption);
                s.on_connected();
                self.streams.insert(stream, (s, Vec::new()));
            }
            UtpEvent::Readable(stream) => {
                self.buf.clear();
                let Ok((_, eof)) = self.theirs.read(now, stream, &mut self.buf, usize::MAX) else {
                    return;
                };
                let Some((s, _)) = self.streams.get_mut(&stream) else {
                    return;
                };
                if !self.buf.is_empty() {
                    s.on_data(&self.buf);
                }
                if eof {
                    let _ = self.theirs.close(now, stream);
                }
            }
            UtpEvent::Closed { stream, .. } => {
                self.streams.remove(&stream);
            }
            UtpEvent::Connected(_) => {}
            // The fake seeder never connects out: nothing can cross.
            UtpEvent::Crossed { stream, .. } => {
                let _ = self.theirs.abort(now, stream);
            }
        }
    }
}
