//! Unit tests of the KRPC codec: BEP examples, every message type, every error, the
//! encoder, and the direct decoder held to the token-stream references. Split by topic:
//!
//! - `bep`: the examples of BEP 5 and the fields of BEP 32, 33, 42, 43 and 51;
//! - `malformed`: malformed input mapped to its error, nesting, lenient decoding;
//! - `encoding`: round trips, determinism and the digit and compact writers;
//! - `reference`: our tokenizer against bendy's, and [`decode`] against
//!   [`decode_reference`] on random and mutated messages.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use bendy::state_tracker::Token;

use super::encode::put_uint;
use super::tokens::Source;
use super::*;
use crate::id::{InfoHash, NodeId};
use crate::krpc::{
    error_code, write_compact_node, write_compact_peer, Body, CompactNodesV4, CompactNodesV6,
    KrpcError, Query, QueryKind, Response, Samples, Want,
};

mod bep;
mod encoding;
mod malformed;
mod reference;

fn roundtrip(msg: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode(msg, &mut out);
    assert_eq!(
        decode(&out).as_ref(),
        Ok(msg),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    out
}

/// Decodes, checks that re-encoding gives the same bytes (the input is canonical).
fn canonical(buf: &[u8]) -> Message<'_> {
    let m = decode(buf).unwrap_or_else(|e| panic!("{e:?}: {}", String::from_utf8_lossy(buf)));
    let mut out = Vec::new();
    encode(&m, &mut out);
    assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(buf));
    m
}

fn id(s: &[u8; 20]) -> NodeId {
    NodeId(*s)
}

fn v4(a: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(a), port))
}
