//! KRPC over a token stream: the generic walk behind [`super::decode_reference`],
//! [`super::decode_bendy`] and [`super::decode_lenient`], and the field readers
//! ([`Errs`], [`Raw`], [`Args`], [`build_query`], …) that the direct decoder in
//! `fast.rs` shares with it, so that both give the same errors in the same order.

use std::net::SocketAddr;

use bendy::state_tracker::Token;

use super::tokens::Source;
use super::DecodeError;
use crate::id::{InfoHash, NodeId};
use crate::krpc::{
    peer_from_compact, Body, CompactNodesV4, CompactNodesV6, KrpcError, Message, Query, QueryKind,
    Response, Samples, Want,
};

fn next<'a, S: Source<'a>>(src: &mut S) -> Result<Token<'a>, DecodeError> {
    src.next_tok()?.ok_or(DecodeError::Bencode)
}

/// Consumes the rest of a value whose first token is `first`.
fn skip<'a, S: Source<'a>>(src: &mut S, first: Token<'a>) -> Result<(), DecodeError> {
    let mut depth: usize = match first {
        Token::List | Token::Dict => 1,
        Token::String(_) | Token::Num(_) => return Ok(()),
        Token::End => return Err(DecodeError::Bencode),
    };
    while depth > 0 {
        match next(src)? {
            Token::List | Token::Dict => depth += 1,
            Token::End => depth -= 1,
            Token::String(_) | Token::Num(_) => {}
        }
    }
    Ok(())
}

/// Skips a value of the wrong type and returns the `WrongType` error for it.
fn wrong<'a, S: Source<'a>, T>(
    src: &mut S,
    first: Token<'a>,
    name: &'static str,
) -> Result<T, DecodeError> {
    skip(src, first)?;
    Err(DecodeError::WrongType(name))
}

fn bytes<'a, S: Source<'a>>(
    src: &mut S,
    v: Token<'a>,
    name: &'static str,
) -> Result<&'a [u8], DecodeError> {
    match v {
        Token::String(b) => Ok(b),
        _ => wrong(src, v, name),
    }
}

fn int<'a, S: Source<'a>>(
    src: &mut S,
    v: Token<'a>,
    name: &'static str,
) -> Result<i64, DecodeError> {
    match v {
        Token::Num(s) => s.parse().map_err(|_| DecodeError::OutOfRange(name)),
        _ => wrong(src, v, name),
    }
}

pub(super) fn id20(b: &[u8], name: &'static str) -> Result<[u8; 20], DecodeError> {
    <[u8; 20]>::try_from(b).map_err(|_| DecodeError::BadLength(name))
}

pub(super) fn boolean(n: i64, name: &'static str) -> Result<bool, DecodeError> {
    match n {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::OutOfRange(name)),
    }
}

pub(super) fn compact_addr(b: &[u8], name: &'static str) -> Result<SocketAddr, DecodeError> {
    peer_from_compact(b).ok_or(DecodeError::BadLength(name))
}

/// Collects the first semantic error of a scope; structural errors pass through.
#[derive(Default)]
pub(super) struct Errs(Option<DecodeError>);

impl Errs {
    /// `Ok(Some(v))` on success, `Ok(None)` after recording a semantic error, `Err` for a
    /// structural one (the token stream is then unusable).
    pub(super) fn keep<T>(&mut self, r: Result<T, DecodeError>) -> Result<Option<T>, DecodeError> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_structural() => Err(e),
            Err(e) => {
                self.note(e);
                Ok(None)
            }
        }
    }
    pub(super) fn note(&mut self, e: DecodeError) {
        self.0.get_or_insert(e);
    }
    /// Stores `v` in `slot`, or records a duplicate.
    pub(super) fn put<T>(&mut self, slot: &mut Option<T>, v: Option<T>, name: &'static str) {
        if slot.is_some() {
            self.note(DecodeError::DuplicateKey(name));
        } else {
            *slot = v;
        }
    }
    pub(super) fn into_result(self) -> Result<(), DecodeError> {
        self.0.map_or(Ok(()), Err)
    }
}

/// Tracks which keys of a dict were seen, to report known keys given twice. Only the
/// lenient tokenizer lets duplicates through; bendy rejects them first.
#[derive(Default)]
struct Seen(u32);

impl Seen {
    /// True the first time `bit` is seen.
    pub(super) fn first(&mut self, bit: u32) -> bool {
        let fresh = self.0 & (1 << bit) == 0;
        self.0 |= 1 << bit;
        fresh
    }
}

/// An argument of `a` kept raw until `q` (which may come later) says how to read it.
#[derive(Copy, Clone)]
pub(super) enum Raw<'a> {
    Bytes(&'a [u8]),
    Int(&'a str),
    Composite,
}

impl<'a> Raw<'a> {
    pub(super) fn read<S: Source<'a>>(src: &mut S, v: Token<'a>) -> Result<Self, DecodeError> {
        Ok(match v {
            Token::String(b) => Raw::Bytes(b),
            Token::Num(n) => Raw::Int(n),
            _ => {
                skip(src, v)?;
                Raw::Composite
            }
        })
    }
    pub(super) fn bytes(self, name: &'static str) -> Result<&'a [u8], DecodeError> {
        match self {
            Raw::Bytes(b) => Ok(b),
            _ => Err(DecodeError::WrongType(name)),
        }
    }
    pub(super) fn int(self, name: &'static str) -> Result<i64, DecodeError> {
        match self {
            Raw::Int(n) => n.parse().map_err(|_| DecodeError::OutOfRange(name)),
            _ => Err(DecodeError::WrongType(name)),
        }
    }
    pub(super) fn hash(self, name: &'static str) -> Result<[u8; 20], DecodeError> {
        id20(self.bytes(name)?, name)
    }
    pub(super) fn flag(self, name: &'static str) -> Result<bool, DecodeError> {
        boolean(self.int(name)?, name)
    }
}

fn opt_flag(r: Option<Raw<'_>>, name: &'static str) -> Result<bool, DecodeError> {
    r.map_or(Ok(false), |r| r.flag(name))
}

#[derive(Default)]
pub(super) struct Args<'a> {
    pub(super) id: Option<NodeId>,
    pub(super) want: Option<Want>,
    pub(super) target: Option<Raw<'a>>,
    pub(super) info_hash: Option<Raw<'a>>,
    pub(super) port: Option<Raw<'a>>,
    pub(super) implied_port: Option<Raw<'a>>,
    pub(super) token: Option<Raw<'a>>,
    pub(super) seed: Option<Raw<'a>>,
    pub(super) scrape: Option<Raw<'a>>,
    pub(super) noseed: Option<Raw<'a>>,
}

fn parse_want<'a, S: Source<'a>>(src: &mut S, v: Token<'a>) -> Result<Want, DecodeError> {
    if !matches!(v, Token::List) {
        return wrong(src, v, "want");
    }
    let mut want = Want::default();
    let mut bad = false;
    loop {
        match next(src)? {
            Token::End => break,
            Token::String(b"n4") => want.n4 = true,
            Token::String(b"n6") => want.n6 = true,
            // Other families (none defined yet) are ignored.
            Token::String(_) => {}
            t => {
                skip(src, t)?;
                bad = true;
            }
        }
    }
    if bad {
        return Err(DecodeError::WrongType("want"));
    }
    Ok(want)
}

/// Parses the `a` dict (after its `Dict` token). Semantic errors go to `errs`.
fn parse_args<'a, S: Source<'a>>(src: &mut S, errs: &mut Errs) -> Result<Args<'a>, DecodeError> {
    let mut a = Args::default();
    loop {
        let key = match next(src)? {
            Token::End => return Ok(a),
            Token::String(k) => k,
            _ => return Err(DecodeError::Bencode),
        };
        let v = next(src)?;
        let (slot, name) = match key {
            b"id" => {
                let id = errs.keep(bytes(src, v, "id").and_then(|b| id20(b, "id")))?;
                errs.put(&mut a.id, id.map(NodeId), "id");
                continue;
            }
            b"want" => {
                let w = errs.keep(parse_want(src, v))?;
                errs.put(&mut a.want, w, "want");
                continue;
            }
            b"target" => (&mut a.target, "target"),
            b"info_hash" => (&mut a.info_hash, "info_hash"),
            b"port" => (&mut a.port, "port"),
            b"implied_port" => (&mut a.implied_port, "implied_port"),
            b"token" => (&mut a.token, "token"),
            b"seed" => (&mut a.seed, "seed"),
            b"scrape" => (&mut a.scrape, "scrape"),
            b"noseed" => (&mut a.noseed, "noseed"),
            _ => {
                skip(src, v)?;
                continue;
            }
        };
        let raw = Raw::read(src, v)?;
        errs.put(slot, Some(raw), name);
    }
}

/// Builds the query once `q` is known.
pub(super) fn build_query<'a>(method: &'a [u8], a: &Args<'a>) -> Result<Query<'a>, DecodeError> {
    let id = a.id.ok_or(DecodeError::Missing("id"))?;
    let need = |r: Option<Raw<'a>>, name: &'static str| r.ok_or(DecodeError::Missing(name));
    let kind = match method {
        b"ping" => QueryKind::Ping,
        b"find_node" => QueryKind::FindNode {
            target: NodeId(need(a.target, "target")?.hash("target")?),
        },
        b"get_peers" => QueryKind::GetPeers {
            info_hash: InfoHash(need(a.info_hash, "info_hash")?.hash("info_hash")?),
            scrape: opt_flag(a.scrape, "scrape")?,
            noseed: opt_flag(a.noseed, "noseed")?,
        },
        b"announce_peer" => {
            let info_hash = InfoHash(need(a.info_hash, "info_hash")?.hash("info_hash")?);
            let implied_port = opt_flag(a.implied_port, "implied_port")?;
            // Some clients leave `port` out when `implied_port` is 1.
            let port = match a.port {
                Some(p) => p.int("port")?,
                None if implied_port => 0,
                None => return Err(DecodeError::Missing("port")),
            };
            let port = u16::try_from(port).map_err(|_| DecodeError::OutOfRange("port"))?;
            let token = need(a.token, "token")?.bytes("token")?;
            let seed = match a.seed {
                Some(s) => Some(s.flag("seed")?),
                None => None,
            };
            QueryKind::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
                seed,
            }
        }
        b"sample_infohashes" => QueryKind::SampleInfohashes {
            target: NodeId(need(a.target, "target")?.hash("target")?),
        },
        _ => QueryKind::Unknown {
            method,
            // Forward compatibility: keep well-formed ids, ignore anything else.
            target: a.target.and_then(|r| r.hash("target").ok()).map(NodeId),
            info_hash: a
                .info_hash
                .and_then(|r| r.hash("info_hash").ok())
                .map(InfoHash),
        },
    };
    Ok(Query {
        id,
        want: a.want,
        kind,
    })
}

fn parse_values<'a, S: Source<'a>>(
    src: &mut S,
    v: Token<'a>,
) -> Result<Vec<SocketAddr>, DecodeError> {
    if !matches!(v, Token::List) {
        return wrong(src, v, "values");
    }
    // Most replies carry up to 8 peers; a few more only cost a reallocation.
    let mut out = Vec::with_capacity(8);
    let mut err = None;
    loop {
        match next(src)? {
            Token::End => break,
            Token::String(b) => match compact_addr(b, "values") {
                Ok(a) => out.push(a),
                Err(e) => {
                    err.get_or_insert(e);
                }
            },
            t => {
                skip(src, t)?;
                err.get_or_insert(DecodeError::WrongType("values"));
            }
        }
    }
    err.map_or(Ok(out), Err)
}

pub(super) fn bloom<'a>(b: &'a [u8], name: &'static str) -> Result<&'a [u8; 256], DecodeError> {
    <&[u8; 256]>::try_from(b).map_err(|_| DecodeError::BadLength(name))
}

/// Parses the `r` dict (after its `Dict` token). Semantic errors go to `errs`.
fn parse_response<'a, S: Source<'a>>(
    src: &mut S,
    errs: &mut Errs,
) -> Result<Response<'a>, DecodeError> {
    let mut r = Response::default();
    let mut id = None;
    let mut seen = Seen::default();
    loop {
        let key = match next(src)? {
            Token::End => break,
            Token::String(k) => k,
            _ => return Err(DecodeError::Bencode),
        };
        let v = next(src)?;
        // (bit, name) for duplicate detection; the value is stored below.
        let (bit, name): (u32, &'static str) = match key {
            b"id" => (0, "id"),
            b"nodes" => (1, "nodes"),
            b"nodes6" => (2, "nodes6"),
            b"values" => (3, "values"),
            b"token" => (4, "token"),
            b"samples" => (5, "samples"),
            b"num" => (6, "num"),
            b"interval" => (7, "interval"),
            b"BFsd" => (8, "BFsd"),
            b"BFpe" => (9, "BFpe"),
            _ => {
                skip(src, v)?;
                continue;
            }
        };
        let fresh = seen.first(bit);
        let res: Result<(), DecodeError> = match bit {
            0 => bytes(src, v, name)
                .and_then(|b| id20(b, name))
                .map(|b| id = Some(NodeId(b))),
            1 => bytes(src, v, name).and_then(|b| {
                r.nodes = Some(CompactNodesV4::new(b).ok_or(DecodeError::BadLength(name))?);
                Ok(())
            }),
            2 => bytes(src, v, name).and_then(|b| {
                r.nodes6 = Some(CompactNodesV6::new(b).ok_or(DecodeError::BadLength(name))?);
                Ok(())
            }),
            3 => parse_values(src, v).map(|vals| r.values = Some(vals)),
            4 => bytes(src, v, name).map(|b| r.token = Some(b)),
            5 => bytes(src, v, name).and_then(|b| {
                r.samples = Some(Samples::new(b).ok_or(DecodeError::BadLength(name))?);
                Ok(())
            }),
            6 => int(src, v, name).map(|n| r.num = Some(n)),
            7 => int(src, v, name).map(|n| r.interval = Some(n)),
            8 => bytes(src, v, name).and_then(|b| {
                r.bf_seeds = Some(bloom(b, name)?);
                Ok(())
            }),
            _ => bytes(src, v, name).and_then(|b| {
                r.bf_peers = Some(bloom(b, name)?);
                Ok(())
            }),
        };
        errs.keep(res)?;
        if !fresh {
            errs.note(DecodeError::DuplicateKey(name));
        }
    }
    match id {
        Some(id) => r.id = id,
        None => errs.note(DecodeError::Missing("id")),
    }
    Ok(r)
}

/// Parses the `e` value: a list `[code, message, …]`; extra items are ignored.
fn parse_error<'a, S: Source<'a>>(src: &mut S, v: Token<'a>) -> Result<KrpcError<'a>, DecodeError> {
    if !matches!(v, Token::List) {
        return wrong(src, v, "e");
    }
    let mut code = None;
    let mut message = None;
    let mut err = None;
    let mut i = 0usize;
    loop {
        let t = next(src)?;
        match (i, t) {
            (_, Token::End) => break,
            (0, Token::Num(n)) => match n.parse::<i64>() {
                Ok(c) => code = Some(c),
                Err(_) => {
                    err.get_or_insert(DecodeError::OutOfRange("e"));
                }
            },
            (1, Token::String(m)) => message = Some(m),
            (0 | 1, t) => {
                skip(src, t)?;
                err.get_or_insert(DecodeError::WrongType("e"));
            }
            (_, t) => skip(src, t)?,
        }
        i = i.saturating_add(1);
    }
    if let Some(e) = err {
        return Err(e);
    }
    match (code, message) {
        (Some(code), Some(message)) => Ok(KrpcError { code, message }),
        _ => Err(DecodeError::BadLength("e")),
    }
}

#[derive(Copy, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    Q,
    R,
    E,
}

pub(super) fn decode_from<'a, S: Source<'a>>(src: &mut S) -> Result<Message<'a>, DecodeError> {
    match src.next_tok()? {
        Some(Token::Dict) => {}
        Some(_) => return Err(DecodeError::NotADict),
        None => return Err(DecodeError::Bencode),
    }
    let mut top = Errs::default();
    let mut tid = None;
    let mut version = None;
    let mut ip = None;
    let mut ro = None;
    let mut y = None;
    let mut q = None;
    // Each body keeps its own errors: only the one `y` selects counts.
    let mut a_errs = Errs::default();
    let mut args = None;
    let mut r_errs = Errs::default();
    let mut resp = None;
    let mut e_errs = Errs::default();
    let mut kerr = None;

    loop {
        let key = match next(src)? {
            Token::End => break,
            Token::String(k) => k,
            _ => return Err(DecodeError::Bencode),
        };
        let v = next(src)?;
        match key {
            b"t" => {
                let val = top.keep(bytes(src, v, "t"))?;
                top.put(&mut tid, val, "t");
            }
            b"y" => {
                let val = top.keep(bytes(src, v, "y").and_then(|b| match b {
                    b"q" => Ok(Kind::Q),
                    b"r" => Ok(Kind::R),
                    b"e" => Ok(Kind::E),
                    _ => Err(DecodeError::BadMessageType),
                }))?;
                top.put(&mut y, val, "y");
            }
            b"q" => {
                let val = top.keep(bytes(src, v, "q"))?;
                top.put(&mut q, val, "q");
            }
            b"v" => {
                let val = top.keep(bytes(src, v, "v"))?;
                top.put(&mut version, val, "v");
            }
            b"ip" => {
                let val = top.keep(bytes(src, v, "ip").and_then(|b| compact_addr(b, "ip")))?;
                top.put(&mut ip, val, "ip");
            }
            b"ro" => {
                let val = top.keep(int(src, v, "ro").and_then(|n| boolean(n, "ro")))?;
                top.put(&mut ro, val, "ro");
            }
            b"a" => {
                let val = if matches!(v, Token::Dict) {
                    Some(parse_args(src, &mut a_errs)?)
                } else {
                    a_errs.keep(wrong::<_, ()>(src, v, "a"))?;
                    None
                };
                a_errs.put(&mut args, val, "a");
            }
            b"r" => {
                let val = if matches!(v, Token::Dict) {
                    Some(parse_response(src, &mut r_errs)?)
                } else {
                    r_errs.keep(wrong::<_, ()>(src, v, "r"))?;
                    None
                };
                r_errs.put(&mut resp, val, "r");
            }
            b"e" => {
                let val = e_errs.keep(parse_error(src, v))?;
                e_errs.put(&mut kerr, val, "e");
            }
            _ => skip(src, v)?,
        }
    }
    // Anything after the top-level dict, even valid bencode, is an error.
    if !matches!(src.next_tok(), Ok(None)) {
        return Err(DecodeError::TrailingBytes);
    }
    top.into_result()?;
    let kind = y.ok_or(DecodeError::BadMessageType)?;
    let tid = tid.ok_or(DecodeError::Missing("t"))?;
    let body = match kind {
        Kind::Q => {
            let method = q.ok_or(DecodeError::Missing("q"))?;
            a_errs.into_result()?;
            let args = args.ok_or(DecodeError::Missing("a"))?;
            Body::Query(build_query(method, &args)?)
        }
        Kind::R => {
            r_errs.into_result()?;
            Body::Response(resp.ok_or(DecodeError::Missing("r"))?)
        }
        Kind::E => {
            e_errs.into_result()?;
            Body::Error(kerr.ok_or(DecodeError::Missing("e"))?)
        }
    };
    Ok(Message {
        tid,
        version,
        ip,
        read_only: ro.unwrap_or(false),
        body,
    })
}

// ---------------------------------------------------------------------------------------
