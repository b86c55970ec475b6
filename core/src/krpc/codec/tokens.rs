//! Token sources for the reference decoders: bendy's strict tokenizer ([`Strict`]) and
//! our own ([`LenientTokens`]), which makes the same checks except key order.

use bendy::decoding::Tokens;
use bendy::state_tracker::Token;

use super::{DecodeError, MAX_DEPTH};

/// A stream of bencode tokens whose structure (nesting, keys are strings, a value for
/// every key, integer syntax, depth) has been checked by the source.
pub(super) trait Source<'a> {
    /// `Ok(None)` only at the end of the input with every container closed.
    fn next_tok(&mut self) -> Result<Option<Token<'a>>, DecodeError>;
}

/// bendy's strict tokenizer.
pub(super) struct Strict<'a>(pub(super) Tokens<'a>);

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
pub(super) struct LenientTokens<'a> {
    buf: &'a [u8],
    pos: usize,
    stack: [Frame<'a>; MAX_DEPTH],
    depth: usize,
    pub(super) unsorted: bool,
    /// Refuse unsorted or duplicate keys (as bendy does) instead of recording them.
    pub(super) strict: bool,
}

impl<'a> LenientTokens<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
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
