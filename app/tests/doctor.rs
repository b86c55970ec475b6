//! End-to-end: `magnetar doctor` on loopback against a local DHT node. Whether the
//! report says "unsolicited queries: seen" or "none" depends only on whether the
//! test sends the doctor a query; the other lines follow from the loopback setup.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use magnetar_core::krpc::{self, Body, Message, Query, QueryKind};
use magnetar_core::NodeId;

/// The doctor, running, with its stdout (the report) and stderr (the log) collected.
struct Doctor {
    child: Child,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
}

fn collect(pipe: Box<dyn Read + Send>) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let b = buf.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            let mut l = b.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    buf
}

impl Doctor {
    fn start(runtime: &str, bind: &str, boot: SocketAddr) -> Doctor {
        let mut child = Command::new(BIN)
            .args([
                "doctor",
                "--runtime",
                runtime,
                "--bind",
                bind,
                "--bootstrap",
                &boot.to_string(),
                "--allow-private",
                "--duration",
                "3",
            ])
            .env("RUST_LOG", "info")
            .env_remove("MAGNETAR_DB")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn magnetar doctor");
        let out = collect(Box::new(child.stdout.take().unwrap()));
        let err = collect(Box::new(child.stderr.take().unwrap()));
        Doctor { child, out, err }
    }

    fn log(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// The UDP address it bound (from its log).
    fn bound(&self) -> SocketAddr {
        let mut addr = None;
        let found = wait_until(Duration::from_secs(20), || {
            addr = self.log().lines().find_map(|l| {
                let (_, rest) = l.split_once("UDP socket bound addr=")?;
                rest.split_whitespace().next()?.parse().ok()
            });
            addr.is_some()
        });
        assert!(found, "no bound address in the log:\n{}", self.log());
        addr.unwrap()
    }

    /// Waits for the exit, then returns the status and the whole report.
    fn finish(mut self) -> (ExitStatus, String) {
        let mut status = None;
        let exited = wait_until(Duration::from_secs(60), || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!("doctor did not exit; log:\n{}", self.log());
        }
        // The report's last line is the funnel's last step.
        let out = self.out.clone();
        wait_until(Duration::from_secs(5), || {
            out.lock().unwrap().contains("funnel stored:")
        });
        let report = out.lock().unwrap().clone();
        (status.unwrap(), report)
    }
}

/// The report line that starts with `what` (after the verdict).
fn report_line<'a>(report: &'a str, what: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(what)))
        .unwrap_or_else(|| panic!("no {what:?} line in\n{report}"))
}

/// Sends KRPC pings to `to` until one is answered (the doctor has then counted
/// the query) or `timeout` passes; returns whether one was.
fn ping_until_answered(to: SocketAddr, timeout: Duration) -> bool {
    let s = UdpSocket::bind(SocketAddr::new(to.ip(), 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let msg = Message {
        tid: b"pi",
        version: None,
        ip: None,
        read_only: false,
        body: Body::Query(Query {
            id: NodeId([0x42; 20]),
            want: None,
            kind: QueryKind::Ping,
        }),
    };
    let mut bytes = Vec::new();
    krpc::encode(&msg, &mut bytes);
    let mut buf = [0u8; 2048];
    wait_until(timeout, || {
        s.send_to(&bytes, to).unwrap();
        match s.recv_from(&mut buf) {
            Ok((n, _)) => krpc::decode(&buf[..n])
                .is_ok_and(|m| m.tid == b"pi" && matches!(m.body, Body::Response(_))),
            Err(_) => false,
        }
    })
}

/// A DHT node that only answers: every query gets a response (no nodes, our
/// address as BEP 42 `ip`), and it never sends a query of its own (a real node
/// pings the newcomers it puts in its table).
struct QuietNode {
    addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl QuietNode {
    fn start(ip: [u8; 4]) -> QuietNode {
        let s = UdpSocket::bind(SocketAddr::from((ip, 0))).unwrap();
        // The read timeout only paces the stop flag's checks.
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = s.local_addr().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((n, from)) = s.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(m) = krpc::decode(&buf[..n]) else {
                    continue;
                };
                if !matches!(m.body, Body::Query(_)) {
                    continue;
                }
                let reply = Message {
                    tid: m.tid,
                    version: None,
                    ip: Some(from),
                    read_only: false,
                    body: Body::Response(krpc::Response {
                        id: NodeId([0x51; 20]),
                        nodes: krpc::CompactNodesV4::new(&[]),
                        nodes6: None,
                        values: None,
                        token: None,
                        samples: None,
                        num: None,
                        interval: None,
                        bf_seeds: None,
                        bf_peers: None,
                    }),
                };
                let mut out = Vec::new();
                krpc::encode(&reply, &mut out);
                let _ = s.send_to(&out, from);
            }
        });
        QuietNode {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for QuietNode {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Lines every loopback run shows, whatever the queries.
fn common_lines(report: &str, bound: SocketAddr) {
    // The socket, on loopback: a warning that only this machine can reach it.
    let l = report_line(report, "socket: UDP");
    assert_eq!(l, report_line(report, &format!("socket: UDP {bound}")));
    assert!(l.starts_with("warn"), "{report}");
    // The node answered, and told us (BEP 42) the address we have: no NAT.
    assert!(
        report_line(report, "replies: ").starts_with("ok"),
        "{report}"
    );
    let l = report_line(report, "external address: ");
    assert!(
        l.starts_with(&format!("ok    external address: {bound} (")) && l.contains("no NAT"),
        "{report}"
    );
    report_line(report, "open files: limit ");
    report_line(report, "conntrack: ");
    // No torrent on this network: nothing discovered, a failing line and exit 2.
    assert!(
        report_line(report, "funnel discovered: 0 ").starts_with("fail"),
        "{report}"
    );
    for step in [
        "peers found",
        "connected",
        "handshake",
        "metadata",
        "stored",
    ] {
        report_line(report, &format!("funnel {step}: 0 "));
    }
}

/// Nobody queries the doctor: "unsolicited queries: none (only replies)", a warning
/// naming the port to forward.
fn no_unsolicited_queries(runtime: &str, base: u8) {
    let node = QuietNode::start([127, 0, 0, base]);
    let d = Doctor::start(runtime, &format!("127.0.0.{}:0", base + 1), node.addr);
    let bound = d.bound();
    let (st, report) = d.finish();
    assert_eq!(st.code(), Some(2), "{report}");
    let l = report_line(&report, "unsolicited queries: ");
    assert!(
        l.starts_with("warn  unsolicited queries: none (only replies)")
            && l.contains(&format!("UDP port {}", bound.port())),
        "{report}"
    );
    common_lines(&report, bound);
}

/// The test queries the doctor: "unsolicited queries: seen". (Against a real
/// node, which may query the doctor too; the test's own ping is what makes the
/// line certain.)
fn unsolicited_query_seen(runtime: &str, base: u8) {
    let net = DhtNet::start(1, base, base as u64 * 1000);
    let d = Doctor::start(runtime, &format!("127.0.0.{}:0", base + 1), net.addrs[0]);
    let bound = d.bound();
    assert!(
        ping_until_answered(bound, Duration::from_secs(20)),
        "the doctor never answered a ping; log:\n{}",
        d.log()
    );
    let (st, report) = d.finish();
    assert_eq!(st.code(), Some(2), "{report}");
    assert!(
        report_line(&report, "unsolicited queries: ")
            .starts_with("ok    unsolicited queries: seen ("),
        "{report}"
    );
    common_lines(&report, bound);
}

/// A crawl logs the same report once (after 2 minutes by default; 1 s here).
fn crawl_logs_the_report(runtime: &str, base: u8) {
    let node = QuietNode::start([127, 0, 0, base]);
    let db = tempfile::tempdir().unwrap();
    let bind = format!("127.0.0.{}:0", base + 1);
    let boot = node.addr.to_string();
    let mut p = crawl(
        runtime,
        db.path(),
        &[
            "--bind",
            &bind,
            "--bootstrap",
            &boot,
            "--allow-private",
            "--doctor-after",
            "1",
            "--duration",
            "30",
        ],
    );
    assert!(
        p.wait_log("funnel stored: 0", Duration::from_secs(25)),
        "no report in the log:\n{}",
        p.log()
    );
    let log = p.log();
    assert!(log.contains("reachability and funnel after "), "{log}");
    assert!(
        log.contains("unsolicited queries: none (only replies)"),
        "{log}"
    );
    assert!(log.contains("ok    replies: "), "{log}");
    // Once only.
    assert_eq!(log.matches("funnel stored:").count(), 1, "{log}");
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(10)).success());
    assert_eq!(p.log().matches("funnel stored:").count(), 1);
}

#[test]
fn crawl_logs_the_report_mio() {
    crawl_logs_the_report("mio", 238);
}

#[test]
fn crawl_logs_the_report_tokio() {
    crawl_logs_the_report("tokio", 240);
}

#[test]
fn doctor_reports_no_unsolicited_queries_mio() {
    no_unsolicited_queries("mio", 230);
}

#[test]
fn doctor_reports_an_unsolicited_query_mio() {
    unsolicited_query_seen("mio", 232);
}

#[test]
fn doctor_reports_no_unsolicited_queries_tokio() {
    no_unsolicited_queries("tokio", 234);
}

#[test]
fn doctor_reports_an_unsolicited_query_tokio() {
    unsolicited_query_seen("tokio", 236);
}
