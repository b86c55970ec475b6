//! Metadata fetcher end to end against the sans-IO fake seeder.
#![cfg(feature = "testkit")]
#![allow(clippy::field_reassign_with_default)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use magnetar_core::fetch::{
    FailReason, FetchConfig, Fetcher, MetadataFailed, MetadataFetched, SessionOutcome,
};
use magnetar_core::metadata::{InfoError, PieceError};
use magnetar_core::testkit::{build_info, Behavior, Chunking, InfoSpec, PeerSpec, Swarm};
use magnetar_core::wire::bencode::Owned;
use magnetar_core::Rng;
use magnetar_core::{ConnId, Event, InfoHash, Timestamp};

fn addr(i: u32) -> SocketAddr {
    SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)),
        6881,
    )
}

fn fetcher() -> Fetcher {
    Fetcher::new(FetchConfig::default(), Rng::new(7)).with_allow_private(true)
}

fn small_info() -> Vec<u8> {
    build_info(&InfoSpec::single("small.bin", 3 << 20))
}

/// > 64 KiB: 5+ metadata pieces.
fn big_info() -> Vec<u8> {
    let v = build_info(&InfoSpec::many_files("big", 2000, 1000));
    assert!(v.len() > 64 * 1024, "{}", v.len());
    v
}

fn fetched(ev: &[Event]) -> Vec<&MetadataFetched> {
    ev.iter()
        .filter_map(|e| match e {
            Event::MetadataFetched(m) => Some(&**m),
            _ => None,
        })
        .collect()
}

fn failed(ev: &[Event]) -> Vec<&MetadataFailed> {
    ev.iter()
        .filter_map(|e| match e {
            Event::MetadataFailed(m) => Some(&**m),
            _ => None,
        })
        .collect()
}

fn outcomes(ev: &[Event]) -> Vec<(SocketAddr, SessionOutcome)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::PeerSession(r) => Some((r.peer, r.outcome)),
            _ => None,
        })
        .collect()
}

#[test]
fn honest_single_piece() {
    let info = small_info();
    assert!(info.len() < 16 * 1024);
    let mut sw = Swarm::new(1);
    let ih = sw.add_seeder(addr(1), info.clone().into(), Behavior::Honest);
    let mut f = fetcher();
    f.fetch(Timestamp::ZERO, ih, &[addr(1)]).unwrap();
    assert!(f.is_fetching(&ih));
    let ev = sw.run(&mut f, 1000);
    let m = fetched(&ev);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].raw[..], info[..]);
    assert_eq!(m[0].info.name, "small.bin");
    assert_eq!(m[0].info.total_size, 3 << 20);
    assert_eq!(m[0].pieces, 1);
    assert_eq!(m[0].client.as_deref(), Some("FakeSeeder 1.0"));
    assert!(!f.is_fetching(&ih));
    assert_eq!(outcomes(&ev), vec![(addr(1), SessionOutcome::Ok)]);
    let rep = ev
        .iter()
        .find_map(|e| match e {
            Event::PeerSession(r) => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(rep.client.as_deref(), Some("Transmission 4.0.6.0"));
    assert_eq!(rep.ut_metadata, Some(3));
    assert!(rep.fast && rep.dht);
    assert_eq!(rep.yourip, Some("10.0.0.1".parse().unwrap()));
    assert_eq!(f.stats().fetched, 1);
    assert_eq!(f.poll_timeout(), None, "no timers left");
    assert_eq!(f.sessions(), 0);
}

#[test]
fn honest_multi_piece_any_chunking() {
    let info = big_info();
    let pieces = info.len().div_ceil(16 * 1024) as u32;
    for chunking in [
        Chunking::Whole,
        Chunking::Fixed(1000),
        Chunking::Random { max: 7000 },
    ] {
        let mut sw = Swarm::new(3);
        sw.set_chunking(chunking);
        let ih = sw.add_seeder(addr(1), info.clone().into(), Behavior::Honest);
        let mut f = fetcher();
        f.fetch(Timestamp::ZERO, ih, &[addr(1)]).unwrap();
        let ev = sw.run(&mut f, 100_000);
        let m = fetched(&ev);
        assert_eq!(m.len(), 1, "{chunking:?}");
        assert_eq!(m[0].raw[..], info[..]);
        assert_eq!(m[0].pieces, pieces);
        assert_eq!(m[0].info.files.len(), 2000);
        assert!(m[0].info.multi_file);
    }
}

/// Every hostile behaviour of the fake seeder serving `big`, with the reason it
/// must end in.
fn hostile_cases(big: &[u8]) -> Vec<(Behavior, FailReason)> {
    vec![
        // CloseBeforeHandshake is refused like a forced-encryption peer refuses
        // plaintext, so it is retried with MSE once: see
        // fetch_mse.rs::peer_closing_at_once_is_tried_both_ways.
        (Behavior::Silent, FailReason::IdleTimeout),
        (Behavior::WrongProtocol, FailReason::WrongProtocol),
        (Behavior::WrongInfoHash, FailReason::WrongInfoHash),
        (Behavior::NoExtensionBit, FailReason::NoExtensionBit),
        (Behavior::NoUtMetadata, FailReason::NoUtMetadata),
        (
            Behavior::MissingMetadataSize,
            FailReason::MissingMetadataSize,
        ),
        (
            Behavior::LieMetadataSize(big.len() as i64 + 100),
            FailReason::SizeMismatch,
        ),
        (Behavior::LieMetadataSize(11 << 20), FailReason::TooLarge),
        (
            Behavior::LieMetadataSize(0),
            FailReason::InvalidMetadataSize,
        ),
        (Behavior::CorruptPiece(2), FailReason::HashMismatch),
        (
            Behavior::OutOfRangePiece,
            FailReason::BadPiece(PieceError::OutOfRange),
        ),
        (
            Behavior::ShortPiece,
            FailReason::BadPiece(PieceError::WrongSize),
        ),
        (
            Behavior::UnrequestedPiece,
            FailReason::BadPiece(PieceError::Unrequested),
        ),
        (Behavior::Reject, FailReason::Rejected),
        (Behavior::CloseAfterPieces(2), FailReason::ClosedMidTransfer),
        (Behavior::Stall, FailReason::IdleTimeout),
        (Behavior::HugeFrame, FailReason::FrameTooLarge),
    ]
}

/// Every hostile behaviour ends in its exact reason, and nothing is accepted.
#[test]
fn hostile_seeders_fail_with_exact_reason() {
    let big = big_info();
    for (b, want) in hostile_cases(&big) {
        for chunking in [Chunking::Whole, Chunking::Random { max: 300 }] {
            let mut sw = Swarm::new(5);
            sw.set_chunking(chunking);
            let ih = sw.add_seeder(addr(1), big.clone().into(), b.clone());
            let mut f = fetcher();
            f.fetch(Timestamp::ZERO, ih, &[addr(1)]).unwrap();
            let ev = sw.run(&mut f, 100_000);
            assert!(fetched(&ev).is_empty(), "{b:?}");
            let fl = failed(&ev);
            assert_eq!(fl.len(), 1, "{b:?}");
            assert_eq!(fl[0].reasons, vec![(addr(1), want)], "{b:?} {chunking:?}");
            assert_eq!(outcomes(&ev), vec![(addr(1), SessionOutcome::Failed(want))]);
            assert_eq!(f.stats().failure_count(want), 1);
            assert_eq!(f.stats().fetched, 0);
            assert!(!f.is_fetching(&ih));
            assert_eq!(f.sessions(), 0);
        }
    }
}

/// The same hostile seeders behind a uTP stream (issue 15: every hostile
/// behaviour the TCP path survives is survived the same way over uTP): the
/// same reason, one uTP session, nothing accepted, every stream closed. The
/// seeder talked to us over UDP, so uTP goes first (its TCP is refused).
#[test]
fn hostile_seeders_fail_with_exact_reason_over_utp() {
    use magnetar_core::fetch::Transport;
    use magnetar_core::testkit::UtpSwarm;
    use magnetar_core::SocketId;
    let big = big_info();
    for (b, want) in hostile_cases(&big) {
        let mut w = UtpSwarm::new(5, Duration::from_millis(20), 0);
        w.set_behavior(b.clone());
        let ih = w.set_seeder(addr(1), big.clone().into());
        let mut f = fetcher().with_utp(true);
        f.note_udp_contact(Timestamp::ZERO, addr(1), SocketId(0));
        f.fetch(Timestamp::ZERO, ih, &[addr(1)]).unwrap();
        let mut ev = Vec::new();
        w.run_into(&mut f, 1_000_000, &mut ev);
        assert!(fetched(&ev).is_empty(), "{b:?}");
        let fl = failed(&ev);
        assert_eq!(fl.len(), 1, "{b:?}");
        assert_eq!(fl[0].reasons, vec![(addr(1), want)], "{b:?}");
        let sessions: Vec<_> = ev
            .iter()
            .filter_map(|e| match e {
                Event::PeerSession(r) => Some((r.transport, r.outcome)),
                _ => None,
            })
            .collect();
        assert_eq!(
            sessions,
            vec![(Transport::Utp, SessionOutcome::Failed(want))],
            "{b:?}"
        );
        assert_eq!(w.tcp_refused, 0, "{b:?}");
        assert_eq!(f.sessions(), 0);
        assert!(w.ours().is_empty(), "{b:?}: {:?}", w.ours().stats());
    }
}

#[test]
fn connect_refused_and_connect_timeout() {
    let info = small_info();
    let mut sw = Swarm::new(1);
    let ih = magnetar_core::metadata::sha1_info_hash(&info);
    sw.add_spec(addr(1), PeerSpec::Refuse);
    sw.add_spec(addr(2), PeerSpec::Blackhole);
    let mut f = fetcher();
    f.fetch(Timestamp::ZERO, ih, &[addr(1), addr(2)]).unwrap();
    let ev = sw.run(&mut f, 1000);
    let fl = failed(&ev);
    assert_eq!(fl.len(), 1);
    assert_eq!(
        fl[0].reasons,
        vec![
            (addr(1), FailReason::ConnectRefused),
            (addr(2), FailReason::ConnectTimeout)
        ]
    );
    assert_eq!(fl[0].elapsed, Duration::from_secs(3));
}

/// A hostile peer first, then an honest one: the fetch falls over and succeeds.
#[test]
fn falls_over_to_next_peer() {
    let info = big_info();
    let mut cfg = FetchConfig::default();
    cfg.peers_per_infohash = 1;
    for hostile in [
        Behavior::CorruptPiece(0),
        Behavior::Reject,
        Behavior::Stall,
        Behavior::NoUtMetadata,
    ] {
        let mut sw = Swarm::new(9);
        let ih = sw.add_seeder(addr(1), info.clone().into(), hostile.clone());
        sw.add_seeder(addr(2), info.clone().into(), Behavior::Honest);
        let mut f = Fetcher::new(cfg.clone(), Rng::new(1)).with_allow_private(true);
        f.fetch(Timestamp::ZERO, ih, &[addr(1), addr(2)]).unwrap();
        let ev = sw.run(&mut f, 100_000);
        let m = fetched(&ev);
        assert_eq!(m.len(), 1, "{hostile:?}");
        assert_eq!(m[0].peer, addr(2));
        assert_eq!(m[0].peers_tried, 2);
        assert_eq!(m[0].raw[..], info[..]);
        assert_eq!(sw.connects, vec![addr(1), addr(2)]);
        let o = outcomes(&ev);
        assert!(matches!(o[0], (a, SessionOutcome::Failed(_)) if a == addr(1)));
        assert_eq!(o[1], (addr(2), SessionOutcome::Ok));
    }
}

/// With parallel sessions, the others are cancelled when one delivers.
#[test]
fn parallel_sessions_cancelled_on_success() {
    let info = big_info();
    let mut sw = Swarm::new(2);
    let ih = sw.add_seeder(addr(1), info.clone().into(), Behavior::Stall);
    sw.add_seeder(addr(2), info.clone().into(), Behavior::Honest);
    sw.add_seeder(addr(3), info.clone().into(), Behavior::Stall);
    sw.add_seeder(addr(4), info.clone().into(), Behavior::Honest);
    let mut f = fetcher();
    f.fetch(Timestamp::ZERO, ih, &[addr(1), addr(2), addr(3), addr(4)])
        .unwrap();
    let ev = sw.run(&mut f, 100_000);
    assert_eq!(fetched(&ev).len(), 1);
    assert_eq!(sw.connects.len(), 3, "P = 3");
    let o = outcomes(&ev);
    assert!(o.contains(&(addr(2), SessionOutcome::Ok)));
    assert!(o.contains(&(addr(1), SessionOutcome::Cancelled)));
    assert!(o.contains(&(addr(3), SessionOutcome::Cancelled)));
    assert_eq!(f.sessions(), 0);
    assert_eq!(f.poll_timeout(), None);
}

#[test]
fn pex_peers_join_the_fetch() {
    let info = small_info();
    let mut sw = Swarm::new(2);
    let ih = magnetar_core::metadata::sha1_info_hash(&info);
    sw.add_spec(
        addr(1),
        PeerSpec::Seeder {
            info: info.clone().into(),
            info_hash: ih,
            behavior: Behavior::Stall,
            pex: vec![addr(2), addr(1)],
        },
    );
    sw.add_seeder(addr(2), info.clone().into(), Behavior::Honest);
    let mut f = fetcher();
    f.fetch(Timestamp::ZERO, ih, &[addr(1)]).unwrap();
    let ev = sw.run(&mut f, 10_000);
    let m = fetched(&ev);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].peer, addr(2));
    assert_eq!(f.stats().pex_received, 2);
    assert_eq!(f.stats().peers_duplicate, 1);
}

#[test]
fn duplicates_dropped_and_more_peers_while_running() {
    let info = small_info();
    let mut sw = Swarm::new(2);
    let ih = sw.add_seeder(addr(1), info.clone().into(), Behavior::Stall);
    sw.add_seeder(addr(2), info.clone().into(), Behavior::Honest);
    let mut cfg = FetchConfig::default();
    cfg.peers_per_infohash = 1;
    let mut f = Fetcher::new(cfg, Rng::new(1)).with_allow_private(true);
    f.fetch(Timestamp::ZERO, ih, &[addr(1), addr(1)]).unwrap();
    assert_eq!(f.stats().peers_duplicate, 1);
    // Let the stalling session start, then add a peer to the running fetch.
    let mut ev = sw.run(&mut f, 2);
    assert!(f.is_fetching(&ih));
    f.fetch(sw.now(), ih, &[addr(1), addr(2)]).unwrap();
    assert_eq!(f.stats().peers_duplicate, 2);
    sw.run_into(&mut f, 10_000, &mut ev);
    assert_eq!(fetched(&ev).len(), 1);
    assert_eq!(fetched(&ev)[0].peer, addr(2));
    assert_eq!(f.stats().failure_count(FailReason::IdleTimeout), 1);
}

#[test]
fn per_ip_and_global_caps() {
    let info = small_info();
    let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 1, 1));
    let peers: Vec<SocketAddr> = (0..5).map(|p| SocketAddr::new(ip, 1000 + p)).collect();
    let mut sw = Swarm::new(2);
    let mut ih = InfoHash::ZERO;
    for p in &peers {
        ih = sw.add_seeder(*p, info.clone().into(), Behavior::Stall);
    }
    let mut f = fetcher();
    f.fetch(Timestamp::ZERO, ih, &peers).unwrap();
    assert_eq!(f.sessions(), 2, "per-IP cap");
    let ev = sw.run(&mut f, 100_000);
    let fl = failed(&ev);
    assert_eq!(fl.len(), 1);
    assert_eq!(fl[0].reasons.len(), 5);
    assert!(fl[0]
        .reasons
        .iter()
        .all(|(_, r)| *r == FailReason::IdleTimeout));

    // Global cap: 2 sessions in total across infohashes.
    let mut cfg = FetchConfig::default();
    cfg.max_sessions = 2;
    let mut f = Fetcher::new(cfg, Rng::new(1)).with_allow_private(true);
    let mut sw = Swarm::new(3);
    let mut ihs = Vec::new();
    for i in 0..4u32 {
        let inf = build_info(&InfoSpec::single(&format!("t{i}"), 100));
        ihs.push(sw.add_seeder(addr(10 + i), inf.into(), Behavior::Honest));
    }
    for (i, ih) in ihs.iter().enumerate() {
        f.fetch(Timestamp::ZERO, *ih, &[addr(10 + i as u32)])
            .unwrap();
    }
    assert_eq!(f.sessions(), 2);
    let ev = sw.run(&mut f, 100_000);
    assert_eq!(fetched(&ev).len(), 4);
}

#[test]
fn infohash_deadline() {
    let info = small_info();
    let mut cfg = FetchConfig::default();
    cfg.peers_per_infohash = 1;
    cfg.infohash_timeout = Duration::from_secs(12);
    let mut sw = Swarm::new(2);
    let mut peers = Vec::new();
    let mut ih = InfoHash::ZERO;
    for i in 0..4 {
        peers.push(addr(i));
        ih = sw.add_seeder(addr(i), info.clone().into(), Behavior::Stall);
    }
    let mut f = Fetcher::new(cfg, Rng::new(1)).with_allow_private(true);
    f.fetch(Timestamp::ZERO, ih, &peers).unwrap();
    let ev = sw.run(&mut f, 100_000);
    let fl = failed(&ev);
    assert_eq!(fl.len(), 1);
    assert!(fl[0].timed_out);
    assert_eq!(fl[0].elapsed, Duration::from_secs(12));
    assert_eq!(
        fl[0].reasons,
        vec![
            (addr(0), FailReason::IdleTimeout),
            (addr(1), FailReason::IdleTimeout),
            (addr(2), FailReason::InfohashTimeout),
            (addr(3), FailReason::NotTried),
        ]
    );
    assert_eq!(f.poll_timeout(), None);
}

#[test]
fn capability_cache_skips_peers_without_metadata() {
    let mut sw = Swarm::new(2);
    let a = build_info(&InfoSpec::single("a", 10));
    let b = build_info(&InfoSpec::single("b", 10));
    let iha = sw.add_seeder(addr(1), a.into(), Behavior::NoUtMetadata);
    let mut f = fetcher();
    f.fetch(Timestamp::ZERO, iha, &[addr(1)]).unwrap();
    sw.run(&mut f, 1000);
    let cap = f.peer_capability(&addr(1)).unwrap();
    assert_eq!(cap.ut_metadata, Some(false));
    assert_eq!(cap.client.as_deref(), Some("FakeSeeder 1.0"));
    assert_eq!(cap.last_failure, Some(FailReason::NoUtMetadata));
    // Another torrent from the same peer: skipped, no connection.
    let ihb = magnetar_core::metadata::sha1_info_hash(&b);
    let before = sw.connects.len();
    f.fetch(sw.now(), ihb, &[addr(1)]).unwrap();
    let ev = sw.run(&mut f, 1000);
    assert_eq!(sw.connects.len(), before);
    assert_eq!(
        failed(&ev)[0].reasons,
        vec![(addr(1), FailReason::KnownNoMetadata)]
    );
    assert_eq!(f.stats().peers_skipped_cache, 1);
}

#[test]
fn invalid_info_dict_with_matching_hash() {
    let bad = Owned::dict()
        .with("name", Owned::str("x"))
        .with("piece length", Owned::Int(16384))
        .with("length", Owned::Int(10))
        .with("pieces", Owned::Bytes(vec![0; 21]))
        .to_bytes();
    let mut sw = Swarm::new(2);
    let ih = sw.add_seeder(addr(1), bad.into(), Behavior::Honest);
    let mut f = fetcher();
    f.fetch(Timestamp::ZERO, ih, &[addr(1)]).unwrap();
    let ev = sw.run(&mut f, 1000);
    let fl = failed(&ev);
    assert_eq!(fl[0].info_error, Some(InfoError::PiecesNotMultipleOf20));
    assert_eq!(
        fl[0].reasons,
        vec![(
            addr(1),
            FailReason::InvalidInfo(InfoError::PiecesNotMultipleOf20)
        )]
    );
}

#[test]
fn v2_truncated_sha256_accepted() {
    use sha2::{Digest, Sha256};
    let info = small_info();
    let d = Sha256::digest(&info);
    let ih = InfoHash::from_slice(&d[..20]).unwrap();
    let mut sw = Swarm::new(2);
    sw.add_spec(
        addr(1),
        PeerSpec::Seeder {
            info: Bytes::from(info.clone()),
            info_hash: ih,
            behavior: Behavior::Honest,
            pex: vec![],
        },
    );
    let mut f = fetcher();
    f.fetch(Timestamp::ZERO, ih, &[addr(1)]).unwrap();
    let ev = sw.run(&mut f, 1000);
    let m = fetched(&ev);
    assert_eq!(m.len(), 1);
    assert_eq!(
        m[0].hash,
        magnetar_core::metadata::HashKind::Sha256Truncated
    );
}

#[test]
fn api_misuse_and_stale_ids() {
    let mut f = fetcher();
    let ih = InfoHash([1; 20]);
    assert!(f.fetch(Timestamp::ZERO, ih, &[]).is_err());
    let mut cfg = FetchConfig::default();
    cfg.max_jobs = 1;
    let mut g = Fetcher::new(cfg, Rng::new(1)).with_allow_private(true);
    g.fetch(Timestamp::ZERO, ih, &[addr(1)]).unwrap();
    assert_eq!(
        g.fetch(Timestamp::ZERO, InfoHash([2; 20]), &[addr(1)]),
        Err(magnetar_core::ApiMisuse::Full)
    );
    // Stale / unknown connection ids are ignored.
    let bogus = ConnId {
        index: 0,
        generation: 99,
    };
    g.handle_data(Timestamp::ZERO, bogus, b"garbage");
    g.handle_closed(Timestamp::ZERO, bogus, magnetar_core::CloseReason::Eof);
    g.handle_connected(Timestamp::ZERO, bogus);
    assert_eq!(g.stats().stale_conn_events, 3);
}

/// A connect that fails on our side (EMFILE: `CloseReason::LocalError`) is not the
/// peer's fault: the peer is tried again after a back-off that doubles while the
/// errors repeat, and never appears among the fetch's failure reasons.
#[test]
fn local_errors_back_off_and_retry_the_peer() {
    use magnetar_core::{CloseReason, Output};
    let info = small_info();
    let ih = magnetar_core::metadata::sha1_info_hash(&info);
    let mut f = fetcher();
    let t0 = Timestamp::ZERO;
    f.fetch(t0, ih, &[addr(1)]).unwrap();
    let connects = |f: &mut Fetcher| {
        let mut v = Vec::new();
        while let Some(o) = f.poll_output() {
            match o {
                Output::Connect { conn, to } => v.push((conn, to)),
                Output::Event(Event::MetadataFailed(m)) => panic!("failed: {m:?}"),
                _ => {}
            }
        }
        v
    };
    let mut now = t0;
    let mut waits = Vec::new();
    for _ in 0..4 {
        let c = connects(&mut f);
        assert_eq!(c.len(), 1, "one connect to the one peer");
        assert_eq!(c[0].1, addr(1));
        f.handle_closed(now, c[0].0, CloseReason::LocalError);
        // No connect during the back-off, and no failure either.
        assert!(connects(&mut f).is_empty());
        let resume = f.poll_timeout().expect("a resume timer");
        waits.push(resume.since(now));
        // A timeout just before the resume starts nothing.
        f.handle_timeout(Timestamp(resume.0 - 1));
        assert!(connects(&mut f).is_empty());
        now = resume;
        f.handle_timeout(now);
    }
    assert_eq!(
        waits,
        vec![
            Duration::from_millis(250),
            Duration::from_millis(500),
            Duration::from_secs(1),
            Duration::from_secs(2)
        ]
    );
    assert_eq!(f.stats().local_backoffs, 4);
    assert_eq!(f.stats().failure_count(FailReason::LocalError), 4);
    // The fifth attempt is refused by the peer: the fetch fails with that reason
    // alone, and the peer counts as tried once.
    let c = connects(&mut f);
    assert_eq!(c.len(), 1);
    f.handle_closed(now, c[0].0, CloseReason::Refused);
    let mut ev = Vec::new();
    while let Some(o) = f.poll_output() {
        if let Output::Event(e) = o {
            ev.push(e);
        }
    }
    let fl = failed(&ev);
    assert_eq!(fl.len(), 1);
    assert_eq!(fl[0].reasons, vec![(addr(1), FailReason::ConnectRefused)]);
    assert_eq!(fl[0].peers_tried, 1);
}

/// After a successful connect the local back-off starts again from its minimum.
#[test]
fn local_backoff_resets_after_a_connect() {
    use magnetar_core::{CloseReason, Output};
    let mut f = fetcher();
    let ih = InfoHash([3; 20]);
    f.fetch(Timestamp::ZERO, ih, &[addr(1), addr(2)]).unwrap();
    let first = |f: &mut Fetcher| loop {
        match f.poll_output() {
            Some(Output::Connect { conn, .. }) => return conn,
            Some(_) => {}
            None => panic!("no connect"),
        }
    };
    let mut now = Timestamp::ZERO;
    for _ in 0..3 {
        let c = first(&mut f);
        f.handle_closed(now, c, CloseReason::LocalError);
        now = f.poll_timeout().unwrap();
        f.handle_timeout(now);
    }
    let c = first(&mut f);
    f.handle_connected(now, c);
    // Another peer's connect now fails locally: the pause is the minimum again.
    let c2 = first(&mut f);
    f.handle_closed(now, c2, CloseReason::LocalError);
    let resume = f.poll_timeout().unwrap();
    assert_eq!(resume.since(now), Duration::from_millis(250));
}

/// PEX from a connected peer (`added` and `added6` of a ut_pex message) that
/// names private, loopback, link-local and CGNAT addresses next to a public
/// seeder: `peers` lists them; returns the events and the fetcher.
fn pex_with_private_peers(allow_private: bool) -> (Vec<Event>, Fetcher, Vec<SocketAddr>) {
    let info = small_info();
    let ih = magnetar_core::metadata::sha1_info_hash(&info);
    let first: SocketAddr = "45.0.0.1:6881".parse().unwrap();
    let honest: SocketAddr = "45.0.0.2:6881".parse().unwrap();
    let private: Vec<SocketAddr> = [
        "127.0.0.1:6881",
        "10.0.0.2:6881",
        "192.168.1.1:6881",
        "169.254.1.1:6881",
        "100.64.0.1:6881",
        "[fe80::1]:6881",
        "[fd00::2]:6881",
        "[::ffff:127.0.0.2]:6881",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let mut pex = private.clone();
    pex.push(honest);
    let mut sw = Swarm::new(3);
    sw.add_spec(
        first,
        PeerSpec::Seeder {
            info: info.clone().into(),
            info_hash: ih,
            behavior: Behavior::Stall,
            pex,
        },
    );
    sw.add_seeder(honest, info.clone().into(), Behavior::Honest);
    let mut cfg = FetchConfig::default();
    // One session at a time, so that every PEX peer gets its turn before the
    // honest one (or not at all).
    cfg.peers_per_infohash = 1;
    let mut f = Fetcher::new(cfg, Rng::new(1)).with_allow_private(allow_private);
    f.fetch(Timestamp::ZERO, ih, &[first]).unwrap();
    let ev = sw.run(&mut f, 100_000);
    (ev, f, private)
}

#[test]
fn pex_never_leads_to_private_addresses() {
    // (Fails before the fix: the fetcher connected to every PEX address.)
    let (ev, f, private) = pex_with_private_peers(false);
    let m = fetched(&ev);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].peer, "45.0.0.2:6881".parse::<SocketAddr>().unwrap());
    let tried: Vec<SocketAddr> = outcomes(&ev).into_iter().map(|(p, _)| p).collect();
    for p in &private {
        let p4 = magnetar_core::addr::canonical(*p);
        assert!(!tried.contains(p) && !tried.contains(&p4), "{p} tried");
    }
    assert_eq!(f.stats().pex_received, private.len() as u64 + 1);
    assert_eq!(f.stats().peers_invalid, private.len() as u64);
    // The API is filtered too: a fetch from private peers only is refused.
    let mut g = Fetcher::new(FetchConfig::default(), Rng::new(1));
    let ih = InfoHash([5; 20]);
    assert!(g.fetch(Timestamp::ZERO, ih, &private).is_err());
    assert!(!g.is_fetching(&ih));
    assert!(g.poll_output().is_none());
    assert_eq!(g.stats().peers_invalid, private.len() as u64);

    // With allow_private they are tried.
    let (ev, f, private) = pex_with_private_peers(true);
    let tried: Vec<SocketAddr> = outcomes(&ev).into_iter().map(|(p, _)| p).collect();
    assert!(
        private
            .iter()
            .any(|p| tried.contains(&magnetar_core::addr::canonical(*p))),
        "{tried:?}"
    );
    assert_eq!(f.stats().peers_invalid, 0);
}
