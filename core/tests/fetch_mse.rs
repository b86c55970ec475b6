//! The fetcher's encryption policy end to end against the sans-IO fake seeder
//! speaking MSE (its answering side): forced-RC4, forced-plaintext-after-MSE
//! and plaintext-only peers, the one retry the other way, the capability
//! cache, the Diffie-Hellman budget.
#![cfg(feature = "testkit")]

use std::net::SocketAddr;
use std::time::Duration;

use magnetar_core::fetch::{
    Encryption, EncryptionPolicy, FailReason, FetchConfig, Fetcher, PeerSessionReport,
    SessionOutcome, WireMode,
};
use magnetar_core::testkit::{build_info, Behavior, Chunking, InfoSpec, SeederEncryption, Swarm};
use magnetar_core::{Event, Rng, Timestamp};

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

#[test]
fn forced_rc4_peer_refuses_plaintext_then_serves_over_rc4() {
    for chunking in [Chunking::Whole, Chunking::Random { max: 37 }] {
        let mut sw = Swarm::new(1);
        sw.set_chunking(chunking);
        let ih = sw.add_seeder(addr(1), info("a"), Behavior::Honest);
        sw.set_encryption(addr(1), SeederEncryption::ForcedRc4);
        let mut f = fetcher(EncryptionPolicy::PreferPlaintext);
        f.fetch(Timestamp::ZERO, ih, &[addr(1)]).unwrap();
        let ev = sw.run(&mut f, 10_000);
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
    let mut sw = Swarm::new(2);
    let ih = sw.add_seeder(addr(1), info("a"), Behavior::Honest);
    sw.set_encryption(addr(1), SeederEncryption::ForcedPlaintext);
    let mut f = fetcher(EncryptionPolicy::Require);
    f.fetch(Timestamp::ZERO, ih, &[addr(1)]).unwrap();
    let ev = sw.run(&mut f, 10_000);
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
    let mut sw = Swarm::new(3);
    let ih = sw.add_seeder(addr(1), info("a"), Behavior::Honest);
    let mut f = fetcher(EncryptionPolicy::PreferEncrypted);
    f.fetch(Timestamp::ZERO, ih, &[addr(1)]).unwrap();
    let ev = sw.run(&mut f, 10_000);
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
    let mut sw = Swarm::new(4);
    let ih = sw.add_seeder(addr(1), info("a"), Behavior::Honest);
    let mut f = fetcher(EncryptionPolicy::Require);
    f.fetch(Timestamp::ZERO, ih, &[addr(1)]).unwrap();
    let ev = sw.run(&mut f, 10_000);
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
        f.peer_capability(&addr(1)).unwrap().refused,
        Some(WireMode::Encrypted)
    );
}

#[test]
fn silent_peer_fails_mse_with_dh_timeout() {
    let mut sw = Swarm::new(5);
    let ih = sw.add_seeder(addr(1), info("a"), Behavior::Silent);
    let mut f = fetcher(EncryptionPolicy::Require);
    f.fetch(Timestamp::ZERO, ih, &[addr(1)]).unwrap();
    let ev = sw.run(&mut f, 10_000);
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
    let mut sw = Swarm::new(6);
    let ih = sw.add_seeder(addr(1), info("a"), Behavior::Honest);
    sw.set_encryption(addr(1), SeederEncryption::Either);
    let mut f = fetcher(EncryptionPolicy::PreferPlaintext);
    f.fetch(Timestamp::ZERO, ih, &[addr(1)]).unwrap();
    let ev = sw.run(&mut f, 10_000);
    assert_eq!(
        modes(&ev),
        vec![(Encryption::Plaintext, SessionOutcome::Ok)]
    );
    assert_eq!(f.stats().encryption.encrypted_attempts, 0);
    // …and RC4 under prefer-encrypted.
    let mut sw = Swarm::new(6);
    let ih = sw.add_seeder(addr(1), info("a"), Behavior::Honest);
    sw.set_encryption(addr(1), SeederEncryption::Either);
    let mut f = fetcher(EncryptionPolicy::PreferEncrypted);
    f.fetch(Timestamp::ZERO, ih, &[addr(1)]).unwrap();
    let ev = sw.run(&mut f, 10_000);
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
    let mut sw = Swarm::new(8);
    let ih = sw.add_seeder(addr(1), info("a"), Behavior::CloseBeforeHandshake);
    let mut f = fetcher(EncryptionPolicy::PreferPlaintext);
    f.fetch(Timestamp::ZERO, ih, &[addr(1)]).unwrap();
    let ev = sw.run(&mut f, 10_000);
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
    let mut sw = Swarm::new(9);
    sw.set_chunking(Chunking::Fixed(1));
    sw.set_step(Duration::from_secs(1));
    let ih = sw.add_seeder(addr(1), info("a"), Behavior::Honest);
    sw.set_encryption(addr(1), SeederEncryption::ForcedRc4);
    let mut f = fetcher(EncryptionPolicy::Require);
    f.fetch(Timestamp::ZERO, ih, &[addr(1)]).unwrap();
    let ev = sw.run(&mut f, 100_000);
    let r = reports(&ev);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].outcome, SessionOutcome::Failed(FailReason::DhTimeout));
    assert!(
        r[0].duration <= Duration::from_secs(11),
        "{:?}",
        r[0].duration
    );
}
