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
/// ours is unanswered, and its connection becomes our stream under the same
/// id: bytes flow both ways.
#[test]
fn a_crossed_syn_becomes_our_stream() {
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
            if e == UtpEvent::Readable(sa) {
                a.read(t(now), sa, &mut got_a, 1 << 16).unwrap();
            }
            events_a.push(e);
        }
        if !moved && connected_b && !got_a.is_empty() {
            break;
        }
    }
    assert!(connected_b, "the target's connection completed");
    assert!(events_a.contains(&UtpEvent::Connected(sa)), "{events_a:?}");
    assert_eq!(got_a, b"hello from the target");
}
