#![no_main]
//! Arbitrary bytes as a peer's TCP stream into the Fetcher (and so a Session).
//!
//! Byte 0 picks the mode: bit 0 prepends a valid handshake with the extension bit
//! (so the fuzzer reaches BEP 10/9/11 parsing quickly), bit 7 then an extension
//! handshake that offers only `ut_holepunch` (BEP 55: the session becomes a
//! relay, and the fuzzed bytes reach holepunch parsing), bits 1..6 the chunk
//! size. A second peer refuses both transports, so the fetcher asks the fuzzed
//! peer to relay for it (a `rendezvous`), and any `connect` or `error` in the
//! bytes is for a target it asked about or not.
use libfuzzer_sys::fuzz_target;
use magnetar_core::fetch::{FetchConfig, Fetcher};
use magnetar_core::Rng;
use magnetar_core::wire;
use magnetar_core::{CloseReason, Event, InfoHash, Output, Timestamp};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let ih = InfoHash([0x11; 20]);
    let peer = "10.0.0.1:6881".parse().unwrap();
    let cfg = FetchConfig {
        max_metadata_size: 1 << 20,
        ..FetchConfig::default()
    };
    let other = "10.0.0.2:6881".parse().unwrap();
    let _ = wire::parse_holepunch(rest);
    let mut f = Fetcher::new(cfg, Rng::new(1))
        .with_allow_private(true)
        .with_utp(true);
    f.fetch(Timestamp::ZERO, ih, &[peer, other]).unwrap();
    let mut conn = None;
    let mut refused = Vec::new();
    while let Some(o) = f.poll_output() {
        if let Output::Connect { conn: c, to } = o {
            if to == peer {
                conn = Some(c);
            } else {
                refused.push(c);
            }
        }
    }
    let conn = conn.expect("a connect");
    f.handle_connected(Timestamp::from_millis(1), conn);
    // The other peer refuses TCP, then uTP: a holepunch candidate.
    for _ in 0..2 {
        for c in std::mem::take(&mut refused) {
            f.handle_closed(Timestamp::from_millis(1), c, CloseReason::Refused);
        }
        while let Some(o) = f.poll_output() {
            if let Output::Connect { conn: c, to } = o {
                if to == other {
                    refused.push(c);
                }
            }
        }
    }
    let mut stream = Vec::with_capacity(rest.len() + 120);
    if mode & 1 == 1 {
        let mut reserved = [0u8; 8];
        reserved[wire::EXT_BYTE] |= wire::EXT_BIT;
        wire::encode_handshake(&mut stream, reserved, &ih, b"-TR4060-000000000000");
        if mode & 0x80 != 0 {
            wire::encode_extended(&mut stream, wire::EXT_HANDSHAKE, b"d1:md12:ut_holepunchi9eee");
        }
    }
    stream.extend_from_slice(rest);
    let chunk = 1 + ((mode >> 1) & 0x3f) as usize * 7;
    let mut t = 2;
    for c in stream.chunks(chunk) {
        f.handle_data(Timestamp::from_millis(t), conn, c);
        t += 1;
        while let Some(o) = f.poll_output() {
            if let Output::Event(Event::MetadataFetched(m)) = o {
                // Only bytes hashing to the infohash may ever be accepted.
                assert!(magnetar_core::metadata::verify(&m.raw, &ih).is_some());
            }
        }
    }
    f.handle_closed(Timestamp::from_millis(t), conn, CloseReason::Eof);
    // A holepunch attempt the bytes may have started: it fails too.
    while let Some(o) = f.poll_output() {
        if let Output::Connect { conn: c, .. } = o {
            f.handle_closed(Timestamp::from_millis(t), c, CloseReason::Refused);
        }
    }
    f.handle_timeout(Timestamp::from_secs(3600));
    while f.poll_output().is_some() {}
    assert!(!f.is_fetching(&ih));
    assert_eq!(f.poll_timeout(), None);
});
