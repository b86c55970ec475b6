use super::*;

const UDP: &str = "udp://10.9.9.9:6969";
const HTTP: &str = "http://10.9.9.8:6969/announce";

fn trackers(urls: &[&str], tweak: impl FnOnce(&mut TrackerConfig)) -> Trackers {
    let mut cfg = TrackerConfig {
        urls: urls.iter().map(|u| u.parse().unwrap()).collect(),
        ..TrackerConfig::default()
    };
    tweak(&mut cfg);
    Trackers::new(cfg, Rng::new(7), [b'p'; 20], false)
}

fn drain(t: &mut Trackers) -> Vec<TrackerOutput> {
    std::iter::from_fn(|| t.poll_output()).collect()
}

fn secs(s: u64) -> Timestamp {
    Timestamp::from_secs(s)
}

fn ih(b: u8) -> InfoHash {
    InfoHash([b; 20])
}

/// The one datagram sent: (tid, action, payload).
fn sent(out: &[TrackerOutput]) -> (u32, u32, Vec<u8>) {
    let mut it = out.iter().filter_map(|o| match o {
        TrackerOutput::Transmit { payload, .. } => Some(payload.to_vec()),
        _ => None,
    });
    let p = it.next().expect("a datagram");
    assert!(it.next().is_none(), "one datagram");
    let action = u32::from_be_bytes(p[8..12].try_into().unwrap());
    let tid = u32::from_be_bytes(p[12..16].try_into().unwrap());
    (tid, action, p)
}

fn reply(action: u32, tid: u32, rest: &[u8]) -> Vec<u8> {
    let mut b = action.to_be_bytes().to_vec();
    b.extend_from_slice(&tid.to_be_bytes());
    b.extend_from_slice(rest);
    b
}

fn announce_reply(tid: u32, interval: u32, peers: &[[u8; 6]]) -> Vec<u8> {
    let mut r = Vec::new();
    for v in [interval, 2, 3] {
        r.extend_from_slice(&v.to_be_bytes());
    }
    for p in peers {
        r.extend_from_slice(p);
    }
    reply(1, tid, &r)
}

fn replies(out: &[TrackerOutput]) -> Vec<TrackerReply> {
    out.iter()
        .filter_map(|o| match o {
            TrackerOutput::Reply(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn udp_connect_announce_and_connection_reuse() {
    let mut t = trackers(&[UDP], |_| {});
    let from: SocketAddr = "10.9.9.9:6969".parse().unwrap();
    assert!(t.owns_addr(&from));
    assert!(!t.owns_addr(&"10.9.9.9:6970".parse().unwrap()));
    t.ask(secs(1), Ask::Announce(ih(1)));
    let (tid, action, p) = sent(&drain(&mut t));
    assert_eq!(action, 0);
    assert_eq!(&p[..8], &udp::PROTOCOL_ID.to_be_bytes());
    t.on_datagram(secs(1), from, &reply(0, tid, &77u64.to_be_bytes()));
    let (tid, action, p) = sent(&drain(&mut t));
    assert_eq!(action, 1);
    assert_eq!(&p[..8], &77u64.to_be_bytes());
    assert_eq!(&p[16..36], &[1; 20]);
    // A public peer, and one the address filter refuses (port 0).
    let out = {
        t.on_datagram(
            secs(2),
            from,
            &announce_reply(tid, 1800, &[[1, 2, 3, 4, 0, 80], [1, 2, 3, 5, 0, 0]]),
        );
        drain(&mut t)
    };
    let r = replies(&out);
    assert_eq!(r.len(), 1);
    assert_eq!(
        r[0].peers,
        vec!["1.2.3.4:80".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!((r[0].seeders, r[0].leechers), (Some(3), Some(2)));
    assert_eq!(r[0].tracker, UDP);
    assert_eq!((t.stats().peers, t.stats().peers_filtered), (1, 1));
    // The torrent's interval is honoured...
    t.ask(secs(3), Ask::Announce(ih(1)));
    assert!(drain(&mut t).is_empty());
    assert_eq!(t.stats().skipped, 1);
    // ...another torrent goes at once, on the same connection id (still valid).
    t.ask(secs(3), Ask::Announce(ih(2)));
    let (_, action, p) = sent(&drain(&mut t));
    assert_eq!((action, &p[..8]), (1, &77u64.to_be_bytes()[..]));
    // After the interval, the first may be asked again; the connection id has
    // expired by then, so a connect comes first.
    let mut t2 = trackers(&[UDP], |_| {});
    t2.ask(secs(0), Ask::Announce(ih(1)));
    let (tid, _, _) = sent(&drain(&mut t2));
    t2.on_datagram(secs(0), from, &reply(0, tid, &5u64.to_be_bytes()));
    let (tid, _, _) = sent(&drain(&mut t2));
    t2.on_datagram(secs(0), from, &announce_reply(tid, 100, &[]));
    drain(&mut t2);
    t2.ask(secs(99), Ask::Announce(ih(1)));
    assert!(drain(&mut t2).is_empty());
    t2.ask(secs(100), Ask::Announce(ih(1)));
    assert_eq!(sent(&drain(&mut t2)).1, 0);
}

#[test]
fn udp_retransmits_then_backs_off() {
    let mut t = trackers(&[UDP], |c| c.max_retransmits = 2);
    t.ask(secs(0), Ask::Announce(ih(1)));
    let (tid0, _, _) = sent(&drain(&mut t));
    assert_eq!(t.deadline(), Some(secs(15)));
    t.on_timeout(secs(14));
    assert!(drain(&mut t).is_empty());
    t.on_timeout(secs(15));
    let (tid1, action, _) = sent(&drain(&mut t));
    assert_eq!(action, 0);
    assert_ne!(tid0, tid1, "each transmission has its own transaction id");
    assert_eq!(t.deadline(), Some(secs(45)));
    t.on_timeout(secs(45));
    sent(&drain(&mut t));
    assert_eq!(t.deadline(), Some(secs(105)));
    t.on_timeout(secs(105));
    assert!(drain(&mut t).is_empty());
    let s = t.stats();
    assert_eq!((s.retransmits, s.timeouts, s.failed), (2, 1, 1));
    // Backing off: a new ask waits for it (60 s after the failure).
    t.ask(secs(106), Ask::Announce(ih(2)));
    assert!(drain(&mut t).is_empty());
    assert_eq!(t.deadline(), Some(secs(165)));
    t.on_timeout(secs(165));
    assert_eq!(sent(&drain(&mut t)).1, 0);
    // A late reply to the old transaction is unexpected, not trusted.
    t.on_datagram(
        secs(166),
        "10.9.9.9:6969".parse().unwrap(),
        &reply(0, tid0, &[0; 8]),
    );
    assert!(drain(&mut t).is_empty());
    assert_eq!(t.stats().unexpected, 1);
}

#[test]
fn udp_garbage_and_errors_are_counted_failures() {
    let from: SocketAddr = "10.9.9.9:6969".parse().unwrap();
    let mut t = trackers(&[UDP], |_| {});
    // Nothing in flight: a stray datagram only counts.
    t.on_datagram(secs(0), from, &[1, 2, 3]);
    assert_eq!(t.stats().udp_malformed.get(&UdpError::Short), Some(&1));
    assert_eq!(t.stats().failed, 0);
    t.ask(secs(0), Ask::Announce(ih(1)));
    let (tid, _, _) = sent(&drain(&mut t));
    // The wrong action for a connect.
    t.on_datagram(secs(0), from, &announce_reply(tid, 1, &[]));
    // (The stray datagram counted as unexpected too.)
    assert_eq!((t.stats().unexpected, t.stats().failed), (2, 1));
    let mut t = trackers(&[UDP], |_| {});
    t.ask(secs(0), Ask::Announce(ih(1)));
    let (tid, _, _) = sent(&drain(&mut t));
    t.on_datagram(secs(0), from, &reply(0, tid, &9u64.to_be_bytes()));
    let (tid, _, _) = sent(&drain(&mut t));
    t.on_datagram(secs(0), from, &reply(3, tid, b"torrent not registered"));
    assert!(replies(&drain(&mut t)).is_empty());
    assert_eq!((t.stats().refused, t.stats().failed), (1, 0));
    // A refusal is the torrent's, not the tracker's: no back-off for the next
    // torrent (a connect: the error dropped the connection id), but the refused
    // one waits.
    t.ask(secs(1), Ask::Announce(ih(2)));
    assert_eq!(sent(&drain(&mut t)).1, 0);
    let mut t2 = trackers(&[UDP], |_| {});
    t2.ask(secs(0), Ask::Announce(ih(1)));
    let (tid, _, _) = sent(&drain(&mut t2));
    t2.on_datagram(secs(0), from, &reply(0, tid, &9u64.to_be_bytes()));
    let (tid, _, _) = sent(&drain(&mut t2));
    // opentracker's answer for a torrent off its whitelist: an empty announce.
    t2.on_datagram(secs(0), from, &reply(1, tid, &[]));
    assert_eq!(t2.stats().udp_malformed.get(&UdpError::Short), Some(&1));
    assert_eq!((t2.stats().refused, t2.stats().failed), (1, 0));
    t2.ask(secs(2), Ask::Announce(ih(1)));
    assert!(drain(&mut t2).is_empty());
    assert_eq!(t2.stats().skipped, 1);
    // A ragged peer list fails the request too.
    let mut t = trackers(&[UDP], |_| {});
    t.ask(secs(0), Ask::Announce(ih(1)));
    let (tid, _, _) = sent(&drain(&mut t));
    t.on_datagram(secs(0), from, &reply(0, tid, &9u64.to_be_bytes()));
    let (tid, _, _) = sent(&drain(&mut t));
    let mut bad = announce_reply(tid, 1, &[[1, 2, 3, 4, 5, 6]]);
    bad.pop();
    t.on_datagram(secs(0), from, &bad);
    assert_eq!(
        t.stats().udp_malformed.get(&UdpError::RaggedPeers),
        Some(&1)
    );
    assert_eq!((t.stats().refused, t.stats().failed), (1, 0));
    // Garbage that answers no transaction only counts.
    t.ask(secs(1), Ask::Announce(ih(2)));
    let (tid, _, _) = sent(&drain(&mut t));
    t.on_datagram(secs(1), from, &reply(1, tid ^ 1, &[1]));
    assert_eq!((t.stats().unexpected, t.stats().failed), (1, 0));
}

#[test]
fn udp_scrape() {
    let from: SocketAddr = "10.9.9.9:6969".parse().unwrap();
    let mut t = trackers(&[UDP], |_| {});
    t.ask(secs(0), Ask::Scrape(ih(4)));
    let (tid, _, _) = sent(&drain(&mut t));
    t.on_datagram(secs(0), from, &reply(0, tid, &9u64.to_be_bytes()));
    let (tid, action, p) = sent(&drain(&mut t));
    assert_eq!((action, p.len()), (2, 36));
    let mut c = Vec::new();
    for v in [6u32, 7, 8] {
        c.extend_from_slice(&v.to_be_bytes());
    }
    t.on_datagram(secs(0), from, &reply(2, tid, &c));
    let r = replies(&drain(&mut t));
    assert_eq!(r.len(), 1);
    assert!(r[0].scrape);
    assert_eq!(
        (r[0].seeders, r[0].downloaded, r[0].leechers),
        (Some(6), Some(7), Some(8))
    );
}

fn http_start(t: &mut Trackers, at: Timestamp, ask: Ask) -> (ConnId, String) {
    t.ask(at, ask);
    let out = drain(t);
    let conn = match out.as_slice() {
        [TrackerOutput::Connect { conn, to }] => {
            assert_eq!(*to, "10.9.9.8:6969".parse::<SocketAddr>().unwrap());
            assert!(owns_conn(*conn));
            *conn
        }
        other => panic!("{other:?}"),
    };
    t.on_connected(at, conn);
    match drain(t).as_slice() {
        [TrackerOutput::Send { conn: c, bytes }] if *c == conn => {
            (conn, String::from_utf8(bytes.to_vec()).unwrap())
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn http_announce_in_pieces_then_scrape_for_counts() {
    let mut t = trackers(&[HTTP], |_| {});
    let (conn, req) = http_start(&mut t, secs(0), Ask::Announce(ih(0xab)));
    assert!(req.starts_with("GET /announce?info_hash=%AB%AB"), "{req}");
    assert!(
        req.contains("&peer_id=pppppppppppppppppppp&port=6881&"),
        "{req}"
    );
    // No counts in this body: a scrape follows.
    let body = b"d8:intervali900e5:peers6:\x01\x02\x03\x04\x00\x50e";
    let mut resp =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    resp.extend_from_slice(body);
    for (k, piece) in resp.chunks(7).enumerate() {
        t.on_data(secs(1), conn, piece);
        if (k + 1) * 7 < resp.len() {
            assert!(drain(&mut t).is_empty(), "partial at {k}");
        }
    }
    let out = drain(&mut t);
    assert!(matches!(out[0], TrackerOutput::Close { conn: c } if c == conn));
    let r = replies(&out);
    assert_eq!(r.len(), 1);
    assert_eq!(
        r[0].peers,
        vec!["1.2.3.4:80".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(r[0].seeders, None);
    // The scrape's connection follows in the same drain.
    let conn2 = match out.last() {
        Some(TrackerOutput::Connect { conn, .. }) => *conn,
        other => panic!("{other:?}"),
    };
    assert_ne!(conn2, conn);
    // A late close of the finished connection is ignored.
    t.on_closed(secs(1), conn, CloseReason::Eof);
    t.on_connected(secs(1), conn2);
    let req = match drain(&mut t).as_slice() {
        [TrackerOutput::Send { bytes, .. }] => String::from_utf8(bytes.to_vec()).unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(req.starts_with("GET /scrape?info_hash=%AB"), "{req}");
    let mut body = b"d5:filesd20:".to_vec();
    body.extend_from_slice(&[0xab; 20]);
    body.extend_from_slice(b"d8:completei2e10:downloadedi0e10:incompletei1eeee");
    let mut resp = b"HTTP/1.0 200 OK\r\n\r\n".to_vec();
    resp.extend_from_slice(&body);
    t.on_data(secs(2), conn2, &resp);
    assert!(drain(&mut t).is_empty(), "no length: the body ends at EOF");
    t.on_closed(secs(2), conn2, CloseReason::Eof);
    let r = replies(&drain(&mut t));
    assert_eq!(r.len(), 1);
    assert!(r[0].scrape);
    assert_eq!((r[0].seeders, r[0].leechers), (Some(2), Some(1)));
    assert_eq!((t.stats().announces, t.stats().scrapes), (1, 1));
}

#[test]
fn http_failures_are_counted() {
    // Oversized.
    let mut t = trackers(&[HTTP], |_| {});
    let (conn, _) = http_start(&mut t, secs(0), Ask::Announce(ih(1)));
    t.on_data(secs(0), conn, b"HTTP/1.1 200 OK\r\n\r\n");
    for _ in 0..70 {
        t.on_data(secs(0), conn, &[b'x'; 1024]);
    }
    assert_eq!(t.stats().http_malformed.get(&HttpError::TooLarge), Some(&1));
    assert_eq!(t.stats().failed, 1);
    // Failure reason.
    let mut t = trackers(&[HTTP], |_| {});
    let (conn, _) = http_start(&mut t, secs(0), Ask::Announce(ih(1)));
    t.on_data(
        secs(0),
        conn,
        b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\nd14:failure reason9:forbiddene",
    );
    assert_eq!((t.stats().refused, t.stats().failed), (1, 0));
    // Refused connection, then the back-off.
    let mut t = trackers(&[HTTP], |_| {});
    t.ask(secs(0), Ask::Announce(ih(1)));
    let conn = match drain(&mut t).as_slice() {
        [TrackerOutput::Connect { conn, .. }] => *conn,
        other => panic!("{other:?}"),
    };
    t.on_closed(secs(0), conn, CloseReason::Refused);
    assert_eq!(t.stats().connect_failures, 1);
    t.ask(secs(1), Ask::Announce(ih(2)));
    assert!(drain(&mut t).is_empty());
    assert_eq!(t.deadline(), Some(secs(60)));
    // Silence: the deadline closes it.
    t.on_timeout(secs(60));
    let conn = match drain(&mut t).as_slice() {
        [TrackerOutput::Connect { conn, .. }] => *conn,
        other => panic!("{other:?}"),
    };
    t.on_timeout(secs(75));
    assert!(matches!(drain(&mut t).as_slice(), [TrackerOutput::Close { conn: c }] if *c == conn));
    assert_eq!(t.stats().timeouts, 1);
    // HTTP status.
    let mut t = trackers(&[HTTP], |_| {});
    let (conn, _) = http_start(&mut t, secs(0), Ask::Announce(ih(1)));
    t.on_data(secs(0), conn, b"HTTP/1.1 503 Busy\r\n\r\n");
    assert_eq!(
        t.stats().http_malformed.get(&HttpError::Status(503)),
        Some(&1)
    );
}

#[test]
fn queues_are_bounded_and_the_budget_paces() {
    let mut t = trackers(&[UDP, "udp://10.9.9.7:1"], |c| {
        c.queue = 2;
        c.requests_per_sec = 1;
        c.burst = 1;
    });
    for b in 1..=4 {
        t.ask(secs(0), Ask::Announce(ih(b)));
    }
    // Tracker 1 took ih 1 at once; the budget held tracker 2 back.
    let out = drain(&mut t);
    assert_eq!(out.len(), 1);
    // Per tracker two queued, the rest dropped (tracker 1 has one in flight too).
    assert_eq!(t.stats().queue_dropped, 1 + 2);
    assert_eq!(t.queued(), 2 + 2);
    // Duplicates are skipped.
    t.ask(secs(0), Ask::Announce(ih(2)));
    assert_eq!(t.stats().skipped, 2);
    assert_eq!(t.deadline(), Some(secs(1)));
    t.on_timeout(secs(1));
    assert_eq!(drain(&mut t).len(), 1);
}

#[test]
fn names_wait_for_resolution() {
    let mut t = trackers(&["udp://tracker.example:6969/announce"], |_| {});
    assert_eq!(t.unresolved(), vec!["tracker.example:6969".to_string()]);
    t.ask(secs(0), Ask::Announce(ih(1)));
    assert_eq!(t.stats().no_address, 1);
    t.resolved(
        "tracker.example:6969",
        &[
            "[2001:db8::5]:6969".parse().unwrap(),
            "10.1.1.1:6969".parse().unwrap(),
        ],
    );
    assert!(t.unresolved().is_empty());
    t.ask(secs(0), Ask::Announce(ih(1)));
    match drain(&mut t).as_slice() {
        [TrackerOutput::Transmit { to, family, .. }] => {
            assert_eq!(*to, "10.1.1.1:6969".parse::<SocketAddr>().unwrap());
            assert_eq!(*family, Family::V4);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn urls() {
    let u: TrackerUrl = "udp://[::1]:6969/announce".parse().unwrap();
    assert_eq!(
        (u.scheme, u.host.as_str(), u.port),
        (Scheme::Udp, "::1", 6969)
    );
    assert_eq!(u.addr, Some("[::1]:6969".parse().unwrap()));
    let u: TrackerUrl = "http://t.example/ann?x=1".parse().unwrap();
    assert_eq!((u.port, u.path.as_str(), u.addr), (80, "/ann?x=1", None));
    let u: TrackerUrl = "http://1.2.3.4:81".parse().unwrap();
    assert_eq!(u.path, "/");
    for bad in [
        "https://t.example/announce",
        "udp://t.example",
        "udp://:1",
        "http://t:0/",
        "http://t:x/",
        "http://[::1/",
        "http://t/a b",
        "ftp://t/",
    ] {
        assert!(bad.parse::<TrackerUrl>().is_err(), "{bad}");
    }
}

/// Drains the crawler, advancing time through its timers, until `want` matches an
/// output (bounded in steps); returns the time and every output seen.
fn crawl_until(
    c: &mut crate::Crawler,
    mut now: Timestamp,
    until: Timestamp,
    want: impl Fn(&crate::Output) -> bool,
) -> (Timestamp, Vec<crate::Output>, bool) {
    use crate::{Input, Output};
    let mut seen = Vec::new();
    for _ in 0..10_000 {
        let o = c.poll_output();
        match o {
            Output::Timeout(t) if t <= until => {
                now = t.max(now);
                c.handle_input(Input::Timeout(now));
            }
            Output::Timeout(_) | Output::Idle => return (now, seen, false),
            o => {
                let hit = want(&o);
                seen.push(o);
                if hit {
                    return (now, seen, true);
                }
            }
        }
    }
    (now, seen, false)
}

#[test]
fn crawler_asks_trackers_when_the_dht_finds_nobody() {
    use crate::{Config, Crawler, Event, Input, Output};
    let tracker: SocketAddr = "127.0.0.9:6969".parse().unwrap();
    let is_tracker = |o: &Output| matches!(o, Output::Transmit { to, .. } if *to == tracker);
    let target = InfoHash([0x42; 20]);
    // Without trackers: the failed search asks nobody.
    let mut c = Crawler::new(Config::loopback_test(3), Timestamp::ZERO);
    c.acquire(secs(0), target).unwrap();
    let (_, _, hit) = crawl_until(&mut c, secs(0), secs(60), is_tracker);
    assert!(!hit);
    assert!(c.stats().crawl.acquire_no_peers > 0);
    assert_eq!(c.stats().tracker.asked, 0);
    // With one: the same search asks it, through the DHT socket.
    let mut cfg = Config::loopback_test(3);
    cfg.trackers.urls = vec!["udp://127.0.0.9:6969".parse().unwrap()];
    let mut c = Crawler::new(cfg, Timestamp::ZERO);
    c.acquire(secs(0), target).unwrap();
    let (now, seen, hit) = crawl_until(&mut c, secs(0), secs(60), is_tracker);
    assert!(hit, "no connect request to the tracker");
    let Some(Output::Transmit { payload, local, .. }) = seen.last() else {
        unreachable!()
    };
    assert_eq!(local.0, 0);
    let tid = u32::from_be_bytes(payload[12..16].try_into().unwrap());
    c.handle_input(Input::Datagram {
        at: now,
        local: crate::SocketId(0),
        from: tracker,
        bytes: &reply(0, tid, &5u64.to_be_bytes()),
    });
    let (now, seen, hit) = crawl_until(&mut c, now, now, is_tracker);
    assert!(hit);
    let Some(Output::Transmit { payload, .. }) = seen.last() else {
        unreachable!()
    };
    assert_eq!(&payload[16..36], &target.0);
    let tid = u32::from_be_bytes(payload[12..16].try_into().unwrap());
    c.handle_input(Input::Datagram {
        at: now,
        local: crate::SocketId(0),
        from: tracker,
        bytes: &announce_reply(tid, 1800, &[[127, 0, 0, 5, 0x1b, 0x58]]),
    });
    let peer: SocketAddr = "127.0.0.5:7000".parse().unwrap();
    let (_, seen, hit) = crawl_until(
        &mut c,
        now,
        now,
        |o| matches!(o, Output::Connect { to, .. } if *to == peer),
    );
    assert!(hit, "the tracker's peer was not fetched from: {seen:?}");
    assert!(seen.iter().any(|o| matches!(
        o,
        Output::Event(Event::TrackerReply(r))
            if r.info_hash == target && r.peers == vec![peer] && r.seeders == Some(3)
    )));
    // The tracker's datagrams are not KRPC: no DHT fault was counted.
    assert!(
        c.stats().dht.faults.is_empty(),
        "{:?}",
        c.stats().dht.faults
    );
    assert_eq!(c.stats().tracker.announces, 1);
}
