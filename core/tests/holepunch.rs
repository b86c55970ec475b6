//! BEP 55 holepunch, initiator side, against scripted peers: a relay that
//! offers `ut_holepunch` (and no `ut_metadata`), a target that no direct attempt
//! reaches (TCP refused, uTP timed out), then the relay's `connect` and a uTP
//! attempt to the target that the fake seeder serves. Also the relay's `error`
//! answers, unsolicited `connect`s, and a `rendezvous` asking us to relay.
#![cfg(feature = "testkit")]

use std::net::SocketAddr;

use magnetar_core::fetch::{FetchConfig, FetchOutput, Fetcher, Transport, TransportChoice};
use magnetar_core::testkit::{build_info, Behavior, FakeSeeder, InfoSpec};
use magnetar_core::wire::{self, HolepunchKind, HolepunchMsg};
use magnetar_core::{CloseReason, ConnId, Event, InfoHash, Output, Rng, Timestamp};

const RELAY_HP_ID: u8 = 7;

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 6881))
}

fn fetcher() -> Fetcher {
    Fetcher::new(FetchConfig::default(), Rng::new(55))
        .with_allow_private(true)
        .with_utp(true)
}

/// The relay's side of the wire: its BT handshake and an extension handshake
/// with only `ut_holepunch`.
fn relay_hello(ih: &InfoHash) -> Vec<u8> {
    let mut out = Vec::new();
    let mut reserved = [0u8; 8];
    reserved[wire::EXT_BYTE] |= wire::EXT_BIT;
    wire::encode_handshake(&mut out, reserved, ih, b"-LT2110-relayrelay01");
    let hs = format!("d1:md12:ut_holepunchi{RELAY_HP_ID}ee1:v8:relay/1.e");
    wire::encode_extended(&mut out, wire::EXT_HANDSHAKE, hs.as_bytes());
    out
}

/// A framed `ut_holepunch` message to us (our id for it).
fn to_us(kind: HolepunchKind, a: SocketAddr, err: u32) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode_holepunch(
        &mut out,
        wire::OUR_UT_HOLEPUNCH,
        &HolepunchMsg { kind, addr: a, err },
    );
    out
}

/// The `ut_holepunch` messages in a byte stream we sent (after the 68-byte
/// handshake), addressed to the relay's id.
fn holepunch_sent(bytes: &[u8]) -> Vec<HolepunchMsg> {
    let mut rest = bytes.get(68..).unwrap_or_default();
    let mut out = Vec::new();
    while let Ok(Some((f, used))) = wire::split_frame(rest, wire::MAX_FRAME) {
        if let wire::Frame::Message { id, payload } = f {
            if id == wire::MSG_EXTENDED && payload.first() == Some(&RELAY_HP_ID) {
                out.push(wire::parse_holepunch(&payload[1..]).expect("our own message decodes"));
            }
        }
        rest = &rest[used..];
    }
    out
}

/// What came out of the fetcher: connects (TCP or uTP, with the peer), bytes
/// sent per connection, events.
#[derive(Default)]
struct Out {
    tcp: Vec<(ConnId, SocketAddr)>,
    utp: Vec<(ConnId, SocketAddr)>,
    sent: Vec<(ConnId, Vec<u8>)>,
    events: Vec<Event>,
}

fn drain(f: &mut Fetcher) -> Out {
    let mut o = Out::default();
    while let Some(x) = f.poll_outcome() {
        match x {
            FetchOutput::UtpConnect { conn, to, .. } => o.utp.push((conn, to)),
            FetchOutput::Output(Output::Connect { conn, to }) => o.tcp.push((conn, to)),
            FetchOutput::Output(Output::Send { conn, bytes }) => {
                o.sent.push((conn, bytes.to_vec()))
            }
            FetchOutput::Output(Output::Event(e)) => o.events.push(e),
            FetchOutput::Failed(fl) => o.events.push(Event::MetadataFailed(Box::new(
                fl.into_event(magnetar_core::fetch::AfterFailure::NotManaged),
            ))),
            _ => {}
        }
    }
    o
}

fn sent_to(o: &Out, c: ConnId) -> Vec<u8> {
    o.sent
        .iter()
        .filter(|(x, _)| *x == c)
        .flat_map(|(_, b)| b.clone())
        .collect()
}

/// Up to the rendezvous: the relay connected and said hello; the target
/// refused TCP and its uTP fallback timed out. Returns the fetcher, the
/// relay's connection and the bytes we sent it.
fn to_rendezvous(ih: InfoHash) -> (Fetcher, ConnId, Vec<u8>) {
    to_rendezvous_with(ih, fetcher(), addr(1), addr(2))
}

/// [`to_rendezvous`] with the given fetcher, relay and target.
fn to_rendezvous_with(
    ih: InfoHash,
    mut f: Fetcher,
    relay: SocketAddr,
    target: SocketAddr,
) -> (Fetcher, ConnId, Vec<u8>) {
    let t = Timestamp::from_millis;
    f.fetch(t(0), ih, &[relay, target]).unwrap();
    let o = drain(&mut f);
    assert_eq!(
        o.tcp.len(),
        2,
        "TCP first for peers that never talked to us"
    );
    let rc = o.tcp.iter().find(|(_, p)| *p == relay).unwrap().0;
    let tc = o.tcp.iter().find(|(_, p)| *p == target).unwrap().0;
    f.handle_connected(t(1), rc);
    let mut to_relay = sent_to(&drain(&mut f), rc);
    f.handle_data(t(2), rc, &relay_hello(&ih));
    to_relay.extend(sent_to(&drain(&mut f), rc));
    assert!(holepunch_sent(&to_relay).is_empty(), "nothing to ask yet");
    f.handle_closed(t(3), tc, CloseReason::Refused);
    let o = drain(&mut f);
    assert_eq!(o.utp.len(), 1, "the refused peer is tried over uTP");
    let (uc, up) = o.utp[0];
    assert_eq!(up, target);
    // Its NAT drops our SYN: the connect times out.
    f.handle_closed(t(3003), uc, CloseReason::ConnectTimedOut);
    let o = drain(&mut f);
    assert!(
        o.tcp.is_empty() && o.utp.is_empty(),
        "no third direct attempt"
    );
    to_relay.extend(sent_to(&o, rc));
    (f, rc, to_relay)
}

#[test]
fn a_relay_introduces_us_and_the_target_serves_over_utp() {
    let info = build_info(&InfoSpec::single("punched.bin", 1 << 20));
    let ih = magnetar_core::metadata::sha1_info_hash(&info);
    let (mut f, rc, to_relay) = to_rendezvous(ih);
    let t = Timestamp::from_millis;
    let asked = holepunch_sent(&to_relay);
    assert_eq!(
        asked,
        vec![HolepunchMsg {
            kind: HolepunchKind::Rendezvous,
            addr: addr(2),
            err: 0
        }],
        "one rendezvous for the target, to the relay"
    );
    assert_eq!(f.stats().holepunch.rendezvous_sent, 1);
    // The relay says connect: uTP to the target at once.
    f.handle_data(t(3010), rc, &to_us(HolepunchKind::Connect, addr(2), 0));
    let o = drain(&mut f);
    assert!(o.tcp.is_empty());
    assert_eq!(o.utp.len(), 1, "one holepunch attempt");
    let (hc, hp) = o.utp[0];
    assert_eq!(hp, addr(2));
    assert_eq!(f.stats().holepunch.connects, 1);
    assert_eq!(f.stats().holepunch.attempts, 1);
    assert_eq!(
        f.stats()
            .transport
            .chosen
            .get(&(Transport::Utp, TransportChoice::Holepunch)),
        Some(&1)
    );
    // The punched stream connects; the target is an honest seeder.
    let mut seeder = FakeSeeder::with_info_hash(info.clone().into(), ih, Behavior::Honest);
    seeder.on_connected();
    f.handle_connected(t(3050), hc);
    let mut events = Vec::new();
    for step in 0..200u64 {
        let o = drain(&mut f);
        events.extend(o.events);
        let mut quiet = true;
        for (c, b) in &o.sent {
            if *c == hc {
                seeder.on_data(b);
            }
        }
        let back = seeder.take_output();
        if !back.is_empty() {
            quiet = false;
            f.handle_data(t(3060 + step), hc, &back);
        }
        if quiet && o.sent.is_empty() {
            break;
        }
    }
    events.extend(drain(&mut f).events);
    let got: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::MetadataFetched(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), 1, "{events:?}");
    assert_eq!(got[0].peer, addr(2));
    assert_eq!(got[0].raw[..], info[..]);
    let hs = &f.stats().holepunch;
    assert_eq!((hs.connected, hs.ok, hs.failed), (1, 1, 0));
    assert_eq!(hs.relay_sessions, 1);
    assert_eq!(hs.unanswered, 0);
    assert!(!f.is_fetching(&ih));
}

#[test]
fn every_error_code_is_counted_and_ends_the_try() {
    use magnetar_core::wire::HolepunchErrorCode as E;
    for code in [
        E::NoSuchPeer,
        E::NotConnected,
        E::NoSupport,
        E::NoSelf,
        E::Other(77),
    ] {
        let ih = InfoHash([0x42; 20]);
        let (mut f, rc, _) = to_rendezvous(ih);
        let t = Timestamp::from_millis;
        f.handle_data(
            t(3010),
            rc,
            &to_us(HolepunchKind::Error, addr(2), code.code()),
        );
        let o = drain(&mut f);
        assert!(o.utp.is_empty() && o.tcp.is_empty(), "{code:?}: no attempt");
        let hs = &f.stats().holepunch;
        assert_eq!(hs.errors.get(code.name()), Some(&1), "{code:?}");
        assert_eq!(hs.attempts, 0);
        // Nothing left to ask the relay: it is let go and the fetch fails.
        assert!(!f.is_fetching(&ih), "{code:?}");
        let failed = o
            .events
            .iter()
            .any(|e| matches!(e, Event::MetadataFailed(m) if m.info_hash == ih));
        assert!(failed, "{code:?}: {:?}", o.events);
    }
}

#[test]
fn unsolicited_connects_and_errors_are_ignored_and_counted() {
    let ih = InfoHash([0x43; 20]);
    let (mut f, rc, _) = to_rendezvous(ih);
    let t = Timestamp::from_millis;
    // A connect and an error for an address we never asked about.
    let mut b = to_us(HolepunchKind::Connect, addr(9), 0);
    b.extend(to_us(HolepunchKind::Error, addr(9), 2));
    f.handle_data(t(3010), rc, &b);
    let o = drain(&mut f);
    assert!(o.utp.is_empty() && o.tcp.is_empty());
    let hs = &f.stats().holepunch;
    assert_eq!((hs.connects_unsolicited, hs.errors_unsolicited), (1, 1));
    assert_eq!(hs.connects, 0);
    assert!(
        f.is_fetching(&ih),
        "the rendezvous for the target still waits"
    );
}

/// Issue 18 item 1, the holepunch source: a relay's `connect` cannot make us open a
/// connection to a private, loopback or link-local address (without
/// `--allow-private`), whatever it names; only the target we asked about is dialled.
#[test]
fn a_relay_cannot_point_us_at_private_addresses() {
    let ih = InfoHash([0x45; 20]);
    let public = |i: u8| SocketAddr::from(([1, 2, 3, i], 6881));
    let f = Fetcher::new(FetchConfig::default(), Rng::new(56)).with_utp(true);
    let (mut f, rc, _) = to_rendezvous_with(ih, f, public(1), public(2));
    let t = Timestamp::from_millis;
    let mut b = Vec::new();
    for a in [
        SocketAddr::from(([127, 0, 0, 1], 6881)),
        SocketAddr::from(([10, 1, 2, 3], 6881)),
        SocketAddr::from(([192, 168, 1, 1], 6881)),
        SocketAddr::from(([169, 254, 0, 1], 6881)),
        "[::1]:6881".parse().unwrap(),
    ] {
        b.extend(to_us(HolepunchKind::Connect, a, 0));
    }
    f.handle_data(t(3010), rc, &b);
    let o = drain(&mut f);
    assert!(
        o.utp.is_empty() && o.tcp.is_empty(),
        "nothing dialled: {:?} {:?}",
        o.utp,
        o.tcp
    );
    assert_eq!(f.stats().holepunch.connects_unsolicited, 5);
    // The target we asked about is still dialled on its own `connect`.
    f.handle_data(t(3020), rc, &to_us(HolepunchKind::Connect, public(2), 0));
    let o = drain(&mut f);
    assert_eq!(
        o.utp.iter().map(|x| x.1).collect::<Vec<_>>(),
        vec![public(2)]
    );
}

#[test]
fn we_relay_for_nobody_and_say_so_a_bounded_number_of_times() {
    let ih = InfoHash([0x44; 20]);
    let (mut f, rc, _) = to_rendezvous(ih);
    let t = Timestamp::from_millis;
    let mut b = Vec::new();
    for i in 0..10 {
        b.extend(to_us(HolepunchKind::Rendezvous, addr(20 + i), 0));
    }
    // Garbage in a ut_holepunch message: counted, the session goes on.
    wire::encode_extended(&mut b, wire::OUR_UT_HOLEPUNCH, &[9, 9, 9]);
    f.handle_data(t(3010), rc, &b);
    let o = drain(&mut f);
    // Our answers carry the relay's id and a handshake-less stream, so parse
    // them without the 68-byte prefix.
    let mut prefixed = vec![0u8; 68];
    prefixed.extend(sent_to(&o, rc));
    let answers = holepunch_sent(&prefixed);
    assert_eq!(
        answers.len(),
        magnetar_core::session::MAX_RELAY_REFUSALS_PER_SESSION as usize
    );
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a.kind, HolepunchKind::Error);
        assert_eq!(a.addr, addr(20 + i as u8));
        assert_eq!(a.err, 2, "NotConnected");
    }
    assert!(f.is_fetching(&ih));
    // The counts land when the session ends.
    f.handle_closed(t(3020), rc, CloseReason::Eof);
    let hs = &f.stats().holepunch;
    assert_eq!(hs.relay_requests, 10);
    assert_eq!(hs.malformed, 1);
    assert_eq!(hs.unanswered, 1, "the rendezvous the relay took with it");
}

#[test]
fn without_a_relay_the_peer_is_counted_and_the_fetch_ends() {
    let ih = InfoHash([0x45; 20]);
    let mut f = fetcher();
    let t = Timestamp::from_millis;
    f.fetch(t(0), ih, &[addr(2)]).unwrap();
    let o = drain(&mut f);
    f.handle_closed(t(1), o.tcp[0].0, CloseReason::Refused);
    let o = drain(&mut f);
    f.handle_closed(t(3001), o.utp[0].0, CloseReason::ConnectTimedOut);
    let o = drain(&mut f);
    assert!(o.utp.is_empty() && o.tcp.is_empty());
    assert!(!f.is_fetching(&ih));
    assert_eq!(f.stats().holepunch.no_relay, 1);
    assert_eq!(f.stats().holepunch.rendezvous_sent, 0);
}

/// The simultaneous open of a holepunch in the uTP manager: our SYN is lost
/// (the target's NAT had no mapping yet), the target's SYN reaches us while
/// ours is unanswered, and its connection is accepted as a stream of its own
/// next to our attempt (`UtpEvent::Crossed`): bytes flow both ways on it, and
/// our attempt goes on.
#[test]
fn a_crossed_syn_is_accepted_next_to_our_attempt() {
    use magnetar_core::utp::{Utp, UtpConfig, UtpEvent, UtpFault};
    use magnetar_core::SocketId;
    let (a_addr, b_addr) = (addr(1), addr(2));
    let mut a = Utp::new(UtpConfig::default(), Rng::new(1));
    // The target refuses incoming connections too: only its own attempt counts.
    let mut b = Utp::new(UtpConfig::default(), Rng::new(2));
    let t = Timestamp::from_millis;
    let sa = a.connect(t(0), SocketId(0), b_addr).unwrap();
    // Our SYN is lost.
    while a.poll_transmit().is_some() {}
    let sb = b.connect(t(1), SocketId(0), a_addr).unwrap();
    let syn = b.poll_transmit().expect("the target's SYN");
    a.handle_datagram(t(2), SocketId(0), b_addr, &syn.payload);
    assert_eq!(a.stats().faults.get(&UtpFault::SynCrossed), Some(&1));
    let crossed = match a.poll_event() {
        Some(UtpEvent::Crossed {
            attempt: Some(x),
            stream,
            from,
            ..
        }) if x == sa && from == b_addr => stream,
        e => panic!("{e:?}"),
    };
    assert_ne!(crossed, sa);
    // Ferry datagrams both ways until quiet.
    let mut got_a = Vec::new();
    let mut events_a = Vec::new();
    let mut connected_b = false;
    for now in 3..53 {
        let mut moved = false;
        while let Some(d) = a.poll_transmit() {
            moved = true;
            b.handle_datagram(t(now), SocketId(0), a_addr, &d.payload);
        }
        while let Some(d) = b.poll_transmit() {
            moved = true;
            a.handle_datagram(t(now), SocketId(0), b_addr, &d.payload);
        }
        while let Some(e) = b.poll_event() {
            if e == UtpEvent::Connected(sb) && !connected_b {
                connected_b = true;
                b.write(t(now), sb, b"hello from the target").unwrap();
            }
        }
        while let Some(e) = a.poll_event() {
            if e == UtpEvent::Readable(crossed) {
                a.read(t(now), crossed, &mut got_a, 1 << 16).unwrap();
            }
            events_a.push(e);
        }
        if !moved && connected_b && !got_a.is_empty() {
            break;
        }
    }
    assert!(connected_b, "the target's connection completed");
    assert!(
        events_a.contains(&UtpEvent::Connected(crossed)),
        "{events_a:?}"
    );
    assert_eq!(got_a, b"hello from the target");
    // Our own attempt is still there (half-open: its SYNs go on).
    assert!(a.conn(sa).is_some_and(|c| c.is_half_open()));
}

/// The two ends of a BEP 55 holepunch dial each other at once, through two
/// NATs, and the target is libtorrent: see [`race`].
mod race {
    use std::collections::{BTreeMap, VecDeque};
    use std::net::SocketAddr;
    use std::time::Duration;

    use bytes::Bytes;
    use magnetar_core::fetch::{FetchOutput, Fetcher, UtpLink};
    use magnetar_core::testkit::{build_info, Behavior, FakeSeeder, InfoSpec, SeederEncryption};
    use magnetar_core::utp::{StreamId, Utp, UtpConfig, UtpEvent};
    use magnetar_core::wire;
    use magnetar_core::{Event, InfoHash, Output, Rng, SocketId, Timestamp};

    use super::{addr, drain, to_rendezvous, to_us, HolepunchKind};

    /// Which of two connections with the same peer the target keeps when the
    /// second one attaches (libtorrent: by port, by peer id, or at random).
    #[derive(Copy, Clone, Debug, PartialEq, Eq)]
    pub enum Keep {
        Outgoing,
        Incoming,
    }

    struct Side {
        seeder: FakeSeeder,
        outgoing: bool,
        /// Bytes of the seeder's output not to send (its handshake, which an
        /// outgoing side sent first, as libtorrent does).
        skip: usize,
        got: usize,
        attached: bool,
        backlog: Vec<u8>,
    }

    /// The target: a uTP socket that accepts, dials us when told, serves the
    /// info dict on every stream, and drops one of two connections with us.
    pub struct World {
        now: Timestamp,
        ours: Utp,
        link: UtpLink,
        theirs: Utp,
        sides: BTreeMap<StreamId, Side>,
        /// (arrival, seq) -> (to the target?, datagram, sent at)
        wire: BTreeMap<(Timestamp, u64), (bool, Bytes, Timestamp)>,
        seq: u64,
        latency: Duration,
        /// When our NAT got a mapping for the target (we sent to it), and the
        /// target's NAT one for us.
        ours_open: Option<Timestamp>,
        theirs_open: Option<Timestamp>,
        /// The target's SYNs sent before this never reach us (our NAT keeps
        /// dropping the first attempt's retransmissions, as conntrack did in
        /// the failed CI run).
        syn_blackhole_until: Timestamp,
        /// When the target dials us (the relay's connect, then its own
        /// reconnects).
        dials: VecDeque<Timestamp>,
        keep: Keep,
        info: Bytes,
        ih: InfoHash,
        hello: Vec<u8>,
        pub dropped_duplicates: u32,
        pub events: Vec<Event>,
    }

    pub fn us() -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 100], 6881))
    }

    impl World {
        pub fn new(keep: Keep, dials: &[u64], syn_blackhole_until: u64) -> (World, Fetcher) {
            let info: Bytes = build_info(&InfoSpec::single("punched.bin", 1 << 20)).into();
            let ih = magnetar_core::metadata::sha1_info_hash(&info);
            let (mut f, rc, _) = to_rendezvous(ih);
            let t = Timestamp::from_millis;
            f.handle_data(t(3010), rc, &to_us(HolepunchKind::Connect, addr(2), 0));
            // The target's handshake as its seeder writes it.
            let mut probe = FakeSeeder::with_info_hash(info.clone(), ih, Behavior::Honest);
            probe.on_connected();
            let mut hs = Vec::new();
            let mut reserved = [0u8; 8];
            reserved[wire::EXT_BYTE] |= wire::EXT_BIT;
            wire::encode_handshake(&mut hs, reserved, &ih, b"-XX0000-probeprobe00");
            probe.on_data(&hs);
            let hello = probe.take_output()[..68].to_vec();
            let theirs_cfg = UtpConfig {
                accept_incoming: true,
                ..UtpConfig::default()
            };
            let w = World {
                now: t(3010),
                ours: Utp::new(UtpConfig::default(), Rng::new(11)),
                link: UtpLink::new(),
                theirs: Utp::new(theirs_cfg, Rng::new(12)),
                sides: BTreeMap::new(),
                wire: BTreeMap::new(),
                seq: 0,
                latency: Duration::from_millis(20),
                ours_open: None,
                theirs_open: None,
                syn_blackhole_until: t(3010 + syn_blackhole_until),
                dials: dials.iter().map(|d| t(3010 + d)).collect(),
                keep,
                info,
                ih,
                hello,
                dropped_duplicates: 0,
                events: Vec::new(),
            };
            (w, f)
        }

        pub fn fetched(&self) -> bool {
            self.events
                .iter()
                .any(|e| matches!(e, Event::MetadataFetched(m) if m.peer == addr(2)))
        }

        pub fn failed(&self) -> bool {
            self.events
                .iter()
                .any(|e| matches!(e, Event::MetadataFailed(_)))
        }

        fn send(&mut self, to_target: bool, payload: Bytes) {
            if to_target {
                self.ours_open.get_or_insert(self.now);
            } else {
                self.theirs_open.get_or_insert(self.now);
            }
            self.seq += 1;
            self.wire.insert(
                (self.now.add(self.latency), self.seq),
                (to_target, payload, self.now),
            );
        }

        fn deliver(&mut self, to_target: bool, bytes: &[u8], sent: Timestamp) {
            let now = self.now;
            if to_target {
                // The target's NAT passes only what answers its own sending.
                if self.theirs_open.is_none_or(|t| t > sent) {
                    return;
                }
                // libtorrent finds a connection by its receive id only: a
                // RESET with any other id is ignored.
                if bytes.first().map(|b| b >> 4) == Some(3) {
                    let id = u16::from_be_bytes([bytes[2], bytes[3]]);
                    let known = self
                        .sides
                        .keys()
                        .any(|s| self.theirs.conn(*s).is_some_and(|c| c.recv_id() == id));
                    if !known {
                        return;
                    }
                }
                self.theirs.handle_datagram(now, SocketId(0), us(), bytes);
            } else {
                if self.ours_open.is_none_or(|t| t > sent) {
                    return;
                }
                if bytes.first().map(|b| b >> 4) == Some(4) && sent < self.syn_blackhole_until {
                    return;
                }
                self.ours.handle_datagram(now, SocketId(0), addr(2), bytes);
            }
        }

        fn new_side(&self, outgoing: bool) -> Side {
            // libtorrent's default (`pe_enabled`): either handshake.
            let mut seeder =
                FakeSeeder::with_info_hash(self.info.clone(), self.ih, Behavior::Honest)
                    .with_encryption(SeederEncryption::Either);
            seeder.on_connected();
            Side {
                seeder,
                outgoing,
                skip: if outgoing { 68 } else { 0 },
                got: 0,
                attached: outgoing,
                backlog: Vec::new(),
            }
        }

        /// A side got our handshake: libtorrent attaches it to the torrent
        /// and, if another connection with us is there, drops one.
        fn attach(&mut self, s: StreamId) {
            let Some(side) = self.sides.get_mut(&s) else {
                return;
            };
            side.attached = true;
            let outgoing = side.outgoing;
            let rival = self
                .sides
                .iter()
                .find(|(x, o)| **x != s && o.attached && o.outgoing != outgoing)
                .map(|(x, _)| *x);
            let Some(rival) = rival else {
                return;
            };
            let drop = match (self.keep, outgoing) {
                (Keep::Outgoing, true) | (Keep::Incoming, false) => rival,
                _ => s,
            };
            self.dropped_duplicates += 1;
            self.sides.remove(&drop);
            let _ = self.theirs.abort(self.now, drop);
        }

        fn on_their_event(&mut self, ev: UtpEvent) {
            let now = self.now;
            match ev {
                UtpEvent::Incoming { stream, .. } => {
                    let side = self.new_side(false);
                    self.sides.insert(stream, side);
                }
                UtpEvent::Connected(s) => {
                    if self.sides.get(&s).is_some_and(|x| x.outgoing) {
                        let hello = self.hello.clone();
                        let _ = self.theirs.write(now, s, &hello);
                    }
                }
                UtpEvent::Readable(s) => {
                    let mut buf = Vec::new();
                    let Ok((_, eof)) = self.theirs.read(now, s, &mut buf, usize::MAX) else {
                        return;
                    };
                    let Some(side) = self.sides.get_mut(&s) else {
                        return;
                    };
                    let before = side.got;
                    side.got += buf.len();
                    side.seeder.on_data(&buf);
                    if before < 68 && side.got >= 68 {
                        self.attach(s);
                    }
                    if eof {
                        let _ = self.theirs.close(now, s);
                    }
                }
                UtpEvent::Closed { stream, .. } => {
                    self.sides.remove(&stream);
                }
                UtpEvent::Crossed { stream, .. } => {
                    let side = self.new_side(false);
                    self.sides.insert(stream, side);
                }
            }
        }

        fn flush_sides(&mut self) {
            let now = self.now;
            for (s, side) in self.sides.iter_mut() {
                let mut more = side.seeder.take_output();
                let k = side.skip.min(more.len());
                more.drain(..k);
                side.skip -= k;
                side.backlog.extend_from_slice(&more);
                if !side.backlog.is_empty() {
                    let n = self.theirs.write(now, *s, &side.backlog).unwrap_or(0);
                    side.backlog.drain(..n.min(side.backlog.len()));
                }
            }
        }

        /// Runs until the fetch ends or `max_ms` (simulated) have passed.
        pub fn run(&mut self, f: &mut Fetcher, max_ms: u64) {
            let end = self.now.add(Duration::from_millis(max_ms));
            while self.now < end && !self.fetched() && !self.failed() {
                let mut busy = false;
                while let Some(o) = f.poll_outcome() {
                    busy = true;
                    match self.link.route(self.now, o, &mut self.ours, f) {
                        Some(FetchOutput::Output(Output::Event(e))) => self.events.push(e),
                        Some(FetchOutput::Failed(x)) => self.events.push(Event::MetadataFailed(
                            Box::new(x.into_event(magnetar_core::fetch::AfterFailure::NotManaged)),
                        )),
                        // The relay's TCP session: nothing more to say.
                        _ => {}
                    }
                }
                while let Some(ev) = self.ours.poll_event() {
                    busy = true;
                    self.link.on_event(self.now, ev, &mut self.ours, f);
                }
                while let Some(t) = self.ours.poll_transmit() {
                    busy = true;
                    assert_eq!(t.to, addr(2));
                    self.send(true, t.payload);
                }
                while let Some(ev) = self.theirs.poll_event() {
                    busy = true;
                    self.on_their_event(ev);
                }
                self.flush_sides();
                while let Some(t) = self.theirs.poll_transmit() {
                    busy = true;
                    self.send(false, t.payload);
                }
                if busy {
                    continue;
                }
                let next = [
                    self.wire.keys().next().map(|k| k.0),
                    self.ours.deadline(),
                    self.theirs.deadline(),
                    f.poll_timeout(),
                    self.dials.front().copied(),
                ]
                .into_iter()
                .flatten()
                .min();
                let Some(t) = next else {
                    return;
                };
                self.now = self.now.max(t).min(end);
                let now = self.now;
                while let Some(e) = self.wire.first_entry() {
                    if e.key().0 > now {
                        break;
                    }
                    let (to_target, bytes, sent) = e.remove();
                    self.deliver(to_target, &bytes, sent);
                }
                while self.dials.front().is_some_and(|d| *d <= now) {
                    self.dials.pop_front();
                    let dialling = self.sides.values().any(|s| s.outgoing);
                    if !dialling {
                        if let Ok(s) = self.theirs.connect(now, SocketId(0), us()) {
                            let side = self.new_side(true);
                            self.sides.insert(s, side);
                        }
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
            let _ = drain;
        }
    }
}

/// Issue 15, class (c), the race the clean-clone CI run lost: the target
/// dials us a moment before the relay's `connect` reaches us, so its SYN hits
/// our NAT before ours left and its first attempt never gets through; ours
/// does, and the target (libtorrent) drops it as a duplicate of its own
/// attempt still pending. Whatever the target keeps, and whether or not it
/// dials again, the fetch must end with the metadata: we redial over the open
/// mapping once its attempt is over, and adopt its next connection to us.
#[test]
fn a_holepunch_survives_the_target_dropping_our_stream_as_a_duplicate() {
    use race::{Keep, World};
    for (keep, dials) in [
        // It never dials again: our redials must get through.
        (Keep::Outgoing, vec![0]),
        // It dials again after its first attempt timed out.
        (Keep::Outgoing, vec![0, 9_000]),
        (Keep::Incoming, vec![0]),
        (Keep::Incoming, vec![0, 9_000]),
    ] {
        let (mut w, mut f) = World::new(keep, &dials, 5_000);
        w.run(&mut f, 60_000);
        assert!(
            w.fetched(),
            "{keep:?} {dials:?}: not fetched; duplicates dropped {}; {:?}; {:?}",
            w.dropped_duplicates,
            f.stats().holepunch,
            w.events
        );
        assert_eq!(f.stats().holepunch.ok, 1, "{keep:?} {dials:?}");
    }
}

/// Both SYNs cross and both pass both NATs: the target ends up with two
/// connections with us and drops one when our handshake attaches the second.
/// Whichever it keeps, we fetch over it, and the other counts as a lost
/// candidate, not as a failure of the peer.
#[test]
fn crossed_syns_that_both_pass_end_on_whichever_connection_the_target_keeps() {
    use race::{Keep, World};
    for keep in [Keep::Outgoing, Keep::Incoming] {
        for dial in [0u64, 5, 20, 40] {
            let (mut w, mut f) = World::new(keep, &[dial], 0);
            w.run(&mut f, 60_000);
            assert!(
                w.fetched(),
                "{keep:?} dial +{dial} ms: not fetched; duplicates dropped {}; {:?}; {:?}",
                w.dropped_duplicates,
                f.stats().holepunch,
                w.events
            );
        }
    }
}
