//! Decoding and encoding of KRPC messages. (Stub: filled in by the KRPC codec work.)

use super::Message;

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
}

/// Decodes one datagram.
pub fn decode(_buf: &[u8]) -> Result<Message<'_>, DecodeError> {
    Err(DecodeError::Bencode)
}

/// Appends the deterministic bencoding of `msg` to `out`.
pub fn encode(_msg: &Message<'_>, _out: &mut Vec<u8>) {}
