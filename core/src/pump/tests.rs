use std::io;
use std::net::SocketAddr;

use bytes::Bytes;

use super::*;
use crate::Config;

/// A runtime that records what the pump asked of it.
#[derive(Default)]
struct Fake {
    now: Timestamp,
    sent: usize,
    transmit: Option<Transmit>,
    connect: Option<Connect>,
    connects: usize,
    open: usize,
    decision: Option<Decision>,
    events: usize,
    datagrams: Vec<io::Result<(usize, SocketAddr)>>,
}

impl Io for Fake {
    fn now(&mut self) -> Timestamp {
        self.now
    }
    fn transmit(&mut self, _: SocketId, _: SocketAddr, _: Bytes) -> Transmit {
        self.sent += 1;
        self.transmit.unwrap_or(Transmit::Sent)
    }
    fn recv(&mut self, _: SocketId, _: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        if self.datagrams.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.datagrams.remove(0)
    }
    fn connect(&mut self, _: ConnId, _: SocketAddr) -> Connect {
        self.connects += 1;
        self.connect.unwrap_or(Connect::Started)
    }
    fn send(&mut self, _: ConnId, _: Bytes) {}
    fn close(&mut self, _: ConnId) {}
    fn open_conns(&self) -> usize {
        self.open
    }
    fn event(&mut self, _: &mut Crawler, _: Event) -> Decision {
        self.events += 1;
        self.decision.unwrap_or(Decision::Nothing)
    }
}

fn pump(policy: AcquirePolicy, queue: usize) -> Pump {
    let mut cfg = Config::loopback_test(7);
    cfg.crawl.acquire_queue = queue;
    Pump::new(Crawler::new(cfg, Timestamp::ZERO), policy, 4)
}

fn ih(n: u8) -> InfoHash {
    InfoHash([n; 20])
}

#[test]
fn a_refused_acquisition_is_dropped_or_queued_by_policy() {
    let mut drop = pump(AcquirePolicy::Drop, 1);
    assert!(drop.acquire(Timestamp::ZERO, ih(1)));
    assert!(!drop.acquire(Timestamp::ZERO, ih(2)));
    assert_eq!(drop.counters().acquire_full, 1);
    assert_eq!(drop.counters().acquire_dropped, 1);
    assert_eq!(drop.waiting(), 0);

    let mut queue = pump(AcquirePolicy::Queue { max: 1 }, 1);
    assert!(queue.acquire(Timestamp::ZERO, ih(1)));
    assert!(!queue.acquire(Timestamp::ZERO, ih(2)));
    assert!(!queue.acquire(Timestamp::ZERO, ih(3)));
    let c = queue.counters();
    assert_eq!(
        (c.acquire_full, c.acquire_queued, c.acquire_dropped),
        (2, 1, 1)
    );
    assert_eq!(queue.waiting(), 1);
}

#[test]
fn queued_acquisitions_are_retried_when_the_crawler_parks() {
    let mut p = pump(AcquirePolicy::Queue { max: 10 }, 1);
    let mut io = Fake::default();
    p.acquire(Timestamp::ZERO, ih(1));
    p.acquire(Timestamp::ZERO, ih(2));
    assert_eq!(p.waiting(), 1);
    // Still full: the retry fails and the infohash keeps waiting.
    p.drain(&mut io);
    assert_eq!(p.waiting(), 1);
    // Room again (a bigger queue in a fresh crawler stands in for a finished
    // acquisition): the drain starts the waiting one.
    let mut cfg = p.crawler().config().clone();
    cfg.crawl.acquire_queue = 10;
    p.crawler = Crawler::new(cfg, Timestamp::ZERO);
    p.drain(&mut io);
    assert_eq!(p.waiting(), 0);
}

#[test]
fn connects_past_the_cap_or_during_emfile_backoff_fail_locally() {
    let mut p = pump(AcquirePolicy::Drop, 1);
    let to: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let conn = ConnId::from_usize(1);
    let mut io = Fake {
        open: 4,
        ..Fake::default()
    };
    p.connect(&mut io, conn, to);
    assert_eq!(
        io.connects, 0,
        "the cap refuses before the runtime is asked"
    );
    assert_eq!(p.counters().tcp_connect_local_errors, 1);

    io.open = 0;
    io.connect = Some(Connect::FdExhausted);
    p.connect(&mut io, conn, to);
    assert_eq!((io.connects, p.counters().emfile), (1, 1));
    io.connect = None;
    io.now = Timestamp::ZERO.add(EMFILE_BACKOFF / 2);
    p.connect(&mut io, conn, to);
    assert_eq!(io.connects, 1, "backing off");
    io.now = Timestamp::ZERO.add(EMFILE_BACKOFF);
    p.connect(&mut io, conn, to);
    assert_eq!(io.connects, 2, "back-off over");
    assert_eq!(p.counters().tcp_connect_local_errors, 3);
}

#[test]
fn a_udp_batch_stops_at_would_block_and_counts_errors() {
    let mut p = pump(AcquirePolicy::Drop, 1);
    let from: SocketAddr = "127.0.0.1:6881".parse().unwrap();
    let mut io = Fake {
        datagrams: vec![
            Ok((3, from)),
            Err(io::Error::from(io::ErrorKind::ConnectionRefused)),
            Err(io::Error::from(io::ErrorKind::Interrupted)),
            Ok((2, from)),
        ],
        ..Fake::default()
    };
    let mut buf = vec![0u8; 16];
    assert!(!p.read_udp(&mut io, SocketId(0), &mut buf));
    assert!(io.datagrams.is_empty());
    assert_eq!(p.counters().udp_recv_errors, 1);
    assert_eq!(p.crawler().stats().dht.datagrams_in, 2);
}

#[test]
fn a_long_udp_batch_stops_at_the_limit() {
    let mut p = pump(AcquirePolicy::Drop, 1);
    let from: SocketAddr = "127.0.0.1:6881".parse().unwrap();
    let mut io = Fake {
        datagrams: (0..UDP_BATCH + 1).map(|_| Ok((1, from))).collect(),
        ..Fake::default()
    };
    let mut buf = vec![0u8; 16];
    assert!(p.read_udp(&mut io, SocketId(0), &mut buf));
    assert_eq!(io.datagrams.len(), 1);
}

#[test]
fn io_errors_are_classified() {
    use std::io::{Error, ErrorKind};
    assert_eq!(
        close_reason(&Error::from(ErrorKind::ConnectionRefused)),
        CloseReason::Refused
    );
    assert_eq!(
        close_reason(&Error::from(ErrorKind::TimedOut)),
        CloseReason::ConnectTimedOut
    );
    assert_eq!(
        close_reason(&Error::from(ErrorKind::BrokenPipe)),
        CloseReason::Reset
    );
    assert!(is_fd_exhaustion(&Error::from_raw_os_error(24)));
    assert!(!is_fd_exhaustion(&Error::from_raw_os_error(111)));
    assert_eq!(
        Connect::from_error(&Error::from_raw_os_error(23)),
        Connect::FdExhausted
    );
    assert_eq!(
        Transmit::from_result::<()>(
            &Err(Error::from(ErrorKind::WouldBlock)),
            "127.0.0.1:1".parse().unwrap()
        ),
        Transmit::WouldBlock
    );
}

#[test]
fn cadence_fires_once_per_interval() {
    let mut c = Cadence::new(Timestamp::ZERO, TICK);
    assert!(!c.due(Timestamp::ZERO));
    assert!(c.due(Timestamp::ZERO.add(TICK)));
    assert!(!c.due(Timestamp::ZERO.add(TICK)));
    assert_eq!(c.next(), Timestamp::ZERO.add(TICK * 2));
}
