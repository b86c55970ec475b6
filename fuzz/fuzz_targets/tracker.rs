#![no_main]
//! Arbitrary tracker answers: UDP replies (BEP 15) and HTTP responses, into the
//! codecs and into the tracker clients mid-request (the UDP reply carries the
//! transaction id of the request in flight, so the whole reply path is reached).
use libfuzzer_sys::fuzz_target;
use magnetar_core::addr::{is_sendable, Family};
use magnetar_core::tracker::http::{self, Parsed};
use magnetar_core::tracker::udp::{self, MAX_PEERS};
use magnetar_core::tracker::{Ask, TrackerConfig, TrackerOutput, Trackers};
use magnetar_core::{CloseReason, InfoHash, Rng, Timestamp};

fn clients(url: &str) -> Trackers {
    let cfg = TrackerConfig {
        urls: vec![url.parse().unwrap()],
        ..TrackerConfig::default()
    };
    Trackers::new(cfg, Rng::new(1), [b'p'; 20], false)
}

fn check_replies(t: &mut Trackers) {
    while let Some(o) = t.poll_output() {
        if let TrackerOutput::Reply(r) = o {
            assert!(r.peers.len() <= MAX_PEERS);
            assert!(r.peers.iter().all(|p| is_sendable(p, false)));
        }
    }
}

fn last_tid(t: &mut Trackers) -> Option<u32> {
    let mut tid = None;
    while let Some(o) = t.poll_output() {
        if let TrackerOutput::Transmit { payload, .. } = o {
            tid = payload.get(12..16).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        }
    }
    tid
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let now = Timestamp::from_secs(1);
    let ih = InfoHash([7; 20]);
    if mode & 1 == 0 {
        for f in [Family::V4, Family::V6] {
            if let Ok(udp::UdpReply::Announce { peers, .. }) = udp::decode_reply(rest, f) {
                assert!(peers.len() <= MAX_PEERS);
            }
        }
        let from = "10.9.9.9:6969".parse().unwrap();
        let mut t = clients("udp://10.9.9.9:6969");
        let ask = if mode & 2 == 0 { Ask::Announce(ih) } else { Ask::Scrape(ih) };
        t.ask(now, ask);
        let Some(tid) = last_tid(&mut t) else { return };
        let mut connect = 0u32.to_be_bytes().to_vec();
        connect.extend_from_slice(&tid.to_be_bytes());
        connect.extend_from_slice(&9u64.to_be_bytes());
        t.on_datagram(now, from, &connect);
        let Some(tid) = last_tid(&mut t) else { return };
        let mut reply = rest.to_vec();
        if let Some(b) = reply.get_mut(4..8) {
            b.copy_from_slice(&tid.to_be_bytes());
        }
        t.on_datagram(now, from, &reply);
        check_replies(&mut t);
        t.on_timeout(Timestamp::from_secs(100_000));
        check_replies(&mut t);
    } else {
        for eof in [false, true] {
            if let Ok(Parsed::Body(b)) = http::parse_response(rest, eof) {
                assert!(b.len() <= http::MAX_RESPONSE);
                if let Ok(a) = http::decode_announce(&b) {
                    assert!(a.peers.len() <= MAX_PEERS);
                }
                let _ = http::decode_scrape(&b, &ih);
            }
        }
        let _ = http::decode_announce(rest);
        let mut t = clients("http://10.9.9.8/announce");
        let ask = if mode & 2 == 0 { Ask::Announce(ih) } else { Ask::Scrape(ih) };
        t.ask(now, ask);
        let mut conn = None;
        while let Some(o) = t.poll_output() {
            if let TrackerOutput::Connect { conn: c, .. } = o {
                conn = Some(c);
            }
        }
        let Some(conn) = conn else { return };
        t.on_connected(now, conn);
        // Split the response at points the input chooses.
        let step = 1 + (mode as usize >> 2);
        for piece in rest.chunks(step) {
            t.on_data(now, conn, piece);
        }
        t.on_closed(now, conn, CloseReason::Eof);
        check_replies(&mut t);
    }
});
