//! magnetar's uTP machine against a real uTP implementation: core's `Utp`
//! manager, driven over a real UDP socket on 127.0.0.1 by this test (the test
//! does the IO), connects to a libtorrent 2.1 session that has TCP switched off
//! both ways (tests/interop/utp_peer.py) and completes the BitTorrent handshake
//! over uTP: our 68 bytes out, the peer's 68 bytes back for the same infohash.
//!
//! Needs `python3 -m pip install 'libtorrent>=2.1,<2.2'` (not optional: without
//! it the test fails and says why). Loopback only; the session has DHT, LSD,
//! UPnP and NAT-PMP off.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use magnetar_core::utp::{Utp, UtpConfig, UtpEvent};
use magnetar_core::{Rng, SocketId, Timestamp};
use serde_json::Value;

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// The libtorrent peer: the process, its stdin, its address and its infohash.
fn start_peer() -> (Child, std::process::ChildStdin, SocketAddr, Vec<u8>) {
    support::require_libtorrent("this test");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/utp_peer.py");
    let mut child = Child(
        Command::new("python3")
            .args([script, "--max-secs", "60"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3"),
    );
    let stdin = child.0.stdin.take().unwrap();
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let port = v["port"].as_u64().unwrap() as u16;
    let info_hash = hex(v["infohash"].as_str().unwrap());
    assert!(port != 0 && info_hash.len() == 20, "{line}");
    (
        child,
        stdin,
        SocketAddr::from(([127, 0, 0, 1], port)),
        info_hash,
    )
}

fn handshake(info_hash: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(68);
    h.push(19u8);
    h.extend_from_slice(b"BitTorrent protocol");
    h.extend_from_slice(&[0, 0, 0, 0, 0, 0x10, 0, 0]);
    h.extend_from_slice(info_hash);
    h.extend_from_slice(b"-MG0001-utpinterop01");
    h
}

#[test]
fn bittorrent_handshake_over_utp_with_libtorrent() {
    let (_child, _stdin, peer, info_hash) = start_peer();

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let start = Instant::now();
    let now = || Timestamp::from_nanos(start.elapsed().as_nanos() as u64);
    let mut utp = Utp::new(UtpConfig::default(), Rng::new(29));
    let s = utp.connect(now(), SocketId(0), peer).unwrap();
    let ours = handshake(&info_hash);
    assert_eq!(ours.len(), 68);
    let mut got = Vec::new();
    let mut connected = false;
    let mut buf = [0u8; 2048];
    let mut closing = false;
    let mut closed = None;
    while start.elapsed() < Duration::from_secs(30) {
        while let Some(t) = utp.poll_transmit() {
            sock.send_to(&t.payload, t.to).unwrap();
        }
        while let Some(e) = utp.poll_event() {
            match e {
                UtpEvent::Connected(x) if x == s => {
                    connected = true;
                    assert_eq!(utp.write(now(), s, &ours).unwrap(), 68);
                }
                UtpEvent::Closed { stream, reason } if stream == s => closed = Some(reason),
                _ => {}
            }
        }
        if closed.is_some() {
            break;
        }
        if got.len() >= 68 && !closing {
            // The handshake is through: close our side (FIN).
            closing = true;
            utp.close(now(), s).unwrap();
            continue;
        }
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => utp.handle_datagram(now(), SocketId(0), from, &buf[..n]),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "{e}"
            ),
        }
        utp.handle_timeout(now());
        if utp.conn(s).is_some() {
            let _ = utp.read(now(), s, &mut got, usize::MAX);
        }
    }
    assert!(
        connected,
        "the uTP handshake with libtorrent never completed"
    );
    assert!(
        got.len() >= 68,
        "only {} bytes of the peer's handshake",
        got.len()
    );
    assert_eq!(got[0], 19);
    assert_eq!(&got[1..20], b"BitTorrent protocol");
    assert_eq!(
        &got[28..48],
        &info_hash[..],
        "the peer answered for our infohash"
    );
    let st = utp.stats();
    assert_eq!(
        st.faults_total(),
        0,
        "libtorrent's packets all decoded: {st:?}"
    );
    eprintln!(
        "libtorrent over uTP: handshake in {} ms, {} bytes after it, closed: {closed:?}, datagrams in {} out {}",
        start.elapsed().as_millis(),
        got.len() - 68,
        st.datagrams_in,
        st.datagrams_out
    );
}

#[test]
fn libtorrent_opens_a_utp_stream_to_us() {
    let (_child, mut stdin, peer, info_hash) = start_peer();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let me = sock.local_addr().unwrap();
    let start = Instant::now();
    let now = || Timestamp::from_nanos(start.elapsed().as_nanos() as u64);
    let mut utp = Utp::new(
        UtpConfig {
            accept_incoming: true,
            ..UtpConfig::default()
        },
        Rng::new(55),
    );
    writeln!(stdin, "connect {me}").unwrap();
    stdin.flush().unwrap();
    let mut stream = None;
    let mut got = Vec::new();
    let mut answered = false;
    let mut buf = [0u8; 2048];
    while start.elapsed() < Duration::from_secs(30) {
        while let Some(t) = utp.poll_transmit() {
            sock.send_to(&t.payload, t.to).unwrap();
        }
        while let Some(e) = utp.poll_event() {
            match e {
                UtpEvent::Incoming {
                    stream: s, from, ..
                } => {
                    assert_eq!(from, peer);
                    stream = Some(s);
                }
                UtpEvent::Closed { stream: s, reason } if Some(s) == stream => {
                    panic!("closed: {reason:?}, {} bytes read", got.len())
                }
                _ => {}
            }
        }
        if let Some(s) = stream {
            let _ = utp.read(now(), s, &mut got, usize::MAX);
            if got.len() >= 68 && !answered {
                answered = true;
                assert_eq!(utp.write(now(), s, &handshake(&info_hash)).unwrap(), 68);
                continue;
            }
            // After our handshake, the peer goes on (extension handshake, bitfield).
            if answered && got.len() > 68 {
                break;
            }
        }
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => utp.handle_datagram(now(), SocketId(0), from, &buf[..n]),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "{e}"
            ),
        }
        utp.handle_timeout(now());
    }
    assert!(
        stream.is_some(),
        "libtorrent never opened a uTP stream to us"
    );
    assert!(
        got.len() >= 68,
        "only {} bytes of the peer's handshake",
        got.len()
    );
    assert_eq!(&got[1..20], b"BitTorrent protocol");
    assert_eq!(&got[28..48], &info_hash[..]);
    assert!(got.len() > 68, "the peer went on after our handshake");
    let st = utp.stats();
    assert_eq!(st.accepted, 1);
    assert_eq!(st.faults_total(), 0, "{st:?}");
    eprintln!(
        "libtorrent opened uTP to us: {} bytes in {} ms",
        got.len(),
        start.elapsed().as_millis()
    );
}
