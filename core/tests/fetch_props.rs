//! Property tests for the metadata fetcher: chunking independence, parser robustness
//! and info-dict round trips.
#![cfg(feature = "testkit")]

use std::net::SocketAddr;

use magnetar_core::fetch::{FetchConfig, Fetcher};
use magnetar_core::metadata::{parse_info, sha1_info_hash};
use magnetar_core::session::{Progress, Session, SessionConfig};
use magnetar_core::testkit::{build_info, Behavior, Chunking, FakeSeeder, InfoSpec, Swarm};
use magnetar_core::InfoHash;
use magnetar_core::Rng;
use magnetar_core::{Event, Timestamp};
use quickcheck::{quickcheck, Arbitrary, Gen, TestResult};

fn behaviors(len: usize) -> Vec<Behavior> {
    vec![
        Behavior::Honest,
        Behavior::CloseBeforeHandshake,
        Behavior::WrongProtocol,
        Behavior::WrongInfoHash,
        Behavior::NoExtensionBit,
        Behavior::NoUtMetadata,
        Behavior::MissingMetadataSize,
        Behavior::LieMetadataSize(len as i64 + 1),
        Behavior::LieMetadataSize(-5),
        Behavior::CorruptPiece(1),
        Behavior::OutOfRangePiece,
        Behavior::ShortPiece,
        Behavior::UnrequestedPiece,
        Behavior::Reject,
        Behavior::CloseAfterPieces(1),
        Behavior::Stall,
        Behavior::HugeFrame,
    ]
}

/// A comparable summary of a fetch: success bytes, or each peer's reason.
fn summary(ev: &[Event]) -> Vec<String> {
    ev.iter()
        .filter_map(|e| match e {
            Event::MetadataFetched(m) => Some(format!("ok {} {}", m.peer, m.raw.len())),
            Event::MetadataFailed(m) => Some(format!("fail {:?}", m.reasons)),
            Event::PeerSession(r) => {
                Some(format!("session {} {:?} {}", r.peer, r.outcome, r.pieces))
            }
            _ => None,
        })
        .collect()
}

fn run_fetch(info: &[u8], b: &Behavior, chunking: Chunking, seed: u64) -> Vec<String> {
    let peer: SocketAddr = "10.0.0.9:6881".parse().unwrap();
    let honest: SocketAddr = "10.0.0.10:6881".parse().unwrap();
    let mut sw = Swarm::new(seed);
    sw.set_chunking(chunking);
    let ih = sw.add_seeder(peer, info.to_vec().into(), b.clone());
    sw.add_seeder(honest, info.to_vec().into(), Behavior::Honest);
    let cfg = FetchConfig {
        peers_per_infohash: 1,
        ..FetchConfig::default()
    };
    let mut f = Fetcher::new(cfg, Rng::new(seed)).with_allow_private(true);
    f.fetch(Timestamp::ZERO, ih, &[peer, honest]).unwrap();
    summary(&sw.run(&mut f, 1_000_000))
}

#[test]
fn outcome_independent_of_chunking() {
    let info = build_info(&InfoSpec::many_files("p", 1200, 7));
    assert!(info.len() > 2 * 16 * 1024);
    fn prop(which: u8, max: u16, seed: u64) -> bool {
        let info = build_info(&InfoSpec::many_files("p", 1200, 7));
        let bs = behaviors(info.len());
        let b = &bs[which as usize % bs.len()];
        let whole = run_fetch(&info, b, Chunking::Whole, 1);
        let chunked = run_fetch(
            &info,
            b,
            Chunking::Random {
                max: 1 + max as usize % 3000,
            },
            seed,
        );
        if whole != chunked {
            eprintln!("{b:?}\n{whole:?}\n{chunked:?}");
        }
        whole == chunked
    }
    quickcheck::QuickCheck::new()
        .tests(60)
        .quickcheck(prop as fn(u8, u16, u64) -> bool);
}

/// Session level: one recorded honest transcript, split at arbitrary points, always
/// yields the same verified bytes.
#[test]
fn session_transcript_any_split() {
    let info = build_info(&InfoSpec::many_files("s", 900, 3));
    let ih = sha1_info_hash(&info);
    // Record what an honest seeder sends, answering a whole-window session.
    let cfg = SessionConfig {
        request_window: 1000,
        ..SessionConfig::default()
    };
    let mut s = Session::new(ih, b"-MG0100-000000000000", &cfg);
    let mut seeder = FakeSeeder::new(info.clone().into(), Behavior::Honest);
    let mut transcript = Vec::new();
    let mut to_seeder = s.take_output().unwrap();
    for _ in 0..10 {
        seeder.on_data(&to_seeder);
        let b = seeder.take_output();
        transcript.extend_from_slice(&b);
        let _ = s.feed(&b);
        to_seeder = s.take_output().unwrap_or_default();
    }
    fn prop(cuts: Vec<u16>, ih: InfoHash, transcript: Vec<u8>, info: Vec<u8>) -> bool {
        let cfg = SessionConfig {
            request_window: 1000,
            ..SessionConfig::default()
        };
        let mut s = Session::new(ih, b"-MG0100-000000000000", &cfg);
        let mut rest = &transcript[..];
        let mut cuts = cuts.into_iter().cycle();
        let mut result = None;
        while !rest.is_empty() {
            let n = (1 + cuts.next().unwrap_or(u16::MAX) as usize).min(rest.len());
            let (a, b) = rest.split_at(n);
            rest = b;
            if let Progress::Done(v) = s.feed(a) {
                result = Some(v.raw);
            }
        }
        result == Some(info)
    }
    let mut g = Gen::new(64);
    for _ in 0..50 {
        let cuts: Vec<u16> = (0..1 + u8::arbitrary(&mut g) % 16)
            .map(|_| u16::arbitrary(&mut g) % 5000)
            .collect();
        assert!(prop(cuts, ih, transcript.clone(), info.clone()));
    }
}

quickcheck! {
    fn info_parser_never_panics(bytes: Vec<u8>) -> bool {
        let _ = parse_info(&bytes);
        true
    }

    fn info_parser_never_panics_on_mutations(pos: Vec<(u16, u8)>) -> bool {
        let mut v = build_info(&InfoSpec::many_files("m", 5, 100));
        for (p, b) in pos {
            let i = p as usize % v.len();
            v[i] = b;
        }
        let _ = parse_info(&v);
        true
    }
}

#[derive(Clone, Debug)]
struct ArbSpec(InfoSpec);

fn comp(g: &mut Gen) -> Vec<u8> {
    const CH: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-_ .";
    let n = 1 + usize::arbitrary(g) % 12;
    let mut c: Vec<u8> = (0..n).map(|_| *g.choose(CH).unwrap_or(&b'a')).collect();
    if c == b"." || c == b".." {
        c.push(b'x');
    }
    c
}

impl Arbitrary for ArbSpec {
    fn arbitrary(g: &mut Gen) -> Self {
        let multi = bool::arbitrary(g);
        let files = multi.then(|| {
            (0..1 + usize::arbitrary(g) % 20)
                .map(|_| {
                    let depth = 1 + usize::arbitrary(g) % 4;
                    (
                        (0..depth).map(|_| comp(g)).collect(),
                        u64::from(u32::arbitrary(g)),
                    )
                })
                .collect()
        });
        ArbSpec(InfoSpec {
            name: comp(g),
            piece_length: 1 << (14 + u32::arbitrary(g) % 9),
            files,
            length: u64::from(u32::arbitrary(g)),
            private: bool::arbitrary(g),
            source: bool::arbitrary(g).then(|| comp(g)),
        })
    }
}

quickcheck! {
    fn valid_info_round_trips(spec: ArbSpec) -> TestResult {
        let spec = spec.0;
        let raw = build_info(&spec);
        let info = match parse_info(&raw) {
            Ok(i) => i,
            Err(e) => return TestResult::error(format!("{e:?}")),
        };
        let name = String::from_utf8(spec.name.clone()).unwrap();
        let mut ok = info.name == name
            && info.name_raw.is_none()
            && info.piece_length == spec.piece_length
            && info.piece_length_power_of_two
            && info.total_size == spec.total_size()
            && info.piece_count == spec.total_size().div_ceil(spec.piece_length)
            && info.private == spec.private
            && info.source.as_deref().map(str::as_bytes) == spec.source.as_deref()
            && info.multi_file == spec.files.is_some();
        match &spec.files {
            None => ok &= info.files.len() == 1 && info.files[0].length == spec.length,
            Some(files) => {
                ok &= info.files.len() == files.len();
                for (f, (path, len)) in info.files.iter().zip(files) {
                    let p: Vec<Vec<u8>> = f.path.iter().map(|s| s.as_bytes().to_vec()).collect();
                    ok &= &p == path && f.length == *len && f.path_raw.is_none();
                }
            }
        }
        TestResult::from_bool(ok)
    }
}
