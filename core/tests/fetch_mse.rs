//! The fetcher's encryption policy end to end against the sans-IO fake seeder
//! speaking MSE (its answering side): forced-RC4, forced-plaintext-after-MSE
//! and plaintext-only peers, the one retry the other way, the capability
//! cache, the Diffie-Hellman budget.
#![cfg(feature = "testkit")]

use std::net::SocketAddr;
use std::time::Duration;

use magnetar_core::fetch::{
    Encryption, EncryptionPolicy, FailReason, FetchConfig, FetchOutput, Fetcher, PeerSessionReport,
    SessionOutcome, Transport, WireMode,
};
use magnetar_core::testkit::{
    build_info, Behavior, Chunking, InfoSpec, SeederEncryption, Swarm, UtpSwarm,
};
use magnetar_core::{CloseReason, ConnId, Event, Output, Rng, SocketId, Timestamp};

fn addr(i: u32) -> SocketAddr {
    SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)),
        6881,
    )
}

fn fetcher(policy: EncryptionPolicy) -> Fetcher {
    let cfg = FetchConfig {
        encryption: policy,
        ..FetchConfig::default()
    };
    Fetcher::new(cfg, Rng::new(7)).with_allow_private(true)
}

fn info(name: &str) -> bytes::Bytes {
    build_info(&InfoSpec::single(name, 3 << 20)).into()
}

fn reports(ev: &[Event]) -> Vec<&PeerSessionReport> {
    ev.iter()
        .filter_map(|e| match e {
            Event::PeerSession(r) => Some(&**r),
            _ => None,
        })
        .collect()
}

fn fetched(ev: &[Event]) -> usize {
    ev.iter()
        .filter(|e| matches!(e, Event::MetadataFetched(_)))
        .count()
}

fn modes(ev: &[Event]) -> Vec<(Encryption, SessionOutcome)> {
    reports(ev)
        .iter()
        .map(|r| (r.encryption, r.outcome))
        .collect()
}

/// A fetcher under `policy` fetching a fresh torrent from one seeder at
/// `addr(1)` that behaves as `behavior` and accepts `enc`, in a swarm of
/// `seed` that `tune` adjusts first: the swarm, the fetcher, the events.
fn run_one(
    seed: u64,
    behavior: Behavior,
    enc: SeederEncryption,
    policy: EncryptionPolicy,
    tune: impl FnOnce(&mut Swarm),
) -> (Swarm, Fetcher, Vec<Event>) {
    let mut sw = Swarm::new(seed);
    tune(&mut sw);
    let ih = sw.add_seeder(addr(1), info("a"), behavior);
    sw.set_encryption(addr(1), enc);
    let mut f = fetcher(policy);
    f.fetch(Timestamp::ZERO, ih, &[addr(1)]).unwrap();
    let ev = sw.run(&mut f, 100_000);
    (sw, f, ev)
}

#[test]
fn forced_rc4_peer_refuses_plaintext_then_serves_over_rc4() {
    for chunking in [Chunking::Whole, Chunking::Random { max: 37 }] {
        let (mut sw, mut f, ev) = run_one(
            1,
            Behavior::Honest,
            SeederEncryption::ForcedRc4,
            EncryptionPolicy::PreferPlaintext,
            |sw| sw.set_chunking(chunking),
        );
        assert_eq!(fetched(&ev), 1);
        assert_eq!(
            modes(&ev),
            vec![
                (
                    Encryption::Plaintext,
                    SessionOutcome::Failed(FailReason::ClosedBeforeHandshake)
                ),
                (Encryption::Rc4, SessionOutcome::Ok),
            ]
        );
        let e = &f.stats().encryption;
        assert_eq!(
            (
                e.plaintext_attempts,
                e.plaintext_failed,
                e.retried_encrypted
            ),
            (1, 1, 1)
        );
        assert_eq!(
            (e.encrypted_attempts, e.encrypted_ok, e.selected_rc4),
            (1, 1, 1)
        );
        assert_eq!(e.modpows, 2);
        let cap = f.peer_capability(&addr(1)).unwrap();
        assert_eq!(cap.encryption, Some(Encryption::Rc4));

        // The cache remembers: the next infohash from that peer goes MSE first.
        let ih2 = sw.add_seeder(addr(1), info("b"), Behavior::Honest);
        f.fetch(sw.now(), ih2, &[addr(1)]).unwrap();
        let ev = sw.run(&mut f, 10_000);
        assert_eq!(fetched(&ev), 1);
        assert_eq!(modes(&ev), vec![(Encryption::Rc4, SessionOutcome::Ok)]);
        assert_eq!(f.stats().encryption.retried_encrypted, 1);
    }
}

#[test]
fn forced_peer_selecting_plaintext_after_the_handshake() {
    let (_, f, ev) = run_one(
        2,
        Behavior::Honest,
        SeederEncryption::ForcedPlaintext,
        EncryptionPolicy::Require,
        |_| {},
    );
    assert_eq!(fetched(&ev), 1);
    assert_eq!(
        modes(&ev),
        vec![(Encryption::MsePlaintext, SessionOutcome::Ok)]
    );
    assert_eq!(f.stats().encryption.selected_plaintext, 1);
    assert_eq!(f.stats().encryption.plaintext_attempts, 0);
}

#[test]
fn plaintext_only_peer_refuses_mse_then_serves_in_clear() {
    let (_, f, ev) = run_one(
        3,
        Behavior::Honest,
        SeederEncryption::PlaintextOnly,
        EncryptionPolicy::PreferEncrypted,
        |_| {},
    );
    assert_eq!(fetched(&ev), 1);
    assert_eq!(
        modes(&ev),
        vec![
            (
                Encryption::MseIncomplete,
                SessionOutcome::Failed(FailReason::ClosedDuringMse)
            ),
            (Encryption::Plaintext, SessionOutcome::Ok),
        ]
    );
    let e = &f.stats().encryption;
    assert_eq!((e.encrypted_failed, e.retried_plaintext), (1, 1));
    assert_eq!(
        f.peer_capability(&addr(1)).unwrap().encryption,
        Some(Encryption::Plaintext)
    );
}

#[test]
fn require_never_falls_back_to_plaintext() {
    let (_, f, ev) = run_one(
        4,
        Behavior::Honest,
        SeederEncryption::PlaintextOnly,
        EncryptionPolicy::Require,
        |_| {},
    );
    assert_eq!(fetched(&ev), 0);
    assert_eq!(
        modes(&ev),
        vec![(
            Encryption::MseIncomplete,
            SessionOutcome::Failed(FailReason::ClosedDuringMse)
        )]
    );
    assert_eq!(f.stats().encryption.plaintext_attempts, 0);
    assert_eq!(
        f.peer_capability(&addr(1)).unwrap().refused(Transport::Tcp),
        Some(WireMode::Encrypted)
    );
}

#[test]
fn silent_peer_fails_mse_with_dh_timeout() {
    let (_, f, ev) = run_one(
        5,
        Behavior::Silent,
        SeederEncryption::PlaintextOnly,
        EncryptionPolicy::Require,
        |_| {},
    );
    assert_eq!(
        modes(&ev),
        vec![(
            Encryption::MseIncomplete,
            SessionOutcome::Failed(FailReason::DhTimeout)
        )]
    );
    assert_eq!(f.stats().failure_count(FailReason::DhTimeout), 1);
}

#[test]
fn peer_accepting_both_gets_plaintext_under_prefer_plaintext() {
    let either = |policy| {
        run_one(
            6,
            Behavior::Honest,
            SeederEncryption::Either,
            policy,
            |_| {},
        )
    };
    let (_, f, ev) = either(EncryptionPolicy::PreferPlaintext);
    assert_eq!(
        modes(&ev),
        vec![(Encryption::Plaintext, SessionOutcome::Ok)]
    );
    assert_eq!(f.stats().encryption.encrypted_attempts, 0);
    // …and RC4 under prefer-encrypted.
    let (_, _, ev) = either(EncryptionPolicy::PreferEncrypted);
    assert_eq!(modes(&ev), vec![(Encryption::Rc4, SessionOutcome::Ok)]);
}

#[test]
fn dh_budget_defers_handshakes_and_all_still_complete() {
    let mut sw = Swarm::new(7);
    let cfg = FetchConfig {
        encryption: EncryptionPolicy::Require,
        max_dh_per_sec: 1,
        ..FetchConfig::default()
    };
    let mut f = Fetcher::new(cfg, Rng::new(7)).with_allow_private(true);
    for i in 1..=3 {
        let ih = sw.add_seeder(addr(i), info(&format!("t{i}")), Behavior::Honest);
        sw.set_encryption(addr(i), SeederEncryption::ForcedRc4);
        f.fetch(Timestamp::ZERO, ih, &[addr(i)]).unwrap();
    }
    let ev = sw.run(&mut f, 10_000);
    assert_eq!(fetched(&ev), 3);
    let e = &f.stats().encryption;
    // The bucket starts with one second's worth (one handshake): the other
    // two waited for it, the last one two (virtual) seconds.
    assert_eq!(e.dh_deferred, 2);
    assert_eq!(e.encrypted_ok, 3);
    let longest = reports(&ev).iter().map(|r| r.duration).max().unwrap();
    assert!(longest >= Duration::from_secs(2), "{longest:?}");
}

#[test]
fn pex_flags_say_which_contacts_prefer_encryption() {
    use magnetar_core::wire::{parse_pex_flags, PEX_PREFERS_ENCRYPTION};
    // added: 10.0.0.1:6881 and 10.0.0.2:6881; added.f: 0x01, 0x02.
    let mut p = b"d5:added12:".to_vec();
    p.extend_from_slice(&[10, 0, 0, 1, 0x1a, 0xe1, 10, 0, 0, 2, 0x1a, 0xe1]);
    p.extend_from_slice(b"7:added.f2:");
    p.extend_from_slice(&[0x01, 0x02]);
    p.push(b'e');
    let got = parse_pex_flags(&p).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], (addr(1), PEX_PREFERS_ENCRYPTION));
    assert_eq!(got[1].1 & PEX_PREFERS_ENCRYPTION, 0);
}

#[test]
fn peer_closing_at_once_is_tried_both_ways() {
    let (sw, _, ev) = run_one(
        8,
        Behavior::CloseBeforeHandshake,
        SeederEncryption::PlaintextOnly,
        EncryptionPolicy::PreferPlaintext,
        |_| {},
    );
    assert_eq!(
        modes(&ev),
        vec![
            (
                Encryption::Plaintext,
                SessionOutcome::Failed(FailReason::ClosedBeforeHandshake)
            ),
            (
                Encryption::MseIncomplete,
                SessionOutcome::Failed(FailReason::ClosedDuringMse)
            ),
        ]
    );
    let failed: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            Event::MetadataFailed(m) => Some(m.reasons.clone()),
            _ => None,
        })
        .collect();
    // The job reports the last attempt's reason, once per peer.
    assert_eq!(failed, vec![vec![(addr(1), FailReason::ClosedDuringMse)]]);
    // Only once: no third attempt.
    assert_eq!(sw.connects.len(), 2);
}

#[test]
fn dripping_mse_peer_is_cut_off_by_the_session_deadline() {
    // One byte per second from a forced-RC4 seeder: its Yb and padding alone
    // take minutes; the session deadline (10 s) ends it as a DH timeout.
    let (_, _, ev) = run_one(
        9,
        Behavior::Honest,
        SeederEncryption::ForcedRc4,
        EncryptionPolicy::Require,
        |sw| {
            sw.set_chunking(Chunking::Fixed(1));
            sw.set_step(Duration::from_secs(1));
        },
    );
    let r = reports(&ev);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].outcome, SessionOutcome::Failed(FailReason::DhTimeout));
    assert!(
        r[0].duration <= Duration::from_secs(11),
        "{:?}",
        r[0].duration
    );
}

/// The next connect `f` asks for: its id and transport (other outputs are
/// dropped).
fn next_connect(f: &mut Fetcher) -> (ConnId, Transport) {
    while let Some(o) = f.poll_outcome() {
        match o {
            FetchOutput::Output(Output::Connect { conn, .. }) => return (conn, Transport::Tcp),
            FetchOutput::UtpConnect { conn, .. } => return (conn, Transport::Utp),
            _ => {}
        }
    }
    panic!("the fetcher asked for no connection");
}

/// Connects `conn` and says which handshake its first bytes are.
fn connect_mode(f: &mut Fetcher, now: Timestamp, conn: ConnId) -> WireMode {
    f.handle_connected(now, conn);
    while let Some(o) = f.poll_outcome() {
        if let FetchOutput::Output(Output::Send { conn: c, bytes }) = o {
            assert_eq!(c, conn);
            return if bytes.starts_with(b"\x13BitTorrent protocol") {
                WireMode::Plaintext
            } else {
                WireMode::Encrypted
            };
        }
    }
    panic!("nothing sent on {conn:?}");
}

/// A refusal over one transport says nothing about the other: a peer that
/// closed on our plaintext handshake over TCP (as a libtorrent peer with
/// incoming TCP off closes everything) and then did not answer the MSE retry
/// is tried over uTP with the policy's handshake, plaintext; and the other
/// way round, from uTP to TCP.
#[test]
fn encryption_refusals_are_kept_per_transport() {
    for first in [Transport::Tcp, Transport::Utp] {
        let mut f = fetcher(EncryptionPolicy::PreferPlaintext).with_utp(true);
        let now = Timestamp::ZERO;
        let peer = addr(1);
        if first == Transport::Utp {
            // The peer talked to us over UDP: uTP first.
            f.note_udp_contact(now, peer, SocketId(0));
        }
        let ih = magnetar_core::InfoHash([7; 20]);
        f.fetch(now, ih, &[peer]).unwrap();
        // 1: plaintext, accepted and closed before a byte: a refusal.
        let (c1, t1) = next_connect(&mut f);
        assert_eq!(t1, first);
        assert_eq!(connect_mode(&mut f, now, c1), WireMode::Plaintext);
        f.handle_closed(now, c1, CloseReason::Eof);
        assert_eq!(f.stats().encryption.retried_encrypted, 1);
        // 2: the MSE retry, same transport; its connect times out.
        let (c2, t2) = next_connect(&mut f);
        assert_eq!(t2, first);
        let cap = f.peer_capability(&peer).unwrap();
        assert_eq!(cap.refused(first), Some(WireMode::Plaintext));
        assert_eq!(cap.refused(first.other()), None);
        f.handle_closed(now, c2, CloseReason::ConnectTimedOut);
        // 3: the other transport, with the policy's handshake.
        let (c3, t3) = next_connect(&mut f);
        assert_eq!(t3, first.other());
        assert_eq!(
            connect_mode(&mut f, now, c3),
            WireMode::Plaintext,
            "first {first:?}"
        );
        assert_eq!(f.stats().encryption.encrypted_attempts, 1);
    }
}

/// MSE inside a uTP stream, against a uTP-only seeder (TCP refused) over a
/// lossy simulated link: a seeder forcing RC4 and one forcing plaintext after
/// the MSE handshake (libtorrent's `pe_forced` with `allowed_enc_level`
/// `pe_plaintext`), fetched plaintext first (refused over uTP, retried with
/// MSE over uTP) and MSE only.
#[test]
fn mse_over_utp_rc4_and_plaintext_after_the_handshake() {
    for (enc, want) in [
        (SeederEncryption::ForcedRc4, Encryption::Rc4),
        (SeederEncryption::ForcedPlaintext, Encryption::MsePlaintext),
    ] {
        for policy in [EncryptionPolicy::PreferPlaintext, EncryptionPolicy::Require] {
            let mut w = UtpSwarm::new(11, Duration::from_millis(20), 20_000);
            w.set_encryption(enc);
            let raw = build_info(&InfoSpec {
                piece_length: 16 << 10,
                ..InfoSpec::single("mse-utp.bin", 40 << 20)
            });
            assert!(raw.len() > 16 << 10, "several metadata pieces");
            let ih = w.set_seeder(addr(1), raw.clone().into());
            let mut f = fetcher(policy).with_utp(true);
            let mut ev = Vec::new();
            f.fetch(Timestamp::ZERO, ih, &[addr(1)]).unwrap();
            w.run_into(&mut f, 1_000_000, &mut ev);
            let got: Vec<_> = ev
                .iter()
                .filter_map(|e| match e {
                    Event::MetadataFetched(m) => Some(m),
                    _ => None,
                })
                .collect();
            assert_eq!(got.len(), 1, "{enc:?} {policy:?}: {:?}", modes(&ev));
            assert_eq!(&got[0].raw[..], &raw[..]);
            let sessions: Vec<_> = reports(&ev)
                .iter()
                .map(|r| (r.transport, r.encryption, r.outcome))
                .collect();
            let mut expect = vec![(
                Transport::Tcp,
                if policy == EncryptionPolicy::Require {
                    Encryption::MseIncomplete
                } else {
                    Encryption::Plaintext
                },
                SessionOutcome::Failed(FailReason::ConnectRefused),
            )];
            if policy == EncryptionPolicy::PreferPlaintext {
                expect.push((
                    Transport::Utp,
                    Encryption::Plaintext,
                    SessionOutcome::Failed(FailReason::ClosedBeforeHandshake),
                ));
            }
            expect.push((Transport::Utp, want, SessionOutcome::Ok));
            assert_eq!(sessions, expect, "{enc:?} {policy:?}");
            let cap = f.peer_capability(&addr(1)).unwrap();
            assert_eq!(cap.encryption, Some(want));
            assert_eq!(cap.transport, Some(Transport::Utp));
            assert!(w.lost > 0, "the link lost nothing: {}", w.carried);
        }
    }
}

/// A peer with TCP off (libtorrent with incoming TCP disabled accepts and
/// closes) costs at most two TCP attempts over the whole crawl, even when the
/// job that was finding out ends between them (it got the torrent from
/// another peer, or timed out): the next job starts with the MSE handshake
/// the peer has not refused yet, and when that is refused too it goes to uTP
/// instead of trying plaintext over TCP a second time.
#[test]
fn tcp_off_peer_costs_two_tcp_attempts_across_jobs() {
    // The job's deadline comes before the retry's connect deadline.
    let cfg = FetchConfig {
        encryption: EncryptionPolicy::PreferPlaintext,
        infohash_timeout: Duration::from_secs(2),
        ..FetchConfig::default()
    };
    let mut f = Fetcher::new(cfg, Rng::new(7))
        .with_allow_private(true)
        .with_utp(true);
    let peer = addr(1);
    let t0 = Timestamp::ZERO;
    let (ih1, ih2) = (
        magnetar_core::InfoHash([7; 20]),
        magnetar_core::InfoHash([8; 20]),
    );
    f.fetch(t0, ih1, &[peer]).unwrap();
    // Job 1: plaintext over TCP, accepted and closed before a byte.
    let (c1, t1) = next_connect(&mut f);
    assert_eq!(t1, Transport::Tcp);
    assert_eq!(connect_mode(&mut f, t0, c1), WireMode::Plaintext);
    f.handle_closed(t0, c1, CloseReason::Eof);
    // Its MSE retry is under way when the job ends (here: its deadline).
    let (c2, t2) = next_connect(&mut f);
    assert_eq!(t2, Transport::Tcp);
    let end = t0.add(Duration::from_secs(2));
    f.handle_timeout(end);
    assert!(!f.is_fetching(&ih1));
    while f.poll_outcome().is_some() {}
    f.handle_closed(end, c2, CloseReason::Eof);
    // Job 2: MSE over TCP first (plaintext was refused there), refused too.
    f.fetch(end, ih2, &[peer]).unwrap();
    let (c3, t3) = next_connect(&mut f);
    assert_eq!(t3, Transport::Tcp);
    assert_eq!(connect_mode(&mut f, end, c3), WireMode::Encrypted);
    f.handle_closed(end, c3, CloseReason::Eof);
    // Then uTP, not plaintext over TCP again.
    let (_, t4) = next_connect(&mut f);
    assert_eq!(t4, Transport::Utp, "a third TCP attempt to a TCP-off peer");
}
