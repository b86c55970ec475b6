//! A small zero-copy bencode decoder and a deterministic encoder, sized for the
//! peer wire: extension handshakes, BEP 9 headers (a dict followed by raw bytes,
//! hence [`decode_prefix`]), PEX messages and info dicts.
//!
//! Decoding is bounded: nesting depth is capped at [`MAX_DEPTH`] and every length is
//! checked against the input, so arbitrary bytes never panic and never allocate more
//! than a small multiple of the input.

use std::collections::BTreeMap;

/// Maximum nesting of lists and dicts (v2 file trees nest once per path component).
pub const MAX_DEPTH: usize = 96;

/// Why bytes are not bencode.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BencodeError {
    /// The input ended inside a value.
    Eof,
    /// A byte that cannot start or continue a value.
    Unexpected,
    /// An integer that is empty, has leading zeros, is `-0` or overflows `i64`.
    BadInt,
    /// A string length that is malformed or runs past the input.
    BadLength,
    /// A dict key that is not a string.
    BadKey,
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// Bytes left after the value (for [`decode`]).
    Trailing,
}

/// A decoded value borrowing from its input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// An integer (canonical form, within `i64`).
    Int(i64),
    /// A byte string, borrowed from the input.
    Bytes(&'a [u8]),
    /// A list, in input order.
    List(Vec<Value<'a>>),
    /// Entries in input order. Lookups return the first match.
    Dict(Vec<(&'a [u8], Value<'a>)>),
}

impl<'a> Value<'a> {
    /// The value of `key` if `self` is a dict that has it.
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        match self {
            Value::Dict(d) => d.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    /// The integer, if `self` is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    /// The bytes, if `self` is a byte string.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
    /// The items, if `self` is a list.
    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
    /// The entries in input order, if `self` is a dict.
    pub fn as_dict(&self) -> Option<&[(&'a [u8], Value<'a>)]> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }
}

/// Decodes exactly one value spanning all of `buf`.
pub fn decode(buf: &[u8]) -> Result<Value<'_>, BencodeError> {
    let (v, used) = decode_prefix(buf)?;
    if used != buf.len() {
        return Err(BencodeError::Trailing);
    }
    Ok(v)
}

/// Decodes one value at the start of `buf`; returns it and the bytes it used.
pub fn decode_prefix(buf: &[u8]) -> Result<(Value<'_>, usize), BencodeError> {
    let mut p = Parser { buf, pos: 0 };
    let v = p.value(0)?;
    Ok((v, p.pos))
}

struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Result<u8, BencodeError> {
        self.buf.get(self.pos).copied().ok_or(BencodeError::Eof)
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, BencodeError> {
        match self.peek()? {
            b'i' => {
                self.pos += 1;
                let i = self.int_until(b'e')?;
                Ok(Value::Int(i))
            }
            b'0'..=b'9' => self.bytes().map(Value::Bytes),
            b'l' => {
                if depth >= MAX_DEPTH {
                    return Err(BencodeError::TooDeep);
                }
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    if self.peek()? == b'e' {
                        self.pos += 1;
                        return Ok(Value::List(items));
                    }
                    items.push(self.value(depth + 1)?);
                }
            }
            b'd' => {
                if depth >= MAX_DEPTH {
                    return Err(BencodeError::TooDeep);
                }
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    let c = self.peek()?;
                    if c == b'e' {
                        self.pos += 1;
                        return Ok(Value::Dict(items));
                    }
                    if !c.is_ascii_digit() {
                        return Err(BencodeError::BadKey);
                    }
                    let k = self.bytes()?;
                    let v = self.value(depth + 1)?;
                    items.push((k, v));
                }
            }
            _ => Err(BencodeError::Unexpected),
        }
    }

    /// Parses a decimal integer terminated by `end` (strict: no leading zeros, no -0).
    fn int_until(&mut self, end: u8) -> Result<i64, BencodeError> {
        let start = self.pos;
        let rest = self.buf.get(start..).ok_or(BencodeError::Eof)?;
        let len = rest
            .iter()
            .take(21)
            .position(|&c| c == end)
            .ok_or(if rest.len() < 21 {
                BencodeError::Eof
            } else {
                BencodeError::BadInt
            })?;
        let digits = rest.get(..len).ok_or(BencodeError::Eof)?;
        self.pos = start + len + 1;
        parse_i64(digits).ok_or(BencodeError::BadInt)
    }

    fn bytes(&mut self) -> Result<&'a [u8], BencodeError> {
        let n = match self.int_until(b':') {
            Ok(n) => n,
            Err(BencodeError::Eof) => return Err(BencodeError::Eof),
            Err(_) => return Err(BencodeError::BadLength),
        };
        let n = usize::try_from(n).map_err(|_| BencodeError::BadLength)?;
        let end = self.pos.checked_add(n).ok_or(BencodeError::BadLength)?;
        let s = self.buf.get(self.pos..end).ok_or(BencodeError::Eof)?;
        self.pos = end;
        Ok(s)
    }
}

fn parse_i64(d: &[u8]) -> Option<i64> {
    let (neg, digits) = match d.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, d),
    };
    let first = *digits.first()?;
    if (first == b'0' && (digits.len() > 1 || neg)) || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: i64 = 0;
    for &c in digits {
        let dgt = i64::from(c - b'0');
        v = v.checked_mul(10)?;
        v = if neg {
            v.checked_sub(dgt)?
        } else {
            v.checked_add(dgt)?
        };
    }
    Some(v)
}

/// Appends `i<n>e`.
pub fn put_int(out: &mut Vec<u8>, n: i64) {
    out.push(b'i');
    put_decimal(out, n);
    out.push(b'e');
}

/// Appends `<len>:<bytes>`.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_decimal(out, b.len() as i64);
    out.push(b':');
    out.extend_from_slice(b);
}

fn put_decimal(out: &mut Vec<u8>, n: i64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    let mut u = n.unsigned_abs();
    loop {
        i -= 1;
        tmp[i] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&tmp[i..]);
}

/// An owned value for building messages and test data. Dicts are sorted by key, so
/// encoding is canonical.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owned {
    /// An integer.
    Int(i64),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A list.
    List(Vec<Owned>),
    /// A dict, sorted by key.
    Dict(BTreeMap<Vec<u8>, Owned>),
}

impl Owned {
    /// A byte string holding the UTF-8 bytes of `s`.
    pub fn str(s: &str) -> Owned {
        Owned::Bytes(s.as_bytes().to_vec())
    }
    /// An empty dict.
    pub fn dict() -> Owned {
        Owned::Dict(BTreeMap::new())
    }
    /// Inserts into a dict (no-op on other variants); returns `self` for chaining.
    pub fn with(mut self, key: &str, v: Owned) -> Owned {
        if let Owned::Dict(d) = &mut self {
            d.insert(key.as_bytes().to_vec(), v);
        }
        self
    }
    /// Appends the canonical bencoding of `self` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Owned::Int(i) => put_int(out, *i),
            Owned::Bytes(b) => put_bytes(out, b),
            Owned::List(l) => {
                out.push(b'l');
                for v in l {
                    v.encode(out);
                }
                out.push(b'e');
            }
            Owned::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    put_bytes(out, k);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }
    /// The canonical bencoding of `self`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_strictness() {
        let v = Owned::dict()
            .with("a", Owned::Int(-42))
            .with("b", Owned::List(vec![Owned::str("xy"), Owned::Int(0)]));
        let b = v.to_bytes();
        assert_eq!(b, b"d1:ai-42e1:bl2:xyi0eee");
        let d = decode(&b).unwrap();
        assert_eq!(d.get(b"a").and_then(Value::as_int), Some(-42));
        for bad in [
            &b"i-0e"[..],
            b"i01e",
            b"ie",
            b"i99999999999999999999e",
            b"3:ab",
            b"di1ei2ee",
            b"l",
            b"x",
            b"-1:",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        assert_eq!(decode(b"i1ei2e"), Err(BencodeError::Trailing));
        assert_eq!(decode_prefix(b"i1exyz").unwrap().1, 3);
        let deep = "l".repeat(MAX_DEPTH + 1) + &"e".repeat(MAX_DEPTH + 1);
        assert_eq!(decode(deep.as_bytes()), Err(BencodeError::TooDeep));
        assert_eq!(decode(b"i-9223372036854775808e"), Ok(Value::Int(i64::MIN)));
    }
}
