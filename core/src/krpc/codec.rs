//! Decoding and encoding of KRPC messages.
//!
//! # Decoding
//!
//! [`decode`] reads the datagram once, front to back, by recursive descent (`fast.rs`),
//! with a nesting limit. [`decode_reference`] gives exactly the same results by walking a
//! token stream (our strict tokenizer, `LenientTokens`), and [`decode_bendy`] walks
//! bendy's strict tokenizer ([`bendy::decoding::Decoder::tokens`]); the two are kept as
//! references that tests and the fuzz target hold [`decode`] to. Nothing is copied:
//! tids, versions, tokens, compact lists and samples are slices of the datagram. Only
//! `values` (a list of peers) becomes a `Vec`, because the type asks for decoded
//! addresses.
//!
//! The whole datagram is read before a message is returned, so errors are reported
//! in a fixed order of precedence:
//! 1. structural errors (bencode syntax, unsorted or duplicate keys, nesting, a top level
//!    that is not a dict, trailing bytes), as soon as the reader meets them;
//! 2. then semantic errors of the top-level dict (`t`, `y`, `v`, `ip`, `ro`);
//! 3. then semantic errors of the body that `y` selects (`a` + `q`, `r` or `e`).
//!
//! Bodies that `y` does not select are parsed but their errors are ignored: libtorrent
//! 2.1 answers a bad query with `y: e` *and* an `r` dict, for example.
//! Unknown keys, at any level and of any shape, are skipped.
//!
//! # Unsorted keys
//!
//! bendy refuses dicts whose keys are out of order or duplicated, and so does [`decode`]
//! ([`DecodeError::UnsortedKeys`]). libtorrent 2.1 was observed to send sorted keys only
//! (see `core/tests/fixtures/krpc/README.md`), but older or hand-written clients are
//! known to put keys such as `ip` or `v` in the wrong place. [`decode_lenient`] accepts
//! those: when the strict pass fails with `UnsortedKeys` it decodes again with a small
//! tokenizer of our own (`LenientTokens`) that checks everything bendy checks except key
//! order, and it reports `unsorted_keys: true` so the caller can count the message.
//! A known key given twice is still an error ([`DecodeError::DuplicateKey`]): there is
//! no honest way to pick one of the two values.
//!
//! # Encoding
//!
//! [`encode`] writes keys in bencode order, only the fields that are present, and
//! allocates nothing beyond growing `out`. `decode(encode(m)) == m` for every message
//! whose addresses carry no IPv6 flow info or scope id and whose unknown method name is
//! not one of the known ones.

use std::net::SocketAddr;

use bendy::decoding::{Decoder, Tokens};
use bendy::state_tracker::Token;

use super::{
    peer_from_compact, write_compact_peer, Body, CompactNodesV4, CompactNodesV6, KrpcError,
    Message, Query, QueryKind, Response, Samples, Want,
};
use crate::id::{InfoHash, NodeId};

/// Deepest nesting of lists and dicts accepted. KRPC itself needs 3 (message → `a` →
/// `want`); the rest leaves room for unknown extension values, which are skipped.
pub const MAX_DEPTH: usize = 16;

/// Why a datagram could not be decoded. Each variant is counted as a fault.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DecodeError {
    /// Not valid bencode (syntax error, truncated, bad integer, …).
    Bencode,
    /// Dict keys out of order or duplicated.
    UnsortedKeys,
    /// Bytes after the top-level value.
    TrailingBytes,
    /// Nesting deeper than the limit.
    TooDeep,
    /// Top level is not a dict.
    NotADict,
    /// `y` is missing or not one of q/r/e.
    BadMessageType,
    /// A required key is missing.
    Missing(&'static str),
    /// A key has the wrong bencode type.
    WrongType(&'static str),
    /// A string has the wrong length (ids, compact lists, tokens, bloom filters, …).
    BadLength(&'static str),
    /// An integer is out of range (ports, booleans, error codes, …).
    OutOfRange(&'static str),
    /// A known key appears twice in one dict (only [`decode_lenient`] gets this far;
    /// the strict path reports duplicates as [`DecodeError::UnsortedKeys`]).
    DuplicateKey(&'static str),
}

impl DecodeError {
    /// True for errors of the bencode layer (the datagram is not one canonical bencoded
    /// dict); false for errors of the KRPC layer (a well-formed dict with bad contents).
    pub fn is_structural(&self) -> bool {
        matches!(
            self,
            DecodeError::Bencode
                | DecodeError::UnsortedKeys
                | DecodeError::TrailingBytes
                | DecodeError::TooDeep
                | DecodeError::NotADict
        )
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Bencode => f.write_str("invalid bencode"),
            DecodeError::UnsortedKeys => f.write_str("dict keys unsorted or duplicated"),
            DecodeError::TrailingBytes => f.write_str("trailing bytes"),
            DecodeError::TooDeep => f.write_str("nesting too deep"),
            DecodeError::NotADict => f.write_str("top level is not a dict"),
            DecodeError::BadMessageType => f.write_str("missing or unknown `y`"),
            DecodeError::Missing(k) => write!(f, "missing `{k}`"),
            DecodeError::WrongType(k) => write!(f, "wrong type for `{k}`"),
            DecodeError::BadLength(k) => write!(f, "bad length for `{k}`"),
            DecodeError::OutOfRange(k) => write!(f, "`{k}` out of range"),
            DecodeError::DuplicateKey(k) => write!(f, "duplicate key `{k}`"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A message accepted by [`decode_lenient`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LenientMessage<'a> {
    pub message: Message<'a>,
    /// The datagram had dict keys out of order (or an unknown key twice): not canonical
    /// bencode. The caller should count it.
    pub unsorted_keys: bool,
}

/// Decodes one datagram strictly: it must be canonical bencode.
///
/// A direct one-pass decoder (`fast.rs`): it makes the same checks as bendy's tokenizer
/// and gives exactly the results of [`decode_reference`], the token-stream decoder it
/// replaced (a quickcheck test and the `krpc_decode` fuzz target hold the three to the
/// same answers), at a fraction of the instructions.
pub fn decode(buf: &[u8]) -> Result<Message<'_>, DecodeError> {
    fast::decode(buf)
}

/// [`decode`] as our strict tokenizer (`LenientTokens`) under the generic token walk:
/// slower, kept as the reference that [`decode`] is checked against.
#[doc(hidden)]
pub fn decode_reference(buf: &[u8]) -> Result<Message<'_>, DecodeError> {
    let mut src = LenientTokens::new(buf);
    src.strict = true;
    decode_from(&mut src)
}

/// [`decode`] on bendy's strict tokenizer: the reference that [`decode`] is checked against.
pub fn decode_bendy(buf: &[u8]) -> Result<Message<'_>, DecodeError> {
    let mut src = Strict(Decoder::new(buf).with_max_depth(MAX_DEPTH).tokens());
    decode_from(&mut src)
}

/// Decodes one datagram, accepting dict keys out of order (see the module docs).
pub fn decode_lenient(buf: &[u8]) -> Result<LenientMessage<'_>, DecodeError> {
    match decode(buf) {
        Ok(message) => Ok(LenientMessage {
            message,
            unsorted_keys: false,
        }),
        Err(DecodeError::UnsortedKeys) => {
            let mut src = LenientTokens::new(buf);
            let message = decode_from(&mut src)?;
            Ok(LenientMessage {
                message,
                unsorted_keys: src.unsorted,
            })
        }
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------
// Token sources
// ---------------------------------------------------------------------------------------

/// A stream of bencode tokens whose structure (nesting, keys are strings, a value for
/// every key, integer syntax, depth) has been checked by the source.
trait Source<'a> {
    /// `Ok(None)` only at the end of the input with every container closed.
    fn next_tok(&mut self) -> Result<Option<Token<'a>>, DecodeError>;
}

/// bendy's strict tokenizer.
struct Strict<'a>(Tokens<'a>);

impl<'a> Source<'a> for Strict<'a> {
    fn next_tok(&mut self) -> Result<Option<Token<'a>>, DecodeError> {
        match self.0.next() {
            None => Ok(None),
            Some(Ok(t)) => Ok(Some(t)),
            Some(Err(e)) => Err(classify(&e)),
        }
    }
}

/// Maps a bendy error to ours. bendy 0.6 does not expose its error kind (the field is
/// private and `StructureError` is crate-private), so the message text is matched; the
/// test `bendy_error_texts_are_recognised` pins the texts. Only runs on the error path.
fn classify(e: &bendy::decoding::Error) -> DecodeError {
    let text = e.to_string();
    if text.contains("Keys were not sorted") {
        DecodeError::UnsortedKeys
    } else if text.contains("nesting depth") {
        DecodeError::TooDeep
    } else {
        DecodeError::Bencode
    }
}

#[derive(Copy, Clone)]
enum Frame<'a> {
    List,
    /// Expecting a key (or the end); holds the previous key.
    DictKey(Option<&'a [u8]>),
    /// Expecting the value of this key.
    DictValue(&'a [u8]),
}

/// Our own tokenizer for [`decode_lenient`]: the same checks as bendy's except key
/// order, which it only records. No allocation: the stack is a fixed array.
struct LenientTokens<'a> {
    buf: &'a [u8],
    pos: usize,
    stack: [Frame<'a>; MAX_DEPTH],
    depth: usize,
    unsorted: bool,
    /// Refuse unsorted or duplicate keys (as bendy does) instead of recording them.
    strict: bool,
}

impl<'a> LenientTokens<'a> {
    fn new(buf: &'a [u8]) -> Self {
        LenientTokens {
            buf,
            pos: 0,
            stack: [Frame::List; MAX_DEPTH],
            depth: 0,
            unsorted: false,
            strict: false,
        }
    }

    fn top(&mut self) -> Option<&mut Frame<'a>> {
        match self.depth.checked_sub(1) {
            Some(i) => self.stack.get_mut(i),
            None => None,
        }
    }

    /// Reads a string length and its `:`: digits, no leading zeros, no overflow.
    fn take_len(&mut self) -> Result<usize, DecodeError> {
        let start = self.pos;
        let mut n: usize = 0;
        loop {
            let c = *self.buf.get(self.pos).ok_or(DecodeError::Bencode)?;
            self.pos += 1;
            match c {
                b':' if self.pos - start > 1 => return Ok(n),
                // A leading zero must be the only digit.
                b'0'..=b'9' if n > 0 || self.pos - start == 1 => {
                    n = n
                        .checked_mul(10)
                        .and_then(|n| n.checked_add(usize::from(c - b'0')))
                        .ok_or(DecodeError::Bencode)?;
                }
                _ => return Err(DecodeError::Bencode),
            }
        }
    }

    /// Reads an integer's digits and its `e`, with bencode's rules: an optional `-`, no
    /// leading zeros, no `-0`.
    fn take_int(&mut self) -> Result<&'a str, DecodeError> {
        let rest = self.buf.get(self.pos..).ok_or(DecodeError::Bencode)?;
        let len = rest
            .iter()
            .position(|&c| c == b'e')
            .ok_or(DecodeError::Bencode)?;
        let digits = rest.get(..len).ok_or(DecodeError::Bencode)?;
        let body = match digits {
            [b'-', tail @ ..] => tail,
            _ => digits,
        };
        let ok = match body {
            [] => false,
            [b'0'] => body.len() == digits.len(), // "0" but not "-0"
            [b'0', ..] => false,
            _ => body.iter().all(u8::is_ascii_digit),
        };
        if !ok {
            return Err(DecodeError::Bencode);
        }
        self.pos += len + 1;
        std::str::from_utf8(digits).map_err(|_| DecodeError::Bencode)
    }

    /// Records a scalar (`key` is the string, if it is one) or a container start at the
    /// current position in the structure.
    fn observe_value(&mut self, key: Option<&'a [u8]>) -> Result<(), DecodeError> {
        let Some(f) = self.top() else {
            return Ok(());
        };
        let mut unsorted = false;
        match *f {
            Frame::List => {}
            Frame::DictKey(prev) => {
                // Dict keys must be strings.
                let k = key.ok_or(DecodeError::Bencode)?;
                unsorted = prev.is_some_and(|p| p >= k);
                *f = Frame::DictValue(k);
            }
            Frame::DictValue(k) => *f = Frame::DictKey(Some(k)),
        }
        if unsorted && self.strict {
            return Err(DecodeError::UnsortedKeys);
        }
        self.unsorted |= unsorted;
        Ok(())
    }
}

impl<'a> Source<'a> for LenientTokens<'a> {
    fn next_tok(&mut self) -> Result<Option<Token<'a>>, DecodeError> {
        let Some(&c) = self.buf.get(self.pos) else {
            return if self.depth == 0 {
                Ok(None)
            } else {
                Err(DecodeError::Bencode)
            };
        };
        match c {
            b'e' => {
                self.pos += 1;
                match self.top() {
                    Some(Frame::List | Frame::DictKey(_)) => {
                        self.depth -= 1;
                        Ok(Some(Token::End))
                    }
                    // End at top level, or a key without a value.
                    _ => Err(DecodeError::Bencode),
                }
            }
            b'i' => {
                self.pos += 1;
                let n = self.take_int()?;
                self.observe_value(None)?;
                Ok(Some(Token::Num(n)))
            }
            b'0'..=b'9' => {
                let len = self.take_len()?;
                let end = self.pos.checked_add(len).ok_or(DecodeError::Bencode)?;
                let s = self.buf.get(self.pos..end).ok_or(DecodeError::Bencode)?;
                self.pos = end;
                self.observe_value(Some(s))?;
                Ok(Some(Token::String(s)))
            }
            b'l' | b'd' => {
                self.pos += 1;
                self.observe_value(None)?;
                let frame = if c == b'l' {
                    Frame::List
                } else {
                    Frame::DictKey(None)
                };
                let slot = self.stack.get_mut(self.depth).ok_or(DecodeError::TooDeep)?;
                *slot = frame;
                self.depth += 1;
                Ok(Some(if c == b'l' { Token::List } else { Token::Dict }))
            }
            _ => Err(DecodeError::Bencode),
        }
    }
}

// ---------------------------------------------------------------------------------------
// KRPC over tokens
// ---------------------------------------------------------------------------------------

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

fn id20(b: &[u8], name: &'static str) -> Result<[u8; 20], DecodeError> {
    <[u8; 20]>::try_from(b).map_err(|_| DecodeError::BadLength(name))
}

fn boolean(n: i64, name: &'static str) -> Result<bool, DecodeError> {
    match n {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::OutOfRange(name)),
    }
}

fn compact_addr(b: &[u8], name: &'static str) -> Result<SocketAddr, DecodeError> {
    peer_from_compact(b).ok_or(DecodeError::BadLength(name))
}

/// Collects the first semantic error of a scope; structural errors pass through.
#[derive(Default)]
struct Errs(Option<DecodeError>);

impl Errs {
    /// `Ok(Some(v))` on success, `Ok(None)` after recording a semantic error, `Err` for a
    /// structural one (the token stream is then unusable).
    fn keep<T>(&mut self, r: Result<T, DecodeError>) -> Result<Option<T>, DecodeError> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_structural() => Err(e),
            Err(e) => {
                self.note(e);
                Ok(None)
            }
        }
    }
    fn note(&mut self, e: DecodeError) {
        self.0.get_or_insert(e);
    }
    /// Stores `v` in `slot`, or records a duplicate.
    fn put<T>(&mut self, slot: &mut Option<T>, v: Option<T>, name: &'static str) {
        if slot.is_some() {
            self.note(DecodeError::DuplicateKey(name));
        } else {
            *slot = v;
        }
    }
    fn into_result(self) -> Result<(), DecodeError> {
        self.0.map_or(Ok(()), Err)
    }
}

/// Tracks which keys of a dict were seen, to report known keys given twice. Only the
/// lenient tokenizer lets duplicates through; bendy rejects them first.
#[derive(Default)]
struct Seen(u32);

impl Seen {
    /// True the first time `bit` is seen.
    fn first(&mut self, bit: u32) -> bool {
        let fresh = self.0 & (1 << bit) == 0;
        self.0 |= 1 << bit;
        fresh
    }
}

/// An argument of `a` kept raw until `q` (which may come later) says how to read it.
#[derive(Copy, Clone)]
enum Raw<'a> {
    Bytes(&'a [u8]),
    Int(&'a str),
    Composite,
}

impl<'a> Raw<'a> {
    fn read<S: Source<'a>>(src: &mut S, v: Token<'a>) -> Result<Self, DecodeError> {
        Ok(match v {
            Token::String(b) => Raw::Bytes(b),
            Token::Num(n) => Raw::Int(n),
            _ => {
                skip(src, v)?;
                Raw::Composite
            }
        })
    }
    fn bytes(self, name: &'static str) -> Result<&'a [u8], DecodeError> {
        match self {
            Raw::Bytes(b) => Ok(b),
            _ => Err(DecodeError::WrongType(name)),
        }
    }
    fn int(self, name: &'static str) -> Result<i64, DecodeError> {
        match self {
            Raw::Int(n) => n.parse().map_err(|_| DecodeError::OutOfRange(name)),
            _ => Err(DecodeError::WrongType(name)),
        }
    }
    fn hash(self, name: &'static str) -> Result<[u8; 20], DecodeError> {
        id20(self.bytes(name)?, name)
    }
    fn flag(self, name: &'static str) -> Result<bool, DecodeError> {
        boolean(self.int(name)?, name)
    }
}

fn opt_flag(r: Option<Raw<'_>>, name: &'static str) -> Result<bool, DecodeError> {
    r.map_or(Ok(false), |r| r.flag(name))
}

#[derive(Default)]
struct Args<'a> {
    id: Option<NodeId>,
    want: Option<Want>,
    target: Option<Raw<'a>>,
    info_hash: Option<Raw<'a>>,
    port: Option<Raw<'a>>,
    implied_port: Option<Raw<'a>>,
    token: Option<Raw<'a>>,
    seed: Option<Raw<'a>>,
    scrape: Option<Raw<'a>>,
    noseed: Option<Raw<'a>>,
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
fn build_query<'a>(method: &'a [u8], a: &Args<'a>) -> Result<Query<'a>, DecodeError> {
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

fn bloom<'a>(b: &'a [u8], name: &'static str) -> Result<&'a [u8; 256], DecodeError> {
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
enum Kind {
    Q,
    R,
    E,
}

fn decode_from<'a, S: Source<'a>>(src: &mut S) -> Result<Message<'a>, DecodeError> {
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
// Encoding
// ---------------------------------------------------------------------------------------

fn put_uint(out: &mut Vec<u8>, v: u64) {
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

mod fast;

#[cfg(test)]
mod tests;
