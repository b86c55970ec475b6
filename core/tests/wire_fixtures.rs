//! Peer-wire streams and KRPC queries that libtorrent 2.1.1 really sent, captured on
//! loopback by `fixtures/wire/capture_libtorrent_wire.py` (see its docstring), decoded
//! with the wire APIs and fed to a metadata [`Session`] in many chunkings.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use magnetar_core::krpc::{self, Body, QueryKind};
use magnetar_core::metadata::{self, Assembler, HashKind};
use magnetar_core::session::{FailReason, Progress, Session, SessionConfig};
use magnetar_core::wire::{self, Deframer, Frame, MetadataMsg};
use magnetar_core::InfoHash;

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/wire")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn ih_of(info: &[u8]) -> InfoHash {
    metadata::sha1_info_hash(info)
}

/// What each captured torrent must decode to: (fixture, name, total size, files,
/// ut_metadata pieces).
const TORRENTS: &[(&str, &str, u64, usize, usize)] = &[
    ("single", "single.bin", 40000, 1, 1),
    (
        "unicode",
        "Mehrteilig — 多文件 ✓",
        1234 + 5678 + 30000 + 10,
        4,
        1,
    ),
    ("big", "big", BIG_SIZE, 1500, 8),
];
/// 1500 files of 1 + i % 97 bytes.
const BIG_SIZE: u64 = {
    let mut s = 0;
    let mut i = 0;
    while i < 1500 {
        s += 1 + i % 97;
        i += 1;
    }
    s
};

/// Decodes the stream with the wire APIs only and assembles the metadata.
#[test]
fn libtorrent_streams_decode_with_wire_apis() {
    for &(fx, name, size, files, pieces) in TORRENTS {
        let info = fixture(&format!("lt_{fx}.info.bin"));
        let stream = fixture(&format!("lt_{fx}.stream.bin"));
        let ih = ih_of(&info);
        let mut de = Deframer::new(wire::MAX_FRAME);
        de.push(&stream);
        let hs = de.next_handshake().unwrap().expect("a full handshake");
        assert_eq!(hs.info_hash, ih, "{fx}");
        assert!(hs.supports_extensions() && hs.supports_fast() && hs.supports_dht());
        assert_eq!(
            wire::client_from_peer_id(&hs.peer_id).as_deref(),
            Some("libtorrent 2.1.1.0"),
            "{fx}: peer id {:?}",
            String::from_utf8_lossy(&hs.peer_id)
        );

        let mut ext = None;
        let mut asm: Option<Assembler> = None;
        let mut data_msgs = 0;
        let mut other_ids = Vec::new();
        while let Some(frame) = de.next_frame().unwrap() {
            match frame {
                Frame::Message {
                    id: wire::MSG_EXTENDED,
                    payload,
                } => {
                    let (&ext_id, body) = payload.split_first().unwrap();
                    if ext_id == wire::EXT_HANDSHAKE {
                        let h = wire::parse_ext_handshake(body).unwrap();
                        let sz = h.metadata_size.unwrap();
                        assert_eq!(sz as usize, info.len(), "{fx}");
                        asm = Some(Assembler::new(sz as usize));
                        ext = Some(h);
                        continue;
                    }
                    // libtorrent addresses BEP 9 messages to the id we announced.
                    assert_eq!(ext_id, wire::OUR_UT_METADATA, "{fx}");
                    match wire::parse_metadata_msg(body).unwrap() {
                        MetadataMsg::Data {
                            piece,
                            total_size,
                            data,
                        } => {
                            assert_eq!(total_size, Some(info.len() as i64));
                            asm.as_mut().unwrap().insert(piece, data).unwrap();
                            data_msgs += 1;
                        }
                        m => panic!("{fx}: unexpected {m:?}"),
                    }
                }
                Frame::Message { id, .. } => other_ids.push(id),
                Frame::KeepAlive => {}
                Frame::Handshake(_) => unreachable!(),
            }
        }
        let ext = ext.expect("an extension handshake");
        assert_eq!(ext.ut_metadata, Some(2), "{fx}");
        assert!(ext.ut_pex.is_some());
        assert_eq!(ext.client.as_deref(), Some("libtorrent/2.1.1.0"));
        assert_eq!(ext.yourip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(ext.reqq.unwrap() >= 16);
        // have_all (BEP 6) and whatever else libtorrent says before the data.
        assert!(other_ids.contains(&0x0e), "{fx}: {other_ids:?}");
        assert_eq!(data_msgs, pieces, "{fx}");
        let asm = asm.unwrap();
        assert_eq!(asm.remaining(), 0);
        let raw = asm.into_bytes();
        assert_eq!(raw, info);
        assert_eq!(metadata::verify(&raw, &ih), Some(HashKind::Sha1));
        let t = metadata::parse_info(&raw).unwrap();
        assert_eq!(t.name, name);
        assert_eq!(t.total_size, size);
        assert_eq!(t.files.len(), files);
        assert_eq!(t.multi_file, files > 1 || fx == "unicode");
    }
    // The nested Unicode paths survive.
    let t = metadata::parse_info(&fixture("lt_unicode.info.bin")).unwrap();
    assert_eq!(t.files[0].path, ["Ünïcødé 目录", "子目录", "файл ✓.txt"]);
    assert_eq!(t.files[3].path, ["émoji 🎉.txt"]);
}

fn run_session(ih: InfoHash, stream: &[u8], chunk: usize) -> (Progress, Session) {
    let mut s = Session::new(ih, b"-MG0001-fixturetest0", &SessionConfig::default());
    let ours = s.take_output().expect("our handshake is sent first");
    assert_eq!(&ours[1..20], wire::PROTOCOL);
    let mut last = Progress::Continue;
    for piece in stream.chunks(chunk) {
        last = s.feed(piece);
        let _ = s.take_output();
        if !matches!(last, Progress::Continue) {
            break;
        }
    }
    (last, s)
}

/// A real libtorrent stream drives the session to verified metadata in any chunking.
#[test]
fn libtorrent_streams_drive_a_session_to_done() {
    for &(fx, _, _, _, pieces) in TORRENTS {
        let info = fixture(&format!("lt_{fx}.info.bin"));
        let stream = fixture(&format!("lt_{fx}.stream.bin"));
        let ih = ih_of(&info);
        for chunk in [1, 3, 67, 68, 69, 1000, 16 * 1024 + 7, stream.len()] {
            let (p, s) = run_session(ih, &stream, chunk);
            match p {
                Progress::Done(v) => {
                    assert_eq!(v.raw, info, "{fx} chunk {chunk}");
                    assert_eq!(v.hash, HashKind::Sha1);
                }
                other => panic!("{fx} chunk {chunk}: {other:?}"),
            }
            assert_eq!(s.pieces() as usize, pieces, "{fx}");
            let pi = s.peer_info();
            assert_eq!(pi.ut_metadata, Some(2));
            assert_eq!(pi.metadata_size, Some(info.len() as u32));
            assert_eq!(pi.best_client(), Some("libtorrent/2.1.1.0"));
            assert!(pi.extensions && pi.fast && pi.dht);
        }
    }
}

/// libtorrent rejects an out-of-range request with `msg_type: 2` (and adds
/// `total_size`); the session maps a reject to `Rejected`.
#[test]
fn libtorrent_reject_is_rejected() {
    let info = fixture("lt_single.info.bin");
    let stream = fixture("lt_reject.stream.bin");
    let ih = ih_of(&info);
    let mut de = Deframer::new(wire::MAX_FRAME);
    de.push(&stream);
    assert!(de.next_handshake().unwrap().is_some());
    let mut rejects = Vec::new();
    while let Some(f) = de.next_frame().unwrap() {
        if let Frame::Message {
            id: wire::MSG_EXTENDED,
            payload,
        } = f
        {
            if payload[0] == wire::OUR_UT_METADATA {
                match wire::parse_metadata_msg(&payload[1..]).unwrap() {
                    MetadataMsg::Reject { piece } => rejects.push(piece),
                    m => panic!("unexpected {m:?}"),
                }
            }
        }
    }
    assert_eq!(rejects, [6]);
    // Fed to a session (which asked for piece 0, not 6), the reject ends it.
    let (p, _) = run_session(ih, &stream, 5);
    assert!(
        matches!(p, Progress::Failed(FailReason::Rejected)),
        "got {p:?}"
    );
}

/// The KRPC queries libtorrent sent a node while announcing its torrents.
#[test]
fn libtorrent_announce_queries_decode() {
    let known: Vec<InfoHash> = TORRENTS
        .iter()
        .map(|t| ih_of(&fixture(&format!("lt_{}.info.bin", t.0))))
        .collect();
    let gp = fixture("lt_krpc_get_peers.bin");
    let m = krpc::decode(&gp).unwrap();
    assert_eq!(m.version.map(|v| v.to_vec()), Some(b"LT\x02\x11".to_vec()));
    match m.body {
        Body::Query(q) => match q.kind {
            // The first get_peers may be a table refresh, not one of our torrents.
            QueryKind::GetPeers { scrape, .. } => assert!(!scrape),
            k => panic!("{k:?}"),
        },
        b => panic!("{b:?}"),
    }
    let ap = fixture("lt_krpc_announce_peer.bin");
    let m = krpc::decode(&ap).unwrap();
    match &m.body {
        Body::Query(q) => match &q.kind {
            QueryKind::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
                seed,
            } => {
                assert!(known.contains(info_hash));
                assert_eq!(*port, 47100);
                assert!(*implied_port, "libtorrent sets implied_port: 1");
                assert_eq!(*token, b"tok1");
                assert_eq!(*seed, Some(true), "libtorrent sends BEP 33 seed: 1");
            }
            k => panic!("{k:?}"),
        },
        b => panic!("{b:?}"),
    }
    // Re-encoding gives back libtorrent's bytes: both sort keys the same way.
    let mut out = Vec::new();
    krpc::encode(&m, &mut out);
    assert_eq!(out, ap);
}

/// aria2 1.36 (Debian's `aria2`), captured by `capture_aria2_wire.py`: its stream
/// (handshake, BEP 10 handshake with ut_metadata 9, have_all, allowed_fast, one
/// `data`) drives a session to verified metadata. Interop note: aria2 serves only a
/// leecher that waits for its handshake before sending the BEP 10 handshake; when
/// both arrive in one burst it closes the connection after its own handshake (see
/// fixtures/wire/README.md), so a session now waits for the peer's handshake.
#[test]
fn aria2_stream_drives_a_session_to_done() {
    let info = fixture("aria2_single.info.bin");
    let stream = fixture("aria2_single.stream.bin");
    let ih = ih_of(&info);
    let mut de = Deframer::new(wire::MAX_FRAME);
    de.push(&stream);
    let hs = de.next_handshake().unwrap().unwrap();
    assert_eq!(hs.info_hash, ih);
    // aria2's peer id style `A2-1-36-0-` is not one BEP 20 names, but it is named;
    // the session prefers the extension handshake's `v`.
    assert!(hs.peer_id.starts_with(b"A2-1-36-0-"));
    assert_eq!(
        wire::client_from_peer_id(&hs.peer_id).as_deref(),
        Some("aria2 1.36.0")
    );
    for chunk in [1, 5, 68, 100, stream.len()] {
        let (p, s) = run_session(ih, &stream, chunk);
        match p {
            Progress::Done(v) => assert_eq!(v.raw, info),
            other => panic!("chunk {chunk}: {other:?}"),
        }
        assert_eq!(s.peer_info().ut_metadata, Some(9));
        assert_eq!(s.peer_info().best_client(), Some("aria2/1.36.0"));
    }
    let t = metadata::parse_info(&info).unwrap();
    assert_eq!((t.name.as_str(), t.total_size), ("aria-test.bin", 50000));
}
