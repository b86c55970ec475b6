//! Splitting a release name into tokens, in one pass and with bounded memory.
//!
//! A token is a run of bytes between separators (space, `.`, `_`, `-`, brackets, and a
//! few more). Each token keeps its byte range in the (truncated) name, what stood
//! before it, and an ASCII-lowercased copy (packed in its [`Key`]) when it is short
//! enough to be a tag: tags (resolutions, sources, codecs, ...) are all short ASCII
//! words, so longer or non-ASCII tokens can only be title words. Each byte costs one
//! load from a table of byte classes; the tokens of a name are kept on the stack
//! ([`Tokens`]), and only names of more than 24 tokens allocate (once, for
//! [`MAX_TOKENS`]).

use super::tags::{Key, NO_KEY};

/// Names are cut (at a character boundary) to this many bytes before parsing.
pub const MAX_NAME_BYTES: usize = 512;
/// At most this many tokens are looked at; the rest of a name is ignored.
pub const MAX_TOKENS: usize = 96;
/// Tokens up to this long get a lowercased copy (the longest tag is shorter).
pub const LOWER_CAP: usize = 16;

/// One token of a name (32 bytes: a name's tokens are kept on the stack).
#[derive(Clone, Copy, Debug)]
pub struct Token {
    /// The ASCII-lowercased token packed as a [`Key`] ([`NO_KEY`] when the token is
    /// long, not ASCII or holds a NUL byte): its bytes are the lowercase copy.
    pub key: Key,
    start: u32,
    end: u32,
    /// The value when it is 1 to 4 digits, else [`NO_NUM`].
    num: u16,
    /// Bytes of the lowercase copy (0 when there is none).
    lower_len: u8,
    /// [`DIGITS`], [`ANY_DIGIT`], [`SPACED_DASH`], [`OPENS`].
    flags: u8,
    /// Bracket depth at this token (0 = outside any bracket).
    pub depth: u8,
    /// The last separator byte before this token (0 at the start of the name).
    pub sep_before: u8,
    /// The first separator byte after this token (0 at the end of the name).
    pub sep_after: u8,
}

const NO_NUM: u16 = u16::MAX;
/// All ASCII digits (and short enough to have a lowercase copy).
const DIGITS: u8 = 1;
/// Some byte is an ASCII digit.
const ANY_DIGIT: u8 = 2;
/// The separators right before this token contain `" - "` (a spaced dash) or start
/// the name with one.
const SPACED_DASH: u8 = 4;
/// An opening bracket (`[`, `(`, `{`) stands between the previous token and this one.
const OPENS: u8 = 8;
/// Some byte is not ASCII.
const NOT_ASCII: u8 = 16;
/// Some byte is white space but no separator (vertical tab, form feed).
const ODD_WHITE: u8 = 32;
/// The key may begin a tag or keyword ([`super::tags::may_begin_word`]).
const BEGINS: u8 = 64;

impl Token {
    /// All zero bytes (a buffer's filler, never read).
    const EMPTY: Token = Token {
        key: 0,
        start: 0,
        end: 0,
        num: 0,
        lower_len: 0,
        flags: 0,
        depth: 0,
        sep_before: 0,
        sep_after: 0,
    };

    /// Byte range in the truncated name: its start.
    pub fn start(&self) -> usize {
        self.start as usize
    }

    /// End of the byte range (exclusive).
    pub fn end(&self) -> usize {
        self.end as usize
    }

    /// The ASCII-lowercased token (its first [`Token::lower_len`] bytes; nothing
    /// when it is long or not ASCII). A token with a NUL byte reads as `0xFF` bytes,
    /// which no matcher accepts.
    pub fn lower(&self) -> [u8; LOWER_CAP] {
        self.key.to_le_bytes()
    }

    /// All ASCII digits (and short enough to have a lowercase copy).
    pub fn is_digits(&self) -> bool {
        self.flags & DIGITS != 0
    }

    /// Whether some byte of the token is an ASCII digit (every matcher of numbers
    /// needs one).
    pub fn has_digit(&self) -> bool {
        self.flags & ANY_DIGIT != 0
    }

    /// The separators before it hold a spaced dash (`" - "`).
    pub fn spaced_dash_before(&self) -> bool {
        self.flags & SPACED_DASH != 0
    }

    /// An opening bracket stands between the previous token and this one.
    pub fn opens_bracket(&self) -> bool {
        self.flags & OPENS != 0
    }

    /// Whether a join of tokens starting with this one may be a tag or keyword
    /// ([`super::tags::may_begin_word`] of its key).
    pub fn may_begin_word(&self) -> bool {
        self.flags & BEGINS != 0
    }

    /// All ASCII, and no white space inside (so the title reads it as it is).
    pub fn plain(&self) -> bool {
        self.flags & (NOT_ASCII | ODD_WHITE) == 0
    }

    /// The token as a number when it is 1 to 4 digits.
    pub fn number(&self) -> Option<u32> {
        (self.num != NO_NUM).then_some(u32::from(self.num))
    }

    /// Bytes of the lowercase copy (0 when there is none).
    pub fn lower_len(&self) -> usize {
        usize::from(self.lower_len)
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.end() - self.start()
    }
}

/// Byte classes, one table load a byte: a separator, an ASCII digit, anything else
/// but a separator, not ASCII, NUL, an ASCII capital (the bit that lowercases it),
/// white space that is no separator (vertical tab, form feed), a bracket.
const SEP: u8 = 1;
const DIGIT: u8 = 2;
const NOT_DIGIT: u8 = 4;
const NON_ASCII: u8 = 8;
const NUL: u8 = 16;
const UPPER: u8 = 0x20;
const ODD_SPACE: u8 = 64;
const BRACKET: u8 = 128;

const CLASS: [u8; 256] = {
    let list = b" ._-[](){}+,/\\#~|\t\n\r!?:;\"*<>";
    let mut t = [NOT_DIGIT; 256];
    let mut b = 0;
    while b < 256 {
        if b >= 0x80 {
            t[b] |= NON_ASCII;
        }
        if b >= b'A' as usize && b <= b'Z' as usize {
            t[b] |= UPPER;
        }
        if b >= b'0' as usize && b <= b'9' as usize {
            t[b] = DIGIT;
        }
        b += 1;
    }
    t[0] |= NUL;
    t[0x0b] |= ODD_SPACE;
    t[0x0c] |= ODD_SPACE;
    let mut i = 0;
    while i < list.len() {
        t[list[i] as usize] = SEP;
        i += 1;
    }
    let brackets = b"[](){}";
    i = 0;
    while i < brackets.len() {
        t[brackets[i] as usize] |= BRACKET;
        i += 1;
    }
    t
};

#[inline]
fn class(b: u8) -> u8 {
    // (A `u8` indexes a 256-entry table: the check compiles away.)
    CLASS.get(usize::from(b)).copied().unwrap_or(0)
}

#[cfg(test)]
fn is_sep(b: u8) -> bool {
    class(b) & SEP != 0
}

/// Cuts `name` to at most [`MAX_NAME_BYTES`] bytes at a character boundary.
pub fn truncate(name: &str) -> &str {
    if name.len() <= MAX_NAME_BYTES {
        return name;
    }
    let mut end = MAX_NAME_BYTES;
    while end > 0 && !name.is_char_boundary(end) {
        end -= 1;
    }
    name.get(..end).unwrap_or("")
}

/// Tokens kept on the stack: most names have fewer than this many.
const INLINE: usize = 24;

/// The tokens of a name: on the stack up to [`INLINE`] of them, then (rarely) in
/// one allocation of [`MAX_TOKENS`].
pub struct Tokens {
    inline: [Token; INLINE],
    n: usize,
    heap: Vec<Token>,
}

impl Default for Tokens {
    fn default() -> Self {
        Tokens::new()
    }
}

impl Tokens {
    /// An empty buffer for [`tokenize`].
    pub fn new() -> Tokens {
        Tokens {
            inline: [Token::EMPTY; INLINE],
            n: 0,
            heap: Vec::new(),
        }
    }

    /// The tokens, in order.
    pub fn as_slice(&self) -> &[Token] {
        if self.heap.is_empty() {
            self.inline.get(..self.n).unwrap_or(&[])
        } else {
            &self.heap
        }
    }

    fn push(&mut self, t: Token) {
        // `n` stops at INLINE when the tokens spill: below it, `heap` is empty.
        if let Some(slot) = self.inline.get_mut(self.n) {
            *slot = t;
            self.n += 1;
            return;
        }
        if self.heap.is_empty() {
            self.heap.reserve_exact(MAX_TOKENS);
            self.heap.extend_from_slice(&self.inline);
        }
        self.heap.push(t);
    }
}

/// Splits an already truncated name into at most [`MAX_TOKENS`] tokens, in one pass
/// over its bytes with one table load a byte.
pub fn tokenize(name: &str, out: &mut Tokens) {
    let bytes = name.as_bytes();
    out.n = 0;
    out.heap.clear();
    let mut i = 0;
    let mut depth: u8 = 0;
    // Separators seen since the last token.
    let mut seps_start = 0;
    let mut count = 0;
    while i < bytes.len() && count < MAX_TOKENS {
        // Separators. The common case first: one separator byte, no bracket and no
        // dash, then a token (what the general loop below makes of it, at once).
        if let (Some(&b), Some(&nb)) = (bytes.get(i), bytes.get(i + 1)) {
            if class(b) & (SEP | BRACKET) == SEP && b != b'-' && class(nb) & SEP == 0 {
                i += 1;
                push_token(bytes, &mut i, out, depth, b, 0);
                count += 1;
                seps_start = i;
                continue;
            }
        }
        let mut opens = false;
        let mut dash = false;
        for &b in bytes.get(i..).unwrap_or(&[]) {
            let c = class(b);
            if c & SEP == 0 {
                break;
            }
            if c & BRACKET != 0 {
                if matches!(b, b'[' | b'(' | b'{') {
                    opens = true;
                    depth = depth.saturating_add(1);
                } else {
                    depth = depth.saturating_sub(1);
                }
            }
            dash |= b == b'-';
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        let seps = bytes.get(seps_start..i).unwrap_or(&[]);
        let spaced_dash = dash
            && (seps.windows(3).any(|w| w == b" - ")
                || (seps_start == 0 && seps.starts_with(b"- "))
                || seps == b" -"
                || seps == b"- ");
        let sep_before = seps.last().copied().unwrap_or(0);
        let mut flags = 0u8;
        if spaced_dash && count > 0 {
            flags |= SPACED_DASH;
        }
        if opens {
            flags |= OPENS;
        }
        push_token(bytes, &mut i, out, depth, sep_before, flags);
        count += 1;
        seps_start = i;
    }
}

/// `KEEP[n]`: the low `n` bytes of a `u128` set.
const KEEP: [u128; LOWER_CAP + 1] = {
    let mut t = [0u128; LOWER_CAP + 1];
    let mut n = 1;
    while n <= LOWER_CAP {
        t[n] = (t[n - 1] << 8) | 0xFF;
        n += 1;
    }
    t
};

/// Reads the token at `*i` (a byte that is no separator) up to the next separator
/// or the end, moves `*i` past it and pushes it with `sep_before` and `flags` (its
/// context: [`SPACED_DASH`], [`OPENS`]).
#[inline(always)]
fn push_token(
    bytes: &[u8],
    i: &mut usize,
    out: &mut Tokens,
    depth: u8,
    sep_before: u8,
    mut flags: u8,
) {
    // The token: up to the next separator, read once for the union of its bytes'
    // classes; then, when it is short and ASCII, its lowercase copy.
    let start = *i;
    let mut acc = 0u8;
    for &b in bytes.get(start..).unwrap_or(&[]) {
        let c = class(b);
        if c & SEP != 0 {
            break;
        }
        acc |= c;
        *i += 1;
    }
    let end = *i;
    let mut lower = [0u8; LOWER_CAP];
    let len = end - start;
    if acc & NON_ASCII == 0 && len <= LOWER_CAP {
        // 16 bytes from the token's start in one load when the name has them,
        // the bytes past the token masked off; else a copy of the token.
        let word = match bytes
            .get(start..start + LOWER_CAP)
            .and_then(|s| <[u8; LOWER_CAP]>::try_from(s).ok())
        {
            Some(w) => u128::from_le_bytes(w) & KEEP.get(len).copied().unwrap_or(0),
            None => {
                if let (Some(d), Some(s)) = (lower.get_mut(..len), bytes.get(start..end)) {
                    d.copy_from_slice(s);
                }
                u128::from_le_bytes(lower)
            }
        };
        lower = if acc & UPPER != 0 {
            ascii_lowercase(word)
        } else {
            word
        }
        .to_le_bytes();
    }
    let mut lower_len = 0u8;
    let mut key = NO_KEY;
    let mut num = NO_NUM;
    if acc & DIGIT != 0 {
        flags |= ANY_DIGIT;
    }
    if acc & NON_ASCII != 0 {
        flags |= NOT_ASCII;
    }
    if acc & ODD_SPACE != 0 {
        flags |= ODD_WHITE;
    }
    if len <= LOWER_CAP && acc & NON_ASCII == 0 {
        if acc & NOT_DIGIT == 0 {
            flags |= DIGITS;
            if len <= 4 {
                num = lower
                    .iter()
                    .take(len)
                    .fold(0u16, |n, &b| n * 10 + u16::from(b - b'0'));
            }
        }
        lower_len = len as u8;
        // The zero-padded copy is the key (a NUL byte would make it another
        // word's: such a token is no entry).
        if acc & NUL == 0 {
            key = u128::from_le_bytes(lower);
            if super::tags::may_begin_word(key) {
                flags |= BEGINS;
            }
        }
    }
    out.push(Token {
        key,
        start: start as u32,
        end: end as u32,
        num,
        lower_len,
        flags,
        depth,
        sep_before,
        sep_after: bytes.get(end).copied().unwrap_or(0),
    });
}

/// The ASCII lowercase of 16 ASCII bytes at once: each byte `A`..=`Z` gets its
/// 0x20 bit (byte + 0x3F has its top bit from `A` up, byte + 0x25 from `[` up; no
/// byte below 0x80 carries into the next).
#[inline]
fn ascii_lowercase(x: u128) -> u128 {
    const ONES: u128 = u128::from_le_bytes([1; 16]);
    let ge_a = x.wrapping_add(ONES * 0x3F);
    let ge_z1 = x.wrapping_add(ONES * 0x25);
    let upper = ge_a & !ge_z1 & (ONES * 0x80);
    x | (upper >> 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(name: &str) -> Tokens {
        let mut t = Tokens::new();
        tokenize(name, &mut t);
        t
    }

    /// Every token's lowercase copy, wherever it stands in names of every length,
    /// is its text lowercased (or nothing when long or not ASCII).
    #[test]
    fn every_token_key_is_its_text_lowercased() {
        let alphabet: &[u8] = b"aZ09 ._-[]xYq\x00";
        let mut x: u64 = 0xdead_beef_1234_5678;
        for n in 0..4_000usize {
            let len = n % 48;
            let mut name = random_name(&mut x, alphabet, len);
            if n % 7 == 0 {
                name.push('é');
            }
            let t = toks(&name);
            for tok in t.as_slice() {
                let text = &name[tok.start()..tok.end()];
                if text.len() <= LOWER_CAP && text.is_ascii() {
                    assert_eq!(tok.lower_len(), text.len(), "{name:?}");
                    if !text.contains('\0') {
                        assert_eq!(lower(tok), text.to_ascii_lowercase(), "{name:?}");
                    }
                    let want = if text.contains('\0') {
                        NO_KEY
                    } else {
                        crate::classify::tags::key_of(text.to_ascii_lowercase().as_bytes())
                    };
                    assert_eq!(tok.key, want, "{name:?} {text:?}");
                } else {
                    assert_eq!((tok.key, tok.lower_len()), (NO_KEY, 0), "{name:?}");
                }
            }
        }
    }

    /// `len` bytes of `alphabet` (ASCII) picked by a xorshift generator at `x`.
    fn random_name(x: &mut u64, alphabet: &[u8], len: usize) -> String {
        (0..len)
            .map(|_| {
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
                char::from(alphabet[(*x % alphabet.len() as u64) as usize])
            })
            .collect()
    }

    /// Tokens and their context as a direct reading of the name gives them: maximal
    /// runs of non-separators, and for each the separators before it (brackets
    /// opened, depth, spaced dash, last separator) and the byte after it.
    #[test]
    fn tokens_and_context_are_what_the_name_says() {
        let alphabet: &[u8] = b"ab1 . _-[](){}+ - x";
        let mut x: u64 = 0x0123_4567_89ab_cdef;
        for n in 0..6_000usize {
            let len = n % 40;
            let name = random_name(&mut x, alphabet, len);
            let b = name.as_bytes();
            let t = toks(&name);
            let got = t.as_slice();
            let (mut i, mut k, mut depth) = (0usize, 0usize, 0u8);
            while i < b.len() {
                let seps_start = i;
                let mut opens = false;
                while i < b.len() && is_sep_match(b[i]) {
                    match b[i] {
                        b'[' | b'(' | b'{' => {
                            opens = true;
                            depth = depth.saturating_add(1);
                        }
                        b']' | b')' | b'}' => depth = depth.saturating_sub(1),
                        _ => {}
                    }
                    i += 1;
                }
                if i >= b.len() {
                    break;
                }
                let seps = &b[seps_start..i];
                let dash = seps.windows(3).any(|w| w == b" - ")
                    || (seps_start == 0 && seps.starts_with(b"- "))
                    || seps == b" -"
                    || seps == b"- ";
                let start = i;
                while i < b.len() && !is_sep_match(b[i]) {
                    i += 1;
                }
                let tok = got[k];
                assert_eq!((tok.start(), tok.end()), (start, i), "{name:?} #{k}");
                assert_eq!(tok.opens_bracket(), opens, "{name:?} #{k}");
                assert_eq!(tok.depth, depth, "{name:?} #{k}");
                assert_eq!(tok.spaced_dash_before(), dash && k > 0, "{name:?} #{k}");
                assert_eq!(
                    tok.sep_before,
                    seps.last().copied().unwrap_or(0),
                    "{name:?}"
                );
                assert_eq!(tok.sep_after, b.get(i).copied().unwrap_or(0), "{name:?}");
                k += 1;
            }
            assert_eq!(got.len(), k, "{name:?}");
        }
    }

    #[test]
    fn keep_masks_keep_the_low_bytes() {
        for (n, keep) in KEEP.iter().enumerate() {
            let want = if n == 0 {
                0
            } else {
                u128::MAX >> (8 * (LOWER_CAP - n))
            };
            assert_eq!(*keep, want, "{n}");
        }
    }

    #[test]
    fn lowercase_at_once_is_lowercase_byte_by_byte() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for n in 0..20_000u32 {
            let mut b = [0u8; 16];
            for (i, v) in b.iter_mut().enumerate() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *v = if n < 128 {
                    ((n as usize + i) % 128) as u8
                } else {
                    (x % 128) as u8
                };
            }
            let want = b.map(|c| c.to_ascii_lowercase());
            assert_eq!(
                ascii_lowercase(u128::from_le_bytes(b)).to_le_bytes(),
                want,
                "{b:?}"
            );
        }
    }

    fn lower(t: &Token) -> String {
        String::from_utf8_lossy(&t.lower()[..t.lower_len()]).into_owned()
    }

    fn is_sep_match(b: u8) -> bool {
        matches!(
            b,
            b' ' | b'.'
                | b'_'
                | b'-'
                | b'['
                | b']'
                | b'('
                | b')'
                | b'{'
                | b'}'
                | b'+'
                | b','
                | b'/'
                | b'\\'
                | b'#'
                | b'~'
                | b'|'
                | b'\t'
                | b'\n'
                | b'\r'
                | b'!'
                | b'?'
                | b':'
                | b';'
                | b'"'
                | b'*'
                | b'<'
                | b'>'
        )
    }

    #[test]
    fn the_separator_table_is_the_separator_list() {
        for b in 0..=255u8 {
            assert_eq!(is_sep(b), is_sep_match(b), "byte {b}");
        }
    }

    #[test]
    fn the_class_table_says_what_the_byte_methods_say() {
        for b in 0..=255u8 {
            let c = class(b);
            if is_sep_match(b) {
                assert_eq!(c & !BRACKET, SEP, "byte {b}");
                assert_eq!(c & BRACKET != 0, b"[](){}".contains(&b), "byte {b}");
                continue;
            }
            assert_eq!(
                c & ODD_SPACE != 0,
                b.is_ascii_whitespace() || b == 0x0b,
                "byte {b}"
            );
            assert_eq!(c & DIGIT != 0, b.is_ascii_digit(), "byte {b}");
            assert_eq!(c & NOT_DIGIT != 0, !b.is_ascii_digit(), "byte {b}");
            assert_eq!(c & NON_ASCII != 0, !b.is_ascii(), "byte {b}");
            assert_eq!(c & NUL != 0, b == 0, "byte {b}");
            assert_eq!(b | (c & UPPER), b.to_ascii_lowercase(), "byte {b}");
        }
    }

    #[test]
    fn more_tokens_than_the_stack_holds_spill_in_order() {
        let name: String = (0..40).map(|i| format!("w{i} ")).collect();
        let t = toks(&name);
        let words: Vec<String> = t.as_slice().iter().map(lower).collect();
        let want: Vec<String> = (0..40).map(|i| format!("w{i}")).collect();
        assert_eq!(words, want);
        assert_eq!(t.as_slice()[39].sep_after, b' ');
        assert_eq!(t.as_slice()[23].sep_after, b' ');
    }

    #[test]
    fn splits_on_separators_and_marks_context() {
        let t = toks("[Grp] Show Name - 12 (1080p).mkv");
        let t = t.as_slice();
        let words: Vec<String> = t.iter().map(lower).collect();
        assert_eq!(words, ["grp", "show", "name", "12", "1080p", "mkv"]);
        assert!(t[0].opens_bracket() && t[0].depth == 1);
        assert_eq!(t[1].depth, 0);
        assert!(t[3].spaced_dash_before() && !t[2].spaced_dash_before());
        assert!(t[4].opens_bracket());
        assert_eq!(t[5].sep_before, b'.');
    }

    #[test]
    fn long_names_are_cut_at_a_char_boundary() {
        let name = "é".repeat(1000);
        let cut = truncate(&name);
        assert!(cut.len() <= MAX_NAME_BYTES && cut.len() >= MAX_NAME_BYTES - 1);
        let many = "a.".repeat(10_000);
        assert_eq!(toks(truncate(&many)).as_slice().len(), MAX_TOKENS);
    }

    #[test]
    fn non_ascii_tokens_have_no_lowercase_copy() {
        let t = toks("Москва.1979");
        let t = t.as_slice();
        assert_eq!(lower(&t[0]), "");
        assert_eq!(t[1].number(), Some(1979));
    }
}
