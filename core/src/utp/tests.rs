//! Unit tests of the uTP manager and connection against honest and hostile peers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::conn::{ConnState, MAX_DATAGRAM, MAX_PAYLOAD};
use super::packet::{decode, encode, Header, PacketType};
use super::*;

const A: &str = "10.0.0.1:1000";
const B: &str = "10.0.0.2:2000";
const S: SocketId = SocketId(0);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn accepting() -> UtpConfig {
    UtpConfig {
        accept_incoming: true,
        ..UtpConfig::default()
    }
}

/// Two managers on a 10 ms link; `drop` may discard a datagram (by direction and
/// count), and every datagram is logged.
struct Pair {
    a: Utp,
    b: Utp,
    now: Timestamp,
    queue: BTreeMap<(Timestamp, u64), (bool, Vec<u8>)>,
    n: u64,
    log: Vec<(bool, Vec<u8>, Timestamp)>,
    a_events: Vec<UtpEvent>,
    b_events: Vec<UtpEvent>,
}

impl Pair {
    fn new(bcfg: UtpConfig) -> Self {
        Pair {
            a: Utp::new(UtpConfig::default(), Rng::new(1)),
            b: Utp::new(bcfg, Rng::new(2)),
            now: Timestamp::ZERO,
            queue: BTreeMap::new(),
            n: 0,
            log: Vec::new(),
            a_events: Vec::new(),
            b_events: Vec::new(),
        }
    }

    fn collect(&mut self, drop: &mut dyn FnMut(bool, &[u8]) -> bool) {
        let at = self.now.add(Duration::from_millis(10));
        for to_b in [true, false] {
            let m = if to_b { &mut self.a } else { &mut self.b };
            while let Some(t) = m.poll_transmit() {
                self.log.push((to_b, t.payload.to_vec(), self.now));
                if drop(to_b, &t.payload) {
                    continue;
                }
                self.n += 1;
                self.queue.insert((at, self.n), (to_b, t.payload.to_vec()));
            }
        }
        while let Some(e) = self.a.poll_event() {
            self.a_events.push(e);
        }
        while let Some(e) = self.b.poll_event() {
            self.b_events.push(e);
        }
    }

    /// Runs until `until` (bounded in steps), calling `app` after each step.
    fn run(
        &mut self,
        until: Timestamp,
        drop: &mut dyn FnMut(bool, &[u8]) -> bool,
        app: &mut dyn FnMut(&mut Pair),
    ) {
        for _ in 0..1_000_000 {
            self.collect(drop);
            app(self);
            self.collect(drop);
            let next = [
                self.queue.keys().next().map(|k| k.0),
                self.a.deadline(),
                self.b.deadline(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next else { return };
            if next > until {
                self.now = until;
                return;
            }
            self.now = next.max(self.now);
            while let Some(entry) = self.queue.first_entry() {
                if entry.key().0 > self.now {
                    break;
                }
                let (to_b, bytes) = entry.remove();
                if to_b {
                    self.b.handle_datagram(self.now, S, addr(A), &bytes);
                } else {
                    self.a.handle_datagram(self.now, S, addr(B), &bytes);
                }
            }
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
        }
        panic!("run did not settle");
    }
}

fn keep(_: bool, _: &[u8]) -> bool {
    false
}

fn closed_reason(ev: &[UtpEvent], s: StreamId) -> Option<UtpCloseReason> {
    ev.iter().find_map(|e| match e {
        UtpEvent::Closed { stream, reason } if *stream == s => Some(*reason),
        _ => None,
    })
}

/// A transfers `data` to B (B echoes nothing); returns what B read and the
/// close reasons of both ends.
fn transfer(
    p: &mut Pair,
    data: &[u8],
    drop: &mut dyn FnMut(bool, &[u8]) -> bool,
) -> (Vec<u8>, Option<UtpCloseReason>, Option<UtpCloseReason>) {
    let sa = p.a.connect(p.now, S, addr(B)).unwrap();
    let mut sent = 0;
    let mut got = Vec::new();
    let mut closed_a = false;
    let data = data.to_vec();
    let mut app = |p: &mut Pair| {
        let now = p.now;
        if sent < data.len() {
            if let Ok(n) = p.a.write(now, sa, &data[sent..]) {
                sent += n;
            }
        } else if !closed_a {
            closed_a = true;
            let _ = p.a.close(now, sa);
        }
        let ids: Vec<StreamId> = p.b.streams.keys().copied().collect();
        for s in ids {
            let _ = p.b.read(now, s, &mut got, usize::MAX);
        }
    };
    p.run(Timestamp::from_secs(600), drop, &mut app);
    let sb = p.b_events.iter().find_map(|e| match e {
        UtpEvent::Incoming { stream, .. } => Some(*stream),
        _ => None,
    });
    (
        got,
        closed_reason(&p.a_events, sa),
        sb.and_then(|s| closed_reason(&p.b_events, s)),
    )
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn handshake_transfer_and_close() {
    let mut p = Pair::new(accepting());
    let data = pattern(300_000);
    let (got, ra, rb) = transfer(&mut p, &data, &mut keep);
    assert_eq!(got.len(), data.len());
    assert!(got == data);
    assert_eq!(ra, Some(UtpCloseReason::Finished));
    assert_eq!(rb, Some(UtpCloseReason::Finished));
    assert!(p.a.is_empty() && p.b.is_empty());
    assert!(p
        .a_events
        .iter()
        .any(|e| matches!(e, UtpEvent::Connected(_))));
    // Every datagram fits the IPv6-safe size, and payloads are full-size.
    assert!(p.log.iter().all(|(_, d, _)| d.len() <= MAX_DATAGRAM));
    let full = p
        .log
        .iter()
        .filter_map(|(_, d, _)| decode(d).ok())
        .filter(|q| q.header.ty == PacketType::Data && q.payload.len() == MAX_PAYLOAD)
        .count();
    assert!(full >= data.len() / MAX_PAYLOAD);
    assert_eq!(p.a.stats().faults_total() + p.b.stats().faults_total(), 0);
}

#[test]
fn connection_ids_follow_bep29() {
    let mut p = Pair::new(accepting());
    let data = pattern(5000);
    let (got, ..) = transfer(&mut p, &data, &mut keep);
    assert!(got == data);
    let pk: Vec<(bool, Header)> = p
        .log
        .iter()
        .map(|(to_b, d, _)| (*to_b, decode(d).unwrap().header))
        .collect();
    let (to_b, syn) = pk[0];
    assert!(to_b && syn.ty == PacketType::Syn);
    let id = syn.connection_id;
    let (to_b, st) = pk[1];
    assert!(!to_b && st.ty == PacketType::State);
    assert_eq!(st.connection_id, id, "the acceptor sends with the SYN's id");
    assert_eq!(st.ack_nr, syn.seq_nr);
    for (to_b, h) in &pk[2..] {
        if *to_b {
            assert_eq!(h.connection_id, id.wrapping_add(1), "{h:?}");
        } else {
            assert_eq!(h.connection_id, id, "{h:?}");
        }
    }
    // The acceptor's first DATA would carry the STATE's seq_nr; the initiator's
    // first DATA follows its SYN.
    let first_data = pk
        .iter()
        .find(|(to_b, h)| *to_b && h.ty == PacketType::Data)
        .unwrap()
        .1;
    assert_eq!(first_data.seq_nr, syn.seq_nr.wrapping_add(1));
    assert_eq!(first_data.ack_nr, st.seq_nr.wrapping_sub(1));
}

#[test]
fn sequence_numbers_wrap() {
    // Find a seed whose SYN seq is close to the wrap, then transfer across it.
    for seed in 0..10_000u64 {
        let mut r = Rng::new(seed);
        let _id = r.next_u32();
        let seq = r.next_u32() as u16;
        if seq > 65_500 {
            let mut p = Pair::new(accepting());
            p.a = Utp::new(UtpConfig::default(), Rng::new(seed));
            let data = pattern(200 * MAX_PAYLOAD);
            let (got, ra, rb) = transfer(&mut p, &data, &mut keep);
            assert!(got == data);
            assert_eq!(ra, Some(UtpCloseReason::Finished));
            assert_eq!(rb, Some(UtpCloseReason::Finished));
            let wrapped = p.log.iter().any(|(b, d, _)| {
                *b && decode(d)
                    .is_ok_and(|q| q.header.ty == PacketType::Data && q.header.seq_nr < 100)
            });
            assert!(wrapped, "the transfer crossed 65535");
            return;
        }
    }
    panic!("no seed with a high initial seq");
}

#[test]
fn lost_packets_are_recovered_by_fast_resend_and_timeouts() {
    let mut p = Pair::new(accepting());
    let data = pattern(400_000);
    let mut k = 0u32;
    // Drop every 17th datagram A→B (never the SYN) and every 13th B→A.
    let mut drop = |to_b: bool, d: &[u8]| {
        k += 1;
        let syn = d.first() == Some(&0x41);
        !syn && if to_b { k % 17 == 0 } else { k % 13 == 0 }
    };
    let (got, ra, _) = transfer(&mut p, &data, &mut drop);
    assert!(got == data);
    assert_eq!(ra, Some(UtpCloseReason::Finished));
    let s = p.a.stats();
    assert!(s.fast_resends > 0, "{s:?}");
    assert!(s.retransmits > 0);
}

#[test]
fn incoming_refused_by_default_with_a_reset() {
    let mut p = Pair::new(UtpConfig::default());
    let (got, ra, rb) = transfer(&mut p, b"hello", &mut keep);
    assert!(got.is_empty());
    assert_eq!(ra, Some(UtpCloseReason::Refused));
    assert_eq!(rb, None);
    let s = p.b.stats();
    assert_eq!(s.faults.get(&UtpFault::SynRefused), Some(&1));
    assert_eq!(s.resets_sent, 1);
    assert!(p.b.is_empty());
}

#[test]
fn connect_to_a_black_hole_times_out() {
    let mut p = Pair::new(accepting());
    let sa = p.a.connect(p.now, S, addr(B)).unwrap();
    p.run(Timestamp::from_secs(600), &mut |_, _| true, &mut |_| {});
    assert_eq!(
        closed_reason(&p.a_events, sa),
        Some(UtpCloseReason::ConnectTimedOut)
    );
    let syns = p.log.iter().filter(|(_, d, _)| d[0] == 0x41).count();
    assert_eq!(syns as u32, 1 + ConnConfig::default().syn_retransmits);
}

#[test]
fn silent_peer_after_handshake_times_out_with_backoff() {
    let mut p = Pair::new(accepting());
    let sa = p.a.connect(p.now, S, addr(B)).unwrap();
    p.run(Timestamp::from_secs(1), &mut keep, &mut |_| {});
    assert!(p.a_events.contains(&UtpEvent::Connected(sa)));
    p.a.write(p.now, sa, b"ping").unwrap();
    let start = p.log.len();
    p.run(
        Timestamp::from_secs(3600),
        &mut |to_b, _| to_b, // everything A→B is lost now
        &mut |_| {},
    );
    assert_eq!(
        closed_reason(&p.a_events, sa),
        Some(UtpCloseReason::TimedOut)
    );
    let times: Vec<Timestamp> = p.log[start..]
        .iter()
        .filter(|(b, d, _)| *b && d[0] >> 4 == 0)
        .map(|(_, _, t)| *t)
        .collect();
    assert_eq!(
        times.len() as u32,
        1 + ConnConfig::default().max_retransmits
    );
    // The gaps between resends grow (back-off).
    let gaps: Vec<u64> = times.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "{gaps:?}");
}

#[test]
fn keepalives_hold_an_idle_connection_open() {
    let mut p = Pair::new(accepting());
    let sa = p.a.connect(p.now, S, addr(B)).unwrap();
    p.run(Timestamp::from_secs(300), &mut keep, &mut |_| {});
    assert!(p.a_events.contains(&UtpEvent::Connected(sa)));
    assert!(closed_reason(&p.a_events, sa).is_none(), "{:?}", p.a_events);
    assert_eq!(p.a.len(), 1);
    assert!(p.a.stats().keepalives >= 300 / 30);
    // Without the peer's keep-alives, the idle timeout ends it.
    p.run(Timestamp::from_secs(600), &mut |to_b, _| !to_b, &mut |_| {});
    assert_eq!(closed_reason(&p.a_events, sa), Some(UtpCloseReason::Idle));
}

/// A manager connected to a scripted peer: returns the manager, the stream, and
/// the peer's view (its send id, its next seq, the SYN's seq).
fn scripted() -> (Utp, StreamId, Header) {
    let mut u = Utp::new(UtpConfig::default(), Rng::new(7));
    let s = u.connect(Timestamp::ZERO, S, addr(B)).unwrap();
    let syn = decode(&u.poll_transmit().unwrap().payload).unwrap().header;
    let st = Header {
        ty: PacketType::State,
        connection_id: syn.connection_id,
        timestamp_us: 1,
        timestamp_diff_us: 0,
        wnd_size: 1 << 20,
        seq_nr: 500,
        ack_nr: syn.seq_nr,
    };
    feed(&mut u, &st, None, &[], Timestamp::from_millis(10));
    assert_eq!(u.poll_event(), Some(UtpEvent::Connected(s)));
    (u, s, syn)
}

fn feed(u: &mut Utp, h: &Header, sack: Option<&[u8]>, payload: &[u8], at: Timestamp) {
    let mut buf = Vec::new();
    encode(h, sack, payload, &mut buf);
    u.handle_datagram(at, S, addr(B), &buf);
}

fn drain(u: &mut Utp) -> Vec<Header> {
    let mut v = Vec::new();
    while let Some(t) = u.poll_transmit() {
        v.push(decode(&t.payload).unwrap().header);
    }
    v
}

#[test]
fn forged_connection_ids_do_not_touch_the_connection() {
    let (mut u, s, syn) = scripted();
    drain(&mut u);
    for id in 0..=u16::MAX {
        if id == syn.connection_id {
            continue;
        }
        let h = Header {
            ty: PacketType::Data,
            connection_id: id,
            timestamp_us: 0,
            timestamp_diff_us: 0,
            wnd_size: 0,
            seq_nr: 500,
            ack_nr: syn.seq_nr,
        };
        feed(&mut u, &h, None, b"evil", Timestamp::from_millis(20));
    }
    let st = u.stats();
    assert_eq!(st.faults.get(&UtpFault::UnknownConnection), Some(&65535));
    // RESETs to them are rate-limited to the burst.
    assert_eq!(st.resets_sent, 20);
    assert_eq!(st.resets_limited, 65535 - 20);
    assert_eq!(drain(&mut u).len(), 20);
    assert_eq!(u.conn(s).unwrap().state(), ConnState::Connected);
    assert_eq!(u.conn(s).unwrap().readable_len(), 0);
}

#[test]
fn sequence_numbers_far_outside_the_window_are_faults_then_a_reset() {
    let (mut u, s, syn) = scripted();
    drain(&mut u);
    let max = ConnConfig::default().max_faults;
    for i in 0..=max {
        let h = Header {
            ty: PacketType::Data,
            connection_id: syn.connection_id,
            timestamp_us: 0,
            timestamp_diff_us: 0,
            wnd_size: 1 << 20,
            seq_nr: 500u16.wrapping_add(20_000 + i as u16),
            ack_nr: syn.seq_nr,
        };
        feed(&mut u, &h, None, b"far", Timestamp::from_millis(20));
    }
    assert_eq!(
        u.stats().faults.get(&UtpFault::SeqOutOfWindow),
        Some(&(max as u64 + 1))
    );
    let ev: Vec<UtpEvent> = std::iter::from_fn(|| u.poll_event()).collect();
    assert_eq!(closed_reason(&ev, s), Some(UtpCloseReason::Misbehaving));
    assert!(drain(&mut u).iter().any(|h| h.ty == PacketType::Reset));
    assert!(u.is_empty());
}

#[test]
fn acks_of_unsent_packets_are_faults() {
    let (mut u, s, syn) = scripted();
    u.write(Timestamp::from_millis(20), s, b"data").unwrap();
    drain(&mut u);
    let h = Header {
        ty: PacketType::State,
        connection_id: syn.connection_id,
        timestamp_us: 0,
        timestamp_diff_us: 0,
        wnd_size: 1 << 20,
        seq_nr: 500,
        ack_nr: syn.seq_nr.wrapping_add(100),
    };
    feed(&mut u, &h, None, &[], Timestamp::from_millis(30));
    assert_eq!(u.stats().faults.get(&UtpFault::AckOutOfRange), Some(&1));
    assert_eq!(u.conn(s).unwrap().unacked(), 4, "the data is still unacked");
}

#[test]
fn selective_ack_masks_of_any_length() {
    let (mut u, s, syn) = scripted();
    let data = pattern(40 * MAX_PAYLOAD);
    let mut t = Timestamp::from_millis(20);
    u.write(t, s, &data).unwrap();
    let sent = drain(&mut u);
    assert!(!sent.is_empty());
    for len in (4..=252).step_by(4) {
        t = t.add(Duration::from_millis(1));
        let h = Header {
            ty: PacketType::State,
            connection_id: syn.connection_id,
            timestamp_us: 0,
            timestamp_diff_us: 0,
            wnd_size: 1 << 20,
            seq_nr: 500,
            ack_nr: syn.seq_nr, // the first data packet is "missing"
        };
        let mask = vec![0xffu8; len];
        feed(&mut u, &h, Some(&mask), &[], t);
        drain(&mut u);
    }
    let c = u.conn(s).unwrap();
    // Everything but the first data packet is acked; the hole was resent.
    assert_eq!(c.state(), ConnState::Connected);
    assert!(u.stats().fast_resends >= 1);
    assert!(c.unacked() >= MAX_PAYLOAD);
    assert_eq!(u.stats().faults_total(), 0);
}

#[test]
fn zero_window_forever_is_probed_then_given_up() {
    let (mut u, s, syn) = scripted();
    let mut t = Timestamp::from_millis(20);
    // The peer closes its window.
    let zero = |t: Timestamp, ack: u16| Header {
        ty: PacketType::State,
        connection_id: syn.connection_id,
        timestamp_us: (t.as_nanos() / 1000) as u32,
        timestamp_diff_us: 0,
        wnd_size: 0,
        seq_nr: 500,
        ack_nr: ack,
    };
    feed(&mut u, &zero(t, syn.seq_nr), None, &[], t);
    u.write(t, s, &pattern(100_000)).unwrap();
    let mut sent = drain(&mut u).len();
    let mut closed = None;
    for _ in 0..10_000 {
        let Some(d) = u.deadline() else { break };
        t = d;
        u.handle_timeout(t);
        let out = drain(&mut u);
        sent += out.len();
        // Each probe is answered: window still zero, nothing acked.
        if out.iter().any(|h| h.ty == PacketType::Data) {
            feed(&mut u, &zero(t, syn.seq_nr), None, &[], t);
        }
        drain(&mut u);
        while let Some(e) = u.poll_event() {
            if let UtpEvent::Closed { reason, .. } = e {
                closed = Some(reason);
            }
        }
        if closed.is_some() {
            break;
        }
    }
    assert_eq!(closed, Some(UtpCloseReason::ZeroWindow));
    assert!(u.stats().window_probes > 0);
    assert!(sent < 200, "probes are paced: {sent}");
    assert!(t <= Timestamp::from_secs(200));
}

#[test]
fn syn_floods_are_capped_per_ip_and_in_total() {
    let cfg = accepting();
    let mut u = Utp::new(cfg, Rng::new(3));
    let t = Timestamp::from_secs(1);
    let syn = |id: u16| Header {
        ty: PacketType::Syn,
        connection_id: id,
        timestamp_us: 0,
        timestamp_diff_us: 0,
        wnd_size: 1 << 20,
        seq_nr: 1,
        ack_nr: 0,
    };
    for id in 0..1000u16 {
        let mut buf = Vec::new();
        encode(&syn(id * 2), None, &[], &mut buf);
        u.handle_datagram(t, S, addr(A), &buf);
    }
    assert_eq!(u.half_open_from(addr(A).ip()), cfg.max_half_open_per_ip);
    for i in 0..1000u32 {
        let from = SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 4000));
        let mut buf = Vec::new();
        encode(&syn(7), None, &[], &mut buf);
        u.handle_datagram(t, S, from, &buf);
    }
    assert_eq!(u.len(), cfg.max_half_open);
    let s = u.stats();
    assert_eq!(
        s.faults.get(&UtpFault::SynOverCap),
        Some(&(2000 - cfg.max_half_open as u64))
    );
    // The half-open ones time out (nobody completes them): idle, bounded.
    for _ in 0..100 {
        match u.deadline() {
            Some(d) => u.handle_timeout(d),
            None => break,
        }
    }
    assert!(u.is_empty(), "{}", u.len());
}

#[test]
fn reset_storms_are_counted_never_answered() {
    let (mut u, s, syn) = scripted();
    drain(&mut u);
    for id in 0..5000u16 {
        let h = Header {
            ty: PacketType::Reset,
            connection_id: id
                .wrapping_mul(3)
                .wrapping_add(syn.connection_id.wrapping_add(1)),
            timestamp_us: 0,
            timestamp_diff_us: 0,
            wnd_size: 0,
            seq_nr: id,
            ack_nr: 0,
        };
        if h.connection_id == syn.connection_id
            || h.connection_id == syn.connection_id.wrapping_add(1)
        {
            continue;
        }
        feed(&mut u, &h, None, &[], Timestamp::from_millis(20));
    }
    assert!(drain(&mut u).is_empty());
    assert!(u.stats().faults.get(&UtpFault::UnknownConnection) >= Some(&4990));
    assert_eq!(u.conn(s).unwrap().state(), ConnState::Connected);
    // The real RESET ends it.
    let h = Header {
        ty: PacketType::Reset,
        connection_id: syn.connection_id,
        timestamp_us: 0,
        timestamp_diff_us: 0,
        wnd_size: 0,
        seq_nr: 500,
        ack_nr: 0,
    };
    feed(&mut u, &h, None, &[], Timestamp::from_millis(30));
    let ev: Vec<UtpEvent> = std::iter::from_fn(|| u.poll_event()).collect();
    assert_eq!(closed_reason(&ev, s), Some(UtpCloseReason::Reset));
}

#[test]
fn truncated_and_garbage_datagrams_are_counted() {
    let (mut u, s, _) = scripted();
    drain(&mut u);
    let mut ok = Vec::new();
    encode(
        &Header {
            ty: PacketType::State,
            connection_id: 1,
            timestamp_us: 0,
            timestamp_diff_us: 0,
            wnd_size: 0,
            seq_nr: 0,
            ack_nr: 0,
        },
        Some(&[0; 8]),
        &[],
        &mut ok,
    );
    for n in 0..ok.len() {
        u.handle_datagram(Timestamp::from_millis(20), S, addr(B), &ok[..n]);
    }
    let f = u.stats().faults;
    let malformed: u64 = f
        .iter()
        .filter(|(k, _)| matches!(k, UtpFault::Malformed(_)))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(malformed, ok.len() as u64);
    assert!(drain(&mut u).is_empty());
    assert_eq!(u.conn(s).unwrap().state(), ConnState::Connected);
}

#[test]
fn ledbat_shrinks_the_window_when_delay_exceeds_the_target() {
    let (mut u, s, syn) = scripted();
    let mut t = Timestamp::from_millis(20);
    let id = syn.connection_id;
    let mut delay = 10_000u32; // the peer's one-way delay sample, µs
    let mut peak = 0;
    let mut ack = syn.seq_nr;
    for round in 0..400 {
        u.write(t, s, &pattern(50 * MAX_PAYLOAD)).unwrap();
        let out = drain(&mut u);
        t = t.add(Duration::from_millis(50));
        for h in out.iter().filter(|h| h.ty == PacketType::Data) {
            ack = h.seq_nr;
            let st = Header {
                ty: PacketType::State,
                connection_id: id,
                timestamp_us: 0,
                timestamp_diff_us: delay,
                wnd_size: 1 << 20,
                seq_nr: 500,
                ack_nr: ack,
            };
            feed(&mut u, &st, None, &[], t);
        }
        let c = u.conn(s).unwrap();
        if round == 200 {
            peak = c.cwnd();
            // From now on the queue builds: 300 ms over the base delay.
            delay += 300_000;
        }
        let _ = ack;
    }
    let end = u.conn(s).unwrap().cwnd();
    assert!(
        peak > 20 * MAX_PAYLOAD,
        "the window grew at low delay: {peak}"
    );
    assert!(
        end < peak / 4,
        "the window shrank at high delay: {peak} -> {end}"
    );
    assert!(end >= super::conn::MIN_CWND);
}

#[test]
fn the_crawler_demultiplexes_its_socket_on_the_first_byte() {
    use crate::{Config, Crawler, Fault, Input, Output};
    let mut c = Crawler::new(Config::loopback_test(1), Timestamp::ZERO);
    let from: SocketAddr = "127.0.0.1:7000".parse().unwrap();
    let syn = Header {
        ty: PacketType::Syn,
        connection_id: 77,
        timestamp_us: 0,
        timestamp_diff_us: 0,
        wnd_size: 1 << 20,
        seq_nr: 1,
        ack_nr: 0,
    };
    let mut buf = Vec::new();
    encode(&syn, None, &[], &mut buf);
    let at = Timestamp::from_millis(1);
    let drain = |c: &mut Crawler| {
        let mut v = Vec::new();
        for _ in 0..1000 {
            match c.poll_output() {
                Output::Transmit { to, payload, .. } => v.push((to, payload.to_vec())),
                Output::Timeout(_) | Output::Idle => break,
                _ => {}
            }
        }
        v
    };
    drain(&mut c);
    let dht_in = c.stats().dht.datagrams_in;
    c.handle_input(Input::Datagram {
        at,
        local: S,
        from,
        bytes: &buf,
    });
    let out = drain(&mut c);
    // The unsolicited SYN is refused with a RESET carrying its id, from the same socket.
    assert_eq!(out.len(), 1);
    let (to, reset) = &out[0];
    assert_eq!(*to, from);
    let r = decode(reset).unwrap().header;
    assert_eq!((r.ty, r.connection_id), (PacketType::Reset, 77));
    let u = c.utp_stats();
    assert_eq!(u.datagrams_in, 1);
    assert_eq!(u.faults.get(&UtpFault::SynRefused), Some(&1));
    assert_eq!(c.stats().dht.datagrams_in, dht_in, "not counted as KRPC");
    // Anything that is neither `d` nor a uTP first byte is a counted fault.
    let before = c.stats().dht.faults_total();
    for junk in [
        &b"\x05abc"[..],
        b"\x51xxxxxxxxxxxxxxxxxxxxxxx",
        b"",
        b"l1:ae",
    ] {
        c.handle_input(Input::Datagram {
            at,
            local: S,
            from,
            bytes: junk,
        });
    }
    assert!(drain(&mut c).is_empty());
    let s = c.stats();
    assert_eq!(s.dht.faults_total(), before + 4);
    assert!(s
        .dht
        .faults
        .contains_key(&Fault::Malformed(crate::krpc::DecodeError::NotADict)));
    assert_eq!(c.utp_stats().datagrams_in, 1);
}

#[test]
fn a_reset_carrying_our_send_id_also_ends_the_stream() {
    let (mut u, s, syn) = scripted();
    drain(&mut u);
    let h = Header {
        ty: PacketType::Reset,
        connection_id: syn.connection_id.wrapping_add(1), // our send id
        timestamp_us: 0,
        timestamp_diff_us: 0,
        wnd_size: 0,
        seq_nr: 9,
        ack_nr: 0,
    };
    // From another address it is nobody's.
    let mut buf = Vec::new();
    encode(&h, None, &[], &mut buf);
    u.handle_datagram(Timestamp::from_millis(20), S, addr(A), &buf);
    assert_eq!(u.conn(s).unwrap().state(), ConnState::Connected);
    feed(&mut u, &h, None, &[], Timestamp::from_millis(30));
    let ev: Vec<UtpEvent> = std::iter::from_fn(|| u.poll_event()).collect();
    assert_eq!(closed_reason(&ev, s), Some(UtpCloseReason::Reset));
    assert!(drain(&mut u).is_empty(), "a RESET is never answered");
}

#[test]
fn spoofed_syns_hold_a_half_open_slot_briefly() {
    let mut u = Utp::new(accepting(), Rng::new(4));
    let t = Timestamp::from_secs(1);
    let syn = Header {
        ty: PacketType::Syn,
        connection_id: 100,
        timestamp_us: 0,
        timestamp_diff_us: 0,
        wnd_size: 1 << 20,
        seq_nr: 1,
        ack_nr: 0,
    };
    let mut buf = Vec::new();
    encode(&syn, None, &[], &mut buf);
    u.handle_datagram(t, S, addr(A), &buf);
    assert_eq!(u.stats().half_open, 1);
    let d = u.deadline().unwrap();
    assert_eq!(d, t.add(ConnConfig::default().syn_recv_timeout));
    u.handle_timeout(d);
    assert!(u.is_empty());
    assert_eq!(
        u.stats().closed.get(&UtpCloseReason::ConnectTimedOut),
        Some(&1)
    );
}
