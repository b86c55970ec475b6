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

use bendy::decoding::Decoder;

use super::Message;

mod encode;
mod fast;
mod tokens;
mod walk;

pub use encode::encode;
use tokens::{LenientTokens, Strict};
use walk::decode_from;

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
    /// The decoded message.
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

#[cfg(test)]
mod tests;
