#![no_main]
//! Arbitrary datagrams into a uTP connection after a real handshake (raw, or
//! with the live connection id and arbitrary fields), interleaved with timeouts,
//! writes and reads; and the same datagrams into a crawler's socket
//! demultiplexer. Bounds are checked after every step.
use libfuzzer_sys::fuzz_target;
use magnetar_core::utp::packet::{encode, Header, PacketType};
use magnetar_core::utp::{Utp, UtpConfig, UtpEvent};
use magnetar_core::{Config, Crawler, Input, Output, Rng, SocketId, Timestamp};
use std::net::SocketAddr;

const S: SocketId = SocketId(0);

fuzz_target!(|data: &[u8]| {
    let a_addr: SocketAddr = "127.0.0.2:6881".parse().unwrap();
    let b_addr: SocketAddr = "127.0.0.3:6881".parse().unwrap();
    let cfg = UtpConfig {
        accept_incoming: true,
        ..UtpConfig::default()
    };
    let mut a = Utp::new(cfg, Rng::new(1));
    let mut b = Utp::new(cfg, Rng::new(2));
    let mut now = Timestamp::from_millis(1);
    // A real handshake: A connects to B. B sends to A with the SYN's id.
    let sa = a.connect(now, S, b_addr).unwrap();
    let mut conn_id = 0u16;
    for _ in 0..4 {
        while let Some(t) = a.poll_transmit() {
            if let Ok(p) = magnetar_core::utp::packet::decode(&t.payload) {
                if p.header.ty == PacketType::Syn {
                    conn_id = p.header.connection_id;
                }
            }
            b.handle_datagram(now, S, a_addr, &t.payload);
        }
        while let Some(t) = b.poll_transmit() {
            a.handle_datagram(now, S, b_addr, &t.payload);
        }
    }
    assert_eq!(a.poll_event(), Some(UtpEvent::Connected(sa)));
    let mut crawler = Crawler::new(Config::loopback_test(7), Timestamp::ZERO);
    let mut rest = data;
    let mut steps = 0;
    let mut buf = Vec::new();
    while rest.len() >= 4 && steps < 256 {
        steps += 1;
        let op = rest[0];
        let dt = u16::from_le_bytes([rest[1], rest[2]]) as u64;
        let len = rest[3] as usize;
        rest = &rest[4..];
        now = Timestamp(now.0 + dt * 100_000);
        let n = len.min(rest.len());
        let (bytes, tail) = rest.split_at(n);
        rest = tail;
        match op % 6 {
            0 => a.handle_timeout(now),
            1 => {
                // Raw bytes from the peer's address.
                a.handle_datagram(now, S, b_addr, bytes);
                crawler.handle_input(Input::Datagram { at: now, local: S, from: b_addr, bytes });
            }
            2 => {
                // A header on a guessed or learned connection id, arbitrary
                // fields, arbitrary extension bytes and payload.
                if bytes.len() >= 14 {
                    if op & 0x80 != 0 {
                        conn_id = u16::from_le_bytes([bytes[0], bytes[1]]);
                    }
                    let h = Header {
                        ty: PacketType::from_number(bytes[2] % 5).unwrap(),
                        connection_id: conn_id,
                        timestamp_us: u32::from_le_bytes([bytes[3], bytes[4], bytes[5], bytes[6]]),
                        timestamp_diff_us: u32::from(bytes[7]) << 16,
                        wnd_size: u32::from(bytes[8]) << (bytes[9] % 24),
                        seq_nr: u16::from_le_bytes([bytes[10], bytes[11]]),
                        ack_nr: u16::from_le_bytes([bytes[12], bytes[13]]),
                    };
                    buf.clear();
                    let body = &bytes[14..];
                    let sack_len = (body.first().copied().unwrap_or(0) as usize % 16) * 4;
                    let sack = body.get(1..1 + sack_len);
                    encode(&h, sack, body.get(1 + sack_len..).unwrap_or(&[]), &mut buf);
                    a.handle_datagram(now, S, b_addr, &buf);
                    crawler.handle_input(Input::Datagram { at: now, local: S, from: b_addr, bytes: &buf });
                }
            }
            3 => {
                let _ = a.write(now, sa, bytes);
            }
            4 => {
                let mut out = Vec::new();
                let _ = a.read(now, sa, &mut out, len * 64);
            }
            _ => {
                // Honest traffic from B in between.
                while let Some(t) = b.poll_transmit() {
                    a.handle_datagram(now, S, b_addr, &t.payload);
                }
                b.handle_timeout(now);
            }
        }
        while let Some(t) = a.poll_transmit() {
            if op & 0x40 != 0 {
                b.handle_datagram(now, S, a_addr, &t.payload);
            }
        }
        while a.poll_event().is_some() {}
        while b.poll_event().is_some() {}
        for _ in 0..10_000 {
            match crawler.poll_output() {
                Output::Timeout(_) | Output::Idle => break,
                _ => {}
            }
        }
        let st = a.stats();
        assert!(st.connections <= cfg.max_connections);
        assert!(st.half_open <= cfg.max_half_open);
        if let Some(c) = a.conn(sa) {
            assert!(c.unacked() <= cfg.conn.send_buffer);
            assert!(c.readable_len() <= cfg.conn.recv_buffer);
        }
    }
});
