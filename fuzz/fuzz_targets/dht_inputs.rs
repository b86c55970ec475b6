#![no_main]
//! Arbitrary bytes become a sequence of datagrams and timeouts, with increasing
//! timestamps, fed to a crawler that has bootstrapped. Every output is drained.
use libfuzzer_sys::fuzz_target;
use magnetar_core::{Config, Crawler, Input, Output, SocketId, Timestamp};
use std::net::SocketAddr;

fuzz_target!(|data: &[u8]| {
    let mut cfg = Config::loopback_test(7);
    cfg.dht.rate_limit_table = 64;
    let mut c = Crawler::new(cfg, Timestamp::ZERO);
    c.bootstrap(Timestamp::ZERO, &["127.0.0.2:6881".parse().unwrap()]);
    let mut now = 0u64;
    let mut rest = data;
    let mut steps = 0;
    while rest.len() >= 4 && steps < 256 {
        steps += 1;
        let op = rest[0];
        let dt = u16::from_le_bytes([rest[1], rest[2]]) as u64;
        let len = rest[3] as usize;
        rest = &rest[4..];
        now += dt * 1_000_000;
        let at = Timestamp(now);
        if op & 1 == 0 {
            c.handle_input(Input::Timeout(at));
        } else {
            let n = len.min(rest.len());
            let (bytes, tail) = rest.split_at(n);
            rest = tail;
            let from: SocketAddr = SocketAddr::from(([127, 0, 0, 2 + (op >> 5)], 6881 + (op as u16 & 0x1e)));
            c.handle_input(Input::Datagram { at, local: SocketId(0), from, bytes });
        }
        for _ in 0..10_000 {
            match c.poll_output() {
                Output::Timeout(_) | Output::Idle => break,
                _ => {}
            }
        }
    }
    let s = c.stats();
    assert!(s.transactions <= 4096);
});
