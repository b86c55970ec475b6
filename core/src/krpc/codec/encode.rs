//! Deterministic KRPC encoding: keys in bencode order, only the fields that are
//! present, nothing allocated beyond growing the output buffer.

use std::net::SocketAddr;

use crate::krpc::{write_compact_peer, Body, Message, Query, QueryKind, Response};

pub(super) fn put_uint(out: &mut Vec<u8>, v: u64) {
    // Lengths and flags are mostly one or two digits: no division loop for those.
    if v < 10 {
        out.push(b'0' + v as u8);
    } else if v < 100 {
        out.extend_from_slice(&[b'0' + (v / 10) as u8, b'0' + (v % 10) as u8]);
    } else {
        put_uint_slow(out, v);
    }
}

fn put_uint_slow(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn put_int(out: &mut Vec<u8>, v: i64) {
    out.push(b'i');
    if v < 0 {
        out.push(b'-');
    }
    put_uint(out, v.unsigned_abs());
    out.push(b'e');
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uint(out, b.len() as u64);
    out.push(b':');
    out.extend_from_slice(b);
}

/// Writes a key whose bencoding is given literally (e.g. `b"2:id"`).
fn put_key(out: &mut Vec<u8>, raw: &[u8]) {
    out.extend_from_slice(raw);
}

fn put_compact_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    out.extend_from_slice(if addr.is_ipv4() { b"6:" } else { b"18:" });
    write_compact_peer(addr, out);
}

fn put_flag(out: &mut Vec<u8>, raw_key: &[u8], on: bool) {
    if on {
        put_key(out, raw_key);
        out.extend_from_slice(b"i1e");
    }
}

fn encode_args(q: &Query<'_>, out: &mut Vec<u8>) {
    out.push(b'd');
    put_key(out, b"2:id");
    put_bytes(out, &q.id.0);
    // Keys in order: id implied_port info_hash noseed port scrape seed target token want.
    match &q.kind {
        QueryKind::Ping => {}
        QueryKind::Unknown {
            target, info_hash, ..
        } => {
            if let Some(ih) = info_hash {
                put_key(out, b"9:info_hash");
                put_bytes(out, &ih.0);
            }
            if let Some(t) = target {
                put_key(out, b"6:target");
                put_bytes(out, &t.0);
            }
        }
        QueryKind::FindNode { target } | QueryKind::SampleInfohashes { target } => {
            put_key(out, b"6:target");
            put_bytes(out, &target.0);
        }
        QueryKind::GetPeers {
            info_hash,
            scrape,
            noseed,
        } => {
            put_key(out, b"9:info_hash");
            put_bytes(out, &info_hash.0);
            put_flag(out, b"6:noseed", *noseed);
            put_flag(out, b"6:scrape", *scrape);
        }
        QueryKind::AnnouncePeer {
            info_hash,
            port,
            implied_port,
            token,
            seed,
        } => {
            put_flag(out, b"12:implied_port", *implied_port);
            put_key(out, b"9:info_hash");
            put_bytes(out, &info_hash.0);
            put_key(out, b"4:port");
            put_int(out, i64::from(*port));
            if let Some(seed) = seed {
                put_key(out, b"4:seed");
                put_int(out, i64::from(*seed));
            }
            put_key(out, b"5:token");
            put_bytes(out, token);
        }
    }
    if let Some(w) = q.want {
        put_key(out, b"4:want");
        out.push(b'l');
        if w.n4 {
            out.extend_from_slice(b"2:n4");
        }
        if w.n6 {
            out.extend_from_slice(b"2:n6");
        }
        out.push(b'e');
    }
    out.push(b'e');
}

fn encode_response(r: &Response<'_>, out: &mut Vec<u8>) {
    out.push(b'd');
    // Keys in order: BFpe BFsd id interval nodes nodes6 num samples token values.
    if let Some(bf) = r.bf_peers {
        put_key(out, b"4:BFpe");
        put_bytes(out, bf);
    }
    if let Some(bf) = r.bf_seeds {
        put_key(out, b"4:BFsd");
        put_bytes(out, bf);
    }
    put_key(out, b"2:id");
    put_bytes(out, &r.id.0);
    if let Some(n) = r.interval {
        put_key(out, b"8:interval");
        put_int(out, n);
    }
    if let Some(n) = r.nodes {
        put_key(out, b"5:nodes");
        put_bytes(out, n.as_bytes());
    }
    if let Some(n) = r.nodes6 {
        put_key(out, b"6:nodes6");
        put_bytes(out, n.as_bytes());
    }
    if let Some(n) = r.num {
        put_key(out, b"3:num");
        put_int(out, n);
    }
    if let Some(s) = r.samples {
        put_key(out, b"7:samples");
        put_bytes(out, s.as_bytes());
    }
    if let Some(t) = r.token {
        put_key(out, b"5:token");
        put_bytes(out, t);
    }
    if let Some(values) = &r.values {
        put_key(out, b"6:values");
        out.push(b'l');
        for v in values {
            put_compact_addr(out, v);
        }
        out.push(b'e');
    }
    out.push(b'e');
}

/// Appends the deterministic bencoding of `msg` to `out`.
pub fn encode(msg: &Message<'_>, out: &mut Vec<u8>) {
    // Top-level keys in order: a e ip q r ro t v y.
    out.push(b'd');
    match &msg.body {
        Body::Query(q) => {
            put_key(out, b"1:a");
            encode_args(q, out);
        }
        Body::Error(e) => {
            put_key(out, b"1:e");
            out.push(b'l');
            put_int(out, e.code);
            put_bytes(out, e.message);
            out.push(b'e');
        }
        Body::Response(_) => {}
    }
    if let Some(ip) = &msg.ip {
        put_key(out, b"2:ip");
        put_compact_addr(out, ip);
    }
    match &msg.body {
        Body::Query(q) => {
            put_key(out, b"1:q");
            put_bytes(out, q.kind.method());
        }
        Body::Response(r) => {
            put_key(out, b"1:r");
            encode_response(r, out);
        }
        Body::Error(_) => {}
    }
    put_flag(out, b"2:ro", msg.read_only);
    put_key(out, b"1:t");
    put_bytes(out, msg.tid);
    if let Some(v) = msg.version {
        put_key(out, b"1:v");
        put_bytes(out, v);
    }
    put_key(out, b"1:y");
    out.extend_from_slice(match msg.body {
        Body::Query(_) => b"1:q",
        Body::Response(_) => b"1:r",
        Body::Error(_) => b"1:e",
    });
    out.push(b'e');
}
