//! Splitting a release name into tokens, in one pass and with bounded memory.
//!
//! A token is a run of bytes between separators (space, `.`, `_`, `-`, brackets, and a
//! few more). Each token keeps its byte range in the (truncated) name, what stood
//! before it, and an ASCII-lowercased copy when it is short enough to be a tag: tags
//! (resolutions, sources, codecs, ...) are all short ASCII words, so longer or
//! non-ASCII tokens can only be title words.

use super::tags::{Key, NO_KEY};

/// Names are cut (at a character boundary) to this many bytes before parsing.
pub const MAX_NAME_BYTES: usize = 512;
/// At most this many tokens are looked at; the rest of a name is ignored.
pub const MAX_TOKENS: usize = 96;
/// Tokens up to this long get a lowercased copy (the longest tag is shorter).
pub const LOWER_CAP: usize = 16;

/// One token of a name.
#[derive(Clone, Copy, Debug)]
pub struct Token {
    /// Byte range in the truncated name.
    pub start: usize,
    /// End of the byte range (exclusive).
    pub end: usize,
    lower: [u8; LOWER_CAP],
    lower_len: u8,
    /// The lowercase copy's [`Key`] ([`NO_KEY`] when there is none).
    pub key: Key,
    /// All ASCII digits (and short enough to have a lowercase copy).
    digits: bool,
    /// The value when it is 1 to 4 digits.
    num: Option<u32>,
    /// Some byte is an ASCII digit.
    any_digit: bool,
    /// The separators right before this token contain `" - "` (a spaced dash) or start
    /// the name with one.
    pub spaced_dash_before: bool,
    /// An opening bracket (`[`, `(`, `{`) stands between the previous token and this one.
    pub opens_bracket: bool,
    /// Bracket depth at this token (0 = outside any bracket).
    pub depth: u8,
    /// The last separator byte before this token (0 at the start of the name).
    pub sep_before: u8,
    /// The first separator byte after this token (0 at the end of the name).
    pub sep_after: u8,
}

impl Token {
    /// The ASCII-lowercased token, or `""` when it is long or not ASCII.
    pub fn lower(&self) -> &str {
        let n = usize::from(self.lower_len).min(LOWER_CAP);
        std::str::from_utf8(self.lower.get(..n).unwrap_or(&[])).unwrap_or("")
    }

    /// All ASCII digits (and short enough to have a lowercase copy).
    pub fn is_digits(&self) -> bool {
        self.digits
    }

    /// Whether some byte of the token is an ASCII digit (every matcher of numbers
    /// needs one).
    pub fn has_digit(&self) -> bool {
        self.any_digit
    }

    /// The token as a number when it is 1 to 4 digits.
    pub fn number(&self) -> Option<u32> {
        self.num
    }

    /// Bytes of the lowercase copy (0 when there is none).
    pub fn lower_len(&self) -> usize {
        usize::from(self.lower_len)
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.end - self.start
    }
}

/// The separator bytes, as a table: one load a byte.
const SEPS: [bool; 256] = {
    let list = b" ._-[](){}+,/\\#~|\t\n\r!?:;\"*<>";
    let mut t = [false; 256];
    let mut i = 0;
    while i < list.len() {
        t[list[i] as usize] = true;
        i += 1;
    }
    t
};

fn is_sep(b: u8) -> bool {
    SEPS.get(usize::from(b)).copied().unwrap_or(false)
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

/// Splits an already truncated name into at most [`MAX_TOKENS`] tokens.
pub fn tokenize(name: &str) -> Vec<Token> {
    let bytes = name.as_bytes();
    // 16 tokens (64 bytes each) fit most names in a small allocation.
    let mut out: Vec<Token> = Vec::with_capacity(16);
    let mut i = 0;
    let mut depth: u8 = 0;
    // Separators seen since the last token.
    let mut seps_start = 0;
    while i < bytes.len() && out.len() < MAX_TOKENS {
        // Separators.
        let mut opens = false;
        while let Some(&b) = bytes.get(i) {
            if !is_sep(b) {
                break;
            }
            match b {
                b'[' | b'(' | b'{' => {
                    opens = true;
                    depth = depth.saturating_add(1);
                }
                b']' | b')' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        let seps = bytes.get(seps_start..i).unwrap_or(&[]);
        let spaced_dash = seps.windows(3).any(|w| w == b" - ")
            || (seps_start == 0 && seps.starts_with(b"- "))
            || seps == b" -"
            || seps == b"- ";
        let sep_before = seps.last().copied().unwrap_or(0);
        // The token: up to the next separator, read once: its lowercase copy (the
        // first LOWER_CAP bytes) and whether it is ASCII, all digits, NUL-free.
        let start = i;
        let mut lower = [0u8; LOWER_CAP];
        let (mut ascii, mut all_digits, mut any_digit, mut nul) = (true, true, false, false);
        while let Some(&b) = bytes.get(i) {
            if is_sep(b) {
                break;
            }
            if let Some(d) = lower.get_mut(i - start) {
                *d = b.to_ascii_lowercase();
            }
            ascii &= b.is_ascii();
            all_digits &= b.is_ascii_digit();
            any_digit |= b.is_ascii_digit();
            nul |= b == 0;
            i += 1;
        }
        let end = i;
        let mut lower_len = 0u8;
        let mut key = NO_KEY;
        let mut digits = false;
        let mut num = None;
        let len = end - start;
        if len <= LOWER_CAP && ascii {
            digits = len > 0 && all_digits;
            if digits && len <= 4 {
                num = Some(
                    lower
                        .iter()
                        .take(len)
                        .fold(0u32, |n, &b| n * 10 + u32::from(b - b'0')),
                );
            }
            lower_len = len as u8;
            // The zero-padded copy is the key (a NUL byte would make it another
            // word's: such a token is no entry).
            if !nul {
                key = u128::from_le_bytes(lower);
            }
        } else {
            lower = [0u8; LOWER_CAP];
        }
        if let Some(prev) = out.last_mut() {
            prev.sep_after = bytes.get(prev.end).copied().unwrap_or(0);
        }
        out.push(Token {
            start,
            end,
            lower,
            lower_len,
            key,
            digits,
            num,
            any_digit,
            spaced_dash_before: spaced_dash && !out.is_empty(),
            opens_bracket: opens,
            depth,
            sep_before,
            sep_after: 0,
        });
        seps_start = i;
    }
    if let Some(last) = out.last_mut() {
        last.sep_after = bytes.get(last.end).copied().unwrap_or(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn splits_on_separators_and_marks_context() {
        let t = tokenize("[Grp] Show Name - 12 (1080p).mkv");
        let words: Vec<&str> = t.iter().map(|t| t.lower()).collect();
        assert_eq!(words, ["grp", "show", "name", "12", "1080p", "mkv"]);
        assert!(t[0].opens_bracket && t[0].depth == 1);
        assert_eq!(t[1].depth, 0);
        assert!(t[3].spaced_dash_before && !t[2].spaced_dash_before);
        assert!(t[4].opens_bracket);
        assert_eq!(t[5].sep_before, b'.');
    }

    #[test]
    fn long_names_are_cut_at_a_char_boundary() {
        let name = "é".repeat(1000);
        let cut = truncate(&name);
        assert!(cut.len() <= MAX_NAME_BYTES && cut.len() >= MAX_NAME_BYTES - 1);
        let many = "a.".repeat(10_000);
        assert_eq!(tokenize(truncate(&many)).len(), MAX_TOKENS);
    }

    #[test]
    fn non_ascii_tokens_have_no_lowercase_copy() {
        let t = tokenize("Москва.1979");
        assert_eq!(t[0].lower(), "");
        assert_eq!(t[1].number(), Some(1979));
    }
}
