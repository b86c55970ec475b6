//! The direct decoder behind [`super::decode`].
//!
//! One front-to-back pass over the bytes by recursive descent: the call stack stands
//! for the container stack that `LenientTokens` keeps, and KRPC fields are read where
//! they are met, with no token stream in between. It makes the checks the token path
//! makes at the same byte positions, so the first structural error is the same one, and
//! it collects semantic errors with the same [`Errs`] scopes in the same order, so the
//! same error wins. `decode_matches_reference` (quickcheck, in `tests/reference.rs`) and the
//! `krpc_decode` fuzz target hold it to [`super::decode_reference`].
//!
//! Recursion is bounded: a container is only entered below [`MAX_DEPTH`].

use std::net::SocketAddr;

use super::walk::{bloom, boolean, build_query, compact_addr, id20, Args, Errs, Kind, Raw};
use super::MAX_DEPTH;
use crate::id::NodeId;
use crate::krpc::{
    Body, CompactNodesV4, CompactNodesV6, DecodeError, KrpcError, Message, Response, Samples, Want,
};

use DecodeError::Bencode;

/// The start of a value: scalars whole, containers opened (their bytes follow).
#[derive(Copy, Clone)]
enum Val<'a> {
    Str(&'a [u8]),
    /// The digits of an integer (with its sign), checked against bencode's syntax.
    Int(&'a str),
    List,
    Dict,
}

/// `a < b` in bytewise lexicographic order, as `<[u8]>::lt`. Inline: dict keys are
/// short and usually differ in their first byte, which a call to `memcmp` costs more
/// than.
#[inline]
fn less(a: &[u8], b: &[u8]) -> bool {
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x < y;
        }
    }
    a.len() < b.len()
}

/// A read position in the datagram.
struct Cur<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// Reads `<len>:<bytes>` at the current position: digits without a leading zero,
    /// then that many bytes.
    #[inline]
    fn string(&mut self) -> Result<&'a [u8], DecodeError> {
        let buf = self.buf;
        let mut p = self.pos;
        let first = buf.get(p).copied().ok_or(Bencode)?;
        let mut len = usize::from(first.wrapping_sub(b'0'));
        if len > 9 {
            return Err(Bencode);
        }
        p += 1;
        loop {
            let c = buf.get(p).copied().ok_or(Bencode)?;
            p += 1;
            if c == b':' {
                break;
            }
            let d = c.wrapping_sub(b'0');
            // A leading zero must be the only digit. A length this large can only run
            // past the end of the buffer; stopping here keeps `len` from overflowing.
            if d > 9 || len == 0 || len > usize::MAX / 16 {
                return Err(Bencode);
            }
            len = len * 10 + usize::from(d);
        }
        let end = p.checked_add(len).ok_or(Bencode)?;
        let s = buf.get(p..end).ok_or(Bencode)?;
        self.pos = end;
        Ok(s)
    }

    /// Reads `i<digits>e` at the current position (on the `i`): an optional `-`, no
    /// leading zeros, no `-0`.
    #[inline]
    fn int(&mut self) -> Result<&'a str, DecodeError> {
        let buf = self.buf;
        let start = self.pos + 1;
        let mut p = start;
        let neg = buf.get(p) == Some(&b'-');
        if neg {
            p += 1;
        }
        match buf.get(p) {
            Some(b'0') if !neg => p += 1,
            Some(b'1'..=b'9') => {
                p += 1;
                while buf.get(p).is_some_and(u8::is_ascii_digit) {
                    p += 1;
                }
            }
            _ => return Err(Bencode),
        }
        if buf.get(p) != Some(&b'e') {
            return Err(Bencode);
        }
        let digits = buf.get(start..p).ok_or(Bencode)?;
        self.pos = p + 1;
        std::str::from_utf8(digits).map_err(|_| Bencode)
    }

    /// Reads the start of a value inside `depth` open containers.
    #[inline]
    fn value(&mut self, depth: usize) -> Result<Val<'a>, DecodeError> {
        match self.peek() {
            Some(b'0'..=b'9') => self.string().map(Val::Str),
            Some(b'i') => self.int().map(Val::Int),
            Some(c @ (b'l' | b'd')) => {
                self.pos += 1;
                if depth >= MAX_DEPTH {
                    Err(DecodeError::TooDeep)
                } else if c == b'l' {
                    Ok(Val::List)
                } else {
                    Ok(Val::Dict)
                }
            }
            // `e` where a value must be, the end of the input, or not bencode.
            _ => Err(Bencode),
        }
    }

    /// Reads the next key of a dict, or its end (`None`). Keys must be strings in
    /// strictly increasing order; `prev` is the previous key of this dict.
    #[inline]
    fn key(&mut self, prev: &mut Option<&'a [u8]>) -> Result<Option<&'a [u8]>, DecodeError> {
        match self.peek() {
            Some(b'e') => {
                self.pos += 1;
                Ok(None)
            }
            Some(b'0'..=b'9') => {
                let k = self.string()?;
                if prev.is_some_and(|p| !less(p, k)) {
                    return Err(DecodeError::UnsortedKeys);
                }
                *prev = Some(k);
                Ok(Some(k))
            }
            _ => Err(Bencode),
        }
    }

    /// Is `b` next? Consumes it if so.
    #[inline]
    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.pos += 1;
        }
        hit
    }

    /// Consumes the rest of `v`, read inside `depth` open containers.
    fn skip(&mut self, v: Val<'a>, depth: usize) -> Result<(), DecodeError> {
        let inner = depth + 1;
        match v {
            Val::Str(_) | Val::Int(_) => Ok(()),
            Val::List => {
                while !self.eat(b'e') {
                    let item = self.value(inner)?;
                    self.skip(item, inner)?;
                }
                Ok(())
            }
            Val::Dict => {
                let mut prev = None;
                while self.key(&mut prev)?.is_some() {
                    let item = self.value(inner)?;
                    self.skip(item, inner)?;
                }
                Ok(())
            }
        }
    }

    /// Skips a value of the wrong type and returns the `WrongType` error for it.
    fn wrong<T>(&mut self, v: Val<'a>, depth: usize, name: &'static str) -> Result<T, DecodeError> {
        self.skip(v, depth)?;
        Err(DecodeError::WrongType(name))
    }

    #[inline]
    fn bytes(
        &mut self,
        v: Val<'a>,
        depth: usize,
        name: &'static str,
    ) -> Result<&'a [u8], DecodeError> {
        match v {
            Val::Str(b) => Ok(b),
            _ => self.wrong(v, depth, name),
        }
    }

    #[inline]
    fn integer(
        &mut self,
        v: Val<'a>,
        depth: usize,
        name: &'static str,
    ) -> Result<i64, DecodeError> {
        match v {
            Val::Int(s) => s.parse().map_err(|_| DecodeError::OutOfRange(name)),
            _ => self.wrong(v, depth, name),
        }
    }
}

// ---------------------------------------------------------------------------------------
// KRPC: the same walk as `decode_from` and its helpers, over `Cur`.
// ---------------------------------------------------------------------------------------

/// `want` (a list read inside `depth` containers): see `parse_want`.
fn want<'a>(c: &mut Cur<'a>, v: Val<'a>, depth: usize) -> Result<Want, DecodeError> {
    if !matches!(v, Val::List) {
        return c.wrong(v, depth, "want");
    }
    let inner = depth + 1;
    let mut want = Want::default();
    let mut bad = false;
    while !c.eat(b'e') {
        match c.value(inner)? {
            Val::Str(b"n4") => want.n4 = true,
            Val::Str(b"n6") => want.n6 = true,
            // Other families (none defined yet) are ignored.
            Val::Str(_) => {}
            t => {
                c.skip(t, inner)?;
                bad = true;
            }
        }
    }
    if bad {
        return Err(DecodeError::WrongType("want"));
    }
    Ok(want)
}

/// The `a` dict, opened inside `depth` containers, into `a` (empty): see `parse_args`.
fn args<'a>(
    c: &mut Cur<'a>,
    depth: usize,
    errs: &mut Errs,
    a: &mut Args<'a>,
) -> Result<(), DecodeError> {
    let inner = depth + 1;
    let mut prev = None;
    while let Some(key) = c.key(&mut prev)? {
        let v = c.value(inner)?;
        // Keys are unique here (a repeat is `UnsortedKeys`), so every slot is empty.
        let slot = match key {
            b"id" => {
                a.id = errs
                    .keep(c.bytes(v, inner, "id").and_then(|b| id20(b, "id")))?
                    .map(NodeId);
                continue;
            }
            b"want" => {
                a.want = errs.keep(want(c, v, inner))?;
                continue;
            }
            b"target" => &mut a.target,
            b"info_hash" => &mut a.info_hash,
            b"port" => &mut a.port,
            b"implied_port" => &mut a.implied_port,
            b"token" => &mut a.token,
            b"seed" => &mut a.seed,
            b"scrape" => &mut a.scrape,
            b"noseed" => &mut a.noseed,
            _ => {
                c.skip(v, inner)?;
                continue;
            }
        };
        *slot = Some(match v {
            Val::Str(b) => Raw::Bytes(b),
            Val::Int(n) => Raw::Int(n),
            Val::List | Val::Dict => {
                c.skip(v, inner)?;
                Raw::Composite
            }
        });
    }
    Ok(())
}

/// `values` (a list read inside `depth` containers): see `parse_values`.
fn values<'a>(c: &mut Cur<'a>, v: Val<'a>, depth: usize) -> Result<Vec<SocketAddr>, DecodeError> {
    if !matches!(v, Val::List) {
        return c.wrong(v, depth, "values");
    }
    let inner = depth + 1;
    // Most replies carry up to 8 peers; a few more only cost a reallocation.
    let mut out = Vec::with_capacity(8);
    let mut err = None;
    while !c.eat(b'e') {
        match c.value(inner)? {
            Val::Str(b) => match compact_addr(b, "values") {
                Ok(a) => out.push(a),
                Err(e) => {
                    err.get_or_insert(e);
                }
            },
            t => {
                c.skip(t, inner)?;
                err.get_or_insert(DecodeError::WrongType("values"));
            }
        }
    }
    err.map_or(Ok(out), Err)
}

/// The `r` dict, opened inside `depth` containers, into `r` (empty): see
/// `parse_response`. Filled in place: a `Response` is large to move.
fn response<'a>(
    c: &mut Cur<'a>,
    depth: usize,
    errs: &mut Errs,
    r: &mut Response<'a>,
) -> Result<(), DecodeError> {
    let inner = depth + 1;
    let mut id = None;
    let mut prev = None;
    while let Some(key) = c.key(&mut prev)? {
        let v = c.value(inner)?;
        let res: Result<(), DecodeError> = match key {
            b"id" => c
                .bytes(v, inner, "id")
                .and_then(|b| id20(b, "id"))
                .map(|b| id = Some(NodeId(b))),
            b"nodes" => c.bytes(v, inner, "nodes").and_then(|b| {
                r.nodes = Some(CompactNodesV4::new(b).ok_or(DecodeError::BadLength("nodes"))?);
                Ok(())
            }),
            b"nodes6" => c.bytes(v, inner, "nodes6").and_then(|b| {
                r.nodes6 = Some(CompactNodesV6::new(b).ok_or(DecodeError::BadLength("nodes6"))?);
                Ok(())
            }),
            b"values" => values(c, v, inner).map(|vals| r.values = Some(vals)),
            b"token" => c.bytes(v, inner, "token").map(|b| r.token = Some(b)),
            b"samples" => c.bytes(v, inner, "samples").and_then(|b| {
                r.samples = Some(Samples::new(b).ok_or(DecodeError::BadLength("samples"))?);
                Ok(())
            }),
            b"num" => c.integer(v, inner, "num").map(|n| r.num = Some(n)),
            b"interval" => c
                .integer(v, inner, "interval")
                .map(|n| r.interval = Some(n)),
            b"BFsd" => c.bytes(v, inner, "BFsd").and_then(|b| {
                r.bf_seeds = Some(bloom(b, "BFsd")?);
                Ok(())
            }),
            b"BFpe" => c.bytes(v, inner, "BFpe").and_then(|b| {
                r.bf_peers = Some(bloom(b, "BFpe")?);
                Ok(())
            }),
            _ => c.skip(v, inner),
        };
        errs.keep(res)?;
    }
    match id {
        Some(id) => r.id = id,
        None => errs.note(DecodeError::Missing("id")),
    }
    Ok(())
}

/// The `e` value (read inside `depth` containers): see `parse_error`.
fn error<'a>(c: &mut Cur<'a>, v: Val<'a>, depth: usize) -> Result<KrpcError<'a>, DecodeError> {
    if !matches!(v, Val::List) {
        return c.wrong(v, depth, "e");
    }
    let inner = depth + 1;
    let mut code = None;
    let mut message = None;
    let mut err = None;
    let mut i = 0usize;
    while !c.eat(b'e') {
        match (i, c.value(inner)?) {
            (0, Val::Int(n)) => match n.parse::<i64>() {
                Ok(v) => code = Some(v),
                Err(_) => {
                    err.get_or_insert(DecodeError::OutOfRange("e"));
                }
            },
            (1, Val::Str(m)) => message = Some(m),
            (0 | 1, t) => {
                c.skip(t, inner)?;
                err.get_or_insert(DecodeError::WrongType("e"));
            }
            (_, t) => c.skip(t, inner)?,
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

/// Decodes one datagram strictly: see [`super::decode`].
pub(super) fn decode(buf: &[u8]) -> Result<Message<'_>, DecodeError> {
    let mut c = Cur { buf, pos: 0 };
    match c.value(0)? {
        Val::Dict => {}
        _ => return Err(DecodeError::NotADict),
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
    // `a` and `r` are read in place; `has_*` says whether they were dicts.
    let mut args_ = Args::default();
    let mut has_args = false;
    let mut r_errs = Errs::default();
    let mut resp = Response::default();
    let mut has_resp = false;
    let mut e_errs = Errs::default();
    let mut kerr = None;

    let mut prev = None;
    while let Some(key) = c.key(&mut prev)? {
        let v = c.value(1)?;
        // Keys are unique here (a repeat is `UnsortedKeys`), so every slot is empty.
        match key {
            b"t" => tid = top.keep(c.bytes(v, 1, "t"))?,
            b"y" => {
                y = top.keep(c.bytes(v, 1, "y").and_then(|b| match b {
                    b"q" => Ok(Kind::Q),
                    b"r" => Ok(Kind::R),
                    b"e" => Ok(Kind::E),
                    _ => Err(DecodeError::BadMessageType),
                }))?;
            }
            b"q" => q = top.keep(c.bytes(v, 1, "q"))?,
            b"v" => version = top.keep(c.bytes(v, 1, "v"))?,
            b"ip" => ip = top.keep(c.bytes(v, 1, "ip").and_then(|b| compact_addr(b, "ip")))?,
            b"ro" => ro = top.keep(c.integer(v, 1, "ro").and_then(|n| boolean(n, "ro")))?,
            b"a" => {
                has_args = matches!(v, Val::Dict);
                if has_args {
                    args(&mut c, 1, &mut a_errs, &mut args_)?;
                } else {
                    a_errs.keep(c.wrong::<()>(v, 1, "a"))?;
                }
            }
            b"r" => {
                has_resp = matches!(v, Val::Dict);
                if has_resp {
                    response(&mut c, 1, &mut r_errs, &mut resp)?;
                } else {
                    r_errs.keep(c.wrong::<()>(v, 1, "r"))?;
                }
            }
            b"e" => kerr = e_errs.keep(error(&mut c, v, 1))?,
            _ => c.skip(v, 1)?,
        }
    }
    // Anything after the top-level dict, even valid bencode, is an error.
    if c.pos != buf.len() {
        return Err(DecodeError::TrailingBytes);
    }
    top.into_result()?;
    let kind = y.ok_or(DecodeError::BadMessageType)?;
    let tid = tid.ok_or(DecodeError::Missing("t"))?;
    let body = match kind {
        Kind::Q => {
            let method = q.ok_or(DecodeError::Missing("q"))?;
            a_errs.into_result()?;
            if !has_args {
                return Err(DecodeError::Missing("a"));
            }
            Body::Query(build_query(method, &args_)?)
        }
        Kind::R => {
            r_errs.into_result()?;
            if !has_resp {
                return Err(DecodeError::Missing("r"));
            }
            Body::Response(resp)
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
