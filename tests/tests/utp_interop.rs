//! magnetar's uTP machine against a real uTP implementation: core's `Utp`
//! manager, driven over a real UDP socket on 127.0.0.1 by this test (the test
//! does the IO), connects to a libtorrent 2.1 session that has TCP switched off
//! both ways (tests/interop/utp_peer.py) and completes the BitTorrent handshake
//! over uTP: our 68 bytes out, the peer's 68 bytes back for the same infohash.
//!
//! Needs `python3 -m pip install 'libtorrent>=2.1,<2.2'` (not optional: without
//! it the test fails and says why). Loopback only; the session has DHT, LSD,
//! UPnP and NAT-PMP off.

use std::io::{BufRead, BufReader};
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

#[test]
fn bittorrent_handshake_over_utp_with_libtorrent() {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import libtorrent; assert libtorrent.__version__.startswith('2.1')",
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "this test needs libtorrent 2.1 for python3: python3 -m pip install 'libtorrent>=2.1,<2.2'"
    );
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
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let port = v["port"].as_u64().unwrap() as u16;
    let info_hash = hex(v["infohash"].as_str().unwrap());
    assert!(port != 0 && info_hash.len() == 20, "{line}");
    let peer: SocketAddr = SocketAddr::from(([127, 0, 0, 1], port));

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let start = Instant::now();
    let now = || Timestamp::from_nanos(start.elapsed().as_nanos() as u64);
    let mut utp = Utp::new(UtpConfig::default(), Rng::new(29));
    let s = utp.connect(now(), SocketId(0), peer).unwrap();
    let mut ours = Vec::with_capacity(68);
    ours.push(19u8);
    ours.extend_from_slice(b"BitTorrent protocol");
    ours.extend_from_slice(&[0, 0, 0, 0, 0, 0x10, 0, 0]);
    ours.extend_from_slice(&info_hash);
    ours.extend_from_slice(b"-MG0001-utpinterop01");
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
